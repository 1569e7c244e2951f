"""The query log: batched Parquet in the spool, no secrets, committed to the lake and the warehouse
by the next publish, and summarized by the report section."""

import hashlib
import json
import shutil

import duckdb
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from sleeptime.model import REFERENCE_MODEL, ModelSpec
from sleeptime.service import ServiceSettings, create_app
from sleeptime.service.querylog import QUERY_LOG_SCHEMA, QueryLog
from sleeptime.service.report_section import query_log_numbers, query_log_section
from sleeptime.storage import SCHEMAS, Lake
from sleeptime.storage.spool import Spool
from sleeptime.storage.warehouse import Warehouse, apply_migrations

QUESTIONS = ["How many coins does Hugo have?", "How many coins do Hugo and Sara have together?",
             "If Hugo had 3 more coins, how many coins would Sara have?"]


@pytest.fixture(scope="module")
def logged(served, helpers, tmp_path_factory):
    """Traffic through an app whose log batches by 2 and flushes the rest at shutdown."""
    from sleeptime.model.providers import mock

    lake_dir = tmp_path_factory.mktemp("querylog-lake")
    handler = mock.register()
    config = served.config.model_copy(update={
        "models": {"reference": REFERENCE_MODEL,
                   "mock": ModelSpec(model="mock/m", input_cost_per_million=0, output_cost_per_million=0, max_retries=0)},
    })
    settings = ServiceSettings(config=config, keys_path=served.keys.path, query_log_dir=lake_dir, reload_interval_s=0.2,
                               log_batch_size=2, log_flush_s=60)
    sent = []
    with TestClient(create_app(settings)) as client:
        helpers.wait_ready(client)
        for who in ("acme", "globex"):
            for i, question in enumerate(QUESTIONS):
                context_id = served.ids(who)[i]
                r = client.post("/v1/answer", json={"context_id": context_id, "question": question}, headers=served.headers(who))
                assert r.status_code == 200
                sent.append((who, context_id, question, r.json()))
        # One failure: every option errors (the mock model for this request only).
        gateway = client.app.state.parts.gateway
        gateway.models["reference"], saved = gateway.models["mock"], gateway.models["reference"]
        handler.script.extend([RuntimeError("model down")] * 3)
        try:
            failed = client.post("/v1/answer", json={"context_id": served.ids("acme")[0], "question": QUESTIONS[0]},
                                 headers=served.headers("acme"))
        finally:
            gateway.models["reference"] = saved
            handler.script.clear()
        assert failed.status_code == 503
        querylog = client.app.state.parts.querylog
        batches_before_shutdown = len(querylog.files)
    return lake_dir, sent, failed.json(), batches_before_shutdown


def read_log(spool_dir):
    files = sorted(spool_dir.glob("query_log/batch-*.parquet"))
    return files, pq.read_table(files).to_pylist() if files else []


def test_rows_are_batched_and_flushed_at_shutdown(logged):
    lake_dir, sent, _, batches_before_shutdown = logged
    files, rows = read_log(lake_dir)
    assert batches_before_shutdown >= 1  # size-triggered batches while serving
    assert len(files) > batches_before_shutdown  # and the remainder at shutdown
    assert len(rows) == len(sent) + 1
    assert pq.read_schema(files[0]).remove_metadata() == QUERY_LOG_SCHEMA


def test_rows_hold_the_choice_tokens_cost_and_latency(served, logged):
    lake_dir, sent, failed, _ = logged
    _, rows = read_log(lake_dir)
    by_id = {r["request_id"]: r for r in rows}
    for who, context_id, question, body in sent:
        row = by_id[body["request_id"]]
        assert row["tenant"] == who and row["context_id"] == context_id and row["status"] == "answered"
        assert (row["sleep_budget"], row["test_budget"], row["variant_id"]) == (
            body["choice"]["sleep_budget"], body["choice"]["test_budget"], body["choice"]["variant_id"])
        assert (row["scope"], row["fallback"], row["attempts"]) == (body["choice"]["scope"], False, 1)
        assert row["completion_tokens"] == body["usage"]["completion_tokens"] and row["prompt_tokens"] > 0
        assert row["latency_ms"] == pytest.approx(body["latency_ms"]) and row["selection_us"] > 0
        assert row["predicted_accuracy"] == pytest.approx(body["predicted_accuracy"])
        assert row["question_sha256"] == hashlib.sha256(question.encode()).hexdigest()
        assert row["question_chars"] == len(question)
        assert row["key_id"].startswith("k_") and row["policy_version"] == body["policy_version"]
        assert row["run_id"] == row["received_at"].strftime("service-%Y%m%d")
    failure = by_id[failed["detail"]["request_id"]]
    assert failure["status"] == "failed" and failure["attempts"] == 3 and "model down" in failure["error"]
    assert failure["sleep_budget"] is None and failure["completion_tokens"] == 0


