"""Scripted daily series through the engine: the exact day an alert fires, and none on the
confounders (weekly rhythm, a holiday hitting everyone, a plan downgrade, a week's trip
forwarding to a family number, a sparse user, a new subscriber in warm-up, a habitual
on-net forwarder).

Each test builds a small segment (the population context needs company) of subscribers
whose days are scripted by a function, on a stream seeded with ``random.Random(12345)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from detectors import Engine, EngineConfig

START = date(2026, 1, 5)  # a Monday
HOME = "C10001"
UNICOM = "18611112222"  # China Unicom by prefix
TELECOM_FAMILY = "18912345678"  # China Telecom by prefix
ONNET_COLLEAGUE = "13900000001"  # China Mobile


@dataclass
class Day:
    """What a subscriber does on one day."""

    out_calls: float = 4.0  # expected outgoing calls
    in_calls: float = 4.0  # expected incoming calls
    charge: float = 3.0  # the daily billing charge
    forward_to: str | None = None  # forwarding target, if set
    forward_share: float = 0.0
    cell: str = HOME
    topup: float = 0.0
    plan_change: tuple[float, float] | None = None  # (old fee, new fee)
    port_out: bool = False
    active: bool = True  # False: no events at all that day (not yet joined)


Script = Callable[[int], Day]


def stable(day: int) -> Day:
    return Day()


def business(day: int) -> Day:
    """Busy on weekdays, quiet at weekends (weekly rhythm)."""
    weekend = (START + timedelta(days=day)).weekday() >= 5
    f = 0.3 if weekend else 1.0
    return Day(out_calls=8 * f, in_calls=8 * f, charge=10.0 * (0.6 if weekend else 1.0))


@dataclass
class World:
    """A segment of subscribers with scripted days, turned into contract events."""

    scripts: dict[str, Script]
    days: int = 110
    segment: str = "sme"
    seed: int = 12345
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        rng = random.Random(self.seed)
        for sid in self.scripts:
            yield "subscribers", {
                "subscriber_id": sid, "msisdn": "1380000" + sid[-4:].rjust(4, "0"),
                "account_id": "A-" + sid, "group_id": None, "segment": self.segment,
                "tier": "gold", "account_manager": "AM1", **self.profiles.get(sid, {}),
            }
        n = 0
        for d in range(self.days):
            today = (START + timedelta(days=d)).isoformat()
            batch: list[tuple[str, str, dict[str, Any]]] = []
            for sid, script in self.scripts.items():
                day = script(d)
                if not day.active:
                    continue
                for kind, minute in (("out", day.out_calls), ("in", day.in_calls)):
                    count = sum(rng.random() < minute / 10 for _ in range(10)) if minute < 10 \
                        else round(rng.gauss(minute, minute ** 0.5))
                    for k in range(max(0, count)):
                        n += 1
                        second = 8 * 3600 + int(rng.random() * 12 * 3600)
                        ts = f"{today}T{second // 3600:02d}:{second // 60 % 60:02d}:" \
                             f"{second % 60:02d}+08:00"
                        forwarded = None
                        if kind == "in" and day.forward_to and rng.random() < day.forward_share:
                            forwarded = day.forward_to
                        batch.append((ts, "calls", {
                            "event_id": f"c{n}", "ts": ts, "subscriber_id": sid,
                            "direction": kind, "other_party": f"1390000{k:04d}",
                            "duration_s": 60, "charge": 0.2 if kind == "out" else 0.0,
                            "forwarded_to": forwarded,
                            "cell_id": None if forwarded else day.cell,
                        }))
                money: list[tuple[str, str, float, float | None]] = [
                    ("23:59:30", "charge", day.charge, None)
                ]
                if day.topup:
                    money.append(("12:00:00", "topup", day.topup, None))
                if day.plan_change:
                    money.append(("10:00:00", "plan_change", day.plan_change[1],
                                  day.plan_change[0]))
                if day.port_out:
                    money = [("17:00:00", "port_out", 0.0, None)]
                for clock, kind, amount, previous in money:
                    n += 1
                    ts = f"{today}T{clock}+08:00"
                    batch.append((ts, "billing", {
                        "event_id": f"b{n}", "ts": ts, "subscriber_id": sid,
                        "account_id": "A-" + sid, "kind": kind, "amount": amount,
                        "previous_amount": previous,
                    }))
            batch.sort(key=lambda item: item[0])
            for _, kind, event in batch:
                yield kind, event

    def run(self, config: EngineConfig | None = None) -> tuple[Engine, list[dict[str, Any]]]:
        engine = Engine(config or EngineConfig())
        alerts: list[dict[str, Any]] = []
        for kind, event in self.events():
            alerts.extend(engine.process(kind, event))
        return engine, alerts


def crowd(n: int = 40, script: Script = stable, **special: Script) -> dict[str, Script]:
    scripts: dict[str, Script] = {f"s{i:03d}": script for i in range(n)}
    scripts.update(special)
    return scripts


def opened(alerts: list[dict[str, Any]], sid: str) -> list[tuple[str, str, str]]:
    return [(a["ts"][:10], a["status"], a["zone"]) for a in alerts if a["subscriber_id"] == sid]


# --------------------------------------------------------------------------------------
# Churn: the exact day
# --------------------------------------------------------------------------------------


def test_slow_decay_alerts_on_the_expected_days() -> None:
    def decaying(d: int) -> Day:
        level = 1.0 if d < 60 else max(0.15, 1 - (d - 60) / 30)
        return Day(out_calls=6 * level, in_calls=4 * (0.5 + 0.5 * level))

    _, alerts = World(crowd(churner=decaying)).run()
    assert opened(alerts, "churner") == [
        ("2026-03-27", "open", "yellow"),  # decline from 03-06; calls at 1/3 by now
        ("2026-03-28", "escalated", "red"),
    ]
    assert all(a["subscriber_id"] == "churner" for a in alerts)
    first = alerts[0]
    assert first["reasons"][0]["code"] == "usage_drop"
    assert "of this subscriber's baseline over " in first["reasons"][0]["summary"]
    assert first["segment"] == "sme" and first["tier"] == "gold"


def test_switch_of_forwarding_off_net_is_flagged_the_same_day() -> None:
    def switching(d: int) -> Day:
        if d < 70:
            return Day(out_calls=8, in_calls=10)
        return Day(out_calls=6, in_calls=10, forward_to=UNICOM, forward_share=0.9)

    _, alerts = World(crowd(churner=switching)).run()
    day_70 = (START + timedelta(days=70)).isoformat()  # 2026-03-16, the switch
    # Intra-day, at the fourth of four calls forwarded (2 of 2 is not yet overwhelming).
    first = alerts[0]
    assert (first["ts"], first["status"], first["zone"]) == (
        f"{day_70}T13:23:49+08:00", "open", "red"
    )
    reason = first["reasons"][0]
    assert reason["code"] == "forwarding_off_net"
    assert "China Unicom" in reason["summary"] and "today" in reason["summary"]


def test_silent_subscriber_turns_white() -> None:
    def vanishing(d: int) -> Day:
        return Day() if d < 60 else Day(out_calls=0, in_calls=0.5)

    _, alerts = World(crowd(gone=vanishing)).run()
    zones = [(s, z) for _, s, z in opened(alerts, "gone")]
    assert ("escalated", "white") in zones or ("open", "white") in zones
    white = next(a for a in alerts if a["zone"] == "white")
    # An abrupt stop of both directions is first held as a possible absence: white comes
    # once the stay away has lasted past a trip (03-30), not on the 21st silent day (03-27).
    assert white["ts"][:10] == "2026-03-30"
    assert any(r["code"] == "silent" for r in white["reasons"])


def test_port_out_closes_the_state_without_an_alert_after() -> None:
    def leaving(d: int) -> Day:
        if d == 80:
            return Day(port_out=True)
        return Day(active=d < 80, out_calls=4 if d < 60 else 1)

    engine, alerts = World(crowd(leaver=leaving)).run()
    assert all(a["ts"][:10] <= "2026-03-26" for a in alerts if a["subscriber_id"] == "leaver")
    assert engine.subscribers["leaver"]["x"][0] == "port_out"
    assert engine.counters["port_out"] == 1


def test_episode_resolves_when_usage_returns() -> None:
    def dip(d: int) -> Day:
        return Day(out_calls=0.5 if 50 <= d < 70 else 5, in_calls=4)

    _, alerts = World(crowd(dipper=dip)).run()
    statuses = [s for _, s, _ in opened(alerts, "dipper")]
    assert statuses[0] == "open"
    assert statuses[-1] == "resolved"
    resolved = [a for a in alerts if a["status"] == "resolved"][0]
    assert resolved["zone"] in ("green", "blue")
    assert resolved["reasons"][0]["code"] == "resolved"


# --------------------------------------------------------------------------------------
# Confounders: no alert
# --------------------------------------------------------------------------------------


def test_no_alert_on_weekly_rhythm() -> None:
    _, alerts = World(crowd(script=business)).run()
    assert alerts == []


def test_no_alert_when_a_holiday_hits_everyone() -> None:
    def holiday(d: int) -> Day:
        f = 0.25 if 60 <= d < 69 else 1.0
        return Day(out_calls=6 * f, in_calls=5 * f, charge=3.0 * (0.5 + 0.5 * f))

    engine, alerts = World(crowd(script=holiday)).run()
    assert alerts == []
    assert engine.counters["closed_days"] > 0


def _holiday(d: int) -> float:
    """Everyone's calls at a quarter through a holiday, 2026-03-06 to 03-14 (days 60-68)."""
    return 0.25 if 60 <= d < 69 else 1.0


