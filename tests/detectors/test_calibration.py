"""The outcome learner: labels, event-time learning, plain state that round-trips exactly."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from detectors.calibration import (
    CALIBRATION_STATE_VERSION,
    OUTCOMES,
    OutcomeLearner,
    RiskCalibrator,
    alert_features,
    learn_stream,
    outcome_label,
)

TZ = timezone(timedelta(hours=8))
T0 = datetime(2026, 1, 5, 10, tzinfo=TZ)


def _alert(i: int, code: str = "usage_drop", day: float = 0.0, zone: str = "red",
           sid: str | None = None, **extra: Any) -> dict[str, Any]:
    ts = T0 + timedelta(days=day)
    return {"alert_id": f"alert{i:06d}", "kind": "subscriber", "status": "open",
            "subscriber_id": sid or f"s{i}", "group_id": None, "zone": zone,
            "risk_score": 0.75, "segment": "consumer", "tier": None, "value_at_risk": 50.0,
            "reasons": [{"code": code, "summary": "-", "figures": {}}],
            "ts": ts.isoformat(), **extra}


def _outcome(i: int, outcome: str, day: float, sid: str | None = None) -> dict[str, Any]:
    return {"alert_id": f"alert{i:06d}", "subscriber_id": sid or f"s{i}",
            "ts": (T0 + timedelta(days=day)).isoformat(), "outcome": outcome}


def _exit(sid: str, day: float) -> dict[str, Any]:
    return {"subscriber_id": sid, "ts": (T0 + timedelta(days=day)).isoformat()}


def _stream(seed: int, n: int = 400) -> list[tuple[str, dict[str, Any]]]:
    """Alerts every 6 hours; usage alerts right half the time, forwarding 9 in 10; a third
    reached a day later, the rest labelled by a port-out 15 days later or the horizon."""
    rng = random.Random(seed)
    timed: list[tuple[float, int, str, dict[str, Any]]] = []
    for i in range(n):
        day = i / 4
        code = rng.choice(["usage_drop", "forwarding_off_net"])
        right = rng.random() < (0.5 if code == "usage_drop" else 0.9)
        timed.append((day, 0, "alert", _alert(i, code, day)))
        reach = rng.random()
        if reach < 0.33:
            timed.append((day + 1, 1, "outcome",
                          _outcome(i, "retained" if right else "not_at_risk", day + 1)))
        elif reach < 0.5:
            timed.append((day + 1, 1, "outcome", _outcome(i, "unreachable", day + 1)))
        if right:
            timed.append((day + 15, 2, "exit", _exit(f"s{i}", day + 15)))
    timed.sort(key=lambda t: (t[0], t[1]))
    return [(kind, msg) for _, _, kind, msg in timed]


def test_outcome_labels_follow_the_issue() -> None:
    assert {o: outcome_label(o) for o in OUTCOMES} == {
        "retained": True, "churned": True, "not_at_risk": False,
        "unreachable": None, "no_answer": None}


def test_features_have_fixed_keys_and_ignore_unknown_codes() -> None:
    plain = alert_features(_alert(1))
    other = alert_features(_alert(2, "forwarding_off_net", segment="government",
                                  tier="gold", reasons=[
                                      {"code": "resolved", "summary": "-"},
                                      {"code": "made_up", "summary": "-"},
                                      {"code": "forwarding_off_net", "summary": "-",
                                       "figures": {"days": 14, "forwarded": 3,
                                                   "incoming": 4, "usual_share": 0.1}}]))
    assert plain.keys() == other.keys()
    assert other["n_reasons"] == 1.0 and other["fwd_days"] == 1.0
    assert other["fwd_share"] == 0.75 and other["fwd_usual"] == 0.1
    assert other["segment_government"] == 1.0 and other["tier_gold"] == 1.0
    assert plain["code_usage_drop"] == 1.0 and plain["code_forwarding_off_net"] == 0.0
    # A reason that carries its strength (a later engine) gives it.
    strong = alert_features(_alert(3, reasons=[
        {"code": "spend_drop", "summary": "-", "strength": 0.42}]))
    assert strong["strength_spend_drop"] == 0.42


@pytest.mark.parametrize("model", ["logistic", "bins", "offset", "newton"])
def test_raw_score_until_warm_with_both_classes(model: str) -> None:
    cal = RiskCalibrator(model, warmup=20, min_class=3)
    x = alert_features(_alert(1))
    for _ in range(50):
        cal.learn_one(x, True)
    assert not cal.warm and cal.score(x, 0.75) == 0.75
    for _ in range(3):
        cal.learn_one(x, False)
    assert cal.warm and cal.score(x, 0.75) != 0.75


@pytest.mark.parametrize("model", ["logistic", "bins", "offset", "newton"])
def test_state_round_trips_exactly_through_json(model: str) -> None:
    rng = random.Random(12345)
    examples = []
    for i in range(300):
        code = rng.choice(["usage_drop", "forwarding_off_net", "spend_drop"])
        a = _alert(i, code, segment=rng.choice(["consumer", "sme"]),
                   value_at_risk=rng.uniform(10, 500))
        examples.append((alert_features(a), rng.random() < 0.7))
    cal = RiskCalibrator(model)
    for x, y in examples[:200]:
        cal.learn_one(x, y)
    state = json.loads(json.dumps(cal.to_state()))
    assert state["v"] == CALIBRATION_STATE_VERSION
    copy = RiskCalibrator.from_state(state)
    assert copy.to_state() == cal.to_state()
    for x, y in examples[200:]:
        cal.learn_one(x, y)
        copy.learn_one(x, y)
        assert copy.predict_one(x) == cal.predict_one(x)
    assert copy.to_state() == cal.to_state()
    with pytest.raises(ValueError):
        RiskCalibrator.from_state({**state, "v": 99})


def test_a_newton_state_with_the_dropped_group_context_feature_still_scores() -> None:
    """States written while ``code_group_context`` was a feature load without it: the
    same fit as a model that never had it (it was 0 for these alerts)."""
    rng = random.Random(7)
    cal = RiskCalibrator("newton", warmup=20, min_class=3)
    examples = [(alert_features(_alert(i, rng.choice(["usage_drop", "spend_drop"]),
                                       value_at_risk=rng.uniform(10, 500))),
                 rng.random() < 0.6) for i in range(60)]
    for x, y in examples:
        cal.learn_one(x, y)
    state = json.loads(json.dumps(cal.to_state()))
    old = json.loads(json.dumps(state))
    keys = old["newton"]["keys"]
    at = sorted([*keys, "code_group_context"]).index("code_group_context")
    old["newton"]["keys"] = keys[:at] + ["code_group_context"] + keys[at:]
    old["newton"]["examples"] = [e[:at] + [0.0] + e[at:] for e in old["newton"]["examples"]]
    loaded = RiskCalibrator.from_state(old)
    assert loaded.to_state() == cal.to_state()
    x = examples[0][0]
    assert loaded.predict_one(x) == cal.predict_one(x)


def test_labels_horizon_exit_and_earliest_wins() -> None:
    learner = OutcomeLearner(RiskCalibrator(warmup=1000), horizon_days=30, lag_days=1)
    learner.alert(_alert(1, day=0))                        # no word: negative at the horizon
    learner.alert(_alert(2, day=0))                        # ports out: positive
    learner.alert(_alert(3, day=0))                        # not_at_risk first, then ports out
    learner.alert(_alert(4, day=0))                        # unreachable, then ports out
    assert learner.outcome(_outcome(3, "not_at_risk", 2)) is None
    assert learner.outcome(_outcome(4, "unreachable", 2)) is None
    learner.exit("s2", (T0 + timedelta(days=5)).timestamp())
    learner.exit("s3", (T0 + timedelta(days=6)).timestamp())
    learner.exit("s4", (T0 + timedelta(days=7)).timestamp())
    learner.alert(_alert(5, day=10))                       # days up to 8 learned
    c = learner.counters
    assert (c["labels_exit_pos"], c["labels_outcome_neg"], c["labels_horizon_neg"]) == (2, 1, 0)
    # A "churned" report for an alert already labelled is counted, not a dead letter.
    assert learner.outcome(_outcome(2, "churned", 10.5)) is None
    assert c["outcomes_after_label"] == 1
    learner.alert(_alert(6, day=40))                       # moves the clock past the horizon
    assert (c["labels_exit_pos"], c["labels_outcome_neg"], c["labels_horizon_neg"]) == (2, 1, 1)
    assert learner.calibrator.n == 4 and learner.calibrator.n_pos == 2
    # Past its horizon an alert is forgotten: an outcome for it is a dead letter.
    assert learner.outcome(_outcome(2, "churned", 40.5)) == "unknown_alert"


def test_dead_letters_unknown_alert_and_mismatch() -> None:
    learner = OutcomeLearner()
    learner.alert(_alert(1))
    assert learner.outcome(_outcome(9, "retained", 1)) == "unknown_alert"
    assert learner.outcome(_outcome(1, "retained", 1, sid="someone-else")) == \
        "subscriber_mismatch"
    assert learner.counters["outcomes_unknown_alert"] == 1
    assert learner.counters["outcomes_subscriber_mismatch"] == 1


def test_dead_letter_outcomes_and_repeats_are_counted_in_the_stored_state() -> None:
    # A worker restarted after a dead-letter outcome or a repeated alert loads its counters
    # from the store: the count must be there, although nothing else changed.
    store: dict[str, Any] = {}
    learner = OutcomeLearner(store=store)
    learner.alert(_alert(1))
    learner.alert(_alert(1))
    assert OutcomeLearner(store=store).counters["alerts_duplicate"] == 1
    learner.outcome(_outcome(9, "churned", 1))
    learner.outcome(_outcome(1, "retained", 1, sid="someone-else"))
    restarted = OutcomeLearner(store=store).counters
    assert restarted["outcome_churned"] == 1 and restarted["outcome_retained"] == 1
    assert restarted["outcomes_unknown_alert"] == 1
    assert restarted["outcomes_subscriber_mismatch"] == 1


def test_label_is_used_only_after_the_lag() -> None:
    learner = OutcomeLearner(RiskCalibrator(warmup=1000), lag_days=1)
    learner.alert(_alert(1, day=0))
    learner.outcome(_outcome(1, "retained", 0.2))      # day 0
    learner.alert(_alert(2, day=1))                    # day 1: day 0 not learned yet
    assert learner.calibrator.n == 0
    out = learner.alert(_alert(3, day=2))              # day 2: day 0 learned
    assert learner.calibrator.n == 1
    assert out["calibration_version"] == "newton-1/1@2026-01-05"


def test_late_label_is_counted_and_learned_next_day() -> None:
    learner = OutcomeLearner(RiskCalibrator(warmup=1000), lag_days=0)
    learner.alert(_alert(1, day=0))
    learner.alert(_alert(2, day=3))                    # days 0..2 sealed
    learner.outcome(_outcome(1, "not_at_risk", 1))     # dated day 1: late
    assert learner.counters["late_labels"] == 1 and learner.calibrator.n == 0
    learner.alert(_alert(3, day=4.5))
    assert learner.calibrator.n == 1


def test_order_within_a_day_does_not_matter() -> None:
    items = _stream(7, n=200)
    shuffled: list[tuple[str, dict[str, Any]]] = []
    rng = random.Random(3)
    # Shuffle the outcomes and exits between consecutive alerts of the same day.
    block: list[tuple[str, dict[str, Any]]] = []
    for kind, msg in items:
        if kind == "alert":
            rng.shuffle(block)
            shuffled.extend(block)
            block = []
            shuffled.append((kind, msg))
        else:
            block.append((kind, msg))
    shuffled.extend(block)
    assert shuffled != items
    a, b = OutcomeLearner(), OutcomeLearner()
    assert learn_stream(a, items) == learn_stream(b, shuffled)
    assert a.to_state() == b.to_state()


def test_learns_which_alerts_are_right() -> None:
    learner = OutcomeLearner(RiskCalibrator(warmup=40))
    scored = learn_stream(learner, _stream(12345, n=800))
    assert learner.counters["alerts_raw"] > 0 and learner.counters["alerts_calibrated"] > 0
    late = [a for a in scored[-200:]]
    usage = [a["risk_score"] for a in late if a["reasons"][0]["code"] == "usage_drop"]
    fwd = [a["risk_score"] for a in late if a["reasons"][0]["code"] == "forwarding_off_net"]
    assert sum(usage) / len(usage) < 0.65 < 0.8 < sum(fwd) / len(fwd)
    assert all(a["raw_risk_score"] == 0.75 and a["raw_zone"] == "red" for a in late)


def test_restart_from_the_store_carries_on_exactly() -> None:
    items = _stream(99, n=400)
    whole = OutcomeLearner()
    expected = learn_stream(whole, items)
    first = OutcomeLearner()
    got = learn_stream(first, items[:500])
    # The store as a table would give it back after a restart: through JSON.
    store = json.loads(json.dumps(first.store))
    second = OutcomeLearner(store=store)
    got += learn_stream(second, items[500:])
    assert got == expected
    assert second.to_state() == whole.to_state()
    assert json.loads(json.dumps(whole.store)) == second.store


def test_group_resolved_and_white_alerts() -> None:
    learner = OutcomeLearner(RiskCalibrator(warmup=1, min_class=1))
    group = {**_alert(1), "kind": "group"}
    resolved = {**_alert(2), "status": "resolved", "zone": "green"}
    assert learner.alert(group) is group and learner.alert(resolved) is resolved
    learner.alert(_alert(3, day=0))
    learner.alert(_alert(4, day=0))
    learner.outcome(_outcome(3, "retained", 0.1))
    learner.outcome(_outcome(4, "not_at_risk", 0.1))
    white = learner.alert(_alert(5, "silent", day=3, zone="white"))
    assert learner.calibrator.warm
    assert white["zone"] == "white" and white["risk_score"] != 0.75
