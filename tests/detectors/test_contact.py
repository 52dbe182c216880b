"""Contact windows: what the model learns from answered, missed and made calls, and what the
engine's alerts carry (``contact``)."""

from __future__ import annotations

import random
from binascii import a2b_base64, b2a_base64
from datetime import date, timedelta
from typing import Any

import orjson

from detectors import Engine
from detectors.contact import COUNT_CAP, MADE_CAP, ContactWindows, from_base64
from detectors.state import deep_sizeof


def _ts(day: date, hour: int, minute: int = 0) -> float:
    from detectors.days import parse_ts

    return parse_ts(f"{day.isoformat()}T{hour:02d}:{minute:02d}:00+08:00")


def test_missed_calls_keep_a_busy_block_out_of_the_windows() -> None:
    contact = ContactWindows()
    first = date(2026, 3, 12)
    for i in range(28):
        day = first + timedelta(days=i)
        if day.weekday() < 5:
            for _ in range(3):  # office hours: rung, not answered
                contact.learn_one({"ts": _ts(day, 10), "direction": "in", "answered": False})
            contact.learn_one({"ts": _ts(day, 19), "direction": "in", "answered": True})
            contact.learn_one({"ts": _ts(day, 20), "direction": "out"})
    windows = contact.windows()
    assert [(w["weekdays"], w["start"], w["end"]) for w in windows] == [
        ([1, 2, 3, 4, 5], "18:00", "21:00")]
    # Calls made: one bit a block, cleared with the block's halving at the cap.
    assert windows[0]["answered_share"] == 1.0 and 1 <= windows[0]["calls_made"] <= MADE_CAP
    assert contact.advice()["summary"] == "answers 100% of calls on weekdays 18:00-21:00"
    counts = contact.counts()
    # Weekdays 09:00-12:00: 60 missed, halved at the cap (4 to 7 left); the evening's 20
    # answered calls were halved on their own (a block decays with its own calls only).
    assert counts[0][:2] == (0, counts[0][1]) and COUNT_CAP // 2 < counts[0][1] <= COUNT_CAP
    assert COUNT_CAP // 2 < counts[3][0] <= COUNT_CAP and counts[3][1] == 0


def test_calls_outside_the_call_centre_hours_are_not_counted() -> None:
    contact = ContactWindows()
    day = date(2026, 3, 2)
    for hour in (0, 3, 6, 8, 21, 23):
        contact.learn_one({"ts": _ts(day, hour, 30), "direction": "in", "answered": True})
    assert contact.state == 0 and contact.windows() == []
    assert contact.bucket(_ts(day, 8, 59))[0] is None
    assert contact.bucket(_ts(day, 9))[0] == 0 and contact.bucket(_ts(day, 20, 59))[0] == 3
    assert contact.bucket(_ts(day + timedelta(days=5), 9))[0] == 4  # Saturday


def test_each_block_halves_at_its_cap_and_keeps_its_share() -> None:
    contact = ContactWindows()
    day = date(2026, 3, 2)
    for _ in range(10):
        contact.learn_one({"ts": _ts(day, 9), "direction": "out"})
    assert contact.counts()[0] == (0, 0, MADE_CAP)  # calls made: whether, not how many
    for _ in range(2):
        contact.learn_one({"ts": _ts(day, 13), "direction": "in", "answered": False})
    # A busy block answered at 3 calls of 4: its counts stay within the caps, its share
    # about 3/4, whatever the number of calls; the quiet block next to it keeps its own.
    for i in range(400):
        contact.learn_one({"ts": _ts(day, 9), "direction": "in", "answered": i % 4 != 3})
        answered, missed, _ = contact.counts()[0]
        assert answered <= COUNT_CAP and missed <= COUNT_CAP
    answered, missed, made = contact.counts()[0]
    assert 0.6 <= answered / (answered + missed) <= 0.9 and made <= MADE_CAP
    assert contact.counts()[1] == (0, 2, 0)
    assert 0 <= contact.state < 2**64