def _at_the_holiday(d: int) -> Day:
    f = _holiday(d)
    return Day(out_calls=8 * f, in_calls=8 * f, charge=3.0 * (0.5 + 0.5 * f))


def _switching_at_the_holiday(d: int) -> Day:
    """Calls as everyone does, and from 03-09 (the holiday's fourth day) on, incoming
    calls forwarded to China Unicom: a switch, or a trip like many at a holiday."""
    day = _at_the_holiday(d)
    if d >= 63:
        day.in_calls, day.forward_to, day.forward_share = 8.0, UNICOM, 0.9
    return day


def test_forwarding_off_net_at_a_holiday_is_not_alerted_until_the_holiday_ends() -> None:
    # The segment's calls of the last three days against the same days a week before say
    # the holiday; forwarding alone may then be a trip, green (watched, not alerted), and
    # is red once the segment's days are back to normal.
    _, alerts = World(crowd(script=_at_the_holiday, churner=_switching_at_the_holiday)).run()
    assert opened(alerts, "churner")[0] == ("2026-03-16", "open", "red")
    assert all(a["subscriber_id"] == "churner" for a in alerts)
    reason = alerts[0]["reasons"][0]
    assert reason["code"] == "forwarding_off_net"
    assert "segment_week_on_week" not in reason["figures"]


