"""The lake: the system of record, as DuckLake tables (a SQL catalog + Parquet data files).

Layout under ``root`` (the defaults; a PostgreSQL catalog and object-storage data path are
configuration, see docs/architecture.md)::

    catalog.sqlite          the DuckLake catalog: tables, snapshots, which files hold which rows
    data/main/<table>/      Parquet data files of the published tables
    data/staging/<table>/   Parquet data files of finished, unpublished work

Two schemas hold the same tables (``sleeptime.storage.records.SCHEMAS``):

- ``main``: what has been published. A publish is **one DuckLake commit** that moves every
  staged row into ``main`` (upserting by key: the row with the latest run_id wins), adds the
  derived rows (the fitted policy), the service's spooled query log and the run's own row in
  ``runs``. Readers see whole snapshots only; earlier snapshots stay readable (time travel:
  ``SELECT * FROM lake.answers AT (VERSION => n)``) until expired.
- ``staging``: finished work not yet published. A shard's rows are committed here as soon as it
  finishes, so a crash loses only the shards in flight and the rerun reuses the rest.

DuckLake commits are catalog transactions, so a process killed mid-commit leaves the previous
snapshot intact (its half-written Parquet files are orphans that ``maintain`` deletes).

One process writes at a time (``sleeptime.storage.lock``); inside it, writes are serialised by a
lock and every caller gets its own cursor on one shared DuckDB instance.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from sleeptime._failpoints import PUBLISH_MID_COMMIT, failpoint
from sleeptime.storage.records import KEYS, SCHEMAS

if TYPE_CHECKING:
    from sleeptime.config import S3Settings

ALIAS = "lake"
OBJECT_STORE_SCHEMES = ("s3://", "s3a://")
MAIN, STAGING = "main", "staging"
# Tables the pipeline stages and publishes (runs and query_log are written directly at commit).
STAGED_TABLES = ("contexts", "queries", "variants", "answers", "quarantine", "failures", "policies")

_SQL_TYPES = {
    pa.string(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


def sql_type(t: pa.DataType) -> str:
    if t not in _SQL_TYPES:
        raise TypeError(f"no SQL type for Arrow type {t}")
    return _SQL_TYPES[t]


def _extension_file(package: str) -> str:
    """The extension binary a ``duckdb-extension-*`` wheel ships (DuckDB cannot download one offline)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the DuckDB extension package {package!r} is not installed; `pip install -e .` installs it "
            f"(pyproject.toml pins it to the DuckDB version)"
        )
    found = glob.glob(os.path.join(spec.submodule_search_locations[0], "extensions", f"v{duckdb.__version__}", "*.duckdb_extension"))
    if not found:
        raise RuntimeError(f"{package} has no extension built for DuckDB {duckdb.__version__}")
    return found[0]


def load_extensions(con: duckdb.DuckDBPyConnection, catalog: str, data_path: str = "") -> None:
    con.execute("SET autoinstall_known_extensions = false")
    con.execute(f"LOAD '{_extension_file('duckdb_extension_ducklake')}'")
    if catalog.startswith("sqlite:"):
        con.execute(f"LOAD '{_extension_file('duckdb_extension_sqlite_scanner')}'")
    elif catalog.startswith("postgres:"):
        con.execute(f"LOAD '{_extension_file('duckdb_extension_postgres_scanner')}'")
    if is_object_store(data_path):
        con.execute(f"LOAD '{_extension_file('duckdb_extension_httpfs')}'")


def is_object_store(path: str) -> bool:
    return path.startswith(OBJECT_STORE_SCHEMES)


