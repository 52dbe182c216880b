"""Population context: how a whole segment spends against its members' baselines, by day."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

__all__ = ["Population"]

POP_VERSION = 1


class Population:
    """Per-segment daily totals of observed and expected (baseline) amounts, in event time.

    Each subscriber day that closes with a ready baseline adds, per metric (spend in
    cents, outgoing calls in hundredths), its amount and its baseline to its segment's
    entry for that day (integers, so the sums do not depend on the order subscribers
    close in). The ratio of the sums over a window says how the segment as a whole does
    against its normal: about 1 in an ordinary fortnight, well below 1 when a public
    holiday or an outage hits everyone. A subscriber's own drop is judged against it.
    Entries live in a store keyed by segment, as plain versioned dicts:
    ``{"v": 1, "d": [[day, n, observed_0, expected_0, observed_1, expected_1], ...]}``.

    Parameters
    ----------
    store
        Mapping segment -> plain state (a dict, or a table in the service).
    keep_days
        Days of history kept per segment.
    min_count
        Subscriber-days a window needs before its ratio is trusted.

    Examples
    --------
    A segment of 50 subscribers each expecting 10.00 a day; a holiday week from day 20
    halves everyone's spend:

    >>> import random
    >>> rng = random.Random(12345)
    >>> pop = Population({})
    >>> for day in range(28):
    ...     factor = 0.5 if 20 <= day < 27 else 1.0
    ...     for member in range(50):
    ...         spend = round(100 * max(0.0, rng.gauss(10.0 * factor, 3.0)))
    ...         pop.add("sme", day, (spend, 1000))
    >>> round(pop.ratio("sme", 6, 19), 2), round(pop.ratio("sme", 14, 27), 2)
    (0.99, 0.77)
    >>> pop.ratio("government", 14, 27) is None
    True

    """

    def __init__(
        self, store: MutableMapping[str, dict[str, Any]], keep_days: int = 21, min_count: int = 30
    ):
        self.store = store
        self.keep_days = keep_days
        self.min_count = min_count

    def add(self, segment: str, day: int, amounts: tuple[int, ...]) -> None:
        """Add one subscriber day: ``(observed_0, expected_0, observed_1, ...)``."""
        state = self.store.get(segment)
        rows: list[list[int]] = state["d"] if state is not None else []
        i = len(rows) - 1
        while i >= 0 and rows[i][0] > day:
            i -= 1
        if i >= 0 and rows[i][0] == day:
            row = rows[i]
            row[1] += 1
            for k, value in enumerate(amounts, start=2):
                row[k] += value
        elif not rows or day > rows[-1][0] - self.keep_days:
            rows.insert(i + 1, [day, 1, *amounts])
            horizon = rows[-1][0] - self.keep_days
            while rows[0][0] <= horizon:
                rows.pop(0)
        else:
            return
        self.store[segment] = {"v": POP_VERSION, "d": rows}

    def ratio(
        self,
        segment: str,
        first_day: int,
        last_day: int,
        metric: int = 0,
        min_count: int | None = None,
    ) -> float | None:
        """Observed / expected of ``metric`` over ``first_day..last_day``; None if too thin."""
        state = self.store.get(segment)
        if state is None:
            return None
        observed = expected = count = 0
        k = 2 + 2 * metric
        for row in state["d"]:
            if first_day <= row[0] <= last_day and len(row) > k + 1:
                count += row[1]
                observed += row[k]
                expected += row[k + 1]
        if count < (self.min_count if min_count is None else min_count) or expected <= 0:
            return None
        return observed / expected

    def week_on_week(self, segment: str, last_day: int, days: int, metric: int = 0) -> float | None:
        """The segment's ratio over the ``days`` days to ``last_day`` over its ratio on the
        same weekdays a week before (None if either is too thin): about 1 in ordinary
        weeks, whatever their rhythm, and low when a holiday empties the segment's days.

        A holiday (days 14-20) halves everyone's calls, weekends (days 5, 6, 12, 13, ...)
        included; a plain ratio cannot tell it from a weekend:

        >>> pop = Population({})
        >>> for day in range(21):
        ...     weekend = 0.3 if day % 7 in (5, 6) else 1.0
        ...     holiday = 0.5 if day >= 14 else 1.0
        ...     for member in range(20):
        ...         pop.add("sme", day, (round(1000 * weekend * holiday), 1000))
        >>> round(pop.ratio("sme", 11, 13), 2), round(pop.week_on_week("sme", 13, 3), 2)
        (0.53, 1.0)
        >>> round(pop.ratio("sme", 14, 16), 2), round(pop.week_on_week("sme", 16, 3), 2)
        (0.5, 0.5)

        """
        now = self.ratio(segment, last_day - days + 1, last_day, metric)
        before = self.ratio(segment, last_day - days - 6, last_day - 7, metric)
        if now is None or before is None or before <= 0:
            return None
        return now / before
