"""The selection policy on small hand-built frames (numbers computed, not measured)."""

import json

import pandas as pd
import pytest

from sleeptime.policy import Choice, Policy, PolicySettings, fit_policy, wilson_lower_bound

SLEEP_COLUMNS = ["context_id", "sleep_budget", "sleep_tokens", "sleep_cost_usd"]


def answers_frame(rows):
    """rows: (query_id, context_id, kind, sleep_budget, test_budget, correct, completion_tokens, cost_usd)."""
    return pd.DataFrame(
        rows,
        columns=["query_id", "context_id", "kind", "sleep_budget", "test_budget", "correct", "completion_tokens", "cost_usd"],
    )


def grid(contexts, queries_per_context, options, kind_of=lambda c, i: "k", correct_of=None):
    """Every query of every context answered under every option.

    options: {(sleep_budget, test_budget): (completion_tokens, cost_usd)}
    correct_of(context_id, kind, query_index, option) -> bool (default: always right)
    """
    rows = []
    for c in contexts:
        for i in range(queries_per_context):
            kind = kind_of(c, i)
            for option, (tokens, usd) in options.items():
                ok = True if correct_of is None else correct_of(c, kind, i, option)
                rows.append((f"{c}-q{i}", c, kind, *option, ok, tokens, usd))
    return answers_frame(rows)


def sleep_frame(rows):
    return pd.DataFrame(rows, columns=SLEEP_COLUMNS)


def uniform_sleep(contexts, per_budget):
    return sleep_frame([(c, b, t, u) for c in contexts for b, (t, u) in per_budget.items()])


def row(policy, scope, value, sleep_budget, test_budget):
    t = policy.table
    hit = t[(t.scope == scope) & (t.scope_value == value) & (t.sleep_budget == sleep_budget) & (t.test_budget == test_budget)]
    assert len(hit) == 1
    return hit.iloc[0]


# -- cost ------------------------------------------------------------------------------------


def test_cost_formula_on_a_hand_built_table():
    answers = answers_frame([
        ("q1", "c1", "k", "small", "t0", True, 2, 0.001),
        ("q2", "c2", "k", "small", "t0", False, 4, 0.003),
        ("q1", "c1", "k", "none", "t0", True, 6, 0.002),
        ("q2", "c2", "k", "none", "t0", True, 8, 0.004),
    ])
    sleep = sleep_frame([("c1", "small", 100, 0.01), ("c2", "small", 300, 0.03)])
    settings = PolicySettings(min_context_queries=1, test_token_weight=10, expected_queries_per_context=10)
    policy = fit_policy(answers, sleep, settings)

    corpus_small = row(policy, "corpus", "*", "small", "t0")
    # sleep tokens per context: mean(100, 300) = 200; mean test tokens: (2 + 4) / 2 = 3
    assert corpus_small.sleep_tokens_per_context == 200.0
    assert corpus_small.mean_test_tokens == 3.0
    assert corpus_small.cost_weighted == 200 / 10 + 10 * 3  # 50.0
    assert corpus_small.cost_usd == pytest.approx(0.02 / 10 + 0.002)
    assert (corpus_small.n, corpus_small.correct, corpus_small.accuracy) == (2, 1, 0.5)
    assert corpus_small.wilson_lower == pytest.approx(wilson_lower_bound(1, 2))

    # raw context: no sleep cost at all
    corpus_none = row(policy, "corpus", "*", "none", "t0")
    assert corpus_none.sleep_tokens_per_context == 0.0
    assert corpus_none.cost_weighted == 10 * 7.0
    assert corpus_none.cost_usd == pytest.approx(0.003)

    # a context scope uses that context's own sleep cost
    assert row(policy, "context", "c1", "small", "t0").cost_weighted == 100 / 10 + 10 * 2
    assert row(policy, "context", "c2", "small", "t0").cost_weighted == 300 / 10 + 10 * 4

    # the knobs of the formula
    other = fit_policy(answers, sleep, PolicySettings(test_token_weight=1, expected_queries_per_context=4))
    assert row(other, "corpus", "*", "small", "t0").cost_weighted == 200 / 4 + 1 * 3


def test_table_columns_and_one_choice_per_scope():
    contexts = ["c1", "c2"]
    options = {("none", "t0"): (5, 0.0), ("none", "t1"): (50, 0.0)}
    policy = fit_policy(grid(contexts, 40, options), uniform_sleep(contexts, {}), PolicySettings())
    for col in ["scope", "scope_value", "sleep_budget", "test_budget", "n", "correct", "accuracy", "wilson_lower",
                "mean_test_tokens", "sleep_tokens_per_context", "cost_weighted", "cost_usd", "adequate", "chosen"]:
        assert col in policy.table.columns
    assert set(policy.table.scope) == {"context", "kind", "corpus"}
    assert policy.table.groupby(["scope", "scope_value"])["chosen"].sum().max() == 1
    assert (policy.table.adequate == (policy.table.wilson_lower >= 0.9)).all()


