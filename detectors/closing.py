"""Days: closing a subscriber's days in event time, the models learning from each closed
day (part of :class:`detectors.engine.Engine`)."""

from __future__ import annotations

import math
from typing import Any

from detectors.absence import VERDICTS
from detectors.dedupe import prune
from detectors.forwarding import NO_TARGET, Forwarding, see_target
from detectors.group_forwarding import GroupForwarding
from detectors.judgement import (
    ENGINE_KEY,
    SPEND_MILLI,
    SPEND_SCALE,
    Judgement,
    State,
)
from detectors.spend import SpendDrop
from detectors.state import (
    HELD_BACK,
    STATE_VERSION,
    DayCounts,
    Numbers,
)
from detectors.upgrade import upgrade

__all__ = ["DayClose", "ONSET_DAYS", "LEAD_DAYS"]

#: Collapsed days just before a stay away's first day that it takes in.
ONSET_DAYS = 2
#: Days before a stay away's collapse that must be near usual (no decline leading to it).
LEAD_DAYS = 4


class DayClose(Judgement):
    """Close days: apply their counters to the models, then judge."""

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
        if not first:
            # Circles that stopped forwarding count for no stay away any more.
            self.counters["circles_swept"] += self._circles().sweep(target)
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
        if "e" in st:  # a closed day's event ids: any event of it is too late now
            st["e"] = prune(st["e"], target)  # (the key stays: a dict that loses keys grows)
        return alerts

    @staticmethod
    def _away(st: State, row: DayCounts | None) -> bool:
        """Was the subscriber away from home on ``row``'s day (the cell numbers in ``"m"``)?

        One call from another cell is a commute; two in a row from the same other cell, or
        ``HomeCell.away_run`` other cells in a row, with no call from the home cell in between, is a
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
        n_in, n_fwd, _, n_new, n_out, n_located, n_away = row.counts
        spend, usage = self._models(st)
        fwd = self._fwd(st)
        held = False
        if away:
            self.counters["away_days"] += 1
            fwd.close_day(n_in, n_fwd, 0)
            if row.downgrades and "t" in st:
                # A stay away that went on elsewhere (cells): a cut during it still counts.
                self._stay.state = st["t"]
                self._stay.note_cut()
        else:
            # Forwarded calls count only as evidence (Forwarding.evidence): a habit, a
            # model still learning, or a call or two among many says nothing.
            forwarded = row.n_new if n_new and fwd.evidence(n_in, n_new) > 0 else 0
            if forwarded and row.operator >= 0:
                self._note_forwarding(sid, st, day, row.operator)
            held = self._stay_away(sid, st, day, row, spend, usage, fwd, forwarded)
            cents = max(row.call_charge, row.bill_charge) // SPEND_MILLI
            if held:
                # A stay away that may be an absence: its days stay out of the spend and
                # usage windows, so nothing fires on them after the return.
                self.counters["absence_days"] += 1
            else:
                spend.update(cents)
                usage.update(n_out)
            if (n_new and m.cell >= 0 and not n_located > 2 * n_away
                    and row.judged != HELD_BACK):
                # Forwarding on a day with no call from home: a trip or a switch, cannot
                # tell yet; neither evidence nor normal. Without any located call it waits,
                # decaying like carried evidence, for the next call from home to confirm it
                # (a trip shows itself by calls from elsewhere, which drop it). Cells are
                # extra evidence only: with no home cell known (a feed without location)
                # there is no call from home to wait for, and the day is judged as it is.
                # Evidence that was overwhelming from home and held back for a stay away
                # (HELD_BACK) is not dropped for calls from elsewhere later that day.
                fwd.close_day(0, 0, 0)
                if not n_located:
                    carry = fwd.carry
                    m.waiting_in = round((m.waiting_in + n_in) * carry, 2) or 0
                    m.waiting_new = round((m.waiting_new + n_new) * carry, 2) or 0
            else:
                if m.waiting_new:
                    self._confirm(st, fwd)
                if (row.target >= 0 and not forwarded and not fwd.streak
                        and (n_new == 1 or n_new < fwd.min_share * n_in)):
                    # One call, or some calls but not most, forwarded to one new number on
                    # a day with no evidence: a habit's day (a switch forwards most calls,
                    # and a quiet subscriber's shows as evidence on its second call).
                    m.habit_target = see_target(m.habit_target, row.target, m.age)
                elif forwarded and row.target == m.fwd_target:
                    # Evidence of a switch to it: no habit's number (until learned anew).
                    m.habit_target = list(NO_TARGET)
                fwd.close_day(n_in, n_fwd, n_new)
            # A held day still counts in its segment's totals: people travel at holidays,
            # and the segment's ratio that day must say so to those who stay.
            if (spend.ready and usage.ready) or (held and usage.n >= self.config.recent_days):
                segment = st["p"].segment if "p" in st else "unknown"
                self.population.add(
                    segment,
                    day,
                    (cents, round(spend.mean * SPEND_SCALE), 100 * n_out,
                     round(usage.mean * 100)),
                )
        if held:
            m.cusum = min(m.cusum, st["t"].cusum)
            m.pending, m.pending_count = 0, 0
        else:
            self._cusum(st, day, None if away else n_out, usage, away,
                        n_located > n_away)
        if not away and not held:
            incoming = self._incoming
            incoming.n, incoming.base, incoming.fast = m.incoming
            incoming.update(float(n_in))
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

    def _note_forwarding(self, sid: str, st: State, day: int, operator: int) -> None:
        """Record a member of a group or account forwarding off-net with evidence today
        (:class:`detectors.group_forwarding.GroupForwarding`): what others in a stay away compare
        with."""
        circle = self._circle(st)
        if circle is not None:
            self._circles().add(circle, day, operator, GroupForwarding.member(sid))

    def _stay_away(
        self, sid: str, st: State, day: int, row: DayCounts, spend: SpendDrop,
        usage: SpendDrop, fwd: Forwarding, forwarded: int,
    ) -> bool:
        """Step the stay-away model (:class:`detectors.absence.StayAway`) on a closed day
        at home; True when the day is held (a stay away that may be an absence).

        The usual calls are the baseline times the segment's ratio the day before (a
        holiday lowers everyone's); the fortnight before is steady when its calls are at
        ``drop_ratio_start`` of usual or more (allowing for the segment) and the usage
        CUSUM is below its green level. When a stay away is confirmed its earlier days
        leave the spend and usage windows, and the CUSUM goes back to its level before.
        When one held as an absence ends (activity back, nothing forwarded that day), the
        forwarding carried from its days was the trip's and is forgotten.
        """
        cfg = self.config
        m = st["m"]
        t = st.get("t")
        if (m.age <= cfg.warmup_days or usage.n < cfg.recent_days
                or usage.mean < cfg.min_daily_calls):
            st.pop("t", None)
            return False
        segment = st["p"].segment if "p" in st else "unknown"
        factor = self.population.ratio(segment, day - 1, day - 1, 1, min_count=10)
        rate = usage.mean * (factor if factor is not None else 1.0)
        steady, run = False, (0, 0)
        if t is None and usage.ready:
            steady, run = self._steady(usage, m.cusum, segment, day, m.downgrade)
        stay = self._stay
        stay.state = t
        was_confirmed = t is not None and t.confirmed
        old_verdict = t.verdict if t is not None else 0
        # Incoming calls forwarded anywhere (to someone on our own network too) did not
        # reach the phone: a trip's calls handed to a colleague are calls the line lost.
        # The holiday matters only to a running stay's presence (an onset is collapsed,
        # never present): not worked out for every subscriber's day.
        stay.expect(rate, m.in_base, row.n_in - row.n_fwd, forwarded, steady=steady,
                    cut=row.downgrades > 0, day=day, cusum=m.cusum, run=run,
                    holiday=t is not None and self._holidays.why(segment, day) is not None)
        stay.update(row.n_out)
        before, t = t, stay.state
        if t is None:
            if stay.ended:
                self.counters["absences_ended"] += 1
                if before is not None and not before.verdict:
                    fwd.forget()
            if stay.returned and before is not None:
                # A trip after all, now over: its days leave the windows and the CUSUM goes
                # back to its level before, as when one is confirmed, so nothing fires on
                # them after the return.
                self.counters["absences_returned"] += 1
                _forget_days(before.days, spend, usage)
                m.cusum = min(m.cusum, before.cusum)
            st.pop("t", None)
            return False
        st["t"] = t
        if forwarded and row.operator >= 0:
            t.operator = row.operator
        if t.confirmed and not was_confirmed:
            self.counters["absences"] += 1
            _forget_days(t.days - 1, spend, usage)
        if (t.confirmed and t.forwarded and not t.verdict
                and self._circle_forwards(st, day, t.operator, GroupForwarding.member(sid))):
            # Others of the group or account forwarding to the same operator, held as a
            # stay away or alerted for it: a group moving, not one member's trip.
            stay.group_moves()
        if t.verdict != old_verdict:
            self.counters[f"absence_{VERDICTS[t.verdict]}"] += 1
        return bool(stay.holding)

    def _steady(
        self, usage: SpendDrop, cusum: float, segment: str, day: int, downgrade: int = -1
    ) -> tuple[bool, tuple[int, int]]:
        """Was the fortnight before a collapse steady, and which days just before ``day``
        collapsed already (how many, and their outgoing calls)?

        At most :data:`ONSET_DAYS` collapsed days just before are taken into the stay: a
        trip's first day may be closed before the stay is recognised, but a week of low
        days is a decline's end, not a trip's start. The rest of the recent window is
        compared with the baseline, allowing for the segment's ratio over it: steady
        unless it is below ``drop_ratio_start`` of usual by more than ``drop_z`` standard
        errors (Poisson, scaled by the counts' dispersion), the :data:`LEAD_DAYS` days
        just before the collapse are below ``absence_back`` of usual by as much (a trip
        begins from ordinary days; a decline reaches the collapse already low), the
        usage CUSUM is below its green level, and the plan was not cut within
        ``recent_days`` (``downgrade``: the day of the last cut, -1: none).
        """
        cfg = self.config
        limit = cfg.absence_collapse * usage.mean
        recent = usage.recent
        k = 0
        while k < min(ONSET_DAYS, len(recent) - 7) and recent[-1 - k] <= limit:
            k += 1
        before = recent[:len(recent) - k]
        pop = self.population.ratio(segment, day - cfg.recent_days, day - 1 - k, metric=1)
        per_day = usage.mean * (min(1.0, pop) if pop is not None else 1.0)
        phi = max(1.0, usage.var / usage.mean) if usage.mean > 0 else 1.0

        def below(calls: list[int], share: float) -> bool:
            expected = per_day * len(calls)
            seen = sum(calls)
            return (seen < share * expected
                    and expected - seen >= cfg.drop_z * math.sqrt(phi * expected))

        declined = (below(before, cfg.drop_ratio_start)
                    or below(before[-LEAD_DAYS:], cfg.absence_back))
        # A plan cut in the fortnight before: the customer was stepping out, not settled.
        cut = downgrade >= 0 and day - downgrade < cfg.recent_days
        return (not declined and not cut and cusum < cfg.cusum_green,
                (k, sum(recent[len(recent) - k:])))

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
            # Dispersion of the daily counts around their expectation, learned by the CUSUM
            # (until it has learned any, the plain counts' variance over their mean, as old
            # as the baseline's days), and the baseline's own uncertainty while it rests on
            # few days (a young baseline is a noisy yardstick).
            cusum = self._usage_cusum
            cusum.level, cusum.n = m.cusum, usage.n
            cusum.observed = m.cusum_phi or max(1.0, usage.var / usage.mean)
            phi = min(cfg.cusum_phi_max, max(1.0, cusum.observed)) * (
                1.0 + 7.0 / max(usage.n, 1)
            )
            cusum.expect(lam, phi)
            cusum.update(m.pending_count)
            m.cusum, m.cusum_phi = cusum.level, cusum.observed
        if away:
            m.cusum = min(m.cusum, m.cusum_home)
        elif seen_home:
            m.cusum_home = m.cusum
        if count is None:
            m.pending, m.pending_count = 0, 0
        else:
            m.pending, m.pending_count = 1, count


def _forget_days(days: int, spend: SpendDrop, usage: SpendDrop) -> None:
    """Take a stay away's last ``days`` days (those already in them) out of the spend and
    usage windows: an absence's days say nothing about spend or usage."""
    earlier = min(days, len(usage.recent))
    if earlier > 0:
        del spend.recent[-earlier:]
        del usage.recent[-earlier:]
