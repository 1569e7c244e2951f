"""A slow client cannot hold a request or a connection: a body that does not arrive in time gets
408 and the connection closes; an idle keep-alive connection is closed by the server."""

import asyncio
import json
import socket
import time
from urllib.parse import urlsplit

from sleeptime.config import RunConfig
from sleeptime.service import ServiceSettings
from sleeptime.service.limits import RequestBodyLimits

TIMEOUT_S = 0.5


async def call(middleware, messages, gaps_s=()):
    """Run one POST through ``middleware``: the client sends ``messages`` with ``gaps_s`` between
    them, then stalls. Returns (status, body, seconds taken, the body the app received or None)."""
    received = {}

    async def app(scope, receive, send):
        message = await receive()
        received["body"] = message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    pending = list(messages)
    gaps = list(gaps_s)

    async def receive():
        if not pending:
            await asyncio.Event().wait()  # a client that stopped sending: never returns
        if gaps:
            await asyncio.sleep(gaps.pop(0))
        return pending.pop(0)

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/answer", "headers": [(b"content-type", b"application/json")]}
    started = time.monotonic()
    await middleware(app)(scope, receive, send)
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, body, time.monotonic() - started, received.get("body")


def limits(app, timeout_s=TIMEOUT_S):
    return RequestBodyLimits(app, max_body_bytes=1024, timeout_s=timeout_s)


def test_a_body_that_stops_arriving_gets_408_at_the_deadline():
    status, body, took, seen = asyncio.run(call(limits, [{"type": "http.request", "body": b'{"context', "more_body": True}]))
    assert status == 408 and seen is None
    assert json.loads(body)["detail"]["limit_s"] == TIMEOUT_S
    assert TIMEOUT_S <= took < TIMEOUT_S + 1


def test_a_trickled_body_gets_408_even_though_each_piece_comes_in_time():
    pieces = [{"type": "http.request", "body": b"x", "more_body": True} for _ in range(8)]
    status, _, took, seen = asyncio.run(call(limits, pieces, gaps_s=[0.15] * 8))  # 1.2 s in all
    assert status == 408 and seen is None and took < TIMEOUT_S + 1


def test_a_body_in_time_reaches_the_app_whole():
    pieces = [{"type": "http.request", "body": b'{"a": ', "more_body": True}, {"type": "http.request", "body": b"1}"}]
    status, body, _, seen = asyncio.run(call(limits, pieces, gaps_s=[0.05, 0.05]))
    assert (status, body, seen) == (200, b"ok", b'{"a": 1}')


def bare_settings(tmp_path, **values):
    return ServiceSettings(config=RunConfig(output_dir=tmp_path / "out"), query_log=False, **values)


def connect(base: str) -> socket.socket:
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection; fails after ``limit_s``."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    while chunk := sock.recv(4096):  # socket.timeout (an error) if the server keeps it open
        data += chunk
    return data, time.monotonic() - started


def test_a_client_sending_its_body_too_slowly_gets_408_and_is_disconnected(tmp_path, helpers):
    with helpers.serving(bare_settings(tmp_path, body_timeout_s=TIMEOUT_S)) as (base, app):
        with connect(base) as sock:
            sock.sendall(b"POST /v1/answer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 200\r\n\r\n" + b'{"context_id": "world-00000", ')
            data, took = read_until_closed(sock, limit_s=TIMEOUT_S + 5)
        assert data.startswith(b"HTTP/1.1 408 "), data[:200]
        assert b"request body not received within 0.5 seconds" in data
        assert took < TIMEOUT_S + 3
        counted = app.state.parts.metrics.registry.get_sample_value("sleeptime_requests_total", {"path": "other", "status": "408"})
        assert counted == 1


def test_an_idle_keep_alive_connection_is_closed(tmp_path, helpers):
    with helpers.serving(bare_settings(tmp_path, keep_alive_timeout_s=1)) as (base, _):
        with connect(base) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            data, took = read_until_closed(sock, limit_s=6)
    assert data.startswith(b"HTTP/1.1 200 ") and b'{"status":"ok"}' in data
    assert 0.9 <= took < 4  # the response at once, then the close after the keep-alive timeout
