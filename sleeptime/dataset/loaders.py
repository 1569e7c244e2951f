"""Corpus loaders: the project's own JSONL/Parquet, published Stateful GSM-Symbolic, text folders.

Real corpora are dirty, and one bad line must not cost a run its other ten thousand rows. So a
loader only raises (:class:`CorpusError`) when the file as a whole cannot be read; every bad row
is set aside as a :class:`~sleeptime.domain.QuarantinedRow` with a reason a person can act on,
and every good row survives.

Project format, one JSON object per line (or the same columns in Parquet, ``queries`` being a
list of structs)::

    {"id": "ctx-1", "text": "...", "source": "optional", "metadata": {...},
     "queries": [{"id": "optional", "text": "...", "answer": "optional str or number", "kind": "optional"}]}
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    import pyarrow as pa

from sleeptime.domain import Context, ContextWithQueries, QuarantinedRow, Query, short_id

MAX_TEXT_CHARS = 200_000
MAX_QUERY_CHARS = 4_000

FORMATS = ("auto", "project", "gsm-symbolic", "text-folder")
TEXT_SUFFIXES = frozenset({".txt", ".md"})

GSM_CONTEXT = "stateful_gsm_symbolic_context"
GSM_QUESTION = "stateful_gsm_symbolic_question"
GSM_KIND = "gsm-symbolic"
# Published rows carry long per-row fields (the original question, its worked answer); only short
# scalars are worth keeping as context metadata.
_SMALL_STR_CHARS = 200
_GSM_CONSUMED = frozenset({GSM_CONTEXT, GSM_QUESTION, "answer"})
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_UTF8_BOM = b"\xef\xbb\xbf"


class CorpusError(ValueError):
    """A corpus that cannot be read at all (as opposed to a bad row, which is quarantined)."""


@dataclass
class LoadResult:
    """What a loader kept and what it set aside, so callers can report both."""

    rows: list[ContextWithQueries]
    quarantined: list[QuarantinedRow]
    source: str

    @property
    def query_count(self) -> int:
        return sum(len(row.queries) for row in self.rows)

    def summary(self) -> str:
        n, q, k = len(self.rows), self.query_count, len(self.quarantined)
        return (
            f"loaded {n} {_plural(n, 'context', 'contexts')} ({q} {_plural(q, 'query', 'queries')}) "
            f"from {self.source}; set aside {k} {_plural(k, 'row', 'rows')}"
        )


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def load_corpus(path: str | Path, *, format: str = "auto") -> LoadResult:  # noqa: A002 (public API name)
    """Load any supported corpus; ``format="auto"`` guesses from the path and the first row."""
    p = Path(path)
    fmt = corpus_format(p, format)
    if fmt == "text-folder":
        return load_text_folder(p)
    if fmt == "gsm-symbolic":
        return load_gsm_symbolic(p)
    return load_project_file(p)


def _detect_format(path: Path) -> str:
    if path.is_dir():
        return "text-folder"
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "gsm-symbolic" if GSM_CONTEXT in _parquet_columns(path) else "project"
    if suffix in {".jsonl", ".json"}:
        records = _records(path)
        try:
            first = next((r.value for r in records if r.value is not None), None)
        finally:
            records.close()
        return "gsm-symbolic" if first is not None and GSM_CONTEXT in first else "project"
    raise CorpusError(
        f"cannot tell the corpus format of {path} from its suffix {suffix or '(none)'!r}; "
        f"pass format= one of {', '.join(FORMATS[1:])}"
    )


def load_project_file(path: str | Path) -> LoadResult:
    """Load the project's own format from ``.jsonl``/``.json`` or ``.parquet``."""
    p = _existing_file(path)
    acc = _ProjectRows(str(p))
    for record in _records(p):
        acc.accept(record)
    return LoadResult(rows=acc.rows, quarantined=acc.quarantined, source=acc.source)


class _ProjectRows:
    """Validates project-format records one by one: rows kept, rows set aside, duplicate ids."""

    def __init__(self, source: str):
        self.source = source
        self.rows: list[ContextWithQueries] = []
        self.quarantined: list[QuarantinedRow] = []
        self.first_seen: dict[str, str] = {}

    def accept(self, record: _Record) -> ContextWithQueries | None:
        if record.error is not None or record.value is None:
            self.quarantined.append(record.quarantine(self.source, record.error or "unreadable row"))
            return None
        try:
            row, bad_queries = _project_row(record.value, record.location, self.source)
        except _Reject as reject:
            self.quarantined.append(record.quarantine(self.source, reject.reason))
            return None
        cid = row.context.id
        if cid in self.first_seen:
            self.quarantined.append(
                record.quarantine(self.source, f"duplicate id {cid!r} (first seen at {self.first_seen[cid]})")
            )
            return None
        self.first_seen[cid] = record.location
        self.rows.append(row)
        self.quarantined.extend(bad_queries)
        return row


