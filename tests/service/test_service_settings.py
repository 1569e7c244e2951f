"""Service settings: SLEEPTIME_SERVICE_* from the environment or an env file, a few command-line
options over them, and errors that name the setting."""

import re

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from sleeptime.service.cli import service_app
from sleeptime.service.keys import KeyStore
from sleeptime.service.settings import ServiceSettings


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for name in [n for n in os.environ if n.startswith("SLEEPTIME_SERVICE_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_given_values_beat_the_environment_which_beats_the_env_file(clean_env, tmp_path):
    env_file = tmp_path / "service.env"
    env_file.write_text("SLEEPTIME_SERVICE_PORT=9001\nSLEEPTIME_SERVICE_AUTH=false\nSLEEPTIME_SERVICE_BODY_TIMEOUT_S=3\n")
    clean_env.setenv("SLEEPTIME_SERVICE_PORT", "9002")
    clean_env.setenv("SLEEPTIME_SERVICE_LOG_LEVEL", "WARNING")
    settings = ServiceSettings(_env_file=env_file)
    assert (settings.port, settings.auth, settings.body_timeout_s, settings.log_level) == (9002, False, 3.0, "warning")
    assert ServiceSettings(_env_file=env_file, port=9003).port == 9003
    assert ServiceSettings().host == "127.0.0.1" and ServiceSettings().auth is True


def test_the_run_configuration_comes_from_its_path(clean_env, served):
    clean_env.setenv("SLEEPTIME_SERVICE_CONFIG", str(served.config_path))
    settings = ServiceSettings()
    assert settings.config.output_dir == served.config.output_dir
    assert settings.resolved_warehouse == served.config.warehouse_path
    assert settings.resolved_keys == served.config.output_dir / "service" / "api_keys.json"


@pytest.mark.parametrize("line, field", [
    ("SLEEPTIME_SERVICE_PORT=eighty", "port"),
    ("SLEEPTIME_SERVICE_CONFIG=/no/such/sleeptime.yaml", "config"),
    ("SLEEPTIME_SERVICE_BODY_TIMEOUT_S=0", "body_timeout_s"),
    ("SLEEPTIME_SERVICE_RELOAD_INTERVL_S=1", "sleeptime_service_reload_intervl_s"),  # misspelt: refused, not ignored
])
def test_a_bad_setting_is_an_error_naming_it(clean_env, tmp_path, line, field):
    env_file = tmp_path / "service.env"
    env_file.write_text(line + "\n")
    with pytest.raises(ValidationError) as raised:
        ServiceSettings(_env_file=env_file)
    assert [e["loc"][0] for e in raised.value.errors()] == [field]


def test_serve_has_a_few_options_and_refuses_bad_settings_before_starting(clean_env, tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(service_app, ["serve", "--help"], terminal_width=200).output
    options = set(re.findall(r"^\W*(--[a-z-]+)", help_text, re.M))  # the first word of each option's row
    assert options == {"--config", "--output-dir", "--keys-file", "--env-file", "--host", "--port", "--log-level", "--help"}
    assert "SLEEPTIME_SERVICE_" in help_text
    refused = runner.invoke(service_app, ["serve", "--output-dir", str(tmp_path / "out")],
                            env={"SLEEPTIME_SERVICE_MAX_BODY_BYTES": "12"})
    assert refused.exit_code == 2 and "configuration error" in refused.output and "max_body_bytes" in refused.output
    missing = runner.invoke(service_app, ["serve", "--env-file", str(tmp_path / "nope.env")])
    assert missing.exit_code == 2


def test_keys_commands_use_the_service_keys_path_from_the_environment(clean_env, tmp_path):
    path = tmp_path / "keys" / "api_keys.json"
    created = CliRunner().invoke(service_app, ["keys", "create", "acme"], env={"SLEEPTIME_SERVICE_KEYS_PATH": str(path)})
    assert created.exit_code == 0, created.output
    assert KeyStore(path).verify(created.output.strip().splitlines()[-1]).tenant == "acme"
