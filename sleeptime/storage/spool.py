"""Rows written outside the lake by other processes, waiting for the next publish to commit them.

The query service must not write the lake (one writer at a time, and the writer is the
pipeline). It appends its query log as Parquet files under ``<spool>/query_log/``, each written
atomically; the next publish commits them into the lake's ``query_log`` table in the same commit
as everything else and then deletes them. A crash between the commit and the delete leaves files
whose rows are already in the lake: the commit upserts by ``request_id``, so committing them
again changes nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sleeptime.storage.records import SCHEMAS


def write_parquet_atomic(table: pa.Table, final: Path) -> Path:
    """Write to a hidden temporary name in the final folder, fsync, rename: never half a file."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


class Spool:
    """``<root>/<table>/*.parquet``: visible files only (hidden names are writes in progress)."""

    TABLES = ("query_log",)

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def write(self, table: str, rows: pa.Table) -> Path:
        return write_parquet_atomic(rows, self.root / table / f"batch-{uuid.uuid4().hex}.parquet")

    def remove_stale_temp(self, table: str, older_than_s: float = 600.0) -> int:
        """Delete hidden temporary files older than ``older_than_s`` (writes a killed process never
        finished: unsynced, possibly partial, so not worth promoting); returns how many. Younger
        ones may be another process's write in progress."""
        import time

        cutoff = time.time() - older_than_s
        removed = 0
        for tmp in (self.root / table).glob(".*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def files(self, table: str) -> list[Path]:
        return sorted(p for p in (self.root / table).glob("*.parquet") if not p.name.startswith("."))

    def take(self) -> tuple[dict[str, pa.Table], Callable[[], None]]:
        """The spooled rows per table, and a callback that deletes their files once committed."""
        out: dict[str, pa.Table] = {}
        taken: list[Path] = []
        for table in self.TABLES:
            files = self.files(table)
            if files:
                schema = SCHEMAS[table]
                out[table] = pa.concat_tables([pq.read_table(p).select(schema.names).cast(schema) for p in files])
                taken += files
        return out, lambda: [p.unlink(missing_ok=True) for p in taken] and None
