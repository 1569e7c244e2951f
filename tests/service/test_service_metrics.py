"""The hand-written Prometheus exposition."""

import pytest

from sleeptime.service.metrics import Counter, Histogram, Registry, ServiceMetrics


def test_counter_and_histogram_text():
    registry = Registry()
    c = registry.add(Counter("x_total", "Things.", ("kind",)))
    h = registry.add(Histogram("lat_seconds", "Latency.", (0.1, 1.0)))
    c.inc(kind="a")
    c.inc(2, kind='b"q')
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    text = registry.render()
    assert "# TYPE x_total counter" in text and 'x_total{kind="a"} 1' in text and 'x_total{kind="b\\"q"} 2' in text
    assert 'lat_seconds_bucket{le="0.1"} 2' in text and 'lat_seconds_bucket{le="1"} 3' in text
    assert 'lat_seconds_bucket{le="+Inf"} 4' in text and "lat_seconds_count 4" in text and "lat_seconds_sum 3.65" in text
    with pytest.raises(ValueError):
        c.inc(-1, kind="a")
    with pytest.raises(ValueError):
        c.inc(kind="a", extra="b")


def test_service_series_are_registered():
    text = ServiceMetrics().render()
    for name in ("sleeptime_requests_total", "sleeptime_request_latency_seconds", "sleeptime_tokens_total",
                 "sleeptime_cost_usd_total", "sleeptime_choices_total", "sleeptime_snapshot_reloads_total",
                 "sleeptime_selection_seconds"):
        assert f"# TYPE {name} " in text
