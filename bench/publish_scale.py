"""Publishing a small run into a large lake: the incremental publish, the full rebuild, and the views.

    nice -n 5 .venv/bin/python bench/publish_scale.py [--variants 1000000] [--answers 10000000]
                        [--query-log 100000] [--out DIR] [--results PATH] [--max-wait SECONDS]
    .venv/bin/python bench/publish_scale.py --small        # 20k variants, 200k answers: a quick check

The default size takes about 5 minutes on a quiet 2-core machine and needs about 3 GiB of disk
and 5 GiB of memory (the generation). On a shared machine ``--max-wait S`` waits up to S seconds
before each step for other processes to use less than 0.3 cores.

What it measures, each heavy step in a fresh subprocess (so its peak RSS is its own), with
``/proc/loadavg`` read before each:

1. setup (not a product cost): the rows of bench/warehouse_scale.py (its ``shape``,
   ``generate_sql`` and ``phase_generate``, imported, not copied) generated into a temporary
   DuckDB file, then loaded into a fresh DuckLake lake (``Lake(<out>/lake)``) in one commit:
   ``INSERT INTO lake.main.<t> SELECT <the columns of SCHEMAS[t]>``. Lake size on disk.
2. rebuild: ``Warehouse(<out>/warehouse/sleeptime.duckdb).rebuild(lake)``, the full build from the
   lake (what every publish used to do; now ``sleeptime warehouse rebuild`` only).
3. publish: 10,000 new answers (copies of rows of ``answers_current`` with new answer ids and a new
   run id, so they reference existing current variants and queries) staged in
   ``lake.staging.answers`` (in a process of its own, not timed as the publish), then
   ``sleeptime.pipeline.publish`` with the delta gate
   (``gate_delta``), as ``tasks/publish.py`` calls it, once without the policy fit (``derive=None``)
   and once more, with another 10,000 answers, with it (``derive_policy``). The call is timed
   whole and in parts by wrapping ``Warehouse.candidate``, ``Candidate.apply_staged``, the gate,
   ``Lake.publish``, ``Candidate.finish`` and ``Warehouse.publish``. Meanwhile a separate reader
   process opens the published file read-only in a loop (``connect_read_only``) and records every
   answer count it saw and every error.
4. views: on the published warehouse, every view of ``duckdb_views()``: ``SELECT count(*)`` and
   ``SELECT * ... LIMIT 1000`` fetched with ``.fetchall()``, each the median of 3 runs after a
   warm-up; also ``answers_current`` fetched whole and ``v_pass_at_k`` as migration 002 defined
   it, to compare with bench/results/warehouse_scale.md.

Acceptance targets: the publish of 10k answers at most 15 s end to end (gate + lake commit +
warehouse update + readers switched); every view under 1 s for both queries; the reader sees only
the before and after counts and no error.

Prints a markdown report and writes it to bench/results/publish_scale.md (``--results``; the small
mode writes it under ``--out`` instead). The generated files stay under ``--out`` (default
out/bench/publish_scale, removed at the start of the next run) with a results.json that
``--render-from`` renders again without running anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DO_NOT_TRACK", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _measure  # noqa: E402
from bench import warehouse_scale as ws  # noqa: E402  (the generator and the machine helpers)

DEFAULT_OUT = ROOT / "out" / "bench" / "publish_scale"
DEFAULT_RESULTS = ROOT / "bench" / "results" / "publish_scale.md"
MIB = 1024 * 1024
SMALL = {"variants": 20_000, "answers": 200_000, "query_log": 2_000}

NEW_ANSWERS = 10_000  # per publish
READER_PAUSE_S = 0.05  # between two opens of the reader
TARGET_PUBLISH_S = 15.0
TARGET_VIEW_S = 1.0
# The publishes: (run id, prefix of the new answer ids, with the policy fit, which answers).
# "contexts": the answers of whole contexts (ordered by context), as a run adds them: a changed
# context gets all its queries answered at every option (about 25 contexts here). "scattered":
# answers spread over most contexts (ordered by answer id): the worst case for the per-context
# summaries, which then recompute about half of the contexts.
PUBLISHES = {1: ("r29990101T000000000000", "a_n", False, "contexts"), 2: ("r29990102T000000000000", "a_m", True, "contexts"),
             3: ("r29990103T000000000000", "a_o", True, "scattered")}
ORDER = {"contexts": "context_id, answer_id", "scattered": "answer_id"}
# bench/results/warehouse_scale.md (2026-11-23, the old rebuild-per-publish warehouse, same data
# shape): per view, count(*) s and the whole view fetched as Arrow s.
PREVIOUS_DATE = "2026-11-23"
PREVIOUS = {
    "answers_current": (0.489, 2.392), "contexts_current": (0.042, 0.175), "failures_open": (0.226, 0.301),
    "queries_current": (0.131, 0.443), "v_accuracy_by_budget": (0.701, 0.600), "v_cost_per_query": (0.681, 1.469),
    "v_pass_at_k": (2.124, 2.209), "v_policy_choices": (0.007, 0.008), "v_policy_current": (0.009, 0.046),
    "v_run_history": (0.003, 0.005), "v_service_amortization": (0.021, 0.289), "v_service_choices": (0.007, 0.007),
    "v_service_traffic": (0.015, 0.025), "v_variant_catalog": (0.228, 0.791), "variants_current": (0.225, 1.022),
}
PREVIOUS_FIT_S = 15.3  # the policy fit at 10M answers, same file
PREVIOUS_ANSWERS = 10_000_000


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _paths(args) -> dict[str, Path]:
    out = Path(args.out).resolve()
    return {"out": out, "generated": out / "generated.duckdb", "lake": out / "lake",
            "warehouse": out / "warehouse" / "sleeptime.duckdb"}


def bench_config(out: Path):
    """A RunConfig matching the generator: its variant slots and its five test budgets."""
    from sleeptime.config import DEFAULT_SLEEP_BUDGETS, DEFAULT_TEST_BUDGETS, RunConfig

    samples = {b: sum(1 for name, _, _ in ws.VARIANT_SLOTS if name == b) for b, _, _ in ws.VARIANT_SLOTS}
    caps = {b: cap for b, _, cap in ws.VARIANT_SLOTS}
    sleep = [b.model_copy(update={"samples": samples.get(b.name, 1)}) for b in DEFAULT_SLEEP_BUDGETS]
    assert all(caps[b.name] == b.max_tokens for b in sleep if not b.is_none), "sleep caps differ from the generator's"
    # The generator's test-time completion tokens are at most 1.3 x its mean per budget.
    test = list(DEFAULT_TEST_BUDGETS)
    assert [t.name for t in test] == [n for n, _, _ in ws.TEST_BUDGETS], "test budgets differ from the generator's"
    assert all(1.3 * tok <= t.max_tokens for t, (_, _, tok) in zip(test, ws.TEST_BUDGETS)), "test caps too small"
    return RunConfig(sleep_budgets=sleep, test_budgets=test, output_dir=out, pass_at_k=ws.PASS_AT_K)


# --- phases (each runs in its own subprocess) ---------------------------------------------------------


def phase_generate(args) -> dict:
    """warehouse_scale's generator into a temporary DuckDB file (the source the lake is loaded from)."""
    result = ws.phase_generate(argparse.Namespace(
        variants=args.variants, answers=args.answers, query_log=args.query_log, db=str(_paths(args)["generated"])))
    result["bytes"] = _paths(args)["generated"].stat().st_size
    result["peak_rss_mib"] = _measure.peak_rss_mib()
    return result


