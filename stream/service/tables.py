"""State tables and the per-batch views the detectors engine works on.

Two Faust tables, both co-partitioned with the input topics (same partition count; the
changelog partition of a key is the input partition its events arrive on):

``subscribers``
    key ``subscriber_id``, value the engine's plain versioned state dict.
``population``
    key ``"<partition>/<name>"``: each input partition keeps its own population baseline
    (as ``churnwatch replay`` does), so its entries live in that partition's changelog.
    ``"<partition>/__applied__"`` holds, per input topic, the offset below which that
    partition's messages are reflected in the state (see :meth:`BatchProcessor.flush
    <stream.service.processor.BatchProcessor.flush>`): after a crash, messages delivered again below
    it are skipped, so state and alerts change exactly once per message.

**A batch is written whole or not at all**: :mod:`stream.service.write_ahead`.

The engine never touches a table directly: it gets a :class:`PartitionView` per input
partition, over a :class:`BatchCache` per table. During a batch, reads come from the cache
(falling back to the table) and writes stay in the cache; :meth:`BatchCache.flush` then
writes each touched key to the table and its changelog **once per batch**, with the right
partition. A :class:`PartitionIndex` knows which keys belong to which partition (filled
from live writes and from changelog recovery, or read from a local store when first
needed), so a view can be iterated (the engine's day sweep walks all subscribers of its
partition).
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

import orjson

from stream.service.faust_internals.plain_table import plain_table
from stream.service.write_ahead import (
    WAL_CHUNK_BYTES,
    Staged,
    WalReader,
    dumps_exact,
    is_partitioned,
    is_wal_key,
    send_records,
    wal_chunks,
)

SUBSCRIBERS_TABLE = "subscribers"
POPULATION_TABLE = "population"
#: Population-table key (after the partition prefix) of the applied-offset marks.
APPLIED_KEY = "__applied__"
_DELETED = object()

log = logging.getLogger(__name__)


class PartitionIndex:
    """Which keys of one table belong to which partition.

    With the memory store the index holds every partition's keys in this worker's memory,
    filled from live writes and from changelog recovery. A local (RocksDB) store already
    holds each partition's keys: once recovery ends, :meth:`read_later` makes the store the
    index of the active partitions, and a partition's keys are read from it when they are
    first needed (the first day close after an assignment, :meth:`partition_keys`), not on
    the way to the first event (a million subscriber ids took 6.7 s to read). Until then
    the index keeps only the changes made since (``key -> present``); read, the store's
    keys with those changes applied are the partition's keys, whatever the batches
    written to the store in between: each change is the key's latest.
    """

    def __init__(self, name: str = "") -> None:
        #: the table's name, for the log
        self.name = name
        #: the keys of each partition known in memory
        self.keys: dict[int, set[str]] = defaultdict(set)
        #: partitions whose keys are still to be read from :attr:`store`, with the
        #: changes made to them since (key -> present after the change)
        self.unread: dict[int, dict[str, bool]] = {}
        #: the local store unread partitions are read from
        self.store: Any = None
        #: changelog records read by recovery since the start (write-ahead chunks too)
        self.restored = 0
        #: keys read from the local store since the start
        self.read = 0

    def add(self, partition: int, key: str) -> None:
        changes = self.unread.get(partition)
        if changes is None:
            self.keys[partition].add(key)
        else:
            changes[key] = True

    def discard(self, partition: int, key: str) -> None:
        changes = self.unread.get(partition)
        if changes is None:
            self.keys[partition].discard(key)
        else:
            changes[key] = False

    def drop_partitions(self, partitions: set[int]) -> list[str]:
        """Forget ``partitions``; return the keys known of them (not those unread)."""
        dropped: list[str] = []
        for p in partitions:
            dropped.extend(self.keys.pop(p, ()))
            self.unread.pop(p, None)
        return dropped

    def read_later(self, store: Any, partitions: Iterable[int]) -> None:
        """``store`` (local, with ``partition_keys``) holds the keys of ``partitions``, and
        this worker has no others: forget every partition, and read those from the store
        when first needed (a partition no longer assigned is closed in the store)."""
        self.store = store
        self.keys.clear()
        self.unread = {p: {} for p in partitions}

    def partition_keys(self, partition: int) -> set[str]:
        """The keys of ``partition`` (read from the store first if still unread)."""
        if partition in self.unread:
            started = time.perf_counter()
            self.keys[partition] = self.peek_keys(partition)
            self.read += len(self.keys[partition])
            del self.unread[partition]
            log.info("%s partition %d: %d keys read from the local store in %.1f s",
                     self.name, partition, len(self.keys[partition]),
                     time.perf_counter() - started)
        return self.keys.get(partition, set())

    def peek_keys(self, partition: int) -> set[str]:
        """The keys of ``partition`` as :meth:`partition_keys` gives them, but an unread
        partition stays unread (a new set each time: for diagnostics)."""
        changes = self.unread.get(partition)
        if changes is None:
            return set(self.keys.get(partition, ()))
        keys = {raw.decode("utf-8") for raw in self.store.partition_keys(partition)
                if not is_wal_key(raw)}
        for key, present in changes.items():
            if present:
                keys.add(key)
            else:
                keys.discard(key)
        return keys

    def size(self, partition: int) -> int | None:
        """The number of keys of ``partition``; None while they are unread."""
        if partition in self.unread:
            return None
        return len(self.keys.get(partition, ()))

    def count(self) -> int:
        """The number of keys of every partition, for metrics: exact where read, the local
        store's estimate where not (RocksDB counts a key overwritten twice until it compacts
        the two, so up to about twice the keys after a day close)."""
        n = sum(len(v) for v in self.keys.values())
        if self.unread:
            estimate = self.store.estimate_keys
            n += sum(estimate(p) for p in self.unread)
        return n

    async def on_changelog_event(self, event: Any) -> None:
        """Faust ``on_changelog_event`` callback: index keys as recovery reads them."""
        self.restored += 1
        message = event.message
        key = message.key
        if isinstance(key, bytes):
            key = key.decode("utf-8")
        if key is None or is_wal_key(key):
            return
        if message.value is None:
            self.discard(message.partition, key)
        else:
            self.add(message.partition, key)


class _Serialized:
    """A value written in this batch, kept as the bytes its changelog record will carry."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


