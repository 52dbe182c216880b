"""The group model (:mod:`detectors.group`) on scripted groups: exact firing days, the
confounders it must ignore, size scaling, and insensitivity to how partitions interleave."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, timedelta
from fractions import Fraction
from math import comb, log10
from typing import Any

import fastjsonschema
import orjson
import pytest

from detectors.group import (
    GroupConfig,
    GroupStage,
    GroupWatch,
    binomial_surprise,
    group_context,
)
from stream.contracts import schema

ALERT = fastjsonschema.compile(schema("alert"))
DAY0 = date(2026, 1, 5)
EPOCH_DAY0 = (DAY0 - date(1970, 1, 1)).days

# A member's day: (zone, operator, spend ratio, monthly value, left) or None (no signal).
Day = tuple[str, str | None, float | None, float, str | None]
Script = Callable[[int, int], Day | None]


def iso_close(d: int) -> str:
    return (DAY0 + timedelta(days=d + 1)).isoformat() + "T01:00:00+08:00"


def signals(gid: str, members: int, days: int, script: Script) -> list[list[dict[str, Any]]]:
    """Per day, the signals a group's members emit (emitted on change, like the engine)."""
    last: dict[int, Day] = {}
    out: list[list[dict[str, Any]]] = []
    for d in range(days):
        today = []
        for m in range(members):
            state = script(d, m)
            if state is None or last.get(m) == state:
                continue
            last[m] = state
            zone, op, ratio, value, left = state
            today.append({"group_id": gid, "subscriber_id": f"{gid}-m{m:03d}", "ts": iso_close(d),
                          "day": EPOCH_DAY0 + d, "zone": zone, "operator": op,
                          "spend_ratio": ratio, "monthly_value": value, "left": left})
        out.append(today)
    return out


def calm(rng: random.Random) -> Day:
    return ("blue", None, round(rng.uniform(0.9, 1.1), 1), 300.0, None)


def ticker(d: int) -> dict[str, Any]:
    """A signal of another group of the partition (a group of one, changing every day):
    event time moves on for the whole partition, as it does among many groups."""
    return {"group_id": "TICK", "subscriber_id": "tick", "ts": iso_close(d),
            "day": EPOCH_DAY0 + d, "zone": "blue", "operator": None,
            "spend_ratio": 1.0 + d % 2 / 10, "monthly_value": 50.0, "left": None}


def run(per_day: list[list[dict[str, Any]]], config: GroupConfig | None = None,
        seed: int = 1) -> list[dict[str, Any]]:
    """Feed a group's signals, shuffled within each day (partitions interleave them), with
    another group's signals beside them."""
    rng = random.Random(seed)
    stage = GroupStage(config or GroupConfig(), {})
    alerts: list[dict[str, Any]] = []
    for d, today in enumerate(per_day):
        today = [*today, ticker(d)]
        rng.shuffle(today)
        for s in today:
            alerts.extend(stage.process(s))
    assert not any(a["group_id"] == "TICK" for a in alerts)
    return alerts


def brief(alerts: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(a["ts"][:10], a["status"], a["zone"]) for a in alerts]


def defecting(n: int, starts: dict[int, int], cut_day: int | None = None,
              leave: dict[int, int] | None = None, seed: int = 12345) -> Script:
    """Members in ``starts`` forward to China Telecom from that day; the plan is cut to a
    keep-number fee on ``cut_day``; members in ``leave`` port out that day."""
    rng = random.Random(seed)
    leave = leave or {}

    def script(d: int, m: int) -> Day | None:
        if m in leave and d > leave[m]:
            return None
        if m in leave and d == leave[m]:
            return ("red", None, None, 0.0, "port_out")
        if m in starts and d >= starts[m]:
            cut = cut_day is not None and d >= cut_day
            return ("red", "China Telecom", 0.9 if cut else 1.0, 8.0 if cut else 300.0, None)
        return calm(rng) if d % 5 == m % 5 else None

    return script


def test_a_defecting_group_alerts_on_exact_days_and_escalates() -> None:
    starts = {0: 40, 1: 40, 2: 41, 3: 42, 4: 42, 5: 43, 6: 44}
    script = defecting(12, starts, cut_day=47, leave={0: 55, 1: 56, 2: 57, 3: 58})
    alerts = run(signals("G7", 12, 70, script))
    assert brief(alerts) == [
        # Day 41 (2026-02-15) is decided on the first signal of day 42: 3 of 12 forward.
        ("2026-02-16", "open", "yellow"),
        ("2026-02-17", "escalated", "red"),  # 5 of 12
        ("2026-03-05", "escalated", "white"),  # the 4th port-out of 12 in four days
    ]
    first = alerts[0]
    assert first["kind"] == "group" and first["group_id"] == "G7"
    assert first["reasons"][0]["code"] == "group_forwarding"
    assert first["reasons"][0]["summary"] == (
        "3 of 12 members forward calls to China Telecom numbers since 2026-02-14")
    assert first["reasons"][0]["figures"]["subscribers"] == ["G7-m000", "G7-m001", "G7-m002"]
    assert first["value_at_risk"] == 12 * 300.0
    codes = [r["code"] for r in alerts[2]["reasons"]]
    assert "group_leaving" in codes and "group_spend_drop" in codes
    for a in alerts:
        ALERT({**a, "emitted_at": "2026-03-05T01:00:01.000+00:00"})
        assert "msisdn" in a and a["msisdn"] is None  # no personal numbers in group alerts


