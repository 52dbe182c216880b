"""The holiday floor: who a detector holding possible trips at yellow must alert."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from stream.tools.evaluate import World
from stream.tools.holiday_floor import holiday_floor

TZ = "+08:00"
COMPETITOR = "18912345678"  # China Telecom
ON_NET = "13812345678"  # China Mobile, the operator's own


def _truth(sid: str, *, churn: bool = False, to: str = COMPETITOR, why: str = "holiday_trip",
           on_net: bool = False) -> dict[str, Any]:
    return {"subscriber_id": sid, "churn": churn, "join_ts": None, "port_out_ts": None,
            "forwarding": [{"start_day": 40, "end_day": 46, "to": to, "why": why,
                            "on_net": on_net}]}


def _forwarded(sid: str, to: str, day: int) -> dict[str, Any]:
    return {"event_id": f"{sid}-{day}", "ts": f"2026-02-{day:02d}T10:00:00{TZ}",
            "subscriber_id": sid, "direction": "in", "other_party": "15000000000",
            "duration_s": 0, "charge": 0.0, "forwarded_to": to, "cell_id": None}


def _world(tmp_path: Path, params: dict[str, Any]) -> World:
    subs = {
        "S1": _truth("S1"),  # two calls forwarded off-net in the holiday: on the floor
        "S2": _truth("S2"),  # one call only: a one-off divert
        "S3": _truth("S3", churn=True),  # a churner: not a false alert
        "S4": _truth("S4", to=ON_NET, on_net=True),  # forwarded to our own network
        "S5": _truth("S5", why="trip"),  # a trip outside the holiday's reasons
        "S6": {"subscriber_id": "S6", "churn": False, "join_ts": None, "port_out_ts": None,
               "forwarding": []},
    }
    calls = [_forwarded("S1", COMPETITOR, 16), _forwarded("S1", COMPETITOR, 17),
             _forwarded("S1", COMPETITOR, 28),  # after the holiday: not counted
             _forwarded("S2", COMPETITOR, 16), _forwarded("S2", COMPETITOR, 28),
             _forwarded("S3", COMPETITOR, 16), _forwarded("S3", COMPETITOR, 17),
             _forwarded("S4", ON_NET, 16), _forwarded("S4", ON_NET, 17),
             _forwarded("S5", COMPETITOR, 16), _forwarded("S5", COMPETITOR, 17)]
    (tmp_path / "calls.jsonl").write_text("".join(json.dumps(c, separators=(",", ":")) + "\n"
                                                  for c in calls))
    return World(directory=tmp_path,
                 start=datetime.fromisoformat(f"2026-01-05T00:00:00{TZ}"),
                 end=datetime.fromisoformat(f"2026-05-05T00:00:00{TZ}"),
                 subscribers=subs, groups={},
                 holiday=(datetime.fromisoformat(f"2026-02-15T00:00:00{TZ}"),
                          datetime.fromisoformat(f"2026-02-24T00:00:00{TZ}")),
                 summary={"params": params})


def test_trips_that_change_no_cell_set_the_floor(tmp_path: Path) -> None:
    for params in ({"cell_ids": "none"}, {"cell_ids": "home"},
                   {"cell_ids": "varied", "trip_cells": "home"}):
        floor = holiday_floor(_world(tmp_path, params))
        assert floor == {"subscribers": 1, "present": 6, "pct": round(100 / 6, 3),
                         "trips_in_cells": False}


def test_trips_that_show_in_the_cells_leave_no_floor(tmp_path: Path) -> None:
    floor = holiday_floor(_world(tmp_path, {"cell_ids": "varied", "trip_cells": "roaming"}))
    assert floor["subscribers"] == 0 and floor["trips_in_cells"] is True
    assert holiday_floor(_world(tmp_path, {}))["trips_in_cells"] is True  # the defaults


def test_no_holiday_no_floor(tmp_path: Path) -> None:
    world = _world(tmp_path, {"cell_ids": "none"})
    world.holiday = None
    assert holiday_floor(world)["pct"] is None
