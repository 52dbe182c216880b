"""The suite of worlds: ``churnwatch evaluate --suite``.

Simulates every preset of :mod:`stream.tools.scenarios` for several seeds, replays each
world through the engine (with the group stage, without calibration: the engine's own
zones), scores it with :func:`stream.tools.evaluate.score` and
:func:`stream.tools.ceiling.detectability`, and prints one row per world, the worst
case over the suite, each target against that worst case, and what the false alarms
and the missed forwarding churners of each preset were. ``docs/evaluation.md`` defines
every column.

Seeds: ``--seed-offset 0`` (seeds 1, 2, 3) is for tuning, ``--seed-offset 100`` (seeds
101, 102, 103) is held out.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from stream.tools.ceiling import detectability, detectability_summary
from stream.tools.decay_budget import decay_budget
from stream.tools.evaluate import LEVELS, Target, score
from stream.tools.holiday_floor import holiday_floor
from stream.tools.replay import DEFAULT_PARTITIONS
from stream.tools.world import DAY_S, World, churner_type, load_world, parse_ts

__all__ = ["SUITE_TARGETS", "TUNING_OFFSET", "HELD_OUT_OFFSET", "WorldJob", "run_world",
           "run_suite", "worst_case", "format_suite", "add_arguments", "run"]

TUNING_OFFSET = 0  # seeds 1..N
HELD_OUT_OFFSET = 100  # seeds 101..100+N
SUBSCRIBERS = 1000  # 21 worlds of 120 days in about 7 minutes on two cores
RETURN_DAYS = 14  # an alert this long after a trip's end still belongs to the absence

#: The suite's targets, judged on the worst world. Recall is over the detectable.
SUITE_TARGETS: tuple[Target, ...] = (
    Target("precision", "red+ precision", ">=", 0.92, ("red+",)),
    Target("recall_7d_detectable", "recall@7d / ceiling", ">=", 0.95, ("yellow+",)),
    Target("recall_7d_detectable", "recall@7d / ceiling", ">=", 0.90, ("red+",)),
    Target("median_lead_days", "median lead (days)", ">=", 14.0, ("yellow+",)),
    Target("holiday_false_pct", "holiday false alerts (% subs)", "<=", 0.3, ("yellow+",)),
    Target("alerts_per_1000_per_week", "alerts /1,000 subs /week", "<=", 8.0, ("yellow+",)),
    Target("groups_detected_10d_share", "collective groups >= 10 d ahead", ">=", 1.0,
           ("yellow+",)),
    Target("false_group_alerts", "false group alerts", "<=", 0.0, ("red+",)),
)


@dataclass(frozen=True)
class WorldJob:
    """One world of the suite: a preset, a seed, a size, and where to write it."""

    preset: str
    seed: int
    subscribers: int
    days: int
    workdir: str
    keep: bool = False
    calendar: bool = False
    #: subscriber partitions the replay runs on (one engine each, as the service)
    partitions: int = DEFAULT_PARTITIONS


# --------------------------------------------------------------------------------------
# One world.
# --------------------------------------------------------------------------------------


def _first_alerts(alerts: list[dict[str, Any]], zones: frozenset[str]) -> dict[str, datetime]:
    first: dict[str, datetime] = {}
    for a in alerts:
        if a.get("status") in ("resolved", "closed") or a.get("zone") not in zones \
                or a.get("kind", "subscriber") != "subscriber":
            continue
        sid = a["subscriber_id"]
        ts = parse_ts(a["ts"])
        if sid not in first or ts < first[sid]:
            first[sid] = ts
    return first


def diagnose(world: World, alerts: list[dict[str, Any]],
             detectable: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the false alarms and the forwarding churners looked like, per level.

    - ``false_alerted``: non-churners alerted; ``false_absentees`` those whose first alert
      at the level came during one of their trips (``trip`` or ``holiday_trip``) or
      within :data:`RETURN_DAYS` days after it, ``after_return`` those of them first
      alerted after the trip had ended.
    - ``forwarding_churners``: churners who set forwarding to their churn target before
      the 7-day cutoff; ``forwarding_alerted_7d`` of them alerted 7 days ahead;
      ``forwarding_wait_days`` the median days from the forwarding's start to the first
      alert (over those alerted before port-out); ``forwarding_unalerted`` not alerted
      before port-out.
    """
    subs = world.subscribers
    start = world.start
    out: dict[str, Any] = {}
    for level, zones in LEVELS.items():
        first = _first_alerts(alerts, zones)
        false = [sid for sid in first if sid in subs and not subs[sid]["churn"]]
        absentees = 0
        after = 0
        for sid in false:
            ts = first[sid]
            for trip in subs[sid].get("trips") or ():
                t0 = start + timedelta(days=trip["start_day"])
                t1 = start + timedelta(days=trip["end_day"])
                if t0 <= ts < t1 + timedelta(days=RETURN_DAYS):
                    absentees += 1
                    after += ts >= t1
                    break
        waits: list[float] = []
        forwarding = alerted_7d = unalerted = 0
        for sid, d in detectable.items():
            if not d["by_forwarding"]:
                continue
            t = subs[sid]
            fwd = [f["start_day"] for f in t.get("forwarding") or () if f["why"] == "churn"]
            out_ts = parse_ts(t["port_out_ts"])
            forwarding += 1
            f_ts = first.get(sid)
            if f_ts is None or f_ts >= out_ts:
                unalerted += 1
                continue
            alerted_7d += (out_ts - f_ts).total_seconds() >= 7 * DAY_S
            waits.append((f_ts - (start + timedelta(days=min(fwd)))).total_seconds() / DAY_S)
        out[level] = {
            "false_alerted": len(false),
            "false_by_kind": dict(sorted(Counter(subs[s]["kind"] for s in false).items())),
            "false_absentees": absentees,
            "after_return": after,
            "forwarding_churners": forwarding,
            "forwarding_alerted_7d": alerted_7d,
            "forwarding_unalerted": unalerted,
            "forwarding_wait_days": (round(statistics.median(waits), 2) if waits else None),
        }
    return out


