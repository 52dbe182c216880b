"""Unit tests of the detectors: each piece on its own, the alert contract, the dependency rule."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import fastjsonschema
import orjson
import pytest
from river import stats

from detectors import (
    Engine,
    EngineConfig,
    Forwarding,
    OperatorLookup,
    SpendDrop,
    dedupe,
    deep_sizeof,
)
from detectors.days import Clock, parse_ts
from stream.contracts import schema

# --------------------------------------------------------------------------------------
# Dependency rule
# --------------------------------------------------------------------------------------


def test_importing_detectors_leaves_kafka_and_faust_out() -> None:
    code = (
        "import sys, detectors\n"
        "bad = [m for m in ('faust', 'aiokafka', 'kafka') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_the_outcome_calibration_is_imported_only_when_asked_for() -> None:
    """River's linear models (and scipy with them) took over a second of every worker's
    start, with the calibration off."""
    code = (
        "import sys, detectors\n"
        "engine = detectors.Engine(detectors.EngineConfig(), subscribers={}, population={})\n"
        "print('river.linear_model' in sys.modules)\n"
        "detectors.OutcomeLearner\n"
        "print('river.linear_model' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "True"]


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def test_spend_baseline_is_rivers_ewmean_and_ewvar() -> None:
    """The baseline recurrence equals River's EWMean/EWVar once past the count-adaptive start."""
    rng = random.Random(12345)
    model = SpendDrop(baseline_days=90, recent_days=1, scale=1)
    alpha = model.alpha
    mean, var = stats.EWMean(alpha), stats.EWVar(alpha)
    values = [rng.randint(0, 50) for _ in range(400)]
    for x in values:
        model.update(x)
    # River weights from the first value on; ours uses 1/n until 1/n < alpha (plain mean),
    # so compare on a stream that starts at the steady state.
    model2 = SpendDrop(baseline_days=90, recent_days=1, scale=1)
    model2.n = 10**6
    model2.mean = float(values[0])
    mean.update(values[0])
    var.update(values[0])
    for x in values[1:]:
        mean.update(x)
        var.update(x)
    for x in values[1:]:
        model2._learn(float(x))
    assert model2.mean == pytest.approx(mean.get(), abs=0.01)
    assert model2.var == pytest.approx(var.get(), rel=0.01)


def test_spend_round_trip_and_rebase() -> None:
    model = SpendDrop()
    for c in [1000, 1200, 900] * 10:
        model.update(c)
    state = model.to_state()
    assert SpendDrop.from_state(orjson.loads(orjson.dumps(state))).to_state() == state
    model.shift(-1.0)
    assert model.recent[-1] == 800
    assert all(isinstance(v, (int, float)) for v in model.to_state())


def test_forwarding_learns_habit_and_round_trips() -> None:
    fwd = Forwarding()
    for _ in range(20):
        fwd.close_day(10, 0, 0)
    assert fwd.evidence(6, 6) == 1.0
    assert fwd.evidence(10, 3) == 0.0
    state = fwd.to_state()
    assert Forwarding.from_state(orjson.loads(orjson.dumps(state))).to_state() == state


def test_operator_lookup_prefixes_and_ported() -> None:
    lookup = OperatorLookup(ported={"18612345678": "China Mobile"})
    assert lookup.operator("13912345678") == "China Mobile"
    assert lookup.operator("13012345678") == "China Unicom"
    assert lookup.operator("19212345678") == "China Broadnet"
    assert lookup.operator("+8618912345678") == "China Telecom"
    assert not lookup.is_off_net("18612345678")  # ported in to us
    assert lookup.is_off_net("18612345679")
    assert not lookup.is_off_net("12599")  # voicemail: not a mobile number
    other = OperatorLookup(ours="China Unicom")
    assert other.is_off_net("13912345678")


