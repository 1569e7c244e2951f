"""A small published warehouse with two tenants, built without Prefect or Ray, and helpers to run
the query service on it in-process."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from sleeptime.config import PolicyConfig, RunConfig
from sleeptime.dataset import write_demo_corpus
from sleeptime.domain import Context, SleepBudget, AnswerBudget
from sleeptime.job import JobResult, run_local
from sleeptime.pipeline import RunSummary
from sleeptime.policy import PolicySettings
from sleeptime.policy.store import derive_policy
from sleeptime.service.keys import KeyStore
from sleeptime.storage import Lake, answer_record, context_record, query_record, variant_record
from sleeptime.storage.warehouse import Warehouse

TENANTS = {0: "acme", 1: "acme", 2: "acme", 3: "globex", 4: "globex", 5: "globex", 6: "acme"}
EXTRA = 6  # held back from the first publish; the reload test publishes it


@dataclass
class Served:
    root: Path
    config: RunConfig
    config_path: Path
    result: JobResult
    tenant_of: dict[str, str]
    extra_id: str
    keys: KeyStore
    secrets: dict[str, str]  # "acme", "globex", "revoked" -> secret

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.config.warehouse_path)

    def ids(self, tenant: str) -> list[str]:
        return sorted(c for c, t in self.tenant_of.items() if t == tenant and c != self.extra_id)

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[who]}"}

    def rows(self, context_ids: set[str]):
        return [r for r in self.result.loaded.rows if r.context.id in context_ids]


def with_tenant(context: Context, tenant: str) -> Context:
    return context.model_copy(update={"metadata": {**context.metadata, "tenant": tenant}})


def write_rows(lake: Lake, served: Served, context_ids: set[str], run_id: str) -> None:
    rows = served.rows(context_ids)
    lake.write("contexts", [context_record(with_tenant(r.context, served.tenant_of[r.context.id]), run_id) for r in rows], run_id=run_id)
    lake.write("queries", [query_record(q, r.context.content_hash, run_id) for r in rows for q in r.queries], run_id=run_id)
    lake.write("variants", [variant_record(v, run_id) for v in served.result.variants if v.context_id in context_ids], run_id=run_id)
    lake.write("answers", [answer_record(a, run_id) for a in served.result.answers if a.context_id in context_ids], run_id=run_id)
    summary = RunSummary(run_id=run_id, corpus="test", started_at=datetime.now(timezone.utc), status="published")
    lake.write("runs", [summary.record()], run_id=run_id)


POLICY = PolicyConfig(target_accuracy=0.75)


def publish(warehouse: Warehouse, lake: Lake, settings: PolicySettings) -> Path:
    """What a run's publish does for the service: the lake's rows into the warehouse, then the
    policy fitted on them with ``settings`` (the run's ``RunConfig.policy_settings``) stored beside
    them (the service loads it, never fits one)."""
    scratch = Warehouse(warehouse.path.parent / ".policy-scratch" / "w.duckdb")  # one publish: one new file
    scratch.rebuild(lake)
    with scratch.read() as con:
        run_id = con.execute("SELECT max(run_id) FROM runs").fetchone()[0]
        derived = derive_policy(con, settings, run_id)
    shutil.rmtree(scratch.path.parent)
    if derived:
        lake.write("policies", derived["policies"], run_id=run_id)
    return warehouse.sync(lake)


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> Served:
    root = tmp_path_factory.mktemp("service")
    config = RunConfig(
        corpus=write_demo_corpus(root / "corpus.jsonl", contexts=len(TENANTS), seed=21),
        output_dir=root / "out",
        sleep_budgets=[SleepBudget(name="none", max_tokens=0), SleepBudget(name="small", max_tokens=48),
                       SleepBudget(name="large", max_tokens=512)],
        test_budgets=[AnswerBudget(name="t0-direct", verbosity=0, max_tokens=16),
                      AnswerBudget(name="t2-steps", verbosity=2, max_tokens=80)],
        pass_at_k=1,
        # Several options are adequate per scope (the failure chain has a next-cheapest one), the
        # kinds choose differently, and one context's 10 queries (Wilson LB 0.72) are not enough.
        policy=POLICY,
    )
    result = run_local(config)
    assert not result.failures
    ids = [r.context.id for r in result.loaded.rows]
    tenant_of = {cid: TENANTS[i] for i, cid in enumerate(ids)}
    keys = KeyStore(root / "keys" / "api_keys.json")
    secrets = {"acme": keys.create("acme")[1], "globex": keys.create("globex")[1]}
    revoked_id, secrets["revoked"] = keys.create("acme")
    keys.revoke(revoked_id)
    config_path = root / "sleeptime.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    s = Served(root, config, config_path, result, tenant_of, ids[EXTRA], keys, secrets)
    lake = Lake(config.lake_dir)
    write_rows(lake, s, set(ids) - {s.extra_id}, "r20260101T000000000000")
    publish(s.warehouse, lake, config.policy_settings)
    return s


def wait_ready(client, timeout: float = 20.0, snapshot: str | None = None) -> dict:
    """Poll /readyz until ready (and, with ``snapshot``, serving a different file than it)."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        r = client.get("/readyz")
        body = r.json()
        if r.status_code == 200 and (snapshot is None or body["snapshot"] != snapshot):
            return body
        time.sleep(0.05)
    raise AssertionError(f"service not ready in {timeout}s: {body}")


def copy_output(served: Served, dest: Path) -> RunConfig:
    """A private copy of the lake (and a fresh warehouse from it) for tests that publish."""
    shutil.copytree(served.config.lake_dir, dest / "lake")
    config = served.config.model_copy(update={"output_dir": dest})
    publish(Warehouse(config.warehouse_path), Lake(config.lake_dir), config.policy_settings)
    return config


@contextmanager
def serving(settings) -> Iterator[tuple[str, object]]:
    """The app of ``settings`` under uvicorn, configured as `sleeptime serve` configures it, on a
    free loopback port, in a thread: yields (base URL, app)."""
    import uvicorn

    from sleeptime.service.server import uvicorn_config

    config = uvicorn_config(settings.model_copy(update={"host": "127.0.0.1", "port": 0}))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", config.app
    finally:
        server.should_exit = True
        thread.join(30)


class Helpers:
    """The helpers above, as a fixture (test modules do not import conftest)."""

    wait_ready = staticmethod(wait_ready)
    copy_output = staticmethod(copy_output)
    write_rows = staticmethod(write_rows)
    publish = staticmethod(publish)
    serving = staticmethod(serving)


@pytest.fixture(scope="session")
def helpers() -> type[Helpers]:
    return Helpers