def run_world(job: WorldJob) -> dict[str, Any]:
    """Simulate, replay and score one world; its row (figures and diagnostics)."""
    from detectors import EngineConfig
    from stream.tools.replay import replay_directory, with_ported_numbers
    from stream.tools.scenarios import apply_preset, describe
    from stream.tools.simulator import WorldParams, simulate

    started = time.perf_counter()
    params = apply_preset(job.preset, WorldParams(subscribers=job.subscribers, days=job.days,
                                                  seed=job.seed))
    out = Path(job.workdir) / f"{job.preset}-s{job.seed}"
    try:
        simulate(out, params)
        world = load_world(out)
        # As an operator configures it: the ported numbers, and with --holiday-calendar the
        # world's public holiday.
        config = with_ported_numbers(
            EngineConfig(holidays=world.holiday_calendar() if job.calendar else ()), out)
        with contextlib.redirect_stderr(io.StringIO()):  # the replay's progress lines
            alerts = list(replay_directory(out, groups=True, engine_config=config,
                                           partitions=job.partitions))
        detectable = detectability(world)
        floor = holiday_floor(world)
        budget = decay_budget(world)
        levels = {lv: score(world, alerts, zones, detectable) for lv, zones in LEVELS.items()}
    finally:
        if not job.keep:
            shutil.rmtree(out, ignore_errors=True)
    y = levels["yellow+"]
    churners = y["churners_ported_out"]
    able = y["detectable_7d"]
    return {
        "preset": job.preset,
        "seed": job.seed,
        "knobs": describe(params),
        "subscribers": job.subscribers,
        "days": job.days,
        "holiday_calendar": job.calendar,
        "partitions": job.partitions,
        "churners_ported_out": churners,
        "detectable_7d": able,
        "ceiling": round(able / churners, 4) if churners else None,
        # The least a perfect detector publishes: one alert for each churner who ported out
        # (no escalation, no group alert, no false alert), a share of the volume target.
        "alert_floor_per_1000_per_week": round(churners / (world.subscriber_weeks() / 1000.0),
                                               2),
        # The least yellow+ holiday false alerts (stream.tools.holiday_floor).
        "holiday_floor_pct": floor["pct"],
        # Silent decliners a CUSUM catches within the volume budget (decay_budget).
        "decay_budget": budget,
        "levels": {lv: {k: m[k] for k in (
            "precision", "recall_7d", "recall_7d_detectable", "median_lead_days",
            "holiday_false_pct", "alerts_per_1000_per_week", "alerts", "alerted_subscribers",
            "false_alerted", "false_by_kind", "recall_7d_by_type",
            "recall_7d_detectable_by_type", "collective_groups_judged",
            "groups_detected_10d", "groups_detected_10d_share", "min_group_lead_days",
            "group_leads_days", "false_group_alerts")} for lv, m in levels.items()},
        "detectable_by_type": detectability_summary(detectable),
        "churner_types": dict(Counter(churner_type(world.subscribers[s])
                                      for s in detectable)),
        "diagnosis": diagnose(world, alerts, detectable),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


# --------------------------------------------------------------------------------------
# The suite.
# --------------------------------------------------------------------------------------


def run_suite(presets: list[str], seeds: list[int], *, subscribers: int = SUBSCRIBERS,
              days: int = 120, jobs: int = 2, keep: Path | None = None,
              calendar: bool = False, partitions: int = DEFAULT_PARTITIONS,
              progress: Any = None) -> list[dict[str, Any]]:
    """Rows of every (preset, seed) world, in preset then seed order.

    ``jobs`` worlds run at once (separate processes when above 1); ``keep``: leave the
    worlds in that directory rather than in a temporary one that is removed; ``calendar``:
    the engine is given each world's holiday as the operator's calendar; ``partitions``:
    the subscriber partitions replayed, one engine each (what an engine compares a
    subscriber with, its segment and the co-members it judges, is its partition's).
    """
    with contextlib.ExitStack() as stack:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            workdir = str(keep)
        else:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="cw-suite-"))
        todo = [WorldJob(p, s, subscribers, days, workdir, keep is not None, calendar,
                         partitions) for p in presets for s in seeds]
        rows: list[dict[str, Any]] = []
        if jobs <= 1:
            for job in todo:
                rows.append(run_world(job))
                if progress is not None:
                    progress(rows[-1], len(rows), len(todo))
        else:
            # spawn: a clean interpreter per worker, whatever threads the parent has.
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(jobs, len(todo))) as pool:
                for row in pool.imap_unordered(run_world, todo):
                    rows.append(row)
                    if progress is not None:
                        progress(row, len(rows), len(todo))
    order = {p: i for i, p in enumerate(presets)}
    return sorted(rows, key=lambda r: (order[r["preset"]], r["seed"]))


