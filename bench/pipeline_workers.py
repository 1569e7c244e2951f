"""How the orchestrated main job scales with the number of Ray workers on this machine.

    .venv/bin/python bench/pipeline_workers.py [--contexts 50] [--workers 1,2] [--repeats 1]
    .venv/bin/python bench/pipeline_workers.py --ray-address auto      # join `ray start --head`

For each workers value W it runs ``sleeptime run --config CFG`` in a subprocess, against a fresh
output directory (so every run does all the work: sleep time, test time, GX gate, publish), and
measures what a user pays: interpreter and imports, the ephemeral Prefect server, Ray start,
actor start-up, the model calls, the quality gate and the publish. As a baseline it runs the same
grid with the in-process executor (``sleeptime.job.run_local``: no Prefect, no Ray), also in a
subprocess. Per run it records:

* wall time of the subprocess;
* peak RSS (every 0.2 s) and PSS (every 1 s) of the whole process tree, read with psutil and summed
  over the subprocess, its descendants (Prefect server, Ray's gcs/raylet/workers) and any process
  that inherited this run's marker environment variable (so daemons that re-parent still count);
  with ``--ray-address``, also the joined cluster's processes, found by its GCS port;
* CPU seconds per kind of process (driver, Prefect server, Ray system processes, Ray workers) and
  per actor, and the CPU that processes outside the run used meanwhile (other work on the machine);
* the run summary's model calls and "time X s", cross-checked against the ``runs`` row of the
  published warehouse (opened read-only);
* the stages of the run, from the arrival times of Prefect's INFO log lines (the CLI is run with
  PREFECT_LOGGING_LEVEL=INFO, about 40 extra log lines a run; ``--quiet-logs`` turns that off and
  with it the stage breakdown).

The markdown report is printed and written to bench/results/pipeline_workers.md (``--out``).
Only files under a temporary directory are created besides that report (``--keep`` keeps it, with
a results.pkl that ``--render-from`` turns into the report again without rerunning anything).

On a shared machine: ``--max-wait S`` waits up to S seconds before each run for other load to go
below 0.3 cores, ``--retry-busy N`` measures a configuration up to N more times when other processes
used more than 0.5 cores during it, keeping the least disturbed attempt.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import _measure  # bench/ is on sys.path: this script's folder, or put there by the scripts importing this one

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "pipeline_workers.md"
MARKER = "SLEEPTIME_BENCH_RUN"
MIB = 1024 * 1024
BUSY_CORES = 0.5  # other load (cores) above which --retry-busy measures again

# Process kinds, in report order.
KINDS = ("driver", "prefect server", "ray system", "ray workers", "other")

LOCAL_SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
from sleeptime.config import RunConfig
from sleeptime.job import run_local
t1 = time.perf_counter()
r = run_local(RunConfig(corpus=sys.argv[1], output_dir=sys.argv[2]))
print("BENCH_LOCAL " + json.dumps({"import_s": t1 - t0, "seconds": r.seconds, "stats": __import__("dataclasses").asdict(r.counters),
      "failures": len(r.failures), "variants": len(r.variants), "answers": len(r.answers)}), flush=True)
"""


# --- sampling the process tree (bench/_measure.py) ------------------------------------------------


def _kind(pid: int, root: int, cmd: str) -> str:
    if pid == root:
        return "driver"
    if "prefect.server" in cmd or "prefect server" in cmd:
        return "prefect server"
    # Worker processes: prestarted idle ones, and the ones that became ModelWorker actors (a worker
    # renames itself only after it has imported the actor's modules, so both count here).
    if (cmd.startswith("ray::") and not cmd.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))) \
            or "workers/default_worker.py" in cmd:
        return "ray workers"
    if "/ray/" in cmd or "ray/_private" in cmd:
        return "ray system"
    return "other"


@dataclass
class Proc:
    pid: int
    kind: str
    cmd: str
    cpu: float = 0.0  # seconds, last seen
    cpu0: float = 0.0  # seconds already used when first seen (a joined cluster's process)
    was_actor: bool = False
    first_t: float = 0.0
    last_t: float = 0.0


@dataclass
class Sample:
    t: float
    rss: int
    pss: int
    cpu: dict[str, float]  # cumulative CPU seconds per kind
    machine: float  # cumulative machine busy seconds since start
    own: float  # cumulative CPU of this benchmark process since start


@dataclass
class Trace:
    """What a TreeSampler saw: the samples and every process of the run (plain data, picklable)."""

    samples: list[Sample] = field(default_factory=list)
    procs: dict[tuple[int, float], Proc] = field(default_factory=dict)  # (pid, creation time)

    def peak(self, attr: str) -> int:
        return max((getattr(s, attr) for s in self.samples), default=0)

    def at(self, t: float) -> Sample | None:
        """The last sample taken at or before ``t`` (the first one if none)."""
        best = None
        for s in self.samples:
            if s.t <= t:
                best = s
            else:
                break
        return best or (self.samples[0] if self.samples else None)

    def actor_cpu(self) -> list[float]:
        return sorted((p.cpu - p.cpu0 for p in self.procs.values() if p.was_actor), reverse=True)


