"""The selection policy's settings: their fields, defaults and validation, in one place.

``PolicyFitConfig`` owns what the fit depends on. ``sleeptime.config.PolicyConfig`` (the ``policy:``
section a user writes) extends it with settings that act around the fit; ``PolicySettings`` extends
it with the run's budget orders, and is what a fitted policy records (``policies.settings_json``).

A module of its own, importing only pydantic: the run configuration and the policy package both
need it, and neither should pay for the other's imports (litellm; pandas).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PolicyFitConfig(BaseModel):
    """How the selection policy judges "adequate" and "cheapest", and the traffic it expects
    (sleeptime/policy; docs/analysis.md, "Selection policy")."""

    model_config = ConfigDict(extra="forbid")

    target_accuracy: float = Field(default=0.9, gt=0, le=1)  # over the expected query mix
    z: float = Field(default=1.96, ge=0)  # confidence of the mix accuracy's Wilson lower bound
    test_token_weight: float = Field(default=10.0, ge=0)  # t in the published cost formula
    expected_queries_per_context: float = Field(default=10.0, gt=0)  # per refresh, when no traffic is logged
    cost_metric: Literal["weighted_tokens", "usd"] = "weighted_tokens"
    kind_floors: dict[str, float] = Field(default_factory=dict)  # e.g. {counterfactual: 0.8}
    traffic_window_days: float = Field(default=7.0, gt=0)  # query log window that gives the rates
    traffic_prior_windows: float = Field(default=0.5, ge=0)  # weight of the corpus-average rate
    refresh_interval_days: float = Field(default=7.0, gt=0)  # how long one c' serves queries

    @field_validator("kind_floors")
    @classmethod
    def _floors_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"kind floors must be accuracies in [0, 1], got {bad}")
        return value


class PolicySettings(PolicyFitConfig):
    """What a policy is fitted with: the fit's configured inputs and the run's budget orders.

    Frozen: a fitted policy keeps the settings it was fitted with, and its version hashes
    ``to_json()``."""

    model_config = ConfigDict(frozen=True)

    test_budget_order: tuple[str, ...] = ()  # cheapest .. largest (RunConfig.test_budget_order); optional
    sleep_budget_order: tuple[str, ...] = ()  # "none" .. largest (RunConfig.sleep_budget_order); optional

    @classmethod
    def from_config(cls, config: PolicyFitConfig, test_budget_order: tuple[str, ...] = (),
                    sleep_budget_order: tuple[str, ...] = ()) -> PolicySettings:
        """``config``'s fit inputs (a PolicyConfig's other settings left out) with the budget orders."""
        return cls(**config.model_dump(include=set(PolicyFitConfig.model_fields)),
                   test_budget_order=test_budget_order, sleep_budget_order=sleep_budget_order)

    def to_json(self) -> str:
        """The ``settings_json`` of the policy's rows. Published policies hold this exact text and
        their versions hash it, so its shape stays as it is: sorted keys, and the kind floors as
        sorted (kind, floor) pairs."""
        fields: dict[str, Any] = self.model_dump()
        fields["kind_floors"] = sorted(self.kind_floors.items())
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PolicySettings:
        """The settings of a published policy (its ``settings_json``); keys this release does not
        know are ignored, and missing ones take their defaults."""
        fields = {k: v for k, v in json.loads(text).items() if k in cls.model_fields}
        fields["kind_floors"] = dict(fields.get("kind_floors", ()))
        return cls.model_validate(fields)
