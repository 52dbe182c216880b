"""Score alerts against a simulated world's ground truth: ``churnwatch evaluate``.

Reads ``truth.jsonl``, ``groups.jsonl`` and ``world.json`` written by
``churnwatch simulate``, takes the alerts from a file (``--alerts``, JSON Lines in the
alert contract) or from a replay of the directory, and reports, at the any-alert level
(yellow, red, white) and at the severe level (red, white): recall of churners first
alerted at least 7 days before port-out, lead times, precision, false alerts by
confounder kind, false alerts during the public holiday, alert volume, and collective
group detection. Beside them, on the same world, the operators' monthly batch rule
(a month's spend below 70% of the previous months' mean). Definitions are in
``docs/evaluation.md``.

Only opening and escalation alerts count: an alert with ``status == "resolved"`` is
ignored.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from detectors.calibration import leading_reason
from stream.tools.ceiling import (
    DETECT_LLR,
    DETECT_MIN_FORWARDED,
    LEAD_DAYS,
    detectability,
    detectability_summary,
)
from stream.tools.decay_budget import decay_budget
from stream.tools.holiday_floor import holiday_floor
from stream.tools.world import DAY_S, World, churner_type, load_world, parse_ts

__all__ = [
    "ZONES", "LEVELS", "TARGETS", "World", "load_world", "read_alerts", "evaluate",
    "baseline_alerts", "format_report", "add_arguments", "run",
]

ZONES = ("blue", "green", "yellow", "red", "white")
#: The two reporting levels: any actionable alert, and severe alerts.
LEVELS: dict[str, frozenset[str]] = {
    "yellow+": frozenset({"yellow", "red", "white"}),
    "red+": frozenset({"red", "white"}),
}
CHURN_KINDS = frozenset({"individual_churn", "group_churn"})
GROUP_LEAD_DAYS = 10
BASELINE_RATIO = 0.70
BASELINE_MONTHS = 3
BASELINE_HOUR = 8  # the monthly batch run's results are out at 08:00 on the 1st


@dataclass(frozen=True)
class Target:
    """A floor (or ceiling) the service should meet, checked at the listed levels."""

    key: str
    label: str
    op: str  # ">=" or "<="
    value: float
    levels: tuple[str, ...]

    def met(self, actual: float | None) -> bool | None:
        if actual is None:
            return None
        return actual >= self.value if self.op == ">=" else actual <= self.value


TARGETS: tuple[Target, ...] = (
    Target("recall_7d", "recall@7d", ">=", 0.90, ("yellow+",)),
    Target("recall_7d", "recall@7d", ">=", 0.80, ("red+",)),
    Target("precision", "precision", ">=", 0.85, ("red+",)),
    Target("median_lead_days", "median lead (days)", ">=", 14.0, ("yellow+", "red+")),
    Target("holiday_false_pct", "holiday false alerts (% subs)", "<=", 0.5, ("yellow+", "red+")),
    Target("alerts_per_1000_per_week", "alerts /1,000 subs /week", "<=", 10.0,
           ("yellow+", "red+")),
    Target("groups_detected_10d_share", "collective groups >= 10 d early", ">=", 1.0,
           ("yellow+", "red+")),
    Target("false_group_alerts", "false group alerts", "<=", 0.0, ("yellow+", "red+")),
)


def read_alerts(path: Path) -> list[dict[str, Any]]:
    """Alerts from a JSON Lines file (a JSON array is accepted too)."""
    text = path.read_text()
    if text.lstrip().startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------
# Metrics.
# --------------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def score(world: World, alerts: Iterable[dict[str, Any]], zones: frozenset[str],
          detectable: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """All metrics for the alerts whose zone is in ``zones`` (resolutions ignored);
    with ``detectable`` (:func:`detectability`), recall@7d over the detectable too."""
    counted = [a for a in alerts
               if a.get("status") not in ("resolved", "closed") and a.get("zone") in zones]
    subs = world.subscribers
    sub_alerts = [a for a in counted
                  if a.get("kind", "subscriber") == "subscriber" and a.get("subscriber_id") in subs]
    group_alerts = [a for a in counted if a.get("kind") == "group"]
    unknown = sum(1 for a in counted if a.get("kind", "subscriber") == "subscriber"
                  and a.get("subscriber_id") not in subs)

    first: dict[str, datetime] = {}
    alerts_of: Counter[str] = Counter()
    for a in sub_alerts:
        sid = a["subscriber_id"]
        ts = parse_ts(a["ts"])
        alerts_of[sid] += 1
        if sid not in first or ts < first[sid]:
            first[sid] = ts

    # Recall and lead over churners who ported out inside the world.
    leavers = {sid: world.port_out(sid) for sid, t in subs.items()
               if t["churn"] and t.get("port_out_ts")}
    leads: list[float] = []
    detected_7d = 0
    detected_any = 0
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    # Over the churners detectable 7 days ahead: [caught, detectable] per type.
    able: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    missed: list[str] = []
    for sid, out in sorted(leavers.items()):
        assert out is not None
        f = first.get(sid)
        kind = churner_type(subs[sid])
        counts = by_type[kind]
        counts[1] += 1
        can = detectable is not None and detectable.get(sid, {}).get("detectable", False)
        if can:
            able[kind][1] += 1
        if f is None or f >= out:
            missed.append(sid)
            continue
        lead = (out - f).total_seconds() / DAY_S
        leads.append(round(lead, 2))
        detected_any += 1
        if lead >= LEAD_DAYS:
            detected_7d += 1
            counts[0] += 1
            if can:
                able[kind][0] += 1
        else:
            missed.append(sid)
    able_total = [sum(v[0] for v in able.values()), sum(v[1] for v in able.values())]

    # Precision over alerted subscribers; false alerts by what the subscriber really did.
    true_alerted = [sid for sid in first if subs[sid]["churn"]]
    false_alerted = [sid for sid in first if not subs[sid]["churn"]]
    false_by_kind = Counter(subs[sid]["kind"] for sid in false_alerted)
    false_alerts_by_kind: Counter[str] = Counter()
    for sid in false_alerted:
        false_alerts_by_kind[subs[sid]["kind"]] += alerts_of[sid]
    early = sum(1 for sid in true_alerted if subs[sid].get("churn_start_day") is not None
                and first[sid] < world.start
                + timedelta(days=subs[sid]["churn_start_day"] - 14))

    # The holiday: non-churners alerted during it (and in the week after it).
    holiday: dict[str, Any] = {"false_subscribers": None, "false_pct": None,
                               "false_subscribers_week_after": None,
                               "false_pct_with_week_after": None, "present": None}
    if world.holiday is not None:
        h0, h1 = world.holiday
        present = world.present_between(h0, h1)
        during = {a["subscriber_id"] for a in sub_alerts
                  if not subs[a["subscriber_id"]]["churn"] and h0 <= parse_ts(a["ts"]) < h1}
        after = {a["subscriber_id"] for a in sub_alerts
                 if not subs[a["subscriber_id"]]["churn"]
                 and h0 <= parse_ts(a["ts"]) < h1 + timedelta(days=7)}
        holiday = {
            "present": len(present),
            "false_subscribers": len(during),
            "false_pct": round(100.0 * len(during) / len(present), 3) if present else None,
            "false_subscribers_week_after": len(after),
            "false_pct_with_week_after": (round(100.0 * len(after) / len(present), 3)
                                          if present else None),
        }

    weeks = world.subscriber_weeks()
    per_1000_week = round(len(counted) / (weeks / 1000.0), 3) if weeks else None

    groups = _score_groups(world, group_alerts)
    via_members = _groups_via_members(world, sub_alerts)
    return {
        "alerts": len(counted),
        "subscriber_alerts": len(sub_alerts),
        "group_alerts": len(group_alerts),
        "alerts_on_unknown_subscribers": unknown,
        "alerts_per_1000_per_week": per_1000_week,
        "alerted_subscribers": len(first),
        "churners_ported_out": len(leavers),
        "detected_7d": detected_7d,
        "detected_before_port_out": detected_any,
        "recall_7d": _ratio(detected_7d, len(leavers)),
        "recall_any": _ratio(detected_any, len(leavers)),
        "recall_7d_by_type": {k: {"detected_7d": v[0], "churners": v[1],
                                  "recall_7d": _ratio(v[0], v[1])}
                              for k, v in sorted(by_type.items())},
        "missed_7d": missed,
        "detectable_7d": able_total[1] if detectable is not None else None,
        "recall_7d_detectable": (_ratio(able_total[0], able_total[1])
                                 if detectable is not None else None),
        "recall_7d_detectable_by_type": {
            k: {"detected_7d": v[0], "detectable": v[1], "recall_7d": _ratio(v[0], v[1])}
            for k, v in sorted(able.items())} if detectable is not None else None,
        "median_lead_days": _median(leads),
        "lead_days": sorted(leads),
        "true_alerted": len(true_alerted),
        "false_alerted": len(false_alerted),
        "precision": _ratio(len(true_alerted), len(first)),
        "true_alerted_long_before_churn": early,
        "false_by_kind": dict(sorted(false_by_kind.items())),
        "false_alerts_by_kind": dict(sorted(false_alerts_by_kind.items())),
        "holiday_false_subscribers": holiday["false_subscribers"],
        "holiday_false_pct": holiday["false_pct"],
        "holiday_false_subscribers_with_week_after": holiday["false_subscribers_week_after"],
        "holiday_false_pct_with_week_after": holiday["false_pct_with_week_after"],
        **groups,
        "groups_via_member_alerts": via_members,
    }


def _score_groups(world: World, group_alerts: list[dict[str, Any]]) -> dict[str, Any]:
    first: dict[str, datetime] = {}
    false_alerts = 0
    false_groups: set[str] = set()
    for a in group_alerts:
        gid = a.get("group_id")
        ts = parse_ts(a["ts"])
        g = world.groups.get(gid) if gid else None
        if g is None or not g["collective"] or ts < parse_ts(g["defection_ts"]):
            false_alerts += 1
            false_groups.add(str(gid))
            continue
        key = str(gid)
        if key not in first or ts < first[key]:
            first[key] = ts
    collective = [g for g in world.groups.values() if g["collective"]]
    leads: dict[str, float | None] = {}
    judged = 0
    before_half = 0
    at_10d = 0
    for g in collective:
        gid = g["group_id"]
        half = parse_ts(g["half_gone_ts"]) if g.get("half_gone_ts") else None
        f = first.get(gid)
        if half is None:
            leads[gid] = None  # half the members had not left by the world's end
            continue
        judged += 1
        if f is None or f >= half:
            leads[gid] = None
            continue
        lead = round((half - f).total_seconds() / DAY_S, 2)
        leads[gid] = lead
        before_half += 1
        if lead >= GROUP_LEAD_DAYS:
            at_10d += 1
    values = [v for v in leads.values() if v is not None]
    return {
        "collective_groups": len(collective),
        "collective_groups_judged": judged,
        "groups_detected_before_half": before_half,
        "groups_detected_10d": at_10d,
        "groups_detected_10d_share": _ratio(at_10d, judged),
        "group_leads_days": leads,
        "min_group_lead_days": min(values) if values else None,
        "false_group_alerts": false_alerts,
        "false_groups": sorted(false_groups),
    }


def _groups_via_members(world: World, sub_alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """Days before half-gone of the first member alert after each collective group's
    defection began (what member-level alerts see without a group alert)."""
    times: dict[str, list[datetime]] = defaultdict(list)
    for a in sub_alerts:
        times[a["subscriber_id"]].append(parse_ts(a["ts"]))
    out: dict[str, float | None] = {}
    for g in world.groups.values():
        if not g["collective"] or not g.get("half_gone_ts"):
            continue
        half = parse_ts(g["half_gone_ts"])
        began = parse_ts(g["defection_ts"])
        seen = [t for m in g["members"] for t in times.get(m, ()) if began <= t < half]
        out[g["group_id"]] = (round((half - min(seen)).total_seconds() / DAY_S, 2)
                              if seen else None)
    return out


def format_decay_budget(db: dict[str, Any]) -> str:
    """One line: silent decliners a CUSUM catches within the volume budget
    (:mod:`stream.tools.decay_budget`)."""
    how = (f"rho {db['rho']:g}, threshold {db['threshold']:g}, "
           f"{db['false_per_1000_per_week']:g} false /1k/wk" if db["rho"] is not None
           else "no threshold tried keeps within it")
    return (f"silent decliners within the volume budget ({db['budget_per_1000_per_week']:g} "
            f"false alerts /1k/wk left by the target over the floor): a CUSUM on outgoing "
            f"calls catches {db['caught_7d']} of {db['silent_churners']} 7 d ahead ({how})")


def by_zone(world: World, alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Precision and recall@7d at each zone threshold (green+, yellow+, red+, white)."""
    out = {}
    for i, zone in enumerate(ZONES[1:], start=1):
        m = score(world, alerts, frozenset(ZONES[i:]))
        name = zone if zone == ZONES[-1] else f"{zone}+"
        out[name] = {"precision": m["precision"], "recall_7d": m["recall_7d"],
                     "alerts": m["alerts"]}
    return out


