"""A batch is written whole or not at all. A batch's state is many changelog records in two
topics, and the embedded broker has no transactions, so a ``kill -9`` could leave part of
a batch written. So each batch first writes a *write-ahead* copy of everything it changes
in one input partition (subscriber states, population entries, applied marks) to that
partition of the population changelog, under the keys ``"<partition>/__wal__/<i>"``
(chunks of at most ``WAL_CHUNK_BYTES``, all with the batch's id and chunk count), waits
until the broker has it, and only then writes the per-key records. On recovery the chunks
are not put in the table: :class:`WalReader` keeps the last complete write-ahead copy of
each partition and, once the changelogs are read, applies it over the recovered keys. A
crash before the copy is complete leaves the state of the batch before (the per-key
records of the batch were not sent yet); a crash after it completes the batch. Either way
every key comes back as of one and the same batch, with the marks of that batch. The
per-key records keep the changelog compactable on a real Kafka (only the latest copy of
each chunk key is needed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import orjson


class Tables(Protocol):
    """The state tables a copy is overlaid on (:class:`stream.service.tables.StateTables`)."""

    subscribers: Any
    population: Any
    subscriber_index: Any
    population_index: Any

#: Population-table key part of a batch's write-ahead chunks (never kept in the table).
WAL_KEY = "__wal__"
_WAL_MARK = b"/" + WAL_KEY.encode() + b"/"
#: Largest write-ahead chunk: well under a real Kafka's default 1 MB message limit.
WAL_CHUNK_BYTES = 512 * 1024
#: Per-key records queued to the producer at once. Faust's producer holds a message object
#: (about 1 KiB) per record until the broker has it, and a day sweep's batch has a record
#: for every subscriber of the worker: queued all at once, a million of them took more
#: memory than the states themselves.
RECORDS_PER_WRITE = 20_000


def dumps_exact(value: Any) -> bytes:
    """``orjson.dumps(value)`` in a bytes object of its own size, for values kept a while.

    orjson (3.13) returns its output in an allocation of about 8 KiB whatever its length,
    resident while the object lives: a batch that keeps a day sweep's states for the
    changelog (one per subscriber of the worker) held 8 KiB each instead of about 0.5 KiB.

    >>> dumps_exact({"n": 1})
    b'{"n":1}'
    """
    return memoryview(orjson.dumps(value)).tobytes()


def is_wal_key(key: bytes | str | None) -> bool:
    """True for a write-ahead chunk key (``"<partition>/__wal__/<i>"``)."""
    if key is None:
        return False
    raw = key if isinstance(key, bytes) else key.encode()
    return _WAL_MARK in raw


def is_partitioned(store: Any) -> bool:
    """Does ``store`` take serialized records with their partition (RocksDB, see
    :class:`~stream.service.faust_internals.rocksdb_store.PartitionedRocksStore`)?"""
    return hasattr(store, "partition_keys")


def send_records(table: Any, records: list[tuple[int, str, bytes | None]]) -> None:
    """Send serialized ``(partition, key, value)`` records to ``table``'s changelog."""
    send = table.send_changelog
    for partition, key, value in records:
        send(partition, key, value, value_serializer="raw")


def wal_chunks(batch_id: str, partition: int,
               entries: list[tuple[bytes, str, bytes | None]],
               limit: int = WAL_CHUNK_BYTES) -> list[tuple[str, bytes]]:
    """The write-ahead chunks (key, JSON value) of one partition's ``(table tag, key,
    value)`` entries; tag ``b"s"`` for subscribers, ``b"p"`` for population.

    >>> chunks = wal_chunks("b1", 2, [(b"s", "s1", b'{"n":1}'), (b"p", "2/x", None)])
    >>> [(k, orjson.loads(v)) for k, v in chunks]  # doctest: +NORMALIZE_WHITESPACE
    [('2/__wal__/0', {'v': 1, 'id': 'b1', 'i': 0, 'n': 1, 's': {'s1': {'n': 1}},
      'p': {'2/x': None}})]
    """
    groups: list[list[tuple[bytes, str, bytes | None]]] = [[]]
    size = 0
    for entry in entries:
        n = len(entry[1]) + (len(entry[2]) if entry[2] is not None else 4) + 8
        if groups[-1] and size + n > limit:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += n
    dumps = orjson.dumps
    out = []
    for i, group in enumerate(groups):
        parts: dict[bytes, list[bytes]] = {b"s": [], b"p": []}
        for tag, key, value in group:
            parts[tag].append(dumps(key) + b":" + (b"null" if value is None else value))
        body = b'{"v":1,"id":"%s","i":%d,"n":%d,"s":{%s},"p":{%s}}' % (
            batch_id.encode(), i, len(groups), b",".join(parts[b"s"]), b",".join(parts[b"p"]))
        out.append((f"{partition}/{WAL_KEY}/{i}", body))
    return out


