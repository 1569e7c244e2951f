"""The query log: one row per query the service handled, appended to the lake in batches.

Rows wait in memory and are written when ``batch_size`` rows are pending or every ``flush_s``
seconds, and once more at shutdown, as one Parquet file per batch in the spool
(``sleeptime.storage.spool``)::

    <output>/spool/query_log/batch-<uuid>.parquet

written atomically (hidden temporary name, fsync, rename); the next publish commits them into the
lake's ``query_log`` table (key ``request_id``) and the warehouse, then deletes them. The service
never writes the lake itself: the pipeline is its one writer. A failed write keeps the
rows for the next flush (at most ``max_pending`` rows are kept; beyond that the oldest are
dropped and counted).

What a crash loses: a SIGKILL (or power loss) loses the rows still waiting in memory, at most
``batch_size`` rows or ``flush_s`` seconds of traffic, and any batch being written at that moment.
Such a half-written batch is a hidden temporary file; the next start of the service removes the
ones older than ten minutes and says how many it found. A normal stop (SIGTERM, Ctrl-C) writes
everything pending.

What is stored, and what is not: the context, the choice, tokens, cost, latency, the outcome and
the key id; never the question text (only its sha256, so repeated questions can be counted, and
its length), never the answer, never the key's secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from sleeptime.storage.spool import Spool
from sleeptime.storage.records import SCHEMAS
from sleeptime.service import _background as background

log = logging.getLogger(__name__)

TABLE = "query_log"

# The schema lives with every other table's (one source of column names); the table and its
# dashboard views are warehouse/migrations/004_query_log.sql.
QUERY_LOG_SCHEMA = SCHEMAS[TABLE]


def question_digest(question: str) -> str:
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


def partition(when: datetime) -> str:
    return f"service-{when.astimezone(timezone.utc):%Y%m%d}"


class QueryLog:
    def __init__(
        self,
        spool_dir: Path | str,
        batch_size: int = 50,
        flush_s: float = 5.0,
        max_pending: int = 100_000,
        on_written: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
        enabled: bool = True,
    ):
        self.spool = Spool(spool_dir)
        self.root = self.spool.root / TABLE
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
                    written.append(self.spool.write(TABLE, table))
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
        if self.enabled:
            stale = self.spool.remove_stale_temp(TABLE)
            if stale:
                log.warning("query log: removed %d unfinished batch files left by a killed service "
                            "(their rows were lost with it)", stale)
        if self._task is None and self.enabled:
            self._wake = asyncio.Event()
            self._task = background.start(self._run(), "sleeptime-query-log")

    async def stop(self) -> None:
        """Stop the background flusher and write what is pending."""
        await background.stop(self._task)
        self._task = None
        await asyncio.to_thread(self.flush)
