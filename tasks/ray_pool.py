"""The Ray executor: a pool of actors that make model calls through the gateway.

Each actor holds one ModelGateway and one event loop for its whole life (litellm dislikes a new
loop per call), and gets an equal share of every model's concurrency cap, so the cap holds across
the pool. The work itself is sleeptime.compute; this module only decides where it runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ray

from sleeptime.compute import BatchResult, SleepJob, TestJob, run_sleep_jobs, run_test_jobs
from sleeptime.config import RunConfig
from sleeptime.model import ModelSpec, ResponseCache

log = logging.getLogger(__name__)


# A killed worker is restarted and its in-flight shard retried: the work is idempotent (rows are
# returned, the driver stages them) and replies already made come back from the response cache.
@ray.remote(max_restarts=3, max_task_retries=3)
class ModelWorker:
    def __init__(self, models: dict[str, ModelSpec], concurrency: int, cache_path: str | None = None,
                 uncached_models: list[str] | None = None):
        import sleeptime  # noqa: F401  (offline environment defaults inside the worker)
        from sleeptime.model import ModelGateway, ResponseCache

        cache = ResponseCache(cache_path) if cache_path else None
        self.gateway = ModelGateway(models, cache=cache, uncached_models=uncached_models or [])
        self.concurrency = concurrency
        self.loop = asyncio.new_event_loop()

    def _run(self, coro) -> tuple[BatchResult, dict[str, int]]:
        before = dict(self.gateway.stats)
        result = self.loop.run_until_complete(coro)
        after = dict(self.gateway.stats)
        return result, {k: after.get(k, 0) - before.get(k, 0) for k in after}

    def sleep(self, model: str, jobs: Sequence[SleepJob]) -> tuple[BatchResult, dict[str, int]]:
        return self._run(run_sleep_jobs(self.gateway, model, jobs, self.concurrency))

    def test(self, model: str, jobs: Sequence[TestJob]) -> tuple[BatchResult, dict[str, int]]:
        return self._run(run_test_jobs(self.gateway, model, jobs, self.concurrency))


class RayPool:
    """Starts (or joins) Ray and owns ``workers`` ModelWorker actors for one run."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.workers = config.workers
        self.actors: list[Any] = []
        self._started_ray = False
        self._lock = threading.Lock()
        self._idle: queue.Queue[Any] = queue.Queue()

    def __enter__(self) -> RayPool:
        return self

    def _start(self) -> None:
        # Started on first use: a run with nothing to compute never pays for Ray.
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
            if self.config.ray_address:
                ray.init(address=self.config.ray_address, **kwargs)
            else:
                ray.init(num_cpus=self.workers, **kwargs)
            self._started_ray = True
        # Each actor gets an equal share of every per-model limit, so the limits hold across the
        # pool (per run: another process using the same key is not counted).
        def share(limit: int | None) -> int | None:
            return None if limit is None else max(1, math.ceil(limit / self.workers))

        shares = {
            name: spec.model_copy(update={"max_concurrency": share(spec.max_concurrency), "rpm": share(spec.rpm),
                                          "tpm": share(spec.tpm)})
            for name, spec in self.config.models.items()
        }
        per_actor = max(1, math.ceil(self.config.concurrency / self.workers))
        cache = self.config.response_cache_path
        if cache:
            # Create the file (WAL mode, table) here, once, before the actors open it together.
            ResponseCache(cache).close()
        self.actors = [
            ModelWorker.remote(shares, per_actor, str(cache.resolve()) if cache else None,
                               list(self.config.response_cache.exclude_models))
            for _ in range(self.workers)
        ]
        for actor in self.actors:
            self._idle.put(actor)
        log.info("Ray: %d model workers, per-worker concurrency %d", self.workers, per_actor)

    def ensure_started(self) -> RayPool:
        """Start Ray and the actors now; call it from the flow's main thread (Ray installs signal
        handlers there), right before submitting shards, so a run with no work never starts Ray."""
        with self._lock:
            if not self.actors:
                self._start()
        return self

    @contextmanager
    def lease(self) -> Iterator[Any]:
        """An idle actor for one shard. Shards go to whichever actor is free, not round-robin:
        shards differ in size, and a fixed assignment left one actor with most of the work."""
        self.ensure_started()
        actor = self._idle.get()
        try:
            yield actor
        finally:
            self._idle.put(actor)

    def __exit__(self, *exc: object) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._started_ray:
            ray.shutdown()
