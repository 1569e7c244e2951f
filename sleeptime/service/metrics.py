"""The query service's Prometheus metrics (prometheus_client), on a registry of its own per app:
the process-wide default registry would refuse a second app's series (tests build many) and
would mix two apps' counts.

``ServiceMetrics`` holds the series the service updates; ``ServingGauges`` reads the served
snapshot and the query log's backlog when scraped; ``RequestMetrics`` is the ASGI middleware that
counts every HTTP request by route template and status (413s and 408s from the body limits too).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sleeptime.service.querylog import QueryLog
    from sleeptime.service.snapshot import SnapshotHolder

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SELECTION_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3)


class ServiceMetrics:
    """The series the query service exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("sleeptime_requests_total", "HTTP requests handled, by route and status code.",
                                ("path", "status"), registry=r)
        self.latency = Histogram("sleeptime_request_latency_seconds", "Wall time per HTTP request, by route.",
                                 ("path",), buckets=LATENCY_BUCKETS, registry=r)
        self.answers = Counter("sleeptime_answers_total",
                               "Queries handled by /v1/answer, by outcome (answered, fallback, failed).", ("outcome",), registry=r)
        self.tokens = Counter("sleeptime_tokens_total", "Model tokens spent answering queries.", ("kind",), registry=r)
        self.cost = Counter("sleeptime_cost_usd_total", "USD spent answering queries.", registry=r)
        self.choices = Counter("sleeptime_choices_total", "Answered queries per (sleep budget, test budget) actually used.",
                               ("sleep_budget", "test_budget"), registry=r)
        self.model_errors = Counter("sleeptime_model_errors_total",
                                    "Options that failed with a model error (each moves to the next option).", registry=r)
        self.selection = Histogram("sleeptime_selection_seconds",
                                   "Time to select (variant, test budget) for a query, model call excluded.",
                                   buckets=SELECTION_BUCKETS, registry=r)
        self.reloads = Counter("sleeptime_snapshot_reloads_total", "Warehouse snapshots loaded, by result (ok, error).",
                               ("result",), registry=r)
        self.log_rows = Counter("sleeptime_query_log_rows_total", "Query-log rows written to the lake.", registry=r)
        self.log_errors = Counter("sleeptime_query_log_write_errors_total",
                                  "Failed query-log batch writes (rows are kept and retried).", registry=r)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its content type, in the format the scraper's Accept header asks
        for (Prometheus text by default, OpenMetrics when asked)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class ServingGauges(Collector):
    """Gauges read at scrape time: the snapshot being served and the query log's backlog."""

    def __init__(self, holder: SnapshotHolder, querylog: QueryLog):
        self.holder = holder
        self.querylog = querylog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self.holder.current  # one read: the three values describe the same snapshot
        info = GaugeMetricFamily("sleeptime_snapshot_info", "The snapshot being served (value 1).",
                                 labels=("snapshot", "policy_version"))
        if snapshot is not None:
            info.add_metric((snapshot.name, snapshot.policy_version or ""), 1.0)
        yield info
        yield GaugeMetricFamily("sleeptime_snapshot_contexts", "Contexts in the snapshot being served.",
                                value=float(len(snapshot.contexts)) if snapshot else 0.0)
        yield GaugeMetricFamily("sleeptime_query_log_pending_rows", "Query-log rows not yet written.",
                                value=float(self.querylog.pending))


class RequestMetrics:
    """ASGI middleware: requests and latency by route template (never the raw path: ids in paths
    would make one series per context) and status; unrouted requests count as "other"."""

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = getattr(scope.get("route"), "path", None) or "other"
            self.metrics.requests.labels(path=path, status=str(status)).inc()
            self.metrics.latency.labels(path=path).observe(time.perf_counter() - started)
