"""``churnwatch evaluate --suite``: the worst case, and the whole command on tiny worlds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from stream.tools import evaluate as ev
from stream.tools import evaluate_command, suite
from stream.tools.scenarios import PRESETS


def _row(preset: str, seed: int, **figures: Any) -> dict[str, Any]:
    keys = {t.key for t in suite.SUITE_TARGETS}
    levels = {lv: {k: None for k in keys} for lv in ev.LEVELS}
    for name, value in figures.items():
        key, _, level = name.rpartition("__")
        levels[{"y": "yellow+", "r": "red+"}[level]][key] = value
    return {"preset": preset, "seed": seed, "levels": levels}


def test_worst_case_takes_the_worst_world_per_target_and_ignores_the_unjudged() -> None:
    rows = [
        _row("default", 1, precision__r=0.95, median_lead_days__y=20.0,
             alerts_per_1000_per_week__y=6.0, false_group_alerts__r=0),
        _row("no-cells", 1, precision__r=0.50, median_lead_days__y=None,
             alerts_per_1000_per_week__y=9.5, false_group_alerts__r=0),
        _row("mixed", 2, precision__r=0.93, median_lead_days__y=12.0,
             alerts_per_1000_per_week__y=7.0, false_group_alerts__r=1),
    ]
    worst = {(w["metric"], w["level"]): w for w in suite.worst_case(rows)}
    p = worst[("precision", "red+")]
    assert (p["worst"], p["where"], p["met"], p["met_worlds"], p["judged_worlds"]) == (
        0.50, "no-cells 1", False, 2, 3)
    lead = worst[("median_lead_days", "yellow+")]
    assert (lead["worst"], lead["where"], lead["judged_worlds"]) == (12.0, "mixed 2", 2)
    volume = worst[("alerts_per_1000_per_week", "yellow+")]
    assert (volume["worst"], volume["where"], volume["met"]) == (9.5, "no-cells 1", False)
    assert worst[("false_group_alerts", "red+")]["where"] == "mixed 2"
    hol = worst[("holiday_false_pct", "yellow+")]
    assert (hol["worst"], hol["met"], hol["judged_worlds"]) == (None, None, 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    return parser


def test_suite_runs_every_preset_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "suite.json"
    args = _parser().parse_args(["--suite", "--seeds", "1", "--seed-offset", "100",
                                 "--subscribers", "40", "--days", "30", "--jobs", "2",
                                 "--partitions", "2", "--json", str(out)])
    assert evaluate_command.run(args) == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert "seeds 101-101 (held out)" in lines[0] and "2 partitions" in lines[0]
    header = lines[1].split()
    assert header[:3] == ["preset", "seed", "churn"] and "R7/ceil" in lines[1]
    rows = [line.split() for line in lines if line.split()[:1] in ([p] for p in PRESETS)]
    assert [r[0] for r in rows] == list(PRESETS) and all(r[1] == "101" for r in rows)
    worst = [line for line in lines if line.startswith("worst")]
    assert len(worst) == 1
    assert "targets against the worst world:" in lines
    assert sum("red+ precision (red+) >= 0.92" in line for line in lines) == 1
    assert f"{len(PRESETS)}/{len(PRESETS)}" in printed.err  # progress per world
    report = json.loads(out.read_text())
    assert [r["preset"] for r in report["rows"]] == list(PRESETS)
    assert len(report["worst_case"]) == len(suite.SUITE_TARGETS)
    for r in report["rows"]:
        assert r["subscribers"] == 40 and r["seed"] == 101 and r["partitions"] == 2
        assert set(r["levels"]) == set(ev.LEVELS) and set(r["diagnosis"]) == set(ev.LEVELS)
    # The worlds were written in a temporary directory, and it is gone.
    assert not list(scratch.iterdir())


def test_suite_in_process_keeps_its_worlds(tmp_path: Path) -> None:
    rows = suite.run_suite(["no-cells"], [3], subscribers=80, days=60, jobs=1,
                           keep=tmp_path / "worlds")
    assert [(r["preset"], r["seed"], r["knobs"]) for r in rows] == [
        ("no-cells", 3, "cell_ids=none")]
    truth = tmp_path / "worlds" / "no-cells-s3" / "truth.jsonl"
    assert truth.is_file()
    # The volume floor: one alert for each churner who ported out, per 1,000 subscriber-weeks.
    leavers = [t for line in truth.read_text().splitlines() if (t := json.loads(line))["churn"]
               and t.get("port_out_ts")]
    weeks = ev.load_world(truth.parent).subscriber_weeks()
    assert leavers and weeks > 0
    assert rows[0]["alert_floor_per_1000_per_week"] == round(len(leavers) / weeks * 1000, 2)


def test_suite_and_a_directory_do_not_mix(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run, parse = evaluate_command.run, _parser().parse_args
    assert run(parse([str(tmp_path), "--suite"])) == 2
    assert run(parse([])) == 2
    assert run(parse(["--suite", "--presets", "default,nowhere"])) == 2
    err = capsys.readouterr().err
    assert "drop DIR" in err and "pass --suite" in err and "nowhere" in err


def test_the_suite_gives_the_worlds_holiday_as_the_calendar_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.tools import replay

    given: list[tuple[str, ...]] = []
    real = replay.replay_directory

    def recording(directory: Path, **kwargs: Any) -> Any:
        given.append(kwargs["engine_config"].holidays)
        return real(directory, **kwargs)

    monkeypatch.setattr(replay, "replay_directory", recording)
    for calendar in (False, True):
        rows = suite.run_suite(["default"], [1], subscribers=40, days=30, jobs=1,
                               keep=tmp_path, calendar=calendar)
        assert rows[0]["holiday_calendar"] is calendar
    holiday = ev.load_world(tmp_path / "default-s1").holiday_calendar()
    assert len(holiday) == 1 and given == [(), holiday]


def test_suite_replays_on_the_partitions_asked_for(tmp_path: Path) -> None:
    # An engine judges a subscriber against its own partition (the segment's baseline, the
    # co-members it sees), so the partitions change the figures: the suite must replay on
    # the count asked for, as an operator's deployment runs.
    from detectors import EngineConfig
    from stream.tools.ceiling import detectability
    from stream.tools.replay import replay_directory, with_ported_numbers

    one, eight = (suite.run_suite(["no-cells"], [3], subscribers=80, days=60, jobs=1,
                                  partitions=n, keep=tmp_path / f"p{n}")[0] for n in (1, 8))
    assert (one["partitions"], eight["partitions"]) == (1, 8)
    assert one["levels"]["yellow+"] != eight["levels"]["yellow+"]
    world = tmp_path / "p8" / "no-cells-s3"
    alerts = list(replay_directory(world, groups=True, partitions=8,
                                   engine_config=with_ported_numbers(EngineConfig(), world)))
    loaded = ev.load_world(world)
    scored = ev.score(loaded, alerts, ev.LEVELS["yellow+"], detectability(loaded))
    assert eight["levels"]["yellow+"]["alerts_per_1000_per_week"] == \
        scored["alerts_per_1000_per_week"]


def test_suite_refuses_no_partitions(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["--suite", "--partitions", "0"])
    assert evaluate_command.run(args) == 2
    assert "seeds, subscribers and partitions positive" in capsys.readouterr().err
