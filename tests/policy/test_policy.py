"""The selection policy on small hand-built frames (numbers computed, not measured)."""

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from sleeptime.policy import (
    Policy,
    PolicySettings,
    Unsatisfiable,
    fit_policy,
    required_accuracy,
    wilson_lower_bound,
)
from sleeptime.policy._estimate import STRENGTH_RANGE, estimate, marginal_strength
from sleeptime.policy._fit import fit_policy_from_stats, summarise_answers
from sleeptime.policy._optimize import Problem, optimise

SLEEP_COLUMNS = ["context_id", "sleep_budget", "sleep_tokens", "sleep_cost_usd"]
ANSWER_COLUMNS = ["query_id", "context_id", "kind", "sleep_budget", "test_budget", "correct", "completion_tokens", "cost_usd"]


def answers_frame(rows):
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS)


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


def uniform_sleep(contexts, per_budget):
    return pd.DataFrame([(c, b, t, u) for c in contexts for b, (t, u) in per_budget.items()], columns=SLEEP_COLUMNS)


# -- the target and the optimiser ---------------------------------------------------------------


def test_required_accuracy_is_where_the_wilson_bound_meets_the_target():
    need = required_accuracy(0.9, 250, 1.96)
    assert wilson_lower_bound(need * 250, 250) == pytest.approx(0.9, abs=1e-6)
    assert 0.9 < need < 0.95
    assert required_accuracy(0.9, 250, 0.0) == pytest.approx(0.9, abs=1e-9)  # no confidence: the target itself
    assert required_accuracy(0.99, 20, 1.96) == float("inf")  # 20/20 cannot show 99 %


def test_a_cheaper_mix_beats_a_per_kind_choice():
    """Kind a reaches 0.85 cheaply and 0.95 expensively; kind b is right either way. Judged per kind
    (the old rule), a needs the expensive option; judged on the mix (half a, half b) the cheap
    option everywhere gives 0.925 >= 0.9 at a fraction of the cost."""
    contexts = [f"c{i}" for i in range(40)]
    options = {("none", "cheap"): (5, 0.0), ("none", "dear"): (100, 0.0)}

    kind_of = lambda c, i: "a" if i % 2 == 0 else "b"  # noqa: E731
    # Kind a: 17 of every 20 right with the cheap option, 19 of 20 with the dear one.
    answers = grid(contexts, 20, options, kind_of=kind_of, correct_of=lambda c, k, i, o: k == "b" or
                   ((int(c[1:]) * 7 + i) % 20) < (17 if o[1] == "cheap" else 19))
    policy = fit_policy(answers, uniform_sleep(contexts, {}), PolicySettings(target_accuracy=0.9, z=0.0))
    assert policy.summary["target_met"]
    picks = {policy.choose(c, k).test_budget for c in contexts for k in ("a", "b")}
    assert picks == {"cheap"}
    assert policy.summary["expected_accuracy"] >= 0.9
    assert policy.summary["kind_accuracy"]["a"] < 0.9  # the per-kind rule would have refused this
    assert policy.summary["expected_cost"] == pytest.approx(10 * 5)


def test_the_lagrangian_spends_where_accuracy_is_cheapest():
    """Two contexts, one option each step: a point of accuracy costs 10 on c0 and 100 on c1, so the
    required accuracy is bought on c0 first."""
    acc = np.array([[[[0.5, 0.9]]], [[[0.5, 0.9]]]])  # [C=2, J=1, S=1, T=2]
    test_cost = np.array([[[0.0, 4.0]]])  # [J, S, T]
    problem = Problem(accuracy=acc, test_cost=test_cost, sleep_cost=np.zeros((2, 1)),
                      queries=np.array([10.0, 10.0]), mix=np.ones((2, 1)))
    plan, met = optimise(problem, 0.7)
    assert met and plan.accuracy == pytest.approx(0.7)
    assert sorted(plan.option_test[:, 0].tolist()) == [0, 1]  # one context upgraded, not both
    plan, met = optimise(problem, 0.95)
    assert not met and plan.accuracy == pytest.approx(0.9)  # unreachable: the most accurate plan


