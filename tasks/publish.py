"""Tasks: repair what a crashed run left, gate the run's delta and publish it, or refuse."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sleeptime.config import RunConfig
from sleeptime.pipeline import PublishOutcome, RunSummary, publish, record_failed_run, recover
from sleeptime.policy.store import derive_policy
from sleeptime.quality.gate import preload
from sleeptime.quality.snapshot import gate_delta, gate_full
from sleeptime.storage.spool import Spool
from sleeptime.storage.warehouse import Warehouse


@task(name="recover", cache_policy=NO_CACHE)
def recover_output(config: RunConfig) -> dict[str, Any]:
    """Catch the warehouse up with a commit it missed, record interrupted runs, drop orphan files."""
    found = recover(config.open_lake(), Warehouse(config.warehouse_path))
    logger = get_run_logger()
    if found["warehouse_rows_caught_up"]:
        logger.warning("the warehouse missed the last lake commit (a run was killed in between); "
                       "applied its %d rows", found["warehouse_rows_caught_up"])
    if found["interrupted_runs"]:
        logger.warning("runs %s were killed before publishing; their finished work is reused",
                       ", ".join(found["interrupted_runs"]))
    return found


def warm_up_gate() -> None:
    """Import great-expectations in the background while the model stage runs (not a task: a
    thread of the flow's process, where the gate will run)."""
    preload()


@task(name="validate-and-publish", cache_policy=NO_CACHE)
def validate_and_publish(config: RunConfig, summary: RunSummary) -> PublishOutcome:
    logger = get_run_logger()
    spool = Spool(config.spool_dir)
    outcome = publish(
        config.open_lake(),
        Warehouse(config.warehouse_path),
        summary,
        gate=lambda candidate: gate_delta(candidate, config, summary.run_id),
        derive=lambda con: derive_policy(con, config.policy_settings, summary.run_id),
        spool=spool.take,
    )
    if outcome.published:
        logger.info("published lake snapshot %s to %s (rows %s)", outcome.lake_snapshot, config.warehouse_path,
                    outcome.rows_applied)
    else:
        logger.error("quality gate refused the run's rows; the previous snapshot stays published:\n%s", outcome.reason)
    return outcome


@task(name="record-failed-run", cache_policy=NO_CACHE)
def record_failed(config: RunConfig, summary: RunSummary) -> None:
    record_failed_run(config.open_lake(), summary)
    get_run_logger().error(
        "%d of %d items failed (%.1f%% > max_failure_rate %.1f%%); nothing published, finished work stays staged",
        len(summary.failures), summary.items_attempted, 100 * summary.failure_rate, 100 * config.max_failure_rate,
    )


class ValidationFailed(RuntimeError):
    """The full re-validation found failed expectations in the published warehouse."""


@task(name="validate-full", cache_policy=NO_CACHE)
def validate_full_task(config: RunConfig) -> str:
    """The full GX suites over every current row of the published warehouse."""
    with Warehouse(config.warehouse_path).read() as con:
        ok, report = gate_full(con, config)
    if not ok:
        get_run_logger().error("full validation failed:\n%s", report)
        raise ValidationFailed(report)
    get_run_logger().info(report)
    return report
