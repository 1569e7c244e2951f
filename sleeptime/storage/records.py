"""Flat row shapes and Arrow schemas for every table: the single source of column names."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from sleeptime.domain import Answer, Context, Query, Usage, Variant

SCHEMAS: dict[str, pa.Schema] = {
    "contexts": pa.schema(
        [
            ("context_id", pa.string()),
            ("content_hash", pa.string()),
            ("source", pa.string()),
            ("text", pa.string()),
            ("metadata_json", pa.string()),
            ("deleted", pa.bool_()),  # a tombstone: the context left the corpus
            ("run_id", pa.string()),
            # sha256 of the corpus record (JSONL line) this version came from: an identical line
            # on the next refresh is skipped without parsing it. NULL for other corpus formats.
            ("row_hash", pa.string()),
        ]
    ),
    "queries": pa.schema(
        [
            ("query_id", pa.string()),
            ("context_id", pa.string()),
            ("context_hash", pa.string()),
            ("text", pa.string()),
            ("gold_answer", pa.string()),
            ("kind", pa.string()),
            ("run_id", pa.string()),
        ]
    ),
    "variants": pa.schema(
        [
            ("variant_id", pa.string()),
            ("context_id", pa.string()),
            ("context_hash", pa.string()),
            ("model", pa.string()),
            ("sleep_budget", pa.string()),
            ("sample_index", pa.int32()),
            ("prompt_version", pa.string()),
            ("text", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("cost_usd", pa.float64()),
            ("latency_s", pa.float64()),
            ("run_id", pa.string()),
            # Of the prompt tokens: read from the provider's prompt cache, and written to it
            # (priced apart: sleeptime.model.price).
            ("cached_prompt_tokens", pa.int64()),
            ("cache_write_tokens", pa.int64()),
        ]
    ),
    "answers": pa.schema(
        [
            ("answer_id", pa.string()),
            ("query_id", pa.string()),
            ("context_id", pa.string()),
            ("context_hash", pa.string()),
            ("variant_id", pa.string()),
            ("sleep_budget", pa.string()),
            ("test_model", pa.string()),
            ("test_budget", pa.string()),
            ("sample_index", pa.int32()),
            ("prompt_version", pa.string()),
            ("raw_reply", pa.string()),
            ("parsed_answer", pa.string()),
            ("correct", pa.bool_()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("cost_usd", pa.float64()),
            ("latency_s", pa.float64()),
            ("run_id", pa.string()),
            # Of the prompt tokens: read from the provider's prompt cache, and written to it
            # (priced apart: sleeptime.model.price).
            ("cached_prompt_tokens", pa.int64()),
            ("cache_write_tokens", pa.int64()),
        ]
    ),
    "quarantine": pa.schema(
        [
            ("source", pa.string()),
            ("location", pa.string()),
            ("reason", pa.string()),
            ("raw", pa.string()),
            ("run_id", pa.string()),
        ]
    ),
    # Work items that produced no row, so a rerun retries exactly these.
    "failures": pa.schema(
        [
            ("stage", pa.string()),
            ("key", pa.string()),
            ("context_id", pa.string()),
            ("reason", pa.string()),
            ("run_id", pa.string()),
        ]
    ),
    # The published selection policy (sleeptime/policy/_policy.py): the rows ARE the policy the
    # service and `policy explain` load; versioned by a hash of its inputs.
    "policies": pa.schema(
        [
            ("policy_version", pa.string()),
            ("settings_json", pa.string()),
            ("scope", pa.string()),  # policy | corpus | kind | context | allocation | allocation_default
            ("scope_value", pa.string()),
            ("sleep_budget", pa.string()),
            ("test_budget", pa.string()),
            ("n", pa.int64()),
            ("correct", pa.int64()),
            ("accuracy", pa.float64()),
            ("wilson_lower", pa.float64()),
            ("mean_test_tokens", pa.float64()),
            ("mean_test_cost_usd", pa.float64()),
            ("sleep_tokens_per_context", pa.float64()),
            ("sleep_cost_usd_per_context", pa.float64()),
            ("cost_weighted", pa.float64()),
            ("cost_usd", pa.float64()),
            ("adequate", pa.bool_()),
            ("chosen", pa.bool_()),
            ("run_id", pa.string()),
            ("kind", pa.string()),  # the query kind of a kind or context row ("*": kind unknown); "" otherwise
            ("estimate", pa.float64()),  # shrunk accuracy estimate
            ("estimate_lower", pa.float64()),
            ("expected_queries", pa.float64()),  # per context per refresh, from traffic
            ("mean_latency_ms", pa.float64()),
            ("detail_json", pa.string()),  # the policy row's fit summary
        ]
    ),
    # The query service's log (sleeptime/service/querylog.py): one row per query it handled; no
    # question text (its sha256 and length) and no key material (the key's id only).
    "query_log": pa.schema(
        [
            ("request_id", pa.string()),
            ("received_at", pa.timestamp("us", tz="UTC")),
            ("tenant", pa.string()),
            ("key_id", pa.string()),
            ("context_id", pa.string()),
            ("context_hash", pa.string()),
            ("kind", pa.string()),
            ("question_sha256", pa.string()),
            ("question_chars", pa.int32()),
            ("variant_id", pa.string()),
            ("sleep_budget", pa.string()),
            ("test_budget", pa.string()),
            ("test_model", pa.string()),
            ("scope", pa.string()),  # context | kind | corpus
            ("scope_value", pa.string()),
            ("fallback", pa.bool_()),
            ("target_accuracy", pa.float64()),
            ("predicted_accuracy", pa.float64()),
            ("predicted_cost_weighted", pa.float64()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("cost_usd", pa.float64()),
            ("latency_ms", pa.float64()),
            ("model_latency_ms", pa.float64()),
            ("selection_us", pa.float64()),
            ("status", pa.string()),  # answered | failed
            ("attempts", pa.int32()),
            ("error", pa.string()),
            ("policy_version", pa.string()),
            ("snapshot", pa.string()),
            ("run_id", pa.string()),  # service-<YYYYMMDD>
        ]
    ),
    "runs": pa.schema(
        [
            ("run_id", pa.string()),
            ("started_at", pa.timestamp("us", tz="UTC")),
            ("finished_at", pa.timestamp("us", tz="UTC")),
            ("status", pa.string()),  # published | rejected | failed
            ("corpus", pa.string()),
            ("contexts_new", pa.int64()),
            ("contexts_changed", pa.int64()),
            ("contexts_unchanged", pa.int64()),
            ("contexts_removed", pa.int64()),
            ("variants_written", pa.int64()),
            ("answers_written", pa.int64()),
            ("model_calls", pa.int64()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("cost_usd", pa.float64()),
            ("failures", pa.int64()),
            ("quarantined", pa.int64()),
            ("seconds", pa.float64()),
            ("detail_json", pa.string()),
        ]
    ),
    # Provider batches of sleep-time requests (sleeptime/batch.py): written before the run waits on
    # them, so a restarted run collects them instead of paying for their items again.
    "batches": pa.schema(
        [
            ("batch_id", pa.string()),  # the provider's
            ("model", pa.string()),
            ("stage", pa.string()),
            ("input_file_id", pa.string()),
            ("input_sha256", pa.string()),
            ("item_keys_json", pa.string()),  # the items' custom_ids: variant ids
            ("context_ids_json", pa.string()),  # their contexts (the gate excepts them while in flight)
            ("items", pa.int64()),
            ("attempt", pa.int32()),  # 2: the unfinished items of an expired or cancelled batch
            ("status", pa.string()),  # submitted | collected
            ("submitted_at", pa.timestamp("us", tz="UTC")),
            ("updated_at", pa.timestamp("us", tz="UTC")),
            ("run_id", pa.string()),
            ("detail_json", pa.string()),
        ]
    ),
}


# Table -> the columns that identify a row. Publishing a row whose key exists replaces the old row
# (the latest run_id wins), in the lake and in the warehouse alike.
KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id",),
    "contexts": ("context_id", "content_hash", "deleted"),
    "queries": ("query_id", "context_hash"),
    "variants": ("variant_id",),
    "answers": ("answer_id",),
    "quarantine": ("source", "location", "reason"),
    "failures": ("stage", "key", "run_id"),
    "policies": ("policy_version", "scope", "scope_value", "kind", "sleep_budget", "test_budget"),
    "query_log": ("request_id",),
    "batches": ("batch_id",),
}


def context_record(c: Context, run_id: str = "", deleted: bool = False, row_hash: str | None = None) -> dict[str, Any]:
    return {
        "context_id": c.id,
        "content_hash": c.content_hash,
        "source": c.source,
        "text": c.text,
        "metadata_json": json.dumps(c.metadata, sort_keys=True, default=str),
        "deleted": deleted,
        "run_id": run_id,
        "row_hash": row_hash,
    }


def tombstone_record(context_id: str, content_hash: str, run_id: str) -> dict[str, Any]:
    """The row that records a context leaving the corpus (its last version, deleted)."""
    return {
        "context_id": context_id,
        "content_hash": content_hash,
        "source": "",
        "text": "",
        "metadata_json": "{}",
        "deleted": True,
        "run_id": run_id,
        "row_hash": None,
    }


def query_record(q: Query, context_hash: str, run_id: str = "") -> dict[str, Any]:
    return {
        "query_id": q.id,
        "context_id": q.context_id,
        "context_hash": context_hash,
        "text": q.text,
        "gold_answer": q.gold_answer,
        "kind": q.kind,
        "run_id": run_id,
    }


def _usage(u: Usage) -> dict[str, int]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "cached_prompt_tokens": u.cached_prompt_tokens, "cache_write_tokens": u.cache_write_tokens}


def variant_record(v: Variant, run_id: str = "") -> dict[str, Any]:
    return {
        "run_id": run_id,
        "variant_id": v.id,
        **v.model_dump(exclude={"usage"}),
        **_usage(v.usage),
    }


def answer_record(a: Answer, run_id: str = "") -> dict[str, Any]:
    return {
        "run_id": run_id,
        "answer_id": a.id,
        **a.model_dump(exclude={"usage"}),
        **_usage(a.usage),
    }