def phase_load(args) -> dict:
    """Every generated table into a fresh DuckLake lake, in one commit."""
    from sleeptime.storage.lake import ALIAS, MAIN, Lake, sql_type
    from sleeptime.storage.records import SCHEMAS

    p = _paths(args)
    lake = Lake(p["lake"])
    t0 = time.perf_counter()
    with lake.cursor() as cur:
        cur.execute(f"ATTACH '{p['generated']}' AS gen (READ_ONLY)")
        selects = {}
        for table, schema in SCHEMAS.items():
            have = {r[0] for r in cur.execute(f"DESCRIBE gen.{table}").fetchall()}
            selects[table] = ", ".join(
                f.name if f.name in have else f"CAST(NULL AS {sql_type(f.type)}) AS {f.name}" for f in schema)
    steps = {}
    with lake.transaction("bench: load the generated rows", {"kind": "bench-load"}) as cur:
        for table, schema in SCHEMAS.items():
            t = time.perf_counter()
            cur.execute(f"INSERT INTO {ALIAS}.{MAIN}.{table} ({', '.join(schema.names)}) "
                        f"SELECT {selects[table]} FROM gen.{table}")
            steps[table] = time.perf_counter() - t
    seconds = time.perf_counter() - t0
    with lake.cursor() as cur:
        cur.execute("DETACH gen")
        counts = {t: cur.execute(f"SELECT count(*) FROM {ALIAS}.{MAIN}.{t}").fetchone()[0] for t in SCHEMAS}
    files = list((p["lake"] / "data").rglob("*.parquet"))
    return {"seconds": seconds, "steps": steps, "counts": counts, "snapshot": lake.snapshot_id(),
            "lake_bytes": _du(p["lake"]), "data_files": len(files), "data_bytes": sum(f.stat().st_size for f in files),
            "catalog_bytes": sum(f.stat().st_size for f in p["lake"].glob("catalog.sqlite*")),
            "peak_rss_mib": _measure.peak_rss_mib()}


def phase_rebuild(args) -> dict:
    from sleeptime.storage.lake import Lake
    from sleeptime.storage.warehouse import Warehouse, connect_read_only

    p = _paths(args)
    wh = Warehouse(p["warehouse"])
    t0 = time.perf_counter()
    wh.rebuild(Lake(p["lake"]))
    seconds = time.perf_counter() - t0
    rss = _measure.peak_rss_mib()
    con = connect_read_only(p["warehouse"])
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("contexts", "queries", "variants", "answers", "query_log", "runs")}
    lake_snapshot = con.execute("SELECT lake_snapshot FROM build_info").fetchone()[0]
    con.close()
    return {"seconds": seconds, "bytes": p["warehouse"].stat().st_size, "counts": counts,
            "lake_snapshot": lake_snapshot, "peak_rss_mib": rss}


class Clock:
    """Seconds per label, accumulated by wrapping functions in place (the wrappers stay for the process)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, attr, timed)

    def timed(self, label: str, fn):
        def inner(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t
                self.calls[label] = self.calls.get(label, 0) + 1
        return inner


# The parts of pipeline.publish, in the order it calls them; their sum is the call less "other".
PARTS = ("candidate", "apply_staged", "derive", "gate", "lake_publish", "finish", "switch")
SUBPARTS = ("candidate.copy", "candidate.catch_up", "apply_staged.summaries", "gate.import_gx", "gate.reference_checks", "gate.gx_validate",
            "other.as_arrow", "other.apply")


def phase_stage(args) -> dict:
    """The run's rows: 10k current answers (none an earlier publish of this benchmark added) with new
    answer ids and the run's id, staged in lake.staging.answers as a finished shard would be."""
    from sleeptime.storage.lake import Lake
    from sleeptime.storage.warehouse import Warehouse

    p = _paths(args)
    n = int(args.publish)
    run_id, prefix, _, shape = PUBLISHES[n]
    offset = sum(1 for m, pub in PUBLISHES.items() if m < n and pub[3] == shape) * NEW_ANSWERS
    with Warehouse(p["warehouse"]).read() as con:
        rows = con.execute(
            f"SELECT * REPLACE ('{prefix}' || substr(answer_id, 4) AS answer_id, '{run_id}' AS run_id) "
            f"FROM answers_current WHERE run_id NOT LIKE 'r2999%' ORDER BY {ORDER[shape]} LIMIT ? OFFSET ?",
            [NEW_ANSWERS, offset],
        ).to_arrow_table()
    assert len(set(rows["answer_id"].to_pylist())) == NEW_ANSWERS, "new answer ids collide"
    t = time.perf_counter()
    staged = Lake(p["lake"]).stage("answers", rows)
    return {"seconds": time.perf_counter() - t, "staged": staged, "peak_rss_mib": _measure.peak_rss_mib(),
            "contexts": len(set(rows["context_id"].to_pylist()))}


