"""Scenario presets: valid input, the property each names, and nothing else changed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from stream.contracts.validation import Validator
from stream.tools.scenarios import PRESETS, apply_preset
from stream.tools.simulator import World, WorldParams, simulate

# A small world with many trips and churners who port out inside it.
SMALL = WorldParams(subscribers=80, days=45, seed=7, group_share=0.4, collective_share=0.5,
                    warmup_days=8, group_last_start_before_end=30,
                    group_portout_after=(5, 15), churn_decay_days=(7, 14),
                    churn_last_start_before_end=20,
                    individual_kinds=(("individual_churn", 0.2), ("plan_downgrade", 0.1),
                                      ("trip", 0.15), ("sparse", 0.05), ("new_joiner", 0.1),
                                      ("habitual_forwarder", 0.05), ("ported_number", 0.05)))

#: SHA-256 of each file of SMALL as written by the simulator before presets existed.
GOLDEN = {
    "calls.jsonl": "b5423fbed87ce5bf01782064df3c3db07c10dfbc8ed4c0e7996fff722772c045",
    "billing.jsonl": "13b3bb0903b4d50873109bd098a8e5dbce31ed0a26360f5415bf26ef4afb368f",
    "subscribers.jsonl": "7ae85959a6420a19f8108a02aac21fbb11c6c4412e5408da0b92a05e8bf6b47a",
    "truth.jsonl": "8ff3d2a3b9bfaad04a2e8fdc08d5495402e8be684b38cbfdf55d49944f72ac6c",
    "groups.jsonl": "263a89d064ccd23709b4052ea9ff0889d19759c1a9f07195d5b29682728bea1b",
    "ported.jsonl": "4d04c9d90f123a4e55956eb3bfce82e003056aeedce8af3d8587945ab7572e48",
    "world.json": "150e1e15d3ffe709930b2d47810908bf62f138259b599304727ce3d9ebade06b",
}


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name in PRESETS:
        out[name] = tmp_path_factory.mktemp(name)
        simulate(out[name], apply_preset(name, SMALL))
    return out


#: Parameters added after presets (the subscribers' answer hours), and their keys in
#: ``truth.jsonl``: left out, a world that answers every call is the world of before.
ANSWER_PARAMS = ("answer_hours", "answer_spans", "answer_span_hours", "weekend_span_hours",
                 "answer_share", "own_calls_in_hours")


def test_default_preset_writes_the_bytes_of_the_simulator_before_presets(
        worlds: dict[str, Path], tmp_path: Path) -> None:
    import orjson

    # Every call answered, at the segment's hours: the bytes of before, but for the
    # answer hours' own fields (``answers`` in the truth, their knobs in world.json).
    always = tmp_path / "always"
    simulate(always, dataclasses.replace(SMALL, answer_hours="always"))
    for name, digest in GOLDEN.items():
        raw = (always / name).read_bytes()
        if name == "truth.jsonl":
            rows = [orjson.loads(line) for line in raw.splitlines()]
            assert all(row.pop("answers") is None for row in rows)
            raw = b"".join(orjson.dumps(row) + b"\n" for row in rows)
        elif name == "world.json":
            summary = orjson.loads(raw)
            assert summary["params"]["answer_hours"] == "always"
            for key in ANSWER_PARAMS:
                del summary["params"][key]
            raw = orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n"
        assert hashlib.sha256(raw).hexdigest() == digest, name
    # The default preset answers in the subscribers' own hours: the same subscribers and
    # billing events (amounts differ only where a join or port-out cuts a day's calls),
    # the calls' hours and answers moved.
    default = worlds["default"]
    assert (default / "subscribers.jsonl").read_bytes() == \
        (always / "subscribers.jsonl").read_bytes()
    assert [(b["ts"], b["kind"]) for b in _lines(default / "billing.jsonl")] == [
        (b["ts"], b["kind"]) for b in _lines(always / "billing.jsonl")]
    assert (default / "calls.jsonl").read_bytes() != (always / "calls.jsonl").read_bytes()


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_line_of_every_preset_is_accepted_by_the_validator(
        worlds: dict[str, Path], name: str) -> None:
    validator = Validator()
    for kind in ("calls", "billing", "subscribers"):
        lines = (worlds[name] / f"{kind}.jsonl").read_bytes().splitlines()
        assert lines, kind
        for raw in lines:
            result = validator.check(kind, raw)
            assert result.ok, (name, kind, raw, result)
    summary = json.loads((worlds[name] / "world.json").read_text())
    assert summary["params"].get("preset", "default") == name


def test_no_cells_is_the_default_world_without_cell_ids(worlds: dict[str, Path]) -> None:
    default = _lines(worlds["default"] / "calls.jsonl")
    bare = _lines(worlds["no-cells"] / "calls.jsonl")
    assert any(c["cell_id"] for c in default)
    assert all(c["cell_id"] is None for c in bare)
    assert bare == [{**c, "cell_id": None} for c in default]  # nothing else changed
    for name in ("truth.jsonl", "groups.jsonl", "billing.jsonl"):
        assert (worlds["no-cells"] / name).read_bytes() == (worlds["default"] / name).read_bytes()


def _trip_cells(world: Path) -> tuple[int, dict[str, set[str]], dict[str, set[str]]]:
    """(trips with calls, cells seen on trip days, cells seen on other days) per subscriber."""
    truth = {t["subscriber_id"]: t for t in _lines(world / "truth.jsonl")}
    start = json.loads((world / "world.json").read_text())["start"][:10]
    from datetime import date

    day0 = date.fromisoformat(start)
    away: dict[str, set[str]] = defaultdict(set)
    home: dict[str, set[str]] = defaultdict(set)
    for c in _lines(world / "calls.jsonl"):
        if c["cell_id"] is None:
            continue
        day = (date.fromisoformat(c["ts"][:10]) - day0).days
        trips = truth[c["subscriber_id"]]["trips"]
        on_trip = any(t["start_day"] <= day < t["end_day"] for t in trips)
        (away if on_trip else home)[c["subscriber_id"]].add(c["cell_id"])
    return sum(len(t["trips"]) for t in truth.values()), away, home


def test_trips_at_home_change_no_cell_and_forward_off_net(worlds: dict[str, Path]) -> None:
    trips, away, home = _trip_cells(worlds["trips-at-home"])
    assert trips >= 5 and away
    for sid, cells in away.items():
        # One cell all through the trip, and one the subscriber is seen in at home.
        assert len(cells) == 1 and cells <= home[sid], (sid, cells)
    truth = _lines(worlds["trips-at-home"] / "truth.jsonl")
    trip_forwards = [f for t in truth for f in t["forwarding"]
                     if f["why"] in ("trip", "holiday_trip")]
    assert trip_forwards and not any(f["on_net"] for f in trip_forwards)
    for t in truth:
        for f in t["forwarding"]:
            if f["why"] in ("trip", "holiday_trip"):
                assert any((tr["start_day"], tr["end_day"]) == (f["start_day"], f["end_day"])
                           for tr in t["trips"])  # forwarding ends when the person returns
    # The default world's trips do change cells (roaming): the check above can fail.
    _, away_default, _ = _trip_cells(worlds["default"])
    assert any(c.startswith("R") for cells in away_default.values() for c in cells)


def test_trips_at_home_keep_the_cast(worlds: dict[str, Path]) -> None:
    default = _lines(worlds["default"] / "truth.jsonl")
    at_home = _lines(worlds["trips-at-home"] / "truth.jsonl")
    strip = ("forwarding",)
    assert [{k: v for k, v in t.items() if k not in strip} for t in default] == \
        [{k: v for k, v in t.items() if k not in strip} for t in at_home]


def test_symmetric_decay_incoming_falls_with_outgoing() -> None:
    for name, same in (("symmetric-decay", True), ("default", False)):
        w = World(apply_preset(name, dataclasses.replace(SMALL, holiday_days=0)))
        seen = 0
        for s in w.subs:
            if s.kind != "individual_churn" or s.trips or s.churn_start is None:
                continue
            for day in range(s.churn_start + 1, s.churn_start + s.decay_days):
                out, inc = w.activity(s, day, 2)
                seen += 1
                assert (out == pytest.approx(inc)) is same, (name, s.sid, day, out, inc)
        assert seen > 20


def _dispersion(world: Path) -> float:
    """Mean variance-to-mean ratio of stable business subscribers' weekday outgoing calls."""
    truth = {t["subscriber_id"]: t for t in _lines(world / "truth.jsonl")}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    from datetime import date

    for c in _lines(world / "calls.jsonl"):
        t = truth[c["subscriber_id"]]
        d = c["ts"][:10]
        if c["direction"] == "out" and t["kind"] == "stable" and t["segment"] != "consumer" \
                and date.fromisoformat(d).weekday() < 5 and not t["trips"]:
            counts[c["subscriber_id"]][d] += 1
    ratios = []
    for per_day in counts.values():
        values = list(per_day.values())
        if len(values) >= 15 and statistics.mean(values) >= 3:
            ratios.append(statistics.variance(values) / statistics.mean(values))
    assert len(ratios) >= 8
    return statistics.mean(ratios)