def test_clock_days_in_operator_time() -> None:
    clock = Clock(tz_offset_hours=8, allowed_lateness_s=3600)
    late_evening_utc = parse_ts("2026-03-01T17:30:00Z")  # 01:30 on 03-02 in +08:00
    assert clock.date(clock.day(late_evening_utc)) == "2026-03-02"


def test_a_day_remembers_its_latest_event_ids_exactly() -> None:
    days = ""
    ids = [f"c{i}" for i in range(200)]
    for n, event_id in enumerate(ids):
        assert not dedupe.seen(days, 20513, dedupe.fingerprint(event_id))
        days = dedupe.add(days, 20513, dedupe.fingerprint(event_id))
        # "20513:" and three bytes an id (four base64 characters), up to DAY_MAX ids
        assert len(days) == 6 + 4 * min(n + 1, dedupe.DAY_MAX)
    latest = ids[-dedupe.DAY_MAX:]
    assert all(dedupe.seen(days, 20513, dedupe.fingerprint(i)) for i in latest)
    assert not any(dedupe.seen(days, 20513, dedupe.fingerprint(i)) for i in ids[:100])
    assert not dedupe.seen(days, 20514, dedupe.fingerprint(ids[-1]))  # per day
    assert not dedupe.seen(days, 513, dedupe.fingerprint(ids[-1]))  # a whole day number
    both = dedupe.add(days, 20512, dedupe.fingerprint("b1"))
    assert both.startswith("20512:") and both.endswith(" " + days)
    assert dedupe.seen(both, 20512, dedupe.fingerprint("b1"))
    assert dedupe.seen(both, 20513, dedupe.fingerprint(ids[-1]))
    assert dedupe.prune(both, 20512) == days
    assert dedupe.prune(both, 20513) == ""


def test_an_exact_day_set_has_no_false_duplicates() -> None:
    days = ""
    for i in range(dedupe.DAY_MAX):
        days = dedupe.add(days, 1, dedupe.fingerprint(f"x{i}"))
    others = [f"y{i}" for i in range(100_000)]
    fps = {dedupe.fingerprint(f"x{i}") for i in range(dedupe.DAY_MAX)}
    # Only a 24-bit collision can make an unseen id look seen.
    assert sum(dedupe.seen(days, 1, dedupe.fingerprint(o)) for o in others) == sum(
        dedupe.fingerprint(o) in fps for o in others)


# --------------------------------------------------------------------------------------
# Engine behaviour
# --------------------------------------------------------------------------------------


def _call(n: int, ts: str, sid: str = "s1", **extra: Any) -> dict[str, Any]:
    event = {"event_id": f"c{n}", "ts": ts, "subscriber_id": sid, "direction": "out",
             "other_party": "13900000000", "duration_s": 30, "charge": 0.5,
             "forwarded_to": None, "cell_id": "C1"}
    event.update(extra)
    return event


def test_duplicates_are_counted_and_change_nothing() -> None:
    engine = Engine()
    engine.process("calls", _call(1, "2026-03-01T10:00:00+08:00"))
    before = orjson.dumps(engine.subscribers["s1"])
    assert engine.process("calls", _call(1, "2026-03-01T10:00:00+08:00")) == []
    assert orjson.dumps(engine.subscribers["s1"]) == before
    assert engine.counters["duplicate"] == 1


def test_a_resend_is_a_duplicate_however_many_events_came_between_while_its_day_is_open(
) -> None:
    engine = Engine()
    engine.process("calls", _call(0, "2026-02-28T10:00:00+08:00"))  # the day before
    engine.process("calls", _call(1, "2026-03-01T08:00:00+08:00"))
    for n in range(2, 40):  # far more than the 12 events the engine used to remember
        engine.process("calls", _call(n, f"2026-03-01T{8 + n // 4:02d}:{n % 4 * 15:02d}:00"
                                         "+08:00"))
    engine.process("calls", _call(40, "2026-03-02T00:30:00+08:00"))  # 03-01 still open
    before = orjson.dumps(engine.subscribers["s1"])
    assert engine.process("calls", _call(1, "2026-03-01T08:00:00+08:00")) == []
    assert orjson.dumps(engine.subscribers["s1"]) == before
    assert engine.counters["duplicate"] == 1 and engine.counters["late"] == 0
    # Its day closed, its ids are gone with it: a plain engine takes it as late (the
    # service and replay reject it as too_late before the engine sees it).
    engine.process("calls", _call(41, "2026-03-02T01:00:00+08:00"))
    march_2 = engine.clock.day(parse_ts("2026-03-02T01:00:00+08:00"))
    assert [e.split(":")[0] for e in engine.subscribers["s1"]["e"].split()] == [str(march_2)]
    engine.process("calls", _call(1, "2026-03-01T08:00:00+08:00"))
    assert engine.counters["duplicate"] == 1 and engine.counters["late"] == 1


