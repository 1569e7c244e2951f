"""The main job on a multi-node Ray cluster: a head and two worker nodes on 127.0.0.1, with Ray's
token authentication on, joined with ``--ray-address`` as a user joins theirs.

The cluster runs in its own process (tasks/loopback_cluster.py) and the run in another, so neither
shares this test process's environment or its session Ray."""

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sleeptime.testing.fake_openai import FakeOpenAIServer, FaultConfig
from tests.flows.conftest import Pipeline, kill_session, spawn_run
from tests.flows.test_crash_and_readers import _keys

ROOT = Path(__file__).resolve().parents[2]
RAY_SETTINGS = ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
# What this process's environment said at collection, before any Ray started (a user's own settings).
ORIGINAL_RAY_SETTINGS = {k for k in RAY_SETTINGS if k in os.environ}


class LoopbackCluster:
    def __init__(self, tmp_path: Path):
        # The cluster's own settings, as its operator would export them on every machine: token
        # authentication, and (one machine, loopback only) Ray's switch that keeps it on 127.0.0.1.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PREFECT_API_URL"}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
                        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
                        PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.loopback_cluster", "--workers", "2"], cwd=ROOT, env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        started = json.loads(self.proc.stdout.readline())
        self.address, self.workers = started["address"], started["workers"]

    def ask(self, command: str):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        kill_session(self.proc.pid)


@pytest.fixture
def cluster(tmp_path):
    c = LoopbackCluster(tmp_path)
    yield c
    c.close()


def _fake_model(base_url: str) -> dict:
    return {"model": "openai/fake", "api_base": base_url, "api_key": "x", "input_cost_per_million": 1.0,
            "output_cost_per_million": 2.0, "max_concurrency": 4, "timeout_s": 30.0, "max_retries": 1}


def _use(p: Pipeline, server: FakeOpenAIServer) -> None:
    p.write_config(models={"fake": _fake_model(server.base_url)}, sleep_model="fake", test_model="fake")


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        kill_session(proc.pid)
    assert proc.returncode == 0, out[-3000:]
    return out


def _ray_detail(p: Pipeline) -> dict:
    with p.warehouse().read() as con:
        detail = con.execute("SELECT detail_json FROM runs WHERE status = 'published' ORDER BY started_at DESC LIMIT 1").fetchone()[0]
    return json.loads(detail)["ray"]


JOIN_AND_REPORT = """
import json, os, sys
from pathlib import Path
names = {names!r}
before = {{k: os.environ.get(k) for k in names}}
import sleeptime, flows.pipeline  # everything the CLI imports
from sleeptime.config import load_config
from tasks.ray_pool import RayPool
after_import = {{k: os.environ.get(k) for k in names}}
config = load_config(Path(sys.argv[1]), ray_address=sys.argv[2], workers=1)
with RayPool(config) as pool:
    pool.ensure_started()
    joined = {{k: os.environ.get(k) for k in names}}
    cluster = pool.cluster
print(json.dumps({{"before": before, "after_import": after_import, "joined": joined, "cluster": cluster}}))
"""


def test_joining_a_cluster_leaves_its_ray_settings_alone(cluster, tmp_path):
    p = Pipeline(tmp_path / "run", contexts=1)
    script = JOIN_AND_REPORT.format(names=RAY_SETTINGS)
    out = subprocess.run([sys.executable, "-c", script, str(p.config), cluster.address], cwd=ROOT, env=cluster.env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    expected = {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    assert report["before"] == report["after_import"] == report["joined"] == expected
    assert report["cluster"] == {"address": cluster.address, "joined": True, "nodes": 3, "cpus": 2}

    # With nothing set, importing the package sets nothing either.
    bare = {k: v for k, v in cluster.env.items() if k not in RAY_SETTINGS}
    out = subprocess.run([sys.executable, "-c", "import os, sleeptime, flows.pipeline; "
                          f"print([os.environ.get(k) for k in {RAY_SETTINGS!r}])"],
                         cwd=ROOT, env=bare, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[None, None]", out.stderr[-2000:]


@pytest.mark.slow
def test_a_run_on_an_authenticated_cluster_survives_losing_a_worker_node(pipeline, prefect_api_url, cluster, tmp_path):
    with FakeOpenAIServer(FaultConfig(latency_s=0.25)) as server:
        _use(pipeline, server)
        pipeline.run()  # the clean run: this process's own local Ray
        clean_requests = server.stats()["requests"]
        server.reset()

        lost = Pipeline(tmp_path / "lost", contexts=4, seed=3)
        _use(lost, server)
        proc = spawn_run(lost, tmp_path, "--ray-address", cluster.address, api_url=prefect_api_url, env=cluster.env,
                         capture=True)
        deadline = time.monotonic() + 240
        while server.stats()["requests"] < clean_requests // 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        removed = cluster.ask("remove-busy")["removed"]
        out = " ".join(_finish(proc).split())
    assert removed in cluster.workers, "no worker node hosted a model worker mid-run"
    survivor = next(n for n in cluster.workers if n != removed)
    live = {n["node_id"] for n in cluster.ask("nodes")}
    assert survivor in live and removed not in live

    # The run joined the cluster and said so; its two model workers were placed on the two worker
    # nodes (the head has no CPUs), as the sleep shards, finished before the loss, show.
    assert f"joined cluster {cluster.address}: 3 nodes, 2 CPUs" in out
    ray = _ray_detail(lost)
    assert ray["joined"] and ray["address"] == cluster.address and (ray["nodes"], ray["cpus"]) == (3, 2)
    assert set(ray["shard_nodes"]["sleep"]) == set(cluster.workers)

    # The shard in flight on the lost node was sent again and finished on the survivor; the
    # published rows are exactly the clean run's.
    assert ray["shards_resent"] >= 1 and "sent again after losing their worker" in out
    assert ray["shard_nodes"]["test"][-1] == survivor and set(ray["shard_nodes"]["test"]) <= set(cluster.workers)
    assert _keys(lost) == _keys(pipeline)


def test_the_local_ray_a_run_starts_binds_loopback_and_leaves_the_environment_as_it_was(ray_session):
    import ray

    # ray_session started it with tasks.ray_pool.start_local_ray, as a run without ray_address does.
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    assert all(os.environ.get(k) is None for k in RAY_SETTINGS if k not in ORIGINAL_RAY_SETTINGS)


def test_worker_slots_interleave_nodes_by_their_cpus(monkeypatch):
    import ray

    from tasks.ray_pool import worker_slots

    nodes = [{"NodeID": "a", "Alive": True, "Resources": {"CPU": 2.0}},
             {"NodeID": "b", "Alive": True, "Resources": {"CPU": 1.0}},
             {"NodeID": "head", "Alive": True, "Resources": {}},
             {"NodeID": "c", "Alive": False, "Resources": {"CPU": 4.0}}]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    assert worker_slots() == ["a", "b", "a"]
