"""Engine API: a pre-parsed event time, upgrades of older states, reasons wording, and
forwarding seen on days without a located call."""

from __future__ import annotations

import copy
import random
from datetime import date, timedelta
from typing import Any

from detectors import Engine, EngineConfig, parse_ts
from detectors.engine import NEW_MISC, upgrade
from detectors.state import STATE_VERSION


def _events(seed: int = 12345, days: int = 90) -> list[tuple[str, dict[str, Any]]]:
    """Two subscribers, the second decaying from day 50, as (kind, event) in time order."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    n = 0
    for d in range(days):
        day = (date(2026, 1, 5) + timedelta(days=d)).isoformat()
        for sid in ("s1", "s2"):
            level = 1.0 if sid == "s1" or d < 50 else max(0.1, 1 - (d - 50) / 20)
            for k in range(sum(rng.random() < 0.6 * level for _ in range(8))):
                n += 1
                out.append(("calls", {
                    "event_id": f"c{n}", "ts": f"{day}T1{k}:0{sid[1]}:00+08:00",
                    "subscriber_id": sid, "direction": "out", "other_party": "13900000000",
                    "duration_s": 60, "charge": 0.3, "cell_id": "C1"}))
        for sid in ("s1", "s2"):
            out.append(("billing", {
                "event_id": f"b{d}{sid}", "ts": f"{day}T23:59:30+08:00", "subscriber_id": sid,
                "kind": "charge", "amount": 2.0}))
    out.sort(key=lambda e: e[1]["ts"])
    return out


def _run(events: list[tuple[str, dict[str, Any]]], parsed: bool) -> tuple[Any, ...]:
    store: dict[str, Any] = {}
    engine = Engine(EngineConfig(), subscribers=store, population={})
    alerts = []
    for kind, event in events:
        ts = parse_ts(event["ts"]) if parsed else None
        alerts.extend(engine.process(kind, event, ts))
    return alerts, store, dict(engine.counters)


def test_pre_parsed_ts_gives_the_same_results() -> None:
    events = _events()
    alerts, store, counters = _run(events, parsed=False)
    assert alerts, "the decaying subscriber must alert, or the comparison proves little"
    assert _run(events, parsed=True) == (alerts, store, counters)


def test_version_1_state_is_upgraded_and_carries_on() -> None:
    events = _events()
    half = len(events) // 2
    store: dict[str, Any] = {}
    engine = Engine(EngineConfig(), subscribers=store, population={})
    for kind, event in events[:half]:
        engine.process(kind, event)
    old = copy.deepcopy(store)
    for st in old.values():  # what version 1 wrote: 14 numbers in "m"
        st["v"] = 1
        del st["m"][14:]
    expected = copy.deepcopy(store)
    upgrade(old["s1"])
    assert old["s1"] == expected["s1"] and old["s1"]["v"] == STATE_VERSION
    assert len(old["s1"]["m"]) == len(NEW_MISC)


def test_usage_reason_says_plainly_when_the_segment_fell_too() -> None:
    engine = Engine()
    summary, figures = engine._versus(
        "outgoing calls over the last 14 days at home", 30.0, 45.0, 0.66, "key_account",
        "30 calls against a usual 45.0 a fortnight",
    )
    assert summary == (
        "outgoing calls over the last 14 days at home are 67% of this subscriber's 90-day "
        "baseline (30 calls against a usual 45.0 a fortnight); the key_account segment as a "
        "whole fell to 66% of its usual over the same days, and against that this "
        "subscriber is at 101%"
    )
    assert figures["segment_ratio"] == 0.66 and figures["ratio_vs_segment"] == 1.01
    plain, _ = engine._versus("spend over the last 7 days at home", 10.0, 40.0, 1.0, "sme",
                              "10.00 yuan against a usual 40.00 a week")
    assert plain.startswith("spend over the last 7 days at home is 25% of")
    assert "segment" not in plain


def test_forwarding_on_a_day_without_located_calls_waits_for_a_call_from_home() -> None:
    engine = Engine()
    n = 0

    def call(day: str, hour: int, **fields: Any) -> None:
        nonlocal n
        n += 1
        engine.process("calls", {"event_id": f"c{n}", "ts": f"{day}T{hour:02d}:00:00+08:00",
                                 "subscriber_id": "s1", "other_party": "13900000000",
                                 "duration_s": 60, "charge": 0.0, **fields})

    start = date(2026, 1, 5)
    for d in range(40):
        day = (start + timedelta(days=d)).isoformat()
        call(day, 9, direction="out", cell_id="C1")
        call(day, 10, direction="in", cell_id="C1")
    quiet = (start + timedelta(days=40)).isoformat()
    call(quiet, 10, direction="in", forwarded_to="18611112222")  # no cell: cannot tell yet
    call(quiet, 11, direction="in", forwarded_to="18611112222")
    back = (start + timedelta(days=41)).isoformat()
    assert engine.subscribers["s1"]["m"][-1] == 0.0
    call(back, 9, direction="out", cell_id="C1")  # closes day 40, then confirms at home
    assert engine.counters["forwarding_confirmed"] == 1
    assert engine.subscribers["s1"]["m"][-1] == 0.0  # moved into the forwarding model
    assert engine.subscribers["s1"]["f"][5] > 0