def phase_publish(args) -> dict:
    """pipeline.publish of the staged rows with the delta gate, timed in parts, a reader process watching."""
    import shutil as shutil_mod

    import sleeptime.pipeline as pipeline_mod
    import sleeptime.quality.gate as gate_mod
    import sleeptime.quality.snapshot as snapshot_mod
    from sleeptime.pipeline import RunSummary, publish
    from sleeptime.policy.store import derive_policy
    from sleeptime.storage.lake import ALIAS, MAIN, STAGING, Lake
    from sleeptime.storage.warehouse import Candidate, Warehouse

    p = _paths(args)
    n = int(args.publish)
    run_id, prefix, with_derive, shape = PUBLISHES[n]
    config = bench_config(p["out"])
    # A run imports great-expectations on a thread while its model stage runs (tasks/publish.py
    # warm_up_gate), so its publish finds it loaded; this process has no model stage, so it waits
    # for the same import here, outside the publish's clock, and reports it.
    t = time.perf_counter()
    gate_mod.preload().join()
    gx_preload_s = time.perf_counter() - t
    lake, wh = Lake(p["lake"]), Warehouse(p["warehouse"])
    with wh.read() as con:
        before = con.execute("SELECT count(*) FROM answers").fetchone()[0]
    with lake.cursor() as cur:
        staged = cur.execute(f"SELECT count(*) FROM {ALIAS}.{STAGING}.answers").fetchone()[0]

    clock = Clock()
    clock.wrap(Warehouse, "candidate", "candidate")
    clock.wrap(shutil_mod, "copyfile", "candidate.copy")
    clock.wrap(Candidate, "catch_up", "candidate.catch_up")
    clock.wrap(Candidate, "apply_staged", "apply_staged")
    clock.wrap(Candidate, "refresh_summaries", "apply_staged.summaries")
    clock.wrap(Lake, "publish", "lake_publish")
    clock.wrap(Candidate, "finish", "finish")
    clock.wrap(Warehouse, "publish", "switch")
    clock.wrap(gate_mod, "_import_gx", "gate.import_gx")
    clock.wrap(snapshot_mod, "reference_checks", "gate.reference_checks")
    clock.wrap(snapshot_mod, "validate_delta", "gate.gx_validate")
    clock.wrap(Candidate, "apply", "apply.all")  # every upsert into the candidate, nested ones included
    clock.wrap(pipeline_mod, "as_arrow", "other.as_arrow")
    gate = clock.timed("gate", lambda candidate: snapshot_mod.gate_delta(candidate, config, run_id))
    derive = clock.timed("derive", lambda con: derive_policy(con, config.policy_settings, run_id)) if with_derive else None
    summary = RunSummary(run_id=run_id, corpus="bench/publish_scale", started_at=dt.datetime.now(dt.timezone.utc),
                         answers_written=staged)

    reader = Reader(p["out"] / f"reader-{n}", p["warehouse"])
    reader.start()
    t0 = time.perf_counter()
    outcome = publish(lake, wh, summary, gate=gate, derive=derive, spool=None)
    seconds = time.perf_counter() - t0
    rss = _measure.peak_rss_mib()
    time.sleep(1.0)  # the reader goes on a little after the switch
    seen = reader.stop()

    with wh.read() as con:
        after = con.execute("SELECT count(*) FROM answers").fetchone()[0]
        wh_snapshot = con.execute("SELECT lake_snapshot FROM build_info").fetchone()[0]
        policies = con.execute("SELECT count(*) FROM v_policy_current").fetchone()[0]
    with lake.cursor() as cur:
        lake_answers = cur.execute(f"SELECT count(*) FROM {ALIAS}.{MAIN}.answers").fetchone()[0]
        still_staged = cur.execute(f"SELECT count(*) FROM {ALIAS}.{STAGING}.answers").fetchone()[0]
    parts = {k: clock.seconds.get(k, 0.0) for k in PARTS}
    subparts = {k: clock.seconds.get(k, 0.0) for k in SUBPARTS}
    # Candidate.apply outside apply_staged and the catch-up: the derived rows and the run's row.
    # (apply_staged and catch_up also recompute the summaries, which are not upserts.)
    subparts["other.apply"] = (clock.seconds.get("apply.all", 0.0) - parts["apply_staged"]
                               - subparts["candidate.catch_up"] + subparts["apply_staged.summaries"])
    subparts["other.as_arrow"] = clock.seconds.get("other.as_arrow", 0.0)
    return {
        "n": n, "run_id": run_id, "with_derive": with_derive, "shape": shape, "gx_preload_s": gx_preload_s,
        "published": outcome.published,
        "reason": outcome.reason[:2000], "seconds": seconds, "staged": staged,
        "parts": parts, "other_s": seconds - sum(parts.values()), "subparts": subparts,
        "rows_applied": outcome.rows_applied, "lake_snapshot": outcome.lake_snapshot,
        "warehouse_lake_snapshot": wh_snapshot, "answers_before": before, "answers_after": after,
        "lake_answers": lake_answers, "still_staged": still_staged, "policy_rows": policies,
        "derived_policy_rows": (outcome.rows_applied or {}).get("policies", 0),
        "reader": seen, "peak_rss_mib": rss,
    }


