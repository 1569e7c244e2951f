"""Fitting the selection policy: estimates, the expected query mix, the optimiser, stored rows.

The target, plainly: the expected accuracy over the expected query mix (every labeled context
weighted by its expected queries, each context's kinds as its labeled queries) must reach
``target_accuracy`` with confidence: the Wilson lower bound of the mix accuracy, over the
effective number of labeled queries behind it, reaches the target. Optional per-kind floors
add one constraint each. Among the plans that meet it, the cheapest expected cost per query:

    cost_weighted = sleep_tokens_of_the_context / expected_queries_of_the_context + t * test_tokens
    cost_usd      = sleep_usd_of_the_context / expected_queries_of_the_context + test_usd

The plan gives every context one sleep budget (its allocation: the c' to compute) and a test
budget per kind; contexts the fit never saw get the plan of an average context (the ``kind`` and
``corpus`` rows) and an allocation by their expected traffic (the ``allocation_default`` rows).
Rationale and the alternatives weighed: docs/analysis.md, "Selection policy".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from sleeptime.policy._estimate import Estimates, estimate, logit, sigmoid
from sleeptime.policy._optimize import Plan, Problem, optimise, solve
from sleeptime.policy._traffic import expected_queries, prior_queries
from sleeptime.policy._wilson import wilson_lower_bound

RAW = "none"
CORPUS = "*"
ANY_KIND = "*"

ANSWER_COLUMNS = (
    "query_id", "context_id", "kind", "sleep_budget", "test_budget", "correct", "completion_tokens", "cost_usd",
)
SLEEP_COLUMNS = ("context_id", "sleep_budget", "sleep_tokens", "sleep_cost_usd")
# Expected queries at which the allocation of a context the fit never saw is tabulated.
ALLOCATION_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


@dataclass(frozen=True)
class PolicySettings:
    target_accuracy: float = 0.9
    z: float = 1.96
    test_token_weight: float = 10.0
    expected_queries_per_context: float = 10.0  # per context when no traffic is on record
    cost_metric: Literal["weighted_tokens", "usd"] = "weighted_tokens"
    kind_floors: tuple[tuple[str, float], ...] = ()  # (kind, accuracy floor), sorted
    traffic_prior_windows: float = 0.5
    traffic_window_days: float = 7.0
    refresh_interval_days: float = 7.0
    test_budget_order: tuple[str, ...] = ()  # cheapest .. largest, optional
    sleep_budget_order: tuple[str, ...] = ()  # "none" .. largest, optional

    def __post_init__(self) -> None:
        if not 0.0 < self.target_accuracy <= 1.0:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.z < 0:
            raise ValueError(f"z must be >= 0, got {self.z}")
        if self.test_token_weight < 0:
            raise ValueError(f"test_token_weight must be >= 0, got {self.test_token_weight}")
        if self.expected_queries_per_context <= 0:
            raise ValueError(f"expected_queries_per_context must be > 0, got {self.expected_queries_per_context}")
        if self.cost_metric not in ("weighted_tokens", "usd"):
            raise ValueError(f"cost_metric must be 'weighted_tokens' or 'usd', got {self.cost_metric!r}")
        floors = tuple(sorted((str(k), float(v)) for k, v in dict(self.kind_floors).items()))
        for kind, floor in floors:
            if not 0.0 <= floor <= 1.0:
                raise ValueError(f"kind_floors[{kind!r}] must be in [0, 1], got {floor}")
        if self.traffic_prior_windows < 0 or self.traffic_window_days <= 0 or self.refresh_interval_days <= 0:
            raise ValueError("traffic_prior_windows must be >= 0 and the traffic window and refresh interval > 0")
        object.__setattr__(self, "kind_floors", floors)
        object.__setattr__(self, "test_budget_order", tuple(self.test_budget_order))
        object.__setattr__(self, "sleep_budget_order", tuple(self.sleep_budget_order))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PolicySettings:
        fields = json.loads(text)
        known = {k: v for k, v in fields.items() if k in cls.__dataclass_fields__}
        known["kind_floors"] = tuple(tuple(pair) for pair in known.get("kind_floors", ()))
        return cls(**known)


def required_accuracy(target: float, n_effective: float, z: float) -> float:
    """The smallest mix accuracy whose Wilson lower bound over ``n_effective`` queries reaches
    ``target`` (above 1 when none does)."""
    if n_effective <= 0:
        return float("inf")
    if wilson_lower_bound(n_effective, n_effective, z) < target - 1e-12:
        return float("inf")
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if wilson_lower_bound(mid * n_effective, n_effective, z) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def prepare_answers(answers: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ANSWER_COLUMNS if c not in answers.columns]
    if missing:
        raise ValueError(f"answers frame lacks columns {missing}")
    columns = list(ANSWER_COLUMNS) + (["latency_s"] if "latency_s" in answers.columns else [])
    df = answers.loc[answers["correct"].notna(), columns].copy()
    df["query_id"] = df["query_id"].astype(str)
    df["kind"] = df["kind"].fillna("unknown")
    # Categorical keys: every groupby of the fit then works on codes (factorizing 3.6M strings
    # per groupby took about 2 s of a 17 s fit at 10M answers).
    for col in ("context_id", "kind", "sleep_budget", "test_budget"):
        df[col] = df[col].astype(str).astype("category")
    df["correct"] = df["correct"].astype(bool)
    df["completion_tokens"] = pd.to_numeric(df["completion_tokens"]).astype(float)
    df["cost_usd"] = pd.to_numeric(df["cost_usd"]).fillna(0.0).astype(float)
    if "latency_s" in df:
        df["latency_s"] = pd.to_numeric(df["latency_s"]).astype(float)
    return df.reset_index(drop=True)


class SleepCosts:
    """Sleep-time tokens and USD per context for a sleep budget ("none" costs nothing); a
    context without a row for a budget gets that budget's mean over contexts."""

    def __init__(self, sleep: pd.DataFrame):
        missing = [c for c in SLEEP_COLUMNS if c not in sleep.columns]
        if missing:
            raise ValueError(f"sleep frame lacks columns {missing}")
        df = sleep.loc[:, list(SLEEP_COLUMNS)].copy()
        df["context_id"] = df["context_id"].astype(str)
        df["sleep_budget"] = df["sleep_budget"].astype(str)
        df["sleep_tokens"] = pd.to_numeric(df["sleep_tokens"]).fillna(0.0).astype(float)
        df["sleep_cost_usd"] = pd.to_numeric(df["sleep_cost_usd"]).fillna(0.0).astype(float)
        df = df[df["sleep_budget"] != RAW]
        # One row per (context, budget) by contract; sum defensively if a caller passes samples apart.
        self.frame = df.groupby(["context_id", "sleep_budget"], as_index=False)[["sleep_tokens", "sleep_cost_usd"]].sum()
        f = self.frame
        self._per_context = {
            (c, b): (float(t), float(u))
            for c, b, t, u in zip(
                f["context_id"].tolist(), f["sleep_budget"].tolist(), f["sleep_tokens"].tolist(), f["sleep_cost_usd"].tolist()
            )
        }
        means = f.groupby("sleep_budget")[["sleep_tokens", "sleep_cost_usd"]].mean()
        self._mean = {b: (float(r.sleep_tokens), float(r.sleep_cost_usd)) for b, r in means.iterrows()}

    def mean(self, budget: str) -> tuple[float, float]:
        if budget == RAW:
            return (0.0, 0.0)
        if budget not in self._mean:
            raise ValueError(f"answers use sleep budget {budget!r} but the sleep frame has no row for it")
        return self._mean[budget]

    def for_context(self, context_id: str, budget: str) -> tuple[float, float]:
        if budget == RAW:
            return (0.0, 0.0)
        return self._per_context.get((context_id, budget)) or self.mean(budget)