def test_kind_floors_hold_even_when_the_mix_does_not_need_them():
    contexts = [f"c{i}" for i in range(30)]
    options = {("none", "cheap"): (5, 0.0), ("none", "dear"): (100, 0.0)}
    kind_of = lambda c, i: "a" if i < 2 else "b"  # noqa: E731  # a is 20 % of the mix
    answers = grid(contexts, 10, options, kind_of=kind_of,
                   correct_of=lambda c, k, i, o: k == "b" or o[1] == "dear" or (int(c[1:]) + i) % 2 == 0)
    free = fit_policy(answers, uniform_sleep(contexts, {}), PolicySettings(target_accuracy=0.8, z=0.0))
    assert free.summary["kind_accuracy"]["a"] < 0.8
    floored = fit_policy(answers, uniform_sleep(contexts, {}),
                         PolicySettings(target_accuracy=0.8, z=0.0, kind_floors={"a": 0.9}))
    assert floored.summary["kind_accuracy"]["a"] >= 0.9
    assert floored.choose("c3", "a").test_budget == "dear"
    assert floored.summary["expected_cost"] > free.summary["expected_cost"]


# -- estimates -----------------------------------------------------------------------------------


def test_shrinkage_moves_a_perfect_context_above_the_corpus_rate_but_not_past_its_bound():
    """Corpus: 60 % right at the option; contexts differ (some 30 %, some 90 %). A context with 10/10
    is estimated above 60 % (its answers count at once) but below 100 %, and below the estimate's
    own upper reach: the lower bound stays under the point estimate."""
    rows = []
    for c in range(30):
        rate = (0.3, 0.6, 0.9)[c % 3]
        for i in range(10):
            rows.append((f"c{c}-q{i}", f"c{c}", "k", "none", "t", (i / 10) < rate, 5, 0.0))
    rows += [(f"star-q{i}", "star", "k", "none", "t", True, 5, 0.0) for i in range(10)]
    stats, _ = summarise_answers(answers_frame(rows))
    est = estimate(stats, 1.96)
    corpus_rate = float(est.corpus["accuracy"].iloc[0])
    star = est.context[est.context["context_id"] == "star"].iloc[0]
    assert corpus_rate < star["estimate"] < 1.0
    assert est.m_context < 100  # contexts really differ: a modest prior

    policy = fit_policy(answers_frame(rows), uniform_sleep([], {}), PolicySettings(z=1.96))
    choice = policy.choose("star", "k")
    assert corpus_rate < choice.estimate < 1.0
    assert choice.estimate_lower < choice.estimate
    assert choice.n == 10


def test_the_prior_strength_measures_how_much_groups_differ():
    n = np.full(8, 20)
    alike = marginal_strength(np.full(8, 10), n, np.full(8, 0.5))
    assert alike == STRENGTH_RANGE[1]  # no difference beyond noise: complete pooling
    apart = marginal_strength(np.array([2, 18] * 4), n, np.full(8, 0.5))
    assert apart < 5  # 10 % vs 90 %: each group mostly speaks for itself
    some = marginal_strength(np.array([7, 13] * 4), n, np.full(8, 0.5))
    assert apart < some < alike


# -- traffic and allocation ------------------------------------------------------------------------


def sleep_grid(contexts, answers_correct):
    """c' 'big' makes every answer right at the cheap test budget; the raw context needs the dear
    test budget. answers_correct(c) -> whether raw+cheap is right."""
    options = {("none", "cheap"): (5, 0.0), ("none", "dear"): (50, 0.0), ("big", "cheap"): (5, 0.0)}
    return grid(contexts, 10, options,
                correct_of=lambda c, k, i, o: o != ("none", "cheap") or answers_correct(c))