def test_an_operator_may_alert_possible_trips_at_a_holiday_at_yellow() -> None:
    # holiday_trip_strength at yellow: the same forwarding is yellow from its first day at
    # the holiday, says why, and is red once the holiday is over.
    config = EngineConfig(holiday_trip_strength=0.5)
    _, alerts = World(crowd(script=_at_the_holiday,
                            churner=_switching_at_the_holiday)).run(config)
    mine = opened(alerts, "churner")
    assert mine[0] == ("2026-03-10", "open", "yellow")  # the close of 03-09
    assert mine[1][1:] == ("escalated", "red") and "2026-03-15" <= mine[1][0] <= "2026-03-17"
    reason = alerts[0]["reasons"][0]
    assert reason["code"] == "forwarding_off_net"
    assert "a holiday, when many travel: it may be a trip" in reason["summary"]
    assert reason["figures"]["segment_week_on_week"] < 0.8
    assert "segment_week_on_week" not in alerts[1]["reasons"][0]["figures"]


def test_forwarding_off_net_at_a_holiday_is_red_when_the_group_does_the_same() -> None:
    # A colleague of the same group has forwarded to China Unicom since 03-07: the group
    # moving, not a holiday trip.
    def colleague(d: int) -> Day:
        day = _at_the_holiday(d)
        if d >= 61:
            day.in_calls, day.forward_to, day.forward_share = 8.0, "18600000001", 0.9
        return day

    group = {"group_id": "G1", "account_id": "AC-G1"}
    scripts = crowd(script=_at_the_holiday, churner=_switching_at_the_holiday,
                    colleague=colleague)
    _, alerts = World(scripts, profiles={"churner": group, "colleague": group}).run()
    assert opened(alerts, "churner")[0] == ("2026-03-10", "open", "red")


def test_a_trip_at_a_holiday_that_calls_a_little_while_forwarding_is_not_alerted() -> None:
    # Away from 03-08 (the holiday's third day), calls forwarded to a family number; from
    # 03-10 a couple of calls a day, which against everyone's holiday usual (2 a day) is
    # "present" (4 against a usual 11 over 6 days, red without the holiday). At a holiday
    # presence is no verdict, and a stay away that may be a trip is green: no alert.
    def traveller(d: int) -> Day:
        day = _at_the_holiday(d)
        if 62 <= d < 67:
            day.out_calls = 0.0 if d < 64 else 2.0
            day.in_calls, day.forward_to, day.forward_share = 8.0, TELECOM_FAMILY, 0.9
        return day

    _, alerts = World(crowd(script=_at_the_holiday, traveller=traveller)).run()
    assert opened(alerts, "traveller") == []
    # At yellow (holiday_trip_strength 0.5) it is held as a possible trip and resolves.
    _, alerts = World(crowd(script=_at_the_holiday, traveller=traveller)).run(
        EngineConfig(holiday_trip_strength=0.5))
    assert opened(alerts, "traveller") == [
        ("2026-03-09", "open", "yellow"), ("2026-03-20", "resolved", "blue")]


