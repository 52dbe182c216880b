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
built by :func:`stream.app.create_app` uses it (``App._new_transport``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.protocol.fetch import FetchRequest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

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


class FetchHighwaterConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, with highwaters from Fetch responses."""

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
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return FetchHighwaterConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ChurnwatchTransport(faust_aiokafka.Transport):
    """The aiokafka transport whose consumer recovers tables completely (see above)."""

    Consumer = FetchHighwaterConsumer