def _order(present: list[str], preferred: tuple[str, ...], size: Mapping[str, float], first: str | None = None) -> list[str]:
    """``present`` names ordered as ``preferred`` lists them, the rest by ``size``; ``first`` leads."""
    rank = {name: i for i, name in enumerate(preferred)}
    known = sorted((n for n in present if n in rank), key=rank.__getitem__)
    rest = sorted((n for n in present if n not in rank), key=lambda n: (size.get(n, 0.0), n))
    out = known + rest
    if first is not None and first in out:
        out.remove(first)
        out.insert(0, first)
    return out


@dataclass
class _Grid:
    """The arrays the optimiser works on, with the names behind every index."""

    contexts: list[str]
    kinds: list[str]
    sleep: list[str]
    test: list[str]
    kind_estimate: np.ndarray  # [J, S, T]
    kind_lower: np.ndarray  # [J, S, T]
    shift: np.ndarray  # [C, S, T] log-odds shift of the context's own answers
    own_n: np.ndarray  # [C, S, T]
    own_correct: np.ndarray  # [C, S, T]
    tokens: np.ndarray  # [J, S, T] mean test tokens
    usd: np.ndarray  # [J, S, T] mean test USD
    sleep_tokens: np.ndarray  # [C, S]
    sleep_usd: np.ndarray  # [C, S]
    mean_sleep_tokens: np.ndarray  # [S]
    mean_sleep_usd: np.ndarray  # [S]
    counts: np.ndarray  # [C, J] labeled queries
    corpus_mix: np.ndarray  # [J]

    def accuracy(self) -> np.ndarray:
        return sigmoid(logit(self.kind_estimate)[None] + self.shift[:, None])


