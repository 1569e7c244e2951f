"""How a refresh scales with the corpus: full refreshes at growing corpus sizes, then at each size an
incremental refresh (1 % of the contexts changed) and an unchanged rerun against the full one.

    .venv/bin/python bench/corpus_scale.py                           # sizes 1000,10000,100000
    .venv/bin/python bench/corpus_scale.py --sizes 1000,10000,20000  # the short fallback on 2 cores

The default is dominated by the full refresh at 100k contexts: its 100,000 model calls alone took
about 7 minutes on a 2-core machine (the previous results file). The second command is the fallback
that finishes far sooner there.

For each size N it generates the corpus (arithmetic worlds, ``generate_corpus``; the time is
reported apart and not counted), then runs the real ``refresh`` flow (``flows.pipeline.refresh``:
ephemeral Prefect, a local Ray, the embedded reference reasoner through litellm, the DuckLake lake,
the incrementally updated DuckDB warehouse, the great-expectations gate on the run's delta) in a
subprocess against a fresh output directory, exactly as a scheduled refresh runs it. Then, on the same
output directory:

- ``incremental``: it rewrites 1 % of the contexts (same ids, new text) and runs ``refresh`` again.
  Ingest reads the JSONL line by line, hashes each line and parses only the lines whose hash is not a
  current context's ``row_hash``; the plan (SQL over the lake) asks for the changed contexts' variants
  only; the publish copies the published warehouse file, applies the run's staged rows to it, gates
  that delta, makes one lake commit and renames the file into place.
- ``unchanged``: it runs ``refresh`` once more on the same corpus, nothing changed: no line is parsed,
  no model is called, and the publish has no new rows to apply (its cost is the run's fixed cost plus
  what still reads the whole corpus or warehouse: hashing every line, the SQL diff, the file copy).

Per run it records the subprocess wall time; the flow's own time (``runs.seconds`` in the
published warehouse: flow start to just before validate-and-publish) and the flow call's total time
(publish included); model calls, variants, diff counts (read back from the ``runs`` row); peak RSS
and PSS of the whole process tree (driver, Prefect server, Ray, actors; sampled as
bench/pipeline_workers.py does) and the driver's own peak RSS (VmHWM); the stages of the flow from the
arrival times of Prefect's INFO log lines; and, inside the tasks, the wall time of the steps the
driver wraps with a timer (read, hash and parse; staging commits; the plan; recover; candidate,
delta, gate, lake commit and checkpoint of the publish).

The report also puts the headline figures of the previous results file (measured on 2026-11-23 with
the Parquet lake, the full warehouse rebuild and the full-snapshot gate) beside this run's, and says
whether the acceptance targets are met, computed from this run's figures: at 100k contexts the 1 %
refresh costs at most 10 % of the full refresh's wall time, and an unchanged rerun at most 60 s.

The grid is kept small so that 100k contexts fit: sleep budgets ``none`` (no call) and ``small``
(48 tokens), one sample: one model call per new or changed context (``--budgets`` changes it).
The YAML each run reads is written by the script: ``workers: 2``, ``shard_size: 500`` (100k
contexts in shards of the default 10 would be 10,000 Prefect tasks), everything else at its
default (response cache on, concurrency 32).

The report is printed and written to bench/results/corpus_scale.md (``--out``). Everything else goes
to a temporary directory, deleted at the end unless ``--keep`` (which also saves results.pkl for
``--render-from``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _measure  # noqa: E402
from pipeline_workers import (  # noqa: E402  (the process-tree sampler and its helpers)
    MIB,
    cpu_between,
    machine_header,
    Measurement,
    read_warehouse,
    run_measured,
    wait_for_idle,
)

DEFAULT_OUT = ROOT / "bench" / "results" / "corpus_scale.md"
SEED = 11
CHANGE_SEED = 1011  # the changed contexts' new text comes from this seed

# The steps the driver times inside the tasks: (owner, attribute, label), in the order of a run. Each is
# patched where its caller looks it up at call time: the module attribute the caller reads (tasks.*
# import these functions into their own namespace, so that is where the patch must go), or the method
# on its class. The report lists the steps in this order.
TIMERS = [
    ("tasks.publish", "recover", "recover (orphans, catch-up)"),
    ("tasks.corpus", "ingest_corpus", "ingest: read, diff, stage"),
    ("sleeptime.pipeline", "scan_project_jsonl", "ingest: read + hash lines, parse changed ones"),
    ("sleeptime.storage.lake:Lake", "stage", "staging commits (ingest + shards)"),
    ("tasks.plan", "pending_sleep_jobs", "plan: pending sleep jobs"),
    ("sleeptime.storage.warehouse:Warehouse", "candidate", "publish: candidate (copy + catch up)"),
    ("sleeptime.storage.warehouse:Candidate", "apply_staged", "publish: apply the delta to the candidate"),
    ("tasks.publish", "derive_policy", "publish: policy fit"),
    ("tasks.publish", "gate_delta", "publish: GX gate on the delta"),
    ("sleeptime.storage.lake:Lake", "publish", "publish: lake commit"),
    ("sleeptime.storage.warehouse:Candidate", "finish", "publish: checkpoint"),
]

# The subprocess: what `sleeptime` would do for a scheduled refresh, minus the console output.
DRIVER = r"""
import functools, importlib, json, sys, threading, time
t0 = time.perf_counter()
import sleeptime  # offline environment defaults first, as the CLI does
from flows.pipeline import RunFailed, refresh
t1 = time.perf_counter()
T, N, LOCK = {}, {}, threading.Lock()
def timed(owner, name, key):  # wall seconds inside one step, summed over calls (shard threads overlap)
    orig = getattr(owner, name)  # AttributeError: the step was renamed, update TIMERS
    @functools.wraps(orig)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            with LOCK:
                T[key] = T.get(key, 0.0) + time.perf_counter() - t
                N[key] = N.get(key, 0) + 1
    setattr(owner, name, wrapper)
