"""The end of the lifecycle: a port-out or deactivation closes an open episode with a
``closed`` alert, for a subscriber and for a group whose members are all gone."""

from __future__ import annotations

import hashlib
import random
from datetime import date, timedelta
from typing import Any

import fastjsonschema
import pytest

from detectors import Engine, EngineConfig
from detectors.days import parse_ts
from detectors.group import GroupConfig, GroupStage
from stream.contracts import schema
from tests.detectors.test_group import defecting, signals

ALERT = fastjsonschema.compile(schema("alert"))
DAY0 = date(2026, 1, 5)
MSISDN = "13800000001"


def falling(engine: Engine, days: int, seed: int = 12345) -> list[dict[str, Any]]:
    """The engine's doctest subscriber: calls for ten weeks, then fewer and fewer."""
    rng = random.Random(seed)
    engine.process("subscribers", {"subscriber_id": "s1", "msisdn": MSISDN,
                                   "account_id": "A1", "segment": "consumer"})
    alerts: list[dict[str, Any]] = []
    n = 0
    for d in range(days):
        day = (DAY0 + timedelta(days=d)).isoformat()
        level = 1.0 if d < 70 else max(0.1, 1 - (d - 70) / 25)
        for k in range(sum(rng.random() < 0.5 * level for _ in range(8))):
            n += 1
            alerts += engine.process("calls", {
                "event_id": f"c{n}", "ts": f"{day}T1{k}:00:00+08:00", "subscriber_id": "s1",
                "direction": "out", "other_party": "13900000000", "duration_s": 60,
                "charge": 0.3})
        alerts += engine.process("billing", {
            "event_id": f"b{d}", "ts": f"{day}T23:59:30+08:00", "subscriber_id": "s1",
            "kind": "charge", "amount": 1.0})
    return alerts


def leave(engine: Engine, kind: str, d: int, hour: int = 10) -> list[dict[str, Any]]:
    ts = f"{(DAY0 + timedelta(days=d)).isoformat()}T{hour:02d}:00:00+08:00"
    return engine.process("billing", {"event_id": f"x{d}", "ts": ts, "subscriber_id": "s1",
                                      "kind": kind, "amount": 0.0})


@pytest.mark.parametrize("kind", ["port_out", "deactivation"])
def test_leaving_with_an_open_episode_closes_it(kind: str) -> None:
    engine = Engine(EngineConfig(ported_numbers={MSISDN: "China Unicom"}))
    alerts = falling(engine, 110)
    assert [a["status"] for a in alerts] == ["open"]
    opened = alerts[0]
    closed = leave(engine, kind, 110)
    assert len(closed) == 1
    c = closed[0]
    ALERT({**c, "emitted_at": "2026-04-25T02:00:00.000+00:00"})
    assert c["status"] == "closed" and c["kind"] == "subscriber"
    assert (c["subscriber_id"], c["zone"]) == ("s1", opened["zone"])
    assert engine.subscribers["s1"]["x"].kind == kind  # the state is closed
    episode = int(parse_ts(opened["ts"]))  # an episode starts with its open alert
    assert c["alert_id"] == hashlib.sha1(
        f"s1|{episode}|{opened['zone']}|closed".encode()).hexdigest()[:24]
    assert c["reasons"][0]["code"] == "closed"
    if kind == "port_out":
        assert c["ported_to"] == "China Unicom"
        assert "ported out to China Unicom on 2026-04-25" in c["reasons"][0]["summary"]
    else:
        assert c["ported_to"] is None and "deactivated" in c["reasons"][0]["summary"]
    assert engine.counters["alerts_closed"] == 1
    # Nothing more about a subscriber who left; a redelivered port-out changes nothing.
    assert leave(engine, kind, 110) == [] and leave(engine, kind, 111) == []


def test_the_closed_alert_is_the_same_whenever_and_however_it_is_replayed() -> None:
    runs = []
    for _ in range(2):
        engine = Engine()
        falling(engine, 110)
        runs.append(leave(engine, "port_out", 110))
    assert runs[0] == runs[1] and runs[0][0]["ported_to"] is None


