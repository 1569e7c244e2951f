"""Ingest + diff + plan of an unchanged refresh at 1M contexts: time and peak memory.

    .venv/bin/python bench/ingest_scale.py                    # sizes 100000,1000000
    .venv/bin/python bench/ingest_scale.py --sizes 20000      # a quick check

What a scheduled refresh does before any model call, on a corpus where nothing changed, measured
on its own (no Prefect, no Ray: those are fixed costs measured by bench/corpus_scale.py):
``sleeptime.pipeline.ingest_corpus`` (read the JSONL, sha256 each line, skip the lines whose hash is
the row_hash of a current context, diff, stage nothing) then ``pending_sleep_jobs`` (the SQL plan:
every current context x configured budget whose deterministic variant id is missing).

Setup, per size N (not counted): a project-format JSONL of N contexts shaped like the demo corpus
(about 1.6 KB a line: a six-sentence story, metadata and 10 labeled queries; synthetic text, since no
model is called) and a lake that already holds what a first refresh would have published for it:
every context with its line's row_hash and every variant of the default sleep budgets (small 1,
medium 1, large 1), with the ids the plan computes. The corpus's queries are not loaded into the
lake (an unchanged line is never parsed, so the rerun does not look at them).

The measured step runs in a fresh subprocess per size (its peak RSS is its own: VmHWM); the
machine's load average is recorded before it. Prints a markdown report and writes
bench/results/ingest_scale.md (``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DO_NOT_TRACK", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import _measure  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "ingest_scale.md"
NAMES = ["Hugo", "Jade", "Sara", "Amy", "Kai", "Eli", "Ben", "Eva", "Mia", "Fin"]

MEASURE = r"""
import json, sys, time
t0 = time.perf_counter()
from sleeptime.config import load_config
from sleeptime.pipeline import ingest_corpus, pending_sleep_jobs
cfg = load_config(None, corpus=sys.argv[1], output_dir=sys.argv[2])
lake = cfg.open_lake()
lake.snapshot_id()  # attach (extension load) outside the timed part
t1 = time.perf_counter()
result = ingest_corpus(lake, "r29990101T000000000000", cfg.corpus, cfg.corpus_format, None)
t2 = time.perf_counter()
jobs = pending_sleep_jobs(lake, cfg)
t3 = time.perf_counter()
from bench._measure import vm_hwm_kib  # the cwd is the repository root
hwm = vm_hwm_kib()
print("BENCH " + json.dumps({"imports_attach_s": t1 - t0, "ingest_s": t2 - t1, "plan_s": t3 - t2,
    "diff": result.diff.counts(), "parsed_lines": result.parsed_lines, "staged": result.staged,
    "pending_jobs": len(jobs), "peak_rss_mib": hwm / 1024}), flush=True)
