import math

import pytest

from sleeptime.policy import wilson_lower_bound


def _reference(successes: int, n: int, z: float) -> float:
    # Textbook form: (p + z^2/2n - z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    p = successes / n
    return (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [(8, 10, 0.4902), (10, 10, 0.7225), (0, 10, 0.0), (50, 100, 0.4038), (95, 100, 0.8882)],
)
def test_known_values(successes, n, expected):
    assert wilson_lower_bound(successes, n) == pytest.approx(expected, abs=5e-5)


def test_matches_formula_and_closed_forms():
    for s, n in [(1, 3), (7, 9), (123, 456), (999, 1000)]:
        assert wilson_lower_bound(s, n) == pytest.approx(_reference(s, n, 1.96), rel=1e-12)
    # p = 1: the bound is n / (n + z^2) exactly.
    for n in (1, 10, 35, 200):
        assert wilson_lower_bound(n, n) == pytest.approx(n / (n + 1.96**2), rel=1e-12)


def test_edge_cases():
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(0, 1000) == 0.0
    assert wilson_lower_bound(5, 10, z=0.0) == pytest.approx(0.5)
    assert 0.0 <= wilson_lower_bound(1, 1) <= 1.0
    with pytest.raises(ValueError):
        wilson_lower_bound(11, 10)
    with pytest.raises(ValueError):
        wilson_lower_bound(-1, 10)


def test_monotone_in_n_at_fixed_p():
    for p_num, p_den in [(1, 1), (9, 10), (1, 2), (1, 5)]:
        bounds = [wilson_lower_bound(p_num * k, p_den * k) for k in range(1, 60)]
        assert all(b2 > b1 for b1, b2 in zip(bounds, bounds[1:])), (p_num, p_den)
        assert bounds[-1] < p_num / p_den


def test_larger_z_is_more_conservative():
    assert wilson_lower_bound(90, 100, z=2.576) < wilson_lower_bound(90, 100, z=1.96) < wilson_lower_bound(90, 100, z=1.0)


def test_perfect_record_needs_about_35_trials_for_90_percent():
    # n / (n + 1.96^2) >= 0.9  <=>  n >= 9 * 1.96^2 = 34.57
    assert wilson_lower_bound(34, 34) < 0.9 <= wilson_lower_bound(35, 35)
