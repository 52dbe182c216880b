"""The holiday floor: non-churners whose holiday trip forwards calls to another operator.

A stay away with incoming calls forwarded to another operator's number is yellow while it
may be a trip (docs/detectors.md, "Stays away"): a quiet line forwarding to one number
looks, in its first days, like a churner moving to a competitor. The ceiling
(:func:`stream.tools.ceiling.detectability`) counts such a churner detectable once
:data:`~stream.tools.ceiling.DETECT_MIN_FORWARDED` calls are forwarded to the new number;
a holiday trip that forwards as many calls off-net looks the same by then, unless its calls
come from other cells. So in a world whose trips change no cell (``cell_ids`` ``home`` or
``none``, or ``trip_cells`` ``home``: the ``no-cells`` and ``trips-at-home`` presets), a
detector that holds these stays at yellow and reaches the ceiling raises yellow on every
such trip: their share of the subscribers present in the holiday is the least yellow+
holiday false alerts the world allows, as ``alert_floor_per_1000_per_week`` is the least
volume. Where trips show in the cells, the cells can tell them apart, and the floor is 0.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from stream.tools.ceiling import DETECT_MIN_FORWARDED
from stream.tools.world import World, parse_ts


def holiday_floor(world: World, calls: Path | None = None) -> dict[str, Any]:
    """Non-churners present in the holiday whose holiday trip forwards at least
    ``DETECT_MIN_FORWARDED`` calls off-net during it (``truth.jsonl``'s ``forwarding``
    with ``why == "holiday_trip"`` and ``on_net`` false, counted in ``calls.jsonl``).

    Returns ``subscribers`` (how many), ``present``, ``pct`` (of those present) and
    ``trips_in_cells`` (whether trips show in the cells: then ``subscribers`` is 0), all
    ``None`` for a world without a holiday.
    """
    if world.holiday is None:
        return {"subscribers": None, "present": None, "pct": None, "trips_in_cells": None}
    params = world.summary.get("params", {})
    in_cells = (params.get("cell_ids", "varied") == "varied"
                and params.get("trip_cells", "roaming") == "roaming")
    start, end = world.holiday
    present = world.present_between(start, end)
    targets = {sid: {f["to"] for f in t.get("forwarding") or ()
                     if f.get("why") == "holiday_trip" and not f.get("on_net")}
               for sid in present if not (t := world.subscribers[sid])["churn"]}
    targets = {sid: numbers for sid, numbers in targets.items() if numbers and not in_cells}
    forwarded: Counter[str] = Counter()
    path = calls or world.directory / "calls.jsonl"
    if targets and path.exists():
        with path.open("rb") as handle:
            for line in handle:
                if b'"forwarded_to":null' in line:
                    continue  # most calls: skip the parse
                e = orjson.loads(line)
                sid = e["subscriber_id"]
                if (sid in targets and e.get("forwarded_to") in targets[sid]
                        and start <= parse_ts(e["ts"]) < end):
                    forwarded[sid] += 1
    floor = sum(1 for n in forwarded.values() if n >= DETECT_MIN_FORWARDED)
    return {"subscribers": floor, "present": len(present),
            "pct": round(100.0 * floor / len(present), 3) if present else None,
            "trips_in_cells": in_cells}
