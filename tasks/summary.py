"""Tasks: configuration and the run summary."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sleeptime.batch import BatchOutcome
from sleeptime.config import RunConfig, load_config
from sleeptime.estimate import CostEstimate
from sleeptime.model import check_credentials
from sleeptime.pipeline import RunSummary
from tasks.corpus import Ingested
from tasks.model_work import ShardOutcome


@task(name="resolve-config", cache_policy=NO_CACHE)
def resolve_config(config_path: str | None, overrides: dict[str, Any]) -> RunConfig:
    config = load_config(config_path, **overrides)
    # A missing API key fails the run here, naming the variable, not after hours of failed calls.
    check_credentials(config.models, {config.sleep_model, config.test_model})
    get_run_logger().info(
        "corpus %s; sleep model %s, test model %s; %d sleep and %d test budgets; %d Ray workers, shards of %d contexts",
        config.corpus, config.sleep_model, config.test_model, len(config.sleep_budgets), len(config.test_budgets),
        config.workers, config.shard_size,
    )
    return config


@task(name="summarize", cache_policy=NO_CACHE)
def summarize(run_id: str, started_at: datetime, config: RunConfig, ingested: Ingested,
              sleep: list[ShardOutcome], test: list[ShardOutcome], seconds: float,
              cluster: dict[str, Any] | None = None, estimate: CostEstimate | None = None,
              deferred: dict[str, int] | None = None, batches: BatchOutcome | None = None) -> RunSummary:
    summary = RunSummary(run_id=run_id, corpus=str(config.corpus), started_at=started_at, diff=ingested.diff)
    summary.quarantined = len(ingested.result.quarantined)
    summary.shards = len(sleep) + len(test)
    summary.workers = config.workers
    summary.seconds = seconds
    for outcome in sleep + test:
        summary.counters += outcome.counters
        summary.failures.extend(outcome.failures)
    summary.variants_written = sum(o.rows for o in sleep)
    summary.answers_written = sum(o.rows for o in test)
    if cluster is not None:
        # Which node ran each shard, in shard order: where a lost node's work went is auditable.
        summary.extra["ray"] = {**cluster, "shard_nodes": {"sleep": [o.node_id for o in sleep],
                                                           "test": [o.node_id for o in test]},
                                "shards_resent": sum(o.attempts - 1 for o in sleep + test)}
    if estimate is not None:
        summary.extra["estimate"] = estimate.as_dict()
    if batches is not None:
        summary.extra["batches"] = batches.as_dict()
    if deferred and any(deferred.values()):
        summary.extra["deferred"] = {**deferred, "max_cost_usd": config.max_cost_usd}
    return summary
