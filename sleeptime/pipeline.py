"""The refresh pipeline's logic, executor-free: ingest + diff, plan, stage, publish.

Prefect tasks (tasks/) call these functions; Ray runs the model calls. Nothing here imports
Prefect or Ray, so the rules (what counts as changed, what must be recomputed, when data may be
published) are testable on their own. Diff and plan are SQL over the lake (published + staged
rows), so their cost follows what changed, not the size of the corpus.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from sleeptime import _failpoints
from sleeptime.compute import Failure, SleepJob, AnswerJob
from sleeptime.config import RunConfig
from sleeptime.dataset import corpus_format, load_corpus, scan_project_jsonl
from sleeptime.domain import CallCounters, Context, ContextWithQueries, Query, QuarantinedRow, Usage, Variant
from sleeptime.prompts import PROMPT_VERSION
from sleeptime.storage import Lake, context_record, query_record
from sleeptime.storage.lake import STAGED_TABLES, as_arrow, lake_index
from sleeptime.storage.records import tombstone_record
from sleeptime.storage.warehouse import Candidate, Warehouse

T = TypeVar("T")


def new_run_id() -> str:
    # Sortable by time: the warehouse orders history by run_id.
    now = datetime.now(timezone.utc)
    return f"r{now:%Y%m%dT%H%M%S%f}"


# --- ingest and diff ----------------------------------------------------------------------------


@dataclass
class CorpusDiff:
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0  # a count: unchanged contexts are never materialised
    removed: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"new": len(self.new), "changed": len(self.changed), "unchanged": self.unchanged,
                "removed": len(self.removed)}


@dataclass
class IngestResult:
    diff: CorpusDiff
    rows: list[ContextWithQueries]  # the rows parsed this run (new, changed, edited): not the whole corpus
    quarantined: list[QuarantinedRow]
    source: str
    staged: int = 0
    parsed_lines: int = 0
    unstaged: dict[str, pa.Table] = field(default_factory=dict)  # ingest(stage=False): what it would stage


def ingest_corpus(lake: Lake, run_id: str, corpus: str | Path, fmt: str = "auto",
                  max_contexts: int | None = None, stage: bool = True) -> IngestResult:
    """Load the corpus, diff it against the lake by content hash, and stage what is new
    (with ``stage=False``, return it in ``unstaged`` instead: a dry run writes nothing).

    A project-format JSONL corpus is read line by line and a line whose sha256 matches the
    ``row_hash`` of a current context is skipped unparsed; other formats are loaded whole. The
    diff and the staging checks are joins in DuckDB over Arrow columns.
    """
    with lake_index(lake) as idx:
        current = idx.execute("SELECT context_id, content_hash, row_hash FROM contexts_current").to_arrow_table()
    if corpus_format(corpus, fmt) == "project" and Path(corpus).suffix.lower() == ".jsonl":
        hashes = pc.drop_null(current["row_hash"]).combine_chunks()
        scan = scan_project_jsonl(corpus, lambda h: pc.is_in(h, value_set=hashes), limit=max_contexts)
        loaded, row_hashes, known = scan.result, scan.row_hashes, scan.known
    else:
        loaded = load_corpus(corpus, format=fmt)
        if max_contexts:
            loaded.rows = loaded.rows[:max_contexts]
        row_hashes, known = {}, pa.array([], pa.string())
    rows = loaded.rows
    parsed = pa.table({
        "context_id": pa.array([r.context.id for r in rows], pa.string()),
        "content_hash": pa.array([r.context.content_hash for r in rows], pa.string()),
        "row_hash": pa.array([row_hashes.get(r.context.id) for r in rows], pa.string()),
    })
    with lake_index(lake) as idx:
        idx.register("cur", current)
        idx.register("parsed", parsed)
        idx.register("known", pa.table({"row_hash": known}))
        status = dict(idx.execute(
            """SELECT p.context_id, CASE WHEN c.context_id IS NULL THEN 'new'
                                         WHEN c.content_hash <> p.content_hash THEN 'changed'
                                         WHEN c.row_hash IS DISTINCT FROM p.row_hash THEN 'edited'
                                         ELSE 'same' END
               FROM parsed p LEFT JOIN cur c USING (context_id)"""
        ).fetchall())
        removed = idx.execute(
            """SELECT context_id, content_hash FROM cur c
               WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.row_hash = c.row_hash)
                 AND NOT EXISTS (SELECT 1 FROM parsed p WHERE p.context_id = c.context_id)
               ORDER BY context_id"""
        ).fetchall()
        diff = CorpusDiff(
            new=[c for c, s in status.items() if s == "new"],
            changed=[c for c, s in status.items() if s == "changed"],
            unchanged=len(known) + sum(1 for s in status.values() if s in ("edited", "same")),
            removed=[c for c, _ in removed],
        )
        # New versions, and unchanged texts whose line changed (edited queries or metadata): the
        # row then carries the new line hash, so the next refresh can skip that line.
        contexts = [
            context_record(r.context, run_id, row_hash=row_hashes.get(r.context.id))
            for r in rows if status[r.context.id] in ("new", "changed", "edited")
        ]
        contexts += [tombstone_record(cid, h, run_id) for cid, h in removed]
        # Queries of unchanged contexts may still be new (a question added to the corpus).
        candidates = as_arrow("queries", [
            query_record(q, h, run_id)
            for r, h in zip(rows, parsed["content_hash"].to_pylist()) for q in r.queries
        ])
        idx.register("incoming_queries", candidates)
        queries = idx.execute(
            """SELECT * FROM incoming_queries i WHERE NOT EXISTS (
                   SELECT 1 FROM queries q WHERE q.query_id = i.query_id AND q.context_hash = i.context_hash)"""
        ).to_arrow_table()
        bad = as_arrow("quarantine", [{**q.model_dump(), "run_id": run_id} for q in loaded.quarantined])
        idx.register("incoming_bad", bad)
        quarantine = idx.execute(
            """SELECT * FROM incoming_bad i WHERE NOT EXISTS (
                   SELECT 1 FROM quarantine q WHERE q.source = i.source AND q.location = i.location
                   AND q.reason = i.reason)"""
        ).to_arrow_table()
    parsed_lines = len(rows) + len(loaded.quarantined)
    if not stage:
        unstaged = {"contexts": as_arrow("contexts", contexts), "queries": queries}
        return IngestResult(diff, rows, loaded.quarantined, loaded.source, 0, parsed_lines, unstaged)
    staged = lake.stage("contexts", contexts) + lake.stage("queries", queries) + lake.stage("quarantine", quarantine)
    return IngestResult(diff, rows, loaded.quarantined, loaded.source, staged, parsed_lines)


# --- plan ------------------------------------------------------------------------------------


def _slots(config: RunConfig) -> pa.Table:
    pairs = [(b.name, k) for b in config.sleep_budgets if not b.is_none for k in range(b.samples)]
    return pa.table({"sleep_budget": pa.array([p[0] for p in pairs], pa.string()),
                     "sample_index": pa.array([p[1] for p in pairs], pa.int32())})


def _context(r: dict[str, Any]) -> Context:
    return Context(id=r["context_id"], text=r["text"], source=r["source"] or "",
                   metadata=json.loads(r["metadata_json"] or "{}"))


# Variant.make_id in SQL: "v_" + the first 16 hex digits of sha256 of the compact JSON array of
# (context hash, model, budget, sample, prompt version). DuckDB's json_array writes the same bytes
# as json.dumps(separators=(",", ":"), ensure_ascii=False); tests/test_pipeline.py checks it.
VARIANT_ID_SQL = "'v_' || sha256(json_array({hash}, {model}, {budget}, {sample}, {pv})::VARCHAR)[1:16]"

_WANTED_VARIANTS = f"""
CREATE OR REPLACE TEMP VIEW wanted_variants AS
SELECT c.context_id, c.content_hash, c.text, c.source, c.metadata_json, s.sleep_budget, s.sample_index,
       {VARIANT_ID_SQL.format(hash="c.content_hash", model="(SELECT model FROM _ids)", budget="s.sleep_budget",
                              sample="s.sample_index", pv="(SELECT pv FROM _ids)")} AS variant_id
