"""A labelled simulated telecom world (the ``churnwatch simulate`` command is
:mod:`stream.tools.simulate`).

Writes, day by day, the three input streams in the input contract
(``calls.jsonl``, ``billing.jsonl``, ``subscribers.jsonl``), and beside them the ground
truth (``truth.jsonl``, ``groups.jsonl``), the numbers ported before the world began
(``ported.jsonl``) and a summary (``world.json``). Every parameter lives in
:class:`WorldParams`; ``docs/simulator.md`` says what is modelled and what is not.

Determinism: every random draw comes from a :class:`random.Random` seeded by integers
derived from ``(seed, subscriber, day)``, so the same seed writes the same bytes, and a
subscriber's behaviour does not depend on the order in which others are generated.
Memory: per-subscriber schedules are small records drawn up front; events are held
for one day at a time, sorted, written and dropped.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

__all__ = ["WorldParams", "Segment", "simulate"]

# --------------------------------------------------------------------------------------
# Parameters: everything that shapes the world, in one place.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Behaviour of one customer segment.

    ``out_calls`` / ``in_calls`` are mean calls per working day before per-subscriber
    spread; ``weekend`` and ``holiday`` multiply them; ``fees`` are monthly plan fees
    (yuan) to choose from; ``rate`` is the charge per started minute of an outgoing
    off-group call (and of a forwarded call's forwarding leg).
    """

    out_calls: float
    in_calls: float
    weekend: float
    holiday: float
    fees_prepaid: tuple[float, ...]
    fees_postpaid: tuple[float, ...]
    rate: float
    postpaid_share: float
    median_call_s: float
    business_hours: bool


SEGMENTS: dict[str, Segment] = {
    "consumer": Segment(2.2, 2.0, 1.10, 0.70, (18.0, 28.0, 38.0, 58.0),
                        (58.0, 88.0, 128.0, 188.0), 0.15, 0.40, 70.0, False),
    "sme": Segment(5.0, 4.5, 0.40, 0.35, (58.0, 88.0), (128.0, 188.0, 288.0), 0.12, 0.85,
                   100.0, True),
    "key_account": Segment(9.0, 8.0, 0.35, 0.30, (), (288.0, 388.0, 588.0), 0.10, 1.0,
                           130.0, True),
    "government": Segment(7.0, 6.0, 0.25, 0.20, (), (188.0, 288.0, 388.0), 0.10, 1.0,
                          120.0, True),
}


