"""Drop model: a ~90-day exponentially weighted baseline against a recent window.

Used for daily spend (in cents) and for daily outgoing calls (in hundredths of a call).
"""

from __future__ import annotations

import math
from typing import Any

from river import stats

__all__ = ["SpendDrop"]


class SpendDrop(stats.base.Univariate):
    """A daily amount of one subscriber (spend, or calls): recent window versus baseline.

    The last ``recent_days`` closed days are kept exactly (integer cents, a whole number of
    weeks so the weekly rhythm cancels out); each day leaving that window feeds an
    exponentially weighted mean and variance with span ``baseline_days``, so the baseline
    and the recent window never overlap and a slow decline is not absorbed into the
    baseline before it is noticed.

    A River univariate statistic: :meth:`update` adds a closed day, :meth:`get` is the
    recent window as a share of the baseline (:attr:`ratio`).

    The baseline is River's ``stats.EWMean`` / ``stats.EWVar`` recurrence (Finch, 2009)
    written out on plain floats, with a count-adaptive weight ``max(1/n, 2/(span+1))`` so
    the first weeks give the plain mean. River 0.26's statistics are Rust objects that
    cannot be stored as plain numbers, and the recurrence is three lines; a unit test
    checks it against River.

    Parameters
    ----------
    baseline_days
        Span of the exponential baseline (about the operators' 3-month horizon).
    recent_days
        Length of the recent window, in days.
    scale
        Stored integers per unit (100: cents of a yuan; 1: whole calls). Coarser is
        shorter in the store.

    Examples
    --------
    Sixty days around 20.00 a day with a weekday rhythm, then a slow decline to 40%:

    >>> import random
    >>> rng = random.Random(12345)
    >>> model = SpendDrop()
    >>> for day in range(110):
    ...     level = 20.0 if day < 60 else 20.0 * max(0.4, 1 - (day - 60) / 40)
    ...     weekly = 0.6 if day % 7 in (5, 6) else 1.15
    ...     model.update(round(100 * max(0.0, rng.gauss(level * weekly, 4.0))))
    ...     if model.ready and model.ratio < 0.6 and model.z < -2.5:
    ...         break
    >>> day, round(model.ratio, 2), round(model.z, 1)
    (86, 0.57, -4.7)
    >>> f"{model.recent_total:.2f} vs {model.baseline_total:.2f}"
    '154.99 vs 269.79'

    State is a short list of numbers and round-trips exactly:

    >>> SpendDrop.from_state(model.to_state()).to_state() == model.to_state()
    True

    """

    def __init__(self, baseline_days: int = 90, recent_days: int = 14, scale: int = 100):
        self.baseline_days = baseline_days
        self.recent_days = recent_days
        self.scale = scale
        self.alpha = 2.0 / (baseline_days + 1)
        self.n = 0
        self.mean = 0.0
        self.var = 0.0
        self.recent: list[int] = []

    def update(self, x: float) -> None:
        """Add one closed day's amount, in integer units of ``1 / scale``."""
        recent = self.recent
        recent.append(x)  # type: ignore[arg-type]  # an int, as the engine passes it
        if len(recent) > self.recent_days:
            self._learn(recent.pop(0) / self.scale)

    def _learn(self, x: float) -> None:
        self.n += 1
        a = max(1.0 / self.n, self.alpha)
        diff = x - self.mean
        incr = a * diff
        # Rounded so the stored state stays short; cents are the currency's resolution.
        self.mean = round(self.mean + incr, 3)
        self.var = round((1.0 - a) * (self.var + diff * incr), 2)

    def shift(self, per_day: float) -> None:
        """Move the baseline and the recent window by ``per_day`` (a plan fee change)."""
        self.mean = round(max(0.0, self.mean + per_day), 3)
        cents = round(per_day * self.scale)
        self.recent = [max(0, c + cents) for c in self.recent]

    def window(self, days: int) -> tuple[float, float, float]:
        """``(recent, expected, spread)`` over the last ``days`` days of the window.

        The spread counts the day-to-day noise of the recent days and the uncertainty of a
        baseline learned from few days (its effective sample size, at most half the span).
        """
        recent = sum(self.recent[-days:]) / self.scale
        expected = self.mean * days
        n_eff = max(1.0, min(float(self.n), self.baseline_days / 2.0))
        spread = max(math.sqrt(days * self.var * (1.0 + days / n_eff)), 0.02 * expected, 0.01)
        return recent, expected, spread

    def add_late(self, days_ago: int, cents: int) -> bool:
        """Add late spend to a closed day still in the recent window; False if too old."""
        if 0 <= days_ago < len(self.recent):
            self.recent[len(self.recent) - 1 - days_ago] += cents
            return True
        return False

    def get(self) -> float:
        """The recent window as a share of the baseline (:attr:`ratio`)."""
        return self.ratio

    @property
    def ready(self) -> bool:
        """A full recent window and at least as many baseline days."""
        return len(self.recent) == self.recent_days and self.n >= self.recent_days

    @property
    def recent_total(self) -> float:
        """Spend over the recent window."""
        return sum(self.recent) / self.scale

    @property
    def baseline_total(self) -> float:
        """Expected spend over a window as long as the recent one."""
        return self.mean * self.recent_days

    @property
    def ratio(self) -> float:
        """Recent spend as a share of the baseline (1.0 when there is no baseline)."""
        base = self.baseline_total
        return self.recent_total / base if base > 0 else 1.0

    @property
    def ratio_week(self) -> float:
        """The last 7 days' spend as a share of a baseline week."""
        base = self.mean * 7
        return sum(self.recent[-7:]) / self.scale / base if base > 0 else 1.0

    @property
    def z(self) -> float:
        """Standard errors by which the recent total lies below (negative) the baseline.

        Days are treated as independent, which overstates the noise of a window of whole
        weeks for a subscriber with a weekly rhythm: conservative.
        """
        base = self.baseline_total
        spread = max(math.sqrt(self.recent_days * self.var), 0.02 * base, 0.01)
        return (self.recent_total - base) / spread

    def to_state(self) -> list[float]:
        """``[n, mean, var, *recent_cents]``."""
        return [self.n, self.mean, self.var] + self.recent  # exact size (no spare slots)

    @classmethod
    def from_state(
        cls, state: list[float], baseline_days: int = 90, recent_days: int = 14, scale: int = 100
    ) -> SpendDrop:
        """Rebuild a model from :meth:`to_state`."""
        model = cls(baseline_days, recent_days, scale)
        model.n = int(state[0])
        model.mean = state[1]
        model.var = state[2]
        model.recent = [int(c) for c in state[3:]]
        return model

    @staticmethod
    def pack(first: list[float], second: list[float]) -> list[float]:
        """One list for the states of two models that learn on the same days.

        ``[n, mean_1, var_1, mean_2, var_2, *recent_1, *recent_2]``: the count and one list
        header are stored once (the engine's spend and usage models always close the same
        days). :meth:`unpack` reverses it.

        Examples
        --------
        >>> a, b = SpendDrop(scale=10), SpendDrop(scale=1)
        >>> for day in range(16):
        ...     a.update(50 + day)
        ...     b.update(day % 3)
        >>> packed = SpendDrop.pack(a.to_state(), b.to_state())
        >>> [m.to_state() for m in SpendDrop.unpack(packed, scales=(10, 1))] == [
        ...     a.to_state(), b.to_state()]
        True

        """
        return [first[0], first[1], first[2], second[1], second[2]] + first[3:] + second[3:]

    @classmethod
    def unpack(
        cls,
        state: list[Any],
        baseline_days: int = 90,
        recent_days: int = 14,
        scales: tuple[int, int] = (100, 100),
    ) -> tuple[SpendDrop, SpendDrop]:
        """The two models of a :meth:`pack` ed state (``scales``: theirs, in order)."""
        first = cls(baseline_days, recent_days, scales[0])
        second = cls(baseline_days, recent_days, scales[1])
        first.n = second.n = int(state[0])
        first.mean, first.var, second.mean, second.var = state[1:5]
        k = 5 + (len(state) - 5) // 2
        # Slices are new lists; the amounts are already integers (as stored).
        first.recent = state[5:k]
        second.recent = state[k:]
        return first, second

    @staticmethod
    def pack_models(first: SpendDrop, second: SpendDrop) -> list[float]:
        """:meth:`pack` of two models' states, without building them separately."""
        return [first.n, first.mean, first.var, second.mean, second.var] + first.recent \
            + second.recent