def test_a_trip_from_the_first_day_of_a_holiday_in_the_calendar_is_not_alerted() -> None:
    # Away from 03-06, the holiday's first day, calls forwarded to a family number, back on
    # 03-11. The segment's calls say a holiday only once three of its days are low, so the
    # trip is a yellow stay away on its first day; the operator's calendar says it from
    # the first day, and the trip is green, watched but not alerted.
    def traveller(d: int) -> Day:
        day = _at_the_holiday(d)
        if 60 <= d < 65:
            day.out_calls = 0.0
            day.in_calls, day.forward_to, day.forward_share = 8.0, TELECOM_FAMILY, 0.9
        return day

    world = World(crowd(script=_at_the_holiday, traveller=traveller))
    _, alerts = world.run()
    assert opened(alerts, "traveller")[0] == ("2026-03-07", "open", "yellow")
    _, alerts = world.run(EngineConfig(holidays=("2026-03-06..2026-03-14",)))
    assert alerts == []


def test_a_possible_trip_in_the_calendar_says_so() -> None:
    # At yellow (holiday_trip_strength 0.5), forwarding at a calendar holiday names the
    # calendar; red once the holiday is over.
    config = EngineConfig(holidays=("2026-03-06..2026-03-14",), holiday_trip_strength=0.5)
    _, alerts = World(crowd(script=_at_the_holiday,
                            churner=_switching_at_the_holiday)).run(config)
    assert opened(alerts, "churner") == [("2026-03-10", "open", "yellow"),
                                         ("2026-03-16", "escalated", "red")]
    reason = alerts[0]["reasons"][0]
    assert reason["summary"].endswith(
        "a holiday in the operator's calendar, when many travel: it may be a trip")
    assert "segment_week_on_week" not in reason["figures"]


def test_no_alert_on_plan_downgrade() -> None:
    def downgrade(d: int) -> Day:
        if d < 60:
            return Day(charge=128 / 30 + 0.5)
        return Day(charge=58 / 30 + 0.45, out_calls=3.6,
                   plan_change=(128.0, 58.0) if d == 60 else None)

    engine, alerts = World(crowd(downgrader=downgrade)).run()
    assert alerts == []
    assert engine.counters["plan_downgrade"] == 1


def test_no_alert_on_a_weeks_trip_forwarding_to_family() -> None:
    def trip(d: int) -> Day:
        if 60 <= d < 67:
            return Day(out_calls=0.4, in_calls=3, forward_to=TELECOM_FAMILY,
                       forward_share=0.8, cell="R10001")
        return Day()

    engine, alerts = World(crowd(traveller=trip)).run()
    assert alerts == []
    assert engine.counters["away_days"] >= 5


def test_no_alert_on_a_sparse_user() -> None:
    def sparse(d: int) -> Day:
        return Day(out_calls=0.3, in_calls=0.3, charge=18 / 30, topup=30.0 if d % 45 == 0 else 0)

    _, alerts = World(crowd(sparse=sparse)).run()
    assert alerts == []


def test_no_alert_on_a_new_subscriber_in_warm_up() -> None:
    def joiner(d: int) -> Day:
        if d < 80:
            return Day(active=False)
        ramp = min(1.0, 0.3 + 0.7 * (d - 80) / 14)
        return Day(out_calls=5 * ramp, in_calls=4 * ramp)

    engine, alerts = World(crowd(joiner=joiner)).run()
    assert opened(alerts, "joiner") == []
    assert engine.subscribers["joiner"]["m"].age < 31


def test_no_alert_on_a_habitual_on_net_forwarder() -> None:
    def habit(d: int) -> Day:
        return Day(in_calls=8, forward_to=ONNET_COLLEAGUE, forward_share=0.5)

    def habit_off_net(d: int) -> Day:
        return Day(in_calls=8, forward_to=UNICOM, forward_share=0.4)

    _, alerts = World(crowd(habit=habit, offnet_habit=habit_off_net)).run()
    assert alerts == []


def test_a_habit_of_forwarding_to_one_number_is_not_alerted_on_its_busy_days() -> None:
    # About 15% of incoming calls forwarded to one number on another operator (a partner's
    # line): under the habit share, so the model still watches forwarding off-net. Two
    # days on which that number takes most calls are the habit's, not a switch; the same
    # days forwarded to a number never forwarded to before are (forwarding.see_target).
    def habit(d: int) -> Day:
        return Day(in_calls=6, forward_to=UNICOM, forward_share=0.8 if d in (80, 81) else 0.15)

    def switch_after_habit(d: int) -> Day:
        if d in (80, 81):
            return Day(in_calls=6, forward_to=TELECOM_FAMILY, forward_share=0.8)
        return habit(d)

    engine, alerts = World(crowd(habit=habit, switch=switch_after_habit)).run()
    assert opened(alerts, "habit") == []
    assert ("open", "red") in {(s, z) for _, s, z in opened(alerts, "switch")}
    assert engine.subscribers["habit"]["m"].fwd_target_days >= 3
    assert engine.subscribers["habit"]["m"].fwd_usual_new_off < 0.2


