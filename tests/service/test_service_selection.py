"""The service answers with exactly the published policy: loaded from its rows, never refitted."""

import pytest

from sleeptime.config import PolicyConfig
from sleeptime.policy.store import load_published_policy
from sleeptime.service.selection import Unsatisfiable, infer_kind, select
from sleeptime.service.snapshot import load_serving_snapshot

QUESTIONS = {
    None: "How many coins does Hugo have?",
    "counterfactual": "If Hugo had 3 more coins, how many coins would Sara have?",
    "sum": "How many coins do Hugo and Sara have together?",
}
KINDS = (None, "counterfactual", "sum", "lookup", "derived")


@pytest.fixture(scope="module")
def snapshot(served):
    return load_serving_snapshot(served.warehouse.current_snapshot(), served.config)


def test_infer_kind():
    for kind, question in QUESTIONS.items():
        assert infer_kind(question) == kind
    assert infer_kind("  if Mia gave away 2, how many would she have?") == "counterfactual"
    assert infer_kind("What is the difference?") is None


def test_snapshot_holds_contexts_tenants_variants_and_the_published_policy(served, snapshot):
    assert set(snapshot.contexts) == set(served.ids("acme")) | set(served.ids("globex"))
    assert snapshot.context_ids("acme") == tuple(served.ids("acme"))
    assert snapshot.context_ids("globex") == tuple(served.ids("globex"))
    assert snapshot.context_for("acme", served.ids("globex")[0]) is None
    entry = snapshot.contexts[served.ids("acme")[0]]
    assert entry.tenant == "acme" and set(entry.variants) == {"small", "large"}
    with served.warehouse.read() as con:
        published = con.execute("SELECT DISTINCT policy_version FROM v_policy_summary").fetchall()
    assert [(snapshot.policy_version,)] == published
    assert snapshot.target_accuracy == snapshot.policy.settings.target_accuracy == 0.75


def test_the_service_config_does_not_change_the_served_policy(served):
    """Another target in the service's own config changes nothing until a new policy is published."""
    other = served.config.model_copy(update={"policy": PolicyConfig(target_accuracy=0.99, expected_queries_per_context=1)})
    mine = load_serving_snapshot(served.warehouse.current_snapshot(), served.config)
    theirs = load_serving_snapshot(served.warehouse.current_snapshot(), other)
    assert theirs.policy_version == mine.policy_version
    assert theirs.target_accuracy == 0.75
    for context_id, entry in mine.contexts.items():
        for kind in KINDS:
            assert select(theirs, theirs.contexts[context_id], kind).primary.option.option == \
                select(mine, entry, kind).primary.option.option


def test_a_reload_reads_the_policy_rows_and_no_answers(served, snapshot):
    """The policy work of a reload: the policies table only (the answers table is not read)."""
    seen: list[str] = []
    with served.warehouse.read() as con:

        class Spy:
            def __init__(self, inner):
                self.inner = inner

            def execute(self, sql, *args):
                seen.append(sql)
                return self.inner.execute(sql, *args)

            def cursor(self):
                return Spy(self.inner.cursor())

            def close(self):
                self.inner.close()

        policy = load_published_policy(Spy(con))
    assert policy.version == snapshot.policy_version
    assert seen and all("answers" not in sql and "policies" in sql for sql in seen)


def test_the_published_policy_is_the_fit_of_the_answers_themselves(served, snapshot):
    """The publish fits from the warehouse's per-context summaries; fitting the graded answer rows
    directly gives the same policy, version included (the version hashes the fit's inputs)."""
    from sleeptime.policy._fit import fit_policy

    with served.warehouse.read() as con:
        answers = con.execute(
            "SELECT a.query_id, a.context_id, coalesce(q.kind, 'unknown') AS kind, a.sleep_budget, a.test_budget, "
            "a.correct, a.completion_tokens, a.cost_usd, a.latency_s FROM answers_current a JOIN queries_current q "
            "ON q.query_id = a.query_id AND q.context_hash = a.context_hash "
            "WHERE a.correct IS NOT NULL AND a.sample_index = 0").df()
        sleep = con.execute("SELECT context_id, sleep_budget, sum(completion_tokens) AS sleep_tokens, "
                            "sum(cost_usd) AS sleep_cost_usd FROM variants_current GROUP BY ALL").df()
    direct = fit_policy(answers, sleep, served.config.policy_settings)
    assert direct.version == snapshot.policy_version


def test_selection_is_the_policy_choice_for_every_context_and_kind(served, snapshot):
    policy = snapshot.policy
    seen = set()
    for context_id, entry in snapshot.contexts.items():
        for kind in KINDS:
            choice = policy.choose(context_id, kind)
            selection = select(snapshot, entry, kind)
            option = selection.primary.option
            assert option.option == choice.option, (context_id, kind)
            assert (selection.scope, selection.scope_value, selection.fallback) == (choice.scope, choice.scope_value, choice.fallback)
            assert option.estimate == pytest.approx(choice.estimate)
            variant = selection.primary.variant
            if option.sleep_budget == "none":
                assert variant is None
            else:
                assert variant.sleep_budget == option.sleep_budget and variant.context_id == context_id
            seen.add(choice.option)
    assert len(seen) > 1, "the fixture should make different choices for different kinds"


