"""Tasks: load the corpus and find what changed since the last publish."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sleeptime.config import RunConfig
from sleeptime.dataset import ensure_demo_corpus
from sleeptime.pipeline import CorpusDiff, IngestResult, ingest_corpus


class Ingested:
    """What ingest found: the parsed rows, what was set aside, and the diff against the lake.

    Deliberately not a dataclass (nor a pydantic model): Prefect walks every dataclass, model,
    list and dict in a task's parameters, twice per task, and this can hold many rows; an opaque
    object is passed as it is.
    """

    __slots__ = ("result",)

    def __init__(self, result: IngestResult):
        self.result = result

    @property
    def diff(self) -> CorpusDiff:
        return self.result.diff

    def __repr__(self) -> str:
        return f"Ingested({len(self.result.rows)} parsed rows, diff {self.diff.counts()})"


@task(name="ingest", cache_policy=NO_CACHE)
def ingest(config: RunConfig, run_id: str) -> Ingested:
    """Load the corpus, diff it against the lake by content hash, and stage new context versions."""
    logger = get_run_logger()
    if ensure_demo_corpus(config):
        logger.info("generated the demo corpus at %s", config.corpus)
    result = ingest_corpus(config.open_lake(), run_id, config.corpus, config.corpus_format, config.max_contexts)
    logger.info(
        "read %s: parsed %d lines (%d rows kept, %d set aside); contexts %s; staged %d rows",
        result.source, result.parsed_lines, len(result.rows), len(result.quarantined), result.diff.counts(), result.staged,
    )
    return Ingested(result)
