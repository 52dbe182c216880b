"""The agent: batches of raw input messages -> validation -> detectors -> alerts, state.

:class:`BatchProcessor` does the work and knows nothing of Faust's stream machinery (unit
tests drive it with plain message objects); :func:`register` wires it to an app as one
agent over the three input topics.

Per batch (``stream.take_events(batch_size, within=batch_within_s)``):

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
2. accepted events go to the engine of their input partition (one engine per partition,
   each over :class:`stream.service.tables.PartitionView` s of the state tables, so each partition
   keeps its own population baseline, as ``churnwatch replay`` does);
3. each state key touched is written to its table and changelog once;
4. alerts (stamped with ``emitted_at``) go to the alert topic keyed by subscriber (group
   alerts by group), dead letters to the dead-letter topic; with calibration on
   (``CHURNWATCH_CALIBRATION``), subscriber alerts, port-outs/deactivations and each
   partition's progress go to ``churn.calibration`` instead (:mod:`stream.service.calibration_stage`
   publishes the calibrated alerts);
5. Faust acks the batch's offsets only after all that, and flushes the producer before
   it commits them: at-least-once, with deterministic ``alert_id`` s for deduplication.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from stream.contracts.validation import (
    KAFKA_MAX_MESSAGE_BYTES,
    Accepted,
    Validator,
    check_routing,
    dead_letter,
    dead_letter_key,
)
from stream.service.faust_internals.batch import commit, current
from stream.service.faust_internals.gate import BatchGate
from stream.service.lateness import Arrivals, too_late
from stream.service.ordering import KIND_ORDER, CaughtUp, Reorder
from stream.service.redaction import stack
from stream.service.signal_order import closed_to

log = logging.getLogger(__name__)

AGENT_NAME = "churnwatch-detect"
#: How often ``churnwatch_consumer_lag`` is refreshed (one Fetch per broker).
LAG_EVERY_S = 5.0


class EngineLike(Protocol):
    counters: Counter[str]

    def process(
        self, kind: str, event: dict[str, Any], ts: float | None = None
    ) -> list[dict[str, Any]]: ...


#: Billing kinds after which a subscriber has no open episode any more.
LEAVING = frozenset({"port_out", "deactivation"})


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


def _event_id(event: dict[str, Any]) -> str:
    """An event's ``event_id`` for a log line (profiles have none), bounded."""
    return str(event.get("event_id", "-"))[:64]