FROM contexts_current c CROSS JOIN slots s
WHERE (SELECT full_grid FROM _ids)
   OR EXISTS (SELECT 1 FROM allocated a WHERE a.context_id = c.context_id AND a.sleep_budget = s.sleep_budget)
"""


@dataclass
class SleepAllocation:
    """Which c' each current context gets in this refresh (``sleeptime plan`` prints it)."""

    mode: str  # full_grid | traffic
    reason: str
    policy_version: str | None
    per_context: dict[str, str]  # context -> sleep budget ("none": no c'); every budget under full_grid
    expected_queries: dict[str, float]

    def table(self) -> pa.Table:
        pairs = [(c, b) for c, b in self.per_context.items() if b != "none"]
        return pa.table({"context_id": pa.array([p[0] for p in pairs], pa.string()),
                         "sleep_budget": pa.array([p[1] for p in pairs], pa.string())})


def plan_allocation(idx: duckdb.DuckDBPyConnection, config: RunConfig) -> SleepAllocation:
    """The sleep budgets of this refresh. Under ``policy.sleep_allocation: traffic`` each current
    context gets the c' the published policy allocates it at its expected queries now (the query
    log's last window, so the plan follows traffic between publishes); every budget everywhere
    under ``full_grid``, and also while no policy is published (the first run measures the gains
    the allocation needs)."""
    from sleeptime.policy._traffic import expected_queries
    from sleeptime.policy.store import load_published_policy, traffic_counts

    contexts = [r[0] for r in idx.execute("SELECT context_id FROM contexts_current ORDER BY context_id").fetchall()]
    every = {c: "*" for c in contexts}
    if config.policy.sleep_allocation != "traffic":
        return SleepAllocation("full_grid", "policy.sleep_allocation is full_grid", None, every, {})
    policy = load_published_policy(idx)
    if policy is None:
        return SleepAllocation("full_grid", "no policy is published yet: the full grid measures what each budget gains",
                               None, every, {})
    s = policy.settings
    counts = traffic_counts(idx, s.traffic_window_days)
    queries = expected_queries(contexts, counts, s.expected_queries_per_context, s.traffic_prior_windows,
                               s.traffic_window_days, s.refresh_interval_days)
    expected = {c: float(q) for c, q in zip(contexts, queries)}
    per_context = {c: policy.sleep_budget_for(c, expected[c]) for c in contexts}
    source = f"{sum(counts.values())} logged queries in the last {s.traffic_window_days:g} days" if counts else \
        f"no traffic logged: {s.expected_queries_per_context:g} expected queries per context"
    return SleepAllocation("traffic", f"policy {policy.version} at the traffic now ({source})", policy.version,
                           per_context, expected)


