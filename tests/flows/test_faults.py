"""Real failures through the real HTTP path: the pipeline against a local OpenAI-compatible server
that fails 30 % of calls (429 with Retry-After, 500, too slow, malformed JSON, truncated bodies,
dropped connections). Nothing is lost: retryable errors are retried, the rest are recorded per
item with the reason, and a rerun retries exactly the failed items."""

import asyncio
import time

import pytest

from flows.pipeline import RunFailed
from sleeptime.model import ModelError, ModelGateway, ModelSpec
from sleeptime.testing.fake_openai import FakeOpenAIServer, FaultConfig

# 30 % of requests fail, every kind represented; the draw depends only on (seed, request, attempt).
THIRTY_PERCENT = FaultConfig(
    latency_s=0.01, rate_429=0.08, rate_500=0.08, rate_slow=0.02, rate_malformed=0.04, rate_truncated=0.04,
    rate_dropped=0.04, slow_s=3.0, retry_after_s=0.05, seed=11, deterministic=True,
)
ANSWERS_PER_VARIANT = 10 * 2  # queries per context x test budgets in the tiny config


def _flaky(base_url: str) -> dict:
    # Two retries: with 30 % failing per attempt about 2.7 % of items fail for good, so both paths show.
    return {"model": "openai/fake", "api_base": base_url, "api_key": "x", "input_cost_per_million": 1.0,
            "output_cost_per_million": 2.0, "max_concurrency": 8, "timeout_s": 1.0, "max_retries": 2,
            "backoff_base_s": 0.01, "backoff_max_s": 0.1}


@pytest.fixture
def flaky_server():
    with FakeOpenAIServer(THIRTY_PERCENT) as server:
        yield server


def _use(pipeline, base_url: str, **extra) -> None:
    pipeline.write_config(models={"flaky": _flaky(base_url)}, sleep_model="flaky", test_model="flaky",
                          response_cache={"enabled": False}, **extra)


@pytest.mark.slow
def test_a_sweep_with_30_percent_failures_completes_and_a_rerun_retries_only_the_failed(pipeline, flaky_server):
    _use(pipeline, flaky_server.base_url, max_failure_rate=0.2)
    first = pipeline.run()
    stats = flaky_server.stats()
    faults = {k: v for k, v in stats["outcomes"].items() if k != "ok"}
    assert all(faults[k] > 0 for k in ("429", "500", "malformed", "truncated", "dropped")), faults
    assert 0.2 < sum(faults.values()) / stats["requests"] < 0.4

    # Every attempt is accounted for: successful calls, retried attempts and final failed attempts.
    # (An attempt made on a pooled connection the server had just closed fails before the server
    # sees it, so the server may count a few fewer.)
    assert first.counters.retries > 0 and first.failures, "expected both retried and failed-for-good items"
    attempts = first.counters.calls + first.counters.retries + len(first.failures)
    assert attempts - 0.03 * attempts <= stats["requests"] <= attempts
    assert first.items_attempted == first.variants_written + first.answers_written + len(first.failures)
    assert all(f.reason.startswith("flaky: ") and "after 3 attempts" in f.reason for f in first.failures)
    assert first.status == "published"
    recorded = pipeline.count("SELECT count(*) FROM failures_open")
    assert recorded == len(first.failures)
    assert pipeline.count("SELECT count(*) FROM runs WHERE failures = %d" % len(first.failures)) == 1

    failed_keys = {f.key for f in first.failures}
    sleep_failed = sum(1 for f in first.failures if f.stage == "sleep")
    second = pipeline.run()
    # Only the failed items are attempted again, plus the answers of variants that now exist.
    assert second.diff.counts()["unchanged"] == 4
    assert second.items_attempted == len(failed_keys) + ANSWERS_PER_VARIANT * (sleep_failed - sum(
        1 for f in second.failures if f.stage == "sleep" and f.key in failed_keys))
    assert pipeline.count("SELECT count(*) FROM failures_open") == len(second.failures)


@pytest.mark.slow
def test_too_many_failures_fail_the_run_without_publishing_and_lose_nothing(pipeline, flaky_server):
    _use(pipeline, flaky_server.base_url, max_failure_rate=0.0)
    with pytest.raises(RunFailed) as err:
        pipeline.run()
    failed = err.value.summary
    assert "max_failure_rate" in str(err.value) and failed.status == "failed"
    assert not (pipeline.out / "warehouse" / "sleeptime.duckdb").exists()
    from sleeptime.storage import Lake

    assert Lake(pipeline.out / "lake").staged_count() > 0, "the finished shards wait in staging"

    with FakeOpenAIServer(FaultConfig(latency_s=0.0)) as healthy:
        _use(pipeline, healthy.base_url, max_failure_rate=0.0)
        fixed = pipeline.run()
        calls = healthy.stats()["requests"]
    sleep_failed = sum(1 for f in failed.failures if f.stage == "sleep")
    assert fixed.status == "published" and not fixed.failures
    assert calls == len(failed.failures) + ANSWERS_PER_VARIANT * sleep_failed  # staged work reused
    assert pipeline.count("SELECT count(*) FROM variants_current") == 8
    assert pipeline.count("SELECT count(*) FROM answers_current") == 40 * 3 * 2
    assert pipeline.count("SELECT count(*) FROM failures_open") == 0
    assert pipeline.count("SELECT count(*) FROM runs WHERE status = 'failed'") == 1


def test_retry_after_from_a_real_429_is_honoured():
    # A backoff of 10 s would apply without the header; the server asks for 0.3 s.
    spec = ModelSpec(model="openai/fake", api_key="x", input_cost_per_million=0, output_cost_per_million=0,
                     max_retries=1, backoff_base_s=10.0, backoff_max_s=10.0)
    with FakeOpenAIServer(FaultConfig(rate_429=1.0, retry_after_s=0.3, latency_s=0.0)) as server:
        gw = ModelGateway({"m": spec.model_copy(update={"api_base": server.base_url})})
        started = time.perf_counter()
        with pytest.raises(ModelError) as err:
            asyncio.run(gw.complete("m", [{"role": "user", "content": "hi"}], max_tokens=5))
        elapsed = time.perf_counter() - started
    assert "RateLimitError" in err.value.reason and err.value.attempts == 2
    assert 0.3 <= elapsed < 3.0