def test_allocation_follows_a_hand_built_traffic_table():
    """The c' costs 2000 sleep tokens and saves 10 x 45 = 450 weighted tokens per query: it pays from
    about 4.4 queries on. Busy contexts get it, quiet ones answer from the raw context."""
    contexts = [f"c{i}" for i in range(20)]
    answers = sleep_grid(contexts, lambda c: False)
    sleep = uniform_sleep(contexts, {"big": (2000, 0.0)})
    traffic = {"c0": 500, "c1": 100, "c2": 20, "c3": 1}  # others: none in the window
    settings = PolicySettings(target_accuracy=0.9, z=0.0, traffic_prior_windows=0.5)
    policy = fit_policy(answers, sleep, settings, traffic=traffic)
    assert policy.summary["traffic"]["queries_in_window"] == 621
    mean_rate = 621 / 20
    assert policy.allocation["c0"][1] == pytest.approx((0.5 * mean_rate + 500) / 1.5)
    assert policy.allocation["c9"][1] == pytest.approx(0.5 * mean_rate / 1.5)  # ~10.35: never asked, a prior
    for c in ("c0", "c1", "c2"):
        assert policy.sleep_budget_for(c) == "big"
        assert policy.choose(c, "k").option == ("big", "cheap")
    quiet = PolicySettings(target_accuracy=0.9, z=0.0, traffic_prior_windows=0.05)
    policy = fit_policy(answers, sleep, quiet, traffic=traffic)
    assert policy.sleep_budget_for("c0") == "big"
    assert policy.sleep_budget_for("c9") == "none"  # expects 1.5 queries: the c' would not pay
    # The target is over the mix: the 16 quiet contexts are 4 % of it, so the cheapest plan answers
    # them with the cheap (here always wrong) option; a kind floor forbids that.
    assert policy.choose("c9", "k").option == ("none", "cheap")
    assert policy.summary["expected_accuracy"] >= 0.9
    floored = fit_policy(answers, sleep, PolicySettings(target_accuracy=0.9, z=0.0, traffic_prior_windows=0.05,
                                                        kind_floors={"k": 0.99}), traffic=traffic)
    assert floored.choose("c9", "k").option == ("none", "dear")
    alloc = policy.summary["allocation"]
    assert alloc["sleep_calls"] < alloc["sleep_calls_full_grid"] == 20
    # Re-planned when traffic moves, without a refit: a quiet context that gets busy gets its c'.
    assert policy.sleep_budget_for("c9", expected_queries=100) == "big"
    assert policy.sleep_budget_for("c0", expected_queries=0.5) == "none"
    # An unseen context is allocated by its own expected traffic.
    assert policy.sleep_budget_for("new", expected_queries=100) == "big"
    assert policy.sleep_budget_for("new", expected_queries=1) == "none"


def test_no_traffic_uses_the_configured_default_for_every_context():
    contexts = [f"c{i}" for i in range(10)]
    answers = sleep_grid(contexts, lambda c: False)
    sleep = uniform_sleep(contexts, {"big": (2000, 0.0)})
    many = fit_policy(answers, sleep, PolicySettings(z=0.0, expected_queries_per_context=100))
    few = fit_policy(answers, sleep, PolicySettings(z=0.0, expected_queries_per_context=2))
    assert {many.sleep_budget_for(c) for c in contexts} == {"big"}
    assert {few.sleep_budget_for(c) for c in contexts} == {"none"}
    assert many.choose("c1", "k").cost_weighted == pytest.approx(2000 / 100 + 10 * 5)


# -- the stored artifact and selection ---------------------------------------------------------------


def mixed_policy(**settings):
    contexts = [f"c{i}" for i in range(12)]
    options = {(s, t): (tok, 0.001 * tok) for s in ("none", "small") for t, tok in (("t0", 4), ("t2", 40))}
    kind_of = lambda c, i: ("lookup", "derived", "counterfactual")[i % 3]  # noqa: E731

    def correct(c, kind, i, o):
        hard = int(c[1:]) % 3 == 0
        p = {("none", "t0"): 0.5, ("none", "t2"): 0.85, ("small", "t0"): 0.8, ("small", "t2"): 0.97}[o]
        p -= 0.3 if hard else 0.0
        p -= 0.1 if kind == "counterfactual" else 0.0
        return ((int(c[1:]) * 13 + i * 7) % 20) / 20 < p

    answers = grid(contexts, 12, options, kind_of=kind_of, correct_of=correct)
    sleep = uniform_sleep(contexts, {"small": (60, 0.01)})
    settings = {"target_accuracy": 0.75, **settings}
    return fit_policy(answers, sleep, PolicySettings(test_budget_order=("t0", "t2"), **settings)), contexts


def test_the_stored_rows_are_the_policy():
    policy, contexts = mixed_policy()
    rows = policy.records()
    # Through JSON (as a warehouse round trip would turn NaN into NULL) and back.
    table = pd.DataFrame(json.loads(pd.DataFrame(rows).to_json(orient="records")))
    loaded = Policy.from_rows(table)
    assert loaded.version == policy.version and loaded.settings == policy.settings
    for c in [*contexts, "unseen"]:
        assert loaded.sleep_budget_for(c) == policy.sleep_budget_for(c)
        for kind in ("lookup", "derived", "counterfactual", None, "unheard-of"):
            mine, theirs = loaded.choose(c, kind), policy.choose(c, kind)
            assert (mine.option, mine.scope, mine.n) == (theirs.option, theirs.scope, theirs.n)
            assert mine.estimate == pytest.approx(theirs.estimate, rel=1e-9)
    assert loaded.explain("c1").splitlines()[3:] == policy.explain("c1").splitlines()[3:]
    with pytest.raises(ValueError, match="policy versions"):
        Policy.from_rows(pd.concat([table, table.assign(policy_version="other")]))
    with pytest.raises(ValueError, match="no 'policy' row"):
        Policy.from_rows(table[table["scope"] != "policy"])


