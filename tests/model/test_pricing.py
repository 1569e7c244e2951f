"""Prices with prompt caching: cached and cache-written prompt tokens at their own prices."""

import pytest
from litellm.types.utils import PromptTokensDetailsWrapper, Usage as LitellmUsage

from sleeptime.domain import Usage
from sleeptime.model import ModelSpec, price
from sleeptime.model._gateway import cache_savings, usage_of


def test_openai_style_cached_tokens_are_read_from_prompt_tokens_details():
    raw = LitellmUsage(prompt_tokens=2000, completion_tokens=10, total_tokens=2010,
                       prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=1536))
    assert usage_of(raw) == Usage(prompt_tokens=2000, completion_tokens=10, cached_prompt_tokens=1536)


def test_anthropic_style_cache_writes_are_recorded():
    raw = LitellmUsage(prompt_tokens=3000, completion_tokens=5, total_tokens=3005, cache_creation_input_tokens=2048,
                       cache_read_input_tokens=0)
    assert usage_of(raw).cache_write_tokens == 2048 and usage_of(raw).cached_prompt_tokens == 0


def test_configured_cache_prices_and_the_saving():
    spec = ModelSpec(model="anthropic/claude-x", input_cost_per_million=3.0, output_cost_per_million=15.0,
                     cache_read_cost_per_million=0.3, cache_write_cost_per_million=3.75)
    usage = Usage(prompt_tokens=10_000, completion_tokens=100, cached_prompt_tokens=6_000, cache_write_tokens=2_000)
    expected = (2_000 * 3.0 + 6_000 * 0.3 + 2_000 * 3.75 + 100 * 15.0) / 1e6
    assert price(spec, usage) == pytest.approx(expected)
    assert cache_savings(spec, usage) == pytest.approx((6_000 * (3.0 - 0.3) - 2_000 * (3.75 - 3.0)) / 1e6)
    # No cache price configured: cached tokens cost the input price (no discount is assumed).
    plain = ModelSpec(model="openai/x", input_cost_per_million=1.0, output_cost_per_million=2.0)
    assert price(plain, usage) == pytest.approx((10_000 * 1.0 + 100 * 2.0) / 1e6)
    assert cache_savings(plain, usage) == 0.0


def test_litellm_map_cache_prices_are_used_when_the_prices_come_from_it():
    import litellm

    spec = ModelSpec(model="gpt-4o-mini")
    info = litellm.get_model_info("gpt-4o-mini")
    usage = Usage(prompt_tokens=4_000, completion_tokens=0, cached_prompt_tokens=2_048)
    expected = (4_000 - 2_048) * info["input_cost_per_token"] + 2_048 * info["cache_read_input_token_cost"]
    assert price(spec, usage) == pytest.approx(expected)
    assert info["cache_read_input_token_cost"] < info["input_cost_per_token"]


def test_the_anthropic_request_litellm_builds_keeps_the_cache_breakpoint_on_the_shared_part():
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig

    from sleeptime.prompts import answer_messages

    messages = answer_messages("Amy has 3 coins. " * 20, "How many coins?", 2, notes="total = 3", cache_breakpoint=True)
    request = AnthropicConfig().transform_request(model="claude-sonnet-4-5-20250929", messages=messages,
                                                  optional_params={"max_tokens": 10}, litellm_params={}, headers={})
    parts = request["messages"][-1]["content"]
    marked = [p for p in parts if p.get("cache_control")]
    assert len(marked) == 1 and marked[0]["cache_control"] == {"type": "ephemeral"}
    assert "Amy has 3 coins." in marked[0]["text"] and "total = 3" in marked[0]["text"]
    assert "How many coins?" not in marked[0]["text"]
