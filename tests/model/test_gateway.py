import asyncio

import httpx
import litellm
import pytest

from sleeptime.domain import CallCounters, Usage
from sleeptime.model import REFERENCE_MODEL, ModelError, ModelGateway, ModelSpec, price

MOCK = ModelSpec(model="mock/m", input_cost_per_million=1.0, output_cost_per_million=2.0, backoff_base_s=0.001, max_retries=2)


def _rate_limit(retry_after: str | None = None) -> litellm.RateLimitError:
    headers = {"retry-after": retry_after} if retry_after else {}
    response = httpx.Response(429, headers=headers, request=httpx.Request("POST", "http://x"))
    return litellm.RateLimitError("slow down", llm_provider="mock", model="m", response=response)


def test_reply_usage_cost_latency_come_back(mock_llm):
    mock_llm.script.append("The answer is 4.")
    gw = ModelGateway({"m": MOCK})
    out = asyncio.run(gw.complete("m", [{"role": "user", "content": "2+2?"}], max_tokens=10, seed=3))
    assert out.text == "The answer is 4."
    assert out.usage.completion_tokens > 0 and out.usage.prompt_tokens > 0
    assert out.cost_usd == pytest.approx((out.usage.prompt_tokens * 1 + out.usage.completion_tokens * 2) / 1e6)
    assert out.latency_s >= 0
    assert mock_llm.calls[0]["params"]["max_tokens"] == 10
    assert mock_llm.calls[0]["params"]["seed"] == 3
    assert gw.counters == CallCounters(calls=1, prompt_tokens=out.usage.prompt_tokens,
                                       completion_tokens=out.usage.completion_tokens, cost_usd=out.cost_usd)


def test_retryable_errors_are_retried_then_succeed(mock_llm):
    mock_llm.script.extend([_rate_limit(), litellm.InternalServerError("boom", llm_provider="mock", model="m"), "ok"])
    gw = ModelGateway({"m": MOCK})
    out = asyncio.run(gw.complete("m", [{"role": "user", "content": "hi"}], max_tokens=5))
    assert out.text == "ok" and out.attempts == 3
    assert gw.counters.retries == 2


def test_retries_are_bounded(mock_llm):
    mock_llm.script.extend([_rate_limit() for _ in range(5)])
    gw = ModelGateway({"m": MOCK})
    with pytest.raises(ModelError) as err:
        asyncio.run(gw.complete("m", [{"role": "user", "content": "hi"}], max_tokens=5))
    assert err.value.attempts == 3 and "RateLimitError" in err.value.reason
    assert str(err.value).endswith("(after 3 attempts)")
    assert gw.counters.failed_calls == 1 and gw.counters.retryable_errors == 3 and gw.counters.retries == 2
    assert len(mock_llm.calls) == 3  # max_retries=2: the two scripted errors left were never asked for


def test_non_retryable_error_fails_at_once(mock_llm):
    mock_llm.script.extend([litellm.BadRequestError("bad", model="m", llm_provider="mock"), "never"])
    gw = ModelGateway({"m": MOCK})
    with pytest.raises(ModelError) as err:
        asyncio.run(gw.complete("m", [{"role": "user", "content": "hi"}], max_tokens=5))
    assert err.value.attempts == 1 and str(err.value).endswith("(after 1 attempt)")
    assert gw.counters.retries == 0 and gw.counters.retryable_errors == 0 and gw.counters.failed_calls == 1


def test_backoff_grows_from_base_and_retry_after_is_capped(mock_llm, caplog):
    """Retry-After wins over the backoff but never beyond backoff_max_s; without it retry n waits at
    most backoff_base_s * 2^(n-1)."""
    spec = MOCK.model_copy(update={"max_retries": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.2})
    boom = litellm.InternalServerError("boom", llm_provider="mock", model="m")
    mock_llm.script.extend([_rate_limit("30"), boom, boom, "ok"])
    gw = ModelGateway({"m": spec})
    with caplog.at_level("WARNING", logger="sleeptime.model._gateway"):
        out = asyncio.run(gw.complete("m", [{"role": "user", "content": "hi"}], max_tokens=5))
    assert out.text == "ok" and out.attempts == 4 and gw.counters.retries == 3
    delays = [r.args[-1] for r in caplog.records if r.name == "sleeptime.model._gateway"]
    assert delays[0] == 0.2
    assert 0 <= delays[1] <= 0.02 and 0 <= delays[2] <= 0.04


