"""The holiday floor: non-churners whose trip forwards calls to another operator in the holiday.

A stay away with incoming calls forwarded to another operator's number is yellow while it
may be a trip (docs/detectors.md, "Stays away"): a quiet line forwarding to one number
looks, in its first days, like a churner moving to a competitor. The ceiling
(:func:`stream.tools.ceiling.detectability`) counts such a churner detectable once
:data:`~stream.tools.ceiling.DETECT_MIN_FORWARDED` calls are forwarded to the new number;
a holiday trip that forwards as many calls off-net looks the same by then, unless a call of
the traveller's own comes from another cell first. In a world whose trips change no cell
(``cell_ids`` ``home`` or ``none``, or ``trip_cells`` ``home``: the ``no-cells`` and
``trips-at-home`` presets) none does; where trips show in the cells, a traveller who makes
no call of their own on the trip before then (a quiet line) shows nothing either. A
detector that holds these stays at yellow and reaches the ceiling raises yellow on every
such trip, at the call that meets the bar: those whose bar falls in the holiday (holiday
trips, and other trips that overlap it), as a share of the subscribers present in it, are
the least yellow+ holiday false alerts the world allows, as
``alert_floor_per_1000_per_week`` is the least volume.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from stream.tools.ceiling import DETECT_MIN_FORWARDED
from stream.tools.world import World, parse_ts

#: The simulator's reasons for a traveller's forwarding.
TRIPS = ("holiday_trip", "trip")


def holiday_floor(world: World, calls: Path | None = None) -> dict[str, Any]:
    """Non-churners present in the holiday whose trip's ``DETECT_MIN_FORWARDED``-th call
    forwarded off-net falls in the holiday (``truth.jsonl``'s ``forwarding`` with ``why``
    ``holiday_trip`` or ``trip`` and ``on_net`` false, counted in ``calls.jsonl`` from the
    trip's start), before any call of their own from a cell on the trip where trips show
    in the cells.

    Returns ``subscribers`` (how many), ``present``, ``pct`` (of those present) and
    ``trips_in_cells`` (whether a traveller's own calls show the trip), all ``None`` for
    a world without a holiday.
    """
    if world.holiday is None:
        return {"subscribers": None, "present": None, "pct": None, "trips_in_cells": None}
    params = world.summary.get("params", {})
    in_cells = (params.get("cell_ids", "varied") == "varied"
                and params.get("trip_cells", "roaming") == "roaming")
    start, end = world.holiday
    present = world.present_between(start, end)
    # Per non-churner: the off-net numbers of their trip's forwarding, and when the trip
    # began (their own calls from then on come from the trip's cells).
    trips: dict[str, tuple[set[str], datetime]] = {}
    for sid in present:
        t = world.subscribers[sid]
        if t["churn"]:
            continue
        legs = [f for f in t.get("forwarding") or ()
                if f.get("why") in TRIPS and not f.get("on_net")]
        if legs:
            trips[sid] = ({f["to"] for f in legs}, world.start + timedelta(
                days=min(f["start_day"] for f in legs)))
    forwarded: dict[str, list[datetime]] = {sid: [] for sid in trips}
    own: dict[str, datetime] = {}  # the first call of their own from a cell on the trip
    path = calls or world.directory / "calls.jsonl"
    if trips and path.exists():
        with path.open("rb") as handle:
            for line in handle:
                e = orjson.loads(line)
                sid = e["subscriber_id"]
                if sid not in trips:
                    continue
                ts = parse_ts(e["ts"])
                targets, began = trips[sid]
                if e.get("forwarded_to") in targets:
                    if began <= ts < end:
                        forwarded[sid].append(ts)
                elif in_cells and e.get("cell_id") is not None and began <= ts < end:
                    own[sid] = min(ts, own.get(sid, ts))
    floor = 0
    for sid, times in forwarded.items():
        if len(times) >= DETECT_MIN_FORWARDED:
            bar = sorted(times)[DETECT_MIN_FORWARDED - 1]
            floor += start <= bar and (sid not in own or bar < own[sid])
    return {"subscribers": floor, "present": len(present),
            "pct": round(100.0 * floor / len(present), 3) if present else None,
            "trips_in_cells": in_cells}