def test_no_question_text_and_no_key_material_is_stored(served, logged):
    lake_dir, _, _, _ = logged
    files, rows = read_log(lake_dir)
    blob = b"".join(f.read_bytes() for f in files) + json.dumps(rows, default=str).encode()
    for question in QUESTIONS:
        assert question.encode() not in blob
        assert b"Hugo" not in blob
    for secret in served.secrets.values():
        assert secret.encode() not in blob and secret.split("_", 3)[-1].encode() not in blob  # the random part
    stored = json.loads(served.keys.path.read_text())
    for record in stored["keys"]:
        assert record["sha256"].encode() not in blob and record["salt"].encode() not in blob


def test_the_next_publish_commits_the_log_to_the_lake_and_the_warehouse(served, logged, tmp_path):
    spool_dir, sent, _, _ = logged
    assert SCHEMAS["query_log"] == QUERY_LOG_SCHEMA
    shutil.copytree(served.config.lake_dir, tmp_path / "lake")
    shutil.copytree(spool_dir, tmp_path / "spool")
    lake, spool = Lake(tmp_path / "lake"), Spool(tmp_path / "spool")
    warehouse = Warehouse(tmp_path / "warehouse" / "sleeptime.duckdb")
    for attempt in range(2):  # the second time: files left by a crash after the commit change nothing
        copied = sorted((tmp_path / "spool").rglob("*.parquet"))
        spooled, committed = spool.take()
        assert spooled["query_log"].num_rows == len(sent) + 1
        lake.publish({"run_id": f"r-log-{attempt}", "status": "published", "detail_json": "{}"}, {}, spooled)
        if attempt == 0:
            shutil.copytree(tmp_path / "spool", tmp_path / "spool-copy")
            committed()
            assert not list((tmp_path / "spool").rglob("*.parquet"))
            shutil.copytree(tmp_path / "spool-copy", tmp_path / "spool", dirs_exist_ok=True)
            assert sorted((tmp_path / "spool").rglob("*.parquet")) == copied
    assert lake.read("query_log").num_rows == len(sent) + 1
    warehouse.sync(lake)
    with warehouse.read() as con:
        traffic = con.execute("SELECT sum(queries), sum(answered), sum(failed) FROM v_service_traffic").fetchone()
        assert traffic == (len(sent) + 1, len(sent), 1)
        assert con.execute("SELECT sum(queries) FROM v_service_choices").fetchone()[0] == len(sent)
        amortized = con.execute("SELECT sum(queries), min(sleep_tokens) FROM v_service_amortization").fetchone()
        assert amortized[0] == len(sent) and amortized[1] > 0
        numbers = query_log_numbers(con)
        assert numbers["totals"]["queries"] == len(sent) + 1 and numbers["totals"]["tenants"] == 2
        assert sum(c["queries"] for c in numbers["choices"]) == len(sent)
        assert sum(a["queries"] for a in numbers["amortization"]) == len(sent)
        page = query_log_section(con)
    assert page.startswith('<section id="service-traffic">') and f"{len(sent) + 1} queries" in page
    assert "Amortization" in page and "<table>" in page
    Lake.close_all()


def test_the_report_section_without_traffic():
    con = duckdb.connect()
    assert "No query-service traffic" in query_log_section(con)
    apply_migrations(con)
    assert query_log_numbers(con) == {}
    assert "No query-service traffic" in query_log_section(con)


def test_a_failed_write_keeps_the_rows_for_the_next_flush(tmp_path):
    blocked = tmp_path / "spool"
    blocked.write_text("a file where the spool folder should be")
    log = QueryLog(blocked, batch_size=10)
    row = {name: None for name in QUERY_LOG_SCHEMA.names} | {"request_id": "r1", "run_id": "service-20260101",
                                                            "status": "answered", "context_id": "c"}
    log.add(row)
    assert log.flush() == [] and log.pending == 1
    blocked.unlink()
    assert len(log.flush()) == 1 and log.pending == 0 and log.written == 1


def test_start_removes_batches_a_killed_service_left_half_written(tmp_path, caplog):
    """A SIGKILL mid-write leaves a hidden temporary file; the next start removes it (and says so)
    unless it is young enough to be another process's write in progress."""
    import asyncio
    import os
    import time

    folder = tmp_path / "spool" / "query_log"
    folder.mkdir(parents=True)
    old, young = folder / ".batch-a.parquet.1.tmp", folder / ".batch-b.parquet.2.tmp"
    for path in (old, young):
        path.write_bytes(b"PAR1 half a file")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))

    async def start_and_stop():
        log = QueryLog(tmp_path / "spool")
        log.start()
        await log.stop()

    asyncio.run(start_and_stop())
    assert not old.exists() and young.exists()
    assert "removed 1 unfinished batch" in caplog.text
    assert Spool(tmp_path / "spool").files("query_log") == []
