"""A local OpenAI-compatible fake provider with fault injection.

Used by the fault-injection tests and by the benchmarks that measure orchestration overhead at
a fixed model latency. It speaks just enough HTTP/1.1 (keep-alive, Content-Length and chunked
request bodies) to serve the OpenAI SDK, httpx and aiohttp, and it is written on bare asyncio
streams because some faults need the raw socket: a truncated body, a dropped connection.

Routes (each also answered without the ``/v1`` prefix):

* ``POST /v1/chat/completions``: non-streaming only (``"stream": true`` gets 400).
* ``GET /v1/models``, ``GET /health``.
* ``GET /stats``: ``requests``, ``outcomes`` (count per outcome kind), ``in_flight``,
  ``in_flight_max``, ``waiting``, ``connections``, ``bad_requests``.
* ``POST /stats/reset``: zero the counters, forget the per-body attempts, reseed.

Every chat request draws one outcome, with the probabilities in :class:`FaultConfig`:

============  ==============================================================================
``ok``        after ``latency_s``: a chat.completion whose content is ``ANSWER: <n>``, n a hash
              of the last user message mod 100 (see :func:`reply_for`)
``429``       at once: 429, ``Retry-After: <retry_after_s>``, an OpenAI-style error body
``500``       at once: 500, an OpenAI-style error body
``slow``      after ``slow_s`` (meant to exceed the client's timeout): the ``ok`` reply
``malformed`` after ``latency_s``: 200 whose body is the first half of the JSON, so not JSON
``truncated`` after ``latency_s``: 200 announcing the full Content-Length, half the bytes, close
``dropped``   at once: the connection is closed without any response
============  ==============================================================================

A request first waits for one of the ``max_concurrency`` slots (0: no cap), then draws its
outcome, whatever it is, so the cap behaves like a provider's capacity.

What litellm 1.106.2 raises for each outcome (``openai/...`` model, ``num_retries=0``, one HTTP
request per call; asserted by ``tests/testing/test_fake_openai.py``). All of them are in
``sleeptime.model._gateway.RETRYABLE_ERRORS``:

============  ==============================  ==================================================
``429``       ``litellm.RateLimitError``      Retry-After only in ``exc.litellm_response_headers``
``500``       ``litellm.InternalServerError``
``slow``      ``litellm.Timeout``             an ``openai.APITimeoutError``, no ``litellm`` parent
``malformed`` ``litellm.InternalServerError`` the JSON decode error, wrapped as a status 500
``truncated`` ``litellm.InternalServerError`` "Connection error.", wrapped as a status 500
``dropped``   ``litellm.InternalServerError`` "Connection error.", wrapped as a status 500
============  ==============================  ==================================================

litellm wraps any OpenAI SDK error without a status code (connection errors, decode errors) into
a status-500 error, hence no ``APIConnectionError`` for a broken connection. On a
``RateLimitError``, ``exc.response`` is a synthetic response with no headers and ``exc.headers``
is None; the provider's headers are in ``exc.litellm_response_headers``.

Two ways to run it: :class:`FakeOpenAIServer` (a background thread with its own event loop,
for tests) and a subprocess, ``python -m sleeptime.testing.fake_openai --port 0
--latency-ms 100 --max-concurrency 16 --rate-429 0.1``, which :func:`spawn_server` wraps (for
benchmarks, so the server does not share the client's interpreter).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The order is the order of the cumulative draw; changing it changes every seeded sequence.
FAULT_KINDS: tuple[str, ...] = ("429", "500", "slow", "malformed", "truncated", "dropped")
OUTCOMES: tuple[str, ...] = ("ok", *FAULT_KINDS)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}
_MODELS_BODY = json.dumps(
    {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "fake-openai"}]}
).encode()


class FaultConfig(BaseModel):
    """How the fake server behaves. Rates are probabilities per chat request; their sum is <= 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_s: float = Field(default=0.1, ge=0, description="seconds before every 200 response")
    max_concurrency: int = Field(default=0, ge=0, description="requests served at once; the rest queue (0: no cap)")
    rate_429: float = Field(default=0.0, ge=0, le=1, description="share answered 429 with Retry-After")
    rate_500: float = Field(default=0.0, ge=0, le=1, description="share answered 500")
    rate_slow: float = Field(default=0.0, ge=0, le=1, description="share answered only after slow_s")
    rate_malformed: float = Field(default=0.0, ge=0, le=1, description="share answered 200 with a non-JSON body")
    rate_truncated: float = Field(default=0.0, ge=0, le=1, description="share whose 200 body is cut short")
    rate_dropped: float = Field(default=0.0, ge=0, le=1, description="share whose connection is closed unanswered")
    slow_s: float = Field(default=30.0, ge=0, description="delay of a slow response")
    retry_after_s: float = Field(default=1.0, ge=0, description="the Retry-After value of a 429")
    seed: int = Field(default=0, description="seed of the fault draws")
    deterministic: bool = Field(
        default=False,
        description="draw each fault from (seed, request body, attempt number for that body), not from arrival order",
    )

    @model_validator(mode="after")
    def _rates_sum_to_at_most_one(self) -> FaultConfig:
        total = sum(self.rate(kind) for kind in FAULT_KINDS)
        if total > 1 + 1e-9:
            rates = ", ".join(f"rate_{kind}={self.rate(kind)}" for kind in FAULT_KINDS if self.rate(kind))
            raise ValueError(f"fault rates must sum to at most 1, got {total:g} ({rates})")
        return self

    def rate(self, kind: str) -> float:
        return float(getattr(self, f"rate_{kind}"))

    def outcome_for(self, u: float) -> str:
        """The outcome for a uniform draw ``u`` in [0, 1)."""
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += self.rate(kind)
            if u < edge:
                return kind
        return "ok"


