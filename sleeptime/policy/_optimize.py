"""The cheapest plan whose expected accuracy over the query mix reaches a required level.

A plan gives every context one sleep budget (the c' to compute: "none" is the raw context) and,
for every query kind, a test budget used with that c' or with the raw context. Its cost per
query is the sleep cost amortized over the context's expected queries plus the test cost; its
accuracy is the mix accuracy, each (context, kind) weighted by its expected share of queries.

This is a multiple-choice knapsack (one choice per context, a budget on accuracy). It is solved
by its Lagrangian: for a price ``lam`` on one point of accuracy each context independently
minimises ``cost - lam * accuracy``, and ``lam`` is bisected until the mix accuracy reaches the
requirement. A kind with a floor gets its own extra price ``mu[kind]``. A Lagrangian solution is
optimal for the accuracy it reaches, but at the critical price many contexts can be indifferent
(alike contexts all switch at once) and the jump overshoots the requirement; so the contexts
that differ between the plans just below and just above the critical price are switched one at
a time, cheapest accuracy first, until the requirement is met (the classic greedy completion of
a multiple-choice knapsack: within one context's worth of the exact optimum).

Arrays: C contexts, J kinds, S sleep budgets (index 0 is "none"), T test budgets (cheapest first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BISECTION_STEPS = 60


@dataclass
class Problem:
    accuracy: np.ndarray  # [C, J, S, T] estimated accuracy; NaN: option not available
    test_cost: np.ndarray  # [J, S, T] cost of the test-time answer of one query
    sleep_cost: np.ndarray  # [C, S] cost of computing the context's c' (0 for "none"); NaN: unavailable
    queries: np.ndarray  # [C] expected queries per context
    mix: np.ndarray  # [C, J] each context's kind mix (rows sum to 1)

    @property
    def weights(self) -> np.ndarray:
        """[C, J] share of all expected queries."""
        w = self.queries[:, None] * self.mix
        return w / w.sum()


@dataclass
class Plan:
    sleep: np.ndarray  # [C] chosen sleep budget index
    option_sleep: np.ndarray  # [C, J] sleep index used by the kind (the context's own, or 0 = raw)
    option_test: np.ndarray  # [C, J] test budget index
    accuracy: float  # expected mix accuracy
    cost: float  # expected cost per query (sleep amortized)
    kind_accuracy: np.ndarray  # [J] expected accuracy per kind
    lam: float
    mu: np.ndarray  # [J]


def solve(problem: Problem, lam: float, mu: np.ndarray) -> Plan:
    """Each context's best (sleep budget, test budget per kind) at prices ``lam`` and ``mu``."""
    p, tc = problem.accuracy, problem.test_cost
    price = lam + mu[None, :, None, None]
    value = tc[None] - price * p  # [C, J, S, T]
    value = np.where(np.isnan(value), np.inf, value)
    own_t = value.argmin(axis=3)  # ties: the cheaper test budget
    own = np.take_along_axis(value, own_t[..., None], axis=3)[..., 0]  # [C, J, S]
    raw, raw_t = own[:, :, 0], own_t[:, :, 0]
    use_raw = raw[:, :, None] <= own  # ties: the raw context, which needs no c'
    best = np.where(use_raw, raw[:, :, None], own)
    per_query = np.where(problem.mix[:, :, None] > 0, problem.mix[:, :, None] * best, 0.0).sum(axis=1)  # [C, S]
    sleep_cost = np.where(np.isnan(problem.sleep_cost), np.inf, problem.sleep_cost)
    total = sleep_cost + problem.queries[:, None] * per_query
    sleep = total.argmin(axis=1)  # ties: the smaller sleep budget
    rows = np.arange(len(sleep))
    raw_here = use_raw[rows, :, sleep]  # [C, J]
    option_sleep = np.where(raw_here, 0, sleep[:, None])
    option_test = np.where(raw_here, raw_t, own_t[rows, :, sleep])
    return _score(problem, sleep, option_sleep, option_test, lam, mu)


def _score(problem: Problem, sleep, option_sleep, option_test, lam: float, mu: np.ndarray) -> Plan:
    c_idx = np.arange(len(sleep))[:, None]
    j_idx = np.arange(problem.mix.shape[1])[None, :]
    acc = problem.accuracy[c_idx, j_idx, option_sleep, option_test]
    acc = np.nan_to_num(acc, nan=0.0)
    test = problem.test_cost[j_idx, option_sleep, option_test]
    w = problem.weights
    sleep_cost = np.nan_to_num(problem.sleep_cost[np.arange(len(sleep)), sleep], nan=0.0)
    total_queries = problem.queries.sum()
    cost = float((w * test).sum() + sleep_cost.sum() / total_queries)
    kind_w = w.sum(axis=0)
    kind_acc = np.divide((w * acc).sum(axis=0), kind_w, out=np.zeros_like(kind_w), where=kind_w > 0)
    return Plan(sleep, option_sleep, option_test, float((w * acc).sum()), cost, kind_acc, lam, mu.copy())


