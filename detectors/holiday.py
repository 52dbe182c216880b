"""Holidays: whether a segment is at one on a day, and why."""

from __future__ import annotations

from collections.abc import Iterable

from detectors.days import calendar_days
from detectors.population import Population

__all__ = ["Holidays"]

CALLS = 1  # the population's second metric: outgoing calls (the first is spend)


class Holidays:
    """Whether a segment is at a holiday on a day, and why: many of its people travel then,
    and forward their calls.

    A day of the operator's calendar is a holiday for every segment. Any other day is one
    for a segment whose outgoing calls over its last ``days`` closed days are below
    ``ratio`` of the same weekdays a week before (:meth:`Population.week_on_week`): that
    rule needs a few low days to see a holiday, the calendar knows it from the first.

    Parameters
    ----------
    population
        The segments' daily totals.
    calendar
        The operator's holidays (:func:`detectors.days.calendar_days` entries).
    ratio, days
        The rule on the calls: below ``ratio`` over the last ``days`` closed days.

    Examples
    --------
    Everyone's calls halve from day 14; day 10 is in the calendar:

    >>> pop = Population({})
    >>> for day in range(21):
    ...     for member in range(20):
    ...         pop.add("sme", day, (1000, 1000, 500 if day >= 14 else 1000, 1000))
    >>> holidays = Holidays(pop, ["1970-01-11"])
    >>> holidays.why("sme", 10)
    ("a holiday in the operator's calendar", {})
    >>> holidays.why("sme", 12) is None
    True
    >>> holidays.why("sme", 17)[1]
    {'segment_week_on_week': 0.5}

    """

    def __init__(self, population: Population, calendar: Iterable[str] = (),
                 ratio: float = 0.8, days: int = 3):
        self.population = population
        self.calendar = calendar_days(calendar)
        self.ratio = ratio
        self.days = days

    def why(self, segment: str, day: int) -> tuple[str, dict[str, float]] | None:
        """Why ``segment`` is at a holiday on ``day`` (words for a reason, and its
        figures), else None."""
        if day in self.calendar:
            return "a holiday in the operator's calendar", {}
        ratio = self.population.week_on_week(segment, day - 1, self.days, metric=CALLS)
        if ratio is None or ratio >= self.ratio:
            return None
        return (f"the {segment} segment's calls of the last {self.days} days are {ratio:.0%} "
                "of the same days a week before, a holiday",
                {"segment_week_on_week": round(ratio, 3)})
