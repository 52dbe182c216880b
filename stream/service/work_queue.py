"""The call centre's open work: one item per open episode, folded from the alert stream.

Pure functions over plain dicts (no Faust): :mod:`stream.service.work_queue_web` keeps the
items in a Faust table and serves them over HTTP; the tests drive these directly.

An item is the latest ``open``/``escalated`` alert of an episode (a subscriber, or a group
for group alerts), without the phone number, plus the claim an agent holds on it. An alert
with any other status closes the item: ``resolved`` and ``closed`` are the terminal statuses
of the contract, and a status this version does not know is taken as terminal too (a newer
producer's way of ending an episode; an item left open for ever is worse than one dropped).
An item whose work is done (a final outcome: :func:`worked`) stays, out of the open work,
until its episode ends: an escalation of the same episode does not bring the customer back
to the call centre; a new episode (an ``open`` alert) does.

Order and pick
--------------
``priority = value_at_risk x risk_score x urgency``, where urgency is the inverse of the
days the zone gives the call centre (docs/alerts.md): white half a day, red one working
day, yellow a week, any other zone two weeks. A daily capacity of ``N`` calls picks the
``N`` items of highest *expected retained value*, ``value_at_risk x risk_score x reach``,
where reach is the chance a call in the subscriber's contact windows reaches them, from
the calls behind the windows (:func:`reach`; 1 without ``contact``), and lists them by
priority.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

#: Statuses that keep an episode open; every other status ends it.
OPEN_STATUSES = frozenset({"open", "escalated"})
#: Terminal statuses of the alert contract (``closed``: the subscriber or group is gone).
TERMINAL_STATUSES = frozenset({"resolved", "closed"})
#: Days the call centre has to act on a zone (docs/alerts.md); urgency is the inverse.
DUE_DAYS: dict[str, float] = {"white": 0.5, "red": 1.0, "yellow": 7.0}
DEFAULT_DUE_DAYS = 14.0
#: How long a claim holds when the claimer does not say (seconds).
DEFAULT_CLAIM_S = 1800.0
MAX_CLAIM_S = 7 * 86400.0
#: Alert fields an item keeps (never ``msisdn``: a tool looks the number up in its CRM).
ITEM_FIELDS = ("alert_id", "kind", "status", "subscriber_id", "account_id", "group_id",
               "segment", "tier", "account_manager", "zone", "risk_score", "value_at_risk",
               "ts", "contact")


def item_key(alert: Mapping[str, Any]) -> str | None:
    """The episode an alert belongs to: its group for a group alert, else its subscriber.

    >>> item_key({"kind": "group", "group_id": "g1", "subscriber_id": None})
    'g1'
    >>> item_key({"kind": "subscriber", "group_id": "g1", "subscriber_id": "s1"})
    's1'
    """
    if alert.get("kind") == "group" and alert.get("group_id"):
        return str(alert["group_id"])
    sid = alert.get("subscriber_id")
    return None if sid is None else str(sid)


def fold(item: Mapping[str, Any] | None, alert: Mapping[str, Any]) -> dict[str, Any] | None:
    """The item after ``alert`` (None: the episode is closed, or never opened).

    A repeat of one of the item's alerts (at-least-once delivery) changes nothing; a new
    ``open``/``escalated`` alert replaces the item and keeps a claim on the same episode.

    >>> a = {"alert_id": "a1", "kind": "subscriber", "status": "open", "subscriber_id": "s1",
    ...      "msisdn": "13800000000", "zone": "yellow", "risk_score": 0.5,
    ...      "value_at_risk": 100.0, "ts": "2026-03-02T10:00:00+08:00"}
    >>> item = fold(None, a)
    >>> item["alert_id"], "msisdn" in item, item["opened_ts"]
    ('a1', False, '2026-03-02T10:00:00+08:00')
    >>> item = fold(item, {**a, "alert_id": "a2", "status": "escalated", "zone": "red"})
    >>> item["zone"], fold(item, a)["zone"]  # the first alert delivered again: no change
    ('red', 'red')
    >>> fold(item, {**a, "alert_id": "a3", "status": "resolved"}) is None
    True
    >>> fold(item, {**a, "alert_id": "a5", "status": "closed"}) is None  # ported out
    True
    >>> fold(item, {**a, "alert_id": "a4", "status": "archived"}) is None  # unknown: ends
    True
    >>> done = worked(item, "retained")  # reached: the episode's work is done
    >>> is_open(fold(done, {**a, "alert_id": "a6", "status": "escalated", "zone": "white"}))
    False
    >>> is_open(fold(done, {**a, "alert_id": "a7"}))  # a new episode is work again
    True
    """
    status = alert.get("status")
    if status not in OPEN_STATUSES:
        return None
    if item is not None and alert.get("alert_id") in (item.get("alert_ids") or ()):
        return dict(item)
    if item is not None and item.get("worked"):
        if status == "escalated":  # the same episode, its work done: it stays done
            return {**item, "alert_ids": [*(item.get("alert_ids") or []), alert.get("alert_id")]}
        item = None  # a new episode
    new = {name: alert.get(name) for name in ITEM_FIELDS}
    new["key"] = item_key(alert)
    new["opened_ts"] = item.get("opened_ts") if item is not None else alert.get("ts")
    new["alert_ids"] = [*(item.get("alert_ids") or []), alert.get("alert_id")] \
        if item is not None else [alert.get("alert_id")]
    new["claim"] = item.get("claim") if item is not None else None
    return new


def worked(item: Mapping[str, Any], outcome: str) -> dict[str, Any]:
    """The item once its episode's work is done (``outcome``: what ended it): kept, out of
    the open work, until the episode ends (:func:`fold`)."""
    return {**item, "claim": None, "worked": outcome}


def is_open(item: Mapping[str, Any] | None) -> TypeGuard[Mapping[str, Any]]:
    """Whether ``item`` is open work: an episode running whose work is not done."""
    return item is not None and not item.get("worked")


def urgency(zone: str | None) -> float:
    """1 / the days the zone gives the call centre.

    >>> urgency("red"), urgency("yellow") < urgency("red") < urgency("white")
    (1.0, True)
    """
    return 1.0 / DUE_DAYS.get(str(zone), DEFAULT_DUE_DAYS)


def priority(item: Mapping[str, Any]) -> float:
    """``value_at_risk x risk_score x urgency``."""
    return _number(item.get("value_at_risk")) * _number(item.get("risk_score")) * urgency(
        item.get("zone"))


def reach(item: Mapping[str, Any]) -> float:
    """The chance a call in the subscriber's contact windows reaches them.

    From the windows' counts with the prior the engine ranks windows with (one answered
    and one missed call, :class:`detectors.contact.ContactWindows`):
    ``(answered + 1) / (incoming + 2)`` over the windows, so one call answered out of one
    is 2/3, not a certainty, and a subscriber without windows (too few calls seen) is 1/2.
    Windows without counts give their ``answered_share``; an item without ``contact`` (a
    group, an alert from an older version) is 1: nothing says it is hard to reach.

    >>> w = {"weekdays": [1], "start": "18:00", "end": "21:00"}
    >>> one = {"contact": {"answered_share": 1.0, "windows": [
    ...     {**w, "incoming_calls": 1, "answered_calls": 1}]}}
    >>> many = {"contact": {"answered_share": 0.9, "windows": [
    ...     {**w, "incoming_calls": 10, "answered_calls": 9}]}}
    >>> round(reach(one), 3), round(reach(many), 3)
    (0.667, 0.833)
    >>> reach({"contact": {"answered_share": None, "windows": []}})
    0.5
    >>> reach({}), reach({"contact": {"answered_share": 0.25}})
    (1.0, 0.25)
    """
    contact = item.get("contact")
    if not isinstance(contact, Mapping):
        return 1.0
    windows = contact.get("windows")
    if isinstance(windows, list):
        answered = incoming = 0.0
        counted = False
        for window in windows:
            a = window.get("answered_calls") if isinstance(window, Mapping) else None
            n = window.get("incoming_calls") if isinstance(window, Mapping) else None
            if _count(a) and _count(n) and a <= n:
                answered, incoming, counted = answered + a, incoming + n, True
        if counted or not windows:
            return (answered + 1.0) / (incoming + 2.0)
    share = contact.get("answered_share")
    if isinstance(share, (int, float)) and not isinstance(share, bool) and 0 <= share <= 1:
        return float(share)
    return 1.0


def expected_retained_value(item: Mapping[str, Any]) -> float:
    """``value_at_risk x risk_score x reach``: what calling this item first is worth."""
    return _number(item.get("value_at_risk")) * _number(item.get("risk_score")) * reach(item)


def due_at(item: Mapping[str, Any]) -> str | None:
    """When the zone's time to act runs out, from the alert's event time (ISO 8601)."""
    try:
        when = datetime.fromisoformat(str(item.get("ts")))
    except ValueError:
        return None
    days = DUE_DAYS.get(str(item.get("zone")), DEFAULT_DUE_DAYS)
    return (when + timedelta(days=days)).isoformat()


@dataclass(frozen=True)
class Filters:
    """What a listing asks for; a field left ``None`` does not filter."""

    zone: frozenset[str] | None = None
    segment: frozenset[str] | None = None
    account_manager: str | None = None
    #: only items whose contact window is open at this time (items without windows pass)
    reachable_at: datetime | None = None
    #: claims held at this time are shown only with ``include_claimed``
    now: float = 0.0
    include_claimed: bool = False

    def accepts(self, item: Mapping[str, Any], tz_offset_hours: float = 8.0) -> bool:
        if self.zone is not None and item.get("zone") not in self.zone:
            return False
        if self.segment is not None and item.get("segment") not in self.segment:
            return False
        if self.account_manager is not None and item.get("account_manager") != \
                self.account_manager:
            return False
        if not self.include_claimed and claimed_by(item, self.now) is not None:
            return False
        return self.reachable_at is None or in_contact_window(
            item, self.reachable_at, tz_offset_hours)


def in_contact_window(item: Mapping[str, Any], when: datetime,
                      tz_offset_hours: float = 8.0) -> bool:
    """True when ``when`` falls in one of the item's contact windows.

    An item without usable ``contact`` windows (a group item, too few calls seen, an alert
    from an older version) always passes: the filter cannot tell, and hiding the work
    would be worse. A window is
    ``{"weekdays": [1..7] (Monday 1), "start": "HH:MM", "end": "HH:MM"}`` in local time.

    >>> at = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)  # Monday 19:00 at UTC+8
    >>> windows = [{"weekdays": [1, 2, 3, 4, 5], "start": "18:00", "end": "21:00"}]
    >>> in_contact_window({"contact": {"windows": windows}}, at)
    True
    >>> in_contact_window({"contact": {"windows": windows}}, at + timedelta(hours=3))
    False
    >>> in_contact_window({}, at)
    True
    """
    contact = item.get("contact")
    windows = contact.get("windows") if isinstance(contact, Mapping) else None
    if not isinstance(windows, list) or not windows:
        return True
    local = when.astimezone(UTC) + timedelta(hours=tz_offset_hours)
    minute = local.hour * 60 + local.minute
    usable = False
    for window in windows:
        try:
            days = {int(d) for d in window["weekdays"]}
            start, end = _minutes(window["start"]), _minutes(window["end"])
        except (KeyError, TypeError, ValueError):
            continue
        usable = True
        if local.isoweekday() in days and start <= minute < end:
            return True
    return not usable


def claimed_by(item: Mapping[str, Any], now: float) -> str | None:
    """Who holds a live claim on the item at ``now`` (epoch seconds), if anyone."""
    claim = item.get("claim")
    if isinstance(claim, Mapping) and _number(claim.get("until")) > now:
        return str(claim.get("by"))
    return None


@dataclass(frozen=True)
class ClaimResult:
    granted: bool
    item: dict[str, Any]


def claim(item: Mapping[str, Any], by: str, now: float,
          hold_s: float = DEFAULT_CLAIM_S) -> ClaimResult:
    """Claim the item for ``by`` until ``now + hold_s``.

    Idempotent: the holder claiming again gets the same claim back (its expiry unchanged).
    Someone else's live claim refuses; an expired one is taken over.

    >>> item = {"key": "s1"}
    >>> first = claim(item, "agent-7", now=1000.0)
    >>> first.granted, first.item["claim"]["until"]
    (True, 2800.0)
    >>> claim(first.item, "agent-7", now=1500.0).item == first.item
    True
    >>> claim(first.item, "agent-9", now=1500.0).granted
    False
    >>> claim(first.item, "agent-9", now=3000.0).item["claim"]["by"]
    'agent-9'
    """
    holder = claimed_by(item, now)
    if holder == by:
        return ClaimResult(True, dict(item))
    if holder is not None:
        return ClaimResult(False, dict(item))
    hold_s = min(max(hold_s, 1.0), MAX_CLAIM_S)
    return ClaimResult(True, {**item, "claim": {"by": by, "at": now, "until": now + hold_s}})


def view(item: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The item as the HTTP API shows it: figures of order added, claim state resolved."""
    shown = {k: v for k, v in item.items() if k != "claim"}
    holder = claimed_by(item, now)
    claim_ = item.get("claim") if holder is not None else None
    shown["claim"] = {"by": holder, "until": _iso(_number(claim_.get("until")))} \
        if isinstance(claim_, Mapping) else None
    shown["priority"] = round(priority(item), 6)
    shown["expected_retained_value"] = round(expected_retained_value(item), 6)
    shown["due_at"] = due_at(item)
    return shown


