"""The DuckDB warehouse: built from the lake, validated, then swapped in atomically.

DuckDB allows one writer. Only the publish step writes, and it never writes a published file:
it builds a candidate file (schema from warehouse/migrations/*.sql, rows from the lake,
deduplicated by key), checkpoints and closes it, moves it to ``snapshots/`` under a unique name,
and atomically repoints the published path (a symlink) at it. A reader holding the old snapshot
keeps reading it; a new reader gets the new one; nobody ever sees a half-published state. Unique
snapshot names also matter inside one process, where DuckDB shares one open database per path.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import duckdb

from sleeptime._failpoints import PUBLISH_AFTER_SWAP, failpoint
from sleeptime.storage.lake import Lake

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "warehouse" / "migrations"

# Table -> the columns that identify a row; the latest run_id wins among duplicates.
KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id",),
    "contexts": ("context_id", "content_hash", "deleted"),
    "queries": ("query_id", "context_hash"),
    "variants": ("variant_id",),
    "answers": ("answer_id",),
    "quarantine": ("source", "location", "reason"),
    "failures": ("stage", "key", "run_id"),
    "policies": ("policy_version", "scope", "scope_value", "sleep_budget", "test_budget"),
    "query_log": ("request_id",),
}


def migrations(folder: Path = MIGRATIONS_DIR) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every ``NNN_name.sql``, in version order."""
    found = []
    for path in sorted(folder.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit():
            raise ValueError(f"migration file {path.name} must start with a version number, like 001_name.sql")
        found.append((int(version), name, path.read_text(encoding="utf-8")))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {folder}: {versions}")
    return found


def apply_migrations(con: duckdb.DuckDBPyConnection, folder: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the migrations this database has not seen yet; returns the versions applied."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, "
        "applied_at TIMESTAMPTZ DEFAULT current_timestamp)"
    )
    done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, name, sql in migrations(folder):
        if version in done:
            continue
        con.execute("BEGIN")
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
        con.execute("COMMIT")
        applied.append(version)
    return applied


@dataclass
class Snapshot:
    """A built candidate: its path and the lake files it holds."""

    path: Path
    files: list[str]


class Warehouse:
    KEEP_SNAPSHOTS = 3

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.snapshots_dir = self.path.parent / "snapshots"

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def current_snapshot(self) -> Path:
        """The file the published path points at now."""
        if not self.exists:
            raise FileNotFoundError(f"no published warehouse at {self.path}; run `sleeptime run` first")
        return self.path.resolve()

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the published snapshot."""
        con = duckdb.connect(str(self.current_snapshot()), read_only=True)
        try:
            yield con
        finally:
            con.close()

    def build(self, lake: Lake, include_staged: bool = True) -> Snapshot:
        """Build a candidate snapshot from the lake (and the staged rows) next to the published file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        candidate = self.path.parent / f".candidate-{uuid.uuid4().hex}.duckdb"
        all_files: list[str] = []
        con = duckdb.connect(str(candidate))
        try:
            apply_migrations(con)
            for table, key in KEYS.items():
                files = [str(p) for p in lake.files(table)]
                if include_staged:
                    files += [str(p) for p in lake.staged_files(table)]
                all_files += files
                if files:
                    _load(con, table, key, files)
            con.execute("CREATE TABLE build_info (built_at TIMESTAMPTZ, files_json VARCHAR)")
            con.execute("INSERT INTO build_info VALUES (current_timestamp, ?)", [json.dumps(sorted(all_files))])
            con.execute("CHECKPOINT")
        except BaseException:
            con.close()
            _remove(candidate)
            raise
        con.close()
        return Snapshot(candidate, sorted(all_files))

    @staticmethod
    def append(snapshot: Snapshot, table: str, arrow) -> None:
        """Add derived rows (already staged in the lake) to a candidate before it is gated."""
        con = duckdb.connect(str(snapshot.path))
        try:
            con.register("incoming", arrow)
            columns = ", ".join(arrow.schema.names)
            con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM incoming")
            con.execute("CHECKPOINT")
        finally:
            con.close()

    def publish(self, snapshot: Snapshot) -> Path:
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        final = self.snapshots_dir / f"sleeptime-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}.duckdb"
        os.replace(snapshot.path, final)
        link = self.path.parent / f".link-{uuid.uuid4().hex}"
        link.symlink_to(os.path.relpath(final, self.path.parent))
        os.replace(link, self.path)  # the atomic switch
        failpoint(PUBLISH_AFTER_SWAP)
        self._prune(keep=final)
        return final

    def _prune(self, keep: Path) -> None:
        # Readers that still hold an old file keep it alive (POSIX), so deleting is safe.
        old = sorted(self.snapshots_dir.glob("sleeptime-*.duckdb"))
        for stale in old[: -self.KEEP_SNAPSHOTS]:
            if stale != keep:
                _remove(stale)

    @staticmethod
    def discard(snapshot: Snapshot) -> None:
        _remove(snapshot.path)

    def cleanup_candidates(self) -> None:
        """Remove candidates left by a crashed publish."""
        for stale in self.path.parent.glob(".candidate-*.duckdb*"):
            stale.unlink(missing_ok=True)


def _load(con: duckdb.DuckDBPyConnection, table: str, key: tuple[str, ...], files: list[str]) -> None:
    columns = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
    cols = ", ".join(columns)
    partition = ", ".join(key)
    # Table and column names come from our own schema files; the file list is a bound parameter.
    con.execute(
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM read_parquet(?, union_by_name = true) "
        f"QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY run_id DESC) = 1",
        [files],
    )


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)


# The columns the pipeline's diff and skip sets need, per table.
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "contexts": ("context_id", "content_hash", "deleted", "run_id"),
    "queries": ("query_id", "context_hash"),
    "variants": ("variant_id", "context_id"),
    "answers": ("answer_id", "context_id"),
    "quarantine": ("source", "location", "reason"),
    "policies": ("policy_version",),
}


def open_lake_index(lake: Lake) -> duckdb.DuckDBPyConnection:
    """An in-memory index of the lake (committed and staged) for diffs and skip sets.

    The lake, not the published file, is the truth: after a crash between committing staged
    files and swapping the warehouse, the lake already holds the work and must not be redone.
    """
    con = duckdb.connect()
    for table, columns in INDEX_COLUMNS.items():
        files = [str(p) for p in lake.files(table)] + [str(p) for p in lake.staged_files(table)]
        cols = ", ".join(columns)
        if files:
            con.execute(f"CREATE TABLE {table} AS SELECT {cols} FROM read_parquet(?, union_by_name = true)", [files])
        else:
            types = {f.name: f.type for f in lake._schema(table)}
            ddl = ", ".join(f"{c} {'BOOLEAN' if str(types[c]) == 'bool' else 'VARCHAR'}" for c in columns)
            con.execute(f"CREATE TABLE {table} ({ddl})")
    con.execute(
        """CREATE VIEW contexts_current AS
        SELECT context_id, content_hash FROM (
            SELECT *, row_number() OVER (PARTITION BY context_id ORDER BY run_id DESC, deleted DESC) AS rn
            FROM contexts) WHERE rn = 1 AND NOT deleted"""
    )
    return con