def _wanted_variants(idx: duckdb.DuckDBPyConnection, config: RunConfig) -> SleepAllocation:
    """Temp view ``wanted_variants``: every (current context, allocated budget, sample) and its variant id."""
    allocation = plan_allocation(idx, config)
    idx.register("slots", _slots(config))
    idx.register("allocated", allocation.table())
    # A view cannot take parameters: the model and prompt version come from a one-row table.
    idx.register("_ids", pa.table({"model": [config.sleep_model], "pv": [PROMPT_VERSION],
                                   "full_grid": [allocation.mode == "full_grid"]}))
    idx.execute(_WANTED_VARIANTS)
    return allocation


def pending_sleep_jobs(lake: Lake, config: RunConfig, overlay: dict[str, pa.Table] | None = None) -> list[SleepJob]:
    """Every allocated (current context, budget, sample) whose variant is in neither the lake nor staging."""
    budgets = {b.name: b for b in config.sleep_budgets}
    with lake_index(lake, overlay) as idx:
        _wanted_variants(idx, config)
        rows = _dicts(idx.execute(
            """SELECT w.* FROM wanted_variants w
               WHERE NOT EXISTS (SELECT 1 FROM variants v WHERE v.variant_id = w.variant_id)
               ORDER BY w.context_id, w.sleep_budget, w.sample_index"""
        ))
    contexts: dict[str, Context] = {}
    jobs = []
    for r in rows:
        ctx = contexts.get(r["context_id"]) or contexts.setdefault(r["context_id"], _context(r))
        jobs.append(SleepJob(ctx, budgets[r["sleep_budget"]], r["sample_index"]))
    return jobs