@dataclass
class JsonlScan:
    """What ``scan_project_jsonl`` found: the lines it had to parse, and the ones it could skip."""

    result: LoadResult  # rows and set-aside rows of the lines that were parsed
    row_hashes: dict[str, str]  # context id -> sha256 of its line, for the parsed rows
    known: "pa.Array"  # line hashes the caller already knew (unchanged rows), never parsed


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\r\n")).hexdigest()


def scan_project_jsonl(
    path: str | Path, is_known: Callable[["pa.Array"], "pa.Array"], *, limit: int | None = None,
    chunk_lines: int = 50_000,
) -> JsonlScan:
    """Read a project-format JSONL corpus, parsing only the lines whose hash ``is_known`` rejects.

    A refresh of a large corpus where little changed then costs a sha256 per line and one Arrow
    set lookup per chunk, not a JSON parse and a pydantic row per context. ``limit`` keeps the
    first ``limit`` usable rows (known or valid), like ``rows[:limit]`` of a full load.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    p = _existing_file(path)
    acc = _ProjectRows(str(p))
    row_hashes: dict[str, str] = {}
    known: list[pa.Array] = []
    kept, lineno = 0, 0
    try:
        fh = p.open("rb")
    except OSError as exc:
        raise CorpusError(f"cannot read corpus {p}: {exc}") from exc
    with fh:
        while limit is None or kept < limit:
            lines = list(itertools.islice(fh, chunk_lines))
            if not lines:
                break
            if lineno == 0:
                lines[0] = lines[0].removeprefix(_UTF8_BOM)
            digests = pa.array([line_hash(line) for line in lines], pa.string())
            mask = pc.fill_null(is_known(digests), False).to_pylist()
            take = []
            for i, (line, hit) in enumerate(zip(lines, mask)):
                if limit is not None and kept >= limit:
                    break
                if hit:
                    take.append(i)
                    kept += 1
                    continue
                for record in _line_record(line, lineno + i + 1):
                    row = acc.accept(record)
                    if row is not None:
                        row_hashes[row.context.id] = digests[i].as_py()
                        kept += 1
            if take:
                known.append(digests.take(pa.array(take, pa.int64())))
            lineno += len(lines)
    return JsonlScan(
        LoadResult(rows=acc.rows, quarantined=acc.quarantined, source=acc.source),
        row_hashes,
        pa.concat_arrays(known) if known else pa.array([], pa.string()),
    )


def corpus_format(path: str | Path, format: str = "auto") -> str:  # noqa: A002 (public API name)
    """The format ``load_corpus`` would use for ``path``."""
    p = Path(path)
    fmt = format.strip().lower().replace("_", "-")
    if fmt not in FORMATS:
        raise CorpusError(f"unknown corpus format {format!r} for {p}; expected one of {', '.join(FORMATS)}")
    if not p.exists():
        raise CorpusError(f"corpus not found: {p}")
    return _detect_format(p) if fmt == "auto" else fmt


def load_gsm_symbolic(path: str | Path) -> LoadResult:
    """Load published Stateful GSM-Symbolic rows, grouping rows that share a context.

    Multi-query variants repeat the same context once per question; grouping them is what lets
    one sleep-time pass serve all of its questions.
    """
    p = _existing_file(path)
    source = str(p)
    groups: dict[str, _GsmGroup] = {}  # keyed by context text
    id_owner: dict[str, _GsmGroup] = {}
    quarantined: list[QuarantinedRow] = []

    for record in _records(p):
        if record.error is not None or record.value is None:
            quarantined.append(record.quarantine(source, record.error or "unreadable row"))
            continue
        obj = record.value
        try:
            context_text = _text(obj.get(GSM_CONTEXT), GSM_CONTEXT, MAX_TEXT_CHARS)
            question = _text(obj.get(GSM_QUESTION), GSM_QUESTION, MAX_QUERY_CHARS)
            gold = _gsm_gold(obj.get("answer"))
            context_id = _gsm_context_id(obj, context_text)
        except _Reject as reject:
            quarantined.append(record.quarantine(source, reject.reason))
            continue

        group = groups.get(context_text)
        if group is None:
            owner = id_owner.get(context_id)
            if owner is not None:
                quarantined.append(
                    record.quarantine(
                        source,
                        f"duplicate id {context_id!r}: {owner.location} has the same id but a different context text",
                    )
                )
                continue
            group = _GsmGroup(context_id=context_id, location=record.location, metadata=_small_scalars(obj))
            groups[context_text] = group
            id_owner[context_id] = group

        query_id = Query.make_id(group.context_id, question)
        if query_id in group.query_locations:
            quarantined.append(
                record.quarantine(
                    source,
                    f"duplicate query id {query_id!r}: same context and question as "
                    f"{group.query_locations[query_id]}",
                )
            )
            continue
        group.query_locations[query_id] = record.location
        # Context metadata keeps only what every query row of the context agrees on.
        group.metadata = {k: v for k, v in group.metadata.items() if obj.get(k) == v}
        group.queries.append(
            Query(id=query_id, context_id=group.context_id, text=question, gold_answer=gold, kind=GSM_KIND)
        )

    rows = [
        ContextWithQueries(
            context=Context(id=g.context_id, text=text, source=source, metadata=g.metadata),
            queries=tuple(g.queries),
        )
        for text, g in groups.items()
    ]
    return LoadResult(rows=rows, quarantined=quarantined, source=source)


def load_text_folder(path: str | Path) -> LoadResult:
    """Turn every ``.txt``/``.md`` file under a folder into an unlabeled context.

    Ids are relative paths without suffix, so they stay stable when the folder moves. Hidden
    files and folders (``.git``, ``.venv``) are skipped: they are never the corpus.
    """
    root = Path(path)
    if not root.exists():
        raise CorpusError(f"corpus folder not found: {root}")
    if not root.is_dir():
        raise CorpusError(f"not a folder: {root} (text-folder format needs a directory)")
    source = str(root)
    rows: list[ContextWithQueries] = []
    quarantined: list[QuarantinedRow] = []
    first_seen: dict[str, str] = {}

    for file in _text_files(root):
        rel = file.relative_to(root).as_posix()
        try:
            text = _read_text_file(file)
            context_id = PurePosixPath(rel).with_suffix("").as_posix()
            if context_id in first_seen:
                raise _Reject(f"duplicate id {context_id!r} (first seen in {first_seen[context_id]})", text)
        except _Reject as reject:
            quarantined.append(QuarantinedRow(source=str(file), location=rel, reason=reject.reason, raw=reject.raw))
            continue
        first_seen[context_id] = rel
        rows.append(
            ContextWithQueries(
                context=Context(id=context_id, text=text, source=str(file), metadata={"filename": rel})
            )
        )
    return LoadResult(rows=rows, quarantined=quarantined, source=source)


def write_project_jsonl(rows: Iterable[ContextWithQueries], path: str | Path) -> None:
    """Write rows in the project format that :func:`load_project_file` reads back.

    The file appears all at once (temp file in the same folder, then ``os.replace``), so a crash
    or a concurrent reader never sees half a corpus.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                fh.write(json.dumps(_project_dict(row), ensure_ascii=False, default=str))
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _project_dict(row: ContextWithQueries) -> dict[str, Any]:
    ctx = row.context
    queries = []
    for q in row.queries:
        item: dict[str, Any] = {"id": q.id, "text": q.text}
        if q.gold_answer is not None:
            item["answer"] = q.gold_answer
        if q.kind is not None:
            item["kind"] = q.kind
        queries.append(item)
    return {"id": ctx.id, "text": ctx.text, "source": ctx.source, "metadata": ctx.metadata, "queries": queries}


