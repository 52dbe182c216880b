"""`churnwatch replay` as a worker: a detector exception is logged and counted, and the
replay goes on."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import orjson
import pytest

import detectors
from stream.tools.replay import replay_directory
from stream.tools.simulator import WorldParams, simulate


def test_an_engine_exception_is_counted_logged_without_the_subscriber_and_replay_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    simulate(tmp_path, WorldParams(subscribers=40, days=20, seed=5))
    lines = (tmp_path / "calls.jsonl").read_bytes().splitlines()
    bad = orjson.loads(lines[len(lines) // 2])
    process = detectors.Engine.process
    calls = Counter()  # engine calls: before and after the failing one

    def failing(self, kind, event, ts=None):
        if event.get("event_id") == bad["event_id"]:
            calls["failed"] += 1
            raise KeyError(event["subscriber_id"])  # its text holds the subscriber id
        calls["after" if calls["failed"] else "before"] += 1
        return process(self, kind, event, ts)

    clean: Counter[str] = Counter()
    list(replay_directory(tmp_path, counters=clean))
    monkeypatch.setattr(detectors.Engine, "process", failing)
    counts: Counter[str] = Counter()
    with caplog.at_level(logging.ERROR):
        list(replay_directory(tmp_path, counters=counts))
    assert counts["engine_error.calls"] == 1 and calls["failed"] == 1
    assert counts["accepted.calls"] == clean["accepted.calls"] - 1
    # Every other accepted event (and profile) still reached the engines.
    processed = sum(v for k, v in clean.items() if k.startswith("accepted."))
    assert calls["before"] + calls["after"] == processed - 1 and calls["after"] > 0
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(messages) == 1 and "KeyError" in messages[0]
    assert bad["subscriber_id"] not in messages[0]
