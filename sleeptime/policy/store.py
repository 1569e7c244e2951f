"""Fitting the policy at publish time and storing it as versioned rows."""

from __future__ import annotations

from typing import Any

import duckdb

from sleeptime.config import PolicyConfig
from sleeptime.policy._fit import Policy, PolicySettings, fit_policy

# What the fit reads: the graded regular answers of sleeptime.analysis.frames (sample_index 0, gold
# known, current data, kind from the query) in the columns the fit uses, and the sleep cost per
# (context, budget). Not load_frames, which also loads every current variant's text, the queries
# and the pass@k samples, and whose pandas conversion of 3.6M answers took about 15 s of a 55 s fit
# at 10M answers (bench/warehouse_scale.py); Arrow then to_pandas gives the same frame faster.
_FIT_ANSWERS = """
SELECT a.query_id, a.context_id, coalesce(q.kind, 'unknown') AS kind, a.sleep_budget, a.test_budget,
       a.correct, a.completion_tokens, a.cost_usd
FROM answers_current a
JOIN queries_current q ON q.query_id = a.query_id AND q.context_hash = a.context_hash
WHERE a.correct IS NOT NULL AND a.sample_index = 0
"""
_FIT_SLEEP = """
SELECT context_id, sleep_budget, CAST(sum(completion_tokens) AS DOUBLE) AS sleep_tokens, sum(cost_usd) AS sleep_cost_usd
FROM variants_current GROUP BY ALL
"""


def settings_from(config: PolicyConfig, test_budget_order: tuple[str, ...] = ()) -> PolicySettings:
    fields = config.model_dump(exclude={"holdout_fraction"})
    return PolicySettings(**fields, test_budget_order=test_budget_order)


def fit_from_snapshot(con: duckdb.DuckDBPyConnection, config: PolicyConfig, test_budget_order: tuple[str, ...] = ()) -> Policy | None:
    """The policy for the data in ``con``; None when nothing is labeled yet."""
    cur = con.cursor()  # its own result set: the caller may have one open on ``con``
    try:
        answers = cur.sql(_FIT_ANSWERS).to_arrow_table().to_pandas()
        if answers.empty:
            return None
        sleep = cur.sql(_FIT_SLEEP).to_arrow_table().to_pandas()
    finally:
        cur.close()
    return fit_policy(answers, sleep, settings_from(config, test_budget_order))


def policy_rows(policy: Policy, run_id: str) -> list[dict[str, Any]]:
    rows = []
    for record in policy.records():
        version = record.pop("version")
        rows.append({**record, "policy_version": version, "run_id": run_id})
    return rows


def derive_policy(con: duckdb.DuckDBPyConnection, config: PolicyConfig, run_id: str,
                  test_budget_order: tuple[str, ...] = ()) -> dict[str, list[dict[str, Any]]]:
    """Rows to add to a candidate warehouse (open on ``con``): a new policy version, or nothing
    if it is unchanged."""
    policy = fit_from_snapshot(con, config, test_budget_order)
    if policy is None:
        return {}
    known = con.execute("SELECT count(*) FROM policies WHERE policy_version = ?", [policy.version]).fetchone()[0]
    return {} if known else {"policies": policy_rows(policy, run_id)}


def load_current_policy(con: duckdb.DuckDBPyConnection, config: PolicyConfig, test_budget_order: tuple[str, ...] = ()) -> Policy | None:
    """The published policy, refitted from the published data (the fit is deterministic, so it is
    the same version the table holds; refitting gives the in-memory object with its methods)."""
    return fit_from_snapshot(con, config, test_budget_order)