@dataclass(frozen=True)
class WorldParams:
    """Every knob of the simulated world. Days are counted from ``start`` (day 0)."""

    subscribers: int = 2000
    days: int = 120
    seed: int = 1
    start: date = date(2026, 1, 5)  # a Monday
    tz: str = "+08:00"
    segments: dict[str, Segment] = field(default_factory=lambda: dict(SEGMENTS))

    # Who is who. Group members come first; the rest are individuals by segment.
    group_share: float = 0.30  # share of subscribers in corporate groups
    group_size: tuple[int, int] = (5, 30)
    group_segments: tuple[tuple[str, float], ...] = (
        ("key_account", 0.5), ("government", 0.25), ("sme", 0.25))
    individual_segments: tuple[tuple[str, float], ...] = (
        ("consumer", 0.85), ("sme", 0.12), ("key_account", 0.03))
    # Behaviour kinds of individuals (the rest are "stable").
    individual_kinds: tuple[tuple[str, float], ...] = (
        ("individual_churn", 0.08), ("plan_downgrade", 0.05), ("trip", 0.06),
        ("sparse", 0.06), ("new_joiner", 0.06), ("habitual_forwarder", 0.04),
        ("ported_number", 0.02))
    # Behaviour kinds of members of groups that do not defect (or members who stay).
    member_kinds: tuple[tuple[str, float], ...] = (
        ("individual_churn", 0.02), ("plan_downgrade", 0.02), ("trip", 0.05),
        ("habitual_forwarder", 0.04))
    ported_in_share: float = 0.03  # subscribers whose own number carries another prefix

    # Calls.
    rate_spread: float = 0.45  # sigma of the per-subscriber log-normal volume spread
    daily_noise: float = 0.30  # sigma of the day-to-day log-normal activity noise
    drift: float = 0.15  # sigma of each subscriber's log-trend over the whole world
    in_group_share: float = 0.55  # share of a group member's calls inside the group
    contacts: int = 24  # personal contacts per subscriber (skewed: a few favourites)
    contact_mix: tuple[float, float, float] = (0.45, 0.30, 0.25)  # in-world, on-net, off-net
    other_cell_share: float = 0.2

    # Collective defection of groups.
    collective_share: float = 0.15  # share of groups that defect together (plus the herd)
    defecting_members: tuple[float, float] = (0.75, 1.0)
    group_forward_window: int = 5  # members set forwarding within this many days
    group_forward_share: tuple[float, float] = (0.7, 0.95)
    group_activity_after: float = 0.15  # own activity once members use the new SIM
    group_portout_after: tuple[int, int] = (10, 40)  # days after defection start
    group_keep_number_share: float = 0.8  # defecting groups cut plans to a keep-number fee
    keep_number_fee: float = 8.0
    group_last_start_before_end: int = 45
    herd_follow_share: float = 0.3  # a defecting group is followed by one in its building
    herd_lag: tuple[int, int] = (10, 25)  # days after the leader's defection

    # Individual churn: slow decay (multi-SIM drift), sometimes forwarding, then port-out.
    warmup_days: int = 28
    churn_decay_days: tuple[int, int] = (14, 49)
    churn_floor: tuple[float, float] = (0.05, 0.3)
    churn_last_start_before_end: int = 30
    churn_forward_share: float = 0.5  # share of churners forwarding before port-out
    churn_forward_lead: tuple[int, int] = (3, 21)  # days before port-out
    churn_forward_calls: tuple[float, float] = (0.5, 0.95)
    churn_downgrade_share: float = 0.25

    # Confounders.
    downgrade_ratio: tuple[float, float] = (0.4, 0.65)
    downgrade_usage: float = 0.9
    trip_days: tuple[int, int] = (7, 14)
    trip_activity: tuple[float, float] = (0.03, 0.15)
    trip_forward_share: float = 0.5
    trip_forward_calls: tuple[float, float] = (0.6, 0.9)
    sparse_calls: tuple[float, float] = (0.15, 0.5)
    joiner_window: tuple[float, float] = (0.06, 0.7)  # join day as share of the world
    joiner_ramp_days: int = 14
    habitual_forward_calls: tuple[float, float] = (0.2, 0.6)
    habitual_targets: tuple[float, float, float] = (0.5, 0.3, 0.2)  # voicemail, colleague, own
    voicemail_number: str = "12599"
    ported_forward_calls: tuple[float, float] = (0.5, 0.9)

    # The public holiday (Spring Festival 2026); moved to 40% of the world if outside it.
    holiday_start: date | None = date(2026, 2, 15)
    holiday_days: int = 9
    holiday_trip_share: float = 0.12
    holiday_trip_activity: float = 0.15
    holiday_trip_forward_share: float = 0.3
    # Weekend days that are working days (调休 make-up days around Spring Festival 2026).
    make_up_workdays: tuple[date, ...] = (date(2026, 2, 14), date(2026, 2, 28))

    # Money.
    charge_time_s: int = 23 * 3600 + 59 * 60 + 30  # daily charge posted at 23:59:30
    bill_time_s: int = 2 * 3600  # monthly bill posted 02:00 on the 1st
    topups: tuple[float, ...] = (30.0, 50.0, 100.0, 200.0)

    # What the engine must not depend on (the presets of ``stream/tools/scenarios.py``
    # set these; the defaults are the world as it always was, byte for byte).
    preset: str = "default"  # the name of the preset these parameters came from
    # "varied": the home cell, 20% of calls from other cells, roaming cells on trips;
    # "home": every call from the home cell (a constant cell); "none": cell_id null.
    cell_ids: str = "varied"
    trip_cells: str = "roaming"  # "home": trips change no cell (absences at home)
    trip_forward_off_net: bool = False  # trips forward to an off-net number, never on-net
    # Share of an individual churner's fall in outgoing calls that incoming calls follow
    # (0.5: incoming falls half as far; 1.0: both directions fall together).
    churn_in_follow: float = 0.5

    # When people answer the phone. "personal": each subscriber has hours of the week when
    # they are free to answer (``answer_spans`` spans of ``answer_span_hours`` on weekdays,
    # one on the weekend and holidays, starting at hours drawn from their segment's call
    # profile); an incoming call rings at the caller's time and is answered with the first
    # probability of ``answer_share`` in those hours and the second outside them (an
    # unanswered call has ``duration_s`` 0); ``own_calls_in_hours`` of their own calls are
    # made in those hours. "always": every call answered, calls at the segment's hours.
    answer_hours: str = "personal"
    answer_spans: int = 2
    answer_span_hours: tuple[int, int] = (2, 4)
    weekend_span_hours: tuple[int, int] = (3, 6)
    answer_share: tuple[float, float] = (0.9, 0.2)
    own_calls_in_hours: float = 0.8


OUR_OPERATOR = "China Mobile"
OPERATOR_PREFIXES: dict[str, tuple[int, ...]] = {
    "China Mobile": (134, 135, 136, 137, 138, 139, 147, 150, 151, 152, 157, 158, 159, 172,
                     178, 182, 183, 184, 187, 188, 195, 197, 198),
    "China Unicom": (130, 131, 132, 145, 155, 156, 166, 175, 176, 185, 186, 196),
    "China Telecom": (133, 149, 153, 173, 177, 180, 181, 189, 190, 191, 193, 199),
    "China Broadnet": (192,),
}
CELL_MODES = ("varied", "home", "none")
ANSWER_MODES = ("personal", "always")
TRIP_CELL_MODES = ("roaming", "home")
COMPETITORS = ("China Unicom", "China Telecom", "China Broadnet")
COMPETITOR_WEIGHTS = (0.5, 0.45, 0.05)

_CONSUMER_HOURS = (0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.8, 1.2, 1.3, 1.3, 1.3, 1.4, 1.3,
                   1.2, 1.2, 1.3, 1.5, 1.7, 1.8, 1.7, 1.4, 0.9, 0.4)
_BUSINESS_HOURS = (0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.05, 0.3, 1.5, 2.2, 2.3, 2.0, 1.0,
                   1.4, 2.2, 2.2, 2.0, 1.5, 0.6, 0.3, 0.2, 0.1, 0.05, 0.02)

# --------------------------------------------------------------------------------------
# Deterministic integer hashing (no dependence on PYTHONHASHSEED).
# --------------------------------------------------------------------------------------
_M64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64 steps), stable across runs and platforms."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _M64)) & _M64
        h = (h + 0x9E3779B97F4A7C15) & _M64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        h = z ^ (z >> 31)
    return h


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    x = rng.random()
    for name, w in weighted:
        if x < w:
            return name
        x -= w
    return weighted[-1][0]


def _number(prefix: int, suffix: int) -> str:
    return f"{prefix}{suffix % 100_000_000:08d}"


def _operator_number(operator: str, h: int) -> str:
    prefixes = OPERATOR_PREFIXES[operator]
    return _number(prefixes[h % len(prefixes)], h >> 16)


