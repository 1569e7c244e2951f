import duckdb
import pytest

from sleeptime.storage import Lake
from sleeptime.storage.warehouse import Warehouse, apply_migrations, migrations, open_lake_index


def ctx(cid: str, h: str, run: str, deleted: bool = False) -> dict:
    return {"context_id": cid, "content_hash": h, "source": "s", "text": "t", "metadata_json": "{}", "deleted": deleted, "run_id": run}


def variant(vid: str, cid: str, h: str, run: str = "r1", tokens: int = 10) -> dict:
    return {
        "variant_id": vid, "context_id": cid, "context_hash": h, "model": "reference", "sleep_budget": "small",
        "sample_index": 0, "prompt_version": "v1", "text": "Leo has 3 + 1 = 4 apples.", "prompt_tokens": 50,
        "completion_tokens": tokens, "cost_usd": 0.0, "latency_s": 0.01, "run_id": run,
    }


def test_migrations_are_versioned_and_applied_once():
    con = duckdb.connect()
    first = apply_migrations(con)
    assert first == [v for v, _, _ in migrations()] and first[0] == 1
    assert apply_migrations(con) == []
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"runs", "contexts", "queries", "variants", "answers", "quarantine", "failures", "v_accuracy_by_budget",
            "v_cost_per_query", "v_variant_catalog", "contexts_current"} <= tables


def test_build_deduplicates_by_key_and_marks_superseded(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.write("contexts", "r1", [ctx("a", "h1", "r1"), ctx("b", "hb", "r1")])
    lake.write("variants", "r1", [variant("v1", "a", "h1"), variant("vb", "b", "hb")])
    lake.stage("variants", "again", [variant("v1", "a", "h1", run="r2")])  # a rerun's duplicate
    lake.stage("contexts", "change", [ctx("a", "h2", "r2")])
    lake.stage("variants", "new", [variant("v2", "a", "h2", run="r2")])
    wh = Warehouse(tmp_path / "wh" / "sleeptime.duckdb")
    snap = wh.build(lake)
    wh.publish(snap)
    with wh.read() as con:
        assert con.execute("SELECT count(*) FROM variants").fetchone()[0] == 3
        catalog = dict(con.execute("SELECT variant_id, superseded FROM v_variant_catalog").fetchall())
        assert catalog == {"v1": True, "v2": False, "vb": False}
        assert dict(con.execute("SELECT context_id, content_hash FROM contexts_current").fetchall()) == {"a": "h2", "b": "hb"}


def test_tombstones_remove_contexts_and_readding_restores_them(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.write("contexts", "r1", [ctx("a", "h1", "r1")])
    lake.write("contexts", "r2", [ctx("a", "h1", "r2", deleted=True)])
    idx = open_lake_index(lake)
    assert idx.execute("SELECT count(*) FROM contexts_current").fetchone()[0] == 0
    lake.write("contexts", "r3", [ctx("a", "h1", "r3")])
    idx = open_lake_index(lake)
    assert idx.execute("SELECT context_id FROM contexts_current").fetchall() == [("a",)]


def test_readers_keep_their_snapshot_while_a_new_one_is_published(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.write("contexts", "r1", [ctx("a", "h1", "r1")])
    wh = Warehouse(tmp_path / "wh" / "sleeptime.duckdb")
    wh.publish(wh.build(lake))
    with wh.read() as old_reader:
        lake.write("contexts", "r2", [ctx("b", "hb", "r2")])
        wh.publish(wh.build(lake))
        assert old_reader.execute("SELECT count(*) FROM contexts").fetchone()[0] == 1
        with wh.read() as new_reader:
            assert new_reader.execute("SELECT count(*) FROM contexts").fetchone()[0] == 2
    assert not list((tmp_path / "wh").glob(".candidate-*"))


def test_reading_before_anything_is_published_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no published warehouse"):
        with Warehouse(tmp_path / "none.duckdb").read():
            pass
