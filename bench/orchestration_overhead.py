"""What the orchestration costs when the model is the bottleneck.

    .venv/bin/python bench/orchestration_overhead.py [--contexts 50] [--concurrency 16] [--latency-ms 100]

A local OpenAI-compatible server (sleeptime.testing.fake_openai, in its own process) answers every
request after a fixed latency and serves at most C requests at once, like a provider with a
concurrency limit: no client can do better than C / latency calls per second. In one run this
script makes the same sweep four ways and compares each with that ideal:

* plain loop: ``litellm.acompletion`` in one asyncio loop with a semaphore of C (no product code);
* gateway loop: the product's ModelGateway (retries, pricing, limits, cache off) in one loop;
* pipeline W=1 and W=2: the real main job, ``sleeptime run`` in a subprocess (Prefect flow,
  Ray actors, staging, GX gate, publish), against a fresh output directory, with 1 and 2 workers.

The sweep: N generated contexts, one sleep-time call each (budget "small"), then 10 queries x
(raw context, c') x 2 test budgets = 40 test-time calls per context: 2,050 calls for N=50. The
throughput figure is the test stage's (2,000 calls; the sleep stage is short and includes actor
start-up). CPU per call is summed over every process of the run during the test stage (for the
pipeline: driver, Prefect server, Ray's processes, the actors). Results are printed and written to
bench/results/orchestration_overhead.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _measure  # noqa: E402
import pipeline_workers as pw  # noqa: E402  (the process-tree sampler, stage parser, machine facts)

from sleeptime.dataset import generate_corpus, write_project_jsonl  # noqa: E402
from sleeptime.prompts import sleep_messages, answer_messages  # noqa: E402
from sleeptime.testing.fake_openai import FaultConfig, spawn_server  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "orchestration_overhead.md"
SLEEP = {"name": "small", "max_tokens": 48}
TESTS = [{"name": "t0-direct", "verbosity": 0, "max_tokens": 16}, {"name": "t1-brief", "verbosity": 1, "max_tokens": 40}]


def sweep_config(corpus: Path, out: Path, base_url: str, c: int, workers: int) -> dict:
    model = {"model": "openai/fake", "api_base": base_url, "api_key": "x", "input_cost_per_million": 0.0,
             "output_cost_per_million": 0.0, "max_concurrency": c, "timeout_s": 30}
    return {
        "corpus": str(corpus), "output_dir": str(out), "models": {"fake": model}, "sleep_model": "fake",
        "test_model": "fake", "sleep_budgets": [{"name": "none", "max_tokens": 0}, SLEEP], "test_budgets": TESTS,
        "pass_at_k": 1, "concurrency": c, "workers": workers, "shard_size": 5,
        "response_cache": {"enabled": False},
    }


# --- in-process loops --------------------------------------------------------------------------------


async def _sweep(call, rows, c: int) -> dict:
    """A warm-up call, the sleep calls, then the test calls (timed, with this process's CPU)."""
    gate = asyncio.Semaphore(c)

    async def bounded(messages, max_tokens):
        async with gate:
            return await call(messages, max_tokens)

    await call([{"role": "user", "content": "warm-up"}], 1)  # litellm sets itself up on the first call
    t0 = time.perf_counter()
    notes = await asyncio.gather(*(bounded(sleep_messages(r.context.text), SLEEP["max_tokens"]) for r in rows))
    jobs = [
        (answer_messages(r.context.text, q.text, b["verbosity"], notes=note), b["max_tokens"])
        for r, note in zip(rows, notes) for q in r.queries for note in (None, note) for b in TESTS
    ]
    t1, cpu1 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(bounded(m, k) for m, k in jobs))
    t2, cpu2 = time.perf_counter(), time.process_time()
    return {"test_s": t2 - t1, "test_calls": len(jobs), "total_s": t2 - t0, "calls": len(rows) + len(jobs),
            "cpu_s": cpu2 - cpu1, "peak_mb": _measure.peak_rss_mib()}


def plain_loop(rows, base_url: str, c: int) -> dict:
    import litellm

    async def call(messages, max_tokens):
        reply = await litellm.acompletion(model="openai/fake", api_base=base_url, api_key="x", messages=messages,
                                          max_tokens=max_tokens, num_retries=0, timeout=30)
        return reply.choices[0].message.content

    return asyncio.run(_sweep(call, rows, c))


def gateway_loop(rows, base_url: str, c: int) -> dict:
    from sleeptime.model import ModelGateway, ModelSpec

    spec = ModelSpec(model="openai/fake", api_base=base_url, api_key="x", input_cost_per_million=0,
                     output_cost_per_million=0, max_concurrency=c, timeout_s=30)
    gateway = ModelGateway({"fake": spec})

    async def call(messages, max_tokens):
        return (await gateway.complete("fake", messages, max_tokens=max_tokens)).text

    return asyncio.run(_sweep(call, rows, c))


# --- the pipeline ---------------------------------------------------------------------------------------