def test_a_switch_that_begins_with_a_few_calls_forwarded_is_not_taken_for_a_habit() -> None:
    # Five days with a call or two forwarded to a competitor's number (no evidence, each),
    # then most: that number is no habit's after days, and the switch's evidence forgets
    # it (forwarding.is_habit_target), so the episode runs to the port-out.
    def switching(d: int) -> Day:
        if d < 70:
            return Day(in_calls=8)
        return Day(in_calls=8, forward_to=UNICOM, forward_share=0.15 if d < 75 else 0.9)

    engine, alerts = World(crowd(churner=switching)).run()
    assert [(s, z) for _, s, z in opened(alerts, "churner")] == [
        ("open", "yellow"), ("escalated", "red")]
    assert engine.subscribers["churner"]["m"].habit_target == [-1, 0, 0]


def test_overwhelming_first_day_of_forwarding_opens_red_at_the_close() -> None:
    # A quiet subscriber (about 2 incoming calls a day) forwards all of them to a number
    # on another operator: never 4 calls in one day to judge intra-day, but the first
    # day's close already sees all of them forwarded, so the episode opens at red rather
    # than yellow followed by red the next day (detectors-1.2).
    def switching(d: int) -> Day:
        if d < 70:
            return Day(out_calls=3, in_calls=2.5)
        return Day(out_calls=3, in_calls=2.5, forward_to=UNICOM, forward_share=1.0)

    _, alerts = World(crowd(churner=switching)).run()
    mine = opened(alerts, "churner")
    assert mine[0] == ("2026-03-17", "open", "red")  # the close of 03-16, the switch day
    assert not any(zone == "yellow" for _, _, zone in mine)
    assert alerts[0]["reasons"][0]["code"] == "forwarding_off_net"


# --------------------------------------------------------------------------------------
# Stays away judged by their shape (no cell change: the feed's cell is constant)
# --------------------------------------------------------------------------------------


def _away_at_home(first: int, last: int, plan_cut_day: int | None = None,
                  usual: float = 10.0) -> Script:
    """Outgoing calls collapse on ``first`` from ``usual`` a day and incoming calls go to a
    number on another operator until ``last`` (exclusive), with every call from the home
    cell. Ten calls a day unless ``usual`` says otherwise."""
    def script(d: int) -> Day:
        if first <= d < last:
            cut = (128.0, 8.0) if d == plan_cut_day else None
            return Day(out_calls=0.3, in_calls=4, forward_to=TELECOM_FAMILY, forward_share=0.8,
                       plan_change=cut)
        return Day(out_calls=usual)
    return script


def test_a_fortnights_trip_at_home_forwarding_off_net_is_yellow_until_it_ends() -> None:
    # Held as a possible absence from its second day (the first forwarding with evidence):
    # yellow, said plainly; its days stay out of the usage and spend windows, so nothing
    # fires after the return (03-20), and seven calm days after it the episode resolves.
    engine, alerts = World(crowd(traveller=_away_at_home(60, 74))).run()
    assert opened(alerts, "traveller") == [
        ("2026-03-08", "open", "yellow"), ("2026-03-27", "resolved", "blue")]
    reason = alerts[0]["reasons"][0]
    assert reason["code"] == "forwarding_off_net"
    assert "while the line is quiet" in reason["summary"]
    assert "may be a trip" in reason["summary"]
    assert reason["figures"]["absence"]["verdict"] == ""
    assert engine.counters["absences"] >= 1 and engine.counters["absences_ended"] >= 1
    assert "t" not in engine.subscribers["traveller"]  # back: the stay away is over


def test_the_day_back_from_a_trip_forwarding_off_net_is_not_red_when_nobody_calls() -> None:
    # The same trip, but nobody calls on the day back (03-16): no incoming call ends the
    # forwarding's streak, and once the stay away ended the streak carried from the trip
    # made the forwarding red that evening. The streak was the trip's, and goes with it.
    away = _away_at_home(60, 70)

    def traveller(d: int) -> Day:
        if d == 70:
            return Day(out_calls=10.0, in_calls=0.0)
        return away(d)

    _, alerts = World(crowd(traveller=traveller)).run()
    mine = opened(alerts, "traveller")
    assert mine[0] == ("2026-03-08", "open", "yellow")
    assert not any(zone == "red" for _, _, zone in mine), mine


def test_a_fortnights_trip_at_home_of_a_subscriber_who_calls_little_is_yellow() -> None:
    # Four calls a day: a day or two without any could be chance (Poisson), yet with calls
    # forwarded off-net the collapse is held from its first day, as a trip's is; waiting
    # until it is beyond chance alerted every such trip red on its first forwarding day,
    # and at a holiday, when everyone calls less, the trips of all but the busiest.
    engine, alerts = World(crowd(traveller=_away_at_home(60, 74, usual=4.0))).run()
    assert opened(alerts, "traveller") == [
        ("2026-03-07", "open", "yellow"), ("2026-03-28", "resolved", "blue")]
    assert engine.counters["absences"] >= 1 and engine.counters["absences_ended"] >= 1
    assert "t" not in engine.subscribers["traveller"]


