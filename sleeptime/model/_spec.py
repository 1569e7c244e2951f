"""How one model is reached and priced: the entry of the model registry."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


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
    max_concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _prices_together(self) -> ModelSpec:
        if (self.input_cost_per_million is None) != (self.output_cost_per_million is None):
            raise ValueError("set both input_cost_per_million and output_cost_per_million, or neither")
        return self


REFERENCE_MODEL = ModelSpec(
    model="reference/arith",
    input_cost_per_million=0.0,
    output_cost_per_million=0.0,
    max_concurrency=16,
)
