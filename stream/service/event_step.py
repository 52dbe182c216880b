"""One accepted event through its partition's engine: the step a worker and
``churnwatch replay`` share.

Both feed each partition's engine its events in event time (replay merges its files; a
worker restores the order first, :mod:`stream.service.ordering`), and both hand every
event to :class:`EventStep`, which does what happens to it from there:

1. the two rules of :mod:`stream.service.lateness`: :meth:`EventStep.late_arrival` (rule
   1, called in each input topic-partition's own order: a worker calls it as a message
   arrives, before the reorder; replay as it reads each file's line) and, in
   :meth:`EventStep.process`, :func:`~stream.service.lateness.too_late` (rule 2, against
   the engine's closed days, when the event's turn comes). A late event never reaches
   the engine;
2. the engine call. A detector exception is logged (the event's position and id, and
   the stack without the exception's text or locals: those can hold a subscriber id or
   a number) and reported in the step's output; it never stops the partition;
3. the routing of what came out, in a :class:`Stepped`:

   * a member's subscriber alerts get their group's ``group_context`` reason while the
     group is in alert (``group_context``, when the group stage runs);
   * the alerts to publish, or, with calibration (a worker's ``CHURNWATCH_CALIBRATION``),
     the records for the calibration stage instead: each subscriber alert, then the
     event's exit (an accepted ``port_out`` or ``deactivation``), each at the event's
     merge position;
   * the exit itself (replay's outcome learner takes it in process);
   * the member signals the engine emitted, and its watermark (the last day it closed)
     when it moved: for the group stage.

What stays with each caller is transport: offsets, holes, applied marks, the reorder and
the topics in a worker; files, outcomes and the simulated call centre in replay; and the
group stage itself (in process in replay, over a topic in a worker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from stream.contracts.validation import Rejected
from stream.service.lateness import Arrivals, too_late
from stream.service.ordering import KIND_ORDER
from stream.service.redaction import stack
from stream.service.signal_order import closed_to

log = logging.getLogger(__name__)

#: Billing kinds after which a subscriber has no open episode any more (an exit).
LEAVING = frozenset({"port_out", "deactivation"})

#: A group's reason for a member's alert while the group is in alert (None: not in alert).
GroupContext = Callable[[str], "dict[str, Any] | None"]

_NONE: list[Any] = []  # shared, never appended to: most events raise nothing


class Stepped:
    """What one event produced: the caller delivers it.

    Attributes
    ----------
    late : Rejected or None
        ``too_late`` by the engine's closed days: the engine did not see the event.
    failed : bool
        The engine raised (logged already); nothing else came out.
    alerts : list of dict
        Alerts to publish as they are, in the engine's order.
    calibration : list of dict
        Records for the calibration stage (calibration on): subscriber alerts, then the
        exit, each with the event's merge position ``at``.
    exit : dict or None
        The event, if it is an accepted ``port_out`` or ``deactivation``.
    signals : list of dict
        Member signals the engine emitted.
    watermark : int or None
        The engine's closed day, when it moved since the last one reported.
    at : list or None
        The event's merge position ``[time, kind order]`` (calibration on, timed events).
    """

    # Class-level defaults: an event that raises nothing sets no attribute (cheap per event).
    late: Rejected | None = None
    failed: bool = False
    alerts: list[dict[str, Any]] = _NONE
    calibration: list[dict[str, Any]] = _NONE
    exit: dict[str, Any] | None = None
    signals: list[dict[str, Any]] = _NONE
    watermark: int | None = None
    at: list[float | int] | None = None


class EventStep:
    """Lateness, the engine call and the routing of its output, for one event at a time.

    Parameters
    ----------
    calibration : bool
        Subscriber alerts and exits go to :attr:`Stepped.calibration` instead of
        :attr:`Stepped.alerts` (a worker's calibration stage; replay's learner works in
        process and leaves it off).
    group_context : callable, optional
        ``group_id`` -> the ``group_context`` reason while that group is in alert.

    Examples
    --------
    >>> from collections import Counter
    >>> class Echo:  # a stand-in engine: one alert per call event
    ...     counters = Counter()
    ...     def process(self, kind, event, ts=None):
    ...         return [{"kind": "subscriber", "status": "open", "group_id": "G",
    ...                  "reasons": []}] if kind == "calls" else []
    >>> step = EventStep(group_context=lambda gid: {"code": "group_context"})
    >>> out = step.process(Echo(), "calls", 0, 7, "calls", {"event_id": "e1"}, 0.0)
    >>> out.alerts[0]["reasons"], out.failed
    ([{'code': 'group_context'}], False)
    >>> out = step.process(Echo(), "billing", 0, 8, "billing", {"kind": "port_out"}, 1.0)
    >>> out.alerts, out.exit
    ([], {'kind': 'port_out'})
    """

    def __init__(self, calibration: bool = False,
                 group_context: GroupContext | None = None) -> None:
        self.calibration = calibration
        self.group_context = group_context
        self.arrivals = Arrivals()
        #: partition -> watermark last reported
        self._marks: dict[int, int] = {}

    def late_arrival(self, engine: Any, topic: str, partition: int, kind: str,
                     epoch_s: float) -> Rejected | None:
        """Rule 1: ``too_late`` if ``topic`` [``partition``] has already carried an event
        that closes this one's day. Call it for each accepted event of a topic-partition,
        in that topic-partition's order, once."""
        return self.arrivals.late(engine, topic, partition, kind, epoch_s)

    def clear(self) -> None:
        """Forget arrivals and reported watermarks (a worker's rebalance)."""
        self.arrivals.clear()
        self._marks.clear()

    def process(self, engine: Any, topic: str, partition: int, offset: int | None,
                kind: str, event: dict[str, Any], epoch_s: float) -> Stepped:
        """Run ``event`` (of ``kind``, at ``epoch_s``, read from ``topic`` [``partition``]
        at ``offset``: for a log line) through ``engine`` and route what comes out."""
        out = Stepped()
        late = too_late(engine, kind, epoch_s)
        if late is not None:  # for a closed day: its models must not see it twice
            out.late = late
            return out
        try:
            # The validator's parsed event time, so the engine does not parse it again.
            alerts = engine.process(kind, event, ts=None if kind == "subscribers" else epoch_s)
        except Exception as exc:  # a detector bug must not stop the partition: log, count
            log.error("engine failed on %s[%d]@%s (event %s): %s", topic, partition, offset,
                      str(event.get("event_id", "-"))[:64], stack(exc))
            out.failed = True
            return out
        leaving = kind == "billing" and event.get("kind") in LEAVING
        if leaving:
            out.exit = event
        if alerts:
            context = self.group_context
            if context is not None:
                for alert in alerts:
                    gid = alert.get("group_id")
                    if (gid and alert.get("kind") == "subscriber"
                            and alert.get("status") not in ("resolved", "closed")):
                        reason = context(gid)
                        if reason is not None:
                            alert["reasons"].append(reason)
        if self.calibration and kind != "subscribers":
            self._stage(out, partition, kind, event, epoch_s, alerts, leaving)
        elif alerts:
            out.alerts = alerts
        drain = getattr(engine, "drain_signals", None)
        if drain is not None:  # engines without it (test stand-ins) have neither
            if getattr(engine, "signals", True):  # replay's engines without groups: empty
                out.signals = drain()
            mark = closed_to(engine)
            if mark is not None and self._marks.get(partition) != mark:
                self._marks[partition] = mark
                out.watermark = mark
        return out

    @staticmethod
    def _stage(out: Stepped, partition: int, kind: str, event: dict[str, Any],
               epoch_s: float, alerts: list[dict[str, Any]], leaving: bool) -> None:
        """Calibration on: subscriber alerts and the exit go to the stage, at replay's
        merge position of the event (the stage restores that order)."""
        at = out.at = [epoch_s, KIND_ORDER[kind]]
        staged: list[dict[str, Any]] = []
        published: list[dict[str, Any]] = []
        for alert in alerts:
            if alert.get("kind") == "subscriber":
                staged.append({"kind": "alert", "partition": partition, "at": at,
                               "alert": alert})
            else:
                published.append(alert)
        if leaving:
            staged.append({"kind": "exit", "partition": partition, "at": at,
                           "subscriber_id": event["subscriber_id"], "ts": event["ts"]})
        if staged:
            out.calibration = staged
        if published:
            out.alerts = published
