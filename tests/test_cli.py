import re

import pytest
from typer.testing import CliRunner

from sleeptime.cli import app
from sleeptime.storage import Lake

runner = CliRunner()


def _plain(text: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


@pytest.mark.parametrize("command", [[], ["run"], ["think"], ["models"], ["corpus"], ["corpus", "generate"], ["corpus", "check"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in _plain(result.output)


def test_run_prints_the_table_and_writes_the_lake(tmp_path):
    corpus = tmp_path / "c.jsonl"
    assert runner.invoke(app, ["corpus", "generate", str(corpus), "--contexts", "4", "--seed", "1"]).exit_code == 0
    result = runner.invoke(app, ["run", "--corpus", str(corpus), "--output-dir", str(tmp_path / "out")])
    out = _plain(result.output)
    assert result.exit_code == 0, out
    assert "loaded 4 contexts (40 queries)" in out
    assert "t4-check" in out and "large" in out and "0 failures" in out
    lake = Lake(tmp_path / "out" / "lake")
    assert lake.read("answers").num_rows == 40 * 4 * 5  # queries x (raw + 3 variants) x test budgets
    assert lake.read("variants").num_rows == 4 * 3
    # A rerun replaces its partition: still no duplicates.
    assert runner.invoke(app, ["run", "--corpus", str(corpus), "--output-dir", str(tmp_path / "out")]).exit_code == 0
    assert lake.read("answers").num_rows == 40 * 4 * 5


def test_corpus_check_reports_set_aside_rows(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "Mia has 3 apples."}\n{not json\n{"id": "a", "text": "again"}\n')
    out = _plain(runner.invoke(app, ["corpus", "check", str(bad)]).output)
    assert "loaded 1 context" in out and "set aside 2 rows" in out
    assert "invalid JSON" in out and "duplicate id" in out


def test_bad_config_exits_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sleep_model: missing\n")
    result = runner.invoke(app, ["run", "--config", str(cfg)])
    assert result.exit_code == 2 and "configuration error" in _plain(result.output)


def test_think_prints_c_prime(tmp_path):
    ctx = tmp_path / "story.txt"
    ctx.write_text("Mia has 14 marbles. Leo has 3 more marbles than Mia.")
    out = _plain(runner.invoke(app, ["think", str(ctx), "--budget", "small"]).output)
    assert "Leo has 14 + 3 = 17 marbles." in out
