"""Tasks: decide which model calls this run must make, and cut them into shards."""

from __future__ import annotations

from collections import defaultdict
from typing import TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sleeptime.compute import SleepJob, AnswerJob
from sleeptime.config import RunConfig
from sleeptime.pipeline import pending_sleep_jobs, pending_test_jobs, shard
from tasks.corpus import Ingested

J = TypeVar("J", SleepJob, AnswerJob)


def _by_context(jobs: list[J], shard_size: int) -> list[list[J]]:
    """Shards of ``shard_size`` contexts each, keeping a context's jobs together."""
    groups: dict[str, list[J]] = defaultdict(list)
    for job in jobs:
        groups[job.context.id].append(job)
    return [[j for g in chunk for j in g] for chunk in shard(list(groups.values()), shard_size)]


@task(name="plan-sleep", cache_policy=NO_CACHE)
def plan_sleep(config: RunConfig, ingested: Ingested) -> list[list[SleepJob]]:
    """Sleep jobs for every configured budget and sample whose variant does not exist yet."""
    jobs = pending_sleep_jobs(config.open_lake(), config)
    shards = _by_context(jobs, config.shard_size)
    get_run_logger().info("sleep time: %d jobs in %d shards of up to %d contexts", len(jobs), len(shards), config.shard_size)
    return shards


@task(name="plan-test", cache_policy=NO_CACHE)
def plan_test(config: RunConfig, ingested: Ingested) -> list[list[AnswerJob]]:
    """Test jobs (raw context and every current variant, every test budget) not answered yet."""
    jobs, n_variants = pending_test_jobs(config.open_lake(), config)
    shards = _by_context(jobs, config.shard_size)
    get_run_logger().info("test time: %d jobs in %d shards (%d current variants)", len(jobs), len(shards), n_variants)
    return shards