def test_the_same_alert_ids_whatever_the_interleaving_of_partitions() -> None:
    starts = {m: 30 + m % 4 for m in range(9)}
    per_day = signals("G9", 25, 60, defecting(25, starts, cut_day=36, leave={0: 45, 1: 46}))
    reference = [(a["alert_id"], a["ts"]) for a in run(per_day, seed=0)]
    assert reference
    for seed in range(1, 8):
        assert [(a["alert_id"], a["ts"]) for a in run(per_day, seed=seed)] == reference


def test_a_partition_a_day_behind_changes_nothing_with_hold_days() -> None:
    """With ``hold_days=1`` the members of one partition may come a whole day late."""
    starts = {m: 30 + m % 3 for m in range(8)}
    per_day = signals("G8", 20, 50, defecting(20, starts, cut_day=35))
    config = GroupConfig(hold_days=1)
    reference = [(a["alert_id"], a["ts"]) for a in run(per_day, config)]
    lagging = {f"G8-m{m:03d}" for m in range(0, 20, 2)}  # "partition B": even members
    late: list[list[dict[str, Any]]] = [[] for _ in per_day]
    for d, today in enumerate(per_day):
        for s in today:
            # Even members' day d comes after the others' day d + 1.
            (late[d + 1] if s["subscriber_id"] in lagging and d + 1 < len(late)
             else late[d]).append(s)
    assert reference
    assert [(a["alert_id"], a["ts"]) for a in run(late, config)] == reference


def test_state_round_trips_through_json_mid_episode_and_redeliveries_change_nothing() -> None:
    assert GroupWatch.from_state(GroupWatch("G").to_state()).to_state() == GroupWatch(
        "G").to_state()
    starts = {m: 30 + m for m in range(6)}
    per_day = signals("G6", 15, 50, defecting(15, starts, cut_day=38))
    flat = [s for d, today in enumerate(per_day) for s in [*today, ticker(d)]]
    reference = run(per_day)
    store: dict[str, Any] = {}
    got: list[dict[str, Any]] = []
    for i, s in enumerate(flat):
        if i % 17 == 0:  # a restart from the changelog
            store = orjson.loads(orjson.dumps(store))
        stage = GroupStage(GroupConfig(), store)
        got.extend(stage.process(s))
        if i % 5 == 0:  # delivered again (at-least-once)
            got.extend(stage.process(s))
    assert reference and got == reference


def test_a_holiday_dip_across_the_group_raises_no_group_alert() -> None:
    rng = random.Random(3)
    holiday = range(41, 50)

    def script(d: int, m: int) -> Day | None:
        if d in holiday:
            # Everyone calls less; spend (mostly the plan fee) dips a little; a couple of
            # members look yellow for a day or two, on different days.
            zone = "yellow" if (m, d) in {(2, 43), (2, 44), (9, 47)} else "green"
            return (zone, None, round(rng.uniform(0.6, 0.8), 1), 300.0, None)
        return calm(rng) if d % 3 == m % 3 else None

    assert run(signals("GH", 14, 70, script)) == []


def test_a_group_of_one_is_just_a_subscriber() -> None:
    alerts = run(signals("G1", 1, 60, defecting(1, {0: 30}, cut_day=33, leave={0: 45})))
    assert alerts == []


@pytest.mark.parametrize("size, forwarders, expected", [
    (60, 2, []),
    (60, 3, []),  # 3 of 60 is within what individual churners do
    (6, 3, [("2026-02-05", "open", "yellow")]),  # 3 of 6 is not
    (60, 5, [("2026-02-05", "open", "yellow")]),
])
def test_thresholds_scale_with_the_size_of_the_group(size: int, forwarders: int,
                                                     expected: list[tuple[str, ...]]) -> None:
    starts = dict.fromkeys(range(forwarders), 30)
    alerts = run(signals("GS", size, 45, defecting(size, starts)))
    assert brief(alerts) == expected


def test_forwarding_to_different_operators_or_far_apart_is_not_a_movement() -> None:
    ops = ["China Telecom", "China Unicom", "China Broadnet", "off-net"]
    rng = random.Random(5)

    def script(d: int, m: int) -> Day | None:
        if m < 4 and d >= 30 + 20 * (m % 2):  # two pairs, 20 days apart, ops all differ
            return ("red", ops[m], 1.0, 300.0, None)
        return calm(rng) if d % 4 == m % 4 else None

    assert run(signals("GO", 10, 70, script)) == []


