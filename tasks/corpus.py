"""Tasks: load the corpus and find what changed since the last publish."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sleeptime.config import RunConfig
from sleeptime.dataset import LoadResult, ensure_demo_corpus, load_corpus
from sleeptime.domain import ContextWithQueries
from sleeptime.pipeline import CorpusDiff, diff_corpus, stage_ingest
from sleeptime.storage import Lake
from sleeptime.storage.warehouse import open_lake_index


class Ingested:
    """What ingest found: the corpus rows, the load result, and the diff against the lake.

    Deliberately not a dataclass (nor a pydantic model): Prefect walks every dataclass, model,
    list and dict in a task's parameters, twice per task (collecting upstream inputs, then
    resolving them), and this holds the whole corpus. At 10,000 contexts that walk cost about
    11 s of CPU for each task that takes it (plan, summarize), growing with the corpus; an opaque
    object is passed as it is.
    """

    __slots__ = ("rows", "loaded", "diff")

    def __init__(self, rows: list[ContextWithQueries], loaded: LoadResult, diff: CorpusDiff):
        self.rows = rows
        self.loaded = loaded
        self.diff = diff

    def __repr__(self) -> str:
        return f"Ingested({len(self.rows)} rows, diff {self.diff.counts()})"


@task(name="ingest", cache_policy=NO_CACHE)
def ingest(config: RunConfig, run_id: str) -> Ingested:
    """Load the corpus, diff it against the lake by content hash, and stage new context versions."""
    logger = get_run_logger()
    if ensure_demo_corpus(config):
        logger.info("generated the demo corpus at %s", config.corpus)
    loaded = load_corpus(config.corpus, format=config.corpus_format)
    logger.info(loaded.summary())
    rows = loaded.rows[: config.max_contexts] if config.max_contexts else loaded.rows
    lake = Lake(config.lake_dir)
    index = open_lake_index(lake)
    try:
        diff = diff_corpus(rows, index)
        staged = stage_ingest(lake, run_id, rows, diff, loaded, index)
    finally:
        index.close()
    logger.info("contexts %s; staged %d rows", diff.counts(), staged)
    return Ingested(rows, loaded, diff)
