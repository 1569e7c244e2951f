"""The reference reasoner as a litellm custom provider: ``model="reference/<anything>"``.

It is reached through ``litellm.acompletion`` like any hosted model, so the pipeline has one
code path for every provider. It reads only the messages' text, honours ``max_tokens``, takes
``seed`` as the sample index, and reports the tokens it actually read and wrote.
"""

from __future__ import annotations

import time
from typing import Any

import litellm
from litellm.types.utils import Choices, Message, ModelResponse, Usage

from sleeptime.reasoner.engine import respond
from sleeptime.tokens import count_tokens

PROVIDER = "reference"
DEFAULT_MAX_TOKENS = 256


def _messages_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
        if content:
            parts.append(str(content))
    return "\n".join(parts)


class ReferenceReasoner(litellm.CustomLLM):
    def completion(self, model: str, messages: list, model_response: ModelResponse, optional_params: dict, **_: Any) -> ModelResponse:  # type: ignore[override]
        started = time.perf_counter()
        text = _messages_text(messages)
        max_tokens = int(optional_params.get("max_tokens") or optional_params.get("max_completion_tokens") or DEFAULT_MAX_TOKENS)
        seed = int(optional_params.get("seed") or 0)
        reply = respond(text, max_tokens=max_tokens, sample_index=seed)
        prompt_tokens, completion_tokens = count_tokens(text), count_tokens(reply)
        model_response.choices = [Choices(index=0, finish_reason="stop", message=Message(role="assistant", content=reply))]
        model_response.model = model
        model_response.usage = Usage(  # type: ignore[attr-defined]
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        model_response._response_ms = (time.perf_counter() - started) * 1000  # type: ignore[attr-defined]
        return model_response

    async def acompletion(self, *args: Any, **kwargs: Any) -> ModelResponse:  # type: ignore[override]
        # The work is a few milliseconds of pure Python; a thread would cost more than it saves.
        return self.completion(*args, **kwargs)


_handler = ReferenceReasoner()


def register() -> None:
    """Make ``reference/...`` resolvable by litellm (idempotent)."""
    if any(entry.get("provider") == PROVIDER for entry in litellm.custom_provider_map):
        return
    litellm.custom_provider_map = [*litellm.custom_provider_map, {"provider": PROVIDER, "custom_handler": _handler}]
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
