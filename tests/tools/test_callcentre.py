"""The simulated call centre, the outcome contract, and the offline learning loop."""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from detectors.calibration import OUTCOMES, OutcomeLearner, RiskCalibrator
from stream.tools.callcentre import (
    CallCentre,
    ContactCentre,
    contact_experiment,
    learning_experiment,
    outcome_stream,
    period_metrics,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "stream" / "contracts" / "schemas"
TZ = "+08:00"


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return loaded


def _alert(i: int, sid: str, ts: str, status: str = "open") -> dict[str, Any]:
    return {"alert_id": f"{i:016x}", "kind": "subscriber", "status": status,
            "subscriber_id": sid, "ts": ts, "zone": "red", "risk_score": 0.8}


def test_outcome_schema_in_the_house_style() -> None:
    schema, alert = _schema("outcome"), _schema("alert")
    assert schema["$schema"] == alert["$schema"]
    assert schema["$id"].endswith("/outcome.schema.json")
    assert schema["x-schema-version"] == 1 and schema["title"].startswith("churn.outcomes")
    assert schema["properties"]["outcome"]["enum"] == list(OUTCOMES)
    assert schema["properties"]["ts"]["pattern"] == alert["properties"]["ts"]["pattern"]
    check = fastjsonschema.compile(schema)
    good = {"alert_id": "a1f3c09e5b7d2e44", "subscriber_id": "s-00042",
            "ts": f"2026-03-03T10:12:00{TZ}", "outcome": "retained",
            "note": "offered a family plan", "extra": 1}
    check(good)
    for bad in ({**good, "outcome": "maybe"}, {**good, "ts": "2026-03-03T10:12:00"},
                {k: v for k, v in good.items() if k != "alert_id"},
                {**good, "alert_id": "short"}, {**good, "schema_version": 2}):
        with pytest.raises(fastjsonschema.JsonSchemaException):
            check(bad)


def _truth(n: int, churn_share: float, seed: int) -> dict[str, dict[str, Any]]:
    rng = random.Random(seed)
    truth = {}
    for i in range(n):
        churn = rng.random() < churn_share
        out = f"2026-03-{rng.randint(10, 28)}T12:00:00{TZ}" if churn and rng.random() < 0.8 \
            else None
        truth[f"s{i}"] = {"churn": churn, "port_out_ts": out}
    return truth


def test_outcomes_follow_the_truth_and_the_rates() -> None:
    truth = _truth(3000, 0.5, seed=1)
    alerts = [_alert(i, f"s{i}", f"2026-03-01T09:00:00{TZ}") for i in range(3000)]
    centre = CallCentre(seed=5, unreachable=0.6, no_answer=0.1, retained=0.3, denial=0.0)
    outcomes = outcome_stream(centre, alerts, truth)
    validate = fastjsonschema.compile(_schema("outcome"))
    for o in outcomes:
        validate(o)
    by = Counter(o["outcome"] for o in outcomes)
    assert 0.56 < by["unreachable"] / 3000 < 0.64 and 0.08 < by["no_answer"] / 3000 < 0.12
    for o in outcomes:
        t = truth[o["subscriber_id"]]
        if o["outcome"] in ("retained", "churned"):
            assert t["churn"]
        if o["outcome"] == "not_at_risk":
            assert not t["churn"]  # no denial here
        if o["outcome"] == "churned":
            assert o["ts"] > t["port_out_ts"]
        assert o["ts"] > f"2026-03-01T09:00:00{TZ}"
    # Event-time order, as the learner needs it.
    times = [datetime.fromisoformat(o["ts"]) for o in outcomes]
    assert times == sorted(times)
    # Reached churners: about 30% retained, the rest reported once they port out.
    reached = by["retained"] + by["churned"]
    assert 0.25 < by["retained"] / reached < 0.42


def test_each_answer_depends_on_its_alert_only() -> None:
    truth = _truth(200, 0.3, seed=2)
    alerts = [_alert(i, f"s{i}", f"2026-03-01T09:00:00{TZ}") for i in range(200)]
    centre = CallCentre(seed=11)
    whole = outcome_stream(centre, alerts, truth)
    half = outcome_stream(centre, alerts[::2], truth)
    assert {o["alert_id"]: o for o in half}.items() <= {o["alert_id"]: o for o in whole}.items()
    assert outcome_stream(CallCentre(seed=11), alerts, truth) == whole
    assert outcome_stream(CallCentre(seed=12), alerts, truth) != whole


def test_a_number_already_gone_is_churned_at_the_call() -> None:
    truth = {"s1": {"churn": True, "port_out_ts": f"2026-03-01T10:00:00{TZ}"}}
    centre = CallCentre(seed=1, unreachable=1.0, delay_hours=(5.0, 6.0))
    [o] = centre.answer(_alert(1, "s1", f"2026-03-01T08:00:00{TZ}"), truth)
    assert o["outcome"] == "churned" and o["ts"].startswith("2026-03-01T13:")
    assert centre.answer(_alert(2, "s1", f"2026-03-01T08:00:00{TZ}", "resolved"), truth) == []
    assert centre.answer(_alert(3, "nobody", f"2026-03-01T08:00:00{TZ}"), truth) == []


def test_period_metrics_by_hand() -> None:
    truth = {"a": {"churn": True, "port_out_ts": f"2026-01-25T00:00:00{TZ}"},
             "b": {"churn": False, "port_out_ts": None},
             "c": {"churn": True, "port_out_ts": f"2026-01-28T00:00:00{TZ}"}}
    start = datetime.fromisoformat(f"2026-01-01T00:00:00{TZ}")
    alerts = [_alert(1, "a", f"2026-01-05T00:00:00{TZ}"),     # 20 d before port-out
              _alert(2, "b", f"2026-01-06T00:00:00{TZ}"),     # false
              _alert(3, "c", f"2026-01-25T00:00:00{TZ}"),     # 3 d before: no recall@7d
              {**_alert(4, "b", f"2026-01-26T00:00:00{TZ}"), "zone": "yellow"}]
    got = period_metrics(truth, alerts, frozenset({"red", "white"}), start,
                         start + timedelta(days=30), periods=2)
    assert [(p["alerted"], p["true"], p["leavers"], p["found_7d"]) for p in got] == \
        [(2, 1, 0, 0), (1, 1, 2, 1)]
    assert got[1]["precision"] == 1.0 and got[1]["recall_7d"] == 0.5


def test_learning_experiment_on_a_simulated_world(tmp_path: Path) -> None:
    """A small simulated world with hand-made alerts: churners' alerts lead with
    forwarding, non-churners' with a usage drop, all at the same raw score; by the end the
    learner has separated them, and every outcome is accounted for."""
    from stream.tools.simulator import WorldParams, simulate

    simulate(tmp_path, WorldParams(subscribers=400, days=90, seed=4))
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    start = datetime.fromisoformat(json.loads((tmp_path / "world.json").read_text())["start"])
    rng = random.Random(4)
    alerts = []
    for i, t in enumerate(truth):
        if not t["churn"] and rng.random() > 0.5:
            continue
        day = rng.uniform(5, 80)
        if t.get("port_out_ts"):
            gone = datetime.fromisoformat(t["port_out_ts"])
            day = min(day, (gone - start).total_seconds() / 86400 - 8)
        ts = (start + timedelta(days=max(1.0, day))).isoformat()
        code = "forwarding_off_net" if t["churn"] else "usage_drop"
        alerts.append({**_alert(i, t["subscriber_id"], ts), "segment": t["segment"],
                       "tier": t["tier"], "group_id": t["group_id"], "value_at_risk": 80.0,
                       "reasons": [{"code": code, "summary": "-", "figures": {}}]})
    alerts.sort(key=lambda a: a["ts"])
    result = learning_experiment(
        tmp_path, alerts, centre=CallCentre(seed=4),
        make_learner=lambda: OutcomeLearner(RiskCalibrator(warmup=20, min_class=3)))
    assert sum(result["outcomes"].values()) <= result["calls"] == len(alerts)
    learner = result["learner"]
    assert learner["alerts_calibrated"] > 0
    # Every outcome names a known alert; those dated past the alert's 60-day horizon (a
    # port-out reported that late) find it forgotten, as they should.
    when = {a["alert_id"]: datetime.fromisoformat(a["ts"]) for a in alerts}
    stale = sum(1 for o in outcome_stream(CallCentre(seed=4), alerts, {
        t["subscriber_id"]: t for t in truth})
        if datetime.fromisoformat(o["ts"]) - when[o["alert_id"]] >= timedelta(days=60))
    assert learner.get("outcomes_unknown_alert", 0) == stale
    late = [a for a in result["alerts"][-60:] if "calibration_version" in a]
    usage = [a["risk_score"] for a in late if a["reasons"][0]["code"] == "usage_drop"]
    fwd = [a["risk_score"] for a in late if a["reasons"][0]["code"] == "forwarding_off_net"]
    assert usage and fwd and max(usage) < min(fwd)
    for level in ("yellow+", "red+"):
        assert len(result["raw"][level]) == len(result["calibrated"][level]) == 3


def test_outcome_example_in_the_docs_validates() -> None:
    import re

    doc = (SCHEMAS.parents[2] / "docs" / "outcomes.md").read_text()
    found = re.search(r"<!-- example: outcome -->\s*```json\n(.*?)```", doc, re.S)
    assert found is not None
    fastjsonschema.compile(_schema("outcome"))(json.loads(found.group(1)))


def _work(sid: str, value: float, ts: str, windows: list[dict[str, Any]] | None = None,
          share: float = 0.9) -> dict[str, Any]:
    return {"alert_id": f"a-{sid}", "kind": "subscriber", "status": "open",
            "subscriber_id": sid, "zone": "red", "risk_score": 0.8, "value_at_risk": value,
            "ts": ts, "contact": None if windows is None else {
                "answered_share": share, "windows": windows}}


def test_contact_centre_honours_capacity_windows_and_order() -> None:
    evenings = [{"weekdays": [1, 2, 3, 4, 5], "start": "18:00", "end": "21:00"}]
    saturday = [{"weekdays": [6], "start": "09:00", "end": "12:00"}]
    truth = {f"s{i}": {"churn": True, "port_out_ts": None, "monthly_fee": 10.0 * (i + 1),
                       "answers": {"weekdays": [18, 19, 20], "weekend": [9, 10, 11],
                                   "share": [1.0, 0.0]}} for i in range(6)}
    # Opened on Monday 2 March, the smaller values first: first come calls them first.
    alerts = [_work(f"s{i}", 10.0 * (i + 1), f"2026-03-02T0{i}:00:00{TZ}",
                    saturday if i == 0 else evenings) for i in range(6)]
    start = datetime.fromisoformat(f"2026-03-03T00:00:00{TZ}")  # Tuesday
    end = start + timedelta(days=5)
    centre = ContactCentre(seed=1, retained=1.0)
    advised = centre.run(alerts, truth, start, end, capacity=2, timing="advised")
    # Two calls a day; every call in a window (the subscribers answer only there): all
    # reached, s0 on Saturday, the others on weekday evenings.
    assert advised["calls"] == 6 and advised["unreached"] == 0
    assert advised["in_window"] == 6 and advised["waited"] > 0
    assert advised["retained"] == 6
    random_ = centre.run(alerts, truth, start, end, capacity=2, timing="random")
    assert random_["unreached"] > 0 and random_["in_window"] == 0
    # One call a day for three days: the queue takes the most valuable, first come the
    # oldest (each reached at once in its window).
    short = start + timedelta(days=3)
    queue = centre.run(alerts, truth, start, short, capacity=1, timing="advised")
    first = centre.run(alerts, truth, start, short, capacity=1, order="first_come",
                       timing="advised")
    assert queue["value_retained"] == 60.0 + 50.0 + 40.0
    assert first["value_retained"] == 20.0 + 30.0 + 40.0  # s0 waits for its Saturday


def test_contact_centre_counts_the_value_reached_and_the_work_a_day() -> None:
    evenings = [{"weekdays": [1, 2, 3, 4, 5], "start": "18:00", "end": "21:00"}]
    truth = {f"s{i}": {"churn": i != 2, "port_out_ts": None, "monthly_fee": 10.0 * (i + 1),
                       "answers": {"weekdays": [18, 19, 20], "weekend": [],
                                   "share": [1.0, 0.0]}} for i in range(3)}
    alerts = [_work(f"s{i}", 10.0 * (i + 1), f"2026-03-02T0{i}:00:00{TZ}", evenings)
              for i in range(3)]
    start = datetime.fromisoformat(f"2026-03-03T00:00:00{TZ}")  # Tuesday
    # Nobody kept (retained 0): the churners reached still count in value_reached.
    run = ContactCentre(seed=1, retained=0.0).run(
        alerts, truth, start, start + timedelta(days=4), capacity=1, timing="advised")
    assert run["reached"] == 3 and run["value_retained"] == 0.0
    assert run["value_reached"] == 10.0 + 20.0  # s2 is not a churner
    # Three open on Tuesday, then two, one, none: one call a day.
    assert run["open_per_day"] == (3 + 2 + 1 + 0) / 4 == run["callable_per_day"]
    # More callable items than calls on Tuesday and Wednesday only: the order's two days.
    assert (run["full_days"], run["days"]) == (2, 4)
    wide = ContactCentre(seed=1, retained=0.0).run(
        alerts, truth, start, start + timedelta(days=4), capacity=3, timing="advised")
    assert wide["full_days"] == 0


def test_an_episode_worked_to_the_end_is_not_called_again_on_its_escalation() -> None:
    # Opened yellow on Monday and reached on Tuesday evening; the same episode escalates
    # red on Wednesday at 01:00. The subscriber was reached: one call, one retention draw
    # per episode. Only a new episode, after a resolution, is work again.
    evenings = [{"weekdays": [1, 2, 3, 4, 5], "start": "18:00", "end": "21:00"}]
    truth = {"s1": {"churn": True, "port_out_ts": None, "monthly_fee": 50.0,
                    "answers": {"weekdays": [18, 19, 20], "weekend": [],
                                "share": [1.0, 0.0]}}}
    opened = _work("s1", 50.0, f"2026-03-02T01:00:00{TZ}", evenings)
    escalated = {**opened, "alert_id": "a-s1-red", "status": "escalated",
                 "ts": f"2026-03-04T01:00:00{TZ}"}
    start = datetime.fromisoformat(f"2026-03-03T00:00:00{TZ}")  # Tuesday
    end = start + timedelta(days=4)
    centre = ContactCentre(seed=1, retained=1.0)
    run = centre.run([opened, escalated], truth, start, end, capacity=5, timing="advised")
    assert run["calls"] == 1 and run["reached"] == 1 and run["value_retained"] == 50.0
    resolved = {**opened, "alert_id": "a-s1-blue", "status": "resolved",
                "ts": f"2026-03-04T02:00:00{TZ}"}
    reopened = {**opened, "alert_id": "a-s1-again", "ts": f"2026-03-05T01:00:00{TZ}"}
    run = centre.run([opened, escalated, resolved, reopened], truth, start, end,
                     capacity=5, timing="advised")
    assert run["calls"] == 2 and run["reached"] == 2


def test_the_night_s_alerts_are_called_the_same_day() -> None:
    # Opened at the day close (01:00) on Tuesday; the centre opens at 09:00 and the
    # subscriber answers on weekday evenings: reached on Tuesday, before a port-out on
    # Wednesday morning. An alert during working hours waits for the next day's list.
    evenings = [{"weekdays": [1, 2, 3, 4, 5], "start": "18:00", "end": "21:00"}]
    truth = {sid: {"churn": True, "port_out_ts": f"2026-03-04T08:00:00{TZ}",
                   "monthly_fee": 50.0, "answers": {"weekdays": [18, 19, 20], "weekend": [],
                                                    "share": [1.0, 0.0]}}
             for sid in ("night", "noon")}
    alerts = [_work("night", 50.0, f"2026-03-03T01:00:00{TZ}", evenings),
              _work("noon", 50.0, f"2026-03-03T12:00:00{TZ}", evenings)]
    start = datetime.fromisoformat(f"2026-03-03T00:00:00{TZ}")  # Tuesday
    run = ContactCentre(seed=1, retained=1.0).run(
        alerts, truth, start, start + timedelta(days=2), capacity=5, timing="advised")
    assert run["reached"] == 1 and run["value_retained"] == 50.0
    assert run["gone"] == 1  # "noon", called on Wednesday evening: ported out that morning


def test_contact_experiment_averages_runs_with_distinct_seeds(tmp_path: Path) -> None:
    # Six churners answering half their calls in their window: which runs reach whom, and
    # keep whom, turns on the seed.
    evenings = [{"weekdays": [1, 2, 3, 4, 5], "start": "18:00", "end": "21:00"}]
    truth = [{"subscriber_id": f"s{i}", "churn": True, "port_out_ts": None,
              "monthly_fee": 10.0 * (i + 1),
              "answers": {"weekdays": [18, 19, 20], "weekend": [], "share": [0.5, 0.1]}}
             for i in range(6)]
    (tmp_path / "truth.jsonl").write_text("".join(json.dumps(t) + "\n" for t in truth))
    start = datetime.fromisoformat(f"2026-03-03T00:00:00{TZ}")
    end = start + timedelta(days=6)
    (tmp_path / "world.json").write_text(json.dumps({"start": start.isoformat(),
                                                      "end": end.isoformat()}))
    alerts = [_work(f"s{i}", 10.0 * (i + 1), f"2026-03-02T0{i}:00:00{TZ}", evenings)
              for i in range(6)]
    report = contact_experiment(tmp_path, alerts, capacities=(1, 2), seed=5, runs=4)
    assert report["runs"] == 4 and report["seeds"] == [5, 8]
    by_truth = {t["subscriber_id"]: t for t in truth}
    for row in report["order"]:
        paired = {}
        for order in ("queue", "first_come"):
            runs = [ContactCentre(seed=seed).run(alerts, by_truth, start, end,
                                                 capacity=row["capacity"], order=order)
                    for seed in range(5, 9)]
            values = paired[order] = [r["value_retained"] for r in runs]
            assert len(set(values)) > 1  # the seeds differ, so the mean means something
            assert row[order]["value_retained"] == pytest.approx(sum(values) / 4, abs=0.01)
            calls = sum(r["calls"] for r in runs)
            assert row[order]["unreachable_share"] == pytest.approx(
                sum(r["unreached"] for r in runs) / calls, abs=1e-4)
        assert 0 <= row["queue_ahead"] + row["same"] <= 4
        # The paired difference, run by run, and its standard error.
        diffs = [q - f for q, f in zip(paired["queue"], paired["first_come"])]
        assert row["difference"] == pytest.approx(statistics.mean(diffs), abs=0.01)
        assert row["difference_se"] == pytest.approx(statistics.stdev(diffs) / 2, abs=0.01)
    with pytest.raises(ValueError, match="at least 1"):
        contact_experiment(tmp_path, alerts, runs=0)
