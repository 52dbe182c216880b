"""What a group knows of its members, and what their facts say on a day (the evidence
:class:`detectors.group_watch.GroupWatch` decides on)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from detectors.days import parse_ts
from detectors.group_config import GroupConfig
from detectors.policy import ZONES
from detectors.surprise import binomial_surprise, densest_cluster

__all__ = ["MOVING", "Evidence", "MemberFacts", "group_evidence", "signal_row"]

YELLOW = ZONES.index("yellow")
#: ``(surprise, code, summary, figures)``: one kind of evidence on a day.
Evidence = tuple[float, str, str, dict[str, Any]]


@dataclass(slots=True)
class MemberFacts:
    """What a group knows of one member, stored as a list in this field order (one list is
    small in memory and in the changelog)."""

    #: zone level (index in ``ZONES``; -1 unknown)
    level: int = -1
    #: day the current yellow-or-worse run began (-1 none)
    warned_since: int = -1
    #: operator their calls are forwarded to off-net ("" none)
    operator: str = ""
    #: day that forwarding began, and the day it stopped (-1 still on, or none)
    forwarding_since: int = -1
    forwarding_stopped: int = -1
    #: 14-day spend against their baseline, x100 (-1 unknown)
    spend_pct: int = -1
    #: monthly value x10, and the calm monthly value x10 (the member's baseline: an
    #: exponential average over calm days, see ``GroupConfig.baseline_days``)
    value: int = 0
    calm_value: int = 0
    #: day they left (-1 still a member)
    left: int = -1
    #: event time of the last signal applied (epoch s)
    ts: int = 0

    def row(self) -> list[Any]:
        return [getattr(self, name) for name in self.__slots__]

    @classmethod
    def from_row(cls, row: list[Any]) -> MemberFacts:
        return cls(*row)


MOVING = frozenset({"group_forwarding", "group_herd"})
_LEVEL = {z: i for i, z in enumerate(ZONES)}


def signal_row(signal: dict[str, Any]) -> list[Any]:
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


def group_evidence(members: Mapping[str, MemberFacts], day: int, config: GroupConfig,
                   date: Callable[[int], str]) -> list[Evidence]:
    """``(surprise, code, summary, figures)`` of each kind of evidence on ``day``: members
    forwarding to one competitor (``group_forwarding``), entering warning together
    (``group_herd``), leaving (``group_leaving``), and the group's spend against its calm
    baseline (``group_spend_drop``). ``date`` names a day."""
    cfg = config
    n = len(members)
    out: list[Evidence] = []
    # Forwarding to one competitor, started within days of each other.
    by_op: dict[str, list[tuple[int, str]]] = {}
    for sid, f in members.items():
        if not f.operator or f.forwarding_since < 0:
            continue
        if f.left >= 0:
            on = day - f.left <= cfg.leave_window
        else:
            on = f.forwarding_stopped < 0 or day - f.forwarding_stopped <= cfg.fwd_grace_days
        if on and f.forwarding_since <= day:
            by_op.setdefault(f.operator, []).append((f.forwarding_since, sid))
    best: Evidence | None = None
    for op in sorted(by_op):
        starts = by_op[op]
        k, first = densest_cluster([s for s, _ in starts], cfg.fwd_window)
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
    warned = [(f.warned_since, sid) for sid, f in members.items()
              if f.left < 0 and f.level >= YELLOW and 0 <= f.warned_since <= day]
    if warned:
        k, first = densest_cluster([d0 for d0, _ in warned], cfg.warn_window)
        who = sorted(sid for d0, sid in warned if first <= d0 < first + cfg.warn_window)
        out.append((binomial_surprise(k, n, cfg.warn_base_rate)
                    if k >= max(cfg.min_members, cfg.herd_min_members) else 0.0,
                    "group_herd",
                    f"{k} of {n} members in warning within {cfg.warn_window} days "
                    f"(since {date(first)})",
                    {"members_warned": k, "members": n, "days": cfg.warn_window,
                     "since": date(first), "subscribers": who}))
    # Leaving: port-outs in the last leave_window days.
    gone = sorted((f.left, sid) for sid, f in members.items()
                  if f.left >= 0 and day - f.left < cfg.leave_window)
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
        if f.calm_value <= 0:
            continue
        if f.left >= 0:
            if day - f.left < cfg.leave_window:
                usual += f.calm_value
            continue
        counted += 1
        usual += f.calm_value
        now += f.value * (f.spend_pct / 100.0 if f.spend_pct >= 0 else 1.0)
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