def test_the_spend_falling_alone_and_the_herd_alone_each_raise_a_group_alert() -> None:
    rng = random.Random(8)

    def bill(d: int, m: int) -> Day | None:  # the corporate plan cut for everyone
        if d >= 40:
            return ("green", None, 0.9, 60.0, None)
        return calm(rng) if d % 4 == m % 4 else None

    alerts = run(signals("GB", 10, 50, bill))
    assert brief(alerts) == [("2026-02-15", "open", "yellow")]
    # The members' calm baseline (300 a month each) has learnt one day of the cut.
    assert alerts[0]["reasons"][0]["summary"] == (
        "the group's spend over 14 days runs at 19% of its baseline (540 vs 2,914 a month)")

    def herd(d: int, m: int) -> Day | None:
        if m < 5 and d >= 40 + m:
            return ("yellow", None, 0.7, 300.0, None)
        return calm(rng) if d % 4 == m % 4 else None

    alerts = run(signals("GW", 10, 50, herd))
    # Three of ten in warning within days is a herd (two is not); five is red.
    assert brief(alerts) == [("2026-02-17", "open", "yellow"), ("2026-02-19", "escalated", "red")]
    assert [a["reasons"][0]["code"] for a in alerts] == ["group_herd", "group_herd"]
    assert alerts[0]["reasons"][0]["summary"] == (
        "3 of 10 members in warning within 6 days (since 2026-02-14)")


def test_a_group_that_calms_down_is_resolved_with_a_deterministic_id() -> None:
    rng = random.Random(2)

    def trip(d: int, m: int) -> Day | None:  # three members forward together, then stop
        if m < 3 and 30 <= d < 36:
            return ("yellow", "China Unicom", 1.0, 300.0, None)
        return calm(rng) if d % 2 == m % 2 else None

    per_day = signals("GT", 6, 60, trip)
    alerts = run(per_day)
    assert brief(alerts) == [("2026-02-05", "open", "yellow"),
                             ("2026-02-21", "resolved", "blue")]
    assert alerts[1]["reasons"][0]["code"] == "resolved"
    assert [a["alert_id"] for a in run(per_day, seed=9)] == [a["alert_id"] for a in alerts]
    assert len({a["alert_id"] for a in alerts}) == 2


def test_members_get_the_group_context_while_it_is_in_alert() -> None:
    per_day = signals("GC", 8, 45, defecting(8, {0: 30, 1: 30, 2: 31}))
    stage = GroupStage(GroupConfig(), {})
    assert stage.context("GC") is None
    opened = [a for d, today in enumerate(per_day) for s in [*today, ticker(d)]
              for a in stage.process(s)]
    assert brief(opened) == [("2026-02-05", "open", "yellow")]
    reason = stage.context("GC")
    assert reason is not None and reason == group_context("GC", [
        opened[0]["alert_id"], "yellow", opened[0]["ts"], opened[0]["reasons"][0]["summary"]])
    assert reason["figures"]["group_alert_id"] == opened[0]["alert_id"]
    assert stage.context(None) is None and stage.context("elsewhere") is None


@pytest.mark.parametrize("k, n, p", [(1, 1, 0.3), (2, 6, 0.005), (3, 60, 0.005),
                                     (5, 30, 0.02), (12, 20, 0.1), (7, 7, 0.5)])
def test_binomial_surprise_is_the_exact_tail(k: int, n: int, p: float) -> None:
    q = Fraction(p).limit_denominator(10**6)
    tail = sum(comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(k, n + 1))
    assert binomial_surprise(k, n, p) == pytest.approx(-log10(float(tail)), rel=1e-9, abs=1e-9)


def test_an_unknown_state_version_is_refused() -> None:
    state = GroupWatch("G").to_state()
    with pytest.raises(ValueError):
        GroupWatch.from_state({**state, "v": 99})


def test_member_facts_are_stored_as_the_list_running_deployments_hold():
    from detectors.group_evidence import MemberFacts

    row = [3, 20540, "China Telecom", 20541, -1, 85, 2999, 3000, -1, 1774800000]
    state = GroupWatch("G9").to_state()
    state["m"] = {"m1": list(row)}
    watch = GroupWatch.from_state(state)
    facts = watch.members["m1"]
    assert (facts.level, facts.warned_since, facts.operator, facts.forwarding_since,
            facts.forwarding_stopped, facts.spend_pct, facts.value, facts.calm_value,
            facts.left, facts.ts) == tuple(row)
    assert watch.to_state()["m"] == {"m1": row}
    assert MemberFacts().row() == [-1, -1, "", -1, -1, -1, 0, 0, -1, 0]
