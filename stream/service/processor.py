"""The processor: batches of raw input messages -> validation -> event-time order ->
detectors -> alerts, dead letters and state.

:class:`BatchProcessor` does the work and knows nothing of Faust (unit tests drive it
with plain message objects); :func:`stream.service.agents.register` wires it to an app.

Per batch (each fetch's input messages):

1. a message the state already holds (below its partition's applied mark, or seen in
   this run) is skipped; one after a hole in its partition's offsets waits, and the
   agent seeks back to the hole (a rebalance's seek can race a fetch); every other
   message is validated, and its key and partition checked against its subscriber
   (:func:`stream.contracts.validation.check_routing`); a rejection becomes a dead letter
   (original bytes up to the broker's message limit, topic, partition, offset, reason),
   counted by reason; the agent keeps going (a dead letter that cannot be published is
   counted and logged, and its input still acked); an event dated in a day closed by
   its own topic-partition's earlier events, or by its engine when it is released,
   becomes a ``too_late`` dead letter (:mod:`stream.service.lateness`);
2. accepted events, in event-time order, take the step ``churnwatch replay`` takes
   (:class:`stream.service.event_step.EventStep`: the closed-day rule, the engine of their
   input partition, the routing of its output) (one engine per partition, each over
   :class:`stream.service.tables.PartitionView` s of the state tables, so each partition
   keeps its own population baseline, as in replay);
3. each state key touched is written to its table and changelog once;
4. alerts (stamped with ``emitted_at``) go to the alert topic keyed by subscriber (group
   alerts by group), dead letters to the dead-letter topic; with calibration on
   (``CHURNWATCH_CALIBRATION``), subscriber alerts, port-outs/deactivations and each
   partition's progress go to ``churn.calibration`` instead (:mod:`stream.service.calibration_stage`
   publishes the calibrated alerts);
5. the batch's offsets are acked only after all that, and the producer is flushed before
   they are committed: at-least-once, with deterministic ``alert_id`` s for deduplication
   (:mod:`stream.service.agents`).
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from stream.contracts.validation import (
    KAFKA_MAX_MESSAGE_BYTES,
    Accepted,
    Validator,
    check_routing,
    dead_letter,
    dead_letter_key,
)
from stream.service.batch_report import BatchReport
from stream.service.event_step import EventStep, GroupContext
from stream.service.ordering import CaughtUp, Reorder
from stream.service.signal_order import closed_to

log = logging.getLogger(__name__)


class EngineLike(Protocol):
    counters: Counter[str]

    def process(
        self, kind: str, event: dict[str, Any], ts: float | None = None
    ) -> list[dict[str, Any]]: ...


EngineFactory = Callable[[int], EngineLike]


@dataclass
class BatchResult:
    alerts: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, dict[str, Any]]] = field(default_factory=list)
    #: the items passed in that are now fully processed (to ack), in processing order
    done: list[Any] = field(default_factory=list)
    accepted: int = 0
    state_writes: int = 0
    #: member signals the engines emitted (for the group stage)
    signals: list[dict[str, Any]] = field(default_factory=list)
    #: (input partition, last day its engine closed), when it moved
    watermarks: list[tuple[int, int]] = field(default_factory=list)
    #: records for the calibration stage (calibration on): subscriber alerts, exits and
    #: each partition's progress mark, in processing order
    calibration: list[dict[str, Any]] = field(default_factory=list)


def alert_key(alert: dict[str, Any]) -> str | None:
    """The alert topic key: the group for group alerts, else the subscriber."""
    if alert.get("kind") == "group" and alert.get("group_id"):
        return str(alert["group_id"])
    sid = alert.get("subscriber_id")
    return None if sid is None else str(sid)


#: Subscribers from which a partition's day close (a sweep over each of them, every state
#: kept until the batch's changelog records are sent: about 1.5 KiB each at the peak) gets
#: a batch of its own (``CHURNWATCH_SWEEP_ALONE_FROM``). 20,000 of them are about 30 MiB.
SWEEP_ALONE_FROM = 20_000


class BatchProcessor:
    """Validate, order, detect and collect the output of batches of raw messages.

    ``process(items, caught_up)`` takes Faust events (or bare messages) and returns a
    :class:`BatchResult`; accepted events may be held back until their partition's
    event-time order is settled (:mod:`stream.service.ordering`), and come out of a later call.
    """

    def __init__(
        self,
        tables: Any,
        kinds: dict[str, str],
        engine_factory: EngineFactory,
        metrics: Any = None,
        validator: Validator | None = None,
        clock: Callable[[], float] = time.time,
        max_held: int = 200_000,
        group_context: GroupContext | None = None,
        calibration: bool = False,
        partitions: int | None = None,
        deadletter_max_bytes: int = KAFKA_MAX_MESSAGE_BYTES,
        sweep_alone_from: int = SWEEP_ALONE_FROM,
    ) -> None:
        self.tables = tables
        self.kinds = kinds
        self.engine_factory = engine_factory
        self.engines: dict[int, EngineLike] = {}
        self.metrics = metrics
        self.report = None if metrics is None else BatchReport(metrics)
        self.validator = validator or Validator()
        self.clock = clock
        self.newest_event_s = float("-inf")
        self.reorder = Reorder(max_held=max_held)
        #: (topic, partition) -> offset after the last message delivered to us
        self.position: dict[tuple[str, int], int] = {}
        #: (topic, partition) -> every offset below this one is reflected in the state
        self.applied: dict[tuple[str, int], int] = {}
        self._marks_loaded: set[int] = set()
        #: (topic, partition) -> offset to fetch again from: a message came after a hole
        #: (``process``); the agent seeks there (:meth:`take_holes`)
        self.holes: dict[tuple[str, int], int] = {}
        #: (topic, partition) -> (hole's offset, times fetched again, last time)
        self._hole_tries: dict[tuple[str, int], tuple[int, int, float]] = {}
        self._held_offsets: dict[tuple[str, int], list[int]] = {}
        self._released: dict[tuple[str, int], set[int]] = {}
        self._touched: set[tuple[str, int]] = set()
        #: lateness, the engine call and the routing of its output, per released event
        #: (as ``churnwatch replay``); with calibration, subscriber alerts, exits and
        #: progress marks go to the calibration stage
        self.step = EventStep(calibration=calibration, group_context=group_context)
        #: partitions of every input topic: a record off murmur2(key) is a dead letter
        #: (``None``: not checked)
        self.partitions = partitions
        self.deadletter_max_bytes = deadletter_max_bytes
        #: a partition with this many subscribers closes its days in a batch of its own
        self.sweep_alone_from = sweep_alone_from
        #: input topics already warned about for misrouted records (warned once each)
        self._misrouted_warned: set[str] = set()

    @property
    def group_context(self) -> GroupContext | None:
        """The ``group_context`` reason of a member's group in alert (None: not in alert)."""
        return self.step.group_context

    @group_context.setter
    def group_context(self, context: GroupContext | None) -> None:
        self.step.group_context = context

    @property
    def calibration(self) -> bool:
        """Subscriber alerts, exits and progress marks go to the calibration stage."""
        return self.step.calibration

    #: A hole fetched again this many times (a second apart) is taken as real: offsets
    #: a transactional producer's markers use, which never come.
    HOLE_TRIES = 3

    def _hole(self, tp: tuple[str, int], expected: int) -> bool:
        """A message after a hole at ``expected``: True to fetch the hole again first."""
        now = self.clock()
        at, tries, last = self._hole_tries.get(tp, (expected, 0, float("-inf")))
        if at != expected:
            tries, last = 0, float("-inf")
        if tries >= self.HOLE_TRIES and now - last >= 1.0:
            log.error("%s[%d]: offsets from %d never came after %d fetches; going on",
                      tp[0], tp[1], expected, tries)
            self._hole_tries.pop(tp, None)
            return False
        if now - last >= 1.0:  # messages already on their way do not count
            self.holes[tp] = expected
            self._hole_tries[tp] = (expected, tries + 1, now)
        return True

    def take_holes(self) -> dict[tuple[str, int], int]:
        """Where to seek: the holes found since the last call."""
        holes, self.holes = self.holes, {}
        return holes

    def engine(self, partition: int) -> EngineLike:
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.engines[partition] = self.engine_factory(partition)
        return engine

    def reset(self) -> int:
        """Forget held events, positions and engines (a rebalance: Faust re-delivers
        everything after the committed offsets). Returns the number of events dropped."""
        dropped = self.reorder.drop_partitions(list(self.reorder._heaps))
        self.position.clear()
        self.applied.clear()
        self._marks_loaded.clear()
        self.holes.clear()
        self._hole_tries.clear()
        self._held_offsets.clear()
        self._released.clear()
        self._touched.clear()
        self.engines.clear()
        self.step.clear()
        self.tables.discard()
        if self.report is not None:
            self.report.reset()
        return len(dropped)

    def _sweep_at(self, partition: int, ts: float) -> float:
        """Event time from which ``partition``'s engine sweeps every subscriber (a day
        close), once it has an event at ``ts``: the reorder lets one such sweep into a
        batch (memory bound). Partitions under :attr:`sweep_alone_from` subscribers are
        not held back: their sweeps take little memory, and every batch more costs its
        writes' round trips (a backlog closes a day per partition at each day). A partition
        whose size is not known yet (unread in a local store) counts as large."""
        index = getattr(self.tables, "subscriber_index", None)
        size = None if index is None else index.size(partition)
        if size is not None and size < self.sweep_alone_from:
            return math.inf
        engine = self.engine(partition)
        next_sweep = getattr(engine, "next_sweep_s", None)
        return math.inf if next_sweep is None else float(next_sweep(ts))

    def _load_marks(self, partition: int) -> None:
        self._marks_loaded.add(partition)
        for topic, offset in self.tables.applied_marks(partition).items():
            self.applied[(topic, partition)] = int(offset)

    def process(self, items: Iterable[Any], caught_up: CaughtUp | None = None) -> BatchResult:
        """Take ``items`` in; process what can be; ``caught_up=None`` releases everything.

        State changes stay in the batch cache until :meth:`flush`, which the caller runs
        once the alerts and dead letters of the result are delivered.
        """
        result = BatchResult()
        kinds = self.kinds
        check = self.validator.check
        reorder = self.reorder
        position = self.position
        applied = self.applied
        touched = self._touched
        outcomes: Counter[tuple[str, str]] = Counter()
        reasons: Counter[str] = Counter()
        newest = self.newest_event_s
        for item in items:
            m = getattr(item, "message", item)
            topic, partition, offset = m.topic, m.partition, m.offset
            tp = (topic, partition)
            if partition not in self._marks_loaded:
                self._load_marks(partition)
            seen = position.get(tp)
            mark = applied.get(tp)
            expected = seen if seen is not None else mark
            if expected is not None and offset > expected and self._hole(tp, expected):
                # Offsets [expected, offset) never reached us (a rebalance's seek raced
                # the fetch): not processed, not acked; fetched again from ``expected``.
                outcomes[(topic, "hole")] += 1
                continue
            if (seen is not None and offset < seen) or (mark is not None and offset < mark):
                # Delivered before: Faust seeks back to the committed offset after a
                # rebalance or a fetch problem. Below ``seen`` it is held or processed in
                # this run; below ``mark`` it is in the recovered state (and its alerts
                # were delivered). Either way it changes nothing.
                outcomes[(topic, "redelivered")] += 1
                if seen is None or offset >= seen:
                    # Delivered to us now, so the reorder must count it as read: a
                    # topic-partition whose redelivered messages were all below its mark
                    # would otherwise look "not caught up" (position unknown, committed
                    # offset below the high watermark) and hold back every later event
                    # of its partition: a worker idle after a restart.
                    position[tp] = offset + 1
                    reorder.delivered(topic, partition)
                held = self._min_held(tp)
                if held is None or offset < held or (mark is not None and offset < mark):
                    result.done.append(item)
                # else: a copy of an event still held; the held one is acked when done
                continue
            position[tp] = offset + 1
            touched.add(tp)
            kind = kinds[topic]
            raw = m.value
            verdict = check(kind, raw)
            if isinstance(verdict, Accepted):
                verdict = (check_routing(verdict.event, m.key, partition, self.partitions)
                           or self.step.late_arrival(self.engine(partition), topic,
                                                     partition, kind, verdict.epoch_s)
                           or verdict)
            if not isinstance(verdict, Accepted):
                outcomes[(topic, "rejected")] += 1
                reasons[verdict.reason] += 1
                if verdict.reason == "wrong_partition" and topic not in self._misrouted_warned:
                    self._misrouted_warned.add(topic)
                    log.warning("%s: records on another partition than murmur2(key) gives "
                                "(first at [%d]@%d); dead-lettered as wrong_partition: the "
                                "producer must use Kafka's default partitioner (librdkafka: "
                                "partitioner=murmur2_random)", topic, partition, offset)
                result.dead_letters.append((dead_letter_key(m.key), dead_letter(
                    raw, topic, partition, offset, verdict, self.deadletter_max_bytes)))
                result.done.append(item)
                reorder.delivered(topic, partition)
                continue
            reorder.push(topic, partition, offset, verdict.epoch_s, kind,
                         (item, m, kind, verdict), getattr(m, "timestamp", None))
            heapq.heappush(self._held_offsets.setdefault(tp, []), offset)
        released = self._released
        #: (partition, subscriber alert or leaving billing event), in processing order
        episodes: list[tuple[int, dict[str, Any]]] = []
        step = self.step.process
        #: partition -> position [time, kind order] of the last event it processed
        progress: dict[int, list[float | int]] = {}
        #: partition -> its engine's watermark, when it moved (the last one)
        marks: dict[int, int] = {}
        for item, m, kind, verdict in reorder.release(kinds, caught_up, self._sweep_at):
            released.setdefault((m.topic, m.partition), set()).add(m.offset)
            touched.add((m.topic, m.partition))  # its mark moves (maybe held since long)
            result.done.append(item)
            if verdict.epoch_s > newest:
                newest = verdict.epoch_s
            out = step(self.engine(m.partition), m.topic, m.partition, m.offset, kind,
                       verdict.event, verdict.epoch_s)
            if out.late is not None:
                outcomes[(m.topic, "rejected")] += 1
                reasons[out.late.reason] += 1
                result.dead_letters.append((dead_letter_key(m.key), dead_letter(
                    m.value, m.topic, m.partition, m.offset, out.late,
                    self.deadletter_max_bytes)))
                continue
            if out.failed:
                outcomes[(m.topic, "engine_error")] += 1
                continue
            outcomes[(m.topic, "accepted")] += 1
            if out.at is not None:
                progress[m.partition] = out.at
            for alert in out.alerts:
                if alert.get("kind") == "subscriber":
                    episodes.append((m.partition, alert))
            result.alerts.extend((alert_key(alert), alert) for alert in out.alerts)
            for record in out.calibration:
                if record["kind"] == "alert":
                    episodes.append((m.partition, record["alert"]))
            result.calibration.extend(out.calibration)
            if out.exit is not None:
                episodes.append((m.partition, out.exit))
            result.signals.extend(out.signals)
            if out.watermark is not None:
                marks[m.partition] = out.watermark
        self.newest_event_s = newest
        result.watermarks.extend(marks.items())
        for partition, at in progress.items():
            # After the partition's records: it has passed ``at`` (and closed ``day``).
            result.calibration.append({"kind": "day", "partition": partition, "at": at,
                                       "day": closed_to(self.engines[partition])})
        result.accepted = sum(v for (_, o), v in outcomes.items() if o == "accepted")
        if result.alerts:
            stamp = datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="milliseconds")
            for _, alert in result.alerts:
                alert["emitted_at"] = stamp
        if self.report is not None:
            self.report.batch(self, outcomes, reasons, result.alerts, episodes)
        return result

    def _min_held(self, tp: tuple[str, int]) -> int | None:
        """The lowest offset of ``tp`` still held (not yet processed), if any."""
        heap = self._held_offsets.get(tp)
        done = self._released.get(tp)
        while heap and done and heap[0] in done:
            done.discard(heapq.heappop(heap))
        return heap[0] if heap else None

    def stage(self) -> Any:
        """Move the batch's state, with each touched partition's applied-offset marks, into
        the tables; the :class:`stream.service.write_ahead.Staged` records that make it durable (a
        write-ahead copy per partition, then each key once).

        A mark says: every message of that topic-partition below this offset is in the
        state. Held events keep the mark at the lowest offset still held.
        """
        marks: dict[int, dict[str, int]] = {}
        for tp in self._touched:
            held = self._min_held(tp)
            mark = held if held is not None else self.position[tp]
            if self.applied.get(tp) != mark:
                self.applied[tp] = mark
                marks.setdefault(tp[1], {})[tp[0]] = mark
        self._touched.clear()
        for partition, new in marks.items():
            self.tables.set_applied_marks(partition, new)
        try:
            return self.tables.stage()
        except BaseException:
            self.tables.discard()
            raise

    def flush(self) -> int:
        """:meth:`stage` and send it all at once (tests; the agent waits in between)."""
        staged = self.stage()
        staged.send_wal()
        staged.send_records()
        return int(staged.keys)
