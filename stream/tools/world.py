"""A simulated world's truth, as ``churnwatch simulate`` writes it: ``world.json``,
``truth.jsonl`` (one row per subscriber: kind, churn, port-out, forwarding, trips...) and
``groups.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["DAY_S", "World", "churner_type", "load_world", "parse_ts"]

DAY_S = 86400.0


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class World:
    """What really happened, as written by the simulator."""

    directory: Path
    start: datetime
    end: datetime
    subscribers: dict[str, dict[str, Any]]
    groups: dict[str, dict[str, Any]]
    holiday: tuple[datetime, datetime] | None
    summary: dict[str, Any] = field(default_factory=dict)
    _days: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def day(self, ts: str) -> int:
        """The world's day (0: its first) of an event's ISO timestamp, by the event's own
        local date (``YYYY-MM-DDTHH:MM:SS+HH:MM``), kept per date: called for every call.

        >>> from datetime import datetime
        >>> w = World(Path("."), datetime.fromisoformat("2026-01-05T00:00:00+08:00"),
        ...           datetime.fromisoformat("2026-05-05T00:00:00+08:00"), {}, {}, None)
        >>> w.day("2026-01-05T23:59:00+08:00"), w.day("2026-01-07T00:01:00+08:00")
        (0, 2)
        """
        date = ts[:10]
        day = self._days.get(date)
        if day is None:
            day = self._days[date] = (parse_ts(date + "T12:00:00" + ts[19:]) - self.start).days
        return day

    def holiday_calendar(self) -> tuple[str, ...]:
        """The world's holiday as an operator's calendar (``EngineConfig.holidays``)."""
        return holiday_calendar(self.summary.get("holiday"))

    def port_out(self, sid: str) -> datetime | None:
        ts = self.subscribers[sid].get("port_out_ts")
        return parse_ts(ts) if ts else None

    def present(self, sid: str) -> tuple[datetime, datetime]:
        t = self.subscribers[sid]
        since = parse_ts(t["join_ts"]) if t.get("join_ts") else self.start
        until = self.port_out(sid) or self.end
        return since, until

    def present_between(self, start: datetime, end: datetime) -> list[str]:
        """Subscribers who were ours at some moment of ``[start, end)``."""
        return [sid for sid in self.subscribers
                if self.present(sid)[0] < end and self.present(sid)[1] > start]

    def subscriber_weeks(self) -> float:
        total = 0.0
        for sid in self.subscribers:
            since, until = self.present(sid)
            total += max(0.0, (until - since).total_seconds()) / (7 * DAY_S)
        return total


def holiday_calendar(holiday: dict[str, Any] | None) -> tuple[str, ...]:
    """``world.json``'s ``holiday`` (its first day's start, the end) as an operator's
    calendar entry: an inclusive range of local dates (none without a holiday).

    >>> holiday_calendar({"start": "2026-02-15T00:00:00+08:00",
    ...                   "end": "2026-02-24T00:00:00+08:00", "days": 9})
    ('2026-02-15..2026-02-23',)
    >>> holiday_calendar(None)
    ()
    """
    if not holiday:
        return ()
    last = parse_ts(holiday["end"]) - timedelta(days=1)
    return (f"{parse_ts(holiday['start']).date()}..{last.date()}",)


def _jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def load_world(directory: Path) -> World:
    summary = json.loads((directory / "world.json").read_text())
    truth = {t["subscriber_id"]: t for t in _jsonl(directory / "truth.jsonl")}
    groups = {g["group_id"]: g for g in _jsonl(directory / "groups.jsonl")}
    hol = summary.get("holiday")
    return World(
        directory=directory,
        start=parse_ts(summary["start"]),
        end=parse_ts(summary["end"]),
        subscribers=truth,
        groups=groups,
        holiday=(parse_ts(hol["start"]), parse_ts(hol["end"])) if hol else None,
        summary=summary,
    )


def churner_type(t: dict[str, Any]) -> str:
    """``group_churn``, or an individual churner with or without forwarding first."""
    if t["kind"] != "individual_churn":
        return str(t["kind"])
    forwards = any(f.get("why") == "churn" for f in t.get("forwarding") or ())
    return "individual_forwarding" if forwards else "individual_silent"
