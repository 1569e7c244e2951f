from pathlib import Path

import pytest

from sleeptime.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_documents_the_defaults():
    assert load_config(ROOT / "sleeptime.yaml") == RunConfig()


def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("concurrency: 4\nmax_contexts: 3\n")
    cfg = load_config(path, concurrency=9, output_dir=None)
    assert cfg.concurrency == 9 and cfg.max_contexts == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("test_model: nope\n", "test_model 'nope' is not among the configured models"),
        ("sleep_budgets: [{name: a, max_tokens: 1}, {name: a, max_tokens: 2}]\n", "repeated"),
        ("colour: blue\n", "colour"),
        ("test_budgets: [{name: x, verbosity: 7, max_tokens: 10}]\n", "verbosity"),
        ("- a\n- b\n", "mapping"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(Path("/nonexistent/sleeptime.yaml"))
