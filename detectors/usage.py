"""Usage: a Poisson CUSUM on daily outgoing calls, and the rate of incoming calls."""

from __future__ import annotations

import math

from river import base, stats

__all__ = ["IncomingRate", "PoissonCusum"]


class PoissonCusum(base.DriftDetector):
    """Page's CUSUM on the log-likelihood ratio of a drop in a Poisson rate.

    As River's ``drift.PageHinkley(mode="down")``, but on counts: each update adds the
    log-likelihood ratio of the count under ``rho`` times the expected rate against the
    expected rate itself, divided by the counts' dispersion (variance / mean), and the sum
    is kept in ``[0, cap]``. The expected rate and the dispersion change day by day (the
    subscriber's baseline times the segment's ratio that day): set them with
    :meth:`expect` before each :meth:`update`.

    Each update also learns :attr:`observed`, the dispersion of the counts around what was
    expected (an exponentially weighted mean of the squared Pearson residuals, with the
    count-adaptive weight ``max(1/n, 2/(dispersion_span+1))``): the dispersion to divide
    by, measured against the expectation and not against the plain mean, which a weekly
    rhythm inflates (a business line calling 9 a weekday and 3 a weekend day is not a noisy
    one once each day is compared with its own expectation).

    Parameters
    ----------
    rho
        The drop the test is tuned to (0.5: half the usual rate).
    threshold
        Level at which a drift is detected.
    cap
        Ceiling of the level (so a recovery does not take forever).
    dispersion_span
        Span of the learned dispersion, in days.
    residual_cap
        Ceiling of one day's squared Pearson residual in :attr:`observed` (one day of a
        burst of calls must not make every drop look like noise for weeks).

    Examples
    --------
    Four calls a day, then two:

    >>> import random
    >>> rng = random.Random(12345)
    >>> cusum = PoissonCusum()
    >>> def poisson(lam):
    ...     k, p, limit = 0, 1.0, math.exp(-lam)
    ...     while (p := p * rng.random()) > limit:
    ...         k += 1
    ...     return k
    >>> for day in range(80):
    ...     cusum.expect(4.0, 1.0)
    ...     cusum.update(poisson(4.0 if day < 50 else 2.0))
    ...     if cusum.drift_detected:
    ...         print(f"drop detected on day {day}, level {cusum.level}")
    ...         break
    drop detected on day 59, level 7.98

    A business line's weekly rhythm, 9 calls a weekday and 2 a weekend day: the counts'
    variance is over twice their mean, but around each day's expectation they are as
    dispersed as Poisson counts (about 1):

    >>> cusum, counts = PoissonCusum(), []
    >>> for day in range(120):
    ...     rate = 9.0 if day % 7 < 5 else 2.0
    ...     cusum.expect(rate, 1.0)
    ...     counts.append(poisson(rate))
    ...     cusum.update(counts[-1])
    >>> mean = sum(counts) / len(counts)
    >>> variance = sum((c - mean) ** 2 for c in counts) / len(counts)
    >>> round(variance / mean, 1), round(cusum.observed, 1)
    (2.3, 1.2)

    """

    def __init__(self, rho: float = 0.5, threshold: float = 7.5, cap: float = 22.5,
                 dispersion_span: int = 90, residual_cap: float = 25.0):
        super().__init__()
        self.rho = rho
        self.threshold = threshold
        self.cap = cap
        self.dispersion_span = dispersion_span
        self.residual_cap = residual_cap
        self.level: float = 0
        self.rate = 1.0
        self.dispersion = 1.0
        self.observed = 1.0
        self.n = 0

    def expect(self, rate: float, dispersion: float) -> None:
        """The expected count of the next update, and the dispersion to scale it by."""
        self.rate = rate
        self.dispersion = dispersion

    def update(self, x: int | float) -> None:
        """One day's count."""
        rho = self.rho
        llr = (self.rate * (1.0 - rho) + x * math.log(rho)) / self.dispersion
        # Rounded so the stored state stays short; a zero is the integer 0 (shared).
        self.level = round(min(self.cap, max(0.0, self.level + llr)), 3) or 0
        self._drift_detected = self.level >= self.threshold
        if self.rate > 0:
            self.n += 1
            weight = max(1.0 / self.n, 2.0 / (self.dispersion_span + 1))
            residual = min(self.residual_cap, (x - self.rate) ** 2 / self.rate)
            self.observed = round(self.observed + weight * (residual - self.observed), 2)


class IncomingRate(stats.base.Univariate):
    """Incoming calls a day: a slow baseline and a fast (about a week) mean.

    Both are exponentially weighted means (River's ``stats.EWMean``) with a count-adaptive
    weight ``max(1/n, w)``, so the first days give the plain mean. :meth:`get` is the fast
    mean as a share of the baseline: near 1 normally, low when calls stop coming in (the
    subscriber is away or unreachable; one who moves to another SIM keeps them).

    Parameters
    ----------
    span
        Span of the baseline (weight ``2 / (span + 1)``).
    fast_weight
        Weight of the fast mean.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(12345)
    >>> rate = IncomingRate()
    >>> for day in range(70):
    ...     rate.update(rng.randint(2, 8) if day < 60 else 0)
    >>> rate.n, rate.base, rate.fast, round(rate.get(), 2)
    (70, 3.98, 0.27, 0.07)

    """

    def __init__(self, span: int = 90, fast_weight: float = 0.25):
        self.span = span
        self.fast_weight = fast_weight
        self.n = 0
        self.base: float = 0
        self.fast: float = 0

    def update(self, x: float) -> None:
        self.n += 1
        slow = max(1.0 / self.n, 2.0 / (self.span + 1))
        self.base = round(self.base + slow * (x - self.base), 2) or 0
        fast = max(1.0 / self.n, self.fast_weight)
        self.fast = round(self.fast + fast * (x - self.fast), 2) or 0

    def get(self) -> float:
        return self.fast / self.base if self.base > 0 else 1.0