def _grid(df: pd.DataFrame, est: Estimates, costs: SleepCosts, settings: PolicySettings) -> _Grid:
    contexts = sorted(df["context_id"].unique().tolist())
    kinds = sorted(df["kind"].unique().tolist())
    test_size = df.groupby("test_budget")["completion_tokens"].mean().to_dict()
    sleep_size = {b: costs.mean(b)[0] for b in df["sleep_budget"].unique()}
    sleep = _order(df["sleep_budget"].unique().tolist(), settings.sleep_budget_order, sleep_size, first=RAW)
    test = _order(df["test_budget"].unique().tolist(), settings.test_budget_order, test_size)
    ci, ji = {c: i for i, c in enumerate(contexts)}, {k: i for i, k in enumerate(kinds)}
    si, ti = {s: i for i, s in enumerate(sleep)}, {t: i for i, t in enumerate(test)}
    C, J, S, T = len(contexts), len(kinds), len(sleep), len(test)

    def fill(frame: pd.DataFrame, key: str | None, index: Mapping[str, int] | None, column: str, shape, default=np.nan):
        out = np.full(shape, default, dtype=float)
        s = frame["sleep_budget"].map(si).to_numpy()
        t = frame["test_budget"].map(ti).to_numpy()
        values = frame[column].to_numpy(dtype=float)
        if key is None:
            out[s, t] = values
        else:
            out[frame[key].map(index).to_numpy(), s, t] = values
        return out

    corpus_est = fill(est.corpus, None, None, "estimate", (S, T))
    corpus_lower = fill(est.corpus, None, None, "estimate_lower", (S, T))
    kind_est = fill(est.kind, "kind", ji, "estimate", (J, S, T))
    kind_lower = fill(est.kind, "kind", ji, "estimate_lower", (J, S, T))
    kind_est = np.where(np.isnan(kind_est), corpus_est[None], kind_est)  # a kind never measured at an option
    kind_lower = np.where(np.isnan(kind_lower), corpus_lower[None], kind_lower)
    shift = fill(est.context, "context_id", ci, "log_odds_shift", (C, S, T), default=0.0)
    own_n = fill(est.context, "context_id", ci, "n", (C, S, T), default=0.0)
    own_correct = fill(est.context, "context_id", ci, "correct", (C, S, T), default=0.0)

    means = df.groupby(["kind", "sleep_budget", "test_budget"], as_index=False)[["completion_tokens", "cost_usd"]].mean()
    corpus_means = df.groupby(["sleep_budget", "test_budget"], as_index=False)[["completion_tokens", "cost_usd"]].mean()
    tokens = fill(means, "kind", ji, "completion_tokens", (J, S, T))
    usd = fill(means, "kind", ji, "cost_usd", (J, S, T))
    tokens = np.where(np.isnan(tokens), fill(corpus_means, None, None, "completion_tokens", (S, T))[None], tokens)
    usd = np.where(np.isnan(usd), fill(corpus_means, None, None, "cost_usd", (S, T))[None], usd)

    sleep_tokens = np.zeros((C, S))
    sleep_usd = np.zeros((C, S))
    for s_name, s in si.items():
        for c_name, c in ci.items():
            sleep_tokens[c, s], sleep_usd[c, s] = costs.for_context(c_name, s_name)
    mean_sleep = [costs.mean(s_name) for s_name in sleep]

    counts_frame = df.groupby(["context_id", "kind"])["query_id"].nunique()
    counts = np.zeros((C, J))
    counts[counts_frame.index.get_level_values(0).map(ci), counts_frame.index.get_level_values(1).map(ji)] = counts_frame.to_numpy()
    corpus_mix = counts.sum(axis=0) / counts.sum()
    return _Grid(
        contexts=contexts, kinds=kinds, sleep=sleep, test=test, kind_estimate=kind_est, kind_lower=kind_lower,
        shift=shift, own_n=own_n, own_correct=own_correct, tokens=tokens, usd=usd, sleep_tokens=sleep_tokens,
        sleep_usd=sleep_usd, mean_sleep_tokens=np.array([m[0] for m in mean_sleep]),
        mean_sleep_usd=np.array([m[1] for m in mean_sleep]), counts=counts, corpus_mix=corpus_mix,
    )