for where, name, key in json.loads(sys.argv[2]):  # TIMERS
    module, _, cls = where.partition(":")
    owner = importlib.import_module(module)
    timed(getattr(owner, cls) if cls else owner, name, key)
status = "ok"
try:
    s = refresh(config_path=sys.argv[1])
except RunFailed as exc:
    s, status = exc.summary, f"failed: {exc}"
t2 = time.perf_counter()
from bench._measure import vm_hwm_kib  # the cwd is the repository root
print("BENCH_REFRESH " + json.dumps({
    "status": status, "run_id": s.run_id, "import_s": t1 - t0, "flow_call_s": t2 - t1, "summary_s": s.seconds,
    "calls": s.counters.calls, "variants": s.variants_written, "failures": len(s.failures), "shards": s.shards,
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (this benchmark,
    # which holds the generated corpus), VmHWM belongs to this process image alone.
    "counts": s.diff.counts(), "steps": T, "step_calls": N, "driver_maxrss_kib": vm_hwm_kib(),
}), flush=True)
"""


# --- corpus ----------------------------------------------------------------------------------------


def _generate_chunk(bounds: tuple[int, int, int]) -> list:
    from sleeptime.dataset.worlds import WorldSpec, context_rng, generate_world

    seed, lo, hi = bounds
    spec = WorldSpec()
    return [generate_world(context_rng(seed, i), spec, i, seed=seed) for i in range(lo, hi)]


def generate(n: int, seed: int, procs: int) -> list:
    """``generate_corpus(n, seed)``, the same rows in the same order, on ``procs`` processes (each
    context has its own generator, ``context_rng(seed, index)``, so chunks are independent)."""
    if n <= 2000 or procs <= 1:
        return _generate_chunk((seed, 0, n))
    step = -(-n // (procs * 4))
    chunks = [(seed, lo, min(n, lo + step)) for lo in range(0, n, step)]
    with concurrent.futures.ProcessPoolExecutor(procs) as pool:
        return [row for part in pool.map(_generate_chunk, chunks) for row in part]


def changed_indices(n: int, fraction: float) -> list[int]:
    """``fraction`` of the contexts, spread evenly over the corpus (deterministic)."""
    k = max(1, round(n * fraction))
    return sorted({(i * n) // k + ((n // k) // 2) for i in range(k)})


def rewrite(rows: list, indices: list[int]) -> list:
    """A copy of ``rows`` where each context at ``indices`` has a new story (drawn from another seed;
    same id, new text and queries), as an edited document would."""
    from sleeptime.dataset.worlds import WorldSpec, context_rng, generate_world

    out = list(rows)
    spec = WorldSpec()
    for i in indices:
        new = generate_world(context_rng(CHANGE_SEED, i), spec, i, seed=CHANGE_SEED)
        assert new.context.id == rows[i].context.id and new.context.text != rows[i].context.text
        out[i] = new
    return out


# --- one run ---------------------------------------------------------------------------------------


TASK_DONE = re.compile(r"Task run '([a-z-]+)-[0-9a-f]+' - Finished in state")


@dataclass
class Run:
    size: int
    kind: str  # one of KINDS_RUN: "full", "incremental", "unchanged"
    m: Measurement
    result: dict = field(default_factory=dict)
    warehouse: dict | None = None
    load: str = ""
    changed: int = 0
    workers: int = 0

    @property
    def ok(self) -> bool:
        return self.m.rc == 0 and self.result.get("status") == "ok"

    def spans(self) -> list[tuple[str, float, float]]:
        """(stage, start, end) in seconds since spawn, from the arrival times of Prefect's INFO log lines."""
        marks: dict[str, float] = {}
        last: dict[str, float] = {}
        for t, line in self.m.lines:
            if "Beginning flow run" in line:
                marks.setdefault("flow", t)
            elif "Flow run" in line and "Finished in state" in line:
                marks["flow_done"] = t
            elif hit := TASK_DONE.search(line):
                last[hit.group(1)] = t
        if "flow" not in marks or "flow_done" not in marks:
            return []
        out = [(STARTUP, 0.0, marks["flow"])]
        prev = marks["flow"]
        for label, task in STEPS:
            if task in last:
                out.append((label, prev, last[task]))
                prev = last[task]
        out.append(("flow run finalised", prev, marks["flow_done"]))
        out.append(("exit: Prefect server stop, interpreter exit", marks["flow_done"], self.m.wall_s))
        return out

    def stages(self) -> dict[str, float]:
        return {label: b - a for label, a, b in self.spans()}

    def cpu(self, label: str) -> dict[str, float]:
        """Mean cores per process kind during a stage (pipeline_workers.cpu_between)."""
        span = next(((a, b) for name, a, b in self.spans() if name == label), None)
        return cpu_between(self.m, *span) if span else {}


STARTUP = "start-up: interpreter, imports, Prefect server"
SLEEP = "sleep shards: Ray start, actors, model calls, staging"
STEPS = [("resolve config", "resolve-config"),
         ("recover: orphans, warehouse catch-up", "recover"),
         ("ingest: read + hash lines, parse changed ones, diff, stage", "ingest"),
         ("plan sleep (SQL)", "plan-sleep"), (SLEEP, "sleep-shard"), ("summarize (Ray shutdown before it)", "summarize"),
         ("validate-and-publish: candidate, delta, gate, commit, switch", "validate-and-publish")]

# The runs at each size, in order: a fresh output directory, then on the same one 1 % changed, then
# the same corpus again. SHORT: their names in the column headers of the wide tables.
KINDS_RUN = ("full", "incremental", "unchanged")
SHORT = {"full": "full", "incremental": "incr", "unchanged": "unch"}


def run_refresh(size: int, kind: str, config: Path, out_dir: Path, env: dict[str, str], logs: Path,
                interval: float, echo: bool, max_wait: float, workers: int) -> Run:
    m = Measurement(executor=f"refresh {kind}", workers=None, repeat=1)
    if max_wait > 0:
        m.waited_s = wait_for_idle(max_wait)
    load = _measure.loadavg_text()
    print(f"[{size} {kind}] load {load}: running refresh ...", flush=True)
    cmd = [sys.executable, "-c", DRIVER, str(config), json.dumps(TIMERS)]
    run_measured(cmd, env, ROOT, m, logs / f"{size}-{kind}.log", interval, None, echo)
    r = Run(size, kind, m, load=load, workers=workers)
    for _t, line in m.lines:
        if line.startswith("BENCH_REFRESH "):
            r.result = json.loads(line.split(" ", 1)[1])
    r.warehouse = read_warehouse(out_dir / "warehouse" / "sleeptime.duckdb", r.result.get("run_id"))
    if not r.ok:
        tail = "\n".join(line for _t, line in m.lines[-30:])
        print(f"[{size} {kind}] FAILED (exit {m.rc}, {r.result.get('status')}):\n{tail}", flush=True)
    else:
        print(f"[{size} {kind}] wall {m.wall_s:.1f} s, flow {r.result['summary_s']:.1f} s, "
              f"diff {r.result.get('counts')}, {r.result['calls']} calls, peak RSS {m.peak_rss / MIB:.0f} MiB, other load "
              f"{m.foreign_cores() or 0:.2f} cores", flush=True)
    return r


def write_config(path: Path, corpus: Path, out_dir: Path, args: argparse.Namespace) -> None:
    budgets = {"none": 0, "small": 48, "medium": 160, "large": 512}
    lines = [f"corpus: {json.dumps(str(corpus))}", f"output_dir: {json.dumps(str(out_dir))}",
             f"workers: {args.workers}", f"shard_size: {args.shard_size}", "sleep_budgets:"]
    lines += [f"  - {{name: {b}, max_tokens: {budgets[b]}}}" for b in args.budgets.split(",")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- the report ----------------------------------------------------------------------------------


def _f(v, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def _by(runs: list[Run], n: int, kind: str) -> Run | None:
    return next((r for r in runs if r.size == n and r.kind == kind), None)


def _label(r: Run) -> str:
    return f"{r.size:,} {SHORT.get(r.kind, r.kind)}"


def render(args: argparse.Namespace, runs: list[Run], gen: dict[int, dict], gen_s: float, facts: list[str],
           total_s: float) -> str:
    out = ["# Benchmark: refresh vs corpus size, full, incremental and unchanged", ""]
    out += [f"Produced by `{('.venv/bin/python bench/corpus_scale.py ' + args.command).strip()}`; the script writes "
            "this file, prose included.", ""]
    out += ["## Machine", ""] + facts + [f"- benchmark total: {total_s:.0f} s (corpus generation included)", ""]
    out += ["## Setup", "",
            f"Corpus: arithmetic worlds, `generate_corpus(N, seed={SEED})` (10 labeled queries per context); the "
            f"corpora are generated once for the largest size, on {args.gen_procs} processes, and each size is the "
            "first N contexts (context i depends only on (seed, i), so that is exactly `generate_corpus(N)`). "
            f"Grid: sleep budgets {', '.join(f'`{b}`' for b in args.budgets.split(','))} (`none` makes no call), "
            "one sample, the embedded reference reasoner (`reference/arith`) through litellm. "
            f"Configuration written by the script: `workers: {args.workers}`, `shard_size: {args.shard_size}`, the "
            "rest at its defaults (concurrency 32, response cache on). Storage: the DuckLake lake (SQLite catalog, "
            "Parquet data files; one commit per publish), the DuckDB warehouse updated from the run's delta, the "
            "great-expectations gate on that delta.", "",
            "The runs at each size: `full` starts from an empty output directory; `incremental` reuses that "
            f"directory after rewriting {args.changed:.0%} of the contexts (same ids; a new story drawn from seed "
            f"{CHANGE_SEED}, so new text and new queries), spread evenly over the corpus; `unchanged` reruns the "
            "same corpus on the same directory once more, nothing changed (no line parsed, no model call, no row "
            "to publish but the run's own).", "",
            "`wall s`: the subprocess, start to exit (interpreter, imports, ephemeral Prefect server, the flow, "
            "teardown). `flow s`: the run's own time as the warehouse records it (`runs.seconds`: flow start to just "
            "before validate-and-publish). `flow+publish s`: the `refresh()` call in the driver (the flow, publish "
            "included). Peak RSS / PSS: the maximum over time of the sum over the process tree (driver, Prefect "
            "server, Ray's processes and actors), sampled every "
            f"{args.interval} s (PSS every 1 s; RSS counts shared pages once per process, PSS splits them); driver "
            "RSS is the driver's own peak (`VmHWM`). `other load`: mean cores that processes outside the run "
            "used meanwhile (other sessions on a shared machine, the OS).", ""]

    top = max(gen) if gen else 0
    out += ["## Corpus generation (not counted in the runs)", "",
            f"Generating {top:,} contexts took {gen_s:.1f} s on {args.gen_procs} processes "
            f"({1000 * gen_s * args.gen_procs / max(1, top):.2f} ms of one core per context).", "",
            "| contexts | write JSONL s | corpus MB |", "|---:|---:|---:|"]
    for n, g in sorted(gen.items()):
        out.append(f"| {n:,} | {g['write_s']:.2f} | {g['mb']:.1f} |")
    out.append("")

    out += ["## Full refresh", "",
            "| contexts | wall s | flow s | flow+publish s | model calls | variants | shards | peak RSS MiB | "
            "peak PSS MiB | driver RSS MiB | wall ms/context | flow ms/context | other load | load avg |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in (r for r in runs if r.kind == "full"):
        out.append(_row(r, r.size))
    out.append("")
    out += [f"## Full, incremental ({args.changed:.0%} of the contexts changed) and unchanged rerun", "",
            "`diff`: what ingest found (new / changed / unchanged / removed contexts), from the run's summary. "
            "`/ full`: the run's time over the full refresh's at the same size.", "",
            "| contexts | changed | run | diff n/c/u/r | wall s | flow s | flow+publish s | model calls | "
            "peak RSS MiB | driver RSS MiB | wall ms per changed context | / full wall | / full flow |",
            "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sorted({r.size for r in runs}):
        full = _by(runs, n, "full")
        for r in (_by(runs, n, k) for k in KINDS_RUN):
            if r is None:
                continue
            res = r.result
            changed = {"full": n, "incremental": r.changed, "unchanged": 0}.get(r.kind, r.changed)
            counts = res.get("counts") or {}
            diff = "/".join(str(counts.get(k, "–")) for k in ("new", "changed", "unchanged", "removed"))
            both = r is not full and full is not None and r.ok and full.ok
            ratio_w = f"{r.m.wall_s / full.m.wall_s:.2f}" if both else ""
            ratio_f = f"{res['summary_s'] / full.result['summary_s']:.2f}" if both else ""
            out.append(
                f"| {n:,} | {changed:,} | {r.kind}{'' if r.ok else ' (FAILED)'} | {diff} | {r.m.wall_s:.1f} | "
                f"{_f(res.get('summary_s'))} | {_f(res.get('flow_call_s'))} | {res.get('calls', '–')} | "
                f"{r.m.peak_rss / MIB:.0f} | {_f(res.get('driver_maxrss_kib', 0) / 1024, '.0f')} | "
                f"{_f(1000 * r.m.wall_s / changed if changed else None)} | {ratio_w} | {ratio_f} |")
    out.append("")
    out += before_after(runs, args)

    out += ["## Where the time goes", "",
            "Seconds per stage, from the arrival times of the Prefect INFO log lines that end each task (the "
            "sleep-shard stage ends with the last shard; a run with nothing to compute has no sleep-shard task, "
            "so its plan-to-summarize gap shows under summarize).", ""]
    ok = [r for r in runs if r.stages()]
    if ok:
        names: list[str] = []
        for r in ok:
            for k in r.stages():
                if k not in names:
                    names.append(k)
        out += ["| stage | " + " | ".join(_label(r) for r in ok) + " |",
                "|---|" + "---:|" * len(ok)]
        for k in names:
            out.append(f"| {k} | " + " | ".join(_f(r.stages().get(k)) for r in ok) + " |")
        out.append("| **wall** | " + " | ".join(f"**{r.m.wall_s:.1f}**" for r in ok) + " |")
        out.append("")
        steps: list[str] = []
        for r in ok:
            for k in r.result.get("steps", {}):
                if k not in steps:
                    steps.append(k)
        if steps:
            out += ["Inside the driver's tasks: wall seconds spent in each step, summed over its calls (the "
                    "benchmark's driver wraps these functions with a timer; everything else runs as in production). "
                    "Steps nest: `ingest: read, diff, stage` includes the line scan and the ingest's staging "
                    "commits; `staging commits` sums the ingest's and every shard's (shards run on threads, so their "
                    "sum can exceed the stage's elapsed time); a recover that catches the warehouse up would also "
                    "count a candidate and a checkpoint. `–`: the step did not run (an unchanged rerun fits no "
                    "policy).", "",
                    "| step | " + " | ".join(_label(r) for r in ok) + " |",
                    "|---|" + "---:|" * len(ok)]
            order = [key for _w, _n, key in TIMERS]
            for k in sorted(steps, key=lambda k: (order.index(k) if k in order else len(order), k)):
                out.append(f"| {k} | " + " | ".join(_f(r.result.get("steps", {}).get(k)) for r in ok) + " |")
            out.append("")
    if ok:
        out += ["CPU by process kind. `CPU s`: CPU seconds over the whole run (`driver`: the flow's process: "
                "Prefect task threads, ingest, plan, ray.get, staging, publish and the GX gate; `ray workers`: the "
                "ModelWorker actors, where the model calls run, and idle prestarted workers; `ray system`: gcs, raylet "
                "and helpers). The sleep stage's columns: its calls per second and the mean cores each kind used "
                "during it (`outside`: processes outside the run; `–`: no sleep stage).", "",
                "| run | driver CPU s | prefect server CPU s | ray system CPU s | ray workers CPU s | sleep stage s | "
                "calls/s in it | driver cores | ray workers cores | ray system cores | outside cores |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ok:
            tot = r.m.cpu_total()
            c = r.cpu(SLEEP)
            sleep_s = r.stages().get(SLEEP)
            calls = r.result.get("calls") or 0
            out.append(f"| {r.size:,} {r.kind} | {tot.get('driver', 0):.1f} | {tot.get('prefect server', 0):.1f} | "
                       f"{tot.get('ray system', 0):.1f} | {tot.get('ray workers', 0):.1f} | {_f(sleep_s)} | "
                       f"{_f(calls / sleep_s if sleep_s else None, '.0f')} | "
                       + " | ".join(_f(c.get(k), '.2f') for k in ("driver", "ray workers", "ray system", "outside this run"))
                       + " |")
        out.append("")
    out += analysis(runs)
    out += [STATIC_NOTES]
    return "\n".join(out) + "\n"


# --- before and after: the previous results file, and the acceptance targets ------------------------

# Headline figures of the previous bench/results/corpus_scale.md (git 8acc55d, measured 2026-11-23
# 15:56 UTC on 2 cores (AMD EPYC), 23.5 GiB): the Parquet lake, the warehouse rebuilt from the whole
# lake at every publish, the GX gate over the whole published snapshot. Constants, copied from that file.
BEFORE_DATE = "2026-11-23"
BEFORE_MACHINE = "2 cores (AMD EPYC), 23.5 GiB"
BEFORE = {  # contexts -> wall s, flow s (full and 1 % incremental), GX gate s (full, incremental)
    1_000: {"full": 45.3, "incremental": 42.6, "full_flow": 16.1, "incremental_flow": 11.5,
            "gate_full": 7.3, "gate_incremental": 8.0},
    10_000: {"full": 102.9, "incremental": 64.5, "full_flow": 52.8, "incremental_flow": 15.5,
             "gate_full": 26.2, "gate_incremental": 27.0},
    100_000: {"full": 706.0, "incremental": 386.4, "full_flow": 453.7, "incremental_flow": 66.8,
              "gate_full": 224.0, "gate_incremental": 279.8},
}
BEFORE_OTHER_LOAD = 0.22  # the highest `other load` of its full refreshes (100,000)
BEFORE_INCREMENTAL_OUTSIDE = 1.10  # `outside cores` in the sleep stage of its 100,000 incremental refresh
TARGET_SIZE = 100_000
TARGET_INCREMENTAL_RATIO = 0.10  # the 1 %-changed refresh's wall time over the full refresh's
TARGET_UNCHANGED_S = 60.0  # an unchanged rerun's wall time
GATE = "publish: GX gate on the delta"


def acceptance(runs: list[Run], changed: float) -> list[tuple[str, str, str]]:
    """(target, this run's figure, verdict) for each acceptance target, computed from the runs."""
    n = TARGET_SIZE
    full, inc, same = (_by(runs, n, k) for k in KINDS_RUN)
    rows = []
    target = f"at {n:,} contexts, 1%-changed refresh wall <= {TARGET_INCREMENTAL_RATIO:.0%} of the full refresh's"
    if abs(changed - 0.01) > 1e-9:
        rows.append((target, "–", f"not measured: this run changed {changed:.1%} of the contexts, not 1%"))
    elif full is None or inc is None:
        rows.append((target, "–", f"not measured: this run has no full and incremental refresh at {n:,} contexts"))
    elif not (full.ok and inc.ok):
        rows.append((target, "–", "not met: a run failed"))
    else:
        ratio = inc.m.wall_s / full.m.wall_s
        rows.append((target, f"{inc.m.wall_s:.1f} s / {full.m.wall_s:.1f} s = {ratio:.3f}",
                     "**met**" if ratio <= TARGET_INCREMENTAL_RATIO else "**not met**"))
    target = f"at {n:,} contexts, unchanged rerun wall <= {TARGET_UNCHANGED_S:.0f} s"
    if same is None:
        rows.append((target, "–", f"not measured: this run has no unchanged rerun at {n:,} contexts"))
    elif not same.ok:
        rows.append((target, "–", "not met: the run failed"))
    else:
        rows.append((target, f"{same.m.wall_s:.1f} s",
                     "**met**" if same.m.wall_s <= TARGET_UNCHANGED_S else "**not met**"))
    return rows


def before_after(runs: list[Run], args: argparse.Namespace) -> list[str]:
    out = ["## Before and after", "",
           f"`before`: the previous results file (bench/results/corpus_scale.md as committed in 8acc55d, measured "
           f"{BEFORE_DATE} on {BEFORE_MACHINE}, same corpus, grid and configuration): the Parquet lake, the "
           "warehouse rebuilt from the whole lake at every publish, the GX gate over the whole published snapshot; "
           "no unchanged rerun was measured then. `after`: this run. Compare them as they stand only where the "
           "machine section above shows the same kind of machine and `other load` is low in both. Before, other "
           f"processes used at most {BEFORE_OTHER_LOAD} cores over a full refresh, but {BEFORE_INCREMENTAL_OUTSIDE:.2f} "
           "cores during the sleep stage of the 100,000 incremental refresh (that file's CPU table).", "",
           f"| contexts | full wall s before | after | incremental wall s before (1%) | after ({args.changed:.0%}) | "
           "incremental / full before | after | unchanged wall s after | GX gate s before (full, incr) | "
           "after, on the delta (full, incr, unch) |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n in sorted(set(BEFORE) | {r.size for r in runs}):
        b = BEFORE.get(n)
        full, inc, same = (_by(runs, n, k) for k in KINDS_RUN)

        def wall(r: Run | None) -> str:
            return "–" if r is None else f"{r.m.wall_s:.1f}" + ("" if r.ok else " (FAILED)")

        def gate(r: Run | None) -> str:
            return _f(r.result.get("steps", {}).get(GATE)) if r is not None else "–"

        ratio = f"{inc.m.wall_s / full.m.wall_s:.2f}" if full and inc and full.ok and inc.ok else "–"
        out.append(
            f"| {n:,} | {_f(b and b['full'])} | {wall(full)} | {_f(b and b['incremental'])} | {wall(inc)} | "
            f"{_f(b and b['incremental'] / b['full'], '.2f')} | {ratio} | {wall(same)} | "
            f"{(_f(b['gate_full']) + ', ' + _f(b['gate_incremental'])) if b else '–'} | "
            f"{', '.join(gate(r) for r in (full, inc, same))} |")
    loaded = [(r, r.m.foreign_cores()) for r in runs if (r.m.foreign_cores() or 0) > 0.25]
    if loaded:
        r, c = max(loaded, key=lambda rc: rc[1])
        out += ["", f"After, other processes used more than a quarter of a core during {len(loaded)} of this run's "
                    f"{len(runs)} runs (up to {c:.2f} cores, during the {r.size:,} {r.kind} run): those figures "
                    "include that contention."]
    out += ["", "Acceptance targets, computed from this run's figures:", "",
            "| target | this run | verdict |", "|---|---|---|"]
    out += [f"| {t} | {fig} | {v} |" for t, fig, v in acceptance(runs, args.changed)]
    out.append("")
    return out


STATIC_NOTES = """## What grew with the corpus before, and what changed

Items 1 to 4 were measured apart from the benchmark runs on 2026-11-23 (in-process, on the same 2-core
machine as the previous results file), on the storage of that time: the Parquet lake, the warehouse
rebuilt from the whole lake at every publish, the GX gate over the whole published snapshot. What each
is now is read from the code; the tables above measure it.

**1. The great-expectations gate (then: the variants suite over every current row).** At 100k contexts
the gate alone took 269 s of wall time (191 s CPU) on the published 100k snapshot, 250 s of it in the
variants suite, because of two expectations whose arguments are as large as the corpus:
`ExpectColumnValuesToBeInSet(context_hash, value_set=<every current content_hash>)` and
`ExpectColumnPairValuesToBeInSet(context_id, context_hash, value_pairs_set=<every current pair>)`, which
GX 1.24 serialises again and again while it plans and runs a suite (pydantic v1 `.dict()` from
`_get_runtime_kwargs`, `_get_success_kwargs`, `get_validation_dependencies`) and whose pandas pair
check walks the frame with `iterrows`: about 2.5 ms of CPU per context. **Now** the publish gate checks
only the run's delta (`sleeptime.quality.snapshot.gate_delta`): the column expectations run on the rows
the run adds, and the cross-table rules (answers reference a variant and a query, rows reference a
known context version, nothing stale, every current context covered, one variant per slot) are SQL
anti-join counts on the candidate warehouse that GX asserts are zero; the corpus-sized value sets are
not in it. They remain in the full re-validation (`gate_full`: `sleeptime validate --full`, the weekly
deployment), which this benchmark does not run.

**2. Prefect walked the whole corpus for every task that received it (fixed then: `tasks/corpus.py`).**
Prefect visits every dataclass, pydantic model, list and dict in a task's parameters twice. `Ingested`
is a plain class, which Prefect passes as it is (at 10k contexts, plan-sleep went from 13.4 s to 0.4 s
and summarize from 15.3 s to 1.3 s). The shard tasks' job lists are still walked (about 2.2 s of CPU
per 10,000 jobs, spread over the shards); wrapping them in `prefect.utilities.annotations.quote` where
the flow submits them would remove that.

**3. Ingest (then: load, validate and JSON-encode the whole corpus every run).** At 100k contexts the
whole-corpus load took 13.5 s of CPU and the staging 9.9 s after the fixes of that day. **Now**
(`sleeptime.pipeline.ingest_corpus`) a project JSONL corpus is read line by line, each line is hashed
(sha256) and only the lines whose hash is not a current context's `row_hash` are parsed; the diff, the
new-query check and the quarantine check are DuckDB joins over Arrow columns, and the staged rows go
to the lake's staging schema in one commit per table. An unchanged rerun parses no line.

**4. The model calls.** One sleep call with the embedded reasoner costs about 5 ms of CPU in an actor, of
which the reasoner itself (parsing, arithmetic, token counting) is about 1.2 ms; the rest is litellm's
per-call path (its own cost calculation and zero-cost diagnostic for a model missing from its price map,
the standard logging payload, a thread hop for the custom provider, logging-object setup). With two
actors on two cores that bounds the sleep stage to a few hundred calls per second whatever the corpus.

**5. What an incremental or unchanged refresh still pays in proportion to the corpus** (from the code;
the step table above times each): hashing every line of the corpus; the SQL diff against the lake's
current contexts (a window over every context version, published and staged); the plan's SQL over
contexts and variants; the publish's copy of the published warehouse file (as large as the warehouse)
and the checkpoint of the candidate; the delta gate's coverage rule, an SQL join over every current
context and variant of the candidate. Plus the fixed costs of a run: interpreter and imports, the
ephemeral Prefect server, Ray and actor start-up when there is anything to compute, teardown.
"""


def _row(r: Run, n: int) -> str:
    res = r.result
    return (f"| {n:,}{'' if r.ok else ' (FAILED)'} | {r.m.wall_s:.1f} | {_f(res.get('summary_s'))} | "
            f"{_f(res.get('flow_call_s'))} | {res.get('calls', '–')} | {res.get('variants', '–')} | "
            f"{res.get('shards', '–')} | {r.m.peak_rss / MIB:.0f} | {r.m.peak_pss / MIB:.0f} | "
            f"{_f(res.get('driver_maxrss_kib', 0) / 1024, '.0f')} | {1000 * r.m.wall_s / n:.2f} | "
            f"{_f(1000 * res['summary_s'] / n if res.get('summary_s') else None, '.2f')} | "
            f"{_f(r.m.foreign_cores(), '.2f')} | {r.load} |")


def args_workers(r: Run) -> str:
    return str(r.workers) if r.workers else "the"


def analysis(runs: list[Run]) -> list[str]:
    """The figures read out in words (computed, so they cannot drift from the tables)."""
    full = sorted((r for r in runs if r.kind == "full" and r.ok), key=lambda r: r.size)
    parts: list[str] = []
    if len(full) >= 2:
        a, b = full[0], full[-1]
        grow = b.size / a.size
        parts.append(
            f"From {a.size:,} to {b.size:,} contexts ({grow:.0f}x) the full refresh's wall time grew "
            f"{b.m.wall_s / a.m.wall_s:.1f}x and its flow time {b.result['summary_s'] / a.result['summary_s']:.1f}x; "
            f"per context, wall time went from {1000 * a.m.wall_s / a.size:.2f} to {1000 * b.m.wall_s / b.size:.2f} ms "
            f"(fixed costs amortized) and the peak memory of the process tree from {a.m.peak_rss / MIB:.0f} to "
            f"{b.m.peak_rss / MIB:.0f} MiB RSS (driver alone: {a.result['driver_maxrss_kib'] / 1024:.0f} to "
            f"{b.result['driver_maxrss_kib'] / 1024:.0f} MiB).")
        # Marginal cost between the two largest sizes: the slope once fixed costs are out.
        c, d = full[-2], full[-1]
        slope = (d.m.wall_s - c.m.wall_s) / (d.size - c.size)
        if slope > 0:
            parts.append(f"The marginal cost between {c.size:,} and {d.size:,} contexts is {1000 * slope:.2f} ms of "
                         "wall time per context.")
        else:
            parts.append(f"The wall time did not grow from {c.size:,} to {d.size:,} contexts: at these sizes the "
                         "fixed costs of a run, and the load of other processes, outweigh the per-context cost.")
        stages = {r.size: r.stages() for r in full}
        for name in list(stages[d.size]):
            lo, hi = stages[c.size].get(name), stages[d.size].get(name)
            if lo and hi and lo > 0.5 and hi / lo > 1.3 * (d.size / c.size):
                parts.append(f"Super-linear: '{name}' took {lo:.1f} s at {c.size:,} and {hi:.1f} s at {d.size:,} "
                             f"({hi / lo:.1f}x for {d.size / c.size:.0f}x the contexts).")
        gate = d.result.get("steps", {}).get(GATE)
        sleep_s = d.stages().get(SLEEP)
        if gate is not None and sleep_s:
            parts.append(f"At {d.size:,} contexts the full run spent {sleep_s:.0f} s in the sleep stage "
                         f"({d.result['calls'] / sleep_s:.0f} model calls/s on {args_workers(d)} actors) and "
                         f"{gate:.1f} s in the great-expectations gate on its delta ({gate / d.m.wall_s:.0%} of the "
                         f"wall time, {1000 * gate / d.size:.2f} ms per context).")
    for n in sorted({r.size for r in runs}):
        f, i, u = (next((r for r in runs if r.size == n and r.kind == k and r.ok), None) for k in KINDS_RUN)
        if f and i:
            parts.append(
                f"At {n:,} contexts the incremental refresh ({i.changed:,} changed, {i.result['calls']:,} calls) took "
                f"{i.m.wall_s:.0f} s against {f.m.wall_s:.0f} s for the full one ({i.m.wall_s / f.m.wall_s:.0%}); "
                f"its flow time was {i.result['summary_s']:.1f} s against {f.result['summary_s']:.1f} s.")
        if f and u:
            parts.append(
                f"The unchanged rerun ({u.result['calls']:,} calls) took {u.m.wall_s:.0f} s "
                f"({u.m.wall_s / f.m.wall_s:.0%} of the full one), {u.stages().get(STARTUP, 0):.0f} s of it in "
                f"start-up; its flow time was {u.result['summary_s']:.1f} s.")
    busy = [(r, r.m.foreign_cores()) for r in runs]
    busy = [(r, c) for r, c in busy if c is not None and c > 0.25]
    if busy:
        worst = max(busy, key=lambda rc: rc[1])
        parts.append(f"Processes outside the benchmark used more than a quarter of a core during {len(busy)} of the "
                     f"{len(runs)} runs (up to {worst[1]:.2f} cores, during the {worst[0].size:,} {worst[0].kind} "
                     "run; `other load` above): those runs' times include that contention.")
    if not parts:
        return []
    return ["## Reading the figures", "", " ".join(parts), ""]


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000,100000", help="comma-separated corpus sizes (default 1000,10000,100000)")
    p.add_argument("--changed", type=float, default=0.01, help="fraction of contexts changed for the incremental run")
    p.add_argument("--budgets", default="none,small", help="sleep budgets (from none,small,medium,large; default none,small)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    p.add_argument("--shard-size", type=int, default=500, help="contexts per Prefect shard task (default 500)")
    p.add_argument("--no-incremental", action="store_true", help="only the full refreshes")
    p.add_argument("--no-unchanged", action="store_true", help="no unchanged rerun after the incremental refresh")
    p.add_argument("--gen-procs", type=int, default=os.cpu_count() or 1, help="processes generating the corpus")
    p.add_argument("--max-wait", type=float, default=20.0, help="seconds to wait for an idle machine before each run")
    p.add_argument("--interval", type=float, default=0.2, help="sampling interval in seconds (default 0.2)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report (default bench/results/corpus_scale.md)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (corpora, outputs, logs)")
    p.add_argument("--echo", action="store_true", help="echo the runs' output")
    p.add_argument("--render-from", type=Path, default=None,
                   help="re-render the report from the results.pkl a --keep run left (no runs)")
    args = p.parse_args(argv)
    if args.render_from:
        saved = pickle.loads(args.render_from.read_bytes())
        report = render(saved["args"], saved["runs"], saved["gen"], saved["gen_s"], saved["facts"], saved["total_s"])
        print(report)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
        print(f"wrote {args.out}")
        return 0
    args.command = shlex.join(sys.argv[1:] if argv is None else argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    started = time.monotonic()
    facts = machine_header()
    tmp = Path(tempfile.mkdtemp(prefix="corpus-scale-"))
    logs = tmp / "logs"
    logs.mkdir()
    runs: list[Run] = []
    gen: dict[int, dict] = {}
    try:
        from sleeptime.dataset import write_project_jsonl

        t = time.perf_counter()
        rows = generate(max(sizes), SEED, args.gen_procs)
        gen_s = time.perf_counter() - t
        print(f"generated {len(rows):,} contexts in {gen_s:.1f} s", flush=True)

        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "RAY_ADDRESS")}
        env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "200", "NO_COLOR": "1", "PREFECT_LOGGING_LEVEL": "INFO",
                    "PREFECT_HOME": str(tmp / "prefect-home"), "RAY_TMPDIR": str(tmp / "ray"),
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DO_NOT_TRACK": "1"})
        (tmp / "ray").mkdir()
        # A first-ever run migrates PREFECT_HOME's database; done once here, untimed.
        subprocess.run([str(Path(sys.executable).parent / "prefect"), "server", "database", "upgrade", "-y"],
                       env=env, cwd=tmp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        for n in sizes:
            work = tmp / f"n{n}"
            work.mkdir()
            corpus, out_dir, config = work / "corpus.jsonl", work / "out", work / "refresh.yaml"
            t = time.perf_counter()
            write_project_jsonl(rows[:n], corpus)
            gen[n] = {"write_s": time.perf_counter() - t, "mb": corpus.stat().st_size / 1e6}
            write_config(config, corpus, out_dir, args)
            full = run_refresh(n, "full", config, out_dir, env, logs, args.interval, args.echo, args.max_wait,
                               args.workers)
            runs.append(full)
            if args.no_incremental or not full.ok:
                continue
            idx = changed_indices(n, args.changed)
            write_project_jsonl(rewrite(rows[:n], idx), corpus)
            inc = run_refresh(n, "incremental", config, out_dir, env, logs, args.interval, args.echo,
                              args.max_wait, args.workers)
            inc.changed = len(idx)
            runs.append(inc)
            if not args.no_unchanged and inc.ok:
                # The same corpus file again, nothing touched: every line hashes to a current row_hash.
                runs.append(run_refresh(n, "unchanged", config, out_dir, env, logs, args.interval, args.echo,
                                        args.max_wait, args.workers))
            if not args.keep:
                shutil.rmtree(out_dir, ignore_errors=True)
        total_s = time.monotonic() - started
        if args.keep:
            (tmp / "results.pkl").write_bytes(pickle.dumps(
                {"args": args, "runs": runs, "gen": gen, "gen_s": gen_s, "facts": facts, "total_s": total_s}))
        report = render(args, runs, gen, gen_s, facts, total_s)
        print(report)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
        print(f"wrote {args.out}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
