"""Corpora: the arithmetic-worlds generator, the bundled demo corpus and loaders."""

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
from sleeptime.dataset.worlds import WorldSpec, generate_corpus

__all__ = [
    "CorpusError",
    "JsonlScan",
    "LoadResult",
    "corpus_format",
    "scan_project_jsonl",
    "WorldSpec",
    "ensure_demo_corpus",
    "generate_corpus",
    "load_corpus",
    "write_demo_corpus",
    "write_project_jsonl",
]
