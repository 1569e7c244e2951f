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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_in_a_uvicorn_process(served, tmp_path):
    port = free_port()
    spool = tmp_path / "spool"
    cmd = [sys.executable, "-m", "sleeptime.service", "serve", "--config", str(served.config_path),
           "--keys-file", str(served.keys.path), "--port", str(port), "--reload-interval", "0.5",
           "--query-log-dir", str(spool), "--log-flush-s", "600", "--no-access-log"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
            assert "sleeptime_choices_total" in client.get("/metrics").text
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
    assert served.secrets["globex"] not in output and "Hugo and Sara" not in output
