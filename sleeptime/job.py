"""The whole grid in one process: load a corpus, run sleep time and test time, keep the rows.

The product's main job is the orchestrated pipeline (flows/): the same core functions on Prefect
and Ray, with the lake and the warehouse. This executor keeps everything in memory and writes
nothing; the mechanism tests and benchmarks use it to measure the core without orchestration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from sleeptime.compute import Failure, run_sleep_jobs, run_answer_jobs, sleep_jobs, answer_jobs
from sleeptime.config import RunConfig
from sleeptime.dataset import LoadResult, ensure_demo_corpus, load_corpus
from sleeptime.domain import Answer, CallCounters, Variant
from sleeptime.model import ModelGateway
from sleeptime.storage import answer_record

# (stage name, total items) -> a function to call with the number of items just finished
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def _no_progress(stage: str, total: int) -> Callable[[int], None]:
    return lambda n: None


@dataclass
class JobResult:
    loaded: LoadResult
    variants: list[Variant]
    answers: list[Answer]
    failures: list[Failure]
    seconds: dict[str, float] = field(default_factory=dict)
    counters: CallCounters = field(default_factory=CallCounters)  # the model calls of the whole job

    def answers_frame(self) -> pd.DataFrame:
        return pd.DataFrame([answer_record(a) for a in self.answers])


def run_local(config: RunConfig, progress: ProgressFactory = _no_progress) -> JobResult:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    ensure_demo_corpus(config)
    loaded = load_corpus(config.corpus, format=config.corpus_format)
    rows = loaded.rows[: config.max_contexts] if config.max_contexts else loaded.rows
    seconds["load"] = time.perf_counter() - t0

    gateway = ModelGateway(config.models)
    sleeping = sleep_jobs([r.context for r in rows], config.sleep_budgets)

    async def work() -> tuple[list[Variant], list[Answer], list[Failure]]:
        t = time.perf_counter()
        slept = await run_sleep_jobs(
            gateway, config.sleep_model, sleeping, config.concurrency, progress("sleep time", len(sleeping))
        )
        seconds["sleep"] = time.perf_counter() - t
        testing = answer_jobs([r for r in rows if r.queries], slept.rows, config.test_budgets, config.pass_at_k)
        t = time.perf_counter()
        tested = await run_answer_jobs(
            gateway, config.test_model, testing, config.concurrency, progress("test time", len(testing))
        )
        seconds["test"] = time.perf_counter() - t
        return slept.rows, tested.rows, slept.failures + tested.failures

    variants, answers, failures = asyncio.run(work())

    seconds["total"] = time.perf_counter() - t0
    return JobResult(loaded, variants, answers, failures, seconds, gateway.counters)
