"""From the published policy's choice to what the service runs: the variant and test budget.

Selection itself lives in the policy package (``Policy.select``: the published plan, request
overrides, the failure chain). This module only says which options can run for a context (its
c' at that sleep budget exists in the snapshot, the test budget is configured) and pairs each
chosen option with its variant and test budget. With no policy published yet, the raw context at
the largest configured test budget answers, flagged as a fallback.

The query kind is inferred from the question (``infer_kind``), or given by the client.
"""

from __future__ import annotations

from dataclasses import dataclass

from sleeptime.domain import AnswerBudget, Variant
from sleeptime.policy import CORPUS, RAW, Choice, Unsatisfiable
from sleeptime.service.snapshot import ContextEntry, ServingSnapshot

__all__ = ["Selection", "Step", "Unsatisfiable", "infer_kind", "select"]

NO_POLICY_REASON = "no policy is published yet; raw context at the largest test budget"


def infer_kind(question: str) -> str | None:
    """The policy's query kind for a question: "If ..." is a counterfactual, "... together" a
    sum; anything else None (the context's plan for a query of unknown kind)."""
    text = question.strip().lower()
    if text.startswith("if ") or text.startswith("if,"):
        return "counterfactual"
    if " together" in text:
        return "sum"
    return None


@dataclass(frozen=True, slots=True)
class Step:
    """One option to try: what to run and what the policy predicted for it."""

    option: Choice
    test_budget: AnswerBudget
    variant: Variant | None  # None: the raw context


@dataclass(frozen=True, slots=True)
class Selection:
    steps: tuple[Step, ...]  # primary first, then the failure chain
    scope: str
    scope_value: str
    kind: str | None
    target_accuracy: float
    fallback: bool
    reason: str
    policy_version: str | None = None

    @property
    def primary(self) -> Step:
        return self.steps[0]


def _no_policy(snapshot: ServingSnapshot, kind: str | None, target: float) -> Selection:
    if not snapshot.test_budgets:
        raise Unsatisfiable("context_id", "no test budget is configured for the raw context")
    budget = list(snapshot.test_budgets.values())[-1]  # the largest (RunConfig.test_budget_order)
    option = Choice(sleep_budget=RAW, test_budget=budget.name, scope="corpus", scope_value=CORPUS, kind=kind or "*",
                    n=0, estimate=None, estimate_lower=None, cost_weighted=None, cost_usd=None, latency_ms=None,
                    fallback=True, reason=NO_POLICY_REASON)
    return Selection((Step(option, budget, None),), "corpus", CORPUS, kind, target, True, NO_POLICY_REASON)


def select(
    snapshot: ServingSnapshot,
    entry: ContextEntry,
    kind: str | None,
    target_accuracy: float | None = None,
    max_cost: float | None = None,
    max_latency_ms: float | None = None,
) -> Selection:
    policy = snapshot.policy
    if policy is None:
        if max_cost is not None or max_latency_ms is not None:
            raise Unsatisfiable("max_cost" if max_cost is not None else "max_latency_ms",
                                "no policy is published yet: no option has a measured cost or latency")
        return _no_policy(snapshot, kind, snapshot.target_accuracy if target_accuracy is None else target_accuracy)

    def available(sleep_budget: str, test_budget: str) -> bool:
        return test_budget in snapshot.test_budgets and (sleep_budget == RAW or sleep_budget in entry.variants)

    chosen = policy.select(entry.id, kind, available=available, target_accuracy=target_accuracy,
                           max_cost=max_cost, max_latency_ms=max_latency_ms)
    steps = tuple(
        Step(c, snapshot.test_budgets[c.test_budget], None if c.sleep_budget == RAW else entry.variants[c.sleep_budget])
        for c in chosen.choices
    )
    return Selection(steps=steps, scope=chosen.scope, scope_value=chosen.scope_value, kind=kind,
                     target_accuracy=chosen.target_accuracy, fallback=chosen.fallback, reason=chosen.reason,
                     policy_version=policy.version)
