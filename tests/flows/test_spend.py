"""Spend before spending (issue 13): a dry run's estimate against the real run's bill on a paid
(fake) provider, and max_cost_usd deferring work past the cap to the next run."""

import re

import pytest
from typer.testing import CliRunner

from sleeptime.cli import app
from sleeptime.dataset import write_demo_corpus
from sleeptime.estimate import dry_run
from sleeptime.storage import Lake
from sleeptime.testing.fake_openai import FakeOpenAIServer, FaultConfig


def _paid(base_url: str) -> dict:
    # Output dearer than input, as with every hosted model.
    return {"model": "openai/fake", "api_base": base_url, "api_key": "x", "input_cost_per_million": 1.0,
            "output_cost_per_million": 4.0, "max_concurrency": 8, "max_retries": 0}


@pytest.fixture
def paid(pipeline):
    with FakeOpenAIServer(FaultConfig(latency_s=0.0)) as server:
        pipeline.write_config(models={"paid": _paid(server.base_url)}, sleep_model="paid", test_model="paid",
                              response_cache={"enabled": False})
        yield pipeline, server


def _snapshots(p) -> int:
    with Lake(p.out / "lake", read_only=True).cursor() as cur:
        n = cur.execute("SELECT count(*) FROM lake.snapshots()").fetchone()[0]
    Lake.close_all()
    return n


def _plain(text: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


def test_a_dry_run_calls_nothing_writes_nothing_and_estimates_the_next_run_within_10_percent(paid):
    from sleeptime.config import load_config

    pipeline, server = paid
    pipeline.run()  # history: this provider's tokenizer and reply lengths at each budget
    write_demo_corpus(pipeline.corpus, contexts=8, seed=3)  # the same 4 contexts and 4 new ones
    requests, snapshots = server.stats()["requests"], _snapshots(pipeline)

    diff, estimate = dry_run(Lake(pipeline.out / "lake", read_only=True), load_config(pipeline.config))
    Lake.close_all()
    cli = CliRunner().invoke(app, ["run", "--dry-run", "--config", str(pipeline.config)])
    assert cli.exit_code == 0, cli.output
    assert server.stats()["requests"] == requests, "a dry run made a model call"
    assert _snapshots(pipeline) == snapshots, "a dry run wrote to the lake"
    assert diff.counts() == {"new": 4, "changed": 0, "unchanged": 4, "removed": 0}
    out = _plain(cli.output)
    assert "contexts 4 new, 0 changed, 4 unchanged" in out and f"estimated ${estimate.cost_usd:.4f}" in out

    summary = pipeline.run()
    actual = summary.counters.cost_usd
    assert estimate.calls == summary.counters.calls
    assert {s.stage: s.calibrated for s in estimate.stages} == {"sleep": True, "test": True}
    assert abs(estimate.cost_usd - actual) <= 0.10 * actual, (estimate.as_dict(), actual)
    # The run stores its own estimate beside what it spent, and says how far off it was.
    assert summary.extra["estimate"]["cost_usd"] == pytest.approx(estimate.cost_usd)
    assert any(line.startswith("cost: estimated $") and "estimate error" in line for line in summary.lines())


def test_max_cost_usd_defers_the_work_past_the_cap_and_the_next_run_does_it(paid):
    pipeline, server = paid
    pipeline.run()
    write_demo_corpus(pipeline.corpus, contexts=8, seed=3)
    _, estimate = dry_run(Lake(pipeline.out / "lake", read_only=True), _config(pipeline))
    Lake.close_all()
    cap = estimate.cost_usd / 2
    pipeline.write_config(models={"paid": _paid(server.base_url)}, sleep_model="paid", test_model="paid",
                          response_cache={"enabled": False}, max_cost_usd=cap)

    capped = pipeline.run()
    assert capped.status == "published"
    deferred = capped.extra["deferred"]
    assert deferred["sleep"] + deferred["test"] > 0
    assert capped.counters.cost_usd <= cap * 1.10  # admitted by estimate: within the estimate's error
    assert capped.counters.calls < estimate.calls
    assert any("deferred by max_cost_usd" in line for line in capped.lines())

    pipeline.write_config(models={"paid": _paid(server.base_url)}, sleep_model="paid", test_model="paid",
                          response_cache={"enabled": False})
    rest = pipeline.run()
    assert "deferred" not in rest.extra
    assert capped.counters.calls + rest.counters.calls == estimate.calls  # nothing paid twice, nothing lost
    assert pipeline.run().counters.calls == 0


def _config(pipeline):
    from sleeptime.config import load_config

    return load_config(pipeline.config)
