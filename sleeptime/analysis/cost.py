"""Amortized cost per query, as published: sleep-time tokens are paid once per context and shared by
every query on it; test-time tokens are weighted t (default 10) because test time is latency-critical.

    cost per query = (sleep tokens + t * sum of test tokens) / number of queries

USD figures use the recorded prices with no weight (money is money whenever it is spent).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from sleeptime.analysis.curves import NONE, graded_answers, accuracy_vs_tokens, mark_frontier


def amortized_cost_per_query(sleep_tokens: float, test_tokens_total: float, n_queries: int, t: float = 10.0) -> float:
    """The published cost model for one context, so every table and headline uses one formula."""
    if n_queries <= 0:
        raise ValueError(f"n_queries must be positive, got {n_queries}")
    return (float(sleep_tokens) + t * float(test_tokens_total)) / n_queries


def _per_context(answers: pd.DataFrame, sleep: pd.DataFrame) -> pd.DataFrame:
    """Per (context, pair) mean test tokens and USD per query joined with that context's sleep spend,
    the unit the amortization is computed over (a context missing sleep rows, e.g. "none", spent 0)."""
    graded = graded_answers(answers) if "correct" in answers else answers
    per = (
        graded.groupby(["context_id", "sleep_budget", "test_budget"])
        .agg(test_tokens=("completion_tokens", "mean"), test_usd=("cost_usd", "mean"))
        .reset_index()
    )
    spent = sleep[["context_id", "sleep_budget", "sleep_tokens", "sleep_cost_usd"]] if len(sleep) else None
    if spent is None:
        per["sleep_tokens"] = 0.0
        per["sleep_cost_usd"] = 0.0
    else:
        per = per.merge(spent, on=["context_id", "sleep_budget"], how="left")
    per["sleep_tokens"] = per["sleep_tokens"].fillna(0.0).astype(float)
    per["sleep_cost_usd"] = per["sleep_cost_usd"].fillna(0.0).astype(float)
    per["test_usd"] = per["test_usd"].fillna(0.0).astype(float)
    return per


def _with_baselines(answers: pd.DataFrame, pairs: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The pairs asked for plus the test-time-only pair at each of their test budgets, because a cost
    curve means little without the baseline it is compared against."""
    present = list(dict.fromkeys(zip(answers["sleep_budget"], answers["test_budget"])))
    if pairs is None:
        return present
    chosen = list(dict.fromkeys((str(s), str(t)) for s, t in pairs))
    for _, test_budget in list(chosen):
        if (NONE, test_budget) in present and (NONE, test_budget) not in chosen:
            chosen.append((NONE, test_budget))
    return [p for p in chosen if p in present]


def amortization_curve(
    answers: pd.DataFrame,
    sleep: pd.DataFrame,
    pairs: Sequence[tuple[str, str]] | None = None,
    queries_per_context: Iterable[int] = range(1, 21),
    t: float = 10.0,
) -> pd.DataFrame:
    """Expected cost per query when N queries share a context, for each (sleep budget, test budget) pair
    (all pairs when ``pairs`` is None; the test-time-only pairs at the same test budgets are always
    added): mean over contexts of (sleep_tokens[c] + t * N * mean test tokens per query[c]) / N, and
    the same in USD. Long format: sleep_budget, test_budget, queries_per_context,
    weighted_tokens_per_query, usd_per_query."""
    per = _per_context(answers, sleep)
    rows = []
    ns = [int(n) for n in queries_per_context]
    for n in ns:
        if n <= 0:
            raise ValueError(f"queries_per_context must be positive, got {n}")
    for sleep_budget, test_budget in _with_baselines(answers, pairs):
        group = per[(per["sleep_budget"] == sleep_budget) & (per["test_budget"] == test_budget)]
        for n in ns:
            spend = zip(group["sleep_tokens"], group["test_tokens"])
            tokens = [amortized_cost_per_query(s, n * m, n, t) for s, m in spend]
            usd = (group["sleep_cost_usd"] + n * group["test_usd"]) / n
            rows.append(
                {
                    "sleep_budget": sleep_budget,
                    "test_budget": test_budget,
                    "queries_per_context": n,
                    "weighted_tokens_per_query": float(np.mean(tokens)),
                    "usd_per_query": float(usd.mean()),
                }
            )
    columns = ["sleep_budget", "test_budget", "queries_per_context", "weighted_tokens_per_query", "usd_per_query"]
    return pd.DataFrame(rows, columns=columns)


