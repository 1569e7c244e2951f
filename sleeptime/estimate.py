"""What a run will spend before it spends: calls, tokens and USD per stage and model.

The planner's own pending work (the same SQL a run uses) is priced job by job:

- prompt tokens: the job's real prompt counted with cl100k, times the ratio between what the
  provider reported and what cl100k counts for the same prompts in this lake's history (its
  tokenizer is not ours); a test-time prompt whose c' does not exist yet counts the mean length of
  that budget's c' so far;
- completion tokens: the mean this model wrote at this budget before (per stage; test time apart
  with and without c'), or the budget's ``max_tokens`` when there is no history (an upper bound);
- USD: the model's price (sleeptime.model.price), as the run will bill it.

``max_cost_usd`` uses the same prices: work is admitted in plan order while its estimate fits, the
rest is deferred whole to the next run (never half-paid).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa

from sleeptime.compute import AnswerJob, SleepJob
from sleeptime.config import RunConfig
from sleeptime.domain import AnswerBudget, Context, Query, Usage
from sleeptime.model import price
from sleeptime.model._gateway import cache_savings, count_message_tokens
from sleeptime.pipeline import CorpusDiff, ingest_corpus, pending_sleep_jobs, pending_test_jobs
from sleeptime.prompts import answer_messages, sleep_messages
from sleeptime.storage import Lake
from sleeptime.storage.lake import lake_index
from sleeptime.tokens import count_tokens

J = TypeVar("J")
SAMPLE_ROWS = 200  # rows per (stage, model), a reservoir sample, rebuilt to measure the provider's tokenizer ratio


@dataclass(frozen=True)
class FutureAnswer:
    """A test-time job on a c' this run has yet to make (its sleep job is pending)."""

    context: Context
    query: Query
    budget: AnswerBudget
    sleep_budget: str


@dataclass(frozen=True)
class StageEstimate:
    stage: str  # "sleep" or "test"
    model: str
    calls: int
    prompt_tokens: float
    completion_tokens: float
    cost_usd: float
    calibrated: bool  # token counts from this lake's history (False: cl100k and max_tokens, an upper bound)
    cache_savings_usd: float = 0.0  # expected from the prompt-cache share this model had before
    batch: bool = False  # through the provider's batch API, at its batch price

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "model": self.model, "calls": self.calls,
                "prompt_tokens": round(self.prompt_tokens), "completion_tokens": round(self.completion_tokens),
                "cost_usd": self.cost_usd, "calibrated": self.calibrated, "cache_savings_usd": self.cache_savings_usd,
                "batch": self.batch}


@dataclass
class CostEstimate:
    stages: list[StageEstimate] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.stages)

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.stages)

    def as_dict(self) -> dict[str, Any]:
        return {"cost_usd": self.cost_usd, "calls": self.calls, "stages": [s.as_dict() for s in self.stages]}

    def lines(self) -> list[str]:
        out = [f"{'stage':<6} {'model':<20} {'calls':>7} {'prompt tok':>11} {'completion tok':>15} {'USD':>10}  basis"]
        for s in self.stages:
            basis = "this lake's history" if s.calibrated else "no history: cl100k, max_tokens (upper bound)"
            basis += "; batch price" if s.batch else "; online"
            out.append(f"{s.stage:<6} {s.model:<20} {s.calls:>7} {s.prompt_tokens:>11,.0f} "
                       f"{s.completion_tokens:>15,.0f} {s.cost_usd:>10.4f}  {basis}")
        out.append(f"total: {self.calls} calls, estimated ${self.cost_usd:.4f}")
        saved = sum(s.cache_savings_usd for s in self.stages)
        if saved:
            out.append(f"expected prompt-cache savings (this lake's cached share so far): ${saved:.4f}")
        return out


