"""The engine: events in, per-subscriber state in a store, alerts out. Pure and event-time."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

from detectors import dedupe
from detectors.absence import StayAway
from detectors.bill import BillLevel
from detectors.config import EngineConfig
from detectors.contact import ContactWindows
from detectors.days import Clock, parse_ts
from detectors.holiday import Holidays
from detectors.numbers import PREFIXES, OperatorLookup
from detectors.population import Population
from detectors.presence import HomeCell
from detectors.state import STATE_VERSION, DayCounts, Numbers
from detectors.upgrade import upgrade
from detectors.usage import IncomingRate, PoissonCusum

__all__ = ["Engine", "upgrade"]

from detectors.events import Events
from detectors.judgement import ENGINE_KEY, State


class Engine(Events):
    """Turn calls, billing events and profiles into churn alerts, one event at a time.

    Per subscriber the engine adds each event to the counters of its (operator time zone)
    day; when event time passes a day's end plus the allowed lateness the day closes: the
    spend and usage models (:class:`~detectors.spend.SpendDrop`), the forwarding model
    (:class:`~detectors.forwarding.Forwarding`) and the segment's population totals
    (:class:`~detectors.population.Population`) learn from it, the subscriber is judged
    (:func:`~detectors.risk.combine`) and the alert policy
    (:class:`~detectors.policy.AlertPolicy`) decides what to publish. A switch of call
    forwarding to an off-net number is judged as the calls come, not at day end.

    Days spent away from home (calls from cells other than the usual one) are left out of
    the spend and usage windows and of forwarding evidence: a trip is not churn.

    Signals: a Poisson CUSUM on daily outgoing calls against the baseline times the
    segment's ratio that day (usage drop), the 14-day spend against its 90-day baseline
    (spend drop; rebased on plan changes, silent for a fortnight after a downgrade), new
    forwarding to off-net numbers, silence (white), and a monthly bill well under the
    usual ones. A subscriber away from home or unreachable both ways (incoming calls gone
    too) is held: no usage judgement, and such days do not count towards a resolution.

    Parameters
    ----------
    config
        Thresholds and settings.
    subscribers
        Store of per-subscriber state (plain dicts), keyed by ``subscriber_id``. With
        ``config.sweep`` (the default) it must be iterable: when event time crosses a day
        every subscriber's days are closed, in sorted key order.
    population
        Store of per-segment population state; the engine also keeps its own event-time
        position there under ``"__engine__"``, so an engine built on restored stores
        carries on exactly.

    Notes
    -----
    Duplicates: the event ids of each open day are remembered until the day closes
    (:mod:`detectors.dedupe`), so an event re-sent while its day is open is counted as
    ``duplicate`` and changes nothing, however many events came between. Late events (for
    a day already closed) are counted as ``late``; their spend still goes into the recent
    window if the day is in it, their outgoing calls into usage, their plan changes and
    port-outs apply at once. The service and ``churnwatch replay`` never pass the engine
    such an event: they reject it as ``too_late`` (:mod:`stream.service.lateness`), so a
    re-send days later cannot fold a closed day's figures in twice.

    Examples
    --------
    A subscriber calling a few times a day for ten weeks, then less and less; the engine
    opens an episode when calls fall well below the baseline (here the usage CUSUM
    crosses the yellow and red levels on the same day, so the episode opens at red):

    >>> import random
    >>> from datetime import date, timedelta
    >>> rng = random.Random(12345)
    >>> engine = Engine()
    >>> _ = engine.process("subscribers", {"subscriber_id": "s1", "msisdn": "13800000001",
    ...     "account_id": "A1", "segment": "consumer"})
    >>> n = 0
    >>> for d in range(110):
    ...     day = (date(2026, 1, 5) + timedelta(days=d)).isoformat()
    ...     level = 1.0 if d < 70 else max(0.1, 1 - (d - 70) / 25)
    ...     for k in range(sum(rng.random() < 0.5 * level for _ in range(8))):
    ...         n += 1
    ...         call = {"event_id": f"c{n}", "ts": f"{day}T1{k}:00:00+08:00",
    ...                 "subscriber_id": "s1", "direction": "out",
    ...                 "other_party": "13900000000", "duration_s": 60, "charge": 0.3}
    ...         for alert in engine.process("calls", call):
    ...             print(alert["ts"][:10], alert["status"], alert["zone"],
    ...                   alert["reasons"][0]["code"])
    ...     charge = {"event_id": f"b{d}", "ts": f"{day}T23:59:30+08:00",
    ...               "subscriber_id": "s1", "kind": "charge", "amount": 1.0}
    ...     for alert in engine.process("billing", charge):
    ...         print(alert["ts"][:10], alert["status"], alert["zone"],
    ...               alert["reasons"][0]["code"])
    2026-04-03 open red usage_drop
    >>> engine.counters["events"], engine.counters["duplicate"]
    (461, 0)

    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        subscribers: MutableMapping[str, State] | None = None,
        population: MutableMapping[str, State] | None = None,
        signals: bool = False,
    ):
        self.config = cfg = config if config is not None else EngineConfig()
        self.subscribers: MutableMapping[str, State] = (
            subscribers if subscribers is not None else {}
        )
        self.population = Population(population if population is not None else {})
        self.counters: Counter[str] = Counter()
        # Member signals for the group stage (see :meth:`drain_signals`); off unless asked
        # for, so a driver that does not read them does not accumulate them.
        self._emit_signals = signals
        self.signals: list[dict[str, Any]] = []
        self.clock = Clock(cfg.tz_offset_hours, cfg.allowed_lateness_s)
        self.lookup = OperatorLookup(cfg.our_operator, cfg.ported_numbers)
        # Operators by a stable index (stored in state), whatever order they are met in.
        self._operators: list[str] = sorted(
            set(PREFIXES.values()) | set(cfg.ported_numbers.values())
        )
        self._operator_cache: dict[str, tuple[bool, int]] = {}
        self._watermark = -math.inf
        # The last day every subscriber is closed to: kept in the population store too, so
        # an engine restored from its stores sweeps on exactly as the one before it.
        self._closed_to: int | None = None
        self._next_sweep = math.inf
        saved = self.population.store.get(ENGINE_KEY)
        if saved is not None:
            self._closed_to = int(saved["closed_to"])
            self._next_sweep = self.clock.close_time(self._closed_to + 1)
        self._closed_row: DayCounts | None = None
        self._holidays = Holidays(self.population, cfg.holidays, cfg.holiday_ratio,
                                  cfg.holiday_days)
        # The models whose state is in the subscriber's numbers, applied to one subscriber
        # at a time: each is loaded from the numbers, updated, and stored back.
        self._home = HomeCell()
        self._usage_cusum = PoissonCusum(cfg.cusum_rho, cfg.cusum_red, 3.0 * cfg.cusum_red)
        self._incoming = IncomingRate(span=cfg.baseline_days)
        self._bill_level = BillLevel()
        self._stay = StayAway(cfg.absence_collapse, cfg.absence_back, cfg.absence_partial,
                              cfg.absence_min_expected, cfg.trip_days, cfg.absence_z,
                              cfg.absence_min_days)
        self._contact = ContactWindows(cfg.tz_offset_hours)
        self._fwd_params: dict[str, float] = {
            "min_calls": cfg.fwd_min_calls,
            "min_share": cfg.fwd_min_share,
            "habit_share": cfg.fwd_habit_share,
            "strong_share": cfg.fwd_strong_share,
            "min_carried_strong": cfg.fwd_carried_strong,
            "carried_share": cfg.fwd_carried_share,
        }

    # ------------------------------------------------------------------------------------
    # Events
    # ------------------------------------------------------------------------------------
    @property
    def closed_to(self) -> int | None:
        """The last day (``Clock`` day number) closed for every subscriber; None: none yet.
        After it the engine judges only later days (the stream's day marks)."""
        return self._closed_to

    def next_sweep_s(self, ts: float) -> float:
        """Event time (epoch seconds) from which an event makes the engine close a day for
        every subscriber (a sweep, which reads and writes every subscriber's state), once
        it has processed an event at ``ts``; ``math.inf`` with sweeps off.

        >>> engine = Engine(EngineConfig(), subscribers={}, population={})
        >>> first = parse_ts("2026-03-02T09:00:00+08:00")
        >>> engine.next_sweep_s(first) == parse_ts("2026-03-03T01:00:00+08:00")
        True
        """
        if not self.config.sweep:
            return math.inf
        if self._closed_to is None:  # its first event sets the day closed to
            return self.clock.close_time(self.clock.closable(ts) + 1)
        return self._next_sweep

    def process(
        self, kind: str, event: dict[str, Any], ts: float | None = None
    ) -> list[dict[str, Any]]:
        """Process one validated event; return the alerts it triggers (maybe none).

        Parameters
        ----------
        kind
            ``"calls"``, ``"billing"`` or ``"subscribers"``.
        event
            The event as the input contract has it (validated).
        ts
            The event's ``ts`` already parsed to epoch seconds (the stream's validator does
            it), so it is not parsed twice; parsed from ``event["ts"]`` when None. The
            results are the same either way.
        """
        counters = self.counters
        counters["events"] += 1
        if kind == "subscribers":
            self._profile(event)
            return []
        if ts is None:
            ts = parse_ts(event["ts"])
        alerts: list[dict[str, Any]] = []
        if ts > self._watermark:
            self._watermark = ts
            if ts >= self._next_sweep or self._closed_to is None:
                alerts.extend(self._advance(ts))
        sid: str = event["subscriber_id"]
        store = self.subscribers
        st = store.get(sid)
        if st is None:
            st = self._new_state()
            counters["subscribers"] += 1
        elif "x" in st:
            counters["after_close"] += 1
            return alerts
        elif st["v"] != STATE_VERSION or type(st["m"]) is not Numbers:
            upgrade(st)
        clock = self.clock
        day = clock.day(ts)
        m = st["m"]
        closed = m.closed
        # A re-send comes after its original: only an event no later than the subscriber's
        # latest can be one, and only those need looking up.
        fp = dedupe.fingerprint(event["event_id"])
        if int(ts) <= m.watermark and "e" in st and dedupe.seen(st["e"], day, fp):
            counters["duplicate"] += 1
            return alerts
        if "p" not in st:
            counters["unknown_profile"] += 1
        if closed < 0 and not st["o"]:
            closed = m.closed = min(day, self._closed_to + 1) - 1  # type: ignore[operator]
        if ts > m.watermark:
            m.watermark = int(ts)
            target = clock.closable(ts)
            if target > closed and st["o"]:
                alerts.extend(self._close_until(sid, st, target))
                closed = m.closed
        if day <= closed and m.age == 0 and day > self._closed_to:  # type: ignore[operator]
            # No day closed yet: an earlier first event from the other stream.
            for row in st["o"]:
                row.day += closed - (day - 1)
            closed = m.closed = day - 1
        if kind == "calls":
            self._contact_call(st, event, ts)
        if day <= closed:
            # Not remembered: the service and replay never hand the engine an event of a
            # closed day (``too_late``); a plain engine folds it in where it still can.
            counters["late"] += 1
            alerts.extend(self._late(sid, st, kind, event, day))
        elif kind == "calls":
            st["e"] = dedupe.add(st.get("e", ""), day, fp)
            alerts.extend(self._call(sid, st, event, self._row(st, day - closed), ts, day))
        else:
            st["e"] = dedupe.add(st.get("e", ""), day, fp)
            # A port-out or deactivation closes the state here (and its open episode with a
            # ``closed`` alert); no alert comes after it.
            alerts.extend(self._billing(sid, st, event, self._row(st, day - closed), day))
        store[sid] = st
        return alerts

    def drain_signals(self) -> list[dict[str, Any]]:
        """Return and forget the member signals emitted since the last call.

        With ``Engine(..., signals=True)``, every judgement of a subscriber who belongs to a
        group (``group_id`` in the profile) emits a signal when what the group stage needs
        to know changed: the zone, the operator calls are forwarded to off-net, the spend
        ratio (in tenths) or a port-out. Keyed by ``group_id``, in event-time order per
        subscriber; the group stage (:mod:`detectors.group`) folds them per group.
        """
        out, self.signals = self.signals, []
        return out

