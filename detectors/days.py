"""Event-time days in the operator's time zone.

A subscriber's events are added to counters of the day they happened on (sums of
integers, so the order the calls and billing streams interleave in cannot change them).
A day closes once event time passes its end plus the allowed lateness; an event for a
closed day is *late*: counted, and used where it still can be.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone

__all__ = ["Clock", "calendar_days", "parse_ts"]

DAY_S = 86400
_EPOCH_DAY = -date(1970, 1, 1).toordinal()  # a date's ordinal plus this: its day number


def parse_ts(ts: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp with an offset (``Z`` allowed).

    Examples
    --------
    >>> parse_ts("2026-03-01T08:00:00+08:00")
    1772323200.0
    >>> parse_ts("2026-03-01T00:00:00Z")
    1772323200.0

    """
    return datetime.fromisoformat(ts).timestamp()


def calendar_days(entries: Iterable[str]) -> frozenset[int]:
    """The operator days (numbered as :meth:`Clock.day` numbers them) of calendar entries,
    each a date ``YYYY-MM-DD`` or an inclusive range ``YYYY-MM-DD..YYYY-MM-DD``.

    Examples
    --------
    >>> sorted(calendar_days(["2026-02-15..2026-02-17", "2026-05-01"]))
    [20499, 20500, 20501, 20574]
    >>> calendar_days(["2026-02-17..2026-02-15"])
    Traceback (most recent call last):
    ...
    ValueError: holiday '2026-02-17..2026-02-15': the range ends before it begins

    """
    days: set[int] = set()
    for entry in entries:
        first, _, last = entry.partition("..")
        try:
            start, end = date.fromisoformat(first), date.fromisoformat(last or first)
        except ValueError:
            raise ValueError(f"holiday {entry!r}: expected YYYY-MM-DD or "
                             f"YYYY-MM-DD..YYYY-MM-DD") from None
        if end < start:
            raise ValueError(f"holiday {entry!r}: the range ends before it begins")
        days.update(range(_EPOCH_DAY + start.toordinal(), _EPOCH_DAY + end.toordinal() + 1))
    return frozenset(days)


class Clock:
    """Maps event time to operator days and back.

    Parameters
    ----------
    tz_offset_hours
        The operator's offset from UTC.
    allowed_lateness_s
        How long after its end a day stays open.

    Examples
    --------
    >>> clock = Clock(tz_offset_hours=8, allowed_lateness_s=3600)
    >>> day = clock.day(parse_ts("2026-03-01T23:30:00+08:00"))
    >>> clock.iso(clock.day_start(day))
    '2026-03-01T00:00:00+08:00'
    >>> clock.iso(clock.close_time(day))
    '2026-03-02T01:00:00+08:00'
    >>> clock.closable(parse_ts("2026-03-02T00:59:59+08:00")) == day - 1
    True
    >>> clock.closable(parse_ts("2026-03-02T01:00:00+08:00")) == day
    True

    """

    def __init__(self, tz_offset_hours: float = 8.0, allowed_lateness_s: float = 3600.0):
        self.tz_offset_hours = tz_offset_hours
        self.allowed_lateness_s = allowed_lateness_s
        self._offset_s = tz_offset_hours * 3600.0
        self._tz = timezone(timedelta(hours=tz_offset_hours))

    def day(self, epoch: float) -> int:
        """The operator day an instant falls on (days since 1970-01-01 local)."""
        return int((epoch + self._offset_s) // DAY_S)

    def day_start(self, day: int) -> float:
        """Epoch seconds at which ``day`` begins."""
        return day * DAY_S - self._offset_s

    def close_time(self, day: int) -> float:
        """Epoch seconds at which ``day`` closes (its end plus the allowed lateness)."""
        return (day + 1) * DAY_S - self._offset_s + self.allowed_lateness_s

    def closable(self, epoch: float) -> int:
        """The last day that is closed once event time has reached ``epoch``."""
        return int((epoch - self.allowed_lateness_s + self._offset_s) // DAY_S) - 1

    def iso(self, epoch: float) -> str:
        """``epoch`` as ISO 8601 in the operator's time zone."""
        return datetime.fromtimestamp(epoch, self._tz).isoformat()

    def date(self, day: int) -> str:
        """The calendar date of ``day`` (``YYYY-MM-DD``)."""
        return self.iso(self.day_start(day))[:10]
