"""The work itself: S(c) -> c' and T(q, c or c'), one item at a time, and small grids of them.

Executors (the in-process loop here, Prefect + Ray in tasks/) call these functions; they know
nothing about where they run. A failed item becomes a ``Failure`` with a reason instead of
sinking its batch, so a rerun can retry exactly the failed items.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from sleeptime.domain import Answer, Context, ContextWithQueries, Query, SleepBudget, AnswerBudget, Variant
from sleeptime.model import ModelError, ModelGateway
from sleeptime.prompts import PROMPT_VERSION, clip_memory, extract_answer, score, sleep_messages, answer_messages

T = TypeVar("T")
Progress = Callable[[int], None]


class Failure(BaseModel):
    """One work item that did not produce a row, and why."""

    model_config = ConfigDict(frozen=True)

    stage: str  # "sleep" or "test"
    key: str  # the id the row would have had
    context_id: str
    reason: str


async def make_variant(
    gateway: ModelGateway, model: str, context: Context, budget: SleepBudget, sample_index: int
) -> Variant:
    """One sleep-time sample of c' for ``context`` at ``budget``."""
    if budget.is_none:
        raise ValueError(f"sleep budget {budget.name!r} has max_tokens=0: it makes no variant")
    max_tokens, effort, thinking = gateway.spec(model).call_params(budget)
    completion = await gateway.complete(
        model, sleep_messages(context.text), max_tokens=max_tokens, seed=sample_index,
        reasoning_effort=effort, thinking_tokens=thinking,
    )
    return Variant(
        context_id=context.id,
        context_hash=context.content_hash,
        model=model,
        sleep_budget=budget.name,
        sample_index=sample_index,
        prompt_version=PROMPT_VERSION,
        text=clip_memory(completion.text),
        usage=completion.usage,
        cost_usd=completion.cost_usd,
        latency_s=completion.latency_s,
    )


async def answer_query(
    gateway: ModelGateway,
    model: str,
    context: Context,
    query: Query,
    budget: AnswerBudget,
    variant: Variant | None = None,
    sample_index: int = 0,
) -> Answer:
    """T(q, c') when ``variant`` is given, else test-time only T(q, c).

    ``sample_index`` > 0 draws another independent sample (the seed), for pass@k baselines.
    """
    spec = gateway.spec(model)
    messages = answer_messages(context.text, query.text, budget.verbosity, notes=variant.text if variant else None,
                               cache_breakpoint=spec.cache_control)
    max_tokens, effort, thinking = spec.call_params(budget)
    completion = await gateway.complete(
        model, messages, max_tokens=max_tokens, seed=sample_index, reasoning_effort=effort, thinking_tokens=thinking
    )
    parsed = extract_answer(completion.text)
    return Answer(
        query_id=query.id,
        context_id=context.id,
        context_hash=context.content_hash,
        variant_id=variant.id if variant else None,
        sleep_budget=variant.sleep_budget if variant else "none",
        test_model=model,
        test_budget=budget.name,
        sample_index=sample_index,
        prompt_version=PROMPT_VERSION,
        raw_reply=completion.text,
        parsed_answer=parsed,
        correct=score(parsed, query.gold_answer),
        usage=completion.usage,
        cost_usd=completion.cost_usd,
        latency_s=completion.latency_s,
    )


# --- grids ---------------------------------------------------------------------------------------


@dataclass
class SleepJob:
    context: Context
    budget: SleepBudget
    sample_index: int

    def key(self, model: str) -> str:
        return Variant.make_id(self.context.content_hash, model, self.budget.name, self.sample_index, PROMPT_VERSION)


@dataclass
class AnswerJob:

    context: Context
    query: Query
    budget: AnswerBudget
    variant: Variant | None
    sample_index: int = 0

    def key(self, model: str) -> str:
        variant_id = self.variant.id if self.variant else None
        return Answer.make_id(
            self.query.id, self.context.content_hash, variant_id, model, self.budget.name, PROMPT_VERSION,
            self.sample_index,
        )


def sleep_jobs(contexts: Iterable[Context], budgets: Sequence[SleepBudget]) -> list[SleepJob]:
    return [
        SleepJob(c, b, k) for c in contexts for b in budgets if not b.is_none for k in range(b.samples)
    ]


def answer_jobs(
    rows: Iterable[ContextWithQueries], variants: Iterable[Variant], budgets: Sequence[AnswerBudget], pass_at_k: int = 1
) -> list[AnswerJob]:
    """Every labeled query x (raw context and every variant of its context) x every test budget,
    plus ``pass_at_k - 1`` extra raw-context samples per (query, budget) for the pass@k baseline."""
    by_context: dict[str, list[Variant]] = {}
    for v in variants:
        by_context.setdefault(v.context_id, []).append(v)
    jobs = []
    for row in rows:
        sources: list[Variant | None] = [None, *by_context.get(row.context.id, [])]
        for q in row.queries:
            for source in sources:
                jobs.extend(AnswerJob(row.context, q, b, source) for b in budgets)
            jobs.extend(AnswerJob(row.context, q, b, None, k) for b in budgets for k in range(1, pass_at_k))
    return jobs


@dataclass
class BatchResult:
    rows: list = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


async def run_bounded(
    items: Sequence[T],
    work: Callable[[T], Awaitable[object]],
    describe: Callable[[T], tuple[str, str, str]],
    concurrency: int,
    progress: Progress | None = None,
) -> BatchResult:
    """Run ``work`` over ``items`` with at most ``concurrency`` in flight.

    ``describe(item)`` gives (stage, key, context id) for the failure record of an item whose
    model call failed; other exceptions are bugs and propagate.
    """
    result = BatchResult()
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> None:
        async with gate:
            try:
                result.rows.append(await work(item))
            except ModelError as exc:
                stage, key, context_id = describe(item)
                result.failures.append(Failure(stage=stage, key=key, context_id=context_id, reason=str(exc)))
            finally:
                if progress:
                    progress(1)

    await asyncio.gather(*(one(item) for item in items))
    return result


async def run_sleep_jobs(
    gateway: ModelGateway, model: str, jobs: Sequence[SleepJob], concurrency: int, progress: Progress | None = None
) -> BatchResult:
    return await run_bounded(
        jobs,
        lambda j: make_variant(gateway, model, j.context, j.budget, j.sample_index),
        lambda j: ("sleep", j.key(model), j.context.id),
        concurrency,
        progress,
    )


async def run_answer_jobs(
    gateway: ModelGateway, model: str, jobs: Sequence[AnswerJob], concurrency: int, progress: Progress | None = None
) -> BatchResult:
    return await run_bounded(
        jobs,
        lambda j: answer_query(gateway, model, j.context, j.query, j.budget, j.variant, j.sample_index),
        lambda j: ("test", j.key(model), j.context.id),
        concurrency,
        progress,
    )
