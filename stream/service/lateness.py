"""Too late: an event for a day its partition's engine has already closed.

A day closes when event time passes its end plus the allowed lateness
(``detectors`` ``allowed_lateness_s``, one hour by default); its figures have then gone
into the models and the population baseline. An event dated in a closed day, such as a
re-send by upstream mediation days after the original, would be folded into those models
a second time: the engine's duplicate check covers only a subscriber's last events. So
such an event is rejected as ``too_late`` (a dead letter with the horizon in its detail),
before the engine sees it, by the service and by ``churnwatch replay`` alike: both ask
the same engine state in the same event order, so both count it the same.
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
    lateness = getattr(clock, "allowed_lateness_s", 0.0)
    return Rejected("too_late", "ts", f"ts is in day {clock.iso(clock.day_start(day))[:10]}, "
                    f"closed: events are taken until a day's end plus {lateness:.0f} s")