"""


def story(i: int) -> tuple[str, list[dict]]:
    a = NAMES[i % 10]
    b, c, d, e, f = (NAMES[(i + k) % 10] for k in (1, 2, 3, 4, 5))
    n = 10 + (i * 7919) % 90
    text = (f"{a} has {n} coins. {b} has three times as many coins as {a}. {c} has twice as many coins as {a}. "
            f"{d} has half as many coins as {c}. {e} has twice as many coins as {c}. "
            f"{f} has as many coins as {c} and {a} together. (world {i})")
    queries = [{"id": f"q_{i:08d}_{k}", "text": f"How many coins does {NAMES[(i + k) % 10]} have? ({k})",
                "answer": str(n * (k + 1)), "kind": ["lookup", "derived", "sum", "counterfactual"][k % 4]}
               for k in range(10)]
    return text, queries


def write_corpus(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            text, queries = story(i)
            row = {"id": f"world-{i:07d}", "text": text, "source": "ingest-scale",
                   "metadata": {"index": i, "depth": 2, "unit": "coins"}, "queries": queries}
            fh.write(json.dumps(row) + "\n")


def seed_lake(corpus: Path, out: Path) -> dict:
    """The lake a first refresh of ``corpus`` would leave: contexts (with row hashes) and variants."""
    import pyarrow as pa

    from sleeptime.config import load_config
    from sleeptime.domain import content_hash
    from sleeptime.pipeline import VARIANT_ID_SQL
    from sleeptime.prompts import PROMPT_VERSION
    from sleeptime.storage.lake import ALIAS, MAIN

    cfg = load_config(None, corpus=str(corpus), output_dir=str(out))
    cols: dict[str, list] = {k: [] for k in ("context_id", "content_hash", "source", "text", "metadata_json",
                                             "deleted", "run_id", "row_hash")}
    run_id = "r20260101T000000000000"
    with corpus.open("rb") as fh:
        for line in fh:
            row = json.loads(line)
            cols["context_id"].append(row["id"])
            cols["content_hash"].append(content_hash(row["text"]))
            cols["source"].append(row["source"])
            cols["text"].append(row["text"])
            cols["metadata_json"].append(json.dumps(row["metadata"], sort_keys=True))
            cols["deleted"].append(False)
            cols["run_id"].append(run_id)
            cols["row_hash"].append(hashlib.sha256(line.rstrip(b"\r\n")).hexdigest())
    contexts = pa.table(cols)
    lake = cfg.open_lake()
    slots = [(b.name, k) for b in cfg.sleep_budgets if not b.is_none for k in range(b.samples)]
    slot_sql = " UNION ALL ".join(f"SELECT '{b}' AS sleep_budget, {k}::INTEGER AS sample_index" for b, k in slots)
    vid = VARIANT_ID_SQL.format(hash="c.content_hash", model=f"'{cfg.sleep_model}'", budget="s.sleep_budget",
                                sample="s.sample_index", pv=f"'{PROMPT_VERSION}'")
    with lake.transaction("seed", {"kind": "seed", "run_id": run_id}) as cur:
        cur.register("seed_contexts", contexts)
        cur.execute(f"INSERT INTO {ALIAS}.{MAIN}.contexts BY NAME SELECT * FROM seed_contexts")
        cur.execute(f"""INSERT INTO {ALIAS}.{MAIN}.variants BY NAME
            SELECT {vid} AS variant_id, c.context_id, c.content_hash AS context_hash, '{cfg.sleep_model}' AS model,
                   s.sleep_budget, s.sample_index, '{PROMPT_VERSION}' AS prompt_version, 'Notes.' AS text,
                   100 AS prompt_tokens, 40 AS completion_tokens, 0.0 AS cost_usd, 0.01 AS latency_s, '{run_id}' AS run_id
            FROM seed_contexts c CROSS JOIN ({slot_sql}) s""")
        cur.unregister("seed_contexts")
    with lake.cursor() as cur:
        n_variants = cur.execute(f"SELECT count(*) FROM {ALIAS}.{MAIN}.variants").fetchone()[0]
    return {"contexts": contexts.num_rows, "variants": n_variants}


def du_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="ingest-scale-"))
    rows = []
    started = time.monotonic()
    try:
        for n in sizes:
            work = tmp / f"n{n}"
            work.mkdir()
            corpus, out = work / "corpus.jsonl", work / "out"
            t = time.perf_counter()
            write_corpus(corpus, n)
            gen_s = time.perf_counter() - t
            t = time.perf_counter()
            seeded = subprocess.run([sys.executable, "-c", "import json, sys; sys.path.insert(0, sys.argv[3]); "
                                     "from bench.ingest_scale import seed_lake; from pathlib import Path; "
                                     "print('SEED ' + json.dumps(seed_lake(Path(sys.argv[1]), Path(sys.argv[2]))))",
                                     str(corpus), str(out), str(ROOT)], cwd=ROOT, capture_output=True, text=True)
            if seeded.returncode:
                print(seeded.stdout, seeded.stderr)
                return 1
            seed = json.loads(next(l for l in seeded.stdout.splitlines() if l.startswith("SEED "))[5:])
            seed_s = time.perf_counter() - t
            load = _measure.loadavg_text()
            print(f"[{n}] corpus {corpus.stat().st_size / 1e6:.0f} MB in {gen_s:.1f} s, lake seeded in {seed_s:.1f} s "
                  f"({seed}); load {load}; measuring ...", flush=True)
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", MEASURE, str(corpus), str(out)], cwd=ROOT,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t
            if proc.returncode:
                print(proc.stdout, proc.stderr)
                return 1
            res = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("BENCH "))[6:])
            res.update(n=n, wall_s=wall, load=load, corpus_mb=corpus.stat().st_size / 1e6, seed=seed,
                       lake_mib=du_mib(out / "lake"))
            print(f"[{n}] ingest {res['ingest_s']:.1f} s, plan {res['plan_s']:.1f} s, peak RSS "
                  f"{res['peak_rss_mib']:.0f} MiB, diff {res['diff']}, pending {res['pending_jobs']}", flush=True)
            rows.append(res)
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    import duckdb

    lines = [
        "# Ingest + diff + plan of an unchanged refresh, up to 1M contexts",
        "",
        f"Produced by `.venv/bin/python bench/ingest_scale.py --sizes {args.sizes}` (the script writes this file).",
        "",
        "## Machine",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores; python "
        f"{platform.python_version()}; duckdb {duckdb.__version__}",
        f"- benchmark total: {time.monotonic() - started:.0f} s (corpus generation and lake seeding included)",
        "",
        "## Figures",
        "",
        "`ingest`: `ingest_corpus` (read + sha256 every line, look the hashes up, diff in DuckDB, stage "
        "nothing); `plan`: `pending_sleep_jobs` (SQL over the lake); `peak RSS`: the measuring process's "
        "VmHWM (interpreter, imports, DuckDB and the lake attach included). `load`: /proc/loadavg before the step.",
        "",
        "| contexts | corpus MB | lake MiB | variants in lake | ingest s | plan s | ingest + plan s | lines parsed | "
        "unchanged | pending jobs | peak RSS MiB | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['corpus_mb']:,.0f} | {r['lake_mib']:,.0f} | {r['seed']['variants']:,} | "
            f"{r['ingest_s']:.1f} | {r['plan_s']:.1f} | {r['ingest_s'] + r['plan_s']:.1f} | {r['parsed_lines']:,} | "
            f"{r['diff']['unchanged']:,} | {r['pending_jobs']:,} | {r['peak_rss_mib']:,.0f} | {r['load']} |"
        )
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        lines += ["", f"From {a['n']:,} to {b['n']:,} contexts ({b['n'] / a['n']:.0f}x), ingest + plan went from "
                  f"{a['ingest_s'] + a['plan_s']:.1f} s to {b['ingest_s'] + b['plan_s']:.1f} s "
                  f"({(b['ingest_s'] + b['plan_s']) / (a['ingest_s'] + a['plan_s']):.1f}x) and the peak RSS from "
                  f"{a['peak_rss_mib']:,.0f} to {b['peak_rss_mib']:,.0f} MiB."]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
