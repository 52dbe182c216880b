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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from stream.service.tables import StateTables

#: Population-table key part of a batch's write-ahead chunks (never kept in the table).
WAL_KEY = "__wal__"
_WAL_MARK = b"/" + WAL_KEY.encode() + b"/"
#: Largest write-ahead chunk: well under a real Kafka's default 1 MB message limit.
WAL_CHUNK_BYTES = 512 * 1024


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
        # The write-ahead copy is on the broker: the local store may trust this batch.
        self.tables.settle({p for p, _, _ in self.subscribers}
                           | {p for p, _, _ in self.population})
        send_records(self.tables.subscribers, self.subscribers)
        send_records(self.tables.population, self.population)


class WalReader:
    """The last complete write-ahead copy of each partition seen in the changelog."""

    def __init__(self) -> None:
        self.pending: dict[int, dict[str, Any]] = {}
        #: partition -> (subscriber entries, population entries) of its last complete copy
        self.latest: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    def feed(self, partition: int, value: bytes | None) -> None:
        """One chunk, in changelog order."""
        if value is None:
            return
        chunk = orjson.loads(value)
        pending = self.pending.get(partition)
        if pending is None or pending["id"] != chunk["id"]:
            pending = self.pending[partition] = {"id": chunk["id"], "n": chunk["n"],
                                                 "chunks": {}}
        pending["chunks"][chunk["i"]] = chunk
        if len(pending["chunks"]) == pending["n"]:
            subs: dict[str, Any] = {}
            pops: dict[str, Any] = {}
            for c in pending["chunks"].values():
                subs.update(c["s"])
                pops.update(c["p"])
            self.latest[partition] = (subs, pops)
            del self.pending[partition]

    def overlay(self, tables: StateTables) -> int:
        """Apply (and forget) the last complete copy of every partition; keys written."""
        n = 0
        for partition, (subs, pops) in self.latest.items():
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
