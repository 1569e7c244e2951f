"""Per-context summaries the warehouse keeps beside its tables, updated with every publish.

The dashboards' aggregate views (v_accuracy_by_budget, v_cost_per_query, v_pass_at_k) and the
policy fit need sums over every current answer. At 10M answers, aggregating ``answers_current``
(a join of every answer with the current context versions and variants) took 1-6 s per query on
DuckDB 1.5.5, and the fit's read 10 s. So the warehouse keeps those sums per context in small
tables, and a publish recomputes the rows of exactly the contexts whose data it touched (a new
version, query, variant or answer of the context): the work follows what changed, and the
result equals a recomputation from scratch by construction (tests/storage/test_summaries.py).

Every summary is keyed by ``context_id`` and holds current data only (the context's current
version; answers of its current variants or of the raw context), so a context that changes
simply gets its rows replaced, and a deleted one loses them.
"""

from __future__ import annotations

import duckdb

# Sums are stored as BIGINT: DuckDB's sum of BIGINT is a HUGEINT, and aggregating a HUGEINT column
# of 1M rows took 1-2 s where BIGINT takes 0.1 s.

# The contexts whose rows a refresh recomputes; a temporary table of the candidate's connection.
SCOPE_TABLE = "_summary_scope"

# Current data restricted to the scope, materialised once per refresh (the four summaries read
# it; scanning and joining the answers once instead of four times). {scope}: a WHERE clause on
# context_id, or nothing. The answer's query kind is joined here too (NULL: no current query row).
_SCOPE_SQL = (
    """CREATE OR REPLACE TEMP TABLE _s_cc AS
       SELECT context_id, content_hash FROM contexts_current {scope}""",
    """CREATE OR REPLACE TEMP TABLE _s_cv AS
       SELECT v.context_id, v.variant_id, v.sleep_budget, v.completion_tokens, v.cost_usd
       FROM variants v JOIN _s_cc cc ON v.context_id = cc.context_id AND v.context_hash = cc.content_hash""",
    """CREATE OR REPLACE TEMP TABLE _s_ca AS
       SELECT a.context_id, a.query_id, a.variant_id, a.sleep_budget, a.test_model, a.test_budget, a.sample_index,
              a.correct, a.completion_tokens, a.prompt_tokens, a.cost_usd, a.latency_s,
              CASE WHEN q.query_id IS NULL THEN NULL ELSE coalesce(q.kind, 'unknown') END AS kind
       FROM answers a
       JOIN _s_cc cc ON a.context_id = cc.context_id AND a.context_hash = cc.content_hash
       LEFT JOIN queries q ON q.query_id = a.query_id AND q.context_hash = a.context_hash AND q.context_id = a.context_id
       WHERE a.variant_id IS NULL OR a.variant_id IN (SELECT variant_id FROM _s_cv)""",
)

# name -> SELECT over the scope's tables; the column order is the table's (migration 007).
SUMMARIES: dict[str, str] = {
    # Sleep-time cost per context and sleep budget (what c' cost).
    "summary_sleep": """
SELECT context_id, sleep_budget, count(*) AS variants,
       CAST(sum(completion_tokens) AS BIGINT) AS completion_tokens, sum(cost_usd) AS cost_usd
FROM _s_cv GROUP BY ALL
""",
    # First-sample answers per (context, query kind, test model, option, graded). kind is NULL
    # when the answer's query has no current row (the policy fit leaves those out, as it did).
    "summary_answers": """
SELECT context_id, kind, test_model, sleep_budget, test_budget, correct IS NOT NULL AS graded,
       count(*) AS answers, count(*) FILTER (WHERE correct) AS correct,
       CAST(sum(completion_tokens) AS BIGINT) AS completion_tokens, count(completion_tokens) AS completion_n,
       CAST(sum(prompt_tokens) AS BIGINT) AS prompt_tokens, count(prompt_tokens) AS prompt_n,
       sum(cost_usd) AS cost_usd, sum(latency_s) AS latency_s, count(latency_s) AS latency_n
FROM _s_ca WHERE sample_index = 0
GROUP BY ALL
""",
    # Labeled queries per (context, kind): how the fit weighs each context's kinds.
    "summary_labeled": """
SELECT context_id, kind, count(DISTINCT query_id) AS queries
FROM _s_ca WHERE sample_index = 0 AND correct IS NOT NULL AND kind IS NOT NULL
GROUP BY ALL
""",
    # pass@k on the raw context (parallel sampling with an oracle verifier): per context, the
    # queries with all of samples 0..k-1 graded, how many of them any sample got right, and their
    # tokens. k runs over the context's own sample indexes: a query with samples 0..k-1 has one
    # at k-1, so this is the same set of (query, k) as over the whole corpus.
    "summary_pass_at_k": """
WITH ks AS (SELECT DISTINCT context_id, sample_index + 1 AS k FROM _s_ca WHERE variant_id IS NULL),
per_query AS (
    SELECT a.context_id, a.test_model, a.test_budget, ks.k, a.query_id,
           bool_or(a.correct) AS any_correct, CAST(sum(a.completion_tokens) AS BIGINT) AS tokens
    FROM _s_ca a JOIN ks ON a.context_id = ks.context_id AND a.sample_index < ks.k
    WHERE a.variant_id IS NULL AND a.correct IS NOT NULL
    GROUP BY ALL
    HAVING count(*) = ks.k
)
SELECT context_id, test_model, test_budget, k, count(*) AS queries,
       count(*) FILTER (WHERE any_correct) AS passed, CAST(sum(tokens) AS BIGINT) AS tokens, count(tokens) AS tokens_n
FROM per_query GROUP BY ALL
""",
}

# Tables whose rows name the contexts a change touches.
CONTEXT_TABLES = ("contexts", "queries", "variants", "answers")


def create_scope(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {SCOPE_TABLE} (context_id VARCHAR)")


def mark_touched(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Add the contexts named by the rows of ``source`` (a relation with a context_id column)."""
    con.execute(f"INSERT INTO {SCOPE_TABLE} SELECT DISTINCT context_id FROM {source}")


def refresh(con: duckdb.DuckDBPyConnection, everything: bool = False) -> int:
    """Recompute the summaries of the touched contexts (``everything``: of all contexts); returns
    how many contexts were recomputed, and empties the scope."""
    if everything:
        where, n = "", con.execute("SELECT count(*) FROM contexts_current").fetchone()[0]
        for table in SUMMARIES:
            con.execute(f"DELETE FROM {table}")
    else:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _summary_ids AS SELECT DISTINCT context_id FROM {SCOPE_TABLE}")
        n = con.execute("SELECT count(*) FROM _summary_ids").fetchone()[0]
        if not n:
            return 0
        where = "WHERE context_id IN (SELECT context_id FROM _summary_ids)"
        for table in SUMMARIES:
            con.execute(f"DELETE FROM {table} {where}")
    for sql in _SCOPE_SQL:
        con.execute(sql.format(scope=where))
    for table, select in SUMMARIES.items():
        con.execute(f"INSERT INTO {table} SELECT * FROM ({select})")
    for temp in ("_s_ca", "_s_cv", "_s_cc"):
        con.execute(f"DROP TABLE {temp}")
    con.execute(f"DELETE FROM {SCOPE_TABLE}")
    return int(n)
