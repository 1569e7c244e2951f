"""Held-out check: fit the policy on part of the queries, score it on the rest, and compare it
with every fixed (sleep budget, test budget) pair scored the same way.

Costs follow the published formula with each answer's own context's sleep cost amortized over
the configured expected queries per context (the held-out queries are uniform over contexts)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sleeptime.policy._fit import SleepCosts, fit_policy_from_stats, prepare_answers, summarise_answers
from sleeptime.policy_settings import PolicySettings


def split_queries(
    query_ids: Iterable[str], holdout_fraction: float = 0.5, seed: str = "heldout-v1"
) -> tuple[set[str], set[str]]:
    """Split query ids into (fit ids, test ids), deterministically by a hash of (seed, query id):
    a query lands on the same side whatever else is in the list."""
    if not 0.0 <= holdout_fraction <= 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1], got {holdout_fraction}")
    fit: set[str] = set()
    test: set[str] = set()
    for qid in {str(q) for q in query_ids}:
        h = hashlib.sha256(f"{seed}\x00{qid}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        (test if u < holdout_fraction else fit).add(qid)
    return fit, test


@dataclass
class HeldOutReport:
    policy_accuracy: float
    policy_cost_weighted: float
    policy_cost_usd: float
    fallback_rate: float
    n_test_queries: int
    fixed: pd.DataFrame  # sleep_budget, test_budget, n, accuracy, cost_weighted, cost_usd; cheapest first
    best_fixed: dict[str, Any]
    test_time_only: pd.DataFrame
    choices: pd.Series  # counts of (sleep_budget, test_budget) chosen on the test queries
    # Test queries with no recorded answer under the option the policy chose (left out of the scores).
    n_unanswered: int = 0
    policy_version: str = ""
    per_query: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> str:
        b = self.best_fixed
        return (
            f"policy on {self.n_test_queries} held-out queries: accuracy {self.policy_accuracy:.3f}, "
            f"cost {self.policy_cost_weighted:.1f} weighted tokens (${self.policy_cost_usd:.6f}), "
            f"fallback rate {self.fallback_rate:.2f}; best fixed {b.get('sleep_budget')} + {b.get('test_budget')}: "
            f"accuracy {b.get('accuracy', float('nan')):.3f}, cost {b.get('cost_weighted', float('nan')):.1f} "
            f"weighted tokens (${b.get('cost_usd', float('nan')):.6f})"
        )


def _score(rows: pd.DataFrame, costs: SleepCosts, settings: PolicySettings) -> pd.DataFrame:
    """Per-answer cost under the published formula, with the answer's own context's sleep cost."""
    sleep = [costs.for_context(c, b) for c, b in zip(rows["context_id"], rows["sleep_budget"])]
    q = settings.expected_queries_per_context
    return rows.assign(
        cost_weighted=[t / q for t, _ in sleep] + settings.test_token_weight * rows["completion_tokens"],
        cost_usd=[u / q for _, u in sleep] + rows["cost_usd"],
    )


def rank_fixed(fixed: pd.DataFrame, settings: PolicySettings) -> pd.DataFrame:
    """Fixed pairs cheapest first by the policy's cost metric, then the other, then by name."""
    primary, secondary = (
        ("cost_weighted", "cost_usd") if settings.cost_metric == "weighted_tokens" else ("cost_usd", "cost_weighted")
    )
    return fixed.sort_values([primary, secondary, "sleep_budget", "test_budget"], kind="mergesort").reset_index(drop=True)


