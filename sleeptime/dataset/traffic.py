"""A simulated query log: Zipf-popular contexts asking their own labeled questions.

Real traffic is skewed: a few contexts get most of the queries, which is what makes paying for
sleep-time work on some contexts and not others worthwhile. The simulator draws that skew from a
seed and writes rows of the lake's ``query_log`` table (``sleeptime.storage.records``), so the
next publish commits them as if the query service had logged them.

The rows record arrivals, not answers: the columns the service fills from its choice and the
model call (variant, budgets, predictions, tokens, cost, latencies) are NULL. They carry
``status = "answered"`` so that the views of served traffic count them, and ``snapshot =
"simulated"`` so they can be told apart from the service's. Each question is one of its context's
labeled queries; the log stores only its sha256 (as the service does), so
:func:`logged_queries` maps rows back to the queries and their gold answers.
"""

from __future__ import annotations

import random
from bisect import bisect
from collections import Counter
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from pathlib import Path
from typing import Any

from sleeptime.domain import ContextWithQueries, Query, content_hash

# A fixed default start, so the same seed gives the same log on any day.
DEFAULT_START = datetime(2025, 1, 6, tzinfo=timezone.utc)
SIMULATED = "simulated"
DEFAULT_TENANT = "default"  # sleeptime.service.snapshot's tenant for contexts without one


def simulate_query_log(
    corpus: list[ContextWithQueries],
    n_queries: int,
    seed: int = 0,
    zipf_s: float = 1.1,
    start: datetime | None = None,
    span_days: float = 7.0,
) -> list[dict[str, Any]]:
    """``n_queries`` query_log rows in time order; context popularity is Zipf over a seeded shuffle.

    The shuffle keeps popularity independent of corpus order (the first contexts are not the
    popular ones). ``request_id`` is derived from the seed and the query, so spooling the same log
    twice upserts the same rows instead of doubling the traffic.
    """
    from sleeptime.service.querylog import partition, question_digest

    if n_queries < 0:
        raise ValueError("n_queries must be non-negative")
    if zipf_s < 0 or span_days < 0:
        raise ValueError("zipf_s and span_days must be non-negative")
    labeled = [row for row in corpus if row.queries]
    if not labeled:
        if n_queries:
            raise ValueError("the corpus has no labeled queries to draw from")
        return []
    start = DEFAULT_START if start is None else start
    start = start if start.tzinfo else start.replace(tzinfo=timezone.utc)

    rng = random.Random(f"query-log:{seed}")
    ranked = rng.sample(labeled, len(labeled))  # rank 1 = the most popular context
    cumulative = list(accumulate(1 / r**zipf_s for r in range(1, len(ranked) + 1)))
    offsets = sorted(rng.uniform(0, span_days * 86400) for _ in range(n_queries))
    rows = []
    for i, offset in enumerate(offsets):
        row = ranked[min(bisect(cumulative, rng.random() * cumulative[-1]), len(ranked) - 1)]
        query = rng.choice(row.queries)
        received_at = start + timedelta(seconds=offset)
        rows.append({
            "request_id": f"sim-{content_hash(SIMULATED, seed, i, query.id)[:28]}",
            "received_at": received_at,
            "tenant": str(row.context.metadata.get("tenant") or DEFAULT_TENANT),
            "key_id": None,
            "context_id": row.context.id,
            "context_hash": row.context.content_hash,
            "kind": query.kind,
            "question_sha256": question_digest(query.text),
            "question_chars": len(query.text),
            "variant_id": None,
            "sleep_budget": None,
            "test_budget": None,
            "test_model": None,
            "scope": None,
            "scope_value": None,
            "fallback": None,
            "target_accuracy": None,
            "predicted_accuracy": None,
            "predicted_cost_weighted": None,
            "prompt_tokens": None,
            "completion_tokens": None,
            "cost_usd": None,
            "latency_ms": None,
            "model_latency_ms": None,
            "selection_us": None,
            "status": "answered",
            "attempts": None,
            "error": None,
            "policy_version": None,
            "snapshot": SIMULATED,
            "run_id": partition(received_at),
        })
    return rows


def logged_queries(corpus: list[ContextWithQueries], rows: list[dict[str, Any]]) -> list[Query]:
    """The labeled query behind each row (KeyError for a row the corpus cannot explain)."""
    from sleeptime.service.querylog import question_digest

    by_digest = {(q.context_id, question_digest(q.text)): q for row in corpus for q in row.queries}
    return [by_digest[(r["context_id"], r["question_sha256"])] for r in rows]


def query_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Queries per context_id, most queried first."""
    return dict(Counter(r["context_id"] for r in rows).most_common())


def write_query_log_spool(rows: list[dict[str, Any]], spool_dir: Path | str) -> Path | None:
    """Write the rows where the query service spools its log; the next publish commits them.

    Returns the Parquet file written (None for no rows).
    """
    if not rows:
        return None
    import pyarrow as pa

    from sleeptime.service.querylog import QUERY_LOG_SCHEMA, TABLE
    from sleeptime.storage.spool import Spool

    return Spool(spool_dir).write(TABLE, pa.Table.from_pylist(rows, schema=QUERY_LOG_SCHEMA))
