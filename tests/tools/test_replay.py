"""`churnwatch replay`: alerts as the stream publishes them, bad lines dead-lettered."""

from __future__ import annotations

import argparse
import base64
import shutil
from collections import Counter
from pathlib import Path

import fastjsonschema
import orjson
import pytest

from detectors.calibration import OutcomeLearner
from stream.cli import build_parser
from stream.contracts import schema
from stream.tools.replay import replay_directory, run
from stream.tools.simulator import WorldParams, simulate

ALERT = fastjsonschema.compile(schema("alert"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    simulate(out, WorldParams(subscribers=150, days=70, seed=5))
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(["replay", *argv])


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_alerts_validate_against_the_alert_contract(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    assert run(parse([str(world), "--out", str(out)])) == 0
    alerts = read_jsonl(out)
    assert alerts, "a 150-subscriber world with churners raises alerts"
    for alert in alerts:
        ALERT(alert)
    assert len({a["alert_id"] for a in alerts}) == len(alerts)


def test_replay_is_deterministic(world: Path) -> None:
    first = list(replay_directory(world))
    second = list(replay_directory(world))
    assert first == second


def test_bad_lines_are_dead_lettered_and_change_nothing_else(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dirty = tmp_path / "dirty"
    shutil.copytree(world, dirty)
    good_lines = (world / "calls.jsonl").read_bytes().splitlines(keepends=True)
    bad = [
        b'{"event_id": "x1", "ts": "2026-01-06T10:00:00+08:00"\n',  # malformed JSON
        b'\xff\xfe not text\n',  # not UTF-8
        b'{"event_id": "x2"}\n',  # missing fields
        orjson.dumps({**orjson.loads(good_lines[0]), "event_id": "x3", "duration_s": -4})
        + b"\n",  # absurd
    ]
    mixed = good_lines[:10] + bad + good_lines[10:]
    (dirty / "calls.jsonl").write_bytes(b"".join(mixed))

    dead = tmp_path / "bad.jsonl"
    assert run(parse([str(dirty), "--out", str(tmp_path / "a.jsonl"),
                      "--dead-letter", str(dead)])) == 0
    letters = read_jsonl(dead)
    assert [d["reason"] for d in letters] == [
        "malformed_json", "not_utf8", "schema", "absurd_value"]
    assert [d["offset"] for d in letters] == [11, 12, 13, 14]  # line numbers
    assert [base64.b64decode(d["raw_base64"]) + b"\n" for d in letters] == bad
    assert "4 rejected" in capsys.readouterr().err

    def comparable(alerts: list[dict]) -> list[dict]:
        return [{k: v for k, v in a.items() if k != "emitted_at"} for a in alerts]

    # The CLI runs the group stage by default, outcome learning as the service's
    # CHURNWATCH_CALIBRATION says (off by default) or when asked.
    assert comparable(read_jsonl(tmp_path / "a.jsonl")) == list(
        replay_directory(world, groups=True))
    assert run(parse([str(dirty), "--out", str(tmp_path / "b.jsonl"),
                      "--calibration"])) == 0
    assert comparable(read_jsonl(tmp_path / "b.jsonl")) == list(
        replay_directory(world, groups=True, learner=OutcomeLearner()))


def test_duplicate_deliveries_are_counted_and_change_nothing(
    world: Path, tmp_path: Path
) -> None:
    dup = tmp_path / "dup"
    shutil.copytree(world, dup)
    lines = (world / "billing.jsonl").read_bytes().splitlines(keepends=True)
    # Mediation re-sends a few events right after the original.
    resent = []
    for i, line in enumerate(lines):
        resent.append(line)
        if i % 97 == 0:
            resent.append(line)
    (dup / "billing.jsonl").write_bytes(b"".join(resent))
    counts: Counter[str] = Counter()
    assert list(replay_directory(dup, counters=counts)) == list(replay_directory(world))
    assert counts["engine.duplicate"] == len(resent) - len(lines)


def test_missing_files_are_fine_and_an_empty_directory_is_an_error(
    world: Path, tmp_path: Path
) -> None:
    only_calls = tmp_path / "only_calls"
    only_calls.mkdir()
    shutil.copy(world / "calls.jsonl", only_calls)
    counts: Counter[str] = Counter()
    list(replay_directory(only_calls, counters=counts))
    assert counts["engine.unknown_profile"] > 0  # events without a profile are tracked
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(parse([str(empty)])) == 2
    assert run(parse([str(tmp_path / "nope")])) == 2


def test_the_replay_takes_the_workers_engine_settings(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's CHURNWATCH_ENGINE__* override reaches the worker's engines; the replay
    # must raise the same alerts, so it takes them too (here: red only above 0.99).
    import dataclasses

    from detectors import EngineConfig
    from stream.contracts.ported import PORTED_FILE, load_ported_numbers

    plain = tmp_path / "plain.jsonl"
    assert run(parse([str(world), "--out", str(plain)])) == 0
    monkeypatch.setenv("CHURNWATCH_ENGINE__RED", "0.99")
    strict = tmp_path / "strict.jsonl"
    assert run(parse([str(world), "--out", str(strict)])) == 0
    zones = [Counter(a["zone"] for a in read_jsonl(p)) for p in (plain, strict)]
    assert zones[0]["red"] > zones[1]["red"]
    config = dataclasses.replace(
        EngineConfig(ported_numbers=load_ported_numbers(world / PORTED_FILE)), red=0.99)
    expected = list(replay_directory(world, engine_config=config))
    assert [{k: v for k, v in a.items() if k != "emitted_at"} for a in read_jsonl(strict)
            ] == [orjson.loads(orjson.dumps(a)) for a in expected]