def ordered(items: Iterable[Mapping[str, Any]], capacity: int | None = None
            ) -> list[Mapping[str, Any]]:
    """Items by priority (highest first); with ``capacity``, only the ``capacity`` items of
    highest expected retained value, still listed by priority. Ties go by key.

    >>> items = [{"key": "a", "zone": "yellow", "risk_score": 0.9, "value_at_risk": 500.0},
    ...          {"key": "b", "zone": "red", "risk_score": 0.8, "value_at_risk": 100.0},
    ...          {"key": "c", "zone": "red", "risk_score": 0.7, "value_at_risk": 50.0}]
    >>> [i["key"] for i in ordered(items)]
    ['b', 'a', 'c']
    >>> [i["key"] for i in ordered(items, capacity=2)]  # a and b are worth most
    ['b', 'a']
    """
    pool = list(items)
    if capacity is not None:
        pool.sort(key=lambda i: (-expected_retained_value(i), str(i.get("key"))))
        pool = pool[:max(capacity, 0)]
    pool.sort(key=lambda i: (-priority(i), str(i.get("key"))))
    return pool


def _minutes(text: Any) -> int:
    hours, _, minutes = str(text).partition(":")
    value = int(hours) * 60 + int(minutes or 0)
    if not 0 <= value <= 24 * 60:
        raise ValueError(text)
    return value


def _count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
