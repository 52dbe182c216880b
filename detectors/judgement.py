"""Judgement: a subscriber's models as signals, a risk score and zone, and the alert
policy's decision (part of :class:`detectors.engine.Engine`; the alert itself is written by
:class:`detectors.outputs.Outputs`)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

from detectors.absence import StayAway
from detectors.bill import BillLevel
from detectors.config import EngineConfig
from detectors.contact import ContactWindows
from detectors.days import Clock
from detectors.forwarding import Forwarding
from detectors.forwarding_caps import modest, unknown_line
from detectors.group_forwarding import GroupForwarding
from detectors.holiday import Holidays
from detectors.numbers import OperatorLookup
from detectors.outputs import Outputs
from detectors.policy import AlertPolicy
from detectors.population import Population
from detectors.presence import HomeCell
from detectors.risk import Assessment, Signal, combine, drop_score
from detectors.spend import SpendDrop
from detectors.state import DayCounts
from detectors.stay_judgement import held_signal, stay_signal
from detectors.usage import IncomingRate, PoissonCusum

__all__ = ["Judgement"]

State = dict[str, Any]

FAMILIAR_SIZE = 2
FAMILIAR_MIN = 3
#: Ordinary days (no evidence; one call, or under half the calls) forwarded to one number,
#: over at least so many days, that make it a habit's target: forwarding there is then no
#: new number (forwarding.is_habit_target).
TARGET_DAYS = 3
TARGET_SPAN = 7
ENGINE_KEY = "__engine__"  # the engine's own event-time position, in the population store
NEVER = AlertPolicy().resolved_at  # a policy that never alerted is not stored
SPEND_SCALE = 10  # spend is kept in tenths of a yuan: short in the store, plenty precise
SPEND_MILLI = 1000 // SPEND_SCALE
CARRY_FWD_STRENGTH = {0.6: 0.55, 1.0: 0.75}


def _milli(amount: Any) -> int:
    return round(float(amount) * 1000) if amount else 0


class Judgement(Outputs):
    """Judge subscribers from their state: the last stage of the engine."""

    # Set by :class:`detectors.engine.Engine` (see its ``__init__``).
    config: EngineConfig
    subscribers: MutableMapping[str, State]
    population: Population
    counters: Counter[str]
    signals: list[dict[str, Any]]
    clock: Clock
    lookup: OperatorLookup
    _emit_signals: bool
    _operators: list[str]
    _operator_cache: dict[str, tuple[bool, int]]
    _watermark: float
    _closed_to: int | None
    _holidays: Holidays
    _next_sweep: float
    _closed_row: DayCounts | None
    _home: HomeCell
    _usage_cusum: PoissonCusum
    _incoming: IncomingRate
    _bill_level: BillLevel
    _contact: ContactWindows
    _fwd_params: dict[str, float]
    _stay: StayAway

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
        assessment = self.assess(st, day, today=today, away=away, models=models,
                                 member=GroupForwarding.member(sid))
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
        member: int = -1,
    ) -> Assessment:
        """Judge a subscriber's state as of ``day`` (``today``: the open day's counters;
        ``member``: the subscriber's number in their circle, for what others do)."""
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
        stay = st.get("t")
        # A stay away that may be an absence (:mod:`detectors.absence`): no usage or spend
        # judgement; with calls forwarded off-net, yellow (:mod:`detectors.stay_judgement`).
        held = stay is not None and bool(stay.confirmed) and not stay.verdict
        # A stay away not yet confirmed, within a trip's length, of a line that is called
        # (one nobody calls has no incoming calls to lose: its decline is the usage
        # models'): it may still be an absence. Its fall in usage is a warning at most, the
        # fall in spend is the same collapse (not a second piece of evidence), and
        # forwarding is a trip's as well as a switch's: yellow, as while held.
        pending = (stay is not None and not stay.confirmed and not stay.verdict
                   and day - stay.start < cfg.trip_days and m.in_base >= 0.5)
        if warm and not away and not held:
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
                incoming = m.in_fast / m.in_base if m.in_base >= 0.5 else None
                sig = self._usage_signal(usage, cusum, pop, segment, incoming)
                if sig is not None:
                    if pending:
                        sig.strength = min(sig.strength, 0.5)
                    signals.append(sig)
            if (spend.ready and spend.mean >= cfg.min_daily_spend and not rebased
                    and not pending):
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
            if (held or pending) and stay is not None and (stay.forwarded or strength > 0):
                # Forwarding off-net while the line is quiet: may be a trip, may be a
                # switch that looks like one; yellow for every day it is held (green at a
                # holiday).
                sig = held_signal(
                    stay, self.clock.date(stay.start), cfg.absence_fwd_strength,
                    cfg.trip_days, self._operator_name(stay.operator, m.fwd_operator))
                signals.append(self._at_holiday(sig, st, segment, day, stay.operator, member))
            elif strength > 0:
                sig = modest(self._forward_signal(st, fwd, strength, today), st, spend, cfg)
                operator = (today.operator if today is not None and today.operator >= 0
                            else m.fwd_operator)
                began = m.age - fwd.streak  # the line's age when this forwarding began
                if (began < cfg.warmup_days and fwd.streak < cfg.trip_days
                        and not self._circle_forwards(st, day, operator, member)):
                    sig = unknown_line(sig, began, cfg)
                signals.append(self._at_holiday(sig, st, segment, day, operator, member))
        if stay is not None and stay.confirmed and stay.verdict:
            signals.append(stay_signal(
                stay, self.clock.date(stay.start), cfg.absence_red_strength, cfg.trip_days,
                self._circle(st), self._operator_name(stay.operator)))
        if m.bill_n and m.bill_ratio < cfg.bill_ratio and day - m.bill_day <= 31:
            signals.append(Signal(
                "bill_drop", 0.3,
                f"the last monthly bill is {m.bill_ratio:.0%} of the usual "
                f"{m.bill_mean:.2f} yuan",
                {"ratio": m.bill_ratio, "usual_bill": m.bill_mean},
            ))
        assessment = combine(signals, cfg.green, cfg.yellow, cfg.red, silent=silent)
        assessment.hold = away or absent or held
        return assessment

    def _operator_name(self, *indexes: int) -> str | None:
        """The name of the first operator index that is one (None: none is)."""
        for op in indexes:
            if 0 <= op < len(self._operators):
                return self._operators[op]
        return None

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
            figures_text, model.n,
        )
        figures["days"] = best_days
        return Signal(code, best, summary, figures)

    def _versus(
        self, what: str, recent: float, own: float, factor: float, segment: str,
        figures_text: str, learned: int,
    ) -> tuple[str, dict[str, Any]]:
        """A sentence comparing ``recent`` with the subscriber's own baseline ``own``, and,
        when the whole segment fell over the same days, with what that leaves expected.
        ``learned``: days the baseline has learned from (the sentence states the history it
        has, up to the baseline's span)."""
        cfg = self.config
        ratio = recent / own if own > 0 else 1.0
        verb = "is" if what.startswith("spend") else "are"
        history = min(learned, cfg.baseline_days)
        summary = (f"{what} {verb} {ratio:.0%} of this subscriber's baseline over {history} "
                   f"days ({figures_text})")
        figures: dict[str, Any] = {
            "recent": round(recent, 2), "baseline": round(own, 2), "ratio": round(ratio, 3),
            "baseline_days": history,
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
        self, usage: SpendDrop, cusum: float, pop: float | None, segment: str,
        incoming: float | None = None,
    ) -> Signal | None:
        cfg = self.config
        strength = (cfg.usage_red_strength if cusum >= cfg.cusum_red
                    else 0.5 if cusum >= cfg.cusum_yellow else cfg.usage_green_strength)
        factor = min(1.0, pop) if pop is not None else 1.0
        recent, own, _ = usage.window(cfg.recent_days)
        summary, figures = self._versus(
            f"outgoing calls over the last {cfg.recent_days} days at home", recent, own,
            factor, segment, f"{recent:.0f} calls against a usual {own:.1f} a fortnight",
            usage.n,
        )
        # The CUSUM reacts to the last days; the sentence reads the fortnight. A fortnight
        # at or above what is expected (allowing for the segment) is no drop, and one short
        # of a clear drop (``drop_ratio_start``) is a warning at most: the zone must not
        # say more than the reason does.
        shown = figures.get("ratio_vs_segment", figures["ratio"])
        if shown >= 1.0:
            self.counters["usage_drop_contradicted"] += 1
            return None
        if shown > cfg.drop_ratio_start:
            strength = min(strength, 0.5)
        figures.update({"days": cfg.recent_days, "cusum": cusum})
        if incoming is not None and incoming < cfg.presence_ratio:
            # Both directions fall together, gradually (an abrupt stop of both is a stay
            # away, held apart): the contacts no longer reach this number, as when the
            # customer moves. A switch to a second SIM keeps the incoming calls coming.
            # Said, not weighed: a weight for it (0.15, with the presence factor and the
            # absence hold dropped) raised false alerts on the tuning worlds.
            summary += (f"; incoming calls fell too, to {incoming:.0%} of usual over the "
                        f"last week: the customer's contacts no longer reach this number, as "
                        f"when a customer moves away")
            figures["incoming_ratio"] = round(incoming, 3)
        return Signal("usage_drop", strength, summary, figures)

    def _circles(self) -> GroupForwarding:
        """Who of each group or account forwards off-net, kept in the population store for
        two trips' length (what a stay away's "others do the same" can look back on)."""
        return GroupForwarding(self.population.store, keep_days=2 * self.config.trip_days)

    def _at_holiday(self, sig: Signal, st: State, segment: str, day: int, operator: int,
                    member: int) -> Signal:
        """``sig`` (forwarding off-net) weighed as a possible trip, green, while the segment
        is at a holiday, when many travel and forward their calls, unless others of the
        group or account forward to the same operator (a group moving is no trip)."""
        holiday = self._holidays.why(segment, day)
        if holiday is None or self._circle_forwards(st, day, operator, member):
            return sig
        why, figures = holiday
        sig.strength = min(sig.strength, self.config.holiday_trip_strength)
        sig.summary += f"; {why}, when many travel: it may be a trip"
        sig.figures.update(figures)
        return sig

    @staticmethod
    def _circle(st: State) -> str | None:
        """The subscriber's circle: their group, else their account (None: neither)."""
        profile = st.get("p")
        return (GroupForwarding.circle(profile.group_id, profile.account_id)
                if profile is not None else None)

    def _circle_forwards(self, st: State, day: int, operator: int, member: int) -> bool:
        """Do other members of the subscriber's group or account forward off-net to the
        same operator (``config.absence_group_members`` of them, within a trip's length)?"""
        circle = self._circle(st)
        return circle is not None and operator >= 0 and self._circles().others(
            circle, day, operator, member, self.config.trip_days
        ) >= self.config.absence_group_members

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
