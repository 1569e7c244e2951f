"""The DuckDB warehouse: a read-optimised copy of the lake for dashboards and the service.

The lake (``sleeptime.storage.lake``) is the system of record; the warehouse is derived from it
and records which lake snapshot it reflects (``build_info.lake_snapshot``). It is brought up to
date from the change feed or the run's delta only, never rebuilt on a normal publish:

1. ``candidate``: copy the published file (a file copy, no query) to a hidden name beside it,
   and catch it up with any lake commit it has not seen (``ducklake_table_insertions``).
2. The publish applies the run's rows to the candidate (upsert by key, the same rule as the
   lake's commit), gates it, commits the lake, then ``finish`` records the new lake snapshot and
   checkpoints it.
3. ``publish`` renames the candidate over the published path: one atomic rename. A reader that
   opened the old file keeps reading it (POSIX keeps the inode alive); a new reader gets the new
   one; nobody waits for a publish or sees half of one.

DuckDB lets one process write a file while readers in other processes need read-only access to a
file nobody writes: the published file is never opened for writing, only replaced.
``rebuild`` makes a fresh one from the whole lake (``sleeptime warehouse rebuild``).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa

from sleeptime._failpoints import PUBLISH_AFTER_SWAP, failpoint
from sleeptime.storage.lake import (
    ALIAS,
    MAIN,
    STAGING,
    Lake,
    _quote,
    as_arrow,
    insertions_sql,
    upsert,
)
from sleeptime.storage import summaries
from sleeptime.storage.records import SCHEMAS

SUMMARIES_MIGRATION = 7  # 007_summaries.sql
# The SQL lives in warehouse/migrations/ at the top of the repository; ``warehouse`` is a package
# whose *.sql files are package data (pyproject.toml), so a wheel installs them beside sleeptime.
MIGRATIONS_PACKAGE = "warehouse"


class MigrationsNotFound(RuntimeError):
    """The warehouse's SQL migrations are not where the installed product should have them."""


def migrations_dir() -> Traversable:
    """The folder of the warehouse's SQL migrations: ``migrations/`` of the ``warehouse`` package,
    found through importlib.resources (the checkout's folder in an editable install, the installed
    copy in site-packages otherwise)."""
    try:
        folder = resources.files(MIGRATIONS_PACKAGE) / "migrations"
    except (ModuleNotFoundError, TypeError) as exc:  # TypeError: a module named warehouse, not a package
        raise MigrationsNotFound(
            f"the warehouse's SQL migrations were not found: the package {MIGRATIONS_PACKAGE!r} "
            f"(warehouse/migrations/*.sql) is not importable ({exc}). Reinstall sleeptime "
            "(`pip install .`, or `pip install -e .` in a checkout: an editable install made before "
            "warehouse/ became a package does not map it)"
        ) from None
    if not folder.is_dir() or not any(entry.name.endswith(".sql") for entry in folder.iterdir()):
        raise MigrationsNotFound(
            f"the warehouse's SQL migrations were not found: {folder} has no *.sql files (the package "
            f"{MIGRATIONS_PACKAGE!r} found there is not sleeptime's, or was installed without its package data)"
        )
    return folder