@dataclass
class RefreshPlan:
    """What the next refresh would compute for the contexts in the lake (``sleeptime plan``)."""

    allocation: SleepAllocation
    contexts: int
    contexts_per_budget: dict[str, int]  # sleep budget -> contexts that get that c' ("none": no c')
    sleep_calls: int  # c' (samples included) the allocation wants
    sleep_calls_full_grid: int  # every budget for every context
    sleep_tokens: float  # estimated from the measured mean completion tokens per budget
    sleep_tokens_full_grid: float
    pending_sleep_jobs: int  # wanted c' not in the lake yet

    def lines(self) -> list[str]:
        a = self.allocation
        saved = 1 - self.sleep_tokens / self.sleep_tokens_full_grid if self.sleep_tokens_full_grid else 0.0
        out = [
            f"sleep allocation: {a.mode} ({a.reason})",
            f"contexts in the lake: {self.contexts}; per sleep budget: "
            + ", ".join(f"{b} {n}" for b, n in self.contexts_per_budget.items()),
            f"sleep calls: {self.sleep_calls} of {self.sleep_calls_full_grid} for every budget everywhere; "
            f"estimated sleep tokens {self.sleep_tokens:,.0f} of {self.sleep_tokens_full_grid:,.0f} ({max(saved, 0.0):.0%} saved)",
            f"c' still to compute: {self.pending_sleep_jobs}",
        ]
        return out


def plan_refresh(lake: Lake, config: RunConfig) -> RefreshPlan:
    """The refresh plan for the contexts the lake holds now (as of the last ingest)."""
    budgets = [b for b in config.sleep_budgets if not b.is_none]
    with lake_index(lake) as idx:
        allocation = _wanted_variants(idx, config)
        contexts = len(allocation.per_context)
        measured = dict(idx.execute(
            "SELECT sleep_budget, avg(completion_tokens) FROM variants WHERE sample_index = 0 GROUP BY ALL").fetchall())
        pending = idx.execute("SELECT count(*) FROM wanted_variants w WHERE NOT EXISTS "
                              "(SELECT 1 FROM variants v WHERE v.variant_id = w.variant_id)").fetchone()[0]
    per_budget: dict[str, int] = {}
    calls = 0
    tokens = 0.0
    for context_id, budget in allocation.per_context.items():
        chosen = budgets if budget == "*" else [b for b in budgets if b.name == budget]
        for b in chosen:
            per_budget[b.name] = per_budget.get(b.name, 0) + 1
            calls += b.samples
            tokens += b.samples * float(measured.get(b.name) or b.max_tokens)
        if not chosen:
            per_budget["none"] = per_budget.get("none", 0) + 1
    full_calls = contexts * sum(b.samples for b in budgets)
    full_tokens = contexts * sum(b.samples * float(measured.get(b.name) or b.max_tokens) for b in budgets)
    return RefreshPlan(allocation, contexts, per_budget, calls, full_calls, tokens, full_tokens, int(pending))


# The variants the test grid uses: exactly those with the id this configuration gives each
# (context, budget, sample); a row with any other id (hand-made, another prompt version) is not.
_CURRENT_VARIANTS = """
SELECT DISTINCT ON (v.variant_id) v.*
FROM variants v JOIN wanted_variants w ON v.variant_id = w.variant_id AND v.context_id = w.context_id
ORDER BY v.variant_id, v.run_id DESC
"""