# --------------------------------------------------------------------------------------------
# Records: one parsed row (or the reason it could not be parsed) per line / Parquet row
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    location: str
    raw: str
    value: dict[str, Any] | None = None
    error: str | None = None

    def quarantine(self, source: str, reason: str) -> QuarantinedRow:
        return QuarantinedRow(source=source, location=self.location, reason=reason, raw=self.raw)


_Records = Generator[_Record, None, None]


class _Reject(Exception):
    """A row (or query) that cannot be used, and why."""

    def __init__(self, reason: str, raw: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


def _existing_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise CorpusError(f"corpus not found: {p}")
    if p.is_dir():
        raise CorpusError(f"{p} is a folder; use format='text-folder' for a folder of text files")
    return p


def _records(path: Path) -> _Records:
    if path.suffix.lower() == ".parquet":
        return _parquet_records(path)
    if path.suffix.lower() == ".json":
        return _json_records(path)
    return _jsonl_records(path)


def _jsonl_records(path: Path) -> _Records:
    """Decode line by line in binary, so one line of bad bytes costs only that line."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise CorpusError(f"cannot read corpus {path}: {exc}") from exc
    with fh:
        for lineno, line in enumerate(fh, start=1):
            yield from _line_record(line, lineno)


def _json_records(path: Path) -> _Records:
    """A ``.json`` file may hold one JSON array of rows instead of JSON lines; accept both."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read corpus {path}: {exc}") from exc
    body = data.removeprefix(_UTF8_BOM).lstrip()
    if body.startswith(b"["):
        try:
            items = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            items = None  # not one valid array: fall back to lines, which pinpoints the damage
        if isinstance(items, list):
            for index, item in enumerate(items, start=1):
                yield _value_record(f"item {index}", item, json.dumps(item, ensure_ascii=False, default=str))
            return
    for lineno, line in enumerate(data.splitlines(), start=1):
        yield from _line_record(line, lineno)


