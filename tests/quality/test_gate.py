"""The great-expectations publish gate over hand-built snapshots: one valid, then one defect each."""

from __future__ import annotations


import pandas as pd
import pytest

from sleeptime.domain import Answer, Context, Query, SleepBudget, AnswerBudget, Usage, Variant
from sleeptime.quality import GateResult, validate_snapshot
from sleeptime.storage.records import SCHEMAS, answer_record, context_record, variant_record

SLEEP = [
    SleepBudget(name="none", max_tokens=0),
    SleepBudget(name="small", max_tokens=48),
    SleepBudget(name="large", max_tokens=512, samples=1),
]
TEST = [AnswerBudget(name="t0", verbosity=0, max_tokens=16), AnswerBudget(name="t2", verbosity=2, max_tokens=80)]
MODEL = "reference"


def _frame(table: str, rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=SCHEMAS[table].names)


def build_snapshot() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """2 contexts, a variant per (context, non-none budget), an answer per (query, sleep, test budget)."""
    contexts = [Context(id=f"c{i}", text=f"Ann has {i + 2} apples. Bob has {i + 3}.") for i in range(2)]
    variants: list[Variant] = []
    answers: list[Answer] = []
    for c in contexts:
        q = Query(id=Query.make_id(c.id, "How many apples?"), context_id=c.id, text="How many apples?", gold_answer="5")
        by_budget: dict[str, str | None] = {"none": None}
        for b in SLEEP[1:]:
            v = Variant(
                context_id=c.id, context_hash=c.content_hash, model=MODEL, sleep_budget=b.name, sample_index=0,
                prompt_version="v1", text=f"{c.text} Together they have 5.",
                usage=Usage(prompt_tokens=30, completion_tokens=min(40, b.max_tokens)), cost_usd=0.0, latency_s=0.01,
            )
            variants.append(v)
            by_budget[b.name] = v.id
        for sleep_name, variant_id in by_budget.items():
            for t in TEST:
                answers.append(
                    Answer(
                        query_id=q.id, context_id=c.id, context_hash=c.content_hash, variant_id=variant_id,
                        sleep_budget=sleep_name, test_model=MODEL, test_budget=t.name, prompt_version="v1",
                        raw_reply="5", parsed_answer="5", correct=sleep_name != "none" or t.name == "t2",
                        usage=Usage(prompt_tokens=50, completion_tokens=min(12, t.max_tokens)),
                        cost_usd=0.0, latency_s=0.01,
                    )
                )
    return (
        _frame("contexts", [context_record(c, run_id="r1") for c in contexts]),
        _frame("variants", [variant_record(v, run_id="r1") for v in variants]),
        _frame("answers", [answer_record(a, run_id="r1") for a in answers]),
    )


def gate(contexts: pd.DataFrame, variants: pd.DataFrame, answers: pd.DataFrame, **kwargs) -> GateResult:
    return validate_snapshot(contexts, variants, answers, SLEEP, TEST, MODEL, **kwargs)


@pytest.fixture(scope="module")
def snapshot() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return build_snapshot()


@pytest.fixture(scope="module")
def valid_result(snapshot, tmp_path_factory) -> GateResult:
    # The first call pays the great-expectations import (about 4 s) for the whole module.
    return gate(*snapshot, data_docs_dir=tmp_path_factory.mktemp("docs") / "site")


def copies(snapshot):
    return tuple(df.copy() for df in snapshot)


def failures(result: GateResult, suite: str, expectation: str, column: str | None = None) -> list:
    return [
        f for f in result.failed
        if f.suite == suite and f.expectation == expectation and (column is None or f.column == column)
    ]


def test_valid_snapshot_passes(valid_result):
    assert valid_result.success, valid_result.describe()
    assert valid_result.failed == []
    assert valid_result.describe() == ""
    assert valid_result.suites_run == ["contexts", "variants", "answers", "coverage", "accuracy"]
    assert valid_result.skipped == {}


def test_data_docs_written(valid_result):
    docs = valid_result.data_docs_dir
    assert docs is not None and (docs / "index.html").is_file()
    html = (docs / "index.html").read_text(encoding="utf-8")
    assert "variants" in html and "coverage" in html
    assert any(docs.glob("validations/**/*.html"))


def test_negative_completion_tokens(snapshot):
    contexts, variants, answers = copies(snapshot)
    variants.loc[0, "completion_tokens"] = -3
    result = gate(contexts, variants, answers)
    assert not result.success
    found = failures(result, "variants", "expect_column_values_to_be_between", "completion_tokens")
    assert found, result.describe()
    assert "1 unexpected value, e.g. [-3]" in found[0].detail
    assert "variants: expect_column_values_to_be_between on completion_tokens: 1 unexpected value" in result.describe()


def test_null_variant_text(snapshot):
    contexts, variants, answers = copies(snapshot)
    variants.loc[1, "text"] = None
    result = gate(contexts, variants, answers)
    assert not result.success
    assert failures(result, "variants", "expect_column_values_to_not_be_null", "text"), result.describe()
    assert "on text" in result.describe()


def test_duplicate_variant_id(snapshot):
    contexts, variants, answers = copies(snapshot)
    variants.loc[1, "variant_id"] = variants.loc[0, "variant_id"]
    result = gate(contexts, variants, answers)
    assert not result.success
    found = failures(result, "variants", "expect_column_values_to_be_unique", "variant_id")
    assert found and variants.loc[0, "variant_id"] in found[0].detail, result.describe()


