"""The predictability proxy on hand-built text, and the quantile split."""

import pandas as pd
import pytest

from sleeptime.analysis.predictability import predictability_gain, predictability_scores


def _queries(texts, context_id="c"):
    return pd.DataFrame([{"query_id": f"q{i}", "context_id": context_id, "text": t} for i, t in enumerate(texts)])


def test_score_is_the_share_of_question_words_stated_in_one_line():
    variants = pd.DataFrame([
        {"variant_id": "v", "context_id": "c", "sleep_budget": "large", "sample_index": 0, "completion_tokens": 9,
         "text": "In the end, Mia has 14 - 4 = 10 marbles.\nLeo and Ava have 3 + 5 = 8 marbles together."},
        {"variant_id": "w", "context_id": "c", "sleep_budget": "small", "sample_index": 0, "completion_tokens": 1,
         "text": "Nothing here."},
    ])
    queries = _queries([
        "How many marbles does Mia have in the end?",         # {mia, end}: one line has both -> 1.0
        "How many marbles do Leo and Zoe have together?",     # {leo, zoe, together}: 2 of 3 in one line
        "How many marbles does Zoe have in the end?",         # {zoe, end}: only "end" -> 0.5
    ])
    scores = predictability_scores(queries, variants).set_index("query_id")["score"]  # default: largest budget
    assert scores["q0"] == pytest.approx(1.0)
    assert scores["q1"] == pytest.approx(2 / 3)
    assert scores["q2"] == pytest.approx(0.5)
    # the unit "marbles" is in every question and so is not a content word; with c' = "Nothing here." all are 0
    small = predictability_scores(queries, variants, budget="small").set_index("query_id")["score"]
    assert (small == 0).all()
    # a stated fact with no "end" describes the set-up, so it answers "at the start"
    start = _queries(["How many marbles does Leo have at the start?", "How many marbles does Mia have at the start?",
                      "How many marbles does Zoe have?"])
    start_scores = predictability_scores(start, variants).set_index("query_id")["score"]
    assert start_scores["q0"] == pytest.approx(1.0) and start_scores["q1"] == pytest.approx(0.5)
    # a context without a variant at that budget has no score
    other = predictability_scores(_queries(["How many marbles does Mia have?"], "d"), variants)
    assert other["score"].isna().all()


def test_quantiles_split_ties_evenly_and_gain_is_measured_per_quantile():
    n = 10
    scores = pd.DataFrame({"query_id": [f"q{i}" for i in range(n)], "context_id": "c",
                           "score": [0.5] * 6 + [1.0] * 4})  # heavy ties
    rows = []
    for i in range(n):
        rows.append({"query_id": f"q{i}", "sleep_budget": "none", "test_budget": "t0", "correct": False})
        rows.append({"query_id": f"q{i}", "sleep_budget": "s", "test_budget": "t0", "correct": i >= 6})
    summary, table = predictability_gain(pd.DataFrame(rows), scores, "t0", "s", quantiles=5)
    assert list(table["n"]) == [2, 2, 2, 2, 2]
    assert list(table["gain"]) == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert summary["trend"] == pytest.approx(1.0)
    assert summary["spearman"] > 0.9
    few, small_table = predictability_gain(pd.DataFrame(rows), scores.head(3), "t0", "s", quantiles=5)
    assert few["quantiles"] == 3 and list(small_table["n"]) == [1, 1, 1]
