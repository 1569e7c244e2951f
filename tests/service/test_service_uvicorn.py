"""The service as a real uvicorn process on a loopback port."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

METRICS_TOKEN = "scrape-token-4f1c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_in_a_uvicorn_process(served, tmp_path):
    port = free_port()
    spool = tmp_path / "spool"
    # Settings from an env file and from the environment, which wins where both say something.
    env_file = tmp_path / "service.env"
    env_file.write_text("SLEEPTIME_SERVICE_RELOAD_INTERVAL_S=0.5\nSLEEPTIME_SERVICE_LOG_FLUSH_S=600\n"
                        "SLEEPTIME_SERVICE_ACCESS_LOG=true\n", encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SLEEPTIME_SERVICE_QUERY_LOG_DIR": str(spool),
           "SLEEPTIME_SERVICE_ACCESS_LOG": "false", "SLEEPTIME_SERVICE_METRICS_TOKEN": METRICS_TOKEN}
    cmd = [sys.executable, "-m", "sleeptime.service", "serve", "--config", str(served.config_path),
           "--keys-file", str(served.keys.path), "--port", str(port), "--env-file", str(env_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        ready = None
        with httpx.Client(base_url=base, timeout=10) as client:
            while time.monotonic() < deadline:
                assert proc.poll() is None, proc.stdout.read()
                try:
                    if client.get("/healthz").status_code == 200 and (r := client.get("/readyz")).status_code == 200:
                        ready = r.json()
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            assert ready and ready["contexts"] == 6, ready
            context_id = served.ids("globex")[0]
            ask = {"context_id": context_id, "question": "How many coins do Hugo and Sara have together?"}
            answered = client.post("/v1/answer", json=ask, headers=served.headers("globex"))
            assert answered.status_code == 200, answered.text
            body = answered.json()
            assert body["choice"]["scope"] == "context" and body["choice"]["kind"] == "sum"
            assert body["snapshot"] == ready["snapshot"] and body["usage"]["completion_tokens"] > 0
            assert client.post("/v1/answer", json=ask).status_code == 401
            assert client.post("/v1/answer", json=ask, headers=served.headers("acme")).status_code == 404
            assert client.get("/metrics").status_code == 401
            scraped = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert scraped.status_code == 200 and "sleeptime_choices_total" in scraped.text
        proc.send_signal(signal.SIGTERM)  # graceful shutdown flushes the query log
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal after a clean shutdown
    assert "Application shutdown complete" in output
    assert f"Uvicorn running on http://127.0.0.1:{port}" in output
    files = list(spool.glob("query_log/*.parquet"))
    rows = pq.read_table(files).to_pylist()
    assert [r["request_id"] for r in rows] == [body["request_id"]]
    assert served.secrets["globex"] not in output and "Hugo and Sara" not in output and METRICS_TOKEN not in output
    assert "POST /v1/answer" not in output  # the environment's access_log=false over the env file's true
