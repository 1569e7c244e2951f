"""The query log: one row per query the service handled, appended to the lake in batches.

Rows wait in memory and are written when ``batch_size`` rows are pending or every ``flush_s``
seconds, and once more at shutdown, as one Parquet file per batch::

    <lake>/query_log/published=service-<YYYYMMDD>/batch-<uuid>.parquet

written atomically (hidden temporary name, fsync, rename) like every lake file, so the next
warehouse build picks them up (table ``query_log``, key ``request_id``). A failed write keeps the
rows for the next flush (at most ``max_pending`` rows are kept; beyond that the oldest are
dropped and counted).

What is stored, and what is not: the context, the choice, tokens, cost, latency, the outcome and
the key id; never the question text (only its sha256, so repeated questions can be counted, and
its length), never the answer, never the key's secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from sleeptime.storage.lake import write_parquet_atomic

log = logging.getLogger(__name__)

TABLE = "query_log"

QUERY_LOG_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("tenant", pa.string()),
        ("key_id", pa.string()),  # which API key (its id, not its secret); NULL without auth
        ("context_id", pa.string()),
        ("context_hash", pa.string()),
        ("kind", pa.string()),  # the query kind used for selection (inferred or given); NULL: none
        ("question_sha256", pa.string()),
        ("question_chars", pa.int32()),
        ("variant_id", pa.string()),  # NULL: answered from the raw context (or failed)
        ("sleep_budget", pa.string()),
        ("test_budget", pa.string()),
        ("test_model", pa.string()),
        ("scope", pa.string()),  # context | kind | corpus: where the policy found the option
        ("scope_value", pa.string()),
        ("fallback", pa.bool_()),  # the policy's fallback, or a later option of the failure chain
        ("target_accuracy", pa.float64()),
        ("predicted_accuracy", pa.float64()),
        ("predicted_cost_weighted", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("latency_ms", pa.float64()),  # the whole request, selection and model call included
        ("model_latency_ms", pa.float64()),
        ("selection_us", pa.float64()),
        ("status", pa.string()),  # answered | failed
        ("attempts", pa.int32()),  # options tried (1 = the first choice answered)
        ("error", pa.string()),  # the last model error, when an option failed
        ("policy_version", pa.string()),
        ("snapshot", pa.string()),  # the warehouse snapshot file the choice came from
        ("run_id", pa.string()),  # service-<YYYYMMDD>, the lake partition
    ]
)

# warehouse/migrations/004_query_log.sql (proposed): the table and the dashboard views over it.
MIGRATION_SQL = """\
-- The query service's log (sleeptime/service/querylog.py): one row per query the service handled,
-- appended in batches to lake/query_log/published=service-<YYYYMMDD>/. No question text and no key
-- material: the question's sha256 and length only, and the id (not the secret) of the API key.

-- key: request_id
CREATE TABLE query_log (
    request_id               VARCHAR NOT NULL,
    received_at              TIMESTAMPTZ NOT NULL,
    tenant                   VARCHAR,
    key_id                   VARCHAR,            -- NULL when the service ran without auth
    context_id               VARCHAR NOT NULL,
    context_hash             VARCHAR,
    kind                     VARCHAR,            -- query kind used for selection; NULL: none
    question_sha256          VARCHAR,
    question_chars           INTEGER,
    variant_id               VARCHAR,            -- NULL: raw context (or the query failed)
    sleep_budget             VARCHAR,
    test_budget              VARCHAR,
    test_model               VARCHAR,
    scope                    VARCHAR,            -- context | kind | corpus
    scope_value              VARCHAR,
    fallback                 BOOLEAN,
    target_accuracy          DOUBLE,
    predicted_accuracy       DOUBLE,
    predicted_cost_weighted  DOUBLE,
    prompt_tokens            BIGINT,
    completion_tokens        BIGINT,
    cost_usd                 DOUBLE,
    latency_ms               DOUBLE,
    model_latency_ms         DOUBLE,
    selection_us             DOUBLE,
    status                   VARCHAR NOT NULL,   -- answered | failed
    attempts                 INTEGER,
    error                    VARCHAR,
    policy_version           VARCHAR,
    snapshot                 VARCHAR,
    run_id                   VARCHAR NOT NULL    -- service-<YYYYMMDD>
);