def test_retry_after_header_is_honoured(mock_llm):
    mock_llm.script.extend([_rate_limit("0.3"), "ok"])
    gw = ModelGateway({"m": MOCK})
    loop_time = asyncio.new_event_loop()
    try:
        start = loop_time.time()
        loop_time.run_until_complete(gw.complete("m", [{"role": "user", "content": "hi"}], max_tokens=5))
        assert loop_time.time() - start >= 0.3
    finally:
        loop_time.close()


def test_concurrency_is_bounded_per_model(mock_llm):
    in_flight = {"now": 0, "max": 0}
    original = mock_llm.acompletion

    async def slow(*args, **kwargs):
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(0.01)
        in_flight["now"] -= 1
        return await original(*args, **kwargs)

    mock_llm.acompletion = slow
    try:
        gw = ModelGateway({"m": MOCK.model_copy(update={"max_concurrency": 3})})

        async def many():
            await asyncio.gather(*(gw.complete("m", [{"role": "user", "content": str(i)}], max_tokens=5) for i in range(12)))

        asyncio.run(many())
    finally:
        mock_llm.acompletion = original
    assert in_flight["max"] == 3


def test_model_without_price_is_refused():
    with pytest.raises(ValueError, match="no price"):
        ModelGateway({"x": ModelSpec(model="openai/not-a-real-model-name")})


def test_prices_from_litellm_map_and_zero_prices():
    known = ModelSpec(model="openai/gpt-4o-mini")
    assert price(known, Usage(prompt_tokens=1_000_000, completion_tokens=0)) > 0
    assert price(REFERENCE_MODEL, Usage(prompt_tokens=10**6, completion_tokens=10**6)) == 0.0
    with pytest.raises(ValueError, match="both"):
        ModelSpec(model="x/y", input_cost_per_million=1.0)


def test_reference_model_goes_through_litellm():
    gw = ModelGateway({"reference": REFERENCE_MODEL})
    msgs = [{"role": "user", "content": "Mia has 3 apples. Leo has 2 more apples than Mia.\nQuestion: How many apples does Leo have?"}]
    out = asyncio.run(gw.complete("reference", msgs, max_tokens=50))
    assert "The answer is 5." in out.text
    assert out.usage.completion_tokens <= 50 and out.cost_usd == 0.0


def test_continuation_logprob_sums_the_continuation_tokens_only(monkeypatch):
    """The echoed prompt's token log-probabilities (OpenAI completions semantics: each token scored
    given the tokens before it) summed over the continuation; the prompt's own tokens left out."""
    import asyncio

    import litellm

    from sleeptime.model import ModelGateway, ModelSpec, continuation_logprob

    prefix, continuation = "Context: Ava has 3.\n\nQuestion:", " How many?"
    tokens = ["Context", ":", " Ava", " has", " 3", ".", "\n\n", "Question", ":", " How", " many", "?", "\n"]
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    values = [None, -1.0, -2.0, -1.5, -3.0, -0.5, -0.2, -0.4, -0.1, -2.5, -0.7, -0.3, -9.0]
    seen = {}

    async def fake(**kwargs):
        seen.update(kwargs)
        logprobs = litellm.types.utils.Logprobs(text_offset=offsets, token_logprobs=values, tokens=tokens, top_logprobs=[])
        return litellm.types.utils.TextCompletionResponse(
            choices=[{"text": prefix + continuation + "\n", "index": 0, "logprobs": logprobs, "finish_reason": "length"}])

    monkeypatch.setattr(litellm, "atext_completion", fake)
    spec = ModelSpec(model="openai/m", api_base="http://127.0.0.1:1/v1", api_key="k",
                     input_cost_per_million=0.0, output_cost_per_million=0.0)
    score = asyncio.run(continuation_logprob(ModelGateway({"m": spec}), "m", prefix, continuation))
    assert score == -2.5 - 0.7 - 0.3  # " How", " many", "?": not the generated "\n", not the prompt
    assert seen["echo"] is True and seen["logprobs"] == 1 and seen["max_tokens"] == 1
    assert seen["prompt"] == prefix + continuation


