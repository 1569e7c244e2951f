"""Tasks: one Prefect task per shard; its model calls fan out to a Ray actor.

A finished shard's rows are staged in the lake at once, so a crash later in the run costs only
the shards that had not finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ray
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sleeptime.compute import Failure, SleepJob, TestJob
from sleeptime.config import RunConfig
from sleeptime.domain import Usage, content_hash
from sleeptime.storage import Lake, answer_record, variant_record
from tasks import progress
from tasks.ray_pool import RayPool


@dataclass
class ShardOutcome:
    rows: int
    failures: list[Failure] = field(default_factory=list)
    calls: int = 0
    usage: Usage = field(default_factory=lambda: Usage(prompt_tokens=0, completion_tokens=0))
    cost_usd: float = 0.0
    retries: int = 0


def _stage_shard(lake: Lake, table: str, keys: list[str], records: list[dict], failures: list[Failure], run_id: str) -> None:
    name = f"{table}-" + content_hash(sorted(keys))[:16]
    if records:
        lake.stage(table, name, records)
    if failures:
        lake.stage("failures", f"failures-{name}", [{**f.model_dump(), "run_id": run_id} for f in failures])


def _outcome(result, stats: dict[str, int], rows: int) -> ShardOutcome:
    cost = sum(r.cost_usd for r in result.rows)
    usage = Usage(prompt_tokens=stats.get("prompt_tokens", 0), completion_tokens=stats.get("completion_tokens", 0))
    return ShardOutcome(rows, result.failures, stats.get("calls", 0), usage, cost, stats.get("retries", 0))


@task(name="sleep-shard", cache_policy=NO_CACHE)
def sleep_shard(index: int, jobs: list[SleepJob], config: RunConfig, run_id: str, pool: RayPool) -> ShardOutcome:
    """S(c) -> c' for one shard of (context, budget, sample) jobs."""
    logger = get_run_logger()
    result, stats = ray.get(pool.actor(index).sleep.remote(config.sleep_model, jobs))
    records = [variant_record(v, run_id) for v in result.rows]
    _stage_shard(Lake(config.lake_dir), "variants", [j.key(config.sleep_model) for j in jobs], records, result.failures, run_id)
    logger.info("shard %d: %d variants, %d failures, %d calls", index, len(records), len(result.failures), stats.get("calls", 0))
    return _outcome(result, stats, len(records))


@task(name="test-shard", cache_policy=NO_CACHE)
def test_shard(index: int, jobs: list[TestJob], config: RunConfig, run_id: str, pool: RayPool) -> ShardOutcome:
    """T(q, c) and T(q, c') for one shard of test jobs."""
    logger = get_run_logger()
    result, stats = ray.get(pool.actor(index).test.remote(config.test_model, jobs))
    records = [answer_record(a, run_id) for a in result.rows]
    _stage_shard(Lake(config.lake_dir), "answers", [j.key(config.test_model) for j in jobs], records, result.failures, run_id)
    logger.info("shard %d: %d answers, %d failures, %d calls", index, len(records), len(result.failures), stats.get("calls", 0))
    return _outcome(result, stats, len(records))


test_shard.__test__ = False  # type: ignore[attr-defined]


def advance_when_done(futures: list, stage_name: str, sizes: list[int]) -> list[ShardOutcome]:
    """Wait for shard futures in completion order, advancing the stage's progress bar."""
    from prefect.futures import as_completed

    advance = progress.stage(stage_name, sum(sizes))
    size_of = {id(f): n for f, n in zip(futures, sizes)}
    for future in as_completed(futures):
        advance(size_of[id(future)])
    return [f.result() for f in futures]