def pipeline_run(tmp: Path, corpus: Path, base_url: str, c: int, workers: int) -> dict:
    out = tmp / f"out-w{workers}"
    config = tmp / f"config-w{workers}.yaml"
    config.write_text(yaml.safe_dump(sweep_config(corpus, out, base_url, c, workers)))
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_HOME": str(tmp / "prefect-home"),
           "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    m = pw.Measurement("pipeline", workers, 1)
    pw.run_measured([str(ROOT / ".venv" / "bin" / "sleeptime"), "run", "--config", str(config)], env, ROOT, m,
                    tmp / f"log-w{workers}.txt", 0.2, None, False)
    pw.parse_flow_output(m)
    if m.rc != 0:
        raise SystemExit(f"pipeline W={workers} failed (rc {m.rc}); log: {m.log_path}")
    window = next(((a, b) for name, a, b in pw.stages(m) or [] if name.startswith("test time")), None)
    test_calls = sum(pw.shard_calls(m, "test").values())
    cores = pw.cpu_between(m, *window) if window else {}
    test_s = window[1] - window[0] if window else None
    cpu_s = sum(v for k, v in cores.items() if k != "outside this run") * test_s if test_s else None
    return {"test_s": test_s, "test_calls": test_calls, "total_s": m.wall_s, "calls": m.model_calls, "cpu_s": cpu_s,
            "peak_mb": m.peak_rss / pw.MIB, "flow_s": m.flow_s,
            "other_cores": cores.get("outside this run"), "by_kind": {k: v for k, v in cores.items()}}


# --- report -----------------------------------------------------------------------------------------------


def render(args, rows: list[tuple[str, dict]], header: list[str]) -> str:
    ideal = args.concurrency / (args.latency_ms / 1000)
    plain = rows[0][1]["test_calls"] / rows[0][1]["test_s"]
    lines = [
        "# Orchestration overhead against the ideal (fixed-latency local provider)", "",
        f"Command: `.venv/bin/python bench/orchestration_overhead.py --contexts {args.contexts} --concurrency "
        f"{args.concurrency} --latency-ms {args.latency_ms}`", "",
        *header, "",
        f"Provider: sleeptime.testing.fake_openai in its own process, {args.latency_ms} ms per reply, at most "
        f"C={args.concurrency} requests at once: the ideal is C / latency = **{ideal:.0f} calls/s**.", "",
        "| executor | test calls | test stage s | calls/s | of ideal | of plain loop | CPU ms/call | peak MB | whole run s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        rate = r["test_calls"] / r["test_s"] if r["test_s"] else None
        cpu = 1000 * r["cpu_s"] / r["test_calls"] if r.get("cpu_s") and r["test_calls"] else None
        lines.append(
            f"| {label} | {r['test_calls']} | {pw.fmt(r['test_s'], '.2f')} | {pw.fmt(rate, '.0f')} | "
            f"{pw.fmt(100 * rate / ideal if rate else None, '.0f')} % | {pw.fmt(100 * rate / plain if rate else None, '.0f')} % | "
            f"{pw.fmt(cpu, '.1f')} | {pw.fmt(r['peak_mb'], '.0f')} | {pw.fmt(r['total_s'], '.1f')} |"
        )
    lines += ["", "CPU ms/call: CPU time of every process of the executor during the test stage, per test call "
              "(in-process loops: this process; pipeline: driver, Prefect server, Ray processes and actors). Peak MB: "
              "RSS of this process for the loops, of the whole process tree for the pipeline. Whole run: for the "
              "pipeline, the `sleeptime run` subprocess from spawn to exit (imports, Prefect server, Ray, sleep and "
              "test stages, gate, publish, report); for the loops, both stages."]
    for label, r in rows:
        if r.get("by_kind"):
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in r["by_kind"].items())
            lines.append(f"\n{label}, mean cores during the test stage: {kinds}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, default=50, help="contexts (41 calls each; default 50 = 2,050 calls)")
    p.add_argument("--concurrency", type=int, default=16, help="C: the provider's and the client's cap (default 16)")
    p.add_argument("--latency-ms", type=int, default=100, help="the provider's fixed latency (default 100)")
    p.add_argument("--workers", default="1,2", help="Ray worker counts for the pipeline runs (default 1,2)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    header = pw.machine_header()
    rows_corpus = generate_corpus(args.contexts, seed=5)
    fault = FaultConfig(latency_s=args.latency_ms / 1000, max_concurrency=args.concurrency)
    results: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="sleeptime-overhead-") as tmp_name, spawn_server(fault) as base_url:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus.jsonl"
        write_project_jsonl(rows_corpus, corpus)
        for label, fn in (("plain litellm loop", plain_loop), ("gateway loop", gateway_loop)):
            print(f"{label} ...", flush=True)
            results.append((label, fn(rows_corpus, base_url, args.concurrency)))
        for w in (int(x) for x in args.workers.split(",") if x):
            print(f"pipeline W={w} ...", flush=True)
            results.append((f"pipeline W={w} (Prefect + Ray)", pipeline_run(tmp, corpus, base_url, args.concurrency, w)))
    report = render(args, results, header)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