# -- choosing --------------------------------------------------------------------------------


def test_cheaper_adequate_option_wins():
    contexts = [f"c{i}" for i in range(20)]
    options = {("none", "t0"): (10, 0.0), ("none", "t1"): (40, 0.0), ("small", "t0"): (10, 0.0)}
    sleep = uniform_sleep(contexts, {"small": (50, 0.0)})
    policy = fit_policy(grid(contexts, 10, options), sleep)
    choice = policy.choose("c3", "k")
    assert isinstance(choice, Choice)
    # costs: none+t0 = 100, small+t0 = 50/10 + 100 = 105, none+t1 = 400; all 200/200 correct
    assert (choice.sleep_budget, choice.test_budget) == ("none", "t0")
    assert choice.cost_weighted == 100.0
    assert choice.predicted_accuracy == 1.0
    assert choice.wilson_lower == pytest.approx(200 / (200 + 1.96**2))
    assert not choice.fallback


def test_accurate_but_small_n_is_not_adequate():
    contexts = [f"c{i}" for i in range(20)]
    big = grid(contexts, 10, {("none", "t1"): (40, 0.0)})  # 200/200 right, costly
    small = grid(contexts[:2], 10, {("none", "t0"): (5, 0.0)})  # 20/20 right, cheap, small n
    policy = fit_policy(pd.concat([big, small]), uniform_sleep(contexts, {}))
    cheap = row(policy, "corpus", "*", "none", "t0")
    assert cheap.accuracy == 1.0 and cheap.n == 20
    assert cheap.wilson_lower == pytest.approx(20 / (20 + 1.96**2))  # 0.839 < 0.9
    assert not cheap.adequate
    choice = policy.choose("c7", "k")
    assert (choice.sleep_budget, choice.test_budget) == ("none", "t1")
    # with a looser target the cheap one becomes adequate
    loose = fit_policy(pd.concat([big, small]), uniform_sleep(contexts, {}), PolicySettings(target_accuracy=0.8))
    assert loose.choose("c7", "k").test_budget == "t0"


def test_per_kind_scopes_give_different_choices():
    contexts = [f"c{i}" for i in range(20)]
    options = {("none", "t0"): (5, 0.0), ("none", "t3"): (100, 0.0)}

    def correct(c, kind, i, option):
        return option == ("none", "t3") or kind == "easy"

    answers = grid(contexts, 10, options, kind_of=lambda c, i: "easy" if i < 5 else "hard", correct_of=correct)
    policy = fit_policy(answers, uniform_sleep(contexts, {}))
    easy, hard = policy.choose("c1", "easy"), policy.choose("c1", "hard")
    assert (easy.scope, easy.scope_value, easy.test_budget) == ("kind", "easy", "t0")
    assert (hard.scope, hard.scope_value, hard.test_budget) == ("kind", "hard", "t3")
    # no kind, or a kind never measured: the corpus scope, where t0 is right only half the time
    for kind in (None, "never-seen"):
        c = policy.choose("c1", kind)
        assert (c.scope, c.scope_value, c.test_budget) == ("corpus", "*", "t3")
    assert row(policy, "corpus", "*", "none", "t0").accuracy == 0.5


def test_per_context_scope_used_when_the_context_has_enough_queries():
    others = [f"c{i}" for i in range(20)]
    options = {("none", "t0"): (5, 0.0), ("small", "t0"): (5, 0.0)}

    def correct(c, kind, i, option):
        # raw context works only for the special context; the sleep-time variant works everywhere
        return option == ("small", "t0") or c == "special"

    answers = pd.concat([
        grid(others, 5, options, correct_of=correct),  # 5 queries each: below min_context_queries
        grid(["special"], 60, options, correct_of=correct),
    ])
    sleep = uniform_sleep(others + ["special"], {"small": (200, 0.0)})
    policy = fit_policy(answers, sleep)
    assert set(policy.table.loc[policy.table.scope == "context", "scope_value"]) == {"special"}

    special = policy.choose("special", "k")
    assert (special.scope, special.scope_value) == ("context", "special")
    assert (special.sleep_budget, special.test_budget) == ("none", "t0")
    assert special.wilson_lower == pytest.approx(60 / (60 + 1.96**2))

    other = policy.choose("c3", "k")
    assert other.scope == "kind"
    assert (other.sleep_budget, other.test_budget) == ("small", "t0")

    # raising the threshold above 60 queries removes the context scope
    strict = fit_policy(answers, sleep, PolicySettings(min_context_queries=61))
    assert strict.choose("special", "k").scope == "kind"


