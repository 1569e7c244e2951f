"""The bundled demo corpus: generated from a seed, so it can always be rebuilt."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sleeptime.dataset.loaders import write_project_jsonl
from sleeptime.dataset.worlds import generate_corpus

if TYPE_CHECKING:
    from sleeptime.config import RunConfig


def write_demo_corpus(path: Path, contexts: int, seed: int) -> Path:
    write_project_jsonl(generate_corpus(contexts, seed=seed), path)
    return path


def ensure_demo_corpus(config: RunConfig) -> bool:
    """Generate the demo corpus when the run asks for it and it is missing; True if generated."""
    if Path(config.corpus) != Path(config.demo.path) or Path(config.corpus).exists():
        return False
    write_demo_corpus(Path(config.corpus), config.demo.contexts, config.demo.seed)
    return True
