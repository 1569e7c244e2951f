"""A scriptable litellm provider for tests: ``model="mock/<anything>"``.

Each call pops the next scripted outcome: a string is returned as the reply (usage counted
honestly), an exception instance is raised. With an empty script it echoes the last message.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import litellm
from litellm.types.utils import Choices, Message, ModelResponse, Usage

from sleeptime.tokens import count_tokens

PROVIDER = "mock"


class MockLLM(litellm.CustomLLM):
    def __init__(self) -> None:
        super().__init__()
        self.script: deque[str | BaseException] = deque()
        self.calls: list[dict[str, Any]] = []

    def completion(self, model: str, messages: list, model_response: ModelResponse, optional_params: dict, **_: Any) -> ModelResponse:  # type: ignore[override]
        self.calls.append({"model": model, "messages": messages, "params": dict(optional_params)})
        outcome = self.script.popleft() if self.script else str(messages[-1]["content"])
        if isinstance(outcome, BaseException):
            raise outcome
        prompt = "\n".join(str(m.get("content", "")) for m in messages)
        model_response.choices = [Choices(index=0, finish_reason="stop", message=Message(role="assistant", content=outcome))]
        model_response.usage = Usage(  # type: ignore[attr-defined]
            prompt_tokens=count_tokens(prompt),
            completion_tokens=count_tokens(outcome),
            total_tokens=count_tokens(prompt) + count_tokens(outcome),
        )
        return model_response

    async def acompletion(self, *args: Any, **kwargs: Any) -> ModelResponse:  # type: ignore[override]
        return self.completion(*args, **kwargs)


handler = MockLLM()


def register() -> MockLLM:
    if not any(entry.get("provider") == PROVIDER for entry in litellm.custom_provider_map):
        litellm.custom_provider_map = [*litellm.custom_provider_map, {"provider": PROVIDER, "custom_handler": handler}]
        from litellm.utils import custom_llm_setup

        custom_llm_setup()
    handler.script.clear()
    handler.calls.clear()
    return handler
