"""Selection from the in-memory snapshot follows the fitted policy table."""

import pytest

from sleeptime.config import PolicyConfig
from sleeptime.policy.store import load_current_policy
from sleeptime.service.selection import Unsatisfiable, infer_kind, select
from sleeptime.service.snapshot import load_serving_snapshot

QUESTIONS = {
    None: "How many coins does Hugo have?",
    "counterfactual": "If Hugo had 3 more coins, how many coins would Sara have?",
    "sum": "How many coins do Hugo and Sara have together?",
}


@pytest.fixture(scope="module")
def snapshot(served):
    return load_serving_snapshot(served.warehouse.current_snapshot(), served.config)


def test_infer_kind():
    for kind, question in QUESTIONS.items():
        assert infer_kind(question) == kind
    assert infer_kind("  if Mia gave away 2, how many would she have?") == "counterfactual"
    assert infer_kind("What is the difference?") is None


def test_snapshot_holds_contexts_tenants_variants_and_policy(served, snapshot):
    assert set(snapshot.contexts) == set(served.ids("acme")) | set(served.ids("globex"))
    assert snapshot.context_ids("acme") == tuple(served.ids("acme"))
    assert snapshot.context_ids("globex") == tuple(served.ids("globex"))
    assert snapshot.context_for("acme", served.ids("globex")[0]) is None
    entry = snapshot.contexts[served.ids("acme")[0]]
    assert entry.tenant == "acme" and set(entry.variants) == {"small", "large"}
    with served.warehouse.read() as con:
        policy = load_current_policy(con, served.config.policy, ("t0-direct", "t2-steps"))
    assert snapshot.policy_version == policy.version
    assert snapshot.latency_ms and all(ms >= 0 for ms in snapshot.latency_ms.values())


def test_selection_is_the_policy_choice_for_every_context_and_kind(served, snapshot):
    policy = snapshot.policy
    seen = set()
    for context_id, entry in snapshot.contexts.items():
        for kind in (None, "counterfactual", "sum", "lookup", "derived"):
            choice = policy.choose(context_id, kind)
            selection = select(snapshot, entry, kind)
            option = selection.primary.option
            assert (option.sleep_budget, option.test_budget) == choice.option, (context_id, kind)
            assert (selection.scope, selection.scope_value, selection.fallback) == (choice.scope, choice.scope_value, choice.fallback)
            assert option.accuracy == pytest.approx(choice.predicted_accuracy)
            variant = selection.primary.variant
            if option.sleep_budget == "none":
                assert variant is None
            else:
                assert variant.sleep_budget == option.sleep_budget and variant.context_id == context_id
            seen.add(choice.option)
    assert len(seen) > 1, "the fixture should make different choices for different kinds"


def test_a_request_target_recomputes_adequacy_like_a_refit(served, snapshot):
    for target in (0.5, 0.8, 0.95, 0.99):
        with served.warehouse.read() as con:
            refit = load_current_policy(con, PolicyConfig(target_accuracy=target), ("t0-direct", "t2-steps"))
        for context_id, entry in snapshot.contexts.items():
            for kind in (None, "sum", "counterfactual"):
                choice = refit.choose(context_id, kind)
                selection = select(snapshot, entry, kind, target_accuracy=target)
                assert selection.primary.option.key == choice.option, (target, context_id, kind)
                assert selection.fallback == choice.fallback


def test_failure_chain_is_next_cheapest_adequate_then_raw_at_the_largest_budget(served, snapshot):
    entry = snapshot.contexts[served.ids("acme")[0]]
    selection = select(snapshot, entry, None)
    assert not selection.fallback and len(selection.steps) == 3
    ranked = [o for o in snapshot.ranked[(selection.scope, selection.scope_value)]
              if o.wilson_lower >= snapshot.target_accuracy]
    assert [s.option.key for s in selection.steps[:2]] == [o.key for o in ranked[:2]]
    assert selection.steps[-1].option.key == ("none", "t2-steps") and selection.steps[-1].variant is None


def test_caps_filter_options_and_an_impossible_cap_names_the_field(served, snapshot):
    entry = snapshot.contexts[served.ids("acme")[0]]
    free = select(snapshot, entry, None)
    cap = free.primary.option.cost_weighted - 1
    capped = select(snapshot, entry, None, max_cost=cap)
    assert all(s.option.cost_weighted <= cap for s in capped.steps)
    assert capped.primary.option.key != free.primary.option.key
    with pytest.raises(Unsatisfiable) as info:
        select(snapshot, entry, None, max_cost=0.5)
    assert info.value.field == "max_cost"
    with pytest.raises(Unsatisfiable) as info:
        select(snapshot, entry, None, max_latency_ms=1e-9)
    assert info.value.field == "max_latency_ms"
    fast = select(snapshot, entry, None, max_latency_ms=1e6)
    assert fast.primary.option.key == free.primary.option.key
