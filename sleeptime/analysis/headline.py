"""The published headline numbers, recomputed from one warehouse's frames in one JSON-ready dict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sleeptime.analysis.cost import cost_reduction_at
from sleeptime.analysis.curves import (
    NONE,
    graded_answers,
    accuracy_gain_from_sleep,
    accuracy_vs_tokens,
    compare_pass_at_k,
    headline_token_reduction,
    order_sleep_budgets,
    order_test_budgets,
    pass_at_k_curve,
    sleep_scaling,
)
from sleeptime.analysis.frames import AnalysisFrames
from sleeptime.analysis.predictability import predictability_gain, predictability_scores


def jsonable(value):
    """Plain Python values only, with NaN and infinities as None, so ``json.dumps`` (strict) always works."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return jsonable(value.to_dict(orient="records"))
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def pick_small_test_budget(answers: pd.DataFrame) -> str | None:
    """The cheapest test budget where raw accuracy is below 1 (the cheapest overall if raw is perfect
    everywhere): where sleep time has room to help, as in the paper's low-budget comparisons."""
    graded = graded_answers(answers)
    raw = graded[graded["sleep_budget"] == NONE].groupby("test_budget")["correct"].mean()
    order = order_test_budgets(graded)
    for name in order:
        if name in raw.index and raw[name] < 1.0:
            return name
    return order[0] if order else None


PROXY_SCORE = "max share of the question's content words stated in one line of c' (proxy for log P(q|c))"


def headline_numbers(
    frames: AnalysisFrames, small_test_budget: str | None = None, t: float = 10.0, n_queries: int = 10,
    scores: pd.DataFrame | None = None, score_label: str | None = None,
) -> dict:
    """Every published claim recomputed on this warehouse (token reduction at equal accuracy, gain from
    scaling sleep time, amortized cost at ``n_queries`` per context, predictability trend, sleep time vs
    pass@k), so a report or dashboard quotes numbers produced by one documented rule each.

    ``scores`` (query_id, context_id, score), when given, replace the text proxy in the
    predictability analysis: the paper's log P(q | c) from a model that gives log-probabilities."""
    answers, sleep = graded_answers(frames.answers), frames.sleep
    curve = accuracy_vs_tokens(answers, sleep)
    test_budget = small_test_budget or pick_small_test_budget(answers)
    sleep_order = [s for s in order_sleep_budgets(answers, sleep) if s != NONE]
    largest = sleep_order[-1] if sleep_order else None

    scaling = sleep_scaling(answers, sleep, test_budget) if test_budget else pd.DataFrame()
    gain = accuracy_gain_from_sleep(answers, test_budget, sleep) if test_budget else {}
    cost_summary, cost_table = cost_reduction_at(answers, sleep, n_queries=n_queries, t=t)

    predictability: dict = {"scored_with_sleep_budget": largest}
    if largest is not None and test_budget:
        if scores is None:
            scores, score_label = predictability_scores(frames.queries, frames.variants, largest), PROXY_SCORE
        summary, table = predictability_gain(answers, scores, test_budget, largest)
        predictability |= {
            "score": score_label or "log P(q | c)",
            "mean_score": float(scores["score"].mean()) if len(scores) else None,
            **summary,
            "table": table,
        }

    pk = pass_at_k_curve(frames.passk) if len(frames.passk) else pd.DataFrame()
    comparison = compare_pass_at_k(curve, pk) if len(pk) else pd.DataFrame()
    matched = comparison[comparison["advantage"].notna()] if len(comparison) else comparison
    pass_at_k = {
        "k_max": int(pk["k"].max()) if len(pk) else 0,
        "points": len(comparison),
        "points_with_cheaper_sleep_point": len(matched),
        "sleep_beats_pass_at_k": int((matched["advantage"] > 0).sum()) if len(matched) else 0,
        "sleep_ties_pass_at_k": int((matched["advantage"] == 0).sum()) if len(matched) else 0,
        "mean_advantage": float(matched["advantage"].mean()) if len(matched) else None,
        "comparison": comparison,
    }

    return jsonable(
        {
            "data": {
                "answers": len(answers),
                "contexts": int(answers["context_id"].nunique()),
                "queries": int(answers["query_id"].nunique()),
                "sleep_budgets": order_sleep_budgets(answers, sleep),
                "test_budgets": order_test_budgets(answers),
            },
            "curve": curve,
            "token_reduction_at_equal_accuracy": headline_token_reduction(curve),
            "accuracy_gain_from_sleep": gain,
            "sleep_scaling": scaling,
            "amortized_cost_reduction": cost_summary | {"table": cost_table},
            "predictability": predictability,
            "pass_at_k": pass_at_k,
        }
    )