def _competitor(h: int) -> str:
    x = (h % 10_000) / 10_000
    for name, w in zip(COMPETITORS, COMPETITOR_WEIGHTS, strict=True):
        if x < w:
            return name
        x -= w
    return COMPETITORS[-1]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, int(rng.gauss(lam, math.sqrt(lam)) + 0.5))
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _hour_table(weights: tuple[float, ...]) -> tuple[int, ...]:
    table: list[int] = []
    for hour, w in enumerate(weights):
        table.extend([hour] * round(w * 20))
    return tuple(table)


# --------------------------------------------------------------------------------------
# The world's cast: groups and subscribers with their whole schedule drawn up front.
# --------------------------------------------------------------------------------------


@dataclass
class Group:
    index: int
    group_id: str
    account_id: str
    segment: str
    cell_id: str
    account_manager: str
    lo: int  # member subscriber indexes lo..hi-1
    hi: int
    collective: bool = False
    competitor: str | None = None
    defection_day: int | None = None
    keep_number_day: int | None = None
    follows: str | None = None  # the group whose defection this one followed (herd)


class Sub:
    """One subscriber's profile and schedule (a small record; no events)."""

    __slots__ = (
        "idx", "sid", "msisdn", "ported_in", "segment", "tier", "account_id", "group",
        "account_manager", "postpaid", "fee", "rate", "out_rate", "in_rate", "home_cell",
        "kind", "join_day", "join_s", "churn_start", "decay_days", "floor", "port_out_day",
        "port_out_s", "forwards", "plan_change", "trips", "sparse_p", "balance",
        "month_total", "month_days", "group_after", "trend", "answers",
    )

    # Set when the cast is drawn (World._subscriber), before anything reads them.
    idx: int
    sid: str
    msisdn: str
    ported_in: bool
    segment: str
    tier: str | None
    account_id: str
    account_manager: str | None
    postpaid: bool
    fee: float
    rate: float
    out_rate: float
    in_rate: float
    home_cell: str
    kind: str

    def __init__(self) -> None:
        self.group: Group | None = None
        self.join_day = 0
        self.join_s = 0
        self.churn_start: int | None = None
        self.decay_days = 0
        self.floor = 1.0
        self.port_out_day: int | None = None
        self.port_out_s = 0
        # (start_day, end_day_exclusive, to, share, why)
        self.forwards: list[tuple[int, int, str, float, str]] = []
        self.plan_change: tuple[int, int, float, float] | None = None  # day, sec, old, new
        self.trips: list[tuple[int, int, float, str]] = []  # start, end_excl, activity, kind
        self.sparse_p = 1.0
        self.balance = 0.0
        self.month_total = 0.0
        self.month_days = 0
        self.group_after: int | None = None  # day from which own activity collapses
        self.trend = 0.0  # organic drift: log-multiplier reached at the world's end
        # Hours (local) the subscriber answers in: (weekdays, weekend and holidays); empty
        # with ``answer_hours="always"`` (every call is answered)
        self.answers: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())