# --- the litellm client settings (sleeptime.model._gateway.configure_litellm, _register_price) ----------


def test_litellm_settings_in_effect_and_a_real_call_keeps_usage_and_cost():
    """What the gateway sets up for litellm is in effect once it exists: no callback that every call
    would pay for, no debug banner per error, and the configured price of a model litellm's map lacks
    registered with litellm, so litellm's own per-response pricing is a direct hit instead of a walk
    through its fallback rules. A call against the fake OpenAI server still returns usage and cost."""
    from sleeptime.testing.fake_openai import FakeOpenAIServer, FaultConfig, reply_for

    model = "openai/fake-gateway-settings"
    with pytest.raises(Exception):  # not in litellm's map before
        litellm.cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
    with FakeOpenAIServer(FaultConfig(latency_s=0)) as server:
        spec = ModelSpec(model=model, api_base=server.base_url, api_key="x", input_cost_per_million=3.0,
                         output_cost_per_million=5.0, max_retries=0)
        gw = ModelGateway({"fake": spec})
        for name in ("callbacks", "success_callback", "failure_callback", "input_callback", "service_callback",
                     "_async_success_callback", "_async_failure_callback", "_async_input_callback"):
            assert getattr(litellm, name) == [], f"litellm.{name} = {getattr(litellm, name)!r}: every call would pay for it"
        assert litellm.suppress_debug_info is True
        assert litellm.cost_per_token(model=model, prompt_tokens=10**6, completion_tokens=10**6) == pytest.approx((3.0, 5.0))

        messages = [{"role": "user", "content": "What is two plus two?"}]
        out = asyncio.run(gw.complete("fake", messages, max_tokens=8))
    expected = reply_for(messages, max_tokens=8)
    assert out.text == expected.content
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (expected.prompt_tokens, expected.completion_tokens)
    assert out.cost_usd == pytest.approx((3.0 * out.usage.prompt_tokens + 5.0 * out.usage.completion_tokens) / 1e6)
    assert out.cost_usd > 0 and gw.counters.calls == 1 and gw.counters.cost_usd == out.cost_usd


def test_a_registered_price_prices_no_other_spec_and_mapped_models_keep_litellm_prices():
    model = "openai/fake-registered-once"
    ModelGateway({"a": ModelSpec(model=model, input_cost_per_million=1.0, output_cost_per_million=1.0)})
    # litellm now knows a price for it, but that price is another spec's configuration: still refused.
    with pytest.raises(ValueError, match="no price"):
        ModelGateway({"b": ModelSpec(model=model)})
    # Configured again at another price: litellm follows the latest configuration.
    ModelGateway({"c": ModelSpec(model=model, input_cost_per_million=2.0, output_cost_per_million=4.0)})
    assert litellm.cost_per_token(model=model, prompt_tokens=10**6, completion_tokens=10**6) == pytest.approx((2.0, 4.0))
    # A model in litellm's map keeps litellm's entry, whatever a spec configures.
    known = "openai/gpt-4o-mini"
    before = litellm.cost_per_token(model=known, prompt_tokens=10**6, completion_tokens=10**6)
    ModelGateway({"d": ModelSpec(model=known, input_cost_per_million=123.0, output_cost_per_million=456.0)})
    assert litellm.cost_per_token(model=known, prompt_tokens=10**6, completion_tokens=10**6) == before
