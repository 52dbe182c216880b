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
:class:`BulkRecovery` is Faust's recovery service with one step added. Once Faust has built
the high watermarks (``Recovery._build_highwaters``, answered from Fetch responses, see
:mod:`stream.service.faust_internals.transport`) and the offsets each active changelog
partition's database holds (``Recovery._build_offsets``, the persisted offset), and before
it seeks, every active partition of a table on a
:class:`~stream.service.faust_internals.rocksdb_store.PartitionedRocksStore` is read from
there to the high watermark with a plain aiokafka consumer (no group, raw bytes), and
written, a fetch at a time, to the partition's database in one RocksDB write batch with the
persisted offset, exactly as ``faust.stores.rocksdb.Store.apply_changelog_batch`` writes it:
a record's key and value bytes (``None``, a tombstone, deletes the key), the offset being
the largest of the records written. Write-ahead chunks of the population changelog go to
the table's :class:`~stream.service.write_ahead.WalReader` in changelog order, as
``PlainTable.apply_changelog_batch`` sends them, and never into the database (decision 0006).
Faust's recovery then starts at the offsets reached and finds nothing left, or only what
the budget below did not cover.

Differences from Faust's path, on purpose:

- the tables' ``on_changelog_event`` callbacks are not called per record. The only one is
  :meth:`stream.service.tables.PartitionIndex.on_changelog_event`, which indexes keys; on
  RocksDB the index is filled from the databases once recovery ends
  (:meth:`~stream.service.tables.StateTables.load_local`), so it ends the same;
  :attr:`BulkRecovery.bulk_restored` counts the records instead;
- the step must finish within Faust's timeout for a recovery step
  (``broker_request_timeout``; a step that overruns stops the recovery service). The bulk
  read stops after :data:`BUDGET_SHARE` of it; what is left is read by Faust's own loop,
  from the offsets the bulk read persisted (correct, only slower).

A rebalance during the read cancels it (Faust's ``_wait``): every write batch is whole
(records and offset together), so the next recovery resumes from the last one.

Decision record: ``docs/decisions/0015-bulk-restore-of-rocksdb-changelogs.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from stream.service.write_ahead import is_wal_key

log = logging.getLogger(__name__)

#: Share of Faust's recovery step timeout (``broker_request_timeout``) the bulk read may
#: take; the rest is left for the seek that follows it in the same step.
BUDGET_SHARE = 0.6
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


async def bulk_read(app: Any, jobs: Mapping[TP, tuple[Any, int, int]],
                    budget_s: float) -> tuple[dict[TP, int], int]:
    """Read each ``tp -> (table, start, end)`` changelog partition from ``start`` to
    ``end`` (exclusive) into its table's store, for at most ``budget_s`` seconds.

    Returns, per partition read, the last offset read (what Faust's recovery may start
    at), and how many records were read. Records are applied as they come; nothing is
    lost if the read is cut short.
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
    deadline = time.monotonic() + budget_s
    reached: dict[TP, int] = {}
    n = 0
    # aiokafka's own partition tuples, Faust's TP in the results
    tps = {aiokafka.TopicPartition(tp.topic, tp.partition): tp for tp in jobs}
    await consumer.start()
    try:
        pending = {atp for atp, tp in tps.items() if jobs[tp][1] < jobs[tp][2]}
        consumer.assign(list(pending))
        for atp in pending:
            consumer.seek(atp, jobs[tps[atp]][1])
        while pending and time.monotonic() < deadline:
            fetched = await consumer.getmany(
                *pending, timeout_ms=int(max(0.0, min(1.0, deadline - time.monotonic())) * 1000))
            for atp, records in fetched.items():
                tp = tps[atp]
                table, _, end = jobs[tp]
                taken, last = apply_records(table.data, tp.partition, records, end,
                                        getattr(table, "wal", None))
                n += taken
                if last is not None:
                    reached[tp] = last
                if atp in pending and await consumer.position(atp) >= end:
                    pending.discard(atp)
                    consumer.pause(atp)
    finally:
        await consumer.stop()
    return reached, n


class BulkRecovery(Recovery):
    """Faust's recovery, with the RocksDB tables' changelogs read in bulk first."""

    #: changelog records written by the bulk read since the start (write-ahead chunks too)
    bulk_restored = 0
    #: seconds the bulk reads took since the start
    bulk_seconds = 0.0

    async def _seek_offsets(self, consumer: Any, tps: set[TP],
                            offsets: MutableMapping[TP, int], title: str) -> None:
        if title == "active":
            try:
                await self._bulk(tps, offsets)
            except BaseException:
                log.exception("bulk restore failed")
                raise
        await super()._seek_offsets(consumer, tps, offsets, title)

    async def _bulk(self, tps: set[TP], offsets: MutableMapping[TP, int]) -> None:
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
        if not jobs:
            return
        started = time.monotonic()
        budget = BUDGET_SHARE * float(self.app.conf.broker_request_timeout)
        reached, n = await bulk_read(self.app, jobs, budget)
        for tp, last in reached.items():
            offsets[tp] = last  # (a Counter: update() would add)
        elapsed = time.monotonic() - started
        self.bulk_restored += n
        self.bulk_seconds += elapsed
        left = sum(end - 1 - offsets[tp] for tp, (_, _, end) in jobs.items())
        log.info("bulk restore: %d changelog records in %.1f s (%d partitions); %d left for "
                 "Faust's recovery", n, elapsed, len(jobs), left)


class BulkTableManager(TableManager):
    """Faust's table manager with :class:`BulkRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = BulkRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
