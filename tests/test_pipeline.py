"""The pipeline's SQL plan computes the same ids as the domain types."""

import json
from datetime import datetime, timezone

import duckdb
import pytest

from sleeptime.domain import CallCounters, Variant
from sleeptime.pipeline import VARIANT_ID_SQL, RunSummary
from sleeptime.storage.records import SCHEMAS


@pytest.mark.parametrize("model, budget, sample, pv", [
    ("reference", "small", 0, "v1"),
    ('we"ird\\ model', "ünïcode büdget", 3, "v2"),
    ("openai/gpt-4o-mini", "large", 12, "v1"),
])
def test_variant_ids_in_sql_equal_the_domain_ids(model, budget, sample, pv):
    h = "ab" * 32
    sql = VARIANT_ID_SQL.format(hash="?", model="?", budget="?", sample="?::INTEGER", pv="?")
    got = duckdb.connect().execute(f"SELECT {sql}", [h, model, budget, sample, pv]).fetchone()[0]
    assert got == Variant.make_id(h, model, budget, sample, pv)


def _publish(lake, run_id: str) -> None:
    lake.publish({"run_id": run_id, "status": "published", "detail_json": "{}"}, {}, {})


def test_ingest_skips_unchanged_lines_and_parses_only_what_changed(tmp_path):
    from sleeptime.dataset import load_corpus, write_demo_corpus, write_project_jsonl
    from sleeptime.pipeline import ingest_corpus
    from sleeptime.storage import Lake

    corpus = write_demo_corpus(tmp_path / "corpus.jsonl", contexts=6, seed=4)
    lake = Lake(tmp_path / "lake")
    try:
        first = ingest_corpus(lake, "r1", corpus)
        assert first.diff.counts() == {"new": 6, "changed": 0, "unchanged": 0, "removed": 0}
        assert first.parsed_lines == 6
        _publish(lake, "r1")

        again = ingest_corpus(lake, "r2", corpus)
        assert again.diff.counts() == {"new": 0, "changed": 0, "unchanged": 6, "removed": 0}
        assert again.parsed_lines == 0 and again.staged == 0  # every line recognised by its hash
        _publish(lake, "r2")

        rows = load_corpus(corpus).rows
        extra_query = rows[0].queries[0].model_copy(update={"id": "q_added", "text": "A new question?"})
        rows[0] = rows[0].model_copy(update={"queries": (*rows[0].queries, extra_query)})  # same text, new query
        rows[1] = rows[1].model_copy(update={"context": rows[1].context.model_copy(update={"text": "Ann has 3 apples."})})
        removed = rows.pop()
        write_project_jsonl(rows, corpus)
        edited = ingest_corpus(lake, "r3", corpus)
        assert edited.diff.counts() == {"new": 0, "changed": 1, "unchanged": 4, "removed": 1}
        assert edited.diff.removed == [removed.context.id]
        assert edited.parsed_lines == 2  # the edited and the changed line only
        staged_queries = lake.read_staged("queries").column("query_id").to_pylist()
        assert "q_added" in staged_queries
        _publish(lake, "r3")
        # The edited line's new hash is recorded: the next refresh skips it too.
        assert ingest_corpus(lake, "r4", corpus).parsed_lines == 0
    finally:
        Lake.close_all()


