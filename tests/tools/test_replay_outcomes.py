"""Outcome learning in `churnwatch replay`: the learner, outcomes.jsonl and the call centre."""

from __future__ import annotations

import argparse
import base64
import random
import shutil
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import pytest

from detectors.calibration import OutcomeLearner, RiskCalibrator
from stream.cli import build_parser
from stream.contracts import TOPIC_OUTCOMES, schema
from stream.tools.callcentre import CallCentre
from stream.tools.evaluate import engine_view
from stream.tools.replay import replay_directory, run, stamp
from stream.tools.simulator import WorldParams, simulate

ALERT = fastjsonschema.compile(schema("alert"))
DEAD = fastjsonschema.compile(schema("deadletter"))
# Reached often, so a small world yields false alarms to learn from (300 subscribers: both
# classes of label at least twice); warm after 8 labels.
CENTRE = CallCentre(seed=5, unreachable=0.2, no_answer=0.05)


def learner(store: dict[str, Any] | None = None) -> OutcomeLearner:
    return OutcomeLearner(RiskCalibrator(warmup=8, min_class=2), store)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    simulate(out, WorldParams(subscribers=300, days=75, seed=5))
    return out


@pytest.fixture(scope="module")
def loop(world: Path) -> dict[str, Any]:
    """One replay with the call centre in the loop: alerts, answers, learner, counters."""
    answers: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    letters: list[dict[str, Any]] = []
    store: dict[str, Any] = {}
    lrn = learner(store)
    alerts = list(replay_directory(world, learner=lrn, call_centre=CENTRE, counters=counts,
                                   on_answer=answers.append, on_dead_letter=letters.append))
    return {"alerts": alerts, "answers": answers, "learner": lrn, "store": store,
            "counts": counts, "letters": letters}


