"""A disk cache of model responses, keyed by a hash of the request.

Re-evaluating a corpus (a fresh output directory, a run whose rows the quality gate refused, a
benchmark repeated) sends exactly the requests it sent before; answering those from disk makes
the repeat cost nothing. The key covers everything that changes a reply: the provider's model
string and endpoint, the messages, and every call parameter (max_tokens, seed, temperature,
reasoning effort, ...). Only successful replies are stored.

SQLite in WAL mode, so several processes (Ray workers) can share one file: readers never block,
writers take turns for a few microseconds each.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from sleeptime.domain import Usage

T = TypeVar("T")


class CachePolicy(BaseModel):
    """Whether and where model responses are cached."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # None: <output_dir>/cache/responses.sqlite for runs; the service sets its own.
    path: Path | None = None
    # Models (configured names) never cached, e.g. a cheap deterministic one not worth a disk write.
    exclude_models: list[str] = Field(default_factory=list)


def request_key(provider_model: str, api_base: str | None, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """sha256 over a canonical JSON of the request (api keys are never part of it)."""
    payload = {"model": provider_model, "api_base": api_base, "messages": messages, "params": params}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CachedReply(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    usage: Usage


def _retry_when_locked(fn: Callable[[], T], attempts: int = 40) -> T:
    """Run ``fn`` again when SQLite answers "database is locked" before its busy timeout.

    SQLite gives up at once, without waiting, when waiting could deadlock: several connections
    opening a fresh file together (Ray workers at the start of a run) each hold a read lock while
    one of them tries to switch the file to WAL or create the table. A retry after the others'
    statements finish succeeds.
    """
    for attempt in range(attempts - 1):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(min(0.5, 0.01 * 2**attempt))
    return fn()


def _prepare(con: sqlite3.Connection) -> None:
    # WAL persists in the file: only its first opener switches it.
    if str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        con.execute("PRAGMA journal_mode=WAL")
    # A lost last write after a power cut only costs a repeated call.
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(
        "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, created REAL DEFAULT (strftime('%s', 'now')))"
    )


class ResponseCache:
    """get/put of replies by request key; one connection per thread, opened lazily."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connect()  # create the table now, so a bad path fails at start-up, not mid-run

    def _connect(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            _retry_when_locked(lambda: _prepare(con))
            self._local.con = con
        return con

    def get(self, key: str) -> CachedReply | None:
        row = self._connect().execute(
            "SELECT text, prompt_tokens, completion_tokens FROM responses WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return CachedReply(text=row[0], usage=Usage(prompt_tokens=row[1], completion_tokens=row[2]))

    def put(self, key: str, reply: CachedReply) -> None:
        self._connect().execute(
            "INSERT OR REPLACE INTO responses (key, text, prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?)",
            (key, reply.text, reply.usage.prompt_tokens, reply.usage.completion_tokens),
        )

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT count(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