def migrations(folder: Path | Traversable | None = None) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every ``NNN_name.sql``, in version order (default folder:
    ``migrations_dir()``)."""
    folder = migrations_dir() if folder is None else folder
    found = []
    for entry in sorted((e for e in folder.iterdir() if e.name.endswith(".sql")), key=lambda e: e.name):
        version, _, name = entry.name.removesuffix(".sql").partition("_")
        if not version.isdigit():
            raise ValueError(f"migration file {entry.name} must start with a version number, like 001_name.sql")
        found.append((int(version), name, entry.read_text(encoding="utf-8")))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {folder}: {versions}")
    return found


def apply_migrations(con: duckdb.DuckDBPyConnection, folder: Path | Traversable | None = None) -> list[int]:
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


class Candidate:
    """A warehouse file being brought up to date; nobody reads it until it is published."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection, lake_snapshot: int):
        self.path = path
        self.con = con  # read-write, with the lake attached read-only as ``lake``
        self.lake_snapshot = lake_snapshot
        self.rows_applied: dict[str, int] = {}
        self.contexts_summarised = 0
        summaries.create_scope(con)

    def apply(self, table: str, rows: pa.Table | str) -> int:
        """Upsert rows by key: an Arrow table, or a SQL relation name (``lake.staging.answers``)."""
        if isinstance(rows, pa.Table):
            if not rows.num_rows:
                return 0
            self.con.register("_incoming", as_arrow(table, rows))
            source = "_incoming"
        else:
            source = rows
        try:
            n = self.con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
            if n:
                if table in summaries.CONTEXT_TABLES:
                    summaries.mark_touched(self.con, source)
                upsert(self.con, table, table, source)
                self.rows_applied[table] = self.rows_applied.get(table, 0) + n
        finally:
            if source == "_incoming":
                self.con.unregister("_incoming")
        return n

    def apply_staged(self, tables: tuple[str, ...]) -> int:
        """Apply the lake's staged rows: the candidate then shows what the publish commit will."""
        n = sum(self.apply(t, f"{ALIAS}.{STAGING}.{t}") for t in tables)
        self.refresh_summaries()
        return n

    def refresh_summaries(self, everything: bool = False) -> None:
        """Recompute the summaries of the contexts the rows applied so far touched."""
        self.contexts_summarised += summaries.refresh(self.con, everything)

    def catch_up(self, until: int) -> int:
        """Apply every row the published lake tables gained after this file's snapshot."""
        if until <= self.lake_snapshot:
            return 0
        if self._only_staging_since(until):  # finished shards committed to staging: nothing published
            self.lake_snapshot = until
            return 0
        n = 0
        for table in SCHEMAS:
            n += self.apply(table, f"({insertions_sql(table, self.lake_snapshot, until)})")
        self.lake_snapshot = until
        self.refresh_summaries()
        return n

    def _only_staging_since(self, until: int) -> bool:
        """Whether every lake commit in (this file's snapshot, until] only staged rows (the
        commits a run makes while it works); checking that costs one query instead of a change
        feed per table."""
        rows = self.con.execute(
            f"SELECT author, commit_extra_info FROM {ALIAS}.snapshots() WHERE snapshot_id > ? AND snapshot_id <= ?",
            [self.lake_snapshot, until],
        ).fetchall()
        return bool(rows) and all(author == "sleeptime" and json.loads(extra or "{}").get("kind") == "stage"
                                  for author, extra in rows)

    def finish(self, lake_snapshot: int) -> None:
        """Record the lake snapshot this file now reflects, checkpoint and close it."""
        self.refresh_summaries()
        self.con.execute("DELETE FROM build_info")
        self.con.execute(
            "INSERT INTO build_info VALUES (current_timestamp, ?, ?)",
            [int(lake_snapshot), json_rows(self.rows_applied)],
        )
        self.con.execute(f"DETACH {ALIAS}")
        self.con.execute("CHECKPOINT")
        self.con.close()
        self.lake_snapshot = lake_snapshot

    def discard(self) -> None:
        try:
            self.con.close()
        except duckdb.Error:
            pass
        _remove(self.path)


def json_rows(counts: dict[str, int]) -> str:
    return json.dumps(dict(sorted(counts.items())))


