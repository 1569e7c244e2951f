"""Where rows live: the Parquet lake (and, from the pipeline issue on, the DuckDB warehouse)."""

from sleeptime.storage.lake import Lake
from sleeptime.storage.records import SCHEMAS, answer_record, context_record, query_record, variant_record

__all__ = ["Lake", "SCHEMAS", "answer_record", "context_record", "query_record", "variant_record"]
