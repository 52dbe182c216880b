"""A simulated call centre that answers churn alerts with outcomes, and the offline evidence
that learning from them (:mod:`detectors.calibration`) makes alerts better over time.

:class:`CallCentre` plays the retention team of a world written by ``churnwatch simulate``:
every opening or escalation alert of a subscriber is called once, some hours later in
event time. Most calls reach nobody (``unreachable``, ``no_answer``; the sources' region
reached 33 of 266, see ``docs/domain.md``); a reached subscriber who is really
leaving (``truth.jsonl``'s ``churn``) is ``retained`` (some), denies it (``not_at_risk``,
a wrong answer the learner must live with), or is reported ``churned`` once the port-out
happens; a reached subscriber who is not leaving says ``not_at_risk``. A number already
gone when the call is made is ``churned`` at once. Every answer depends only on the seed,
the alert and the truth (one random stream per alert id), not on the other alerts.

The world is written before the calls are made, so a ``retained`` churner still ports out
in ``billing.jsonl``: the learner takes the call's label first and the port-out changes
nothing. :func:`learning_experiment` runs the loop offline over a world and its replayed
alerts; ``docs/outcomes.md`` has the design for the stream and
``docs/decisions/0008-outcome-calibration-off-by-default.md`` the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # River and numpy load only where the learner runs (CLI stays fast)
    from detectors.calibration import OutcomeLearner

__all__ = ["CallCentre", "add_arguments", "from_args", "learning_experiment", "load_truth",
           "outcome_stream", "period_metrics"]

DAY_S = 86400.0
LEAD_DAYS = 7


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class CallCentre:
    """Deterministic outcomes for alerts, from the world's truth.

    Parameters
    ----------
    seed
        Seeds one random stream per alert (with the alert id).
    unreachable, no_answer
        Shares of calls that reach nobody: the number does not connect, or nobody picks
        up. The rest reach the subscriber. The sources' region: 233 of 266 unreachable.
    retained
        Share of reached churners kept by the call (``retained``).
    denial
        Share of reached churners who say they are staying (``not_at_risk``) and leave.
    delay_hours
        Range of the delay between the alert and the call (event time, uniform).
    report_hours
        Range of the delay between a reached churner's port-out and the ``churned`` report.

    Examples
    --------
    >>> truth = {"s1": {"churn": True, "port_out_ts": "2026-03-20T10:00:00+08:00"},
    ...          "s2": {"churn": False, "port_out_ts": None}}
    >>> centre = CallCentre(seed=7, unreachable=0.0, no_answer=0.0, retained=0.0, denial=0.0)
    >>> alert = {"alert_id": "a1f3c09e5b7d2e44", "kind": "subscriber", "status": "open",
    ...          "subscriber_id": "s1", "ts": "2026-03-02T16:40:11+08:00"}
    >>> [(o["outcome"], o["ts"]) for o in centre.answer(alert, truth)]
    [('churned', '2026-03-22T23:55:48+08:00')]
    >>> alert2 = dict(alert, alert_id="b2e4d1f06c8a9b55", subscriber_id="s2")
    >>> [o["outcome"] for o in centre.answer(alert2, truth)]
    ['not_at_risk']
    >>> centre.answer(dict(alert, status="resolved"), truth)
    []

    """

    seed: int = 1
    unreachable: float = 0.55
    no_answer: float = 0.15
    retained: float = 0.3
    denial: float = 0.1
    delay_hours: tuple[float, float] = (2.0, 72.0)
    report_hours: tuple[float, float] = (6.0, 72.0)

    def answer(self, alert: dict[str, Any], truth: dict[str, dict[str, Any]], *,
               received: datetime | None = None) -> list[dict[str, Any]]:
        """The outcome messages (0 or 1) for one alert, in the outcome contract.

        ``received``: when the alert reached the call centre, if later than its ``ts``
        (a replay raises a day's closing alerts with the next event): the call is made
        the delay after whichever is later, so no answer predates its alert's arrival.
        """
        if (alert.get("kind", "subscriber") != "subscriber"
                or alert["status"] in ("resolved", "closed")):
            return []
        sid = alert["subscriber_id"]
        t = truth.get(sid)
        if t is None:
            return []
        rng = random.Random(f"{self.seed}|{alert['alert_id']}")
        raised = _ts(alert["ts"])
        if received is not None and received > raised:
            raised = received.astimezone(raised.tzinfo)
        when = raised + timedelta(hours=rng.uniform(*self.delay_hours))
        gone = _ts(t["port_out_ts"]) if t.get("port_out_ts") else None
        draw = rng.random()
        if gone is not None and gone <= when:
            outcome = "churned"  # the number has already left: the call says so
        elif draw < self.unreachable:
            outcome = "unreachable"
        elif draw < self.unreachable + self.no_answer:
            outcome = "no_answer"
        elif not t["churn"]:
            outcome = "not_at_risk"
        else:
            kept = rng.random()
            if kept < self.retained:
                outcome = "retained"
            elif kept < self.retained + self.denial:
                outcome = "not_at_risk"
            elif gone is not None:
                outcome = "churned"
                when = gone + timedelta(hours=rng.uniform(*self.report_hours))
            else:
                return []  # leaving, but not inside the world: nothing to report yet
        return [{
            "alert_id": alert["alert_id"], "subscriber_id": sid,
            "ts": when.replace(microsecond=0).isoformat(), "outcome": outcome,
        }]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The :class:`CallCentre` knobs as options (``replay``/``evaluate --call-centre``)."""
    d = CallCentre()
    group = parser.add_argument_group("simulated call centre (with --call-centre)")
    group.add_argument("--call-centre-seed", type=int, default=None,
                       help="seed of the answers (default: the world's seed, else 1)")
    group.add_argument("--unreachable", type=float, default=d.unreachable,
                       help=f"share of calls whose number does not connect ({d.unreachable})")
    group.add_argument("--no-answer", type=float, default=d.no_answer,
                       help=f"share of calls nobody picks up ({d.no_answer})")
    group.add_argument("--retained", type=float, default=d.retained,
                       help=f"share of reached churners kept by the call ({d.retained})")
    group.add_argument("--denial", type=float, default=d.denial,
                       help=f"share of reached churners who say they stay ({d.denial})")
    group.add_argument("--call-delay-hours", type=float, nargs=2, default=d.delay_hours,
                       metavar=("MIN", "MAX"), help="hours from alert to call (2 72)")
    group.add_argument("--capacities", type=lambda text: tuple(int(v) for v in text.split(",")),
                       default=CAPACITIES, metavar="N,N,...",
                       help="daily capacities (calls a day) the contact experiment tries "
                            f"({','.join(map(str, CAPACITIES))})")
    group.add_argument("--call-centre-runs", type=_positive, default=RUNS, metavar="N",
                       help="runs of the call centre (seeds from --call-centre-seed on) the "
                            f"contact experiment averages ({RUNS})")
    group.add_argument("--report-delay-hours", type=float, nargs=2, default=d.report_hours,
                       metavar=("MIN", "MAX"),
                       help="hours from a reached churner's port-out to the report (6 72)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def from_args(args: argparse.Namespace, world: Path) -> CallCentre:
    """The call centre the options describe; its seed defaults to the world's."""
    seed = args.call_centre_seed
    if seed is None:
        try:
            seed = int(json.loads((world / "world.json").read_text())["params"]["seed"])
        except (OSError, KeyError, TypeError, ValueError):
            seed = 1
    return CallCentre(seed=seed, unreachable=args.unreachable, no_answer=args.no_answer,
                      retained=args.retained, denial=args.denial,
                      delay_hours=tuple(args.call_delay_hours),
                      report_hours=tuple(args.report_delay_hours))


def load_truth(world: Path) -> dict[str, dict[str, Any]]:
    """``truth.jsonl`` of a simulated world, by subscriber id."""
    return {t["subscriber_id"]: t for t in _jsonl(world / "truth.jsonl")}


def outcome_stream(centre: CallCentre, alerts: Iterable[dict[str, Any]],
                   truth: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every alert's outcome, in event-time order (ties by alert id)."""
    out = [o for a in alerts for o in centre.answer(a, truth)]
    out.sort(key=lambda o: (_ts(o["ts"]), o["alert_id"]))
    return out


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _exits(billing: Path) -> list[dict[str, Any]]:
    """``port_out`` and ``deactivation`` events of a billing file."""
    found = []
    with billing.open("rb") as handle:
        for line in handle:
            if b"port_out" in line or b"deactivation" in line:
                event = json.loads(line)
                if event.get("kind") in ("port_out", "deactivation"):
                    found.append(event)
    return found


def period_metrics(
    truth: dict[str, dict[str, Any]],
    alerts: Iterable[dict[str, Any]],
    zones: frozenset[str],
    start: datetime,
    end: datetime,
    periods: int = 3,
) -> list[dict[str, Any]]:
    """Precision and recall@7d per period of the world (thirds by default).

    Precision in a period: subscribers with a counted alert (a subscriber alert, not a
    resolution, in ``zones``) dated in the period, share who are churners. Recall@7d in a
    period: churners whose port-out falls in it, share first alerted (in ``zones``, at
    any time) at least 7 days before it.
    """
    counted = [a for a in alerts if a.get("kind", "subscriber") == "subscriber"
               and a.get("status") not in ("resolved", "closed") and a.get("zone") in zones
               and a.get("subscriber_id") in truth]
    first: dict[str, datetime] = {}
    for a in counted:
        ts = _ts(a["ts"])
        if a["subscriber_id"] not in first or ts < first[a["subscriber_id"]]:
            first[a["subscriber_id"]] = ts
    span = (end - start) / periods
    out = []
    for k in range(periods):
        lo, hi = start + k * span, start + (k + 1) * span
        alerted = {a["subscriber_id"] for a in counted if lo <= _ts(a["ts"]) < hi}
        true = sum(1 for sid in alerted if truth[sid]["churn"])
        leavers = [sid for sid, t in truth.items() if t["churn"] and t.get("port_out_ts")
                   and lo <= _ts(t["port_out_ts"]) < hi]
        found = sum(1 for sid in leavers if sid in first
                    and (_ts(truth[sid]["port_out_ts"]) - first[sid]).total_seconds()
                    >= LEAD_DAYS * DAY_S)
        out.append({
            "alerted": len(alerted), "true": true,
            "precision": round(true / len(alerted), 4) if alerted else None,
            "leavers": len(leavers), "found_7d": found,
            "recall_7d": round(found / len(leavers), 4) if leavers else None,
        })
    return out


def learning_experiment(
    world: Path,
    alerts: list[dict[str, Any]] | None = None,
    *,
    centre: CallCentre | None = None,
    make_learner: Callable[[], OutcomeLearner] | None = None,
    periods: int = 3,
) -> dict[str, Any]:
    """Run the call centre and the learner over a simulated world and its alerts.

    ``alerts`` default to ``world/alerts.jsonl`` (``churnwatch replay W --out
    W/alerts.jsonl``). Outcomes, port-outs (``billing.jsonl``) and alerts are merged in
    event time; each alert is scored by the learner as it was then. Returns, for the
    engine's zones (``raw``) and the calibrated ones (``calibrated``), precision and
    recall@7d per period at ``yellow+`` and ``red+``, with the outcome counts and the
    learner's counters.
    """
    from detectors.calibration import OutcomeLearner, RiskCalibrator, learn_stream

    truth = {t["subscriber_id"]: t for t in _jsonl(world / "truth.jsonl")}
    summary = json.loads((world / "world.json").read_text())
    start, end = _ts(summary["start"]), _ts(summary["end"])
    raw = alerts if alerts is not None else _jsonl(world / "alerts.jsonl")
    centre = centre or CallCentre()
    outcomes = outcome_stream(centre, raw, truth)
    exits = _exits(world / "billing.jsonl")
    items: list[tuple[datetime, int, int, str, dict[str, Any]]] = []
    for order, (kind, messages) in enumerate(
            (("alert", raw), ("outcome", outcomes), ("exit", exits))):
        items.extend((_ts(m["ts"]), order, n, kind, m) for n, m in enumerate(messages))
    items.sort(key=lambda item: item[:3])
    learner = make_learner() if make_learner is not None else OutcomeLearner(RiskCalibrator())
    scored = learn_stream(learner, [(kind, m) for *_, kind, m in items])
    levels = {"yellow+": frozenset({"yellow", "red", "white"}),
              "red+": frozenset({"red", "white"})}
    return {
        "outcomes": dict(Counter(o["outcome"] for o in outcomes)),
        "calls": sum(1 for a in raw if a.get("kind", "subscriber") == "subscriber"
                     and a["status"] not in ("resolved", "closed")),
        "learner": dict(learner.counters),
        "version": learner.version,
        "raw": {lv: period_metrics(truth, raw, z, start, end, periods)
                for lv, z in levels.items()},
        "calibrated": {lv: period_metrics(truth, scored, z, start, end, periods)
                       for lv, z in levels.items()},
        "alerts": scored,
    }


# --------------------------------------------------------------------------------------
# Reaching people: calls at a chosen hour, a daily capacity, an order of the work.
# --------------------------------------------------------------------------------------

#: The call centre's working hours (local): random-hour calls are drawn from them, and
#: advised calls are made where a contact window meets them.
OPEN_HOURS = (9, 21)
#: Calls an item gets before the call centre gives up on it.
MAX_ATTEMPTS = 3
#: Daily capacities tried by :func:`contact_experiment` (calls a day).
CAPACITIES = (1, 2, 4, 8)
#: Runs of the call centre (seeds) :func:`contact_experiment` averages: one run's value
#: retained turns on a few dozen retention draws, enough to reverse a small difference.
RUNS = 20


@dataclass(frozen=True)
class ContactCentre:
    """A call centre that calls each day's work at a chosen hour, within a daily capacity.

    Each day (the world's local days) the subscriber items open when the centre opens (one
    per open episode, from the alert stream, :func:`stream.service.work_queue.fold`) are
    called, at most ``capacity`` of them: in the queue's order
    (:func:`stream.service.work_queue.ordered`, by expected retained value) or first come,
    first served (by when the episode opened).
    With ``timing="advised"`` an item is called on a day one of its contact windows meets
    the working hours, at an hour in the best such window (the other items wait for their
    day, as the queue's ``reachable_now`` filter has them wait; an item whose alert has no
    windows is called any day at a random hour); with ``timing="random"``, any day at a
    random working hour. It reaches the subscriber
    with the world's own odds (``truth.jsonl``'s ``answers``: the first share in the hours
    they answer in, the second outside them; always without them). A number already ported
    out is gone (not counted as a call). A reached churner is retained with probability
    ``retained``; a reached subscriber's item is done for the rest of its episode (an
    escalation of the same episode is not called again: one retention draw per episode);
    an unreached one is tried again on a later day, up to :data:`MAX_ATTEMPTS` calls in
    the episode. Group items have no one number to call and are left out.

    Besides the calls and their answers, a run counts the monthly fees of the churners
    reached before they left (``value_reached``: what the centre had the chance to keep,
    before the one retention draw per episode) and the open and callable items a day
    (``open_per_day``, ``callable_per_day``: a capacity above the callable items calls
    everyone, whatever the order), and the days the callable items were more than the
    capacity (``full_days`` of ``days``: the only days the order decides who waits).

    Draws are shared between the ways of working (common random numbers): a call's answer,
    and where in its window or working day it falls, depend on the episode and the attempt,
    a reached churner's retention on the episode, so two ways of working differ only by whom
    they call and when.

    Examples
    --------
    >>> truth = {"s1": {"churn": True, "port_out_ts": None, "monthly_fee": 88.0,
    ...                 "answers": {"weekdays": [19, 20], "weekend": [], "share": [1.0, 0.0]}}}
    >>> alert = {"alert_id": "a1", "kind": "subscriber", "status": "open",
    ...          "subscriber_id": "s1", "zone": "red", "risk_score": 0.8,
    ...          "value_at_risk": 88.0, "ts": "2026-03-02T08:00:00+08:00",
    ...          "contact": {"answered_share": 0.9, "windows": [
    ...              {"weekdays": [1, 2, 3, 4, 5], "start": "18:00", "end": "21:00"}]}}
    >>> centre = ContactCentre(seed=3, retained=1.0)
    >>> start, end = _ts("2026-03-02T00:00:00+08:00"), _ts("2026-03-06T00:00:00+08:00")
    >>> run = centre.run([alert], truth, start, end, capacity=5, timing="advised")
    >>> run["calls"], run["unreached"], run["retained"], run["value_retained"]
    (1, 0, 1, 88.0)
    >>> centre.run([alert], truth, start, end, capacity=5, timing="random")["calls"] > 1
    True

    """

    seed: int = 1
    retained: float = 0.3
    open_hours: tuple[int, int] = OPEN_HOURS
    max_attempts: int = MAX_ATTEMPTS
    tz_offset_hours: float = 8.0

    def run(self, alerts: Iterable[dict[str, Any]], truth: dict[str, dict[str, Any]],
            start: datetime, end: datetime, *, capacity: int, order: str = "queue",
            timing: str = "advised") -> dict[str, Any]:
        """Work the alerts from ``start`` to ``end``; figures of the run."""
        from stream.service.work_queue import fold, is_open, item_key, ordered, worked

        tz = start.tzinfo
        pending = sorted((a for a in alerts if a.get("kind", "subscriber") == "subscriber"
                          and a.get("subscriber_id") in truth),
                         key=lambda a: (_ts(a["ts"]), str(a.get("alert_id"))))
        # One item per running episode, as the work queue keeps them: an item worked to the
        # end (reached, given up, gone) stays until its episode ends, so that the episode's
        # escalation is not called again (one retention draw per episode).
        items: dict[str, dict[str, Any]] = {}
        attempts: Counter[tuple[str, Any]] = Counter()  # per episode: (key, opened)
        figures: Counter[str] = Counter()
        value = value_reached = 0.0
        days = 0
        at = 0
        day = start
        while day < end:
            close = day + timedelta(days=1)
            # The day's work is the queue as it stands when the centre opens: the alerts of
            # the night's day close (01:00) are called the same day.
            opening = day + timedelta(hours=self.open_hours[0])
            while at < len(pending) and _ts(pending[at]["ts"]) < opening:
                alert = pending[at]
                at += 1
                key = item_key(alert)
                if key is None:
                    continue
                item = fold(items.get(key), alert)
                if item is None:
                    items.pop(key, None)
                else:
                    items[key] = item
            work = [i for i in items.values() if is_open(i)]
            days += 1
            figures["open"] += len(work)
            if timing == "advised":
                # Called on a day one of its windows is open in working hours (or any day,
                # when its alert has no windows at all); the others wait for their day.
                callable_ = [i for i in work if self._window(i, day) is not None
                             or not _windows(i)]
                figures["waited"] += len(work) - len(callable_)
                work = callable_
            figures["callable"] += len(work)
            figures["full"] += len(work) > capacity  # the order decides who waits
            chosen: list[Mapping[str, Any]]
            if order == "queue":
                chosen = ordered(work, capacity)
            else:
                chosen = sorted(work, key=lambda i: (str(i["opened_ts"]), str(i["key"])))
                chosen = chosen[:capacity]
            for call in chosen:
                key = str(call["key"])
                episode = (key, call["opened_ts"])
                t = truth[key]
                rng = random.Random(f"{self.seed}|{episode}|{attempts[episode]}")
                u_answer, u_hour, u_minute = rng.random(), rng.random(), rng.random()
                lo, hi = self.open_hours
                window = self._window(call, day) if timing == "advised" else None
                if window is not None:
                    lo, hi = window
                    figures["in_window"] += 1
                when = day.replace(hour=lo + int(u_hour * (hi - lo)),
                                   minute=int(u_minute * 60))
                gone = _ts(t["port_out_ts"]) if t.get("port_out_ts") else None
                if gone is not None and gone <= when:
                    figures["gone"] += 1
                    items[key] = worked(call, "gone")
                    continue
                attempts[episode] += 1
                figures["calls"] += 1
                if u_answer >= _answer_odds(t, when):
                    figures["unreached"] += 1
                    if attempts[episode] >= self.max_attempts:
                        figures["given_up"] += 1
                        items[key] = worked(call, "given_up")
                    continue
                figures["reached"] += 1
                items[key] = worked(call, "reached")
                if t["churn"]:
                    figures["reached_churners"] += 1
                    value_reached += float(t.get("monthly_fee") or 0.0)
                    keep = random.Random(f"{self.seed}|{key}|{call['opened_ts']}|kept")
                    if keep.random() < self.retained:
                        figures["retained"] += 1
                        value += float(t.get("monthly_fee") or 0.0)
            day = close.astimezone(tz)
        calls = figures["calls"]
        return {
            "capacity": capacity, "order": order, "timing": timing,
            "calls": calls, "reached": figures["reached"], "unreached": figures["unreached"],
            "unreachable_share": round(figures["unreached"] / calls, 4) if calls else None,
            "gone": figures["gone"], "given_up": figures["given_up"],
            "in_window": figures["in_window"], "waited": figures["waited"],
            "reached_churners": figures["reached_churners"],
            "retained": figures["retained"], "value_retained": round(value, 2),
            "value_reached": round(value_reached, 2),
            "open_per_day": round(figures["open"] / days, 2) if days else None,
            "callable_per_day": round(figures["callable"] / days, 2) if days else None,
            "days": days, "full_days": figures["full"],
        }

    def _window(self, item: Mapping[str, Any], day: datetime) -> tuple[int, int] | None:
        """The hours (first, end) of the item's best window that meets the working hours
        on ``day``'s weekday, if any."""
        lo, hi = self.open_hours
        for window in _windows(item):
            if day.isoweekday() not in window.get("weekdays", ()):
                continue
            first = max(lo, int(window["start"][:2]))
            last = min(hi, int(window["end"][:2]))
            if first < last:
                return first, last
        return None


def _windows(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    contact = item.get("contact")
    windows = contact.get("windows") if isinstance(contact, Mapping) else None
    return windows if isinstance(windows, list) else []


def _answer_odds(t: dict[str, Any], when: datetime) -> float:
    """The chance a call at ``when`` (local time) is answered, from the world's truth."""
    answers = t.get("answers")
    if not answers:
        return 1.0
    inside, outside = answers["share"]
    hours = answers["weekend"] if when.isoweekday() >= 6 else answers["weekdays"]
    return float(inside if when.hour in hours else outside)


def contact_experiment(world: Path, alerts: list[dict[str, Any]], *,
                       capacities: tuple[int, ...] = CAPACITIES, seed: int = 1,
                       retained: float = 0.3, runs: int = RUNS) -> dict[str, Any]:
    """Advised windows against random hours, and the queue's order against first come,
    first served, at each daily capacity, over a simulated world and its alerts.

    Each way of working is run ``runs`` times, with the call centre's seeds ``seed`` to
    ``seed + runs - 1`` (every way with the same seeds), and its figures are the means
    over the runs (:func:`_mean`). Returns ``runs``, ``seeds``, ``timing`` (per capacity:
    the queue's order at advised and at random hours) and ``order`` (per capacity: advised
    hours in the queue's order and first come, first served, and in how many runs the
    queue retained more value, ``queue_ahead``, or the same, ``same``), and whether the
    targets hold on the means: the unreachable share at advised hours at most half of the
    random-hour one, and more value retained by the queue's order at every capacity.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs}")
    truth = load_truth(world)
    summary = json.loads((world / "world.json").read_text())
    start, end = _ts(summary["start"]), _ts(summary["end"])
    centres = [ContactCentre(seed=seed + k, retained=retained) for k in range(runs)]
    timing: list[dict[str, Any]] = []
    order: list[dict[str, Any]] = []
    for capacity in capacities:
        def run(order_: str, timing_: str, capacity: int = capacity
                ) -> list[dict[str, Any]]:
            return [centre.run(alerts, truth, start, end, capacity=capacity, order=order_,
                               timing=timing_) for centre in centres]

        advised, first = run("queue", "advised"), run("first_come", "advised")
        timing.append({"capacity": capacity, "advised": _mean(advised),
                       "random": _mean(run("queue", "random"))})
        pairs = [(q["value_retained"], f["value_retained"]) for q, f in zip(advised, first)]
        difference, se = _paired(pairs)
        order.append({"capacity": capacity, "queue": _mean(advised),
                      "first_come": _mean(first),
                      "queue_ahead": sum(q > f for q, f in pairs),
                      "same": sum(q == f for q, f in pairs),
                      "difference": difference, "difference_se": se})
    halves = [t["advised"]["unreachable_share"] is not None
              and t["random"]["unreachable_share"] is not None
              and t["advised"]["unreachable_share"] <= 0.5 * t["random"]["unreachable_share"]
              for t in timing]
    more = [o["queue"]["value_retained"] > o["first_come"]["value_retained"] for o in order]
    return {"capacities": list(capacities), "runs": runs, "seeds": [seed, seed + runs - 1],
            "timing": timing, "order": order,
            "targets": {"unreachable_half_of_random": all(halves),
                        "queue_more_value_every_capacity": all(more)}}


def _paired(pairs: list[tuple[float, float]]) -> tuple[float, float | None]:
    """The mean of ``a - b`` over paired runs and its standard error (None for one run):
    a difference within about two standard errors is one the runs cannot tell from none.

    >>> _paired([(10.0, 8.0), (12.0, 8.0), (9.0, 9.0)])
    (2.0, 1.15)
    """
    diffs = [a - b for a, b in pairs]
    mean = round(statistics.fmean(diffs), 2)
    if len(diffs) < 2:
        return mean, None
    return mean, round(statistics.stdev(diffs) / math.sqrt(len(diffs)), 2)


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs' figures averaged; the unreachable share as all runs' unreached calls over
    all their calls.

    >>> _mean([{"order": "queue", "calls": 3, "unreached": 1, "unreachable_share": 0.3333},
    ...        {"order": "queue", "calls": 1, "unreached": 1, "unreachable_share": 1.0}])
    {'order': 'queue', 'calls': 2.0, 'unreached': 1.0, 'unreachable_share': 0.5}
    """
    mean: dict[str, Any] = {}
    for name, value in runs[0].items():
        numbers = isinstance(value, (int, float)) and not isinstance(value, bool)
        mean[name] = (round(sum(r[name] for r in runs) / len(runs), 2) if numbers
                      and name != "capacity" else value)
    calls = sum(r["calls"] for r in runs)
    if "unreachable_share" in mean:
        mean["unreachable_share"] = (round(sum(r["unreached"] for r in runs) / calls, 4)
                                     if calls else None)
    return mean


def format_contact(report: dict[str, Any]) -> str:
    """The experiment as a table."""
    first, last = report["seeds"]
    lines = [f"means over {report['runs']} runs of the call centre (seeds {first}-{last}):",
             "calling in the advised windows against random hours (queue order):",
             f"  {'capacity':>8}  {'unreachable advised':>19}  {'random':>7}  "
             f"{'retained advised':>16}  {'random':>7}"]
    for t in report["timing"]:
        a, r = t["advised"], t["random"]
        lines.append(f"  {t['capacity']:>8}  {_pct(a['unreachable_share']):>19}  "
                     f"{_pct(r['unreachable_share']):>7}  {a['retained']:>16.1f}  "
                     f"{r['retained']:>7.1f}")
    lines += ["value retained (monthly fees) by the queue's order against first come, "
              "first served (advised hours), the mean difference over the paired runs with "
              "its standard error, and the runs where the queue retained more or the same; "
              "churners reached (their fees), the items open and callable a day, and the "
              "days the callable items were more than the capacity (the only days the "
              "order decides who waits):",
              f"  {'capacity':>8}  {'queue':>9}  {'first come':>10}  {'difference':>13}  "
              f"{'ahead':>5}  {'same':>4}  {'customers':>9}  {'first come':>10}  "
              f"{'reached':>9}  {'first come':>10}  {'open/day':>8}  {'callable':>8}  "
              f"{'full days':>9}"]
    for o in report["order"]:
        q, f = o["queue"], o["first_come"]
        se = "" if o["difference_se"] is None else f" ±{o['difference_se']:.0f}"
        lines.append(f"  {o['capacity']:>8}  {q['value_retained']:>9.0f}  "
                     f"{f['value_retained']:>10.0f}  {o['difference']:>+8.0f}{se:>5}  "
                     f"{o['queue_ahead']:>5}  {o['same']:>4}  "
                     f"{q['retained']:>9.1f}  {f['retained']:>10.1f}  "
                     f"{q['value_reached']:>9.0f}  {f['value_reached']:>10.0f}  "
                     f"{q['open_per_day']:>8}  {q['callable_per_day']:>8}  "
                     f"{q['full_days']:>5.0f}/{q['days']:.0f}")
    t = report["targets"]
    lines.append(f"targets: unreachable at advised hours <= half of random: "
                 f"{'ok' if t['unreachable_half_of_random'] else 'MISS'}; queue order retains "
                 f"more value at every capacity: "
                 f"{'ok' if t['queue_more_value_every_capacity'] else 'MISS'}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
