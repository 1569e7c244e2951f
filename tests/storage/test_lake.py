import pyarrow.parquet as pq
import pytest

from sleeptime.storage import Lake


def _row(i: int) -> dict:
    return {"query_id": f"q{i}", "context_id": "c", "text": "How many?", "gold_answer": str(i), "kind": "lookup"}


def test_partitions_are_written_atomically_and_replaced(tmp_path):
    lake = Lake(tmp_path)
    lake.write("queries", "run-a", [_row(1), _row(2)])
    lake.write("queries", "run-b", [_row(3)])
    assert lake.read("queries").num_rows == 3
    lake.write("queries", "run-a", [_row(1)])  # same partition: replaced, not appended
    assert sorted(lake.read("queries").column("query_id").to_pylist()) == ["q1", "q3"]
    assert not [p for p in (tmp_path / "queries").iterdir() if p.name.startswith(".")]


def test_a_failed_write_leaves_the_old_partition_intact(tmp_path):
    lake = Lake(tmp_path)
    lake.write("queries", "run-a", [_row(1)])
    with pytest.raises(Exception):
        lake.write("queries", "run-a", [{"query_id": 5}])  # wrong type: the write fails
    assert pq.read_table(tmp_path / "queries" / "run-a.parquet").column("query_id").to_pylist() == ["q1"]
    assert [p.name for p in (tmp_path / "queries").iterdir()] == ["run-a.parquet"]


def test_hidden_temporary_files_are_never_read(tmp_path):
    lake = Lake(tmp_path)
    lake.write("queries", "run-a", [_row(1)])
    (tmp_path / "queries" / ".run-b.123.tmp").write_bytes(b"half a file")
    assert lake.read("queries").num_rows == 1


def test_unknown_table_is_refused(tmp_path):
    with pytest.raises(KeyError, match="unknown table"):
        Lake(tmp_path).write("nope", "p", [])