class Reader:
    """A separate process that reads the published warehouse in a loop until told to stop."""

    def __init__(self, folder: Path, warehouse: Path):
        self.folder, self.warehouse = folder, warehouse
        folder.mkdir(parents=True, exist_ok=True)
        self.ready, self.stop_file = folder / "ready", folder / "stop"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--phase", "reader", "--db", str(self.warehouse), "--reader-dir", str(self.folder)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT)
        deadline = time.monotonic() + 120
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the reader process did not start")
            time.sleep(0.05)

    def stop(self) -> dict:
        self.stop_file.touch()
        out, _ = self.proc.communicate(timeout=120)
        return json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT "):])


def phase_reader(args) -> dict:
    """Open the published file read-only, count its answers, close; again after READER_PAUSE_S."""
    from sleeptime.storage.warehouse import connect_read_only

    folder = Path(args.reader_dir)
    reads, errors, counts, latencies = 0, [], [], []
    t0 = time.perf_counter()
    while not (folder / "stop").exists():
        t = time.perf_counter()
        try:
            con = connect_read_only(args.db)
            try:
                row = con.execute("SELECT (SELECT count(*) FROM answers), (SELECT lake_snapshot FROM build_info)").fetchone()
            finally:
                con.close()
            latencies.append(time.perf_counter() - t)
            if not counts or counts[-1][1:] != list(row):
                counts.append([round(t - t0, 3), *row])  # every change of what the reader saw
        except Exception as exc:  # noqa: BLE001 (recorded: the check is that there are none)
            errors.append(f"{t - t0:.3f}s {type(exc).__name__}: {exc}"[:300])
        reads += 1
        if reads == 1:
            (folder / "ready").touch()
        time.sleep(READER_PAUSE_S)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"reads": reads, "errors": errors[:10], "error_count": len(errors), "changes": counts,
            "seconds": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime,
            "open_s_median": statistics.median(latencies) if latencies else None,
            "open_s_max": max(latencies) if latencies else None}


def _view_sql(migration: Path, view: str) -> str | None:
    """The SELECT of ``CREATE VIEW <view> AS ...;`` in a migration file (None if it is not there)."""
    import re

    m = re.search(rf"CREATE (?:OR REPLACE )?VIEW {view} AS\n(.*?);\s*$", migration.read_text(encoding="utf-8"), re.S | re.M)
    return m.group(1) if m else None


def phase_views(args) -> dict:
    """count(*) and LIMIT 1000 of every view on the published file: median of 3 after a warm-up."""
    from sleeptime.storage.warehouse import connect_read_only

    def median3(fn):
        result = fn()  # the warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times), times, result

    con = connect_read_only(_paths(args)["warehouse"])
    con.execute("SET enable_progress_bar = false")  # no bar drawn on stderr; timings unchanged
    views = [r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND database_name = current_database() "
        "ORDER BY view_name").fetchall()]
    out = []
    for view in views:
        count_s, count_runs, rows = median3(lambda: con.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0])
        limit_s, limit_runs, got = median3(lambda: con.execute(f"SELECT * FROM {view} LIMIT 1000").fetchall())
        out.append({"view": view, "rows": rows, "count_s": count_s, "count_runs": count_runs,
                    "limit_s": limit_s, "limit_runs": limit_runs, "limit_rows": len(got)})
        print(f"  {view}: {rows:,} rows, count {count_s:.3f} s, limit 1000 {limit_s:.3f} s", file=sys.stderr, flush=True)
    # v_pass_at_k as migration 002 defined it (before 005 rewrote it), on the same file.
    old = _view_sql(ROOT / "warehouse" / "migrations" / "002_views.sql", "v_pass_at_k")
    pass_at_k_002 = None
    if old:
        count_s, _, rows = median3(lambda: con.execute(f"SELECT count(*) FROM ({old})").fetchall()[0][0])
        limit_s, _, _ = median3(lambda: con.execute(f"SELECT * FROM ({old}) LIMIT 1000").fetchall())
        pass_at_k_002 = {"rows": rows, "count_s": count_s, "limit_s": limit_s}
    # Like for like with the previous figure: answers_current fetched whole as Arrow.
    whole_s, whole_runs, table = median3(lambda: con.execute("SELECT * FROM answers_current").to_arrow_table())
    whole = {"view": "answers_current", "seconds": whole_s, "runs": whole_runs, "rows": table.num_rows,
             "mib": table.nbytes / MIB}
    del table
    con.close()
    return {"views": out, "answers_current_whole": whole, "pass_at_k_002": pass_at_k_002, "peak_rss_mib": _measure.peak_rss_mib(),
            "seconds": sum(v["count_s"] + v["limit_s"] for v in out)}


PHASES = {"generate": phase_generate, "load": phase_load, "rebuild": phase_rebuild, "stage": phase_stage,
          "publish": phase_publish,
          "reader": phase_reader, "views": phase_views}


# --- the driver -------------------------------------------------------------------------------------