# --------------------------------------------------------------------------------------
# The operators' monthly batch rule.
# --------------------------------------------------------------------------------------


def _month_days(year: int, month: int) -> int:
    nxt = datetime(year + month // 12, month % 12 + 1, 1)
    return (nxt - datetime(year, month, 1)).days


def baseline_alerts(world: World, billing: Path | None = None) -> list[dict[str, Any]]:
    """Pseudo-alerts of the monthly rule: a month's spend below 70% of the previous
    (up to three, at least one) full months' mean, flagged at 08:00 on the next 1st.

    Spend is the sum of a subscriber's daily ``charge`` events in the calendar month
    (for postpaid subscribers this is the monthly ``bill``); a month counts only if
    charged on every one of its days. Group accounts are judged the same way on the
    members' summed spend, and flag the group.
    """
    path = billing or world.directory / "billing.jsonl"
    spend: dict[tuple[str, int, int], float] = defaultdict(float)
    charged: Counter[tuple[str, int, int]] = Counter()
    account_spend: dict[tuple[str, int, int], float] = defaultdict(float)
    tz = world.start.tzinfo
    with path.open("rb") as handle:
        for line in handle:
            if b'"charge"' not in line:
                continue
            e = json.loads(line)
            if e.get("kind") != "charge":
                continue
            ts = parse_ts(e["ts"]).astimezone(tz)
            key = (e["subscriber_id"], ts.year, ts.month)
            spend[key] += float(e["amount"])
            charged[key] += 1
            if e.get("account_id"):
                account_spend[(e["account_id"], ts.year, ts.month)] += float(e["amount"])
    # Calendar months wholly inside the world.
    months: list[tuple[int, int]] = []
    y, m = world.start.year, world.start.month
    while True:
        first_day = datetime(y, m, 1, tzinfo=tz)
        nxt = datetime(y + m // 12, m % 12 + 1, 1, tzinfo=tz)
        if nxt > world.end:
            break
        if first_day >= world.start:
            months.append((y, m))
        y, m = nxt.year, nxt.month

    def flag_time(y: int, m: int) -> datetime:
        return datetime(y + m // 12, m % 12 + 1, 1, BASELINE_HOUR, tzinfo=tz)

    alerts: list[dict[str, Any]] = []
    for sid in sorted(world.subscribers):
        full = [(y, m) for (y, m) in months if charged[(sid, y, m)] == _month_days(y, m)]
        out = world.port_out(sid)
        for i, (y, m) in enumerate(full):
            prev = full[max(0, i - BASELINE_MONTHS):i]
            if not prev:
                continue
            mean = sum(spend[(sid, py, pm)] for py, pm in prev) / len(prev)
            when = flag_time(y, m)
            if spend[(sid, y, m)] < BASELINE_RATIO * mean and (out is None or when < out) \
                    and when < world.end:
                alerts.append({
                    "kind": "subscriber", "status": "open", "zone": "red",
                    "subscriber_id": sid, "ts": when.isoformat(),
                    "reasons": [{"code": "bill_drop", "summary":
                                 f"{y}-{m:02d} spend {spend[(sid, y, m)]:.2f} is below 70% "
                                 f"of the previous mean {mean:.2f}"}],
                })
    for gid, g in sorted(world.groups.items()):
        acct = g["account_id"]
        for i, (y, m) in enumerate(months):
            prev = months[max(0, i - BASELINE_MONTHS):i]
            if not prev:
                continue
            mean = sum(account_spend[(acct, py, pm)] for py, pm in prev) / len(prev)
            when = flag_time(y, m)
            if mean > 0 and account_spend[(acct, y, m)] < BASELINE_RATIO * mean \
                    and when < world.end:
                alerts.append({"kind": "group", "status": "open", "zone": "red",
                               "group_id": gid, "ts": when.isoformat()})
    return alerts


# --------------------------------------------------------------------------------------
# Outcome learning: calibrated zones against the engine's, and what the calls said.
# --------------------------------------------------------------------------------------

#: Outcomes that say the alerted subscriber was leaving, and the one that says not.
RIGHT_OUTCOMES = ("retained", "churned")
UNREACHED_OUTCOMES = ("unreachable", "no_answer")


def engine_view(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerts as the engine scored them: ``raw_zone``/``raw_risk_score`` where the
    calibration changed them (``docs/outcomes.md``), so the detector metrics do not move.

    >>> engine_view([{"zone": "yellow", "raw_zone": "red", "risk_score": 0.6,
    ...               "raw_risk_score": 0.8}, {"zone": "red", "risk_score": 0.9}])
    [{'zone': 'red', 'risk_score': 0.8}, {'zone': 'red', 'risk_score': 0.9}]
    """
    out = []
    for a in alerts:
        if "raw_zone" in a:
            raw = {k: v for k, v in a.items() if k not in ("raw_zone", "raw_risk_score")}
            raw["zone"] = a["raw_zone"]
            raw["risk_score"] = a.get("raw_risk_score", a.get("risk_score"))
            a = raw
        out.append(a)
    return out


def _answered(counts: Counter[str]) -> dict[str, Any]:
    right = sum(counts[o] for o in RIGHT_OUTCOMES)
    answered = right + counts["not_at_risk"]
    return {"right": right, "answered": answered, "precision": _ratio(right, answered),
            "calls": sum(counts.values())}


def outcome_metrics(alerts: list[dict[str, Any]], outcomes: list[dict[str, Any]]
                    ) -> dict[str, Any]:
    """What the call centre's outcomes say about the alerts they answer.

    Precision from outcomes: ``retained`` + ``churned`` over those and ``not_at_risk``
    (unreachable and unanswered calls say nothing), by the alert's published zone, by the
    engine's zone, and by the alert's leading reason code; the share of calls that reached
    nobody (``unreachable`` + ``no_answer`` over all outcomes); outcomes by segment.
    Outcomes naming no alert in ``alerts`` are counted as ``unmatched``.

    >>> alerts = [{"alert_id": "a1", "zone": "red", "segment": "sme",
    ...            "reasons": [{"code": "usage_drop"}]},
    ...           {"alert_id": "a2", "zone": "yellow", "raw_zone": "red",
    ...            "segment": "consumer", "reasons": [{"code": "forwarding_off_net"}]}]
    >>> m = outcome_metrics(alerts, [{"alert_id": "a1", "outcome": "retained"},
    ...     {"alert_id": "a2", "outcome": "not_at_risk"},
    ...     {"alert_id": "a2", "outcome": "unreachable"}, {"alert_id": "zz", "outcome": "churned"}])
    >>> m["calls"], m["unreached_share"], m["unmatched"]
    (4, 0.25, 1)
    >>> m["precision_by_zone"]["red"]["precision"], m["precision_by_engine_zone"]["red"]
    (1.0, {'right': 1, 'answered': 2, 'precision': 0.5, 'calls': 3})
    >>> m["by_segment"]["consumer"]
    {'not_at_risk': 1, 'unreachable': 1}
    """
    by_id = {a["alert_id"]: a for a in alerts if a.get("alert_id")}
    by_outcome: Counter[str] = Counter()
    zone: dict[str, Counter[str]] = defaultdict(Counter)
    engine_zone: dict[str, Counter[str]] = defaultdict(Counter)
    reason: dict[str, Counter[str]] = defaultdict(Counter)
    segment: dict[str, Counter[str]] = defaultdict(Counter)
    unmatched = 0
    for o in outcomes:
        kind = str(o["outcome"])
        by_outcome[kind] += 1
        a = by_id.get(o["alert_id"])
        if a is None:
            unmatched += 1
            continue
        zone[str(a.get("zone"))][kind] += 1
        engine_zone[str(a.get("raw_zone", a.get("zone")))][kind] += 1
        reason[leading_reason(a)][kind] += 1
        segment[str(a.get("segment"))][kind] += 1
    calls = sum(by_outcome.values())
    return {
        "calls": calls,
        "by_outcome": dict(sorted(by_outcome.items())),
        "unreached": sum(by_outcome[o] for o in UNREACHED_OUTCOMES),
        "unreached_share": _ratio(sum(by_outcome[o] for o in UNREACHED_OUTCOMES), calls),
        "precision": _answered(by_outcome)["precision"],
        "precision_by_zone": {z: _answered(c) for z, c in sorted(zone.items())},
        "precision_by_engine_zone": {z: _answered(c) for z, c in sorted(engine_zone.items())},
        "precision_by_reason": {r: _answered(c) for r, c in sorted(reason.items())},
        "by_segment": {s: dict(sorted(c.items())) for s, c in sorted(segment.items())},
        "unmatched": unmatched,
    }


def calibration_metrics(world: World, alerts: list[dict[str, Any]],
                        outcomes: list[dict[str, Any]] | None = None,
                        periods: int = 3) -> dict[str, Any]:
    """Precision and recall@7d per third of the world at yellow+ and red+, with the
    engine's zones and with the published (calibrated) ones
    (:func:`stream.tools.callcentre.period_metrics`), and :func:`outcome_metrics`."""
    from stream.tools.callcentre import period_metrics

    engine = engine_view(alerts)
    versions = [a["calibration_version"] for a in alerts if a.get("calibration_version")]
    return {
        "calibrated_alerts": sum(1 for a in alerts if "raw_zone" in a),
        "last_version": versions[-1] if versions else None,
        "periods": {lv: {
            "engine": period_metrics(world.subscribers, engine, zones, world.start,
                                     world.end, periods),
            "calibrated": period_metrics(world.subscribers, alerts, zones, world.start,
                                         world.end, periods),
        } for lv, zones in LEVELS.items()},
        "outcomes": outcome_metrics(alerts, outcomes) if outcomes is not None else None,
    }


# --------------------------------------------------------------------------------------
# The whole report.
# --------------------------------------------------------------------------------------


def evaluate(world: World, alerts: list[dict[str, Any]], *, baseline: bool = True,
             source: str = "file", outcomes: list[dict[str, Any]] | None = None
             ) -> dict[str, Any]:
    """The whole report. Detector metrics use the engine's zones (:func:`engine_view`);
    ``calibration`` compares them with the published zones per third of the world and,
    with ``outcomes``, says what the calls found (:func:`calibration_metrics`)."""
    published = alerts
    alerts = engine_view(alerts)
    kinds = Counter(t["kind"] for t in world.subscribers.values())
    detectable = detectability(world)
    report: dict[str, Any] = {
        "world": {
            "directory": str(world.directory),
            "subscribers": len(world.subscribers),
            "start": world.start.isoformat(),
            "end": world.end.isoformat(),
            "days": round((world.end - world.start).total_seconds() / DAY_S, 2),
            "seed": world.summary.get("params", {}).get("seed"),
            "holiday": ([world.holiday[0].isoformat(), world.holiday[1].isoformat()]
                        if world.holiday else None),
            "kinds": dict(sorted(kinds.items())),
            "churners": sum(1 for t in world.subscribers.values() if t["churn"]),
            "subscriber_weeks": round(world.subscriber_weeks(), 1),
            "collective_groups": sum(1 for g in world.groups.values() if g["collective"]),
        },
        "alerts": {
            "source": source,
            "total": len(alerts),
            "resolutions_ignored": sum(1 for a in alerts if a.get("status") == "resolved"),
            "by_zone": dict(Counter(str(a.get("zone")) for a in alerts
                                    if a.get("status") != "resolved")),
        },
        "levels": {name: score(world, alerts, zones, detectable)
                   for name, zones in LEVELS.items()},
        "by_zone": by_zone(world, alerts),
        "detectable_7d": {
            "rule": (f">= {DETECT_MIN_FORWARDED} calls forwarded to the churn target, or an "
                     f"oracle's call-decay evidence (Poisson LLR, start known) >= "
                     f"{DETECT_LLR:g}, by port-out minus {LEAD_DAYS} days"),
            "by_type": detectability_summary(detectable),
            "churners": detectable,
        },
        "holiday_floor": holiday_floor(world),
        "decay_budget": decay_budget(world),
    }
    if baseline:
        base = baseline_alerts(world)
        report["baseline"] = score(world, base, frozenset({"red"}), detectable)
        report["baseline"]["rule"] = (
            f"monthly spend < {BASELINE_RATIO:.0%} of the previous "
            f"{BASELINE_MONTHS} full months' mean, flagged {BASELINE_HOUR:02d}:00 on the 1st")
    report["calibration"] = calibration_metrics(world, published, outcomes)
    report["targets"] = [
        {"metric": t.key, "label": t.label, "level": level, "op": t.op, "target": t.value,
         "actual": report["levels"][level][t.key],
         "met": t.met(report["levels"][level][t.key])}
        for t in TARGETS for level in t.levels
    ]
    return report


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}" if pct else f"{value:.2f}"
    return str(value)


def format_report(report: dict[str, Any]) -> str:
    w = report["world"]
    levels = report["levels"]
    cols = list(levels)
    has_base = "baseline" in report
    header = ["metric", *cols] + (["batch rule"] if has_base else []) + ["target"]
    targets: dict[tuple[str, str], dict[str, Any]] = {
        (t["metric"], t["level"]): t for t in report["targets"]}

    def cell(metric: str, level: str, value: Any, pct: bool) -> str:
        text = _fmt(value, pct)
        t = targets.get((metric, level))
        if t is not None and t["met"] is not None:
            text += " ok" if t["met"] else " MISS"
        return text

    def target_text(metric: str) -> str:
        parts = []
        for level in cols:
            t = targets.get((metric, level))
            if t is not None:
                v = f"{t['target']:.0%}" if metric in {"recall_7d", "precision",
                                                        "groups_detected_10d_share"} \
                    else f"{t['target']:g}"
                parts.append(f"{t['op']} {v} ({level})")
        uniq = sorted(set(parts), key=parts.index)
        if len(uniq) == 2 and uniq[0].split(" (")[0] == uniq[1].split(" (")[0]:
            return uniq[0].split(" (")[0]
        return ", ".join(uniq)

    rows_spec: list[tuple[str, str, bool]] = [
        ("recall@7d (churners alerted >= 7 d before port-out)", "recall_7d", True),
        ("recall@7d over the detectable (ceiling below)", "recall_7d_detectable", True),
        ("recall, any lead", "recall_any", True),
        ("median lead (days)", "median_lead_days", False),
        ("precision (alerted who churn)", "precision", True),
        ("alerted subscribers", "alerted_subscribers", False),
        ("false alerted subscribers", "false_alerted", False),
        ("holiday false alerts (% subs)", "holiday_false_pct", False),
        ("  same, incl. week after", "holiday_false_pct_with_week_after", False),
        ("alerts /1,000 subs /week", "alerts_per_1000_per_week", False),
        ("collective groups >= 10 d early", "groups_detected_10d_share", True),
        ("min group lead (days)", "min_group_lead_days", False),
        ("false group alerts", "false_group_alerts", False),
    ]
    rows = [header]
    for label, key, pct in rows_spec:
        row = [label] + [cell(key, lv, levels[lv][key], pct) for lv in cols]
        if has_base:
            row.append(_fmt(report["baseline"][key], pct))
        row.append(target_text(key))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        f"world {w['directory']}: {w['subscribers']:,} subscribers, {w['days']:g} days, "
        f"seed {w['seed']}, {w['churners']} churners "
        f"({levels[cols[0]]['churners_ported_out']} ported out inside the world), "
        f"{w['collective_groups']} collective groups",
        f"alerts ({report['alerts']['source']}): {report['alerts']['total']:,} "
        f"({report['alerts']['resolutions_ignored']:,} resolutions ignored)",
        "",
    ]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j])
                               for j, c in enumerate(r)))
        if i == 0:
            lines.append("  ".join("-" * x for x in widths))
    lines.append("")
    for lv in cols:
        fk = levels[lv]["false_by_kind"]
        lines.append(f"false alerted subscribers by kind ({lv}): "
                     + (", ".join(f"{k} {v}" for k, v in fk.items()) or "none"))
    if has_base:
        fk = report["baseline"]["false_by_kind"]
        lines.append("false alerted subscribers by kind (batch rule): "
                     + (", ".join(f"{k} {v}" for k, v in fk.items()) or "none"))
    for lv in cols:
        gl = levels[lv]["group_leads_days"]
        if gl:
            lines.append(f"group lead before half gone ({lv}): "
                         + ", ".join(f"{g} {_fmt(v)}" for g, v in gl.items()))
    for lv in cols:
        bt = levels[lv]["recall_7d_by_type"]
        lines.append(f"recall@7d by churner type ({lv}): " + ", ".join(
            f"{k} {v['detected_7d']}/{v['churners']}" for k, v in bt.items()))
    if "detectable_7d" in report:
        dt = report["detectable_7d"]
        lines.append(f"detectable 7 d ahead ({dt['rule']}): " + ", ".join(
            f"{k} {v['detectable']}/{v['churners']} (forwarding {v['by_forwarding']}, "
            f"decay {v['by_decay']})" for k, v in dt["by_type"].items()))
        for lv in cols:
            bt = levels[lv]["recall_7d_detectable_by_type"] or {}
            lines.append(f"recall@7d over the detectable by type ({lv}): " + ", ".join(
                f"{k} {v['detected_7d']}/{v['detectable']}" for k, v in bt.items()))
    hf = report.get("holiday_floor") or {}
    if hf.get("pct") is not None:
        shown = ("before any call of theirs shows the trip in the cells"
                 if hf["trips_in_cells"] else "on trips that change no cell")
        lines.append(f"holiday floor (yellow+): {hf['subscribers']} non-churners "
                     f"({hf['pct']:.2f}% of {hf['present']}) forward {DETECT_MIN_FORWARDED} "
                     f"calls off-net in the holiday {shown}; yellow holds such a stay while "
                     "it may be a trip")
    db = report.get("decay_budget")
    if db:
        lines.append(format_decay_budget(db))
    vm = levels[cols[0]]["groups_via_member_alerts"]
    if vm:
        lines.append("first member alert after defection, before half gone (yellow+, days): "
                     + ", ".join(f"{g} {_fmt(v)}" for g, v in vm.items()))
    bz = report["by_zone"]
    lines.append("by zone threshold: " + "; ".join(
        f"{z} precision {_fmt(v['precision'], True)} recall@7d {_fmt(v['recall_7d'], True)}"
        for z, v in bz.items()))
    if has_base:
        lines.append(f"batch rule: {report['baseline']['rule']}")
    if "calibration" in report:
        lines.extend(format_calibration(report["calibration"]))
    return "\n".join(lines)


def _pr(p: dict[str, Any]) -> str:
    prec = f"{p['true']}/{p['alerted']} {_fmt(p['precision'], True)}" if p["alerted"] else "-"
    rec = (f"{p['found_7d']}/{p['leavers']} {_fmt(p['recall_7d'], True)}" if p["leavers"]
           else "-")
    return f"P {prec}, R {rec}"


def format_calibration(cal: dict[str, Any]) -> list[str]:
    """The calibration section of the text report."""
    lines = ["", f"calibration: {cal['calibrated_alerts']} alerts re-scored, last model "
                 f"{cal['last_version'] or '-'}; per third of the world, P = precision "
                 f"(alerted in it who churn), R = recall@7d (churners porting out in it)"]
    rows = [["level", "zones", *(f"third {k + 1}" for k in range(
        len(next(iter(cal["periods"].values()))["engine"])))]]
    for lv, both in cal["periods"].items():
        for name in ("engine", "calibrated"):
            rows.append([lv, name, *(_pr(p) for p in both[name])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines.extend("  " + "  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip()
                 for r in rows)
    out = cal.get("outcomes")
    if out:
        lines.append(
            f"outcomes: {out['calls']} calls, {out['unreached']} unreachable or unanswered "
            f"({_fmt(out['unreached_share'], True)}); precision from outcomes "
            f"{_fmt(out['precision'], True)} (retained + churned over those and not_at_risk)"
            + (f"; {out['unmatched']} name no alert here" if out["unmatched"] else ""))
        lines.append("  by outcome: " + ", ".join(f"{k} {v}" for k, v in
                                                   out["by_outcome"].items()))
        for key, label in (("precision_by_zone", "by zone"),
                           ("precision_by_engine_zone", "by engine zone"),
                           ("precision_by_reason", "by leading reason")):
            lines.append(f"  precision from outcomes {label}: " + ", ".join(
                f"{k} {v['right']}/{v['answered']}" for k, v in out[key].items()))
        lines.append("  outcomes by segment: " + "; ".join(
            f"{seg} " + ", ".join(f"{k} {v}" for k, v in c.items())
            for seg, c in out["by_segment"].items()))
    return lines


def plot(report: dict[str, Any], path: Path) -> bool:
    """Lead-time distribution and precision/recall by zone; False if matplotlib is absent."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = [(lv, report["levels"][lv]["lead_days"]) for lv in report["levels"]]
    if "baseline" in report:
        series.append(("batch rule", report["baseline"]["lead_days"]))
    top = max([max(v) for _, v in series if v] + [1.0])
    bins = [i * 2 for i in range(int(top // 2) + 2)]
    for (label, values), style in zip(series, ("-", "--", ":"), strict=False):
        if values:
            ax1.hist(values, bins=bins, histtype="step", linewidth=1.8, linestyle=style,
                     label=label)
    ax1.axvline(LEAD_DAYS, color="grey", linestyle=":", linewidth=1)
    ax1.set_xlabel("lead time before port-out (days)")
    ax1.set_ylabel("churners")
    ax1.set_title("Lead time of the first alert")
    ax1.legend()
    bz = report["by_zone"]
    names = list(bz)
    xs = range(len(names))
    prec = [bz[n]["precision"] or 0.0 for n in names]
    rec = [bz[n]["recall_7d"] or 0.0 for n in names]
    ax2.bar([x - 0.2 for x in xs], prec, width=0.4, label="precision")
    ax2.bar([x + 0.2 for x in xs], rec, width=0.4, label="recall@7d")
    ax2.set_xticks(list(xs), names)
    ax2.set_ylim(0, 1.05)
    ax2.set_title("By zone threshold")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, nargs="?", default=None,
                        help="a world written by `churnwatch simulate` (none with --suite)")
    parser.add_argument("--alerts", type=Path, default=None,
                        help="alerts (JSON Lines); default: replay the directory")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--plot", type=Path, default=None,
                        help="write a PNG (needs the `plot` extra: matplotlib)")
    parser.add_argument("--save-alerts", type=Path, default=None,
                        help="when replaying, also write the alerts here (JSON Lines)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the monthly batch rule")
    parser.add_argument("--no-calibration", dest="calibration", action="store_false",
                        help="when replaying, no outcome learning (the engine's zones only)")
    parser.add_argument("--outcomes", type=Path, default=None,
                        help="call-centre outcomes, JSON Lines (default DIR/outcomes.jsonl "
                             "if present)")
    parser.add_argument("--call-centre", action="store_true",
                        help="replay with a simulated call centre answering the alerts; "
                             "writes its answers to DIR/outcomes.jsonl")
    from stream.tools.callcentre import add_arguments as call_centre_arguments

    call_centre_arguments(parser)


def _replay(directory: Path, *, calibration: bool = True, outcomes: Path | None = None,
            centre: Any = None, answers: list[dict[str, Any]] | None = None,
            ) -> list[dict[str, Any]]:
    from detectors.calibration import OutcomeLearner
    from stream.tools.replay import replay_directory  # reads DIR/ported.jsonl itself

    # With the group stage: group alerts are scored too (groups_detected_*, false ones).
    # With a learner, as `churnwatch replay` publishes them (calibrated; engine zones kept).
    return list(replay_directory(
        directory, groups=True, learner=OutcomeLearner() if calibration else None,
        outcomes=outcomes, call_centre=centre,
        on_answer=answers.append if answers is not None else None))


def read_outcomes(path: Path) -> list[dict[str, Any]]:
    """The valid outcomes of a JSON Lines file (the contract's; bad lines left out, as
    the replay dead-letters them)."""
    from stream.contracts.validation import Accepted, Validator

    checker = Validator()
    out = []
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                result = checker.check("outcome", line.rstrip(b"\r\n"))
                if isinstance(result, Accepted):
                    out.append(result.event)
    return out


def run(args: argparse.Namespace) -> int:
    directory: Path | None = args.directory
    if directory is None:
        print("evaluate: name a world directory, or pass --suite", file=sys.stderr)
        return 2
    if not (directory / "truth.jsonl").exists():
        print(f"evaluate: {directory} has no truth.jsonl (write one with `churnwatch "
              f"simulate`)", file=sys.stderr)
        return 2
    world = load_world(directory)
    centre = None
    if getattr(args, "call_centre", False):
        if args.alerts is not None:
            print("evaluate: --call-centre answers the alerts of a replay; drop --alerts",
                  file=sys.stderr)
            return 2
        from stream.tools.callcentre import from_args

        centre = from_args(args, directory)
    outcomes_path = getattr(args, "outcomes", None)
    if outcomes_path is not None and not outcomes_path.is_file():
        print(f"evaluate: no outcomes file {outcomes_path}", file=sys.stderr)
        return 2
    default_outcomes = directory / "outcomes.jsonl"
    if outcomes_path is None and centre is None and default_outcomes.is_file():
        outcomes_path = default_outcomes
    outcomes = read_outcomes(outcomes_path) if outcomes_path is not None else None
    if args.alerts is not None:
        alerts = read_alerts(args.alerts)
        source = str(args.alerts)
    else:
        answers: list[dict[str, Any]] = []
        try:
            alerts = _replay(directory, calibration=getattr(args, "calibration", True),
                             outcomes=outcomes_path, centre=centre, answers=answers)
        except ImportError as exc:
            print(f"evaluate: cannot replay ({exc}); pass --alerts FILE", file=sys.stderr)
            return 2
        source = "replay"
        if centre is not None:
            # The answers the loop gave: `churnwatch replay DIR` reads them back and
            # publishes the same alerts.
            with default_outcomes.open("w") as handle:
                for o in answers:
                    handle.write(json.dumps(o) + "\n")
            print(f"wrote {len(answers)} call-centre outcomes to {default_outcomes}")
            outcomes = (outcomes or []) + answers
        if args.save_alerts is not None:
            with args.save_alerts.open("w") as handle:
                for a in alerts:
                    handle.write(json.dumps(a, sort_keys=True) + "\n")
    report = evaluate(world, alerts, baseline=not args.no_baseline, source=source,
                      outcomes=outcomes)
    print(format_report(report))
    if centre is not None:
        # Reaching people: advised windows against random hours, the queue's order against
        # first come, first served, at several daily capacities.
        from stream.tools.callcentre import contact_experiment, format_contact

        report["contact"] = contact_experiment(
            directory, alerts, capacities=tuple(args.capacities), seed=centre.seed,
            retained=centre.retained, runs=args.call_centre_runs)
        print(format_contact(report["contact"]))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot is not None:
        if plot(report, args.plot):
            print(f"wrote {args.plot}")
        else:
            print("no plot: matplotlib is not installed (pip install 'churnwatch[plot]')")
    return 0
