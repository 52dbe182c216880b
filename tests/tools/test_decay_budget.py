"""Silent decliners within the volume budget, on hand-made worlds."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from stream.tools.decay_budget import decay_budget
from stream.tools.evaluate import World

TZ = "+08:00"
START = datetime.fromisoformat(f"2026-01-05T00:00:00{TZ}")
DAYS = 120


def _sub(sid: str, kind: str = "stable", port_out_day: int | None = None) -> dict[str, Any]:
    port_out = START + timedelta(days=port_out_day, hours=12) if port_out_day else None
    return {"subscriber_id": sid, "kind": kind, "churn": kind != "stable",
            "segment": "consumer", "join_ts": None,
            "port_out_ts": port_out.isoformat() if port_out else None,
            "forwarding": [], "trips": []}


def _world(tmp_path: Path, daily: dict[str, list[int]], subs: dict[str, dict[str, Any]]
           ) -> World:
    lines = []
    for sid, per_day in daily.items():
        for day, n in enumerate(per_day):
            for k in range(n):
                ts = START + timedelta(days=day, hours=9, minutes=k)
                lines.append(json.dumps({"subscriber_id": sid, "direction": "out",
                                         "ts": ts.isoformat()}))
    (tmp_path / "calls.jsonl").write_text("\n".join(lines) + "\n")
    return World(directory=tmp_path, start=START, end=START + timedelta(days=DAYS),
                 subscribers=subs, groups={}, holiday=None)


def test_a_clear_fall_is_caught_when_nobody_else_dips(tmp_path: Path) -> None:
    subs = {f"s{i}": _sub(f"s{i}") for i in range(10)}
    subs["c"] = _sub("c", "individual_churn", port_out_day=80)
    daily = {sid: [5] * DAYS for sid in subs}
    daily["c"] = [5] * 40 + [0] * 40  # silent from day 40, gone on day 80
    result = decay_budget(_world(tmp_path, daily, subs))
    assert result["silent_churners"] == 1
    assert result["caught_7d"] == 1 and result["false_per_1000_per_week"] == 0
    assert 0 < result["budget_per_1000_per_week"] < 8


def test_a_calm_dip_as_deep_uses_up_a_budget_of_none(tmp_path: Path) -> None:
    # A non-churner silent as long as the churner, before coming back: any threshold that
    # catches the churner alarms them too, and the budget allows no false alert at all
    # (three churners in a world this small leave nothing under the volume target).
    subs = {f"s{i}": _sub(f"s{i}") for i in range(10)}
    for sid in ("c", "d", "e"):
        subs[sid] = _sub(sid, "individual_churn", port_out_day=80)
    daily = {sid: [5] * DAYS for sid in subs}
    for sid in ("c", "d", "e"):
        daily[sid] = [5] * 40 + [0] * 40
    daily["s0"] = [5] * 40 + [0] * 40 + [5] * 40
    result = decay_budget(_world(tmp_path, daily, subs))
    assert result["budget_per_1000_per_week"] == 0
    assert result["caught_7d"] == 0 and result["rho"] is None