def test_late_events_are_counted_and_their_spend_used() -> None:
    engine = Engine(EngineConfig(sweep=False))
    for d in range(1, 20):
        engine.process("calls", _call(d, f"2026-03-{d:02d}T10:00:00+08:00"))
    spend_before = sum(engine._models(engine.subscribers["s1"])[0].recent)
    engine.process("calls", _call(99, "2026-03-10T11:00:00+08:00", charge=5.0))
    assert engine.counters["late"] == 1
    spend_after = sum(engine._models(engine.subscribers["s1"])[0].recent)
    assert spend_after == spend_before + 50  # tenths of a yuan


def test_unknown_profile_is_tracked_and_later_profile_updates_identity() -> None:
    engine = Engine()
    engine.process("calls", _call(1, "2026-03-01T10:00:00+08:00", sid="nobody"))
    assert engine.counters["unknown_profile"] == 1
    engine.process("subscribers", {"subscriber_id": "nobody", "msisdn": "13800000009",
                                   "account_id": "A9", "segment": "government",
                                   "tier": "gold", "account_manager": "AM9"})
    assert engine.subscribers["nobody"]["p"][3] == "government"
    assert engine.subscribers["nobody"]["m"].closed >= 0


def test_events_after_port_out_are_ignored() -> None:
    engine = Engine()
    engine.process("calls", _call(1, "2026-03-01T10:00:00+08:00"))
    engine.process("billing", {"event_id": "b1", "ts": "2026-03-01T12:00:00+08:00",
                               "subscriber_id": "s1", "account_id": None,
                               "kind": "port_out", "amount": 0})
    assert engine.process("calls", _call(2, "2026-03-02T10:00:00+08:00")) == []
    assert engine.counters["after_close"] == 1
    assert engine.subscribers["s1"]["x"][0] == "port_out"


def _alert_world() -> list[dict[str, Any]]:
    rng = random.Random(12345)
    engine = Engine()
    engine.process("subscribers", {"subscriber_id": "s1", "msisdn": "13800000001",
                                   "account_id": "A1", "group_id": "G1",
                                   "segment": "key_account", "tier": "diamond",
                                   "account_manager": "AM1"})
    alerts: list[dict[str, Any]] = []
    n = 0
    for d in range(90):
        day = f"2026-01-{d + 1:02d}" if d < 31 else (
            f"2026-02-{d - 30:02d}" if d < 59 else f"2026-03-{d - 58:02d}")
        for k in range(8):
            n += 1
            forwarded = "18611112222" if d >= 70 and k % 2 else None
            alerts += engine.process("calls", _call(
                n, f"{day}T{9 + k:02d}:00:00+08:00", direction="in" if k % 2 else "out",
                forwarded_to=forwarded, cell_id=None if forwarded else "C1",
                other_party=f"1390000{rng.randint(0, 30):04d}"))
        alerts += engine.process("billing", {
            "event_id": f"b{d}", "ts": f"{day}T23:59:30+08:00", "subscriber_id": "s1",
            "account_id": "A1", "kind": "charge", "amount": 20.0})
    return alerts


