"""The group stage on Faust: member signals re-keyed by ``group_id``, a group table, group alerts.

The subscriber agent's engines (``Engine(..., signals=True)``) emit member signals; the
subscriber side publishes each one to the internal topic ``<prefix>churn.group-signals``
keyed by its ``group_id`` (:meth:`GroupStage.publish`), and after them each subscriber
partition's *watermark* (the last day its engine closed) to every partition of that topic
(:meth:`GroupStage.publish_watermarks`). Kafka's partitioner puts all of a group's signals
on one partition, whichever subscriber partitions its members are on, so groups scale
across partitions like subscribers do.

The group agent takes batches of that topic. Per partition, a
:class:`stream.service.signal_order.Sequencer` holds signals until every subscriber partition's
watermark covers them and releases them in event-time order (as ``churnwatch replay``
does: same group alert ids, whatever the partitions' pace), to
:class:`detectors.group.GroupStage` over the ``groups`` table (values: the plain
:class:`~detectors.group.GroupWatch` states; co-partitioned with the signals topic, so a
group's state moves with its partition on a rebalance and is restored from the changelog).

**Crash safety** (at-least-once, like the subscriber agent): a batch's group alerts and
context updates are delivered first; then its table records, each partition's group
states before its sequencer (so a crash between them releases signals again rather than
losing them; the group stage ignores a signal it has applied); on RocksDB, once those are
on the broker, the local store is told it may trust the batch (:func:`record_writers`:
a worker that died before that finds the batch taken back out of its local store, which
then reads the changelog's tail from where it stood before the batch); then the batch is
acked.
Messages delivered again change nothing (watermarks only rise; signals: see above).

**Members' context.** A group alert's context (``GroupWatch.context``) is also published to
``<prefix>churn.group-context`` (keyed by group). Every worker reads that topic in full
(:class:`ContextView`, a global table by hand) and adds a ``group_context`` reason to the
member alerts it publishes while the group is in alert. Replay adds the same reason from the
in-memory stage at the moment the member alert is made; the stream's view lags the group
agent by a batch and a poll, so the set of member alerts carrying the reason can differ
(the alerts and their ids do not).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from detectors.group import GroupConfig, group_context
from detectors.group import GroupStage as GroupFold
from stream.service.codecs import ORJSON, RAW
from stream.service.faust_internals.batch import commit, current
from stream.service.faust_internals.gate import BatchGate, gate_for_agent
from stream.service.faust_internals.plain_table import plain_table
from stream.service.processor import alert_key
from stream.service.redaction import stack
from stream.service.signal_order import Sequencer, is_watermark
from stream.service.tables import BatchCache, PartitionIndex, PartitionView
from stream.service.write_ahead import send_records

log = logging.getLogger(__name__)

SIGNALS_TOPIC = "churn.group-signals"
CONTEXT_TOPIC = "churn.group-context"
GROUPS_TABLE = "groups"
AGENT_NAME = "churnwatch-groups"
#: Table key (after the partition) of a partition's sequencer state.
SEQ_KEY = "__seq__"
WATERMARK_KEY = b"__watermark__"
#: How often a worker polls the group-context topic (s).
CONTEXT_POLL_S = 0.25


def signals_topic_name(settings: Any) -> str:
    """``<prefix>churn.group-signals``."""
    return str(settings.topic_prefix) + SIGNALS_TOPIC


def context_topic_name(settings: Any) -> str:
    """``<prefix>churn.group-context``."""
    return str(settings.topic_prefix) + CONTEXT_TOPIC


def group_topic_names(settings: Any) -> tuple[str, str]:
    """The group stage's own topics (created with the contract topics)."""
    return signals_topic_name(settings), context_topic_name(settings)


class ContextView:
    """Group id -> the context of its open group alert, read from the group-context topic.

    Every worker reads all partitions of the topic from the start (a global table by hand:
    a few records per group episode), in a timer on its own event loop.
    """

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.contexts: dict[str, list[Any]] = {}
        self._consumer: Any = None
        self._tps: list[Any] = []

    def reason(self, group_id: str | None) -> dict[str, Any] | None:
        """The ``group_context`` reason for a member of ``group_id`` (None: not in alert)."""
        if not group_id:
            return None
        context = self.contexts.get(str(group_id))
        return group_context(str(group_id), context) if context else None

    def apply(self, value: Any) -> None:
        if isinstance(value, dict) and value.get("group_id"):
            gid = str(value["group_id"])
            if value.get("context"):
                self.contexts[gid] = list(value["context"])
            else:
                self.contexts.pop(gid, None)

    async def poll(self) -> None:
        import orjson
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False,
                auto_offset_reset="earliest", **self.settings.kafka_client_kwargs())
            await consumer.start()
            topic = context_topic_name(self.settings)
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                from stream.service.faust_internals.transport import refresh_metadata

                await refresh_metadata(consumer)
                parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer.stop()
                return
            self._tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(self._tps)
            await consumer.seek_to_beginning(*self._tps)
            self._consumer = consumer
        batches = await self._consumer.getmany(timeout_ms=0, max_records=10_000)
        for records in batches.values():
            for record in records:
                try:
                    self.apply(orjson.loads(record.value))
                except ValueError:
                    log.warning("group context: ignored a record that is not JSON")

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


