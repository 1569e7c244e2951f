"""The product's flows: refresh (sleep time), evaluate (test time), and run (both, then publish).

Each flow: resolve config -> take the output lock -> recover -> ingest + diff -> shard -> fan out
on Ray -> stage -> GX gate on the delta -> publish (one lake commit, the warehouse updated from
it). Only what is missing is computed, so rerunning an unchanged corpus makes no model call.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from sleeptime.pipeline import RunSummary, new_run_id
from sleeptime.storage.lock import OutputLock
from tasks.batch import sleep_batch
from tasks.corpus import ingest
from tasks.local_models import LocalModels
from tasks.model_work import advance_when_done, answer_shard, sleep_shard, spent_usd
from tasks.plan import Planned, estimate_cost, plan_sleep, plan_test
from tasks.publish import record_failed, recover_output, validate_and_publish, validate_full_task, warm_up_gate
from tasks.ray_pool import RayPool
from tasks.report import write_report_task
from tasks.summary import resolve_config, summarize


class RunFailed(RuntimeError):
    """The run finished but did not publish (quality gate), or recorded failed items."""

    def __init__(self, message: str, summary: RunSummary):
        super().__init__(message)
        self.summary = summary


def _pipeline(config_path: str | None, overrides: dict[str, Any], do_sleep: bool, do_test: bool,
              do_report: bool = False, wait_for_lock: bool = False, wait_for_batches: bool = False,
              collect_only: bool = False) -> RunSummary:
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    run_id = new_run_id()
    config = resolve_config(config_path, overrides)
    # One writer per output location, taken before anything is read or any model is called; a
    # second run exits (OutputLocked, exit 75 from the CLI) or, with wait_for_lock, queues.
    with OutputLock(config.output_dir, run_id, wait=wait_for_lock):
        return _locked(config, run_id, started, t0, do_sleep, do_test, do_report, wait_for_batches, collect_only)


def _locked(config, run_id: str, started: datetime, t0: float, do_sleep: bool, do_test: bool,
            do_report: bool, wait_for_batches: bool, collect_only: bool) -> RunSummary:
    recovered = recover_output(config)
    ingested = ingest(config, run_id)
    estimator, estimate = estimate_cost(config, ingested, do_sleep, do_test)
    sleep_outcomes, test_outcomes = [], []
    sleep_plan = plan_sleep(config, ingested, estimator) if do_sleep else Planned([])
    sleep_shards = sleep_plan.shards
    batches = None
    with LocalModels(config) as local, RayPool(config) as pool:
        if sleep_shards and config.models[config.sleep_model].batch:
            warm_up_gate()
            outcome, batches = sleep_batch([j for s in sleep_shards for j in s], config, run_id,
                                           submit=not collect_only, wait=wait_for_batches)
            sleep_outcomes = [outcome]
        elif sleep_shards:
            warm_up_gate()  # there will be a delta to validate
            local.ensure(config.sleep_model)
            pool.ensure_started()
            futures = [sleep_shard.submit(i, s, config, run_id, pool) for i, s in enumerate(sleep_shards)]
            sleep_outcomes = advance_when_done(futures, "sleep time", [len(s) for s in sleep_shards])
        test_plan = plan_test(config, ingested, estimator, spent_usd(sleep_outcomes)) if do_test else Planned([])
        test_shards = test_plan.shards
        if test_shards:
            warm_up_gate()
            local.ensure(config.test_model)
            pool.ensure_started()
            futures = [answer_shard.submit(i, s, config, run_id, pool) for i, s in enumerate(test_shards)]
            test_outcomes = advance_when_done(futures, "test time", [len(s) for s in test_shards])
    summary = summarize(run_id, started, config, ingested, sleep_outcomes, test_outcomes, time.perf_counter() - t0,
                        pool.cluster, estimate, {"sleep": sleep_plan.deferred, "test": test_plan.deferred}, batches)
    if recovered["warehouse_rows_caught_up"] or recovered["interrupted_runs"]:
        summary.extra["recovered"] = recovered
    if summary.failure_rate > config.max_failure_rate:
        record_failed(config, summary)
        raise RunFailed(
            f"run {run_id}: {len(summary.failures)} of {summary.items_attempted} items failed "
            f"({summary.failure_rate:.1%} > max_failure_rate {config.max_failure_rate:.1%}); nothing published. "
            "Finished work stays staged; rerun to retry only the failed items.", summary)
    outcome = validate_and_publish(config, summary)
    if not outcome.published:
        raise RunFailed(f"quality gate refused run {run_id}; previous snapshot kept:\n{outcome.reason}", summary)
    if do_report:
        summary.extra["report"] = write_report_task(config)
    # At or under the threshold: published; the failed items are in failures_open and the next
    # run retries them.
    return summary


def _overrides(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


@flow(name="sleeptime-run", task_runner=ThreadPoolTaskRunner(max_workers=8))
def run(config_path: str | None = None, corpus: str | None = None, output_dir: str | None = None,
        max_contexts: int | None = None, workers: int | None = None, shard_size: int | None = None,
        ray_address: str | None = None, wait_for_lock: bool = False, wait_for_batches: bool = False,
        collect_only: bool = False) -> RunSummary:
    """The main job: refresh (sleep time) + evaluate (test time) + publish + report.

    With a batch sleep model, ``wait_for_batches`` waits for the provider's batches instead of
    leaving them to the next run, and ``collect_only`` collects finished ones without submitting."""
    overrides = _overrides(corpus=corpus, output_dir=output_dir, max_contexts=max_contexts, workers=workers,
                           shard_size=shard_size, ray_address=ray_address)
    return _pipeline(config_path, overrides, do_sleep=True, do_test=True, do_report=True, wait_for_lock=wait_for_lock,
                     wait_for_batches=wait_for_batches, collect_only=collect_only)


@flow(name="sleeptime-refresh", task_runner=ThreadPoolTaskRunner(max_workers=8))
def refresh(config_path: str | None = None, corpus: str | None = None, output_dir: str | None = None,
            workers: int | None = None, shard_size: int | None = None, ray_address: str | None = None,
            wait_for_lock: bool = True, wait_for_batches: bool = False) -> RunSummary:
    """Scheduled corpus refresh: sleep time for new and changed contexts, then publish.

    A scheduled refresh waits for a run that holds the output location instead of failing; with a
    batch sleep model it submits, publishes what earlier batches brought, and leaves the rest to
    the next refresh (or waits, with ``wait_for_batches``)."""
    overrides = _overrides(corpus=corpus, output_dir=output_dir, workers=workers, shard_size=shard_size,
                           ray_address=ray_address)
    return _pipeline(config_path, overrides, do_sleep=True, do_test=False, wait_for_lock=wait_for_lock,
                     wait_for_batches=wait_for_batches)


@flow(name="sleeptime-evaluate", task_runner=ThreadPoolTaskRunner(max_workers=8))
def evaluate(config_path: str | None = None, corpus: str | None = None, output_dir: str | None = None,
             workers: int | None = None, shard_size: int | None = None, ray_address: str | None = None,
             wait_for_lock: bool = True) -> RunSummary:
    """On-demand evaluation: the test-time grid over current variants, then publish."""
    overrides = _overrides(corpus=corpus, output_dir=output_dir, workers=workers, shard_size=shard_size,
                           ray_address=ray_address)
    return _pipeline(config_path, overrides, do_sleep=False, do_test=True, wait_for_lock=wait_for_lock)


@flow(name="sleeptime-validate-full")
def validate_full(config_path: str | None = None, output_dir: str | None = None) -> str:
    """Re-validate the whole published warehouse with the full GX suites (weekly; the publish
    gate checks only each run's delta)."""
    return validate_full_task(resolve_config(config_path, _overrides(output_dir=output_dir)))


@flow(name="sleeptime-report")
def report(config_path: str | None = None, output_dir: str | None = None) -> str | None:
    """The HTML report over the published warehouse (plots, headline numbers, policy scorecard)."""
    return write_report_task(resolve_config(config_path, _overrides(output_dir=output_dir)))