def test_alerts_follow_the_contract_and_ids_are_deterministic() -> None:
    alerts = _alert_world()
    assert alerts, "the forwarding switch should alert"
    validate = fastjsonschema.compile(schema("alert"))
    for alert in alerts:
        assert "emitted_at" not in alert
        validate({**alert, "emitted_at": "2026-03-12T10:00:00+00:00"})
        assert set(alert) == set(schema("alert")["required"]) - {"emitted_at"} | {"contact"}
    first = alerts[0]
    assert first["zone"] in ("yellow", "red") and first["status"] == "open"
    assert first["msisdn"] == "13800000001" and first["account_manager"] == "AM1"
    assert first["value_at_risk"] == pytest.approx(600.0 * 1.5 * 1.5, rel=0.05)
    # A key account: the account manager first, then when the subscriber answers (every
    # call of this world is between 09:00 and 17:00 on every day of the week).
    contact = first["contact"]
    assert (contact["first_contact"], contact["account_manager"]) == ("account_manager", "AM1")
    assert contact["summary"].startswith("call through account manager AM1 first; the "
                                         "subscriber answers 100% of calls on ")
    assert all("09:00" <= w["start"] < w["end"] <= "18:00" for w in contact["windows"])
    assert [a["alert_id"] for a in _alert_world()] == [a["alert_id"] for a in alerts]
    json.dumps(alerts)  # plain JSON


def test_state_is_small() -> None:
    engine = Engine()
    rng = random.Random(12345)
    n = 0
    for d in range(1, 29):
        for _ in range(12):
            n += 1
            engine.process("calls", _call(n, f"2026-02-{d:02d}T{rng.randint(8, 20):02d}:00:00"
                                             "+08:00", other_party=f"139{rng.randint(0, 10**8)}"))
    state = engine.subscribers["s1"]
    assert len(orjson.dumps(state)) <= 512
    assert deep_sizeof(state) <= 3 * 1024


def test_a_stay_away_begins_only_from_ordinary_days() -> None:
    """The onset of a stay away (``DayClose._steady``): at most two collapsed days just
    before it are taken in, and the days before them must not be a decline's end."""
    from detectors.spend import SpendDrop

    engine = Engine()

    def steady(recent: list[int], downgrade: int = -1) -> tuple[bool, tuple[int, int]]:
        usage = SpendDrop(scale=1)
        usage.n, usage.mean, usage.var, usage.recent = 60, 10.0, 10.0, recent
        return engine._steady(usage, 0.0, "sme", 100, downgrade)

    # A trip: ordinary days, then two without calls (taken in), then today's collapse.
    assert steady([10] * 12 + [0, 1]) == (True, (2, 1))
    # The same collapse at the end of a fall that the fortnight as a whole does not show
    # (95 calls against 120 usual before it) but its last four days do (15 against 40).
    assert steady([10] * 8 + [5, 4, 3, 3] + [2, 0]) == (False, (2, 2))
    # A week of low days: a decline that has run its course, not a trip about to begin.
    assert steady([10] * 7 + [1] * 7) == (False, (2, 2))
    # The trip's days after a plan cut within the fortnight (on day 87, 13 days before;
    # the day a taken-in collapsed day, too): stepping out, not settled. Not before it.
    assert steady([10] * 12 + [0, 1], downgrade=87) == (False, (2, 1))
    assert steady([10] * 12 + [0, 1], downgrade=98) == (False, (2, 1))
    assert steady([10] * 12 + [0, 1], downgrade=86) == (True, (2, 1))


