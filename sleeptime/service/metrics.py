"""A tiny Prometheus text exposition (format 0.0.4): counters, gauges and histograms by hand.

No client library: the service needs a handful of series, and every update is one dict write
under a lock. ``Registry.render()`` is what ``GET /metrics`` returns.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SELECTION_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        pairs.append(f'{extra[0]}="{extra[1]}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()):
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()):
        super().__init__(name, help, labelnames)
        self._values: dict[tuple[str, ...], float] = {} if labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [*self.header(), *(f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items)]


class Gauge(_Metric):
    """A gauge read at render time from a callback returning {label values: value}."""

    kind = "gauge"

    def __init__(self, name: str, help: str, read: Callable[[], dict[tuple[str, ...], float]], labelnames: Sequence[str] = ()):
        super().__init__(name, help, labelnames)
        self._read = read

    def render(self) -> list[str]:
        return [*self.header(), *(f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in sorted(self._read().items()))]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Iterable[float], labelnames: Sequence[str] = ()):
        super().__init__(name, help, labelnames)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [0.0] * (len(self.buckets) + 2)
            series[index] += 1  # the first bucket whose upper bound >= value (or +Inf)
            series[-1] += value

    def count(self, **labels: str) -> int:
        series = self._series.get(self._key(labels))
        return int(sum(series[:-1])) if series else 0

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        lines = self.header()
        for key, series in items:
            running = 0.0
            for bound, n in zip([*self.buckets, math.inf], series[:-1]):
                running += n
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, ('le', _number(bound)))} {_number(running)}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_number(series[-1])}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {_number(running)}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError(f"metric {metric.name} is registered twice")
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        return "\n".join(line for m in self._metrics for line in m.render()) + "\n"


class ServiceMetrics:
    """The series the query service exports."""

    def __init__(self) -> None:
        self.registry = Registry()
        add = self.registry.add
        self.requests: Counter = add(Counter("sleeptime_requests_total", "HTTP requests handled, by route and status code.", ("path", "status")))  # type: ignore[assignment]
        self.latency: Histogram = add(Histogram("sleeptime_request_latency_seconds", "Wall time per HTTP request, by route.", LATENCY_BUCKETS, ("path",)))  # type: ignore[assignment]
        self.answers: Counter = add(Counter("sleeptime_answers_total", "Queries handled by /v1/answer, by outcome (answered, fallback, failed).", ("outcome",)))  # type: ignore[assignment]
        self.tokens: Counter = add(Counter("sleeptime_tokens_total", "Model tokens spent answering queries.", ("kind",)))  # type: ignore[assignment]
        self.cost: Counter = add(Counter("sleeptime_cost_usd_total", "USD spent answering queries."))  # type: ignore[assignment]
        self.choices: Counter = add(Counter("sleeptime_choices_total", "Answered queries per (sleep budget, test budget) actually used.", ("sleep_budget", "test_budget")))  # type: ignore[assignment]
        self.model_errors: Counter = add(Counter("sleeptime_model_errors_total", "Options that failed with a model error (each moves to the next option)."))  # type: ignore[assignment]
        self.selection: Histogram = add(Histogram("sleeptime_selection_seconds", "Time to select (variant, test budget) for a query, model call excluded.", SELECTION_BUCKETS))  # type: ignore[assignment]
        self.reloads: Counter = add(Counter("sleeptime_snapshot_reloads_total", "Warehouse snapshots loaded, by result (ok, error).", ("result",)))  # type: ignore[assignment]
        self.log_rows: Counter = add(Counter("sleeptime_query_log_rows_total", "Query-log rows written to the lake."))  # type: ignore[assignment]
        self.log_errors: Counter = add(Counter("sleeptime_query_log_write_errors_total", "Failed query-log batch writes (rows are kept and retried)."))  # type: ignore[assignment]

    def add_gauge(self, name: str, help: str, read: Callable[[], dict[tuple[str, ...], float]], labelnames: Sequence[str] = ()) -> None:
        self.registry.add(Gauge(name, help, read, labelnames))

    def render(self) -> str:
        return self.registry.render()
