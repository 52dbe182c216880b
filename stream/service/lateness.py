"""Too late: an event for a day that is closed, by the same rule in the stream and in replay.

A day closes when event time passes its end plus the allowed lateness
(``detectors`` ``allowed_lateness_s``, one hour by default); its figures have then gone
into the models and the population baseline. An event dated in a closed day, such as a
re-send by upstream mediation days after the original, would be folded into those models
a second time (the engine remembers the event ids of open days only,
:mod:`detectors.dedupe`). So such an event is rejected as ``too_late`` (a dead letter with
the horizon in its detail) before the engine sees it, by the service and by
``churnwatch replay`` alike. An event is too late when either holds:

1. its own input topic-partition has already carried an event at or past the close of
   the event's day (:class:`Arrivals`). This depends only on event times, in the order
   of that one topic-partition, which the producer sets and Kafka keeps: replay (each
   file read in order) and a worker (however the calls and billing topics interleave
   in its fetches, and however it restores their order) decide alike;
2. its partition's engine has closed the day (:func:`too_late`): the other input topic
   of the partition has carried it past the day's close. Replay merges the files by
   event time, and a worker restores that order before the engine, so this too comes
   out the same, except when a producer holds events back for longer than the allowed
   lateness behind the other topic (then arrival decides, as it must: the engine has
   already learned from the day).

A re-send or a late event is therefore counted the same way on both paths, whichever
order the worker happens to receive the two topics in.
"""

from __future__ import annotations

from typing import Any

from stream.contracts.validation import Rejected
from stream.service.signal_order import closed_to


def too_late(engine: Any, kind: str, epoch_s: float) -> Rejected | None:
    """``too_late`` if an event of ``kind`` at ``epoch_s`` falls in a day ``engine`` has
    closed; None otherwise (profiles carry no event time; engines without a clock or a
    closed day, such as test stand-ins, accept everything).

    >>> from types import SimpleNamespace as NS
    >>> from detectors.days import Clock
    >>> engine = NS(closed_to=20513, clock=Clock(8.0, 3600.0))  # 2026-03-01 closed
    >>> too_late(engine, "calls", 1772411700.0) is None  # 2026-03-02T08:35+08:00
    True
    >>> too_late(engine, "calls", 1772328900.0).detail  # 2026-03-01T09:35+08:00
    "ts is in day 2026-03-01, closed: events are taken until a day's end plus 3600 s"
    """
    if kind == "subscribers":
        return None
    closed = closed_to(engine)
    clock = getattr(engine, "clock", None)
    if closed is None or clock is None:
        return None
    day = clock.day(epoch_s)
    if day > closed:
        return None
    return _rejected(clock, day)


def _rejected(clock: Any, day: int) -> Rejected:
    lateness = getattr(clock, "allowed_lateness_s", 0.0)
    return Rejected("too_late", "ts", f"ts is in day {clock.iso(clock.day_start(day))[:10]}, "
                    f"closed: events are taken until a day's end plus {lateness:.0f} s")


class Arrivals:
    """The newest event time each input topic-partition has delivered, and the events it
    makes too late (rule 1 of the module).

    Call :meth:`late` for every accepted event of a topic-partition, in its offset order,
    each once; :meth:`clear` when the worker forgets what it was delivered (a rebalance:
    Faust delivers again from the committed offsets, whose events the engines' state
    already holds, so rule 2 covers what came before them).

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> from detectors.days import Clock, parse_ts
    >>> engine = NS(closed_to=None, clock=Clock(8.0, 3600.0))
    >>> arrivals = Arrivals()
    >>> for ts in ["2026-03-01T23:50:00+08:00", "2026-03-02T00:30:00+08:00",
    ...            "2026-03-01T23:55:00+08:00",  # within the hour after the day's end
    ...            "2026-03-02T01:00:00+08:00", "2026-03-01T23:59:00+08:00"]:
    ...     late = arrivals.late(engine, "calls", 0, "calls", parse_ts(ts))
    ...     print(ts[5:16], late and late.reason)
    03-01T23:50 None
    03-02T00:30 None
    03-01T23:55 None
    03-02T01:00 None
    03-01T23:59 too_late
    >>> arrivals.late(engine, "billing", 0, "billing", parse_ts("2026-03-01T23:59:00+08:00"))
    """

    def __init__(self) -> None:
        self._newest: dict[tuple[str, int], float] = {}

    def late(self, engine: Any, topic: str, partition: int, kind: str,
             epoch_s: float) -> Rejected | None:
        """``too_late`` if ``topic`` [``partition``] has already carried an event that
        closes the day of this one (``engine`` gives the clock); None otherwise."""
        if kind == "subscribers":
            return None
        key = (topic, partition)
        newest = self._newest.get(key)
        if newest is None or epoch_s > newest:
            self._newest[key] = epoch_s
            return None
        clock = getattr(engine, "clock", None)
        if clock is None:
            return None
        day = clock.day(epoch_s)
        if day > clock.closable(newest):
            return None
        return _rejected(clock, day)

    def clear(self) -> None:
        """Forget every topic-partition's newest event time."""
        self._newest.clear()