def pending_test_jobs(lake: Lake, config: RunConfig,
                      overlay: dict[str, pa.Table] | None = None) -> tuple[list[AnswerJob], int]:
    """(Every labeled query x (raw context and each current variant) x test budget not answered
    yet, plus the extra raw samples of pass@k; the number of current variants)."""
    budgets = {t.name: t for t in config.test_budgets}
    grid = [(t.name, 0, False) for t in config.test_budgets] + [
        (t.name, k, True) for t in config.test_budgets for k in range(1, config.pass_at_k)
    ]
    tb = pa.table({"test_budget": [g[0] for g in grid], "sample_index": pa.array([g[1] for g in grid], pa.int32()),
                   "raw_only": [g[2] for g in grid]})
    with lake_index(lake, overlay) as idx:
        _wanted_variants(idx, config)
        idx.register("tb", tb)
        plan_variants = idx.execute(_CURRENT_VARIANTS).to_arrow_table()
        idx.register("plan_variants", plan_variants)
        n_variants = plan_variants.num_rows
        rows = _dicts(idx.execute(
            """WITH queries_now AS (
                   SELECT q.* FROM queries q JOIN contexts_current c
                   ON q.context_id = c.context_id AND q.context_hash = c.content_hash),
               src AS (
                   SELECT c.context_id, c.content_hash, NULL::VARCHAR AS variant_id FROM contexts_current c
                   UNION ALL
                   SELECT v.context_id, v.context_hash, v.variant_id FROM plan_variants v),
               grid AS (
                   SELECT q.query_id, q.text AS query_text, q.gold_answer, q.kind, s.context_id, s.content_hash,
                          s.variant_id, t.test_budget, t.sample_index
                   FROM queries_now q
                   JOIN src s ON s.context_id = q.context_id AND s.content_hash = q.context_hash
                   CROSS JOIN tb t
                   WHERE NOT t.raw_only OR s.variant_id IS NULL)
               SELECT g.*, c.text, c.source, c.metadata_json FROM grid g
               JOIN contexts_current c ON c.context_id = g.context_id
               WHERE NOT EXISTS (
                   SELECT 1 FROM answers a WHERE a.query_id = g.query_id AND a.context_hash = g.content_hash
                   AND a.variant_id IS NOT DISTINCT FROM g.variant_id AND a.test_model = ?
                   AND a.test_budget = g.test_budget AND a.prompt_version = ? AND a.sample_index = g.sample_index)
               ORDER BY g.context_id, g.query_id, g.variant_id NULLS FIRST, g.test_budget, g.sample_index""",
            [config.test_model, PROMPT_VERSION],
        ))
        wanted = sorted({r["variant_id"] for r in rows if r["variant_id"]})
        variants: dict[str, Variant] = {}
        if wanted:
            idx.register("wanted", pa.table({"variant_id": pa.array(wanted, pa.string())}))
            for v in _dicts(idx.execute(
                "SELECT * FROM plan_variants WHERE variant_id IN (SELECT variant_id FROM wanted)"
            )):
                variants[v["variant_id"]] = Variant(
                    context_id=v["context_id"], context_hash=v["context_hash"], model=v["model"],
                    sleep_budget=v["sleep_budget"], sample_index=v["sample_index"], prompt_version=v["prompt_version"],
                    text=v["text"], usage=Usage(prompt_tokens=v["prompt_tokens"], completion_tokens=v["completion_tokens"]),
                    cost_usd=v["cost_usd"], latency_s=v["latency_s"],
                )
    contexts: dict[str, Context] = {}
    queries: dict[str, Query] = {}
    jobs = []
    for r in rows:
        ctx = contexts.get(r["context_id"]) or contexts.setdefault(r["context_id"], _context(r))
        q = queries.get(r["query_id"]) or queries.setdefault(r["query_id"], Query(
            id=r["query_id"], context_id=r["context_id"], text=r["query_text"], gold_answer=r["gold_answer"],
            kind=r["kind"]))
        variant = variants[r["variant_id"]] if r["variant_id"] else None
        jobs.append(AnswerJob(ctx, q, budgets[r["test_budget"]], variant, r["sample_index"]))
    return jobs, n_variants


