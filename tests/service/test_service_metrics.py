"""Prometheus metrics: one registry per app, gauges read when scraped, an optional scrape token."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from sleeptime.config import RunConfig
from sleeptime.service import ServiceSettings, create_app
from sleeptime.service.metrics import ServiceMetrics, ServingGauges

SERIES = ("sleeptime_requests_total", "sleeptime_request_latency_seconds", "sleeptime_answers_total",
          "sleeptime_tokens_total", "sleeptime_cost_usd_total", "sleeptime_choices_total",
          "sleeptime_model_errors_total", "sleeptime_selection_seconds", "sleeptime_snapshot_reloads_total",
          "sleeptime_query_log_rows_total", "sleeptime_query_log_write_errors_total")


def bare_app(tmp_path: Path, **settings):
    """An app with no published snapshot: enough for ops endpoints."""
    return create_app(ServiceSettings(config=RunConfig(output_dir=tmp_path / "out"), query_log=False, **settings))


def test_the_service_series_and_their_labels():
    metrics = ServiceMetrics()
    metrics.requests.labels(path="/v1/answer", status="200").inc()
    metrics.tokens.labels(kind="completion").inc(7)
    metrics.choices.labels(sleep_budget="small", test_budget="t0-direct").inc()
    metrics.selection.observe(3e-6)
    body, content_type = metrics.exposition(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    for name in SERIES:
        assert f"# TYPE {name} " in text, name
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["sleeptime_tokens"].samples[0].labels == {"kind": "completion"}
    assert families["sleeptime_tokens"].samples[0].value == 7
    assert 'sleeptime_choices_total{sleep_budget="small",test_budget="t0-direct"} 1.0' in text
    assert 'sleeptime_selection_seconds_bucket{le="5e-06"} 1.0' in text
    # A scraper that asks for OpenMetrics gets it.
    _, openmetrics = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert openmetrics.startswith("application/openmetrics-text")


def test_each_app_counts_on_its_own_registry(tmp_path):
    first, second = bare_app(tmp_path / "a"), bare_app(tmp_path / "b")  # the same series twice: no clash
    with TestClient(first) as a, TestClient(second) as b:
        for _ in range(3):
            assert a.get("/healthz").status_code == 200
        b.get("/healthz")
        count = {name: app.state.parts.metrics.registry.get_sample_value(
            "sleeptime_requests_total", {"path": "/healthz", "status": "200"}) for name, app in (("a", first), ("b", second))}
    assert count == {"a": 3, "b": 1}


def test_the_snapshot_gauges_are_read_when_scraped():
    holder = SimpleNamespace(current=None)
    querylog = SimpleNamespace(pending=0)
    metrics = ServiceMetrics()
    metrics.registry.register(ServingGauges(holder, querylog))
    value = metrics.registry.get_sample_value
    assert value("sleeptime_snapshot_contexts") == 0 and value("sleeptime_snapshot_info", {"snapshot": "lake-7", "policy_version": "p_1"}) is None
    holder.current = SimpleNamespace(name="lake-7", policy_version="p_1", contexts={"c1": 1, "c2": 2})
    querylog.pending = 4
    assert value("sleeptime_snapshot_info", {"snapshot": "lake-7", "policy_version": "p_1"}) == 1
    assert value("sleeptime_snapshot_contexts") == 2 and value("sleeptime_query_log_pending_rows") == 4


def test_metrics_are_open_by_default(tmp_path):
    with TestClient(bare_app(tmp_path)) as client:
        assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": "Basic c2NyYXBlOnRva2Vu"},
    "a tenant's API key",
])
def test_with_a_metrics_token_only_that_token_scrapes(served, tmp_path, headers):
    if headers == "a tenant's API key":  # a tenant may not read every tenant's traffic
        headers = served.headers("acme")
    app = bare_app(tmp_path, metrics_token="s3cret-scrape", keys_path=served.keys.path)
    with TestClient(app) as client:
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "sleeptime_" not in refused.text
        allowed = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
        assert allowed.status_code == 200 and "sleeptime_requests_total" in allowed.text
        assert 'path="/metrics",status="401"' in allowed.text
        assert client.get("/healthz").status_code == 200  # probes stay open
    assert "s3cret-scrape" not in repr(app.state.parts.settings)