def test_a_late_port_out_closes_the_episode_too() -> None:
    engine = Engine()
    falling(engine, 112)
    late = leave(engine, "port_out", 109, hour=12)  # a day already closed
    assert engine.counters["late"] >= 1
    assert [a["status"] for a in late] == ["closed"]


def test_leaving_without_an_open_episode_publishes_nothing() -> None:
    engine = Engine()
    assert falling(engine, 60) == []
    assert leave(engine, "port_out", 60) == []
    assert engine.counters["alerts_closed"] == 0


def test_a_group_whose_members_all_left_closes_its_episode() -> None:
    n = 12
    starts = {0: 40, 1: 40, 2: 41, 3: 42, 4: 42, 5: 43, 6: 44}
    gone = {m: 55 + m // 3 for m in range(n)}  # everyone ports out by day 58
    script = defecting(n, starts, cut_day=47, leave=gone)
    stage = GroupStage(GroupConfig(), {})
    alerts: list[dict[str, Any]] = []
    for d, today in enumerate(signals("G9", n, 75, script)):
        tick = {"group_id": "TICK", "subscriber_id": "tick",
                "ts": (DAY0 + timedelta(days=d + 1)).isoformat() + "T01:00:00+08:00",
                "day": (DAY0 - date(1970, 1, 1)).days + d, "zone": "blue",
                "operator": None, "spend_ratio": 1.0 + d % 2 / 10, "monthly_value": 50.0,
                "left": None}
        for s in [*today, tick]:
            alerts.extend(stage.process(s))
    statuses = [a["status"] for a in alerts]
    assert statuses[0] == "open" and statuses[-1] == "closed"
    assert statuses.count("closed") == 1 and "resolved" not in statuses
    closed = alerts[-1]
    ALERT({**closed, "emitted_at": "2026-03-05T01:00:01.000+00:00"})
    assert closed["zone"] == alerts[-2]["zone"]  # the zone the episode reached
    # Decided at the close of the day the last member left (2026-03-04).
    assert closed["ts"][:10] == "2026-03-05"
    assert "the last on 2026-03-04" in closed["reasons"][0]["summary"]
    assert closed["reasons"][0]["figures"]["members_left"] == n
    assert stage.context("G9") is None  # members' alerts no longer cite the group
    # A group with some members still there stays open.
    partly = defecting(n, starts, cut_day=47, leave={m: 55 for m in range(n - 1)})
    stage2 = GroupStage(GroupConfig(), {})
    out = [a for day in signals("G8", n, 75, partly) for s in day for a in stage2.process(s)]
    assert "closed" not in [a["status"] for a in out]


def test_a_group_that_no_signal_reaches_closes_when_event_time_moves_on() -> None:
    """Alone on its group partition, the group gets no signal after its last member left:
    the sources' watermarks (``GroupStage.advance``) decide its days, as another group's
    signals would."""
    n = 12
    starts = {0: 40, 1: 40, 2: 41, 3: 42, 4: 42, 5: 43, 6: 44}
    gone = {m: 55 + m // 3 for m in range(n)}
    per_day = signals("G9", n, 75, defecting(n, starts, cut_day=47, leave=gone))
    day0 = (DAY0 - date(1970, 1, 1)).days
    quiet, moved = GroupStage(GroupConfig(), {}), GroupStage(GroupConfig(), {})
    only_signals: list[dict[str, Any]] = []
    with_marks: list[dict[str, Any]] = []
    for d, today in enumerate(per_day):
        for s in today:
            only_signals.extend(quiet.process(s))
            with_marks.extend(moved.process(s))
        with_marks.extend(moved.advance(day0 + d + 1))  # every source closed day d
    assert "closed" not in [a["status"] for a in only_signals]
    assert [a["status"] for a in with_marks][-1] == "closed"
    # The same decisions, only sooner: every alert of the signals alone is among them.
    assert {a["alert_id"] for a in only_signals} < {a["alert_id"] for a in with_marks}
    assert moved.advance(day0 + 10) == []  # event time never goes back
