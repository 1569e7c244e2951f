"""Flat row shapes and Arrow schemas for every table: the single source of column names."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from sleeptime.domain import Answer, Context, Query, Variant

SCHEMAS: dict[str, pa.Schema] = {
    "contexts": pa.schema(
        [
            ("context_id", pa.string()),
            ("content_hash", pa.string()),
            ("source", pa.string()),
            ("text", pa.string()),
            ("metadata_json", pa.string()),
        ]
    ),
    "queries": pa.schema(
        [
            ("query_id", pa.string()),
            ("context_id", pa.string()),
            ("text", pa.string()),
            ("gold_answer", pa.string()),
            ("kind", pa.string()),
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
        ]
    ),
    "answers": pa.schema(
        [
            ("answer_id", pa.string()),
            ("query_id", pa.string()),
            ("context_id", pa.string()),
            ("variant_id", pa.string()),
            ("sleep_budget", pa.string()),
            ("test_model", pa.string()),
            ("test_budget", pa.string()),
            ("prompt_version", pa.string()),
            ("raw_reply", pa.string()),
            ("parsed_answer", pa.string()),
            ("correct", pa.bool_()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("cost_usd", pa.float64()),
            ("latency_s", pa.float64()),
        ]
    ),
    "quarantine": pa.schema(
        [
            ("source", pa.string()),
            ("location", pa.string()),
            ("reason", pa.string()),
            ("raw", pa.string()),
        ]
    ),
}


def context_record(c: Context) -> dict[str, Any]:
    import json

    return {
        "context_id": c.id,
        "content_hash": c.content_hash,
        "source": c.source,
        "text": c.text,
        "metadata_json": json.dumps(c.metadata, sort_keys=True, default=str),
    }


def query_record(q: Query) -> dict[str, Any]:
    return {"query_id": q.id, "context_id": q.context_id, "text": q.text, "gold_answer": q.gold_answer, "kind": q.kind}


def variant_record(v: Variant) -> dict[str, Any]:
    return {
        "variant_id": v.id,
        **v.model_dump(exclude={"usage"}),
        "prompt_tokens": v.usage.prompt_tokens,
        "completion_tokens": v.usage.completion_tokens,
    }


def answer_record(a: Answer) -> dict[str, Any]:
    return {
        "answer_id": a.id,
        **a.model_dump(exclude={"usage"}),
        "prompt_tokens": a.usage.prompt_tokens,
        "completion_tokens": a.usage.completion_tokens,
    }
