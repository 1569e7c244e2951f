"""The fake OpenAI server: routes, every fault kind, determinism, the concurrency cap, and what
litellm raises for each fault (the contract the model gateway's retry policy depends on)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx
import litellm
import pytest
from pydantic import ValidationError

from sleeptime.testing.fake_openai import (
    FAULT_KINDS,
    FakeOpenAIServer,
    FaultConfig,
    config_from_args,
    config_to_args,
    reply_for,
    spawn_server,
)

MESSAGES = [
    {"role": "system", "content": "You answer arithmetic."},
    {"role": "user", "content": "What is two plus two?"},
]


def _chat(base_url: str, timeout: float = 5.0, **extra: Any) -> httpx.Response:
    body = {"model": "fake-model", "messages": MESSAGES, **extra}
    return httpx.post(f"{base_url}/chat/completions", json=body, timeout=timeout)


def _root(server: FakeOpenAIServer) -> str:
    return f"http://127.0.0.1:{server.port}"


# --- configuration ----------------------------------------------------------------------------


def test_rates_must_sum_to_at_most_one():
    with pytest.raises(ValidationError, match="fault rates must sum to at most 1"):
        FaultConfig(rate_429=0.6, rate_500=0.5)
    FaultConfig(rate_429=0.5, rate_500=0.5)  # exactly 1 is fine


def test_every_field_round_trips_through_the_command_line():
    config = FaultConfig(
        latency_s=0.125, max_concurrency=3, rate_429=0.1, rate_dropped=0.2, slow_s=2.5, seed=-7, deterministic=True,
        batch_delay_s=0.25, batch_item_failure_rate=0.125, batch_expire_fraction=0.5, prefix_cache_ttl_s=7.5,
    )
    parsed, host, port = config_from_args(["--port", "8123", *config_to_args(config)])
    assert parsed == config and (host, port) == ("127.0.0.1", 8123)
    assert config_from_args(["--latency-ms", "100"])[0].latency_s == pytest.approx(0.1)


# --- routes and the success path --------------------------------------------------------------


def test_routes_and_success_reply():
    with FakeOpenAIServer(FaultConfig(latency_s=0)) as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert httpx.get(f"{_root(server)}/health").json() == {"status": "ok"}
        assert httpx.get(f"{server.base_url}/models").json()["data"][0]["id"] == "fake"

        reply = _chat(server.base_url, max_tokens=100).json()
        expected = reply_for(MESSAGES)
        assert reply["object"] == "chat.completion" and reply["model"] == "fake-model"
        assert reply["choices"][0]["message"] == {"role": "assistant", "content": expected.content}
        assert re.fullmatch(r"ANSWER: \d{1,2}", expected.content)
        assert reply["choices"][0]["finish_reason"] == "stop"
        assert reply["usage"] == {
            "prompt_tokens": 8,
            "completion_tokens": 2,
            "total_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

        cut = _chat(server.base_url, max_tokens=1).json()
        assert cut["choices"][0]["message"]["content"] == "ANSWER:"
        assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 1

        assert _chat(server.base_url, stream=True).status_code == 400
        assert httpx.post(f"{server.base_url}/chat/completions", content=b"{not json").status_code == 400
        assert httpx.get(f"{_root(server)}/nowhere").status_code == 404

        stats = httpx.get(f"{_root(server)}/stats").json()
        assert stats["requests"] == 2 and stats["outcomes"]["ok"] == 2 and stats["bad_requests"] == 2
        assert server.stats() == stats
        assert httpx.post(f"{_root(server)}/stats/reset").json() == {"reset": True}
        assert server.stats()["requests"] == 0


def test_keep_alive_serves_many_requests_on_one_connection():
    with FakeOpenAIServer(FaultConfig(latency_s=0)) as server, httpx.Client(base_url=server.base_url) as client:
        for _ in range(5):
            assert client.post("/chat/completions", json={"model": "m", "messages": MESSAGES}).status_code == 200
        assert server.stats()["connections"] == 1
        # A chunked request body (what a streaming upload sends) is read too.
        body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
        chunked = client.post("/chat/completions", content=iter([body[:10], body[10:]]))
        assert chunked.request.headers["transfer-encoding"] == "chunked" and chunked.status_code == 200


# --- each fault kind, as httpx sees it --------------------------------------------------------


def _only(kind: str, **extra: Any) -> FaultConfig:
    return FaultConfig(latency_s=0, **{f"rate_{kind}": 1.0}, **extra)


def test_429_has_retry_after_and_an_openai_error_body():
    with FakeOpenAIServer(_only("429", retry_after_s=2)) as server:
        response = _chat(server.base_url)
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_500():
    with FakeOpenAIServer(_only("500")) as server:
        response = _chat(server.base_url)
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"


def test_malformed_body_is_not_json():
    with FakeOpenAIServer(_only("malformed")) as server:
        response = _chat(server.base_url)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_truncated_body_raises():
    with FakeOpenAIServer(_only("truncated")) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
            _chat(server.base_url)


def test_dropped_connection_raises():
    with FakeOpenAIServer(_only("dropped")) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            _chat(server.base_url)


def test_slow_response_exceeds_a_short_timeout():
    with FakeOpenAIServer(_only("slow", slow_s=5)) as server:
        started = time.perf_counter()
        with pytest.raises(httpx.ReadTimeout):
            _chat(server.base_url, timeout=0.3)
        assert time.perf_counter() - started < 2
    # Leaving the block cancelled the handler still sleeping on the slow response.


# --- litellm ----------------------------------------------------------------------------------


async def _acompletion(base_url: str, **extra: Any) -> Any:
    return await litellm.acompletion(
        model="openai/fake", api_base=base_url, api_key="x", messages=MESSAGES, num_retries=0, **extra
    )


def test_litellm_success_matches_the_server_rule():
    with FakeOpenAIServer(FaultConfig(latency_s=0)) as server:
        response = asyncio.run(_acompletion(server.base_url, max_tokens=1))
        expected = reply_for(MESSAGES, max_tokens=1)
        assert response.choices[0].message.content == expected.content == "ANSWER:"
        assert response.usage.prompt_tokens == expected.prompt_tokens == 8
        assert response.usage.completion_tokens == expected.completion_tokens == 1

        response = asyncio.run(_acompletion(server.base_url, max_tokens=50))
        assert response.choices[0].message.content == reply_for(MESSAGES).content
        assert response.usage.total_tokens == 10


# What litellm 1.106.2 raises for each fault. Every connection-level failure (truncated body,
# dropped connection) and the unparseable body come back as InternalServerError: litellm wraps
# the OpenAI SDK's error into an OpenAIError with status 500 when the SDK error has no status.
LITELLM_ERRORS: dict[str, type[Exception]] = {
    "429": litellm.RateLimitError,
    "500": litellm.InternalServerError,
    "slow": litellm.Timeout,
    "malformed": litellm.InternalServerError,
    "truncated": litellm.InternalServerError,
    "dropped": litellm.InternalServerError,
}


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_litellm_exception_for_each_fault(kind: str):
    with FakeOpenAIServer(_only(kind, slow_s=5, retry_after_s=2)) as server:

        async def call() -> BaseException:
            with pytest.raises(Exception) as caught:
                await _acompletion(server.base_url, max_tokens=5, timeout=1.0)
            return caught.value

        exc = asyncio.run(call())
        assert type(exc) is LITELLM_ERRORS[kind], f"{kind}: {type(exc).__name__}: {exc}"
        # num_retries=0 must mean one request: no retries hidden in the OpenAI SDK.
        assert server.stats()["requests"] == 1
    if kind == "429":
        # litellm keeps the provider's headers here, not on exc.response (a synthetic response
        # with no headers) nor exc.headers (None).
        assert exc.litellm_response_headers["retry-after"] == "2"  # type: ignore[attr-defined]
        assert not exc.response.headers.get("retry-after")  # type: ignore[attr-defined]


# --- determinism ------------------------------------------------------------------------------


def _ask(content: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}]}


def _outcome(base_url: str, client: httpx.Client, content: str) -> str:
    """The fault kind as seen from outside (no slow faults here)."""
    try:
        response = client.post(f"{base_url}/chat/completions", json=_ask(content))
    except httpx.RemoteProtocolError as exc:
        return "dropped" if "without sending a response" in str(exc) else "truncated"
    if response.status_code != 200:
        return str(response.status_code)
    try:
        response.json()
    except json.JSONDecodeError:
        return "malformed"
    return "ok"


def _sequence(config: FaultConfig, contents: list[str]) -> list[str]:
    with FakeOpenAIServer(config) as server, httpx.Client(timeout=5) as client:
        outcomes = [_outcome(server.base_url, client, c) for c in contents]
        assert server.stats()["outcomes"] == {k: outcomes.count(k) for k in ("ok", *FAULT_KINDS)}
        return outcomes


def test_deterministic_mode_replays_across_instances():
    config = FaultConfig(
        latency_s=0, rate_429=0.15, rate_500=0.15, rate_malformed=0.1, rate_truncated=0.1, rate_dropped=0.1, seed=42,
        deterministic=True,
    )
    # Repeated bodies: each repeat is a new attempt, so it gets its own draw.
    contents = [f"question {i % 20}" for i in range(60)]
    first = _sequence(config, contents)
    assert first == _sequence(config, contents)
    assert set(first) == {"ok", "429", "500", "malformed", "truncated", "dropped"}
    assert first != _sequence(config.model_copy(update={"seed": 43}), contents)


def test_deterministic_failure_fraction_matches_the_rate():
    config = FaultConfig(latency_s=0, rate_429=0.1, rate_500=0.2, seed=7, deterministic=True)
    with FakeOpenAIServer(config) as server, httpx.Client(base_url=server.base_url) as client:
        statuses = [
            client.post("/chat/completions", json=_ask(f"question {i}")).status_code for i in range(1000)
        ]
    failures = sum(s != 200 for s in statuses) / len(statuses)
    assert 0.25 <= failures <= 0.35


# --- the concurrency cap ----------------------------------------------------------------------


def test_max_concurrency_queues_the_rest():
    with FakeOpenAIServer(FaultConfig(latency_s=0.2, max_concurrency=2)) as server:

        async def six() -> float:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
                started = time.perf_counter()
                responses = await asyncio.gather(
                    *(client.post("/chat/completions", json={"model": "m", "messages": MESSAGES}) for _ in range(6))
                )
                assert all(r.status_code == 200 for r in responses)
                return time.perf_counter() - started

        elapsed = asyncio.run(six())
        stats = server.stats()
    assert elapsed >= 0.58  # three waves of two at 0.2 s
    assert stats["in_flight_max"] == 2 and stats["in_flight"] == 0 and stats["requests"] == 6


# --- the subprocess ---------------------------------------------------------------------------


@pytest.mark.slow
def test_subprocess_starts_serves_and_stops():
    with spawn_server(FaultConfig(latency_s=0.01)) as base_url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url)
        response = _chat(base_url)
        assert response.json()["choices"][0]["message"]["content"] == reply_for(MESSAGES).content
        assert httpx.get(base_url.removesuffix("/v1") + "/stats").json()["requests"] == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url.removesuffix("/v1") + "/health", timeout=2)
