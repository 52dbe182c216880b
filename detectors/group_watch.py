"""One group's model: its members' facts folded in event time, the day-by-day decision and
the alert policy (the overview is in :mod:`detectors.group`)."""

from __future__ import annotations

import hashlib
from typing import Any

from detectors.days import Clock
from detectors.group_config import GroupConfig
from detectors.group_evidence import MOVING, MemberFacts, group_evidence, signal_row
from detectors.policy import ZONES, AlertPolicy
from detectors.surprise import surprise_risk

__all__ = ["GROUP_MODEL_VERSION", "GROUP_STATE_VERSION", "GroupWatch"]

GROUP_STATE_VERSION = 1
#: Written into group alerts; bump when thresholds or features change meaning.
GROUP_MODEL_VERSION = "group-1.0"

YELLOW, RED, WHITE = (ZONES.index(zone) for zone in ("yellow", "red", "white"))


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
        #: subscriber_id -> facts
        self.members: dict[str, MemberFacts] = {}
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
            "m": {sid: f.row() for sid, f in self.members.items()},
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
        watch.members = {sid: MemberFacts.from_row(f) for sid, f in state["m"].items()}
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
        row = signal_row(signal)
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
            f = self.members[sid] = MemberFacts()
        elif ts < f.ts:
            return  # an older signal than one already applied (redelivered)
        f.ts = ts
        if left:
            if f.left < 0:
                f.left = day
            return
        if level >= YELLOW:
            if f.level < YELLOW or f.warned_since < 0:
                f.warned_since = day
        elif level >= 0:
            f.warned_since = -1
        if level >= 0:
            f.level = level
        if op:
            grace = self.config.fwd_grace_days
            stopped = f.forwarding_stopped
            if op != f.operator or (stopped >= 0 and day - stopped > grace):
                f.forwarding_since = day
            f.operator, f.forwarding_stopped = op, -1
        elif f.operator and f.forwarding_stopped < 0:
            f.forwarding_stopped = day
        f.spend_pct = ratio
        f.value = value

    # --------------------------------------------------------------------------------
    # Decisions
    # --------------------------------------------------------------------------------
    def _value(self, day: int) -> float:
        """Monthly value at stake: the calm value of members present or recently left."""
        total: float = sum(f.calm_value for f in self.members.values()
                    if f.left < 0 or day - f.left < self.config.leave_window)
        return round(total / 10.0, 2)

    def _decide(self, day: int) -> None:
        cfg = self.config
        # Forget members long gone (bounded state; they no longer say anything).
        for sid in [s for s, f in self.members.items()
                    if f.left >= 0 and day - f.left > cfg.forget_days]:
            del self.members[sid]
        # Members' baselines learn from calm days only, slowly: a plan cut across the group
        # shows as a fall before it becomes the new normal; a member in warning or
        # forwarding does not teach the group what is usual.
        rate = 1.0 / cfg.baseline_days
        for f in self.members.values():
            if f.left < 0 and 0 <= f.level < YELLOW and not f.operator and f.value > 0:
                f.calm_value = f.value if f.calm_value <= 0 else round(
                    f.calm_value + rate * (f.value - f.calm_value))
        if self.policy.level and all(f.left >= 0 for f in self.members.values()):
            self._close(day)
            return
        evidence = (group_evidence(self.members, day, cfg, self.clock.date)
                    if len(self.members) >= cfg.min_members else [])
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
        alert = self._alert(digest, status, zone, surprise_risk(surprise), day, reasons, ts)
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
        gone = [f.left for f in self.members.values()]
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