def test_select_and_explain_agree_for_every_context_and_kind():
    policy, contexts = mixed_policy()
    for c in [*contexts, "unseen"]:
        text = policy.explain(c)
        for kind in ("lookup", "derived", "counterfactual", None):
            choice = policy.select(c, kind).primary
            label = "any kind" if kind is None else f"kind {kind!r}"
            line = next(x for x in text.splitlines() if x.strip().startswith(label + ":"))
            assert f"-> {choice.sleep_budget} + {choice.test_budget}:" in line
            assert f"estimate {choice.estimate:.3f}" in line


def test_request_overrides():
    policy, contexts = mixed_policy()
    plain = policy.select("c1", "lookup")
    assert not plain.fallback and plain.primary == policy.choose("c1", "lookup")
    # A stricter target is judged per query on the average-context estimates of the kind.
    strict = policy.select("c1", "lookup", target_accuracy=0.5)
    pool = policy.pool["lookup"]
    cheapest_ok = min((c for c in pool if c.estimate_lower >= 0.5), key=lambda c: c.cost_weighted)
    assert strict.primary.option == cheapest_ok.option
    impossible = policy.select("c1", "lookup", target_accuracy=1.0)
    assert impossible.fallback
    assert impossible.primary.estimate == max(c.estimate for c in pool)
    # Caps drop options; nothing within them is a clear error naming the cap.
    capped = policy.select("c1", "lookup", max_cost=45)
    assert capped.primary.cost_weighted <= 45
    with pytest.raises(Unsatisfiable) as err:
        policy.select("c1", "lookup", max_cost=1)
    assert err.value.field == "max_cost" and "cheapest option" in str(err.value)
    # An option that cannot run (its c' is missing) is skipped; the chain ends at the raw context.
    no_cprime = policy.select("c1", "lookup", available=lambda s, t: s == "none")
    assert all(c.sleep_budget == "none" for c in no_cprime.choices)
    assert ("none", "t2") in [c.option for c in no_cprime.choices]  # the raw context at the largest test budget
    with pytest.raises(Unsatisfiable):
        policy.select("c1", "lookup", available=lambda s, t: False)


def test_a_request_target_equal_to_the_policy_target_keeps_the_plan():
    policy, _ = mixed_policy()
    assert policy.select("c2", "derived", target_accuracy=policy.settings.target_accuracy).primary.option == \
        policy.choose("c2", "derived").option


# -- versions and bad input --------------------------------------------------------------------------


def test_version_is_deterministic_and_follows_inputs():
    contexts = [f"c{i}" for i in range(6)]
    answers = sleep_grid(contexts, lambda c: c != "c0")
    sleep = uniform_sleep(contexts, {"big": (200, 0.0)})
    a = fit_policy(answers, sleep)
    b = fit_policy(answers.sample(frac=1.0, random_state=3), sleep.iloc[::-1])
    assert a.version == b.version and a.version.startswith("p_")
    assert fit_policy(answers, sleep, PolicySettings(target_accuracy=0.95)).version != a.version
    assert fit_policy(answers, sleep, traffic={"c1": 3}).version != a.version
    flipped = answers.copy()
    flipped.loc[0, "correct"] = not flipped.loc[0, "correct"]
    assert fit_policy(flipped, sleep).version != a.version


