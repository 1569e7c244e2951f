"""Task: sleep time through the provider's batch API (sleeptime/batch.py), in place of the Ray
fan-out, for a sleep model with ``batch: true``."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sleeptime.batch import BatchOutcome, run_batch_step
from sleeptime.compute import SleepJob
from sleeptime.config import RunConfig
from sleeptime.storage.records import variant_record
from tasks import progress
from tasks.model_work import ShardOutcome


@task(name="sleep-batch", cache_policy=NO_CACHE)
def sleep_batch(jobs: list[SleepJob], config: RunConfig, run_id: str, submit: bool,
                wait: bool) -> tuple[ShardOutcome, BatchOutcome]:
    """Collect finished batches, submit the jobs no batch holds, wait if asked; stage what came back."""
    lake = config.open_lake()
    model = config.sleep_model
    advance = progress.stage("sleep time (batches)", len(jobs)) if wait else None
    outcome = run_batch_step(lake, config.models[model], model, run_id, jobs, submit, wait,
                             poll_s=config.batch_poll_s, progress=advance)
    lake.stage("variants", [variant_record(v, run_id) for v in outcome.variants])
    lake.stage("failures", [{**f.model_dump(), "run_id": run_id} for f in outcome.failures])
    get_run_logger().info(
        "sleep batches: %d collected (%d variants, %d failures), %d submitted with %d items (%d sent again), %d pending",
        outcome.collected, len(outcome.variants), len(outcome.failures), outcome.submitted, outcome.items_submitted,
        outcome.resubmitted, outcome.pending)
    return ShardOutcome(len(outcome.variants), outcome.failures, outcome.counters), outcome
