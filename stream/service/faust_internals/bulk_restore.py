"""A bulk restore of the RocksDB tables' changelogs, before Faust's own recovery.

Why
---
Faust restores a table one changelog record at a time: each record becomes a Faust event
that its conductor decodes into Python objects (although the RocksDB store then writes the
raw bytes), queues, buffers and applies. That costs about 0.5 ms a record here (about
1,900 records/s while a worker restores a 100,000-key table), so a million subscribers took
over ten minutes to come back after a ``kill -9`` with an empty data directory.

What this does
--------------
:class:`BulkRecovery` is Faust's recovery service with one step added. Where Faust seeks
the active changelog partitions (``Recovery._seek_offsets``), once it has built their high
watermarks (``Recovery._build_highwaters``, answered from Fetch responses, see
:mod:`stream.service.faust_internals.transport`) and the offsets each partition's database
holds (``Recovery._build_offsets``, the persisted offset), every active partition of a
table on a :class:`~stream.service.faust_internals.rocksdb_store.PartitionedRocksStore` is
read from there to the high watermark by a plain aiokafka consumer (no group, raw bytes),
and written, a fetch at a time, to the partition's database in one RocksDB write batch with
the persisted offset, exactly as ``faust.stores.rocksdb.Store.apply_changelog_batch``
writes it: a record's key and value bytes (``None``, a tombstone, deletes the key), the
offset being the largest of the records written. Write-ahead chunks of the population
changelog go to the table's :class:`~stream.service.write_ahead.WalReader` in changelog
order, as ``PlainTable.apply_changelog_batch`` sends them, and never into the database
(decision 0006).

The read runs as a task of its own: Faust's recovery steps run under its request timeout
(``broker_request_timeout``; a step that overruns stops the recovery service), and a large
changelog takes longer. Faust is told the partitions are read (their offsets at the high
watermark), so its own loop leaves them alone, and :meth:`BulkRecovery.on_recovery_completed`
(awaited by Faust without a timeout) waits for the task before the tables' recovery
callbacks run and the input partitions are resumed.

A rebalance, a revocation or a stop cancels the read: every write batch holds its records
and its offset together, so the next recovery goes on from the last one. A read that fails
fails the recovery (the worker stops; restarted, it goes on from the offsets written).

The tables' ``on_changelog_event`` callbacks are not called per record. The only one is
:meth:`stream.service.tables.PartitionIndex.on_changelog_event`, which indexes keys; on
RocksDB the databases are the index once recovery ends
(:meth:`~stream.service.tables.StateTables.read_local_later`), so it ends the same;
:attr:`BulkRecovery.bulk_restored` counts the records instead.

Decision record: ``docs/decisions/0015-bulk-restore-of-rocksdb-changelogs.md``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from stream.service.write_ahead import is_wal_key

log = logging.getLogger(__name__)

#: Fetch sizes of the bulk consumer: large fetches, few round trips.
FETCH_MAX_BYTES = 64 * 1024**2
PARTITION_FETCH_MAX_BYTES = 16 * 1024**2


def bulk_store(table: Any) -> Any | None:
    """The table's store if the bulk restore can write to it, else None."""
    from stream.service.faust_internals.rocksdb_store import PartitionedRocksStore

    store = getattr(table, "data", None)
    return store if isinstance(store, PartitionedRocksStore) else None


def apply_records(store: Any, partition: int, records: Iterable[Any], end: int,
                  wal: Any = None) -> tuple[int, int | None]:
    """Write changelog ``records`` (aiokafka ``ConsumerRecord``s of one partition, in
    offset order) below ``end`` to ``store``'s database of ``partition`` in one write batch,
    with the persisted offset; write-ahead chunks go to ``wal``. Returns how many records
    were taken and the last offset taken (None: none)."""
    import rocksdict

    batch = rocksdict.WriteBatch(raw_mode=True)
    taken = 0
    last = None
    persisted = None
    for record in records:
        offset = record.offset
        if offset >= end:
            break
        taken += 1
        last = offset
        key = record.key
        if wal is not None and is_wal_key(key):
            wal.feed(partition, record.value)
            continue
        if record.value is None:
            batch.delete(key)
        else:
            batch.put(key, record.value)
        persisted = offset
    if persisted is not None:
        # Faust's store keeps the offset of the last record it wrote (chunks not counted).
        batch.put(store.offset_key, str(persisted).encode())
        store._db_for_partition(partition).write(batch)
    return taken, last