def run_phase(name: str, args, extra: tuple[str, ...] = ()) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--out", str(args.out), "--variants", str(args.variants),
           "--answers", str(args.answers), "--query-log", str(args.query_log), *extra]
    if args.max_wait:
        t = time.perf_counter()
        ws.wait_quiet(args.max_wait)
        args.waited += time.perf_counter() - t
    load = _measure.loadavg_text()
    busy, own, t = _measure.machine_busy_s(), _measure.children_cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    cpu = _measure.children_cpu_s() - own
    other = max(0.0, ((_measure.machine_busy_s() - busy) - cpu) / wall)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:])
        raise SystemExit(f"phase {name} failed with exit code {proc.returncode}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    result.update(wall_s=wall, cpu_s=cpu, other_load=other, loadavg_before=load)
    print(f"{name} {' '.join(extra)}: {result['seconds']:.1f} s ({wall:.1f} s wall, loadavg before {load}, "
          f"{other:.2f} other cores meanwhile)", file=sys.stderr, flush=True)
    if name == "publish":
        print("  parts " + json.dumps({k: round(v, 2) for k, v in {**result["parts"], **result["subparts"]}.items()})
              + f"; reader saw {result['reader']['changes']}, {result['reader']['error_count']} errors",
              file=sys.stderr, flush=True)
    return result


def run_all(args) -> dict:
    p = _paths(args)
    if p["out"].exists():
        shutil.rmtree(p["out"])
    p["out"].mkdir(parents=True)
    res = {"machine": ws._machine(), "loadavg_start": _measure.loadavg_text(),
           "command": " ".join(["nice -n 5" if os.nice(0) >= 5 else "", ".venv/bin/python", "bench/publish_scale.py",
                                *sys.argv[1:]]).strip(),
           "shape": ws.shape(args.variants, args.answers, args.query_log)}
    t0 = time.perf_counter()
    args.waited = 0.0
    res["generate"] = run_phase("generate", args)
    res["load"] = run_phase("load", args)
    p["generated"].unlink()  # only the lake is read from here on
    res["rebuild"] = run_phase("rebuild", args)
    res["publish"] = []
    for n in PUBLISHES:
        stage = run_phase("stage", args, ("--publish", str(n)))
        res["publish"].append({**run_phase("publish", args, ("--publish", str(n))), "stage": stage})
    for pub in res["publish"]:
        if not pub["published"]:
            (p["out"] / "results.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
            raise SystemExit(f"publish {pub['n']} was refused:\n{pub['reason']}")
    res["views"] = run_phase("views", args)
    res["total_s"] = time.perf_counter() - t0
    res["waited_s"] = args.waited
    res["warehouse_bytes"] = p["warehouse"].stat().st_size
    res["lake_bytes_end"] = _du(p["lake"])
    (p["out"] / "results.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    print(f"results kept in {p['out'] / 'results.json'} (--render-from renders them again)", file=sys.stderr)
    return res


# --- the report -------------------------------------------------------------------------------------


def _s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _row(step: str, r: dict, notes: str) -> str:
    return (f"| {step} | {r['seconds']:.1f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:,.0f} | "
            f"{r['loadavg_before']} | {r['other_load']:.2f} | {notes} |")


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


PART_NAMES = {
    "candidate": "`Warehouse.candidate`: copy the published file + catch up with the lake",
    "apply_staged": "`Candidate.apply_staged`: upsert the staged rows into the candidate",
    "derive": "`derive_policy` on the candidate (the policy fit)",
    "gate": "`gate_delta`: delta frames + SQL reference checks + GX",
    "lake_publish": "`Lake.publish`: the one DuckLake commit",
    "finish": "`Candidate.finish`: build_info, DETACH, CHECKPOINT, close",
    "switch": "`Warehouse.publish`: the atomic rename",
}
SUBPART_NAMES = {
    "candidate.copy": "of candidate: the file copy",
    "candidate.catch_up": "of candidate: catch-up from the change feed",
    "apply_staged.summaries": "of apply_staged: recomputing the per-context summaries of the touched contexts",
    "gate.import_gx": "of gate: importing great_expectations (preloaded before the clock: see Findings)",
    "gate.reference_checks": "of gate: the SQL reference checks",
    "gate.gx_validate": "of gate: GX validation + Data Docs (the import included)",
    "other.as_arrow": "of other: the derived rows and the run's row made Arrow (`as_arrow`)",
    "other.apply": "of other: the derived rows and the run's row applied to the candidate",
}


def _reader_line(pub: dict) -> tuple[str, bool]:
    r = pub["reader"]
    before, after = pub["answers_before"], pub["answers_after"]
    seen = [c[1] for c in r["changes"]]
    ok = r["error_count"] == 0 and seen == [before, after]
    text = (f"publish {pub['n']}: {r['reads']:,} opens in {r['seconds']:.1f} s ({r['cpu_s']:.1f} CPU s), "
            f"{r['error_count']} errors; answer counts seen, in order: "
            + " → ".join(f"{c[1]:,} (lake snapshot {c[2]}, from {c[0]:.2f} s)" for c in r["changes"])
            + f"; expected {before:,} then {after:,}"
            + (f"; open + count median {r['open_s_median'] * 1000:.1f} ms, max {r['open_s_max'] * 1000:.1f} ms"
               if r["open_s_median"] is not None else "")
            + (f"; errors: {'; '.join(r['errors'])}" if r["errors"] else ""))
    return text, ok


def findings(res: dict) -> list[str]:
    gen, load, rebuild, views = res["generate"], res["load"], res["rebuild"], res["views"]
    p1, p2, p3 = res["publish"]
    out = []
    total1 = p1["seconds"]
    parts1 = sorted(p1["parts"].items(), key=lambda kv: -kv[1])
    out.append(
        f"**Publish of {p1['staged']:,} answers ({p1['stage']['contexts']:,} contexts) without the policy fit: "
        f"{total1:.1f} s end to end (target ≤ {TARGET_PUBLISH_S:g} s: {_met(total1 <= TARGET_PUBLISH_S)}).** Largest parts: "
        + ", ".join(f"{k} {v:.1f} s ({v / total1:.0%})" for k, v in parts1[:3])
        + f". The switch itself (the rename that readers see) took {p1['parts']['switch'] * 1000:.1f} ms. "
        f"The full rebuild from the lake took {rebuild['seconds']:.1f} s and {rebuild['peak_rss_mib']:,.0f} MiB "
        f"(publish / rebuild: {total1 / rebuild['seconds']:.2f}); the publish peaked at {p1['peak_rss_mib']:,.0f} MiB.")
    out.append(
        f"**The gate** took {p1['parts']['gate']:.1f} s in publish 1: the SQL reference checks "
        f"{p1['subparts']['gate.reference_checks']:.1f} s, GX {p1['subparts']['gate.gx_validate']:.1f} s, the rest "
        f"({p1['parts']['gate'] - p1['subparts']['gate.reference_checks'] - p1['subparts']['gate.gx_validate']:.1f} s) "
        f"reading the staged rows into the gate's delta frames. Importing great_expectations is not in it: a run "
        f"starts that import on a thread when its model stage starts (`warm_up_gate`), so the publish finds it "
        f"loaded; each publish process here waited for the same import before its clock started: "
        + ", ".join(f"{p['gx_preload_s']:.1f} s" for p in res["publish"]) + ".")
    total2, derive2 = p2["seconds"], p2["parts"]["derive"]
    rows2 = p2["subparts"]["other.as_arrow"] + p2["subparts"]["other.apply"]
    out.append(
        f"**Publish of {p2['staged']:,} answers ({p2['stage']['contexts']:,} contexts) with the policy fit: "
        f"{total2:.1f} s (target ≤ {TARGET_PUBLISH_S:g} s: {_met(total2 <= TARGET_PUBLISH_S)})**, of which "
        f"`derive_policy` {derive2:.1f} s ({PREVIOUS_FIT_S} s at 10M answers when it read the answers themselves) and "
        f"its {p2['derived_policy_rows']:,} policy rows made Arrow and applied to the candidate {rows2:.1f} s. Every run "
        "that changes answers refits, so this is the figure a normal run pays.")
    total3 = p3["seconds"]
    out.append(
        f"**The worst case for the summaries: {p3['staged']:,} answers scattered over {p3['stage']['contexts']:,} "
        f"contexts, with the fit: {total3:.1f} s ({_met(total3 <= TARGET_PUBLISH_S)})**; recomputing the touched "
        f"contexts' summaries took {p3['subparts']['apply_staged.summaries']:.1f} s (publish 2: "
        f"{p2['subparts']['apply_staged.summaries']:.1f} s for {p2['stage']['contexts']:,} contexts).")
    ok = [_reader_line(p)[1] for p in res["publish"]]
    out.append(f"**Readers during the publishes: {_met(all(ok))}** (only the before and after counts, no error): "
               + "; ".join(f"publish {p['n']}: {p['reader']['reads']:,} opens, {p['reader']['error_count']} errors, "
                           f"counts seen {' → '.join(f'{c[1]:,}' for c in p['reader']['changes'])}"
                           for p in res["publish"]) + " (details above).")
    vs = views["views"]
    slow = [v for v in vs if v["count_s"] >= TARGET_VIEW_S or v["limit_s"] >= TARGET_VIEW_S]
    worst_c = max(vs, key=lambda v: v["count_s"])
    worst_l = max(vs, key=lambda v: v["limit_s"])
    out.append(
        f"**Views: every view under {TARGET_VIEW_S:g} s for both queries: {_met(not slow)}**"
        + (f" (over it: {', '.join(v['view'] for v in slow)})" if slow else "")
        + f". Slowest count(*): {worst_c['view']} {worst_c['count_s']:.3f} s; slowest LIMIT 1000: "
        f"{worst_l['view']} {worst_l['limit_s']:.3f} s.")
    pak = next((v for v in vs if v["view"] == "v_pass_at_k"), None)
    old = views.get("pass_at_k_002")
    whole = views["answers_current_whole"]
    if pak and res["shape"]["answers"] != PREVIOUS_ANSWERS:
        out.append(f"**Against {PREVIOUS_DATE}:** not compared: those figures are for {PREVIOUS_ANSWERS:,} answers, "
                   f"this run has {res['shape']['answers']:,}.")
    elif pak:
        out.append(
            f"**Against {PREVIOUS_DATE}:** v_pass_at_k count(*) {pak['count_s']:.3f} s (was {PREVIOUS['v_pass_at_k'][0]} s; "
            f"migration 007 reads it from the per-context summaries), its rows (LIMIT 1000, all {pak['rows']} of them) {pak['limit_s']:.3f} s (the "
            f"whole view fetched was {PREVIOUS['v_pass_at_k'][1]} s)"
            + (f"; the 002 definition on this file: count {old['count_s']:.3f} s, rows {old['limit_s']:.3f} s, so the "
               f"rewrite is {'faster' if pak['limit_s'] < old['limit_s'] else 'slower'} for the rows a dashboard reads"
               if old else "")
            + f"; answers_current fetched whole as Arrow {whole['seconds']:.3f} s for "
            f"{whole['rows']:,} rows (was {PREVIOUS['answers_current'][1]} s; this is moving "
            f"{whole['mib']:,.0f} MiB, not a dashboard query), its LIMIT 1000 "
            f"{next(v for v in vs if v['view'] == 'answers_current')['limit_s']:.3f} s.")
    out.append(
        f"**Sizes:** lake {load['lake_bytes'] / MIB:,.0f} MiB after the load ({load['data_files']:,} Parquet files, "
        f"catalog {load['catalog_bytes'] / MIB:,.1f} MiB), {res['lake_bytes_end'] / MIB:,.0f} MiB after the publishes; "
        f"warehouse file {rebuild['bytes'] / MIB:,.0f} MiB after the rebuild, {res['warehouse_bytes'] / MIB:,.0f} MiB "
        f"after the publishes; the generated source file {gen['bytes'] / MIB:,.0f} MiB (setup only, deleted).")
    return out


def render(res: dict) -> str:
    s, gen, load, rebuild, views = res["shape"], res["generate"], res["load"], res["rebuild"], res["views"]
    c = load["counts"]
    lines = [
        "# Publish at scale: incremental publish, full rebuild, views",
        "",
        f"Produced by `{res['command']}` (the script writes this file; the *Findings* are computed from the figures "
        "below, the *Notes* are written after reading them).",
        "",
        "## Machine",
        "",
        *res["machine"],
        f"- benchmark total: {res['total_s']:.0f} s (wall, setup included"
        + (f"; of which {res['waited_s']:.0f} s waiting for other load to settle, `--max-wait`)" if res.get("waited_s")
           else ")"),
        "",
        "## Data",
        "",
        f"bench/warehouse_scale.py's generator (SQL, no model): {s['contexts']:,} contexts x {ws.VERSIONS} versions "
        f"(half of every table is history, 1% of the contexts removed), {ws.QUERIES} queries per context version, "
        f"5 variants per context version (small 1, medium 2, large 2 samples), answers on the full grid "
        f"({ws.ANSWERS_PER_QUERY} per query) for {s['evaluated']:,} evaluated contexts, both versions. Loaded into a "
        f"DuckLake lake (SQLite catalog) in one commit; `contexts.row_hash` is NULL.",
        "",
        "| table | rows in the lake |",
        "|---|---:|",
        *[f"| {t} | {n:,} |" for t, n in c.items()],
        "",
        "## Steps",
        "",
        "Each step ran in its own subprocess. `seconds` is the step itself; `wall` the subprocess (imports "
        "included); `CPU` its user + system time; peak RSS its `ru_maxrss`; `loadavg` is `/proc/loadavg` just before "
        "the step; `other` the mean number of cores other processes used meanwhile (a shared machine).",
        "",
        "| step | seconds | wall s | CPU s | peak RSS MiB | loadavg before | other cores | notes |",
        "|---|---:|---:|---:|---:|---|---:|---|",
        _row("setup: generate (warehouse_scale's SQL into a temporary DuckDB file)", gen,
             f"not a product cost; answers {gen['steps'].get('answers', 0):.1f} s; file {gen['bytes'] / MIB:,.0f} MiB"),
        _row("setup: load every table into a fresh DuckLake lake, one commit", load,
             f"not a product cost; answers {load['steps']['answers']:.1f} s, variants {load['steps']['variants']:.1f} s, "
             f"queries {load['steps']['queries']:.1f} s; lake {load['lake_bytes'] / MIB:,.0f} MiB on disk"),
        _row("rebuild: `Warehouse.rebuild(lake)` (full build)", rebuild,
             f"file {rebuild['bytes'] / MIB:,.0f} MiB; {rebuild['counts']['answers']:,} answers"),
    ]
    for pub in res["publish"]:
        lines.append(_row(
            f"publish {pub['n']}: `pipeline.publish`, {pub['staged']:,} answers of {pub['stage']['contexts']:,} contexts, "
            + ("with the policy fit" if pub["with_derive"] else "`derive=None`"), pub,
            f"staged before, in another process: {pub['stage']['seconds']:.2f} s (not in the figure); "
            f"lake snapshot {pub['lake_snapshot']}; "
            f"answers {pub['answers_before']:,} → {pub['answers_after']:,}; rows applied {pub['rows_applied']}"))
    lines += [
        _row("views: count(*) and LIMIT 1000 of every view", views,
             "seconds: the sum of the medians; wall includes the warm-ups, the 3 runs each and a whole fetch of "
             "answers_current"),
        "",
        "## Publish, in parts",
        "",
        "The call `sleeptime.pipeline.publish(lake, warehouse, summary, gate, derive, spool=None)` timed whole and by "
        "wrapping the functions it calls; `other` is the call less its parts (the derived rows and the run's "
        "row applied to the candidate, the summary).",
        "",
        "| part | " + " | ".join(f"publish {p['n']} s" for p in res["publish"]) + " |",
        "|---|" + "---:|" * len(res["publish"]),
        *[f"| {PART_NAMES[k]} | " + " | ".join(f"{p['parts'][k]:.2f}" for p in res["publish"]) + " |" for k in PARTS],
        "| other | " + " | ".join(f"{p['other_s']:.2f}" for p in res["publish"]) + " |",
        "| **total** | " + " | ".join(f"**{p['seconds']:.2f}**" for p in res["publish"]) + " |",
        *[f"| *{SUBPART_NAMES[k]}* | " + " | ".join(f"*{p['subparts'][k]:.2f}*" for p in res["publish"]) + " |"
          for k in SUBPARTS],
        "",
        "## Reader during the publishes",
        "",
        "A separate process: `connect_read_only(path)`, `SELECT count(*) FROM answers` and the build's lake snapshot, "
        f"close; again {READER_PAUSE_S * 1000:.0f} ms later; from before the publish until 1 s after it returned. It "
        "shares the machine with the publish (its CPU seconds are given).",
        "",
        *[f"- {_reader_line(p)[0]}" for p in res["publish"]],
        "",
        "## Views",
        "",
        "A read-only connection (`connect_read_only`) on the published file after both publishes. `count` is "
        "`SELECT count(*) FROM view`, `limit` is `SELECT * FROM view LIMIT 1000` fetched with `.fetchall()`; each the "
        f"median of 3 runs after a warm-up. `previous` are the figures of bench/results/warehouse_scale.md "
        f"({PREVIOUS_DATE}, same data shape, the old rebuilt warehouse): count(*) and the *whole view* fetched as "
        "Arrow (not LIMIT 1000; comparable only for views of at most 1000 rows).",
        "",
        "| view | rows | count s | limit 1000 s | previous count s | previous fetch-all s |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {v['view']} | {v['rows']:,} | {_s(v['count_s'])} | {_s(v['limit_s'])} | "
          f"{PREVIOUS.get(v['view'], ('', ''))[0]} | {PREVIOUS.get(v['view'], ('', ''))[1]} |" for v in views["views"]],
        "",
        f"Like for like with the previous fetch-all figure: `SELECT * FROM answers_current` fetched whole as Arrow, "
        f"{views['answers_current_whole']['rows']:,} rows, {views['answers_current_whole']['mib']:,.0f} MiB: "
        f"{_s(views['answers_current_whole']['seconds'])} s (median of 3; was {PREVIOUS['answers_current'][1]} s).",
        *([] if not views.get("pass_at_k_002") else [
            "",
            f"`v_pass_at_k` as migration 002 defined it (a join of every raw answer with every k; 007 reads the "
            f"per-context summaries instead), on the same file and connection: count {_s(views['pass_at_k_002']['count_s'])} s, "
            f"LIMIT 1000 {_s(views['pass_at_k_002']['limit_s'])} s ({views['pass_at_k_002']['rows']} rows)."]),
        "",
        "## Findings",
        "",
        *[f"{f}\n" for f in findings(res)],
    ]
    if NOTES.strip():
        lines += ["## Notes", "", NOTES.strip(), ""]
    return "\n".join(lines)


NOTES = """
**The machine.** Quiet for this run (`other cores` at most 0.02 in every step), the product code of the commit
that adds these results. The same benchmark an hour earlier, before the last four changes (catch-up skipped
when only staging commits happened, the fit's rows without a Policy round trip, one scoped scan for the
summaries, the upsert without a dedup window), gave 11.8 / 19.4 / 25.7 s for the three publishes. The margin
under 15 s for publish 2 is small (0.5 s): a busy core takes it away, as every figure here on this machine.

**What changed since the last results (2026-12-02 02:47 UTC: 13.4 s without the fit, 33.4 s with it, views up to
6.4 s).** (1) great-expectations is imported on a thread while the model stage runs (`warm_up_gate`): 4.9-5.6
s per process, now outside the publish. (2) The warehouse keeps per-context summaries (migration 007,
`sleeptime/storage/summaries.py`), recomputed for the contexts a publish touches: 0.5-0.6 s for 25 contexts.
The aggregate views read them (v_pass_at_k 6.4 s -> 0.01 s), and so does the policy fit: `derive_policy` 16.2 s
-> 4.4 s. (3) The policy rows are applied without the dedup window when their keys are unique (2.5 s -> 0.2 s
into a table that has versions; the first version into an empty table still took 2.1-2.4 s here, `other`).
(4) The catch-up is skipped with one `snapshots()` query when only staging commits happened (0.55 s -> 0.01 s).

**Publish 3, the worst case: not met.** Answers spread over 6,818 of the 12,500 evaluated contexts make the
summaries recompute more than half of the answers (8.2 s). A real run adds answers per changed context (all
its queries at every option), which is publish 1 and 2's shape; a scattered delta comes from a config change
that adds an option to every context, a run that is large in model calls anyway. An additive update of the
summaries for inserts would remove most of it; not done.

**Where a publish without the fit goes now:** the gate 3.5-4.4 s (SQL reference checks 1.2-1.5 s, GX
validation and Data Docs 1.8-2.4 s), `finish` (the candidate's CHECKPOINT) 0.1-1.7 s, the file copy 0.5 s, the
lake commit 1.0-1.2 s, the rename 0.6-0.9 s (dropping the last link to the old 1 GiB file frees its blocks
inside the call when no reader holds it open; 0.0 s in publish 3, where the reader did).

**Setup.** bench/warehouse_scale.py's generator writes `contexts.row_hash` (NULL) again, so the generator runs
on the current migrations; the workaround this benchmark had is gone.
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", type=int, default=1_000_000)
    p.add_argument("--answers", type=int, default=10_000_000)
    p.add_argument("--query-log", type=int, default=100_000)
    p.add_argument("--small", action="store_true",
                   help=f"a quick validation: {SMALL['variants']:,} variants, {SMALL['answers']:,} answers, "
                        f"{SMALL['query_log']:,} query-log rows; the report goes under --out")
    p.add_argument("--out", type=Path, default=None, help=f"work folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--results", type=Path, default=None, help=f"report path (default {DEFAULT_RESULTS.relative_to(ROOT)})")
    p.add_argument("--no-write-results", action="store_true")
    p.add_argument("--max-wait", type=float, default=0.0,
                   help="before each step, wait up to this many seconds for other load to fall below 0.3 cores")
    p.add_argument("--render-from", type=Path, help="render the report again from a results.json, run nothing")
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--publish", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--reader-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.small:
        args.variants, args.answers, args.query_log = SMALL["variants"], SMALL["answers"], SMALL["query_log"]
    if args.out is None:
        args.out = DEFAULT_OUT.with_name(DEFAULT_OUT.name + "_small") if args.small else DEFAULT_OUT
    if args.results is None:
        args.results = Path(args.out) / "publish_scale.md" if args.small else DEFAULT_RESULTS

    if args.phase:
        print("RESULT " + json.dumps(PHASES[args.phase](args), default=str), flush=True)
        return
    res = json.loads(args.render_from.read_text(encoding="utf-8")) if args.render_from else run_all(args)
    report = render(res)
    print(report)
    if not args.no_write_results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(report, encoding="utf-8")
        print(f"wrote {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