def _effective_n(counts: np.ndarray, weights: np.ndarray) -> float:
    """Kish's effective sample size of the labeled queries weighted to the expected mix: each of
    the n queries of a (context, kind) carries weight[c, j] / n."""
    mask = counts > 0
    per_query = np.divide(weights, counts, out=np.zeros_like(weights), where=mask)
    total = (per_query * counts).sum()
    squares = (per_query**2 * counts).sum()
    return float(total**2 / squares) if squares > 0 else 0.0


def _mix_choice(acc: np.ndarray, cost: np.ndarray, mix: np.ndarray, sleep_index: int, lam: float) -> tuple[int, int]:
    """For a query of unknown kind: the (sleep, test) index among the raw context and the
    context's own c' that is best for the kind mix at price ``lam``."""
    avg_acc = np.tensordot(mix, np.nan_to_num(acc, nan=0.0), axes=1)  # [S, T]
    avg_cost = np.tensordot(mix, cost, axes=1)
    best = None
    for s in sorted({0, sleep_index}):
        value = avg_cost[s] - lam * avg_acc[s]
        t = int(np.argmin(value))
        if best is None or value[t] < best[0]:
            best = (value[t], s, t)
    return best[1], best[2]


def _digest(frame: pd.DataFrame, columns: list[str]) -> str:
    """An order-independent digest of ``frame``'s rows: the count, sum and xor of per-row hashes
    (vectorized; the version must not depend on the order the warehouse returns rows in, and a
    sorted CSV of 3.6M answers took 6 s)."""
    if frame.empty:
        return "0"
    h = pd.util.hash_pandas_object(frame[columns].reset_index(drop=True), index=False).to_numpy(dtype=np.uint64)
    return f"{len(h)}:{int(h.sum(dtype=np.uint64))}:{int(np.bitwise_xor.reduce(h))}"


def _version(settings: PolicySettings, answers: pd.DataFrame, sleep: pd.DataFrame, traffic: Mapping[str, int] | None) -> str:
    digest = hashlib.sha256()
    digest.update(b"policy-v2\n")
    digest.update(settings.to_json().encode())
    digest.update(b"\nanswers\n" + _digest(answers, list(ANSWER_COLUMNS)).encode())
    digest.update(b"\nsleep\n" + _digest(sleep, list(SLEEP_COLUMNS)).encode())
    digest.update(b"\ntraffic\n")
    digest.update(json.dumps(sorted((traffic or {}).items())).encode())
    return "p_" + digest.hexdigest()[:16]


