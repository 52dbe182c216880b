"""Evaluation metrics, computed exactly on a tiny hand-made world and hand-made alerts."""

from __future__ import annotations

import argparse
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from stream.tools import evaluate as ev
from stream.tools.ceiling import detectability, detectability_summary

TZ = "+08:00"
START = f"2026-01-01T00:00:00{TZ}"
END = f"2026-04-10T00:00:00{TZ}"  # 99 days
SUBSCRIBER_DAYS = 59.5 + 59.5 + 78.5 + 73.5 + 6 * 99  # S1..S4 port out; six stay


def _truth(sid: str, kind: str, port_out: str | None = None, churn_start: int | None = None,
           group: str | None = None, forward_to: str | None = None) -> dict[str, Any]:
    return {"subscriber_id": sid, "kind": kind, "segment": "consumer",
            "churn": kind in ("individual_churn", "group_churn"), "group_id": group,
            "join_ts": None, "churn_start_day": churn_start,
            "port_out_ts": port_out and f"{port_out}T12:00:00{TZ}",
            "forwarding": [{"start_day": 30, "end_day": 59, "to": forward_to, "share": 0.9,
                            "why": "churn", "on_net": False}] if forward_to else []}


def _calls(sid: str, first: date, last: date, per_day: int) -> list[dict[str, Any]]:
    """``per_day`` outgoing calls a day from ``first`` to ``last`` (inclusive)."""
    out = []
    day = first
    while day <= last:
        out.extend({"event_id": f"{sid}{day}{k}", "ts": f"{day}T1{k}:00:00{TZ}",
                    "subscriber_id": sid, "direction": "out", "other_party": "13900000000",
                    "duration_s": 60, "charge": 0.1, "forwarded_to": None, "cell_id": "C1"}
                   for k in range(per_day))
        day += timedelta(days=1)
    return out


def _alert(kind: str, who: str, zone: str, ts: str, status: str = "open") -> dict[str, Any]:
    return {"alert_id": f"{who}-{ts}", "kind": kind, "status": status,
            "subscriber_id": who if kind == "subscriber" else None,
            "group_id": who if kind == "group" else None, "zone": zone, "risk_score": 0.5,
            "value_at_risk": 100.0, "reasons": [], "ts": f"{ts}:00{TZ}"}


def _charges(sid: str, account: str | None, daily: dict[int, float]) -> list[dict[str, Any]]:
    """Daily charges from Jan 1 through Mar 31: ``daily`` maps month -> amount per day."""
    out = []
    day = date(2026, 1, 1)
    while day < date(2026, 4, 1):
        out.append({"event_id": f"{sid}{day}", "ts": f"{day}T23:59:30{TZ}",
                    "subscriber_id": sid, "account_id": account, "kind": "charge",
                    "amount": daily[day.month], "previous_amount": None})
        day += timedelta(days=1)
    return out