@dataclass
class Staged:
    """One batch's state changes, serialized and already in the tables' memory.

    Send :attr:`wal` (:meth:`send_wal`), wait until the broker has it, then send the
    per-key :attr:`records` (:meth:`send_records`).
    """

    tables: Any
    wal: list[tuple[int, str, bytes]] = field(default_factory=list)
    subscribers: list[tuple[int, str, bytes | None]] = field(default_factory=list)
    population: list[tuple[int, str, bytes | None]] = field(default_factory=list)

    @property
    def keys(self) -> int:
        return len(self.subscribers) + len(self.population)

    def send_wal(self) -> None:
        send_records(self.tables.population, self.wal)  # type: ignore[arg-type]

    def send_records(self) -> None:
        for write in self.record_writers():
            write()

    def record_writers(self, per_write: int | None = None) -> list[Callable[[], None]]:
        """Writers that send the per-key records, ``per_write`` records each (default
        :data:`RECORDS_PER_WRITE`), in order; the first also tells the local store the
        batch is safe. Call them only once the write-ahead copy is on the broker."""
        per_write = per_write or RECORDS_PER_WRITE
        tables = self.tables
        slices = [(table, records[start:start + per_write])
                  for table, records in ((tables.subscribers, self.subscribers),
                                         (tables.population, self.population))
                  for start in range(0, len(records), per_write)]

        def first() -> None:
            # The write-ahead copy is on the broker: the local store may trust this batch.
            tables.settle({p for p, _, _ in self.subscribers}
                          | {p for p, _, _ in self.population})
            for table, part in slices[:1]:
                send_records(table, part)

        return [first, *(partial(send_records, table, part) for table, part in slices[1:])]

    def writers(self) -> list[Callable[[], None]]:
        """The batch's writers in order: the write-ahead copy, then the per-key records a
        slice at a time (the caller waits for the broker after each)."""
        return [self.send_wal, *self.record_writers()]


#: How :func:`wal_chunks` starts a chunk: its batch id, index and count.
_CHUNK_HEAD = re.compile(rb'\{"v":1,"id":"([0-9a-f]*)","i":(\d+),"n":(\d+),')


class WalReader:
    """The last complete write-ahead copy of each partition seen in the changelog.

    Chunks are kept as the bytes read (only their head is parsed) and decoded one at a time
    when a copy is applied: a day sweep's copy holds every subscriber of its partition,
    about 0.5 KiB each as bytes and 2.3 KiB as Python objects, and a restore may meet the
    copies of every partition before their next ones.
    """

    def __init__(self) -> None:
        self.pending: dict[int, dict[str, Any]] = {}
        #: partition -> the chunks (bytes, in order) of its last complete copy
        self.latest: dict[int, list[bytes]] = {}

    def feed(self, partition: int, value: bytes | None) -> None:
        """One chunk, in changelog order."""
        if value is None:
            return
        head = _CHUNK_HEAD.match(value)
        if head is None:  # not as wal_chunks writes it: read the fields from the whole
            chunk = orjson.loads(value)
            batch_id, index, count = str(chunk["id"]), int(chunk["i"]), int(chunk["n"])
        else:
            batch_id, index, count = head[1].decode(), int(head[2]), int(head[3])
        pending = self.pending.get(partition)
        if pending is None or pending["id"] != batch_id:
            pending = self.pending[partition] = {"id": batch_id, "n": count, "chunks": {}}
        pending["chunks"][index] = bytes(value)
        if len(pending["chunks"]) == pending["n"]:
            chunks = pending["chunks"]
            self.latest[partition] = [chunks[i] for i in sorted(chunks)]
            del self.pending[partition]

    def copies(self) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
        """``(partition, subscriber entries, population entries)`` of each chunk of the
        last complete copies, decoded one chunk at a time (a key is in one chunk only)."""
        for partition, chunks in self.latest.items():
            for raw in chunks:
                chunk = orjson.loads(raw)
                yield partition, chunk["s"], chunk["p"]

    def overlay(self, tables: Tables) -> int:
        """Apply (and forget) the last complete copy of every partition; keys written."""
        n = 0
        for partition, subs, pops in self.copies():
            for store, index, entries in (
                (tables.subscribers.data, tables.subscriber_index, subs),
                (tables.population.data, tables.population_index, pops),
            ):
                for key, value in entries.items():
                    if value is None:
                        index.discard(partition, key)
                        if not is_partitioned(store):
                            store.pop(key, None)
                    else:
                        index.add(partition, key)
                        if not is_partitioned(store):
                            store[key] = value
                    n += 1
                if is_partitioned(store):
                    store.write((partition, key.encode(),
                                 None if value is None else orjson.dumps(value))
                                for key, value in entries.items())
        self.latest.clear()
        self.pending.clear()
        return n
