"""Loaders keep every good row and set every bad one aside with a reason naming the problem."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sleeptime.dataset.loaders import (
    MAX_QUERY_CHARS,
    MAX_TEXT_CHARS,
    CorpusError,
    LoadResult,
    load_corpus,
    load_gsm_symbolic,
    load_project_file,
    load_text_folder,
    write_project_jsonl,
)
from sleeptime.domain import Context, ContextWithQueries, Query, short_id


def _line(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


def _write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _reasons(result: LoadResult) -> dict[str, str]:
    reasons = {q.location: q.reason for q in result.quarantined}
    assert len(reasons) == len(result.quarantined), "each quarantined row has its own location"
    return reasons


def _ids(result: LoadResult) -> list[str]:
    return [row.context.id for row in result.rows]


# --------------------------------------------------------------------------------------------
# Project JSONL
# --------------------------------------------------------------------------------------------


def test_project_jsonl_keeps_good_rows_and_quarantines_each_bad_one(tmp_path: Path) -> None:
    good_queries = [
        {"text": "How many apples?", "answer": 17.0, "kind": "lookup"},
        {"id": "q-explicit", "text": "How many pears?", "answer": 2.5},
    ]
    mixed_queries = [
        {"text": "First?", "answer": "3"},
        {"text": "First?", "answer": "3"},  # same text -> same default id
        "not an object",
        {"text": "   "},
        {"answer": 4},
        {"text": "x" * (MAX_QUERY_CHARS + 1)},
        {"text": "Second?", "answer": 5},
    ]
    lines = [
        _line({"id": "ctx-1", "text": "Mia has 17 apples.", "queries": good_queries}),  # 1
        b"",  # 2: blank, skipped silently
        b'{"id": "broken", "text": ',  # 3
        _line(["not", "an", "object"]),  # 4
        b'{"id": "bad-bytes", "text": "caf\xe9"}',  # 5
        _line({"text": "no id here"}),  # 6
        _line({"id": "no-text"}),  # 7
        _line({"id": "blank", "text": " \n\t "}),  # 8
        _line({"id": "int-text", "text": 42}),  # 9
        _line({"id": "q-str", "text": "ok", "queries": "what?"}),  # 10
        _line({"id": "meta-list", "text": "ok", "metadata": [1, 2]}),  # 11
        _line({"id": "ctx-1", "text": "a second ctx-1"}),  # 12
        _line({"id": "huge", "text": "y" * (MAX_TEXT_CHARS + 1)}),  # 13
        _line({"id": "ctx-2", "text": "Leo has 3 pears.", "source": "book", "metadata": {"k": 1}}),  # 14
        _line({"id": "ctx-3", "text": "Ana has 2 plums.", "queries": mixed_queries}),  # 15
        b"   ",  # 16: whitespace only, skipped silently
    ]
    path = _write_lines(tmp_path / "corpus.jsonl", lines)

    result = load_project_file(path)

    assert _ids(result) == ["ctx-1", "ctx-2", "ctx-3"]
    reasons = _reasons(result)
    expected = {
        "line 3": "invalid JSON",
        "line 4": "not an object",
        "line 5": "invalid UTF-8",
        "line 6": "missing id",
        "line 7": "missing text",
        "line 8": "text is empty",
        "line 9": "text must be a string",
        "line 10": "queries must be a list",
        "line 11": "metadata must be an object",
        "line 12": "duplicate id 'ctx-1'",
        "line 13": "too long (oversize)",
        "line 15 query 2": "duplicate query id",
        "line 15 query 3": "query must be an object",
        "line 15 query 4": "query text is empty",
        "line 15 query 5": "missing query text",
        "line 15 query 6": "query text is too long (oversize)",
    }
    assert set(reasons) == set(expected)
    for location, phrase in expected.items():
        assert phrase in reasons[location], (location, reasons[location])
    assert "line 1" in reasons["line 12"]  # says where the winner was
    assert all(q.source == str(path) for q in result.quarantined)
    assert "caf" in next(q.raw for q in result.quarantined if q.location == "line 5")

    ctx1, ctx2, ctx3 = result.rows
    assert ctx1.context.source == str(path)  # defaulted to the file
    assert [q.gold_answer for q in ctx1.queries] == ["17", "2.5"]
    assert ctx1.queries[0].id == Query.make_id("ctx-1", "How many apples?")
    assert ctx1.queries[0].kind == "lookup"
    assert ctx1.queries[1].id == "q-explicit"
    assert ctx2.context.source == "book" and ctx2.context.metadata == {"k": 1} and ctx2.queries == ()
    assert [q.text for q in ctx3.queries] == ["First?", "Second?"]
    assert [q.gold_answer for q in ctx3.queries] == ["3", "5"]


def test_project_answers_of_the_wrong_type_drop_only_that_query(tmp_path: Path) -> None:
    queries = [{"text": "a?", "answer": True}, {"text": "b?", "answer": [1]}, {"text": "c?", "kind": 3}]
    path = _write_lines(tmp_path / "c.jsonl", [_line({"id": 7, "text": "t", "queries": queries})])

    result = load_project_file(path)

    assert _ids(result) == ["7"]  # integer ids are accepted as strings
    assert result.rows[0].queries == ()
    reasons = _reasons(result)
    assert "answer must be a string or number (got boolean)" in reasons["line 1 query 1"]
    assert "answer must be a string or number (got array)" in reasons["line 1 query 2"]
    assert "query kind must be a string" in reasons["line 1 query 3"]


def test_write_project_jsonl_round_trips(tmp_path: Path) -> None:
    rows = [
        ContextWithQueries(
            context=Context(id="a/1", text="Zoë has 5 cats.\nThen 2 more.", source="src", metadata={"n": 1}),
            queries=(
                Query(id="q1", context_id="a/1", text="How many cats?", gold_answer="7", kind="sum"),
                Query(id="q2", context_id="a/1", text="Open question?"),
            ),
        ),
        ContextWithQueries(context=Context(id="b", text="No questions here.", source="")),
    ]
    path = tmp_path / "out" / "corpus.jsonl"
    path.parent.mkdir()
    path.write_text("stale content\n", encoding="utf-8")

    write_project_jsonl(rows, path)
    result = load_project_file(path)

    assert result.rows == rows
    assert result.quarantined == []
    assert os.listdir(path.parent) == ["corpus.jsonl"]  # no temp file left behind


def test_write_project_jsonl_leaves_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text("old\n", encoding="utf-8")

    def rows() -> Any:
        yield ContextWithQueries(context=Context(id="a", text="t"))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_project_jsonl(rows(), path)
    assert path.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["corpus.jsonl"]


def test_json_array_file_is_read_item_by_item(tmp_path: Path) -> None:
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps([{"id": "a", "text": "A."}, {"id": "b"}, 3]), encoding="utf-8")

    result = load_corpus(path)

    assert _ids(result) == ["a"]
    reasons = _reasons(result)
    assert "missing text" in reasons["item 2"]
    assert "not an object" in reasons["item 3"]


# --------------------------------------------------------------------------------------------
# Project Parquet
# --------------------------------------------------------------------------------------------


def test_project_parquet_quarantines_null_fields(tmp_path: Path) -> None:
    query_type = pa.list_(
        pa.struct([("id", pa.string()), ("text", pa.string()), ("answer", pa.string()), ("kind", pa.string())])
    )
    table = pa.table(
        {
            "id": ["p1", "p2", None, "p1", "p4"],
            "text": ["First text.", None, "orphan", "dup", "Fourth text."],
            "source": [None, "s", "s", "s", "s"],
            "queries": pa.array(
                [
                    [{"id": None, "text": "Q1?", "answer": "1", "kind": None}],
                    [],
                    None,
                    [],
                    [
                        {"id": "x", "text": "Q?", "answer": None, "kind": "k"},
                        {"id": "y", "text": None, "answer": None, "kind": None},
                    ],
                ],
                type=query_type,
            ),
        }
    )
    path = tmp_path / "corpus.parquet"
    pq.write_table(table, path)

    result = load_corpus(path)

    assert _ids(result) == ["p1", "p4"]
    reasons = _reasons(result)
    assert set(reasons) == {"row 2", "row 3", "row 4", "row 5 query 2"}
    assert "missing text" in reasons["row 2"]
    assert "missing id" in reasons["row 3"]
    assert "duplicate id 'p1'" in reasons["row 4"]
    assert "missing query text" in reasons["row 5 query 2"]
    p1, p4 = result.rows
    assert p1.context.source == str(path)
    assert p1.queries[0].id == Query.make_id("p1", "Q1?") and p1.queries[0].gold_answer == "1"
    assert [(q.id, q.kind) for q in p4.queries] == [("x", "k")]


def test_unreadable_parquet_is_a_corpus_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")

    with pytest.raises(CorpusError, match="broken.parquet"):
        load_corpus(path)
    with pytest.raises(CorpusError, match="broken.parquet"):
        load_project_file(path)


# --------------------------------------------------------------------------------------------
# Stateful GSM-Symbolic
# --------------------------------------------------------------------------------------------


def _gsm(context: str, question: str, answer: Any, **extra: Any) -> dict[str, Any]:
    return {"stateful_gsm_symbolic_context": context, "stateful_gsm_symbolic_question": question,
            "answer": answer, **extra}  # fmt: skip


def test_gsm_symbolic_groups_rows_by_context_and_parses_gold(tmp_path: Path) -> None:
    shared = "A shop sold 1,200 pens on Monday and 34 more on Tuesday."
    long_text = "worked solution " * 40
    lines = [
        _line(_gsm(shared, "How many pens in total?", f"{long_text}\n#### 1,234", id=5, instance=0, canary="c")),  # 1
        _line(_gsm("Tom has 3 dogs.", "How many dogs?", "#### 3", id=6, instance=1)),  # 2
        _line(_gsm(shared, "How many on Tuesday?", "#### 34", id=5, instance=0, canary="c")),  # 3
        _line(_gsm(shared, "How many on Tuesday?", "#### 34", id=5, instance=0)),  # 4: duplicate question
        _line(_gsm("Missing question.", None, "#### 1")),  # 5
        _line(_gsm("No gold.", "How many?", "the answer is unknown")),  # 6
        _line(_gsm("Different text, same id.", "How many?", "#### 2", id=6, instance=1)),  # 7
        b"{not json",  # 8
        _line(_gsm("Unlabeled id.", "How many now?", "#### -4.5")),  # 9
        _line(_gsm("   ", "How many?", "#### 1")),  # 10
    ]
    path = _write_lines(tmp_path / "gsm.jsonl", lines)

    result = load_gsm_symbolic(path)

    assert _ids(result) == ["5-0", "6-1", short_id("gsm", "Unlabeled id.")]
    shop = result.rows[0]
    assert shop.context.text == shared
    assert [q.text for q in shop.queries] == ["How many pens in total?", "How many on Tuesday?"]
    assert [q.gold_answer for q in shop.queries] == ["1234", "34"]
    assert {q.kind for row in result.rows for q in row.queries} == {"gsm-symbolic"}
    assert shop.context.metadata == {"id": 5, "instance": 0, "canary": "c"}  # long/consumed fields dropped
    assert result.rows[2].queries[0].gold_answer == "-4.5"

    reasons = _reasons(result)
    assert set(reasons) == {"line 4", "line 5", "line 6", "line 7", "line 8", "line 10"}
    assert "duplicate query id" in reasons["line 4"] and "line 3" in reasons["line 4"]
    assert "missing stateful_gsm_symbolic_question" in reasons["line 5"]
    assert "no number after '#### '" in reasons["line 6"]
    assert "duplicate id '6-1'" in reasons["line 7"]
    assert "invalid JSON" in reasons["line 8"]
    assert "stateful_gsm_symbolic_context is empty" in reasons["line 10"]


# --------------------------------------------------------------------------------------------
# Text folders
# --------------------------------------------------------------------------------------------


def test_text_folder_reads_txt_and_md_recursively(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "notes" / "deep").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.txt").write_text("Alpha text.", encoding="utf-8")
    (root / "a.md").write_text("# Alpha again", encoding="utf-8")  # same id as a.txt; a.md sorts first
    (root / "notes" / "deep" / "b.md").write_text("Beta *notes*.", encoding="utf-8")
    (root / "empty.txt").write_bytes(b"")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "image.png").write_bytes(b"\x89PNG\r\n")
    (root / "huge.md").write_text("z" * (MAX_TEXT_CHARS + 1), encoding="utf-8")
    (root / ".git" / "HEAD.txt").write_text("ref", encoding="utf-8")

    result = load_corpus(root)

    assert _ids(result) == ["a", "notes/deep/b"]
    first, nested = result.rows
    assert first.context.text == "# Alpha again"
    assert first.context.metadata == {"filename": "a.md"}
    assert nested.context.source == str(root / "notes" / "deep" / "b.md")
    assert nested.queries == ()
    reasons = _reasons(result)
    assert set(reasons) == {"a.txt", "empty.txt", "latin1.txt", "huge.md"}
    assert "duplicate id 'a'" in reasons["a.txt"]
    assert "empty" in reasons["empty.txt"]
    assert "invalid UTF-8" in reasons["latin1.txt"]
    assert "oversize" in reasons["huge.md"]


def test_text_folder_on_a_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(CorpusError, match="not a folder"):
        load_text_folder(path)


# --------------------------------------------------------------------------------------------
# Detection and errors
# --------------------------------------------------------------------------------------------


def test_auto_detection_and_explicit_formats(tmp_path: Path) -> None:
    project = _write_lines(tmp_path / "p.jsonl", [_line({"id": "a", "text": "A."})])
    gsm = _write_lines(tmp_path / "g.jsonl", [b"garbage first", _line(_gsm("Ctx.", "Q?", "#### 1"))])
    gsm_parquet = tmp_path / "g.parquet"
    pq.write_table(pa.table({"stateful_gsm_symbolic_context": ["C."], "stateful_gsm_symbolic_question": ["Q?"],
                             "answer": ["#### 9"]}), gsm_parquet)  # fmt: skip

    assert _ids(load_corpus(project)) == ["a"]
    detected = load_corpus(gsm)  # peeks past the invalid first line
    assert detected.rows[0].queries[0].kind == "gsm-symbolic"
    assert len(detected.quarantined) == 1
    assert load_corpus(gsm_parquet).rows[0].queries[0].gold_answer == "9"

    assert _ids(load_corpus(project, format="project")) == ["a"]
    forced = load_corpus(project, format="gsm-symbolic")
    assert forced.rows == [] and "missing stateful_gsm_symbolic_context" in forced.quarantined[0].reason
    assert load_corpus(tmp_path, format="text_folder").rows == []


def test_corpus_errors_name_the_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(CorpusError, match="nope.jsonl"):
        load_corpus(missing)
    with pytest.raises(CorpusError, match="nope.jsonl"):
        load_project_file(missing)
    with pytest.raises(CorpusError, match="nope"):
        load_gsm_symbolic(missing)
    with pytest.raises(CorpusError, match="nope"):
        load_text_folder(tmp_path / "nope")

    existing = _write_lines(tmp_path / "p.jsonl", [_line({"id": "a", "text": "A."})])
    with pytest.raises(CorpusError, match="'csv'"):
        load_corpus(existing, format="csv")
    odd = tmp_path / "data.csv"
    odd.write_text("id,text\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="data.csv"):
        load_corpus(odd)
    with pytest.raises(CorpusError, match="folder"):
        load_project_file(tmp_path)
    assert issubclass(CorpusError, ValueError)


def test_summary_counts_contexts_queries_and_set_aside_rows(tmp_path: Path) -> None:
    lines = [
        _line({"id": "a", "text": "A.", "queries": [{"text": "1?"}, {"text": "2?"}]}),
        _line({"id": "b", "text": "B.", "queries": [{"text": "3?"}]}),
        b"oops",
    ]
    path = _write_lines(tmp_path / "s.jsonl", lines)

    result = load_corpus(path)

    assert result.summary() == f"loaded 2 contexts (3 queries) from {path}; set aside 1 row"
    assert result.source == str(path)