@dataclass
class GroupStage:
    """What :func:`declare` put on the app."""

    signals_topic: Any  #: the internal topic of member signals, keyed by group_id
    table: Any  #: group_id -> GroupWatch state (plus ``__stage__/<p>``, ``__seq__/<p>``)
    agent: Any  #: the Faust agent folding signals into the table
    alerts_topic: Any  #: where group alerts go
    context_topic: Any = None  #: where group contexts go (for members' alerts)
    sources: int = 1  #: subscriber partitions (watermark sources)
    partitions: int = 1  #: partitions of the signals topic
    config: GroupConfig = field(default_factory=GroupConfig)
    contexts: ContextView | None = None
    metrics: Any = None
    cache: BatchCache | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def fold(self, partition: int) -> GroupFold:
        assert self.cache is not None
        return GroupFold(self.config, PartitionView(self.cache, partition),
                         meta_key=f"__stage__/{partition}")

    async def publish(self, signals: Iterable[dict[str, Any]]) -> list[Any]:
        """Send member signals to the signals topic, keyed by group; the send futures
        (await them before the state that says they were sent)."""
        futures = []
        for signal in signals:
            gid = signal.get("group_id")
            if gid:
                futures.append(await self.signals_topic.send(key=str(gid).encode(),
                                                             value=signal))
        return futures

    async def publish_watermarks(self, marks: Iterable[tuple[int, int]]) -> list[Any]:
        """Send ``(subscriber partition, last closed day)`` to every signals partition."""
        futures = []
        for source, day in marks:
            value = {"source": int(source), "closed_to": int(day)}
            for g in range(self.partitions):
                futures.append(await self.signals_topic.send(
                    key=WATERMARK_KEY, value=value, partition=g))
        return futures

    def process(self, messages: list[tuple[int, Any]]
                ) -> tuple[list[dict[str, Any]], list[tuple[str, list[Any]]], dict[int, Any]]:
        """Fold ``(partition, value)`` messages of one batch, in order.

        Returns the group alerts, the changed contexts ``(group_id, context)`` and the
        sequencer state of each partition touched (to write after the group states).
        """
        assert self.cache is not None
        seqs: dict[int, Sequencer] = {}
        folds: dict[int, GroupFold] = {}
        alerts: list[dict[str, Any]] = []
        for partition, value in messages:
            seq = seqs.get(partition)
            if seq is None:
                state = self.cache.get_or_none(f"{SEQ_KEY}/{partition}")
                seq = seqs[partition] = Sequencer.from_state(state, self.sources)
                folds[partition] = self.fold(partition)
            if is_watermark(value):
                released = seq.watermark(int(value["source"]), int(value["closed_to"]))
            elif isinstance(value, dict) and value.get("group_id") and "day" in value:
                released = seq.add(value)
            else:
                log.warning("group stage: ignored a message that is neither signal nor mark")
                continue
            fold = folds[partition]
            for signal in released:
                alerts.extend(fold.process(signal))
            if is_watermark(value) and seq.low > float("-inf"):
                # as replay: every signal before low + 1 is in, so quiet groups decide too
                alerts.extend(fold.advance(int(seq.low) + 1))
        contexts: list[tuple[str, list[Any]]] = []
        for alert in alerts:
            gid = str(alert["group_id"])
            state = self.cache.get_or_none(gid) or {}
            contexts.append((gid, list(state.get("c") or [])))
        for fold in folds.values():
            for k, v in fold.counters.items():
                self.counters[k] = self.counters.get(k, 0) + v
        return alerts, contexts, {p: seq.to_state() for p, seq in seqs.items()}


def record_writers(table: Any, cache: BatchCache) -> list[Callable[[], None]]:
    """Move the batch in ``cache`` into ``table``'s store and return the writers of its
    records, for :func:`stream.service.faust_internals.batch.commit`, which flushes the
    producer after each: send the records; then, once they are on the broker, tell a local
    store (RocksDB) that the changelog has what the batch wrote to it.

    The batch is drained with its undo (:meth:`~stream.service.tables.BatchCache.drain`):
    its records go to the changelog after it is in the local store, so a worker that died in
    between finds the values the batch replaced, and the changelog offset from before it,
    put back in its local store, and reads the changelog's tail from there (whatever part of
    the batch the broker had, as the changelog has it), not the partition's whole changelog.
    """
    records = cache.drain(undo=True)
    if not records:
        return []
    writers: list[Callable[[], None]] = [partial(send_records, table, records)]
    settle = getattr(table.data, "settle", None)
    if settle is not None:
        writers.append(partial(settle, {partition for partition, _, _ in records}))
    return writers


