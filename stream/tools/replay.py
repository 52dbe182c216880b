"""`churnwatch replay`: the detectors engine over a directory of JSON Lines files.

Reads ``subscribers.jsonl``, ``calls.jsonl`` and ``billing.jsonl`` (any may be absent) in the
input contract, validates every line like a worker validates every message, and writes the
alerts exactly as the stream publishes them. Profiles go first (on the stream they come
from a compacted topic that is read before the events); calls and billing are merged by
event time. Subscribers are grouped by the partition Kafka would give them, because each
partition keeps its own population baseline, as a worker does. From there each event takes
the worker's step (:class:`stream.service.event_step.EventStep`: both lateness rules, the
engine call, whose exception is logged and counted as ``engine_error.<kind>`` without
stopping the replay, and the routing of its output).

With the group stage on (the default; ``--no-groups`` / ``groups=False`` leaves it out) the
engines also emit member signals, which are routed by ``group_id`` to one
:class:`detectors.group.GroupStage` per partition of the group-signals topic (Kafka's
partitioner on the group id, as the stream routes them), through a
:class:`stream.service.signal_order.Sequencer` that releases them in event-time order across the
subscriber partitions, as the stream's group agent does: their group alerts go into the
same output, and a member's own alerts get a ``group_context`` reason while its group is in
alert (see ``docs/groups.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from stream.contracts import INPUT_KINDS, TOPIC_OF_KIND, TOPIC_OUTCOMES
from stream.contracts.ported import PORTED_FILE, load_ported_numbers
from stream.contracts.validation import Accepted, Rejected, Validator, dead_letter

if TYPE_CHECKING:
    from detectors.calibration import OutcomeLearner
    from stream.service.event_step import EventStep, Stepped
    from stream.tools.callcentre import CallCentre

DEFAULT_PARTITIONS = 4
PROGRESS_EVERY = 500_000

# PORTED_FILE (stream.contracts.ported): optional ported numbers in a replay directory,
# ``{"number": ..., "operator": ...}`` a line; on the stream the same records come from
# ``telecom.ported``, read before the events.
#: Call-centre outcomes in a replay directory, one ``churn.outcomes`` message a line.
OUTCOMES_FILE = "outcomes.jsonl"

DeadLetterSink = Callable[[dict[str, Any]], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="holds calls/billing/subscribers.jsonl")
    parser.add_argument("--out", type=Path, default=None, help="alerts file (default stdout)")
    parser.add_argument("--dead-letter", type=Path, default=None,
                        help="write rejected lines here, one JSON object a line")
    parser.add_argument("--partitions", type=int, default=None,
                        help="partition count to mirror (default: the service's setting)")
    parser.add_argument("--no-groups", dest="groups", action="store_false",
                        help="leave out the group stage (no group alerts, no member signals)")
    calibrate = parser.add_mutually_exclusive_group()
    calibrate.add_argument("--calibration", dest="calibration", action="store_true",
                           default=None, help="calibrate by outcome learning (default: "
                           "CHURNWATCH_CALIBRATION, as the service)")
    calibrate.add_argument("--no-calibration", dest="calibration", action="store_false",
                           help="publish the engine's scores and zones (no outcome learning)")
    parser.add_argument("--outcomes", type=Path, default=None,
                        help=f"call-centre outcomes, JSON Lines (default DIR/{OUTCOMES_FILE} "
                             f"if present)")
    parser.add_argument("--call-centre", action="store_true",
                        help="a simulated call centre answers the alerts as they are raised "
                             "(needs DIR/truth.jsonl)")
    parser.add_argument("--outcomes-out", type=Path, default=None,
                        help="with --call-centre, write the answers it gave here")
    from stream.tools.callcentre import add_arguments as call_centre_arguments

    call_centre_arguments(parser)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield number, line


def replay_directory(
    directory: Path,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    engine_config: Any = None,
    on_dead_letter: DeadLetterSink | None = None,
    counters: Counter[str] | None = None,
    validator: Validator | None = None,
    stores: list[dict[str, Any]] | None = None,
    groups: bool = True,
    group_partitions: int | None = None,
    group_config: Any = None,
    group_stores: list[dict[str, Any]] | None = None,
    learner: OutcomeLearner | None = None,
    outcomes: Path | None = None,
    call_centre: CallCentre | None = None,
    truth: dict[str, dict[str, Any]] | None = None,
    on_answer: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the alerts (without ``emitted_at``) the engine raises over ``directory``.

    ``counters`` (if given) receives ``read.<kind>``, ``accepted.<kind>``,
    ``rejected.<reason>`` and the engine's own counters under ``engine.<name>``.
    ``stores`` (if given) receives each partition's subscriber state store. Without an
    ``engine_config``, the defaults are used, with ``DIR/ported.jsonl`` if present.

    ``groups``: run the group stage too (engines with member signals, one
    :class:`~detectors.group.GroupStage` per group partition, ``group_partitions``
    defaulting to ``partitions``); group alerts come in the same output, and members'
    alerts get a ``group_context`` reason while their group is in alert. ``group_stores``
    (if given) receives each group partition's state store.

    **Outcome learning** (``docs/outcomes.md``). With a ``learner``
    (:class:`detectors.calibration.OutcomeLearner`; its ``store`` and ``counters`` hold the
    final state, so pass one in to look at it) every subscriber alert is calibrated, and
    ``counters`` get the learner's counters as ``calibration.<name>``. The learner's
    inputs, in this order (the stream's calibration stage must build the same model):

    1. Events (calls and billing merged by event time, calls first at equal times;
       profiles before all) go through the engines one at a time. For each event: its
       alerts, in the order the engine and the group stage produce them, each subscriber
       alert *with its group context already added* going through ``learner.alert()``
       (group alerts and resolutions come back unchanged); then, if the event is an
       accepted ``port_out`` or ``deactivation``, ``learner.exit(subscriber_id, ts)``.
       So the alerts an event raises reach the learner before that event's exit.
    2. An outcome dated ``t`` (from ``outcomes``, default ``DIR/outcomes.jsonl`` when it
       exists and no call centre answers; validated as kind ``"outcome"`` by a validator
       of its own; bad lines are dead letters on ``churn.outcomes`` with their line
       number as offset) goes to
       ``learner.outcome()`` **after every event with ts <= t** (and the alerts and exit
       that event causes) **and before the first event with ts > t**: a fourth stream,
       after billing at equal times. The file is sorted by (ts, line) first, so it need
       not be in order. Outcomes dated after the last event are handed over at the end.
       A non-None return (``unknown_alert``, ``subscriber_mismatch``) is a dead letter,
       counted ``rejected.<reason>``. Outcomes are read only with a learner.
    3. With a ``call_centre`` (:class:`stream.tools.callcentre.CallCentre`, answering from
       ``truth``, default ``DIR/truth.jsonl``) each subscriber alert is answered when it
       is raised, the call dated from the event that raised it (a call follows the
       alert's arrival, so no answer predates it), and the answers are released like
       file outcomes: after every event at or before their ts, before the first event
       after it (ties: in the order they were made). ``on_answer`` gets each answer as it
       is released; written to a file and replayed as ``outcomes``, they give the same
       alerts and the same learner state (tested).

    Outcomes go in time order (the file is sorted by ``(ts, line)`` first: shuffling it
    changes nothing, tested) and move the learner's clock as alerts and exits do, so
    nothing is late here: only an input dated a day or more after ``t`` can seal the day
    of an outcome dated ``t``. Without a learner and a call centre the output is exactly
    what it was before outcome learning.
    """
    from detectors import Engine, EngineConfig
    from detectors.group import GroupConfig, GroupStage
    from stream.contracts.partitioning import partition_of
    from stream.service.event_step import EventStep
    from stream.service.signal_order import Sequencer

    counts = counters if counters is not None else Counter()
    validator = validator or Validator()
    config = engine_config if engine_config is not None else with_ported_numbers(
        EngineConfig(), directory)
    # One engine per partition, as in the service: each has its own population baseline.
    subscriber_stores: list[dict[str, Any]] = [{} for _ in range(partitions)]
    if stores is not None:
        stores.extend(subscriber_stores)
    engines = [Engine(config, subscribers=s, population={}, signals=groups)
               for s in subscriber_stores]
    part_cache: dict[str, int] = {}
    n_groups = group_partitions or partitions
    group_state: list[dict[str, Any]] = [{} for _ in range(n_groups)]
    if group_stores is not None:
        group_stores.extend(group_state)
    # The group stage keeps the engines' clock (their days, their local time).
    on_clock = (group_config or GroupConfig()).on_clock_of(config)
    stages = [GroupStage(on_clock, store) for store in group_state]
    # Signals reach the group stage in event-time order across partitions, as on the
    # stream (stream.service.signal_order): each engine is a source with its closed-day watermark.
    sequencers = [Sequencer(partitions) for _ in range(n_groups)]

    def context(gid: str) -> dict[str, Any] | None:
        return stages[partition_of(gid, n_groups)].context(gid)

    # The worker's per-event step: lateness, the engine (an exception logged and counted),
    # members' group context, exits, signals and watermarks.
    step = EventStep(group_context=context if groups else None)

    def grouped(p: int, out: Stepped) -> Iterator[dict[str, Any]]:
        """The group alerts an event's signals and its engine's new watermark cause."""
        for signal in out.signals:
            g = partition_of(signal["group_id"], n_groups)
            for ready in sequencers[g].add(signal):
                yield from stages[g].process(ready)
        mark = out.watermark
        if mark is not None:
            for g, sequencer in enumerate(sequencers):
                for ready in sequencer.watermark(p, mark):
                    yield from stages[g].process(ready)
                if sequencer.low > float("-inf"):
                    # Every signal before low + 1 is in: quiet groups decide their days too
                    # (a group whose last member left gets no more signals).
                    yield from stages[g].advance(int(sequencer.low) + 1)

    def partition_for(subscriber_id: str) -> int:
        p = part_cache.get(subscriber_id)
        if p is None:
            p = part_cache[subscriber_id] = partition_of(subscriber_id, partitions)
        return p

    def accepted(kind: str) -> Iterator[tuple[float, int, int, dict[str, Any]]]:
        path = directory / f"{kind}.jsonl"
        if not path.exists():
            return
        order = INPUT_KINDS.index(kind)
        for number, raw in _lines(path):
            counts[f"read.{kind}"] += 1
            result = validator.check(kind, raw)
            if isinstance(result, Accepted):
                counts[f"accepted.{kind}"] += 1
                yield result.epoch_s, order, number, result.event
            else:
                counts[f"rejected.{result.reason}"] += 1
                if on_dead_letter is not None:
                    on_dead_letter(dead_letter(raw, TOPIC_OF_KIND[kind], None, number, result))

    topic = TOPIC_OF_KIND["subscribers"]
    for epoch_s, _, number, profile in accepted("subscribers"):
        p = partition_for(profile["subscriber_id"])
        out = step.process(engines[p], topic, p, number, "subscribers", profile, epoch_s)
        if out.failed:
            counts["accepted.subscribers"] -= 1
            counts["engine_error.subscribers"] += 1
            continue
        yield from out.alerts
        if groups:
            yield from grouped(p, out)

    yield from _events(directory, step, grouped if groups else None, engines, partition_for,
                       accepted, counts, on_dead_letter, learner, outcomes, call_centre, truth,
                       on_answer)

    for engine in engines:
        counts.update({f"engine.{k}": v for k, v in engine.counters.items()})
    for stage in stages:
        counts.update({f"groups.{k}": v for k, v in stage.counters.items()})
    if learner is not None:
        counts.update({f"calibration.{k}": v for k, v in learner.counters.items()})


