"""The agent: a Faust app's input topics wired to the :class:`BatchProcessor`.

The consumer (:class:`stream.service.faust_internals.transport.FetchHighwaterConsumer`)
hands each fetch's input messages to :func:`register`'s ``handle``, which runs them
through the processor, publishes its alerts, dead letters and stage records, writes the
batch's state, and only then acks and commits the input offsets
(:func:`stream.service.faust_internals.batch.commit`). The agent itself only subscribes
the app to the input topics; its stream stays idle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from stream.service.dead_letters import DeadLetters
from stream.service.faust_internals.batch import commit, current
from stream.service.faust_internals.gate import BatchGate
from stream.service.processor import BatchProcessor

log = logging.getLogger(__name__)

AGENT_NAME = "churnwatch-detect"
#: How often ``churnwatch_consumer_lag`` is refreshed (one Fetch per broker).
LAG_EVERY_S = 5.0


def register(app: Any, topics: Any, processor: BatchProcessor, settings: Any,
             groups: Any = None, gate: BatchGate | None = None,
             before_batch: Callable[[list[Any]], Awaitable[Any]] | None = None) -> Any:
    """Define the agent (and its release timer) on ``app``; returns ``(agent, handle)``.

    ``handle(items)`` processes a batch of consumer messages:
    :class:`stream.service.faust_internals.transport.FetchHighwaterConsumer` feeds it
    each fetch's input messages directly. The agent subscribes the app to the input
    topics; its stream stays idle (were a message to reach it, it would take the same
    ``handle``).

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
            at = app.consumer.committed_offset(TP(topic, partition)) or 0
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
            tps = [tp for tp in app.consumer.assignment() if tp.topic in topics.kinds]
        except Exception:  # not started, or stopping
            return False
        fetched = app.consumer.fetched_highwaters(tps)
        for tp, (highwater, at_s) in fetched.items():
            key = (tp.topic, tp.partition)
            seen = probes.get(key)
            if seen is None or at_s > seen[1]:
                probes[key] = (highwater, at_s)
        complete = len(fetched) == len(tps)
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
        for tp, highwater in highwaters.items():
            if highwater is not None and highwater >= 0:
                seen = probes.get((tp.topic, tp.partition))
                if seen is None or sent_at > seen[1]:
                    probes[(tp.topic, tp.partition)] = (int(highwater), sent_at)
                at = processor.position.get((tp.topic, tp.partition))
                if at is None:
                    at = app.consumer.committed_offset(tp) or 0
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
        return staged.writers() if staged.keys else []

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