def test_a_request_target_is_the_policy_select_with_that_target(served, snapshot):
    policy = snapshot.policy
    for target in (0.5, 0.8, 0.95, 0.99):
        for context_id, entry in snapshot.contexts.items():
            for kind in (None, "sum", "counterfactual"):
                expected = policy.select(context_id, kind, target_accuracy=target,
                                         available=lambda s, t, e=entry: s == "none" or s in e.variants)
                selection = select(snapshot, entry, kind, target_accuracy=target)
                assert selection.primary.option.option == expected.primary.option, (target, context_id, kind)
                assert selection.fallback == expected.fallback


def test_failure_chain_ends_with_the_raw_context_at_the_largest_budget(served, snapshot):
    entry = snapshot.contexts[served.ids("acme")[0]]
    selection = select(snapshot, entry, None)
    assert 2 <= len(selection.steps) <= 3
    assert len({s.option.option for s in selection.steps}) == len(selection.steps)
    raw = [s for s in selection.steps if s.option.option == ("none", "t2-steps")]
    assert raw and raw[0].variant is None


def test_a_missing_variant_is_skipped(served, snapshot):
    """A context whose planned c' is not in the snapshot (an allocation that changed) is answered
    with an option it has."""
    from dataclasses import replace

    for context_id, entry in snapshot.contexts.items():
        for kind in KINDS:
            planned = snapshot.policy.choose(context_id, kind)
            if planned.sleep_budget == "none":
                continue
            stripped = replace(entry, variants={})
            selection = select(snapshot, stripped, kind)
            assert all(s.option.sleep_budget == "none" and s.variant is None for s in selection.steps)
            return
    pytest.fail("the fixture should plan a c' somewhere")


def test_caps_filter_options_and_an_impossible_cap_names_the_field(served, snapshot):
    entry = snapshot.contexts[served.ids("acme")[0]]
    free = select(snapshot, entry, None)
    cap = free.primary.option.cost_weighted - 1
    capped = select(snapshot, entry, None, max_cost=cap)
    assert all(s.option.cost_weighted <= cap for s in capped.steps)
    assert capped.primary.option.cost_weighted <= cap < free.primary.option.cost_weighted
    with pytest.raises(Unsatisfiable) as info:
        select(snapshot, entry, None, max_cost=0.5)
    assert info.value.field == "max_cost"
    with pytest.raises(Unsatisfiable) as info:
        select(snapshot, entry, None, max_latency_ms=1e-9)
    assert info.value.field == "max_latency_ms"
    fast = select(snapshot, entry, None, max_latency_ms=1e6)
    assert fast.primary.option.option == free.primary.option.option


def test_a_publish_that_brings_traffic_refits_the_policy_with_it(served, helpers, tmp_path):
    """The service's spooled query log reaches the policy in the same publish: the data did not
    change, the traffic did, so the plan (and its allocation) is refitted with it."""
    from datetime import datetime, timezone

    import pyarrow as pa

    from sleeptime.dataset import simulate_query_log
    from sleeptime.pipeline import RunSummary, publish
    from sleeptime.service.querylog import QUERY_LOG_SCHEMA
    from sleeptime.storage import Lake
    from sleeptime.storage.warehouse import Warehouse

    from sleeptime.policy.store import derive_policy

    config = helpers.copy_output(served, tmp_path)
    lake, warehouse = Lake(config.lake_dir), Warehouse(config.warehouse_path)
    with warehouse.read() as con:
        before = load_published_policy(con)
    assert before.summary["traffic"]["queries_in_window"] == 0
    rows = served.rows(set(served.ids("acme")) | set(served.ids("globex")))
    log = simulate_query_log(rows, 120, seed=3, span_days=3.0)
    summary = RunSummary(run_id="r20260105T000000000000", corpus="test", started_at=datetime.now(timezone.utc))
    outcome = publish(
        lake, warehouse, summary, gate=lambda candidate: (True, "ok"),
        derive=lambda con: derive_policy(con, config.policy_settings, summary.run_id),
        spool=lambda: ({"query_log": pa.Table.from_pylist(log, schema=QUERY_LOG_SCHEMA)}, lambda: None),
    )
    assert outcome.published
    with warehouse.read() as con:
        after = load_published_policy(con)
        assert con.execute("SELECT count(*) FROM query_log").fetchone()[0] == 120
    assert after.version != before.version
    assert after.summary["traffic"] == {"source": "query log", "queries_in_window": 120,
                                        "contexts_with_traffic": len({r["context_id"] for r in log})}
    busiest = max({r["context_id"] for r in log}, key=lambda c: sum(r["context_id"] == c for r in log))
    assert after.allocation[busiest][1] > before.allocation[busiest][1]  # it expects more queries now
