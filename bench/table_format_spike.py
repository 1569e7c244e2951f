"""Spike: compare open table formats (DuckLake / Delta Lake / Iceberg) for the lake tables.

Decision record: docs/decisions/001-open-table-format.md.

Usage (each format in its own venv; nothing is downloaded at runtime):

    # DuckLake (duckdb 1.5.5 + extension wheels from PyPI)
    python3 -m venv /tmp/spike/venv
    /tmp/spike/venv/bin/pip install duckdb==1.5.5 duckdb-extension-ducklake==1.5.5 \
        duckdb-extension-sqlite-scanner==1.5.5 pytz
    nice -n 10 /tmp/spike/venv/bin/python bench/table_format_spike.py ducklake-sqlite
    nice -n 10 /tmp/spike/venv/bin/python bench/table_format_spike.py ducklake-duckdb

    # Delta Lake and Iceberg (duckdb 2.0.0 as the reader)
    python3 -m venv /tmp/spike/venv2
    /tmp/spike/venv2/bin/pip install duckdb==2.0.0 deltalake==1.6.6 \
        'pyiceberg[sql-sqlite,pyarrow]==0.12.0'
    nice -n 10 /tmp/spike/venv2/bin/python bench/table_format_spike.py delta
    nice -n 10 /tmp/spike/venv2/bin/python bench/table_format_spike.py iceberg

    # install size / import time of the packages in the running venv
    /tmp/spike/venvX/bin/python bench/table_format_spike.py install-stats

Options: --rows (default 10_000_000, built in --build-batches appends),
--root (default /tmp/spike/run/<format>, wiped first), --skip-crash, --skip-isolation,
--kill-after SECONDS (crash test, default 0.5), --sqlite-wal (ducklake-sqlite catalog in WAL mode).

What is measured (figures printed as `name: value` lines, plus a JSON summary at the end):
  1. build time, append of 1k rows (median of 5), multi-table commit (1k rows into
     `answers` + 100 rows into `runs`; atomic only for DuckLake),
  2. snapshot isolation: a reader in another process polls count(answers), count(runs)
     while the writer commits 10k-row appends made of two inserts (+100 runs rows);
     reports torn reads (partial commit or cross-table inconsistency), errors, latency,
  3. change feed: rows added by the last 1k commit (table_changes / CDF / incremental scan),
  4. time travel: count as of an earlier version,
  5. crash safety: SIGKILL a writer ~0.5 s into a 2M-row append, reopen, count, orphans, cleanup,
  6. reader paths: count(*) and GROUP BY run_id through DuckDB.
Internal roles (--role reader / crash-writer) are the child processes of steps 2 and 5.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _measure  # bench/ is on sys.path: this script's folder (standard library only: the spike venvs lack psutil)

FORMATS = ("ducklake-sqlite", "ducklake-duckdb", "delta", "iceberg")

# ~40-char raw_reply; run_id has 16 distinct values for the GROUP BY.
GEN_SQL = """
SELECT 'ans-' || i::VARCHAR AS answer_id,
       'q-' || (i % 100000)::VARCHAR AS query_id,
       'run-' || (i % 16)::VARCHAR AS run_id,
       (i % 3 = 0) AS correct,
       (i * 7 % 2000)::INTEGER AS prompt_tokens,
       (i * 13 % 500)::INTEGER AS completion_tokens,
       ((i * 7 % 2000) * 3e-6 + (i * 13 % 500) * 1.5e-5)::DOUBLE AS cost_usd,
       'The answer is ' || (i * 2654435761 % 1000000007)::VARCHAR || ' because reasons.' AS raw_reply
FROM range({off}, {off} + {n}) t(i)
"""
GEN_RUNS_SQL = """
SELECT 'run-' || i::VARCHAR AS run_id, (i * 1000)::BIGINT AS n_answers,
       TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND AS published_at