class TreeSampler(threading.Thread):
    """Samples a process tree every ``interval`` seconds: summed RSS/PSS and CPU per process kind."""

    def __init__(self, root: int, marker: str, t0: float, interval: float = 0.2, cluster_port: int | None = None):
        super().__init__(daemon=True)
        self.root, self.marker, self.t0, self.interval = root, marker, t0, interval
        # A joined Ray cluster (its GCS port): its raylet, gcs_server and their children (the actors)
        # are not descendants of the run, so they are matched by command line.
        self.cluster = (re.compile(rf"--gcs[-_]address=\S*:{cluster_port}\b|--gcs_server_port={cluster_port}\b")
                        if cluster_port else None)
        self._cmd_cache: dict = {}  # psutil handle (pid + creation time) -> command line
        self._ticks = 0
        self._last_pss = 0
        self.trace = Trace()
        self.procs, self.samples = self.trace.procs, self.trace.samples
        # CPU per kind, accumulated from per-sample increments: a Ray worker that renames itself from
        # IDLE to ModelWorker keeps its earlier CPU under "ray system".
        self.cum = {k: 0.0 for k in KINDS}
        self._foreign: dict = {}  # psutil handle -> has this run's marker
        self._halt = threading.Event()
        self._machine0, self._own0 = _measure.machine_busy_s(), _measure.own_cpu_s()
        self._run_started = _measure.started_at(t0)

    def stop(self) -> Trace:
        self._halt.set()
        self.join()
        return self.trace

    def _has_marker(self, p) -> bool:
        if p not in self._foreign:
            self._foreign[p] = _measure.environ(p).get(MARKER) == self.marker
        return self._foreign[p]

    def sample(self) -> None:
        now = time.monotonic() - self.t0
        everyone = _measure.processes()
        roots: list = [self.root]
        if self.cluster:
            for p in everyone:
                if p not in self._cmd_cache:
                    self._cmd_cache[p] = _measure.cmdline(p)
                if self.cluster.search(self._cmd_cache[p]):
                    roots.append(p)
        members = _measure.tree(roots, everyone)
        for p in everyone:
            if p.pid not in members and p.pid != os.getpid() and self._has_marker(p):
                members[p.pid] = p
        rss = pss = 0
        # PSS (smaps_rollup walks every mapping: the costly read) once a second, RSS every tick.
        with_pss = self._ticks % max(1, round(1.0 / self.interval)) == 0
        self._ticks += 1
        for pid, p in members.items():
            r = _measure.read(p, pss=with_pss)  # the command line too: Ray workers rename themselves
            if r is None:  # gone since the scan
                continue
            key, cmd = (pid, r.started), r.cmdline
            proc = self.procs.get(key)
            if proc is None:
                proc = self.procs[key] = Proc(pid, "other", cmd, first_t=now)
                if r.started < self._run_started:  # a joined cluster's process: count only from now on
                    proc.cpu = proc.cpu0 = r.cpu_s
            proc.was_actor = proc.was_actor or cmd.startswith("ray::ModelWorker")
            proc.kind, proc.cmd = _kind(pid, self.root, cmd) if cmd else proc.kind, cmd or proc.cmd
            self.cum[proc.kind] += r.cpu_s - proc.cpu
            proc.cpu, proc.last_t = r.cpu_s, now
            rss += r.rss
            pss += r.pss
        self._last_pss = pss if with_pss else self._last_pss
        self.samples.append(Sample(now, rss, self._last_pss, dict(self.cum), _measure.machine_busy_s() - self._machine0,
                                   _measure.own_cpu_s() - self._own0))

    def run(self) -> None:
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                self.sample()
            except Exception as exc:  # never let sampling kill the benchmark
                print(f"[sampler] {exc!r}", file=sys.stderr)
            self._halt.wait(max(0.0, self.interval - (time.monotonic() - started)))
        try:
            self.sample()
        except Exception:
            pass


# --- running one measurement ------------------------------------------------------------------------


@dataclass
class Measurement:
    executor: str
    workers: int | None
    repeat: int
    rc: int = 0
    wall_s: float = 0.0
    flow_s: float | None = None
    model_calls: int | None = None
    failures: int | None = None
    run_id: str | None = None
    warehouse: dict | None = None
    peak_rss: int = 0
    peak_pss: int = 0
    lines: list[tuple[float, str]] = field(default_factory=list)
    sampler: Trace | None = None
    local: dict | None = None
    waited_s: float = 0.0
    log_path: Path | None = None
    spawn_epoch: float = 0.0
    pid: int = 0
    ray_connected: float | None = None  # seconds after spawn when ray.init had connected the driver

    @property
    def label(self) -> str:
        return f"{self.executor} W={self.workers}" if self.workers else self.executor

    def cpu_total(self) -> dict[str, float]:
        last = self.sampler.samples[-1] if self.sampler and self.sampler.samples else None
        return dict(last.cpu) if last else {}

    def foreign_cores(self) -> float | None:
        """Mean cores used by processes outside this run (other sessions, the OS) while it ran."""
        if not self.sampler or len(self.sampler.samples) < 2:
            return None
        a, b = self.sampler.samples[0], self.sampler.samples[-1]
        ours = sum(b.cpu.values()) - sum(a.cpu.values()) + (b.own - a.own)
        span = b.t - a.t
        return max(0.0, (b.machine - a.machine) - ours) / span if span > 0 else None


def wait_for_idle(max_wait: float, threshold: float = 0.3, window: float = 3.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine's other load drops below ``threshold`` cores."""
    waited, t0 = 0.0, time.monotonic()
    while True:
        m0, o0 = _measure.machine_busy_s(), _measure.own_cpu_s()
        time.sleep(window)
        load = ((_measure.machine_busy_s() - m0) - (_measure.own_cpu_s() - o0)) / window
        waited = time.monotonic() - t0
        if load < threshold or waited >= max_wait:
            if load >= threshold:
                print(f"  machine still busy ({load:.2f} cores used by other processes); measuring anyway", flush=True)
            return waited


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path, m: Measurement, log_path: Path,
                 interval: float, cluster_port: int | None, echo: bool) -> None:
    marker = uuid.uuid4().hex
    env = {**env, MARKER: marker}
    t0, m.spawn_epoch = time.monotonic(), time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    m.pid = proc.pid
    sampler = TreeSampler(proc.pid, marker, t0, interval, cluster_port)
    sampler.start()
    assert proc.stdout is not None
    with open(log_path, "w", encoding="utf-8") as log:
        for raw in proc.stdout:
            t = time.monotonic() - t0
            line = raw.decode("utf-8", "replace").rstrip("\n")
            m.lines.append((t, line))
            log.write(f"{t:8.3f} {line}\n")
            if echo:
                print(f"    {t:7.2f} {line}", flush=True)
    m.rc = proc.wait()
    m.wall_s = time.monotonic() - t0
    m.sampler, m.log_path = sampler.stop(), log_path
    m.peak_rss, m.peak_pss = m.sampler.peak("rss"), m.sampler.peak("pss")


