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
        ("policy: {kind_floors: {counterfactual: 1.2}}\n", "kind floors"),
        ("policy: {target_accuracy: 0}\n", "target_accuracy"),
        ("policy: {test_budget_order: [a]}\n", "test_budget_order"),  # set by the budgets, not configurable
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


def test_the_policy_is_fitted_with_the_configured_policy_and_budget_orders(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "sleep_budgets: [{name: none, max_tokens: 0}, {name: big, max_tokens: 400}, {name: bigger, max_tokens: 900}]\n"
        "test_budgets: [{name: terse, verbosity: 0, max_tokens: 20}, {name: wordy, verbosity: 3, max_tokens: 300}]\n"
        "policy: {target_accuracy: 0.8, kind_floors: {counterfactual: 0.6}, holdout_fraction: 0.3,"
        " sleep_allocation: traffic}\n"
    )
    config = load_config(path)
    assert config.test_budget_order == ("terse", "wordy")
    assert config.sleep_budget_order == ("none", "big", "bigger")
    settings = config.policy_settings
    assert (settings.target_accuracy, settings.kind_floors, settings.z) == (0.8, {"counterfactual": 0.6}, 1.96)
    assert (settings.test_budget_order, settings.sleep_budget_order) == (("terse", "wordy"), ("none", "big", "bigger"))
    # Settings that act around the fit are not the fit's: they change neither its input nor its version.
    assert not hasattr(settings, "holdout_fraction") and not hasattr(settings, "sleep_allocation")