def with_outcomes(world: Path, tmp: Path, lines: list[bytes]) -> Path:
    """A copy of the world with ``lines`` as its outcomes.jsonl."""
    out = tmp / "w"
    shutil.copytree(world, out)
    (out / "outcomes.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return out


def dumps(outcomes: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(o) for o in outcomes]


def test_the_loop_calibrates_and_keeps_the_engines_alerts(world: Path,
                                                          loop: dict[str, Any]) -> None:
    alerts = loop["alerts"]
    plain = list(replay_directory(world))
    # Same alerts, same ids: calibration changes only the published score and zone.
    stripped = [{k: v for k, v in a.items() if k != "calibration_version"}
                for a in engine_view(alerts)]
    assert stripped == plain
    calibrated = [a for a in alerts if "raw_zone" in a]
    assert calibrated, "the learner warmed up on this world"
    assert any(a["zone"] != a["raw_zone"] or a["risk_score"] != a["raw_risk_score"]
               for a in calibrated)
    for a in alerts:
        ALERT(stamp(dict(a)))
        # Resolved and closed alerts end an episode: nothing to calibrate.
        if a["kind"] == "subscriber" and a["status"] not in ("resolved", "closed"):
            assert a["calibration_version"].startswith("newton-1/")
    counts = loop["counts"]
    assert counts["calibration.alerts_calibrated"] == len(calibrated)
    assert counts["calibration.exits"] > 0
    assert sum(v for k, v in counts.items() if k.startswith("outcomes.")) == len(loop["answers"])
    assert loop["letters"] == []  # every answer names an alert the learner holds


def test_answers_never_predate_the_alerts_arrival(loop: dict[str, Any]) -> None:
    when = {a["alert_id"]: datetime.fromisoformat(a["ts"]) for a in loop["alerts"]}
    answers = loop["answers"]
    assert answers
    assert all(datetime.fromisoformat(o["ts"]) >= when[o["alert_id"]] + timedelta(hours=2)
               for o in answers)
    times = [datetime.fromisoformat(o["ts"]) for o in answers]
    assert times == sorted(times)  # released in event-time order


def test_replay_with_a_learner_is_deterministic(world: Path, loop: dict[str, Any]) -> None:
    store: dict[str, Any] = {}
    again = list(replay_directory(world, learner=learner(store), call_centre=CENTRE))
    assert again == loop["alerts"]
    assert orjson.dumps(store, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        loop["store"], option=orjson.OPT_SORT_KEYS)
    # The learner's final state is in its store: a learner rebuilt on it carries on.
    assert OutcomeLearner(store=store).to_state() == loop["learner"].to_state()


def test_the_answers_written_out_replay_to_the_same_alerts_and_model(
    world: Path, loop: dict[str, Any], tmp_path: Path
) -> None:
    copy = with_outcomes(world, tmp_path, dumps(loop["answers"]))
    counts: Counter[str] = Counter()
    lrn = learner()
    assert list(replay_directory(copy, learner=lrn, counters=counts)) == loop["alerts"]
    assert lrn.to_state() == loop["learner"].to_state()
    assert dict(lrn.store) == loop["store"]
    assert counts["accepted.outcomes"] == len(loop["answers"])


def test_the_order_of_lines_in_outcomes_jsonl_does_not_matter(
    world: Path, loop: dict[str, Any], tmp_path: Path
) -> None:
    lines = dumps(loop["answers"])
    random.Random(3).shuffle(lines)
    assert lines != dumps(loop["answers"])
    copy = with_outcomes(world, tmp_path, lines)
    lrn = learner()
    assert list(replay_directory(copy, learner=lrn)) == loop["alerts"]
    assert lrn.to_state() == loop["learner"].to_state()


def test_outcomes_at_the_same_instant_in_any_order(world: Path, loop: dict[str, Any],
                                                   tmp_path: Path) -> None:
    """Move every outcome of a day to one instant (noon of its day, after its alert), in
    two opposite orders: the same alerts and the same model either way."""
    when = {a["alert_id"]: datetime.fromisoformat(a["ts"]) for a in loop["alerts"]}
    moved = []
    for o in loop["answers"]:
        t = datetime.fromisoformat(o["ts"])
        noon = t.replace(hour=12, minute=0, second=0)
        if noon < when[o["alert_id"]] + timedelta(hours=12):
            noon += timedelta(days=1)
        moved.append({**o, "ts": noon.isoformat()})
    assert len({o["ts"] for o in moved}) < len(moved)  # there are ties
    results = []
    for lines in (dumps(moved), dumps(moved)[::-1]):
        lrn = learner()
        copy = with_outcomes(world, tmp_path / str(len(results)), lines)
        results.append((list(replay_directory(copy, learner=lrn)), lrn.to_state()))
    assert results[0] == results[1]


def test_an_outcome_follows_the_events_of_its_instant(world: Path, loop: dict[str, Any],
                                                      tmp_path: Path) -> None:
    """An outcome dated t goes to the learner after every event at t and before any later
    one: dated at the very instant of the call that raised its alert, it finds the alert;
    dated at the ts of an alert raised by a later event (a day's closing alerts, stamped
    at the close), it does not: outcomes follow the events that raise alerts."""
    calls = [orjson.loads(line) for line in (world / "calls.jsonl").read_bytes().splitlines()]
    billing = [orjson.loads(line)
               for line in (world / "billing.jsonl").read_bytes().splitlines()]
    events = sorted(datetime.fromisoformat(e["ts"]) for e in calls + billing)
    at_call = {(c["subscriber_id"], c["ts"]) for c in calls}
    alerts = [a for a in loop["alerts"] if a["kind"] == "subscriber"
              and a["status"] != "resolved"]
    same = next(a for a in alerts if (a["subscriber_id"], a["ts"]) in at_call)
    later = next(a for a in alerts if (a["subscriber_id"], a["ts"]) not in at_call
                 and datetime.fromisoformat(a["ts"]) not in events)
    probes = [{"alert_id": a["alert_id"], "subscriber_id": a["subscriber_id"], "ts": a["ts"],
               "outcome": "no_answer"} for a in (same, later)]
    copy = with_outcomes(world, tmp_path, dumps(probes))
    letters: list[dict[str, Any]] = []
    list(replay_directory(copy, learner=learner(), on_dead_letter=letters.append))
    assert [(d["reason"], d["offset"]) for d in letters] == [("unknown_alert", 2)]


def test_bad_and_unknown_outcomes_are_counted_dead_letters(
    world: Path, loop: dict[str, Any], tmp_path: Path
) -> None:
    good = dumps(loop["answers"])
    first = loop["answers"][0]
    bad = [
        b'{"alert_id": "a1f3c09e5b7d2e44", "outcome": ',  # malformed JSON
        orjson.dumps({**first, "outcome": "maybe"}),  # not in the contract
        orjson.dumps({**first, "alert_id": "ffffffffffffffffffffffff"}),  # no such alert
        orjson.dumps({**first, "subscriber_id": "S-nobody"}),  # not the alert's subscriber
    ]
    copy = with_outcomes(world, tmp_path, bad + good)
    letters: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    lrn = learner()
    alerts = list(replay_directory(copy, learner=lrn, counters=counts,
                                   on_dead_letter=letters.append))
    # Dead letters in the order the learner meets them: the contract's at reading, the
    # learner's at the outcome's place in event time.
    assert sorted((d["reason"], d["offset"]) for d in letters) == [
        ("malformed_json", 1), ("schema", 2), ("subscriber_mismatch", 4),
        ("unknown_alert", 3)]
    for d in letters:
        DEAD(d)
        assert d["topic"] == TOPIC_OUTCOMES
    assert base64.b64decode(letters[-1]["raw_base64"]) in bad
    for reason in ("malformed_json", "schema", "unknown_alert", "subscriber_mismatch"):
        assert counts[f"rejected.{reason}"] == 1
    assert counts["calibration.outcomes_unknown_alert"] == 1
    assert counts["calibration.outcomes_subscriber_mismatch"] == 1
    assert counts["read.outcomes"] == len(good) + 4
    # The rejected lines change nothing else (both answer-less outcomes named no label).
    assert alerts == loop["alerts"]


def test_without_a_learner_nothing_changes(world: Path, loop: dict[str, Any],
                                           tmp_path: Path) -> None:
    copy = with_outcomes(world, tmp_path, dumps(loop["answers"]))
    counts: Counter[str] = Counter()
    plain: Counter[str] = Counter()
    assert list(replay_directory(copy, counters=counts)) == list(
        replay_directory(world, counters=plain))
    assert counts == plain and "read.outcomes" not in counts


def test_the_command_line(world: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    def parse(argv: list[str]) -> argparse.Namespace:
        return build_parser().parse_args(["replay", *argv])

    def alerts(path: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in orjson.loads(line).items() if k != "emitted_at"}
                for line in path.read_bytes().splitlines()]

    answers = tmp_path / "answers.jsonl"
    assert run(parse([str(world), "--out", str(tmp_path / "a.jsonl"), "--calibration",
                      "--call-centre",
                      "--outcomes-out", str(answers), "--unreachable", "0.2",
                      "--no-answer", "0.05"])) == 0
    err = capsys.readouterr().err
    assert "calibration.alerts_raw" in err and "calibration.exits" in err
    written = [orjson.loads(line) for line in answers.read_bytes().splitlines()]
    assert written and {o["outcome"] for o in written} <= {
        "retained", "unreachable", "not_at_risk", "churned", "no_answer"}
    assert run(parse([str(world), "--out", str(tmp_path / "b.jsonl"), "--calibration",
                      "--outcomes", str(answers)])) == 0
    assert alerts(tmp_path / "b.jsonl") == alerts(tmp_path / "a.jsonl")
    # The default learner, the default call centre seeded by the world's seed.
    assert alerts(tmp_path / "a.jsonl") == list(replay_directory(
        world, learner=OutcomeLearner(),
        call_centre=CallCentre(seed=5, unreachable=0.2, no_answer=0.05)))
    assert run(parse([str(world), "--outcomes", str(tmp_path / "none.jsonl")])) == 2
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(world / "calls.jsonl", bare)
    assert run(parse([str(bare), "--call-centre"])) == 2  # no truth.jsonl to answer from