def create_s3_secret(con: duckdb.DuckDBPyConnection, s3: S3Settings) -> None:
    """The DuckDB secret that reaches the lake's object store; keys from the environment only."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise RuntimeError(
            "the lake's data path is on object storage, but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "are not both set in the environment"
        )
    options = {"KEY_ID": key, "SECRET": secret, "REGION": s3.region, "URL_STYLE": s3.url_style}
    if os.environ.get("AWS_SESSION_TOKEN"):
        options["SESSION_TOKEN"] = os.environ["AWS_SESSION_TOKEN"]
    if s3.endpoint:
        options["ENDPOINT"] = s3.endpoint
    body = ", ".join(f"{k} {_quote(v)}" for k, v in options.items())
    # CREATE SECRET takes no bound parameters; _quote escapes every value.
    con.execute(f"CREATE OR REPLACE SECRET lake_s3 (TYPE s3, {body}, USE_SSL {str(s3.use_ssl).lower()})")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def as_arrow(table: str, rows: Iterable[Mapping[str, Any]] | pa.Table) -> pa.Table:
    schema = SCHEMAS[table]
    if isinstance(rows, pa.Table):
        return rows.select(schema.names).cast(schema)
    return pa.Table.from_pylist(list(rows), schema=schema)


class Lake:
    """Handle on the lake at ``root`` (one shared DuckDB instance per catalog in a process)."""

    _open: dict[tuple[str, str, bool], tuple[duckdb.DuckDBPyConnection, threading.RLock]] = {}
    _open_lock = threading.Lock()

    def __init__(self, root: Path | str, catalog: str | None = None, data_path: str | None = None,
                 *, read_only: bool = False, s3: S3Settings | None = None):
        self.root = Path(root).absolute()
        self.s3 = s3
        self.read_only = read_only  # a reader beside the writer process (tests, tools): never writes
        self.catalog = catalog or f"sqlite:{self.root / 'catalog.sqlite'}"
        self.data_path = data_path or str(self.root / "data") + "/"
        # The default layout keeps the data beside the catalog, so the folder can be copied or
        # moved whole; DuckLake records the absolute data path and would refuse the new one.
        self.portable = catalog is None and data_path is None

    def prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        """Load what ``con`` needs to attach this lake: the extensions, and the object store's secret."""
        load_extensions(con, self.catalog, self.data_path)
        if is_object_store(self.data_path):
            from sleeptime.config import S3Settings  # config imports storage lazily; not at module level

            create_s3_secret(con, self.s3 or S3Settings())

    def attach_sql(self, read_only: bool = False) -> str:
        options = [f"DATA_PATH {_quote(self.data_path)}"]
        if self.portable:
            options.append("OVERRIDE_DATA_PATH true")
        if read_only:
            options.append("READ_ONLY")
        return f"ATTACH {_quote('ducklake:' + self.catalog)} AS {ALIAS} ({', '.join(options)})"

    # connection -------------------------------------------------------------------------

    def _shared(self) -> tuple[duckdb.DuckDBPyConnection, threading.RLock]:
        key = (self.catalog, self.data_path, self.read_only)
        with Lake._open_lock:
            if key not in Lake._open:
                if self.catalog.startswith("sqlite:") and not self.read_only:
                    _sqlite_wal(self.catalog.removeprefix("sqlite:"))
                con = duckdb.connect()
                self.prepare(con)
                con.execute(self.attach_sql(read_only=self.read_only))
                if not self.read_only:
                    _create_tables(con)
                Lake._open[key] = (con, threading.RLock())
            return Lake._open[key]

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the shared instance (one per caller: DuckDB connections are not thread-safe)."""
        con, _ = self._shared()
        cur = con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    @contextmanager
    def transaction(self, message: str, extra: dict[str, Any] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """One DuckLake commit: everything done on the yielded cursor becomes visible at once, or not at all."""
        con, lock = self._shared()
        with lock:
            cur = con.cursor()
            try:
                cur.execute("BEGIN")
                cur.execute(
                    f"CALL {ALIAS}.set_commit_message('sleeptime', {_quote(message)}, "
                    f"extra_info => {_quote(json.dumps(extra or {}))})"
                )
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                raise
            finally:
                cur.close()

    @classmethod
    def close_all(cls) -> None:
        """Detach every lake this process opened (tests; a process exit does the same)."""
        with cls._open_lock:
            for con, _ in cls._open.values():
                con.close()
            cls._open.clear()

    # reading ------------------------------------------------------------------------------

    def snapshot_id(self) -> int:
        with self.cursor() as cur:
            return int(cur.execute(f"SELECT id FROM {ALIAS}.current_snapshot()").fetchone()[0])

    def read(self, table: str, at: int | None = None, schema: str = MAIN) -> pa.Table:
        """A whole table, as published now or as of lake snapshot ``at`` (time travel)."""
        _check(table)
        when = f" AT (VERSION => {int(at)})" if at is not None else ""
        with self.cursor() as cur:
            return cur.execute(f"SELECT * FROM {ALIAS}.{schema}.{table}{when}").to_arrow_table().cast(SCHEMAS[table])

    def read_staged(self, table: str) -> pa.Table:
        return self.read(table, schema=STAGING)

    def staged_count(self) -> int:
        with self.cursor() as cur:
            return sum(cur.execute(f"SELECT count(*) FROM {ALIAS}.{STAGING}.{t}").fetchone()[0] for t in STAGED_TABLES)

    def runs_by_snapshot(self) -> list[tuple[int, str, str]]:
        """(snapshot id, kind, run id) of every commit that recorded a run, oldest first."""
        with self.cursor() as cur:
            rows = cur.execute(
                f"SELECT snapshot_id, commit_extra_info FROM {ALIAS}.snapshots() "
                "WHERE author = 'sleeptime' ORDER BY snapshot_id"
            ).fetchall()
        out = []
        for sid, extra in rows:
            info = json.loads(extra or "{}")
            if info.get("run_id"):
                out.append((int(sid), info.get("kind", ""), info["run_id"]))
        return out

    def changes(self, since: int, until: int) -> dict[str, pa.Table]:
        """The rows each published table gained in snapshots (since, until]: the change feed."""
        out: dict[str, pa.Table] = {}
        if until <= since:
            return out
        with self.cursor() as cur:
            for table in SCHEMAS:
                arrow = cur.execute(insertions_sql(table, since, until)).to_arrow_table()
                if arrow.num_rows:
                    out[table] = arrow.cast(SCHEMAS[table])
        return out

    # writing ------------------------------------------------------------------------------

    def stage(self, table: str, rows: Iterable[Mapping[str, Any]] | pa.Table) -> int:
        """Commit finished, unpublished rows to ``staging`` (one small commit); returns the row count."""
        _check(table)
        arrow = as_arrow(table, rows)
        if not arrow.num_rows:
            return 0
        with self.transaction(f"stage {table}", {"kind": "stage"}) as cur:
            _insert(cur, f"{ALIAS}.{STAGING}.{table}", arrow)
        return arrow.num_rows

    def write(self, table: str, rows: Iterable[Mapping[str, Any]] | pa.Table, *, run_id: str = "", kind: str = "write") -> int:
        """Commit rows straight to ``main`` (rows nothing gates, such as a failed run's row in ``runs``)."""
        _check(table)
        arrow = as_arrow(table, rows)
        with self.transaction(f"{kind} {table}", {"kind": kind, "run_id": run_id}) as cur:
            _upsert(cur, table, arrow)
        return self.snapshot_id()

    def publish(self, run_record: dict[str, Any], derived: Mapping[str, pa.Table], spooled: Mapping[str, pa.Table]) -> int:
        """The publish commit: staged rows, derived rows, spooled rows and the run's row, at once.

        Returns the new snapshot id. A crash before COMMIT leaves the lake as it was (staging
        included), so the next run publishes the same rows.
        """
        run_id = run_record["run_id"]
        with self.transaction(f"publish {run_id}", {"kind": "publish", "run_id": run_id}) as cur:
            for i, table in enumerate(STAGED_TABLES):
                staged = f"{ALIAS}.{STAGING}.{table}"
                if cur.execute(f"SELECT count(*) FROM {staged}").fetchone()[0]:
                    _upsert_from(cur, table, staged)
                    cur.execute(f"DELETE FROM {staged}")
                if i == 2:
                    failpoint(PUBLISH_MID_COMMIT)
            for table, arrow in {**spooled, **derived}.items():
                _upsert(cur, table, arrow)
            _upsert(cur, "runs", as_arrow("runs", [run_record]))
        return self.snapshot_id()

    def reject(self, run_record: dict[str, Any]) -> int:
        """Drop the staged rows the gate refused (one commit) and record the run as rejected.

        The refused rows stay readable by time travel at the snapshot before this one, which the
        run's ``detail_json`` names.
        """
        run_id = run_record["run_id"]
        before = self.snapshot_id()
        detail = json.loads(run_record.get("detail_json") or "{}")
        detail["rejected_rows_at_snapshot"] = before
        record = {**run_record, "detail_json": json.dumps(detail, default=str)}
        with self.transaction(f"reject {run_id}", {"kind": "reject", "run_id": run_id}) as cur:
            for table in STAGED_TABLES:
                cur.execute(f"DELETE FROM {ALIAS}.{STAGING}.{table}")
            _upsert(cur, "runs", as_arrow("runs", [record]))
        return self.snapshot_id()

    def maintain(self) -> None:
        """Delete data files no snapshot references (left by a process killed mid-commit)."""
        with self.cursor() as cur:
            cur.execute(f"CALL ducklake_delete_orphaned_files({_quote(ALIAS)}, cleanup_all => true)")


def _sqlite_wal(path: str) -> None:
    """Put a SQLite catalog in WAL mode (a persistent property of the file).

    In its default rollback-journal mode a reader in another process stalled for about a second
    at a time while the writer committed; in WAL mode readers never waited more than a few tens
    of milliseconds (docs/decisions/001-open-table-format.md).
    """
    import sqlite3

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL").fetchall()
    finally:
        con.close()


def insertions_sql(table: str, since: int, until: int) -> str:
    """The rows ``table`` gained in lake snapshots (since, until]: the change feed, as SQL.

    Every change the product makes is an insert (a replaced row is a delete plus an insert of
    the same key), so the inserts are the whole feed a copy needs to apply with ``upsert_sql``.
    """
    _check(table)
    cols = ", ".join(SCHEMAS[table].names)
    return (f"SELECT {cols} FROM ducklake_table_insertions({_quote(ALIAS)}, {_quote(MAIN)}, {_quote(table)}, "
            f"{int(since) + 1}, {int(until)})")


def _check(table: str) -> None:
    if table not in SCHEMAS:
        raise KeyError(f"unknown table {table!r}; known: {sorted(SCHEMAS)}")


def _create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create missing tables in both schemas, and add columns the code has and the lake lacks.

    One catalog read and, when anything is missing, one transaction: every DDL statement outside
    a transaction is its own DuckLake snapshot, and creating a new lake took about 2 s that way."""
    have: dict[tuple[str, str], set[str]] = {}
    rows = con.execute(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns WHERE table_catalog = ?",
        [ALIAS],
    ).fetchall()
    for schema, table, column in rows:
        have.setdefault((schema, table), set()).add(column)
    statements = []
    if not any(schema == STAGING for schema, _ in have):
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {ALIAS}.{STAGING}")
    for schema in (MAIN, STAGING):
        for table, arrow_schema in SCHEMAS.items():
            if schema == STAGING and table not in STAGED_TABLES:
                continue
            columns = have.get((schema, table))
            if columns is None:
                cols = ", ".join(f"{f.name} {sql_type(f.type)}" for f in arrow_schema)
                statements.append(f"CREATE TABLE IF NOT EXISTS {ALIAS}.{schema}.{table} ({cols})")
                continue
            statements += [f"ALTER TABLE {ALIAS}.{schema}.{table} ADD COLUMN {f.name} {sql_type(f.type)}"
                           for f in arrow_schema if f.name not in columns]
    if not statements:
        return
    con.execute("BEGIN")
    try:
        for statement in statements:
            con.execute(statement)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _insert(cur: duckdb.DuckDBPyConnection, target: str, arrow: pa.Table) -> None:
    cur.register("_incoming", arrow)
    try:
        cols = ", ".join(arrow.schema.names)
        cur.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM _incoming")
    finally:
        cur.unregister("_incoming")


def _upsert(cur: duckdb.DuckDBPyConnection, table: str, arrow: pa.Table) -> None:
    if not arrow.num_rows:
        return
    cur.register("_incoming", as_arrow(table, arrow))
    try:
        _upsert_from(cur, table, "_incoming")
    finally:
        cur.unregister("_incoming")


def upsert_sql(table: str, target: str, source: str, deduplicate: bool = True) -> list[str]:
    """Statements that make ``target`` hold the rows of ``source`` by key; the latest run_id wins.

    Shared by the lake's publish and the warehouse's incremental update, so both apply the same
    rule and the warehouse stays equal to the lake. ``deduplicate=False`` when ``source`` is known
    to hold one row per key (``upsert``: checked on the keys alone): the dedup window carries
    every column and took 2.5 s for a policy version of 147k rows.
    """
    key = KEYS[table]
    cols = ", ".join(SCHEMAS[table].names)
    match = " AND ".join(f"s.{k} IS NOT DISTINCT FROM t.{k}" for k in key)
    order = "run_id DESC" if "run_id" in SCHEMAS[table].names else "1"
    insert = f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {source}"
    if deduplicate:
        insert += f" QUALIFY row_number() OVER (PARTITION BY {', '.join(key)} ORDER BY {order}) = 1"
    return [f"DELETE FROM {target} t WHERE EXISTS (SELECT 1 FROM {source} s WHERE {match})", insert]


def upsert(cur: duckdb.DuckDBPyConnection, table: str, target: str, source: str) -> None:
    """Run ``upsert_sql``, deduplicating ``source`` only when two of its rows share a key."""
    key = ", ".join(KEYS[table])
    duplicated = cur.execute(f"SELECT 1 FROM {source} GROUP BY {key} HAVING count(*) > 1 LIMIT 1").fetchone()
    for sql in upsert_sql(table, target, source, deduplicate=duplicated is not None):
        cur.execute(sql)


def _upsert_from(cur: duckdb.DuckDBPyConnection, table: str, source: str) -> None:
    upsert(cur, table, f"{ALIAS}.{MAIN}.{table}", source)


# --- the pipeline's view of the lake: published + staged -------------------------------------

INDEX_TABLES = ("contexts", "queries", "variants", "answers", "quarantine", "policies")


@contextmanager
def lake_index(lake: Lake, overlay: dict[str, pa.Table] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor with temporary views of the lake as the next publish will see it (main + staging).

    The lake, not the published warehouse, is the truth: work staged before a crash, or
    committed just before one, must not be redone. ``overlay`` adds rows that are in no table
    (what an ingest would stage), so a dry run plans exactly as the run would, writing nothing.
    """
    overlay = overlay or {}
    with lake.cursor() as cur:
        for table in INDEX_TABLES:
            extra = ""
            if table in overlay:
                cur.register(f"_overlay_{table}", overlay[table])
                extra = f" UNION ALL BY NAME SELECT * FROM _overlay_{table}"
            cur.execute(
                f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT * FROM {ALIAS}.{MAIN}.{table} "
                f"UNION ALL BY NAME SELECT * FROM {ALIAS}.{STAGING}.{table}{extra}"
            )
        # The service's log: published rows only (spooled rows are committed by the next publish).
        cur.execute(f"CREATE OR REPLACE TEMP VIEW query_log AS SELECT * FROM {ALIAS}.{MAIN}.query_log")
        cur.execute(
            """CREATE OR REPLACE TEMP VIEW contexts_current AS
            SELECT * EXCLUDE (rn, deleted) FROM (
                SELECT *, row_number() OVER (PARTITION BY context_id ORDER BY run_id DESC, deleted DESC) AS rn
                FROM contexts) WHERE rn = 1 AND NOT deleted"""
        )
        yield cur
