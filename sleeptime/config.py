"""Run configuration: one validated object, loaded from YAML, overridable from the CLI.

Defaults run everything offline on the embedded reference reasoner. sleeptime.yaml at the repo
root is the documented example; every field below can be set there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from sleeptime.domain import SleepBudget, AnswerBudget
from sleeptime.model import (
    QWEN_CODER_05B,
    QWEN_CODER_15B,
    REFERENCE_MODEL,
    SMOLLM2_LOCAL,
    CachePolicy,
    ModelSpec,
    load_registry,
)
from sleeptime.policy_settings import PolicyFitConfig, PolicySettings

# Sleep budgets: "none" is test-time only. Each level roughly triples the tokens of the last;
# the reference reasoner writes about 13 tokens per derived fact.
DEFAULT_SLEEP_BUDGETS = (
    SleepBudget(name="none", max_tokens=0),
    SleepBudget(name="small", max_tokens=48),
    SleepBudget(name="medium", max_tokens=160),
    SleepBudget(name="large", max_tokens=512),
)

# The five published verbosity levels, each with a reply cap that lets it say what it is told to.
DEFAULT_TEST_BUDGETS = (
    AnswerBudget(name="t0-direct", verbosity=0, max_tokens=16),
    AnswerBudget(name="t1-brief", verbosity=1, max_tokens=40),
    AnswerBudget(name="t2-steps", verbosity=2, max_tokens=80),
    AnswerBudget(name="t3-explain", verbosity=3, max_tokens=200),
    AnswerBudget(name="t4-check", verbosity=4, max_tokens=480),
)


class DemoCorpus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path = Path("data/demo/corpus.jsonl")
    contexts: int = Field(default=50, ge=1)
    seed: int = 7


class PolicyConfig(PolicyFitConfig):
    """``policy:``: the fit's inputs (PolicyFitConfig), how the refresh spends sleep time, and the
    report's held-out check (sleeptime/policy; docs/analysis.md, "Selection policy")."""

    sleep_allocation: Literal["full_grid", "traffic"] = "full_grid"  # every budget everywhere, or by traffic
    holdout_fraction: float = Field(default=0.5, gt=0, lt=1)  # queries held out by the report's check


