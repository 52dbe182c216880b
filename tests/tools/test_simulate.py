"""``churnwatch simulate``: the command line, presets and overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.tools.simulator import WorldParams


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from stream.tools import simulate

    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    args = parser.parse_args(["--subscribers", "12", "--days", "9", "--seed", "4",
                              "--out", str(tmp_path), "--start", "2026-03-02"])
    assert simulate.run(args) == 0
    captured = capsys.readouterr()
    assert "12 subscribers, 9 days" in captured.out and "day 9/9" in captured.err
    first = json.loads((tmp_path / "calls.jsonl").read_bytes().splitlines()[0])
    assert first["ts"].startswith("2026-03-02T")


def test_overrides() -> None:
    from datetime import date

    from stream.tools.simulate import with_overrides

    p = with_overrides(WorldParams(), ["collective_share=0.3", "trip_days=[5, 9]",
                                       "holiday_start=2026-02-01", "voicemail_number=12580"])
    assert (p.collective_share, p.trip_days, p.holiday_start, p.voicemail_number) == (
        0.3, (5, 9), date(2026, 2, 1), "12580")
    with pytest.raises(ValueError, match="NAME=VALUE"):
        with_overrides(WorldParams(), ["no_such_knob=1"])
