"""The Parquet lake: one folder per table, one file per partition, every write atomic.

Layout: ``<root>/<table>/<partition>.parquet``. A write goes to a hidden temporary file in the
same folder and is renamed into place, so a crash never leaves a half-written file visible, and
readers (which skip hidden files) never see one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sleeptime.storage.records import SCHEMAS


class Lake:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def table_dir(self, table: str) -> Path:
        if table not in SCHEMAS:
            raise KeyError(f"unknown table {table!r}; known: {sorted(SCHEMAS)}")
        return self.root / table

    def write(self, table: str, partition: str, records: Iterable[dict[str, Any]]) -> Path:
        """Write (or replace) one partition of ``table`` atomically."""
        folder = self.table_dir(table)
        arrow = pa.Table.from_pylist(list(records), schema=SCHEMAS[table])
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{partition}.parquet"
        tmp = folder / f".{partition}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(arrow, tmp, compression="zstd")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    def partitions(self, table: str) -> list[Path]:
        folder = self.table_dir(table)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))

    def read(self, table: str) -> pa.Table:
        parts = self.partitions(table)
        if not parts:
            return SCHEMAS[table].empty_table()
        return pa.concat_tables([pq.read_table(p, schema=SCHEMAS[table]) for p in parts])