def _value(row: dict[str, Any], key: str, level: str) -> Any:
    return row["levels"][level][key]


def worst_case(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target's worst value over the rows, the world it came from, and whether it
    is met there; ``met_worlds``: on how many of the judged worlds it is met."""
    out = []
    for t in SUITE_TARGETS:
        for level in t.levels:
            judged = [(r, _value(r, t.key, level)) for r in rows
                      if _value(r, t.key, level) is not None]
            if not judged:
                out.append({"metric": t.key, "label": t.label, "level": level, "op": t.op,
                            "target": t.value, "worst": None, "where": None, "met": None,
                            "met_worlds": 0, "judged_worlds": 0})
                continue
            pick = min if t.op == ">=" else max
            row, value = pick(judged, key=lambda rv: rv[1])
            out.append({
                "metric": t.key, "label": t.label, "level": level, "op": t.op,
                "target": t.value, "worst": value, "where": f"{row['preset']} {row['seed']}",
                "met": t.met(value), "met_worlds": sum(bool(t.met(v)) for _, v in judged),
                "judged_worlds": len(judged)})
    return out


def _f(value: Any, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.3f}" if kind == "ratio" else f"{value:.1f}"
    return str(value)


#: (header, level, key, format) of the table's columns after preset and seed.
COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("P red+", "red+", "precision", "ratio"),
    ("R7 y+", "yellow+", "recall_7d", "ratio"),
    ("R7 red+", "red+", "recall_7d", "ratio"),
    ("ceiling", "", "ceiling", "ratio"),
    ("R7/ceil y+", "yellow+", "recall_7d_detectable", "ratio"),
    ("R7/ceil red+", "red+", "recall_7d_detectable", "ratio"),
    ("lead y+", "yellow+", "median_lead_days", ""),
    ("hol% y+", "yellow+", "holiday_false_pct", "pct"),
    ("hol floor", "", "holiday_floor_pct", "pct"),
    ("/1k/wk y+", "yellow+", "alerts_per_1000_per_week", ""),
    ("floor /1k/wk", "", "alert_floor_per_1000_per_week", ""),
    ("grp>=10d y+", "yellow+", "groups_detected_10d_share", "ratio"),
    ("min grp lead", "yellow+", "min_group_lead_days", ""),
    ("false grp red+", "red+", "false_group_alerts", ""),
)
_WORST_OF: dict[str, str] = {"precision": "min", "recall_7d": "min", "ceiling": "min",
                             "recall_7d_detectable": "min", "median_lead_days": "min",
                             "holiday_false_pct": "max", "holiday_floor_pct": "max",
                             "alerts_per_1000_per_week": "max",
                             "alert_floor_per_1000_per_week": "max",
                             "groups_detected_10d_share": "min",
                             "min_group_lead_days": "min", "false_group_alerts": "max"}


def _cell(row: dict[str, Any], level: str, key: str) -> Any:
    return row[key] if not level else row["levels"][level][key]


def format_suite(rows: list[dict[str, Any]], seed_note: str = "") -> str:
    """The table (one row per world, then the worst case), the targets against the worst
    case, and each preset's diagnosis summed over its seeds."""
    header = ["preset", "seed", "churn", *(c[0] for c in COLUMNS)]
    table = [header]
    for r in rows:
        table.append([r["preset"], str(r["seed"]),
                      f"{r['detectable_7d']}/{r['churners_ported_out']}",
                      *(_f(_cell(r, lv, k), fmt) for _, lv, k, fmt in COLUMNS)])
    worst = ["worst", "", ""]
    for _, lv, k, fmt in COLUMNS:
        values = [v for r in rows if (v := _cell(r, lv, k)) is not None]
        worst.append(_f((min if _WORST_OF[k] == "min" else max)(values), fmt)
                     if values else "-")
    table.append(worst)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                         for i, c in enumerate(cells))

    lines = [f"suite: {len(rows)} worlds{seed_note}; churn = detectable 7 d ahead / churners "
             "who ported out; R7/ceil = recall@7d over the detectable", line(header),
             "  ".join("-" * w for w in widths)]
    lines.extend(line(cells) for cells in table[1:-1])
    lines.append("  ".join("-" * w for w in widths))
    lines.append(line(table[-1]))
    lines.append("")
    lines.append("targets against the worst world:")
    for w in worst_case(rows):
        verdict = "-" if w["met"] is None else "ok" if w["met"] else "MISS"
        fmt = {"median_lead_days": "", "alerts_per_1000_per_week": "",
               "holiday_false_pct": "pct"}.get(w["metric"], "ratio")
        value = _f(w["worst"], fmt if isinstance(w["worst"], float) else "")
        lines.append(f"  {w['label']} ({w['level']}) {w['op']} {w['target']:g}: worst "
                     f"{value} ({w['where'] or '-'}) {verdict}; met on "
                     f"{w['met_worlds']}/{w['judged_worlds']} worlds")
    lines.append("")
    lines.append("per preset, over its seeds: false alarms (absentees: first alerted during "
                 f"a trip or <= {RETURN_DAYS} d after it; after return), forwarding churners "
                 "(alerted 7 d ahead / detectable by forwarding; median days from "
                 "forwarding to first alert)")
    for preset in dict.fromkeys(r["preset"] for r in rows):
        mine = [r for r in rows if r["preset"] == preset]
        parts = []
        for lv in LEVELS:
            ds = [r["diagnosis"][lv] for r in mine]
            false = sum(d["false_alerted"] for d in ds)
            absent = sum(d["false_absentees"] for d in ds)
            after = sum(d["after_return"] for d in ds)
            kinds: Counter[str] = Counter()
            for d in ds:
                kinds.update(d["false_by_kind"])
            waits = [d["forwarding_wait_days"] for d in ds
                     if d["forwarding_wait_days"] is not None]
            top = "".join(f"; {k} {v}" for k, v in kinds.most_common(3))
            parts.append(
                f"{lv}: false {false} (absentees {absent}, after return {after}{top})"
                f", forwarding {sum(d['forwarding_alerted_7d'] for d in ds)}/"
                f"{sum(d['forwarding_churners'] for d in ds)} wait "
                f"{_f(statistics.median(waits) if waits else None)} d")
        lines.append(f"  {preset}: " + "; ".join(parts))
        able: Counter[str] = Counter()
        caught: dict[str, Counter[str]] = {lv: Counter() for lv in LEVELS}
        total: Counter[str] = Counter()
        for r in mine:
            for typ, v in r["detectable_by_type"].items():
                able[typ] += v["detectable"]
                total[typ] += v["churners"]
            for lv in LEVELS:
                for typ, v in (r["levels"][lv]["recall_7d_detectable_by_type"] or {}).items():
                    caught[lv][typ] += v["detected_7d"]
        lines.append("    caught 7 d ahead / detectable / churners by type: " + ", ".join(
            f"{typ} {caught['yellow+'][typ]}|{caught['red+'][typ]} / {able[typ]} / "
            f"{total[typ]}" for typ in sorted(total)) + " (yellow+|red+)")
        budgets = [r["decay_budget"] for r in mine if r.get("decay_budget")]
        if budgets:
            lines.append(
                "    silent decliners 7 d ahead, a CUSUM within the volume budget / "
                "churners: " + ", ".join(f"{b['caught_7d']}/{b['silent_churners']}"
                                         for b in budgets) + " (per seed)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Command line (options of `churnwatch evaluate`).
# --------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stream.tools.scenarios import PRESETS

    group = parser.add_argument_group("the suite of worlds (with --suite; no DIR)")
    group.add_argument("--suite", action="store_true",
                       help="simulate, replay and score every preset for several seeds")
    group.add_argument("--seeds", type=int, default=3,
                       help="seeds per preset (default %(default)s)")
    group.add_argument("--seed-offset", type=int, default=TUNING_OFFSET,
                       help="seeds are OFFSET+1..OFFSET+N: 0 for tuning, "
                            f"{HELD_OUT_OFFSET} held out (default %(default)s)")
    group.add_argument("--presets", default=",".join(PRESETS),
                       help="comma-separated presets (default: all)")
    group.add_argument("--subscribers", type=int, default=SUBSCRIBERS,
                       help="subscribers per world (default %(default)s)")
    group.add_argument("--days", type=int, default=120,
                       help="days per world (default %(default)s)")
    group.add_argument("--jobs", type=int, default=2,
                       help="worlds at once, one process each (default %(default)s)")
    group.add_argument("--keep-worlds", type=Path, default=None, metavar="DIR",
                       help="write the worlds under DIR and keep them")
    group.add_argument("--holiday-calendar", action="store_true",
                       help="give the engine each world's holiday as the operator's calendar "
                            "(CHURNWATCH_ENGINE__HOLIDAYS); default: the engine sees "
                            "holidays only in the calls")
    group.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                       help="subscriber partitions to replay each world on, one engine each "
                            "(default %(default)s, the service's default "
                            "CHURNWATCH_PARTITIONS)")


