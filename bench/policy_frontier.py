"""The selection policy against every fixed choice, on held-out queries (issue 12's acceptance).

For each corpus (the demo corpus and the mixed easy/hard corpus, each run through the real
pipeline into a scratch folder unless a warehouse is given) and each target, the policy is fitted
on half of the labeled queries and scored on the other half, beside every fixed (sleep budget,
test budget) pair and every test-time-only pair scored on the same queries. "Met" means the policy
reached the target on the held-out queries and cost no more than the cheapest fixed pair that
reached it there (a pair picked with hindsight; the policy commits before seeing those queries).

    python bench/policy_frontier.py                       # runs both corpora (about 6 minutes)
    python bench/policy_frontier.py --demo-warehouse out/warehouse/sleeptime.duckdb --mixed-warehouse ...

Writes bench/results/policy_frontier.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sleeptime.analysis.frames import load_frames  # noqa: E402
from sleeptime.config import load_config  # noqa: E402
from sleeptime.policy import frontier  # noqa: E402
from sleeptime.storage.warehouse import connect_read_only  # noqa: E402

TARGETS = (0.8, 0.9, 0.95)
MIXED_CONTEXTS, MIXED_SEED = 100, 11


def run_pipeline(corpus: Path, out: Path) -> float:
    """``sleeptime run`` on ``corpus`` into ``out`` (the real pipeline, every budget everywhere)."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DO_NOT_TRACK": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sleeptime.cli", "run", "--corpus", str(corpus), "--output-dir", str(out)],
                   check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def warehouse_for(name: str, given: Path | None, scratch: Path) -> tuple[Path, float | None]:
    if given is not None:
        return given, None
    if name == "demo":
        corpus = ROOT / "data" / "demo" / "corpus.jsonl"
    else:
        from sleeptime.dataset import generate_mixed_corpus
        from sleeptime.dataset.loaders import write_project_jsonl

        corpus = scratch / "mixed.jsonl"
        write_project_jsonl(generate_mixed_corpus(MIXED_CONTEXTS, seed=MIXED_SEED), corpus)
    out = scratch / name
    seconds = run_pipeline(corpus, out)
    return out / "warehouse" / "sleeptime.duckdb", seconds


def measure(path: Path) -> tuple[list[dict], list[dict], dict]:
    config = load_config(ROOT / "sleeptime.yaml")
    settings = config.policy_settings
    con = connect_read_only(path)
    try:
        frames = load_frames(con)
    finally:
        con.close()
    started = time.perf_counter()
    per_target, fixed = frontier(frames.answers, frames.sleep, settings, TARGETS)
    seconds = time.perf_counter() - started
    info = {"labeled_queries": int(frames.answers["query_id"].nunique()),
            "contexts": int(frames.answers["context_id"].nunique()), "frontier_s": seconds}
    return per_target.to_dict("records"), fixed.to_dict("records"), info


def _f(value, fmt=".3f"):
    return "n/a" if value is None or value != value else format(value, fmt)


def markdown(results: dict) -> str:
    lines = [
        "# Selection policy against every fixed choice (held-out queries)",
        "",
        f"`python bench/policy_frontier.py` on {results['when']}; load average before: {results['load_before']}, "
        f"after: {results['load_after']}. Config: sleeptime.yaml (t = 10, 10 expected queries per context, z = 1.96).",
        "",
        "The policy is fitted on half of the labeled queries and scored on the other half; fixed pairs are "
        "scored on the same half, and the cheapest one that reaches the target there is picked with "
        "hindsight. Cost: weighted tokens per query (sleep tokens / 10 + 10 x test tokens).",
        "",
    ]
    for name, data in results["corpora"].items():
        info = data["info"]
        lines += [f"## {name} corpus ({info['contexts']} contexts, {info['labeled_queries']} labeled queries"
                  + (f"; pipeline run {data['pipeline_s']:.0f} s" if data.get("pipeline_s") else "") + ")", "",
                  "| target | policy accuracy | policy cost | cheapest fixed pair reaching it | its accuracy | its cost "
                  "| cheapest test-time-only pair | its cost | met | policy accuracy per kind |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in data["targets"]:
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["kind_accuracy"].items()))
            lines.append(
                f"| {r['target']:g} | {_f(r['policy_accuracy'])} | {_f(r['policy_cost_weighted'], '.1f')} | "
                f"{r['fixed_pair'] or 'none reaches it'} | {_f(r['fixed_accuracy'])} | {_f(r['fixed_cost'], '.1f')} | "
                f"{r['test_time_only_pair'] or 'none reaches it'} | {_f(r['test_time_only_cost'], '.1f')} | "
                f"{'MET' if r['met'] else 'NOT MET'} | {kinds} |"
            )
        lines += ["", "Every fixed pair on the held-out half:", "", "| sleep | test | accuracy | cost |", "|---|---|---|---|"]
        for f in sorted(data["fixed"], key=lambda f: f["cost_weighted"]):
            lines.append(f"| {f['sleep_budget']} | {f['test_budget']} | {f['accuracy']:.3f} | {f['cost_weighted']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-warehouse", type=Path)
    parser.add_argument("--mixed-warehouse", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "policy_frontier")
    args = parser.parse_args()
    results = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()), "corpora": {}}
    with tempfile.TemporaryDirectory(prefix="policy-frontier-") as tmp:
        for name, given in (("demo", args.demo_warehouse), ("mixed", args.mixed_warehouse)):
            path, pipeline_s = warehouse_for(name, given, Path(tmp))
            per_target, fixed, info = measure(path)
            results["corpora"][name] = {"targets": per_target, "fixed": fixed, "info": info, "pipeline_s": pipeline_s}
            for r in per_target:
                print(f"{name} target {r['target']:g}: policy {r['policy_accuracy']:.3f} at {r['policy_cost_weighted']:.1f}; "
                      f"cheapest fixed {r['fixed_pair']} {_f(r['fixed_accuracy'])} at {_f(r['fixed_cost'], '.1f')} -> "
                      f"{'MET' if r['met'] else 'NOT MET'}")
    results["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results) + "\n")
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
