"""Corpora: the arithmetic-worlds generator (demo and mixed easy/hard), loaders, simulated traffic."""

from sleeptime.dataset.demo import ensure_demo_corpus, write_demo_corpus
from sleeptime.dataset.loaders import (
    CorpusError,
    JsonlScan,
    LoadResult,
    corpus_format,
    load_corpus,
    scan_project_jsonl,
    write_project_jsonl,
)
from sleeptime.dataset.traffic import logged_queries, query_counts, simulate_query_log, write_query_log_spool
from sleeptime.dataset.worlds import EASY_SPEC, HARD_SPEC, WorldSpec, generate_corpus, generate_mixed_corpus

__all__ = [
    "EASY_SPEC",
    "HARD_SPEC",
    "CorpusError",
    "JsonlScan",
    "LoadResult",
    "corpus_format",
    "scan_project_jsonl",
    "WorldSpec",
    "ensure_demo_corpus",
    "generate_corpus",
    "generate_mixed_corpus",
    "load_corpus",
    "logged_queries",
    "query_counts",
    "simulate_query_log",
    "write_demo_corpus",
    "write_project_jsonl",
    "write_query_log_spool",
]