class S3Settings(BaseModel):
    """How the lake reaches an S3-compatible object store holding its data files.

    Credentials are never configuration: they come from the environment (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, and AWS_SESSION_TOKEN for temporary ones), as for every AWS tool.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = None  # host:port of an S3-compatible server (MinIO, Ceph, R2); None: AWS
    region: str = "us-east-1"
    url_style: Literal["vhost", "path"] = "vhost"  # most S3-compatible servers want "path"
    use_ssl: bool = True


class LakeLocation(BaseModel):
    """Where the lake's catalog and data files live (docs/architecture.md, "Several machines").

    The defaults keep both under ``<output_dir>/lake/``: a SQLite catalog and local Parquet
    files. Writers and readers on several machines need a catalog they all reach (``postgres:
    dbname=sleeptime host=...``, which also needs the ``duckdb-extension-postgres-scanner`` wheel)
    and a data path they all reach (a shared filesystem, or object storage such as ``s3://...``).
    """

    model_config = ConfigDict(extra="forbid")

    catalog: str | None = None  # a DuckLake catalog: "sqlite:<path>" or "postgres:<libpq string>"
    data_path: str | None = None  # folder or URI of the Parquet data files (s3://bucket/prefix/)
    s3: S3Settings = Field(default_factory=S3Settings)  # how to reach an s3:// data path


class RunConfig(BaseModel):
    """Everything one run of the main job needs."""

    model_config = ConfigDict(extra="forbid")

    corpus: Path = Path("data/demo/corpus.jsonl")
    corpus_format: str = "auto"
    demo: DemoCorpus = Field(default_factory=DemoCorpus)
    output_dir: Path = Path("out")
    lake: LakeLocation = Field(default_factory=LakeLocation)
    models: dict[str, ModelSpec] = Field(
        default_factory=lambda: {"reference": REFERENCE_MODEL, "smollm2": SMOLLM2_LOCAL,
                                 "qwen-coder-1.5b": QWEN_CODER_15B, "qwen-coder-0.5b": QWEN_CODER_05B}
    )
    # A model registry file (YAML, see models.example.yaml) whose models join `models`. A relative
    # path is read from the config file's folder (the working directory without one); it is kept
    # absolute after validation. A name both here and in `models` is an error.
    model_registry: Path | None = None
    sleep_model: str = "reference"
    test_model: str = "reference"
    # Each list cheapest first ("none" first among sleep budgets): budget names carry no order of
    # their own, so the listed order is the budgets' order (test_budget_order, sleep_budget_order).
    sleep_budgets: list[SleepBudget] = Field(default_factory=lambda: list(DEFAULT_SLEEP_BUDGETS))
    test_budgets: list[AnswerBudget] = Field(default_factory=lambda: list(DEFAULT_TEST_BUDGETS))
    # Raw-context samples per (query, test budget) for the pass@k baseline (parallel scaling,
    # scored with an oracle: correct if any sample is). 1 turns it off.
    pass_at_k: int = Field(default=3, ge=1)
    # Work items in flight at once across all models (each model also has its own cap).
    concurrency: int = Field(default=32, ge=1)
    max_contexts: int | None = Field(default=None, ge=1)
    # The orchestrated pipeline: contexts per Prefect shard task, Ray workers (model-call actors),
    # and an existing Ray cluster to join (None starts a local one for the run).
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    shard_size: int = Field(default=10, ge=1)
    workers: int = Field(default=2, ge=1)
    ray_address: str | None = None
    # Also copy the finished report folder here: s3://bucket/prefix/ (reached with lake.s3's
    # endpoint settings) or a folder, e.g. one a web server publishes.
    report_uri: str | None = None
    # Identical model requests answered from disk, so re-evaluating costs nothing (sleeptime/model/_cache.py).
    response_cache: CachePolicy = Field(default_factory=CachePolicy)
    # Items whose model call failed for good (after retries), as a fraction of the items the run
    # attempted. Up to this, the run publishes what succeeded and the next run retries the rest;
    # above it, the run fails without publishing (the finished shards stay staged for the rerun).
    max_failure_rate: float = Field(default=0.01, ge=0, le=1)
    # A spend cap per run, in USD, on the estimate of each job (sleeptime/estimate.py): work is
    # admitted in plan order while it fits, the rest is deferred whole to the next run. None: no cap.
    max_cost_usd: float | None = Field(default=None, ge=0)
    # How often a run that waits on provider batches (sleep model with `batch: true`, run --wait-batches)
    # asks whether they are done.
    batch_poll_s: float = Field(default=30.0, gt=0)

    @field_validator("sleep_budgets", "test_budgets")
    @classmethod
    def _unique_names(cls, budgets: list[Any]) -> list[Any]:
        names = [b.name for b in budgets]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"budget names must be unique; repeated: {duplicated}")
        if not budgets:
            raise ValueError("at least one budget is required")
        return budgets

    # Names that came from model_registry: not dumped, so a dumped config reloads without clashes.
    _registry_names: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @model_validator(mode="after")
    def _merge_registry(self, info: ValidationInfo) -> RunConfig:
        if self.model_registry is None:
            return self
        path = self.model_registry
        if not path.is_absolute():
            base = (info.context or {}).get("config_dir")
            path = (Path(base) if base is not None else Path.cwd()) / path
        try:
            registry = load_registry(path)
        except FileNotFoundError:
            raise ValueError(f"model_registry: file not found: {path}") from None
        both = sorted(set(self.models) & set(registry))
        if both:
            raise ValueError(
                f"model(s) {both} defined both inline under `models:` and in the model registry {path}; keep one"
            )
        self.models = {**self.models, **registry}
        self.model_registry = path
        self._registry_names = frozenset(registry)
        return self

    @model_validator(mode="after")
    def _models_exist(self) -> RunConfig:
        budget_names = {b.name for b in self.sleep_budgets} | {b.name for b in self.test_budgets}
        for role in ("sleep_model", "test_model"):
            name = getattr(self, role)
            if name not in self.models:
                raise ValueError(f"{role} {name!r} is not among the configured models {sorted(self.models)}")
            # Only the models this run uses: a shared registry may map budgets other runs define.
            unknown = sorted(set(self.models[name].budgets) - budget_names)
            if unknown:
                raise ValueError(
                    f"model {name!r} maps budget(s) {unknown} that this run does not define; "
                    f"budgets: {sorted(budget_names)}"
                )
        return self

    @field_serializer("models", mode="wrap")
    def _dump_inline_models(self, models: dict[str, ModelSpec], handler: Any) -> Any:
        return handler({n: s for n, s in models.items() if n not in self._registry_names})

    @property
    def test_budget_order(self) -> tuple[str, ...]:
        """Test budget names, cheapest .. largest."""
        return tuple(b.name for b in self.test_budgets)

    @property
    def sleep_budget_order(self) -> tuple[str, ...]:
        """Sleep budget names, "none" .. largest."""
        return tuple(b.name for b in self.sleep_budgets)

    @property
    def policy_settings(self) -> PolicySettings:
        """What this run fits the policy with: ``policy``'s fit inputs and the budget orders."""
        return PolicySettings.from_config(self.policy, self.test_budget_order, self.sleep_budget_order)

    @property
    def lake_dir(self) -> Path:
        return self.output_dir / "lake"

    def open_lake(self):  # -> sleeptime.storage.Lake (imported here: the config stays light)
        from sleeptime.storage import Lake

        return Lake(self.lake_dir, catalog=self.lake.catalog, data_path=self.lake.data_path, s3=self.lake.s3)

    @property
    def spool_dir(self) -> Path:
        return self.output_dir / "spool"

    @property
    def warehouse_path(self) -> Path:
        return self.output_dir / "warehouse" / "sleeptime.duckdb"

    @property
    def report_path(self) -> Path:
        return self.output_dir / "report" / "report.html"

    @property
    def response_cache_path(self) -> Path | None:
        if not self.response_cache.enabled:
            return None
        return self.response_cache.path or self.output_dir / "cache" / "responses.sqlite"

    @property
    def data_docs_dir(self) -> Path:
        return self.output_dir / "quality" / "data_docs"

    @property
    def logprob_scores_path(self) -> Path:
        """log P(q | c) per query from a model that gives log-probabilities (`sleeptime
        predictability --logprob-model`); the report's predictability analysis uses them when present."""
        return self.output_dir / "analysis" / "logprob_scores.parquet"

    @property
    def real_model_results(self) -> list[Path]:
        """Summaries of the method measured on real models (``real_model*.json``, written by
        bench/real_llm.py): the report shows one section per file."""
        return sorted((self.output_dir / "analysis").glob("real_model*.json"))


def load_config(path: Path | None = None, **overrides: Any) -> RunConfig:
    """Read ``path`` (YAML) if given, then apply non-None ``overrides`` on top."""
    data: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: the top level must be a mapping of settings")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    context = {"config_dir": Path(path).parent} if path is not None else None
    return RunConfig.model_validate(data, context=context)
