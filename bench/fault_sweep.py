"""The main job against a provider that fails 30 % of calls, then the rerun that retries the rest.

    .venv/bin/python bench/fault_sweep.py [--contexts 20] [--fail-rate 0.3]

A local OpenAI-compatible server (sleeptime.testing.fake_openai, own process) fails a share of
requests in every way it knows -- 429 with Retry-After, 500, replies slower than the client's
timeout, malformed JSON, truncated bodies, dropped connections -- in equal parts. The real flow
(Prefect + Ray, 2 workers) runs the sweep, then runs again: the rerun must attempt only the items
that failed for good. Prints the counts and writes bench/results/fault_sweep.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pipeline_workers as pw  # noqa: E402  (machine facts)

from sleeptime.dataset import generate_corpus, write_project_jsonl  # noqa: E402
from sleeptime.testing.fake_openai import FaultConfig, spawn_server  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "fault_sweep.md"
KINDS = ("429", "500", "slow", "malformed", "truncated", "dropped")


def server_stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats") as reply:
        return json.loads(reply.read())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, default=20)
    p.add_argument("--fail-rate", type=float, default=0.3)
    p.add_argument("--max-retries", type=int, default=2, help="retries per call (default 2: some items fail for good)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    share = args.fail_rate / len(KINDS)
    fault = FaultConfig(latency_s=0.02, slow_s=3.0, retry_after_s=0.2, seed=1, deterministic=True,
                        **{f"rate_{k}": share for k in KINDS})
    from flows.pipeline import RunFailed, run

    header = pw.machine_header()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sleeptime-faults-") as tmp_name, spawn_server(fault) as base_url:
        tmp = Path(tmp_name)
        write_project_jsonl(generate_corpus(args.contexts, seed=5), tmp / "corpus.jsonl")
        model = {"model": "openai/fake", "api_base": base_url, "api_key": "x", "input_cost_per_million": 0.0,
                 "output_cost_per_million": 0.0, "max_concurrency": 16, "timeout_s": 1.0,
                 "max_retries": args.max_retries, "backoff_base_s": 0.05, "backoff_max_s": 1.0}
        config = tmp / "config.yaml"
        config.write_text(yaml.safe_dump({
            "corpus": str(tmp / "corpus.jsonl"), "output_dir": str(tmp / "out"), "models": {"flaky": model},
            "sleep_model": "flaky", "test_model": "flaky", "pass_at_k": 1, "max_failure_rate": 0.1,
            "response_cache": {"enabled": False}, "workers": 2,
        }))
        for attempt in ("sweep", "rerun"):
            before = server_stats(base_url)
            t0 = time.perf_counter()
            try:
                summary = run(config_path=str(config))
            except RunFailed as exc:
                summary = exc.summary
            wall = time.perf_counter() - t0
            after = server_stats(base_url)
            outcomes = {k: after["outcomes"].get(k, 0) - before["outcomes"].get(k, 0) for k in ("ok", *KINDS)}
            rows.append((attempt, summary, wall, after["requests"] - before["requests"], outcomes))

    lines = [
        "# Fault sweep: the main job against a provider failing "
        f"{args.fail_rate:.0%} of calls", "",
        f"Command: `.venv/bin/python bench/fault_sweep.py --contexts {args.contexts} --fail-rate {args.fail_rate}`", "",
        *header, "",
        f"Faults drawn per (request, attempt), {share:.1%} each: {', '.join(KINDS)}. Client: timeout 1 s, "
        f"{args.max_retries} retries with backoff (Retry-After 0.2 s honoured), 2 Ray workers, max_failure_rate 10 %.", "",
        "| run | status | HTTP requests | ok | " + " | ".join(KINDS) + " | calls | retries | failed items | rows written | wall s |",
        "|---|---|---:|---:|" + "---:|" * len(KINDS) + "---:|---:|---:|---:|---:|",
    ]
    for attempt, s, wall, requests, outcomes in rows:
        lines.append(
            f"| {attempt} | {s.status} | {requests} | {outcomes['ok']} | " + " | ".join(str(outcomes[k]) for k in KINDS)
            + f" | {s.counters.calls} | {s.counters.retries} | {len(s.failures)} | {s.variants_written + s.answers_written} | {wall:.1f} |"
        )
    first, second = rows[0][1], rows[1][1]
    lines += [
        "",
        f"Every attempt is accounted for: calls + retries + failed items "
        f"({first.counters.calls} + {first.counters.retries} + {len(first.failures)} = "
        f"{first.counters.calls + first.counters.retries + len(first.failures)} attempts; the server counted {rows[0][3]} requests: an "
        "attempt on a pooled connection the server had just closed fails before reaching it).",
        f"The rerun attempted {second.items_attempted} items: the {len(first.failures)} that failed for good, plus "
        "the answers of variants that only now exist.",
        "Failure reasons in the sweep: " + "; ".join(f"{n} x {r}" for r, n in first.failure_reasons().items()) + ".",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