def test_plain_noise_counts_are_poisson(tmp_path: Path) -> None:
    # Outside the holiday, so that the rhythm is the week's alone.
    base = dataclasses.replace(SMALL, holiday_days=0, drift=0.0)
    for name in ("plain-noise", "default"):
        simulate(tmp_path / name, apply_preset(name, base))
    assert _dispersion(tmp_path / "plain-noise") < 1.3 < _dispersion(tmp_path / "default")


def test_slow_decay_decays_over_28_to_70_days() -> None:
    w = World(apply_preset("slow-decay", WorldParams(subscribers=400, days=120, seed=2)))
    decays = [s.decay_days for s in w.subs if s.kind == "individual_churn"]
    assert len(decays) > 10 and min(decays) >= 28 and max(decays) <= 70
    assert max(decays) > 49  # beyond the default world's longest


def test_mixed_draws_its_knobs_from_the_seed() -> None:
    drawn = [apply_preset("mixed", WorldParams(seed=seed)) for seed in range(1, 9)]
    assert drawn == [apply_preset("mixed", WorldParams(seed=seed)) for seed in range(1, 9)]
    for field in ("cell_ids", "trip_cells", "trip_forward_off_net", "churn_in_follow",
                  "daily_noise", "churn_decay_days"):
        assert len({getattr(p, field) for p in drawn}) > 1, field
    assert all(p.preset == "mixed" and 0.5 <= p.churn_in_follow <= 1.0
               and 0.0 <= p.daily_noise <= 0.3 for p in drawn)


def test_simulate_command_takes_a_preset(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from stream.tools import simulate

    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    args = parser.parse_args(["--subscribers", "10", "--days", "5", "--out", str(tmp_path),
                              "--preset", "no-cells", "--set", "daily_noise=0", "--quiet"])
    assert simulate.run(args) == 0
    params = json.loads((tmp_path / "world.json").read_text())["params"]
    assert (params["preset"], params["cell_ids"], params["daily_noise"]) == (
        "no-cells", "none", 0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", str(tmp_path), "--preset", "no-such"])


def test_simulate_says_the_holiday_as_the_calendar_the_settings_take(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from stream.settings import Settings
    from stream.tools import simulate

    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    args = parser.parse_args(["--subscribers", "10", "--days", "60", "--out", str(tmp_path),
                              "--quiet"])
    assert simulate.run(args) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("holiday 2026-02-15..2026-02-23: ")
    name, _, value = line.rpartition(" ")[2].partition("=")
    assert Settings.from_env({name: value}).engine_config().holidays == (
        "2026-02-15..2026-02-23",)