class World:
    """Draws the cast from the parameters and generates events one day at a time."""

    def __init__(self, p: WorldParams) -> None:
        if p.subscribers < 1 or p.days < 1:
            raise ValueError("subscribers and days must be positive")
        if p.answer_hours not in ANSWER_MODES:
            raise ValueError(f"answer_hours must be one of {', '.join(ANSWER_MODES)}")
        if p.cell_ids not in CELL_MODES or p.trip_cells not in TRIP_CELL_MODES:
            raise ValueError(f"cell_ids must be one of {', '.join(CELL_MODES)} and "
                             f"trip_cells one of {', '.join(TRIP_CELL_MODES)}")
        self.p = p
        self.seed = p.seed
        self.hours = {True: _hour_table(_BUSINESS_HOURS), False: _hour_table(_CONSUMER_HOURS)}
        self.holiday = self._holiday_days()
        self.groups: list[Group] = []
        self.subs: list[Sub] = []
        self.ported: list[tuple[str, str]] = []
        self._msisdns = [self._make_msisdn(i) for i in range(p.subscribers)]
        self._cast()

    # -- numbers ------------------------------------------------------------------------
    def is_ported_in(self, i: int) -> bool:
        return _mix(self.seed, i, 77) % 10_000 < self.p.ported_in_share * 10_000

    def msisdn(self, i: int) -> str:
        return self._msisdns[i]

    def _make_msisdn(self, i: int) -> str:
        suffix = (i * 48_271 + 12_345_678) % 100_000_000
        h = _mix(self.seed, i, 78)
        if self.is_ported_in(i):
            operator = _competitor(h)
            prefixes = OPERATOR_PREFIXES[operator]
        else:
            prefixes = OPERATOR_PREFIXES[OUR_OPERATOR]
        return _number(prefixes[(h >> 20) % len(prefixes)], suffix)

    def contact(self, i: int, k: int) -> str:
        """Contact ``k`` of subscriber ``i``: a pure function, so nothing is stored."""
        h = _mix(self.seed, i, k, 79)
        x = (h % 1000) / 1000
        in_world, on_net, _ = self.p.contact_mix
        if x < in_world:
            return self.msisdn((h >> 12) % self.p.subscribers)
        if x < in_world + on_net:
            return _operator_number(OUR_OPERATOR, h >> 12)
        return _operator_number(_competitor(h >> 40), h >> 12)

    # -- calendar -----------------------------------------------------------------------
    def _holiday_days(self) -> range:
        p = self.p
        if p.holiday_days <= 0:
            return range(0)
        start = None
        if p.holiday_start is not None:
            start = (p.holiday_start - p.start).days
            if start < 0 or start + p.holiday_days > p.days:
                start = None
        if start is None:
            start = int(p.days * 0.4)
        return range(start, min(p.days, start + p.holiday_days))

    def date_of(self, day: int) -> date:
        return self.p.start + timedelta(days=day)

    def ts(self, day: int, sec: int) -> str:
        d = self.date_of(day)
        return (f"{d.isoformat()}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"
                f"{self.p.tz}")

    # -- cast ---------------------------------------------------------------------------
    def _cast(self) -> None:
        p = self.p
        n = p.subscribers
        rng = random.Random(_mix(self.seed, 1))
        n_members = round(n * p.group_share)
        lo = 0
        while n_members - lo >= p.group_size[0]:
            size = min(rng.randint(*p.group_size), n_members - lo)
            if n_members - lo - size < p.group_size[0]:
                size = n_members - lo
            gi = len(self.groups)
            self.groups.append(Group(
                index=gi, group_id=f"G{gi + 1:04d}", account_id=f"AC-G{gi + 1:04d}",
                segment=_pick(rng, p.group_segments),
                cell_id=f"C{_mix(self.seed, gi, 5) % 90000 + 10000}",
                account_manager=f"AM{gi % 17 + 1:03d}", lo=lo, hi=lo + size))
            lo += size
        n_members = lo
        k = round(p.collective_share * len(self.groups))
        if k == 0 and len(self.groups) >= 2 and p.collective_share > 0:
            k = 1
        collective = sorted(rng.sample(self.groups, k), key=lambda g: g.index)
        first = min(p.warmup_days, p.days // 3)
        last = max(first, p.days - p.group_last_start_before_end)
        for g in collective:
            grng = random.Random(_mix(self.seed, g.index, 2))
            g.collective = True
            g.competitor = _competitor(_mix(self.seed, g.index, 3))
            g.defection_day = grng.randint(first, last)
        # The herd: a group in the same building follows a defecting one weeks later.
        for g in sorted(collective, key=lambda g: g.index):
            grng = random.Random(_mix(self.seed, g.index, 15))
            assert g.defection_day is not None
            day = g.defection_day + grng.randint(*p.herd_lag)
            quiet = [h for h in self.groups if not h.collective]
            if grng.random() < p.herd_follow_share and quiet and day <= p.days - 30:
                h = quiet[grng.randrange(len(quiet))]
                h.collective = True
                h.competitor = g.competitor
                h.defection_day = day
                h.cell_id = g.cell_id
                h.follows = g.group_id
                collective.append(h)
        for g in collective:
            grng = random.Random(_mix(self.seed, g.index, 16))
            if grng.random() < p.group_keep_number_share:
                assert g.defection_day is not None
                g.keep_number_day = g.defection_day + grng.randint(3, 8)
        self._group_starts = [g.lo for g in self.groups]
        for i in range(n):
            group = self.groups[self._group_of(i)] if i < n_members else None
            self.subs.append(self._draw_sub(i, group))
        for s in self.subs:
            if s.ported_in:
                self.ported.append((s.msisdn, OUR_OPERATOR))
        self.ported_set = {number for number, _ in self.ported}

    def _group_of(self, i: int) -> int:
        return bisect.bisect_right(self._group_starts, i) - 1

    def _draw_sub(self, i: int, group: Group | None) -> Sub:
        p = self.p
        rng = random.Random(_mix(self.seed, i, 4))
        s = Sub()
        s.idx = i
        s.sid = f"S{(i * 7_654_321 + 1_234_567) % 10_000_000:07d}"
        s.msisdn = self.msisdn(i)
        s.ported_in = self.is_ported_in(i)
        s.group = group
        if group is not None:
            s.segment = group.segment
            s.account_id = group.account_id
            s.account_manager = group.account_manager
            s.home_cell = group.cell_id
        else:
            s.segment = _pick(rng, p.individual_segments)
            s.account_id = f"AC-{s.sid[1:]}"
            s.account_manager = (f"AM{rng.randint(1, 17):03d}"
                                 if s.segment == "key_account"
                                 or (s.segment == "sme" and rng.random() < 0.3) else None)
            s.home_cell = f"C{_mix(self.seed, i, 6) % 90000 + 10000}"
        seg = p.segments[s.segment]
        s.tier = self._tier(rng, s.segment)
        s.postpaid = group is not None or rng.random() < seg.postpaid_share or not seg.fees_prepaid
        fees = seg.fees_postpaid if s.postpaid else seg.fees_prepaid
        s.fee = rng.choice(fees)
        if s.tier == "diamond":
            s.fee = max(fees)
        s.rate = seg.rate * (0.8 if s.postpaid else 1.25)
        spread = math.exp(rng.gauss(0.0, p.rate_spread))
        s.out_rate = seg.out_calls * spread
        s.in_rate = seg.in_calls * spread * math.exp(rng.gauss(0.0, 0.2))
        s.balance = rng.uniform(20.0, 80.0) + s.fee
        s.trend = rng.gauss(0.0, p.drift)
        if group is not None and group.collective and rng.random() < rng.uniform(
                *p.defecting_members):
            s.kind = "group_churn"
        elif group is not None:
            s.kind = _pick(rng, p.member_kinds + (("stable", 1.0),))
        else:
            s.kind = _pick(rng, p.individual_kinds + (("stable", 1.0),))
        self._schedule(s, rng)
        if p.answer_hours == "personal":
            s.answers = self._answer_hours(s)
        return s

    def _answer_hours(self, s: Sub) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The hours of the week ``s`` answers in: spans starting at hours drawn from the
        segment's call profile (its own random stream: the rest of the cast is unchanged)."""
        p = self.p
        rng = random.Random(_mix(self.seed, s.idx, 40))
        table = self.hours[p.segments[s.segment].business_hours]
        weekend_table = self.hours[False]
        days: list[tuple[int, ...]] = []
        for spans, lengths, hours in ((p.answer_spans, p.answer_span_hours, table),
                                      (1, p.weekend_span_hours, weekend_table)):
            free: set[int] = set()
            for _ in range(spans):
                start = rng.choice(hours)
                free.update(h % 24 for h in range(start, start + rng.randint(*lengths)))
            days.append(tuple(sorted(free)))
        return days[0], days[1]

    def _tier(self, rng: random.Random, segment: str) -> str | None:
        x = rng.random()
        if segment == "key_account":
            return "diamond" if x < 0.3 else "gold" if x < 0.7 else "silver"
        if segment == "government":
            return "gold" if x < 0.4 else "silver"
        if segment == "sme":
            return "silver" if x < 0.3 else None
        return "gold" if x < 0.02 else "silver" if x < 0.10 else None

    def _competitor_target(self, h: int, operator: str | None = None) -> str:
        return _operator_number(operator or _competitor(h), h >> 8)

    def _schedule(self, s: Sub, rng: random.Random) -> None:
        p = self.p
        days = p.days
        first = min(p.warmup_days, days // 3)
        kind = s.kind
        if kind == "group_churn":
            g = s.group
            assert g is not None and g.defection_day is not None
            fwd = g.defection_day + rng.randint(0, p.group_forward_window)
            target = self._competitor_target(_mix(self.seed, s.idx, 10), g.competitor)
            s.churn_start = g.defection_day
            s.group_after = fwd
            s.forwards.append((fwd, days + 1, target, rng.uniform(*p.group_forward_share),
                               "churn"))
            s.port_out_day = fwd + rng.randint(*p.group_portout_after)
            if g.keep_number_day is not None:
                s.plan_change = (g.keep_number_day, 10 * 3600 + s.idx % 600, s.fee,
                                 p.keep_number_fee)
        elif kind == "individual_churn":
            last = max(first, days - p.churn_last_start_before_end)
            s.churn_start = rng.randint(first, last)
            s.decay_days = rng.randint(*p.churn_decay_days)
            s.floor = rng.uniform(*p.churn_floor)
            s.port_out_day = s.churn_start + s.decay_days + rng.randint(0, 5)
            if rng.random() < p.churn_forward_share:
                fwd = max(s.churn_start, s.port_out_day - rng.randint(*p.churn_forward_lead))
                target = self._competitor_target(_mix(self.seed, s.idx, 11))
                s.forwards.append((fwd, days + 1, target, rng.uniform(*p.churn_forward_calls),
                                   "churn"))
            if rng.random() < p.churn_downgrade_share:
                day = s.churn_start + int(s.decay_days * rng.uniform(0.3, 0.7))
                s.plan_change = (day, rng.randint(9 * 3600, 18 * 3600), s.fee,
                                 self._lower_fee(s, rng))
        elif kind == "plan_downgrade":
            day = rng.randint(first, max(first, days - 14))
            s.plan_change = (day, rng.randint(9 * 3600, 18 * 3600), s.fee,
                             self._lower_fee(s, rng))
        elif kind == "trip":
            start = rng.randint(first, max(first, days - 16))
            end = start + rng.randint(*p.trip_days)
            s.trips.append((start, end, rng.uniform(*p.trip_activity), "trip"))
            if rng.random() < p.trip_forward_share:
                s.forwards.append((start, end, self._family_number(s, rng),
                                   rng.uniform(*p.trip_forward_calls), "trip"))
        elif kind == "sparse":
            s.out_rate = rng.uniform(*p.sparse_calls)
            s.in_rate = rng.uniform(*p.sparse_calls)
            s.sparse_p = rng.uniform(0.2, 0.5)
            if not s.postpaid:
                s.fee = min(p.segments[s.segment].fees_prepaid or (s.fee,))
        elif kind == "new_joiner":
            s.join_day = rng.randint(max(1, int(days * p.joiner_window[0])),
                                     max(1, int(days * p.joiner_window[1])))
            s.join_s = rng.randint(9 * 3600, 19 * 3600)
        elif kind == "habitual_forwarder":
            x = rng.random()
            vm, colleague, _ = p.habitual_targets
            if x < vm:
                target = p.voicemail_number
            elif x < vm + colleague:
                g = s.group
                j = (rng.randrange(g.lo, g.hi) if g is not None
                     else rng.randrange(p.subscribers))
                target = self.msisdn(j)
            else:
                target = self._competitor_target(_mix(self.seed, s.idx, 12))
            s.forwards.append((0, days + 1, target, rng.uniform(*p.habitual_forward_calls),
                               "habit"))
        elif kind == "ported_number":
            start = rng.randint(first, max(first, days - 14))
            target = self._competitor_target(_mix(self.seed, s.idx, 13))
            self.ported.append((target, OUR_OPERATOR))
            s.forwards.append((start, days + 1, target, rng.uniform(*p.ported_forward_calls),
                               "ported"))
        # The holiday: anyone present may travel for part of it.
        hol = self.holiday
        if hol and rng.random() < p.holiday_trip_share:
            start = rng.randint(hol.start, max(hol.start, hol.stop - 3))
            end = min(hol.stop, start + rng.randint(3, 9))
            if not any(t[0] < end and start < t[1] for t in s.trips):
                s.trips.append((start, end, p.holiday_trip_activity, "holiday_trip"))
                if rng.random() < p.holiday_trip_forward_share and not s.forwards:
                    s.forwards.append((start, end, self._family_number(s, rng),
                                       rng.uniform(*p.trip_forward_calls), "holiday_trip"))
        if s.port_out_day is not None:
            if s.port_out_day >= days:
                s.port_out_day = None  # censored: leaves after the world ends
            else:
                s.port_out_s = rng.randint(9 * 3600, 18 * 3600)
                gone = (s.port_out_day, s.port_out_s)
                if s.plan_change is not None and s.plan_change[:2] >= gone:
                    s.plan_change = None
                s.trips = [t for t in s.trips if t[0] <= s.port_out_day]
                s.forwards = [f for f in s.forwards if f[0] <= s.port_out_day]
        s.trips.sort()
        s.forwards.sort()

    def _lower_fee(self, s: Sub, rng: random.Random) -> float:
        seg = self.p.segments[s.segment]
        fees = seg.fees_postpaid if s.postpaid else seg.fees_prepaid
        want = s.fee * rng.uniform(*self.p.downgrade_ratio)
        lower = [f for f in fees if f <= want]
        return max(lower) if lower else round(want)

    def _family_number(self, s: Sub, rng: random.Random) -> str:
        h = _mix(self.seed, s.idx, 14)
        if rng.random() < 0.5:
            j = rng.randrange(self.p.subscribers)  # drawn either way: the same cast
            if not self.p.trip_forward_off_net:
                return self.msisdn(j)
        return self._competitor_target(h)

    # -- one day ------------------------------------------------------------------------
    def activity(self, s: Sub, day: int, weekday: int) -> tuple[float, float]:
        """Multipliers of (outgoing, incoming) call volume for ``s`` on ``day``."""
        p = self.p
        seg = p.segments[s.segment]
        base = seg.weekend if weekday >= 5 else 1.0
        if day in self.holiday:
            base = seg.holiday if weekday < 5 else min(seg.holiday, seg.weekend)
        if s.trend:
            base *= math.exp(s.trend * day / p.days)
        out = inc = base
        if s.churn_start is not None and day >= s.churn_start:
            if s.group_after is not None:
                if day >= s.group_after:
                    out *= p.group_activity_after
                    inc *= 0.8
            else:
                prog = min(1.0, (day - s.churn_start) / max(1, s.decay_days))
                m = 1.0 - (1.0 - s.floor) * prog
                out *= m
                follow = p.churn_in_follow
                inc *= (1.0 - follow) + follow * m
        if s.kind == "plan_downgrade" and s.plan_change and day >= s.plan_change[0]:
            out *= p.downgrade_usage
        for start, end, act, _ in s.trips:
            if start <= day < end:
                out *= act
                inc *= act
        if s.join_day and day - s.join_day < p.joiner_ramp_days:
            ramp = 0.3 + 0.7 * (day - s.join_day) / p.joiner_ramp_days
            out *= ramp
            inc *= ramp
        return out, inc

    def forward_on(self, s: Sub, day: int) -> tuple[str, float] | None:
        found = None
        for start, end, to, share, _ in s.forwards:
            if start <= day < end:
                found = (to, share)  # the latest set wins
        return found

    def day_events(self, s: Sub, day: int, weekday: int, first_of_month: bool,
                   calls: list[tuple[Any, ...]], billing: list[tuple[Any, ...]],
                   profiles: list[tuple[Any, ...]]) -> None:
        p = self.p
        if day < s.join_day or (s.port_out_day is not None and day > s.port_out_day):
            return
        rng = random.Random(_mix(self.seed, s.idx, day, 9))
        idx = s.idx
        seq = 0
        lo_s = 0
        hi_s = 86400
        if day == s.join_day and s.join_day:
            lo_s = s.join_s + 1
            profiles.append((s.join_s, idx, 0))
        last_day = day == s.port_out_day
        if last_day:
            hi_s = s.port_out_s - 1
        seg = p.segments[s.segment]
        # Money events that open the day.
        if first_of_month and s.postpaid and day > s.join_day:
            if s.month_total > 0:
                billing.append((p.bill_time_s, idx, seq, "bill", round(s.month_total, 2), None,
                                s.month_days))
                seq += 1
            s.month_total = 0.0
            s.month_days = 0
        fee = s.fee
        if s.plan_change is not None:
            pc_day, pc_s, old, new = s.plan_change
            if day > pc_day or (day == pc_day and lo_s <= pc_s < hi_s):
                fee = new
            if day == pc_day and lo_s <= pc_s < hi_s:
                billing.append((pc_s, idx, seq, "plan_change", new, old, None))
                seq += 1
        churning = s.churn_start is not None and day >= s.churn_start
        if not s.postpaid and s.balance < max(10.0, fee / 3):
            if not churning or rng.random() < 0.5:
                amount = p.topups[0] if churning else rng.choice(p.topups[:3])
                if s.segment != "consumer" and not churning:
                    amount = rng.choice(p.topups[1:])
                t = rng.randint(max(lo_s, 8 * 3600), max(lo_s, 21 * 3600))
                if t < hi_s:
                    billing.append((t, idx, seq, "topup", amount, None, None))
                    seq += 1
                    s.balance += amount
        # Calls.
        out_m, in_m = self.activity(s, day, weekday)
        noise = math.exp(rng.gauss(0.0, p.daily_noise))
        if s.sparse_p < 1.0 and rng.random() > s.sparse_p:
            noise = 0.0
        n_out = _poisson(rng, s.out_rate * out_m * noise)
        fwd = self.forward_on(s, day)
        n_in = _poisson(rng, s.in_rate * (max(in_m, 0.6) if fwd else in_m) * noise)
        hours = self.hours[seg.business_hours]
        n_hours = len(hours)
        mu = math.log(seg.median_call_s)
        g = s.group
        usage = 0.0
        away = any(a <= day < b for a, b, _, _ in s.trips)
        one_cell = p.cell_ids == "home" or (away and p.trip_cells == "home")
        no_cells = p.cell_ids == "none"
        cell = f"R{s.home_cell[1:]}" if away and not one_cell else s.home_cell
        random_ = rng.random
        # When they answer: a stream of its own, so the calls drawn are those of a world
        # where every call is answered, only their hours and answers differ.
        free = s.answers[weekday >= 5 or day in self.holiday]
        answer = random.Random(_mix(self.seed, idx, day, 41)).random if free else None
        share_in, share_out = p.answer_share
        for direction, n in (("out", n_out), ("in", n_in)):
            for _ in range(n):
                hour = hours[int(random_() * n_hours)]
                if answer is not None and direction == "out" and \
                        answer() < p.own_calls_in_hours:
                    hour = free[int(answer() * len(free))]
                t = hour * 3600 + int(random_() * 3600)
                if t < lo_s or t >= hi_s:
                    continue
                dur = min(7200, max(1, int(math.exp(rng.gauss(mu, 0.9)))))
                in_group = g is not None and random_() < p.in_group_share and g.hi - g.lo > 1
                if in_group:
                    assert g is not None
                    j = g.lo + int(random_() * (g.hi - g.lo - 1))
                    other = self.msisdn(j if j < idx else j + 1)
                else:
                    k = int(p.contacts * random_() ** 2)
                    other = self.contact(idx, k)
                c: str | None = cell if random_() > p.other_cell_share else (
                    f"C{int(random_() * 90000) + 10000}")
                if one_cell or no_cells:  # the draws above are kept: the same calls
                    c = None if no_cells else cell
                forwarded = None
                charge = 0.0
                if direction == "out":
                    if not in_group:
                        charge = round(s.rate * ((dur + 59) // 60), 2)
                elif fwd is not None and random_() < fwd[1]:
                    forwarded = fwd[0]
                    c = None
                    if forwarded != p.voicemail_number:
                        charge = round(s.rate * ((dur + 59) // 60), 2)
                elif answer is not None and answer() >= (
                        share_in if hour in free else share_out):
                    dur = 0  # rang, not answered
                usage += charge
                calls.append((t, idx, seq, direction, other, dur, charge, forwarded, c))
                seq += 1
        # The daily charge (plan share + usage) and, at the end, the port-out.
        amount = round(fee / 30.0 + usage, 2)
        s.month_total += amount
        s.month_days += 1
        if not s.postpaid:
            s.balance -= amount
        charge_s = hi_s if last_day else p.charge_time_s
        billing.append((charge_s, idx, seq, "charge", amount, None, None))
        seq += 1
        if last_day:
            billing.append((s.port_out_s, idx, seq, "port_out", 0.0, None, None))


# --------------------------------------------------------------------------------------
# Writing the world.
# --------------------------------------------------------------------------------------


def _profile(s: Sub) -> dict[str, Any]:
    return {
        "subscriber_id": s.sid, "msisdn": s.msisdn, "account_id": s.account_id,
        "group_id": s.group.group_id if s.group else None, "segment": s.segment,
        "tier": s.tier, "account_manager": s.account_manager,
        "payment": "postpaid" if s.postpaid else "prepaid",
    }


def _truth(w: World, s: Sub) -> dict[str, Any]:
    def day_iso(day: int | None) -> str | None:
        return None if day is None else w.date_of(day).isoformat()

    forwards = [
        {"start_day": a, "end_day": min(b, w.p.days), "to": to, "share": round(share, 3),
         "why": why,
         "on_net": to in w.ported_set or to == w.p.voicemail_number or _is_ours(to)}
        for a, b, to, share, why in s.forwards if a < w.p.days
    ]
    pc = s.plan_change
    return {
        "subscriber_id": s.sid,
        "msisdn": s.msisdn,
        "kind": s.kind,
        "churn": s.kind in ("individual_churn", "group_churn"),
        "segment": s.segment,
        "tier": s.tier,
        "payment": "postpaid" if s.postpaid else "prepaid",
        "account_id": s.account_id,
        "group_id": s.group.group_id if s.group else None,
        "monthly_fee": s.fee,
        "ported_in": s.ported_in,
        "join_day": s.join_day,
        "join_ts": w.ts(s.join_day, s.join_s) if s.join_day else None,
        "churn_start_day": s.churn_start,
        "churn_start_date": day_iso(s.churn_start),
        "decay_days": s.decay_days or None,
        "port_out_day": s.port_out_day,
        "port_out_ts": (w.ts(s.port_out_day, s.port_out_s)
                        if s.port_out_day is not None else None),
        "forwarding": forwards,
        "plan_change": (None if pc is None or pc[0] >= w.p.days else
                        {"day": pc[0], "ts": w.ts(pc[0], pc[1]), "from": pc[2], "to": pc[3]}),
        "trips": [{"start_day": a, "end_day": min(b, w.p.days), "kind": k}
                  for a, b, _, k in s.trips if a < w.p.days],
        "answers": ({"weekdays": list(s.answers[0]), "weekend": list(s.answers[1]),
                     "share": list(w.p.answer_share)} if w.p.answer_hours == "personal"
                    else None),
    }


def _is_ours(number: str) -> bool:
    return len(number) == 11 and int(number[:3]) in OPERATOR_PREFIXES[OUR_OPERATOR]


def _group_record(w: World, g: Group) -> dict[str, Any]:
    members = w.subs[g.lo:g.hi]
    outs = sorted((s.port_out_day, s.port_out_s) for s in members if s.port_out_day is not None)
    half = math.ceil(len(members) / 2)
    half_gone = outs[half - 1] if len(outs) >= half else None
    return {
        "group_id": g.group_id,
        "account_id": g.account_id,
        "segment": g.segment,
        "cell_id": g.cell_id,
        "account_manager": g.account_manager,
        "size": len(members),
        "members": [s.sid for s in members],
        "collective": g.collective,
        "competitor": g.competitor,
        "defection_day": g.defection_day,
        "defection_ts": w.ts(g.defection_day, 0) if g.defection_day is not None else None,
        "defecting_members": [s.sid for s in members if s.kind == "group_churn"],
        "keep_number_plan_day": g.keep_number_day,
        "follows": g.follows,
        "ported_out_in_world": len(outs),
        "half_gone_ts": w.ts(*half_gone) if half_gone else None,
    }


def simulate(out: Path, params: WorldParams, *,
             progress: Callable[[int, int, int], None] | None = None) -> dict[str, Any]:
    """Generate the world described by ``params`` into directory ``out``.

    Returns the summary also written to ``world.json``. ``progress(day, days, events)``
    is called after each day.
    """
    import orjson

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    w = World(params)
    p = params
    dumps = orjson.dumps
    nl = b"\n"
    counts = {"calls": 0, "billing": 0, "subscribers": 0}
    with open(out / "truth.jsonl", "wb") as f:
        for s in w.subs:
            f.write(dumps(_truth(w, s)) + nl)
    with open(out / "groups.jsonl", "wb") as f:
        for g in w.groups:
            f.write(dumps(_group_record(w, g)) + nl)
    with open(out / "ported.jsonl", "wb") as f:
        for number, operator in sorted(set(w.ported)):
            f.write(dumps({"number": number, "operator": operator}) + nl)
    subs = w.subs
    with (open(out / "calls.jsonl", "wb") as fc, open(out / "billing.jsonl", "wb") as fb,
          open(out / "subscribers.jsonl", "wb") as fs):
        start_profiles = [s for s in subs if s.join_day == 0]
        ts0 = w.ts(0, 0)
        for s in start_profiles:
            fs.write(dumps({**_profile(s), "ts": ts0}) + nl)
        counts["subscribers"] += len(start_profiles)
        for day in range(p.days):
            d = w.date_of(day)
            weekday = 0 if d in p.make_up_workdays else d.weekday()
            first = d.day == 1
            calls: list[tuple[Any, ...]] = []
            billing: list[tuple[Any, ...]] = []
            profiles: list[tuple[Any, ...]] = []
            for s in subs:
                w.day_events(s, day, weekday, first, calls, billing, profiles)
            calls.sort(key=lambda e: (e[0], e[1], e[2]))
            billing.sort(key=lambda e: (e[0], e[1], e[2]))
            profiles.sort()
            prefix = f"{d.isoformat()}T"
            tz = p.tz

            def stamp(sec: int, prefix: str = prefix, tz: str = tz) -> str:
                return f"{prefix}{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}{tz}"

            for sec, idx, _ in profiles:
                fs.write(dumps({**_profile(subs[idx]), "ts": stamp(sec)}) + nl)
            base = counts["calls"]
            write = fc.write
            for n, (sec, idx, _, direction, other, dur, charge, fwd, cell) in enumerate(calls):
                write(dumps({
                    "event_id": f"c{base + n:09d}", "ts": stamp(sec),
                    "subscriber_id": subs[idx].sid, "direction": direction,
                    "other_party": other, "duration_s": dur, "charge": charge,
                    "forwarded_to": fwd, "cell_id": cell}) + nl)
            base = counts["billing"]
            write = fb.write
            for n, (sec, idx, _, kind, amount, prev, period_days) in enumerate(billing):
                s = subs[idx]
                event = {
                    "event_id": f"b{base + n:09d}", "ts": stamp(sec), "subscriber_id": s.sid,
                    "account_id": s.account_id, "kind": kind, "amount": amount,
                    "previous_amount": prev}
                if kind == "bill":
                    event["period_days"] = period_days
                write(dumps(event) + nl)
            counts["calls"] += len(calls)
            counts["billing"] += len(billing)
            counts["subscribers"] += len(profiles)
            del calls, billing, profiles  # one day at a time
            if progress is not None:
                progress(day + 1, p.days, counts["calls"] + counts["billing"])
    kinds: dict[str, int] = {}
    for s in subs:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    hol = w.holiday
    summary = {
        "params": _params_json(p),
        "start": w.ts(0, 0),
        "end": w.ts(p.days, 0),
        "days": p.days,
        "subscribers": p.subscribers,
        "our_operator": OUR_OPERATOR,
        "voicemail_number": p.voicemail_number,
        "holiday": ({"start": w.ts(hol.start, 0),
                     "end": w.ts(hol.stop, 0),
                     "days": len(hol)} if hol else None),
        "kinds": dict(sorted(kinds.items())),
        "groups": len(w.groups),
        "collective_groups": sum(g.collective for g in w.groups),
        "churners_ported_out": sum(1 for s in subs if s.port_out_day is not None),
        "events": counts,
    }
    (out / "world.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + nl)
    summary["elapsed_s"] = round(time.perf_counter() - started, 2)
    return summary


#: Knobs written to ``world.json`` only when they differ from their defaults, so that a
#: default world's bytes are those it had before the knobs existed.
_SCENARIO_FIELDS = ("preset", "cell_ids", "trip_cells", "trip_forward_off_net",
                    "churn_in_follow")


def _params_json(p: WorldParams) -> dict[str, Any]:
    d = asdict(p)
    for name in _SCENARIO_FIELDS:
        if d[name] == getattr(WorldParams, name):
            del d[name]
    d["start"] = p.start.isoformat()
    d["holiday_start"] = p.holiday_start.isoformat() if p.holiday_start else None
    d["make_up_workdays"] = [x.isoformat() for x in p.make_up_workdays]
    return d


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------