def _dicts(result: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    columns = [d[0] for d in result.description]
    return [dict(zip(columns, values)) for values in result.fetchall()]


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
    counters: CallCounters = field(default_factory=CallCounters)  # the run's model calls, summed over its shards
    failures: list[Failure] = field(default_factory=list)  # items that produced no row
    quarantined: int = 0
    status: str = "running"
    gate_report: str = ""
    shards: int = 0
    workers: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def items_attempted(self) -> int:
        return self.variants_written + self.answers_written + len(self.failures)

    @property
    def failure_rate(self) -> float:
        return len(self.failures) / self.items_attempted if self.items_attempted else 0.0

    def record(self) -> dict[str, Any]:
        counts, calls = self.diff.counts(), self.counters
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
            "model_calls": calls.calls,
            "prompt_tokens": calls.prompt_tokens,
            "completion_tokens": calls.completion_tokens,
            "cost_usd": calls.cost_usd,
            "failures": len(self.failures),
            "quarantined": self.quarantined,
            "seconds": self.seconds,
            "detail_json": json.dumps(
                {"shards": self.shards, "workers": self.workers, "gate": self.gate_report, "retries": calls.retries,
                 "cache_hits": calls.cache_hits, "cached_prompt_tokens": calls.cached_prompt_tokens,
                 "cache_write_tokens": calls.cache_write_tokens, "cache_savings_usd": calls.cache_savings_usd,
                 "failure_reasons": self.failure_reasons(), **self.extra},
                default=str,
            ),
        }

    def lines(self) -> list[str]:
        c, calls = self.diff.counts(), self.counters
        return [
            f"run {self.run_id}: {self.status}",
            f"contexts: {c['new']} new, {c['changed']} changed, {c['unchanged']} unchanged, {c['removed']} removed"
            f" ({self.quarantined} rows set aside)",
            f"work: {self.shards} shards on {self.workers} Ray workers{self._where()}; {self.variants_written} "
            f"variants and {self.answers_written} answers written",
            f"model: {calls.calls} calls ({calls.retries} retries, {calls.cache_hits} answered from the cache), "
            f"{calls.prompt_tokens} prompt + {calls.completion_tokens} completion tokens, ${calls.cost_usd:.4f}",
            f"failures: {len(self.failures)} of {self.items_attempted} items ({self.failure_rate:.1%})"
            + "".join(f"; {n} x {r}" for r, n in self.failure_reasons().items())
            + f"; time {self.seconds:.1f}s",
            *self._spend(),
        ]

    def _spend(self) -> list[str]:
        estimate, deferred = self.extra.get("estimate"), self.extra.get("deferred")
        out = []
        calls = self.counters
        batches = self.extra.get("batches")
        if batches:
            out.append(f"sleep batches: {batches['collected']} collected, {batches['submitted']} submitted "
                       f"({batches['items_submitted']} items, {batches['resubmitted']} sent again), "
                       f"{batches['pending']} pending" + ("; the next run (or `sleeptime run --collect`) collects them"
                                                          if batches["pending"] else ""))
        if calls.cached_prompt_tokens or calls.cache_write_tokens:
            out.append(f"prompt cache: {calls.cached_prompt_tokens} of {calls.prompt_tokens} prompt tokens read from "
                       f"the provider's cache, {calls.cache_write_tokens} written; saved ${calls.cache_savings_usd:.4f}")
        if deferred:
            out.append(f"deferred by max_cost_usd ${deferred['max_cost_usd']:.4f}: {deferred['sleep']} sleep and "
                       f"{deferred['test']} test jobs; the next run does them")
        if estimate and estimate["calls"]:
            actual = self.counters.cost_usd
            error = f" (estimate error {(estimate['cost_usd'] - actual) / actual:+.1%})" if actual and not deferred else ""
            out.append(f"cost: estimated ${estimate['cost_usd']:.4f} for {estimate['calls']} calls before the run, "
                       f"spent ${actual:.4f}{error}")
        return out

    def _where(self) -> str:
        ray = self.extra.get("ray")
        if not ray:
            return ""
        nodes = len({n for stage in ray["shard_nodes"].values() for n in stage if n})
        how = f"joined cluster {ray['address']}" if ray["joined"] else "local Ray"
        resent = f"; {ray['shards_resent']} shards sent again after losing their worker" if ray.get("shards_resent") else ""
        return f" ({how}: {ray['nodes']} nodes, {ray['cpus']} CPUs; shards ran on {nodes} of them{resent})"

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
    lake_snapshot: int | None = None
    rows_applied: dict[str, int] = field(default_factory=dict)


# Reads the candidate (the warehouse as it will be) and the run's delta; returns (ok, report).
GateFn = Callable[[Candidate], tuple[bool, str]]
# Reads the candidate; returns derived rows per table (the fitted policy), or nothing.
DeriveFn = Callable[[duckdb.DuckDBPyConnection], dict[str, list[dict[str, Any]]]]
# Rows waiting outside the lake (the service's query log): (table, rows, callback once committed).
SpoolFn = Callable[[], tuple[dict[str, pa.Table], Callable[[], None]]]

# A change to these tables can change the fitted policy; a publish without one keeps it.
_POLICY_INPUTS = ("contexts", "queries", "variants", "answers")