def declare(app: Any, settings: Any, *, alerts_topic: Any = None,
            config: GroupConfig | None = None, metrics: Any = None,
            contexts: bool = True, gate: BatchGate | None = None) -> GroupStage:
    """Declare the group stage on ``app``: the signals topic, the table, the agent (and,
    with ``contexts``, the reader of group contexts for members' alerts).

    ``alerts_topic`` defaults to a topic of its own on ``settings.topic_alerts`` (the
    worker's :class:`stream.service.topics.Topics` ``.alerts`` can be passed instead).
    ``gate`` (:class:`stream.service.faust_internals.gate.BatchGate`): batches run under its lock,
    none after it
    closes (by default when Faust's stop has drained the streams, before it cancels the
    agents).
    """

    common = {
        "partitions": settings.partitions,
        "replicas": settings.replication,
        "key_type": bytes,
        "key_serializer": RAW,
    }
    signals = app.topic(signals_topic_name(settings), value_serializer=ORJSON,
                        internal=True, **common)
    context_topic = app.topic(context_topic_name(settings), value_serializer=ORJSON,
                              internal=True, **common)
    if alerts_topic is None:
        alerts_topic = app.topic(settings.topic_alerts, value_serializer=ORJSON, **common)
    table = plain_table(app, GROUPS_TABLE, partitions=settings.partitions, key_type=str,
                        help="Group state per group_id (detectors.group.GroupWatch states).")
    stage = GroupStage(signals_topic=signals, table=table, agent=None,
                       alerts_topic=alerts_topic, context_topic=context_topic,
                       sources=settings.partitions, partitions=settings.partitions,
                       config=config or GroupConfig(), metrics=metrics,
                       contexts=ContextView(settings) if contexts else None)
    stage.cache = BatchCache(table, PartitionIndex())
    if gate is None:
        gate = gate_for_agent(app, AGENT_NAME)
    lock = gate.lock

    async def handle(events: list[Any]) -> None:
        async with lock:
            if gate.closed:  # stopping: not acked, so delivered again
                return
            events, _ = current(app, events)
            if not events:
                return
            assert stage.cache is not None
            try:
                alerts, contexts, seqs = stage.process(
                    [(e.message.partition, e.value) for e in events])
            except Exception as exc:  # a model bug must not stop the stage: log, drop the batch
                # The stack without the exception's text: it can quote a subscriber.
                log.error("group stage failed on a batch of %d: %s", len(events), stack(exc))
                stage.cache.discard()
                for e in events:
                    e.ack()
                return
            sent = []
            if alerts:
                stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
                for alert in alerts:
                    alert["emitted_at"] = stamp
                    key = alert_key(alert)
                    sent.append(await stage.alerts_topic.send(
                        key=None if key is None else key.encode(), value=alert))
                    if metrics is not None:
                        metrics.alerts.labels(kind="group", zone=str(alert.get("zone"))).inc()
                for gid, context in contexts:
                    sent.append(await context_topic.send(
                        key=gid.encode(), value={"group_id": gid, "context": context}))
            await commit(app, sent, partial(state, seqs), acks=[e.ack for e in events])

    def state(seqs: dict[int, Any]) -> list[Callable[[], None]]:
        assert stage.cache is not None
        # Each partition's sequencer after its group states (insertion order).
        for partition, seq in seqs.items():
            stage.cache.set(partition, f"{SEQ_KEY}/{partition}", seq)
        return record_writers(table, stage.cache)

    async def fold_signals(stream: Any) -> None:
        async for events in stream.noack_take(500, within=0.05):
            await handle(events)

    async def on_partitions_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        async with lock:  # after the batch in hand
            assert stage.cache is not None
            stage.cache.discard()

    app.on_partitions_revoked.connect(on_partitions_revoked)
    if stage.contexts is not None:
        view = stage.contexts

        async def poll_contexts() -> None:
            started = time.perf_counter()
            try:
                await view.poll()
            except Exception as exc:  # the view only adds context: retry on the next tick
                log.warning("group context poll failed: %r", exc)
                await view.stop()
            if time.perf_counter() - started > 5:
                log.warning("group context poll took %.1f s", time.perf_counter() - started)

        app.timer(CONTEXT_POLL_S, name="churnwatch-group-context")(poll_contexts)

        async def stop_contexts(sender: Any, **kwargs: Any) -> None:
            await view.stop()

        app.on_before_shutdown.connect(stop_contexts)

    stage.agent = app.agent(signals, name=AGENT_NAME, concurrency=1)(fold_signals)
    return stage
