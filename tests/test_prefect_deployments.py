"""prefect.yaml deploys against a real Prefect server, and a process worker runs a deployment."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
PREFECT = str(BIN / "prefect") if (BIN / "prefect").exists() else "prefect"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None):
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"}, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


@pytest.fixture
def prefect_server(tmp_path):
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            _api(url, "/health")
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("prefect server did not answer /api/health within 120 s")
    yield url, {**env, "PREFECT_API_URL": url, "PWD": str(ROOT)}
    os.killpg(server.pid, 2)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, 9)


@pytest.mark.slow
def test_prefect_yaml_deploys_and_a_worker_runs_a_deployment(prefect_server, tmp_path):
    url, env = prefect_server
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"nightly-refresh", "evaluate-on-demand", "full-run", "report", "weekly-full-validation"} <= names

    run = lambda *args: subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    created = run("work-pool", "create", "sleeptime-local", "--type", "process")
    assert created.returncode == 0, created.stderr
    limited = run("work-pool", "set-concurrency-limit", "sleeptime-local", "1")  # as the README says
    assert limited.returncode == 0, limited.stdout + limited.stderr
    deployed = run("--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    deployments = {d["name"]: d for d in _api(url, "/deployments/filter", {})}
    assert set(deployments) >= names
    refresh = deployments["nightly-refresh"]
    assert refresh["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
    assert refresh["entrypoint"] == "flows/pipeline.py:refresh"
    # Writers queue instead of overlapping.
    for name in ("nightly-refresh", "evaluate-on-demand", "full-run"):
        limit = deployments[name].get("global_concurrency_limit") or {}
        assert deployments[name].get("concurrency_limit") == 1 or limit.get("limit") == 1, deployments[name]
    assert deployments["weekly-full-validation"]["entrypoint"] == "flows/pipeline.py:validate_full"
    assert refresh["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(ROOT)

    # Run the refresh deployment on a tiny corpus through a real process worker.
    from sleeptime.dataset import write_demo_corpus

    corpus = write_demo_corpus(tmp_path / "corpus.jsonl", contexts=2, seed=4)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"corpus": str(corpus), "output_dir": str(tmp_path / "out"), "workers": 1,
                                      "sleep_budgets": [{"name": "none", "max_tokens": 0}, {"name": "small", "max_tokens": 48}]}))
    flow_run = _api(url, f"/deployments/{refresh['id']}/create_flow_run", {"parameters": {"config_path": str(config)}})
    worker = run("worker", "start", "--pool", "sleeptime-local", "--run-once")
    assert worker.returncode == 0, worker.stdout + worker.stderr
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = _api(url, f"/flow_runs/{flow_run['id']}")["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(1)
    assert state["type"] == "COMPLETED", state
    assert (tmp_path / "out" / "warehouse" / "sleeptime.duckdb").exists()