async def bulk_read(app: Any, jobs: Mapping[TP, tuple[Any, int, int]]) -> int:
    """Read each ``tp -> (table, start, end)`` changelog partition from ``start`` to
    ``end`` (exclusive) into its table's store; how many records were read.

    Records are applied a fetch at a time, each fetch with its offset: a read cut short
    (cancelled) leaves every partition's database as of its last write.
    """
    import aiokafka
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list

    conf = app.conf
    transport = app.transport
    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=server_list(transport.url, transport.default_port),
        client_id=f"{conf.broker_client_id}-bulk-restore",
        group_id=None, enable_auto_commit=False,
        request_timeout_ms=int(conf.broker_request_timeout * 1000.0),
        fetch_max_bytes=FETCH_MAX_BYTES, max_partition_fetch_bytes=PARTITION_FETCH_MAX_BYTES,
        fetch_max_wait_ms=100, check_crcs=False,
        **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))
    n = 0
    # aiokafka's own partition tuples, Faust's TP for the jobs
    tps = {aiokafka.TopicPartition(tp.topic, tp.partition): tp for tp in jobs}
    await consumer.start()
    try:
        pending = {atp for atp, tp in tps.items() if jobs[tp][1] < jobs[tp][2]}
        consumer.assign(list(pending))
        for atp in pending:
            consumer.seek(atp, jobs[tps[atp]][1])
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000)
            for atp, records in fetched.items():
                tp = tps[atp]
                table, _, end = jobs[tp]
                if tp.partition not in table.data._dbs:  # revoked: never reopen it
                    raise RuntimeError(f"bulk restore: {tp} is no longer assigned")
                taken, _ = apply_records(table.data, tp.partition, records, end,
                                         getattr(table, "wal", None))
                n += taken
                if atp in pending and await consumer.position(atp) >= end:
                    pending.discard(atp)
                    consumer.pause(atp)
    finally:
        await consumer.stop()
    return n


class BulkRecovery(Recovery):
    """Faust's recovery, with the RocksDB tables' changelogs read in bulk (module doc)."""

    #: changelog records written by the bulk reads since the start (write-ahead chunks too)
    bulk_restored = 0
    #: seconds the bulk reads took since the start
    bulk_seconds = 0.0
    _bulk_task: asyncio.Future[None] | None = None

    async def _seek_offsets(self, consumer: Any, tps: set[TP],
                            offsets: Counter[TP], title: str) -> None:
        if title == "active":
            self._cancel_bulk()
            jobs = self._bulk_jobs(tps, offsets)
            if jobs:
                self._bulk_task = asyncio.ensure_future(self._bulk(jobs))
                for tp, (_, _, end) in jobs.items():
                    offsets[tp] = end - 1  # read by the bulk task, not by Faust
        await super()._seek_offsets(consumer, tps, offsets, title)

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        task = self._bulk_task
        if task is not None:
            # A rebalance cancels this wait (Faust's _wait), and with it the task.
            await task
            self._bulk_task = None
        await super().on_recovery_completed(generation_id)

    def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._cancel_bulk()
        super().on_partitions_revoked(revoked)

    async def on_stop(self) -> None:
        self._cancel_bulk()
        await super().on_stop()

    def _cancel_bulk(self) -> None:
        task, self._bulk_task = self._bulk_task, None
        if task is not None and not task.done():
            task.cancel()

    def _bulk_jobs(self, tps: set[TP], offsets: MutableMapping[TP, int]
                   ) -> dict[TP, tuple[Any, int, int]]:
        jobs: dict[TP, tuple[Any, int, int]] = {}
        for tp in tps:
            table = self.tp_to_table.get(tp)
            highwater = self.active_highwaters.get(tp)
            if table is None or highwater is None or bulk_store(table) is None:
                continue
            # Faust's offsets are those of the last record held (-1: none), its
            # highwaters those of the last record in the changelog.
            start, end = offsets[tp] + 1, highwater + 1
            if start < end:
                jobs[tp] = (table, start, end)
        return jobs

    async def _bulk(self, jobs: Mapping[TP, tuple[Any, int, int]]) -> None:
        started = time.monotonic()
        try:
            n = await bulk_read(self.app, jobs)
        except asyncio.CancelledError:
            log.info("bulk restore: cancelled (a rebalance or a stop); the next recovery "
                     "goes on from the offsets written")
            raise
        except Exception:
            log.exception("bulk restore failed")
            raise
        elapsed = time.monotonic() - started
        self.bulk_restored += n
        self.bulk_seconds += elapsed
        # The count with separators: a run of seven digits is redacted from the log as a
        # possible phone number (stream.service.redaction).
        log.info("bulk restore: %s changelog records in %.1f s (%d partitions)",
                 f"{n:,}", elapsed, len(jobs))


class BulkTableManager(TableManager):
    """Faust's table manager with :class:`BulkRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = BulkRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