def run(args: argparse.Namespace) -> int:
    from stream.tools.scenarios import PRESETS

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if (unknown or not presets or args.seeds < 1 or args.subscribers < 1
            or args.partitions < 1):
        print(f"evaluate --suite: presets must be among {', '.join(PRESETS)}"
              f"{' (not ' + ', '.join(unknown) + ')' if unknown else ''}; seeds, "
              "subscribers and partitions positive", file=sys.stderr)
        return 2
    seeds = [args.seed_offset + k for k in range(1, args.seeds + 1)]
    started = time.perf_counter()

    def progress(row: dict[str, Any], done: int, total: int) -> None:
        print(f"suite: {done}/{total} {row['preset']} seed {row['seed']} in "
              f"{row['elapsed_s']:.0f}s ({time.perf_counter() - started:.0f}s so far)",
              file=sys.stderr, flush=True)

    rows = run_suite(presets, seeds, subscribers=args.subscribers, days=args.days,
                     jobs=args.jobs, keep=args.keep_worlds, calendar=args.holiday_calendar,
                     partitions=args.partitions, progress=progress)
    kind = ("tuning" if args.seed_offset == TUNING_OFFSET else
            "held out" if args.seed_offset >= HELD_OUT_OFFSET else "other")
    note = (f", seeds {seeds[0]}-{seeds[-1]} ({kind}), {args.subscribers:,} subscribers, "
            f"{args.days} days, holiday calendar "
            f"{'given' if args.holiday_calendar else 'not given'}, "
            f"{args.partitions} partitions, {time.perf_counter() - started:.0f} s")
    print(format_suite(rows, note))
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "worst_case": worst_case(rows)},
                                        indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