def test_a_trip_whose_first_day_is_half_at_home_is_yellow_from_its_first_day() -> None:
    # A trip begins in the afternoon: its first day keeps 4 of the usual 10 outgoing calls
    # while the incoming ones already go to a number on another operator. That day's
    # close begins the stay away (forwarding, outgoing below half of usual): "may be a
    # trip", yellow, where the forwarding alone was red on the first day and a false alarm
    # for every such trip of a feed without location.
    away = _away_at_home(61, 74)

    def traveller(d: int) -> Day:
        if d == 60:
            return Day(out_calls=4, in_calls=4, forward_to=TELECOM_FAMILY, forward_share=0.8)
        return away(d)

    _, alerts = World(crowd(traveller=traveller)).run()
    mine = opened(alerts, "traveller")
    assert mine[0] == ("2026-03-07", "open", "yellow")  # the close of 03-06
    assert not any(zone == "red" for _, _, zone in mine)
    reason = alerts[0]["reasons"][0]
    assert "may be a trip" in reason["summary"]


def test_a_trip_whose_incoming_calls_do_not_quite_collapse_stays_yellow() -> None:
    # Ten days away with no forwarding; callers still reach the traveller now and then
    # (30% of the usual incoming calls, above the quarter a stay away needs to be
    # confirmed without forwarding). While it may be an absence the usage drop is a
    # warning at most (it was red on its sixth day); back at the old level at once, its
    # days leave the windows, so nothing fires after the return and the episode resolves.
    def traveller(d: int) -> Day:
        if 60 <= d < 70:
            return Day(out_calls=0.3, in_calls=1.2)
        return Day(out_calls=10.0, in_calls=4.0)

    engine, alerts = World(crowd(traveller=traveller)).run()
    assert opened(alerts, "traveller") == [
        ("2026-03-10", "open", "yellow"), ("2026-03-23", "resolved", "blue")]
    assert alerts[0]["reasons"][0]["code"] == "usage_drop"
    assert engine.counters["absences_returned"] == 1


def test_a_trip_forwarding_to_a_number_on_our_network_is_an_absence() -> None:
    # Ten days away, incoming calls forwarded to a colleague on this operator's network
    # (nothing off-net, no cell change). The forwarded calls did not reach the phone: the
    # incoming calls collapsed with the outgoing ones, so the stay away is confirmed and
    # held, its days leave the windows, and nothing fires, during the trip or after it.
    # Counted as arrived, they kept it unconfirmed: a yellow usage drop during the trip.
    def traveller(d: int) -> Day:
        if 60 <= d < 70:
            return Day(out_calls=0.3, in_calls=4.0, forward_to=ONNET_COLLEAGUE,
                       forward_share=0.9)
        return Day(out_calls=10.0, in_calls=4.0)

    engine, alerts = World(crowd(traveller=traveller)).run()
    assert opened(alerts, "traveller") == []
    assert engine.counters["absences"] >= 1 and engine.counters["absences_ended"] >= 1


def test_a_stay_away_past_a_trip_is_red() -> None:
    _, alerts = World(crowd(gone=_away_at_home(60, 110))).run()
    mine = [a for a in alerts if a["subscriber_id"] == "gone"]
    assert [(a["ts"][:10], a["status"], a["zone"]) for a in mine] == [
        ("2026-03-08", "open", "yellow"),  # a possible absence
        ("2026-03-28", "escalated", "red")]  # the close of 03-27, the 22nd day from 03-06
    stay = next(r for r in mine[1]["reasons"] if r["code"] == "stay_away")
    assert stay["figures"]["verdict"] == "persisted"
    assert "longer than a trip (21 days)" in stay["summary"]


def test_a_stay_away_with_a_plan_cut_is_red() -> None:
    _, alerts = World(crowd(cutter=_away_at_home(60, 110, plan_cut_day=64))).run()
    mine = [a for a in alerts if a["subscriber_id"] == "cutter"]
    assert [(a["ts"][:10], a["status"], a["zone"]) for a in mine][:2] == [
        ("2026-03-08", "open", "yellow"),
        ("2026-03-11", "escalated", "red")]  # the close of 03-10, the day of the cut
    stay = next(r for r in mine[1]["reasons"] if r["code"] == "stay_away")
    assert stay["figures"]["verdict"] == "plan_cut"



