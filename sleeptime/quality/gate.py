"""The publish gate: great-expectations suites a candidate warehouse snapshot must pass.

``validate_snapshot`` takes the current contexts, variants and answers as pandas frames, runs
five GX Core expectation suites over them (three on the tables, two on frames derived from
them) and returns a ``GateResult``: success, one ``FailedExpectation`` per failed check with a
short readable detail, and optionally a static Data Docs site.

- contexts: ids present and unique, content_hash a sha256 hex digest, text non-empty.
- variants: ids unique; text, tokens, cost and latency sane; completion tokens within the
  variant's sleep budget (a GX row condition per budget); sample_index within that budget's
  samples; budget names configured; model is the sleep model; every variant belongs to the
  current text of a current context (nothing stale is published).
- answers (skipped when there are none: evaluation may not have run): ids unique; budgets
  configured; completion tokens within the test budget; correct is a bool or null; a variant
  answer names its variant, a raw-context answer names none; and, with ``strict_answers``, every
  answer refers to a current variant and the current text of its context.
- coverage: one row per current context, n_variants == the sum of samples over the non-"none"
  sleep budgets (contexts without variants appear with 0).
- accuracy: per (sleep_budget, test_budget) over graded answers, 0 <= accuracy <= 1 and n >= 1.

great-expectations is imported on the first call (about 4 s); each call builds a fresh
ephemeral data context, so calls share no state. Calls are serialised by a lock: GX keeps the
active context in a module-level global.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sleeptime.domain import SleepBudget, AnswerBudget
from sleeptime.storage.records import SCHEMAS

logger = logging.getLogger(__name__)

SUITES = ("contexts", "variants", "answers", "coverage", "accuracy", "references")
DATA_DOCS_SITE = "sleeptime_gate"
_EXAMPLES = 3  # examples of unexpected values quoted in a failure's detail
_ID_COLUMN = {
    "contexts": "context_id",
    "variants": "variant_id",
    "answers": "answer_id",
    "coverage": "context_id",
    "accuracy": None,
    "references": "check",
}
_LOCK = threading.Lock()
_PRELOAD: threading.Thread | None = None


@dataclass(frozen=True)
class FailedExpectation:
    suite: str  # one of SUITES
    expectation: str  # GX expectation type, e.g. "expect_column_values_to_not_be_null"
    column: str | None
    detail: str

    def describe(self) -> str:
        on = f" on {self.column}" if self.column else ""
        return f"{self.suite}: {self.expectation}{on}: {self.detail}"


@dataclass
class GateResult:
    success: bool
    failed: list[FailedExpectation]
    suites_run: list[str]
    data_docs_dir: Path | None
    skipped: dict[str, str] = field(default_factory=dict)  # suite -> why it was not run
    seconds: float = 0.0

    def describe(self) -> str:
        """One line per failed expectation; "" when the snapshot passed."""
        return "\n".join(f.describe() for f in self.failed)

    def failed_in(self, suite: str) -> list[FailedExpectation]:
        return [f for f in self.failed if f.suite == suite]


# --- what to expect, declared without importing GX ---------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """One expectation: a ``gx.expectations`` class name, its kwargs, an optional row condition."""

    kind: str
    kwargs: dict[str, Any]
    where: tuple[str, str, Any] | None = None  # (column, "==" | "!=" | "in" | "not in", value)
    expected: str = ""  # readable bound, quoted in the failure detail


def _not_null(*columns: str) -> list[_Spec]:
    return [_Spec("ExpectColumnValuesToNotBeNull", {"column": c}) for c in columns]


def _at_least(column: str, low: float, where: tuple[str, str, Any] | None = None) -> _Spec:
    return _Spec("ExpectColumnValuesToBeBetween", {"column": column, "min_value": low}, where, f"expected >= {low}")


def _between(column: str, low: float, high: float, where: tuple[str, str, Any] | None = None) -> _Spec:
    kwargs = {"column": column, "min_value": low, "max_value": high}
    return _Spec("ExpectColumnValuesToBeBetween", kwargs, where, f"expected between {low} and {high}")


def _in_set(
    column: str, values: Sequence[Any], where: tuple[str, str, Any] | None = None, label: str | None = None
) -> _Spec:
    values = list(values)
    if label is not None:
        expected = f"expected {label} ({len(values)} known)"
    elif len(repr(values)) <= 80:
        expected = f"expected in {values!r}"
    else:
        expected = f"expected one of {len(values)} values"
    return _Spec("ExpectColumnValuesToBeInSet", {"column": column, "value_set": values}, where, expected)


def _non_empty(column: str) -> _Spec:
    kwargs = {"column": column, "min_value": 1}
    return _Spec("ExpectColumnValueLengthsToBeBetween", kwargs, expected="expected length >= 1")


def _columns_exist(columns: Sequence[str]) -> _Spec:
    return _Spec("ExpectTableColumnsToMatchSet", {"column_set": list(columns), "exact_match": False})


def _contexts_specs(variants_present: bool) -> list[_Spec]:
    specs = [
        _columns_exist(["context_id", "content_hash", "text"]),
        *_not_null("context_id"),
        _Spec("ExpectColumnValuesToBeUnique", {"column": "context_id"}),
        *_not_null("content_hash"),
        _Spec(
            "ExpectColumnValueLengthsToEqual", {"column": "content_hash", "value": 64}, expected="expected length 64"
        ),
        _Spec(
            "ExpectColumnValuesToMatchRegex",
            {"column": "content_hash", "regex": r"^[0-9a-f]*$"},
            expected="expected lowercase hex",
        ),
        *_not_null("text"),
        _non_empty("text"),
    ]
    if variants_present:
        # Variants without any current context: the snapshot lost its contexts.
        specs.append(
            _Spec(
                "ExpectTableRowCountToBeBetween",
                {"min_value": 1},
                expected="variants exist, so at least one current context is expected",
            )
        )
    return specs


def _variants_specs(
    sleep_budgets: Sequence[SleepBudget], sleep_model: str, current: pd.DataFrame | None
) -> list[_Spec]:
    """``current`` None: the delta gate, where the checks against current contexts are SQL counts."""
    budgets = [b for b in sleep_budgets if not b.is_none]
    specs = [
        _columns_exist(
            [
                "variant_id", "context_id", "context_hash", "model", "sleep_budget", "sample_index", "text",
                "prompt_tokens", "completion_tokens", "cost_usd", "latency_s",
            ]
        ),
        *_not_null("variant_id"),
        _Spec("ExpectColumnValuesToBeUnique", {"column": "variant_id"}),
        *_not_null("context_id", "context_hash", "model", "sleep_budget", "sample_index", "text"),
        _non_empty("text"),
        *_not_null("prompt_tokens", "completion_tokens", "cost_usd", "latency_s"),
        _at_least("prompt_tokens", 1),
        _at_least("completion_tokens", 1),
    ]
    for b in budgets:
        where = ("sleep_budget", "==", b.name)
        specs.append(_between("completion_tokens", 1, b.max_tokens, where))
        specs.append(_between("sample_index", 0, b.samples - 1, where))
    specs += [
        _in_set("sleep_budget", [b.name for b in budgets]),
        _at_least("cost_usd", 0),
        _at_least("latency_s", 0),
        _in_set("model", [sleep_model]),
    ]
    if current is not None:
        hashes = _distinct(current["content_hash"])
        pairs = sorted(
            {
                (str(i), str(h))
                for i, h in zip(current["context_id"], current["content_hash"])
                if _present(i) and _present(h)
            }
        )
        specs += [
            # No variant of a stale (changed or removed) context is current.
            _in_set("context_hash", hashes, label="the content_hash of a current context"),
            _Spec(
                "ExpectColumnPairValuesToBeInSet",
                {"column_A": "context_id", "column_B": "context_hash", "value_pairs_set": pairs},
                expected="expected the (context_id, content_hash) of a current context",
            ),
        ]
    specs += [
        # One variant per (context text, budget, sample): with the coverage count this makes
        # coverage exact.
        _Spec(
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["context_id", "context_hash", "sleep_budget", "sample_index"]},
            expected="expected one variant per (context, budget, sample)",
        ),
    ]
    return specs


def _answers_specs(
    sleep_budgets: Sequence[SleepBudget],
    test_budgets: Sequence[AnswerBudget],
    current: pd.DataFrame,
    variants: pd.DataFrame,
    strict: bool,
) -> list[_Spec]:
    specs = [
        _columns_exist(
            [
                "answer_id", "query_id", "context_id", "context_hash", "variant_id", "sleep_budget",
                "test_budget", "correct", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s",
            ]
        ),
        *_not_null("answer_id"),
        _Spec("ExpectColumnValuesToBeUnique", {"column": "answer_id"}),
        *_not_null("query_id", "context_id", "test_budget", "sleep_budget"),
        _in_set("test_budget", [t.name for t in test_budgets]),
        _in_set("sleep_budget", [b.name for b in sleep_budgets]),
        *_not_null("prompt_tokens", "completion_tokens", "cost_usd"),
    ]
    for t in test_budgets:
        specs.append(_between("completion_tokens", 0, t.max_tokens, ("test_budget", "==", t.name)))
    none_names = [b.name for b in sleep_budgets if b.is_none]
    specs += [
        _at_least("prompt_tokens", 1),
        _at_least("cost_usd", 0),
        _at_least("latency_s", 0),
        # Nulls are ignored by GX map expectations: correct is True, False or null.
        _in_set("correct", [True, False]),
    ]
    if none_names:
        raw, enriched = ("sleep_budget", "in", none_names), ("sleep_budget", "not in", none_names)
        specs.append(
            _Spec("ExpectColumnValuesToBeNull", {"column": "variant_id"}, raw, "a raw-context answer names no variant")
        )
        specs.append(
            _Spec("ExpectColumnValuesToNotBeNull", {"column": "variant_id"}, enriched, "a variant answer names one")
        )
    if strict:
        current_hashes = _distinct(current["content_hash"])
        specs.append(_in_set("context_hash", current_hashes, label="the content_hash of a current context"))
        specs.append(_in_set("variant_id", _distinct(variants["variant_id"]), label="a current variant_id"))
    return specs


def _coverage_specs() -> list[_Spec]:
    return [
        _Spec(
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "n_variants", "column_B": "expected"},
            expected="expected n_variants == expected (sum of samples over sleep budgets)",
        )
    ]


def _accuracy_specs() -> list[_Spec]:
    return [
        *_not_null("accuracy"),
        _between("accuracy", 0, 1),
        _at_least("n", 1),
    ]


# --- derived frames ------------------------------------------------------------------------------


def expected_variants_per_context(sleep_budgets: Sequence[SleepBudget]) -> int:
    return sum(b.samples for b in sleep_budgets if not b.is_none)


def coverage_frame(contexts: pd.DataFrame, variants: pd.DataFrame, expected: int) -> pd.DataFrame:
    """One row per current context: its id, hash, variants of its current text, and the target."""
    cur = contexts[["context_id", "content_hash"]].copy()
    if len(variants):
        v = variants[["context_id", "context_hash"]].rename(columns={"context_hash": "content_hash"})
        counts = v.groupby(["context_id", "content_hash"], dropna=True).size().rename("n_variants").reset_index()
        cur = cur.astype(object).merge(counts.astype(object), on=["context_id", "content_hash"], how="left")
    else:
        cur["n_variants"] = 0
    cur["n_variants"] = pd.to_numeric(cur["n_variants"]).fillna(0).astype("int64")
    cur["expected"] = pd.Series([expected] * len(cur), index=cur.index, dtype="int64")
    return cur.reset_index(drop=True)


def accuracy_frame(answers: pd.DataFrame) -> pd.DataFrame:
    """Graded answers grouped by (sleep_budget, test_budget): n and accuracy."""
    graded = answers[answers["correct"].notna()]
    score = graded["correct"].astype(object).map({True: 1.0, False: 0.0})
    frame = pd.DataFrame(
        {
            "sleep_budget": graded["sleep_budget"].astype(object).to_numpy(),
            "test_budget": graded["test_budget"].astype(object).to_numpy(),
            "score": pd.to_numeric(score, errors="coerce").to_numpy(dtype="float64"),
        }
    )
    out = frame.groupby(["sleep_budget", "test_budget"], dropna=False).agg(
        n=("score", "size"), accuracy=("score", "mean")
    )
    return out.reset_index()


# --- running the suites --------------------------------------------------------------------------


def validate_snapshot(
    contexts: pd.DataFrame,
    variants: pd.DataFrame,
    answers: pd.DataFrame,
    sleep_budgets: Sequence[SleepBudget],
    test_budgets: Sequence[AnswerBudget],
    sleep_model: str,
    data_docs_dir: Path | None = None,
    *,
    strict_answers: bool = True,
) -> GateResult:
    """Run the gate's suites over a candidate snapshot; build Data Docs under ``data_docs_dir``.

    ``contexts`` rows with ``deleted`` true (tombstones) are not current and are dropped first.
    ``strict_answers`` adds two checks beyond the core ones: every answer's context_hash is a
    current content_hash and every non-null variant_id is a current variant.
    """
    started = time.perf_counter()
    contexts, variants, answers = _inputs(contexts, variants, answers)
    plan: list[tuple[str, pd.DataFrame, list[_Spec]]] = []
    skipped: dict[str, str] = {}
    failed: list[FailedExpectation] = []

    plan.append(("contexts", contexts, _contexts_specs(variants_present=len(variants) > 0)))
    ok_contexts = {"context_id", "content_hash"} <= set(contexts.columns)
    ok_variants = {"context_id", "context_hash"} <= set(variants.columns)
    if ok_contexts:
        plan.append(("variants", variants, _variants_specs(sleep_budgets, sleep_model, contexts)))
    else:
        skipped["variants"] = "contexts lack context_id/content_hash"
    if len(answers) == 0:
        skipped["answers"] = "no answers (evaluation has not run)"
        skipped["accuracy"] = "no answers (evaluation has not run)"
    elif ok_contexts and "variant_id" in variants.columns:
        specs = _answers_specs(sleep_budgets, test_budgets, contexts, variants, strict_answers)
        plan.append(("answers", answers, specs))
    else:
        skipped["answers"] = "contexts or variants lack their id columns"
    if len(contexts) == 0:
        skipped["coverage"] = "no current contexts"
    elif ok_contexts and ok_variants:
        expected = expected_variants_per_context(sleep_budgets)
        coverage = _derive("coverage", failed, coverage_frame, contexts, variants, expected)
        if coverage is not None:
            plan.append(("coverage", coverage, _coverage_specs()))
    else:
        skipped["coverage"] = "contexts or variants lack context_id/hash columns"
    if len(answers) and "accuracy" not in skipped:
        if not {"correct", "sleep_budget", "test_budget"} <= set(answers.columns):
            skipped["accuracy"] = "answers lack correct/sleep_budget/test_budget"
        else:
            acc = _derive("accuracy", failed, accuracy_frame, answers)
            if acc is None:
                pass
            elif len(acc):
                plan.append(("accuracy", acc, _accuracy_specs()))
            else:
                skipped["accuracy"] = "no graded answers (correct is null everywhere)"
    # A suite skipped for missing columns needs no failure of its own: the contexts or
    # variants suite fails on the same columns (ExpectTableColumnsToMatchSet).

    return _run_plan(plan, failed, skipped, data_docs_dir, started)


def validate_delta(
    contexts: pd.DataFrame,
    variants: pd.DataFrame,
    answers: pd.DataFrame,
    references: Sequence["ReferenceCheck"],
    sleep_budgets: Sequence[SleepBudget],
    test_budgets: Sequence[AnswerBudget],
    sleep_model: str,
    data_docs_dir: Path | None = None,
) -> GateResult:
    """The publish gate: the rows a run adds, not the whole snapshot.

    Column expectations run on the new contexts, variants and answers (and the accuracy of the
    new answers); the checks that need the rest of the warehouse (every new answer references an
    existing variant and query, every current context is covered, nothing stale) arrive as SQL
    violation counts in ``references`` and GX asserts each is zero.
    """
    started = time.perf_counter()
    contexts, variants, answers = _inputs(contexts, variants, answers)
    plan: list[tuple[str, pd.DataFrame, list[_Spec]]] = []
    skipped: dict[str, str] = {}
    failed: list[FailedExpectation] = []
    for name, frame, specs in (
        ("contexts", contexts, _contexts_specs(variants_present=False)),
        ("variants", variants, _variants_specs(sleep_budgets, sleep_model, None)),
        ("answers", answers, _answers_specs(sleep_budgets, test_budgets, contexts, variants, strict=False)),
    ):
        if len(frame):
            plan.append((name, frame, specs))
        else:
            skipped[name] = f"no new {name}"
    if len(answers):
        acc = _derive("accuracy", failed, accuracy_frame, answers)
        if acc is not None and len(acc):
            plan.append(("accuracy", acc, _accuracy_specs()))
        elif acc is not None:
            skipped["accuracy"] = "no graded new answers"
    else:
        skipped["accuracy"] = "no new answers"
    if references:
        frame = pd.DataFrame(
            {"check": [r.name for r in references], "violations": [int(r.violations) for r in references]}
        )
        plan.append(("references", frame, [
            _Spec(
                "ExpectColumnValuesToBeBetween", {"column": "violations", "min_value": 0, "max_value": 0},
                ("check", "==", r.name),
                f"expected none: {r.description}" + (f"; e.g. {', '.join(r.examples)}" if r.examples else ""),
            )
            for r in references
        ]))
    return _run_plan(plan, failed, skipped, data_docs_dir, started)


@dataclass(frozen=True)
class ReferenceCheck:
    """A cross-table rule computed in SQL: how many rows break it, and a few of them."""

    name: str
    description: str
    violations: int
    examples: tuple[str, ...] = ()


def _run_plan(
    plan: list[tuple[str, pd.DataFrame, list[_Spec]]],
    failed: list[FailedExpectation],
    skipped: dict[str, str],
    data_docs_dir: Path | None,
    started: float,
) -> GateResult:
    docs = Path(data_docs_dir).resolve() if data_docs_dir is not None else None
    suites_run: list[str] = []
    with _LOCK:
        gx = _import_gx()
        context, source = _new_context(gx, docs)
        for name, frame, specs in plan:
            suites_run.append(name)
            try:
                failed.extend(_run_suite(gx, context, source, name, frame, specs, detailed=docs is not None))
            except Exception as exc:  # the gate fails closed
                logger.exception("suite %s could not run", name)
                failed.append(FailedExpectation(name, "suite_error", None, f"{type(exc).__name__}: {exc}"[:300]))
        if docs is not None:
            try:
                docs.mkdir(parents=True, exist_ok=True)
                context.build_data_docs(site_names=[DATA_DOCS_SITE])
            except Exception:  # the docs are a by-product: the verdict stands without them
                logger.exception("could not build Data Docs under %s", docs)
                docs = None

    result = GateResult(
        success=not failed,
        failed=failed,
        suites_run=suites_run,
        data_docs_dir=docs,
        skipped=skipped,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "quality gate: %s, %d failed expectations, suites %s, skipped %s, %.2f s",
        "passed" if result.success else "FAILED", len(failed), suites_run, sorted(skipped), result.seconds,
    )
    return result


def _derive(suite: str, failed: list[FailedExpectation], fn: Any, *args: Any) -> pd.DataFrame | None:
    """Build a derived frame; if the input defeats it, record a failure (the gate fails closed)."""
    try:
        return fn(*args)
    except Exception as exc:
        logger.exception("could not derive the %s frame", suite)
        failed.append(FailedExpectation(suite, "derive_error", None, f"{type(exc).__name__}: {exc}"[:300]))
        return None


def preload() -> threading.Thread:
    """Import great-expectations on a daemon thread now. Importing it takes about 6 s of CPU; a run
    that has model work calls this as its model stage starts, so the import overlaps the model
    calls instead of adding to the publish (the gate's own import then finds the module loaded,
    or waits for the rest of it). Once per process."""
    global _PRELOAD
    with _LOCK:
        if _PRELOAD is None:
            _PRELOAD = threading.Thread(target=_import_gx, name="gx-preload", daemon=True)
            _PRELOAD.start()
        return _PRELOAD


def _import_gx() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    # GX logs every ephemeral docs folder it creates at INFO; only its warnings matter here.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    return gx


def _new_context(gx: Any, docs: Path | None) -> tuple[Any, Any]:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # The ephemeral context brings a "local_site" in a fresh temp dir; build only ours.
    for site in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(site)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs is not None:
        context.add_data_docs_site(
            DATA_DOCS_SITE,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    source = context.data_sources.add_pandas("snapshot")
    return context, source


def _build(gx: Any, spec: _Spec, index: int) -> Any:
    from great_expectations.expectations.row_conditions import Column

    kwargs = dict(spec.kwargs)
    meta: dict[str, Any] = {"gate_index": index}
    if spec.expected:
        meta["expected"] = spec.expected
    if spec.where is not None:
        column, op, value = spec.where
        conditions = {
            "==": lambda c: c == value,
            "!=": lambda c: c != value,
            "in": lambda c: c.is_in(list(value)),
            "not in": lambda c: c.is_not_in(list(value)),
        }
        kwargs["row_condition"] = conditions[op](Column(column))
        meta["where"] = f"{column} {op} {value!r}"
    return getattr(gx.expectations, spec.kind)(meta=meta, **kwargs)


def _run_suite(
    gx: Any, context: Any, source: Any, name: str, frame: pd.DataFrame, specs: list[_Spec], detailed: bool
) -> list[FailedExpectation]:
    """Validate ``frame`` against ``specs``; a failed expectation comes back with a readable detail.

    Without ``detailed`` (no Data Docs wanted) a first pass runs with BOOLEAN_ONLY results, about
    2.5x faster than SUMMARY, and only the expectations that failed run again with SUMMARY for
    their counts and examples. With Data Docs one SUMMARY pass runs, so the docs show details.
    """
    asset = source.add_dataframe_asset(name)
    batch_definition = asset.add_batch_definition_whole_dataframe("whole")
    id_column = _ID_COLUMN.get(name) if _ID_COLUMN.get(name) in frame.columns else None
    summary: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
    if id_column:
        summary["unexpected_index_column_names"] = [id_column]
    results = _validate(gx, context, batch_definition, name, frame, specs, summary if detailed else "BOOLEAN_ONLY")
    if not detailed:
        failing = [specs[i] for i, r in results if not r.success]
        if not failing:
            return []
        # Everything in this pass failed the first one: report it even in the (unexpected) case
        # that it passes now.
        results = _validate(gx, context, batch_definition, f"{name}.failures", frame, failing, summary)
    else:
        results = [(i, r) for i, r in results if not r.success]
    return [
        FailedExpectation(
            suite=name,
            expectation=r.expectation_config.type,
            column=_column_label(r.expectation_config.kwargs),
            detail=_detail(r, dict(r.expectation_config.meta or {}), id_column),
        )
        for _, r in results
    ]


def _validate(
    gx: Any, context: Any, batch_definition: Any, name: str, frame: pd.DataFrame, specs: list[_Spec], result_format: Any
) -> list[tuple[int, Any]]:
    """Run ``specs`` as suite ``name``; return (index into specs, result) pairs."""
    expectations = [_build(gx, spec, index=i) for i, spec in enumerate(specs)]
    # Built whole, then added once: suite.add_expectation re-serialises the whole suite into the
    # store on every call (quadratic; about 20 ms an expectation at this size).
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
    )
    run = validation.run(batch_parameters={"dataframe": frame}, result_format=result_format)
    return [(int((r.expectation_config.meta or {}).get("gate_index", -1)), r) for r in run.results]


# --- readable failures ---------------------------------------------------------------------------


def _column_label(kwargs: dict[str, Any]) -> str | None:
    if kwargs.get("column"):
        return str(kwargs["column"])
    if kwargs.get("column_A"):
        return f"{kwargs['column_A']}, {kwargs['column_B']}"
    if kwargs.get("column_list"):
        return ", ".join(map(str, kwargs["column_list"]))
    return None


def _detail(r: Any, meta: dict[str, Any], id_column: str | None) -> str:
    res = dict(r.result or {})
    error = _exception_message(r.exception_info)
    if error:
        text = f"error: {error}"
    elif "unexpected_count" in res:
        n = int(res.get("unexpected_count") or 0)
        text = f"{n} unexpected value{'' if n == 1 else 's'}"
        examples = _first_distinct(res.get("partial_unexpected_list") or [])
        if examples:
            text += f", e.g. {_short(examples)!r}"
        ids = _first_distinct(
            [e.get(id_column) if isinstance(e, dict) else e for e in res.get("partial_unexpected_index_list") or []]
        )
        if ids and id_column:
            text += f" ({id_column} {', '.join(map(str, ids))})"
    elif isinstance(res.get("details"), dict) and "mismatched" in res["details"]:
        text = f"columns mismatched: {_plain(res['details']['mismatched'])}"
    elif "observed_value" in res:
        text = f"observed {_plain(res['observed_value'])!r}"
    else:
        text = "failed"
    if meta.get("expected"):
        text += f"; {meta['expected']}"
    if meta.get("where"):
        text += f"; where {meta['where']}"
    return text


def _exception_message(info: Any) -> str | None:
    """GX 1.24 gives either one exception dict or a dict of them keyed by metric id."""
    if not isinstance(info, dict) or not info:
        return None
    candidates = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for c in candidates:
        if c.get("raised_exception") or c.get("exception_message"):
            message = str(c.get("exception_message") or "exception raised").strip().splitlines()
            return (message[-1] if message else "exception raised")[:300]
    return None


def _first_distinct(values: Sequence[Any], k: int = _EXAMPLES) -> list[Any]:
    out: list[Any] = []
    seen: set[str] = set()
    for v in values:
        v = _plain(v)
        key = repr(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
        if len(out) == k:
            break
    return out


def _short(v: Any, width: int = 24) -> Any:
    """Long strings (hashes, texts) cut to their first characters, for one-line details."""
    if isinstance(v, (list, tuple)):
        return type(v)(_short(x, width) for x in v)
    if isinstance(v, str) and len(v) > width:
        return v[: width - 8] + "..."
    return v


def _plain(v: Any) -> Any:
    """numpy scalars to Python, NaN/NA to None, recursively through tuples, lists and dicts."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (ValueError, TypeError):
            pass
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


