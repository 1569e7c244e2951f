"""How the query service runs: ``ServiceSettings``, read from the environment.

Every field can be set as ``SLEEPTIME_SERVICE_<FIELD>`` (``SLEEPTIME_SERVICE_PORT=8080``,
``SLEEPTIME_SERVICE_AUTH=false``), or by the same lines in an env file
(``ServiceSettings(_env_file="service.env")``, ``sleeptime serve --env-file service.env``).
Priority: values passed in (the command line's few options) > the environment > the env file >
the defaults below. An env file holds only ``SLEEPTIME_SERVICE_`` lines: any other name in it is
refused, so a misspelt setting is an error rather than silently unused. ``config`` is the run configuration (a RunConfig, or the path of its YAML
file); paths left unset follow it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sleeptime.config import RunConfig, load_config

ENV_PREFIX = "SLEEPTIME_SERVICE_"

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # NoDecode: from the environment this is a file path, not JSON.
    config: Annotated[RunConfig, NoDecode] = Field(default_factory=RunConfig)
    warehouse_path: Path | None = None  # default: the run configuration's published warehouse
    keys_path: Path | None = None  # default: <output_dir>/service/api_keys.json
    query_log_dir: Path | None = None  # the spool root (the log goes to <spool>/query_log/); default <output_dir>/spool
    query_log: bool = True
    # Off by default: live questions rarely repeat exactly, and a cached reply would hide a model
    # change from users. When on, it uses the path of config.response_cache (or <output_dir>/cache).
    response_cache: bool = False
    auth: bool = True
    # Prometheus scrapes /metrics with `Authorization: Bearer <token>` when set; unset, /metrics is
    # open like /healthz (the series carry no tenant, key or question, but do show traffic and cost).
    metrics_token: SecretStr | None = None
    reload_interval_s: float = Field(default=2.0, gt=0)
    log_batch_size: int = Field(default=50, ge=1)
    log_flush_s: float = Field(default=5.0, gt=0)
    max_question_chars: int = Field(default=4000, ge=1)
    max_body_bytes: int = Field(default=16384, ge=256)
    # A body still arriving after this long gets 408: a slow client cannot hold a worker's request.
    body_timeout_s: float = Field(default=10.0, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # uvicorn: an idle keep-alive connection is closed after this long; at shutdown, requests still
    # running after graceful_shutdown_s are cancelled; beyond limit_concurrency open connections
    # and requests, new ones get 503 (None: no limit).
    keep_alive_timeout_s: int = Field(default=5, ge=1)
    graceful_shutdown_s: int = Field(default=15, ge=0)
    limit_concurrency: int | None = Field(default=None, ge=1)
    access_log: bool = True
    log_level: LogLevel = "info"

    @field_validator("config", mode="before")
    @classmethod
    def _config_from_path(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            try:
                return load_config(Path(value))
            except FileNotFoundError as exc:  # a ValueError names the field in the validation error
                raise ValueError(str(exc)) from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def resolved_warehouse(self) -> Path:
        return self.warehouse_path or self.config.warehouse_path

    @property
    def resolved_keys(self) -> Path:
        return self.keys_path or default_keys_path(self.config)

    @property
    def resolved_spool(self) -> Path:
        return self.query_log_dir or self.config.spool_dir


def default_keys_path(config: RunConfig) -> Path:
    return config.output_dir / "service" / "api_keys.json"
