"""The warehouse: migrations, updated from the lake's commits, equal to a rebuild, readers isolated."""

import duckdb
import pytest

from sleeptime.storage import Lake
from sleeptime.storage.lake import sql_type
from sleeptime.storage.records import SCHEMAS
from sleeptime.storage.warehouse import Warehouse, apply_migrations, migrations


def ctx(cid: str, h: str, run: str, deleted: bool = False) -> dict:
    return {"context_id": cid, "content_hash": h, "source": "s", "text": "t", "metadata_json": "{}",
            "deleted": deleted, "run_id": run, "row_hash": None}


def variant(vid: str, cid: str, h: str, run: str = "r1", tokens: int = 10) -> dict:
    return {
        "variant_id": vid, "context_id": cid, "context_hash": h, "model": "reference", "sleep_budget": "small",
        "sample_index": 0, "prompt_version": "v1", "text": "Leo has 3 + 1 = 4 apples.", "prompt_tokens": 50,
        "completion_tokens": tokens, "cost_usd": 0.0, "latency_s": 0.01, "run_id": run,
    }


def run_row(run_id: str) -> dict:
    return {"run_id": run_id, "status": "published", "corpus": "c", "detail_json": "{}"}


@pytest.fixture
def lake(tmp_path):
    yield Lake(tmp_path / "lake")
    Lake.close_all()


def publish(lake: Lake, wh: Warehouse, run_id: str) -> None:
    """The publish protocol without gate or policy: candidate + staged rows, lake commit, switch."""
    candidate = wh.candidate(lake)
    candidate.apply_staged(("contexts", "variants"))
    snapshot = lake.publish(run_row(run_id), {}, {})
    candidate.catch_up(snapshot)  # the run's row
    candidate.finish(snapshot)
    wh.publish(candidate)


def table_rows(con, table: str) -> list[tuple]:
    cols = ", ".join(SCHEMAS[table].names)
    return con.execute(f"SELECT {cols} FROM {table} ORDER BY ALL").fetchall()


def test_migrations_are_versioned_and_applied_once():
    con = duckdb.connect()
    first = apply_migrations(con)
    assert first == [v for v, _, _ in migrations()] and first[0] == 1
    assert apply_migrations(con) == []
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"runs", "contexts", "queries", "variants", "answers", "quarantine", "failures", "v_accuracy_by_budget",
            "v_cost_per_query", "v_variant_catalog", "contexts_current", "build_info"} <= tables


def test_migrated_tables_have_exactly_the_columns_and_types_of_the_record_schemas():
    """The warehouse's SQL migrations (history, never rewritten) and records.py (the lake's DDL and
    every Arrow table) describe the same tables: a column added to a schema needs a migration."""
    def described(con, table: str) -> dict[str, str]:
        return {name: column_type for name, column_type, *_ in con.execute(f"DESCRIBE {table}").fetchall()}

    warehouse = duckdb.connect()
    apply_migrations(warehouse)
    from_schemas = duckdb.connect()  # the tables as the lake creates them from SCHEMAS
    for table, schema in SCHEMAS.items():
        from_schemas.execute(f"CREATE TABLE {table} ({', '.join(f'{f.name} {sql_type(f.type)}' for f in schema)})")
        assert described(warehouse, table) == described(from_schemas, table), table


def test_incremental_updates_equal_a_rebuild_and_mark_superseded(tmp_path, lake):
    wh = Warehouse(tmp_path / "wh" / "sleeptime.duckdb")
    lake.stage("contexts", [ctx("a", "h1", "r1"), ctx("b", "hb", "r1")])
    lake.stage("variants", [variant("v1", "a", "h1"), variant("vb", "b", "hb")])
    publish(lake, wh, "r1")
    lake.stage("variants", [variant("v1", "a", "h1", run="r2")])  # a rerun's duplicate of a published key
    lake.stage("contexts", [ctx("a", "h2", "r2")])
    lake.stage("variants", [variant("v2", "a", "h2", run="r2")])
    publish(lake, wh, "r2")
    assert wh.lake_snapshot() == lake.snapshot_id()
    with wh.read() as con:
        assert con.execute("SELECT count(*) FROM variants").fetchone()[0] == 3
        catalog = dict(con.execute("SELECT variant_id, superseded FROM v_variant_catalog").fetchall())
        assert catalog == {"v1": True, "v2": False, "vb": False}
        assert dict(con.execute("SELECT context_id, content_hash FROM contexts_current").fetchall()) == {"a": "h2", "b": "hb"}
        incremental = {t: table_rows(con, t) for t in SCHEMAS}
    rebuilt = Warehouse(tmp_path / "rebuilt" / "sleeptime.duckdb")
    rebuilt.rebuild(lake)
    with rebuilt.read() as con:
        assert {t: table_rows(con, t) for t in SCHEMAS} == incremental


def test_catch_up_applies_a_commit_the_warehouse_missed(tmp_path, lake):
    wh = Warehouse(tmp_path / "wh" / "sleeptime.duckdb")
    lake.stage("contexts", [ctx("a", "h1", "r1")])
    publish(lake, wh, "r1")
    lake.stage("contexts", [ctx("b", "hb", "r2")])
    lake.publish(run_row("r2"), {}, {})  # committed; the process "died" before switching the warehouse
    with wh.read() as con:
        assert con.execute("SELECT count(*) FROM contexts").fetchone()[0] == 1
    assert wh.catch_up(lake) == 2  # the context and the run's row
    with wh.read() as con:
        assert con.execute("SELECT count(*) FROM contexts").fetchone()[0] == 2
        assert con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall() == [("r1",), ("r2",)]
    assert wh.catch_up(lake) == 0


def test_readers_keep_their_snapshot_while_a_new_one_is_published(tmp_path, lake):
    wh = Warehouse(tmp_path / "wh" / "sleeptime.duckdb")
    lake.stage("contexts", [ctx("a", "h1", "r1")])
    publish(lake, wh, "r1")
    with wh.read() as old_reader:
        lake.stage("contexts", [ctx("b", "hb", "r2")])
        publish(lake, wh, "r2")
        assert old_reader.execute("SELECT count(*) FROM contexts").fetchone()[0] == 1
        with wh.read() as new_reader:  # same process, same path: still the new file
            assert new_reader.execute("SELECT count(*) FROM contexts").fetchone()[0] == 2
    assert not list((tmp_path / "wh").glob(".candidate-*"))


def test_reading_before_anything_is_published_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no published warehouse"):
        with Warehouse(tmp_path / "none.duckdb").read():
            pass
