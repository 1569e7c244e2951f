"""The lake on DuckLake: staging, one-commit publish, rejection, upsert by key, time travel, change feed."""

import pytest

from sleeptime.storage import Lake
from sleeptime.storage.lake import lake_index


def _query(i: int, run: str = "r1", text: str = "How many?") -> dict:
    return {"query_id": f"q{i}", "context_id": "c", "context_hash": "h", "text": text, "gold_answer": str(i),
            "kind": "lookup", "run_id": run}


def _ctx(cid: str, h: str, run: str, deleted: bool = False) -> dict:
    return {"context_id": cid, "content_hash": h, "source": "s", "text": "t", "metadata_json": "{}",
            "deleted": deleted, "run_id": run, "row_hash": None}


def _run(run_id: str, status: str = "published") -> dict:
    return {"run_id": run_id, "status": status, "corpus": "c", "detail_json": "{}"}


@pytest.fixture
def lake(tmp_path):
    yield Lake(tmp_path / "lake")
    Lake.close_all()


def test_staged_rows_are_invisible_until_one_commit_publishes_them_all(lake):
    lake.stage("queries", [_query(1), _query(2)])
    lake.stage("contexts", [_ctx("c", "h", "r1")])
    assert lake.read("queries").num_rows == 0 and lake.read_staged("queries").num_rows == 2
    before = lake.snapshot_id()
    after = lake.publish(_run("r1"), {}, {})
    assert after == before + 1  # one snapshot for the whole publish
    assert lake.read("queries").num_rows == 2 and lake.read("contexts").num_rows == 1
    assert lake.read("runs").column("status").to_pylist() == ["published"]
    assert lake.staged_count() == 0


def test_publish_upserts_by_key_and_the_latest_run_wins(lake):
    lake.stage("queries", [_query(1, "r1", "old text")])
    lake.publish(_run("r1"), {}, {})
    # The same key again, twice in staging (a shard redone after a crash): one row, the latest run's.
    lake.stage("queries", [_query(1, "r2", "new text")])
    lake.stage("queries", [_query(1, "r3", "newest text")])
    lake.publish(_run("r3"), {}, {})
    rows = lake.read("queries").to_pylist()
    assert [(r["query_id"], r["text"], r["run_id"]) for r in rows] == [("q1", "newest text", "r3")]


def test_a_rejected_run_drops_its_staged_rows_but_time_travel_keeps_them(lake):
    lake.stage("queries", [_query(1)])
    lake.publish(_run("r1"), {}, {})
    lake.stage("queries", [_query(2, "r2")])
    staged_at = lake.snapshot_id()
    lake.reject(_run("r2", "rejected"))
    assert lake.read("queries").num_rows == 1 and lake.staged_count() == 0
    assert lake.read("runs").to_pydict()["status"] == ["published", "rejected"]
    assert lake.read("queries", at=staged_at, schema="staging").column("query_id").to_pylist() == ["q2"]


def test_time_travel_reads_an_earlier_publish(lake):
    lake.stage("queries", [_query(1)])
    first = lake.publish(_run("r1"), {}, {})
    lake.stage("queries", [_query(2, "r2")])
    lake.publish(_run("r2"), {}, {})
    assert lake.read("queries").num_rows == 2
    assert lake.read("queries", at=first).column("query_id").to_pylist() == ["q1"]
    assert [(kind, run) for _, kind, run in lake.runs_by_snapshot()] == [("publish", "r1"), ("publish", "r2")]


def test_the_change_feed_holds_exactly_the_rows_of_later_commits(lake):
    lake.stage("queries", [_query(1)])
    first = lake.publish(_run("r1"), {}, {})
    lake.stage("queries", [_query(2, "r2"), _query(3, "r2")])
    second = lake.publish(_run("r2"), {}, {})
    changes = lake.changes(first, second)
    assert sorted(changes["queries"].column("query_id").to_pylist()) == ["q2", "q3"]
    assert changes["runs"].column("run_id").to_pylist() == ["r2"]
    assert lake.changes(second, second) == {}


def test_the_index_sees_published_and_staged_rows_and_tombstones(lake):
    lake.stage("contexts", [_ctx("a", "h1", "r1"), _ctx("b", "hb", "r1")])
    lake.publish(_run("r1"), {}, {})
    lake.stage("contexts", [_ctx("a", "h1", "r2", deleted=True), _ctx("b", "hb2", "r2")])
    with lake_index(lake) as idx:
        assert idx.execute("SELECT context_id, content_hash FROM contexts_current").fetchall() == [("b", "hb2")]
    lake.publish(_run("r2"), {}, {})
    lake.stage("contexts", [_ctx("a", "h1", "r3")])  # re-added with its old text
    with lake_index(lake) as idx:
        assert sorted(idx.execute("SELECT context_id FROM contexts_current").fetchall()) == [("a",), ("b",)]


def test_a_bad_row_fails_its_stage_call_and_loses_nothing_staged(lake):
    lake.stage("queries", [_query(1)])
    with pytest.raises(Exception):
        lake.stage("queries", [{"query_id": 5, "sample_index": "x"}])
    assert lake.read_staged("queries").column("query_id").to_pylist() == ["q1"]


def test_unknown_table_is_refused(lake):
    with pytest.raises(KeyError, match="unknown table"):
        lake.write("nope", [])


def test_opening_a_lake_creates_what_is_missing_in_one_snapshot_and_adds_new_columns(tmp_path):
    from sleeptime.storage.lake import ALIAS, SCHEMAS

    lake = Lake(tmp_path / "lake")
    with lake.cursor() as cur:
        # Every table of both schemas came from one catalog commit (plus the catalog's own first one).
        assert cur.execute(f"SELECT count(*) FROM {ALIAS}.snapshots()").fetchone()[0] <= 2
        cur.execute(f"ALTER TABLE {ALIAS}.main.variants DROP COLUMN completion_tokens")
        snapshots = cur.execute(f"SELECT count(*) FROM {ALIAS}.snapshots()").fetchone()[0]
    Lake.close_all()

    reopened = Lake(tmp_path / "lake")
    with reopened.cursor() as cur:
        columns = {r[0] for r in cur.execute(f"DESCRIBE {ALIAS}.main.variants").fetchall()}
        assert columns == {f.name for f in SCHEMAS["variants"]}  # the dropped column is back
        assert cur.execute(f"SELECT count(*) FROM {ALIAS}.snapshots()").fetchone()[0] == snapshots + 1
    Lake.close_all()

    with Lake(tmp_path / "lake").cursor() as cur:  # nothing missing: no new snapshot
        assert cur.execute(f"SELECT count(*) FROM {ALIAS}.snapshots()").fetchone()[0] == snapshots + 1
    Lake.close_all()
