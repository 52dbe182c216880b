"""The ceiling: which churners were detectable at all 7 days before their port-out
(``docs/evaluation.md``, "The ceiling")."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from stream.tools.world import DAY_S, World, churner_type, parse_ts

__all__ = ["DETECT_BASE_DAYS", "DETECT_LLR", "DETECT_MIN_FORWARDED", "LEAD_DAYS",
           "day_factors", "detectability", "detectability_summary"]

LEAD_DAYS = 7  # recall counts churners first alerted at least this long before port-out
#: Detectable 7 days ahead (see :func:`detectability`): calls forwarded to the churn target
#: before port-out minus 7 days, and the evidence an oracle draws from the fall in outgoing
#: calls by then (a Poisson log-likelihood ratio, with the start of the fall known).
DETECT_MIN_FORWARDED = 2
DETECT_LLR = 3.3
DETECT_BASE_DAYS = 28


def detectability(world: World, calls: Path | None = None) -> dict[str, dict[str, Any]]:
    """Which churners were detectable at all 7 days before their port-out: the ceiling.

    For every churner who ported out inside the world, from the call records
    (``calls.jsonl``) and the truth, two kinds of evidence available by the cutoff
    (port-out minus :data:`LEAD_DAYS` days):

    - **forwarding**: at least :data:`DETECT_MIN_FORWARDED` (2) incoming calls forwarded
      to the churn target (``forwarding`` with ``why == "churn"``) before the cutoff. One
      forwarded call to a new number is what a one-off divert looks like; two with most
      incoming calls forwarded is the least any forwarding detector can act on (the
      engine's carried evidence opens a yellow alert on it).
    - **decay**: the log-likelihood ratio that an oracle, knowing the day the fall began,
      draws from the subscriber's outgoing calls on the whole days from that day to the
      cutoff: ``k ln(k / E) - k + E`` (Poisson, ``k`` calls seen, ``E`` expected), when
      ``k < E``. ``E`` is the rate of the :data:`DETECT_BASE_DAYS` days before the fall
      times each day's factor of the segment's stable subscribers (weekly rhythm and the
      holiday cancel out). Detectable when it reaches :data:`DETECT_LLR` (3.3): the
      evidence a one-sided test needs at a false-alarm rate of 0.5% per test (z = 2.58,
      z^2 / 2 = 3.3), about one false alert per subscriber every 200 weekly tests, so
      already at the alert volume the targets allow (10 per 1,000 a week). The oracle
      knows the start and ignores day-to-day dispersion, which a real detector cannot:
      this is an upper bound, and generous.

    Returns, per churner: ``type``, ``forwarded_by_cutoff``, ``decay_llr``,
    ``by_forwarding``, ``by_decay`` and ``detectable`` (either).
    """
    import orjson

    path = calls or world.directory / "calls.jsonl"
    subs = world.subscribers
    leavers = {sid: t for sid, t in subs.items() if t["churn"] and t.get("port_out_ts")}
    targets = {sid: {f["to"] for f in t.get("forwarding") or () if f.get("why") == "churn"}
               for sid, t in leavers.items()}
    cutoff = {sid: parse_ts(t["port_out_ts"]) - timedelta(days=LEAD_DAYS)
              for sid, t in leavers.items()}
    cut_iso = {sid: c.astimezone(world.start.tzinfo).isoformat() for sid, c in cutoff.items()}
    stable_segment = {sid: t.get("segment") for sid, t in subs.items() if t["kind"] == "stable"}
    n_days = max(1, round((world.end - world.start).total_seconds() / DAY_S))
    segment_calls: dict[str, list[int]] = defaultdict(lambda: [0] * n_days)
    own_calls: dict[str, list[int]] = {sid: [0] * n_days for sid in leavers}
    forwarded: Counter[str] = Counter()
    if path.exists():
        with path.open("rb") as handle:
            for line in handle:
                e = orjson.loads(line)
                sid = e["subscriber_id"]
                if sid not in leavers and sid not in stable_segment:
                    continue
                if e["direction"] == "out":
                    day = world.day(e["ts"])
                    if 0 <= day < n_days:
                        if sid in leavers:
                            own_calls[sid][day] += 1
                        else:
                            segment_calls[str(stable_segment[sid])][day] += 1
                elif (sid in leavers and e.get("forwarded_to") in targets[sid]
                      and _before(e["ts"], cut_iso[sid], cutoff[sid])):
                    forwarded[sid] += 1
    factor = day_factors(segment_calls)
    out: dict[str, dict[str, Any]] = {}
    for sid, t in leavers.items():
        llr = 0.0
        start = t.get("churn_start_day")
        f = factor.get(str(t.get("segment")))
        if start is not None and f is not None:
            first = max(0, start - DETECT_BASE_DAYS)
            base_f = sum(f[first:start])
            last = (cutoff[sid] - world.start).days  # whole days before the cutoff day
            if base_f > 0 and start - first >= 7 and last > start:
                rate = sum(own_calls[sid][first:start]) / base_f
                expected = rate * sum(f[start:last])
                k = sum(own_calls[sid][start:last])
                if k < expected:
                    llr = (k * math.log(k / expected) if k else 0.0) - k + expected
        by_fwd = forwarded[sid] >= DETECT_MIN_FORWARDED
        by_decay = llr >= DETECT_LLR
        out[sid] = {"type": churner_type(t), "forwarded_by_cutoff": forwarded[sid],
                    "decay_llr": round(llr, 2), "by_forwarding": by_fwd, "by_decay": by_decay,
                    "detectable": by_fwd or by_decay}
    return out


def day_factors(totals: Mapping[str, list[int]]) -> dict[str, list[float]]:
    """Each segment's calls a day over its daily mean (1 where it made none): the weekly
    rhythm and the holiday, which a subscriber's expected calls are multiplied by.

    >>> day_factors({"sme": [6, 6, 0, 8]})
    {'sme': [1.2, 1.2, 0.0, 1.6]}
    """
    factors = {}
    for segment, row in totals.items():
        mean = sum(row) / len(row)
        factors[segment] = [n / mean if mean > 0 else 1.0 for n in row]
    return factors


def _before(ts: str, cut_iso: str, cut: datetime) -> bool:
    """``ts < cut``; a string comparison when both have the same offset (the usual case)."""
    if ts[19:] == cut_iso[19:] and len(ts) == len(cut_iso):
        return ts < cut_iso
    return parse_ts(ts) < cut


def detectability_summary(detectable: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counts per churner type: churners, detectable, by forwarding, by decay."""
    out: dict[str, dict[str, Any]] = {}
    for d in detectable.values():
        row = out.setdefault(d["type"], {"churners": 0, "detectable": 0, "by_forwarding": 0,
                                         "by_decay": 0})
        row["churners"] += 1
        row["detectable"] += d["detectable"]
        row["by_forwarding"] += d["by_forwarding"]
        row["by_decay"] += d["by_decay"]
    for row in out.values():
        row["share"] = (round(row["detectable"] / row["churners"], 4) if row["churners"] else None)
    return dict(sorted(out.items()))
