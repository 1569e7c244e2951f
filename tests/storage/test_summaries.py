"""The per-context summaries: updated by the contexts each publish touches, equal to a full
recomputation, and the aggregate views over them equal to their definitions over every answer."""

import random

import pytest

from sleeptime.storage import Lake
from sleeptime.storage import summaries
from sleeptime.storage.lake import as_arrow
from sleeptime.storage.warehouse import Warehouse

# The aggregate views as migration 002 defined them, over answers_current: the reference.
REFERENCE = {
    "v_accuracy_by_budget": """
WITH sleep AS (
    SELECT sleep_budget, avg(tokens) AS mean_sleep_tokens_per_context
    FROM (SELECT sleep_budget, context_id, sum(completion_tokens) AS tokens FROM variants_current GROUP BY ALL)
    GROUP BY ALL
)
SELECT a.test_model, a.sleep_budget, a.test_budget, count(*) AS n,
       avg(CASE WHEN a.correct THEN 1.0 ELSE 0.0 END) AS accuracy,
       avg(a.completion_tokens) AS mean_test_completion_tokens,
       avg(a.prompt_tokens) AS mean_test_prompt_tokens,
       coalesce(s.mean_sleep_tokens_per_context, 0) AS mean_sleep_tokens_per_context
FROM answers_current a LEFT JOIN sleep s ON s.sleep_budget = a.sleep_budget
WHERE a.correct IS NOT NULL AND a.sample_index = 0
GROUP BY a.test_model, a.sleep_budget, a.test_budget, s.mean_sleep_tokens_per_context""",
    "v_cost_per_query": """
WITH per_context AS (
    SELECT a.context_id, a.sleep_budget, a.test_budget, a.test_model, count(*) AS queries,
           sum(a.completion_tokens) AS test_tokens, sum(a.cost_usd) AS test_cost_usd
    FROM answers_current a WHERE a.sample_index = 0 GROUP BY ALL
),
sleep AS (
    SELECT context_id, sleep_budget, sum(completion_tokens) AS sleep_tokens, sum(cost_usd) AS sleep_cost_usd
    FROM variants_current GROUP BY ALL
)
SELECT p.test_model, p.sleep_budget, p.test_budget, avg(p.queries) AS queries_per_context,
       avg((coalesce(s.sleep_tokens, 0) + 10 * p.test_tokens) / p.queries) AS weighted_tokens_per_query,
       avg((coalesce(s.sleep_cost_usd, 0) + p.test_cost_usd) / p.queries) AS usd_per_query
FROM per_context p LEFT JOIN sleep s ON s.context_id = p.context_id AND s.sleep_budget = p.sleep_budget
GROUP BY ALL""",
    "v_pass_at_k": """
WITH ks AS (SELECT DISTINCT sample_index + 1 AS k FROM answers_current WHERE variant_id IS NULL),
per_query AS (
    SELECT a.test_model, a.test_budget, ks.k, a.query_id, bool_or(a.correct) AS any_correct,
           sum(a.completion_tokens) AS tokens
    FROM answers_current a JOIN ks ON a.sample_index < ks.k
    WHERE a.variant_id IS NULL AND a.correct IS NOT NULL
    GROUP BY ALL HAVING count(*) = ks.k
)
SELECT test_model, test_budget, k, count(*) AS n, avg(CASE WHEN any_correct THEN 1.0 ELSE 0.0 END) AS pass_at_k,
       avg(tokens) AS mean_test_completion_tokens
FROM per_query GROUP BY ALL""",
}
# The policy fit's former read, over answers_current and queries_current.
FIT_REFERENCE = """
SELECT a.context_id, coalesce(q.kind, 'unknown') AS kind, a.sleep_budget, a.test_budget,
       count(*) AS n, count(*) FILTER (WHERE a.correct) AS correct
FROM answers_current a JOIN queries_current q ON q.query_id = a.query_id AND q.context_hash = a.context_hash
WHERE a.correct IS NOT NULL AND a.sample_index = 0 GROUP BY ALL"""
LABELED_REFERENCE = """
SELECT a.context_id, coalesce(q.kind, 'unknown') AS kind, count(DISTINCT a.query_id)
FROM answers_current a JOIN queries_current q ON q.query_id = a.query_id AND q.context_hash = a.context_hash
WHERE a.correct IS NOT NULL AND a.sample_index = 0 GROUP BY ALL"""


@pytest.fixture
def lake(tmp_path):
    yield Lake(tmp_path / "lake")
    Lake.close_all()


def _ctx(cid, h, run, deleted=False):
    return {"context_id": cid, "content_hash": h, "source": "s", "text": "t", "metadata_json": "{}",
            "deleted": deleted, "run_id": run, "row_hash": None}


