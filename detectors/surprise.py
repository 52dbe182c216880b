"""How surprising it is that members of a group move together: the binomial tail, the
densest cluster of days, and the risk score of a surprise (:mod:`detectors.group`)."""

from __future__ import annotations

import math

__all__ = ["binomial_surprise", "densest_cluster", "surprise_risk"]


def binomial_surprise(k: int, n: int, p: float) -> float:
    """``-log10 P(X >= k)`` for ``X ~ Binomial(n, p)``: how surprising ``k`` of ``n`` is.

    Examples
    --------
    Three of six members is far more surprising than three of sixty:

    >>> round(binomial_surprise(3, 6, 0.005), 2), round(binomial_surprise(3, 60, 0.005), 2)
    (5.61, 2.46)
    >>> binomial_surprise(0, 10, 0.005)
    0.0

    """
    if k <= 0 or n <= 0:
        return 0.0
    if k > n:
        return math.inf
    log_p, log_q = math.log(p), math.log1p(-p)
    lg = math.lgamma
    total = 0.0
    base = None
    for j in range(k, n + 1):
        log_term = lg(n + 1) - lg(j + 1) - lg(n - j + 1) + j * log_p + (n - j) * log_q
        if base is None:
            base = log_term
        total += math.exp(log_term - base)
        if j > k and log_term - base < -40:  # the rest cannot matter
            break
    assert base is not None
    return max(0.0, -(base + math.log(total)) / math.log(10))


def densest_cluster(days: list[int], window: int) -> tuple[int, int]:
    """Most days within ``window`` of each other, and the first day of that cluster.

    >>> densest_cluster([3, 10, 11, 12, 30], 5)
    (3, 10)
    """
    days = sorted(days)
    best, first, i = 0, -1, 0
    for j, d in enumerate(days):
        while d - days[i] >= window:
            i += 1
        if j - i + 1 > best:
            best, first = j - i + 1, days[i]
    return best, first


def surprise_risk(surprise: float) -> float:
    """Risk score of a surprise: 0.45 at 3 (yellow), 0.7 at 6 (red), towards 0.99."""
    if surprise < 3.0:
        return round(0.15 * surprise, 3)
    if surprise < 6.0:
        return round(0.45 + (surprise - 3.0) * 0.25 / 3.0, 3)
    return round(min(0.99, 0.7 + (surprise - 6.0) * 0.25 / 6.0), 3)
