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


def _own(sid: str, day: int, month: int = 2) -> dict[str, Any]:
    """A call of the subscriber's own, placed from a cell."""
    return {"event_id": f"{sid}-own-{month}-{day}",
            "ts": f"2026-{month:02d}-{day:02d}T09:00:00{TZ}", "subscriber_id": sid,
            "direction": "out", "other_party": "15000000000", "duration_s": 60,
            "charge": 0.1, "forwarded_to": None, "cell_id": "C00042"}


def _world(tmp_path: Path, params: dict[str, Any]) -> World:
    subs = {
        "S1": _truth("S1"),  # two calls forwarded off-net in the holiday: on the floor
        "S2": _truth("S2"),  # one call only: a one-off divert
        "S3": _truth("S3", churn=True),  # a churner: not a false alert
        "S4": _truth("S4", to=ON_NET, on_net=True),  # forwarded to our own network
        "S5": _truth("S5", why="trip"),  # another trip, its second call in the holiday
        "S6": {"subscriber_id": "S6", "churn": False, "join_ts": None, "port_out_ts": None,
               "forwarding": []},
        "S7": _truth("S7"),  # calls from the trip before its second forwarded call
        "S8": _truth("S8"),  # calls from the trip only after its second forwarded call
        "S9": _truth("S9"),  # calls only before the trip (from home)
        "S10": _truth("S10", why="trip"),  # its second call before the holiday
    }
    calls = [_forwarded("S1", COMPETITOR, 16), _forwarded("S1", COMPETITOR, 17),
             _forwarded("S1", COMPETITOR, 28),  # after the holiday: not counted
             _forwarded("S2", COMPETITOR, 16), _forwarded("S2", COMPETITOR, 28),
             _forwarded("S3", COMPETITOR, 16), _forwarded("S3", COMPETITOR, 17),
             _forwarded("S4", ON_NET, 16), _forwarded("S4", ON_NET, 17),
             _forwarded("S5", COMPETITOR, 16), _forwarded("S5", COMPETITOR, 17),
             _forwarded("S7", COMPETITOR, 17), _own("S7", 16), _forwarded("S7", COMPETITOR, 15),
             _forwarded("S8", COMPETITOR, 15), _forwarded("S8", COMPETITOR, 16), _own("S8", 17),
             _own("S9", 20, month=1), _forwarded("S9", COMPETITOR, 15),
             _forwarded("S9", COMPETITOR, 16),
             {**_forwarded("S10", COMPETITOR, 14), "event_id": "S10-a"},
             _forwarded("S10", COMPETITOR, 14), _forwarded("S10", COMPETITOR, 16)]
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
    # S1, S5, S7, S8 and S9: their own calls cannot show a trip.
    for params in ({"cell_ids": "none"}, {"cell_ids": "home"},
                   {"cell_ids": "varied", "trip_cells": "home"}):
        floor = holiday_floor(_world(tmp_path, params))
        assert floor == {"subscribers": 5, "present": 10, "pct": 50.0,
                         "trips_in_cells": False}


def test_where_trips_show_in_the_cells_only_quiet_travellers_are_on_the_floor(
        tmp_path: Path) -> None:
    # S7 called from the trip before its second forwarded call: the cells told. S1 and S5
    # made no call of their own, S8 only after the bar, S9 only from home before the trip.
    floor = holiday_floor(_world(tmp_path, {"cell_ids": "varied", "trip_cells": "roaming"}))
    assert floor == {"subscribers": 4, "present": 10, "pct": 40.0,
                     "trips_in_cells": True}
    assert holiday_floor(_world(tmp_path, {}))["trips_in_cells"] is True  # the defaults


def test_the_floor_does_not_depend_on_the_order_of_the_lines(tmp_path: Path) -> None:
    world = _world(tmp_path, {})
    path = tmp_path / "calls.jsonl"
    path.write_text("".join(reversed(path.read_text().splitlines(keepends=True))))
    assert holiday_floor(world)["subscribers"] == 4


def test_no_holiday_no_floor(tmp_path: Path) -> None:
    world = _world(tmp_path, {"cell_ids": "none"})
    world.holiday = None
    assert holiday_floor(world)["pct"] is None