class Warehouse:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def current_snapshot(self) -> Path:
        """The published file (raises when nothing has been published yet)."""
        if not self.exists:
            raise FileNotFoundError(f"no published warehouse at {self.path}; run `sleeptime run` first")
        return self.path

    def identity(self) -> tuple[int, int]:
        """Changes exactly when a publish replaces the file (inode, modification time)."""
        st = os.stat(self.current_snapshot())
        return st.st_ino, st.st_mtime_ns

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the published file."""
        con = connect_read_only(self.current_snapshot())
        try:
            yield con
        finally:
            con.close()

    def lake_snapshot(self) -> int | None:
        """The lake snapshot the published file reflects (None: no warehouse yet)."""
        if not self.exists:
            return None
        with self.read() as con:
            row = con.execute("SELECT lake_snapshot FROM build_info").fetchone()
        return int(row[0]) if row else None

    def candidate(self, lake: Lake) -> Candidate:
        """A copy of the published file caught up with the lake, or a fresh one built from it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cleanup_candidates()
        path = self.path.parent / f".candidate-{uuid.uuid4().hex}.duckdb"
        base = self.lake_snapshot() if self.exists else None
        if base is not None:
            shutil.copyfile(self.path, path)
        con = duckdb.connect(str(path))
        try:
            migrated = apply_migrations(con)
            lake.prepare(con)
            con.execute(lake.attach_sql(read_only=True))
            now = int(con.execute(f"SELECT id FROM {ALIAS}.current_snapshot()").fetchone()[0])
            if base is None:
                candidate = Candidate(path, con, now)
                for table in SCHEMAS:
                    cols = ", ".join(SCHEMAS[table].names)
                    con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {ALIAS}.{MAIN}.{table} AT (VERSION => {now})")
                candidate.refresh_summaries(everything=True)
            else:
                candidate = Candidate(path, con, base)
                if SUMMARIES_MIGRATION in migrated:  # a file from before the summaries: fill them
                    candidate.refresh_summaries(everything=True)
                candidate.catch_up(now)
        except BaseException:
            con.close()
            _remove(path)
            raise
        return candidate

    def publish(self, candidate: Candidate) -> Path:
        os.replace(candidate.path, self.path)  # the atomic switch
        failpoint(PUBLISH_AFTER_SWAP)
        return self.path

    def catch_up(self, lake: Lake) -> int:
        """Bring the published file up to the lake if a commit is missing (a crash between the
        lake commit and the switch); returns the rows applied (0: it was current)."""
        if not self.exists:
            return 0
        base, now = self.lake_snapshot(), lake.snapshot_id()
        if base is not None and base >= now:
            return 0
        candidate = self.candidate(lake)
        applied = sum(candidate.rows_applied.values())
        if not applied and base is not None:
            candidate.discard()  # only staging moved: nothing the warehouse holds
            return 0
        candidate.finish(now)
        self.publish(candidate)
        return applied

    def sync(self, lake: Lake) -> Path:
        """Make the published file show the lake as it is now (catch up, or build it if missing)."""
        if self.exists:
            self.catch_up(lake)
            return self.path
        return self.rebuild(lake)

    def rebuild(self, lake: Lake) -> Path:
        """A fresh file from the whole lake (on demand: `sleeptime warehouse rebuild`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cleanup_candidates()
        tmp = Warehouse(self.path.parent / f".rebuild-{uuid.uuid4().hex}.duckdb")
        candidate = tmp.candidate(lake)  # no published file there: a full load
        candidate.finish(candidate.lake_snapshot)
        return self.publish(candidate)

    def cleanup_candidates(self) -> None:
        """Remove candidates left by a crashed publish."""
        for pattern in (".candidate-*.duckdb*", ".rebuild-*.duckdb*"):
            for stale in self.path.parent.glob(pattern):
                stale.unlink(missing_ok=True)


def connect_read_only(path: Path | str) -> duckdb.DuckDBPyConnection:
    """A reader of the file at ``path`` as it is now, even inside a process that already reads an
    older file at the same path.

    ``duckdb.connect(path)`` reuses a database the process already has open at that path, so a
    reader opened before a publish would hand the old snapshot to every later reader in the same
    process. Attaching the file in a fresh in-memory database opens what the path names now.
    """
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {_quote(str(path))} AS warehouse (READ_ONLY)")
        con.execute("USE warehouse")
    except BaseException:
        con.close()
        raise
    return _ReadConnection(con)  # type: ignore[return-value]


class _ReadConnection:
    """A DuckDB connection whose cursors also read the attached warehouse (``USE`` is per cursor)."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._con.cursor()
        cur.execute("USE warehouse")
        return cur

    def __getattr__(self, name: str):
        return getattr(self._con, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self._con.close()


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