def _line_record(line: bytes, lineno: int) -> _Records:
    location = f"line {lineno}"
    line = line.rstrip(b"\r\n")
    if lineno == 1:
        line = line.removeprefix(_UTF8_BOM)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raw = line[:8000].decode("utf-8", "replace")
        yield _Record(location, raw, error=f"invalid UTF-8 at byte {exc.start}")
        return
    if not text.strip():
        return  # blank lines are formatting, not data
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        yield _Record(location, text, error=f"invalid JSON: {exc.msg} (column {exc.colno})")
        return
    yield _value_record(location, value, text)


def _value_record(location: str, value: Any, raw: str) -> _Record:
    if not isinstance(value, dict):
        return _Record(location, raw, error=f"row is JSON but not an object (got {_kind(value)})")
    return _Record(location, raw, value=value)


def _parquet_records(path: Path) -> _Records:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f"cannot read Parquet file {path}: {exc}") from exc
    index = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            for value in batch.to_pylist():
                index += 1
                yield _Record(f"row {index}", json.dumps(value, ensure_ascii=False, default=str), value=value)
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f"cannot read Parquet file {path} after row {index}: {exc}") from exc


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f"cannot read Parquet file {path}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Field checks shared by the formats; each failure names the field and what was wrong
# --------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """JSON's name for a value's type, since that is what the person fixing the file sees."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _identifier(value: Any, name: str) -> str:
    # Integer ids are common in published data; accept them rather than lose the row.
    if value is None:
        raise _Reject(f"missing {name}")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _Reject(f"{name} must be a string (got {_kind(value)})")
    if not value.strip():
        raise _Reject(f"{name} is empty")
    return value


def _text(value: Any, name: str, limit: int) -> str:
    if value is None:
        raise _Reject(f"missing {name}")
    if not isinstance(value, str):
        raise _Reject(f"{name} must be a string (got {_kind(value)})")
    if not value.strip():
        raise _Reject(f"{name} is empty or whitespace-only")
    if len(value) > limit:
        raise _Reject(f"{name} is too long (oversize): {len(value):,} characters, limit {limit:,}")
    return value


