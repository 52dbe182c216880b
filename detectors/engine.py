"""The engine: events in, per-subscriber state in a store, alerts out. Pure and event-time."""

from __future__ import annotations

import hashlib
import math
import zlib
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

from detectors.bill import BillLevel
from detectors.config import MODEL_VERSION, EngineConfig
from detectors.days import Clock, parse_ts
from detectors.forwarding import Forwarding, is_familiar, see_contact
from detectors.numbers import PREFIXES, OperatorLookup, normalise
from detectors.policy import AlertPolicy
from detectors.population import Population
from detectors.presence import HomeCell
from detectors.risk import Assessment, Signal, combine, drop_score
from detectors.spend import SpendDrop
from detectors.state import (
    STATE_VERSION,
    Closed,
    DayCounts,
    Numbers,
    Profile,
    fingerprint,
    remember,
    shared,
)
from detectors.upgrade import upgrade
from detectors.usage import IncomingRate, PoissonCusum

__all__ = ["Engine", "upgrade"]

State = dict[str, Any]

UNKNOWN_PROFILE = Profile.new()
FAMILIAR_SIZE = 2
FAMILIAR_MIN = 3
ENGINE_KEY = "__engine__"  # the engine's own event-time position, in the population store
NEVER = AlertPolicy().resolved_at  # a policy that never alerted is not stored
SPEND_SCALE = 10  # spend is kept in tenths of a yuan: short in the store, plenty precise
SPEND_MILLI = 1000 // SPEND_SCALE
CARRY_FWD_STRENGTH = {0.6: 0.55, 1.0: 0.75}


def _milli(amount: Any) -> int:
    return round(float(amount) * 1000) if amount else 0


