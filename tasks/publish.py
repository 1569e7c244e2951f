"""Tasks: gate the candidate snapshot with great-expectations and publish it, or refuse."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sleeptime.config import RunConfig
from sleeptime.pipeline import PublishOutcome, RunSummary, publish, record_failed_run
from sleeptime.policy.store import derive_policy
from sleeptime.quality.snapshot import gate_snapshot
from sleeptime.storage import Lake
from sleeptime.storage.warehouse import Warehouse


@task(name="validate-and-publish", cache_policy=NO_CACHE)
def validate_and_publish(config: RunConfig, summary: RunSummary) -> PublishOutcome:
    logger = get_run_logger()
    test_order = tuple(b.name for b in config.test_budgets)
    outcome = publish(
        Lake(config.lake_dir),
        Warehouse(config.warehouse_path),
        summary,
        gate=lambda path: gate_snapshot(path, config),
        derive=lambda path: derive_policy(path, config.policy, summary.run_id, test_order),
    )
    if outcome.published:
        logger.info("published %s (%d lake files)", config.warehouse_path, outcome.snapshot_files)
    else:
        logger.error("quality gate refused the snapshot; the previous one stays published:\n%s", outcome.reason)
    return outcome


@task(name="record-failed-run", cache_policy=NO_CACHE)
def record_failed(config: RunConfig, summary: RunSummary) -> None:
    record_failed_run(Lake(config.lake_dir), summary)
    get_run_logger().error(
        "%d of %d items failed (%.1f%% > max_failure_rate %.1f%%); nothing published, finished work stays staged",
        len(summary.failures), summary.items_attempted, 100 * summary.failure_rate, 100 * config.max_failure_rate,
    )
