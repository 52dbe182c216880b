"""Events: each call, billing event and profile added to its subscriber's open day (part
of :class:`detectors.engine.Engine`)."""

from __future__ import annotations

import zlib
from typing import Any

from detectors.closing import DayClose
from detectors.contact import ANSWERED, MADE, MISSED, keep, stored
from detectors.forwarding import is_familiar, is_habit_target, see_contact
from detectors.judgement import (
    FAMILIAR_MIN,
    FAMILIAR_SIZE,
    SPEND_MILLI,
    TARGET_DAYS,
    TARGET_SPAN,
    State,
    _milli,
)
from detectors.numbers import normalise
from detectors.spend import SpendDrop
from detectors.state import (
    HELD_BACK,
    STATE_VERSION,
    Closed,
    DayCounts,
    Numbers,
    Profile,
    shared,
)
from detectors.upgrade import upgrade

__all__ = ["Events"]


class Events(DayClose):
    """Aggregate events into day counters; judge forwarding at once when overwhelming."""

    @staticmethod
    def _new_state() -> State:
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
    def _row(st: State, rel: int) -> DayCounts:
        """The open row of the day ``rel`` days after the last closed one; rows hold their
        day relative to it (a small number, which CPython does not allocate)."""
        rows: list[DayCounts] = st["o"]
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

    def _contact_call(self, st: State, event: dict[str, Any], ts: float) -> None:
        """Learn when the subscriber takes calls (:mod:`detectors.contact`), from every call
        they made or were offered, on time or late: answered means ``duration_s > 0`` (the
        contract has no other sign of it); a forwarded call never rang for them."""
        out = event["direction"] == "out"
        if not out and event.get("forwarded_to"):
            return
        contact = self._contact
        contact.state = stored(st)
        contact.add(ts, MADE if out else ANSWERED if event["duration_s"] > 0 else MISSED)
        keep(st, contact.state)

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
            st["k"] = see_contact(st.get("k", 0), fp, FAMILIAR_SIZE)
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
        m = st["m"]
        if is_familiar(st.get("k", 0), fp, FAMILIAR_MIN) or is_habit_target(
                m.habit_target, fp, m.age, TARGET_DAYS, TARGET_SPAN):
            return alerts
        row.n_new += 1
        row.operator = index
        row.target = fp if row.target in (-1, fp) else -2
        return self._forward_check(sid, st, row, ts, day)


    def _forward_check(
        self, sid: str, st: State, row: DayCounts, ts: float, day: int
    ) -> list[dict[str, Any]]:
        """Judge at once when today's forwarding evidence becomes overwhelming, if home.

        Home: more of today's located calls from the home cell than elsewhere, and at least
        one. A switch while at home is a new SIM; the same while travelling is a trip. With
        no home cell known (a feed without location) the evidence is judged as it is.
        """
        m = st["m"]
        located_away = m.cell >= 0 and row.n_located <= 2 * row.n_away
        if not m.fwd_days or located_away or m.away:
            return []
        fwd = self._fwd(st)
        level = round(10 * fwd.evidence(row.n_in, row.n_new))
        # Only overwhelming evidence is judged at once; weaker waits for the day's close.
        if level < 10 or level <= row.judged:
            return []
        if self._may_be_away(st, row):
            # Held back for the stay away's judgement at the close, where it counts as
            # evidence even if calls from elsewhere come later in the day: it was seen
            # from home (DayCounts.judged, HELD_BACK).
            if not row.judged:
                row.judged = HELD_BACK
            return []
        row.judged = level
        self.counters["intraday_judgements"] += 1
        return self._judge(sid, st, day, ts, self.clock.iso(ts), daily=False, today=row)

    def _may_be_away(self, st: State, row: DayCounts) -> bool:
        """Whether today's forwarding may begin a stay away (:mod:`detectors.absence`): one
        runs, or outgoing calls so far are at most ``absence_collapse`` of a whole usual
        day and the usage CUSUM shows no decline. Then the day's close judges it (less
        than a day later), not the call."""
        if "t" in st:
            return True
        cfg = self.config
        m = st["m"]
        if m.age <= cfg.warmup_days or "s" not in st:
            return False
        usage = self._models(st)[1]
        return (usage.ready and usage.mean >= cfg.min_daily_calls
                and row.n_out <= cfg.absence_collapse * usage.mean
                and m.cusum < cfg.cusum_green)

    def _billing(
        self, sid: str, st: State, event: dict[str, Any], row: DayCounts, day: int
    ) -> list[dict[str, Any]]:
        """Count one billing event; a port-out or deactivation closes the state, and the
        subscriber's open episode with a ``closed`` alert (the only alert it may return)."""
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
            ended = []
            if level:
                self.counters["alerts_closed"] += 1
                ended.append(self._closed_alert(sid, st, kind, event["ts"]))
            closed: State = {"v": STATE_VERSION, "x": Closed([kind, day, level])}
            if "p" in st:
                closed["p"] = st["p"]
            st.clear()
            st.update(closed)
            return ended
        return []


    def _late(
        self, sid: str, st: State, kind: str, event: dict[str, Any], day: int
    ) -> list[dict[str, Any]]:
        """Use a late event where it still can be: spend, outgoing calls, activity; a late
        port-out or deactivation closes the state as an on-time one does."""
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
                ended = self._billing(sid, st, event, row, day)
                if "x" not in st:
                    self._apply_money(st, row, day)
                return ended
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
        return []
