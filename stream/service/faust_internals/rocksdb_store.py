"""Faust's RocksDB store, made to work for tables written a batch at a time.

Faust's ``faust.stores.rocksdb.Store`` keeps one RocksDB database per changelog partition
and picks the partition of a read or a write from the *current stream event*
(``faust.streams.current_event``): a write with no current event fails an ``assert``, and a
read looks only in the current event's partition. churnwatch's agent handles a batch of
events of many partitions at once and writes its state after the batch (or from a timer,
or from a recovery callback), so the current event is another partition's or none: keys
were missed (a ``KeyError`` for a subscriber known to the table) and written to the wrong
partition's database, and a write outside an event stopped the agent.

:class:`PartitionedRocksStore` never looks at the current event:

- a read or a membership test looks in every open database of the table (Faust's own
  event-less path: a key index, then bloom filters);
- :meth:`~PartitionedRocksStore.write` takes the partition from its caller and writes
  serialized records in one RocksDB write batch;
- a plain ``store[key] = value`` goes to the partition that already holds the key, or to
  the only open partition; anything else is an error, never a guess.

**Local state is trusted only once the changelog has it.** A batch is written to the local
database before its write-ahead copy reaches the broker (:mod:`stream.service.tables`).
With ``unsettled=True`` the same write batch sets a marker in that partition's database;
:meth:`~PartitionedRocksStore.settle` removes it once the copy is on the broker. A
database opened with the marker set (the worker died in between) may hold a batch the
changelog never got. With ``undo=True`` the marker holds the values the batch replaced
and the changelog offset the database held before it, and both are put back: the database
is as it was before the batch, and recovery reads the changelog's tail from there, so
whatever part of the batch reached the changelog comes back from it, as a restore in full
would have it (the batch's input is delivered again, as its offsets were not committed).
The offset matters to an owner that sends its records while the marker is set (the group
stage): each record the broker acknowledged moved the database's offset past it. A bare
marker empties the database, to be restored from the changelog in full.

A rebalance that revokes nothing (a worker's start) runs no garbage collection
(:meth:`~PartitionedRocksStore.revoke_partitions`, decision 0016).
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from faust.stores.rocksdb import Store

#: Key of the "a batch is written here but not yet on the changelog" marker.
UNSETTLED_KEY = b"__churnwatch\0unsettled__"
_HIDDEN = (Store.offset_key, UNSETTLED_KEY)

#: Per partition database: a small block cache and small memtables (Faust's defaults are
#: a 2 GiB cache and three 64 MiB memtables per database, and a worker opens one database
#: per partition and table).
ROCKSDB_OPTIONS: dict[str, Any] = {
    "block_cache_size": 32 * 1024**2,
    "block_cache_compressed_size": 8 * 1024**2,
    "write_buffer_size": 16 * 1024**2,
    "max_write_buffer_number": 2,
}


class PartitionedRocksStore(Store):
    """A RocksDB table store whose partition comes from the caller, not the stream event."""

    def _get(self, key: bytes) -> bytes | None:
        found = self._get_bucket_for_key(key)
        return None if found is None else found.value

    def _contains(self, key: bytes) -> bool:
        return self._get_bucket_for_key(key) is not None

    def _set(self, key: bytes, value: bytes | None) -> None:
        found = self._get_bucket_for_key(key)
        if found is not None:
            found.db.put(key, value)
            return
        if len(self._dbs) == 1:
            partition = next(iter(self._dbs))
            self._key_index[key] = partition
            self._dbs[partition].put(key, value)
            return
        raise LookupError(
            f"table {self.table_name}: a new key needs its partition (PartitionedRocksStore.write)")

    def write(self, records: Iterable[tuple[int, bytes, bytes | None]], *,
              unsettled: bool = False, undo: bool = False) -> None:
        """Write serialized ``(partition, key, value or None to delete)`` records; with
        ``unsettled``, mark each partition written until :meth:`settle` (with ``undo``,
        the mark keeps the values replaced)."""
        import rocksdict

        batches: dict[int, Any] = {}
        replaced: dict[int, list[tuple[str, str | None]]] = {}
        offsets: dict[int, str | None] = {}
        for partition, key, value in records:
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = rocksdict.WriteBatch(raw_mode=True)
                replaced[partition] = []
                if unsettled and undo:
                    offset = self._db_for_partition(partition).get(self.offset_key)
                    offsets[partition] = None if offset is None else offset.decode()
            if unsettled and undo:
                old = self._db_for_partition(partition).get(key)
                replaced[partition].append((key.decode(), None if old is None else old.decode()))
            if value is None:
                batch.delete(key)
                self._key_index.pop(key, None)
            else:
                batch.put(key, value)
                self._key_index[key] = partition
        for partition, batch in batches.items():
            if unsettled:
                batch.put(UNSETTLED_KEY, orjson.dumps(
                    {"undo": replaced[partition], "offset": offsets[partition]})
                    if undo else b"1")
            self._db_for_partition(partition).write(batch)

    def settle(self, partitions: Iterable[int]) -> None:
        """The changelog has what was written to ``partitions``: drop their markers."""
        for partition in partitions:
            db = self._dbs.get(partition)
            if db is not None:
                db.delete(UNSETTLED_KEY)

    def partition_keys(self, partition: int) -> Iterator[bytes]:
        """The keys held in one partition's database (if it is open)."""
        db = self._dbs.get(partition)
        if db is not None:
            yield from self._visible_keys(db)

    def revoke_partitions(self, table: Any, tps: Any) -> None:
        """Faust's, with its full garbage collection only when a database was let go.

        Faust drops a revoked partition's database without closing it and runs
        ``gc.collect()`` so that nothing keeps it (and its lock on the directory) open. It
        does so at every rebalance of every table, with nothing revoked too: on a worker's
        start (nothing is revoked at the first assignment) one collection a table, each
        walking every object of the process, 0.2 s a table here under load (decision 0016).
        """
        dropped = False
        for tp in tps:
            if tp.topic in table.changelog_topic.topics:
                db = self._dbs.pop(tp.partition, None)
                if db is not None:
                    self.logger.info(f"closing db {tp.topic} partition {tp.partition}")
                    dropped = True
        if dropped:
            gc.collect()

    def estimate_keys(self, partition: int) -> int:
        """RocksDB's estimate of the keys in one partition's database (0 if it is not
        open): no walk over the keys, but a key overwritten counts twice until the two
        are compacted."""
        db = self._dbs.get(partition)
        if db is None:
            return 0
        return int(db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def _open_for_partition(self, partition: int) -> Any:
        db = super()._open_for_partition(partition)
        mark = db.get(UNSETTLED_KEY)
        if mark is None:
            return db
        marker = orjson.loads(mark) if mark.startswith(b"{") else {}
        undo = marker.get("undo")
        if undo is not None:
            import rocksdict

            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, old in undo:
                if old is None:
                    batch.delete(key.encode())
                else:
                    batch.put(key.encode(), old.encode())
            if "offset" in marker:  # the offset the values put back go with
                offset = marker["offset"]
                if offset is None:
                    batch.delete(self.offset_key)
                else:
                    batch.put(self.offset_key, offset.encode())
            batch.delete(UNSETTLED_KEY)
            db.write(batch)
            self.log.warning("%s partition %d: the last batch written locally was not on the "
                             "changelog; %d keys put back as they were before it",
                             self.table_name, partition, len(undo))
            return db
        # A table whose owner does not settle batch by batch (the calibration stage) is
        # always here, and one whose owner does if it died within a batch: expected, so
        # not a warning.
        self.log.info("%s partition %d: restoring the partition from the changelog in full",
                      self.table_name, partition)
        db.close()
        shutil.rmtree(self.partition_path(partition), ignore_errors=True)
        return super()._open_for_partition(partition)

    def _visible_keys(self, db: Any) -> Iterator[bytes]:
        for key in db.keys():
            if key not in _HIDDEN:
                yield key

    def _visible_items(self, db: Any) -> Iterator[tuple[bytes, bytes]]:
        for key, value in db.items():
            if key not in _HIDDEN:
                yield key, value


def is_rocksdb(url: Any) -> bool:
    """Does the store URL name RocksDB?"""
    return str(url).startswith("rocksdb:")
