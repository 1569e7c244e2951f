"""The model registry file, per-model budgets, credentials and the smollm2 default."""

from pathlib import Path

import litellm
import pytest
import yaml

from sleeptime.config import RunConfig, load_config
from sleeptime.domain import SleepBudget, AnswerBudget
from sleeptime.model import SMOLLM2_LOCAL, BudgetParams, LocalServerSpec, ModelSpec, check_credentials, load_registry
from sleeptime.model._registry import MissingCredentialsError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "models.example.yaml"

EXPECTED_PROVIDERS = {
    "gpt4o-mini": "openai",
    "o4-mini": "openai",
    "claude": "anthropic",
    "ollama-llama3": "ollama_chat",
    "vllm-qwen": "hosted_vllm",
    "llamacpp-qwen": "openai",
}


def _write(tmp_path: Path, text: str, name: str = "models.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def no_keys(monkeypatch):
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def test_example_registry_loads_and_every_provider_is_known_to_litellm(no_keys):
    specs = load_registry(EXAMPLE)
    assert set(specs) == set(EXPECTED_PROVIDERS)
    for name, spec in specs.items():
        _, provider, _, _ = litellm.get_llm_provider(spec.model)
        assert provider == EXPECTED_PROVIDERS[name], name
        if spec.input_cost_per_million is None:  # priced from litellm's map: the map must know it
            prompt, completion = litellm.cost_per_token(model=spec.model, prompt_tokens=1000, completion_tokens=1000)
            assert prompt > 0 and completion > 0, name
        else:
            assert spec.input_cost_per_million == 0 and spec.output_cost_per_million == 0, name
    assert specs["gpt4o-mini"].rpm == 500 and specs["gpt4o-mini"].tpm == 200_000
    assert specs["o4-mini"].budgets["large"] == BudgetParams(reasoning_effort="high", max_tokens=16384)
    assert specs["claude"].budgets["small"].thinking_tokens == 1024
    assert specs["llamacpp-qwen"].local_server == LocalServerSpec(
        gguf="/models/qwen2.5-0.5b-instruct-q4_k_m.gguf", port=8766, n_threads=4, n_ctx=4096, alias="qwen"
    )
    # Keys that come from an unset variable load as None and are remembered.
    assert specs["gpt4o-mini"].api_key is None and specs["gpt4o-mini"].missing_key == "OPENAI_API_KEY"


def test_example_registry_works_with_the_default_budgets(no_keys):
    for name in EXPECTED_PROVIDERS:
        cfg = RunConfig(model_registry=EXAMPLE, sleep_model=name, test_model=name)
        assert cfg.models[name].model == load_registry(EXAMPLE)[name].model


def test_api_key_is_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_TEST_KEY", "sk-123")
    path = _write(tmp_path, "models:\n  m:\n    model: openai/gpt-4o-mini\n    api_key: os.environ/MY_TEST_KEY\n")
    spec = load_registry(path)["m"]
    assert spec.api_key.get_secret_value() == "sk-123"
    assert spec.api_key_env == "MY_TEST_KEY" and spec.missing_key is None
    check_credentials({"m": spec}, ["m"])
    # A dump names the variable, never the secret, and reloads to the same spec.
    dumped = spec.model_dump(mode="json")
    assert dumped["api_key"] == "os.environ/MY_TEST_KEY" and "sk-123" not in str(dumped)
    assert ModelSpec.model_validate(dumped) == spec


def test_missing_key_loads_but_a_used_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_MISSING_KEY", raising=False)
    path = _write(
        tmp_path,
        "models:\n"
        "  needs-key:\n    model: openai/gpt-4o-mini\n    api_key: os.environ/MY_MISSING_KEY\n"
        "  free:\n    model: openai/x\n    input_cost_per_million: 0\n    output_cost_per_million: 0\n",
    )
    specs = load_registry(path)
    assert specs["needs-key"].api_key is None
    check_credentials(specs, ["free"])  # unused models need no key
    with pytest.raises(MissingCredentialsError, match=r"model 'needs-key' .*MY_MISSING_KEY"):
        check_credentials(specs, ["free", "needs-key"])
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        check_credentials(specs, ["nope"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  x:\n    model: openai/gpt-4o-mini\n    rpm: 0\n",
         r"models.yaml: model 'x': rpm: Input should be greater than or equal to 1"),
        ("models:\n  x:\n    model: openai/gpt-4o-mini\n    colour: blue\n", r"model 'x': colour: Extra inputs"),
        ("models:\n  x:\n    model: openai/o4-mini\n    budgets: {large: {reasoning_effort: max}}\n",
         r"model 'x': budgets.large.reasoning_effort"),
        ("models:\n  x:\n    model: openai/o4-mini\n    budgets: {large: {max_tokens: 0}}\n",
         r"model 'x': budgets.large.max_tokens"),
        ("models:\n  x:\n    model: m/x\n    input_cost_per_million: 1\n", r"model 'x': set both"),
        ("models:\n  x:\n    api_key: os.environ/\n    model: m/x\n", r"model 'x': .*name the environment variable"),
        ("models:\n  x: openai/gpt-4o-mini\n", r"model 'x': expected a mapping"),
        ("models:\n  x: {model: a/b}\n  x: {model: c/d}\n", r"models.yaml: not valid YAML: .*'x' is repeated"),
        ("models: {}\nrouter_settings: {}\n", r"models.yaml: unknown top-level key\(s\) \['router_settings'\]"),
        ("- a\n", r"models.yaml: the top level must be a mapping"),
        ("other: 1\n", r"unknown top-level"),
        ("models: [a]\n", r"'models' must be a mapping"),
        ("models:\n  x:\n    model: openai/smollm2\n    api_base: http://127.0.0.1:9999/v1\n"
         "    input_cost_per_million: 0\n    output_cost_per_million: 0\n    local_server: {gguf: smollm2}\n",
         r"model 'x': local_server.port is 8765"),
    ],
)
def test_bad_entries_name_the_file_and_the_entry(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_registry(_write(tmp_path, text))


def test_missing_registry_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model registry not found"):
        load_registry(tmp_path / "absent.yaml")
    with pytest.raises(ValueError, match="model_registry: file not found"):
        RunConfig(model_registry=tmp_path / "absent.yaml")


def test_call_params_take_the_model_entry_over_the_budget():
    spec = ModelSpec(
        model="openai/o4-mini",
        budgets={
            "large": BudgetParams(max_tokens=4096, reasoning_effort="high"),
            "t1-brief": BudgetParams(thinking_tokens=1024),
            "none": BudgetParams(max_tokens=100),
        },
    )
    large = SleepBudget(name="large", max_tokens=512, thinking_tokens=7)
    assert spec.call_params(large) == (4096, "high", 7)
    assert spec.call_params(SleepBudget(name="small", max_tokens=48, reasoning_effort="low")) == (48, "low", None)
    assert spec.call_params(AnswerBudget(name="t1-brief", verbosity=1, max_tokens=40)) == (40, None, 1024)
    # The "none" sleep level (no call at all) stays 0 whatever the model says.
    assert spec.call_params(SleepBudget(name="none", max_tokens=0)) == (0, None, None)
    with pytest.raises(ValueError, match="frozen"):
        spec.budgets["large"].max_tokens = 1


def test_a_name_both_inline_and_in_the_registry_is_an_error(tmp_path):
    path = _write(tmp_path, "models:\n  smollm2:\n    model: openai/x\n    input_cost_per_million: 0\n"
                            "    output_cost_per_million: 0\n")
    with pytest.raises(ValueError, match=r"\['smollm2'\] defined both inline under `models:` and in the model registry"):
        RunConfig(model_registry=path)


def test_registry_path_is_relative_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    _write(tmp_path / "conf", "models:\n  extra:\n    model: openai/x\n    input_cost_per_million: 0\n"
                              "    output_cost_per_million: 0\n    budgets: {large: {max_tokens: 999}}\n")
    config = _write(tmp_path / "conf", "model_registry: models.yaml\ntest_model: extra\n", "run.yaml")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = load_config(config)
    assert cfg.model_registry == tmp_path / "conf" / "models.yaml"
    assert set(cfg.models) == {"reference", "smollm2", "qwen-coder-1.5b", "qwen-coder-0.5b", "extra"}
    assert cfg.test_model == "extra"
    # Without a config file a relative path is read from the working directory.
    monkeypatch.chdir(tmp_path / "conf")
    assert "extra" in RunConfig(model_registry=Path("models.yaml")).models
    # A dumped config keeps only the inline models and reloads (re-reading the registry) unchanged.
    dumped = cfg.model_dump(mode="json")
    assert set(dumped["models"]) == {"reference", "smollm2", "qwen-coder-1.5b", "qwen-coder-0.5b"}
    again = _write(tmp_path, yaml.safe_dump(dumped), "again.yaml")
    reloaded = load_config(again)
    assert reloaded.models["extra"] == cfg.models["extra"] and reloaded.model_registry == cfg.model_registry


def test_a_used_model_may_only_map_budgets_the_run_defines(tmp_path):
    path = _write(tmp_path, "models:\n  extra:\n    model: openai/x\n    input_cost_per_million: 0\n"
                            "    output_cost_per_million: 0\n    budgets: {lage: {max_tokens: 9}}\n")
    RunConfig(model_registry=path)  # listed but unused: fine
    with pytest.raises(ValueError, match=r"model 'extra' maps budget\(s\) \['lage'\] that this run does not define"):
        RunConfig(model_registry=path, sleep_model="extra")


def test_smollm2_is_configured_by_default_and_one_line_picks_it():
    cfg = RunConfig(test_model="smollm2")
    assert cfg.models["smollm2"] == SMOLLM2_LOCAL and cfg.sleep_model == "reference"
    assert SMOLLM2_LOCAL.local_server == LocalServerSpec(gguf="smollm2", bos_text="<|im_start|>")
    assert litellm.get_llm_provider(SMOLLM2_LOCAL.model)[1] == "openai"
    assert SMOLLM2_LOCAL.api_base == "http://127.0.0.1:8765/v1"


def test_sleeptime_yaml_still_documents_the_defaults():
    assert load_config(ROOT / "sleeptime.yaml") == RunConfig()
    assert load_config(ROOT / "sleeptime.yaml", test_model="smollm2").test_model == "smollm2"
