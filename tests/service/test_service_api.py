"""The app in-process: answers follow the policy, tenants are isolated, errors are 401/404/413/422."""

import json

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from sleeptime.service import ServiceSettings, create_app
from sleeptime.service.selection import infer_kind


@pytest.fixture(scope="module")
def client(served, helpers, tmp_path_factory):
    settings = ServiceSettings(
        config=served.config, keys_path=served.keys.path, query_log_dir=tmp_path_factory.mktemp("api-log"),
        reload_interval_s=0.2, max_question_chars=500, max_body_bytes=2048,
    )
    with TestClient(create_app(settings)) as c:
        helpers.wait_ready(c)
        yield c


def queries_of(served, context_id):
    return next(r.queries for r in served.result.loaded.rows if r.context.id == context_id)


def test_health_ready_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["contexts"] == 6 and ready["policy_version"].startswith("p_")
    spec = client.get("/openapi.json").json()
    assert {"/v1/answer", "/v1/contexts", "/v1/contexts/{context_id}/variants", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_answers_follow_the_policy_and_reproduce_the_evaluation(served, client):
    snapshot = client.app.state.parts.holder.current
    recorded = {(a.query_id, a.variant_id, a.test_budget): a for a in served.result.answers}
    checked = set()
    for who in ("acme", "globex"):
        for context_id in served.ids(who):
            for query in queries_of(served, context_id):
                kind = infer_kind(query.text)
                r = client.post("/v1/answer", json={"context_id": context_id, "question": query.text}, headers=served.headers(who))
                assert r.status_code == 200, r.text
                body = r.json()
                choice = snapshot.policy.choose(context_id, kind)
                got = body["choice"]
                assert (got["sleep_budget"], got["test_budget"]) == choice.option
                assert (got["scope"], got["scope_value"], got["fallback"]) == (choice.scope, choice.scope_value, choice.fallback)
                assert body["predicted_accuracy"] == pytest.approx(choice.predicted_accuracy)
                assert body["attempts"] == [{**body["attempts"][0], "ok": True}] and len(body["attempts"]) == 1
                # The same prompt through the same gateway: the reply the evaluation recorded.
                evaluated = recorded[(query.id, got["variant_id"], got["test_budget"])]
                assert body["reply"] == evaluated.raw_reply and body["answer"] == evaluated.parsed_answer
                assert body["usage"]["completion_tokens"] == evaluated.usage.completion_tokens
                assert body["latency_ms"] > 0 and body["selection_us"] > 0 and body["cost_usd"] == 0.0
                checked.add((got["scope"], got["scope_value"], got["sleep_budget"], got["test_budget"]))
    assert len(checked) >= 3  # corpus and kind scopes, different options


def test_request_target_and_caps(served, client):
    context_id = served.ids("acme")[0]
    ask = {"context_id": context_id, "question": "How many coins do Hugo and Sara have together?"}
    # No estimate's lower bound reaches 1: the most accurate option that can run, flagged.
    strict = client.post("/v1/answer", json={**ask, "target_accuracy": 1.0}, headers=served.headers("acme")).json()
    assert strict["choice"]["fallback"] and strict["target_accuracy"] == 1.0
    pool = client.app.state.parts.holder.current.policy.pool["sum"]
    assert strict["predicted_accuracy"] == pytest.approx(max(c.estimate for c in pool))
    cheap = client.post("/v1/answer", json={**ask, "max_cost": 100}, headers=served.headers("acme")).json()
    assert cheap["predicted_cost_weighted"] <= 100
    r = client.post("/v1/answer", json={**ask, "max_cost": 0.5}, headers=served.headers("acme"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "max_cost"]


def test_tenants_see_and_query_only_their_contexts(served, client):
    for who in ("acme", "globex"):
        listed = client.get("/v1/contexts", headers=served.headers(who)).json()
        assert listed["tenant"] == who and [c["context_id"] for c in listed["contexts"]] == served.ids(who)
        assert all(c["sleep_budgets"] == ["large", "small"] for c in listed["contexts"])
    page = client.get("/v1/contexts?offset=1&limit=1", headers=served.headers("acme")).json()
    assert page["total"] == 3 and [c["context_id"] for c in page["contexts"]] == served.ids("acme")[1:2]

    theirs = served.ids("globex")[0]
    foreign = client.post("/v1/answer", json={"context_id": theirs, "question": "How many?"}, headers=served.headers("acme"))
    unknown = client.post("/v1/answer", json={"context_id": "world-99999", "question": "How many?"}, headers=served.headers("acme"))
    assert foreign.status_code == unknown.status_code == 404
    # Nothing tells another tenant's context from an unknown one but the id echoed back.
    assert foreign.json()["detail"]["reason"].replace(theirs, "X") == unknown.json()["detail"]["reason"].replace("world-99999", "X")
    assert client.get(f"/v1/contexts/{theirs}/variants", headers=served.headers("acme")).status_code == 404
    mine = client.get(f"/v1/contexts/{theirs}/variants", headers=served.headers("globex")).json()
    assert {v["sleep_budget"] for v in mine["variants"]} == {"small", "large"} and mine["default_choice"]["scope"] == "context"


@pytest.mark.parametrize("headers, reason", [
    ({}, "missing API key"),
    ({"Authorization": "Bearer st_k_000000000000_" + "A" * 43}, "invalid or revoked API key"),
    ({"Authorization": "Bearer not-a-key"}, "invalid or revoked API key"),
    ({"X-API-Key": "wrong"}, "invalid or revoked API key"),
    ("revoked", "invalid or revoked API key"),
])
def test_missing_wrong_or_revoked_key_is_401(served, client, headers, reason):
    if headers == "revoked":
        headers = served.headers("revoked")
    for r in (
        client.post("/v1/answer", json={"context_id": served.ids("acme")[0], "question": "How many?"}, headers=headers),
        client.get("/v1/contexts", headers=headers),
    ):
        assert r.status_code == 401 and r.json()["detail"]["reason"] == reason
        assert r.headers["www-authenticate"] == "Bearer"


def test_x_api_key_header_works(served, client):
    r = client.get("/v1/contexts", headers={"X-API-Key": served.secrets["globex"]})
    assert r.status_code == 200 and r.json()["tenant"] == "globex"


def test_size_limits_are_413(served, client):
    headers = served.headers("acme")
    long = client.post("/v1/answer", json={"context_id": served.ids("acme")[0], "question": "How many? " * 60}, headers=headers)
    assert long.status_code == 413 and long.json()["detail"]["field"] == "question"
    big = client.post("/v1/answer", content=json.dumps({"context_id": "x" * 3000, "question": "q"}),
                      headers={**headers, "Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["detail"]["limit_bytes"] == 2048

    def chunks():  # no Content-Length: the limit counts the streamed bytes
        yield b'{"context_id": "'
        for _ in range(10):
            yield b"x" * 300
        yield b'", "question": "q"}'

    streamed = client.post("/v1/answer", content=chunks(), headers={**headers, "Content-Type": "application/json"})
    assert streamed.status_code == 413


@pytest.mark.parametrize("body, field", [
    ({"context_id": "world-00000"}, "question"),
    ({"question": "How many?"}, "context_id"),
    ({"context_id": "world-00000", "question": "   "}, "question"),
    ({"context_id": "world-00000", "question": "How many?", "target_accuracy": 1.5}, "target_accuracy"),
    ({"context_id": "world-00000", "question": "How many?", "max_cost": -1}, "max_cost"),
    ({"context_id": "world-00000", "question": "How many?", "max_latency_ms": 0}, "max_latency_ms"),
    ({"context_id": "world-00000", "question": "How many?", "colour": "red"}, "colour"),
])
def test_bad_bodies_are_422_naming_the_field(served, client, body, field):
    r = client.post("/v1/answer", json=body, headers=served.headers("acme"))
    assert r.status_code == 422
    assert any(e["loc"][-1] == field for e in r.json()["detail"]), r.json()


def test_not_json_is_422(served, client):
    r = client.post("/v1/answer", content=b"{not json", headers={**served.headers("acme"), "Content-Type": "application/json"})
    assert r.status_code == 422


def test_metrics_exposition(served, client):
    client.post("/v1/answer", json={"context_id": served.ids("acme")[0], "question": "How many?"}, headers=served.headers("acme"))
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    for series in ("sleeptime_requests_total{path=\"/v1/answer\",status=\"200\"}", "sleeptime_request_latency_seconds_bucket",
                   "sleeptime_tokens_total{kind=\"completion\"}", "sleeptime_cost_usd_total", "sleeptime_choices_total{sleep_budget=",
                   "sleeptime_snapshot_reloads_total{result=\"ok\"} 1", "sleeptime_selection_seconds_count",
                   ):
        assert series in text, series
    # Label order within the braces is the client library's (sorted): compare parsed samples.
    info = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == "sleeptime_snapshot_info"]
    snapshot = client.app.state.parts.holder.current
    assert [(s.labels, s.value) for s in info] == [({"snapshot": snapshot.name, "policy_version": snapshot.policy_version}, 1)]
    assert "Bearer" not in text and served.secrets["acme"] not in text


def test_running_without_auth_needs_the_flag_and_warns(served, helpers, caplog):
    with caplog.at_level("WARNING", logger="sleeptime.service"):
        app = create_app(ServiceSettings(config=served.config, auth=False, query_log=False))
    assert any("authentication is OFF" in r.getMessage() for r in caplog.records)
    with TestClient(app) as c:
        helpers.wait_ready(c)
        listed = c.get("/v1/contexts").json()
        assert listed["tenant"] is None and listed["total"] == 6
    assert ServiceSettings().auth is True


@pytest.mark.parametrize("raw", [
    b'{"context_id": "CTX", "question": "How many?", "target_accuracy": NaN}',
    b'{"context_id": "CTX", "question": "How many?", "max_cost": Infinity}',
    b'{"context_id": "CTX", "question": "How many?", "max_latency_ms": 1e999}',
    b'{"context_id": "CTX", "question": "How many?", "colour": NaN}',
    b'{"context_id": "CTX", "question": "How many \\ud800 coins?"}',
    b'{"context_id": "\\ud800", "question": "How many?"}',
    b'{"context_id": "CTX", "question": "How many?", "\\udfff": 1}',
])
def test_unencodable_input_is_422_and_never_echoed_or_logged(served, client, raw, caplog, capfd):
    """NaN, Infinity, 1e999 or a lone surrogate anywhere in the body: 422 naming the field, the
    input not echoed (it cannot be encoded), and the question text in no log."""
    body = raw.replace(b"CTX", served.ids("acme")[0].encode())
    r = client.post("/v1/answer", content=body, headers={**served.headers("acme"), "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail and all("input" not in e for e in detail)
    assert "How many" not in caplog.text
    out, err = capfd.readouterr()
    assert "How many" not in out + err


def test_two_different_keys_are_refused_one_key_twice_is_served(served, client):
    ctx = served.ids("acme")[0]
    acme, globex = served.secrets["acme"], served.secrets["globex"]
    body = {"context_id": ctx, "question": "How many coins does Hugo have?"}
    both = client.post("/v1/answer", json=body, headers={"Authorization": f"Bearer {acme}", "X-API-Key": globex})
    assert both.status_code == 400 and "conflicting credentials" in both.text
    same = client.post("/v1/answer", json=body, headers={"Authorization": f"Bearer {acme}", "X-API-Key": acme})
    assert same.status_code == 200


def test_readyz_shows_no_paths(client):
    holder = client.app.state.parts.holder
    holder.last_error = "FileNotFoundError: no published warehouse at /srv/data/out/warehouse/sleeptime.duckdb; run it"
    try:
        body = client.get("/readyz").json()  # (the poller may already have cleared the error: fine)
        assert "/srv/data" not in json.dumps(body)
    finally:
        holder.last_error = None
    from sleeptime.service.errors import public_message

    assert public_message("no published warehouse at /srv/data/out/w.duckdb; run it") == "no published warehouse at <path>; run it"
    assert public_message('cannot open "C:\\data\\w.duckdb"') == 'cannot open "<path>"'
    assert public_message("ratio 1/2") == "ratio 1/2"


def test_an_unreadable_key_file_keeps_the_last_good_keys_or_answers_503(served, helpers, tmp_path):
    import shutil

    keys_path = tmp_path / "api_keys.json"
    shutil.copyfile(served.keys.path, keys_path)
    settings = ServiceSettings(config=served.config, keys_path=keys_path, query_log_dir=tmp_path / "log")
    body = {"context_id": served.ids("acme")[0], "question": "How many coins does Hugo have?"}
    with TestClient(create_app(settings)) as c:
        helpers.wait_ready(c)
        assert c.post("/v1/answer", json=body, headers=served.headers("acme")).status_code == 200
        keys_path.write_text('{"version": 1, "keys": [', encoding="utf-8")  # a half-written file
        assert c.post("/v1/answer", json=body, headers=served.headers("acme")).status_code == 200  # last good set
    settings = ServiceSettings(config=served.config, keys_path=keys_path, query_log_dir=tmp_path / "log2")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        helpers.wait_ready(c)
        r = c.post("/v1/answer", json=body, headers=served.headers("acme"))
        assert r.status_code == 503 and "key file" in r.text


def test_readyz_drops_an_error_once_the_published_file_is_served_again(client):
    import asyncio

    holder = client.app.state.parts.holder
    holder.last_error = "OSError: the disk hiccuped"
    assert asyncio.run(holder.check()) is False  # the served file is the published one
    assert holder.last_error is None and client.get("/readyz").json()["last_error"] is None