def test_variant_over_its_budget(snapshot):
    contexts, variants, answers = copies(snapshot)
    row = variants.index[variants["sleep_budget"] == "small"][0]
    variants.loc[row, "completion_tokens"] = 60
    result = gate(contexts, variants, answers)
    assert not result.success
    found = failures(result, "variants", "expect_column_values_to_be_between", "completion_tokens")
    assert len(found) == 1, result.describe()
    assert "e.g. [60]" in found[0].detail
    assert "between 1 and 48" in found[0].detail and "sleep_budget == 'small'" in found[0].detail
    # 60 is within the large budget: the row condition really scopes the check.
    assert len(result.failed) == 1, result.describe()


def test_missing_variants_fail_coverage(snapshot):
    contexts, variants, answers = copies(snapshot)
    # c1 loses one of its two variants; a new context c9 has none at all.
    dropped = variants.iloc[-1]
    variants = variants.iloc[:-1].reset_index(drop=True)
    answers = answers[answers["variant_id"] != dropped["variant_id"]].reset_index(drop=True)
    extra = Context(id="c9", text="A third context nobody slept on.")
    contexts = pd.concat([contexts, _frame("contexts", [context_record(extra)])], ignore_index=True)
    result = gate(contexts, variants, answers)
    assert not result.success
    assert {f.suite for f in result.failed} == {"coverage"}, result.describe()
    (found,) = failures(result, "coverage", "expect_column_pair_values_to_be_equal")
    assert found.column == "n_variants, expected"
    assert "2 unexpected values, e.g. [(1, 2), (0, 2)]" in found.detail
    assert f"context_id {dropped['context_id']}, c9" in found.detail


def test_unknown_test_budget(snapshot):
    contexts, variants, answers = copies(snapshot)
    answers.loc[0, "test_budget"] = "t9-unknown"
    result = gate(contexts, variants, answers)
    assert not result.success
    found = failures(result, "answers", "expect_column_values_to_be_in_set", "test_budget")
    assert found and "t9-unknown" in found[0].detail, result.describe()


def test_stale_variant_fails(snapshot):
    contexts, variants, answers = copies(snapshot)
    contexts.loc[0, "text"] = "The text changed since the variants were made."
    contexts.loc[0, "content_hash"] = Context(id="c0", text=contexts.loc[0, "text"]).content_hash
    result = gate(contexts, variants, answers, strict_answers=False)
    assert failures(result, "variants", "expect_column_values_to_be_in_set", "context_hash"), result.describe()
    assert failures(result, "coverage", "expect_column_pair_values_to_be_equal")


def test_empty_answers_skip_answer_suites(snapshot):
    contexts, variants, _ = copies(snapshot)
    result = gate(contexts, variants, pd.DataFrame(columns=SCHEMAS["answers"].names))
    assert result.success, result.describe()
    assert "answers" not in result.suites_run and "accuracy" not in result.suites_run
    assert set(result.skipped) == {"answers", "accuracy"}


def test_empty_contexts_valid_only_without_variants(snapshot):
    _, variants, _ = copies(snapshot)
    empty = pd.DataFrame()
    assert gate(empty, empty, empty).success
    result = gate(empty, variants, empty)
    assert not result.success
    assert failures(result, "contexts", "expect_table_row_count_to_be_between"), result.describe()


# --- the delta gate: the rows a run adds, plus SQL reference counts ------------------------------


def delta_gate(contexts, variants, answers, references=(), **kwargs) -> GateResult:
    from sleeptime.quality.gate import validate_delta

    return validate_delta(contexts, variants, answers, list(references), SLEEP, TEST, MODEL, **kwargs)


def test_a_valid_delta_passes_and_runs_the_reference_suite(snapshot):
    from sleeptime.quality.gate import ReferenceCheck

    result = delta_gate(*copies(snapshot), [ReferenceCheck("answers_reference_a_variant", "refs", 0)])
    assert result.success, result.describe()
    assert "references" in result.suites_run and "coverage" not in result.suites_run


def test_a_delta_without_contexts_is_checked_on_what_it_has(snapshot):
    contexts, variants, answers = copies(snapshot)
    result = delta_gate(contexts.iloc[0:0], variants, answers)
    assert result.success, result.describe()
    assert result.skipped["contexts"] == "no new contexts"


def test_a_reference_violation_fails_and_names_the_check_and_examples(snapshot):
    from sleeptime.quality.gate import ReferenceCheck

    checks = [ReferenceCheck("answers_reference_a_variant", "every new answer references a variant", 0),
              ReferenceCheck("current_contexts_covered", "every current context has its variants", 2, ("c7", "c9"))]
    result = delta_gate(*copies(snapshot), checks)
    assert not result.success
    [failed] = result.failed_in("references")
    assert "current_contexts_covered" in failed.detail and "c7" in failed.detail


def test_a_bad_new_row_fails_the_delta_gate(snapshot):
    contexts, variants, answers = copies(snapshot)
    variants.loc[0, "completion_tokens"] = -3
    result = delta_gate(contexts, variants, answers)
    assert not result.success
    assert any(f.column == "completion_tokens" for f in result.failed_in("variants"))


def test_preload_imports_great_expectations_once_per_process():
    import sys

    from sleeptime.quality.gate import preload

    first = preload()
    assert preload() is first  # one import thread per process, however often a flow asks
    first.join(timeout=120)
    assert "great_expectations" in sys.modules
