"""The Parquet lake: the source of truth the warehouse is built from.

Layout under ``root``::

    <table>/published=<run_id>/<name>.parquet   committed rows, one folder per publishing run
    _staging/<table>/<name>.parquet              finished work not yet published (resumable)
    _rejected/<run_id>/<table>/<name>.parquet    staged rows the quality gate refused

Every file is written to a hidden temporary name in its final folder and renamed into place,
so a crash never leaves a half-written file visible. Committed folders are never rewritten: a
refresh only adds a ``published=<run_id>`` folder. Work finished before a crash waits in
``_staging`` and is picked up by the next run instead of being recomputed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sleeptime._failpoints import PUBLISH_MID_COMMIT, failpoint
from sleeptime.storage.records import SCHEMAS

STAGING = "_staging"
REJECTED = "_rejected"


def write_parquet_atomic(table: pa.Table, final: Path) -> Path:
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


def _visible(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if not p.name.startswith("."))


class Lake:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    @staticmethod
    def _schema(table: str) -> pa.Schema:
        if table not in SCHEMAS:
            raise KeyError(f"unknown table {table!r}; known: {sorted(SCHEMAS)}")
        return SCHEMAS[table]

    def _arrow(self, table: str, records: Iterable[dict[str, Any]]) -> pa.Table:
        return pa.Table.from_pylist(list(records), schema=self._schema(table))

    # committed -----------------------------------------------------------------------------

    def write(self, table: str, run_id: str, records: Iterable[dict[str, Any]], name: str = "part-0") -> Path:
        """Write committed rows directly (tables that are not gated, such as ``runs``)."""
        arrow = self._arrow(table, records)
        return write_parquet_atomic(arrow, self.root / table / f"published={run_id}" / f"{name}.parquet")

    def files(self, table: str) -> list[Path]:
        self._schema(table)
        return _visible(p for p in (self.root / table).glob("published=*/*.parquet"))

    def read(self, table: str) -> pa.Table:
        return self._concat(table, self.files(table))

    # staging -------------------------------------------------------------------------------

    def stage(self, table: str, name: str, records: Iterable[dict[str, Any]]) -> Path:
        """Keep finished, unpublished rows; a file of the same name is replaced."""
        arrow = self._arrow(table, records)
        return write_parquet_atomic(arrow, self.root / STAGING / table / f"{name}.parquet")

    def staged_files(self, table: str) -> list[Path]:
        self._schema(table)
        return _visible((self.root / STAGING / table).glob("*.parquet"))

    def read_staged(self, table: str) -> pa.Table:
        return self._concat(table, self.staged_files(table))

    def commit_staged(self, run_id: str) -> int:
        """Move every staged file into ``published=<run_id>``; returns the number moved.

        Each move is an atomic rename. If the process dies half way, the files already moved are
        committed and the rest are still staged: the next publish moves them, and the warehouse
        build deduplicates by key, so the end state is the same.
        """
        moved = 0
        for table in SCHEMAS:
            for path in self.staged_files(table):
                target = self.root / table / f"published={run_id}" / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                moved += 1
                if moved == 1:
                    failpoint(PUBLISH_MID_COMMIT)
        return moved

    def reject_staged(self, run_id: str) -> Path:
        """Set the staged rows aside (the gate refused them), so the next run recomputes them."""
        folder = self.root / REJECTED / run_id
        for table in SCHEMAS:
            for path in self.staged_files(table):
                target = folder / table / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        return folder

    def _concat(self, table: str, files: list[Path]) -> pa.Table:
        schema = self._schema(table)
        if not files:
            return schema.empty_table()
        return pa.concat_tables([pq.read_table(p).select(schema.names).cast(schema) for p in files])
