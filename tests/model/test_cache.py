import asyncio
import multiprocessing
import sqlite3
import threading

import litellm
import pytest

from sleeptime.model import ModelError, ModelGateway, ModelSpec, ResponseCache, request_key

MOCK = ModelSpec(model="mock/m", input_cost_per_million=1.0, output_cost_per_million=2.0, max_retries=0)
MSG = [{"role": "user", "content": "What is 2+2?"}]


def _ask(gw: ModelGateway, **kw):
    return asyncio.run(gw.complete("m", MSG, max_tokens=kw.pop("max_tokens", 10), **kw))


def test_identical_request_is_answered_from_disk(mock_llm, tmp_path):
    mock_llm.script.append("4")
    first = _ask(ModelGateway({"m": MOCK}, cache=ResponseCache(tmp_path / "c.sqlite")))
    # A new gateway (a new run, a new process) over the same file: no call reaches the provider.
    gw = ModelGateway({"m": MOCK}, cache=ResponseCache(tmp_path / "c.sqlite"))
    again = _ask(gw)
    assert len(mock_llm.calls) == 1
    assert again.cached and not first.cached
    assert again.text == first.text == "4" and again.usage == first.usage and again.cost_usd == first.cost_usd
    assert gw.counters.cache_hits == 1 and gw.counters.calls == 0 and gw.counters.cost_usd == 0


@pytest.mark.parametrize("change", [{"seed": 1}, {"max_tokens": 11}])
def test_any_parameter_change_is_a_miss(mock_llm, tmp_path, change):
    gw = ModelGateway({"m": MOCK}, cache=ResponseCache(tmp_path / "c.sqlite"))
    _ask(gw, seed=0)
    _ask(gw, **{"seed": 0, **change})
    assert len(mock_llm.calls) == 2 and gw.counters.cache_hits == 0


def test_key_covers_model_endpoint_messages_params_but_not_secrets():
    base = request_key("openai/x", "http://a/v1", MSG, {"max_tokens": 5})
    assert base == request_key("openai/x", "http://a/v1", [dict(m) for m in MSG], {"max_tokens": 5})
    assert base != request_key("openai/y", "http://a/v1", MSG, {"max_tokens": 5})
    assert base != request_key("openai/x", "http://b/v1", MSG, {"max_tokens": 5})
    assert base != request_key("openai/x", "http://a/v1", [{"role": "user", "content": "x"}], {"max_tokens": 5})
    spec = MOCK.model_copy(update={"api_key": "sk-secret"})
    assert "sk-secret" not in str(spec.params)  # the gateway adds the key after computing the cache key


def test_failures_are_not_cached(mock_llm, tmp_path):
    mock_llm.script.extend([litellm.BadRequestError("bad", model="m", llm_provider="mock"), "ok"])
    gw = ModelGateway({"m": MOCK}, cache=ResponseCache(tmp_path / "c.sqlite"))
    with pytest.raises(ModelError):
        _ask(gw)
    assert _ask(gw).text == "ok" and gw.counters.cache_hits == 0


def test_excluded_models_and_no_cache_always_call(mock_llm, tmp_path):
    gw = ModelGateway({"m": MOCK}, cache=ResponseCache(tmp_path / "c.sqlite"), uncached_models=["m"])
    _ask(gw), _ask(gw)
    plain = ModelGateway({"m": MOCK})
    _ask(plain), _ask(plain)
    assert len(mock_llm.calls) == 4


def _writer(path: str, start: int) -> None:
    from sleeptime.domain import Usage
    from sleeptime.model._cache import CachedReply

    cache = ResponseCache(path)
    for i in range(start, start + 200):
        cache.put(f"k{i}", CachedReply(text=str(i), usage=Usage(prompt_tokens=1, completion_tokens=1)))


def test_several_processes_share_one_file(tmp_path):
    path = str(tmp_path / "c.sqlite")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, n * 200)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = ResponseCache(path)
    assert len(cache) == 400 and cache.get("k399").text == "399"


def test_many_connections_can_open_a_fresh_file_at_once(tmp_path):
    # Ray workers open a new run's cache together. SQLite refuses some of them at once (no busy
    # wait, it could deadlock) while the file is switched to WAL: about one round in eight of
    # six openers failed before the cache retried.
    failures: list[str] = []

    def open_together(path, barrier):
        barrier.wait()
        try:
            ResponseCache(path).close()
        except sqlite3.OperationalError as exc:
            failures.append(str(exc))

    for round_ in range(60):
        path, barrier = tmp_path / f"c{round_}.sqlite", threading.Barrier(6)
        threads = [threading.Thread(target=open_together, args=(path, barrier)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert failures == []
