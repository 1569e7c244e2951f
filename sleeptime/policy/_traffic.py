"""Expected queries per context over the life of one c' (until the next refresh).

With no traffic on record every context expects ``default_queries`` (the configured
``expected_queries_per_context``). With a query log, a context's rate is a gamma-Poisson posterior:
the prior is the corpus-average rate worth ``prior_windows`` windows of traffic, so a context never
asked still expects a little (it may be asked tomorrow), and a busy one expects about what it got.
The rate per window is scaled to the c' lifetime by ``lifetime_days / window_days``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def expected_queries(
    context_ids: Iterable[str],
    counts: Mapping[str, int] | None,
    default_queries: float,
    prior_windows: float = 0.5,
    window_days: float = 7.0,
    lifetime_days: float = 7.0,
) -> np.ndarray:
    """[C] expected queries for ``context_ids`` in order; ``counts`` are queries per context in
    the last ``window_days`` of the log (None or empty: no traffic on record)."""
    ids = list(context_ids)
    if not counts or sum(counts.values()) == 0:
        return np.full(len(ids), float(default_queries))
    observed = np.array([float(counts.get(c, 0)) for c in ids])
    # The corpus-average rate over every context the policy knows, asked or not.
    mean_rate = sum(counts.values()) / max(len(set(ids) | set(counts)), 1)
    posterior_rate = (prior_windows * mean_rate + observed) / (prior_windows + 1.0)
    return posterior_rate * (lifetime_days / window_days)


def prior_queries(counts: Mapping[str, int] | None, n_contexts: int, default_queries: float,
                  prior_windows: float = 0.5, window_days: float = 7.0, lifetime_days: float = 7.0) -> float:
    """What a context with no traffic of its own expects (a new context, or one never asked)."""
    if not counts or sum(counts.values()) == 0:
        return float(default_queries)
    mean_rate = sum(counts.values()) / max(n_contexts, len(counts), 1)
    return prior_windows * mean_rate / (prior_windows + 1.0) * (lifetime_days / window_days)
