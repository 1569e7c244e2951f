"""The Ray executor: a pool of actors that make model calls through the gateway.

Each actor holds one ModelGateway and one event loop for its whole life (litellm dislikes a new
loop per call), and gets an equal share of every model's concurrency cap, so the cap holds across
the pool. The work itself is sleeptime.compute; this module only decides where it runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import ray
import ray._private.ray_constants as ray_constants
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sleeptime.compute import BatchResult, SleepJob, AnswerJob, run_sleep_jobs, run_answer_jobs
from sleeptime.config import RunConfig
from sleeptime.domain import CallCounters
from sleeptime.model import ModelSpec, ResponseCache

log = logging.getLogger(__name__)

# Settings for the Ray a run starts for itself: every process binds and advertises 127.0.0.1, and
# Ray's token authentication is off (nothing but this machine can reach it). A run that joins a
# cluster (``ray_address``) never sets them: they are the cluster's to choose. A value the user
# set in the environment always wins.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


@contextmanager
def local_ray_settings() -> Iterator[None]:
    """Apply LOCAL_RAY_ENV while a local Ray starts, then restore the process's environment.

    The child processes Ray spawns (GCS, raylet, and the workers the raylet forks) inherit the
    settings. The driver itself read RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it imported ray, so
    its copy in ray_constants is set for the start too; once connected, the driver uses the node
    address Ray recorded, not the constant.
    """
    added = {k: v for k, v in LOCAL_RAY_ENV.items() if k not in os.environ}
    before = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(added)
    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"].lower() in ("1", "true")
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)
        ray_constants.ENABLE_RAY_CLUSTER = before


def start_local_ray(num_cpus: int, **kwargs: Any) -> None:
    """A single-node Ray on loopback for this process (the default when no ray_address is set).

    Always a new one (address "local"): with no address Ray would join whatever cluster RAY_ADDRESS
    or the last ``ray start`` on this machine names, and then refuse num_cpus. A run joins a
    cluster only when ray_address says so (``auto`` included)."""
    with local_ray_settings():
        ray.init(address="local", num_cpus=num_cpus, **kwargs)


def worker_slots() -> list[str]:
    """Node ids to place model workers on, in turn: every live node with CPUs, as many times as it
    has CPUs, interleaved (nodes A with 2 CPUs and B with 1 give A, B, A).

    Placed this way (node affinity, soft: a restarted worker may go anywhere), the workers spread
    over the nodes in proportion to their CPUs, so one node lost takes as few of them as it can.
    Ray's SPREAD strategy is only a hint: under load it once put both workers on one of two nodes.
    """
    cpus = {n["NodeID"]: int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")}
    nodes = sorted(n for n, c in cpus.items() if c > 0)
    return [n for k in range(max(cpus.values(), default=0)) for n in nodes if cpus[n] > k]


def cluster_info(address: str | None) -> dict[str, Any]:
    """What the run executed on, for its summary: the cluster's address, live nodes and CPUs."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {
        # The cluster's own address, also when it was found through "auto" or RAY_ADDRESS.
        "address": ray.get_runtime_context().gcs_address if address else "local",
        "joined": address is not None,
        "nodes": len(nodes),
        "cpus": int(sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)),
    }


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
        self.node_id = ray.get_runtime_context().get_node_id()

    def _run(self, coro) -> tuple[BatchResult, CallCounters, str]:
        """The batch's result, the calls it made (the gateway counts over the actor's life) and
        this actor's node."""
        before = replace(self.gateway.counters)
        result = self.loop.run_until_complete(coro)
        return result, self.gateway.counters - before, self.node_id

    def sleep(self, model: str, jobs: Sequence[SleepJob]) -> tuple[BatchResult, CallCounters, str]:
        return self._run(run_sleep_jobs(self.gateway, model, jobs, self.concurrency))

    def test(self, model: str, jobs: Sequence[AnswerJob]) -> tuple[BatchResult, CallCounters, str]:
        return self._run(run_answer_jobs(self.gateway, model, jobs, self.concurrency))


class RayPool:
    """Starts (or joins) Ray and owns ``workers`` ModelWorker actors for one run."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.workers = config.workers
        self.actors: list[Any] = []
        self._started_ray = False
        self._lock = threading.Lock()
        self._idle: queue.Queue[Any] = queue.Queue()
        self.cluster: dict[str, Any] | None = None  # set once Ray is up: where the run executed

    def __enter__(self) -> RayPool:
        return self

    def _start(self) -> None:
        # Started on first use: a run with nothing to compute never pays for Ray.
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
            if self.config.ray_address:
                ray.init(address=self.config.ray_address, **kwargs)
            else:
                start_local_ray(self.workers, **kwargs)
            self._started_ray = True
        self.cluster = cluster_info(self.config.ray_address)
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
        slots = worker_slots()
        self.actors = [
            ModelWorker.options(scheduling_strategy=(
                NodeAffinitySchedulingStrategy(slots[i % len(slots)], soft=True) if slots else "SPREAD"
            )).remote(shares, per_actor, str(cache.resolve()) if cache else None,
                      list(self.config.response_cache.exclude_models))
            for i in range(self.workers)
        ]
        for actor in self.actors:
            self._idle.put(actor)
        log.info("Ray (%s, %d nodes, %d CPUs): %d model workers, per-worker concurrency %d",
                 self.cluster["address"], self.cluster["nodes"], self.cluster["cpus"], self.workers, per_actor)

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
