"""The ported-numbers registry read from its compacted topic, live, by every worker.

``telecom.ported`` is keyed by number; each value is ``{"number", "operator"}`` and the
latest value of a number wins (a null value, a tombstone, removes the override). Every
worker reads all of its partitions from the start, like a global table, and keeps reading:
the engines it builds start from the numbers read so far, and each update is applied to
the live engines' operator lookups.

**Before the events.** A ported record must be applied before any event produced after it
(``churnwatch produce`` publishes ``ported.jsonl`` before the events, as replay loads it
before replaying). Each fetch response of the registry carries its partitions' high
watermarks; once every partition is read to its high watermark, every record produced
before that fetch was *sent* is applied. :meth:`PortedFeed.sync` holds a batch until that
time passes the newest broker timestamp in the batch (at most ``SYNC_TIMEOUT_S``; then the
batch goes on and the wait is logged). A backlog of old events never waits; a worker that
keeps up with live traffic waits about a long-poll and a trip (some 70 ms) per batch.

``CHURNWATCH_PORTED_FILE`` stays as a fallback: its numbers are loaded first, and the topic's
records win over them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from stream.contracts import TOPIC_PORTED

log = logging.getLogger(__name__)

#: Longest a batch waits for the registry before it goes on.
SYNC_TIMEOUT_S = 5.0
#: The registry consumer's longest long-poll (ms): the fetch's send time is bounded by it.
FETCH_MAX_WAIT_MS = 20
#: Allowance for a fetch request's trip to the broker.
TRIP_S = 0.05
POLL_S = 0.01


def ported_topic_name(settings: Any) -> str:
    """``telecom.ported`` under the settings' topic prefix."""
    return str(settings.topic_prefix) + TOPIC_PORTED


def normalise(number: str) -> str:
    """The digits the detectors' lookup keys ported numbers by (``+86``/``0086`` dropped)."""
    from detectors.numbers import normalise as detectors_normalise

    return str(detectors_normalise(number))