# --- input hygiene -------------------------------------------------------------------------------


def _conform(df: pd.DataFrame | None, table: str) -> pd.DataFrame:
    """An empty frame gets the table's columns, so "no rows" never reads as "missing columns"."""
    df = pd.DataFrame() if df is None else df
    if len(df) == 0:
        missing = [f.name for f in SCHEMAS[table] if f.name not in df.columns]
        if missing:
            df = df.assign(**{c: pd.Series([], dtype=object) for c in missing})
    return df.reset_index(drop=True)


def _inputs(
    contexts: pd.DataFrame, variants: pd.DataFrame, answers: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three frames with their tables' columns, tombstones dropped from the contexts."""
    return _current_contexts(_conform(contexts, "contexts")), _conform(variants, "variants"), _conform(answers, "answers")


def _current_contexts(contexts: pd.DataFrame) -> pd.DataFrame:
    if "deleted" not in contexts.columns or len(contexts) == 0:
        return contexts
    tombstone = contexts["deleted"].astype(object).map(lambda x: _plain(x) is True)
    return contexts[~tombstone.astype(bool)].reset_index(drop=True)


def _present(v: Any) -> bool:
    return _plain(v) is not None


def _distinct(series: pd.Series) -> list[Any]:
    return sorted({str(_plain(v)) for v in series if _present(v)})
