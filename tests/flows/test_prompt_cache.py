"""Prompt caching (issue 13) through the real flow: a provider that caches prompt prefixes of
1,024+ tokens (the fake server emulates OpenAI's rule) reports cached tokens; the run records them
per row, prices them at the cache price, and says what caching saved."""

import json

import pytest

from sleeptime.dataset import generate_corpus, write_project_jsonl
from sleeptime.domain import Context, ContextWithQueries
from sleeptime.testing.fake_openai import FakeOpenAIServer, FaultConfig

INPUT, CACHE_READ, OUTPUT = 1.0, 0.1, 4.0  # USD per million tokens


def _long_contexts(n: int, seed: int) -> list[ContextWithQueries]:
    """Demo contexts padded past 1,024 words (the fake server's tokens are words)."""
    filler = " ".join(f"Note {i}: nothing else happened that day." for i in range(220))
    return [ContextWithQueries(context=Context(id=r.context.id, text=f"{r.context.text}\n{filler}", source="long"),
                               queries=r.queries) for r in generate_corpus(n, seed=seed)]


@pytest.fixture
def cached_provider(pipeline):
    write_project_jsonl(_long_contexts(3, seed=5), pipeline.corpus)
    with FakeOpenAIServer(FaultConfig(latency_s=0.0, prefix_cache_ttl_s=600)) as server:
        model = {"model": "openai/fake", "api_base": server.base_url, "api_key": "x",
                 "input_cost_per_million": INPUT, "output_cost_per_million": OUTPUT,
                 "cache_read_cost_per_million": CACHE_READ, "max_concurrency": 2, "max_retries": 0}
        pipeline.write_config(models={"paid": model}, sleep_model="paid", test_model="paid",
                              response_cache={"enabled": False}, workers=1)
        yield pipeline, server


def test_cached_prompt_tokens_are_recorded_priced_and_their_saving_reported(cached_provider):
    pipeline, server = cached_provider
    summary = pipeline.run()
    assert summary.status == "published"
    calls = summary.counters
    assert calls.cached_prompt_tokens == server.stats()["cached_prompt_tokens"] > 0

    with pipeline.warehouse().read() as con:
        rows = con.execute(
            "SELECT prompt_tokens, completion_tokens, cached_prompt_tokens, cost_usd FROM answers").fetchall()
        share = con.execute("SELECT sum(cached_prompt_tokens) / sum(prompt_tokens) FROM v_prompt_cache").fetchone()[0]
    # The questions on one context share the system text and the context: most of each prompt is
    # served from the cache once the first question on that context has been asked.
    assert share > 0.5, share
    assert sum(1 for r in rows if r[2] > 0) > len(rows) / 2
    for prompt, completion, cached, cost in rows:
        assert 0 <= cached <= prompt
        expected = ((prompt - cached) * INPUT + cached * CACHE_READ + completion * OUTPUT) / 1e6
        assert cost == pytest.approx(expected, rel=1e-9, abs=1e-15)

    saved = calls.cached_prompt_tokens * (INPUT - CACHE_READ) / 1e6
    assert calls.cache_savings_usd == pytest.approx(saved)
    assert any(line.startswith("prompt cache: ") and f"saved ${saved:.4f}" in line for line in summary.lines())
    # The report's spend section: the same saving, from the published rows at the model's prices.
    numbers = json.loads((pipeline.out / "report" / "report.json").read_text())
    assert sum(r["cache_savings_usd"] for r in numbers["prompt_cache"]) == pytest.approx(saved)
    assert "Spend and prompt caching" in (pipeline.out / "report" / "report.html").read_text()


def test_the_dry_run_prices_the_cache_share_the_provider_had_before(cached_provider):
    from sleeptime.config import load_config
    from sleeptime.estimate import dry_run
    from sleeptime.storage import Lake

    pipeline, server = cached_provider
    pipeline.run()
    write_project_jsonl(_long_contexts(6, seed=5), pipeline.corpus)  # 3 new long contexts
    _, estimate = dry_run(Lake(pipeline.out / "lake", read_only=True), load_config(pipeline.config))
    Lake.close_all()
    assert sum(s.cache_savings_usd for s in estimate.stages) > 0
    summary = pipeline.run()
    actual = summary.counters.cost_usd
    assert abs(estimate.cost_usd - actual) <= 0.10 * actual, (estimate.as_dict(), actual)
