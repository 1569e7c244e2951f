"""The HTML report: built from a published warehouse, rendered in headless Chromium."""

import re
import shutil
import subprocess
from datetime import datetime, timezone

import pytest

from sleeptime.config import RunConfig
from sleeptime.dataset import write_demo_corpus
from sleeptime.domain import SleepBudget, AnswerBudget
from sleeptime.job import run_local
from sleeptime.pipeline import RunSummary
from sleeptime.report import write_report
from sleeptime.storage import Lake, answer_record, context_record, query_record, variant_record
from sleeptime.storage.warehouse import Warehouse

PLOTS = ["plot-accuracy-tokens", "plot-sleep-scaling", "plot-amortization", "plot-predictability", "plot-heldout",
         "plot-frontier", "plot-runs"]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A warehouse published from an in-process grid (no Prefect or Ray needed for the report)."""
    root = tmp_path_factory.mktemp("report")
    config = RunConfig(
        corpus=write_demo_corpus(root / "corpus.jsonl", contexts=12, seed=21),
        output_dir=root / "out",
        sleep_budgets=[SleepBudget(name="none", max_tokens=0), SleepBudget(name="small", max_tokens=48),
                       SleepBudget(name="large", max_tokens=512)],
        test_budgets=[AnswerBudget(name="t0-direct", verbosity=0, max_tokens=16),
                      AnswerBudget(name="t1-brief", verbosity=1, max_tokens=40),
                      AnswerBudget(name="t2-steps", verbosity=2, max_tokens=80)],
        pass_at_k=2,
    )
    result = run_local(config)
    lake, run_id = Lake(config.lake_dir), "r20260101T000000000000"
    rows = result.loaded.rows
    lake.write("contexts", [context_record(r.context, run_id) for r in rows], run_id=run_id)
    lake.write("queries", [query_record(q, r.context.content_hash, run_id) for r in rows for q in r.queries], run_id=run_id)
    lake.write("variants", [variant_record(v, run_id) for v in result.variants], run_id=run_id)
    lake.write("answers", [answer_record(a, run_id) for a in result.answers], run_id=run_id)
    summary = RunSummary(run_id=run_id, corpus="test", started_at=datetime.now(timezone.utc), status="published")
    summary.counters.calls = len(result.variants) + len(result.answers)
    lake.write("runs", [summary.record()], run_id=run_id)
    warehouse = Warehouse(config.warehouse_path)
    warehouse.sync(lake)
    return warehouse, config


def test_report_quotes_the_headline_numbers(published):
    warehouse, config = published
    path = write_report(warehouse, config, config.report_path)
    page = path.read_text()
    for plot in PLOTS:
        assert f'id="{plot}"' in page
    # Self-contained: nothing is fetched (XML namespace URIs in the SVGs are names, not requests).
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    import json

    numbers = json.loads(path.with_suffix(".json").read_text())
    head = numbers["headline"]
    assert head["token_reduction_at_equal_accuracy"]["ratio"] > 1
    assert head["accuracy_gain_from_sleep"]["gain_over_none"] > 0
    assert 0 <= numbers["heldout"]["policy_accuracy"] <= 1
    assert numbers["heldout"]["n_test_queries"] > 0


def test_report_renders_with_drawn_plots_in_headless_chromium(published, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is required (make test installs Debian's chromium package)"
    warehouse, config = published
    path = write_report(warehouse, config, tmp_path / "report.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,5200"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    check = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
    assert check, "the page's render check did not run"
    drawn = {}
    for line in check.group(1).strip().splitlines():
        plot, size, count = line.split()
        width, height = (int(v) for v in size.split("x"))
        drawn[plot] = (width, height, int(count.removeprefix("drawn=")))
    assert sorted(drawn) == sorted(PLOTS)
    for plot, (width, height, count) in drawn.items():
        assert width > 300 and height > 200 and count > 40, (plot, width, height, count)

    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", path.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    image = Image.open(shot).convert("L")
    pixels = list(image.getdata())
    ink = sum(1 for p in pixels if p < 200) / len(pixels)
    assert ink > 0.03, f"only {ink:.1%} of the page is drawn"


def test_report_uses_saved_log_probabilities_when_they_cover_the_queries(published, tmp_path):
    """`sleeptime predictability --logprob-model` saves log P(q | c) per query; the report's
    predictability analysis then uses them instead of the text proxy, and says so."""
    import json


    warehouse, config = published
    with warehouse.read() as con:
        queries = con.execute("SELECT query_id, context_id FROM queries_current ORDER BY query_id").df()
    path = config.logprob_scores_path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        scores = queries.assign(score=-(queries.index.to_numpy() % 7).astype(float), model="some-model")
        scores.to_parquet(path, index=False)
        out = write_report(warehouse, config, tmp_path / "with.html")
        pred = json.loads(out.with_suffix(".json").read_text())["headline"]["predictability"]
        assert pred["score"] == "log P(q | c) under some-model (token log-probabilities)"
        assert pred["n"] > 0 and len(pred["gain_per_quantile"]) == pred["quantiles"]
        # Scores for under half of the queries: the text proxy again.
        scores.iloc[: len(scores) // 3].to_parquet(path, index=False)
        out = write_report(warehouse, config, tmp_path / "partial.html")
        pred = json.loads(out.with_suffix(".json").read_text())["headline"]["predictability"]
        assert pred["score"].startswith("max share of the question's content words")
    finally:
        path.unlink(missing_ok=True)


def test_report_shows_each_real_model_summary_the_bench_left(published, tmp_path):
    """bench/real_llm.py leaves <output>/analysis/real_model*.json; the report gains a section per
    file (plot, table, the reduction and scaling lines), and a file that does not read is named."""
    import json

    warehouse, config = published
    analysis = config.output_dir / "analysis"
    analysis.mkdir(parents=True, exist_ok=True)
    cell = {"test_model": "qwen-coder-0.5b", "sleep": "none", "cprime": "none (raw)", "test": "t2-steps", "n": 120,
            "accuracy": 0.31, "ci_low": 0.23, "ci_high": 0.40, "mean_test_tokens": 17.0,
            "sleep_tokens_per_context": 0.0, "amortized_cost_10q": 175.0}
    with_c = {**cell, "sleep": "medium", "cprime": "1.5B medium", "test": "t1-brief", "accuracy": 0.6,
              "ci_low": 0.51, "ci_high": 0.68, "mean_test_tokens": 7.0, "sleep_tokens_per_context": 384.0}
    summary = {"cells": [cell, with_c], "reduction": {"qwen-coder-0.5b": {"raw": cell, "with_cprime": with_c, "ratio": 17 / 7}},
               "sleep_scaling": {"qwen-coder-0.5b at t1-brief": [cell, with_c]},
               "predictability": {"log P(q | c) under the 1.5B": None}}
    good, bad = analysis / "real_model.json", analysis / "real_model_broken.json"
    partial = analysis / "real_model_partial.json"  # reads as JSON, lacks what the section shows
    try:
        good.write_text(json.dumps({"corpus": "demo-subset", "command": "python bench/real_llm.py", "contexts": 24,
                                    "n_queries": 120, "sleep_budgets": ["medium"], "summary": summary}))
        bad.write_text("{not json")
        partial.write_text(json.dumps({"summary": {"cells": []}}))
        out = write_report(warehouse, config, tmp_path / "real.html")
        page = out.read_text()
        assert "On a real model: demo-subset" in page and 'id="plot-real-model-0"' in page
        assert "qwen-coder-0.5b: 2.4x fewer test tokens" in page and "1.5B medium" in page
        assert "real_model_broken.json</code> could not be read" in page
        assert "real_model_partial.json</code> could not be read" in page
        numbers = json.loads(out.with_suffix(".json").read_text())["real_models"]
        assert [n["file"] for n in numbers] == ["real_model.json"] and numbers[0]["cells"][1]["accuracy"] == 0.6
    finally:
        good.unlink(missing_ok=True)
        bad.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


def test_predictability_command_prints_the_gain_by_quantile(published):
    from typer.testing import CliRunner

    from sleeptime.cli import app

    _, config = published
    result = CliRunner().invoke(app, ["predictability", "--output-dir", str(config.output_dir)])
    assert result.exit_code == 0, result.output
    assert "max share of the question's content words" in result.output and "trend" in result.output
    unknown = CliRunner().invoke(app, ["predictability", "--output-dir", str(config.output_dir), "--logprob-model", "nope"])
    assert unknown.exit_code == 2 and "not configured" in unknown.output
