"""Fitting the policy at publish time and storing it as versioned rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from sleeptime.analysis.frames import load_frames
from sleeptime.config import PolicyConfig
from sleeptime.policy._fit import Policy, PolicySettings, fit_policy


def settings_from(config: PolicyConfig, test_budget_order: tuple[str, ...] = ()) -> PolicySettings:
    fields = config.model_dump(exclude={"holdout_fraction"})
    return PolicySettings(**fields, test_budget_order=test_budget_order)


def fit_from_snapshot(con: duckdb.DuckDBPyConnection, config: PolicyConfig, test_budget_order: tuple[str, ...] = ()) -> Policy | None:
    """The policy for the data in ``con``; None when nothing is labeled yet."""
    frames = load_frames(con)
    if frames.answers.empty:
        return None
    return fit_policy(frames.answers, frames.sleep, settings_from(config, test_budget_order))


def policy_rows(policy: Policy, run_id: str) -> list[dict[str, Any]]:
    rows = []
    for record in policy.records():
        version = record.pop("version")
        rows.append({**record, "policy_version": version, "run_id": run_id})
    return rows


def derive_policy(candidate: Path, config: PolicyConfig, run_id: str, test_budget_order: tuple[str, ...] = ()) -> dict[str, list[dict[str, Any]]]:
    """Rows to add to a candidate snapshot: a new policy version, or nothing if it is unchanged."""
    con = duckdb.connect(str(candidate), read_only=True)
    try:
        policy = fit_from_snapshot(con, config, test_budget_order)
        if policy is None:
            return {}
        known = con.execute("SELECT count(*) FROM policies WHERE policy_version = ?", [policy.version]).fetchone()[0]
    finally:
        con.close()
    return {} if known else {"policies": policy_rows(policy, run_id)}


def load_current_policy(con: duckdb.DuckDBPyConnection, config: PolicyConfig, test_budget_order: tuple[str, ...] = ()) -> Policy | None:
    """The published policy, refitted from the published data (the fit is deterministic, so it is
    the same version the table holds; refitting gives the in-memory object with its methods)."""
    return fit_from_snapshot(con, config, test_budget_order)