FROM range({off}, {off} + {n}) t(i)
"""


def now() -> float:
    return time.perf_counter()


def timed(fn, *a, **kw):
    t = now()
    r = fn(*a, **kw)
    return now() - t, r


def files_on_disk(root: Path, pattern: str = "**/*.parquet") -> set[str]:
    return {str(p) for p in root.glob(pattern)}


# --------------------------------------------------------------------------- DuckLake
class DuckLake:
    """DuckLake through duckdb 1.5.5; catalog is SQLite or a DuckDB file."""

    def __init__(self, root: Path, catalog: str, wal: bool = False):
        self.root, self.catalog, self.wal = root, catalog, wal
        self.data = root / "data"
        self.cat = root / ("cat.sqlite" if catalog == "sqlite" else "cat.ducklake")
        self.con = None

    @staticmethod
    def load_extensions(con):
        import duckdb_extension_ducklake

        site = Path(duckdb_extension_ducklake.__file__).parent.parent
        for ext in ("ducklake", "sqlite_scanner"):
            hits = glob.glob(f"{site}/duckdb_extension_{ext}/extensions/*/{ext}.duckdb_extension")
            if hits:  # offline: install from the wheel's file, then load by name
                con.execute(f"INSTALL '{hits[0]}'")
                con.execute(f"LOAD {ext}")

    def attach_sql(self, read_only=False) -> str:
        prefix = "ducklake:sqlite:" if self.catalog == "sqlite" else "ducklake:"
        opts = [f"DATA_PATH '{self.data}/'"]
        if read_only:
            opts.append("READ_ONLY")
        return f"ATTACH '{prefix}{self.cat}' AS lake ({', '.join(opts)})"

    def open(self, read_only=False):
        import duckdb

        if self.wal and self.catalog == "sqlite" and not self.cat.exists():
            import sqlite3  # WAL is persistent in the file: readers stop waiting on the writer's lock

            sqlite3.connect(self.cat).execute("PRAGMA journal_mode=WAL").fetchall()
        self.con = duckdb.connect()
        self.load_extensions(self.con)
        self.con.execute(self.attach_sql(read_only))
        return self

    def close(self):
        if self.con is not None:
            self.con.close()
            self.con = None

    def create(self):
        self.con.execute(f"CREATE TABLE lake.answers AS {GEN_SQL.format(off=0, n=0)}")
        self.con.execute(f"CREATE TABLE lake.runs AS {GEN_RUNS_SQL.format(off=0, n=0)}")

    def append(self, off, n):
        self.con.execute(f"INSERT INTO lake.answers {GEN_SQL.format(off=off, n=n)}")

    def multi_commit(self, off, n_a, n_b, split=False):
        c = self.con
        c.execute("BEGIN")
        if split:  # two inserts into the same table inside one commit
            c.execute(f"INSERT INTO lake.answers {GEN_SQL.format(off=off, n=n_a // 2)}")
            c.execute(f"INSERT INTO lake.answers {GEN_SQL.format(off=off + n_a // 2, n=n_a - n_a // 2)}")
        else:
            c.execute(f"INSERT INTO lake.answers {GEN_SQL.format(off=off, n=n_a)}")
        c.execute(f"INSERT INTO lake.runs {GEN_RUNS_SQL.format(off=off, n=n_b)}")
        c.execute("COMMIT")
        return True

    def version(self) -> int:
        return self.con.execute("SELECT id FROM lake.current_snapshot()").fetchall()[0][0]

    def counts(self):
        return self.con.execute(
            "SELECT (SELECT count(*) FROM lake.answers), (SELECT count(*) FROM lake.runs)"
        ).fetchall()[0]

    def count(self):
        return self.con.execute("SELECT count(*) FROM lake.answers").fetchall()[0][0]

    def group_by(self):
        return self.con.execute(
            "SELECT run_id, count(*), sum(cost_usd) FROM lake.answers GROUP BY run_id"
        ).fetchall()

    def changes(self, v):
        return self.con.execute(
            f"SELECT count(*) FROM lake.table_changes('answers', {v}, {v}) WHERE change_type = 'insert'"
        ).fetchall()[0][0]

    def count_at(self, v):
        return self.con.execute(f"SELECT count(*) FROM lake.answers AT (VERSION => {v})").fetchall()[0][0]

    def referenced_files(self) -> set[str]:
        rows = self.con.execute(
            "SELECT data_file FROM ducklake_list_files('lake', 'answers') "
            "UNION ALL SELECT data_file FROM ducklake_list_files('lake', 'runs')"
        ).fetchall()
        return {r[0] for r in rows}

    def cleanup_orphans(self):
        dry = self.con.execute(
            "SELECT count(*) FROM ducklake_delete_orphaned_files('lake', dry_run => true, cleanup_all => true)"
        ).fetchall()[0][0]
        self.con.execute("CALL ducklake_delete_orphaned_files('lake', cleanup_all => true)")
        return dry


# --------------------------------------------------------------------------- Delta
class Delta:
    def __init__(self, root: Path):
        self.root = root
        self.a, self.b = root / "answers", root / "runs"
        import duckdb

        self.duck = duckdb.connect()

    def open(self, read_only=False):
        return self

    def close(self):
        pass

    def arrow(self, sql):
        return self.duck.sql(sql).to_arrow_table()

    def _write(self, path, tbl, mode="append", **kw):
        from deltalake import write_deltalake

        write_deltalake(str(path), tbl, mode=mode, **kw)

    def create(self):
        cfg = {"delta.enableChangeDataFeed": "true"}
        self._write(self.a, self.arrow(GEN_SQL.format(off=0, n=0)), mode="overwrite", configuration=cfg)
        self._write(self.b, self.arrow(GEN_RUNS_SQL.format(off=0, n=0)), mode="overwrite", configuration=cfg)

    def append(self, off, n, tbl=None):
        self._write(self.a, tbl if tbl is not None else self.arrow(GEN_SQL.format(off=off, n=n)))

    def multi_commit(self, off, n_a, n_b, split=False):
        # No multi-table (or multi-statement) transactions: two independent commits.
        self._write(self.a, self.arrow(GEN_SQL.format(off=off, n=n_a)))
        self._write(self.b, self.arrow(GEN_RUNS_SQL.format(off=off, n=n_b)))
        return False

    def dt(self, path, version=None):
        from deltalake import DeltaTable

        return DeltaTable(str(path), version=version)

    def version(self):
        return self.dt(self.a).version()

    def _count(self, path, version=None):
        ds = self.dt(path, version).to_pyarrow_dataset()  # noqa: F841 (DuckDB replacement scan)
        return self.duck.execute("SELECT count(*) FROM ds").fetchall()[0][0]

    def counts(self):
        return self._count(self.a), self._count(self.b)

    def count(self):
        return self._count(self.a)

    def group_by(self):
        ds = self.dt(self.a).to_pyarrow_dataset()  # noqa: F841
        return self.duck.execute("SELECT run_id, count(*), sum(cost_usd) FROM ds GROUP BY run_id").fetchall()

    def changes(self, v):
        rdr = self.dt(self.a).load_cdf(starting_version=v, ending_version=v)
        return rdr.read_all().num_rows

    def count_at(self, v):
        return self._count(self.a, v)

    def referenced_files(self):
        out = set()
        for p in (self.a, self.b):
            out |= {f.removeprefix("file://") for f in self.dt(p).file_uris()}
        return out

    def cleanup_orphans(self):
        n = 0
        for p in (self.a, self.b):
            dt = self.dt(p)
            dry = dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=True, full=True)
            dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False, full=True)
            n += len(dry)
        return n


# --------------------------------------------------------------------------- Iceberg
class Iceberg:
    def __init__(self, root: Path):
        self.root = root
        import duckdb

        self.duck = duckdb.connect()
        self.cat = None

    def open(self, read_only=False):
        from pyiceberg.catalog.sql import SqlCatalog

        (self.root / "wh").mkdir(parents=True, exist_ok=True)
        self.cat = SqlCatalog(
            "spike", uri=f"sqlite:///{self.root}/cat.db", warehouse=f"file://{self.root}/wh"
        )
        return self

    def close(self):
        self.cat = None

    def arrow(self, sql):
        return self.duck.sql(sql).to_arrow_table()

    def t(self, name):
        return self.cat.load_table(f"spike.{name}")

    def create(self):
        self.cat.create_namespace_if_not_exists("spike")
        self.cat.create_table("spike.answers", schema=self.arrow(GEN_SQL.format(off=0, n=0)).schema)
        self.cat.create_table("spike.runs", schema=self.arrow(GEN_RUNS_SQL.format(off=0, n=0)).schema)

    def append(self, off, n, tbl=None):
        self.t("answers").append(tbl if tbl is not None else self.arrow(GEN_SQL.format(off=off, n=n)))

    def multi_commit(self, off, n_a, n_b, split=False):
        # pyiceberg: single-table transactions only (several ops -> one metadata commit);
        # no multi-table commit with the SQL catalog.
        a = self.t("answers")
        if split:
            with a.transaction() as tx:
                tx.append(self.arrow(GEN_SQL.format(off=off, n=n_a // 2)))
                tx.append(self.arrow(GEN_SQL.format(off=off + n_a // 2, n=n_a - n_a // 2)))
        else:
            a.append(self.arrow(GEN_SQL.format(off=off, n=n_a)))
        self.t("runs").append(self.arrow(GEN_RUNS_SQL.format(off=off, n=n_b)))
        return False

    def version(self):
        return self.t("answers").current_snapshot().snapshot_id

    def _files(self, name, snapshot_id=None):
        scan = self.t(name).scan(snapshot_id=snapshot_id)
        return [task.file.file_path.removeprefix("file://") for task in scan.plan_files()]

    def _count(self, name, snapshot_id=None):
        files = self._files(name, snapshot_id)
        if not files:
            return 0
        return self.duck.execute("SELECT count(*) FROM read_parquet($f)", {"f": files}).fetchall()[0][0]

    def counts(self):
        return self._count("answers"), self._count("runs")

    def count(self):
        return self._count("answers")

    def group_by(self):
        return self.duck.execute(
            "SELECT run_id, count(*), sum(cost_usd) FROM read_parquet($f) GROUP BY run_id",
            {"f": self._files("answers")},
        ).fetchall()

    def changes(self, v):
        a = self.t("answers")
        parent = a.metadata.snapshot_by_id(v).parent_snapshot_id
        scan = a.incremental_append_scan(from_snapshot_id_exclusive=parent, to_snapshot_id_inclusive=v)
        return scan.to_arrow().num_rows

    def count_at(self, v):
        return self._count("answers", v)

    def referenced_files(self):
        out = set()
        for name in ("answers", "runs"):  # data files of every live snapshot
            paths = self.t(name).inspect.all_files().column("file_path").to_pylist()
            out |= {f.removeprefix("file://") for f in paths}
        return out

    def cleanup_orphans(self):
        # pyiceberg 0.12 has no remove-orphan-files action: diff disk vs. manifests by hand.
        orphans = files_on_disk(self.root / "wh") - self.referenced_files()
        for f in orphans:
            os.remove(f)
        return len(orphans)


def make(fmt: str, root: Path):
    if fmt.startswith("ducklake"):
        return DuckLake(root, fmt.split("-")[1], wal=os.environ.get("SPIKE_SQLITE_WAL") == "1")
    return Delta(root) if fmt == "delta" else Iceberg(root)


# --------------------------------------------------------------------------- child roles
def role_reader(fmt, root, stop_file, out_file):
    """Poll both counts until stop_file exists; write a JSON log of what was seen."""
    log = {"reads": [], "errors": [], "open_error": None}
    try:
        lake = make(fmt, root).open(read_only=True)
    except Exception as e:  # e.g. DuckDB-file catalog locked by the writer
        log["open_error"] = f"{type(e).__name__}: {e}"[:300]
        Path(out_file).write_text(json.dumps(log))
        return
    first = True
    while not os.path.exists(stop_file):
        t = now()
        try:
            a, b = lake.counts()
            if first:  # first read pays catalog/metadata warm-up; signal readiness
                log["first_read_s"], first = now() - t, False
                Path(stop_file + ".ready").touch()
            else:
                log["reads"].append([a, b, now() - t])
        except Exception as e:
            log["errors"].append(f"{type(e).__name__}: {e}"[:300])
            time.sleep(0.01)
    Path(out_file).write_text(json.dumps(log))


def role_crash_writer(fmt, root, off, n):
    lake = make(fmt, root).open()
    if isinstance(lake, DuckLake):  # generation streams inside the INSERT
        print("ready", flush=True)
        lake.append(off, n)
    else:  # build the Arrow table first so the kill lands in the write/commit
        tbl = lake.arrow(GEN_SQL.format(off=off, n=n))
        print("ready", flush=True)
        lake.append(off, n, tbl)
    print("committed", flush=True)


# --------------------------------------------------------------------------- main flow
def run(fmt, rows, batches, root, skip_iso, skip_crash, kill_after=0.5):
    res = {"format": fmt, "rows": rows, "sqlite_wal": os.environ.get("SPIKE_SQLITE_WAL") == "1", "loadavg_start": _measure.loadavg()}

    def rec(k, v):
        res[k] = v
        print(f"{k}: {v}", flush=True)

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    lake = make(fmt, root)
    rec("open_s", round(timed(lake.open)[0], 3))
    lake.create()
    off = 0
    t = now()
    for _ in range(batches):
        lake.append(off, rows // batches)
        off += rows // batches
    rec("build_s", round(now() - t, 2))

    ts = []
    for _ in range(5):
        ts.append(timed(lake.append, off, 1000)[0])
        off += 1000
    rec("append_1k_median_s", round(statistics.median(ts), 4))
    ts, atomic = [], None
    for _ in range(3):
        dt, atomic = timed(lake.multi_commit, off, 1000, 100)
        ts.append(dt)
        off += 1000
    rec("multi_commit_1k_plus_100_median_s", round(statistics.median(ts), 4))
    rec("multi_commit_atomic", atomic)

    for label, fn in (("count", lake.count), ("group_by_run_id", lake.group_by)):
        fn()  # warm
        rec(f"{label}_s", round(statistics.median(timed(fn)[0] for _ in range(3)), 4))
    total = lake.count()
    rec("count_rows", total)

    # change feed of the last 1k commit + time travel
    v_before = lake.version()
    lake.append(off, 1000)
    off += 1000
    v_after = lake.version()
    dt, n = timed(lake.changes, v_after)
    rec("change_feed_rows", n)
    rec("change_feed_s", round(dt, 4))
    dt, n = timed(lake.count_at, v_before)
    rec("time_travel_count", n)
    rec("time_travel_ok", n == total)
    rec("time_travel_s", round(dt, 4))

    # isolation: reader in another process
    if not skip_iso:
        a0, b0 = lake.counts()
        stop, out = root / "stop", root / "reader.json"
        child = subprocess.Popen(
            [sys.executable, __file__, fmt, "--root", str(root), "--role", "reader", "--stop", str(stop), "--out", str(out)]
        )
        t = now()
        while not Path(str(stop) + ".ready").exists() and child.poll() is None and now() - t < 60:
            time.sleep(0.05)
        commit_ts, commit_errs = [], []
        for _ in range(30):
            try:
                commit_ts.append(timed(lake.multi_commit, off, 10000, 100, True)[0])
            except Exception as e:
                commit_errs.append(f"{type(e).__name__}: {e}"[:300])
            off += 10000
        time.sleep(0.5)
        stop.touch()
        child.wait(timeout=120)
        log = json.loads(out.read_text())
        reads = log["reads"]
        torn_partial = sum(1 for a, b, _ in reads if (a - a0) % 10000)
        torn_cross = sum(1 for a, b, _ in reads if (a - a0) // 10000 != (b - b0) // 100)
        rec("iso_reader_open_error", log["open_error"])
        rec("iso_reader_first_read_s", round(log.get("first_read_s", 0), 3))
        rec("iso_reads", len(reads))
        rec("iso_distinct_states_seen", len({(a, b) for a, b, _ in reads}))
        rec("iso_partial_commit_reads", torn_partial)
        rec("iso_cross_table_inconsistent_reads", torn_cross)
        rec("iso_reader_errors", len(log["errors"]))
        rec("iso_reader_error_samples", sorted(set(log["errors"]))[:3])
        rec("iso_read_latency_max_s", round(max((r[2] for r in reads), default=0), 3))
        rec("iso_read_latency_median_s", round(statistics.median([r[2] for r in reads]) if reads else 0, 4))
        rec("iso_writer_commit_median_s", round(statistics.median(commit_ts) if commit_ts else 0, 4))
        rec("iso_writer_errors", commit_errs[:3])

    # crash: SIGKILL a writer ~0.5 s into a 2M-row append
    if not skip_crash:
        before = lake.count()
        disk_before = files_on_disk(root)
        lake.close()  # the DuckDB-file catalog admits only one process
        child = subprocess.Popen(
            [sys.executable, __file__, fmt, "--root", str(root), "--role", "crash-writer", "--off", str(off), "--n", "2000000"],
            stdout=subprocess.PIPE, text=True,
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(kill_after)
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
        rec("crash_child_committed_before_kill", "committed" in rest)
        lake = make(fmt, root)
        dt, _ = timed(lake.open)
        rec("crash_reopen_s", round(dt, 3))
        after = lake.count()
        rec("crash_count_unchanged", after == before)
        new_files = files_on_disk(root) - disk_before
        orphans = {f for f in files_on_disk(root) if f.endswith(".parquet")} - lake.referenced_files()
        rec("crash_new_files_on_disk", len(new_files))
        rec("crash_orphan_parquet_files", len(orphans))
        rec("crash_orphan_bytes", sum(os.path.getsize(f) for f in orphans))
        dt, n = timed(lake.cleanup_orphans)
        rec("cleanup_reported", n)
        rec("cleanup_s", round(dt, 3))
        left = {f for f in files_on_disk(root) if f.endswith(".parquet")} - lake.referenced_files()
        rec("orphans_after_cleanup", len(left))
        rec("count_after_cleanup_ok", lake.count() == before)

    rec("disk_mb", round(sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20, 1))
    res["loadavg_end"] = _measure.loadavg()
    print("JSON " + json.dumps(res, default=str))


def install_stats():
    """du of the installed distributions (+ deps) and import time, in the running venv."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    skip = {"pip", "setuptools", "_distutils_hack", "pkg_resources", "__pycache__"}
    total = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    base = sum(f.stat().st_size for d in site.iterdir() if d.name.split("-")[0] in skip
               for f in ([d] if d.is_file() else d.rglob("*")) if f.is_file())
    print(f"site_packages_mb_excl_pip: {(total - base) / 2**20:.1f}")
    snippets = {
        "duckdb": "import duckdb",
        "duckdb+ducklake_load": "import duckdb,glob,duckdb_extension_ducklake as d,os;"
        "c=duckdb.connect();c.execute('LOAD ducklake');c.execute('LOAD sqlite_scanner')",
        "deltalake": "import deltalake",
        "pyiceberg_sql_catalog": "import pyiceberg.catalog.sql, pyiceberg.io.pyarrow",
        "pyarrow": "import pyarrow, pyarrow.dataset",
    }
    for name, code in snippets.items():
        ts = []
        for _ in range(3):
            t = now()
            r = subprocess.run([sys.executable, "-c", code], capture_output=True)
            ts.append(now() - t)
        if r.returncode == 0:
            print(f"import_{name}_s: {statistics.median(ts):.3f} (incl. ~interpreter start)")
    t = now()
    subprocess.run([sys.executable, "-c", "pass"])
    print(f"interpreter_start_s: {now() - t:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("format", choices=FORMATS + ("install-stats",))
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--build-batches", type=int, default=4)
    ap.add_argument("--root")
    ap.add_argument("--skip-isolation", action="store_true")
    ap.add_argument("--skip-crash", action="store_true")
    ap.add_argument("--kill-after", type=float, default=0.5, help="crash test: seconds before SIGKILL")
    ap.add_argument("--sqlite-wal", action="store_true", help="ducklake-sqlite: put the catalog in WAL mode")
    ap.add_argument("--role", choices=("reader", "crash-writer"))
    ap.add_argument("--stop")
    ap.add_argument("--out")
    ap.add_argument("--off", type=int)
    ap.add_argument("--n", type=int)
    a = ap.parse_args()
    if a.format == "install-stats":
        return install_stats()
    if a.sqlite_wal:
        os.environ["SPIKE_SQLITE_WAL"] = "1"  # inherited by the child roles
    root = Path(a.root or f"/tmp/spike/run/{a.format}")
    if a.role == "reader":
        return role_reader(a.format, root, a.stop, a.out)
    if a.role == "crash-writer":
        return role_crash_writer(a.format, root, a.off, a.n)
    run(a.format, a.rows, a.build_batches, root, a.skip_isolation, a.skip_crash, a.kill_after)


if __name__ == "__main__":
    main()