class PortedFeed:
    """Number -> operator, from the file fallback and then the registry topic.

    Parameters
    ----------
    settings
        The worker's settings (bootstrap, security, topic prefix).
    initial
        Numbers from ``CHURNWATCH_PORTED_FILE`` (the topic's records win over them).
    margin_s
        Allowance for a fetch request's trip to the broker.
    """

    def __init__(self, settings: Any, initial: Mapping[str, str] | None = None,
                 margin_s: float = TRIP_S) -> None:
        self.settings = settings
        self.numbers: dict[str, str] = dict(initial or {})
        self.margin_s = margin_s
        #: wall clock (s): every registry record sent before it is applied
        self.complete_as_of = float("-inf")
        self.records = 0
        #: the last wait ran out; batches go on without waiting until the reader catches up
        self.stalled = False
        self._engines: weakref.WeakSet[Any] = weakref.WeakSet()
        self._consumer: Any = None
        self._tps: list[Any] = []

    # -- the engines -----------------------------------------------------------------

    def config_for(self, config: Any) -> Any:
        """``config`` with the numbers known now (for a new engine)."""
        return dataclasses.replace(config, ported_numbers=dict(self.numbers))

    def attach(self, engine: Any) -> Any:
        """Keep ``engine``'s lookup up to date from now on; returns it."""
        self._engines.add(engine)
        return engine

    def apply(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        """Apply registry records (key, value); returns how many changed a number."""
        changed: dict[str, str | None] = {}
        for key, value in records:
            self.records += 1
            number, operator = _parse(key, value)
            if number is None:
                log.warning("ported registry: ignored a record without a number and operator")
                continue
            if operator is None:
                if self.numbers.pop(number, None) is not None:
                    changed[number] = None
            elif self.numbers.get(number) != operator:
                self.numbers[number] = changed[number] = operator
        if changed:
            for engine in list(self._engines):
                _update_engine(engine, changed)
        return len(changed)

    # -- the topic -------------------------------------------------------------------

    async def poll(self) -> None:
        """One fetch round of the registry (starts the consumer on the first call)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False,
                auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                client_id="churnwatch-ported", **self.settings.kafka_client_kwargs())
            await consumer.start()
            topic = ported_topic_name(self.settings)
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                from stream.service.faust_internals.transport import refresh_metadata

                await refresh_metadata(consumer)
                parts = consumer.partitions_for_topic(topic) or set()
            if not parts:  # no registry topic: the file (if any) is all there is
                await consumer.stop()
                self.complete_as_of = float("inf")
                log.warning("ported registry: topic %s missing; using the file only", topic)
                return
            self._tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(self._tps)
            await consumer.seek_to_beginning(*self._tps)
            self._consumer = consumer
        consumer = self._consumer
        batches = await consumer.getmany(timeout_ms=FETCH_MAX_WAIT_MS, max_records=50_000)
        for records in batches.values():
            self.apply((r.key, r.value) for r in records)
        await self._note_progress(consumer)

    async def _note_progress(self, consumer: Any) -> None:
        oldest: float | None = None
        for tp in self._tps:
            highwater = consumer.highwater(tp)
            at_ms = consumer.last_poll_timestamp(tp)
            if highwater is None or at_ms is None or await consumer.position(tp) < highwater:
                return
            # The response came at ``at_ms``; its request left at most a long-poll and a
            # trip before: records sent before then are in it.
            sent = at_ms / 1000.0 - FETCH_MAX_WAIT_MS / 1000.0 - self.margin_s
            oldest = sent if oldest is None else min(oldest, sent)
        if oldest is not None and oldest > self.complete_as_of:
            self.complete_as_of = oldest
            self.stalled = False

    async def sync(self, newest_written_s: float | None) -> bool:
        """Wait until every registry record sent before ``newest_written_s`` is applied.

        Returns False when :data:`SYNC_TIMEOUT_S` ran out first (the batch goes on); until
        the registry is read to its end again, later batches do not wait either. A stamp
        ahead of this worker's clock (a producer's clock running fast) counts as now.
        """
        if newest_written_s is None or newest_written_s <= self.complete_as_of:
            return True
        newest_written_s = min(newest_written_s, time.time())
        if self.stalled:
            return False
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        while True:
            if self._consumer is not None:
                # The consumer fetches in the background: its latest responses may already
                # show the registry complete, without waiting for the reader's next round.
                await self._note_progress(self._consumer)
            if newest_written_s <= self.complete_as_of:
                break
            if time.monotonic() > deadline:
                log.warning("ported registry: not caught up after %.0f s; going on",
                            SYNC_TIMEOUT_S)
                self.stalled = True
                return False
            await asyncio.sleep(POLL_S)
        return True

    async def run(self) -> None:
        """Read the registry until cancelled (a failed round is retried)."""
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the registry must never stop a worker
                log.warning("ported registry poll failed: %r", type(exc).__name__)
                await self.stop()
                await asyncio.sleep(1.0)
            if self._consumer is None:
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


def newest_written_s(items: Iterable[Any]) -> float | None:
    """The newest broker timestamp (s) of a batch of Faust events or consumer records."""
    newest: float | None = None
    for item in items:
        stamp = getattr(getattr(item, "message", item), "timestamp", None)
        if not isinstance(stamp, (int, float)):
            continue
        seconds = stamp / 1000.0 if stamp > 1e11 else float(stamp)
        if newest is None or seconds > newest:
            newest = seconds
    return newest


def _parse(key: bytes | None, value: bytes | None) -> tuple[str | None, str | None]:
    number = key.decode("utf-8", "replace") if key else None
    if value is None:
        return (normalise(number) if number else None), None
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(record, dict):
        return None, None
    number = str(record.get("number") or number or "") or None
    operator = record.get("operator")
    if not number or not operator:
        return None, None
    return normalise(number), str(operator)


def _update_engine(engine: Any, changed: Mapping[str, str | None]) -> None:
    """Apply changed numbers to a live engine's operator lookup (and drop its cache)."""
    lookup = getattr(engine, "lookup", None)
    ported = getattr(lookup, "ported", None)
    if not isinstance(ported, dict):
        return
    for number, operator in changed.items():
        if operator is None:
            ported.pop(number, None)
        else:
            ported[number] = operator
    cache = getattr(engine, "_operator_cache", None)
    if isinstance(cache, dict):
        cache.clear()