#: The order of outcomes among the merged inputs at equal times: after calls and billing.
OUTCOME_ORDER = len(INPUT_KINDS)


def _events(
    directory: Path,
    step: EventStep,
    grouped: Callable[[int, Stepped], Iterator[dict[str, Any]]] | None,
    engines: list[Any],
    partition_for: Callable[[str], int],
    accepted: Callable[[str], Iterator[tuple[float, int, int, dict[str, Any]]]],
    counts: Counter[str],
    on_dead_letter: DeadLetterSink | None,
    learner: OutcomeLearner | None,
    outcomes: Path | None,
    call_centre: CallCentre | None,
    truth: dict[str, dict[str, Any]] | None,
    on_answer: Callable[[dict[str, Any]], None] | None,
) -> Iterator[dict[str, Any]]:
    """The event loop of :func:`replay_directory`: calls and billing in event time through
    ``step`` (and ``grouped``: the group stage, when it runs), with the learner, outcomes
    and the call centre when given (the order is documented there)."""
    from stream.tools.callcentre import load_truth

    if call_centre is not None and truth is None:
        if not (directory / "truth.jsonl").exists():
            raise FileNotFoundError(f"{directory / 'truth.jsonl'}: the call centre answers "
                                    f"from a simulated world's truth")
        truth = load_truth(directory)
    if learner is not None and outcomes is None and call_centre is None \
            and (directory / OUTCOMES_FILE).exists():
        outcomes = directory / OUTCOMES_FILE
    filed: list[tuple[float, int, int, Any]] = []
    if learner is not None and outcomes is not None:
        checker = Validator()  # its own: outcomes must not move the inputs' time checks
        for number, raw in _lines(outcomes):
            counts["read.outcomes"] += 1
            result = checker.check("outcome", raw)
            if isinstance(result, Accepted):
                counts["accepted.outcomes"] += 1
                filed.append((result.epoch_s, OUTCOME_ORDER, number, (result.event, raw)))
            else:
                counts[f"rejected.{result.reason}"] += 1
                if on_dead_letter is not None:
                    on_dead_letter(dead_letter(raw, TOPIC_OUTCOMES, None, number, result))
        filed.sort(key=lambda item: item[:3])  # a tool reports in wall time: sort by ts

    def take(outcome: dict[str, Any], raw: bytes, number: int | None) -> None:
        counts[f"outcomes.{outcome['outcome']}"] += 1
        if learner is None:
            return
        reason = learner.outcome(outcome)
        if reason is not None:
            counts[f"rejected.{reason}"] += 1
            if on_dead_letter is not None:
                field = "alert_id" if reason == "unknown_alert" else "subscriber_id"
                detail = ("no alert of that id within the learner's horizon"
                          if reason == "unknown_alert" else "not the alert's subscriber")
                on_dead_letter(dead_letter(raw, TOPIC_OUTCOMES, None, number,
                                           Rejected(reason, field, detail)))

    answers: list[tuple[float, int, dict[str, Any]]] = []  # heap: (ts, made, answer)
    made = itertools.count()

    def release(before: float | None) -> None:
        """Hand over the call centre's answers dated before ``before`` (all if None)."""
        while answers and (before is None or answers[0][0] < before):
            _, _, answer = heapq.heappop(answers)
            if on_answer is not None:
                on_answer(answer)
            take(answer, orjson.dumps(answer), None)

    def scored(alerts: Iterable[dict[str, Any]], now: float) -> Iterator[dict[str, Any]]:
        for alert in alerts:
            if learner is not None:
                alert = learner.alert(alert)
            if call_centre is not None and truth is not None:
                received = datetime.fromtimestamp(now, UTC)
                for answer in call_centre.answer(alert, truth, received=received):
                    when = datetime.fromisoformat(answer["ts"]).timestamp()
                    heapq.heappush(answers, (when, next(made), answer))
            yield alert

    calibrating = learner is not None or call_centre is not None
    topics = [TOPIC_OF_KIND[kind] for kind in INPUT_KINDS]
    items = heapq.merge(accepted("calls"), accepted("billing"), filed)
    n = 0
    for ts, order, number, item in items:
        if answers:
            release(ts)
        if order == OUTCOME_ORDER:
            take(item[0], item[1], number)
            continue
        n += 1
        p = partition_for(item["subscriber_id"])
        kind = INPUT_KINDS[order]
        engine = engines[p]
        # As the service: by the file's own earlier events (a topic-partition's), then by
        # the engine's closed days (stream.service.lateness), in the step.
        late = step.late_arrival(engine, kind, p, kind, ts)
        if late is None:
            out = step.process(engine, topics[order], p, number, kind, item, ts)
            late = out.late
        if late is not None:  # as the service: a closed day's models never see it
            counts[f"accepted.{kind}"] -= 1
            counts[f"rejected.{late.reason}"] += 1
            if on_dead_letter is not None:  # the event re-encoded; ``number`` is its line
                on_dead_letter(dead_letter(orjson.dumps(item), topics[order], None, number,
                                           late))
            continue
        if out.failed:  # logged by the step; as the service, the replay goes on
            counts[f"accepted.{kind}"] -= 1
            counts[f"engine_error.{kind}"] += 1
            continue
        if grouped is not None and (out.signals or out.watermark is not None):
            raised: Iterable[dict[str, Any]] = itertools.chain(out.alerts, grouped(p, out))
        else:
            raised = out.alerts
        if raised:
            yield from scored(raised, ts) if calibrating else raised
        if learner is not None and out.exit is not None:
            learner.exit(out.exit["subscriber_id"], out.exit["ts"])
        if n % PROGRESS_EVERY == 0:
            print(f"replay: {n:,} events", file=sys.stderr, flush=True)
    release(None)