@dataclass
class _History:
    sleep_completion: dict[tuple[str, str], float]  # (model, sleep budget) -> mean completion tokens
    test_completion: dict[tuple[str, str, bool], float]  # (model, test budget, with c') -> mean
    prompt_ratio: dict[tuple[str, str], float]  # (stage, model) -> provider tokens / cl100k tokens
    cprime_tokens: dict[tuple[str, str], float]  # (model, sleep budget) -> mean cl100k tokens of c'
    # (stage, model) -> (share of prompt tokens read from the provider's cache, share written to it)
    cache_shares: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)


def _history(lake: Lake, config: RunConfig, overlay: dict | None) -> _History:
    verbosity = {t.name: t.verbosity for t in config.test_budgets}
    with lake_index(lake, overlay) as idx:
        sleep_completion = {(m, b): float(n) for m, b, n in idx.execute(
            "SELECT model, sleep_budget, avg(completion_tokens) FROM variants GROUP BY ALL").fetchall()}
        test_completion = {(m, b, bool(w)): float(n) for m, b, w, n in idx.execute(
            "SELECT test_model, test_budget, variant_id IS NOT NULL, avg(completion_tokens) FROM answers "
            "GROUP BY ALL").fetchall()}
        cache_shares = {(stage, m): (float(r or 0.0), float(w or 0.0)) for stage, m, r, w in idx.execute(
            """SELECT 'sleep', model, sum(cached_prompt_tokens) / nullif(sum(prompt_tokens), 0),
                      sum(cache_write_tokens) / nullif(sum(prompt_tokens), 0) FROM variants GROUP BY ALL
               UNION ALL
               SELECT 'test', test_model, sum(cached_prompt_tokens) / nullif(sum(prompt_tokens), 0),
                      sum(cache_write_tokens) / nullif(sum(prompt_tokens), 0) FROM answers GROUP BY ALL""").fetchall()}
        # A reservoir sample of each configured model's rows, then only the texts those rows need:
        # no sort and no distinct over the whole history (the lake may hold millions of answers).
        sleep_rows = idx.execute(
            f"""SELECT model, sleep_budget, prompt_tokens, text, context_hash
                FROM (SELECT * FROM variants WHERE model = ?) TABLESAMPLE reservoir({SAMPLE_ROWS:d} ROWS) REPEATABLE (7)""",
            [config.sleep_model]).fetchall()
        test_rows = idx.execute(
            f"""SELECT test_model, test_budget, prompt_tokens, context_hash, query_id, variant_id
                FROM (SELECT * FROM answers WHERE test_model = ?) TABLESAMPLE reservoir({SAMPLE_ROWS:d} ROWS)
                REPEATABLE (7)""",
            [config.test_model]).fetchall()
        hashes = sorted({r[4] for r in sleep_rows} | {r[3] for r in test_rows})
        idx.register("_wanted_hashes", pa.table({"h": pa.array(hashes, pa.string())}))
        context_text = dict(idx.execute(
            "SELECT content_hash, any_value(text) FROM contexts WHERE NOT deleted "
            "AND content_hash IN (SELECT h FROM _wanted_hashes) GROUP BY ALL").fetchall())
        idx.register("_wanted_queries", pa.table({"q": pa.array(sorted({r[4] for r in test_rows}), pa.string())}))
        query_text = {(q, h): t for q, h, t in idx.execute(
            "SELECT query_id, context_hash, any_value(text) FROM queries WHERE query_id IN (SELECT q FROM _wanted_queries) "
            "GROUP BY ALL").fetchall()}
        idx.register("_wanted_variants", pa.table({"v": pa.array(sorted({r[5] for r in test_rows if r[5]}), pa.string())}))
        notes_text = dict(idx.execute(
            "SELECT variant_id, any_value(text) FROM variants WHERE variant_id IN (SELECT v FROM _wanted_variants) "
            "GROUP BY ALL").fetchall())
    reported: dict[tuple[str, str], float] = defaultdict(float)
    counted: dict[tuple[str, str], float] = defaultdict(float)
    cprime: dict[tuple[str, str], list[int]] = defaultdict(list)
    for model, budget, prompt_tokens, text, context_hash in sleep_rows:
        if context_hash not in context_text:
            continue
        reported["sleep", model] += prompt_tokens or 0
        counted["sleep", model] += count_message_tokens(sleep_messages(context_text[context_hash]))
        cprime[model, budget].append(count_tokens(text or ""))
    for model, budget, prompt_tokens, context_hash, query_id, variant_id in test_rows:
        # A budget no longer configured, or a text no longer in the lake: the prompt cannot be rebuilt.
        if budget not in verbosity or context_hash not in context_text or (query_id, context_hash) not in query_text:
            continue
        if variant_id and variant_id not in notes_text:
            continue
        reported["test", model] += prompt_tokens or 0
        counted["test", model] += count_message_tokens(answer_messages(
            context_text[context_hash], query_text[query_id, context_hash], verbosity[budget],
            notes=notes_text.get(variant_id) if variant_id else None))
    return _History(
        sleep_completion=sleep_completion,
        test_completion=test_completion,
        prompt_ratio={k: reported[k] / counted[k] for k in counted if counted[k] and reported[k]},
        cprime_tokens={k: sum(v) / len(v) for k, v in cprime.items()},
        cache_shares=cache_shares,
    )


