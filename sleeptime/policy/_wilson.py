"""The Wilson score interval's lower bound: how low the true accuracy may plausibly be.

A measured accuracy of 10/10 is not evidence of 90 % accuracy; 200/200 is. The lower bound of
the Wilson score interval (Wilson 1927) turns "accuracy p on n trials" into a number that only
reaches a target when there is enough data, and it behaves well at p = 0, p = 1 and small n,
where the normal approximation does not.
"""

from __future__ import annotations

import math

import numpy as np


def wilson_lower_bound(successes: int, n: int, z: float = 1.96) -> float:
    """Lower bound of the Wilson score interval for ``successes`` out of ``n`` (0.0 when n == 0).

    ``z`` is the standard normal quantile of the interval (1.96: two-sided 95 %).
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if z < 0:
        raise ValueError(f"z must be >= 0, got {z}")
    if n == 0:
        return 0.0
    p = successes / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    bound = (centre - margin) / (1 + z2 / n)
    return float(min(1.0, max(0.0, bound)))


def wilson_lower_bounds(successes: np.ndarray, n: np.ndarray, z: float = 1.96) -> np.ndarray:
    """Vectorized :func:`wilson_lower_bound` (0.0 where n == 0)."""
    s = np.asarray(successes, dtype=float)
    m = np.asarray(n, dtype=float)
    safe = np.where(m > 0, m, 1.0)
    p = s / safe
    z2 = z * z
    centre = p + z2 / (2 * safe)
    margin = z * np.sqrt(np.clip(p * (1 - p), 0.0, None) / safe + z2 / (4 * safe * safe))
    bound = (centre - margin) / (1 + z2 / safe)
    return np.where(m > 0, np.clip(bound, 0.0, 1.0), 0.0)