def fit_policy(
    answers: pd.DataFrame,
    sleep: pd.DataFrame,
    settings: PolicySettings = PolicySettings(),
    traffic: Mapping[str, int] | None = None,
) -> Any:
    """Fit the policy on labeled ``answers``, per-context ``sleep`` costs and, when there is any,
    ``traffic`` (queries per context in the last ``traffic_window_days`` of the query log)."""
    from sleeptime.policy._policy import Policy

    df = prepare_answers(answers)
    if df.empty:
        raise ValueError("no labeled answers to fit a policy on")
    costs = SleepCosts(sleep)
    for budget in df["sleep_budget"].unique():
        costs.mean(budget)  # a clear error when a sleep budget has no cost row
    est = estimate(df, settings.z)
    g = _grid(df, est, costs, settings)
    usd = settings.cost_metric == "usd"
    weight = settings.test_token_weight
    acc = g.accuracy()
    queries = expected_queries(
        g.contexts, traffic, settings.expected_queries_per_context, settings.traffic_prior_windows,
        settings.traffic_window_days, settings.refresh_interval_days,
    )
    mix = (g.counts + g.corpus_mix[None]) / (g.counts.sum(axis=1, keepdims=True) + 1.0)
    problem = Problem(
        accuracy=acc,
        test_cost=g.usd if usd else weight * g.tokens,
        sleep_cost=g.sleep_usd if usd else g.sleep_tokens,
        queries=queries,
        mix=mix,
    )
    n_eff = _effective_n(g.counts, problem.weights)
    required = required_accuracy(settings.target_accuracy, n_eff, settings.z)
    floors = {g.kinds.index(k): f for k, f in settings.kind_floors if k in g.kinds}
    with np.errstate(invalid="ignore", over="ignore"):
        plan, met = optimise(problem, required, floors)
    return Policy.build(_FitResult(settings, df, costs, est, g, problem, plan, met, required, n_eff, traffic,
                                   _version(settings, df, costs.frame, traffic)))


@dataclass
class _FitResult:
    settings: PolicySettings
    df: pd.DataFrame
    costs: SleepCosts
    est: Estimates
    grid: _Grid
    problem: Problem
    plan: Plan
    met: bool
    required: float
    n_effective: float
    traffic: Mapping[str, int] | None
    version: str

    def default_plan(self, queries: float) -> Plan:
        """The plan of an average context the fit never saw, expecting ``queries`` queries."""
        g = self.grid
        usd = self.settings.cost_metric == "usd"
        problem = Problem(
            accuracy=g.kind_estimate[None],
            test_cost=self.problem.test_cost,
            sleep_cost=(g.mean_sleep_usd if usd else g.mean_sleep_tokens)[None],
            queries=np.array([max(queries, 1e-9)]),
            mix=g.corpus_mix[None],
        )
        with np.errstate(invalid="ignore", over="ignore"):
            return solve(problem, self.plan.lam, self.plan.mu)

    def sleep_by_queries(self, queries: float) -> np.ndarray:
        """[C] each known context's best sleep budget index if it expected ``queries`` queries."""
        problem = Problem(self.problem.accuracy, self.problem.test_cost, self.problem.sleep_cost,
                          np.full(len(self.grid.contexts), float(queries)), self.problem.mix)
        with np.errstate(invalid="ignore", over="ignore"):
            return solve(problem, self.plan.lam, self.plan.mu).sleep

    def prior_queries(self) -> float:
        s = self.settings
        return prior_queries(self.traffic, len(self.grid.contexts), s.expected_queries_per_context,
                             s.traffic_prior_windows, s.traffic_window_days, s.refresh_interval_days)

    def latency_ms(self) -> dict[tuple[str, str], float]:
        if "latency_s" not in self.df:
            return {}
        means = self.df.groupby(["sleep_budget", "test_budget"])["latency_s"].mean() * 1000.0
        return {k: float(v) for k, v in means.items() if v == v}


__all__ = ["PolicySettings", "SleepCosts", "fit_policy", "prepare_answers", "required_accuracy"]