def cost_reduction_at(
    answers: pd.DataFrame,
    sleep: pd.DataFrame,
    n_queries: int = 10,
    t: float = 10.0,
    target_accuracy: float | None = None,
) -> tuple[dict, pd.DataFrame]:
    """The published cost headline: how much cheaper per query sleep time is at equal accuracy with
    ``n_queries`` queries per context.

    The table has one row per test-time-only pair (accuracy a, cost at N = ``n_queries``) matched with
    the cheapest sleep-time pair whose accuracy is >= a, and ratio = baseline cost / sleep cost.
    The headline row, by a fixed rule: with ``target_accuracy``, the cheapest baseline pair reaching it;
    otherwise, among baseline pairs on the test-time-only cost/accuracy frontier (no cheaper baseline is
    as accurate) that some sleep pair matches, the most accurate one. Returns (headline dict, table).
    """
    curve = accuracy_vs_tokens(answers, sleep)
    cost = amortization_curve(answers, sleep, None, [n_queries], t)
    points = curve.merge(cost, on=["sleep_budget", "test_budget"])
    base = mark_frontier(points[points["sleep_budget"] == NONE], x="weighted_tokens_per_query", y="accuracy")
    sleepy = points[points["sleep_budget"] != NONE]
    rows = []
    for b in base.sort_values(["accuracy", "weighted_tokens_per_query"]).itertuples(index=False):
        row = {
            "baseline_test_budget": b.test_budget,
            "baseline_accuracy": float(b.accuracy),
            "baseline_cost": float(b.weighted_tokens_per_query),
            "baseline_usd": float(b.usd_per_query),
            "baseline_on_frontier": bool(b.on_frontier),
            "sleep_budget": None,
            "sleep_test_budget": None,
            "sleep_accuracy": float("nan"),
            "sleep_cost": float("nan"),
            "sleep_usd": float("nan"),
            "ratio": float("nan"),
        }
        match = sleepy[sleepy["accuracy"] >= b.accuracy - 1e-12]
        if len(match):
            m = match.sort_values(["weighted_tokens_per_query", "accuracy"], ascending=[True, False]).iloc[0]
            sleep_cost = float(m["weighted_tokens_per_query"])
            row |= {
                "sleep_budget": m["sleep_budget"],
                "sleep_test_budget": m["test_budget"],
                "sleep_accuracy": float(m["accuracy"]),
                "sleep_cost": sleep_cost,
                "sleep_usd": float(m["usd_per_query"]),
                "ratio": float(b.weighted_tokens_per_query) / sleep_cost if sleep_cost > 0 else float("inf"),
            }
        rows.append(row)
    table = pd.DataFrame(rows)
    summary: dict = {"queries_per_context": n_queries, "t": t, "target_accuracy": target_accuracy, "ratio": None}
    if table.empty:
        return summary, table
    if target_accuracy is not None:
        pick = table[(table["baseline_accuracy"] >= target_accuracy) & table["ratio"].notna()]
        pick = pick.sort_values(["baseline_cost", "baseline_accuracy"], ascending=[True, False])
        rule = "cheapest test-time-only pair reaching target_accuracy, vs the cheapest sleep pair as accurate"
    else:
        pick = table[table["baseline_on_frontier"] & table["ratio"].notna()]
        pick = pick.sort_values(["baseline_accuracy", "ratio"], ascending=[False, False])
        rule = "most accurate frontier test-time-only pair that a sleep pair matches, vs the cheapest such sleep pair"
    summary["rule"] = rule
    if pick.empty:
        return summary, table
    best = pick.iloc[0]
    summary |= {
        "baseline": {"sleep_budget": NONE, "test_budget": best["baseline_test_budget"],
                     "accuracy": best["baseline_accuracy"], "cost_per_query": best["baseline_cost"],
                     "usd_per_query": best["baseline_usd"]},
        "sleep": {"sleep_budget": best["sleep_budget"], "test_budget": best["sleep_test_budget"],
                  "accuracy": best["sleep_accuracy"], "cost_per_query": best["sleep_cost"],
                  "usd_per_query": best["sleep_usd"]},
        "ratio": float(best["ratio"]),
    }
    return summary, table