def _answer(value: Any) -> str | None:
    """Gold answers are compared as strings; 17.0 must read "17" to match a reply of 17."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise _Reject("answer must be a string or number (got boolean)")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Reject(f"answer must be a finite number (got {value})")
        return str(int(value)) if value.is_integer() else repr(value)
    raise _Reject(f"answer must be a string or number (got {_kind(value)})")


def _optional_str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _Reject(f"{name} must be a string (got {_kind(value)})")


def _metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    # A Parquet map column arrives as a list of (key, value) pairs.
    if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return dict(value)
    raise _Reject(f"metadata must be an object (got {_kind(value)})")


# --------------------------------------------------------------------------------------------
# Project format
# --------------------------------------------------------------------------------------------


def _project_row(
    obj: dict[str, Any], location: str, source: str
) -> tuple[ContextWithQueries, list[QuarantinedRow]]:
    """One context and its good queries; bad queries come back quarantined, not fatal."""
    context_id = _identifier(obj.get("id"), "id")
    text = _text(obj.get("text"), "text", MAX_TEXT_CHARS)
    row_source = _optional_str(obj.get("source"), "source")
    metadata = _metadata(obj.get("metadata"))
    raw_queries = obj.get("queries")
    if raw_queries is None:
        raw_queries = []
    if not isinstance(raw_queries, list):
        raise _Reject(f"queries must be a list (got {_kind(raw_queries)})")

    queries: list[Query] = []
    bad: list[QuarantinedRow] = []
    seen: dict[str, int] = {}
    for k, item in enumerate(raw_queries, start=1):
        qloc = f"{location} query {k}"
        # The raw JSON is only kept for a query that is set aside: encoding every good one costs
        # seconds per million queries.
        try:
            query = _project_query(item, context_id)
        except _Reject as reject:
            bad.append(QuarantinedRow(source=source, location=qloc, reason=reject.reason, raw=_raw_json(item)))
            continue
        if query.id in seen:
            bad.append(
                QuarantinedRow(
                    source=source,
                    location=qloc,
                    reason=f"duplicate query id {query.id!r} (same as query {seen[query.id]})",
                    raw=_raw_json(item),
                )
            )
            continue
        seen[query.id] = k
        queries.append(query)

    try:
        context = Context(
            id=context_id,
            text=text,
            source=source if row_source is None else row_source,
            metadata=metadata,
        )
        return ContextWithQueries(context=context, queries=tuple(queries)), bad
    except ValidationError as exc:  # the checks above should make this unreachable
        raise _Reject(f"invalid row: {exc.errors()[0]['msg']}") from exc


def _raw_json(item: Any) -> str:
    return json.dumps(item, ensure_ascii=False, default=str)


def _project_query(item: Any, context_id: str) -> Query:
    if not isinstance(item, dict):
        raise _Reject(f"query must be an object (got {_kind(item)})")
    text = _text(item.get("text"), "query text", MAX_QUERY_CHARS)
    raw_id = item.get("id")
    query_id = Query.make_id(context_id, text) if raw_id is None else _identifier(raw_id, "query id")
    try:
        return Query(
            id=query_id,
            context_id=context_id,
            text=text,
            gold_answer=_answer(item.get("answer")),
            kind=_optional_str(item.get("kind"), "query kind"),
        )
    except ValidationError as exc:
        raise _Reject(f"invalid query: {exc.errors()[0]['msg']}") from exc


# --------------------------------------------------------------------------------------------
# Stateful GSM-Symbolic
# --------------------------------------------------------------------------------------------


@dataclass
class _GsmGroup:
    context_id: str
    location: str
    metadata: dict[str, Any]
    queries: list[Query] = field(default_factory=list)
    query_locations: dict[str, str] = field(default_factory=dict)


def _gsm_gold(value: Any) -> str:
    """The gold answer is the number after the last ``####`` (GSM8K's convention)."""
    if value is None:
        raise _Reject("missing answer")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _answer(value) or ""
    if not isinstance(value, str):
        raise _Reject(f"answer must be a string (got {_kind(value)})")
    tail = value.rsplit("####", 1)[-1]
    number = tail.strip().replace(",", "").removeprefix("$").rstrip(".")
    if not _NUMBER.fullmatch(number):
        clipped = tail.strip()[:40]
        raise _Reject(f"answer has no number after '#### ' (found {clipped!r})")
    return number


def _gsm_context_id(obj: dict[str, Any], context_text: str) -> str:
    """Use the row's own id when it has one.

    In GSM-Symbolic ``id`` names the template and ``instance`` the filled-in copy, so the two
    together name one context; ``id`` alone would collide across instances.
    """
    if obj.get("id") is None:
        return short_id("gsm", context_text)
    base = _identifier(obj["id"], "id")
    instance = obj.get("instance")
    if instance is None:
        return base
    return f"{base}-{_identifier(instance, 'instance')}"


def _small_scalars(obj: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in obj.items():
        if key in _GSM_CONSUMED:
            continue
        if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= _SMALL_STR_CHARS):
            kept[key] = value
    return kept


# --------------------------------------------------------------------------------------------
# Text folders
# --------------------------------------------------------------------------------------------


def _read_text_file(file: Path) -> str:
    try:
        size = file.stat().st_size
        # UTF-8 spends at most 4 bytes a character: past this the file need not be read at all.
        if size > 4 * MAX_TEXT_CHARS:
            raise _Reject(f"file is too long (oversize): {size:,} bytes, limit {MAX_TEXT_CHARS:,} characters")
        data = file.read_bytes()
    except OSError as exc:
        raise _Reject(f"could not read file: {exc}") from exc
    if not data:
        raise _Reject("empty file")
    try:
        text = data.removeprefix(_UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject(f"invalid UTF-8 at byte {exc.start}", data[:8000].decode("utf-8", "replace")) from exc
    if not text.strip():
        raise _Reject("file is empty or whitespace-only", text)
    if len(text) > MAX_TEXT_CHARS:
        raise _Reject(f"file is too long (oversize): {len(text):,} characters, limit {MAX_TEXT_CHARS:,}", text)
    return text


def _text_files(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in TEXT_SUFFIXES:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda f: f.relative_to(root).as_posix())
