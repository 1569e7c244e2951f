"""The gate as the pipeline uses it: the delta gate at every publish, the full one on demand.

- ``gate_delta``: the rows a run adds (the staged rows, as the candidate warehouse holds them)
  get the column expectations; the cross-table rules run as SQL anti-join counts on the
  candidate and GX asserts each is zero. Cost follows the delta, not the warehouse.
- ``gate_full``: the whole published snapshot re-validated (``sleeptime validate --full``, the
  weekly deployment).

Contexts with an open failure (a model call that failed for good) are left out of the coverage
check: they are known to be incomplete, recorded in ``failures`` and retried by the next run.
Each run's Data Docs go to ``<data_docs>/runs/<run_id>/``; ``<data_docs>/index.html`` lists them.
"""

from __future__ import annotations

import html
from pathlib import Path

import duckdb

from sleeptime.config import RunConfig
from sleeptime.quality.gate import GateResult, ReferenceCheck, validate_delta, validate_snapshot
from sleeptime.storage.records import KEYS
from sleeptime.storage.warehouse import Candidate, connect_read_only

_FAILING = "(SELECT context_id FROM failures_open)"
# Contexts whose c' a provider batch is still computing (sleeptime/batch.py): covered once collected.
_IN_FLIGHT = ("(SELECT unnest(from_json(context_ids_json, '[\"VARCHAR\"]')) FROM batches "
              "WHERE status = 'submitted')")


def _delta_sql(table: str) -> str:
    """The temp table of the rows this publish adds to ``table`` (made by ``_materialise_delta``)."""
    return f"SELECT * FROM delta_{table}"


def _materialise_delta(con: duckdb.DuckDBPyConnection) -> None:
    """``delta_<table>``: the staged rows, one per key (the latest run's), as the publish applies them.

    Read from the staged rows themselves, not found again among the candidate's millions of rows.
    """
    for table in ("contexts", "variants", "answers"):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE delta_{table} AS SELECT * FROM lake.staging.{table} "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(KEYS[table])} ORDER BY run_id DESC) = 1"
        )


def reference_checks(con: duckdb.DuckDBPyConnection, config: RunConfig, run_id: str) -> list[ReferenceCheck]:
    """The cross-table rules, as violation counts over the candidate (delta rows vs. everything)."""
    slots = [(b.name, k) for b in config.sleep_budgets if not b.is_none for k in range(b.samples)]
    slot_sql = " OR ".join("(v.sleep_budget = ? AND v.sample_index = ?)" for _ in slots) or "false"
    slot_params = [x for pair in slots for x in pair]
    checks = [
        ("answers_reference_a_variant", "every new answer with a variant_id references an existing variant",
         f"SELECT answer_id FROM ({_delta_sql('answers')}) a WHERE a.variant_id IS NOT NULL "
         "AND NOT EXISTS (SELECT 1 FROM variants v WHERE v.variant_id = a.variant_id)", []),
        ("answers_reference_a_query", "every new answer references an existing query of its context version",
         f"SELECT answer_id FROM ({_delta_sql('answers')}) a "
         "WHERE NOT EXISTS (SELECT 1 FROM queries q WHERE q.query_id = a.query_id AND q.context_hash = a.context_hash)",
         []),
        ("rows_reference_a_context_version", "every new variant and answer references a known context version",
         f"SELECT variant_id FROM ({_delta_sql('variants')}) v WHERE NOT EXISTS (SELECT 1 FROM contexts c "
         "WHERE c.context_id = v.context_id AND c.content_hash = v.context_hash) "
         f"UNION ALL SELECT answer_id FROM ({_delta_sql('answers')}) a WHERE NOT EXISTS (SELECT 1 FROM contexts c "
         "WHERE c.context_id = a.context_id AND c.content_hash = a.context_hash)", []),
        ("no_stale_work_this_run", "rows this run computed belong to the current text of their context",
         f"SELECT variant_id FROM ({_delta_sql('variants')}) v WHERE v.run_id = ? AND NOT EXISTS ("
         "SELECT 1 FROM contexts_current c WHERE c.context_id = v.context_id AND c.content_hash = v.context_hash) "
         f"UNION ALL SELECT answer_id FROM ({_delta_sql('answers')}) a WHERE a.run_id = ? AND NOT EXISTS ("
         "SELECT 1 FROM contexts_current c WHERE c.context_id = a.context_id AND c.content_hash = a.context_hash)",
         [run_id, run_id]),
        ("current_contexts_covered",
         f"every current context has its {len(slots)} configured variants (contexts with open failures or "
         "in a provider batch still running excepted)",
         f"""SELECT c.context_id FROM contexts_current c
             LEFT JOIN (SELECT v.context_id, v.context_hash, count(DISTINCT (v.sleep_budget, v.sample_index)) AS n
                        FROM variants v WHERE v.model = ? AND ({slot_sql}) GROUP BY ALL) v
             ON v.context_id = c.context_id AND v.context_hash = c.content_hash
             WHERE coalesce(v.n, 0) <> {len(slots)} AND c.context_id NOT IN {_FAILING}
               AND c.context_id NOT IN {_IN_FLIGHT}""",
         [config.sleep_model, *slot_params]),
        # Only a new variant can make a second one in a slot: the contexts the delta touches.
        ("one_variant_per_slot", "one current variant per (context, text, budget, sample)",
         """SELECT context_id FROM variants_current
            WHERE context_id IN (SELECT context_id FROM delta_variants)
            GROUP BY context_id, context_hash, model, sleep_budget, sample_index, prompt_version HAVING count(*) > 1""",
         []),
    ]
    out = []
    for name, description, sql, params in checks:
        violations = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0]
        examples = ()
        if violations:
            examples = tuple(str(r[0]) for r in con.execute(f"SELECT * FROM ({sql}) LIMIT 3", params).fetchall())
        out.append(ReferenceCheck(name, description, int(violations), examples))
    return out


