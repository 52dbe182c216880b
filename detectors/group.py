"""Collective churn of groups: member signals folded per ``group_id``, group alerts out.

The subscriber engine (``Engine(..., signals=True)``) emits a *member signal* whenever what
a group needs to know about one of its members changes: the member's zone, the operator
their incoming calls are forwarded to off-net, their 14-day spend against their baseline,
their monthly value, a port-out. :class:`GroupWatch` folds one group's member signals in
event time and raises group alerts (``kind: "group"``, keyed by ``group_id``) when members
move together:

* **forwarding**: ``k`` of ``n`` members forward calls to numbers of one competitor, the
  forwarding started within ``fwd_window`` days of each other;
* **herd**: ``k`` of ``n`` members entered the yellow zone or worse within
  ``warn_window`` days of each other;
* **spend**: the group's spend (members' 14-day run-rate) against its own baseline (what
  its members spent while calm);
* **leaving**: ``k`` of ``n`` members ported out (or were deactivated) within
  ``leave_window`` days.

Counts are judged against the group's size with a binomial tail: the chance that ``k`` or
more of ``n`` members do the thing in the window by themselves, at a base rate per member
(``*_base_rate``). Its surprise, ``-log10`` of that chance, sets the zone: 3 of 6 is
rarer than 3 of 60, and a group of one is just a subscriber (no group alert).

Determinism: signals of different members come from different partitions and may arrive
interleaved in any order. A group decides its days in event time: day ``D`` is decided
once a signal of day ``D + 1 + hold_days`` or later has arrived for the group, on the
signals of days up to ``D`` only, applied in a fixed order (day, time, subscriber). So
the alerts, and their ids (a hash of group, episode start, zone, status), depend on the
set of signals, not on their interleaving, as long as no partition lags the others by
more than ``hold_days`` days of event time. A signal for a day already decided is still
folded in (counted as ``late``) and weighs on the next days' decisions.

Everything stored is plain data (``to_state``/``from_state``), versioned, small.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from detectors.days import Clock, parse_ts
from detectors.policy import ZONES, AlertPolicy

__all__ = [
    "GROUP_MODEL_VERSION",
    "GROUP_STATE_VERSION",
    "GroupConfig",
    "GroupStage",
    "GroupWatch",
    "binomial_surprise",
    "group_context",
]

GROUP_STATE_VERSION = 1
#: Written into group alerts; bump when thresholds or features change meaning.
GROUP_MODEL_VERSION = "group-1.0"

YELLOW, RED, WHITE = 2, 3, 4
# A member's facts, in a list (one list is small in memory and in the changelog):
# zone level (-1 unknown), day the current yellow+ run began, operator forwarded to off-net
# ("" none), day that forwarding began, day it stopped (-1 still on), spend ratio x100
# (-1 unknown), monthly value x10, calm monthly value x10 (the member's baseline: an
# exponential average over calm days, see ``GroupConfig.baseline_days``), day left (-1),
# event time of the last signal applied (epoch s).
LVL, YSINCE, OP, FSINCE, FOFF, RATIO, VALUE, BASE, LEFT, TS = range(10)
NO_FACTS = (-1, -1, "", -1, -1, -1, 0, 0, -1, 0)
MOVING = frozenset({"group_forwarding", "group_herd"})
_LEVEL = {z: i for i, z in enumerate(ZONES)}


@dataclass(frozen=True)
class GroupConfig:
    """Thresholds of the group model (every number in one documented place).

    Parameters
    ----------
    tz_offset_hours, allowed_lateness_s
        The operator's time zone and the day-close lateness, as in
        :class:`~detectors.config.EngineConfig`: a day decided is stamped at its close.
    hold_days
        Extra days of event time a group waits before deciding a day (0: day ``D`` is
        decided on the first signal of day ``D + 1``). Partitions lagging each other by
        more than this may change a decision.
    min_members
        Members a group must have (signals seen) before it can alert, and members who must
        move (forward, warn, leave) for a movement to count: one member is a subscriber.
    fwd_window, fwd_base_rate, fwd_grace_days
        Forwarding: the span within which members' forwarding must have started, the
        chance a member starts forwarding to one competitor in such a span by themselves,
        and how long a member whose forwarding stopped still counts (the engine's
        forwarding judgement can lapse for a day).
    warn_window, warn_base_rate, herd_min_members
        Herd: the span within which members entered yellow or worse, its base rate, and
        the fewest members in warning that make a herd (two in warning at once happens).
    leave_window, leave_base_rate
        Leaving: the span of port-outs counted, and its base rate.
    spend_start, spend_full, spend_surprise
        The group's spend against its baseline: no evidence at ``spend_start`` or above,
        ``spend_surprise`` at ``spend_full`` or below (linear between).
    baseline_days
        Horizon of each member's calm monthly value (an exponential average over the
        days decided while the member is calm), the group's baseline.
    yellow_surprise, red_surprise
        Surprise (``-log10`` of the binomial tail, corroborated) for a yellow and a red
        group; risk scores follow (0.45 at yellow, 0.7 at red).
    corroboration
        Weight of the other kinds of evidence added to the strongest one.
    white_leave_surprise
        A red group whose leaving surprise reaches this is white (the group is going).
    resolve_days, cooldown_days
        Calm days that resolve a group episode; days after a resolution before a new one.
    forget_days
        Members who left this long ago are dropped from the state.

    """

    tz_offset_hours: float = 8.0
    allowed_lateness_s: float = 3600.0
    hold_days: int = 0
    min_members: int = 2
    fwd_window: int = 14
    fwd_base_rate: float = 0.005
    fwd_grace_days: int = 3
    warn_window: int = 6
    warn_base_rate: float = 0.01
    herd_min_members: int = 3
    leave_window: int = 30
    leave_base_rate: float = 0.02
    spend_start: float = 0.8
    spend_full: float = 0.3
    spend_surprise: float = 4.5
    baseline_days: int = 28
    yellow_surprise: float = 3.0
    red_surprise: float = 6.0
    corroboration: float = 0.5
    white_leave_surprise: float = 3.0
    resolve_days: int = 7
    cooldown_days: int = 14
    forget_days: int = 60


def binomial_surprise(k: int, n: int, p: float) -> float:
    """``-log10 P(X >= k)`` for ``X ~ Binomial(n, p)``: how surprising ``k`` of ``n`` is.

    Examples
    --------
    Three of six members is far more surprising than three of sixty:

    >>> round(binomial_surprise(3, 6, 0.005), 2), round(binomial_surprise(3, 60, 0.005), 2)
    (5.61, 2.46)
    >>> binomial_surprise(0, 10, 0.005)
    0.0

    """
    if k <= 0 or n <= 0:
        return 0.0
    if k > n:
        return math.inf
    log_p, log_q = math.log(p), math.log1p(-p)
    lg = math.lgamma
    total = 0.0
    base = None
    for j in range(k, n + 1):
        log_term = lg(n + 1) - lg(j + 1) - lg(n - j + 1) + j * log_p + (n - j) * log_q
        if base is None:
            base = log_term
        total += math.exp(log_term - base)
        if j > k and log_term - base < -40:  # the rest cannot matter
            break
    assert base is not None
    return max(0.0, -(base + math.log(total)) / math.log(10))


def _cluster(days: list[int], window: int) -> tuple[int, int]:
    """Most days within ``window`` of each other, and the first day of that cluster.

    >>> _cluster([3, 10, 11, 12, 30], 5)
    (3, 10)
    """
    days = sorted(days)
    best, first, i = 0, -1, 0
    for j, d in enumerate(days):
        while d - days[i] >= window:
            i += 1
        if j - i + 1 > best:
            best, first = j - i + 1, days[i]
    return best, first


def _risk(surprise: float) -> float:
    """Risk score of a surprise: 0.45 at 3 (yellow), 0.7 at 6 (red), towards 0.99."""
    if surprise < 3.0:
        return round(0.15 * surprise, 3)
    if surprise < 6.0:
        return round(0.45 + (surprise - 3.0) * 0.25 / 3.0, 3)
    return round(min(0.99, 0.7 + (surprise - 6.0) * 0.25 / 6.0), 3)


def _signal_row(signal: dict[str, Any]) -> list[Any]:
    """A member signal as the compact pending row ``[day, ts, sid, level, op, ratio x100,
    value x10, left]``."""
    zone = signal.get("zone")
    ratio = signal.get("spend_ratio")
    return [
        int(signal["day"]),
        int(parse_ts(signal["ts"])),
        str(signal["subscriber_id"]),
        _LEVEL.get(zone, -1) if zone else -1,
        signal.get("operator") or "",
        -1 if ratio is None else round(float(ratio) * 100),
        round(float(signal.get("monthly_value") or 0.0) * 10),
        signal.get("left") or "",
    ]


class GroupWatch:
    """One group's model: member facts, the day-by-day decision, the alert policy.

    ``update(signal)`` folds one member signal and decides the days it closes;
    :attr:`alerts` then holds the group alerts that update raised (open, escalated,
    resolved; usually none).

    Parameters
    ----------
    group_id
        The group (``group_id`` of the members' profiles).
    config
        Thresholds (:class:`GroupConfig`).

    Examples
    --------
    A scripted group of eight: for six weeks members report calm days; then on three
    consecutive days three, two and one of them forward their calls to China Telecom
    numbers, the corporate plan is cut, and two port out. Signals of different members
    come in a shuffled order within each day (seeded), as partitions interleave them:

    >>> import random
    >>> from datetime import date, timedelta
    >>> rng = random.Random(12345)
    >>> watch = GroupWatch("G1")
    >>> def ts(d):
    ...     return (date(2026, 3, 2) + timedelta(days=d + 1)).isoformat() + "T01:00:00+08:00"
    >>> def signal(d, m, zone="blue", op=None, ratio=1.0, value=300.0, left=None):
    ...     return {"group_id": "G1", "subscriber_id": f"m{m}", "ts": ts(d), "day": 20514 + d,
    ...             "zone": zone, "operator": op, "spend_ratio": ratio,
    ...             "monthly_value": value, "left": left}
    >>> forward_day = {0: 40, 1: 40, 2: 40, 3: 41, 4: 41, 5: 42}
    >>> for d in range(60):
    ...     day = []
    ...     for m in range(8):
    ...         started = forward_day.get(m, 99) <= d
    ...         if started:
    ...             cut = d >= 45
    ...             left = "port_out" if m < 2 and d == 52 else None
    ...             day.append(signal(d, m, "red", "China Telecom", 0.9 if cut else 1.0,
    ...                               10.0 if cut else 300.0, left))
    ...         elif d % 7 == m % 7:
    ...             day.append(signal(d, m, ratio=round(rng.uniform(0.9, 1.1), 1)))
    ...     rng.shuffle(day)
    ...     for s in day:
    ...         watch.update(s)
    ...         for a in watch.alerts:
    ...             print(a["ts"][:10], a["status"], a["zone"], a["reasons"][0]["summary"])
    2026-04-12 open yellow 3 of 8 members forward calls to China Telecom numbers since 2026-04-11
    2026-04-13 escalated red 5 of 8 members forward calls to China Telecom numbers since 2026-04-11
    >>> GroupWatch.from_state(watch.to_state()).to_state() == watch.to_state()
    True

    """

    def __init__(self, group_id: str, config: GroupConfig | None = None):
        self.group_id = group_id
        self.config = cfg = config if config is not None else GroupConfig()
        self.clock = Clock(cfg.tz_offset_hours, cfg.allowed_lateness_s)
        #: subscriber_id -> facts (see ``NO_FACTS``)
        self.members: dict[str, list[Any]] = {}
        #: signals of days not yet decided, as compact rows
        self.pending: list[list[Any]] = []
        self.decided = -1  # last decided day (-1: none yet)
        self.watermark = -1  # the latest signal day seen
        self.policy = AlertPolicy(cfg.resolve_days, cfg.cooldown_days * 86400.0)
        #: the open episode's latest alert, for members' context: [alert_id, zone, ts,
        #: headline] (empty when no episode is open)
        self.context: list[Any] = []
        self.late = 0
        #: the group's [segment, account_id, account_manager] from its members' profiles
        #: (the smallest value seen of each, so the order signals come in does not matter)
        self.profile: list[Any] = [None, None, None]
        #: alerts raised by the last :meth:`update`
        self.alerts: list[dict[str, Any]] = []

    # --------------------------------------------------------------------------------
    # State
    # --------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Plain, versioned state (JSON-safe)."""
        return {
            "v": GROUP_STATE_VERSION,
            "g": self.group_id,
            "d": self.decided,
            "w": self.watermark,
            "m": {sid: list(f) for sid, f in self.members.items()},
            "q": [list(r) for r in self.pending],
            "a": self.policy.to_state(),
            "c": list(self.context),
            "l": self.late,
            "p": list(self.profile),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: GroupConfig | None = None) -> GroupWatch:
        """Rebuild a watch from :meth:`to_state`."""
        if state.get("v") != GROUP_STATE_VERSION:
            raise ValueError(f"unknown group state version {state.get('v')!r}")
        watch = cls(str(state["g"]), config)
        watch.decided = int(state["d"])
        watch.watermark = int(state["w"])
        watch.members = {sid: list(f) for sid, f in state["m"].items()}
        watch.pending = [list(r) for r in state["q"]]
        cfg = watch.config
        watch.policy = AlertPolicy.from_state(
            state["a"], cfg.resolve_days, cfg.cooldown_days * 86400.0
        )
        watch.context = list(state["c"])
        watch.late = int(state.get("l", 0))
        watch.profile = list(state.get("p") or [None, None, None])
        return watch

    # --------------------------------------------------------------------------------
    # Signals
    # --------------------------------------------------------------------------------
    def update(self, signal: dict[str, Any]) -> None:
        """Fold one member signal; :attr:`alerts` holds the alerts it raised."""
        self.alerts = []
        row = _signal_row(signal)
        day = row[0]
        for i, name in enumerate(("segment", "account_id", "account_manager")):
            value = signal.get(name)
            if value is not None and (self.profile[i] is None or value < self.profile[i]):
                self.profile[i] = value
        if self.decided < 0:
            self.decided = day - 1
        if day <= self.decided:
            # A day already decided: use the fact from now on (a lagging partition).
            self.late += 1
            self._apply(row)
        else:
            self.pending.append(row)
        if day > self.watermark:
            self.watermark = day
            self._decide_until(day - 1 - self.config.hold_days)

    def advance(self, day: int) -> None:
        """Event time reached ``day`` elsewhere (other groups' signals): decide the days
        before it, as a signal of ``day`` would; :attr:`alerts` holds what that raised."""
        self.alerts = []
        if self.decided >= 0:
            self._decide_until(day - 1 - self.config.hold_days)

    @property
    def active(self) -> bool:
        """Signals waiting for their day to be decided, or an episode open."""
        return bool(self.pending) or self.policy.level > 0

    def _decide_until(self, target: int) -> None:
        if target <= self.decided:
            return
        self.pending.sort()  # day, time, subscriber, then the facts: a fixed order
        rows = self.pending
        i = 0
        for day in range(self.decided + 1, target + 1):
            while i < len(rows) and rows[i][0] <= day:
                self._apply(rows[i])
                i += 1
            self._decide(day)
            self.decided = day
        self.pending = rows[i:]

    def _apply(self, row: list[Any]) -> None:
        day, ts, sid, level, op, ratio, value, left = row
        f = self.members.get(sid)
        if f is None:
            f = self.members[sid] = list(NO_FACTS)
        elif ts < f[TS]:
            return  # an older signal than one already applied (redelivered)
        f[TS] = ts
        if left:
            if f[LEFT] < 0:
                f[LEFT] = day
            return
        if level >= YELLOW:
            if f[LVL] < YELLOW or f[YSINCE] < 0:
                f[YSINCE] = day
        elif level >= 0:
            f[YSINCE] = -1
        if level >= 0:
            f[LVL] = level
        if op:
            grace = self.config.fwd_grace_days
            if op != f[OP] or (f[FOFF] >= 0 and day - f[FOFF] > grace):
                f[FSINCE] = day
            f[OP], f[FOFF] = op, -1
        elif f[OP] and f[FOFF] < 0:
            f[FOFF] = day
        f[RATIO] = ratio
        f[VALUE] = value

    # --------------------------------------------------------------------------------
    # Decisions
    # --------------------------------------------------------------------------------
    def _evidence(self, day: int) -> list[tuple[float, str, str, dict[str, Any]]]:
        """``(surprise, code, summary, figures)`` of each kind of evidence on ``day``."""
        cfg = self.config
        date = self.clock.date
        members = self.members
        n = len(members)
        out: list[tuple[float, str, str, dict[str, Any]]] = []
        # Forwarding to one competitor, started within days of each other.
        by_op: dict[str, list[tuple[int, str]]] = {}
        for sid, f in members.items():
            if not f[OP] or f[FSINCE] < 0:
                continue
            if f[LEFT] >= 0:
                on = day - f[LEFT] <= cfg.leave_window
            else:
                on = f[FOFF] < 0 or day - f[FOFF] <= cfg.fwd_grace_days
            if on and f[FSINCE] <= day:
                by_op.setdefault(f[OP], []).append((f[FSINCE], sid))
        best: tuple[float, str, str, dict[str, Any]] | None = None
        for op in sorted(by_op):
            starts = by_op[op]
            k, first = _cluster([s for s, _ in starts], cfg.fwd_window)
            s = binomial_surprise(k, n, cfg.fwd_base_rate) if k >= cfg.min_members else 0.0
            if best is None or s > best[0]:
                who = sorted(sid for d0, sid in starts if first <= d0 < first + cfg.fwd_window)
                where = f"{op} numbers" if op != "off-net" else "off-net numbers"
                best = (s, "group_forwarding",
                        f"{k} of {n} members forward calls to {where} since {date(first)}",
                        {"members_forwarding": k, "members": n, "operator": op,
                         "since": date(first), "subscribers": who})
        if best is not None:
            out.append(best)
        # Herd: members entering yellow or worse within days of each other.
        warned = [(f[YSINCE], sid) for sid, f in members.items()
                  if f[LEFT] < 0 and f[LVL] >= YELLOW and 0 <= f[YSINCE] <= day]
        if warned:
            k, first = _cluster([d0 for d0, _ in warned], cfg.warn_window)
            who = sorted(sid for d0, sid in warned if first <= d0 < first + cfg.warn_window)
            out.append((binomial_surprise(k, n, cfg.warn_base_rate)
                        if k >= max(cfg.min_members, cfg.herd_min_members) else 0.0,
                        "group_herd",
                        f"{k} of {n} members in warning within {cfg.warn_window} days "
                        f"(since {date(first)})",
                        {"members_warned": k, "members": n, "days": cfg.warn_window,
                         "since": date(first), "subscribers": who}))
        # Leaving: port-outs in the last leave_window days.
        gone = sorted((f[LEFT], sid) for sid, f in members.items()
                      if f[LEFT] >= 0 and day - f[LEFT] < cfg.leave_window)
        if gone:
            k = len(gone)
            out.append((binomial_surprise(k, n, cfg.leave_base_rate) if k >= cfg.min_members
                        else 0.0, "group_leaving",
                        f"{k} of {n} members left since {date(gone[0][0])}",
                        {"members_left": k, "members": n, "since": date(gone[0][0]),
                         "subscribers": [sid for _, sid in gone]}))
        # Spend: what the members spend now against what they spent while calm.
        now = usual = 0.0
        counted = 0
        for f in members.values():
            if f[BASE] <= 0:
                continue
            if f[LEFT] >= 0:
                if day - f[LEFT] < cfg.leave_window:
                    usual += f[BASE]
                continue
            counted += 1
            usual += f[BASE]
            now += f[VALUE] * (f[RATIO] / 100.0 if f[RATIO] >= 0 else 1.0)
        if counted >= cfg.min_members and usual > 0:
            ratio = now / usual
            span = cfg.spend_start - cfg.spend_full
            s = cfg.spend_surprise * min(1.0, max(0.0, (cfg.spend_start - ratio) / span))
            if s > 0:
                out.append((s, "group_spend_drop",
                            f"the group's spend over 14 days runs at {ratio:.0%} of its "
                            f"baseline ({now / 10:,.0f} vs {usual / 10:,.0f} a month)",
                            {"ratio": round(ratio, 3), "monthly_now": round(now / 10, 2),
                             "monthly_baseline": round(usual / 10, 2)}))
        return out

    def _value(self, day: int) -> float:
        """Monthly value at stake: the calm value of members present or recently left."""
        total: float = sum(f[BASE] for f in self.members.values()
                    if f[LEFT] < 0 or day - f[LEFT] < self.config.leave_window)
        return round(total / 10.0, 2)

    def _decide(self, day: int) -> None:
        cfg = self.config
        # Forget members long gone (bounded state; they no longer say anything).
        for sid in [s for s, f in self.members.items()
                    if f[LEFT] >= 0 and day - f[LEFT] > cfg.forget_days]:
            del self.members[sid]
        # Members' baselines learn from calm days only, slowly: a plan cut across the group
        # shows as a fall before it becomes the new normal; a member in warning or
        # forwarding does not teach the group what is usual.
        rate = 1.0 / cfg.baseline_days
        for f in self.members.values():
            if f[LEFT] < 0 and 0 <= f[LVL] < YELLOW and not f[OP] and f[VALUE] > 0:
                f[BASE] = f[VALUE] if f[BASE] <= 0 else round(
                    f[BASE] + rate * (f[VALUE] - f[BASE]))
        if self.policy.level and all(f[LEFT] >= 0 for f in self.members.values()):
            self._close(day)
            return
        evidence = self._evidence(day) if len(self.members) >= cfg.min_members else []
        evidence.sort(key=lambda e: (-e[0], e[1]))
        # Forwarding and herd are two views of the same movement (forwarders are in
        # warning too): the stronger counts. The bill and the port-outs corroborate it.
        moving = max((e[0] for e in evidence if e[1] in MOVING), default=0.0)
        other = [min(e[0], cfg.red_surprise) for e in evidence if e[1] not in MOVING]
        strongest = max([moving, *other])
        surprise = strongest + cfg.corroboration * (moving + sum(other) - strongest)
        leaving = next((e[0] for e in evidence if e[1] == "group_leaving"), 0.0)
        if surprise >= cfg.red_surprise and leaving >= cfg.white_leave_surprise:
            level = WHITE
        elif surprise >= cfg.red_surprise:
            level = RED
        elif surprise >= cfg.yellow_surprise:
            level = YELLOW
        else:
            level = 0
        now = self.clock.close_time(day)
        status = self.policy.step(level, now, daily=True)
        if status is None:
            return
        zone = ZONES[level]
        start = self.policy.start
        digest = hashlib.sha1(
            f"{self.group_id}|{start}|{zone}|{status}".encode()
        ).hexdigest()[:24]
        reasons = [{"code": code, "summary": summary, "figures": figures}
                   for s, code, summary, figures in evidence
                   if s >= 1.0 or status == "resolved"]
        if status == "resolved":
            reasons.insert(0, {
                "code": "resolved",
                "summary": f"members calm for {cfg.resolve_days} days",
                "figures": {"days": cfg.resolve_days},
            })
        ts = self.clock.iso(now)
        alert = self._alert(digest, status, zone, _risk(surprise), day, reasons, ts)
        self.context = [] if status == "resolved" else [
            digest, zone, ts, reasons[0]["summary"] if reasons else ""
        ]
        self.alerts.append(alert)


    def _close(self, day: int) -> None:
        """The ``closed`` alert of the open episode of a group whose members are all gone
        (ported out or deactivated): no one is left to call."""
        zone = ZONES[self.policy.level]
        start = self.policy.start
        self.policy.close()
        gone = [f[LEFT] for f in self.members.values()]
        summary = (f"all {len(gone)} members ported out or deactivated, the last on "
                   f"{self.clock.date(max(gone))}" if gone else "no member left")
        summary += ": the episode is closed, there is no one left to call"
        digest = hashlib.sha1(f"{self.group_id}|{start}|{zone}|closed".encode()).hexdigest()[:24]
        reasons = [{"code": "closed", "summary": summary,
                    "figures": {"members_left": len(gone)}}]
        self.alerts.append(self._alert(digest, "closed", zone, 1.0, day, reasons,
                                       self.clock.iso(self.clock.close_time(day))))
        self.context = []

    def _alert(self, alert_id: str, status: str, zone: str, risk: float, day: int,
               reasons: list[dict[str, Any]], ts: str) -> dict[str, Any]:
        """A group alert: who the group is, and this decision's figures."""
        return {
            "alert_id": alert_id,
            "kind": "group",
            "status": status,
            "subscriber_id": None,
            "msisdn": None,
            "account_id": self.profile[1],
            "group_id": self.group_id,
            "segment": self.profile[0] or "unknown",
            "tier": None,
            "account_manager": self.profile[2],
            "zone": zone,
            "risk_score": risk,
            "value_at_risk": self._value(day),
            "reasons": reasons,
            "ts": ts,
            "schema_version": 1,
            "model_version": GROUP_MODEL_VERSION,
        }


def group_context(group_id: str, context: list[Any]) -> dict[str, Any]:
    """The ``group_context`` reason a member's own alert gets while its group is in alert.

    ``context`` is :attr:`GroupWatch.context` (``[alert_id, zone, ts, headline]``).

    >>> reason = group_context("G1", ["ab" * 12, "red", "2026-04-12T01:00:00+08:00",
    ...                               "5 of 8 members forward calls to Telecom numbers"])
    >>> print(reason["summary"])
    group G1 in a red group alert since 2026-04-12: 5 of 8 members forward calls to Telecom numbers
    """
    alert_id, zone, ts, headline = context
    summary = f"group {group_id} in a {zone} group alert since {str(ts)[:10]}"
    if headline:
        summary += f": {headline}"
    return {
        "code": "group_context",
        "summary": summary,
        "figures": {"group_id": group_id, "group_alert_id": alert_id, "group_zone": zone},
    }


class GroupStage:
    """Group watches over a store of plain states, keyed by ``group_id``: the group stage.

    The stream's group agent and ``churnwatch replay`` both drive one per partition of the
    group-signals topic: ``process(signal)`` loads the group's state, folds the signal,
    writes the state back (``store[group_id] = state``: a Faust table write) and returns
    the group alerts raised.

    A group's days are decided when event time passes them: on a signal of a later day for
    the group, or, for a group gone quiet (members emit signals only on change), when a
    signal of a later day comes for any group of the partition. The stage keeps that
    partition-wide event time and the groups still active (signals waiting, or an episode
    open) in the store under ``meta_key``.

    Examples
    --------
    A day is decided when a signal of a later day comes; until then its signals wait:

    >>> stage = GroupStage(GroupConfig(), {})
    >>> calm = {"group_id": "G1", "subscriber_id": "m1", "day": 20514,
    ...     "ts": "2026-03-03T01:00:00+08:00", "zone": "blue", "operator": None,
    ...     "spend_ratio": 1.0, "monthly_value": 300.0, "left": None}
    >>> stage.process(calm)
    []
    >>> len(stage.store["G1"]["q"]), sorted(stage.store["G1"]["m"])
    (1, [])
    >>> stage.process({**calm, "group_id": "G2", "day": 20515,
    ...                "ts": "2026-03-04T01:00:00+08:00"})
    []
    >>> len(stage.store["G1"]["q"]), sorted(stage.store["G1"]["m"])
    (0, ['m1'])

    """

    def __init__(
        self,
        config: GroupConfig | None = None,
        store: MutableMapping[str, dict[str, Any]] | None = None,
        meta_key: str = "__stage__",
    ):
        self.config = config if config is not None else GroupConfig()
        self.store: MutableMapping[str, dict[str, Any]] = store if store is not None else {}
        self.meta_key = meta_key
        self.counters: Counter[str] = Counter()

    def watch(self, group_id: str) -> GroupWatch:
        state = self.store.get(group_id)
        if state is None:
            return GroupWatch(group_id, self.config)
        return GroupWatch.from_state(state, self.config)

    def process(self, signal: dict[str, Any]) -> list[dict[str, Any]]:
        """Fold one member signal into its group; the group alerts it raised."""
        group_id = signal.get("group_id")
        if not group_id or group_id == self.meta_key:
            self.counters["signals_without_group"] += 1
            return []
        gid = str(group_id)
        self.counters["signals"] += 1
        meta = self.store.get(self.meta_key) or {"w": -1, "a": []}
        active = set(meta["a"])
        watch = self.watch(gid)
        late = watch.late
        watch.update(signal)
        self.counters["late_signals"] += watch.late - late
        alerts = self._keep(watch, active)
        day = int(signal["day"])
        if day > meta["w"]:
            # Event time moved on: decide the quiet active groups' days too.
            alerts.extend(self._advance_quiet(day, active, skip=gid))
            meta = {"w": day, "a": sorted(active)}
        elif sorted(active) != meta["a"]:
            meta = {"w": meta["w"], "a": sorted(active)}
        else:
            return alerts
        self.store[self.meta_key] = meta
        return alerts

    def advance(self, day: int) -> list[dict[str, Any]]:
        """Every member signal before ``day`` has been processed (the sources' watermarks
        say so): decide the active groups' days as a signal of ``day`` would. A group that
        no signal reaches any more (its last member gone) still closes its episode."""
        meta = self.store.get(self.meta_key) or {"w": -1, "a": []}
        if day <= meta["w"]:
            return []
        active = set(meta["a"])
        alerts = self._advance_quiet(day, active)
        self.store[self.meta_key] = {"w": day, "a": sorted(active)}
        return alerts

    def _advance_quiet(self, day: int, active: set[str], skip: str | None = None
                       ) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        for other in sorted(active - {skip}):
            quiet = self.watch(other)
            quiet.advance(day)
            alerts.extend(self._keep(quiet, active))
        return alerts

    def _keep(self, watch: GroupWatch, active: set[str]) -> list[dict[str, Any]]:
        self.store[watch.group_id] = watch.to_state()
        if watch.active:
            active.add(watch.group_id)
        else:
            active.discard(watch.group_id)
        for alert in watch.alerts:
            self.counters[f"group_alerts_{alert['status']}"] += 1
        return watch.alerts

    def context(self, group_id: str | None) -> dict[str, Any] | None:
        """The ``group_context`` reason for a member of ``group_id``, if it is in alert."""
        if not group_id:
            return None
        state = self.store.get(group_id)
        if not state or not state.get("c"):
            return None
        return group_context(group_id, state["c"])