def test_version_is_the_same_whichever_engine_summed_the_answers():
    """The publish fits the sums DuckDB keeps (summary_answers); a fit from the answer rows has pandas
    sum them. Adding the same floats in another order changes the last bits of most sums of three or
    more, and that must not change the version."""
    rng = np.random.default_rng(5)
    contexts = [f"c{i}" for i in range(30)]
    answers = grid(contexts, 8, {("none", "t"): (20, 0.0), ("big", "t"): (10, 0.0)},
                   correct_of=lambda c, k, i, o: (i + len(c)) % 3 > 0)
    answers["cost_usd"] = rng.random(len(answers)) * 1e-4
    answers["latency_s"] = rng.random(len(answers)) * 3
    sleep = uniform_sleep(contexts, {"big": (200, 0.0)})
    con = duckdb.connect()
    con.register("shuffled", answers.sample(frac=1.0, random_state=2))  # another order than pandas'
    stats = con.sql(
        "SELECT context_id, kind, sleep_budget, test_budget, count(*) AS n, count(*) FILTER (WHERE correct) AS correct, "
        "CAST(sum(completion_tokens) AS DOUBLE) AS completion_tokens, count(completion_tokens) AS completion_n, "
        "sum(cost_usd) AS cost_usd, sum(latency_s) AS latency_s, count(latency_s) AS latency_n "
        "FROM shuffled GROUP BY ALL").df()
    labeled = con.sql("SELECT context_id, kind, count(DISTINCT query_id) AS queries FROM shuffled GROUP BY ALL").df()
    keys = ["context_id", "kind", "sleep_budget", "test_budget"]
    pandas_sums = summarise_answers(answers)[0].astype({k: str for k in keys}).set_index(keys)
    duckdb_sums = stats.set_index(keys).loc[pandas_sums.index]
    assert (duckdb_sums["latency_s"] != pandas_sums["latency_s"]).any()  # the case this test is about
    assert fit_policy_from_stats(stats, labeled, sleep).version == fit_policy(answers, sleep).version


# settings_json as published policies hold it (written by the release before PolicySettings was
# built on the configuration's fields): it must still load, and write back to the same text, which
# the policy version hashes.
PUBLISHED_SETTINGS_JSON = (
    '{"cost_metric": "usd", "expected_queries_per_context": 10.0, "kind_floors": [["arith", 0.5], '
    '["counterfactual", 0.7]], "refresh_interval_days": 7.0, "sleep_budget_order": ["none", "small", "large"], '
    '"target_accuracy": 0.8, "test_budget_order": ["t0-direct", "t2-steps"], "test_token_weight": 10.0, '
    '"traffic_prior_windows": 0.5, "traffic_window_days": 3.0, "z": 1.96}'
)
DEFAULT_SETTINGS_JSON = (
    '{"cost_metric": "weighted_tokens", "expected_queries_per_context": 10.0, "kind_floors": [], '
    '"refresh_interval_days": 7.0, "sleep_budget_order": [], "target_accuracy": 0.9, "test_budget_order": [], '
    '"test_token_weight": 10.0, "traffic_prior_windows": 0.5, "traffic_window_days": 7.0, "z": 1.96}'
)


def test_published_settings_json_loads_and_writes_back_unchanged():
    settings = PolicySettings.from_json(PUBLISHED_SETTINGS_JSON)
    assert settings == PolicySettings(
        target_accuracy=0.8, cost_metric="usd", traffic_window_days=3.0,
        kind_floors={"counterfactual": 0.7, "arith": 0.5},
        test_budget_order=("t0-direct", "t2-steps"), sleep_budget_order=("none", "small", "large"),
    )
    assert settings.to_json() == PUBLISHED_SETTINGS_JSON
    assert PolicySettings().to_json() == DEFAULT_SETTINGS_JSON
    # A key from another release is ignored; a key it lacks takes its default.
    older = json.loads(PUBLISHED_SETTINGS_JSON)
    del older["refresh_interval_days"]
    assert PolicySettings.from_json(json.dumps({**older, "retired_knob": 1})) == settings
    with pytest.raises(ValueError, match="target_accuracy"):
        PolicySettings.from_json(PUBLISHED_SETTINGS_JSON.replace('"target_accuracy": 0.8', '"target_accuracy": 1.5'))


def test_bad_input_is_named():
    answers = answers_frame([("q", "c", "k", "big", "t", True, 1, 0.0)])
    with pytest.raises(ValueError, match="sleep budget 'big'"):
        fit_policy(answers, uniform_sleep([], {}))
    with pytest.raises(ValueError, match="lacks columns"):
        fit_policy(answers.drop(columns="kind"), uniform_sleep([], {}))
    with pytest.raises(ValueError, match="no labeled answers"):
        fit_policy(answers.assign(correct=None), uniform_sleep([], {}))
    with pytest.raises(ValueError, match="kind_floors"):
        PolicySettings(kind_floors={"a": 1.5})
    with pytest.raises(ValueError, match="cost_metric"):
        PolicySettings(cost_metric="euros")
