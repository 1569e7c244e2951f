"""Where rows live: the lake (DuckLake tables), the DuckDB warehouse, the output lock, the spool."""

from sleeptime.storage.lake import Lake
from sleeptime.storage.records import SCHEMAS, answer_record, context_record, query_record, variant_record

__all__ = ["Lake", "SCHEMAS", "answer_record", "context_record", "query_record", "variant_record"]
