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

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sleeptime.policy._estimate import Estimates, estimate, logit, sigmoid
from sleeptime.policy._optimize import Plan, Problem, optimise, solve
from sleeptime.policy._traffic import expected_queries, prior_queries
from sleeptime.policy._wilson import wilson_lower_bound
from sleeptime.policy_settings import PolicySettings

RAW = "none"
CORPUS = "*"
ANY_KIND = "*"

ANSWER_COLUMNS = (
    "query_id", "context_id", "kind", "sleep_budget", "test_budget", "correct", "completion_tokens", "cost_usd",
)
SLEEP_COLUMNS = ("context_id", "sleep_budget", "sleep_tokens", "sleep_cost_usd")
# What the fit needs from the answers: sums per (context, kind, option), and the labeled queries per
# (context, kind). The warehouse keeps both (summary_answers, summary_labeled), so the publish's fit
# reads about a third as many rows as there are answers, already grouped.
KEY_COLUMNS = ("context_id", "kind", "sleep_budget", "test_budget")
STATS_COLUMNS = (*KEY_COLUMNS, "n", "correct", "completion_tokens", "completion_n", "cost_usd", "latency_s", "latency_n")
LABELED_COLUMNS = ("context_id", "kind", "queries")
# Expected queries at which the allocation of a context the fit never saw is tabulated.
ALLOCATION_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


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