def _forwarding_while_here(first: int, to: str) -> Script:
    """Calls as usual (ten a day out) while incoming calls go to ``to`` from ``first``:
    alerted for its forwarding, never a stay away."""
    def script(d: int) -> Day:
        if d >= first:
            return Day(out_calls=10, in_calls=4, forward_to=to, forward_share=0.8)
        return Day(out_calls=10)
    return script


def test_a_stay_away_is_red_when_a_group_member_alerted_forwards_to_the_same_operator():
    # The co-member is not in a stay away (its calls go on), only alerted for forwarding
    # to China Telecom from 03-03; the member's stay away, forwarding to another China
    # Telecom number from 03-06, is the group moving, not a trip: red once confirmed.
    group = {"group_id": "G1", "account_id": "AC-G1"}
    scripts = crowd(away=_away_at_home(60, 74),
                    colleague=_forwarding_while_here(57, "18900000001"))
    _, alerts = World(scripts, profiles={"away": group, "colleague": group}).run()
    assert opened(alerts, "colleague")[0][1:] == ("open", "red")
    mine = [a for a in alerts if a["subscriber_id"] == "away"]
    assert [(a["ts"][:10], a["status"], a["zone"]) for a in mine][:1] == [
        ("2026-03-07", "open", "red")]  # the close of 03-06, its first day
    stay = next(r for r in mine[0]["reasons"] if r["code"] == "stay_away")
    assert stay["figures"]["verdict"] == "group"
    assert "other members of group G1 do the same" in stay["summary"]


def test_a_stay_away_holds_when_a_group_member_forwards_to_another_operator():
    group = {"group_id": "G1", "account_id": "AC-G1"}
    scripts = crowd(away=_away_at_home(60, 74), colleague=_forwarding_while_here(57, UNICOM))
    _, alerts = World(scripts, profiles={"away": group, "colleague": group}).run()
    assert opened(alerts, "colleague")[0][1:] == ("open", "red")
    assert opened(alerts, "away") == [  # a possible absence: yellow, never red
        ("2026-03-07", "open", "yellow"), ("2026-03-27", "resolved", "blue")]


def test_a_stay_away_is_red_when_a_member_of_its_account_forwards_to_the_same_operator():
    # No group: the account is the circle (a family's lines, say).
    account = {"account_id": "AC-FAMILY"}
    scripts = crowd(away=_away_at_home(60, 74),
                    partner=_forwarding_while_here(57, "18900000001"))
    _, alerts = World(scripts, profiles={"away": account, "partner": account}).run()
    mine = [a for a in alerts if a["subscriber_id"] == "away"]
    stay = next(r for r in mine[0]["reasons"] if r["code"] == "stay_away")
    assert stay["figures"]["verdict"] == "group"
    assert "other members of account AC-FAMILY do the same" in stay["summary"]


def test_a_fortnights_trip_at_home_without_forwarding_raises_nothing() -> None:
    # Both directions collapse (no forwarding): held as a possible absence, silent.
    def quiet_trip(d: int) -> Day:
        return Day(out_calls=0.3, in_calls=0.3) if 60 <= d < 74 else Day(out_calls=10)

    engine, alerts = World(crowd(traveller=quiet_trip)).run()
    assert opened(alerts, "traveller") == []
    assert engine.counters["absences"] >= 1 and engine.counters["absences_ended"] >= 1


def test_the_forwarding_of_a_circle_that_stopped_is_swept() -> None:
    # The co-member forwards from 03-03 to the end; the stay-away member from 03-06 to
    # 03-19. Their group's entry stays while someone forwards, and goes once nobody has
    # for twice a trip's length (a 10-day trip here: 20 days).
    group = {"group_id": "G1", "account_id": "AC-G1"}

    def until(last: int, script: Script) -> Script:
        return lambda d: script(d) if d < last else Day(out_calls=10)

    scripts = crowd(away=_away_at_home(60, 74),
                    colleague=until(80, _forwarding_while_here(57, "18900000001")))
    engine, _ = World(scripts, profiles={"away": group, "colleague": group}).run(
        EngineConfig(trip_days=10))
    assert engine.counters["circles_swept"] == 1
    assert not [k for k in engine.population.store if k.startswith("~g/")]
    engine, _ = World(scripts, days=95, profiles={"away": group, "colleague": group}).run(
        EngineConfig(trip_days=10))
    assert engine.counters["circles_swept"] == 0
    assert "~g/group G1" in engine.population.store


