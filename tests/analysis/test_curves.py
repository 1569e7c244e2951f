"""Curves on hand-built frames whose answers are known by construction."""

import json

import numpy as np
import pandas as pd
import pytest

from sleeptime.analysis import AnalysisFrames
from sleeptime.analysis.curves import (
    accuracy_gain_from_sleep,
    accuracy_vs_tokens,
    compare_pass_at_k,
    headline_token_reduction,
    mark_frontier,
    pareto_frontier,
    pass_at_k_curve,
    sleep_scaling,
    token_reduction_at_equal_accuracy,
)
from sleeptime.analysis.headline import headline_numbers


def _point(sleep, test, acc, tokens):
    return {"sleep_budget": sleep, "test_budget": test, "accuracy": acc, "mean_test_tokens": tokens}


def test_pareto_frontier_removes_dominated_points():
    points = pd.DataFrame(
        [
            {"name": "a", "mean_test_tokens": 10, "accuracy": 0.5},
            {"name": "b", "mean_test_tokens": 20, "accuracy": 0.4},  # dominated by a
            {"name": "c", "mean_test_tokens": 30, "accuracy": 0.9},
            {"name": "d", "mean_test_tokens": 5, "accuracy": 0.2},
            {"name": "e", "mean_test_tokens": 30, "accuracy": 0.7},  # same x as c, lower y
            {"name": "f", "mean_test_tokens": 40, "accuracy": 0.9},  # same y as c, more x
        ]
    )
    frontier = pareto_frontier(points)
    assert list(frontier["name"]) == ["d", "a", "c"]
    marked = mark_frontier(points)
    assert dict(zip(marked["name"], marked["on_frontier"])) == {
        "a": True, "b": False, "c": True, "d": True, "e": False, "f": False,
    }


def test_token_reduction_at_equal_accuracy_on_a_known_curve():
    curve = pd.DataFrame(
        [
            _point("none", "t0", 0.2, 10.0),
            _point("none", "t1", 0.6, 50.0),
            _point("none", "t2", 0.9, 100.0),
            _point("big", "t0", 0.6, 10.0),
            _point("big", "t1", 0.9, 20.0),
            _point("small", "t0", 0.3, 12.0),
        ]
    )
    table = token_reduction_at_equal_accuracy(curve)
    big = table[table["sleep_budget"] == "big"].set_index("accuracy_level")
    assert big.loc[0.2, "ratio"] == pytest.approx(1.0)  # 10 / 10
    assert big.loc[0.6, "ratio"] == pytest.approx(5.0)  # 50 / 10
    assert big.loc[0.9, "ratio"] == pytest.approx(5.0)  # 100 / 20
    assert big.loc[0.9, "sleep_test_budget"] == "t1"
    small = table[table["sleep_budget"] == "small"].set_index("accuracy_level")
    assert small.loc[0.2, "ratio"] == pytest.approx(10 / 12)
    assert np.isnan(small.loc[0.9, "ratio"])  # never reaches 0.9

    headline = headline_token_reduction(curve)
    assert headline["accuracy_level"] == pytest.approx(0.9)
    assert headline["sleep_budget"] == "big" and headline["ratio"] == pytest.approx(5.0)


def test_pass_at_k_is_an_oracle_over_the_first_k_samples():
    rows = []
    # q1: wrong then right; q2: wrong twice; q3: right first. Tokens 10 per sample, 20 for q3.
    for q, outcomes, tokens in [("q1", [False, True], 10), ("q2", [False, False], 10), ("q3", [True, False], 20)]:
        for i, ok in enumerate(outcomes):
            rows.append({"query_id": q, "test_budget": "t0", "test_model": "m", "variant_id": None,
                         "sample_index": i, "correct": ok, "completion_tokens": tokens})
    # q4 lacks its second sample: it counts for k=1 only.
    rows.append({"query_id": "q4", "test_budget": "t0", "test_model": "m", "variant_id": None,
                 "sample_index": 0, "correct": True, "completion_tokens": 10})
    curve = pass_at_k_curve(pd.DataFrame(rows)).set_index("k")
    assert curve.loc[1, "n"] == 4 and curve.loc[1, "pass_at_k"] == pytest.approx(2 / 4)
    assert curve.loc[2, "n"] == 3 and curve.loc[2, "pass_at_k"] == pytest.approx(2 / 3)
    assert curve.loc[1, "mean_test_tokens"] == pytest.approx((10 + 10 + 20 + 10) / 4)
    assert curve.loc[2, "mean_test_tokens"] == pytest.approx((20 + 20 + 40) / 3)

    sleep_curve = pd.DataFrame([_point("none", "t0", 0.5, 12.5), _point("big", "t0", 0.9, 15.0),
                                _point("big", "t1", 1.0, 40.0)])
    compared = compare_pass_at_k(sleep_curve, curve.reset_index()).set_index("k")
    assert np.isnan(compared.loc[1, "advantage"])  # no sleep point within 12.5 tokens
    assert compared.loc[2, "sleep_test_budget"] == "t0"  # 15 <= 26.7 < 40
    assert compared.loc[2, "advantage"] == pytest.approx(0.9 - 2 / 3)