def _rows(rng: random.Random, run: str, contexts: dict[str, str]):
    """Random queries, variants and answers (raw and with c', several samples, some ungraded,
    some tokens missing) for ``contexts`` (id -> current hash)."""
    queries, variants, answers = [], [], []
    for cid, h in contexts.items():
        vids = []
        for budget in ("small", "large"):
            if rng.random() < 0.8:
                vid = f"v-{cid}-{h}-{budget}"
                vids.append((vid, budget))
                variants.append({"variant_id": vid, "context_id": cid, "context_hash": h, "model": "m",
                                 "sleep_budget": budget, "sample_index": 0, "prompt_version": "v1", "text": "x",
                                 "prompt_tokens": 5, "completion_tokens": rng.randint(10, 90),
                                 "cost_usd": rng.random() / 100, "latency_s": 0.1, "run_id": run})
        for qi in range(rng.randint(1, 4)):
            qid = f"q-{cid}-{qi}"
            if rng.random() < 0.9:  # some answers have no query row
                queries.append({"query_id": qid, "context_id": cid, "context_hash": h, "text": "?", "gold_answer": "1",
                                "kind": rng.choice(["a", "b", None]), "run_id": run})
            for variant_id, sleep in [(None, "none"), *vids]:
                for test in ("t1", "t2"):
                    samples = rng.choice([1, 1, 2, 3]) if variant_id is None else 1
                    for s in range(samples):
                        answers.append({
                            "answer_id": f"a-{qid}-{h}-{sleep}-{test}-{s}-{rng.random() < 0.1}",
                            "query_id": qid, "context_id": cid, "context_hash": h, "variant_id": variant_id,
                            "sleep_budget": sleep, "test_model": "m", "test_budget": test, "sample_index": s,
                            "prompt_version": "v1", "raw_reply": "1", "parsed_answer": "1",
                            "correct": None if rng.random() < 0.1 else rng.random() < 0.6,
                            "prompt_tokens": None if rng.random() < 0.05 else rng.randint(20, 40),
                            "completion_tokens": rng.randint(1, 50), "cost_usd": rng.random() / 1000,
                            "latency_s": None if rng.random() < 0.1 else rng.random(), "run_id": run,
                        })
    return queries, variants, answers


def _publish(lake: Lake, wh: Warehouse, run: str, tables: dict[str, list]) -> int:
    for table, rows in tables.items():
        if rows:
            lake.stage(table, rows)
    candidate = wh.candidate(lake)
    candidate.apply_staged(tuple(tables))
    record = {"run_id": run, "status": "published", "corpus": "c", "detail_json": "{}"}
    snapshot = lake.publish(record, {}, {})
    candidate.apply("runs", as_arrow("runs", [record]))  # as sleeptime.pipeline.publish does
    candidate.finish(snapshot)
    wh.publish(candidate)
    return candidate.contexts_summarised


def _sorted(con, sql):
    return sorted(con.execute(sql).fetchall(), key=repr)


def _close(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y)
        for u, v in zip(x, y):
            assert u == pytest.approx(v, rel=1e-9) if isinstance(u, float) else u == v


def test_summaries_follow_changes_and_equal_a_recomputation(tmp_path, lake):
    rng = random.Random(7)
    wh = Warehouse(tmp_path / "wh" / "sleeptime.duckdb")
    current = {f"c{i}": "h0" for i in range(12)}
    q, v, a = _rows(rng, "r1", current)
    assert _publish(lake, wh, "r1", {"contexts": [_ctx(c, h, "r1") for c, h in current.items()],
                                     "queries": q, "variants": v, "answers": a}) == 12
    # r2: two contexts change, one is deleted, one gains answers only; the rest is untouched.
    current.update(c0="h1", c1="h1")
    changed = {"c0": "h1", "c1": "h1"}
    q, v, a = _rows(rng, "r2", changed)
    _, _, extra = _rows(rng, "r2", {"c5": "h0"})
    touched = _publish(lake, wh, "r2", {
        "contexts": [_ctx("c0", "h1", "r2"), _ctx("c1", "h1", "r2"), _ctx("c2", "h0", "r2", deleted=True)],
        "queries": q, "variants": v, "answers": a + [r for r in extra if r["variant_id"] is None]})
    assert touched == 4  # c0, c1, c2 and c5: the work follows what changed
    # r3: a rerun replaces some answers of c3 by key (the latest run wins).
    with wh.read() as con:
        again = con.execute("SELECT * FROM answers WHERE context_id = 'c3'").to_arrow_table().to_pylist()
    for row in again:
        row.update(run_id="r3", correct=not row["correct"] if row["correct"] is not None else None)
    assert _publish(lake, wh, "r3", {"answers": again}) == 1

    with wh.read() as con:
        incremental = {t: _sorted(con, f"SELECT * FROM {t}") for t in summaries.SUMMARIES}
        for view, sql in REFERENCE.items():
            _close(_sorted(con, f"SELECT * FROM {view}"), _sorted(con, sql))
            assert [d[0] for d in con.execute(f"SELECT * FROM {view} LIMIT 0").description] == \
                   [d[0] for d in con.execute(f"{sql} LIMIT 0").description]
        fit = _sorted(con, """
            SELECT context_id, kind, sleep_budget, test_budget, sum(answers), sum(correct)
            FROM summary_answers WHERE graded AND kind IS NOT NULL GROUP BY ALL""")
        assert fit == _sorted(con, FIT_REFERENCE)
        assert _sorted(con, "SELECT * FROM summary_labeled") == _sorted(con, LABELED_REFERENCE)
        assert not con.execute("SELECT count(*) FROM summary_answers WHERE context_id = 'c2'").fetchone()[0]
    rebuilt = Warehouse(tmp_path / "rebuilt" / "sleeptime.duckdb")
    rebuilt.rebuild(lake)
    with rebuilt.read() as con:
        assert {t: _sorted(con, f"SELECT * FROM {t}") for t in summaries.SUMMARIES} == incremental
