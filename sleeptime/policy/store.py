"""The policy in the warehouse: fitted once at publish time, then loaded from its rows.

``derive_policy`` is the only place a policy is fitted from warehouse data (the publish, on the
candidate). Everything that uses the published policy (the query service, ``policy explain``,
``sleeptime plan``, the refresh's sleep allocation) calls ``load_published_policy``, which reads
the ``policies`` rows of the newest version and nothing else: no answers, no refit, so what is
served is exactly what the gate approved, whatever the reader's own configuration says.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa

from sleeptime.policy._fit import KEY_COLUMNS, fit_result
from sleeptime.policy._policy import Policy
from sleeptime.policy._policy import policy_rows as fit_rows
from sleeptime.policy_settings import PolicySettings
from sleeptime.storage.lake import as_arrow

# What the fit reads: the warehouse's per-context summaries of the graded first-sample answers
# (sleeptime/storage/summaries.py) and the sleep cost per (context, budget). Rows of several test
# models are passed apart, not grouped: the fit pools them by summing (grouping them here took
# 1 s of a publish at 10M answers). Reading the graded answers themselves took about 10 s.
_FIT_STATS = """
SELECT context_id, kind, sleep_budget, test_budget, answers AS n, correct,
       CAST(completion_tokens AS DOUBLE) AS completion_tokens, completion_n, cost_usd, latency_s, latency_n
FROM summary_answers WHERE graded AND kind IS NOT NULL
"""
_FIT_LABELED = "SELECT context_id, kind, queries FROM summary_labeled"
_FIT_SLEEP = """
SELECT context_id, sleep_budget, CAST(completion_tokens AS DOUBLE) AS sleep_tokens, cost_usd AS sleep_cost_usd
FROM summary_sleep
"""
# Queries per context over the last window of the log, counted back from its newest entry (not from
# now): the same log gives the same counts, hence the same policy version, on any day.
_TRAFFIC = """
SELECT context_id, count(*) AS n FROM query_log
WHERE context_id IS NOT NULL
  AND received_at > (SELECT max(received_at) FROM query_log) - to_microseconds(CAST(? * 86400e6 AS BIGINT))
GROUP BY ALL
"""
_LATEST = """
SELECT policy_version FROM policies WHERE scope = 'policy' ORDER BY run_id DESC, policy_version LIMIT 1
"""


def traffic_counts(con: duckdb.DuckDBPyConnection, window_days: float) -> dict[str, int]:
    """Queries per context in the last ``window_days`` of the query log (empty: no traffic).

    Runs on ``con`` itself (not a cursor of it): callers pass the lake index, whose temporary
    views only that connection sees; the result is fetched at once."""
    return {str(c): int(n) for c, n in con.execute(_TRAFFIC, [float(window_days)]).fetchall()}


def _fit_inputs(con: duckdb.DuckDBPyConnection, settings: PolicySettings) -> tuple | None:
    cur = con.cursor()  # its own result set: the caller may have one open on ``con``
    try:
        stats = _categorical_frame(cur.sql(_FIT_STATS).to_arrow_table(), KEY_COLUMNS)
        if stats.empty:
            return None
        labeled = cur.sql(_FIT_LABELED).to_arrow_table().to_pandas()
        sleep = cur.sql(_FIT_SLEEP).to_arrow_table().to_pandas()
    finally:
        cur.close()
    return stats, labeled, sleep, traffic_counts(con, settings.traffic_window_days)


def _categorical_frame(table: pa.Table, columns: tuple[str, ...]) -> pd.DataFrame:
    """``table`` as pandas with ``columns`` dictionary-encoded (categorical): the fit's keys, made
    categorical in Arrow instead of from a million Python strings."""
    for name in columns:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).dictionary_encode())
    return table.to_pandas()


def policy_rows(policy: Policy, run_id: str) -> pa.Table:
    """The policy's rows as the ``policies`` table stores them."""
    return _stored(policy.rows(), run_id)


def _stored(rows: pd.DataFrame, run_id: str) -> pa.Table:
    return as_arrow("policies", pa.Table.from_pandas(rows.assign(run_id=run_id), preserve_index=False))


def derive_policy(con: duckdb.DuckDBPyConnection, settings: PolicySettings, run_id: str) -> dict[str, pa.Table]:
    """Rows to add to a candidate warehouse (open on ``con``): the policy fitted with ``settings``
    (``RunConfig.policy_settings``) as a new version, or nothing if it is unchanged. (The rows
    straight from the fit: ``Policy.build`` would also load them back into a Policy, which the
    publish does not need.)"""
    inputs = _fit_inputs(con, settings)
    if inputs is None:
        return {}
    stats, labeled, sleep, traffic = inputs
    fit = fit_result(stats, labeled, sleep, settings, traffic)
    known = con.execute("SELECT count(*) FROM policies WHERE policy_version = ?", [fit.version]).fetchone()[0]
    if known:
        return {}
    return {"policies": _stored(fit_rows(fit), run_id)}


def load_published_policy(con: duckdb.DuckDBPyConnection) -> Policy | None:
    """The newest published policy, from its stored rows only; None when none is published.
    (On ``con`` itself, like ``traffic_counts``.)"""
    row = con.execute(_LATEST).fetchone()
    if row is None:
        return None
    rows = con.execute("SELECT * FROM policies WHERE policy_version = ?", [row[0]]).to_arrow_table().to_pandas()
    return Policy.from_rows(rows)
