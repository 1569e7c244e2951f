"""The held-out check on a synthetic dataset where the truth is known."""

import hashlib

import pandas as pd
import pytest

from sleeptime.policy import HeldOutReport, PolicySettings, held_out_check, split_queries

COLUMNS = ["query_id", "context_id", "kind", "sleep_budget", "test_budget", "correct", "completion_tokens", "cost_usd"]


def coin(*parts) -> bool:
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()[0] % 2 == 0


def synthetic(n_contexts=40, queries=10):
    """Option A = (small, t1): always right, 20 test tokens. Option B = (none, t0): right about half the
    time, 5 test tokens (cheaper). Also (none, t1): right 80 %, 20 tokens."""
    rows = []
    for c in range(n_contexts):
        cid = f"c{c:02d}"
        for i in range(queries):
            qid = f"{cid}-q{i}"
            rows.append((qid, cid, "k", "small", "t1", True, 20, 0.002))
            rows.append((qid, cid, "k", "none", "t0", coin(qid), 5, 0.0005))
            rows.append((qid, cid, "k", "none", "t1", i % 5 != 0, 20, 0.002))
    answers = pd.DataFrame(rows, columns=COLUMNS)
    # sleep cost differs per context so the per-context lookup matters
    sleep = pd.DataFrame(
        [(f"c{c:02d}", "small", 100 + 10 * c, 0.01) for c in range(n_contexts)],
        columns=["context_id", "sleep_budget", "sleep_tokens", "sleep_cost_usd"],
    )
    return answers, sleep


def test_policy_picks_the_always_right_option_on_held_out_queries():
    answers, sleep = synthetic()
    # At 0.99 over the mix not one context can afford the 50 % option (it would cost 1.25 points).
    report = held_out_check(answers, sleep, PolicySettings(target_accuracy=0.99, z=0.0))
    assert isinstance(report, HeldOutReport)
    assert 0 < report.n_test_queries < 400
    assert report.fallback_rate == 0.0
    assert report.n_unanswered == 0
    assert dict(report.choices) == {("small", "t1"): report.n_test_queries}

    fixed = report.fixed.set_index(["sleep_budget", "test_budget"])
    a = fixed.loc[("small", "t1")]
    assert a.accuracy == 1.0 and a.n == report.n_test_queries
    assert report.policy_accuracy == a.accuracy
    assert report.policy_cost_weighted == pytest.approx(a.cost_weighted)
    assert report.policy_cost_usd == pytest.approx(a.cost_usd)
    assert 0.3 < fixed.loc[("none", "t0")].accuracy < 0.7

    # cost computed by hand: each test query's own context's sleep tokens / 10 + 10 * 20 test tokens
    test_ids = split_queries(answers["query_id"].unique())[1]
    contexts = answers.drop_duplicates("query_id").set_index("query_id").loc[sorted(test_ids), "context_id"]
    sleep_tokens = sleep.set_index("context_id")["sleep_tokens"]
    expected = sum(sleep_tokens[c] / 10 + 10 * 20 for c in contexts) / len(contexts)
    assert report.policy_cost_weighted == pytest.approx(expected)
    assert report.n_test_queries == len(test_ids)

    # the cheapest fixed pair at least as accurate as the policy is A itself
    assert (report.best_fixed["sleep_budget"], report.best_fixed["test_budget"]) == ("small", "t1")
    assert set(report.test_time_only["sleep_budget"]) == {"none"}
    assert len(report.test_time_only) == 2
    assert "small + t1" in report.summary()


def test_at_a_lower_target_the_policy_mixes_options_and_beats_every_fixed_pair():
    """At 0.9 over the mix, a few contexts can take the cheap 50 % option: cheaper than A, still on
    target on the held-out half."""
    answers, sleep = synthetic()
    report = held_out_check(answers, sleep, PolicySettings(target_accuracy=0.9))
    assert set(dict(report.choices)) == {("small", "t1"), ("none", "t0")}
    assert report.policy_accuracy >= 0.9
    reaching = report.fixed[report.fixed["accuracy"] >= 0.9]
    assert report.policy_cost_weighted < reaching["cost_weighted"].min()


def test_fallback_and_best_fixed_when_nothing_is_adequate():
    answers, sleep = synthetic(n_contexts=10)
    answers = answers[answers["test_budget"] == "t0"]  # only B: about 50 %
    report = held_out_check(answers, sleep)
    assert report.fallback_rate == 1.0
    assert dict(report.choices) == {("none", "t0"): report.n_test_queries}
    assert report.best_fixed["test_budget"] == "t0"


def test_split_is_deterministic_disjoint_and_complete():
    ids = [f"q{i}" for i in range(1000)]
    fit, test = split_queries(ids)
    assert fit.isdisjoint(test)
    assert fit | test == set(ids)
    assert 400 < len(test) < 600
    assert split_queries(list(reversed(ids))) == (fit, test)
    # a query's side does not depend on the other queries in the list
    sub_fit, sub_test = split_queries(ids[:100])
    assert sub_test == test & set(ids[:100]) and sub_fit == fit & set(ids[:100])
    # another seed gives another split; the fraction is honoured
    assert split_queries(ids, seed="other")[1] != test
    assert 150 < len(split_queries(ids, holdout_fraction=0.2)[1]) < 250
    assert split_queries(ids, holdout_fraction=0.0)[1] == set()
    with pytest.raises(ValueError):
        split_queries(ids, holdout_fraction=1.5)


def test_held_out_check_is_deterministic_and_honours_settings():
    answers, sleep = synthetic(n_contexts=20)
    first = held_out_check(answers, sleep)
    again = held_out_check(answers.sample(frac=1.0, random_state=1), sleep)
    assert first.policy_version == again.policy_version
    assert first.policy_accuracy == again.policy_accuracy
    pd.testing.assert_frame_equal(first.fixed, again.fixed)
    with pytest.raises(ValueError, match="non-empty"):
        held_out_check(answers, sleep, holdout_fraction=0.0)
    # with a low enough target the cheap 50 % option is adequate and chosen
    loose = held_out_check(answers, sleep, PolicySettings(target_accuracy=0.3))
    assert dict(loose.choices) == {("none", "t0"): loose.n_test_queries}
