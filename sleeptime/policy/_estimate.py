"""How accurate each option is, per scope, with empirical-Bayes shrinkage corpus -> kind -> context.

An option is a (sleep budget, test budget) pair. Its accuracy is estimated at three levels:

* corpus: the pooled rate over every labeled answer;
* kind: a beta-binomial posterior whose prior is the corpus rate with a strength ``m_kind``
  fitted by maximising the marginal likelihood (type-II maximum likelihood: empirical Bayes),
  which measures how much the kinds really differ;
* context: the context's own answers move the estimate on the log-odds scale by how far they
  fall above or below what its kinds predict, shrunk with a strength ``m_context`` fitted the
  same way across contexts. A context's difficulty is shared by all its queries, so one
  adjustment per (context, option) uses all of them, whatever their kinds; a (context, kind)
  cell with one or two queries could not carry an estimate of its own.

Why shrinkage instead of an all-or-nothing "enough queries" threshold: a context's own answers
count as soon as they exist, in proportion to how much contexts are seen to differ. When the
data shows no difference between contexts, the strength is large and the context estimate is the
kind estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import betaincinv, betaln, ndtr

OPTION = ["sleep_budget", "test_budget"]
STRENGTH_RANGE = (1.0, 1e4)  # a prior worth between one answer and (practically) complete pooling
_EPS = 1e-3


STRENGTH_GRID = np.logspace(0, 4, 81)  # 1 .. 10,000 pseudo-answers
# One scalar is fitted from all the groups of a level; past this many groups an evenly spaced
# subset (in the caller's order, so deterministic) pins it as well as all of them (the grid's step
# is 10^0.05) at a fraction of the cost: 250k context groups took 1.9 s, 40k take 0.3 s.
MAX_STRENGTH_GROUPS = 40_000


def marginal_strength(correct: np.ndarray, n: np.ndarray, prior_mean: np.ndarray) -> float:
    """The prior strength m that maximises the beta-binomial marginal likelihood of groups with
    ``correct[i]`` of ``n[i]`` right around ``prior_mean[i]`` (type-II maximum likelihood, over a
    log grid; the likelihood is flat in m when the groups agree, so the largest m wins ties).

    One m is fitted for all the options of a level at once (pass them concatenated): a single
    option's groups carry little information about how much groups differ."""
    correct, n = np.asarray(correct, float), np.asarray(n, float)
    mu = np.clip(np.asarray(prior_mean, float), _EPS, 1 - _EPS)
    keep = n > 0
    correct, n, mu = correct[keep], n[keep], mu[keep]
    if len(n) > MAX_STRENGTH_GROUPS:
        every = np.linspace(0, len(n) - 1, MAX_STRENGTH_GROUPS).astype(int)
        correct, n, mu = correct[every], n[every], mu[every]
    if len(n) < 2:
        return STRENGTH_RANGE[1]

    def best_of(grid: np.ndarray) -> float:
        m = grid[:, None]
        a, b = m * mu[None], m * (1 - mu[None])
        loglik = (betaln(a + correct[None], b + (n - correct)[None]) - betaln(a, b)).sum(axis=1)
        return float(grid[np.flatnonzero(loglik >= loglik.max() - 1e-9)[-1]])

    # Coarse then fine (the likelihood is smooth in log m): 17 + 11 evaluations instead of 81.
    coarse = best_of(STRENGTH_GRID[::5])
    fine = STRENGTH_GRID[(STRENGTH_GRID >= coarse / 10**0.25 - 1e-9) & (STRENGTH_GRID <= coarse * 10**0.25 + 1e-9)]
    return best_of(fine)


def beta_lower(mean: np.ndarray, size: np.ndarray, z: float) -> np.ndarray:
    """The one-sided lower credible bound of a Beta(mean * size, (1 - mean) * size) at the normal
    quantile ``z`` (1.96: 2.5 %)."""
    alpha = ndtr(-z)  # the normal upper tail (scipy.special: importing scipy.stats costs 2 s)
    mean = np.clip(np.asarray(mean, float), _EPS / 10, 1 - _EPS / 10)
    size = np.maximum(np.asarray(size, float), 1e-6)
    return betaincinv(mean * size, (1 - mean) * size, alpha)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, float)))


@dataclass
class Estimates:
    """Accuracy estimates per option at each level, and what each context's own answers add."""

    corpus: pd.DataFrame  # sleep_budget, test_budget, n, correct, accuracy, estimate, estimate_lower
    kind: pd.DataFrame  # kind, + the same columns
    context: pd.DataFrame  # context_id, sleep_budget, test_budget, n, correct, expected, estimate, log_odds_shift
    m_kind: float
    m_context: float

    def cell(self, kind_estimate: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """A (context, kind) estimate: the kind's estimate moved by the context's log-odds shift."""
        return sigmoid(logit(kind_estimate) + shift)


def estimate(df: pd.DataFrame, z: float) -> Estimates:
    """Estimates from graded answers summed per (context, kind, option): columns context_id, kind,
    sleep_budget, test_budget, n (answers) and correct (right ones)."""
    corpus = df.groupby(OPTION, sort=True, observed=True)[["n", "correct"]].sum().reset_index()
    corpus["accuracy"] = corpus["correct"] / corpus["n"]

    kind = df.groupby(["kind", *OPTION], sort=True, observed=True)[["n", "correct"]].sum().reset_index()
    kind = kind.merge(corpus[[*OPTION, "accuracy"]].rename(columns={"accuracy": "prior"}), on=OPTION)
    m_kind = marginal_strength(kind["correct"].to_numpy(), kind["n"].to_numpy(), kind["prior"].to_numpy())
    kind["accuracy"] = kind["correct"] / kind["n"]
    kind["estimate"] = (m_kind * kind["prior"] + kind["correct"]) / (m_kind + kind["n"])
    kind["estimate_lower"] = beta_lower(kind["estimate"], m_kind + kind["n"], z)
    kind = kind.drop(columns="prior")
    # The corpus row is the kinds' posterior mixed by how often each kind is asked.
    corpus["estimate"] = corpus["accuracy"]
    corpus["estimate_lower"] = beta_lower(corpus["accuracy"], corpus["n"] + 1.0, z)

    # What each answer's kind predicts, then per (context, option) observed against predicted.
    with_prior = df[["context_id", "kind", *OPTION, "n", "correct"]].merge(
        kind[["kind", *OPTION, "estimate"]], on=["kind", *OPTION], how="left")
    with_prior["expected"] = with_prior["estimate"] * with_prior["n"]
    ctx = with_prior.groupby(["context_id", *OPTION], sort=True, observed=True)[["n", "correct", "expected"]].sum().reset_index()
    # Heterogeneity across contexts beyond what their kinds explain: each context's answers around
    # the rate its kinds predict.
    prior_rate = ctx["expected"] / ctx["n"]
    m_context = marginal_strength(ctx["correct"].to_numpy(), ctx["n"].to_numpy(), prior_rate.to_numpy())
    posterior = (m_context * prior_rate + ctx["correct"]) / (m_context + ctx["n"])
    ctx["estimate"] = posterior
    ctx["log_odds_shift"] = logit(posterior) - logit(prior_rate)
    return Estimates(corpus=corpus, kind=kind, context=ctx, m_kind=m_kind, m_context=m_context)