def test_traffic_allocation_plans_only_the_cprime_each_context_pays_for(tmp_path):
    """Under ``policy.sleep_allocation: traffic`` the refresh computes, per context, the c' the
    published policy allocates it at its traffic now; a busy context gets its c', a quiet one none;
    full_grid (and a lake with no policy yet) plans every budget everywhere."""
    from datetime import datetime, timedelta, timezone

    import pandas as pd

    from sleeptime.config import PolicyConfig, RunConfig
    from sleeptime.dataset import write_demo_corpus
    from sleeptime.domain import SleepBudget, AnswerBudget
    from sleeptime.pipeline import ingest_corpus, pending_sleep_jobs, plan_refresh
    from sleeptime.policy import PolicySettings, fit_policy
    from sleeptime.storage import Lake

    corpus = write_demo_corpus(tmp_path / "corpus.jsonl", contexts=6, seed=4)
    lake = Lake(tmp_path / "lake")
    config = RunConfig(
        corpus=corpus, output_dir=tmp_path,
        sleep_budgets=[SleepBudget(name="none", max_tokens=0), SleepBudget(name="big", max_tokens=64)],
        test_budgets=[AnswerBudget(name="cheap", verbosity=0, max_tokens=16), AnswerBudget(name="dear", verbosity=2, max_tokens=80)],
        policy=PolicyConfig(sleep_allocation="traffic", traffic_prior_windows=0.05),
    )
    try:
        ingest_corpus(lake, "r1", corpus)
        _publish(lake, "r1")
        contexts = sorted(lake.read("contexts").column("context_id").to_pylist())
        assert len(pending_sleep_jobs(lake, config)) == 6  # no policy yet: the full grid
        # A policy where the c' saves 450 weighted tokens a query and costs 2000 tokens: it pays
        # from about 4.4 expected queries on.
        rows = [(f"{c}-q{i}", c, "k", s, t, not (s, t) == ("none", "cheap"), tok, 0.0)
                for c in contexts for i in range(10) for s, t, tok in (("none", "cheap", 5), ("none", "dear", 50),
                                                                         ("big", "cheap", 5))]
        answers = pd.DataFrame(rows, columns=["query_id", "context_id", "kind", "sleep_budget", "test_budget", "correct",
                                              "completion_tokens", "cost_usd"])
        sleep = pd.DataFrame([(c, "big", 2000, 0.0) for c in contexts], columns=["context_id", "sleep_budget",
                                                                                  "sleep_tokens", "sleep_cost_usd"])
        policy = fit_policy(answers, sleep, PolicySettings(z=0.0, traffic_prior_windows=0.05, expected_queries_per_context=1))
        lake.write("policies", [{**r, "run_id": "r1"} for r in policy.records()], run_id="r1")
        # No traffic logged: every context expects the policy's default (1 query): no c' anywhere.
        plan = plan_refresh(lake, config)
        assert plan.allocation.mode == "traffic" and plan.contexts_per_budget == {"none": 6}
        assert pending_sleep_jobs(lake, config) == []
        # Traffic arrives: context 0 gets 300 queries in a week, context 1 two.
        now = datetime(2026, 1, 8, tzinfo=timezone.utc)
        log = [{"request_id": f"x{i}", "received_at": now - timedelta(hours=i % 100), "context_id": contexts[0],
                "status": "answered", "run_id": "service-1"} for i in range(300)]
        log += [{"request_id": f"y{i}", "received_at": now, "context_id": contexts[1], "status": "answered",
                 "run_id": "service-1"} for i in range(2)]
        lake.write("query_log", log)
        plan = plan_refresh(lake, config)
        assert plan.contexts_per_budget == {"big": 1, "none": 5}
        assert plan.sleep_calls == 1 and plan.sleep_calls_full_grid == 6
        assert [(j.context.id, j.budget.name) for j in pending_sleep_jobs(lake, config)] == [(contexts[0], "big")]
        assert "1 of 6" in " ".join(plan.lines())
        full = config.model_copy(update={"policy": PolicyConfig(sleep_allocation="full_grid")})
        assert len(pending_sleep_jobs(lake, full)) == 6
    finally:
        Lake.close_all()


def test_run_counters_add_up_over_shards_and_fill_the_runs_row():
    shards = [CallCounters(calls=3, prompt_tokens=30, completion_tokens=12, cost_usd=0.5, retries=1, cache_hits=2),
              CallCounters(calls=1, prompt_tokens=5, completion_tokens=4, cost_usd=0.25, retryable_errors=2, failed_calls=1)]
    total = sum(shards, CallCounters())
    assert total == CallCounters(calls=4, prompt_tokens=35, completion_tokens=16, cost_usd=0.75, retries=1,
                                 retryable_errors=2, cache_hits=2, failed_calls=1)
    assert total - shards[0] == shards[1]  # a worker's shard: its gateway's counters after less before
    summary = RunSummary(run_id="r1", corpus="c", started_at=datetime.now(timezone.utc), counters=total)
    row = summary.record()
    assert set(row) == set(SCHEMAS["runs"].names)
    assert (row["model_calls"], row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (4, 35, 16, 0.75)
    detail = json.loads(row["detail_json"])
    assert (detail["retries"], detail["cache_hits"]) == (1, 2)
    assert "model: 4 calls (1 retries, 2 answered from the cache), 35 prompt + 16 completion tokens, $0.7500" in summary.lines()
