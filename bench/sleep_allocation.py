"""Sleep budgets allocated by traffic against the best uniform budget and no sleep time (issue 12).

The mixed easy/hard corpus is run through the real pipeline with every sleep budget for every
context (so that any allocation can be scored from recorded answers), and a seeded Zipf query log
of two weeks is simulated over its labeled queries. Week one is the traffic the policy sees; week
two is the traffic it is scored on. Labeled queries are split in halves: the policy is fitted on
one half; accuracy is measured on week-two queries of the other half.

Strategies, each with the policy's per-query test-time choice at the same target (0.9):

* traffic: the published policy's allocation (each context gets the c' its expected queries pay for);
* uniform <b>: every context gets sleep budget <b> (the c' is free in the fit, so the plan always
  has it; its real cost is charged in the score);
* no sleep: the raw context only.

Also each uniform budget and the raw context with the cheapest fixed test budget that reaches the
traffic strategy's held-out accuracy. Cost of a week: sleep tokens of every c' computed (once per
refresh) + t x test tokens of every week-two query (t = 10); per query = that / week-two queries.

    python bench/sleep_allocation.py [--warehouse W --corpus C]   # about 3 minutes with the run

Writes bench/results/sleep_allocation.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.policy_frontier import run_pipeline  # noqa: E402
from sleeptime.analysis.frames import load_frames  # noqa: E402
from sleeptime.config import load_config  # noqa: E402
from sleeptime.dataset import generate_mixed_corpus  # noqa: E402
from sleeptime.dataset.loaders import load_corpus, write_project_jsonl  # noqa: E402
from sleeptime.dataset.traffic import DEFAULT_START, logged_queries, query_counts, simulate_query_log  # noqa: E402
from sleeptime.policy import RAW, fit_policy, split_queries  # noqa: E402
from sleeptime.storage.warehouse import connect_read_only  # noqa: E402

CONTEXTS, SEED = 100, 11
WEEKLY_SWEEP, ZIPF_S, LOG_SEED = (200, 50, 1000, 5000), 1.1, 5
SENSITIVITY = ((200, 10.0),)  # (queries a week, sleep token multiplier)
T = 10.0
ACCURACY_TOLERANCE = 0.01


def score(plan_alloc: dict[str, str], choose, week2: pd.DataFrame, lookup: pd.DataFrame, sleep: pd.DataFrame,
          test_ids: set[str]) -> dict:
    """Accuracy on week-two held-out queries, cost of the whole week two."""
    picks = [choose(c, k) for c, k in zip(week2["context_id"], week2["kind"])]
    scored = week2.assign(sleep_budget=[p[0] for p in picks], test_budget=[p[1] for p in picks]).merge(
        lookup, on=["query_id", "sleep_budget", "test_budget"], how="left")
    if scored["correct"].isna().any():
        raise RuntimeError(f"{int(scored['correct'].isna().sum())} week-two queries have no recorded answer for their choice")
    tokens = sleep.set_index(["context_id", "sleep_budget"])["sleep_tokens"]
    sleep_tokens = float(sum(tokens.get((c, b), 0.0) for c, b in plan_alloc.items() if b != RAW))
    test_tokens = float(scored["completion_tokens"].sum())
    held = scored[scored["query_id"].isin(test_ids)]
    n = len(scored)
    return {
        "accuracy": float(held["correct"].mean()),
        "held_out_queries": int(len(held)),
        "sleep_tokens": sleep_tokens,
        "test_tokens": test_tokens,
        "total_cost": sleep_tokens + T * test_tokens,
        "cost_per_query": (sleep_tokens + T * test_tokens) / n,
        "contexts_per_budget": pd.Series(list(plan_alloc.values())).value_counts().to_dict(),
        "choices": scored.groupby(["sleep_budget", "test_budget"]).size().rename("n").reset_index()
        .assign(option=lambda f: f["sleep_budget"] + " + " + f["test_budget"]).set_index("option")["n"].to_dict(),
    }


def scenario(frames, corpus, config, base, weekly: int, sleep_scale: float = 1.0) -> dict:
    """Every strategy scored under a log of ``weekly`` queries a week; ``sleep_scale`` multiplies
    every c''s sleep tokens (a sensitivity check: a sleep model that thinks that much longer)."""
    answers = frames.answers
    sleep = frames.sleep.assign(sleep_tokens=frames.sleep["sleep_tokens"] * sleep_scale)
    log = simulate_query_log(corpus, 2 * weekly, seed=LOG_SEED, zipf_s=ZIPF_S, span_days=14.0)
    queries = logged_queries(corpus, log)
    split = DEFAULT_START + timedelta(days=7)
    week1 = [r for r in log if r["received_at"] < split]
    week2 = pd.DataFrame([{"context_id": q.context_id, "query_id": q.id, "kind": q.kind}
                          for r, q in zip(log, queries) if r["received_at"] >= split])
    traffic = query_counts(week1)
    fit_ids, test_ids = split_queries(answers["query_id"].unique())
    fit = answers[answers["query_id"].isin(fit_ids)]
    lookup = answers.groupby(["query_id", "sleep_budget", "test_budget"], as_index=False).agg(
        correct=("correct", "mean"), completion_tokens=("completion_tokens", "mean"))
    contexts = sorted(answers["context_id"].unique())
    budgets = [b for b in config.sleep_budget_order if b != RAW]

    results: dict[str, dict] = {}
    started = time.perf_counter()
    policy = fit_policy(fit, sleep, base, traffic=traffic)
    fit_s = time.perf_counter() - started
    alloc = {c: policy.sleep_budget_for(c) for c in contexts}
    results["traffic"] = score(alloc, lambda c, k: policy.choose(c, k).option, week2, lookup, sleep, test_ids)
    results["traffic"]["policy_version"] = policy.version

    for b in budgets:
        keep = fit[fit["sleep_budget"].isin([RAW, b])]
        free = sleep.assign(sleep_tokens=0.0, sleep_cost_usd=0.0)  # the c' is computed anyway: plan with it
        uniform = fit_policy(keep, free, base, traffic=traffic)
        results[f"uniform {b}"] = score({c: b for c in contexts}, lambda c, k, p=uniform: p.choose(c, k).option,
                                        week2, lookup, sleep, test_ids)
    raw_policy = fit_policy(fit[fit["sleep_budget"] == RAW], sleep, base, traffic=traffic)
    results["no sleep"] = score({c: RAW for c in contexts}, lambda c, k: raw_policy.choose(c, k).option,
                                week2, lookup, sleep, test_ids)

    # Fixed test budgets at the traffic strategy's accuracy.
    target = results["traffic"]["accuracy"]
    fixed: dict[str, dict] = {}
    for b in [*budgets, RAW]:
        for t in [x.name for x in config.test_budgets]:
            r = score({c: b for c in contexts}, lambda c, k, b=b, t=t: (b, t), week2, lookup, sleep, test_ids)
            if r["accuracy"] >= target - 1e-12:
                name = "no sleep" if b == RAW else f"uniform {b}"
                if name not in fixed or r["cost_per_query"] < fixed[name]["cost_per_query"]:
                    fixed[name] = {**r, "test_budget": t}

    def eligible(name: str, r: dict) -> bool:
        # Within a point of the traffic strategy's accuracy counts as the same accuracy (a point is
        # about one SE on these held-out queries); otherwise a uniform plan a hair less accurate
        # would drop out and flatter the traffic strategy.
        return name != "traffic" and r["accuracy"] >= target - ACCURACY_TOLERANCE

    uniform_pool = {f"{n} (policy test choice)": r for n, r in results.items() if n.startswith("uniform") and eligible(n, r)}
    uniform_pool.update({f"{n} + {r['test_budget']} (fixed)": r for n, r in fixed.items() if n.startswith("uniform")})
    best_name, best = min(uniform_pool.items(), key=lambda nr: nr[1]["cost_per_query"]) if uniform_pool else (None, None)
    saving = 1 - results["traffic"]["cost_per_query"] / best["cost_per_query"] if best else None
    # What the best uniform plan spent on contexts nobody asked in week two: what dropping those
    # c' with hindsight would save (a reference point, not a bound: an allocation can also move
    # contexts to another budget).
    asked = set(week2["context_id"])
    unasked_sleep = 0.0
    if best is not None:
        b = best_name.split(" ")[1]
        per = sleep.set_index(["context_id", "sleep_budget"])["sleep_tokens"]
        unasked_sleep = float(sum(per.get((c, b), 0.0) for c in contexts if c not in asked))
    return {
        "sleep_scale": sleep_scale,
        "corpus": {"contexts": len(contexts), "labeled_queries": int(answers["query_id"].nunique()), "seed": SEED},
        "log": {"weekly_queries": weekly, "zipf_s": ZIPF_S, "seed": LOG_SEED, "week1_contexts_asked": len(traffic),
                "week2_queries": int(len(week2)), "week2_contexts_asked": int(week2["context_id"].nunique()),
                "top10pct_share_week1": sum(sorted(traffic.values())[-len(contexts) // 10:]) / len(week1)},
        "policy_fit_s": fit_s,
        "strategies": results, "fixed": fixed,
        "best_uniform": best_name, "saving_vs_best_uniform": saving,
        "best_uniform_sleep_share": best["sleep_tokens"] / best["total_cost"] if best else None,
        "hindsight_saving_bound": unasked_sleep / best["total_cost"] if best else None,
        "goal_met": saving is not None and saving >= 0.30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", type=Path, help="a warehouse of the mixed corpus run on the full grid")
    parser.add_argument("--corpus", type=Path, help="the corpus that warehouse was run on")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sleep_allocation")
    parser.add_argument("--weekly", type=int, nargs="+", default=list(WEEKLY_SWEEP),
                        help="queries a week to simulate (the first is the headline)")
    args = parser.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    config = load_config(ROOT / "sleeptime.yaml")
    base = config.policy_settings.model_copy(update={"refresh_interval_days": 7.0, "traffic_window_days": 7.0})

    with tempfile.TemporaryDirectory(prefix="sleep-allocation-") as tmp:
        pipeline_s = None
        if args.warehouse is None:
            corpus_path = Path(tmp) / "mixed.jsonl"
            write_project_jsonl(generate_mixed_corpus(CONTEXTS, seed=SEED), corpus_path)
            pipeline_s = run_pipeline(corpus_path, Path(tmp) / "out")
            warehouse = Path(tmp) / "out" / "warehouse" / "sleeptime.duckdb"
        else:
            warehouse, corpus_path = args.warehouse, args.corpus
        corpus = load_corpus(corpus_path).rows
        con = connect_read_only(warehouse)
        try:
            frames = load_frames(con)
        finally:
            con.close()

    scenarios = [scenario(frames, corpus, config, base, weekly) for weekly in args.weekly]
    scenarios += [scenario(frames, corpus, config, base, weekly, scale) for weekly, scale in SENSITIVITY]
    out = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "pipeline_s": pipeline_s,
        "headline_weekly_queries": args.weekly[0],
        "scenarios": scenarios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(out) + "\n")
    for sc in scenarios:
        print(f"-- {sc['log']['weekly_queries']} queries a week, sleep tokens x{sc['sleep_scale']:g}")
        for name, r in {**sc["strategies"], **{f"{n} + {r['test_budget']} (fixed)": r for n, r in sc["fixed"].items()}}.items():
            print(f"{name:40s} accuracy {r['accuracy']:.3f}  cost/query {r['cost_per_query']:8.1f}  "
                  f"(sleep {r['sleep_tokens']:.0f}, test {r['test_tokens']:.0f})")
        if sc["best_uniform"]:
            print(f"best uniform: {sc['best_uniform']}; traffic allocation saves {sc['saving_vs_best_uniform']:.1%}")


def markdown(out: dict) -> str:
    first = out["scenarios"][0]
    lines = [
        "# Sleep budgets allocated by traffic (mixed corpus, Zipf query log)",
        "",
        f"`python bench/sleep_allocation.py` on {out['when']}; load average before: {out['load_before']}, after: "
        f"{out['load_after']}. Pipeline run (every budget everywhere, so that any allocation can be scored from "
        f"recorded answers): {out['pipeline_s'] or 0:.0f} s.",
        "",
        f"Corpus: {first['corpus']['contexts']} mixed easy/hard contexts, {first['corpus']['labeled_queries']} labeled "
        f"queries. Log: Zipf s = {ZIPF_S} over contexts, two weeks; the policy sees week one, week two is scored: accuracy "
        "on its queries from the held-out half of the labeled queries, cost of the whole week (every c' computed + "
        "10 x test tokens) per week-two query. All strategies target 0.9 with the policy's per-query test-time choice; "
        f"a uniform plan counts as equally accurate within {ACCURACY_TOLERANCE:.0%} of the traffic plan's accuracy.",
        "",
        "| queries a week | sleep tokens | contexts asked (week 1 / week 2) | strategy | held-out accuracy | cost per query "
        "| sleep tokens | test tokens | contexts per sleep budget |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for sc in out["scenarios"]:
        log = sc["log"]
        asked = f"x{sc['sleep_scale']:g} | {log['week1_contexts_asked']} / {log['week2_contexts_asked']}"
        for name, s in sc["strategies"].items():
            lines.append(f"| {log['weekly_queries']} | {asked} | {name} | {s['accuracy']:.3f} | {s['cost_per_query']:.1f} | "
                         f"{s['sleep_tokens']:.0f} | {s['test_tokens']:.0f} | {s['contexts_per_budget']} |")
        for name, s in sc["fixed"].items():
            lines.append(f"| {log['weekly_queries']} | {asked} | {name} + {s['test_budget']} (fixed test budget) | "
                         f"{s['accuracy']:.3f} | {s['cost_per_query']:.1f} | {s['sleep_tokens']:.0f} | {s['test_tokens']:.0f} | |")
    lines += ["", "| queries a week | sleep tokens | best uniform plan at the same accuracy | its cost that is sleep "
              "| saved by dropping its c' on contexts nobody asked in week two (hindsight) | traffic allocation costs less by "
              "| goal (30 %) |", "|---|---|---|---|---|---|---|"]
    for sc in out["scenarios"]:
        saving = sc["saving_vs_best_uniform"]
        share, bound = sc["best_uniform_sleep_share"], sc["hindsight_saving_bound"]
        lines.append(f"| {sc['log']['weekly_queries']} | x{sc['sleep_scale']:g} | {sc['best_uniform']} | "
                     f"{'n/a' if share is None else f'{share:.0%}'} | {'n/a' if bound is None else f'{bound:.1%}'} | "
                     f"{'n/a' if saving is None else f'{saving:.1%}'} | {'MET' if sc['goal_met'] else 'NOT MET'} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