def summarise_answers(answers: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(stats, labeled) from graded answer rows, as the warehouse's summaries hold them."""
    df = prepare_answers(answers)
    if "latency_s" not in df:
        df = df.assign(latency_s=np.nan)
    grouped = df.groupby(list(KEY_COLUMNS), observed=True, sort=False)
    stats = grouped.agg(
        n=("correct", "size"), correct=("correct", "sum"), completion_tokens=("completion_tokens", "sum"),
        completion_n=("completion_tokens", "count"), cost_usd=("cost_usd", "sum"), latency_s=("latency_s", "sum"),
        latency_n=("latency_s", "count"),
    ).reset_index()
    labeled = df.groupby(["context_id", "kind"], observed=True, sort=False)["query_id"].nunique().rename("queries").reset_index()
    return prepare_stats(stats), labeled


def prepare_stats(stats: pd.DataFrame) -> pd.DataFrame:
    """Stats rows in the fit's dtypes (categorical keys, float sums), whatever produced them: the
    policy version hashes them, so the warehouse's and pandas' sums must look alike."""
    missing = [c for c in STATS_COLUMNS if c not in stats.columns]
    if missing:
        raise ValueError(f"answer stats lack columns {missing}")
    df = stats.loc[:, list(STATS_COLUMNS)].copy()
    for col in KEY_COLUMNS:
        dtype = df[col].dtype
        if not (isinstance(dtype, pd.CategoricalDtype) and all(isinstance(c, str) for c in dtype.categories)):
            df[col] = df[col].astype(str).astype("category")
    for col in ("n", "correct", "completion_n", "latency_n"):
        df[col] = pd.to_numeric(df[col]).fillna(0).astype(np.int64)
    for col in ("completion_tokens", "cost_usd", "latency_s"):
        df[col] = pd.to_numeric(df[col]).astype(float).fillna(0.0)
    return df[df["n"] > 0].reset_index(drop=True)


def _prepare_labeled(labeled: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in LABELED_COLUMNS if c not in labeled.columns]
    if missing:
        raise ValueError(f"labeled-query counts lack columns {missing}")
    df = labeled.loc[:, list(LABELED_COLUMNS)].copy()
    df["context_id"] = df["context_id"].astype(str)
    df["kind"] = df["kind"].astype(str)
    df["queries"] = pd.to_numeric(df["queries"]).astype(np.int64)
    return df.sort_values(["context_id", "kind"], kind="mergesort").reset_index(drop=True)


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
        means = f.groupby("sleep_budget")[["sleep_tokens", "sleep_cost_usd"]].mean()
        self._mean = {b: (float(r.sleep_tokens), float(r.sleep_cost_usd)) for b, r in means.iterrows()}

    def mean(self, budget: str) -> tuple[float, float]:
        if budget == RAW:
            return (0.0, 0.0)
        if budget not in self._mean:
            raise ValueError(f"answers use sleep budget {budget!r} but the sleep frame has no row for it")
        return self._mean[budget]

    @functools.cached_property
    def _per_context(self) -> dict[tuple[str, str], tuple[float, float]]:
        f = self.frame
        return {
            (c, b): (float(t), float(u))
            for c, b, t, u in zip(
                f["context_id"].tolist(), f["sleep_budget"].tolist(), f["sleep_tokens"].tolist(), f["sleep_cost_usd"].tolist()
            )
        }

    def for_context(self, context_id: str, budget: str) -> tuple[float, float]:
        if budget == RAW:
            return (0.0, 0.0)
        return self._per_context.get((context_id, budget)) or self.mean(budget)

    def arrays(self, contexts: list[str], budgets: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """[C, S] tokens and USD, as ``for_context`` gives them, for every pair at once."""
        means = np.array([self.mean(b) for b in budgets], dtype=float).reshape(len(budgets), 2)
        tokens = np.repeat(means[None, :, 0], len(contexts), axis=0)
        usd = np.repeat(means[None, :, 1], len(contexts), axis=0)
        ci, si = {c: i for i, c in enumerate(contexts)}, {b: i for i, b in enumerate(budgets) if b != RAW}
        f = self.frame
        rows = f["context_id"].map(ci)
        cols = f["sleep_budget"].map(si)
        known = rows.notna() & cols.notna()
        r, c = rows[known].to_numpy(dtype=int), cols[known].to_numpy(dtype=int)
        tokens[r, c] = f["sleep_tokens"][known].to_numpy(dtype=float)
        usd[r, c] = f["sleep_cost_usd"][known].to_numpy(dtype=float)
        return tokens, usd


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


def _means(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean test tokens and USD per answer for each group of ``keys``."""
    sums = df.groupby(keys, observed=True, as_index=False)[["n", "completion_tokens", "completion_n", "cost_usd"]].sum()
    sums["completion_tokens"] = sums["completion_tokens"] / sums["completion_n"].where(sums["completion_n"] > 0)
    sums["cost_usd"] = sums["cost_usd"] / sums["n"]
    return sums


def _grid(df: pd.DataFrame, labeled: pd.DataFrame, est: Estimates, costs: SleepCosts, settings: PolicySettings) -> _Grid:
    contexts = sorted(df["context_id"].unique().tolist())
    kinds = sorted(df["kind"].unique().tolist())
    by_test = df.groupby("test_budget", observed=True)[["completion_tokens", "completion_n"]].sum()
    test_size = (by_test["completion_tokens"] / by_test["completion_n"].where(by_test["completion_n"] > 0)).to_dict()
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

    means = _means(df, ["kind", "sleep_budget", "test_budget"])
    corpus_means = _means(df, ["sleep_budget", "test_budget"])
    tokens = fill(means, "kind", ji, "completion_tokens", (J, S, T))
    usd = fill(means, "kind", ji, "cost_usd", (J, S, T))
    tokens = np.where(np.isnan(tokens), fill(corpus_means, None, None, "completion_tokens", (S, T))[None], tokens)
    usd = np.where(np.isnan(usd), fill(corpus_means, None, None, "cost_usd", (S, T))[None], usd)

    sleep_tokens, sleep_usd = costs.arrays(contexts, sleep)
    mean_sleep = [costs.mean(s_name) for s_name in sleep]

    known = labeled[labeled["context_id"].isin(list(ci)) & labeled["kind"].isin(list(ji))]
    counts = np.zeros((C, J))
    counts[known["context_id"].map(ci).to_numpy(), known["kind"].map(ji).to_numpy()] = known["queries"].to_numpy()
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


def _mix_choices(acc: np.ndarray, cost: np.ndarray, mix: np.ndarray, sleep_index: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """For a query of unknown kind, per context: the (sleep, test) index among the raw context and
    the context's own c' (``sleep_index[c]``) that is best for its kind mix at price ``lam``.
    ``acc`` [C, J, S, T], ``cost`` [J, S, T], ``mix`` [C, J]; ties go to the raw context, then to
    the cheaper test budget."""
    avg_acc = np.einsum("cj,cjst->cst", mix, np.nan_to_num(acc, nan=0.0))
    avg_cost = np.einsum("cj,jst->cst", mix, cost)
    value = avg_cost - lam * avg_acc  # [C, S, T]
    rows = np.arange(len(sleep_index))
    raw, own = value[:, 0, :], value[rows, sleep_index, :]
    raw_t, own_t = raw.argmin(axis=1), own.argmin(axis=1)
    use_own = own[rows, own_t] < raw[rows, raw_t]
    return np.where(use_own, sleep_index, 0), np.where(use_own, own_t, raw_t)


def _mix_choice(acc: np.ndarray, cost: np.ndarray, mix: np.ndarray, sleep_index: int, lam: float) -> tuple[int, int]:
    """``_mix_choices`` for one context (``acc`` [J, S, T], ``mix`` [J])."""
    s, t = _mix_choices(acc[None], cost, mix[None], np.array([sleep_index]), lam)
    return int(s[0]), int(t[0])


def _digest(frame: pd.DataFrame, columns: list[str]) -> str:
    """An order-independent digest of ``frame``'s rows: the count, sum and xor of per-row hashes
    (vectorized; the version must not depend on the order the warehouse returns rows in, and a
    sorted CSV of 3.6M answers took 6 s). Floats are hashed at float32 precision: DuckDB (the
    warehouse's summaries) and pandas (a fit from answer rows) add the same values in different
    orders, which changes the last bits of most sums."""
    if frame.empty:
        return "0"
    rows = frame[columns].reset_index(drop=True)
    floats = rows.select_dtypes("floating").columns
    rows[floats] = rows[floats].astype(np.float32)
    h = pd.util.hash_pandas_object(rows, index=False).to_numpy(dtype=np.uint64)
    return f"{len(h)}:{int(h.sum(dtype=np.uint64))}:{int(np.bitwise_xor.reduce(h))}"


def _version(settings: PolicySettings, stats: pd.DataFrame, labeled: pd.DataFrame, sleep: pd.DataFrame,
             traffic: Mapping[str, int] | None) -> str:
    digest = hashlib.sha256()
    digest.update(b"policy-v2\n")
    digest.update(settings.to_json().encode())
    digest.update(b"\nstats\n" + _digest(stats, list(STATS_COLUMNS)).encode())
    digest.update(b"\nlabeled\n" + _digest(labeled, list(LABELED_COLUMNS)).encode())
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
    stats, labeled = summarise_answers(answers)
    return fit_policy_from_stats(stats, labeled, sleep, settings, traffic)


def fit_policy_from_stats(
    stats: pd.DataFrame,
    labeled: pd.DataFrame,
    sleep: pd.DataFrame,
    settings: PolicySettings = PolicySettings(),
    traffic: Mapping[str, int] | None = None,
) -> Any:
    """``fit_policy`` from answer sums per (context, kind, option) (``STATS_COLUMNS``) and labeled
    queries per (context, kind) (``LABELED_COLUMNS``): what the warehouse's summaries hold."""
    from sleeptime.policy._policy import Policy

    return Policy.build(fit_result(stats, labeled, sleep, settings, traffic))


def fit_result(
    stats: pd.DataFrame,
    labeled: pd.DataFrame,
    sleep: pd.DataFrame,
    settings: PolicySettings = PolicySettings(),
    traffic: Mapping[str, int] | None = None,
) -> _FitResult:
    """The fit itself (estimates, plan, version), before it becomes rows and a Policy."""
    df = prepare_stats(stats)
    if df.empty:
        raise ValueError("no labeled answers to fit a policy on")
    labeled = _prepare_labeled(labeled)
    costs = SleepCosts(sleep)
    for budget in df["sleep_budget"].unique():
        costs.mean(budget)  # a clear error when a sleep budget has no cost row
    est = estimate(df, settings.z)
    g = _grid(df, labeled, est, costs, settings)
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
    floors = {g.kinds.index(k): f for k, f in settings.kind_floors.items() if k in g.kinds}
    with np.errstate(invalid="ignore", over="ignore"):
        plan, met = optimise(problem, required, floors)
    return _FitResult(settings, df, costs, est, g, problem, plan, met, required, n_eff, traffic,
                      _version(settings, df, labeled, costs.frame, traffic))


@dataclass
class _FitResult:
    settings: PolicySettings
    df: pd.DataFrame  # answer stats (STATS_COLUMNS)
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
        sums = self.df.groupby(["sleep_budget", "test_budget"], observed=True)[["latency_s", "latency_n"]].sum()
        sums = sums[sums["latency_n"] > 0]
        return {k: float(v) for k, v in (sums["latency_s"] / sums["latency_n"] * 1000.0).items()}


__all__ = ["SleepCosts", "fit_policy", "fit_policy_from_stats", "prepare_answers", "required_accuracy",
           "summarise_answers"]
