"""The report's section on real traffic: what the query service answered, with which options,
and how the one-time sleep-time cost amortizes over the queries actually served.

``query_log_section(con)`` returns an HTML fragment (a ``<section id="service-traffic">``, from the
template ``sleeptime/report/templates/service_traffic.html.j2``) for ``sleeptime/report/_html.py``;
``query_log_numbers(con)`` the numbers it quotes, for report.json.
Both read the ``query_log`` table and ``variants_current``; without a ``query_log`` table or
without rows they say so.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd
from markupsafe import Markup

from sleeptime.htmltable import html_table, render

_CHOICE_COLUMNS = ["sleep_budget", "test_budget", "queries", "share", "mean_predicted_accuracy", "mean_test_tokens",
                   "mean_latency_ms"]
_AMORTIZATION_COLUMNS = ["sleep_budget", "contexts", "queries", "queries_per_context", "sleep_tokens_per_context",
                         "sleep_tokens_per_query", "test_tokens_per_query", "weighted_tokens_per_query", "usd_per_query"]


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'", [name]
    ).fetchone()
    return bool(found and found[0])


def query_log_numbers(con: duckdb.DuckDBPyConnection, t: float = 10.0) -> dict[str, Any]:
    """Traffic totals, choices per option and amortization on served traffic; {} without rows."""
    if not _has_table(con, "query_log"):
        return {}
    total = con.execute(
        """SELECT count(*) AS queries,
                  count(*) FILTER (WHERE status = 'answered') AS answered,
                  count(*) FILTER (WHERE status = 'failed') AS failed,
                  count(DISTINCT tenant) AS tenants,
                  count(DISTINCT context_id) AS contexts,
                  strftime(min(received_at) AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M UTC') AS first,
                  strftime(max(received_at) AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M UTC') AS last,
                  avg(CASE WHEN fallback THEN 1.0 ELSE 0.0 END) FILTER (WHERE status = 'answered') AS fallback_rate,
                  avg(CASE WHEN attempts > 1 THEN 1.0 ELSE 0.0 END) AS retried_rate,
                  quantile_cont(latency_ms, 0.5) AS p50_latency_ms,
                  quantile_cont(latency_ms, 0.99) AS p99_latency_ms,
                  quantile_cont(selection_us, 0.5) AS p50_selection_us,
                  sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
                  sum(cost_usd) AS cost_usd,
                  count(DISTINCT question_sha256) AS distinct_questions
           FROM query_log"""
    ).df()
    if total.empty or int(total["queries"].iloc[0]) == 0:
        return {}
    totals = {k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in total.iloc[0].items()}
    choices = con.execute(
        """SELECT sleep_budget, test_budget, count(*) AS queries,
                  count(*) * 1.0 / sum(count(*)) OVER () AS share,
                  avg(predicted_accuracy) AS mean_predicted_accuracy,
                  avg(completion_tokens) AS mean_test_tokens,
                  avg(latency_ms) AS mean_latency_ms
           FROM query_log WHERE status = 'answered' GROUP BY ALL ORDER BY queries DESC, sleep_budget, test_budget"""
    ).df()
    # Sleep time is paid once per (context, budget) of the current text; the traffic served from a
    # budget's variants amortizes it. Raw-context answers carry no sleep cost.
    amortization = con.execute(
        f"""WITH served AS (
                SELECT context_id, sleep_budget, count(*) AS queries, sum(completion_tokens) AS test_tokens,
                       sum(cost_usd) AS test_cost_usd
                FROM query_log WHERE status = 'answered' GROUP BY ALL),
            sleep AS (
                SELECT context_id, sleep_budget, sum(completion_tokens) AS sleep_tokens, sum(cost_usd) AS sleep_cost_usd
                FROM variants_current GROUP BY ALL)
            SELECT s.sleep_budget,
                   count(*) AS contexts,
                   CAST(sum(s.queries) AS BIGINT) AS queries,
                   sum(s.queries) * 1.0 / count(*) AS queries_per_context,
                   sum(coalesce(v.sleep_tokens, 0)) * 1.0 / count(*) AS sleep_tokens_per_context,
                   sum(coalesce(v.sleep_tokens, 0)) * 1.0 / sum(s.queries) AS sleep_tokens_per_query,
                   sum(s.test_tokens) * 1.0 / sum(s.queries) AS test_tokens_per_query,
                   (sum(coalesce(v.sleep_tokens, 0)) + {float(t)} * sum(s.test_tokens)) / sum(s.queries) AS weighted_tokens_per_query,
                   (sum(coalesce(v.sleep_cost_usd, 0)) + sum(s.test_cost_usd)) / sum(s.queries) AS usd_per_query
            FROM served s LEFT JOIN sleep v ON v.context_id = s.context_id AND v.sleep_budget = s.sleep_budget
            GROUP BY s.sleep_budget ORDER BY sleep_tokens_per_context"""
    ).df()
    # All sleep-time work on the contexts that got traffic (every budget is prepared), per served query.
    overall = con.execute(
        f"""WITH served AS (SELECT context_id, count(*) AS queries, sum(completion_tokens) AS test_tokens
                            FROM query_log WHERE status = 'answered' GROUP BY ALL),
                 sleep AS (SELECT context_id, sum(completion_tokens) AS sleep_tokens FROM variants_current GROUP BY ALL)
            SELECT CAST(sum(s.queries) AS BIGINT) AS queries, sum(coalesce(v.sleep_tokens, 0)) AS sleep_tokens,
                   sum(coalesce(v.sleep_tokens, 0)) * 1.0 / sum(s.queries) AS sleep_tokens_per_query,
                   (sum(coalesce(v.sleep_tokens, 0)) + {float(t)} * sum(s.test_tokens)) / sum(s.queries) AS weighted_tokens_per_query
            FROM served s LEFT JOIN sleep v ON v.context_id = s.context_id"""
    ).df()
    return {
        "totals": totals,
        "choices": choices.to_dict("records"),
        "amortization": amortization.to_dict("records"),
        "all_sleep_work": {k: (None if pd.isna(v) else float(v)) for k, v in overall.iloc[0].items()},
        "test_token_weight": t,
    }


def query_log_section(con: duckdb.DuckDBPyConnection, t: float = 10.0) -> str:
    """HTML for the report: the query service's traffic and its amortization."""
    numbers = query_log_numbers(con, t)
    if not numbers:
        return render("service_traffic.html.j2", numbers=numbers)
    # The tables are HTML we rendered (their cells escaped): Markup keeps the section from escaping them again.
    choices = html_table(numbers["choices"], _CHOICE_COLUMNS)
    amortization = html_table(numbers["amortization"], _AMORTIZATION_COLUMNS)
    return render("service_traffic.html.j2", numbers=numbers, t=t, choices=Markup(choices), amortization=Markup(amortization))
