"""The published curves: accuracy against test-time tokens, the token reduction sleep time buys at
equal accuracy, sleep-time scaling, and the pass@k baseline at matched tokens.

Inputs are the frames of :mod:`sleeptime.analysis.frames`. Every function pools test models; filter
``answers`` to one ``test_model`` first when a warehouse holds several.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

NONE = "none"


def graded_answers(answers: pd.DataFrame) -> pd.DataFrame:
    """Only graded regular answers count: ungraded rows have no accuracy and extra pass@k samples are
    a separate baseline."""
    graded = answers[answers["correct"].notna()]
    if "sample_index" in graded:
        graded = graded[graded["sample_index"] == 0]
    return graded.assign(correct=graded["correct"].astype(bool))


def sleep_tokens_per_budget(sleep: pd.DataFrame | None) -> dict[str, float]:
    """Mean sleep-time completion tokens per context for each sleep budget, "none" at 0, so curves and
    orderings share one notion of how much a budget spent."""
    tokens = {NONE: 0.0}
    if sleep is not None and len(sleep):
        tokens.update({str(k): float(v) for k, v in sleep.groupby("sleep_budget")["sleep_tokens"].mean().items()})
    return tokens


def order_sleep_budgets(answers: pd.DataFrame, sleep: pd.DataFrame | None = None) -> list[str]:
    """Sleep budgets from cheapest to most expensive: by sleep tokens when the ``sleep`` frame is given,
    otherwise by mean test prompt tokens (a larger c' makes a longer prompt), "none" always first."""
    names = sorted(set(answers["sleep_budget"].astype(str)))
    if sleep is not None and len(sleep):
        tokens = sleep_tokens_per_budget(sleep)
        key = {n: tokens.get(n, np.inf) for n in names}
    else:
        key = answers.groupby("sleep_budget")["prompt_tokens"].mean().to_dict() if "prompt_tokens" in answers else {}
    return sorted(names, key=lambda n: (n != NONE, key.get(n, np.inf), n))


def order_test_budgets(answers: pd.DataFrame) -> list[str]:
    """Test budgets from cheapest to most expensive by mean raw-context completion tokens (all answers
    when there are no raw ones), because budget names carry no order of their own."""
    graded = graded_answers(answers)
    raw = graded[graded["sleep_budget"] == NONE]
    basis = raw if len(raw) else graded
    means = basis.groupby("test_budget")["completion_tokens"].mean()
    names = sorted(set(graded["test_budget"].astype(str)))
    return sorted(names, key=lambda n: (means.get(n, np.inf), n))


def accuracy_vs_tokens(answers: pd.DataFrame, sleep: pd.DataFrame | None = None) -> pd.DataFrame:
    """The operating points every curve is drawn from: one row per (sleep budget, test budget) with n,
    accuracy and mean test completion tokens (plus mean sleep tokens per context when ``sleep`` is given)."""
    graded = graded_answers(answers)
    curve = (
        graded.groupby(["sleep_budget", "test_budget"])
        .agg(n=("correct", "size"), accuracy=("correct", "mean"), mean_test_tokens=("completion_tokens", "mean"))
        .reset_index()
    )
    curve["accuracy"] = curve["accuracy"].astype(float)
    curve["mean_test_tokens"] = curve["mean_test_tokens"].astype(float)
    if sleep is not None:
        curve["mean_sleep_tokens_per_context"] = curve["sleep_budget"].map(sleep_tokens_per_budget(sleep)).astype(float)
    rank = {name: i for i, name in enumerate(order_sleep_budgets(graded, sleep))}
    curve["_s"] = curve["sleep_budget"].map(rank)
    return curve.sort_values(["_s", "mean_test_tokens", "test_budget"]).drop(columns="_s").reset_index(drop=True)


def mark_frontier(points: pd.DataFrame, x: str = "mean_test_tokens", y: str = "accuracy") -> pd.DataFrame:
    """Flags the points worth paying for (``on_frontier``): a point is off the frontier when another
    costs no more x and reaches strictly more y, or the same y for strictly less x; of exact
    duplicates only the first is kept."""
    xs = points[x].to_numpy(dtype=float)
    ys = points[y].to_numpy(dtype=float)
    order = np.lexsort((-ys, xs))  # by x ascending, then y descending; stable for exact duplicates
    on = np.zeros(len(points), dtype=bool)
    best = -np.inf
    for pos in order:
        if ys[pos] > best:
            on[pos] = True
            best = ys[pos]
    return points.assign(on_frontier=on)


def pareto_frontier(points: pd.DataFrame, x: str = "mean_test_tokens", y: str = "accuracy") -> pd.DataFrame:
    """The non-dominated points (lower x, higher y) sorted by x: the best accuracy each token budget can buy."""
    marked = mark_frontier(points, x, y)
    frontier = marked[marked["on_frontier"]].drop(columns="on_frontier")
    return frontier.sort_values(x, kind="mergesort").reset_index(drop=True)


def _cheapest_reaching(points: pd.DataFrame, level: float) -> tuple[float, str | None]:
    """Min mean test tokens among measured points with accuracy >= level (no interpolation: only budgets
    that were actually run count), with the test budget that achieves it."""
    reach = points[points["accuracy"] >= level - 1e-12]
    if reach.empty:
        return float("nan"), None
    best = reach.sort_values(["mean_test_tokens", "test_budget"]).iloc[0]
    return float(best["mean_test_tokens"]), str(best["test_budget"])


def token_reduction_at_equal_accuracy(
    curve: pd.DataFrame, baseline_sleep: str = NONE, levels: Iterable[float] | None = None
) -> pd.DataFrame:
    """How many times fewer test tokens each sleep budget needs for the accuracy the baseline reaches.

    For each sleep budget s != ``baseline_sleep`` and accuracy level a (default: the accuracies of the
    baseline's own points), tokens to reach a = the minimum mean test tokens among *measured* points
    with accuracy >= a (a step function, no linear interpolation between budgets), for s and for the
    baseline; ratio = baseline_tokens / sleep_tokens (NaN where s never reaches a).
    """
    base = curve[curve["sleep_budget"] == baseline_sleep]
    if levels is None:
        levels = sorted(set(base["accuracy"].astype(float)))
    levels = sorted(float(a) for a in levels)
    others = [s for s in dict.fromkeys(curve["sleep_budget"]) if s != baseline_sleep]
    rows = []
    for s in others:
        points = curve[curve["sleep_budget"] == s]
        for a in levels:
            b_tokens, b_test = _cheapest_reaching(base, a)
            s_tokens, s_test = _cheapest_reaching(points, a)
            if np.isnan(b_tokens) or np.isnan(s_tokens):
                ratio = float("nan")
            else:
                ratio = b_tokens / s_tokens if s_tokens > 0 else float("inf")
            rows.append(
                {
                    "sleep_budget": s,
                    "accuracy_level": a,
                    "baseline_test_budget": b_test,
                    "baseline_tokens": b_tokens,
                    "sleep_test_budget": s_test,
                    "sleep_tokens": s_tokens,
                    "ratio": ratio,
                }
            )
    columns = ["sleep_budget", "accuracy_level", "baseline_test_budget", "baseline_tokens",
               "sleep_test_budget", "sleep_tokens", "ratio"]
    return pd.DataFrame(rows, columns=columns)


def headline_token_reduction(curve: pd.DataFrame, baseline_sleep: str = NONE) -> dict:
    """The single "x times fewer test tokens at equal accuracy" number, chosen by a fixed rule so it
    cannot be cherry-picked: the highest accuracy the baseline reaches that some sleep budget also
    reaches, and at that level the sleep budget with the largest ratio. ``best_ratio_any_level`` is
    reported beside it for context."""
    table = token_reduction_at_equal_accuracy(curve, baseline_sleep)
    matched = table[table["ratio"].notna()]
    if matched.empty:
        return {"accuracy_level": None, "ratio": None, "rule": "no accuracy level reached by both"}
    level = matched["accuracy_level"].max()
    row = matched[matched["accuracy_level"] == level].sort_values("ratio", ascending=False).iloc[0]
    best_any = matched.sort_values("ratio", ascending=False).iloc[0]
    return {
        "accuracy_level": float(level),
        "baseline_sleep_budget": baseline_sleep,
        "baseline_test_budget": row["baseline_test_budget"],
        "baseline_tokens": float(row["baseline_tokens"]),
        "sleep_budget": row["sleep_budget"],
        "sleep_test_budget": row["sleep_test_budget"],
        "sleep_tokens": float(row["sleep_tokens"]),
        "ratio": float(row["ratio"]),
        "best_ratio_any_level": float(best_any["ratio"]),
        "best_ratio_accuracy_level": float(best_any["accuracy_level"]),
        "best_ratio_sleep_budget": best_any["sleep_budget"],
        "rule": "highest accuracy the baseline reaches that a sleep budget also reaches; best ratio there",
    }


def sleep_scaling(answers: pd.DataFrame, sleep: pd.DataFrame, test_budget: str) -> pd.DataFrame:
    """Accuracy as sleep compute grows at one fixed test budget: one row per sleep budget ("none" at 0
    tokens) with its mean sleep tokens per context and k (``samples``, the c' drafts per context)."""
    graded = graded_answers(answers)
    at = graded[graded["test_budget"] == test_budget]
    table = (
        at.groupby("sleep_budget")
        .agg(n=("correct", "size"), accuracy=("correct", "mean"), mean_test_tokens=("completion_tokens", "mean"))
        .reset_index()
    )
    table["accuracy"] = table["accuracy"].astype(float)
    tokens = sleep_tokens_per_budget(sleep)
    table["mean_sleep_tokens_per_context"] = table["sleep_budget"].map(tokens).astype(float)
    samples = sleep.groupby("sleep_budget")["samples"].max().to_dict() if len(sleep) else {}
    table["samples"] = table["sleep_budget"].map(lambda s: 0 if s == NONE else int(samples.get(s, 0)))
    table.insert(1, "test_budget", test_budget)
    rank = {name: i for i, name in enumerate(order_sleep_budgets(graded, sleep))}
    return table.sort_values("sleep_budget", key=lambda s: s.map(rank)).reset_index(drop=True)


def accuracy_gain_from_sleep(answers: pd.DataFrame, test_budget: str, sleep: pd.DataFrame | None = None) -> dict:
    """What scaling sleep time adds at one test budget: the best non-none sleep budget's accuracy minus
    raw ("none") accuracy, and the gain from the smallest to the largest non-none budget (ordered by
    sleep tokens when ``sleep`` is given, else by prompt tokens)."""
    graded = graded_answers(answers)
    at = graded[graded["test_budget"] == test_budget]
    acc = at.groupby("sleep_budget")["correct"].mean().astype(float)
    order = [s for s in order_sleep_budgets(at, sleep) if s != NONE and s in acc.index]
    out: dict = {"test_budget": test_budget, "accuracy_none": float(acc[NONE]) if NONE in acc.index else None}
    if not order:
        return out | {"best_sleep_budget": None, "gain_over_none": None}
    best = max(order, key=lambda s: (acc[s], -order.index(s)))  # ties go to the cheaper budget
    smallest, largest = order[0], order[-1]
    return out | {
        "best_sleep_budget": best,
        "best_accuracy": float(acc[best]),
        "gain_over_none": None if out["accuracy_none"] is None else float(acc[best]) - out["accuracy_none"],
        "smallest_sleep_budget": smallest,
        "accuracy_smallest": float(acc[smallest]),
        "largest_sleep_budget": largest,
        "accuracy_largest": float(acc[largest]),
        "gain_smallest_to_largest": float(acc[largest] - acc[smallest]),
    }


def pass_at_k_curve(passk: pd.DataFrame) -> pd.DataFrame:
    """The parallel test-time baseline with an oracle verifier: per (test budget, k), a query counts as
    solved when any of its first k raw samples is correct, and it costs the sum of their tokens; queries
    missing one of the first k samples are left out of that k."""
    columns = ["test_budget", "k", "n", "pass_at_k", "mean_test_tokens"]
    raw = passk[passk["correct"].notna()]
    if "variant_id" in raw:
        raw = raw[raw["variant_id"].isna()]
    if raw.empty:
        return pd.DataFrame(columns=columns)
    raw = raw.assign(correct=raw["correct"].astype(bool))
    keys = [c for c in ("test_model", "test_budget", "query_id") if c in raw]
    rows = []
    for k in range(1, int(raw["sample_index"].max()) + 2):  # k = 1 .. K, K = samples per query
        first = raw[raw["sample_index"] < k]
        per_query = first.groupby(keys).agg(
            samples=("sample_index", "nunique"), solved=("correct", "any"), tokens=("completion_tokens", "sum")
        )
        per_query = per_query[per_query["samples"] == k].reset_index()
        for test_budget, group in per_query.groupby("test_budget"):
            rows.append(
                {
                    "test_budget": test_budget,
                    "k": k,
                    "n": len(group),
                    "pass_at_k": float(group["solved"].mean()),
                    "mean_test_tokens": float(group["tokens"].mean()),
                }
            )
    return pd.DataFrame(rows, columns=columns).sort_values(["test_budget", "k"]).reset_index(drop=True)


def compare_pass_at_k(curve: pd.DataFrame, passk_curve: pd.DataFrame, baseline_sleep: str = NONE) -> pd.DataFrame:
    """Whether sleep time beats pass@k at matched test tokens: for each pass@k point, the best accuracy any
    sleep-time point (sleep budget != ``baseline_sleep``) reaches with no more mean test tokens, and the
    advantage (sleep accuracy - pass@k); NaN where no sleep-time point is that cheap."""
    sleep_points = curve[curve["sleep_budget"] != baseline_sleep]
    rows = []
    for p in passk_curve.itertuples(index=False):
        cheap = sleep_points[sleep_points["mean_test_tokens"] <= p.mean_test_tokens + 1e-9]
        row = {
            "test_budget": p.test_budget,
            "k": int(p.k),
            "pass_at_k": float(p.pass_at_k),
            "pass_at_k_tokens": float(p.mean_test_tokens),
            "sleep_budget": None,
            "sleep_test_budget": None,
            "sleep_accuracy": float("nan"),
            "sleep_tokens": float("nan"),
            "advantage": float("nan"),
        }
        if len(cheap):
            best = cheap.sort_values(["accuracy", "mean_test_tokens"], ascending=[False, True]).iloc[0]
            row |= {
                "sleep_budget": best["sleep_budget"],
                "sleep_test_budget": best["test_budget"],
                "sleep_accuracy": float(best["accuracy"]),
                "sleep_tokens": float(best["mean_test_tokens"]),
                "advantage": float(best["accuracy"]) - float(p.pass_at_k),
            }
        rows.append(row)
    columns = ["test_budget", "k", "pass_at_k", "pass_at_k_tokens", "sleep_budget", "sleep_test_budget",
               "sleep_accuracy", "sleep_tokens", "advantage"]
    return pd.DataFrame(rows, columns=columns)
