"""Complete table recovery on brokers whose ListOffsets(latest) stops short (Tansu).

Why
---
Faust restores a table by reading its changelog partitions from the start up to the
"highwater" it asks for before reading (``faust.tables.recovery.Recovery._build_highwaters``
-> ``Consumer.highwaters`` -> ``AIOKafkaConsumerThread._highwaters`` ->
``aiokafka.AIOKafkaConsumer.end_offsets``, i.e. a ListOffsets(latest) request). The
embedded broker (Tansu 0.6) answers ListOffsets(latest) with the base offset of the last
record batch + 1 instead of the log end offset, so Faust declares recovery done after the
first record of the last batch, pauses the partition, and the rest of that batch (the
latest state of up to a whole producer batch of keys) never reaches the table.

The high watermark that the same broker reports in every Fetch response is right. So the
consumer thread below answers ``highwaters()`` with one small Fetch per leader (the
broker returns the high watermark of each partition even when it sends no records). On a
real Kafka the Fetch high watermark equals the log end offset for a non-transactional
consumer, so the answer is the same there; if the Fetch fails we fall back to
ListOffsets. ``tests/integration/test_recovery.py`` proves that every key comes back with
its latest state after a ``kill -9``.

Wiring: :class:`ChurnwatchTransport` is the aiokafka transport with this consumer; the app
built by :func:`stream.service.app.create_app` uses it (``App._new_transport``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.protocol.fetch import FetchRequest
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from stream.service.faust_internals.side_lane import SideLane

log = logging.getLogger(__name__)

#: How long the broker may wait for data before answering our probe (ms). Tansu sends an
#: empty answer (no partitions at all) to a Fetch with max_wait 0, so wait a little.
PROBE_MAX_WAIT_MS = 50


async def fetch_highwaters(consumer: Any, partitions: Iterable[TP]) -> dict[TP, int]:
    """Log end offsets of ``partitions`` from Fetch responses (not ListOffsets).

    ``consumer`` is a started :class:`aiokafka.AIOKafkaConsumer`; the Fetch asks each
    partition's leader for at most one byte from the start offset (the broker still sends
    at most one batch, which is ignored).
    """
    tps = list(partitions)
    if not tps:
        return {}
    client = consumer._client
    listed: Mapping[Any, int] = await consumer.end_offsets(tps)  # a lower bound here
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for tp in tps:
        node = client.cluster.leader_for_partition(tp)
        if node is None or node < 0:
            raise KafkaError(f"no leader for {tp}")
        by_node[node][tp.topic].append((tp.partition, int(listed.get(tp) or 0), 1))
    result: dict[TP, int] = {}
    for node, topics in by_node.items():
        request = FetchRequest(PROBE_MAX_WAIT_MS, 1, 1, 0, list(topics.items()))
        response = await client.send(node, request)
        for topic, parts in response.topics:
            for partition, error_code, highwater, *_ in parts:
                if error_code == 0 and highwater is not None and highwater >= 0:
                    result[TP(topic, partition)] = int(highwater)
    missing = [tp for tp in tps if tp not in result]
    if missing:
        raise KafkaError(f"no high watermark in the Fetch response for {missing}")
    # Never go below what ListOffsets said (a lagging replica would answer lower).
    return {tp: max(hw, int(listed.get(tp) or 0)) for tp, hw in result.items()}


#: Longest wait of the consumer's fetches for data (Faust uses 1.5 s). The worker takes
#: each input partition's high watermark, and when it was seen, from these responses to
#: release events in order (stream.service.processor), so a quiet partition must answer often.
FETCH_MAX_WAIT_MS = 100


def fetch_position(consumer: Any, tp: Any) -> int | None:
    """The offset ``consumer`` (a started :class:`aiokafka.AIOKafkaConsumer`) fetches next
    for ``tp``; None when ``tp`` is not assigned or waits for a seek.

    aiokafka moves it past the records it returns, and to the offset of a seek, so every
    record returned since the last seek lies below it; one at or above it was fetched
    before a seek and comes again (read directly, as Faust's consumer thread owns the
    consumer: the consumer's own ``position()`` would wait on that thread).
    """
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
    except AttributeError:  # no subscription or assignment (yet, or any more)
        return None
    if state is None or not state.has_valid_position:
        return None
    return int(state.position)


class FetchHighwaterConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, with highwaters from Fetch responses."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by its fetcher at start
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        if self.consumer.in_transaction:  # not used by churnwatch; keep Faust's answer
            return await super()._highwaters(partitions)
        consumer = self._ensure_consumer()
        try:
            return await fetch_highwaters(consumer, partitions)
        except KafkaError as exc:
            log.warning("high watermarks by Fetch failed (%s); using ListOffsets", exc)
            return await super()._highwaters(partitions)


class FetchHighwaterConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with Fetch-based highwaters, no records from before a
    seek, and an optional batch path.

    Two races with a rebalance's seek, which aiokafka runs in Faust's consumer thread
    while this loop runs in the app's:

    * records fetched before the seek, handled after it: Faust stamps them with the new
      generation (so its generation check passes them), counts the offsets between the
      seek and them as a gap that is acked, and later drops the records fetched again
      from the seek as "read already". So the loop keeps a record only if it lies below
      the fetcher's position for its partition (which moves only when records are
      returned, or by a seek); the others come again from the seek. ``stale_dropped``
      counts them.
    * Faust's read offsets, which its loop uses to drop records read already and to find
      gaps, are set to the committed offsets only *after* the seek's await; a fetch
      handled in between is judged against the old ones. A fresh record below an old
      read offset was dropped (lost, if the worker had held it for event-time order and
      forgot it in the rebalance), and one above a read offset set later made a gap.
      Acked gaps put offsets twice in Faust's ack list, and its commit then crawled one
      offset at a time (a stall seen in the crash tests). The input topics need neither
      check: their offsets have no gaps (not compacted, no transactions) and the batch
      processor skips what its state already holds
      (:class:`stream.service.processor.BatchProcessor`, applied marks and positions).
      So their records skip both; other topics (changelogs, the stages' topics) keep
      Faust's.

    Batch path: when the app carries a batch sink (``app.churnwatch.batch_sink``, an
    ``async`` callable taking a list of messages, and ``app.churnwatch.batch_topics``),
    messages of those topics are handed over a fetch at a time instead of one by one
    through Faust's conductor, channels and streams (whose per-message tasks and awaits
    cap a worker near 7k events/s). Everything else (changelogs during recovery, group
    membership, assignment, flow control during rebalances, offsets, commits) stays
    Faust's. The sink acks the messages it has processed (``consumer.ack``).

    The other topics' records (the stages' topics, changelogs) go to their agents through
    a :class:`~stream.service.faust_internals.side_lane.SideLane`, so that an agent whose
    stream buffer is full (a stage behind its topic) does not hold the input's fetches
    back; a topic-partition with records in the lane is left out of the fetches until they
    are delivered (decision record 0017).

    Held back (:meth:`hold_back`): input topic-partitions running ahead of the others in
    event time are left out of the fetches until the worker has released what they
    delivered (decision record 0010 in ``docs/decisions/``). Faust fetches every assigned
    partition at once, at the same pace in bytes, and its own pause (``pause_partitions``)
    is its recovery's and flow control's: resuming through it could feed a partition whose
    table is still restoring. So the filter sits where Faust asks its thread for records.
    """

    stale_dropped = 0
    #: input (topic, partition) -> offset below which every record is in the state the
    #: worker has flushed (the batch processor's applied marks; :meth:`mark_durable`)
    _durable: dict[Any, int] | None = None
    #: input topic-partitions left out of the fetches (:meth:`hold_back`)
    held_back: frozenset[TP] = frozenset()
    #: where the records of the other topics wait for their agents (side_lane); their
    #: topic-partitions are left out of the fetches meanwhile
    _lane: SideLane | None = None

    def hold_back(self, tps: Iterable[tuple[str, int]]) -> None:
        """Fetch nothing more of ``tps`` (``(topic, partition)`` pairs) until the next call
        leaves them out; the records already handed over still come."""
        self.held_back = frozenset(TP(topic, partition) for topic, partition in tps)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        held = self.held_back
        lane = self._lane
        if lane is not None and lane.busy:  # their last fetch is still being delivered
            held = held | lane.busy
        if held and active_partitions:
            active_partitions = active_partitions - held
            if not active_partitions:
                # aiokafka reads an empty set as "every partition": wait instead (the
                # worker's release timer frees a held-back partition within its period).
                await self.sleep(min(timeout, 0.05))
                return {}
        return await super()._getmany(active_partitions, timeout)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return FetchHighwaterConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def mark_durable(self, marks: Mapping[tuple[str, int], int]) -> None:
        """``(topic, partition) -> offset``: every record below ``offset`` is in state
        that is flushed to its changelog. The input topics commit these marks.

        Why not Faust's acks: Faust commits the end of the first run of consecutive
        acked offsets above its own record of the committed offset. Both can go wrong
        around a rebalance. An acked gap puts offsets twice in the list (the commit then
        crawls). A record of the committed offset that is behind the broker's (seen after
        a ``kill -9``) makes the list start "after a hole" (the commit never moves). The
        applied marks say directly what may be committed, and come back with the state
        after a crash.
        """
        durable = self._durable
        if durable is None:
            durable = self._durable = {}
        for (topic, partition), offset in marks.items():
            durable[TP(topic, partition)] = int(offset)

    def forget_durable(self) -> None:
        """A rebalance: the marks come again from the restored state."""
        if self._durable:
            self._durable.clear()

    def _new_offset(self, tp: TP) -> int | None:
        durable = self._durable.get(tp) if self._durable else None
        if durable is None:
            return super()._new_offset(tp)
        # Acks at or above the mark wait for it; those below it are in it.
        acked = self._acked.get(tp)
        if acked:
            index = self._acked_index[tp]
            below = [offset for offset in acked if offset < durable]
            if below:
                acked[:] = [offset for offset in acked if offset >= durable]
                index.difference_update(below)
        committed = self._committed_offset[tp]
        return durable if committed is None or durable > committed else None

    def committed_offset(self, tp: TP) -> int | None:
        """The offset Faust last committed for ``tp`` (None: none yet)."""
        return self._committed_offset.get(tp)

    def fetched_highwaters(self, tps: Iterable[TP]) -> dict[TP, tuple[int, float]]:
        """``tp -> (high watermark, wall-clock time)`` from the last fetch response of each
        of ``tps`` that has had one: free, and as fresh as the last fetch."""
        try:
            client = self._thread._ensure_consumer()
        except Exception:  # not started, or stopping
            return {}
        out = {}
        for tp in tps:
            highwater = client.highwater(tp)
            at_ms = client.last_poll_timestamp(tp)
            if highwater is not None and at_ms is not None:
                out[tp] = (int(highwater), at_ms / 1000.0)
        return out

    def _fetch_position(self, tp: Any) -> int | None:
        try:
            consumer = self._thread._ensure_consumer()
        except Exception:  # stopping
            return None
        return fetch_position(consumer, tp)

    def _drop_stale(self, tp: Any, n: int) -> None:
        self.stale_dropped += n
        log.info("rebalance: %d records of %s fetched before a seek dropped; they come "
                 "again from the seek", n, tp)

    def _batch_path(self) -> tuple[Any, frozenset[str]]:
        parts = getattr(self.app, "churnwatch", None)
        sink = getattr(parts, "batch_sink", None)
        return sink, frozenset(getattr(parts, "batch_topics", ()) or ())

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover
        sink, batch_topics = self._batch_path()
        # Faust's loop (faust.transport.consumer.Consumer._drain_messages), without
        # records fetched before a seek (class docstring), with the messages of
        # ``batch_topics`` (if a sink is set) collected per fetch and handed to ``sink``,
        # and the other topics' records handed to their agents in a lane of their own
        # (stream.service.faust_internals.side_lane): a stage behind its topic must not
        # hold the input back.
        parts = getattr(self.app, "churnwatch", None)
        inputs = frozenset(getattr(getattr(parts, "topics", None), "kinds", None) or ())
        lane = self._lane = SideLane(partial(self._deliver, inputs))
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        set_read_offset = self._read_offset.__setitem__
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        to_message = self._to_message
        monitor = self.app.monitor
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                lane.check()
                set_flag(CONSUMER_FETCHING)
                # Faust's getmany, a fetch at a time: per partition, not per message, for
                # the end-offset metric, the generation check and the read offsets (its
                # per-message bookkeeping cost as much as our whole processing).
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if records is None or self.should_stop:
                    unset_flag(CONSUMER_FETCHING)
                    continue
                if not self.flow_active:  # a rebalance began: back to the committed offsets
                    try:
                        await self.perform_seek()
                    except Exception as exc:
                        log.warning("seek to committed offsets failed: %r", exc)
                    unset_flag(CONSUMER_FETCHING)
                    continue
                generation_id = self.app.consumer_generation_id
                batch: list[Any] = []
                side: list[tuple[TP, list[Any]]] = []
                for tp, recs in records.items():
                    if not self.flow_active or generation_id != self.app.consumer_generation_id:
                        break
                    if not (active is None or tp in active or tp in self._buffered_partitions):
                        continue
                    if not recs:
                        continue
                    monitor.track_tp_end_offset(tp, self.highwater(tp))
                    if sink is None or tp.topic not in batch_topics:
                        side.append((tp, recs))
                        continue
                    # Input topics: no read offsets, no gaps (class docstring).
                    limit = self._fetch_position(tp)
                    last = None
                    for n, record in enumerate(recs):
                        offset = record.offset
                        if limit is None or offset >= limit:
                            self._drop_stale(tp, len(recs) - n)
                            break
                        batch.append(to_message(tp, record))
                        last = offset
                    if last is not None:
                        set_read_offset(tp, last)
                lane.add(side)
                if batch:
                    # Shielded: a stop lets the batch in hand finish (state, alerts, acks).
                    await asyncio.shield(sink(batch))
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)
            await lane.stop()

    async def _deliver(self, inputs: frozenset[str], tp: TP, recs: list[Any]) -> None:
        """One topic-partition's fetched records to Faust's conductor, one at a time, with
        Faust's bookkeeping (read offsets, gaps, ``commit_every``); in the lane, so each
        record is checked against a seek made since the fetch."""
        for n, record in enumerate(recs):
            offset = record.offset
            # Each await below can let a rebalance seek the partition.
            limit = self._fetch_position(tp)
            if limit is None or offset >= limit:
                self._drop_stale(tp, len(recs) - n)
                return
            if tp.topic not in inputs:  # Faust's bookkeeping (class docstring)
                r_offset = self._read_offset[tp]
                if r_offset is not None and offset < r_offset:
                    continue
                if (r_offset and offset - r_offset > 1
                        and self.app.topics.acks_enabled_for(record.topic)):
                    await self._add_gap(tp, r_offset + 1, offset)
            commit_every = self._commit_every
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            await self.wait_first(self.callback(self._to_message(tp, record)),
                                  self.suspend_flow.wait())
            self._read_offset[tp] = offset


class ChurnwatchTransport(faust_aiokafka.Transport):
    """The aiokafka transport whose consumer recovers tables completely (see above)."""

    Consumer = FetchHighwaterConsumer


async def refresh_metadata(consumer: Any) -> None:
    """Make an ``AIOKafkaConsumer`` fetch the cluster's metadata now (a topic created
    since it started is otherwise unknown until its next periodic refresh)."""
    await consumer._client.force_metadata_update()


async def track_changelog(app: Any, table: Any) -> None:
    """Make the producer track the table's changelog in its metadata.

    A write from a view has no stream event, so its partition comes from the key and the
    producer's metadata. aiokafka refreshes metadata for the topics its client tracks only,
    and a topic it found already known (the agent's writes) is never tracked: the next
    refresh (e.g. for the first outcome sent) drops it and the write fails.
    """
    name = table.changelog_topic.get_topic_name()
    client = app.producer._ensure_producer().client
    await client.add_topic(name)
    await client._wait_on_metadata(name)