class BatchCache:
    """A write-back cache over a table's store for the duration of one batch.

    On the memory store the values are kept as they are; on RocksDB each flush writes the
    serialized records of the batch into the partitions' databases in one write batch.

    With ``serialize_on_set`` (RocksDB only), a value written is serialized at once and kept
    as bytes until the flush; read again in the same batch, it is decoded as from the store.
    A value read and not written is not kept (the store still has it). A day sweep reads
    every subscriber of the worker in one batch and writes most of them: as Python objects
    that is about 2.3 KiB each, as bytes about 0.5 KiB. Only for owners that never change a
    value after writing it, nor rely on changing one they read without writing it back
    (the engine writes a subscriber's state last, and reads it afresh each event).
    """

    def __init__(self, table: Any, index: PartitionIndex, *,
                 serialize_on_set: bool = False) -> None:
        self.table = table
        self.data = table.data  # the store (a dict-like Faust store)
        self.partitioned = is_partitioned(self.data)
        self.serialize_on_set = serialize_on_set and self.partitioned
        self.index = index
        self.cache: dict[str, Any] = {}
        self.dirty: dict[str, int] = {}  # key -> changelog partition

    def get(self, key: str) -> Any:
        try:
            value = self.cache[key]
        except KeyError:
            if self.serialize_on_set:
                return self.data[key]  # KeyError if absent
            value = self.cache[key] = self.data[key]  # KeyError if absent
            return value
        if value is _DELETED:
            raise KeyError(key)
        if type(value) is _Serialized:
            return orjson.loads(value.raw)  # as the store's codec decodes it
        return value

    def get_or_none(self, key: str) -> Any:
        try:
            return self.get(key)
        except KeyError:
            return None

    def contains(self, key: str) -> bool:
        if key in self.cache:
            return self.cache[key] is not _DELETED
        return key in self.data

    def set(self, partition: int, key: str, value: Any) -> None:
        self.cache[key] = _Serialized(dumps_exact(value)) if self.serialize_on_set else value
        self.dirty[key] = partition
        self.index.add(partition, key)

    def delete(self, partition: int, key: str) -> None:
        if not self.contains(key):
            raise KeyError(key)
        self.cache[key] = _DELETED
        self.dirty[key] = partition
        self.index.discard(partition, key)

    def drain(self, *, undo: bool = False) -> list[tuple[int, str, bytes | None]]:
        """Put every touched key in the table; return ``(partition, key, serialized value
        or None for a deletion)`` of each, for the changelog.

        A local store marks the partitions written until its ``settle`` says the changelog
        has the batch. A partition still marked when the worker starts again gets the values
        the batch replaced, and the changelog offset from before it, back (``undo``: the
        owner settles each batch before the next, and its input comes again; recovery then
        reads the changelog's tail from that offset) or is restored from the changelog in
        full (a table
        whose owner never settles is always restored in full, as on the memory store)."""
        data = self.data
        dumps = dumps_exact  # kept until the batch's records are sent
        out: list[tuple[int, str, bytes | None]] = []
        for key, partition in self.dirty.items():
            value = self.cache[key]
            if value is _DELETED:
                out.append((partition, key, None))
                if not self.partitioned:
                    data.pop(key, None)
            elif type(value) is _Serialized:
                out.append((partition, key, value.raw))
            else:
                out.append((partition, key, dumps(value)))
                if not self.partitioned:
                    data[key] = value
        if self.partitioned and out:
            data.write(((p, k.encode(), v) for p, k, v in out), unsettled=True, undo=undo)
        self.dirty.clear()
        self.cache.clear()
        return out

    def flush(self) -> int:
        """Write every touched key to the table and its changelog once; return how many."""
        written = self.drain()
        send_records(self.table, written)
        return len(written)

    def discard(self) -> None:
        """Forget unflushed changes (after a failed batch)."""
        self.dirty.clear()
        self.cache.clear()


