import pyarrow.parquet as pq
import pytest

from sleeptime.storage import Lake


def _row(i: int, run: str = "r1") -> dict:
    return {"query_id": f"q{i}", "context_id": "c", "context_hash": "h", "text": "How many?", "gold_answer": str(i),
            "kind": "lookup", "run_id": run}


def test_committed_partitions_are_appended_never_rewritten(tmp_path):
    lake = Lake(tmp_path)
    first = lake.write("queries", "r1", [_row(1), _row(2)])
    lake.write("queries", "r2", [_row(3, "r2")])
    assert first.parent.name == "published=r1"
    assert lake.read("queries").num_rows == 3
    assert pq.read_table(first).num_rows == 2


def test_staged_rows_are_committed_or_rejected_as_a_whole(tmp_path):
    lake = Lake(tmp_path)
    lake.stage("queries", "shard-a", [_row(1)])
    lake.stage("queries", "shard-a", [_row(1), _row(2)])  # the same shard again replaces, never duplicates
    lake.stage("queries", "shard-b", [_row(3)])
    assert lake.read("queries").num_rows == 0 and lake.read_staged("queries").num_rows == 3
    assert lake.commit_staged("r9") == 2
    assert lake.read("queries").num_rows == 3 and not lake.staged_files("queries")
    lake.stage("queries", "bad", [_row(4)])
    rejected = lake.reject_staged("r10")
    assert (rejected / "queries" / "bad.parquet").exists()
    assert lake.read("queries").num_rows == 3 and not lake.staged_files("queries")


def test_a_failed_write_leaves_nothing_half_written(tmp_path):
    lake = Lake(tmp_path)
    lake.stage("queries", "s", [_row(1)])
    with pytest.raises(Exception):
        lake.stage("queries", "s", [{"query_id": 5}])  # wrong type: the write fails
    assert lake.read_staged("queries").column("query_id").to_pylist() == ["q1"]
    assert [p.name for p in (tmp_path / "_staging" / "queries").iterdir()] == ["s.parquet"]


def test_hidden_temporary_files_are_never_read(tmp_path):
    lake = Lake(tmp_path)
    lake.write("queries", "r1", [_row(1)])
    (tmp_path / "queries" / "published=r1" / ".part-1.parquet.123.tmp").write_bytes(b"half a file")
    assert lake.read("queries").num_rows == 1


def test_unknown_table_is_refused(tmp_path):
    with pytest.raises(KeyError, match="unknown table"):
        Lake(tmp_path).write("nope", "p", [])