def test_the_base64_state_of_earlier_versions_is_read_and_carries_on() -> None:
    """States written before the counts became one integer: the hours kept, each bucket
    scaled to the caps with its share, learning on from there."""
    old = bytearray(1 + 3 * 16)
    old[0] = 221  # the period of a four-weekly halving, modulo 256: no longer kept
    # weekdays 18:00-21:00 (old block 6): answered 40, missed 8, made 30; weekdays
    # 09:00-12:00 (old block 3): answered 3, missed 20; weekends 15:00-18:00 (old 8 + 5):
    # made 12; weekdays 00:00-03:00 (old block 0): answered 90, not kept.
    for block, counts in ((6, (40, 8, 30)), (3, (3, 20, 0)), (13, (0, 0, 12)), (0, (90, 0, 0))):
        for kind, count in enumerate(counts):
            old[1 + 16 * kind + block] = count
    text = b2a_base64(bytes(old), newline=False).decode("ascii")
    contact = ContactWindows()
    contact.state = text
    assert contact.state == from_base64(text)
    counts = contact.counts()
    # 40 answered, 8 missed halved twice (10, 2); 3 and 20 once (1, 10); made capped.
    assert counts[3] == (10, 2, MADE_CAP) and counts[0] == (1, 10, 0)
    assert counts[4 + 2] == (0, 0, MADE_CAP)
    assert sum(map(sum, counts)) == 10 + 2 + MADE_CAP + 1 + 10 + MADE_CAP
    # Weekends 15:00-18:00 only saw calls made: one presence, not enough for a window.
    assert [(w["weekdays"], w["start"], w["end"]) for w in contact.windows()] == [
        ([1, 2, 3, 4, 5], "18:00", "21:00")]
    # The next call counts on top and stores the integer.
    contact.learn_one({"ts": _ts(date(2026, 3, 2), 19), "direction": "in", "answered": True})
    assert contact.counts()[3] == (5 + 1, 1, 0)  # at the cap: halved, then counted
    assert isinstance(contact.state, int)
    # What cannot be read (not base64, not 49 bytes) is no counts: learning starts again.
    for junk in ("not base64!", "AAAA", "", None):
        contact.state = junk
        assert contact.state == 0


#: ``"h"`` of a subscriber state written by the previous version's engine (a simulated
#: world's subscriber: base64 of a period modulo 256 and 16 buckets' counts up to 255).
OLD_H = "3gAAIHNRYQ4BAAANKxsZCQAAAAAAAAAAAAAAAAAAAAAAAAAmlmR6GAMAAAUODQ4BAA=="


def test_the_engine_carries_on_from_a_state_the_previous_version_wrote() -> None:
    raw = a2b_base64(OLD_H)
    expected = []
    for at in [1 + 3 + k for k in range(4)] + [1 + 8 + 3 + k for k in range(4)]:
        answered, missed, made = raw[at], raw[at + 16], raw[at + 32]
        while max(answered, missed) > COUNT_CAP:
            answered, missed, made = answered // 2, missed // 2, made // 2
        expected.append((answered, missed, min(made, MADE_CAP)))
    engine = Engine()
    engine.process("subscribers", {"subscriber_id": "s1", "msisdn": "13800000001",
                                   "account_id": "A1", "segment": "consumer"})
    engine.subscribers["s1"]["h"] = OLD_H
    engine.process("calls", {"event_id": "c1", "ts": "2026-04-28T19:10:00+08:00",
                             "subscriber_id": "s1", "direction": "in",
                             "other_party": "13900000000", "duration_s": 30})
    st = engine.subscribers["s1"]
    assert isinstance(st["h"], int)
    contact = ContactWindows()
    contact.state = st["h"]
    # A Tuesday 19:10: weekdays 18:00-21:00, one more answered (halved first at the cap).
    answered, missed, made = expected[3]
    if answered >= COUNT_CAP:
        answered, missed, made = answered // 2, missed // 2, made // 2
    expected[3] = (answered + 1, missed, made)
    assert contact.counts() == expected


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
    assert isinstance(st["h"], int) and len(orjson.dumps(st["h"])) <= 20
    assert deep_sizeof(st["h"]) <= 36
    assert len(orjson.dumps(st)) <= 512 and deep_sizeof(st) <= 3 * 1024