@pytest.fixture
def world(tmp_path: Path) -> Path:
    truth = [
        _truth("S1", "individual_churn", "2026-03-01", 30, forward_to="18600000000"),
        _truth("S2", "individual_churn", "2026-03-01", 30),
        _truth("S3", "group_churn", "2026-03-20", 31, group="G1", forward_to="18600000000"),
        _truth("S4", "individual_churn", "2026-03-15", 40),
        _truth("S5", "stable"),
        _truth("S6", "trip"),
        _truth("S7", "plan_downgrade"),
        _truth("S8", "stable", group="G2"),
        _truth("S9", "stable"),
        _truth("S10", "individual_churn", None, 80),  # still leaving when the world ends
    ]
    groups = [
        {"group_id": "G1", "account_id": "A1", "members": ["S3"], "collective": True,
         "defection_ts": f"2026-02-01T00:00:00{TZ}", "half_gone_ts": f"2026-03-20T12:00:00{TZ}"},
        {"group_id": "G2", "account_id": "A2", "members": ["S8"], "collective": False,
         "defection_ts": None, "half_gone_ts": None},
    ]
    summary = {"start": START, "end": END, "params": {"seed": 0},
               "holiday": {"start": f"2026-02-15T00:00:00{TZ}", "end": f"2026-02-22T00:00:00{TZ}"}}
    billing = (_charges("S4", None, {1: 10.0, 2: 6.0, 3: 6.0})  # flagged Mar 1
               + _charges("S7", "A7", {1: 10.0, 2: 10.0, 3: 5.0})  # flagged Apr 1
               + _charges("S9", "A9", {1: 10.0, 2: 8.0, 3: 9.0}))  # never below 70%
    billing.sort(key=lambda e: e["ts"])
    (tmp_path / "truth.jsonl").write_text("".join(json.dumps(t) + "\n" for t in truth))
    (tmp_path / "groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in groups))
    (tmp_path / "world.json").write_text(json.dumps(summary))
    (tmp_path / "billing.jsonl").write_text("".join(json.dumps(b) + "\n" for b in billing))
    # Calls: two stable subscribers set the segment's rhythm; S2 stops calling when its
    # churn starts (day 30: detectable by decay), S4 goes on as before (not detectable);
    # S1 forwards 2 calls to its churn target before port-out minus 7 days (detectable),
    # S3 one (not), and S1's third, on the cutoff day, comes too late to count.
    calls = (_calls("S5", date(2026, 1, 1), date(2026, 4, 9), 4)
             + _calls("S9", date(2026, 1, 1), date(2026, 4, 9), 4)
             + _calls("S2", date(2026, 1, 1), date(2026, 1, 30), 4)
             + _calls("S4", date(2026, 1, 1), date(2026, 3, 14), 4))
    for sid, ts in (("S1", "2026-02-10T09:00:00"), ("S1", "2026-02-11T09:00:00"),
                    ("S1", "2026-02-22T12:30:00"), ("S3", "2026-02-10T09:00:00")):
        calls.append({"event_id": f"f{sid}{ts}", "ts": ts + TZ, "subscriber_id": sid,
                      "direction": "in", "other_party": "13900000001", "duration_s": 30,
                      "charge": 0.0, "forwarded_to": "18600000000", "cell_id": None})
    calls.sort(key=lambda c: c["ts"])
    (tmp_path / "calls.jsonl").write_text("".join(json.dumps(c) + "\n" for c in calls))
    alerts = [
        _alert("subscriber", "S1", "yellow", "2026-01-05T10:00", status="resolved"),  # ignored
        _alert("subscriber", "S1", "red", "2026-02-10T12:00"),  # lead 19 d
        _alert("subscriber", "S2", "yellow", "2026-02-25T12:00"),  # lead 4 d
        _alert("subscriber", "S3", "yellow", "2026-02-20T12:00"),  # lead 28 d
        _alert("subscriber", "S3", "red", "2026-03-10T12:00", status="escalated"),  # 10 d
        _alert("subscriber", "S5", "yellow", "2026-02-16T10:00"),  # false, in the holiday
        _alert("subscriber", "S6", "red", "2026-03-05T00:00"),  # false
        _alert("subscriber", "S8", "green", "2026-03-05T00:00"),  # below yellow: not counted
        _alert("subscriber", "S10", "red", "2026-03-30T12:00"),  # true (churning), no recall
        _alert("group", "G1", "yellow", "2026-03-01T12:00"),  # 19 d before half gone
        _alert("group", "G1", "red", "2026-03-12T12:00"),  # 8 d before half gone
        _alert("group", "G2", "yellow", "2026-02-01T12:00"),  # false group alert
    ]
    (tmp_path / "alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in alerts))
    return tmp_path


def test_yellow_and_red_levels(world: Path) -> None:
    report = ev.evaluate(ev.load_world(world), ev.read_alerts(world / "alerts.jsonl"))
    weeks = SUBSCRIBER_DAYS / 7
    y = report["levels"]["yellow+"]
    assert y["churners_ported_out"] == 4
    assert y["lead_days"] == [4.0, 19.0, 28.0]
    assert (y["recall_7d"], y["recall_any"], y["median_lead_days"]) == (0.5, 0.75, 19.0)
    assert y["missed_7d"] == ["S2", "S4"]
    assert {k: (v["detected_7d"], v["churners"]) for k, v in y["recall_7d_by_type"].items()} \
        == {"group_churn": (1, 1), "individual_forwarding": (1, 1), "individual_silent": (0, 2)}
    assert y["detectable_7d"] == 2 and y["recall_7d_detectable"] == 0.5
    assert {k: (v["detected_7d"], v["detectable"])
            for k, v in y["recall_7d_detectable_by_type"].items()} \
        == {"individual_forwarding": (1, 1), "individual_silent": (0, 1)}
    assert (y["alerted_subscribers"], y["true_alerted"], y["precision"]) == (6, 4, 0.6667)
    assert y["false_by_kind"] == {"stable": 1, "trip": 1}
    assert (y["holiday_false_subscribers"], y["holiday_false_pct"]) == (1, 10.0)
    assert (y["alerts"], y["subscriber_alerts"], y["group_alerts"]) == (10, 7, 3)
    assert y["alerts_per_1000_per_week"] == round(10 / (weeks / 1000), 3)
    assert y["group_leads_days"] == {"G1": 19.0}
    assert (y["groups_detected_10d_share"], y["false_group_alerts"]) == (1.0, 1)
    assert y["groups_via_member_alerts"] == {"G1": 28.0}

    r = report["levels"]["red+"]
    assert r["lead_days"] == [10.0, 19.0]
    assert (r["recall_7d"], r["median_lead_days"], r["precision"]) == (0.5, 14.5, 0.75)
    assert r["false_by_kind"] == {"trip": 1}
    assert r["holiday_false_pct"] == 0.0
    assert r["alerts"] == 5 and r["alerts_per_1000_per_week"] == round(5 / (weeks / 1000), 3)
    assert (r["group_leads_days"], r["groups_detected_10d_share"]) == ({"G1": 8.0}, 0.0)
    assert r["false_group_alerts"] == 0

    met = {(t["metric"], t["level"]): t["met"] for t in report["targets"]}
    assert met[("recall_7d", "red+")] is False and met[("false_group_alerts", "red+")] is True


def test_detectable_7_days_ahead(world: Path) -> None:
    d = detectability(ev.load_world(world))
    assert sorted(d) == ["S1", "S2", "S3", "S4"]  # S10 has not ported out
    assert (d["S1"]["forwarded_by_cutoff"], d["S1"]["by_forwarding"]) == (2, True)
    assert (d["S3"]["forwarded_by_cutoff"], d["S3"]["detectable"]) == (1, False)
    # S2: 4 calls a day expected on each of days 30..51 (port-out Mar 1, minus 7 days,
    # whole days before Feb 22), none seen: LLR = E = 4 x 22.
    assert (d["S2"]["decay_llr"], d["S2"]["by_decay"]) == (88.0, True)
    assert (d["S4"]["decay_llr"], d["S4"]["detectable"]) == (0.0, False)
    summary = detectability_summary(d)
    assert summary["individual_silent"] == {"churners": 2, "detectable": 1, "by_forwarding": 0,
                                            "by_decay": 1, "share": 0.5}


def test_batch_baseline(world: Path) -> None:
    w = ev.load_world(world)
    flags = ev.baseline_alerts(w)
    assert sorted((a["subscriber_id"], a["ts"]) for a in flags) == [
        ("S4", f"2026-03-01T08:00:00{TZ}"), ("S7", f"2026-04-01T08:00:00{TZ}")]
    b = ev.evaluate(w, [])["baseline"]
    assert (b["recall_7d"], b["precision"], b["median_lead_days"]) == (0.25, 0.5, 14.17)
    assert b["false_by_kind"] == {"plan_downgrade": 1}


def test_command_prints_and_writes_json(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    out = world / "report.json"
    args = parser.parse_args([str(world), "--alerts", str(world / "alerts.jsonl"),
                              "--json", str(out)])
    assert ev.run(args) == 0
    text = capsys.readouterr().out
    assert "recall@7d" in text and "batch rule" in text and "MISS" in text
    assert "detectable 7 d ahead" in text and "individual_silent 1/2" in text
    report = json.loads(out.read_text())
    assert report["levels"]["yellow+"]["recall_7d"] == 0.5


def test_simulated_world_round_trip(tmp_path: Path) -> None:
    from stream.tools.simulator import WorldParams, simulate

    simulate(tmp_path, WorldParams(subscribers=40, days=30, seed=3))
    w = ev.load_world(tmp_path)
    assert len(w.subscribers) == 40 and w.holiday is not None
    report = ev.evaluate(w, [])
    assert report["levels"]["yellow+"]["alerts"] == 0
    assert "recall@7d" in ev.format_report(report)


def test_plot_png(world: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the optional `plot` extra is not installed")
    report = ev.evaluate(ev.load_world(world), ev.read_alerts(world / "alerts.jsonl"))
    png = tmp_path / "report.png"
    assert ev.plot(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _calibrated(alert: dict[str, Any], zone: str, score: float) -> dict[str, Any]:
    return {**alert, "zone": zone, "risk_score": score, "raw_zone": alert["zone"],
            "raw_risk_score": alert["risk_score"], "calibration_version": "newton-1/50@x"}


def test_detector_metrics_keep_the_engine_zones_and_calibration_is_beside_them(
    world: Path,
) -> None:
    w = ev.load_world(world)
    alerts = ev.read_alerts(world / "alerts.jsonl")
    # The learner moved S1's red alert (true, Feb 10) to green and S6's (false) to yellow.
    cal = [_calibrated(a, "green", 0.1) if (a["subscriber_id"], a["zone"]) == ("S1", "red")
           else _calibrated(a, "yellow", 0.5) if a["subscriber_id"] == "S6" else a
           for a in alerts]
    plain, report = ev.evaluate(w, alerts), ev.evaluate(w, cal)
    assert report["levels"] == plain["levels"] and report["by_zone"] == plain["by_zone"]
    assert report["alerts"] == plain["alerts"]
    c = report["calibration"]
    assert c["calibrated_alerts"] == 2 and c["last_version"] == "newton-1/50@x"
    # Thirds of 33 days from Jan 1: red+ alerts S1 (Feb 10) and S6 (Mar 5) in the second,
    # S3 (Mar 10) and S10 (Mar 30) in the last; S1 and S2 port out in the second third,
    # S3 and S4 in the last.
    engine, calib = c["periods"]["red+"]["engine"], c["periods"]["red+"]["calibrated"]
    assert [(p["alerted"], p["true"], p["leavers"], p["found_7d"]) for p in engine] == [
        (0, 0, 0, 0), (2, 1, 2, 1), (2, 2, 2, 1)]
    assert [(p["alerted"], p["true"], p["leavers"], p["found_7d"]) for p in calib] == [
        (0, 0, 0, 0), (0, 0, 2, 0), (2, 2, 2, 1)]
    assert plain["calibration"]["periods"]["red+"]["calibrated"] == engine
    assert c["outcomes"] is None and "calibration: 2 alerts re-scored" in ev.format_report(report)


def test_precision_and_reach_from_outcomes(world: Path) -> None:
    alerts = [{**a, "segment": "sme" if a["subscriber_id"] == "S6" else "consumer",
               "reasons": [{"code": "usage_drop" if a["subscriber_id"] == "S6"
                            else "forwarding_off_net", "summary": "-"}]}
              for a in ev.read_alerts(world / "alerts.jsonl")]
    cal = [_calibrated(a, "yellow", 0.5) if a["subscriber_id"] == "S6" else a for a in alerts]
    by_sid = {a["subscriber_id"]: a["alert_id"] for a in cal if a["status"] != "resolved"}

    def o(sid: str, outcome: str) -> dict[str, Any]:
        return {"alert_id": by_sid[sid], "subscriber_id": sid, "outcome": outcome,
                "ts": f"2026-03-20T10:00:00{TZ}"}

    outcomes = [o("S1", "retained"), o("S6", "not_at_risk"), o("S5", "unreachable"),
                o("S10", "no_answer"), o("S3", "churned"), o("S2", "not_at_risk"),
                {**o("S1", "retained"), "alert_id": "nope"}]
    report = ev.evaluate(ev.load_world(world), cal, outcomes=outcomes)
    m = report["calibration"]["outcomes"]
    assert (m["calls"], m["unreached"], m["unreached_share"], m["unmatched"]) == (
        7, 2, round(2 / 7, 4), 1)
    assert m["precision"] == round(3 / 5, 4)  # retained 2 + churned 1 over 5 answered
    zone = {k: (v["right"], v["answered"]) for k, v in m["precision_by_zone"].items()}
    assert zone == {"red": (2, 2), "yellow": (0, 2)}  # S3's escalation is red
    engine = {k: (v["right"], v["answered"]) for k, v in m["precision_by_engine_zone"].items()}
    assert engine == {"red": (2, 3), "yellow": (0, 1)}
    reason = {k: (v["right"], v["answered"]) for k, v in m["precision_by_reason"].items()}
    assert reason == {"forwarding_off_net": (2, 3), "usage_drop": (0, 1)}
    assert m["by_segment"] == {"consumer": {"churned": 1, "no_answer": 1, "not_at_risk": 1,
                                            "retained": 1, "unreachable": 1},
                               "sme": {"not_at_risk": 1}}
    text = ev.format_report(report)
    assert "outcomes: 7 calls, 2 unreachable or unanswered (28.6%)" in text
    assert "by leading reason: forwarding_off_net 2/3, usage_drop 0/1" in text


def test_command_with_the_call_centre(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    from stream.tools.simulator import WorldParams, simulate

    simulate(tmp_path, WorldParams(subscribers=150, days=75, seed=5))
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    first = tmp_path / "first.json"
    assert ev.run(parser.parse_args([str(tmp_path), "--call-centre", "--no-baseline",
                                     "--unreachable", "0.3", "--json", str(first)])) == 0
    text = capsys.readouterr().out
    assert "calibration:" in text and "outcomes by segment" in text
    assert "calling in the advised windows against random hours" in text
    written = (tmp_path / "outcomes.jsonl").read_text().splitlines()
    report = json.loads(first.read_text())
    # Reaching people: every capacity tried, both timings and both orders, within capacity.
    contact = report["contact"]
    assert contact["capacities"] == [1, 2, 4, 8] and contact["runs"] == 20
    for row in contact["timing"]:
        advised, random_ = row["advised"], row["random"]
        assert advised["calls"] <= 75 * row["capacity"] and advised["in_window"] > 0
        assert random_["in_window"] == 0 and random_["waited"] == 0
        assert advised["calls"] == pytest.approx(advised["reached"] + advised["unreached"],
                                                 abs=0.02)  # means of runs, rounded
    assert set(contact["targets"]) == {"unreachable_half_of_random",
                                       "queue_more_value_every_capacity"}
    assert report["calibration"]["outcomes"]["calls"] == len(written) > 0
    assert report["calibration"]["outcomes"]["unmatched"] == 0
    # Read back (the default DIR/outcomes.jsonl): the same alerts, so the same report.
    again = tmp_path / "again.json"
    assert ev.run(parser.parse_args([str(tmp_path), "--no-baseline", "--json",
                                     str(again)])) == 0
    second = json.loads(again.read_text())
    assert second["calibration"] == report["calibration"]
    assert second["levels"] == report["levels"]
    assert ev.run(parser.parse_args([str(tmp_path), "--call-centre", "--alerts",
                                     str(tmp_path / "outcomes.jsonl")])) == 2