@dataclass
class HeldOutSplit:
    """The answers split into fit and held-out queries, summarised and scored once, so that
    several policies (a target sweep) are fitted and scored without redoing the shared work."""

    sleep: pd.DataFrame
    stats: pd.DataFrame  # the fit side's answer sums (STATS_COLUMNS)
    labeled: pd.DataFrame  # the fit side's labeled queries (LABELED_COLUMNS)
    queries: pd.DataFrame  # held-out queries: query_id, context_id, kind
    scored: pd.DataFrame  # one row per (held-out query, option) with its cost
    fixed_raw: pd.DataFrame  # every fixed pair's held-out accuracy and cost, unranked
    cost_settings: tuple[float, float]  # (expected queries per context, test token weight) scored with

    @classmethod
    def prepare(
        cls,
        answers: pd.DataFrame,
        sleep: pd.DataFrame,
        settings: PolicySettings = PolicySettings(),
        holdout_fraction: float = 0.5,
        seed: str = "heldout-v1",
    ) -> HeldOutSplit:
        df = prepare_answers(answers)
        fit_ids, test_ids = split_queries(df["query_id"].unique(), holdout_fraction, seed)
        if not fit_ids or not test_ids:
            raise ValueError(
                f"the split left {len(fit_ids)} fit and {len(test_ids)} test queries; both must be non-empty"
            )
        stats, labeled = summarise_answers(df[df["query_id"].isin(fit_ids)])
        costs = SleepCosts(sleep)

        # One recorded answer per (query, option): several test models are averaged.
        test = df[df["query_id"].isin(test_ids)]
        per_option = (
            test.assign(correct=test["correct"].astype(float))
            .groupby(["query_id", "context_id", "sleep_budget", "test_budget"], as_index=False)
            .agg(correct=("correct", "mean"), completion_tokens=("completion_tokens", "mean"), cost_usd=("cost_usd", "mean"))
        )
        scored = _score(per_option, costs, settings)
        queries = test.groupby("query_id", as_index=False).agg(context_id=("context_id", "first"), kind=("kind", "first"))
        fixed = scored.groupby(["sleep_budget", "test_budget"], as_index=False).agg(
            n=("correct", "size"),
            accuracy=("correct", "mean"),
            cost_weighted=("cost_weighted", "mean"),
            cost_usd=("cost_usd", "mean"),
        )
        return cls(sleep, stats, labeled, queries, scored, fixed,
                   (settings.expected_queries_per_context, settings.test_token_weight))

    def check(self, settings: PolicySettings) -> HeldOutReport:
        """Fit the policy with ``settings`` on the fit side and score it beside every fixed pair."""
        if (settings.expected_queries_per_context, settings.test_token_weight) != self.cost_settings:
            raise ValueError("the held-out costs were scored with other cost settings: prepare a new split")
        policy = fit_policy_from_stats(self.stats, self.labeled, self.sleep, settings)
        queries = self.queries
        picks = [policy.choose(c, k) for c, k in zip(queries["context_id"], queries["kind"])]
        queries = queries.assign(
            sleep_budget=[p.sleep_budget for p in picks],
            test_budget=[p.test_budget for p in picks],
            scope=[p.scope for p in picks],
            fallback=[p.fallback for p in picks],
        )
        merged = queries.merge(
            self.scored.drop(columns="context_id"), on=["query_id", "sleep_budget", "test_budget"], how="left"
        )
        answered = merged[merged["correct"].notna()]
        n = len(answered)

        fixed = rank_fixed(self.fixed_raw, settings)
        policy_accuracy = float(answered["correct"].mean()) if n else float("nan")
        good = fixed[fixed["accuracy"] >= policy_accuracy - 1e-12]
        if len(good):
            best = good.iloc[0]
        else:
            best = fixed.sort_values("accuracy", ascending=False, kind="mergesort").iloc[0]
        best_fixed = {k: (v.item() if hasattr(v, "item") else v) for k, v in best.to_dict().items()}

        return HeldOutReport(
            policy_accuracy=policy_accuracy,
            policy_cost_weighted=float(answered["cost_weighted"].mean()) if n else float("nan"),
            policy_cost_usd=float(answered["cost_usd"].mean()) if n else float("nan"),
            fallback_rate=float(queries["fallback"].mean()),
            n_test_queries=int(len(queries)),
            fixed=fixed,
            best_fixed=best_fixed,
            test_time_only=fixed[fixed["sleep_budget"] == "none"].reset_index(drop=True),
            choices=queries[["sleep_budget", "test_budget"]].value_counts(),
            n_unanswered=int(len(merged) - n),
            policy_version=policy.version,
            per_query=merged,
        )


def held_out_check(
    answers: pd.DataFrame,
    sleep: pd.DataFrame,
    settings: PolicySettings = PolicySettings(),
    holdout_fraction: float = 0.5,
    seed: str = "heldout-v1",
) -> HeldOutReport:
    return HeldOutSplit.prepare(answers, sleep, settings, holdout_fraction, seed).check(settings)


def frontier(
    answers: pd.DataFrame,
    sleep: pd.DataFrame,
    settings: PolicySettings,
    targets: tuple[float, ...] = (0.8, 0.9, 0.95),
    holdout_fraction: float = 0.5,
    seed: str = "heldout-v1",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The policy's held-out (accuracy, cost) as the target sweeps, beside the fixed pairs.

    Returns (per target: the policy's held-out accuracy and cost, the cheapest fixed pair and the
    cheapest test-time-only pair that reach the target on the held-out queries, and whether the
    policy reached it no dearer; every fixed pair's held-out accuracy and cost)."""
    split = HeldOutSplit.prepare(answers, sleep, settings, holdout_fraction, seed)
    return sweep_targets(split, settings, targets)


def sweep_targets(split: HeldOutSplit, settings: PolicySettings, targets: tuple[float, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frontier`` on a prepared split."""
    rows = []
    fixed = pd.DataFrame()
    for target in targets:
        at_target = settings.model_validate(settings.model_dump() | {"target_accuracy": target})
        report = split.check(at_target)
        fixed = report.fixed
        reach = fixed[fixed["accuracy"] >= target - 1e-12]
        tto = reach[reach["sleep_budget"] == "none"]
        metric = "cost_usd" if settings.cost_metric == "usd" else "cost_weighted"
        best = reach.iloc[0] if len(reach) else None
        best_tto = tto.iloc[0] if len(tto) else None
        per_kind = report.per_query.groupby("kind")["correct"].mean() if len(report.per_query) else pd.Series(dtype=float)
        policy_cost = report.policy_cost_usd if metric == "cost_usd" else report.policy_cost_weighted
        rows.append({
            "target": target,
            "policy_accuracy": report.policy_accuracy,
            "policy_cost_weighted": report.policy_cost_weighted,
            "policy_cost_usd": report.policy_cost_usd,
            "policy_reaches_target": report.policy_accuracy >= target - 1e-12,
            "fixed_pair": None if best is None else f"{best['sleep_budget']} + {best['test_budget']}",
            "fixed_accuracy": None if best is None else float(best["accuracy"]),
            "fixed_cost": None if best is None else float(best[metric]),
            "test_time_only_pair": None if best_tto is None else f"none + {best_tto['test_budget']}",
            "test_time_only_accuracy": None if best_tto is None else float(best_tto["accuracy"]),
            "test_time_only_cost": None if best_tto is None else float(best_tto[metric]),
            "met": bool(report.policy_accuracy >= target - 1e-12
                        and (best is None or policy_cost <= float(best[metric]) + 1e-9)),
            "kind_accuracy": {str(k): float(v) for k, v in per_kind.items()},
            "n_test_queries": report.n_test_queries,
            "policy_version": report.policy_version,
        })
    return pd.DataFrame(rows), fixed
