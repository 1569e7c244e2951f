"""Choosing (variant, test budget) for one query from the in-memory policy table.

Without request overrides this is exactly ``Policy.choose(context_id, kind)``: scopes from the
most specific (the context, when the policy has a row for it; the query kind; the corpus), and
in the first scope that has an adequate option (Wilson lower bound >= target) the cheapest one.
When no scope has one, the policy's fallback: the raw context at the largest test budget.

Request overrides, applied without refitting anything:

* ``target_accuracy`` replaces the policy's target; adequacy is recomputed from the table's
  ``wilson_lower`` column.
* ``max_cost`` (the policy's ``cost_weighted``: amortized sleep tokens + t x test tokens per
  query) and ``max_latency_ms`` (the measured mean model latency of the pair in the evaluation
  answers) drop the options above them before adequacy is looked at. When no adequate option
  is left in any scope, the most accurate option within the caps (corpus scope; highest Wilson
  lower bound, then cheapest) is used and flagged as a fallback. When nothing at all is within
  the caps, ``Unsatisfiable`` names the cap (the API answers 422).

An option needs what it names: its test budget configured, and for a sleep budget the
context's sample-0 variant at that budget; options the context lacks are skipped.

The plan for the failure chain: the chosen option, then the next-cheapest adequate option of
the same scope, then the raw context at the largest test budget within the caps.

The query kind is inferred from the question (``infer_kind``), or given by the client.
"""

from __future__ import annotations

from dataclasses import dataclass

from sleeptime.domain import TestBudget, Variant
from sleeptime.policy._fit import CORPUS, FALLBACK_REASON, RAW
from sleeptime.service.snapshot import ContextEntry, Option, ServingSnapshot


def infer_kind(question: str) -> str | None:
    """The policy's query kind for a question: "If ..." is a counterfactual, "... together" a
    sum; anything else None (no kind scope: the context, then the corpus)."""
    text = question.strip().lower()
    if text.startswith("if ") or text.startswith("if,"):
        return "counterfactual"
    if " together" in text:
        return "sum"
    return None


class Unsatisfiable(ValueError):
    """No option satisfies a request's caps."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Step:
    """One option to try: what to run and what the table predicted for it."""

    option: Option
    test_budget: TestBudget
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

    @property
    def primary(self) -> Step:
        return self.steps[0]


def _step(snapshot: ServingSnapshot, entry: ContextEntry, option: Option) -> Step | None:
    budget = snapshot.test_budgets.get(option.test_budget)
    if budget is None:
        return None
    if option.sleep_budget == RAW:
        return Step(option, budget, None)
    variant = entry.variants.get(option.sleep_budget)
    return Step(option, budget, variant) if variant is not None else None


def select(
    snapshot: ServingSnapshot,
    entry: ContextEntry,
    kind: str | None,
    target_accuracy: float | None = None,
    max_cost: float | None = None,
    max_latency_ms: float | None = None,
) -> Selection:
    target = snapshot.target_accuracy if target_accuracy is None else target_accuracy
    capped = max_cost is not None or max_latency_ms is not None

    def fits(o: Option) -> bool:
        if max_cost is not None and (o.cost_weighted is None or o.cost_weighted > max_cost):
            return False
        if max_latency_ms is not None and (o.latency_ms is None or o.latency_ms > max_latency_ms):
            return False
        return True

    def last_resort(exclude: list[Step]) -> Step | None:
        taken = {s.option.key for s in exclude}
        for o in reversed(snapshot.raw_options):  # largest test budget first
            if fits(o):
                return None if o.key in taken else _step(snapshot, entry, o)
        return None

    scopes = [("context", entry.id)]
    if kind is not None:
        scopes.append(("kind", kind))
    scopes.append(("corpus", CORPUS))
    default_target = target == snapshot.target_accuracy
    for scope, value in scopes:
        steps: list[Step] = []
        pool = snapshot.adequate.get((scope, value), ()) if default_target else snapshot.ranked.get((scope, value), ())
        for o in pool:
            if o.wilson_lower is None or o.wilson_lower < target or (capped and not fits(o)):
                continue
            step = _step(snapshot, entry, o)
            if step is not None:
                steps.append(step)
                if len(steps) == 2:
                    break
        if steps:
            extra = last_resort(steps)
            chosen = steps[0].option
            return Selection(
                steps=tuple([*steps, *([extra] if extra else [])]),
                scope=scope, scope_value=value, kind=kind, target_accuracy=target, fallback=False,
                reason=(
                    f"cheapest option in scope {scope}={value} whose Wilson lower bound {chosen.wilson_lower:.3f} "
                    f"reaches the target {target:g}" + (" within the request's caps" if capped else "")
                ),
            )

    if not capped:
        step = last_resort([])
        if step is None:
            raise Unsatisfiable("context_id", "no test budget is configured for the raw context")
        return Selection(
            steps=(step,), scope="corpus", scope_value=CORPUS, kind=kind, target_accuracy=target, fallback=True,
            reason=f"{FALLBACK_REASON} {target:g}; raw context at the largest test budget",
        )

    within = [
        (s, o) for o in snapshot.ranked.get(("corpus", CORPUS), ()) if fits(o)
        for s in [_step(snapshot, entry, o)] if s is not None
    ]
    if not within:
        field = "max_cost" if max_cost is not None else "max_latency_ms"
        cheapest = min((o.cost_weighted for o in snapshot.ranked.get(("corpus", CORPUS), ()) if o.cost_weighted is not None), default=None)
        fastest = min((o.latency_ms for o in snapshot.ranked.get(("corpus", CORPUS), ()) if o.latency_ms is not None), default=None)
        detail = []
        if max_cost is not None:
            detail.append(f"max_cost {max_cost:g} (cheapest option: {cheapest:.1f} weighted tokens)" if cheapest is not None else f"max_cost {max_cost:g}")
        if max_latency_ms is not None:
            detail.append(f"max_latency_ms {max_latency_ms:g} (fastest option: {fastest:.1f} ms)" if fastest is not None else f"max_latency_ms {max_latency_ms:g}")
        raise Unsatisfiable(field, "no option is within " + " and ".join(detail))
    # Most accurate first (Wilson lower bound), then the cheapest; the list is already cheapest first.
    within.sort(key=lambda so: -(so[1].wilson_lower or 0.0))
    best = within[0][0]
    extra = last_resort([best])
    return Selection(
        steps=tuple([best, *([extra] if extra else [])]), scope="corpus", scope_value=CORPUS, kind=kind,
        target_accuracy=target, fallback=True,
        reason=(
            f"no option within the request's caps reaches the target {target:g}; the most accurate option within "
            f"them (Wilson lower bound {best.option.wilson_lower or 0.0:.3f})"
        ),
    )