class Estimator:
    """Prices jobs for one configuration from one lake's history (built once per run)."""

    def __init__(self, lake: Lake, config: RunConfig, overlay: dict | None = None):
        self.config = config
        self.history = _history(lake, config, overlay)

    def _usage(self, stage: str, model: str, prompt: float, completion: float) -> Usage:
        """The expected usage, with the share of the prompt this model's cache served before."""
        read, write = self.history.cache_shares.get((stage, model), (0.0, 0.0))
        return Usage(prompt_tokens=round(prompt), completion_tokens=round(completion),
                     cached_prompt_tokens=round(prompt * read), cache_write_tokens=round(prompt * write))

    def _usd(self, stage: str, model: str, prompt: float, completion: float) -> float:
        spec = self.config.models[model]
        return price(spec, self._usage(stage, model, prompt, completion)) * spec.price_factor(stage)

    def sleep(self, job: SleepJob) -> tuple[float, float, bool]:
        """(prompt tokens, completion tokens, calibrated) for one sleep job."""
        model = self.config.sleep_model
        ratio = self.history.prompt_ratio.get(("sleep", model))
        prompt = count_message_tokens(sleep_messages(job.context.text)) * (ratio or 1.0)
        completion = self.history.sleep_completion.get((model, job.budget.name))
        if completion is None:
            completion = self.config.models[model].call_params(job.budget)[0]
        return prompt, completion, ratio is not None and (model, job.budget.name) in self.history.sleep_completion

    def answer(self, job: AnswerJob | FutureAnswer) -> tuple[float, float, bool]:
        """(prompt tokens, completion tokens, calibrated) for one test-time job."""
        model = self.config.test_model
        ratio = self.history.prompt_ratio.get(("test", model))
        if isinstance(job, FutureAnswer):
            counted = count_message_tokens(answer_messages(job.context.text, job.query.text, job.budget.verbosity,
                                                           notes="x"))
            sleep_budget = next(b for b in self.config.sleep_budgets if b.name == job.sleep_budget)
            notes = self.history.cprime_tokens.get((self.config.sleep_model, job.sleep_budget))
            if notes is None:
                notes = self.config.models[self.config.sleep_model].call_params(sleep_budget)[0]
            counted += notes - 1
            with_notes = True
        else:
            counted = count_message_tokens(answer_messages(
                job.context.text, job.query.text, job.budget.verbosity,
                notes=job.variant.text if job.variant else None))
            with_notes = job.variant is not None
        completion = self.history.test_completion.get((model, job.budget.name, with_notes))
        calibrated = ratio is not None and completion is not None
        if completion is None:
            completion = self.config.models[model].call_params(job.budget)[0]
        return counted * (ratio or 1.0), completion, calibrated

    def sleep_usd(self, job: SleepJob) -> float:
        prompt, completion, _ = self.sleep(job)
        return self._usd("sleep", self.config.sleep_model, prompt, completion)

    def answer_usd(self, job: AnswerJob | FutureAnswer) -> float:
        prompt, completion, _ = self.answer(job)
        return self._usd("test", self.config.test_model, prompt, completion)

    def estimate(self, sleep_jobs: Sequence[SleepJob], answer_jobs: Sequence[AnswerJob | FutureAnswer]) -> CostEstimate:
        stages = []
        for stage, model, jobs, price_one in (("sleep", self.config.sleep_model, sleep_jobs, self.sleep),
                                             ("test", self.config.test_model, answer_jobs, self.answer)):
            if not jobs:
                continue
            priced = [price_one(j) for j in jobs]  # type: ignore[arg-type]
            prompt = sum(p for p, _, _ in priced)
            completion = sum(c for _, c, _ in priced)
            usage = self._usage(stage, model, prompt, completion)
            spec = self.config.models[model]
            factor = spec.price_factor(stage)
            stages.append(StageEstimate(stage, model, len(jobs), prompt, completion, price(spec, usage) * factor,
                                        all(ok for _, _, ok in priced), cache_savings(spec, usage) * factor,
                                        batch=stage == "sleep" and spec.batch))
        return CostEstimate(stages)


