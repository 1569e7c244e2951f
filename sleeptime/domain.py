"""Domain types: what a context, a query, a budget, a variant (c') and an answer are, and what
model calls used (Usage, CallCounters).

Every identifier is derived from content, so the same input always gets the same id and a
rerun can recognise work it has already done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def content_hash(*parts: Any) -> str:
    """A stable sha256 hex digest of the JSON encoding of ``parts``."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def short_id(prefix: str, *parts: Any) -> str:
    return f"{prefix}_{content_hash(*parts)[:16]}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Usage(_Frozen):
    prompt_tokens: int = Field(ge=0)  # all of them, cached or not (OpenAI's and litellm's convention)
    completion_tokens: int = Field(ge=0)
    cached_prompt_tokens: int = Field(default=0, ge=0)  # of prompt_tokens: read from the provider's cache
    cache_write_tokens: int = Field(default=0, ge=0)  # of prompt_tokens: written to it (Anthropic bills these)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass
class CallCounters:
    """What model calls did, counted as they happen (the gateway) and summed per shard and per
    run. The one list of these counters: a counter added here is carried from the gateway to the
    run summary; the runs table records the ones ``RunSummary.record`` names."""

    calls: int = 0  # calls the provider answered (a cache hit is not a call)
    prompt_tokens: int = 0  # of those calls
    completion_tokens: int = 0
    cost_usd: float = 0.0  # spent by those calls (a cache hit spends nothing)
    cached_prompt_tokens: int = 0  # of prompt_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # of prompt_tokens: written to it
    cache_savings_usd: float = 0.0  # what the cached tokens would have cost more at the input price
    retries: int = 0  # retryable errors that were retried (the call may still have succeeded)
    retryable_errors: int = 0  # every retryable error, the last one too when no retry was left
    cache_hits: int = 0  # replies from the response cache: no call made
    failed_calls: int = 0  # calls that failed for good (non-retryable error, out of retries, no usage)

    def record_call(self, usage: Usage, cost_usd: float, cache_savings_usd: float) -> None:
        """Count one call the provider answered."""
        self.calls += 1
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cost_usd += cost_usd
        self.cached_prompt_tokens += usage.cached_prompt_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.cache_savings_usd += cache_savings_usd

    def __add__(self, other: CallCounters) -> CallCounters:
        return CallCounters(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __sub__(self, other: CallCounters) -> CallCounters:
        """What was counted since ``other``, an earlier reading of the same counters."""
        return CallCounters(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


class Context(_Frozen):
    """A persistent context c: a document, a story, a codebase digest."""

    id: str
    text: str = Field(min_length=1)
    source: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        # Only the text decides whether sleep-time work must be redone.
        return content_hash(self.text)


class Query(_Frozen):
    """A question asked against one context."""

    id: str
    context_id: str
    text: str = Field(min_length=1)
    gold_answer: str | None = None
    kind: str | None = None

    @staticmethod
    def make_id(context_id: str, text: str) -> str:
        return short_id("q", context_id, text)


ReasoningEffort = Literal["low", "medium", "high"]


class SleepBudget(_Frozen):
    """How much compute S(c) -> c' may spend on a context.

    ``max_tokens == 0`` is the "none" level: no variant, test time sees the raw context.
    ``samples`` is k, the number of independent c' drafts made in parallel.
    """

    name: str
    max_tokens: int = Field(ge=0)
    samples: int = Field(default=1, ge=1)
    reasoning_effort: ReasoningEffort | None = None
    thinking_tokens: int | None = Field(default=None, ge=0)

    @property
    def is_none(self) -> bool:
        return self.max_tokens == 0


class AnswerBudget(_Frozen):
    """How much compute T(q, c') may spend answering one query: the test-time budget (config key
    ``test_budgets``, column ``test_budget``). Python names say "answer" for the test-time phase,
    so pytest never mistakes a product class or function for a test.

    ``verbosity`` picks one of the five published test-time instructions (0 = one sentence,
    4 = explain each step and double-check); ``max_tokens`` caps the reply.
    """

    name: str
    verbosity: int = Field(ge=0, le=4)
    max_tokens: int = Field(gt=0)
    reasoning_effort: ReasoningEffort | None = None
    thinking_tokens: int | None = Field(default=None, ge=0)


class Variant(_Frozen):
    """An enriched context c' and where it came from."""

    context_id: str
    context_hash: str
    model: str
    sleep_budget: str
    sample_index: int = Field(ge=0)
    prompt_version: str
    text: str
    usage: Usage
    cost_usd: float = Field(ge=0)
    latency_s: float = Field(ge=0)

    @property
    def id(self) -> str:
        return self.make_id(self.context_hash, self.model, self.sleep_budget, self.sample_index, self.prompt_version)

    @staticmethod
    def make_id(context_hash: str, model: str, sleep_budget: str, sample_index: int, prompt_version: str) -> str:
        return short_id("v", context_hash, model, sleep_budget, sample_index, prompt_version)


class Answer(_Frozen):
    """T(q, c) or T(q, c'): one reply to one query at one test budget."""

    query_id: str
    context_id: str
    context_hash: str  # a raw-context answer is only valid for this version of the text
    variant_id: str | None  # None: test-time only, raw context
    sleep_budget: str  # "none" when variant_id is None
    test_model: str
    test_budget: str
    sample_index: int = Field(default=0, ge=0)  # > 0 only for the extra pass@k samples
    prompt_version: str
    raw_reply: str
    parsed_answer: str | None
    correct: bool | None  # None when the query has no gold answer
    usage: Usage
    cost_usd: float = Field(ge=0)
    latency_s: float = Field(ge=0)

    @property
    def id(self) -> str:
        return self.make_id(
            self.query_id, self.context_hash, self.variant_id, self.test_model, self.test_budget, self.prompt_version,
            self.sample_index,
        )

    @staticmethod
    def make_id(
        query_id: str, context_hash: str, variant_id: str | None, test_model: str, test_budget: str,
        prompt_version: str, sample_index: int = 0,
    ) -> str:
        parts = [query_id, context_hash, variant_id or "none", test_model, test_budget, prompt_version]
        return short_id("a", *parts, *([sample_index] if sample_index else []))


class ContextWithQueries(_Frozen):
    """One row of a corpus: a context and the questions asked about it."""

    context: Context
    queries: tuple[Query, ...] = ()

    @model_validator(mode="after")
    def _queries_belong_to_context(self) -> ContextWithQueries:
        for q in self.queries:
            if q.context_id != self.context.id:
                raise ValueError(f"query {q.id} belongs to context {q.context_id}, not {self.context.id}")
        return self


class QuarantinedRow(_Frozen):
    """A row a loader refused, kept with the reason so nothing is silently lost."""

    source: str
    location: str  # line number, row index or file name
    reason: str
    raw: str = ""

    @field_validator("raw")
    @classmethod
    def _clip(cls, value: str) -> str:
        return value[:2000]
