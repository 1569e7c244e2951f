"""The HTTP API's request and response bodies (they make the OpenAPI description)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from sleeptime.service.selection import Selection, Step


def _utf8(value: str) -> str:
    """Text that can be encoded: a lone surrogate (JSON's "\\ud800") cannot be hashed, logged or
    sent to a model, so it is a client error here rather than a failure later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


Question = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_utf8)]


class AnswerRequest(BaseModel):
    # NaN, Infinity and 1e999 (which JSON parsers read as infinity) are not numbers a cap or a
    # target can take.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    context_id: Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(_utf8)] = Field(
        description="A context id of the caller's tenant (GET /v1/contexts)."
    )
    question: Question = Field(description="The question, at most max_question_chars characters (default 4000; 413 beyond).")
    target_accuracy: float | None = Field(
        default=None, gt=0, le=1,
        description="Overrides the published policy's target for this query: the cheapest option whose estimated "
        "accuracy's lower bound (for an average context of the query's kind) reaches it.",
    )
    max_cost: float | None = Field(
        default=None, gt=0,
        description="Cap on the policy's cost per query (weighted tokens: amortized sleep tokens + t x test tokens).",
    )
    max_latency_ms: float | None = Field(
        default=None, gt=0,
        description="Cap on the option's measured mean model latency in the evaluation, in milliseconds.",
    )
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_utf8)] | None = Field(
        default=None,
        description="The query kind for the policy's kind scope; inferred from the question when left out.",
    )


class ChoiceOut(BaseModel):
    variant_id: str | None = Field(description="The c' used; null for the raw context.")
    sleep_budget: str
    test_budget: str
    scope: str = Field(description="context | kind | corpus: the policy scope the option came from.")
    scope_value: str
    kind: str | None
    fallback: bool = Field(description="True for the policy's fallback or a later option of the failure chain.")
    reason: str

    @classmethod
    def of(cls, selection: Selection, step: Step, fallback: bool, reason: str | None = None) -> ChoiceOut:
        return cls(
            variant_id=step.variant.id if step.variant else None,
            sleep_budget=step.option.sleep_budget,
            test_budget=step.option.test_budget,
            scope=selection.scope,
            scope_value=selection.scope_value,
            kind=selection.kind,
            fallback=fallback,
            reason=reason or selection.reason,
        )


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AttemptOut(BaseModel):
    sleep_budget: str
    test_budget: str
    variant_id: str | None
    ok: bool
    error: str | None = None

    @classmethod
    def of(cls, step: Step, error: str | None = None) -> AttemptOut:
        return cls(sleep_budget=step.option.sleep_budget, test_budget=step.option.test_budget,
                   variant_id=step.variant.id if step.variant else None, ok=error is None, error=error)


class AnswerResponse(BaseModel):
    request_id: str
    context_id: str
    answer: str | None = Field(description="The extracted final answer (a number), null when none was found.")
    reply: str = Field(description="The model's full reply.")
    choice: ChoiceOut
    predicted_accuracy: float | None = Field(
        description="The policy's estimate of the chosen option's accuracy for this context and kind (shrunk from "
        "the corpus to the kind to the context)."
    )
    predicted_accuracy_lower: float | None = Field(description="A lower confidence bound of that estimate.")
    target_accuracy: float
    predicted_cost_weighted: float | None
    usage: UsageOut
    cost_usd: float
    latency_ms: float = Field(description="Time in the service for this request, selection and model call included.")
    model_latency_ms: float
    selection_us: float
    attempts: list[AttemptOut]
    policy_version: str | None
    snapshot: str


class ContextOut(BaseModel):
    context_id: str
    source: str
    chars: int
    sleep_budgets: list[str] = Field(description="Sleep budgets with a c' for the current text.")


class ContextList(BaseModel):
    tenant: str | None
    total: int
    offset: int
    limit: int
    contexts: list[ContextOut]


class VariantOut(BaseModel):
    variant_id: str
    sleep_budget: str
    sample_index: int
    model: str
    completion_tokens: int
    text: str


class VariantList(BaseModel):
    context_id: str
    variants: list[VariantOut]
    default_choice: ChoiceOut | None = Field(description="What the policy picks for a question of no particular kind.")


class Problem(BaseModel):
    detail: dict[str, Any]


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing, wrong or revoked API key."},
    404: {"model": Problem, "description": "Unknown context, or a context of another tenant."},
}
