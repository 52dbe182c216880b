"""Silent decliners within the volume budget: what a fall detector can catch at the
false-alarm rate the alert-volume target leaves.

The ceiling (:func:`stream.tools.ceiling.detectability`) counts a silent decliner (a
churner whose outgoing calls fall, with no forwarding) detectable when an oracle that
knows the day the fall began sees enough evidence by port-out minus 7 days. A detector
does not know that day, and every non-churner whose calls dip for a while costs it a false
alert. The volume target (8 alerts per 1,000 subscribers a week) less the floor (one
alert per churner who ports out, ``alert_floor_per_1000_per_week``) is all the false
alerts a world allows; this module asks how many silent decliners a detector can catch
within it.

The detector: a one-sided Poisson CUSUM on each subscriber's daily outgoing calls (Page's
test, optimal for a step change of known size with an unknown onset), with each
subscriber's own rate over their first :data:`BASE_DAYS` days and the day factors of the
segment's stable subscribers (as the ceiling's oracle has them), against a fall to
``rho`` of that rate, for ``rho`` in :data:`RHOS`. The threshold is the lowest of
:data:`THRESHOLDS` at which the non-churners it alarms (each once, at most) stay within
the budget; the non-churners who travel are left out of that count, so the figure is
generous to the detector. Returns the most silent decliners caught 7 days ahead over the
``rho`` tried.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from stream.tools.ceiling import LEAD_DAYS, day_factors
from stream.tools.world import DAY_S, World, churner_type, parse_ts

#: The alerts per 1,000 subscribers a week the suite allows (its volume target).
VOLUME_TARGET = 8.0
#: Days of a subscriber's history that set their own rate.
BASE_DAYS = 28
#: Falls the CUSUM is set for (the alternative rate over the base rate).
RHOS = (0.3, 0.5, 0.7)
#: Thresholds tried (log-likelihood ratio).
THRESHOLDS = (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0)


def decay_budget(world: World, calls: Path | None = None) -> dict[str, Any]:
    """Silent decliners a CUSUM catches 7 days ahead within the volume budget.

    Returns ``budget_per_1000_per_week`` (the volume target less the floor),
    ``silent_churners`` (who ported out inside the world), ``caught_7d`` (the most caught
    over :data:`RHOS`), and that detector's ``rho``, ``threshold`` and
    ``false_per_1000_per_week``; ``caught_7d`` is 0 when no threshold tried keeps within
    the budget.
    """
    subs = world.subscribers
    n_days = max(1, round((world.end - world.start).total_seconds() / DAY_S))
    counts = _outgoing_by_day(world, calls or world.directory / "calls.jsonl", n_days)
    factor = _segment_factors(world, counts, n_days)
    weeks = world.subscriber_weeks() / 1000.0
    leavers = [sid for sid, t in subs.items() if t["churn"] and t.get("port_out_ts")]
    floor = len(leavers) / weeks if weeks else 0.0
    budget = max(0.0, VOLUME_TARGET - floor)
    silent = [sid for sid in leavers if churner_type(subs[sid]) == "individual_silent"]
    calm = [sid for sid, t in subs.items() if not t["churn"] and not t.get("trips")]
    best: dict[str, Any] = {"caught_7d": 0, "rho": None, "threshold": None,
                            "false_per_1000_per_week": None}
    for rho in RHOS:
        peaks = {sid: _peak(world, sid, counts, factor, rho) for sid in calm}
        threshold = next((h for h in THRESHOLDS
                          if sum(1 for p in peaks.values() if p >= h) / weeks <= budget),
                         None) if weeks else None
        if threshold is None:
            continue
        caught = 0
        for sid in silent:
            cutoff = parse_ts(subs[sid]["port_out_ts"]) - world.start
            last = math.floor(cutoff.total_seconds() / DAY_S) - LEAD_DAYS
            if _peak(world, sid, counts, factor, rho, before=last) >= threshold:
                caught += 1
        if caught > best["caught_7d"] or best["rho"] is None:
            false = sum(1 for p in peaks.values() if p >= threshold) / weeks
            best = {"caught_7d": caught, "rho": rho, "threshold": threshold,
                    "false_per_1000_per_week": round(false, 2)}
    return {"budget_per_1000_per_week": round(budget, 2), "silent_churners": len(silent),
            **best}


def _outgoing_by_day(world: World, path: Path, n_days: int) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * n_days)
    if not path.exists():
        return counts
    with path.open("rb") as handle:
        for line in handle:
            e = orjson.loads(line)
            if e["direction"] != "out":
                continue
            day = world.day(e["ts"])
            if 0 <= day < n_days:
                counts[e["subscriber_id"]][day] += 1
    return counts


def _segment_factors(world: World, counts: dict[str, list[int]], n_days: int
                     ) -> dict[str, list[float]]:
    """Each day's calls of a segment's stable subscribers over their daily mean."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0] * n_days)
    for sid, t in world.subscribers.items():
        if t["kind"] == "stable":
            row = totals[str(t.get("segment"))]
            for day, n in enumerate(counts.get(sid, ())):
                row[day] += n
    return day_factors(totals)


def _peak(world: World, sid: str, counts: dict[str, list[int]],
          factor: dict[str, list[float]], rho: float, before: int | None = None) -> float:
    """The highest CUSUM statistic of ``sid`` from their base days to their port-out (or
    ``before``, a day), 0 without a usable base rate."""
    t = world.subscribers[sid]
    f = factor.get(str(t.get("segment")))
    own = counts.get(sid)
    if f is None or own is None:
        return 0.0
    since = (parse_ts(t["join_ts"]) - world.start).days if t.get("join_ts") else 0
    since = max(0, since)
    until = len(own)
    if t.get("port_out_ts"):
        until = min(until, (parse_ts(t["port_out_ts"]) - world.start).days)
    if before is not None:
        until = min(until, before)
    base = sum(f[since:since + BASE_DAYS])
    rate = sum(own[since:since + BASE_DAYS]) / base if base > 0 else 0.0
    if rate <= 0.0:
        return 0.0
    step_calls, step_rate = math.log(rho), 1.0 - rho
    s = peak = 0.0
    for day in range(since + BASE_DAYS, until):
        s = max(0.0, s + own[day] * step_calls + rate * f[day] * step_rate)
        peak = max(peak, s)
    return peak