SUMMARY_CALLS = re.compile(r"^model: (\d+) calls")
SUMMARY_TIME = re.compile(r"^failures: (\d+)\b.*; time ([0-9.]+)s$")
RUN_ID = re.compile(r"^run (r\d+T\d+): (\w+)")


def parse_flow_output(m: Measurement) -> None:
    for _t, line in m.lines:
        if (hit := RUN_ID.match(line)) and m.run_id is None:
            m.run_id = hit.group(1)
        elif hit := SUMMARY_CALLS.match(line):
            m.model_calls = int(hit.group(1))
        elif hit := SUMMARY_TIME.match(line):
            m.failures, m.flow_s = int(hit.group(1)), float(hit.group(2))


def read_warehouse(path: Path, run_id: str | None) -> dict | None:
    import duckdb

    if not path.exists():
        return None
    con = duckdb.connect(str(path.resolve()), read_only=True)
    try:
        rows = con.execute(
            "SELECT run_id, status, seconds, model_calls, variants_written, answers_written, failures FROM runs "
            "ORDER BY run_id"
        ).fetchall()
    finally:
        con.close()
    keys = ("run_id", "status", "seconds", "model_calls", "variants_written", "answers_written", "failures")
    found = [dict(zip(keys, r)) for r in rows if run_id is None or r[0] == run_id]
    return found[-1] if found else None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (OSError, ValueError):
        return None


