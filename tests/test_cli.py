import re

import pytest
from typer.testing import CliRunner

from sleeptime.cli import app

runner = CliRunner()


def _plain(text: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


@pytest.mark.parametrize("command", [[], ["run"], ["think"], ["models"], ["corpus"], ["corpus", "generate"], ["corpus", "check"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in _plain(result.output)


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