class Reply(NamedTuple):
    """What a successful response says, computed from the request alone."""

    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def reply_for(messages: list[dict[str, Any]], max_tokens: int | None = None) -> Reply:
    """The server's answer rule, public so tests and benchmarks can check replies.

    Content is ``ANSWER: <crc32(last user message) % 100>``, cut to ``max_tokens`` words; tokens
    are whitespace-separated words (prompt: all messages' words, at least 1).
    """
    texts = [_text(m.get("content")) for m in messages if isinstance(m, dict)]
    prompt_tokens = max(1, sum(len(t.split()) for t in texts))
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last_user = _text(users[-1].get("content")) if users else ""
    words = ["ANSWER:", str(zlib.crc32(last_user.encode()) % 100)]
    finish_reason = "stop"
    if max_tokens is not None and max_tokens < len(words):
        words, finish_reason = words[: max(max_tokens, 0)], "length"
    return Reply(" ".join(words), finish_reason, prompt_tokens, len(words))


class _BadRequest(Exception):
    """The bytes on the wire are not an HTTP request we can answer; the connection is closed."""


class _Request(NamedTuple):
    method: str
    path: str
    keep_alive: bool
    body: bytes


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """One request off a keep-alive connection, or None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("connection closed inside the request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest("request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise _BadRequest(f"bad request line {lines[0]!r}") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length") or 0))
    return _Request(method, target.split("?", 1)[0], keep_alive, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            # Trailers (rare) end with an empty line like the head does.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _head(status: int, length: int, keep_alive: bool, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode()


def _response(status: int, body: bytes, keep_alive: bool, extra: str = "") -> bytes:
    return _head(status, len(body), keep_alive, extra) + body


def _error(message: str, type_: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


class FakeOpenAI:
    """The server's state and request handling, independent of how it is run."""

    def __init__(self, config: FaultConfig | None = None):
        self.config = config or FaultConfig()  # fixed for the server's life: the semaphore is sized from it
        self._semaphore = asyncio.Semaphore(self.config.max_concurrency) if self.config.max_concurrency else None
        self._tasks: set[asyncio.Task[None]] = set()
        self._completion_ids = 0
        self.in_flight = 0
        self.waiting = 0
        self.reset()

    def reset(self) -> None:
        """Back to the freshly started state, so a rerun draws the same faults."""
        self.requests = 0
        self.bad_requests = 0
        self.connections = 0
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.in_flight_max = self.in_flight  # requests still being served keep counting
        self._attempts: dict[bytes, int] = {}
        self._rng = random.Random(self.config.seed)

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "in_flight": self.in_flight,
            "in_flight_max": self.in_flight_max,
            "waiting": self.waiting,
            "connections": self.connections,
            "bad_requests": self.bad_requests,
        }

    def _draw(self, body: bytes) -> str:
        if not self.config.deterministic:
            return self.config.outcome_for(self._rng.random())
        # A pure function of (seed, body, attempt): concurrent arrival order does not matter, and
        # a retry of the same body is a fresh draw, so retries can succeed.
        # The counter keeps one small entry per distinct body: fine for test and benchmark runs.
        digest = hashlib.blake2b(body, digest_size=16).digest()
        attempt = self._attempts.get(digest, 0)
        self._attempts[digest] = attempt + 1
        draw = hashlib.blake2b(f"{self.config.seed}:{attempt}:".encode() + digest, digest_size=8).digest()
        return self.config.outcome_for(int.from_bytes(draw, "little") / 2**64)

    async def serve(self, host: str, port: int, on_ready: Callable[[int], None], stop: asyncio.Event) -> None:
        """Listen until ``stop`` is set, then close every connection (slow handlers included)."""
        # A deep backlog: a benchmark opens hundreds of connections at once, and an overflowing
        # SYN queue shows up as one-second stalls that would be blamed on the client.
        server = await asyncio.start_server(self._connection, host, port, backlog=2048)
        on_ready(server.sockets[0].getsockname()[1])
        try:
            await stop.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self.connections += 1
        try:
            while (request := await _read_request(reader)) is not None:
                if not await self._dispatch(request, writer):
                    break
        except (_BadRequest, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.bad_requests += 1
        except ConnectionError:
            pass  # the client went away (e.g. it timed out on a slow response)
        except asyncio.CancelledError:
            # Only serve() cancels, at shutdown. Ending normally rather than re-raising keeps
            # Python 3.11's stream callback from logging the cancellation as an error.
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _dispatch(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must be closed afterwards."""
        path = request.path[3:] if request.path.startswith("/v1/") else request.path
        route = (request.method, path)
        if route == ("POST", "/chat/completions"):
            return await self._chat(request, writer)
        if route == ("GET", "/models"):
            status, body = 200, _MODELS_BODY
        elif route == ("GET", "/health"):
            status, body = 200, b'{"status":"ok"}'
        elif route == ("GET", "/stats"):
            status, body = 200, json.dumps(self.stats()).encode()
        elif route == ("POST", "/stats/reset"):
            self.reset()
            status, body = 200, b'{"reset":true}'
        else:
            status, body = 404, _error(f"no route {request.method} {request.path}", "invalid_request_error")
        writer.write(_response(status, body, request.keep_alive))
        await writer.drain()
        return request.keep_alive

    async def _chat(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        keep_alive = request.keep_alive
        try:
            payload = json.loads(request.body)
            messages = payload["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            self.bad_requests += 1
            writer.write(_response(400, _error(f"bad request body: {exc}", "invalid_request_error"), keep_alive))
            await writer.drain()
            return keep_alive
        if payload.get("stream"):
            self.bad_requests += 1
            body = _error("the fake server does not stream", "invalid_request_error")
            writer.write(_response(400, body, keep_alive))
            await writer.drain()
            return keep_alive

        self.requests += 1
        self.waiting += 1
        if self._semaphore is not None:
            await self._semaphore.acquire()
        self.waiting -= 1
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            # Drawn after the queue: with a cap, the arrival order at the slot decides the draw.
            outcome = self._draw(request.body)
            self.outcomes[outcome] += 1
            return await self._answer(outcome, payload, keep_alive, writer)
        finally:
            self.in_flight -= 1
            if self._semaphore is not None:
                self._semaphore.release()

    async def _answer(
        self, outcome: str, payload: dict[str, Any], keep_alive: bool, writer: asyncio.StreamWriter
    ) -> bool:
        cfg = self.config
        if outcome == "dropped":
            writer.transport.abort()
            return False
        if outcome == "429":
            body = _error("Rate limit reached (injected by the fake server)", "requests", "rate_limit_exceeded")
            writer.write(_response(429, body, keep_alive, f"Retry-After: {cfg.retry_after_s:g}\r\n"))
            await writer.drain()
            return keep_alive
        if outcome == "500":
            body = _error("The server had an error (injected by the fake server)", "server_error")
            writer.write(_response(500, body, keep_alive))
            await writer.drain()
            return keep_alive

        await asyncio.sleep(cfg.slow_s if outcome == "slow" else cfg.latency_s)
        body = self._completion(payload)
        if outcome == "truncated":
            writer.write(_head(200, len(body), False) + body[: len(body) // 2])
            await writer.drain()
            return False
        if outcome == "malformed":
            body = body[: len(body) // 2]  # a JSON object that never closes
        writer.write(_response(200, body, keep_alive))
        await writer.drain()
        return keep_alive

    def _completion(self, payload: dict[str, Any]) -> bytes:
        max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
        reply = reply_for(payload["messages"], max_tokens if isinstance(max_tokens, int) else None)
        self._completion_ids += 1
        return json.dumps(
            {
                "id": f"chatcmpl-fake-{self._completion_ids}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": str(payload.get("model", "fake")),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.content},
                        "finish_reason": reply.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens,
                    "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                },
            },
            separators=(",", ":"),
        ).encode()


class FakeOpenAIServer:
    """The fake server on a background thread with its own event loop; a context manager.

    >>> with FakeOpenAIServer(FaultConfig(latency_s=0, rate_429=0.5)) as server:
    ...     litellm.completion(model="openai/fake", api_base=server.base_url, api_key="x", ...)
    """

    def __init__(self, config: FaultConfig | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self.config = config or FaultConfig()
        self.host = host
        self.port = port
        self._app: FakeOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 10.0) -> FakeOpenAIServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def on_ready(port: int) -> None:
            self.port = port
            ready.set()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._app = FakeOpenAI(self.config)  # built on this loop, where its semaphore lives
            await self._app.serve(self.host, self.port, on_ready, self._stop)

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # reported to start(), which re-raises it
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise TimeoutError(f"fake OpenAI server did not start in {timeout_s} s")
        if failure:
            raise RuntimeError("fake OpenAI server failed to start") from failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None

    def _call(self, fn: Callable[[], Any]) -> Any:
        # Read and reset on the server's own loop, so a snapshot is never half-updated.
        assert self._loop is not None, "server not started"

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def stats(self) -> dict[str, Any]:
        assert self._app is not None, "server not started"
        return self._call(self._app.stats)  # type: ignore[no-any-return]

    def reset(self) -> None:
        assert self._app is not None, "server not started"
        self._call(self._app.reset)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# --- the subprocess ---------------------------------------------------------------------------

READY_PREFIX = "listening on "


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_to_args(config: FaultConfig) -> list[str]:
    """Command-line flags that rebuild ``config`` in the subprocess (every field, explicitly)."""
    args: list[str] = []
    for name in FaultConfig.model_fields:
        value = getattr(config, name)
        if isinstance(value, bool):
            args.append(_flag(name) if value else "--no-" + name.replace("_", "-"))
        else:
            args += [_flag(name), str(value)]  # str(float) round-trips exactly
    return args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sleeptime.testing.fake_openai", description="Local OpenAI-compatible fake with fault injection."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (0: a free one, printed when ready)")
    parser.add_argument("--latency-ms", type=float, help="latency_s in milliseconds")
    # One flag per FaultConfig field, generated so a new field cannot be forgotten here; defaults
    # stay None so FaultConfig's own defaults and validation apply.
    for name, field in FaultConfig.model_fields.items():
        kind: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction} if field.annotation is bool else {"type": field.annotation}
        )
        parser.add_argument(_flag(name), default=None, help=field.description, **kind)
    return parser


def config_from_args(argv: list[str] | None = None) -> tuple[FaultConfig, str, int]:
    parser = _parser()
    args = parser.parse_args(argv)
    values = {name: getattr(args, name) for name in FaultConfig.model_fields if getattr(args, name) is not None}
    if args.latency_ms is not None:
        if "latency_s" in values:
            parser.error("give --latency-ms or --latency-s, not both")
        values["latency_s"] = args.latency_ms / 1000
    try:
        config = FaultConfig(**values)
    except ValidationError as exc:
        parser.error(str(exc))
    return config, args.host, args.port


async def _serve_until_signalled(config: FaultConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await FakeOpenAI(config).serve(
        host, port, lambda bound: print(f"{READY_PREFIX}http://{host}:{bound}/v1", flush=True), stop
    )


def main(argv: list[str] | None = None) -> None:
    config, host, port = config_from_args(argv)
    asyncio.run(_serve_until_signalled(config, host, port))


@contextlib.contextmanager
def spawn_server(
    config: FaultConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 30.0,
    python: str = sys.executable,
) -> Iterator[str]:
    """Run the fake server in a subprocess; yields its base URL; terminates it on exit."""
    cmd = [python, "-m", "sleeptime.testing.fake_openai", "--host", host, "--port", str(port)]
    cmd += config_to_args(config or FaultConfig())
    # stderr is inherited, so a crash at start shows its traceback.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        yield _wait_ready(proc, startup_timeout_s)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def _wait_ready(proc: subprocess.Popen[str], timeout_s: float) -> str:
    # readline() blocks with no timeout of its own; a daemon thread gives it one.
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout_s)
    except queue.Empty:
        raise TimeoutError(f"fake OpenAI server printed nothing in {timeout_s} s") from None
    if not line.startswith(READY_PREFIX):
        raise RuntimeError(f"fake OpenAI server did not start (exit code {proc.poll()}): {line!r}")
    return line[len(READY_PREFIX) :].strip()


if __name__ == "__main__":
    main()
