"""The refresh pipeline's logic, executor-free: diff, plan, shard, stage, publish.

Prefect tasks (tasks/) call these functions; Ray runs the model calls. Nothing here imports
Prefect or Ray, so the rules (what counts as changed, what must be recomputed, when data may be
published) are testable on their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow.parquet as pq

from sleeptime import _failpoints
from sleeptime.compute import Failure, SleepJob, TestJob, sleep_jobs, test_jobs
from sleeptime.config import RunConfig
from sleeptime.dataset import LoadResult
from sleeptime.domain import ContextWithQueries, Usage, Variant, content_hash
from sleeptime.storage import Lake, context_record, query_record
from sleeptime.storage.warehouse import KEYS, Snapshot, Warehouse, open_lake_index

T = TypeVar("T")


def new_run_id() -> str:
    # Sortable by time: the warehouse orders history by run_id.
    now = datetime.now(timezone.utc)
    return f"r{now:%Y%m%dT%H%M%S%f}"


# --- diff ------------------------------------------------------------------------------------


@dataclass
class CorpusDiff:
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("new", "changed", "unchanged", "removed")}


def diff_corpus(rows: Sequence[ContextWithQueries], index: duckdb.DuckDBPyConnection) -> CorpusDiff:
    current = dict(index.execute("SELECT context_id, content_hash FROM contexts_current").fetchall())
    diff = CorpusDiff()
    seen = set()
    for row in rows:
        cid = row.context.id
        seen.add(cid)
        if cid not in current:
            diff.new.append(cid)
        elif current[cid] != row.context.content_hash:
            diff.changed.append(cid)
        else:
            diff.unchanged.append(cid)
    diff.removed = sorted(set(current) - seen)
    return diff


def stage_ingest(lake: Lake, run_id: str, rows: Sequence[ContextWithQueries], diff: CorpusDiff,
                 loaded: LoadResult, index: duckdb.DuckDBPyConnection) -> int:
    """Stage context versions, their queries, tombstones and new quarantined rows; returns rows staged."""
    by_id = {r.context.id: r for r in rows}
    touched = [by_id[c] for c in diff.new + diff.changed]
    contexts = [context_record(r.context, run_id) for r in touched]
    # A tombstone keeps the removed context's last version, marked deleted.
    if diff.removed:
        removed = index.execute(
            "SELECT context_id, content_hash FROM contexts_current WHERE context_id IN (SELECT unnest(?))",
            [diff.removed],
        ).fetchall()
        contexts += [
            {"context_id": cid, "content_hash": h, "source": "", "text": "", "metadata_json": "{}",
             "deleted": True, "run_id": run_id}
            for cid, h in removed
        ]
    # Queries of unchanged contexts may still be new (a question added to the corpus).
    known_queries = {k for (k,) in index.execute("SELECT query_id || '|' || context_hash FROM queries").fetchall()}
    queries = []
    for r in rows:
        if not r.queries:
            continue
        text_hash = r.context.content_hash  # a property that hashes the text: once per context, not per query
        queries += [query_record(q, text_hash, run_id) for q in r.queries if f"{q.id}|{text_hash}" not in known_queries]
    known_bad = set(index.execute("SELECT source || '|' || location || '|' || reason FROM quarantine").fetchall())
    quarantine = [
        {**q.model_dump(), "run_id": run_id}
        for q in loaded.quarantined
        if (f"{q.source}|{q.location}|{q.reason}",) not in known_bad
    ]
    staged = 0
    for table, records in (("contexts", contexts), ("queries", queries), ("quarantine", quarantine)):
        if records:
            lake.stage(table, f"{table}-{_staged_name(table, run_id, records)}", records)
            staged += len(records)
    return staged


def _staged_name(table: str, run_id: str, records: Sequence[dict[str, Any]]) -> str:
    """A name for a staged file from the rows' keys and the run: the same rows get the same name.

    Keys, not whole rows: JSON-encoding a million query rows to name their file took longer than
    writing it (a row's other columns follow from its key within one run).
    """
    key = KEYS[table]
    lines = sorted("\x1f".join(str(r[k]) for k in key) for r in records)
    return content_hash(run_id, "\n".join(lines))[:16]


# --- plan ------------------------------------------------------------------------------------


def pending_sleep_jobs(rows: Sequence[ContextWithQueries], config: RunConfig, index: duckdb.DuckDBPyConnection) -> list[SleepJob]:
    """Every configured (context, budget, sample) whose variant is in neither the lake nor staging."""
    done = {r[0] for r in index.execute("SELECT variant_id FROM variants").fetchall()}
    jobs = sleep_jobs([r.context for r in rows], config.sleep_budgets)
    return [j for j in jobs if j.key(config.sleep_model) not in done]


def current_variants(lake: Lake, rows: Sequence[ContextWithQueries], config: RunConfig) -> list[Variant]:
    """The variants of the corpus as it is now, at the configured budgets, from lake and staging."""
    files = [str(p) for p in lake.files("variants")] + [str(p) for p in lake.staged_files("variants")]
    if not files:
        return []
    wanted = {j.key(config.sleep_model) for j in sleep_jobs([r.context for r in rows], config.sleep_budgets)}
    con = duckdb.connect()
    try:
        con.execute("CREATE TEMP TABLE wanted (variant_id VARCHAR)")
        con.executemany("INSERT INTO wanted VALUES (?)", [[w] for w in wanted])
        records = con.execute(
            "SELECT DISTINCT ON (variant_id) * FROM read_parquet(?, union_by_name = true) "
            "WHERE variant_id IN (SELECT variant_id FROM wanted) ORDER BY variant_id, run_id DESC",
            [files],
        ).fetchall()
        columns = [d[0] for d in con.description]
    finally:
        con.close()
    out = []
    for values in records:
        r = dict(zip(columns, values))
        out.append(
            Variant(
                context_id=r["context_id"], context_hash=r["context_hash"], model=r["model"],
                sleep_budget=r["sleep_budget"], sample_index=r["sample_index"], prompt_version=r["prompt_version"],
                text=r["text"], usage=Usage(prompt_tokens=r["prompt_tokens"], completion_tokens=r["completion_tokens"]),
                cost_usd=r["cost_usd"], latency_s=r["latency_s"],
            )
        )
    return out


def pending_test_jobs(rows: Sequence[ContextWithQueries], variants: Sequence[Variant], config: RunConfig,
                      index: duckdb.DuckDBPyConnection) -> list[TestJob]:
    done = {r[0] for r in index.execute("SELECT answer_id FROM answers").fetchall()}
    labeled = [r for r in rows if r.queries]
    jobs = test_jobs(labeled, variants, config.test_budgets, config.pass_at_k)
    return [j for j in jobs if j.key(config.test_model) not in done]


def shard(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# --- run summary ---------------------------------------------------------------------------------


@dataclass
class RunSummary:
    run_id: str
    corpus: str
    started_at: datetime
    diff: CorpusDiff = field(default_factory=CorpusDiff)
    variants_written: int = 0
    answers_written: int = 0
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    retries: int = 0  # retryable errors that were retried (the items may still have succeeded)
    cache_hits: int = 0  # replies from the response cache: no call made
    quarantined: int = 0
    status: str = "running"
    gate_report: str = ""
    shards: int = 0
    workers: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def add_usage(self, calls: int, usage: Usage, cost: float) -> None:
        self.model_calls += calls
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cost_usd += cost

    @property
    def items_attempted(self) -> int:
        return self.variants_written + self.answers_written + len(self.failures)

    @property
    def failure_rate(self) -> float:
        return len(self.failures) / self.items_attempted if self.items_attempted else 0.0

    def record(self) -> dict[str, Any]:
        counts = self.diff.counts()
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": datetime.now(timezone.utc),
            "status": self.status,
            "corpus": self.corpus,
            "contexts_new": counts["new"],
            "contexts_changed": counts["changed"],
            "contexts_unchanged": counts["unchanged"],
            "contexts_removed": counts["removed"],
            "variants_written": self.variants_written,
            "answers_written": self.answers_written,
            "model_calls": self.model_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "failures": len(self.failures),
            "quarantined": self.quarantined,
            "seconds": self.seconds,
            "detail_json": json.dumps(
                {"shards": self.shards, "workers": self.workers, "gate": self.gate_report, "retries": self.retries,
                 "cache_hits": self.cache_hits, "failure_reasons": self.failure_reasons(), **self.extra},
                default=str,
            ),
        }

    def lines(self) -> list[str]:
        c = self.diff.counts()
        return [
            f"run {self.run_id}: {self.status}",
            f"contexts: {c['new']} new, {c['changed']} changed, {c['unchanged']} unchanged, {c['removed']} removed"
            f" ({self.quarantined} rows set aside)",
            f"work: {self.shards} shards on {self.workers} Ray workers; {self.variants_written} variants and "
            f"{self.answers_written} answers written",
            f"model: {self.model_calls} calls ({self.retries} retries, {self.cache_hits} answered from the cache), "
            f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens, ${self.cost_usd:.4f}",
            f"failures: {len(self.failures)} of {self.items_attempted} items ({self.failure_rate:.1%})"
            + "".join(f"; {n} x {r}" for r, n in self.failure_reasons().items())
            + f"; time {self.seconds:.1f}s",
        ]

    def failure_reasons(self, top: int = 5) -> dict[str, int]:
        """The commonest failure reasons, grouped by error type (the text before the first colon)."""
        counts: dict[str, int] = {}
        for f in self.failures:
            kind = f.reason.split(": ", 2)[1] if f.reason.count(": ") >= 1 else f.reason
            counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:top])


# --- publish -----------------------------------------------------------------------------------


@dataclass
class PublishOutcome:
    published: bool
    reason: str
    snapshot_files: int = 0


GateFn = Callable[[Path], tuple[bool, str]]
# Reads a candidate snapshot, returns derived rows per table (e.g. the fitted policy).
DeriveFn = Callable[[Path], dict[str, list[dict[str, Any]]]]


def publish(lake: Lake, warehouse: Warehouse, summary: RunSummary, gate: GateFn, derive: DeriveFn | None = None) -> PublishOutcome:
    """Build a candidate from lake + staging, derive, gate it, then commit staging and swap the snapshot.

    The run's own row is staged with the rest, so the published history includes it. Derived
    rows are staged too (they are part of what the gate accepts or refuses). A failed gate moves
    the staged rows to _rejected/<run_id>/, records the run as rejected, and leaves the published
    file as it was.
    """
    warehouse.cleanup_candidates()
    summary.status = "published"
    lake.stage("runs", f"run-{summary.run_id}", [summary.record()])
    snapshot: Snapshot = warehouse.build(lake, include_staged=True)
    _failpoints.failpoint(_failpoints.PUBLISH_AFTER_BUILD)
    try:
        for table, records in (derive(snapshot.path) if derive else {}).items():
            if records:
                name = f"{table}-" + content_hash(sorted(json.dumps(r, sort_keys=True, default=str) for r in records))[:16]
                path = lake.stage(table, name, records)
                warehouse.append(snapshot, table, pq.read_table(path))
        ok, report = gate(snapshot.path)
    except BaseException:
        warehouse.discard(snapshot)
        raise
    summary.gate_report = report
    if not ok:
        warehouse.discard(snapshot)
        lake.reject_staged(summary.run_id)
        summary.status = "rejected"
        lake.write("runs", summary.run_id, [summary.record()], name=f"run-{summary.run_id}")
        return PublishOutcome(False, report)
    _failpoints.failpoint(_failpoints.PUBLISH_AFTER_GATE)
    lake.commit_staged(summary.run_id)
    _failpoints.failpoint(_failpoints.PUBLISH_BEFORE_SWAP)
    warehouse.publish(snapshot)
    return PublishOutcome(True, report, len(snapshot.files))


def record_failed_run(lake: Lake, summary: RunSummary) -> None:
    """Record a run that failed too many items: its row goes to the lake (history), nothing is
    published, and its finished shards stay staged so the rerun reuses them and retries only the
    failed items."""
    summary.status = "failed"
    lake.write("runs", summary.run_id, [summary.record()], name=f"run-{summary.run_id}")