class Engine:
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
    Dedupe covers the last ``config.dedupe_ring`` (12) events of each subscriber: a
    redelivery after a crash or rebalance comes within that many events of the original.
    Late events (for a day already closed) are counted as ``late``; their spend still goes
    into the recent window if the day is in it, their outgoing calls into usage, their
    plan changes and port-outs apply at once.

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
        # The models whose state is in the subscriber's numbers, applied to one subscriber
        # at a time: each is loaded from the numbers, updated, and stored back.
        self._home = HomeCell()
        self._usage_cusum = PoissonCusum(cfg.cusum_rho, cfg.cusum_red, 3.0 * cfg.cusum_red)
        self._incoming = IncomingRate(span=cfg.baseline_days)
        self._bill_level = BillLevel()
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
        seen, ring = remember(
            st.get("e", ""), fingerprint(event["event_id"]), self.config.dedupe_ring
        )
        if seen:
            counters["duplicate"] += 1
            return alerts
        st["e"] = ring
        if "p" not in st:
            counters["unknown_profile"] += 1
        clock = self.clock
        day = clock.day(ts)
        m = st["m"]
        if m.closed < 0 and not st["o"]:
            m.closed = min(day, self._closed_to + 1) - 1  # type: ignore[operator]
        if ts > m.watermark:
            m.watermark = int(ts)
            target = clock.closable(ts)
            if target > m.closed and st["o"]:
                alerts.extend(self._close_until(sid, st, target))
        if day <= m.closed and m.age == 0 and day > self._closed_to:  # type: ignore[operator]
            # No day closed yet: an earlier first event from the other stream.
            for row in st["o"]:
                row.day += m.closed - (day - 1)
            m.closed = day - 1
        if day <= m.closed:
            counters["late"] += 1
            self._late(st, kind, event, day)
        elif kind == "calls":
            alerts.extend(self._call(sid, st, event, self._row(st, day), ts, day))
        else:
            # A port-out or deactivation closes the state here, with no alert after it.
            self._billing(sid, st, event, self._row(st, day), day)
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

    def _models(self, st: State) -> tuple[SpendDrop, SpendDrop]:
        """The spend (in tenths of a yuan) and usage (outgoing calls) models, kept in one
        list ``"s"`` (:meth:`SpendDrop.pack`)."""
        cfg = self.config
        if "s" in st:
            return SpendDrop.unpack(st["s"], cfg.baseline_days, cfg.recent_days, (SPEND_SCALE, 1))
        return (SpendDrop(cfg.baseline_days, cfg.recent_days, SPEND_SCALE),
                SpendDrop(cfg.baseline_days, cfg.recent_days, 1))

    def _fwd(self, st: State) -> Forwarding:
        return Forwarding.from_state(st["m"].forwarding, **self._fwd_params)

    def _new_state(self) -> State:
        return {"v": STATE_VERSION, "o": [], "m": Numbers.new()}

    def _profile(self, event: dict[str, Any]) -> None:
        sid = event["subscriber_id"]
        st = self.subscribers.get(sid)
        if st is None:
            st = self._new_state()
            self.counters["subscribers"] += 1
        else:
            upgrade(st)
        # Values many subscribers have in common are kept once for all (see ``shared``).
        st["p"] = Profile([
            event.get("msisdn"),
            shared(event.get("account_id")),
            shared(event.get("group_id")),
            shared(event.get("segment") or "unknown"),
            shared(event.get("tier")),
            shared(event.get("account_manager")),
        ])
        self.counters["profiles"] += 1
        self.subscribers[sid] = st

    @staticmethod
    def _row(st: State, day: int) -> DayCounts:
        """The open row of ``day``; rows hold their day relative to the last closed day
        (a small number, which CPython does not allocate)."""
        rows: list[DayCounts] = st["o"]
        rel = day - st["m"].closed
        for row in reversed(rows):
            if row.day == rel:
                return row
        row = DayCounts.at(rel)
        rows.append(row)
        rows.sort(key=lambda r: r.day)
        return row

    def _operator(self, number: str) -> tuple[bool, int]:
        """(off-net, operator index) of a number, cached."""
        found = self._operator_cache.get(number)
        if found is None:
            name = self.lookup.operator(number)
            off = name is not None and name != self.lookup.ours
            index = self._operators.index(name) if off and name in self._operators else -1
            found = (off, index)
            if len(self._operator_cache) < 200_000:
                self._operator_cache[number] = found
        return found

    def _call(
        self, sid: str, st: State, event: dict[str, Any], row: DayCounts, ts: float, day: int
    ) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        charge = event.get("charge")
        if charge:
            row.call_charge += _milli(charge)
        cell = event.get("cell_id")
        if cell:
            row.n_located += 1
            home = self._home
            home.state = m = st["m"]  # the numbers begin with the home cell's state
            home.update(zlib.crc32(cell.encode()) & 0xFFFF)
            if home.at_home:
                if m.waiting_new:
                    self._confirm(st)
                if row.n_new > 0:
                    checked = self._forward_check(sid, st, row, ts, day)
                    if checked:
                        alerts = checked
            elif home.elsewhere:
                row.n_away += 1
                if home.drift_detected:
                    m.waiting_in = m.waiting_new = 0  # it was a trip
            row.away_end = m.away
        if event["direction"] == "out":
            row.n_out += 1
            m = st["m"]
            if day > m.last_active:
                m.last_active = day
            fp = zlib.crc32(normalise(event["other_party"]).encode()) & 0xFFFF
            st["k"] = see_contact(st.get("k", []), fp, FAMILIAR_SIZE)
            return alerts
        row.n_in += 1
        target = event.get("forwarded_to")
        if not target:
            return alerts
        row.n_fwd += 1
        off, index = self._operator(target)
        if not off:
            return alerts
        row.n_off += 1
        fp = zlib.crc32(normalise(target).encode()) & 0xFFFF
        if is_familiar(st.get("k", []), fp, FAMILIAR_MIN):
            return alerts
        row.n_new += 1
        row.operator = index
        return self._forward_check(sid, st, row, ts, day)

    def _confirm(self, st: State, fwd: Forwarding | None = None) -> None:
        """A call from home confirms forwarding seen on days with no located call."""
        m = st["m"]
        model = fwd
        if model is None:
            if not m.fwd_days:
                m.waiting_in = m.waiting_new = 0
                return
            model = self._fwd(st)
        model.acc_in = round(model.acc_in + m.waiting_in, 2)
        model.acc_new = round(model.acc_new + m.waiting_new, 2)
        m.waiting_in = m.waiting_new = 0
        if fwd is None:
            m.forwarding = model.to_state()
        self.counters["forwarding_confirmed"] += 1

    def _forward_check(
        self, sid: str, st: State, row: DayCounts, ts: float, day: int
    ) -> list[dict[str, Any]]:
        """Judge at once when today's forwarding evidence becomes overwhelming, if home.

        Home: more of today's located calls from the home cell than elsewhere, and at least
        one. A switch while at home is a new SIM; the same while travelling is a trip.
        """
        m = st["m"]
        if not m.fwd_days or row.n_located <= 2 * row.n_away or m.away:
            return []
        fwd = self._fwd(st)
        level = round(10 * fwd.evidence(row.n_in, row.n_new))
        # Only overwhelming evidence is judged at once; weaker waits for the day's close.
        if level < 10 or level <= row.judged:
            return []
        row.judged = level
        self.counters["intraday_judgements"] += 1
        return self._judge(sid, st, day, ts, self.clock.iso(ts), daily=False, today=row)

    def _billing(
        self, sid: str, st: State, event: dict[str, Any], row: DayCounts, day: int
    ) -> bool:
        kind = event["kind"]
        amount = event.get("amount") or 0.0
        if kind == "charge":
            row.bill_charge += _milli(amount)
        elif kind == "topup":
            m = st["m"]
            if day > m.last_active:
                m.last_active = day
        elif kind == "bill":
            row.bills += 1
            row.bill_cents += round(float(amount) * 100)
        elif kind == "plan_change":
            previous = event.get("previous_amount")
            if previous is not None:
                row.plan_change += _milli(amount) - _milli(previous)
                if float(amount) < float(previous):
                    row.downgrades += 1
        elif kind in ("port_out", "deactivation"):
            self.counters[kind] += 1
            if self._emit_signals and "p" in st and st["p"].group_id:
                self._emit(event["subscriber_id"], st, event["ts"], day, None, None, None,
                           left=kind)
            level = st["a"][0] if "a" in st else 0
            closed: State = {"v": STATE_VERSION, "x": Closed([kind, day, level]),
                             "e": st.get("e", "")}
            if "p" in st:
                closed["p"] = st["p"]
            st.clear()
            st.update(closed)
            return True
        return False

    def _apply_money(self, st: State, row: DayCounts, day: int) -> None:
        """Apply a day's plan changes and bills (at close, or at once when late)."""
        if row.plan_change and "s" in st:
            spend, usage = self._models(st)
            spend.shift(row.plan_change / 1000.0 / 30.0)
            st["s"] = SpendDrop.pack_models(spend, usage)
        if row.downgrades:
            st["m"].downgrade = day
            self.counters["plan_downgrade"] += row.downgrades
        if row.bills:
            self._bill(st, row.bill_cents / 100.0, day)

    def _bill(self, st: State, amount: float, day: int) -> None:
        m = st["m"]
        bill = self._bill_level
        bill.n, bill.mean, bill.ratio, _ = m.bill
        bill.update(amount)
        m.bill = [bill.n, bill.mean, bill.ratio, day]

    def _late(self, st: State, kind: str, event: dict[str, Any], day: int) -> None:
        """Use a late event where it still can be: spend, outgoing calls, activity."""
        m = st["m"]
        days_ago = m.closed - day
        if kind == "calls":
            if event["direction"] == "out":
                m.last_active = max(m.last_active, day)
                if "s" in st:
                    spend, usage = self._models(st)
                    if usage.add_late(days_ago, 1):
                        st["s"] = SpendDrop.pack_models(spend, usage)
            cents = _milli(event.get("charge")) // SPEND_MILLI
        else:
            kind_b = event["kind"]
            if kind_b in ("port_out", "deactivation", "plan_change", "bill"):
                row = DayCounts.at(day)
                self._billing("", st, event, row, day)
                if "x" not in st:
                    self._apply_money(st, row, day)
                return
            if kind_b == "topup":
                m.last_active = max(m.last_active, day)
            # Billing and call charges are combined by max per day; a late charge is added
            # as is (the day's call charges are gone), an overestimate at worst.
            cents = _milli(event.get("amount")) // SPEND_MILLI if kind_b == "charge" else 0
        if cents and "s" in st:
            spend, usage = self._models(st)
            if spend.add_late(days_ago, cents):
                st["s"] = SpendDrop.pack_models(spend, usage)
            else:
                self.counters["late_unused"] += 1

    # ------------------------------------------------------------------------------------
    # Days
    # ------------------------------------------------------------------------------------
    def _advance(self, ts: float) -> list[dict[str, Any]]:
        """Event time moved on: sweep every subscriber to the last closable day."""
        clock = self.clock
        target = clock.closable(ts)
        self._next_sweep = clock.close_time(target + 1)
        if self._closed_to is not None and target <= self._closed_to:
            return []
        first = self._closed_to is None
        self._closed_to = target
        self.population.store[ENGINE_KEY] = {"v": STATE_VERSION, "closed_to": target}
        if first or not self.config.sweep:
            return []
        self.counters["sweeps"] += 1
        alerts: list[dict[str, Any]] = []
        store = self.subscribers
        for sid in sorted(store):
            st = store[sid]
            if "x" in st:
                continue
            if st["v"] != STATE_VERSION or type(st["m"]) is not Numbers:
                upgrade(st)
            c = st["m"].closed
            if c < 0 or c >= target:
                continue
            alerts.extend(self._close_until(sid, st, target))
            store[sid] = st
        return alerts

    def _close_until(self, sid: str, st: State, target: int) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        rows: list[DayCounts] = st["o"]
        m = st["m"]
        base = m.closed
        day = base + 1
        while day <= target:
            row = None
            if rows and rows[0].day + base == day:
                row = rows.pop(0)
                row.day = day  # out of the state: absolute again
            alerts.extend(self._close_day(sid, st, day, row))
            m.closed = day
            day += 1
        for row in rows:
            row.day -= target - base
        return alerts

    @staticmethod
    def _away(st: State, row: DayCounts | None) -> bool:
        """Was the subscriber away from home on ``row``'s day (the cell numbers in ``"m"``)?

        One call from another cell is a commute; two in a row from the same other cell, or
        ``AWAY_RUN`` other cells in a row, with no call from the home cell in between, is a
        stay elsewhere (it holds until a call from home). A day is judged by the state after
        its own last located call, or, without one, like the day before: never by calls of
        the next day, which may or may not have arrived yet.
        """
        if row is not None and row.away_end >= 0:
            return bool(row.away_end)
        return bool(st["m"].day_away)

    def _close_day(
        self, sid: str, st: State, day: int, row: DayCounts | None
    ) -> list[dict[str, Any]]:
        self.counters["closed_days"] += 1
        m = st["m"]
        m.age += 1
        away = self._away(st, row)
        m.day_away = int(away)
        if row is None:
            row = DayCounts.at(day)
        self._apply_money(st, row, day)
        spend, usage = self._models(st)
        fwd = self._fwd(st)
        if away:
            self.counters["away_days"] += 1
            fwd.close_day(row.n_in, row.n_fwd, 0)
        else:
            cents = max(row.call_charge, row.bill_charge) // SPEND_MILLI
            spend.update(cents)
            usage.update(row.n_out)
            if row.n_new and not row.n_located > 2 * row.n_away:
                # Forwarding on a day with no call from home: a trip or a switch, cannot
                # tell yet; neither evidence nor normal. Without any located call it waits,
                # decaying like carried evidence, for the next call from home to confirm it
                # (a trip shows itself by calls from elsewhere, which drop it).
                fwd.close_day(0, 0, 0)
                if not row.n_located:
                    carry = fwd.carry
                    m.waiting_in = round((m.waiting_in + row.n_in) * carry, 2) or 0
                    m.waiting_new = round((m.waiting_new + row.n_new) * carry, 2) or 0
            else:
                if m.waiting_new:
                    self._confirm(st, fwd)
                fwd.close_day(row.n_in, row.n_fwd, row.n_new)
            if spend.ready and usage.ready:
                segment = st["p"].segment if "p" in st else "unknown"
                self.population.add(
                    segment,
                    day,
                    (cents, round(spend.mean * SPEND_SCALE), 100 * row.n_out,
                     round(usage.mean * 100)),
                )
        self._cusum(st, day, None if away else row.n_out, usage, away,
                    row.n_located > row.n_away)
        if not away:
            incoming = self._incoming
            incoming.n, incoming.base, incoming.fast = m.incoming
            incoming.update(float(row.n_in))
            m.incoming = [incoming.n, incoming.base, incoming.fast]
        if row.operator >= 0:
            m.fwd_operator = row.operator
        st["s"] = SpendDrop.pack_models(spend, usage)
        m.forwarding = fwd.to_state()
        close = self.clock.close_time(day)
        self._closed_row = row  # for the reasons' figures only
        alerts = self._judge(
            sid, st, day, close, self.clock.iso(close), daily=True, today=None, away=away,
            models=(spend, usage, fwd),
        )
        self._closed_row = None
        return alerts

    def _cusum(
        self, st: State, day: int, count: int | None, usage: SpendDrop, away: bool,
        seen_home: bool,
    ) -> None:
        """Poisson CUSUM (Page's test, as River's ``drift.PageHinkley(mode="down")`` but on
        the log-likelihood ratio of a rate drop) on daily outgoing calls.

        A day's count is judged one day late, against the baseline times its segment's
        ratio for that same day (complete by then), so weekly rhythm and holidays that hit
        the whole segment cancel out. The level at the last call from the home cell is
        kept: when a stay elsewhere is recognised, the quiet days since then are put down
        to the trip and the level goes back to it. Kept in ``"m"``: the level, whether
        yesterday's count is pending, that count, and the level at the last home call.
        """
        cfg = self.config
        m = st["m"]
        if m.pending and m.age > cfg.warmup_days and usage.mean >= cfg.min_daily_calls:
            segment = st["p"].segment if "p" in st else "unknown"
            factor = self.population.ratio(segment, day - 1, day - 1, 1, min_count=10)
            lam = usage.mean * (factor if factor is not None else 1.0)
            if m.in_base >= 0.5:
                # Presence: incoming calls fall with outgoing ones when the subscriber is
                # away or simply quiet (a trip with no call from elsewhere, a bad week),
                # but only at half the pace when outgoing calls move to another SIM.
                lam *= min(1.0, m.in_fast / m.in_base / cfg.presence_ratio)
            # Dispersion of the daily counts, and the baseline's own uncertainty while it
            # rests on few days (a young baseline is a noisy yardstick).
            phi = min(cfg.cusum_phi_max, max(1.0, usage.var / usage.mean)) * (
                1.0 + 7.0 / max(usage.n, 1)
            )
            cusum = self._usage_cusum
            cusum.level = m.cusum
            cusum.expect(lam, phi)
            cusum.update(m.pending_count)
            m.cusum = cusum.level
        if away:
            m.cusum = min(m.cusum, m.cusum_home)
        elif seen_home:
            m.cusum_home = m.cusum
        if count is None:
            m.pending, m.pending_count = 0, 0
        else:
            m.pending, m.pending_count = 1, count

    # ------------------------------------------------------------------------------------
    # Judgement
    # ------------------------------------------------------------------------------------
    def _judge(
        self,
        sid: str,
        st: State,
        day: int,
        now: float,
        ts_iso: str,
        daily: bool,
        today: DayCounts | None,
        away: bool = False,
        models: tuple[SpendDrop, SpendDrop, Forwarding] | None = None,
    ) -> list[dict[str, Any]]:
        assessment = self.assess(st, day, today=today, away=away, models=models)
        cooldown = self.config.cooldown_days * 86400.0
        policy = (
            AlertPolicy.from_state(st["a"], self.config.resolve_days, cooldown)
            if "a" in st
            else AlertPolicy(self.config.resolve_days, cooldown)
        )
        status = policy.step(assessment.level, now, daily and not assessment.hold)
        if policy.level or policy.resolved_at > NEVER:
            st["a"] = policy.to_state()
        if self._emit_signals and "p" in st and st["p"].group_id:
            self._member_signal(sid, st, day, ts_iso, assessment, models)
        if status is None:
            return []
        self.counters[f"alerts_{status}"] += 1
        return [self._alert(sid, st, status, assessment, ts_iso, policy.start, models)]

    def assess(
        self,
        st: State,
        day: int,
        today: DayCounts | None = None,
        away: bool = False,
        models: tuple[SpendDrop, SpendDrop, Forwarding] | None = None,
    ) -> Assessment:
        """Judge a subscriber's state as of ``day`` (``today``: the open day's counters)."""
        cfg = self.config
        m = st["m"]
        if models is None:
            spend, usage = self._models(st)
            fwd = self._fwd(st)
        else:
            spend, usage, fwd = models
        signals: list[Signal] = []
        segment = st["p"].segment if "p" in st else "unknown"
        warm = m.age >= cfg.warmup_days
        silent = absent = False
        if warm and not away:
            first = day - cfg.recent_days + 1
            rebased = m.downgrade >= 0 and day - m.downgrade < cfg.recent_days
            cusum = m.cusum
            absent = (
                m.in_base >= 0.5 and m.in_fast < cfg.absent_ratio * m.in_base
                and usage.ratio_week < cfg.absent_ratio
            )
            if absent:
                self.counters["absent_judgements"] += 1
            elif (usage.ready and usage.mean >= cfg.min_daily_calls
                  and cusum >= cfg.cusum_green):
                pop = self.population.ratio(segment, first, day - 1, metric=1)
                signals.append(self._usage_signal(usage, cusum, pop, segment))
            if spend.ready and spend.mean >= cfg.min_daily_spend and not rebased:
                pop = self.population.ratio(segment, first, day - 1, metric=0)
                sig = self._drop("spend_drop", spend, pop, segment)
                if sig is not None:
                    signals.append(sig)
            quiet = day - m.last_active if m.last_active >= 0 and today is None else 0
            if quiet and usage.ready and usage.mean >= 0.05:
                # Days without a call that happen by chance less than once in a thousand
                # (a Poisson day, its rate cut by the dispersion of this subscriber's days).
                phi = max(1.0, usage.var / usage.mean)
                needed = max(cfg.silent_days, math.ceil(6.9 * phi / usage.mean))
                if quiet >= needed:
                    silent = True
                    signals.append(Signal(
                        "silent", 0.9,
                        f"no outgoing calls or top-ups for {quiet} days "
                        f"(usually {usage.mean:.1f} calls a day), and no port-out",
                        {"days_silent": quiet, "usual_calls_per_day": round(usage.mean, 2)},
                    ))
        if not away:
            n_in = today.n_in if today is not None else 0
            n_new = today.n_new if today is not None else 0
            strength = (fwd.evidence(n_in, n_new) if today is not None
                        else fwd.carried_strength())
            if strength > 0:
                signals.append(self._forward_signal(st, fwd, strength, today))
        if m.bill_n and m.bill_ratio < cfg.bill_ratio and day - m.bill_day <= 31:
            signals.append(Signal(
                "bill_drop", 0.3,
                f"the last monthly bill is {m.bill_ratio:.0%} of the usual "
                f"{m.bill_mean:.2f} yuan",
                {"ratio": m.bill_ratio, "usual_bill": m.bill_mean},
            ))
        assessment = combine(signals, cfg.green, cfg.yellow, cfg.red, silent=silent)
        assessment.hold = away or absent
        return assessment

    def _drop(
        self, code: str, model: SpendDrop, pop: float | None, segment: str
    ) -> Signal | None:
        cfg = self.config
        factor = min(1.0, pop) if pop is not None else 1.0
        strengths: list[float] = []
        for days, start, full in (
            (cfg.recent_days, cfg.drop_ratio_start, cfg.drop_ratio_full),
            (7, cfg.week_ratio_start, cfg.week_ratio_full),
        ):
            recent, expected, spread = model.window(days)
            expected *= factor
            if expected <= 0:
                strengths.append(0.0)
                continue
            strengths.append(
                drop_score(recent / expected, (recent - expected) / spread, start, full,
                           cfg.drop_z)
            )
        # Both the fortnight and the last week must show it for full strength: a bad
        # week alone, or a fortnight that has already recovered, is half the evidence.
        best = round(sum(strengths) / len(strengths), 2)
        best_days = cfg.recent_days if strengths[0] >= strengths[1] else 7
        if best <= 0:
            return None
        recent, own, _ = model.window(best_days)
        what = "spend" if code == "spend_drop" else "outgoing calls"
        period = "a fortnight" if best_days == 14 else "a week"
        if code == "spend_drop":
            figures_text = f"{recent:.2f} yuan against a usual {own:.2f} {period}"
        else:
            figures_text = f"{recent:.0f} calls against a usual {own:.1f} {period}"
        summary, figures = self._versus(
            f"{what} over the last {best_days} days at home", recent, own, factor, segment,
            figures_text,
        )
        figures["days"] = best_days
        return Signal(code, best, summary, figures)

    def _versus(
        self, what: str, recent: float, own: float, factor: float, segment: str,
        figures_text: str,
    ) -> tuple[str, dict[str, Any]]:
        """A sentence comparing ``recent`` with the subscriber's own baseline ``own``, and,
        when the whole segment fell over the same days, with what that leaves expected."""
        cfg = self.config
        ratio = recent / own if own > 0 else 1.0
        verb = "is" if what.startswith("spend") else "are"
        summary = (f"{what} {verb} {ratio:.0%} of this subscriber's {cfg.baseline_days}-day "
                   f"baseline ({figures_text})")
        figures: dict[str, Any] = {
            "recent": round(recent, 2), "baseline": round(own, 2), "ratio": round(ratio, 3),
        }
        if factor < 0.95:
            expected = own * factor
            against = recent / expected if expected > 0 else 1.0
            summary += (f"; the {segment} segment as a whole fell to {factor:.0%} of its "
                        f"usual over the same days, and against that this subscriber is at "
                        f"{against:.0%}")
            figures.update({"segment_ratio": round(factor, 3),
                            "ratio_vs_segment": round(against, 3)})
        return summary, figures

    def _usage_signal(
        self, usage: SpendDrop, cusum: float, pop: float | None, segment: str
    ) -> Signal:
        cfg = self.config
        strength = (cfg.usage_red_strength if cusum >= cfg.cusum_red
                    else 0.5 if cusum >= cfg.cusum_yellow else cfg.usage_green_strength)
        factor = min(1.0, pop) if pop is not None else 1.0
        recent, own, _ = usage.window(cfg.recent_days)
        summary, figures = self._versus(
            f"outgoing calls over the last {cfg.recent_days} days at home", recent, own,
            factor, segment, f"{recent:.0f} calls against a usual {own:.1f} a fortnight",
        )
        figures.update({"days": cfg.recent_days, "cusum": cusum})
        return Signal("usage_drop", strength, summary, figures)

    def _forward_signal(
        self, st: State, fwd: Forwarding, strength: float, today: DayCounts | None
    ) -> Signal:
        value = CARRY_FWD_STRENGTH[strength] + (0.1 if fwd.streak >= 2 else 0.0)
        op_index = (today.operator if today is not None and today.operator >= 0
                    else st["m"].fwd_operator)
        operator = self._operators[op_index] if 0 <= op_index < len(self._operators) else None
        where = f"a {operator} number" if operator else "an off-net number"
        usual = (f"usually {round(100 * fwd.usual_new_off)}% of their incoming calls go to "
                 f"such numbers")
        if today is not None:
            summary = (f"{today.n_new} of {today.n_in} incoming calls today forwarded to "
                       f"{where} they never called before; {usual}")
            figures: dict[str, Any] = {"forwarded": today.n_new, "incoming": today.n_in}
        else:
            last = self._closed_row
            running = f"{fwd.streak} day{'s' if fwd.streak != 1 else ''} running"
            if last is not None and last.n_in:
                summary = (f"{last.n_new} of {last.n_in} incoming calls on "
                           f"{self.clock.date(last.day)} forwarded to {where} not called "
                           f"before ({running}); {usual}")
                figures = {"days": fwd.streak, "forwarded": last.n_new, "incoming": last.n_in}
            else:
                summary = f"incoming calls forwarded to {where} ({running}); {usual}"
                figures = {"days": fwd.streak}
        figures.update({"usual_share": fwd.usual_new_off, "operator": operator,
                        "carried_in": fwd.acc_in, "carried_forwarded": fwd.acc_new})
        return Signal("forwarding_off_net", value, summary, figures)

    def _member_signal(
        self,
        sid: str,
        st: State,
        day: int,
        ts_iso: str,
        assessment: Assessment,
        models: tuple[SpendDrop, SpendDrop, Forwarding] | None,
    ) -> None:
        operator = None
        for sig in assessment.signals:
            if sig.code == "forwarding_off_net":
                operator = sig.figures.get("operator") or "off-net"
        spend = models[0] if models is not None else self._models(st)[0]
        ratio = None
        value = 30.0 * spend.mean if spend.n else 0.0
        if spend.ready:
            recent, expected, _ = spend.window(self.config.recent_days)
            ratio = round(recent / expected, 2) if expected > 0 else None
        self._emit(sid, st, ts_iso, day, assessment.zone, operator, ratio, value=value)

    def _emit(
        self,
        sid: str,
        st: State,
        ts_iso: str,
        day: int,
        zone: str | None,
        operator: str | None,
        ratio: float | None,
        value: float = 0.0,
        left: str | None = None,
    ) -> None:
        """Append a member signal if it differs from the last one this member emitted."""
        # Value in steps of about 10% (log scale): the group's value at stake follows it.
        key = [zone, operator, None if ratio is None else round(ratio * 10), left,
               round(10 * math.log1p(value))]
        if st.get("g") == key:
            return
        st["g"] = key
        profile = st["p"]
        self.signals.append({
            "group_id": profile.group_id, "subscriber_id": sid, "ts": ts_iso, "day": day,
            "zone": zone, "operator": operator, "spend_ratio": ratio,
            "monthly_value": round(value, 2), "left": left,
            "segment": profile.segment, "account_id": profile.account_id,
            "account_manager": profile.account_manager,
        })

    def _alert(
        self,
        sid: str,
        st: State,
        status: str,
        assessment: Assessment,
        ts_iso: str,
        start: int,
        models: tuple[SpendDrop, SpendDrop, Forwarding] | None,
    ) -> dict[str, Any]:
        cfg = self.config
        profile = st.get("p") or UNKNOWN_PROFILE
        msisdn, account_id, group_id, segment, tier, manager = profile
        spend = models[0] if models is not None else self._models(st)[0]
        daily = spend.mean if spend.n else (
            spend.recent_total / len(spend.recent) if spend.recent else 0.0
        )
        weight = cfg.segment_weights.get(str(segment), 1.0) * cfg.tier_weights.get(
            str(tier), 1.0
        )
        zone = assessment.zone
        digest = hashlib.sha1(f"{sid}|{start}|{zone}|{status}".encode()).hexdigest()[:24]
        reasons = assessment.reasons()
        if status == "resolved":
            reasons.insert(0, {
                "code": "resolved",
                "summary": f"no warning sign on each of the last {cfg.resolve_days} days; "
                           f"risk score now {assessment.score:.2f} (0 to 1)",
                "figures": {"days": cfg.resolve_days, "risk_score": assessment.score},
            })
        return {
            "alert_id": digest,
            "kind": "subscriber",
            "status": status,
            "subscriber_id": sid,
            "msisdn": msisdn,
            "account_id": account_id,
            "group_id": group_id,
            "segment": segment,
            "tier": tier,
            "account_manager": manager,
            "zone": zone,
            "risk_score": assessment.score,
            "value_at_risk": round(30.0 * daily * weight, 2),
            "reasons": reasons,
            "ts": ts_iso,
            "schema_version": 1,
            "model_version": MODEL_VERSION,
        }

