"""The published cost formula and the amortization built on it, on hand numbers."""

import pandas as pd
import pytest

from sleeptime.analysis.cost import amortization_curve, amortized_cost_per_query, cost_reduction_at


def test_amortized_cost_formula_on_hand_numbers():
    assert amortized_cost_per_query(400, 100, 10) == pytest.approx((400 + 10 * 100) / 10)  # 140
    assert amortized_cost_per_query(400, 100, 10, t=1.0) == pytest.approx(50.0)
    assert amortized_cost_per_query(0, 7, 1) == pytest.approx(70.0)
    with pytest.raises(ValueError):
        amortized_cost_per_query(1, 1, 0)
    with pytest.raises(ValueError):
        amortized_cost_per_query(1, 1, -3)


def _frames():
    """One context, two queries. Raw: t0 20 tokens/query at accuracy 0.5, t1 100 tokens at 1.0.
    Sleep "s" (200 sleep tokens): t0 10 tokens/query at 1.0."""
    rows = []
    for sb, tb, tokens, correct in [("none", "t0", 20, [True, False]), ("none", "t1", 100, [True, True]),
                                    ("s", "t0", 10, [True, True])]:
        for i, ok in enumerate(correct):
            rows.append({"query_id": f"q{i}", "context_id": "c", "sleep_budget": sb, "test_budget": tb,
                         "correct": ok, "completion_tokens": tokens, "prompt_tokens": 10, "cost_usd": tokens * 1e-6})
    sleep = pd.DataFrame([{"context_id": "c", "sleep_budget": "s", "sleep_tokens": 200,
                           "sleep_cost_usd": 200 * 1e-6, "samples": 1}])
    return pd.DataFrame(rows), sleep


def test_amortization_curve_spreads_sleep_tokens_over_queries():
    answers, sleep = _frames()
    curve = amortization_curve(answers, sleep, pairs=[("s", "t0")], queries_per_context=[1, 10])
    assert set(zip(curve["sleep_budget"], curve["test_budget"])) == {("s", "t0"), ("none", "t0")}
    cost = curve.set_index(["sleep_budget", "queries_per_context"])["weighted_tokens_per_query"]
    assert cost[("s", 1)] == pytest.approx(200 + 10 * 10)
    assert cost[("s", 10)] == pytest.approx(200 / 10 + 10 * 10)
    assert cost[("none", 10)] == pytest.approx(10 * 20)
    usd = curve.set_index(["sleep_budget", "queries_per_context"])["usd_per_query"]
    assert usd[("s", 10)] == pytest.approx((200e-6 + 10 * 10e-6) / 10)


def test_cost_reduction_matches_each_baseline_with_the_cheapest_as_accurate_sleep_pair():
    answers, sleep = _frames()
    summary, table = cost_reduction_at(answers, sleep, n_queries=10)
    # sleep pair costs 20 + 100 = 120 per query at N = 10; raw t1 (accuracy 1.0) costs 1000.
    assert summary["baseline"]["test_budget"] == "t1"
    assert summary["sleep"]["sleep_budget"] == "s"
    assert summary["ratio"] == pytest.approx(1000 / 120)
    t0 = table.set_index("baseline_test_budget").loc["t0"]
    assert t0["ratio"] == pytest.approx(200 / 120)
    target, _ = cost_reduction_at(answers, sleep, n_queries=10, target_accuracy=0.5)
    assert target["baseline"]["test_budget"] == "t0"
