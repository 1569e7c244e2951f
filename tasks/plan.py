"""Tasks: decide which model calls this run must make, and cut them into shards."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sleeptime.compute import SleepJob, AnswerJob
from sleeptime.config import RunConfig
from sleeptime.estimate import CostEstimate, Estimator, admit_within, estimate_pending
from sleeptime.pipeline import pending_sleep_jobs, pending_test_jobs, shard
from tasks.corpus import Ingested

J = TypeVar("J", SleepJob, AnswerJob)


@dataclass
class Planned(Generic[J]):
    shards: list[list[J]]
    deferred: int = 0  # jobs past max_cost_usd, left for the next run


def _by_context(jobs: list[J], shard_size: int) -> list[list[J]]:
    """Shards of ``shard_size`` contexts each, keeping a context's jobs together."""
    groups: dict[str, list[J]] = defaultdict(list)
    for job in jobs:
        groups[job.context.id].append(job)
    return [[j for g in chunk for j in g] for chunk in shard(list(groups.values()), shard_size)]


@task(name="estimate-cost", cache_policy=NO_CACHE)
def estimate_cost(config: RunConfig, ingested: Ingested, do_sleep: bool, do_test: bool) -> tuple[Estimator, CostEstimate]:
    """What the run's pending work should cost, before any call (stored beside the actual cost)."""
    estimator, estimate = estimate_pending(config.open_lake(), config, do_sleep, do_test)
    get_run_logger().info("estimate: %d calls, $%.4f", estimate.calls, estimate.cost_usd)
    return estimator, estimate


def _within_budget(stage: str, jobs: list[J], cost: Callable[[J], float] | None,
                   budget_usd: float | None) -> tuple[list[J], int]:
    """(admitted jobs, how many were deferred) under ``budget_usd``, logging what was deferred."""
    if cost is None or budget_usd is None:
        return jobs, 0
    admitted, deferred = admit_within(jobs, cost, budget_usd)
    if deferred:
        get_run_logger().warning("%s: %d jobs deferred to the next run (max_cost_usd: $%.4f left for this stage; "
                                 "%d admitted)", stage, len(deferred), budget_usd, len(admitted))
    return admitted, len(deferred)


@task(name="plan-sleep", cache_policy=NO_CACHE)
def plan_sleep(config: RunConfig, ingested: Ingested, estimator: Estimator | None = None) -> Planned[SleepJob]:
    """Sleep jobs for every configured budget and sample whose variant does not exist yet, within
    max_cost_usd by their estimates."""
    jobs, deferred = _within_budget("sleep time", pending_sleep_jobs(config.open_lake(), config),
                                    estimator and estimator.sleep_usd, config.max_cost_usd)
    shards = _by_context(jobs, config.shard_size)
    get_run_logger().info("sleep time: %d jobs in %d shards of up to %d contexts", len(jobs), len(shards), config.shard_size)
    return Planned(shards, deferred)


@task(name="plan-test", cache_policy=NO_CACHE)
def plan_test(config: RunConfig, ingested: Ingested, estimator: Estimator | None = None,
              spent_usd: float = 0.0) -> Planned[AnswerJob]:
    """Test jobs (raw context and every current variant, every test budget) not answered yet,
    within what max_cost_usd leaves after ``spent_usd`` (sleep time), by their estimates."""
    jobs, n_variants = pending_test_jobs(config.open_lake(), config)
    budget_usd = None if config.max_cost_usd is None else max(config.max_cost_usd - spent_usd, 0.0)
    jobs, deferred = _within_budget("test time", jobs, estimator and estimator.answer_usd, budget_usd)
    shards = _by_context(jobs, config.shard_size)
    get_run_logger().info("test time: %d jobs in %d shards (%d current variants)", len(jobs), len(shards), n_variants)
    return Planned(shards, deferred)