def test_fallback_when_no_option_is_adequate():
    contexts = [f"c{i}" for i in range(20)]
    options = {("none", "t0"): (5, 0.0), ("none", "t1"): (30, 0.0), ("none", "t2"): (20, 0.0), ("small", "t2"): (20, 0.0)}
    answers = grid(contexts, 10, options, correct_of=lambda c, k, i, o: i % 2 == 0)  # every option 50 %
    sleep = uniform_sleep(contexts, {"small": (10, 0.0)})
    policy = fit_policy(answers, sleep)
    assert not policy.table.chosen.any()
    choice = policy.choose("c1", "k")
    assert choice.fallback
    # raw context at the largest test budget by mean test tokens (t1: 30 tokens)
    assert (choice.sleep_budget, choice.test_budget) == ("none", "t1")
    assert "target" in choice.reason and "0.9" in choice.reason
    assert choice.predicted_accuracy == 0.5
    # an explicit budget order overrides the token-based ordering
    ordered = fit_policy(answers, sleep, PolicySettings(test_budget_order=("t0", "t1", "t2")))
    assert ordered.choose("c1", "k").option == ("none", "t2")
    assert "FALLBACK" in policy.explain("c1")


def test_cost_metric_usd_and_tie_breaks():
    contexts = [f"c{i}" for i in range(20)]
    # weighted: A = 10*5 = 50 < B = 10*8 = 80; usd: A $0.002 > B $0.001
    options = {("none", "A"): (5, 0.002), ("none", "B"): (8, 0.001)}
    answers = grid(contexts, 10, options)
    sleep = uniform_sleep(contexts, {})
    assert fit_policy(answers, sleep).choose("c0", "k").test_budget == "A"
    assert fit_policy(answers, sleep, PolicySettings(cost_metric="usd")).choose("c0", "k").test_budget == "B"
    # equal costs: the higher Wilson bound, then the name
    tied = {("none", "Y"): (5, 0.0), ("none", "X"): (5, 0.0)}
    assert fit_policy(grid(contexts, 10, tied), sleep).choose("c0", "k").test_budget == "X"
    more_data = pd.concat([grid(contexts, 10, tied), grid([f"d{i}" for i in range(5)], 10, {("none", "Y"): (5, 0.0)})])
    assert fit_policy(more_data, sleep).choose("c0", "k").test_budget == "Y"
    with pytest.raises(ValueError):
        PolicySettings(cost_metric="euros")


def test_explain_names_scope_choice_and_rejected_cheaper_options():
    contexts = [f"c{i}" for i in range(20)]
    big = grid(contexts, 10, {("medium", "t1"): (40, 0.0), ("none", "t0"): (5, 0.0)},
               kind_of=lambda c, i: "ratio", correct_of=lambda c, k, i, o: o == ("medium", "t1") or i % 2 == 0)
    small_n = grid(contexts[:2], 10, {("small", "t0"): (5, 0.0)}, kind_of=lambda c, i: "ratio")
    sleep = uniform_sleep(contexts, {"medium": (150, 0.0), "small": (40, 0.0)})
    policy = fit_policy(pd.concat([big, small_n]), sleep)
    text = policy.explain("c0")
    assert policy.version in text
    assert "kind 'ratio'" in text
    assert "scope kind=ratio" in text
    assert "medium + t1" in text and "n=200" in text
    assert "context=c0" in text  # the more specific scope it could not use, and why
    assert "rejected cheaper options" in text
    assert "none + t0" in text and "below target" in text  # 50 % accurate
    assert "small + t0" in text and "not enough data" in text  # 20/20 right but n too small
    # a context the policy never saw still gets an explanation per kind of the table
    assert "kind 'ratio'" in policy.explain("unseen")


def test_version_records_and_determinism():
    contexts = [f"c{i}" for i in range(20)]
    answers = grid(contexts, 10, {("none", "t0"): (5, 0.0), ("small", "t0"): (3, 0.001)})
    sleep = uniform_sleep(contexts, {"small": (40, 0.01)})
    a = fit_policy(answers, sleep)
    b = fit_policy(answers.sample(frac=1.0, random_state=3), sleep.iloc[::-1])
    assert a.version == b.version and a.version.startswith("p_")
    pd.testing.assert_frame_equal(a.table, b.table)
    assert fit_policy(answers, sleep, PolicySettings(target_accuracy=0.95)).version != a.version
    flipped = answers.copy()
    flipped.loc[0, "correct"] = False
    assert fit_policy(flipped, sleep).version != a.version

    records = a.records()
    assert len(records) == len(a.table)
    assert all(r["version"] == a.version for r in records)
    assert json.loads(records[0]["settings_json"])["target_accuracy"] == 0.9
    json.dumps(records)  # plain Python values only
    assert isinstance(a, Policy)


def test_unlabeled_answers_are_ignored_and_empty_input_refused():
    answers = answers_frame([
        ("q1", "c1", "k", "none", "t0", None, 5, 0.0),
    ])
    with pytest.raises(ValueError, match="no labeled answers"):
        fit_policy(answers, sleep_frame([]))
    with pytest.raises(ValueError, match="lacks columns"):
        fit_policy(answers.drop(columns="kind"), sleep_frame([]))