def resolve_cluster_port(address: str) -> int | None:
    """The GCS port of the cluster ``--ray-address`` names (``auto``: as Ray resolves it), if local."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or ""
        if not address:
            temp = Path(os.environ.get("RAY_TMPDIR") or "/tmp") / "ray" / "ray_current_cluster"
            address = str(_read(str(temp)) or "").strip()
    if address.startswith("ray://") or ":" not in address:
        return None  # Ray Client: the actors run on another machine
    try:
        return int(address.rsplit(":", 1)[1])
    except ValueError:
        return None


RAY_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def ray_connected_at(ray_tmp: Path, m: Measurement) -> float | None:
    """When the driver finished connecting to the Ray it started (from Ray's own session logs)."""
    for log in ray_tmp.glob(f"**/session_*_{m.pid}/logs/python-core-driver-*_{m.pid}.log"):
        for line in (_read(str(log)) or "").splitlines():
            if "Initializing worker at address" in line and (hit := RAY_LOG_TIME.match(line)):
                when = dt.datetime.strptime(hit.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                return when - m.spawn_epoch
    return None


# --- stages from the log -------------------------------------------------------------------------------

TASK_DONE = re.compile(r"Task run '([a-z-]+)-[0-9a-f]+' - Finished in state")
# "shard 3: 30 variants, 0 failures, 30 calls", with or without a "sleep "/"test " prefix.
SHARD_LINE = re.compile(r"Task run '(sleep|test)-shard-[0-9a-f]+' - (?:\w+ )?shard (\d+): .*?(\d+) calls")


def stages(m: Measurement) -> list[tuple[str, float, float]] | None:
    """(stage, start, end) in seconds since spawn, from the arrival times of INFO log lines."""
    marks: dict[str, float] = {}
    last_done: dict[str, float] = {}
    for t, line in m.lines:
        if "Starting temporary server" in line:
            marks.setdefault("server", t)
        elif "Beginning flow run" in line:
            marks.setdefault("flow", t)
        elif "Flow run" in line and "Finished in state" in line:
            marks["flow_done"] = t
        elif hit := TASK_DONE.search(line):
            last_done[hit.group(1)] = t
        elif SUMMARY_TIME.match(line):
            marks["summary"] = t
        elif line.startswith("published warehouse:"):
            marks["table"] = t
    needed = ("flow", "flow_done")
    tasks_needed = ("plan-sleep", "plan-test", "summarize", "validate-and-publish")
    if any(k not in marks for k in needed) or any(k not in last_done for k in tasks_needed):
        return None
    sleep_end = last_done.get("sleep-shard", last_done["plan-sleep"])
    test_end = last_done.get("test-shard", last_done["plan-test"])
    server = marks.get("server", marks["flow"])
    after = marks.get("table", marks.get("summary", marks["flow_done"]))
    sleep_stage = [("sleep time: Ray start, actor start-up (imports), the S(c) calls", last_done["plan-sleep"], sleep_end)]
    if m.ray_connected and last_done["plan-sleep"] < m.ray_connected < sleep_end:
        sleep_stage = [
            ("sleep time: Ray start (ray.init until the driver is connected)", last_done["plan-sleep"], m.ray_connected),
            ("sleep time: actors start (import litellm, ...) + the S(c) calls", m.ray_connected, sleep_end),
        ]
    points = [
        ("python start-up and imports (CLI, Prefect, Ray, litellm, flows)", 0.0, server),
        ("ephemeral Prefect server start, flow run created", server, marks["flow"]),
        ("resolve config, ingest + diff, plan sleep", marks["flow"], last_done["plan-sleep"]),
        *sleep_stage,
        ("plan test (read variants back from the lake)", sleep_end, last_done["plan-test"]),
        ("test time: the T(q, c') calls", last_done["plan-test"], test_end),
        ("Ray shutdown + summarize", test_end, last_done["summarize"]),
        ("validate-and-publish: warehouse build, GX import + gate, swap", last_done["summarize"], last_done["validate-and-publish"]),
        ("flow run finalised", last_done["validate-and-publish"], marks["flow_done"]),
        ("CLI: summary + accuracy table from the warehouse", marks["flow_done"], after),
        ("teardown: Prefect server stop, interpreter exit", after, m.wall_s),
    ]
    return points


def shard_calls(m: Measurement, stage: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for _t, line in m.lines:
        if (hit := SHARD_LINE.search(line)) and hit.group(1) == stage:
            out[int(hit.group(2))] = int(hit.group(3))
    return out


def stage_duration(m: Measurement, name_prefix: str) -> float | None:
    """Seconds in the stages whose names start with ``name_prefix`` (None without a breakdown)."""
    points = stages(m)
    if not points:
        return None
    hits = [b - a for name, a, b in points if name.startswith(name_prefix)]
    return sum(hits) if hits else None


def cpu_between(m: Measurement, a: float, b: float) -> dict[str, float]:
    """Mean cores used per process kind between two times, plus the machine's other load."""
    s = m.sampler
    if not s or not s.samples or b <= a:
        return {}
    sa, sb = s.at(a), s.at(b)
    span = sb.t - sa.t
    if span <= 0:
        return {}
    out = {k: (sb.cpu[k] - sa.cpu[k]) / span for k in KINDS}
    ours = sum(out.values()) + (sb.own - sa.own) / span
    out["outside this run"] = max(0.0, (sb.machine - sa.machine) / span - ours)
    return out


# --- the report -------------------------------------------------------------------------------------


def machine_header() -> list[str]:
    versions = []
    for pkg in ("prefect", "ray", "litellm", "great-expectations", "duckdb", "pyarrow"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- cores: {os.cpu_count()} ({_measure.cpu_model() or 'unknown CPU'}); "
        f"RAM: {_measure.memory_total_bytes() / 1024 ** 3:.1f} GiB",
        f"- python {platform.python_version()} on {platform.system()} {platform.release()}",
        f"- {', '.join(versions)}",
        f"- load average when the benchmark started: {_measure.loadavg_text()}",
    ]


def fmt(v: float | int | None, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def render(args: argparse.Namespace, results: list[Measurement], header: list[str], notes: list[str],
           total_s: float) -> str:
    out: list[str] = ["# Benchmark: orchestrated main job vs number of Ray workers", ""]
    command = getattr(args, "command", None) or (
        f"--contexts {args.contexts} --workers {args.workers} --repeats {args.repeats} --shard-size {args.shard_size}")
    out += ["Produced by `" + f".venv/bin/python bench/pipeline_workers.py {command}".strip()
            + "`; the script writes this file, prose included"
            + ("; this copy was rendered again (`--render-from`) from that run's kept results, after a last edit to "
               "the prose" if getattr(args, "rendered_again", False) else "") + ".", ""]
    own = span = 0.0
    for m in results:
        if m.sampler and len(m.sampler.samples) > 1:
            own += m.sampler.samples[-1].own - m.sampler.samples[0].own
            span += m.sampler.samples[-1].t - m.sampler.samples[0].t
    overhead = [f"- the /proc sampler (this script) used {own / span:.2f} cores on average while measuring"] if span else []
    out += ["## Machine", ""] + header + [f"- benchmark total: {total_s:.0f} s"] + overhead + notes + [""]

    out += ["## Results", ""]
    out += ["Corpus: arithmetic worlds, `write_demo_corpus(path, contexts="
            f"{args.contexts}, seed=7)` ({args.contexts} contexts x 10 labeled queries); "
            f"{getattr(args, 'grid', 'the default grid')}. Every run starts from an empty output directory. "
            "`wall s` is the subprocess, start to exit; `flow s` is the run summary's own `time` (flow start to "
            "just before the quality gate; for `in-process` it is `run_local`'s total, imports excluded); "
            "`calls/s` = model calls / wall s; `test calls/s` = test-time calls / test stage seconds "
            "(steady-state throughput); `CPU ms/call` is the CPU time of the processes that made the calls (the "
            "ModelWorker actors; for `in-process`, the whole process) divided by the model calls, their start-up "
            "imports included; RSS and PSS are the peaks of the per-sample sums over the process tree "
            "(RSS sampled every 0.2 s, PSS every 1 s) "
            "(RSS double-counts shared pages such as Ray's object store and shared libraries, PSS splits them); "
            "`other load` is the mean number of cores that processes outside the run used meanwhile.", ""]
    cols = ["executor", "workers", "wall s", "flow s", "model calls", "calls/s", "peak RSS MiB", "peak PSS MiB",
            "test stage s", "test calls/s", "CPU ms/call", "warehouse runs row (s, calls)", "other load (cores)"]
    if args.repeats > 1:
        cols.insert(2, "rep")
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for m in results:
        test_s = (m.local or {}).get("seconds", {}).get("test") if m.local else stage_duration(m, "test time")
        test_calls = (m.model_calls or 0) - _sleep_calls(m) if m.model_calls is not None else None
        wh = m.warehouse
        row = [
            m.executor if m.rc == 0 else f"{m.executor} (exit {m.rc})",
            str(m.workers) if m.workers else "– (1 process)",
            fmt(m.wall_s), fmt(m.flow_s), fmt(m.model_calls, "d"),
            fmt(m.model_calls / m.wall_s if m.model_calls and m.wall_s else None, ".0f"),
            fmt(m.peak_rss / MIB, ".0f"), fmt(m.peak_pss / MIB, ".0f"),
            fmt(test_s), fmt(test_calls / test_s if test_calls and test_s else None, ".0f"),
            fmt(cpu_per_call_ms(m), ".2f"),
            f"{wh['seconds']:.1f} s, {wh['model_calls']}" if wh else "–",
            fmt(m.foreign_cores(), ".2f"),
        ]
        if args.repeats > 1:
            row.insert(2, str(m.repeat))
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    if args.repeats > 1:
        out += ["Medians over repeats:", "", "| executor | workers | wall s | flow s | test stage s |", "|---|---|---|---|---|"]
        groups: dict[tuple[str, int | None], list[Measurement]] = {}
        for m in results:
            groups.setdefault((m.executor, m.workers), []).append(m)
        for (ex, w), ms in groups.items():
            tests = [x for x in ((mm.local or {}).get("seconds", {}).get("test") if mm.local else stage_duration(mm, "test time") for mm in ms) if x]
            flows = [mm.flow_s for mm in ms if mm.flow_s is not None]
            out.append(f"| {ex} | {w or '–'} | {statistics.median(mm.wall_s for mm in ms):.1f} | "
                       f"{fmt(statistics.median(flows) if flows else None)} | {fmt(statistics.median(tests) if tests else None)} |")
        out.append("")

    flows = [m for m in results if m.executor != "in-process" and stages(m)]
    if flows:
        out += ["## Where the wall time goes", "",
                "Stage boundaries are the arrival times of the Prefect INFO log lines that end each task "
                "(for a fanned-out stage: the last shard's). Seconds per stage:", ""]
        labels = [m.label + (f" #{m.repeat}" if args.repeats > 1 else "") for m in flows]
        out += ["| stage | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(flows)]
        per_run = [stages(m) or [] for m in flows]
        names: list[str] = []
        for points in per_run:
            for name, _a, _b in points:
                if name not in names:
                    names.append(name)
        for name in names:
            cells = []
            for points in per_run:
                hit = [b - a for n, a, b in points if n == name]
                cells.append(f"{hit[0]:.1f}" if hit else "–")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("| **total (wall)** | " + " | ".join(f"**{m.wall_s:.1f}**" for m in flows) + " |")
        out.append("")
        out += ["CPU used per kind of process during each stage (mean cores busy; the machine has "
                f"{os.cpu_count()}). `driver` is the `sleeptime run` process (Prefect flow and task threads, "
                "ray.get, Parquet staging, publish); `ray system` is gcs_server, raylet, the dashboard head and agents, "
                "log monitor; `ray workers` are Ray's worker processes: the ModelWorker actors, where the model calls "
                "run (and where each actor imports sleeptime and litellm), and idle prestarted workers.", ""]
        for m, points in zip(flows, per_run):
            out += [f"**{m.label}{f' #{m.repeat}' if args.repeats > 1 else ''}**", "",
                    "| stage | s | " + " | ".join(KINDS) + " | outside this run |", "|---|---:|" + "---:|" * (len(KINDS) + 1)]
            for name, a, b in points:
                c = cpu_between(m, a, b)
                if not c:
                    out.append(f"| {name} | {b - a:.1f} | " + " | ".join("–" for _ in KINDS) + " | – |")
                    continue
                out.append(f"| {name} | {b - a:.1f} | " + " | ".join(f"{c[k]:.2f}" for k in KINDS)
                           + f" | {c['outside this run']:.2f} |")
            tot = m.cpu_total()
            out.append(f"| **CPU seconds, whole run** | {m.wall_s:.1f} | " + " | ".join(f"{tot.get(k, 0):.1f}" for k in KINDS) + " | |")
            actors = m.sampler.actor_cpu() if m.sampler else []
            calls = shard_calls(m, "test")
            per_actor: dict[int, int] = {}
            for idx, n in calls.items():
                per_actor[idx % (m.workers or 1)] = per_actor.get(idx % (m.workers or 1), 0) + n
            out += ["", f"Actor CPU seconds: {', '.join(f'{c:.1f}' for c in actors) or '–'}; test calls per actor "
                    f"(shard index mod workers, as `RayPool.actor` assigns them): "
                    f"{', '.join(str(per_actor[k]) for k in sorted(per_actor)) or '–'} "
                    f"({len(calls)} test shards).", ""]
    local = [m for m in results if m.local]
    if local:
        m = local[0]
        s = m.local["seconds"]
        out += ["In-process baseline detail (first repeat): imports "
                f"{m.local['import_s']:.1f} s, load {s.get('load', 0):.2f} s, sleep time {s.get('sleep', 0):.1f} s, "
                f"test time {s.get('test', 0):.1f} s, interpreter start and exit "
                f"{m.wall_s - m.local['import_s'] - s.get('total', 0):.1f} s; one process, one asyncio loop, one core.", ""]
    out += analysis(results, args.contexts) + ["", STATIC_NOTES]
    return "\n".join(out) + "\n"


def cpu_per_call_ms(m: Measurement) -> float | None:
    if not m.model_calls or not m.sampler:
        return None
    cpu = m.cpu_total().get("driver", 0.0) if m.local else sum(m.sampler.actor_cpu())
    return 1000 * cpu / m.model_calls if cpu else None


def _sleep_calls(m: Measurement) -> int:
    if m.local:  # one call per answer; the rest were sleep-time calls
        return m.local["stats"].get("calls", 0) - m.local["answers"]
    return sum(shard_calls(m, "sleep").values())


def analysis(results: list[Measurement], contexts: int) -> list[str]:
    """The figures of this run, read out in words (computed, so it cannot drift from the table)."""
    out = ["## Reading the figures", ""]
    clusters = {m.workers: m for m in results if m.executor.endswith("-node cluster") and m.rc == 0 and m.repeat == 1}
    if clusters:
        first = clusters[min(clusters)]
        base_test = stage_duration(first, "test time")
        rows = []
        for n, m in sorted(clusters.items()):
            test = stage_duration(m, "test time")
            rows.append(f"{n} node{'s' if n > 1 else ''}: {m.wall_s:.0f} s wall, test stage {fmt(test)} s"
                        + (f" ({base_test / test:.2f}x the {min(clusters)}-node test stage)" if base_test and test and n != min(clusters) else "")
                        + f", other load {fmt(m.foreign_cores(), '.2f')} cores")
        out += ["On the loopback cluster (a head with no CPUs and N worker nodes of one CPU each, one model worker "
                "per node): " + "; ".join(rows) + ". Each node is its own raylet, "
                "object store and worker processes, so the figures include what a real cluster pays per node; they "
                "are bounded by this machine's cores, which every node shares. The test stage is "
                + ", ".join(f"{len(shard_calls(m, 'test'))} shards on {n} worker{'s' if n > 1 else ''}"
                            for n, m in sorted(clusters.items()))
                + ": a worker runs its shards one after another, so the stage lasts about ceil(shards / workers) "
                "shards, and only a node count that divides the shards evenly shortens it in proportion.", ""]
    flows = {m.workers: m for m in results if m.executor == "prefect+ray" and m.rc == 0 and m.repeat == 1}
    local = next((m for m in results if m.local and m.rc == 0), None)
    parts = []
    if local:
        calls = local.model_calls or 0
        test = local.local["seconds"]["test"]
        parts.append(
            f"The in-process executor made {calls} model calls in {local.wall_s:.0f} s of wall time, "
            f"{test:.0f} s of it in test time: about {1000 * test / max(1, calls - _sleep_calls(local)):.1f} ms of "
            "CPU-bound Python (the reference reasoner plus litellm's per-call overhead) per call, on one core."
        )
    for w, m in sorted(flows.items()):
        points = stages(m)
        if not points:
            continue
        fixed = sum(b - a for name, a, b in points if not name.startswith(("test time", "sleep time")))
        test = stage_duration(m, "test time") or 0
        parts.append(
            f"With {w} worker{'s' if w > 1 else ''} the orchestrated run took {m.wall_s:.0f} s: {test:.0f} s of test "
            f"time, {stage_duration(m, 'sleep time') or 0:.0f} s of sleep time (mostly Ray and actor start-up), and "
            f"{fixed:.0f} s of fixed costs outside the two model stages (imports, Prefect server, GX gate, publish, teardown)."
        )
    if len(flows) >= 2:
        lo, hi = min(flows), max(flows)
        a, b = flows[lo], flows[hi]
        ta, tb = stage_duration(a, "test time"), stage_duration(b, "test time")
        speed = f"{a.wall_s / b.wall_s:.2f}x on wall time"
        if ta and tb:
            speed += f" and {ta / tb:.2f}x on the test stage"
        parts.append(f"Going from {lo} to {hi} workers changed the run by {speed} (above 1 is faster).")
        calls = shard_calls(b, "test")
        if calls and len(calls) < 2 * hi:
            parts.append(
                f"Only {len(calls)} test shards for {hi} actors: shards go to whichever actor is idle "
                "(`RayPool.lease`), but with so few the last shards leave actors idle; a smaller shard_size "
                "balances better."
            )
        ca, cb = cpu_per_call_ms(a), cpu_per_call_ms(b)
        if ca and cb and cb > 1.15 * ca:
            parts.append(
                f"The actors also burned {100 * (cb / ca - 1):.0f}% more CPU per call with {hi} workers than with {lo} "
                f"({cb:.1f} vs {ca:.1f} ms, start-up imports included), so the second worker added work as well as "
                "capacity."
            )
        window = next(((x, y) for n, x, y in stages(b) or [] if n.startswith("test time")), None)
        c = cpu_between(b, *window) if window else {}
        if c:
            parts.append(
                f"During the {hi}-worker test stage the Ray workers (the actors) used {c['ray workers']:.2f} cores, the driver "
                f"{c['driver']:.2f}, the Prefect server {c['prefect server']:.2f}, Ray's own processes "
                f"{c['ray system']:.2f}, and processes outside the run {c['outside this run']:.2f}, "
                f"of {os.cpu_count()} cores."
            )
    if local and flows:
        best_w, best = min(flows.items(), key=lambda kv: kv[1].wall_s)
        if local.wall_s < best.wall_s:
            parts.append(
                f"On this machine and corpus the plain in-process executor ({local.wall_s:.0f} s, one core) still beats "
                f"the best orchestrated run ({best.wall_s:.0f} s with {best_w} worker{'s' if best_w > 1 else ''}): what "
                "Prefect, Ray, the gate and the publish cost is more than a second worker saves here. The orchestrated "
                "job buys other things: incremental runs, staging and crash safety, the gated warehouse, a cluster when "
                "there is one, overlap of many calls when the model waits on a network."
            )
            lt, bt = local.local["seconds"]["test"], stage_duration(best, "test time")
            calls = (local.model_calls or 0) - _sleep_calls(local)
            if bt and calls and lt > bt:
                fixed_gap = (best.wall_s - bt) - (local.wall_s - lt)
                per_call_gain = lt / calls - bt / calls
                even = fixed_gap / per_call_gain
                parts.append(
                    f"By this table's figures (test-stage throughput {calls / lt:.0f} vs {calls / bt:.0f} calls/s, "
                    f"{fixed_gap:.0f} s more outside the test stage) the orchestrated run would break even at about "
                    f"{even:,.0f} test calls, some {even / calls * contexts:.0f} contexts of this grid, "
                    "if those rates held."
                )
    foreign = [m.foreign_cores() for m in results if m.foreign_cores() is not None]
    if foreign and max(foreign) > 0.15:
        parts.append(
            f"Other work on the machine used up to {max(foreign):.2f} cores on average during a run (the "
            "`other load` column); on a shared 2-core machine that moves the figures by as much, so compare runs "
            "with similar other load, or rerun with `--repeats 3`."
        )
    out.append(" ".join(parts))
    return out


STATIC_NOTES = """## What limits scaling here

The reference reasoner is CPU-bound pure Python: a model call is a few milliseconds of parsing and
arithmetic under the GIL, with no I/O to overlap. One actor therefore keeps at most one core busy,
and on a 2-core machine two workers can at most double the model-call throughput, and only if
nothing else needs CPU meanwhile. Whatever else runs competes with the actors for the same two
cores: the driver (Prefect task threads, `ray.get`, building and staging Parquet rows), the
ephemeral Prefect server, Ray's raylet and gcs (the per-stage CPU tables above show how much each
took), and, on a shared machine, other people's work (the `outside this run` column).
With a hosted model the picture inverts: calls wait on the network, an actor's asyncio loop
overlaps `concurrency` of them, and workers scale until the provider's rate limit.

Fixed costs dominate small runs: importing the CLI, Prefect, Ray and litellm in the driver, starting
the ephemeral Prefect server (which also runs its SQLite migrations the first time a PREFECT_HOME is
used; the benchmark does that once, untimed, in a fresh PREFECT_HOME), starting Ray, each actor
importing sleeptime and litellm (the actors do it in parallel, one core each), importing
great-expectations and building the warehouse for the gate, and shutting the temporary server down.
Most of these run one after the other on one core (see the per-stage CPU tables). They are paid once
per run, whatever the corpus size, so the bigger the corpus the closer a run gets to the test-stage
throughput in the table.

## Running it against an existing Ray cluster

Joining a running cluster takes Ray's start-up and shutdown out of every run (actors are still
created per run, and each still imports sleeptime and litellm):

```bash
RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \\
  .venv/bin/ray start --head --port 6379 --num-cpus 2 --include-dashboard=false
.venv/bin/python bench/pipeline_workers.py --ray-address auto   # or --ray-address 127.0.0.1:6379
.venv/bin/ray stop
```

`--ray-address` writes `ray_address: ...` into each run's YAML; outside the benchmark the same is
`ray_address: auto` in the config or `sleeptime run --ray-address auto` (`ray://head:10001` for a
remote head through Ray Client). `auto` means `RAY_ADDRESS`, else the address the last `ray start`
wrote to `/tmp/ray/ray_current_cluster`; on a machine where other Ray instances come and go, name
the address explicitly. Start the cluster from the same `.venv`: the actors import `sleeptime` and
`tasks` from it. The cluster's processes are not children of the run, so the benchmark finds them
by their GCS port (raylet, gcs_server, dashboard, their workers) and counts them from the moment the
run starts. Caution on a shared machine: `ray stop` kills every Ray process on the machine by name,
including the local clusters other users' runs and tests started with `ray.init`; stop your own head
by its process ids instead (here `ray start --block` did not exit on SIGTERM or SIGINT; its
gcs_server had to be killed by pid).

## How it is measured

`sleeptime run --config CFG` in a subprocess with a YAML naming the corpus, a fresh `output_dir`,
`workers` and `shard_size` (everything else at its default: reference model, concurrency 32),
`PREFECT_LOGGING_LEVEL=INFO` for the stage breakdown, `PREFECT_HOME` in a temporary directory (no
`PREFECT_API_URL`: ephemeral mode, as for a user without a Prefect server), and `RAY_TMPDIR` in the
same temporary directory. The in-process baseline is `run_local(RunConfig(corpus=..., output_dir=...))`
in a subprocess too. A sampler thread reads /proc every 0.2 s (smaps_rollup for PSS every 1 s); before
each run the benchmark waits (up to `--max-wait` s) for other load on the machine to drop below 0.3
cores, and with `--retry-busy N` it measures a configuration again when other processes used more than
0.5 cores during it."""


def describe_grid() -> str:
    """The default RunConfig's grid, in words (the runs use it: their YAML sets no budgets)."""
    from sleeptime.config import RunConfig

    cfg = RunConfig()
    sleep, test = cfg.sleep_budget_order, cfg.test_budget_order
    text = (f"the default grid: sleep budgets {', '.join(f'`{n}`' for n in sleep)} x test budgets "
            f"{', '.join(f'`{n}`' for n in test)}")
    extra = [f"`{name}: {getattr(cfg, name)}`" for name in ("pass_at_k",) if hasattr(cfg, name)]
    text += (", " + ", ".join(extra)) if extra else ""
    return text + f", model `{cfg.models[cfg.test_model].model}`, concurrency {cfg.concurrency}"


# --- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contexts", type=int, default=50, help="contexts in the generated corpus (default 50, the demo size)")
    p.add_argument("--workers", default="1,2", help="comma-separated Ray worker counts (default 1,2)")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration (default 1)")
    p.add_argument("--shard-size", type=int, default=10, help="contexts per Prefect shard task (default 10)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (e.g. auto) instead of starting one per run")
    p.add_argument("--nodes", default=None,
                   help="comma-separated node counts: for each, a loopback cluster (tasks/loopback_cluster.py: a head "
                        "with no CPUs and N worker nodes of 1 CPU) is started before the run and joined with N workers")
    p.add_argument("--no-local", action="store_true", help="skip the in-process baseline")
    p.add_argument("--quiet-logs", action="store_true", help="run with the CLI's default WARNING logs (no stage breakdown)")
    p.add_argument("--prefect-home", default=None, help="PREFECT_HOME for the runs (default: a fresh temporary one)")
    p.add_argument("--max-wait", type=float, default=30.0, help="seconds to wait for an idle machine before each run")
    p.add_argument("--retry-busy", type=int, default=0,
                   help=f"measure a configuration again (up to N more times) when other processes used more than "
                        f"{0.5} cores during it; the attempt with the least other load is kept")
    p.add_argument("--interval", type=float, default=0.2, help="sampling interval in seconds (default 0.2)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"markdown report (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (corpus, logs; with "
                   "--keep-outputs also each run's lake and warehouse)")
    p.add_argument("--keep-outputs", action="store_true", help="do not delete each run's output directory")
    p.add_argument("--echo", action="store_true", help="echo the runs' output with arrival times")
    p.add_argument("--render-from", type=Path, default=None,
                   help="re-render the report from a results.pkl kept by an earlier --keep run (no runs)")
    args = p.parse_args(argv)
    if args.render_from:
        saved = pickle.loads(args.render_from.read_bytes())
        saved["args"].rendered_again = True
        report = render(saved["args"], saved["results"], saved["header"], saved["notes"], saved["total_s"])
        print(report)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
        print(f"wrote {args.out}")
        return 0
    workers = [int(w) for w in args.workers.split(",") if w.strip()]

    bin_dir = Path(sys.executable).parent
    cli = bin_dir / "sleeptime"
    if not cli.exists():
        cli = ROOT / ".venv" / "bin" / "sleeptime"
    py = bin_dir / "python" if (bin_dir / "python").exists() else Path(sys.executable)

    started = time.monotonic()
    header = machine_header()
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-"))
    notes: list[str] = []
    results: list[Measurement] = []
    try:
        sys.path.insert(0, str(ROOT))
        from sleeptime.dataset import write_demo_corpus

        args.grid = describe_grid()
        args.command = shlex.join(sys.argv[1:] if argv is None else argv)
        corpus = tmp / "corpus.jsonl"
        write_demo_corpus(corpus, contexts=args.contexts, seed=7)
        print(f"corpus: {args.contexts} contexts -> {corpus}", flush=True)

        # Ephemeral Prefect (no API URL); RAY_ADDRESS only matters when joining a cluster.
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL" and (args.ray_address or k != "RAY_ADDRESS")}
        cluster_port = resolve_cluster_port(args.ray_address) if args.ray_address else None
        if args.ray_address and cluster_port is None:
            print(f"  cannot find the GCS port of {args.ray_address!r}: the cluster's processes are not measured", flush=True)
        env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "200", "NO_COLOR": "1"})
        env["PREFECT_LOGGING_LEVEL"] = "WARNING" if args.quiet_logs else "INFO"
        if args.prefect_home:
            env["PREFECT_HOME"] = str(Path(args.prefect_home).expanduser())
        else:
            env["PREFECT_HOME"] = str(tmp / "prefect-home")
            t = time.monotonic()
            subprocess.run([str(bin_dir / "prefect"), "server", "database", "upgrade", "-y"], env=env, cwd=tmp,
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            notes.append(f"- one-time, untimed: migrating a fresh PREFECT_HOME took {time.monotonic() - t:.1f} s "
                         "(a first-ever `sleeptime run` pays this too)")
        if not args.ray_address:
            env["RAY_TMPDIR"] = str(tmp / "ray")
            (tmp / "ray").mkdir()

        plan: list[tuple[str, int | None, int]] = []
        nodes = [int(n) for n in args.nodes.split(",") if n.strip()] if args.nodes else []
        for rep in range(1, args.repeats + 1):
            if not args.no_local:
                plan.append(("in-process", None, rep))
            plan += [(f"{n}-node cluster", n, rep) for n in nodes] or [("prefect+ray", w, rep) for w in workers]

        def measure(executor: str, w: int | None, rep: int, attempt: int) -> Measurement:
            m = Measurement(executor, w, rep)
            name = f"{'local' if w is None else f'w{w}'}-r{rep}-a{attempt}"
            m.waited_s = wait_for_idle(args.max_wait)
            out_dir = tmp / f"out-{name}"
            print(f"[{time.monotonic() - started:6.0f}s] {m.label} (repeat {rep}"
                  f"{f', attempt {attempt}' if attempt > 1 else ''}) ...", flush=True)
            if executor == "in-process":
                cmd = [str(py), "-c", LOCAL_SNIPPET, str(corpus), str(out_dir)]
                run_measured(cmd, env, tmp, m, tmp / f"{name}.log", args.interval, None, args.echo)
                for _t, line in m.lines:
                    if line.startswith("BENCH_LOCAL "):
                        m.local = json.loads(line[len("BENCH_LOCAL "):])
                if m.local:
                    m.model_calls = m.local["stats"].get("calls")
                    m.flow_s = m.local["seconds"].get("total")
                    m.failures = m.local["failures"]
            else:
                cfg = tmp / f"{name}.yaml"
                lines = [f"corpus: {json.dumps(str(corpus))}", f"output_dir: {json.dumps(str(out_dir))}",
                         f"workers: {w}", f"shard_size: {args.shard_size}"]
                cluster, run_env, port = None, env, cluster_port
                if executor.endswith("-node cluster"):
                    # Started (and timed) outside the run, as a standing cluster would be.
                    run_env = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
                    run_env.pop("RAY_TMPDIR", None)
                    t = time.monotonic()
                    cluster = subprocess.Popen([str(py), "-m", "tasks.loopback_cluster", "--workers", str(w)], cwd=ROOT,
                                               env=run_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                    address = json.loads(cluster.stdout.readline())["address"]
                    print(f"    loopback cluster {address}: head + {w} worker nodes up in {time.monotonic() - t:.1f} s",
                          flush=True)
                    lines.append(f"ray_address: {json.dumps(address)}")
                    port = resolve_cluster_port(address)
                elif args.ray_address:
                    lines.append(f"ray_address: {json.dumps(args.ray_address)}")
                cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
                try:
                    run_measured([str(cli), "run", "--config", str(cfg)], run_env, tmp, m, tmp / f"{name}.log",
                                 args.interval, port, args.echo)
                finally:
                    if cluster is not None:
                        cluster.communicate("quit\n", timeout=120)
                parse_flow_output(m)
                if not args.ray_address and cluster is None:
                    m.ray_connected = ray_connected_at(tmp / "ray", m)
                try:
                    m.warehouse = read_warehouse(out_dir / "warehouse" / "sleeptime.duckdb", m.run_id)
                except Exception as exc:  # report, do not crash the benchmark
                    print(f"  could not read the warehouse: {exc!r}", flush=True)
            if not args.keep_outputs:
                shutil.rmtree(out_dir, ignore_errors=True)  # a 50-context run leaves ~100 MB
            print(f"    wall {m.wall_s:.1f} s, flow {fmt(m.flow_s)} s, calls {fmt(m.model_calls, 'd')}, "
                  f"peak RSS {m.peak_rss / MIB:.0f} MiB, other load {fmt(m.foreign_cores(), '.2f')} cores, rc {m.rc}",
                  flush=True)
            if m.rc != 0:
                print("    last output:\n" + "\n".join("      " + line for _t, line in m.lines[-15:]), flush=True)
            return m

        for executor, w, rep in plan:
            attempts = [measure(executor, w, rep, 1)]
            while (len(attempts) <= args.retry_busy and attempts[-1].rc == 0
                   and (attempts[-1].foreign_cores() or 0) > BUSY_CORES):
                print(f"    other load above {BUSY_CORES} cores: measuring again", flush=True)
                attempts.append(measure(executor, w, rep, len(attempts) + 1))
            m = min(attempts, key=lambda a: (a.rc != 0, a.foreign_cores() or 0))
            if len(attempts) > 1:
                notes.append(f"- {m.label} (repeat {rep}): measured {len(attempts)} times because other load was above "
                             f"{BUSY_CORES} cores; kept the attempt with the least ("
                             + ", ".join(f"{a.wall_s:.0f} s wall at {fmt(a.foreign_cores(), '.2f')} cores" for a in attempts)
                             + ")")
            results.append(m)
            if m.warehouse and m.model_calls is not None and m.warehouse["model_calls"] != m.model_calls:
                notes.append(f"- {m.label}: the CLI reported {m.model_calls} calls, the warehouse "
                             f"{m.warehouse['model_calls']}")
    finally:
        total_s = time.monotonic() - started
        for m in results:
            m.lines = [(t, line) for t, line in m.lines if not line.startswith(("│", "┃", "┏", "┡", "└"))]
        (tmp / "results.pkl").write_bytes(pickle.dumps(
            {"args": args, "results": results, "header": header, "notes": notes, "total_s": total_s}))
        if args.keep:
            print(f"kept {tmp} (re-render with --render-from {tmp / 'results.pkl'})", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    report = render(args, results, header, notes, total_s)
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all(m.rc == 0 for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