def test_forwarding_held_back_for_a_possible_stay_away_counts_at_the_close() -> None:
    # Two quiet days (one call out a day, incoming calls as usual) begin a possible stay
    # away. On 03-16 every incoming call is forwarded to a China Unicom number, seen from
    # home (a call out from home at 07:00): overwhelming, but held back for the stay away's
    # judgement at the close. A call from another cell at 23:00 makes the day mostly away
    # by cells (two located calls, one elsewhere); the held-back evidence counts all the
    # same, and the episode opens at the close (dropped, it waited a day longer): yellow,
    # as three days at a third of usual with calls forwarded off-net may be a trip's
    # start; red the next day, when three calls out of four usual show the subscriber here.
    def switching(d: int) -> Day:
        if d in (68, 69):
            return Day(out_calls=0)
        if d == 70:
            return Day(out_calls=0, in_calls=8, forward_to=UNICOM, forward_share=1.0)
        if d > 70:
            return Day(out_calls=3, in_calls=1.5, forward_to=UNICOM, forward_share=1.0)
        return Day()

    def calls_out(day: int, *at: tuple[str, str]) -> list[tuple[str, dict[str, Any]]]:
        date_ = (START + timedelta(days=day)).isoformat()
        return [("calls", {
            "event_id": f"x{day}-{k}", "ts": f"{date_}T{clock}+08:00", "subscriber_id": "churner",
            "direction": "out", "other_party": f"1390000{k:04d}", "duration_s": 60,
            "charge": 0.2, "forwarded_to": None, "cell_id": cell}) for k, (clock, cell) in
            enumerate(at)]

    world = World(crowd(churner=switching))
    extra = (calls_out(68, ("12:00:00", HOME)) + calls_out(69, ("12:00:00", HOME))
             + calls_out(70, ("07:00:00", HOME), ("23:00:00", "C20002")))
    events = list(world.events())
    timed = sorted((e for e in events if e[0] != "subscribers"), key=lambda e: e[1]["ts"])
    timed = sorted(timed + extra, key=lambda e: e[1]["ts"])
    engine = Engine(EngineConfig())
    alerts = [a for kind, event in [e for e in events if e[0] == "subscribers"] + timed
              for a in engine.process(kind, event)]
    mine = opened(alerts, "churner")
    assert mine[:2] == [("2026-03-17", "open", "yellow"),  # the close of 03-16
                        ("2026-03-18", "escalated", "red")]
    first = next(a for a in alerts if a["subscriber_id"] == "churner")
    assert first["reasons"][0]["code"] == "forwarding_off_net"


# --------------------------------------------------------------------------------------
# A line's first weeks: too little history to tell a trip from a switch
# --------------------------------------------------------------------------------------


def _trip_from(first: int, last: int, to: str) -> Script:
    """A week away with incoming calls forwarded off-net to ``to``; quiet, then back."""
    def script(d: int) -> Day:
        if first <= d <= last:
            return Day(out_calls=0.3, in_calls=4, forward_to=to, forward_share=0.9)
        return Day()
    return script


def test_forwarding_off_net_in_a_line_s_first_weeks_is_yellow_it_may_be_a_trip() -> None:
    # Everyone's history begins on day 0, as in a deployment's first weeks: a stay away
    # cannot be recognised before four weeks (warmup_days), so forwarding off-net begun
    # on day 16 may be a trip: a warning, not a call within the day; it resolves after
    # the return.
    _, alerts = World(crowd(away=_trip_from(16, 22, UNICOM)), days=45).run()
    assert [z for _, _, z in opened(alerts, "away")] == ["yellow", "blue"]
    reason = next(a for a in alerts if a["subscriber_id"] == "away")["reasons"][0]
    assert reason["code"] == "forwarding_off_net"
    assert ("it began when this line was known for 16 days, too few to tell a trip from a "
            "switch: it may be a trip (red if it runs past 21 days)") in reason["summary"]


def test_a_switch_begun_in_a_line_s_first_weeks_goes_red_once_it_outlasts_a_trip() -> None:
    # Forwarding from day 16 (a noisy day breaks its run on day 25): yellow, then red once
    # it has run past a trip's 21 days, as a stay away that persists.
    _, alerts = World(crowd(churner=_forwarding_while_here(16, UNICOM)), days=60).run()
    mine = [a for a in alerts if a["subscriber_id"] == "churner"]
    assert [(a["status"], a["zone"]) for a in mine] == [("open", "yellow"), ("escalated", "red")]
    assert mine[1]["ts"][:10] > (START + timedelta(days=16 + 21)).isoformat()
    assert "(21 days running)" in mine[1]["reasons"][0]["summary"]


def test_a_group_moving_in_its_first_weeks_is_red() -> None:
    # A co-member forwarding to the same operator before it: a group moving, not a trip.
    group = {"group_id": "G1", "account_id": "AC-G1"}
    scripts = crowd(away=_trip_from(18, 40, "18900000001"),
                    colleague=_forwarding_while_here(15, "18900000002"))
    _, alerts = World(scripts, days=45, profiles={"away": group, "colleague": group}).run()
    assert opened(alerts, "colleague")[0][1:] == ("open", "yellow")
    assert opened(alerts, "away")[0][1:] == ("open", "red")