def publish(lake: Lake, warehouse: Warehouse, summary: RunSummary, gate: GateFn,
            derive: DeriveFn | None = None, spool: SpoolFn | None = None) -> PublishOutcome:
    """Apply the run's staged rows to a candidate warehouse, derive, gate, then commit and switch.

    1. candidate: the published warehouse, copied and caught up with the lake, plus the staged
       rows (the same upsert the lake's commit will do), plus the service's spooled query log,
       plus derived rows (a new policy version, when the data or the traffic changed).
    2. the GX gate over the delta and SQL cross-checks on the candidate.
    3. pass: one lake commit (staged -> published, derived, spooled, the run's row); then the
       candidate records the lake snapshot and replaces the published file (atomic rename).
       fail: the staged rows are dropped in one commit (readable by time travel), the run is
       recorded as rejected, and the published warehouse is untouched.
    """
    candidate = warehouse.candidate(lake)
    spooled: dict[str, pa.Table] = {}
    committed_spool: Callable[[], None] = lambda: None
    try:
        try:
            candidate.apply_staged(STAGED_TABLES)
        except duckdb.ConstraintException as exc:  # a row the warehouse schema refuses: fail closed
            candidate.discard()
            summary.status, summary.gate_report = "rejected", f"staged rows break the warehouse schema: {exc}"
            lake.reject(summary.record())
            return PublishOutcome(False, summary.gate_report)
        _failpoints.failpoint(_failpoints.PUBLISH_AFTER_BUILD)
        # The service's spooled query log first: new traffic re-plans the policy (its allocation
        # and the amortization of each context's c' follow the queries each context gets).
        if spool:
            spooled, committed_spool = spool()
            for table, arrow in spooled.items():
                candidate.apply(table, arrow)
        derived: dict[str, pa.Table] = {}
        new_traffic = bool(spooled.get("query_log") is not None and spooled["query_log"].num_rows)
        if derive and (new_traffic or any(candidate.rows_applied.get(t) for t in _POLICY_INPUTS)):
            for table, records in derive(candidate.con).items():
                if records:
                    derived[table] = as_arrow(table, records)
                    candidate.apply(table, derived[table])
        ok, report = gate(candidate)
    except BaseException:
        candidate.discard()
        raise
    summary.gate_report = report
    if not ok:
        candidate.discard()
        summary.status = "rejected"
        lake.reject(summary.record())
        return PublishOutcome(False, report)
    _failpoints.failpoint(_failpoints.PUBLISH_AFTER_GATE)
    summary.status = "published"
    record = summary.record()
    try:
        snapshot = lake.publish(record, derived, spooled)
    except BaseException:
        candidate.discard()
        raise
    committed_spool()
    _failpoints.failpoint(_failpoints.PUBLISH_BEFORE_SWAP)
    candidate.apply("runs", as_arrow("runs", [record]))
    candidate.finish(snapshot)
    warehouse.publish(candidate)
    return PublishOutcome(True, report, snapshot, dict(candidate.rows_applied))


def record_failed_run(lake: Lake, summary: RunSummary) -> None:
    """Record a run that failed too many items: its row goes to the lake (history), nothing is
    published, and its finished shards stay staged so the rerun reuses them and retries only the
    failed items."""
    summary.status = "failed"
    lake.write("runs", [summary.record()], run_id=summary.run_id, kind="failed")


def recover(lake: Lake, warehouse: Warehouse) -> dict[str, Any]:
    """What a run does first, under the output lock: repair what a crashed run left.

    - a lake commit the warehouse does not show yet (killed between the two) is applied now;
    - staged rows of a run with no row in ``runs`` (killed before its publish) get an
      ``interrupted`` row, so history says what happened; this run publishes those rows;
    - data files of a commit that never happened are deleted.
    """
    lake.maintain()
    repaired = warehouse.catch_up(lake)
    with lake.cursor() as cur:
        orphans = [r[0] for r in cur.execute(
            "SELECT DISTINCT run_id FROM (" + " UNION ALL ".join(
                f"SELECT run_id FROM lake.staging.{t}" for t in STAGED_TABLES
            ) + ") WHERE run_id NOT IN (SELECT run_id FROM lake.main.runs) ORDER BY run_id"
        ).fetchall()]
    if orphans:
        lake.write("runs", [_interrupted(r) for r in orphans], kind="recover")
    return {"warehouse_rows_caught_up": repaired, "interrupted_runs": orphans}


def _interrupted(run_id: str) -> dict[str, Any]:
    record = RunSummary(run_id=run_id, corpus="", started_at=None).record()  # type: ignore[arg-type]
    return {**record, "status": "interrupted", "finished_at": None,
            "detail_json": json.dumps({"note": "killed before publishing; its staged rows were published by a later run"})}