def _price_ceiling(problem: Problem) -> float:
    finite = np.concatenate([problem.test_cost[np.isfinite(problem.test_cost)].ravel(),
                             (np.nan_to_num(problem.sleep_cost, nan=0.0) / problem.queries[:, None]).ravel()])
    return 1e4 * (float(finite.max()) if finite.size else 1.0) + 1.0


def _bisect(fn, reached, hi: float) -> tuple[float, float]:
    """(lo, hi): ``reached(fn(price))`` fails at lo and holds at hi, hi the smallest such price
    found in [0, hi] (hi itself when none; (0, 0) when it holds at 0)."""
    if reached(fn(0.0)):
        return 0.0, 0.0
    lo = 0.0
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        if reached(fn(mid)):
            hi = mid
        else:
            lo = mid
    return lo, hi


def _per_context(problem: Problem, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """Each context's share of the mix accuracy and of the cost per query under ``plan``."""
    c_idx = np.arange(len(plan.sleep))[:, None]
    j_idx = np.arange(problem.mix.shape[1])[None, :]
    w = problem.weights
    acc = np.nan_to_num(problem.accuracy[c_idx, j_idx, plan.option_sleep, plan.option_test], nan=0.0)
    test = problem.test_cost[j_idx, plan.option_sleep, plan.option_test]
    sleep = np.nan_to_num(problem.sleep_cost[c_idx[:, 0], plan.sleep], nan=0.0)
    return (w * acc).sum(axis=1), (w * test).sum(axis=1) + sleep / problem.queries.sum()


def _complete(problem: Plan, below: Plan, above: Plan, required: float) -> Plan:
    """Start from ``below`` and switch contexts to their ``above`` plan, the cheapest accuracy
    first, until the mix accuracy reaches ``required``."""
    acc_lo, cost_lo = _per_context(problem, below)
    acc_hi, cost_hi = _per_context(problem, above)
    gain, extra = acc_hi - acc_lo, cost_hi - cost_lo
    differs = np.flatnonzero((below.sleep != above.sleep) | (below.option_test != above.option_test).any(axis=1)
                             | (below.option_sleep != above.option_sleep).any(axis=1))
    differs = differs[gain[differs] > 0]
    order = differs[np.lexsort((differs, extra[differs] / gain[differs]))]
    need = required - acc_lo.sum()
    reached = np.cumsum(gain[order])
    k = int(np.searchsorted(reached, need - 1e-12)) + 1  # contexts to switch
    switch = order[:k]
    sleep, o_sleep, o_test = below.sleep.copy(), below.option_sleep.copy(), below.option_test.copy()
    sleep[switch], o_sleep[switch], o_test[switch] = above.sleep[switch], above.option_sleep[switch], above.option_test[switch]
    return _score(problem, sleep, o_sleep, o_test, above.lam, above.mu)


def optimise(problem: Problem, required: float, floors: dict[int, float] | None = None) -> tuple[Plan, bool]:
    """The cheapest Lagrangian plan with mix accuracy >= ``required`` and kind j's accuracy >=
    ``floors[j]``; when no plan reaches them, the most accurate plan and False."""
    floors = floors or {}
    n_kinds = problem.mix.shape[1]
    mu = np.zeros(n_kinds)
    hi = _price_ceiling(problem)
    lam = lam_below = hi
    for _ in range(3):  # floors and the mix price interact; a few alternations settle them
        lam_below, lam = _bisect(lambda x: solve(problem, x, mu), lambda plan: plan.accuracy >= required - 1e-12, hi)
        changed = False
        for j, floor in floors.items():
            plan = solve(problem, lam, mu)
            if plan.kind_accuracy[j] >= floor - 1e-12:
                continue

            def with_mu(x: float, j: int = j) -> Plan:
                trial = mu.copy()
                trial[j] = x
                return solve(problem, lam, trial)

            mu[j] = _bisect(with_mu, lambda plan, j=j, floor=floor: plan.kind_accuracy[j] >= floor - 1e-12, hi)[1]
            changed = True
        if not changed:
            break
    plan = solve(problem, lam, mu)
    if lam > 0 and plan.accuracy >= required - 1e-12:
        completed = _complete(problem, solve(problem, lam_below, mu), plan, required)
        if (completed.accuracy >= required - 1e-12 and completed.cost <= plan.cost
                and all(completed.kind_accuracy[j] >= f - 1e-12 for j, f in floors.items())):
            plan = completed
    met = plan.accuracy >= required - 1e-12 and all(plan.kind_accuracy[j] >= f - 1e-12 for j, f in floors.items())
    return plan, bool(met)