def synthetic_frames() -> AnalysisFrames:
    """Two contexts x 4 queries; sleep budgets none/small/large; test budgets t0/t1; 2 raw samples."""
    rng = np.random.default_rng(0)
    queries, variants, sleep, answers, passk = [], [], [], [], []
    accuracy = {("none", "t0"): 0.25, ("none", "t1"): 0.75, ("small", "t0"): 0.5, ("small", "t1"): 1.0,
                ("large", "t0"): 0.75, ("large", "t1"): 1.0}
    tokens = {"t0": 5, "t1": 30}
    for c in ("c1", "c2"):
        names = ["Amy", "Ben", "Cal", "Dan"]
        for i, name in enumerate(names):
            queries.append({"query_id": f"{c}q{i}", "context_id": c, "text": f"How many coins does {name} have?",
                            "gold_answer": "1", "kind": "derived"})
        for budget, n_lines, cost in (("small", 1, 20), ("large", 3, 60)):
            text = "\n".join(f"{n} has 1 + 1 = 2 coins." for n in names[:n_lines])
            variants.append({"variant_id": f"v{c}{budget}", "context_id": c, "sleep_budget": budget,
                             "sample_index": 0, "text": text, "completion_tokens": cost})
            sleep.append({"context_id": c, "sleep_budget": budget, "sleep_tokens": cost,
                          "sleep_cost_usd": cost * 1e-6, "samples": 1})
    for (sb, tb), acc in accuracy.items():
        for j, q in enumerate(queries):
            ok = (j % 4) < acc * 4
            row = {"query_id": q["query_id"], "context_id": q["context_id"], "kind": "derived",
                   "sleep_budget": sb, "test_budget": tb, "test_model": "m",
                   "variant_id": None if sb == "none" else f"v{q['context_id']}{sb}", "correct": bool(ok),
                   "completion_tokens": tokens[tb] - (5 if sb != "none" and tb == "t1" else 0),
                   "prompt_tokens": 50, "cost_usd": 1e-6}
            answers.append(row)
            if sb == "none":
                for k in range(2):
                    passk.append(row | {"sample_index": k, "correct": bool(ok or (k == 1 and rng.random() < 0.5))})
    return AnalysisFrames(pd.DataFrame(answers), pd.DataFrame(passk), pd.DataFrame(sleep),
                          pd.DataFrame(variants), pd.DataFrame(queries))


def test_accuracy_vs_tokens_and_sleep_scaling_on_synthetic_frames():
    frames = synthetic_frames()
    curve = accuracy_vs_tokens(frames.answers, frames.sleep)
    assert len(curve) == 6 and list(curve["sleep_budget"].unique()) == ["none", "small", "large"]
    row = curve[(curve["sleep_budget"] == "large") & (curve["test_budget"] == "t0")].iloc[0]
    assert row["accuracy"] == pytest.approx(0.75) and row["mean_sleep_tokens_per_context"] == pytest.approx(60)

    scaling = sleep_scaling(frames.answers, frames.sleep, "t0")
    assert list(scaling["sleep_budget"]) == ["none", "small", "large"]
    assert list(scaling["mean_sleep_tokens_per_context"]) == [0, 20, 60]
    assert list(scaling["samples"]) == [0, 1, 1]
    gain = accuracy_gain_from_sleep(frames.answers, "t0", frames.sleep)
    assert gain["gain_over_none"] == pytest.approx(0.5)
    assert gain["gain_smallest_to_largest"] == pytest.approx(0.25)


def test_headline_numbers_is_json_serializable():
    numbers = headline_numbers(synthetic_frames())
    text = json.dumps(numbers, allow_nan=False)
    assert json.loads(text)["accuracy_gain_from_sleep"]["test_budget"] == "t0"
    assert numbers["token_reduction_at_equal_accuracy"]["ratio"] > 1
    assert numbers["amortized_cost_reduction"]["queries_per_context"] == 10
    assert len(numbers["predictability"]["gain_per_quantile"]) == 5
    assert numbers["pass_at_k"]["k_max"] == 2