def alert_key(alert: dict[str, Any]) -> str | None:
    """The alert topic key: the group for group alerts, else the subscriber."""
    if alert.get("kind") == "group" and alert.get("group_id"):
        return str(alert["group_id"])
    sid = alert.get("subscriber_id")
    return None if sid is None else str(sid)


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
        group_context: Callable[[str | None], dict[str, Any] | None] | None = None,
        calibration: bool = False,
        partitions: int | None = None,
        deadletter_max_bytes: int = KAFKA_MAX_MESSAGE_BYTES,
    ) -> None:
        self.tables = tables
        self.kinds = kinds
        self.engine_factory = engine_factory
        self.engines: dict[int, EngineLike] = {}
        #: subscriber -> (partition, segment, zone) of an open episode this worker alerted
        self.open_episodes: dict[str, tuple[int, str, str]] = {}
        self._reported: dict[int, Counter[str]] = {}
        self.metrics = metrics
        self.validator = validator or Validator()
        self.clock = clock
        self.newest_event_s = float("-inf")
        self.reorder = Reorder(max_held=max_held)
        self._out_of_order_reported = 0
        self._forced_reported = 0
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
        #: the group_context reason of a member's group in alert (None: not in alert)
        self.group_context = group_context
        #: partition -> watermark last reported to the group stage
        self._marks_sent: dict[int, int] = {}
        #: subscriber alerts, exits and progress marks go to the calibration stage
        self.calibration = calibration
        #: partitions of every input topic: a record off murmur2(key) is a dead letter
        #: (``None``: not checked)
        self.partitions = partitions
        self.deadletter_max_bytes = deadletter_max_bytes
        #: input topics already warned about for misrouted records (warned once each)
        self._misrouted_warned: set[str] = set()
        #: each input topic-partition's newest event time (``too_late``, rule 1)
        self.arrivals = Arrivals()

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
            self._reported[partition] = Counter()
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
        self._marks_sent.clear()
        self.engines.clear()
        self.arrivals.clear()
        self._reported.clear()
        self.tables.discard()
        if self.metrics is not None:
            for _, segment, zone in self.open_episodes.values():
                self.metrics.open_alerts.labels(segment=segment, zone=zone).dec()
        self.open_episodes.clear()
        return len(dropped)

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
                           or self.arrivals.late(self.engine(partition), topic, partition,
                                                 kind, verdict.epoch_s)
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
        calibrate = self.calibration
        to_stage = result.calibration
        #: partition -> position [time, kind order] of the last event it processed
        progress: dict[int, list[float | int]] = {}
        for item, m, kind, verdict in reorder.release(kinds, caught_up):
            released.setdefault((m.topic, m.partition), set()).add(m.offset)
            touched.add((m.topic, m.partition))  # its mark moves (maybe held since long)
            if verdict.epoch_s > newest:
                newest = verdict.epoch_s
            engine = self.engine(m.partition)
            late = too_late(engine, kind, verdict.epoch_s)
            if late is not None:  # for a closed day: its models must not see it twice
                outcomes[(m.topic, "rejected")] += 1
                reasons[late.reason] += 1
                result.dead_letters.append((dead_letter_key(m.key), dead_letter(
                    m.value, m.topic, m.partition, m.offset, late, self.deadletter_max_bytes)))
                result.done.append(item)
                continue
            try:
                # The validator's parsed event time, so the engine does not parse it again.
                alerts = engine.process(
                    kind, verdict.event, ts=None if kind == "subscribers" else verdict.epoch_s)
            except Exception as exc:  # a detector bug must not stop the partition: log, count
                # Position and event id, and the stack without the exception's text or
                # locals: those can hold a subscriber id or a number.
                log.error("engine failed on %s[%d]@%d (event %s): %s", m.topic, m.partition,
                          m.offset, _event_id(verdict.event), stack(exc))
                outcomes[(m.topic, "engine_error")] += 1
                result.done.append(item)
                continue
            outcomes[(m.topic, "accepted")] += 1
            result.done.append(item)
            if calibrate and kind != "subscribers":
                # Replay's merge position of the event: the stage restores that order.
                at = progress[m.partition] = [verdict.epoch_s, KIND_ORDER[kind]]
            for alert in alerts:
                if alert.get("kind") == "subscriber":
                    episodes.append((m.partition, alert))
                    if calibrate:
                        to_stage.append({"kind": "alert", "partition": m.partition,
                                         "at": at, "alert": alert})
                        continue
                result.alerts.append((alert_key(alert), alert))
            if kind == "billing" and verdict.event.get("kind") in LEAVING:
                episodes.append((m.partition, verdict.event))
                if calibrate:
                    to_stage.append({"kind": "exit", "partition": m.partition, "at": at,
                                     "subscriber_id": verdict.event["subscriber_id"],
                                     "ts": verdict.event["ts"]})
        self.newest_event_s = newest
        self._group_output(result)
        for partition, at in progress.items():
            # After the partition's records: it has passed ``at`` (and closed ``day``).
            to_stage.append({"kind": "day", "partition": partition, "at": at,
                             "day": closed_to(self.engines[partition])})
        result.accepted = sum(v for (_, o), v in outcomes.items() if o == "accepted")
        if result.alerts:
            stamp = datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="milliseconds")
            for _, alert in result.alerts:
                alert["emitted_at"] = stamp
        if self.metrics is not None:
            self._record(self.metrics, outcomes, reasons, result)
            if episodes:
                self._track_episodes(self.metrics, episodes)
        return result

    def _group_output(self, result: BatchResult) -> None:
        """Members' group context, the engines' signals and their watermarks."""
        context = self.group_context
        if context is not None:
            staged = [r["alert"] for r in result.calibration if r["kind"] == "alert"]
            for alert in [a for _, a in result.alerts] + staged:
                if (alert.get("kind") == "subscriber" and alert.get("group_id")
                        and alert.get("status") not in ("resolved", "closed")):
                    reason = context(alert["group_id"])
                    if reason is not None:
                        alert["reasons"].append(reason)
        for partition, engine in self.engines.items():
            drain = getattr(engine, "drain_signals", None)
            if drain is None:
                continue
            result.signals.extend(drain())
            mark = closed_to(engine)
            if mark is not None and self._marks_sent.get(partition) != mark:
                self._marks_sent[partition] = mark
                result.watermarks.append((partition, mark))

    def _track_episodes(self, metrics: Any, episodes: list[tuple[int, dict[str, Any]]]) -> None:
        """Keep ``churnwatch_open_alerts`` to the open episodes of the alerts published."""
        gauge = metrics.open_alerts
        open_ = self.open_episodes
        for partition, what in episodes:
            sid = str(what.get("subscriber_id"))
            before = open_.pop(sid, None)
            if before is not None:
                gauge.labels(segment=before[1], zone=before[2]).dec()
            if what.get("status") in ("open", "escalated"):
                now = (partition, str(what.get("segment") or "unknown"), str(what.get("zone")))
                open_[sid] = now
                gauge.labels(segment=now[1], zone=now[2]).inc()

    def _min_held(self, tp: tuple[str, int]) -> int | None:
        """The lowest offset of ``tp`` still held (not yet processed), if any."""
        heap = self._held_offsets.get(tp)
        done = self._released.get(tp)
        while heap and done and heap[0] in done:
            done.discard(heapq.heappop(heap))
        return heap[0] if heap else None

    def stage(self) -> Any:
        """Move the batch's state, with each touched partition's applied-offset marks, into
        the tables; the :class:`stream.service.tables.Staged` records that make it durable (a
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

    def _record(
        self,
        metrics: Any,
        outcomes: Counter[tuple[str, str]],
        reasons: Counter[str],
        result: BatchResult,
    ) -> None:
        for (topic, outcome), n in outcomes.items():
            metrics.events.labels(topic=topic, outcome=outcome).inc(n)
        for reason, n in reasons.items():
            metrics.dead_letters.labels(reason=reason).inc(n)
        for _, alert in result.alerts:
            metrics.alerts.labels(kind=str(alert.get("kind")), zone=str(alert.get("zone"))).inc()
            for reason in alert.get("reasons") or ():
                metrics.alert_reasons.labels(code=str(reason.get("code"))).inc()
        for partition, engine in self.engines.items():
            seen = self._reported[partition]
            now = Counter(engine.counters)
            delta = {k: v - seen.get(k, 0) for k, v in now.items() if v != seen.get(k, 0)}
            if delta:
                metrics.add_engine_counters(delta)
                self._reported[partition] = now
        if self.newest_event_s > float("-inf"):
            metrics.event_time_lag.set(max(0.0, self.clock() - self.newest_event_s))
        metrics.events_held.set(len(self.reorder))
        late = self.reorder.out_of_order - self._out_of_order_reported
        if late:
            metrics.events_out_of_order.inc(late)
            self._out_of_order_reported += late
        forced = self.reorder.forced - self._forced_reported
        if forced:
            metrics.events_forced.inc(forced)
            self._forced_reported += forced
        metrics.order_lag.set(self.reorder.lag_s())
        metrics.subscribers_tracked.set(len(self.tables.subscriber_index))
        # The indexes, not len(store): a RocksDB store counts by walking every key.
        metrics.table_keys.labels(table="subscribers").set(len(self.tables.subscriber_index))
        metrics.table_keys.labels(table="population").set(len(self.tables.population_index))


class DeadLetters:
    """Publishes dead letters so that one that cannot be published never stops a worker.

    Such a letter (too large for the producer or the broker, a broker error) is counted
    (``churnwatch_dead_letter_failures_total``) and logged once per kind of error; its
    input is acked like any other (a poison message must not be redelivered forever).
    """

    def __init__(self, topic: Any, metrics: Any = None) -> None:
        self.topic = topic
        self.metrics = metrics
        self._logged: set[str] = set()

    async def send(
        self, letters: list[tuple[bytes | None, dict[str, Any]]]
    ) -> list[Awaitable[None]]:
        """Queue ``letters``; awaitables that finish when each is delivered or has failed
        (never raising), for the batch's commit to wait on with its other outputs."""
        waits: list[Awaitable[None]] = []
        for key, letter in letters:
            try:
                waits.append(self._settle(letter, await self.topic.send(key=key, value=letter)))
            except Exception as exc:  # e.g. the producer's own size check
                self.failed(letter, exc)
        return waits

    async def _settle(self, letter: dict[str, Any], delivery: Awaitable[Any]) -> None:
        try:
            await delivery
        except Exception as exc:
            self.failed(letter, exc)

    def failed(self, letter: dict[str, Any], error: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.dead_letter_failures.inc()
        name = type(error).__name__
        if name not in self._logged:
            self._logged.add(name)
            log.error("dead letter for %s[%s]@%s (%s, %d bytes) not published: %s; the input "
                      "is acked anyway (churnwatch_dead_letter_failures_total counts every "
                      "such letter; this is logged once per error type)", letter["topic"],
                      letter["partition"], letter["offset"], letter["reason"],
                      letter["raw_size"], name)


def register(app: Any, topics: Any, processor: BatchProcessor, settings: Any,
             groups: Any = None, gate: BatchGate | None = None,
             before_batch: Callable[[list[Any]], Awaitable[Any]] | None = None) -> Any:
    """Define the agent (and its release timer) on ``app``; returns ``(agent, handle)``.

    ``handle(items)`` processes a batch of Faust events or bare consumer messages: the
    agent feeds it batches from ``stream.noack_take``; with the batch path on
    (``CHURNWATCH_FAST_PATH``),
    :class:`stream.service.faust_internals.transport.FetchHighwaterConsumer` feeds it
    each fetch's input messages directly and the agent's stream stays idle.

    ``groups`` (a :class:`stream.service.group_stage.GroupStage`): the engines' member signals and
    watermarks are published to it with each batch, before the batch's state.

    ``gate`` (:class:`stream.service.faust_internals.gate.BatchGate`): batches run under its lock,
    none after it
    closes; the caller closes it when the worker stops.

    ``before_batch(items)`` is awaited before a batch's new messages are processed (the
    ported-numbers registry catching up: :mod:`stream.service.ported_feed`).
    """

    from faust.types import TP

    batch_size = settings.batch_size
    within = settings.batch_within_s
    metrics = processor.metrics
    alerts_topic = topics.alerts
    dead_topic = topics.deadletter
    gate = gate if gate is not None else BatchGate(AGENT_NAME)
    lock = gate.lock
    margin = settings.order_margin_s

    #: (topic, partition) -> (high watermark, wall-clock time the probe was sent)
    probes: dict[tuple[str, int], tuple[int, float]] = {}

    def caught_up(topic: str, partition: int) -> float | None:
        """Since when everything up to a probed high watermark was delivered to us."""
        probe = probes.get((topic, partition))
        if probe is None:
            return None
        highwater, probed_at = probe
        at = processor.position.get((topic, partition))
        if at is None:  # nothing delivered yet: we start at the committed offset
            at = app.consumer._committed_offset.get(TP(topic, partition)) or 0
        # A producer stamps a record when it is handed over, not when the broker has
        # it: allow for records still in a producer's buffer when the probe ran.
        return probed_at - margin if at >= highwater else None

    def probes_from_fetches() -> bool:
        """Probes from the consumer's own fetch responses: each carries the partition's
        high watermark, and the client notes when it came. Free, and as fresh as the last
        fetch (Faust long-polls quiet partitions for up to 1.5 s, and a probe Fetch of our
        own would queue behind that on the same connection). False: some partition has
        had no fetch response yet."""
        try:
            client = app.consumer._thread._ensure_consumer()
            tps = [tp for tp in app.consumer.assignment() if tp.topic in topics.kinds]
        except Exception:  # not started, or stopping
            return False
        complete = True
        for tp in tps:
            highwater = client.highwater(tp)
            at_ms = client.last_poll_timestamp(tp)
            if highwater is None or at_ms is None:
                complete = False
                continue
            key = (tp.topic, tp.partition)
            seen = probes.get(key)
            if seen is None or at_ms / 1000.0 > seen[1]:
                probes[key] = (int(highwater), at_ms / 1000.0)
        return complete

    async def probe_highwaters() -> None:
        """Fresh high watermarks (by Fetch) of the assigned input partitions."""
        tps = [tp for tp in app.consumer.assignment() if tp.topic in topics.kinds]
        if not tps:
            return
        sent_at = time.time()
        try:
            highwaters = await app.consumer.highwaters(*tps)
        except Exception as exc:  # a failed probe only delays the release
            log.warning("high watermark probe failed: %r", exc)
            return
        lag: dict[str, int] = dict.fromkeys(topics.kinds, 0)
        committed = app.consumer._committed_offset
        for tp, highwater in highwaters.items():
            if highwater is not None and highwater >= 0:
                seen = probes.get((tp.topic, tp.partition))
                if seen is None or sent_at > seen[1]:
                    probes[(tp.topic, tp.partition)] = (int(highwater), sent_at)
                at = processor.position.get((tp.topic, tp.partition))
                if at is None:
                    at = committed.get(tp) or 0
                lag[tp.topic] += max(0, int(highwater) - at)
        if metrics is not None:
            for topic, behind in lag.items():
                metrics.consumer_lag.labels(topic=topic).set(behind)

    async def handle(items: list[Any]) -> None:
        async with lock:
            if gate.closed:  # stopping: not acked, so delivered again to the next owner
                return
            items, stale = current(app, items)
            if stale:
                await seek_back(stale)
            if before_batch is not None and items:
                await before_batch(items)
            started = time.perf_counter()
            if len(processor.reorder) or items:
                probes_from_fetches()
            result = processor.process(items, caught_up)
            hold_back_ahead()
            for (topic, partition), offset in processor.take_holes().items():
                tp = TP(topic, partition)
                if tp in app.consumer.assignment():
                    log.warning("%s: a hole before this fetch; fetching again from %d",
                                tp, offset)
                    await app.consumer.seek(tp, offset)
            sent = [
                await alerts_topic.send(key=None if key is None else key.encode(), value=alert)
                for key, alert in result.alerts
            ]
            sent += await dead_letters.send(result.dead_letters)
            if result.calibration:
                # One partition: each engine partition's records stay in its order.
                calibration_topic = topics.calibration
                sent += [await calibration_topic.send(
                    key=str(record["partition"]).encode(), value=record, partition=0)
                    for record in result.calibration]
            if groups is not None:
                # Each partition's signals before its watermark, and both before the
                # state (and applied marks) of the batch: a crash sends them again,
                # never loses them (the group stage ignores a signal seen before).
                sent += await groups.publish(result.signals)
                sent += await groups.publish_watermarks(result.watermarks)
            consumer = app.consumer
            await commit(
                app, sent, state,
                # a stream event acks itself; a message from the batch path, the consumer
                acks=[item.ack if hasattr(item, "message") else partial(consumer.ack, item)
                      for item in result.done])
            # The batch's state is flushed: its applied marks are what the input topics
            # commit (stream.service.faust_internals.transport.FetchHighwaterConsumer.mark_durable).
            mark_durable = getattr(consumer, "mark_durable", None)
            if mark_durable is not None:
                mark_durable(processor.applied)
            if metrics is not None and (items or result.done):
                metrics.batch_seconds.observe(time.perf_counter() - started)
                metrics.batch_events.observe(len(result.done))

    dead_letters = DeadLetters(dead_topic, metrics)

    def hold_back_ahead() -> None:
        """Fetch no more of the input topic-partitions holding more than their share of
        the reorder's limit: they run ahead of their partition's other input topics in
        event time (stream.service.ordering), and the hold stays bounded without releasing
        anything out of order."""
        consumer = app.consumer
        hold_back = getattr(consumer, "hold_back", None)
        if hold_back is None:
            return
        inputs = sum(1 for tp in consumer.assignment() if tp.topic in topics.kinds)
        share = max(1, processor.reorder.max_held // (2 * max(1, inputs)))
        ahead = processor.reorder.running_ahead(
            share, ((tp.topic, tp.partition) for tp in consumer.held_back))
        hold_back(ahead)
        if metrics is not None:
            metrics.inputs_held_back.set(len(ahead))

    def state() -> list[Callable[[], None]]:
        # The write-ahead copy first, then the per-key records: a crash leaves the batch
        # either not written or completable from the copy (stream.service.tables).
        staged = processor.stage()
        return [staged.send_wal, staged.send_records] if staged.keys else []

    async def seek_back(stale: list[Any]) -> None:
        """Messages fetched in an earlier generation are dropped unprocessed, so make sure
        they come again where the partition is still ours: Faust does not always seek
        back (the same assignment again), and an offset never acked stops the commits.

        Back to the partition's applied mark if that is lower: the events read before
        the stale ones but held for event-time order were forgotten in the rebalance
        (``BatchProcessor.reset``), and a seek to the first stale offset would skip them
        for good (seen as a subscriber's lost call in the ``kill -9`` test)."""
        lowest: dict[Any, int] = {}
        for item in stale:
            m = getattr(item, "message", item)
            tp = TP(m.topic, m.partition)
            lowest[tp] = min(m.offset, lowest.get(tp, m.offset))
        assigned = app.consumer.assignment()
        log.warning("rebalance: %d messages of an earlier generation to fetch again",
                    len(stale))
        for tp, offset in lowest.items():
            if tp in assigned:
                mark = processor.tables.applied_marks(tp.partition).get(tp.topic)
                await app.consumer.seek(tp, offset if mark is None else min(offset, mark))

    async def detect(stream: Any) -> None:
        async for events in stream.noack_take(batch_size, within=within):
            await handle(events)

    async def release_held() -> None:
        # Held events wait for a probe proving that no earlier event can still come;
        # without this they would also wait for the next message.
        if len(processor.reorder):
            if not probes_from_fetches():
                await probe_highwaters()
            await handle([])

    async def report_lag() -> None:
        # Also refreshes the probes; the held-event timer probes more often when needed.
        await probe_highwaters()

    async def on_partitions_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # After the batch in hand: the engine changes state dicts in place, so a batch
        # must never be cut in two by a reset.
        async with lock:
            probes.clear()
            forget = getattr(app.consumer, "forget_durable", None)
            if forget is not None:
                forget()
            hold_back = getattr(app.consumer, "hold_back", None)
            if hold_back is not None:
                hold_back(())
            dropped = processor.reset()
            if dropped:
                log.info("rebalance: %d held events dropped (delivered again)", dropped)

    async def on_partitions_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        if metrics is not None:
            metrics.partitions_assigned.set(
                len({tp.partition for tp in assigned if tp.topic in topics.kinds}))

    app.on_partitions_revoked.connect(on_partitions_revoked)
    app.on_partitions_assigned.connect(on_partitions_assigned)
    app.timer(within, name="churnwatch-release-held")(release_held)
    app.timer(LAG_EVERY_S, name="churnwatch-consumer-lag")(report_lag)
    agent = app.agent(topics.inputs, name=AGENT_NAME, concurrency=1)(detect)
    return agent, handle
