"""What the query service keeps in memory: one published warehouse snapshot, ready for selection.

``load_serving_snapshot`` reads one snapshot file through one read-only DuckDB connection and
returns a ``ServingSnapshot``: the current contexts (with their tenant), the sample-0 variant of
every (context, sleep budget), and the published policy loaded from its stored rows
(``load_published_policy``: no answers read, no refit, so the service's own configuration of the
policy changes nothing until a new policy is published). Nothing in it is mutated after loading,
so a request can hold a reference for its whole life.

``SnapshotHolder`` owns the current ``ServingSnapshot``. A background task polls where the
published symlink points (one ``readlink``-like call per ``reload_interval_s``); when it points at
a new file, the new snapshot is loaded in a worker thread and the reference is swapped in one
assignment. Requests in flight keep the snapshot they started with; a failed load is logged,
counted, and the old snapshot stays.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from sleeptime.config import RunConfig
from sleeptime.domain import Context, AnswerBudget, Usage, Variant
from sleeptime.policy import Policy
from sleeptime.policy.store import load_published_policy
from sleeptime.storage.warehouse import Warehouse, connect_read_only
from sleeptime.service import _background as background

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class ContextEntry:
    context: Context
    tenant: str
    variants: dict[str, Variant]  # sleep budget -> the sample-0 variant of the current text

    @property
    def id(self) -> str:
        return self.context.id


@dataclass
class ServingSnapshot:
    path: Path
    identity: tuple[int, int]  # (inode, mtime) of the file loaded: a publish replaces the file
    lake_snapshot: int | None  # the lake snapshot the warehouse reflected
    loaded_at: datetime
    load_seconds: float
    contexts: dict[str, ContextEntry]
    by_tenant: dict[str, tuple[str, ...]]
    policy: Policy | None
    test_budgets: dict[str, AnswerBudget]  # as configured: RunConfig.test_budget_order, cheapest .. largest
    target_accuracy: float  # the published policy's (the configured one until a policy is published)
    policy_seconds: float = 0.0  # of load_seconds, reading the policy rows and building the policy

    @property
    def name(self) -> str:
        return f"lake-{self.lake_snapshot}" if self.lake_snapshot is not None else self.path.name

    @property
    def policy_version(self) -> str | None:
        return self.policy.version if self.policy else None

    def context_for(self, tenant: str | None, context_id: str) -> ContextEntry | None:
        """The context when it exists and ``tenant`` may see it (None: every tenant)."""
        entry = self.contexts.get(context_id)
        if entry is None or (tenant is not None and entry.tenant != tenant):
            return None
        return entry

    def context_ids(self, tenant: str | None) -> tuple[str, ...]:
        if tenant is None:
            return tuple(sorted(self.contexts))
        return self.by_tenant.get(tenant, ())


def tenant_of(metadata_json: str | None) -> str:
    """The tenant a context belongs to: ``metadata["tenant"]`` in the corpus, else "default"."""
    try:
        metadata = json.loads(metadata_json or "{}")
    except ValueError:
        return DEFAULT_TENANT
    tenant = metadata.get("tenant") if isinstance(metadata, dict) else None
    return str(tenant) if tenant not in (None, "") else DEFAULT_TENANT


def _contexts(con: duckdb.DuckDBPyConnection, sleep_model: str) -> dict[str, ContextEntry]:
    rows = con.execute("SELECT context_id, text, source, metadata_json FROM contexts_current").fetchall()
    variants: dict[str, dict[str, Variant]] = {}
    # Sample 0 of each (context, budget); the configured sleep model's first, then the newest run.
    for r in con.execute(
        "SELECT context_id, context_hash, model, sleep_budget, sample_index, prompt_version, text, prompt_tokens, "
        "completion_tokens, cost_usd, latency_s FROM variants_current WHERE sample_index = 0 "
        "ORDER BY context_id, sleep_budget, (model = ?) DESC, run_id DESC",
        [sleep_model],
    ).fetchall():
        per_context = variants.setdefault(r[0], {})
        if r[3] in per_context:
            continue
        per_context[r[3]] = Variant(
            context_id=r[0], context_hash=r[1], model=r[2], sleep_budget=r[3], sample_index=r[4], prompt_version=r[5],
            text=r[6] or "", usage=Usage(prompt_tokens=int(r[7] or 0), completion_tokens=int(r[8] or 0)),
            cost_usd=float(r[9] or 0.0), latency_s=float(r[10] or 0.0),
        )
    out = {}
    for context_id, text, source, metadata_json in rows:
        try:
            metadata = json.loads(metadata_json or "{}")
        except ValueError:
            metadata = {}
        context = Context(id=context_id, text=text, source=source or "", metadata=metadata if isinstance(metadata, dict) else {})
        out[context_id] = ContextEntry(context, tenant_of(metadata_json), variants.get(context_id, {}))
    return out


def load_serving_snapshot(path: Path | str, config: RunConfig) -> ServingSnapshot:
    """Everything selection needs from one snapshot file, through one read-only connection."""
    started = time.perf_counter()
    path = Path(path)
    con = connect_read_only(path)
    try:
        st = os.stat(path)  # after opening: the identity of the file this connection reads (or older)
        identity = (st.st_ino, st.st_mtime_ns)
        row = con.execute("SELECT max(lake_snapshot) FROM build_info").fetchone()
        lake_snapshot = int(row[0]) if row and row[0] is not None else None
        contexts = _contexts(con, config.sleep_model)
        policy_started = time.perf_counter()
        policy = load_published_policy(con)
        policy_seconds = time.perf_counter() - policy_started
    finally:
        con.close()
    by_tenant: dict[str, list[str]] = {}
    for context_id, entry in contexts.items():
        by_tenant.setdefault(entry.tenant, []).append(context_id)
    return ServingSnapshot(
        path=path,
        identity=identity,
        lake_snapshot=lake_snapshot,
        loaded_at=datetime.now(timezone.utc),
        load_seconds=time.perf_counter() - started,
        contexts=contexts,
        by_tenant={t: tuple(sorted(ids)) for t, ids in by_tenant.items()},
        policy=policy,
        test_budgets={b.name: b for b in config.test_budgets},
        target_accuracy=policy.settings.target_accuracy if policy else config.policy.target_accuracy,
        policy_seconds=policy_seconds,
    )


class SnapshotHolder:
    """The current snapshot, swapped atomically when a new one is published."""

    RETRY_FAILED_S = 30.0  # a snapshot file that failed to load is retried after this long

    def __init__(
        self,
        warehouse_path: Path | str,
        config: RunConfig,
        reload_interval_s: float = 2.0,
        on_reload: Callable[[str], None] | None = None,
    ):
        self.warehouse = Warehouse(warehouse_path)
        self.config = config
        self.reload_interval_s = reload_interval_s
        self.current: ServingSnapshot | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self._failed_target: tuple[tuple[int, int], float] | None = None  # (file identity, when) of the last failed load
        self._on_reload = on_reload or (lambda result: None)
        self._task: asyncio.Task | None = None

    def target(self) -> tuple[int, int]:
        """The identity of the published file now (changes when a publish replaces it)."""
        return self.warehouse.identity()

    def load(self, target: tuple[int, int] | None = None) -> ServingSnapshot:
        snapshot = load_serving_snapshot(self.warehouse.current_snapshot(), self.config)
        self.current = snapshot  # one reference assignment: readers see the old or the new one
        self.reloads += 1
        self.last_error = None
        self._failed_target = None
        log.info(
            "serving snapshot %s: %d contexts, policy %s, loaded in %.2fs",
            snapshot.name, len(snapshot.contexts), snapshot.policy_version, snapshot.load_seconds,
        )
        self._on_reload("ok")
        return snapshot

    async def check(self) -> bool:
        """Load the published snapshot if it is not the one being served; True when swapped."""
        try:
            target = self.target()
        except (FileNotFoundError, OSError) as exc:
            self._note_error(None, str(exc))
            return False
        if self.current is not None and self.current.identity == target:
            self.last_error = None  # the published file is the one served: whatever failed has passed
            return False
        if (
            self._failed_target is not None
            and self._failed_target[0] == target
            and time.monotonic() - self._failed_target[1] < self.RETRY_FAILED_S
        ):
            return False  # this file failed to load just now; retry it later or take the next publish
        try:
            await asyncio.to_thread(self.load, target)
        except Exception as exc:  # keep serving the old snapshot
            self._note_error(target, f"{type(exc).__name__}: {exc}")
            self._on_reload("error")
            return False
        return True

    def _note_error(self, target: tuple[int, int] | None, message: str) -> None:
        if message != self.last_error:
            log.warning("snapshot not loaded (%s); %s", message,
                        "still serving " + self.current.name if self.current else "not ready yet")
        self.last_error = message
        if target is not None:
            self._failed_target = (target, time.monotonic())

    async def _poll(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.reload_interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = background.start(self._poll(), "sleeptime-snapshot-poller")

    async def stop(self) -> None:
        await background.stop(self._task)
        self._task = None
