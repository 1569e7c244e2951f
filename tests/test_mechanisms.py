"""The paper's mechanisms, measured on generated worlds through the real job (litellm and all).

Numbers are computed from runs, not written down: each test compares two measured quantities.
"""

import pandas as pd
import pytest

from sleeptime.config import RunConfig
from sleeptime.dataset import write_demo_corpus
from sleeptime.domain import SleepBudget, AnswerBudget
from sleeptime.job import run_local

SMALL_TEST = AnswerBudget(name="t1-brief", verbosity=1, max_tokens=40)
STEPS_TEST = AnswerBudget(name="t2-steps", verbosity=2, max_tokens=400)


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("mech")
    corpus = write_demo_corpus(root / "corpus.jsonl", contexts=30, seed=123)
    config = RunConfig(
        corpus=corpus,
        output_dir=root / "out",
        sleep_budgets=[SleepBudget(name="none", max_tokens=0), SleepBudget(name="large", max_tokens=1024)],
        test_budgets=[SMALL_TEST, STEPS_TEST],
    )
    result = run_local(config)
    assert not result.failures
    answers = result.answers_frame()
    kinds = {q.id: q.kind for row in result.loaded.rows for q in row.queries}
    answers["kind"] = answers["query_id"].map(kinds)
    return answers


def _accuracy(df: pd.DataFrame, sleep: str, test: str, kind: str | None = None) -> float:
    sel = df[(df.sleep_budget == sleep) & (df.test_budget == test)]
    if kind:
        sel = sel[sel.kind == kind]
    assert len(sel) > 0
    return float(sel.correct.mean())


def test_large_sleep_budget_beats_raw_context_at_a_small_test_budget(grid):
    raw = _accuracy(grid, "none", SMALL_TEST.name)
    enriched = _accuracy(grid, "large", SMALL_TEST.name)
    assert enriched > raw + 0.2, (raw, enriched)


def test_answers_stated_in_c_prime_cost_far_fewer_tokens_than_deriving(grid):
    derived = grid[(grid.kind == "derived") & (grid.test_budget == STEPS_TEST.name) & grid.correct]
    tokens = derived.groupby("sleep_budget").completion_tokens.mean()
    assert tokens["large"] * 3 < tokens["none"], tokens.to_dict()


def test_counterfactuals_gain_less_than_derived_and_sum_questions(grid):
    def gain(kind: str) -> float:
        return _accuracy(grid, "large", SMALL_TEST.name, kind) - _accuracy(grid, "none", SMALL_TEST.name, kind)

    assert gain("counterfactual") < gain("derived")
    assert gain("counterfactual") < gain("sum")
    # Lookups are stated in the raw context: there is nothing for sleep time to add.
    assert _accuracy(grid, "none", SMALL_TEST.name, "lookup") == 1.0
    assert gain("lookup") == 0.0


def test_accuracy_depends_only_on_text_and_budget(tmp_path):
    from sleeptime.dataset import load_corpus, write_project_jsonl
    from sleeptime.domain import Context, ContextWithQueries, Query

    corpus = write_demo_corpus(tmp_path / "a.jsonl", contexts=8, seed=5)
    rows = load_corpus(corpus).rows
    # Same texts, different ids, sources and metadata, and reversed order.
    disguised = []
    for i, row in enumerate(reversed(rows)):
        ctx = Context(id=f"other-{i}", text=row.context.text, source="elsewhere", metadata={"hint": "none"})
        queries = tuple(Query(id=f"q{i}-{j}", context_id=ctx.id, text=q.text, gold_answer=q.gold_answer, kind=q.kind) for j, q in enumerate(row.queries))
        disguised.append(ContextWithQueries(context=ctx, queries=queries))
    write_project_jsonl(disguised, tmp_path / "b.jsonl")

    def outcomes(path, out):
        config = RunConfig(corpus=path, output_dir=out, sleep_budgets=[SleepBudget(name="none", max_tokens=0), SleepBudget(name="small", max_tokens=60)], test_budgets=[SMALL_TEST])
        result = run_local(config)
        texts = {q.id: (r.context.text, q.text) for r in result.loaded.rows for q in r.queries}
        return sorted((texts[a.query_id], a.sleep_budget, a.raw_reply, a.correct) for a in result.answers)

    assert outcomes(corpus, tmp_path / "o1") == outcomes(tmp_path / "b.jsonl", tmp_path / "o2")
