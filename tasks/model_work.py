"""Tasks: one Prefect task per shard; its model calls fan out to a Ray actor.

A finished shard's rows are staged in the lake at once, so a crash later in the run costs only
the shards that had not finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ray
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from sleeptime.compute import Failure, SleepJob, AnswerJob
from sleeptime.config import RunConfig
from sleeptime.domain import CallCounters
from sleeptime.storage import answer_record, variant_record
from tasks import progress
from tasks.ray_pool import RayPool

# A worker lost with its node (or restarting after a crash) fails the shard's call with one of
# these; Ray restarts the actor elsewhere, and the shard is safe to send again: its rows reach the
# lake only through the driver, and replies already made come back from the response cache.
_WORKER_LOST = (ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError, ray.exceptions.NodeDiedError)
SHARD_RETRIES = 3


def _worker_was_lost(task, task_run, state) -> bool:
    return isinstance(state.result(raise_on_failure=False), _WORKER_LOST)


@dataclass
class ShardOutcome:
    rows: int
    failures: list[Failure] = field(default_factory=list)
    counters: CallCounters = field(default_factory=CallCounters)  # the shard's model calls
    node_id: str = ""  # the Ray node whose worker made the calls
    attempts: int = 1  # more than 1: the shard was sent again after its worker was lost


def spent_usd(outcomes: list[ShardOutcome]) -> float:
    """What the shards' model calls cost (cache hits are free)."""
    return sum(o.counters.cost_usd for o in outcomes)


def _run_shard(stage: str, index: int, jobs: list, config: RunConfig, run_id: str, pool: RayPool) -> ShardOutcome:
    """Send one shard to a Ray actor, stage its rows (and failures) at once, and account for it."""
    model, table, to_record = (
        (config.sleep_model, "variants", variant_record) if stage == "sleep" else (config.test_model, "answers", answer_record)
    )
    with pool.lease() as actor:
        result, counters, node_id = ray.get((actor.sleep if stage == "sleep" else actor.test).remote(model, jobs))
    records = [to_record(row, run_id) for row in result.rows]
    lake = config.open_lake()
    lake.stage(table, records)
    lake.stage("failures", [{**f.model_dump(), "run_id": run_id} for f in result.failures])
    get_run_logger().info(
        "%s shard %d: %d %s, %d failures, %d calls, %d cache hits", stage, index, len(records), table,
        len(result.failures), counters.calls, counters.cache_hits,
    )
    return ShardOutcome(len(records), result.failures, counters, node_id, task_run.run_count or 1)


@task(name="sleep-shard", cache_policy=NO_CACHE, retries=SHARD_RETRIES, retry_delay_seconds=2,
      retry_condition_fn=_worker_was_lost)
def sleep_shard(index: int, jobs: list[SleepJob], config: RunConfig, run_id: str, pool: RayPool) -> ShardOutcome:
    """S(c) -> c' for one shard of (context, budget, sample) jobs."""
    return _run_shard("sleep", index, jobs, config, run_id, pool)


@task(name="test-shard", cache_policy=NO_CACHE, retries=SHARD_RETRIES, retry_delay_seconds=2,
      retry_condition_fn=_worker_was_lost)
def answer_shard(index: int, jobs: list[AnswerJob], config: RunConfig, run_id: str, pool: RayPool) -> ShardOutcome:
    """T(q, c) and T(q, c') for one shard of test jobs."""
    return _run_shard("test", index, jobs, config, run_id, pool)


def advance_when_done(futures: list, stage_name: str, sizes: list[int]) -> list[ShardOutcome]:
    """Wait for shard futures in completion order, advancing the stage's progress bar."""
    from prefect.futures import as_completed

    advance = progress.stage(stage_name, sum(sizes))
    size_of = {id(f): n for f, n in zip(futures, sizes)}
    for future in as_completed(futures):
        advance(size_of[id(future)])
    return [f.result() for f in futures]