def stamp(alert: dict[str, Any]) -> dict[str, Any]:
    """Add the wall-clock ``emitted_at``, as the publisher does."""
    alert["emitted_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
    return alert


def _settings() -> Any:
    """The service's settings from the environment (a bad value raises
    :class:`stream.settings.SettingsError` naming it: the replay must not silently differ
    from the service)."""
    from stream.settings import Settings

    return Settings.from_env()


def engine_config_for(settings: Any, directory: Path) -> Any:
    """The worker's engine configuration (its ``CHURNWATCH_ENGINE__*`` overrides and the
    numbers of ``CHURNWATCH_PORTED_FILE``), with ``DIR/ported.jsonl`` over the file's
    numbers, as the worker has the ported-numbers topic over its file."""
    return with_ported_numbers(settings.engine_config(), directory)


def with_ported_numbers(config: Any, directory: Path) -> Any:
    """``config`` with the numbers of ``DIR/ported.jsonl``, if there is one, over its own."""
    ported = directory / PORTED_FILE
    if not ported.exists():
        return config
    numbers = {**config.ported_numbers, **load_ported_numbers(ported)}
    return dataclasses.replace(config, ported_numbers=numbers)


def _default_partitions() -> int:
    settings = _settings()
    return int(settings.partitions) if settings is not None else DEFAULT_PARTITIONS


def _open_out(path: Path | None) -> IO[bytes]:
    return path.open("wb") if path is not None else sys.stdout.buffer


def run(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        print(f"replay: {directory} is not a directory", file=sys.stderr)
        return 2
    present = [k for k in INPUT_KINDS if (directory / f"{k}.jsonl").exists()]
    if not present:
        print(f"replay: no calls/billing/subscribers .jsonl in {directory}", file=sys.stderr)
        return 2
    learner: OutcomeLearner | None = None
    centre: CallCentre | None = None
    calibration = getattr(args, "calibration", None)
    settings = _settings()
    if calibration is None:  # as the service: CHURNWATCH_CALIBRATION
        calibration = settings is not None and settings.calibration
    if calibration:
        from detectors.calibration import OutcomeLearner

        # The service's learner parameters where its settings can be read.
        learner = settings.outcome_learner({}) if settings is not None else OutcomeLearner()
    if getattr(args, "call_centre", False):
        if not (directory / "truth.jsonl").exists():
            print(f"replay: --call-centre needs {directory}/truth.jsonl (a simulated world)",
                  file=sys.stderr)
            return 2
        from stream.tools.callcentre import from_args

        centre = from_args(args, directory)
    outcomes_path = getattr(args, "outcomes", None)
    if outcomes_path is not None and not outcomes_path.is_file():
        print(f"replay: no outcomes file {outcomes_path}", file=sys.stderr)
        return 2
    partitions = args.partitions or _default_partitions()
    counts: Counter[str] = Counter()
    zones: Counter[str] = Counter()
    started = time.perf_counter()
    out = _open_out(args.out)
    dead = args.dead_letter.open("wb") if args.dead_letter else None
    answers_out = args.outcomes_out.open("wb") if getattr(args, "outcomes_out", None) else None

    def write_answer(answer: dict[str, Any]) -> None:
        if answers_out is not None:
            answers_out.write(orjson.dumps(answer) + b"\n")

    def write_dead(letter: dict[str, Any]) -> None:
        if dead is not None:
            dead.write(orjson.dumps(letter) + b"\n")

    try:
        for alert in replay_directory(
            directory, partitions=partitions, on_dead_letter=write_dead, counters=counts,
            # The worker's engine settings: the replay gives the service's alerts.
            engine_config=None if settings is None else engine_config_for(settings, directory),
            groups=getattr(args, "groups", True), learner=learner, outcomes=outcomes_path,
            call_centre=centre, on_answer=write_answer,
            # The service's plausible window of event time, where its settings can be read.
            validator=None if settings is None else Validator(
                max_past=timedelta(days=settings.event_max_past_days)),
        ):
            zones[f"{alert['kind']}/{alert['status']}/{alert['zone']}"] += 1
            out.write(orjson.dumps(stamp(alert)) + b"\n")
    except OSError as exc:
        print(f"replay: cannot read input: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.out is not None:
            out.close()
        if dead is not None:
            dead.close()
        if answers_out is not None:
            answers_out.close()
    elapsed = time.perf_counter() - started
    _report(counts, zones, elapsed)
    return 0


def _report(counts: MutableMapping[str, int], zones: Counter[str], elapsed: float) -> None:
    read = sum(v for k, v in counts.items() if k.startswith("read."))
    rejected = sum(v for k, v in counts.items() if k.startswith("rejected."))
    rate = read / elapsed if elapsed > 0 else 0.0
    err = sys.stderr
    print(f"replay: {read:,} lines in {elapsed:.1f}s ({rate:,.0f}/s), "
          f"{rejected:,} rejected, {sum(zones.values()):,} alerts", file=err)
    for key in sorted(counts):
        if not key.startswith("read."):
            print(f"  {key:32} {counts[key]:>10,}", file=err)
    for key in sorted(zones):
        print(f"  alerts {key:25} {zones[key]:>10,}", file=err)
