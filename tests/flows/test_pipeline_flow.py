"""The orchestrated pipeline end to end: Prefect (test harness), Ray (a local cluster), lake,
warehouse and the GX gate, on a tiny generated corpus."""

import json

import pytest

from sleeptime.dataset import generate_corpus
from sleeptime.domain import Context, ContextWithQueries, Query


def test_first_run_publishes_and_an_unchanged_rerun_is_free(pipeline):
    first = pipeline.run()
    assert first.status == "published"
    assert first.diff.counts() == {"new": 4, "changed": 0, "unchanged": 0, "removed": 0}
    assert first.variants_written == 4 * 2 and first.counters.calls > 0
    n_queries = sum(len(r.queries) for r in pipeline.rows())
    assert first.answers_written == n_queries * 3 * 2  # (raw + 2 variants) x 2 test budgets
    assert pipeline.count("SELECT count(*) FROM variants") == 8
    assert pipeline.count("SELECT count(*) FROM answers") == first.answers_written
    assert pipeline.count("SELECT count(DISTINCT test_budget) FROM v_accuracy_by_budget") == 2
    assert pipeline.count("SELECT count(DISTINCT policy_version) FROM policies") == 1
    assert pipeline.count("SELECT count(*) FROM v_policy_current WHERE scope = 'corpus'") == 3 * 2
    assert (pipeline.out / "report" / "report.html").exists()
    before = pipeline.lake_counts()
    assert before["policies"] > 0

    second = pipeline.run()
    assert second.counters.calls == 0 and second.variants_written == 0 and second.answers_written == 0
    assert second.diff.counts() == {"new": 0, "changed": 0, "unchanged": 4, "removed": 0}
    after = pipeline.lake_counts()
    assert {k: v for k, v in after.items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}
    assert after["runs"] == before["runs"] + 1  # the run history records the free rerun
    assert pipeline.count("SELECT count(*) FROM runs WHERE status = 'published'") == 2


def test_changing_one_context_recomputes_only_that_context(pipeline):
    pipeline.run()
    rows = pipeline.rows()
    target = rows[1].context
    replacement = generate_corpus(1, seed=99)[0]
    changed = ContextWithQueries(
        context=Context(id=target.id, text=replacement.context.text, source=target.source),
        queries=tuple(Query(id=q.id, context_id=target.id, text=q.text, gold_answer=q.gold_answer, kind=q.kind)
                      for q in replacement.queries),
    )
    pipeline.replace_rows([changed if r.context.id == target.id else r for r in rows])

    summary = pipeline.run()
    assert summary.diff.changed == [target.id] and not summary.diff.new
    assert summary.variants_written == 2
    assert summary.answers_written == len(changed.queries) * 3 * 2
    assert summary.counters.calls == summary.variants_written + summary.answers_written
    superseded = pipeline.count("SELECT count(*) FROM v_variant_catalog WHERE superseded")
    assert superseded == 2
    assert pipeline.count("SELECT count(*) FROM variants_current") == 8
    assert pipeline.count(f"SELECT count(*) FROM contexts_current WHERE context_id = '{target.id}' AND content_hash = '{changed.context.content_hash}'") == 1


def test_removed_contexts_leave_the_current_view_but_stay_in_history(pipeline):
    pipeline.run()
    rows = pipeline.rows()
    pipeline.replace_rows(rows[:-1])
    summary = pipeline.run()
    assert summary.diff.removed == [rows[-1].context.id] and summary.counters.calls == 0
    assert pipeline.count("SELECT count(*) FROM contexts_current") == 3
    assert pipeline.count("SELECT count(*) FROM v_variant_catalog WHERE superseded") == 2


def test_a_broken_variant_row_fails_the_gate_and_keeps_the_previous_snapshot(pipeline):
    from flows.pipeline import RunFailed
    from sleeptime.storage import Lake

    pipeline.run()
    published = pipeline.warehouse().identity()
    with pipeline.warehouse().read() as con:
        good = con.execute("SELECT * FROM variants_current LIMIT 1").df().iloc[0].to_dict()
    broken = {**good, "variant_id": "v_broken", "completion_tokens": -5, "text": None, "run_id": "rbroken"}
    lake = Lake(pipeline.out / "lake")
    lake.stage("variants", [broken])

    with pytest.raises(RunFailed) as failure:
        pipeline.run()
    message = str(failure.value)
    assert "quality gate refused" in message
    assert "completion_tokens" in message and "text" in message
    assert pipeline.warehouse().identity() == published
    assert pipeline.count("SELECT count(*) FROM variants WHERE variant_id = 'v_broken'") == 0
    assert lake.staged_count() == 0 and lake.read("variants").num_rows == pipeline.count("SELECT count(*) FROM variants")
    runs = {r["status"]: r for r in lake.read("runs").to_pylist()}
    # The staged row came from no run in history: recorded as an interrupted run, then refused.
    assert sorted(runs) == ["interrupted", "published", "rejected"]
    # The refused rows stay readable by time travel at the snapshot the rejected run names.
    at = json.loads(runs["rejected"]["detail_json"])["rejected_rows_at_snapshot"]
    refused = lake.read("variants", at=at, schema="staging").column("variant_id").to_pylist()
    assert "v_broken" in refused
    # The next run recomputes nothing that was good, and publishes again.
    assert pipeline.run().status == "published"