-- Traffic per day and tenant.
CREATE VIEW v_service_traffic AS
SELECT CAST(received_at AS DATE) AS day, tenant,
       count(*) AS queries,
       count(*) FILTER (WHERE status = 'answered') AS answered,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       avg(CASE WHEN fallback THEN 1.0 ELSE 0.0 END) AS fallback_rate,
       quantile_cont(latency_ms, 0.5) AS p50_latency_ms,
       quantile_cont(latency_ms, 0.99) AS p99_latency_ms,
       sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       sum(cost_usd) AS cost_usd
FROM query_log GROUP BY ALL;

-- What the policy picked on real traffic, per (sleep budget, test budget) actually answered.
CREATE VIEW v_service_choices AS
SELECT sleep_budget, test_budget, count(*) AS queries,
       avg(predicted_accuracy) AS mean_predicted_accuracy,
       avg(completion_tokens) AS mean_test_tokens,
       avg(latency_ms) AS mean_latency_ms,
       sum(cost_usd) AS cost_usd
FROM query_log WHERE status = 'answered' GROUP BY ALL;

-- Amortization on real traffic: per current context, the queries served and the sleep-time
-- tokens its current variants cost (paid once), so sleep tokens per served query falls as
-- traffic grows.
CREATE VIEW v_service_amortization AS
WITH served AS (
    SELECT context_id, count(*) AS queries, sum(completion_tokens) AS test_tokens,
           sum(cost_usd) AS test_cost_usd
    FROM query_log WHERE status = 'answered' GROUP BY ALL
),
sleep AS (
    SELECT context_id, sum(completion_tokens) AS sleep_tokens, sum(cost_usd) AS sleep_cost_usd
    FROM variants_current GROUP BY ALL
)
SELECT s.context_id, s.queries, s.test_tokens,
       coalesce(v.sleep_tokens, 0) AS sleep_tokens,
       coalesce(v.sleep_tokens, 0) / s.queries AS sleep_tokens_per_query,
       (coalesce(v.sleep_tokens, 0) + 10 * s.test_tokens) / s.queries AS weighted_tokens_per_query,
       (coalesce(v.sleep_cost_usd, 0) + s.test_cost_usd) / s.queries AS usd_per_query
FROM served s LEFT JOIN sleep v ON v.context_id = s.context_id;
"""


def question_digest(question: str) -> str:
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


def partition(when: datetime) -> str:
    return f"service-{when.astimezone(timezone.utc):%Y%m%d}"


class QueryLog:
    def __init__(
        self,
        lake_dir: Path | str,
        batch_size: int = 50,
        flush_s: float = 5.0,
        max_pending: int = 100_000,
        on_written: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
        enabled: bool = True,
    ):
        self.root = Path(lake_dir) / TABLE
        self.batch_size = batch_size
        self.flush_s = flush_s
        self.max_pending = max_pending
        self.enabled = enabled
        self.dropped = 0
        self.written = 0
        self.files: list[Path] = []
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards _pending
        self._write_lock = threading.Lock()  # one batch write at a time
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._on_written = on_written or (lambda n: None)
        self._on_error = on_error or (lambda: None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._pending.append(record)
            full = len(self._pending) >= self.batch_size
        if full and self._wake is not None:
            self._wake.set()

    def flush(self) -> list[Path]:
        """Write the pending rows (one file per day they fall on); returns the files written."""
        with self._write_lock:
            with self._lock:
                rows, self._pending = self._pending, []
            if not rows:
                return []
            by_day: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                by_day.setdefault(row["run_id"], []).append(row)
            written: list[Path] = []
            failed: list[dict[str, Any]] = []
            for run_id, batch in sorted(by_day.items()):
                try:
                    table = pa.Table.from_pylist(batch, schema=QUERY_LOG_SCHEMA)
                    path = self.root / f"published={run_id}" / f"batch-{uuid.uuid4().hex}.parquet"
                    written.append(write_parquet_atomic(table, path))
                    self.written += len(batch)
                    self._on_written(len(batch))
                except Exception:
                    log.exception("query log: could not write %d rows; keeping them for the next flush", len(batch))
                    self._on_error()
                    failed += batch
            if failed:
                with self._lock:
                    self._pending = failed + self._pending
                    excess = len(self._pending) - self.max_pending
                    if excess > 0:
                        del self._pending[:excess]
                        self.dropped += excess
                        log.error("query log: dropped the %d oldest unwritten rows", excess)
            self.files += written
            return written

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await asyncio.to_thread(self.flush)

    def start(self) -> None:
        if self._task is None and self.enabled:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sleeptime-query-log")

    async def stop(self) -> None:
        """Stop the background flusher and write what is pending."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await asyncio.to_thread(self.flush)