def test_a_stay_away_counts_its_calendar_days_and_a_cut_on_a_day_it_does_not_see() -> None:
    """Days away from home by cells are not stepped (:class:`StayAway` sees days at home),
    yet a trip lasts them, and a plan cut on one of them is a cut during the stay."""
    from detectors.absence import StayAway

    def confirmed(trip_days: int = 21) -> StayAway:
        stay = StayAway(trip_days=trip_days)
        for day in (100, 101):
            stay.expect(10.0, 10.0, 8, 8, steady=True, day=day)
            stay.update(0)
        assert stay.holding
        return stay

    stay = confirmed(trip_days=14)
    stay.expect(10.0, 10.0, 8, 8, day=114)  # 12 days away by cells in between
    stay.update(0)
    assert (stay.state.days, stay.verdict) == (3, "persisted")  # 15 days on the calendar
    stay = confirmed(trip_days=14)
    stay.expect(10.0, 10.0, 8, 8, day=113)
    stay.update(0)
    assert stay.holding  # 14 days: a trip still

    stay = confirmed()
    stay.note_cut()
    assert stay.verdict == "plan_cut" and not stay.holding
    idle = StayAway()
    idle.note_cut()  # no stay away runs: nothing to note
    assert idle.state is None


def test_a_stay_away_without_forwarding_is_confirmed_only_after_a_few_days() -> None:
    """Both directions quiet for one or two days is as often a dip inside a decline as a
    trip's start: confirmed (and its days taken out of the usage window) from the third
    day only. With calls forwarded off-net, from the first."""
    from detectors.absence import StayAway

    stay = StayAway()
    held = []
    for day in range(100, 104):
        stay.expect(10.0, 10.0, 0, 0, steady=stay.state is None, day=day)
        stay.update(0)
        held.append(stay.holding)
    assert held == [False, False, True, True]

    dip = StayAway()
    for day, calls in ((100, 0), (101, 0), (102, 10)):
        dip.expect(10.0, 10.0, 0 if calls == 0 else 10, 0, steady=dip.state is None, day=day)
        dip.update(calls)
        assert not dip.holding
    assert dip.state is None and not dip.ended  # never confirmed: nothing to end

    forwarded = StayAway()
    forwarded.expect(10.0, 10.0, 8, 8, steady=True, day=100)
    forwarded.update(0)
    assert forwarded.holding


def test_a_stay_away_forwarding_off_net_survives_first_days_partly_at_home() -> None:
    """Ten calls a day usual; a trip begins with incoming calls forwarded off-net on two
    days that keep 3 outgoing calls each (30% of usual: partly at home), then nothing.
    Not collapsed to a quarter, it is still a stay away while calls are forwarded
    off-net, and is confirmed on the third day. At 40% of usual (presence) it ends, and
    so does one without forwarding at 30% over its days, as before."""
    from detectors.absence import StayAway

    def run(days: list[tuple[int, int]]) -> list[tuple[bool, bool]]:
        stay, seen = StayAway(), []
        for day, (calls, forwarded) in enumerate(days, start=100):
            stay.expect(10.0, 10.0, 2, forwarded, steady=stay.state is None, day=day)
            stay.update(calls)
            seen.append((stay.state is not None, stay.holding))
        return seen

    assert run([(3, 3), (3, 3), (0, 3)]) == [(True, False), (True, False), (True, True)]
    assert run([(4, 3), (4, 3)]) == [(True, False), (False, False)]
    assert run([(2, 0), (4, 0)]) == [(True, False), (False, False)]


def test_a_plan_cut_leaves_the_value_at_risk_at_what_the_customer_paid_before():
    """After a cut from 388 to 8 a month, the spend baseline is 8 at once; the usual bill
    (388) is what is at stake until bills at the new fee bring it down."""
    from detectors.outputs import monthly_value
    from detectors.spend import SpendDrop
    from detectors.state import Numbers

    spend = SpendDrop()
    for _ in range(30):
        spend.update(round(100 * 388.0 / 30))  # cents a day
    spend.shift(-380.0 / 30)  # the plan change, as the engine applies it
    m = Numbers.new()
    m.bill_n, m.bill_mean = 3, 388.0
    assert round(monthly_value({"m": m}, spend)) == 8  # no cut recorded
    m.downgrade = 40
    assert monthly_value({"m": m}, spend) == 388.0
    m.bill_mean = 5.0  # bills at the new fee: the larger, the spend, counts
    assert round(monthly_value({"m": m}, spend)) == 8
