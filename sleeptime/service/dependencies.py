"""The long-lived parts of one service app, and the FastAPI dependencies that hand them to routes.

``ServiceParts.build(settings)`` makes them once per app; ``create_app`` keeps them in
``app.state.parts``. A route asks for what it uses (``holder: Holder``, ``querylog: QueryLogDep``)
rather than reaching into the app, so each route module reads on its own and tests can replace a
part with ``app.dependency_overrides``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from sleeptime.model import ModelGateway, ResponseCache
from sleeptime.service.errors import problem
from sleeptime.service.keys import KeyStore
from sleeptime.service.metrics import ServiceMetrics, ServingGauges
from sleeptime.service.querylog import QueryLog
from sleeptime.service.settings import ServiceSettings
from sleeptime.service.snapshot import ServingSnapshot, SnapshotHolder


@dataclass(frozen=True)
class ServiceParts:
    settings: ServiceSettings
    holder: SnapshotHolder  # the published snapshot and policy being served
    keys: KeyStore
    querylog: QueryLog
    metrics: ServiceMetrics
    gateway: ModelGateway

    @classmethod
    def build(cls, settings: ServiceSettings) -> ServiceParts:
        config = settings.config
        metrics = ServiceMetrics()
        holder = SnapshotHolder(
            settings.resolved_warehouse, config, settings.reload_interval_s,
            on_reload=lambda result: metrics.reloads.labels(result=result).inc(),
        )
        querylog = QueryLog(
            settings.resolved_spool, settings.log_batch_size, settings.log_flush_s,
            on_written=metrics.log_rows.inc, on_error=metrics.log_errors.inc, enabled=settings.query_log,
        )
        metrics.registry.register(ServingGauges(holder, querylog))
        cache_path = config.response_cache.path or config.output_dir / "cache" / "responses.sqlite"
        gateway = ModelGateway(
            config.models, cache=ResponseCache(cache_path) if settings.response_cache else None,
            uncached_models=config.response_cache.exclude_models,
        )
        return cls(settings, holder, KeyStore(settings.resolved_keys), querylog, metrics, gateway)


def service_parts(request: Request) -> ServiceParts:
    return request.app.state.parts


Parts = Annotated[ServiceParts, Depends(service_parts)]


def _settings(parts: Parts) -> ServiceSettings:
    return parts.settings


def _holder(parts: Parts) -> SnapshotHolder:
    return parts.holder


def _querylog(parts: Parts) -> QueryLog:
    return parts.querylog


def _metrics(parts: Parts) -> ServiceMetrics:
    return parts.metrics


def _gateway(parts: Parts) -> ModelGateway:
    return parts.gateway


Settings = Annotated[ServiceSettings, Depends(_settings)]
Holder = Annotated[SnapshotHolder, Depends(_holder)]
QueryLogDep = Annotated[QueryLog, Depends(_querylog)]
Metrics = Annotated[ServiceMetrics, Depends(_metrics)]
Gateway = Annotated[ModelGateway, Depends(_gateway)]


def serving_snapshot(holder: SnapshotHolder) -> ServingSnapshot:
    """The snapshot a request answers from (kept to its end, reloads or not); 503 while none is
    loaded. Called in the route, after the checks of the request itself, so that a bad request
    is told so (401, 422, 413) whether or not a snapshot is loaded yet."""
    snapshot = holder.current
    if snapshot is None:
        raise problem(503, f"no warehouse snapshot loaded yet ({holder.last_error or 'loading'})")
    return snapshot