def gate_delta(candidate: Candidate, config: RunConfig, run_id: str) -> tuple[bool, str]:
    """(ok, report) for the rows this publish adds, checked against the candidate warehouse."""
    con = candidate.con
    _materialise_delta(con)
    contexts = con.execute(_delta_sql("contexts")).df()
    variants = con.execute(_delta_sql("variants")).df()
    answers = con.execute(_delta_sql("answers")).df()
    references = reference_checks(con, config, run_id)
    if not (len(contexts) or len(variants) or len(answers)) and not any(r.violations for r in references):
        # Nothing new for the column suites and every cross-table count is zero: importing GX
        # (about 6 s in a fresh process) would validate nothing. An unchanged refresh ends here.
        return True, f"quality gate passed: no new rows; {len(references)} reference checks all zero"
    docs = run_docs_dir(config.data_docs_dir, run_id)
    result = validate_delta(
        contexts, variants, answers, references, config.sleep_budgets, config.test_budgets, config.sleep_model,
        data_docs_dir=docs,
    )
    write_docs_index(config.data_docs_dir)
    return _verdict(result, f"{len(contexts)} contexts, {len(variants)} variants, {len(answers)} answers added")


def gate_full(con: duckdb.DuckDBPyConnection, config: RunConfig, name: str | None = None) -> tuple[bool, str]:
    """(ok, report) for every current row of a warehouse (the weekly full re-validation)."""
    from datetime import datetime, timezone

    name = name or f"r{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-full"  # sorts with the run ids
    contexts = con.execute(f"SELECT * FROM contexts_current WHERE context_id NOT IN {_FAILING}").df()
    variants = con.execute(f"SELECT * FROM variants_current WHERE context_id NOT IN {_FAILING}").df()
    answers = con.execute(f"SELECT * FROM answers_current WHERE context_id NOT IN {_FAILING}").df()
    result = validate_snapshot(
        contexts, variants, answers, config.sleep_budgets, config.test_budgets, config.sleep_model,
        data_docs_dir=run_docs_dir(config.data_docs_dir, name),
    )
    write_docs_index(config.data_docs_dir)
    return _verdict(result, f"{len(contexts)} contexts, {len(variants)} variants, {len(answers)} answers")


def gate_snapshot(path: Path, config: RunConfig) -> tuple[bool, str]:
    """``gate_full`` over the warehouse file at ``path``."""
    con = connect_read_only(path)
    try:
        return gate_full(con, config)
    finally:
        con.close()


def _verdict(result: GateResult, what: str) -> tuple[bool, str]:
    if result.success:
        return True, (f"quality gate passed ({what}): {', '.join(result.suites_run)} in {result.seconds:.1f}s; "
                      f"Data Docs in {result.data_docs_dir}")
    return False, result.describe()


def run_docs_dir(root: Path, name: str) -> Path:
    return Path(root) / "runs" / name


KEEP_DOCS = 50  # validations whose Data Docs are kept (each is a small static site)


def write_docs_index(root: Path, keep: int = KEEP_DOCS) -> Path:
    """``<root>/index.html``: one link per validation, newest first; older sites are removed."""
    import shutil

    root = Path(root)
    runs = sorted((p.name for p in (root / "runs").glob("*") if (p / "index.html").is_file()), reverse=True)
    for stale in runs[keep:]:
        shutil.rmtree(root / "runs" / stale, ignore_errors=True)
    runs = runs[:keep]
    items = "\n".join(f'<li><a href="runs/{html.escape(n)}/index.html">{html.escape(n)}</a></li>' for n in runs)
    page = (
        "<!doctype html><meta charset=utf-8><title>sleeptime quality gate</title>"
        "<h1>Quality gate: one validation per run</h1>"
        f"<p>{len(runs)} validations, newest first.</p><ul>\n{items}\n</ul>\n"
    )
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(root / "index.html")
    return root / "index.html"
