"""The cost estimate's arithmetic and the dry run on a lake with no history."""

from pathlib import Path

import pytest

from sleeptime.config import RunConfig
from sleeptime.dataset import write_demo_corpus
from sleeptime.estimate import admit_within, dry_run
from sleeptime.storage import Lake


def test_admit_within_keeps_plan_order_and_defers_whole_jobs():
    jobs = [3.0, 2.0, 4.0, 1.0]
    assert admit_within(jobs, float, None) == (jobs, [])
    assert admit_within(jobs, float, 5.0) == ([3.0, 2.0], [4.0, 1.0])  # never skips ahead to a cheaper one
    assert admit_within(jobs, float, 0.0) == ([], jobs)
    assert admit_within(jobs, float, 10.0) == (jobs, [])


def test_a_dry_run_on_an_empty_lake_prices_every_job_at_its_max_tokens(tmp_path: Path):
    corpus = write_demo_corpus(tmp_path / "corpus.jsonl", contexts=3, seed=2)
    config = RunConfig(
        corpus=corpus, output_dir=tmp_path / "out", pass_at_k=2,
        models={"paid": {"model": "openai/x", "api_base": "http://127.0.0.1:9", "api_key": "k",
                         "input_cost_per_million": 1.0, "output_cost_per_million": 10.0}},
        sleep_model="paid", test_model="paid",
        sleep_budgets=[{"name": "none", "max_tokens": 0}, {"name": "small", "max_tokens": 100}],
        test_budgets=[{"name": "t0", "verbosity": 0, "max_tokens": 20}, {"name": "t2", "verbosity": 2, "max_tokens": 50}],
    )
    lake = Lake(tmp_path / "lake")
    try:
        diff, estimate = dry_run(lake, config)
        with lake.cursor() as cur:
            assert cur.execute("SELECT count(*) FROM lake.staging.contexts").fetchone()[0] == 0  # nothing staged
    finally:
        Lake.close_all()
    assert diff.counts()["new"] == 3
    stages = {s.stage: s for s in estimate.stages}
    queries = 3 * 10
    assert stages["sleep"].calls == 3
    # raw context x 2 budgets, one extra raw sample (pass@k = 2) x 2 budgets, and the future c' x 2 budgets
    assert stages["test"].calls == queries * (2 + 2 + 2)
    assert stages["sleep"].completion_tokens == 3 * 100
    assert stages["test"].completion_tokens == queries * 3 * (20 + 50)
    assert not stages["sleep"].calibrated and not stages["test"].calibrated
    assert stages["test"].cost_usd == pytest.approx(
        (stages["test"].prompt_tokens * 1.0 + stages["test"].completion_tokens * 10.0) / 1e6, rel=1e-3)
