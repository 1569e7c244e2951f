"""The query log: batched Parquet in the lake, no secrets, loadable by the warehouse (with the
proposed migration) and summarized by the report section."""

import hashlib
import json
import shutil

import duckdb
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from sleeptime.model import REFERENCE_MODEL, ModelSpec
from sleeptime.service import ServiceSettings, create_app
from sleeptime.service.querylog import MIGRATION_SQL, QUERY_LOG_SCHEMA, QueryLog
from sleeptime.service.report_section import query_log_numbers, query_log_section
from sleeptime.storage import SCHEMAS, Lake
from sleeptime.storage.warehouse import KEYS, Warehouse, _load, apply_migrations

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
        gateway = client.app.state.gateway
        gateway.models["reference"], saved = gateway.models["mock"], gateway.models["reference"]
        handler.script.extend([RuntimeError("model down")] * 3)
        try:
            failed = client.post("/v1/answer", json={"context_id": served.ids("acme")[0], "question": QUESTIONS[0]},
                                 headers=served.headers("acme"))
        finally:
            gateway.models["reference"] = saved
            handler.script.clear()
        assert failed.status_code == 503
        querylog = client.app.state.querylog
        batches_before_shutdown = len(querylog.files)
    return lake_dir, sent, failed.json(), batches_before_shutdown


def has_table(con, name):
    return con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0] > 0


def read_log(lake_dir):
    files = sorted(lake_dir.glob("query_log/published=service-*/batch-*.parquet"))
    return files, pq.read_table(files).to_pylist() if files else []


def test_rows_are_batched_and_flushed_at_shutdown(logged):
    lake_dir, sent, _, batches_before_shutdown = logged
    files, rows = read_log(lake_dir)
    assert batches_before_shutdown >= 1  # size-triggered batches while serving
    assert len(files) > batches_before_shutdown  # and the remainder at shutdown
    assert len(rows) == len(sent) + 1
    assert all(f.parent.name.startswith("published=service-") for f in files)
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
        assert secret.encode() not in blob and secret.rsplit("_", 1)[-1].encode() not in blob
    stored = json.loads(served.keys.path.read_text())
    for record in stored["keys"]:
        assert record["sha256"].encode() not in blob and record["salt"].encode() not in blob


def test_the_proposed_migration_loads_the_log_and_the_report_section_reads_it(served, logged, tmp_path):
    lake_dir, sent, _, _ = logged
    if "query_log" in SCHEMAS:  # once integrated, the lake's schema is this module's
        assert SCHEMAS["query_log"] == QUERY_LOG_SCHEMA
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    apply_migrations(con)
    if not has_table(con, "query_log"):
        con.execute(MIGRATION_SQL)  # warehouse/migrations/004_query_log.sql as proposed
    assert [r[0] for r in con.execute("DESCRIBE query_log").fetchall()] == QUERY_LOG_SCHEMA.names
    lake = Lake(served.config.lake_dir)
    for table, key in KEYS.items():
        files = [str(p) for p in lake.files(table)]
        if files and table != "query_log":
            _load(con, table, key, files)
    files, _ = read_log(lake_dir)
    _load(con, "query_log", ("request_id",), [str(f) for f in files])
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
    con.close()


def test_the_report_section_without_traffic():
    con = duckdb.connect()
    assert "No query-service traffic" in query_log_section(con)
    apply_migrations(con)
    if not has_table(con, "query_log"):
        con.execute(MIGRATION_SQL)
    assert query_log_numbers(con) == {}
    assert "No query-service traffic" in query_log_section(con)


def test_a_failed_write_keeps_the_rows_for_the_next_flush(tmp_path):
    blocked = tmp_path / "lake"
    blocked.write_text("a file where the lake folder should be")
    log = QueryLog(blocked, batch_size=10)
    row = {name: None for name in QUERY_LOG_SCHEMA.names} | {"request_id": "r1", "run_id": "service-20260101",
                                                            "status": "answered", "context_id": "c"}
    log.add(row)
    assert log.flush() == [] and log.pending == 1
    blocked.unlink()
    assert len(log.flush()) == 1 and log.pending == 0 and log.written == 1


def test_the_warehouse_build_loads_the_log_once_integrated(served, logged, tmp_path):
    if "query_log" not in KEYS or "query_log" not in SCHEMAS:
        pytest.skip("query_log is not in the storage KEYS/SCHEMAS yet (see the proposed patch)")
    lake_dir, sent, _, _ = logged
    shutil.copytree(served.config.lake_dir, tmp_path / "lake")
    shutil.copytree(lake_dir / "query_log", tmp_path / "lake" / "query_log", dirs_exist_ok=True)
    warehouse = Warehouse(tmp_path / "warehouse" / "sleeptime.duckdb")
    warehouse.publish(warehouse.build(Lake(tmp_path / "lake")))
    with warehouse.read() as con:
        assert con.execute("SELECT count(*) FROM query_log").fetchone()[0] == len(sent) + 1
        assert f"{len(sent) + 1} queries" in query_log_section(con)
