"""Contact windows: what the model learns from answered, missed and made calls, and what the
engine's alerts carry (``contact``)."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

import orjson

from detectors import Engine
from detectors.contact import ContactWindows
from detectors.state import deep_sizeof


def _ts(day: date, hour: int, minute: int = 0) -> float:
    from detectors.days import parse_ts

    return parse_ts(f"{day.isoformat()}T{hour:02d}:{minute:02d}:00+08:00")


def test_missed_calls_keep_a_busy_block_out_of_the_windows() -> None:
    contact = ContactWindows()
    first = date(2026, 3, 12)  # a period's first day: the four weeks are not decayed
    assert contact.bucket(_ts(first, 0))[1] % 28 == 0
    for i in range(28):
        day = first + timedelta(days=i)
        if day.weekday() < 5:
            for _ in range(3):  # office hours: rung, not answered
                contact.learn_one({"ts": _ts(day, 10), "direction": "in", "answered": False})
            contact.learn_one({"ts": _ts(day, 19), "direction": "in", "answered": True})
            contact.learn_one({"ts": _ts(day, 21), "direction": "out"})
    windows = contact.windows()
    assert [(w["weekdays"], w["start"], w["end"]) for w in windows] == [
        ([1, 2, 3, 4, 5], "18:00", "24:00")]
    assert windows[0]["answered_share"] == 1.0 and windows[0]["calls_made"] == 20
    assert contact.advice()["summary"] == "answers 100% of calls on weekdays 18:00-24:00"
    counts = contact.counts()
    assert counts[3] == (0, 60, 0)  # weekdays 09:00-12:00: 60 missed


def test_counts_decay_in_event_time_and_stay_bytes() -> None:
    contact = ContactWindows(period_days=28)
    day = date(2026, 3, 2)
    for _ in range(40):
        contact.learn_one({"ts": _ts(day, 9), "direction": "out"})
    assert contact.counts()[3][2] == 40
    contact.learn_one({"ts": _ts(day + timedelta(days=60), 9), "direction": "out"})
    # Two or three periods later (depending on where the period boundary falls): halved
    # each time, plus the new call.
    assert contact.counts()[3][2] in (40 // 4 + 1, 40 // 8 + 1)
    for _ in range(600):  # a count at its cap halves them all instead of wrapping
        contact.learn_one({"ts": _ts(day + timedelta(days=60), 9), "direction": "out"})
    assert 128 <= contact.counts()[3][2] <= 255


def test_too_few_calls_say_so() -> None:
    contact = ContactWindows()
    contact.learn_one({"ts": _ts(date(2026, 3, 2), 9), "direction": "in", "answered": True})
    advice = contact.advice()
    assert advice["windows"] == [] and advice["answered_share"] is None
    assert advice["summary"] == "too few calls yet to tell when they answer"


def _engine_world(answer_evenings: bool) -> tuple[Engine, list[dict[str, Any]]]:
    """One consumer for 100 days, calling out in the evening, rung in the day and in the
    evening; from day 70 they call less and less (a usage drop alerts)."""
    rng = random.Random(12345)
    engine = Engine()
    engine.process("subscribers", {"subscriber_id": "s1", "msisdn": "13800000001",
                                   "account_id": "A1", "segment": "consumer"})
    alerts: list[dict[str, Any]] = []
    n = 0
    for d in range(100):
        day = date(2026, 1, 5) + timedelta(days=d)
        level = 1.0 if d < 70 else max(0.1, 1 - (d - 70) / 20)
        events = []
        for _ in range(sum(rng.random() < 0.6 * level for _ in range(8))):
            events.append((rng.randint(17, 21), "out", 60))
        for _ in range(3):
            hour = rng.choice([10, 11, 14, 19, 20])
            evening = hour >= 16
            answered = rng.random() < (0.9 if evening == answer_evenings else 0.15)
            events.append((hour, "in", 45 if answered else 0))
        for hour, direction, duration in sorted(events):
            n += 1
            alerts += engine.process("calls", {
                "event_id": f"c{n}", "ts": f"{day.isoformat()}T{hour:02d}:{n % 60:02d}:00+08:00",
                "subscriber_id": "s1", "direction": direction, "other_party": "13900000000",
                "duration_s": duration, "charge": 0.3 if direction == "out" else 0.0})
        alerts += engine.process("billing", {
            "event_id": f"b{d}", "ts": f"{day.isoformat()}T23:59:30+08:00",
            "subscriber_id": "s1", "kind": "charge", "amount": 1.0})
    return engine, alerts


def test_alerts_carry_the_windows_the_calls_show() -> None:
    engine, alerts = _engine_world(answer_evenings=True)
    opened = [a for a in alerts if a["status"] in ("open", "escalated")]
    assert opened, "the usage drop should alert"
    contact = opened[0]["contact"]
    assert contact["first_contact"] == "subscriber" and contact["account_manager"] is None
    assert contact["windows"][0]["weekdays"] == [1, 2, 3, 4, 5]
    assert contact["windows"][0]["start"] in ("15:00", "18:00")
    assert contact["answered_share"] >= 0.8
    assert contact["summary"].startswith(f"answers {contact['answered_share']:.0%} of calls on "
                                         "weekdays 1")
    # Someone who answers in the day and misses evening calls (though they call out in the
    # evening) is advised the day first.
    _, other = _engine_world(answer_evenings=False)
    shown = [a["contact"] for a in other if a["status"] in ("open", "escalated")]
    assert shown and all(c["windows"][0]["start"] < "15:00" for c in shown)
    assert all(c["answered_share"] >= 0.8 for c in shown)


def test_state_with_contact_stays_within_the_budget() -> None:
    engine, _ = _engine_world(answer_evenings=True)
    st = engine.subscribers["s1"]
    assert len(orjson.dumps(st["h"])) <= 70
    assert len(orjson.dumps(st)) <= 512 and deep_sizeof(st) <= 3 * 1024