def future_answers(lake: Lake, config: RunConfig, sleep_jobs: Sequence[SleepJob],
                   overlay: dict | None = None) -> list[FutureAnswer]:
    """The test grid each pending c' will get once made: its context's labeled queries x test budgets."""
    wanted = {j.context.content_hash for j in sleep_jobs}
    if not wanted:
        return []
    by_hash: dict[str, list[Query]] = defaultdict(list)
    with lake_index(lake, overlay) as idx:
        for query_id, context_id, context_hash, text, gold, kind in idx.execute(
                "SELECT DISTINCT ON (query_id, context_hash) query_id, context_id, context_hash, text, gold_answer, kind "
                "FROM queries ORDER BY query_id, context_hash").fetchall():
            if context_hash in wanted:
                by_hash[context_hash].append(Query(id=query_id, context_id=context_id, text=text, gold_answer=gold,
                                                   kind=kind))
    return [FutureAnswer(job.context, q, b, job.budget.name)
            for job in sleep_jobs for q in by_hash[job.context.content_hash] for b in config.test_budgets]


def admit_within(jobs: Sequence[J], cost: Callable[[J], float], budget_usd: float | None) -> tuple[list[J], list[J]]:
    """(admitted, deferred): jobs in order while their estimated cost fits ``budget_usd`` (None: all)."""
    if budget_usd is None:
        return list(jobs), []
    spent = 0.0
    for i, job in enumerate(jobs):
        spent += cost(job)
        if spent > budget_usd + 1e-12:
            return list(jobs[:i]), list(jobs[i:])
    return list(jobs), []


def estimate_pending(lake: Lake, config: RunConfig, do_sleep: bool = True, do_test: bool = True,
                     overlay: dict | None = None) -> tuple[Estimator, CostEstimate]:
    """The estimate of everything a run would compute now: pending c', pending answers, and the
    answers the pending c' will need."""
    estimator = Estimator(lake, config, overlay)
    sleep_jobs = pending_sleep_jobs(lake, config, overlay) if do_sleep else []
    answers: list[AnswerJob | FutureAnswer] = []
    if do_test:
        answers += pending_test_jobs(lake, config, overlay)[0]
        answers += future_answers(lake, config, sleep_jobs, overlay)
    return estimator, estimator.estimate(sleep_jobs, answers)


def dry_run(lake: Lake, config: RunConfig, do_sleep: bool = True, do_test: bool = True) -> tuple[CorpusDiff, CostEstimate]:
    """What ``sleeptime run`` would do now, with no model call and nothing written: the corpus
    diff and the estimate (the ingest's rows are planned as an overlay, never staged)."""
    ingested = ingest_corpus(lake, "r-dry-run", config.corpus, config.corpus_format, config.max_contexts, stage=False)
    return ingested.diff, estimate_pending(lake, config, do_sleep, do_test, ingested.unstaged)[1]