class PartitionView(MutableMapping[str, Any]):
    """The ``MutableMapping`` the engine sees for one partition of one table.

    ``prefix`` namespaces keys (the population table keeps one baseline per partition).
    """

    def __init__(self, cache: BatchCache, partition: int, prefix: str = "") -> None:
        self._cache = cache
        self.partition = partition
        self._prefix = prefix

    def __getitem__(self, key: str) -> Any:
        return self._cache.get(self._prefix + key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._cache.set(self.partition, self._prefix + key, value)

    def __delitem__(self, key: str) -> None:
        self._cache.delete(self.partition, self._prefix + key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._cache.contains(self._prefix + key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self._cache.get(self._prefix + key)
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        # A copy: the engine may write while it walks.
        for key in list(self._cache.index.partition_keys(self.partition)):
            yield key[n:]

    def __len__(self) -> int:
        return len(self._cache.index.partition_keys(self.partition))


class StateTables:
    """The two tables with their indexes and caches.

    ``StateTables(subscribers, population)`` takes any two objects with ``data`` (a dict)
    and ``send_changelog``; :meth:`on_app` builds the Faust tables.
    """

    def __init__(self, subscribers: Any, population: Any,
                 subscriber_index: PartitionIndex | None = None,
                 population_index: PartitionIndex | None = None) -> None:
        self.subscribers = subscribers
        self.population = population
        # ``is None``, not ``or``: an empty index is falsy, and the one given is the one
        # recovery fills.
        self.subscriber_index = PartitionIndex() if subscriber_index is None else subscriber_index
        self.population_index = PartitionIndex() if population_index is None else population_index
        self.subscriber_cache = BatchCache(self.subscribers, self.subscriber_index,
                                           serialize_on_set=True)
        self.population_cache = BatchCache(self.population, self.population_index)
        self.wal = WalReader()
        self.wal_chunk_bytes = WAL_CHUNK_BYTES

    @classmethod
    def on_app(cls, app: Any, partitions: int) -> StateTables:
        subscriber_index = PartitionIndex(SUBSCRIBERS_TABLE)
        population_index = PartitionIndex(POPULATION_TABLE)
        subscribers = plain_table(
            app,
            SUBSCRIBERS_TABLE,
            partitions=partitions,
            key_type=str,
            on_changelog_event=subscriber_index.on_changelog_event,
            help="Detector state per subscriber (the engine's versioned dicts).",
        )
        population = plain_table(
            app,
            POPULATION_TABLE,
            partitions=partitions,
            key_type=str,
            on_changelog_event=population_index.on_changelog_event,
            help="Population baselines, one set per input partition.",
        )
        tables = cls(subscribers, population, subscriber_index, population_index)
        population.wal = tables.wal

        async def overlay() -> None:
            # Both tables' changelogs are applied by now (Faust flushes its recovery
            # buffers before it calls the recovery callbacks).
            tables.wal.overlay(tables)
            # A local store holds the keys of the active partitions: it is their index.
            topics = {t for table in (subscribers, population)
                      for t in table.changelog_topic.topics}
            actives = {tp.partition for tp in app.assignor.assigned_actives()
                       if tp.topic in topics}
            tables.read_local_later(actives)

        population.on_recover(overlay)
        return tables

    def subscriber_view(self, partition: int) -> PartitionView:
        return PartitionView(self.subscriber_cache, partition)

    def population_view(self, partition: int) -> PartitionView:
        return PartitionView(self.population_cache, partition, prefix=f"{partition}/")

    def applied_marks(self, partition: int) -> dict[str, int]:
        """Per input topic, the offset below which partition ``partition`` is applied."""
        try:
            return dict(self.population_cache.get(f"{partition}/{APPLIED_KEY}"))
        except KeyError:
            return {}

    def set_applied_marks(self, partition: int, marks: dict[str, int]) -> None:
        current = self.applied_marks(partition)
        current.update(marks)
        self.population_cache.set(partition, f"{partition}/{APPLIED_KEY}", current)

    def read_local_later(self, partitions: Iterable[int]) -> None:
        """A local store (RocksDB) holds the keys of the worker's active ``partitions``:
        each table's index reads them from it when first needed (see
        :class:`PartitionIndex`). Called once recovery ends, after the write-ahead overlay."""
        partitions = set(partitions)
        for table, index in ((self.subscribers, self.subscriber_index),
                             (self.population, self.population_index)):
            if is_partitioned(table.data):
                index.read_later(table.data, partitions)

    def settle(self, partitions: set[int]) -> None:
        """The write-ahead copy of the batch written to ``partitions`` is on the broker."""
        for table in (self.subscribers, self.population):
            if is_partitioned(table.data):
                table.data.settle(partitions)

    def stage(self) -> Staged:
        """Move the batch's changes into the tables; the records that make them durable
        (a write-ahead copy per partition, then the per-key records)."""
        staged = Staged(self, subscribers=self.subscriber_cache.drain(undo=True),
                        population=self.population_cache.drain(undo=True))
        by_partition: dict[int, list[tuple[bytes, str, bytes | None]]] = defaultdict(list)
        for tag, records in ((b"s", staged.subscribers), (b"p", staged.population)):
            for partition, key, value in records:
                by_partition[partition].append((tag, key, value))
        batch_id = os.urandom(6).hex()
        for partition, entries in by_partition.items():
            staged.wal.extend((partition, key, value)
                              for key, value in wal_chunks(batch_id, partition, entries,
                                                             self.wal_chunk_bytes))
        return staged

    def flush(self) -> int:
        """Stage and send everything at once (no waiting between copy and records)."""
        staged = self.stage()
        staged.send_wal()
        staged.send_records()
        return staged.keys

    def discard(self) -> None:
        self.subscriber_cache.discard()
        self.population_cache.discard()
