"""``churnwatch simulate``: write a labelled simulated world (:mod:`stream.tools.simulator`)
to a directory, from a named scenario preset (:mod:`stream.tools.scenarios`) and
``--set`` overrides."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from stream.tools.scenarios import PRESETS, apply_preset
from stream.tools.simulator import WorldParams, simulate
from stream.tools.world import holiday_calendar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subscribers", type=int, default=WorldParams.subscribers,
                        help="number of subscribers (default %(default)s)")
    parser.add_argument("--days", type=int, default=WorldParams.days,
                        help="days of history (default %(default)s)")
    parser.add_argument("--seed", type=int, default=WorldParams.seed,
                        help="random seed; same seed, same bytes (default %(default)s)")
    parser.add_argument("--start", type=date.fromisoformat, default=WorldParams.start,
                        help="first day, local time (default %(default)s, a Monday)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")

    parser.add_argument("--preset", choices=list(PRESETS), default="default",
                        help="a named scenario (docs/simulator.md); --set applies on top "
                             "(default %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a WorldParams field, VALUE in JSON "
                             "(e.g. --set collective_share=0.3 --set 'trip_days=[5,9]')")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def with_overrides(params: WorldParams, settings: list[str]) -> WorldParams:
    """``params`` with ``NAME=VALUE`` overrides (VALUE is JSON; lists become tuples)."""
    import dataclasses
    import json

    names = {f.name for f in dataclasses.fields(params)} - {"segments", "preset"}
    changes: dict[str, Any] = {}
    for setting in settings:
        name, sep, raw = setting.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise ValueError(f"--set {setting!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(sorted(names))}")
        current = getattr(params, name)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(current, str) and not isinstance(value, str):
            value = raw  # digits stay a string: voicemail_number=12580
        elif isinstance(current, date) or name == "holiday_start":
            value = None if value is None else date.fromisoformat(str(value))
        elif name == "make_up_workdays":
            value = tuple(date.fromisoformat(str(v)) for v in value)
        else:
            value = _as_tuples(value)
        changes[name] = value
    return dataclasses.replace(params, **changes)


def run(args: argparse.Namespace) -> int:

    try:
        params = with_overrides(apply_preset(
            getattr(args, "preset", "default"),
            WorldParams(subscribers=args.subscribers, days=args.days, seed=args.seed,
                        start=args.start)), args.set)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    tty = sys.stderr.isatty()
    started = time.perf_counter()
    if params.start + timedelta(days=params.days) > date.today() + timedelta(days=1):
        print("simulate: note: the world runs past today; validators reject events "
              "stamped in the future", file=sys.stderr)

    def progress(day: int, days: int, events: int) -> None:
        if args.quiet:
            return
        if not tty and day % max(1, days // 10) and day != days:
            return
        width = 30
        filled = width * day // days
        bar = "#" * filled + "." * (width - filled)
        line = (f"simulate [{bar}] day {day}/{days}  {events:,} events  "
                f"{time.perf_counter() - started:.1f}s")
        sys.stderr.write(("\r" + line) if tty else (line + "\n"))
        if tty and day == days:
            sys.stderr.write("\n")
        sys.stderr.flush()

    try:
        summary = simulate(args.out, params, progress=progress)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    ev = summary["events"]
    print(f"wrote {args.out}: {summary['subscribers']:,} subscribers, {summary['days']} days, "
          f"{ev['calls']:,} calls, {ev['billing']:,} billing events, "
          f"{summary['groups']} groups ({summary['collective_groups']} collective), "
          f"{summary['churners_ported_out']} port-outs, in {summary['elapsed_s']} s")
    print("kinds: " + ", ".join(f"{k} {v}" for k, v in summary["kinds"].items()))
    calendar = holiday_calendar(summary["holiday"])
    if calendar:
        print(f"holiday {calendar[0]}: give it to the detectors as the operator's calendar, "
              f"CHURNWATCH_ENGINE__HOLIDAYS={','.join(calendar)}")
    return 0
