"""Sleep time through the provider's batch API (issue 13), through the real flow against the fake
server's files and batches endpoints: half price, exactly-once spend across a killed run,
expired batches sent again once, per-item errors as failures."""

import os
import signal
import time

import pytest

from sleeptime import _failpoints
from sleeptime.testing.fake_openai import FakeOpenAIServer, FaultConfig
from tests.flows.conftest import kill_session, spawn_run

INPUT, OUTPUT = 1.0, 4.0


def _use(pipeline, server, **extra):
    model = {"model": "openai/fake", "api_base": server.base_url, "api_key": "x", "input_cost_per_million": INPUT,
             "output_cost_per_million": OUTPUT, "max_concurrency": 8, "max_retries": 0, "batch": True}
    pipeline.write_config(models={"paid": model}, sleep_model="paid", test_model="paid",
                          response_cache={"enabled": False}, batch_poll_s=0.2, **extra)


def _variants(pipeline) -> list[tuple]:
    with pipeline.warehouse().read() as con:
        return con.execute("SELECT variant_id, prompt_tokens, completion_tokens, cost_usd FROM variants").fetchall()


def _batches(pipeline) -> dict[str, dict]:
    from sleeptime.storage import Lake

    rows = Lake(pipeline.out / "lake", read_only=True).read("batches").to_pylist()
    return {r["batch_id"]: r for r in rows}


@pytest.fixture
def server():
    with FakeOpenAIServer(FaultConfig(latency_s=0.0, batch_delay_s=0.5)) as s:
        yield s


def test_a_batch_refresh_publishes_c_prime_at_half_the_online_price(pipeline, server):
    _use(pipeline, server)
    summary = pipeline.run_flow(wait_for_batches=True)
    assert summary.status == "published"
    stats = server.stats()
    assert stats["batches_created"] == 1 and stats["batch_items_submitted_max"] == 1
    variants = _variants(pipeline)
    assert len(variants) == 4 * 2  # every (context, sleep budget) of the tiny config
    for _, prompt, completion, cost in variants:
        assert cost == pytest.approx(0.5 * (prompt * INPUT + completion * OUTPUT) / 1e6)
    assert summary.extra["batches"] == {"submitted": 1, "items_submitted": 8, "resubmitted": 0, "collected": 1,
                                        "pending": 0}
    assert [b["status"] for b in _batches(pipeline).values()] == ["collected"]
    # Test time ran online on the c' the batch brought.
    assert pipeline.count("SELECT count(*) FROM answers WHERE variant_id IS NOT NULL") > 0


def test_a_run_that_does_not_wait_leaves_the_batch_to_the_next_run(pipeline, server):
    _use(pipeline, server)
    first = pipeline.run_flow()
    assert first.extra["batches"]["pending"] == 1 and first.variants_written == 0
    assert any("1 pending; the next run" in line for line in first.lines())
    time.sleep(0.6)
    second = pipeline.run_flow()
    assert second.variants_written == 8 and second.extra["batches"]["submitted"] == 0
    assert server.stats()["batches_created"] == 1 and server.stats()["batch_items_submitted_max"] == 1


def test_a_run_killed_after_submitting_is_collected_by_the_rerun_with_no_new_submission(pipeline, server,
                                                                                       prefect_api_url, tmp_path):
    _use(pipeline, server)
    proc = spawn_run(pipeline, tmp_path, api_url=prefect_api_url,
                     env={**os.environ, _failpoints.ENV: _failpoints.BATCH_AFTER_SUBMIT})
    try:
        assert proc.wait(timeout=300) == -signal.SIGKILL, "the run was not killed after its submit"
    finally:
        kill_session(proc.pid)
    assert server.stats()["batches_created"] == 1
    assert [b["status"] for b in _batches(pipeline).values()] == ["submitted"]  # recorded before the kill

    resumed = pipeline.run_flow(wait_for_batches=True)
    assert resumed.status == "published" and resumed.variants_written == 8
    stats = server.stats()
    assert stats["batches_created"] == 1 and stats["batch_items_submitted_max"] == 1  # nothing paid twice


def test_an_expired_batch_sends_its_unfinished_items_again_once(pipeline, server):
    _use(pipeline, server)
    server.update_config(batch_expire_fraction=0.5)
    first = pipeline.run_flow()
    assert first.extra["batches"]["pending"] == 1
    server.update_config(batch_expire_fraction=0.0)  # the second batch completes
    time.sleep(0.6)

    second = pipeline.run_flow(wait_for_batches=True)
    stats = server.stats()
    submitted = stats["batch_items_submitted"]
    again = [k for k, n in submitted.items() if n == 2]
    assert stats["batches_created"] == 2 and 0 < len(again) < 8 and max(submitted.values()) == 2
    assert second.extra["batches"]["resubmitted"] == len(again)
    assert second.variants_written == 8 and not second.failures
    attempts = sorted(b["attempt"] for b in _batches(pipeline).values())
    assert attempts == [1, 2]


def test_per_item_batch_errors_are_failures_and_the_next_run_retries_them(pipeline, server):
    _use(pipeline, server, max_failure_rate=0.9)
    server.update_config(batch_item_failure_rate=0.4)
    first = pipeline.run_flow(wait_for_batches=True)
    failed = {f.key for f in first.failures if f.stage == "sleep"}
    assert failed and first.variants_written == 8 - len(failed)
    assert all("batch " in f.reason and f.reason.startswith("paid: ") for f in first.failures if f.stage == "sleep")
    assert pipeline.count("SELECT count(*) FROM failures_open WHERE stage = 'sleep'") == len(failed)

    server.update_config(batch_item_failure_rate=0.0)
    second = pipeline.run_flow(wait_for_batches=True)
    assert second.extra["batches"]["items_submitted"] == len(failed)  # exactly the failed items
    assert pipeline.count("SELECT count(*) FROM variants") == 8
