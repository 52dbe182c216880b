"""The partition index: on RocksDB the local store is the index, read when first needed.

A restarted worker does not read every subscriber id of its partitions before its first
event; a partition's keys are read from its database at the first day close (the engine's
sweep walks the partition), with the changes made since applied over them. These tests hold
the read to what an index kept up to date from the start would give: keys added and deleted
in a batch before the read, batches written in between, the write-ahead copy, a rebalance
that drops a partition and gives it back after another worker changed it, and the memory
store, which keeps its index in memory as before.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream.service.tables import BatchCache, PartitionIndex, StateTables
from stream.service.write_ahead import WalReader, wal_chunks

rocksdict = pytest.importorskip("rocksdict")

from tests.service.test_rocksdb_store import _close, _table  # noqa: E402


@pytest.fixture
def tables(tmp_path: Any) -> Any:
    subscribers, population = _table(tmp_path), _table(tmp_path, "population")
    subscribers.data.write([(0, b"s0", b"{}"), (1, b"s1", b"{}"), (1, b"s2", b"{}")])
    population.data.write([(1, b"1/__applied__", orjson.dumps({"calls": 3}))])
    yield StateTables(subscribers, population)
    _close(subscribers)
    _close(population)


def test_a_partition_is_read_from_the_local_store_when_first_needed(tables: Any) -> None:
    index = tables.subscriber_index
    tables.read_local_later({0, 1})
    # Nothing read at the end of recovery: sizes unknown, counted by RocksDB's estimate.
    assert index.read == 0 and index.size(1) is None and index.unread == {0: {}, 1: {}}
    assert index.count() == 3
    assert tables.applied_marks(1) == {"calls": 3}  # a get needs no index
    # The day sweep walks the partition: read now, once.
    assert sorted(tables.subscriber_view(1)) == ["s1", "s2"]
    assert index.read == 2 and index.size(1) == 2 and index.size(0) is None
    assert sorted(tables.subscriber_view(1)) == ["s1", "s2"] and index.read == 2
    assert index.count() == 2 + 1  # partition 0 still by its estimate


def test_keys_added_and_deleted_in_a_batch_before_the_read(tables: Any) -> None:
    """The batch's changes are in its cache, not in the store, when the sweep reads the
    partition; and the store has them after the flush, when another partition is read."""
    index = tables.subscriber_index
    tables.read_local_later({0, 1})
    view0, view1 = tables.subscriber_view(0), tables.subscriber_view(1)
    view1["new"] = {"n": 1}
    del view1["s1"]
    view1["back"] = {"n": 1}
    del view1["back"]  # added and deleted in the same batch
    del view0["s0"]
    view0["s0"] = {"n": 2}  # deleted and added again
    assert sorted(view1) == ["new", "s2"]  # read with the batch's changes applied
    tables.stage()  # the batch is in the store; partition 0 is still unread
    assert index.size(0) is None
    assert sorted(view0) == ["s0"] and sorted(view1) == ["new", "s2"]
    # The same as an index kept in memory from the start (the memory store's way).
    assert {p: sorted(index.keys[p]) for p in (0, 1)} == {0: ["s0"], 1: ["new", "s2"]}


def test_batches_written_before_the_read_count_once(tables: Any) -> None:
    index = tables.subscriber_index
    tables.read_local_later({1})
    view = tables.subscriber_view(1)
    for n in range(3):  # three batches, each changing the same keys
        view["s3"] = {"n": n}
        if n == 1:
            del view["s2"]
        tables.stage()
    assert sorted(view) == ["s1", "s3"] and index.size(1) == 2


def test_the_write_ahead_copy_is_applied_before_the_store_becomes_the_index(
        tables: Any) -> None:
    """Recovery ends with the last complete write-ahead copy of each partition put over the
    tables, then the store becomes the index: the copy's keys are there, its deletions not."""
    wal = WalReader()
    for _, value in wal_chunks("b1", 1, [(b"s", "s2", None), (b"s", "s9", b'{"n":9}')]):
        wal.feed(1, value)
    tables.wal = wal
    tables.wal.overlay(tables)
    tables.read_local_later({0, 1})
    assert sorted(tables.subscriber_view(1)) == ["s1", "s9"]


def test_a_rebalance_drops_a_partition_and_gives_it_back_as_the_store_holds_it(
        tables: Any) -> None:
    """A partition revoked (read or not) is forgotten: assigned again after another worker
    changed it, it is read afresh from the store, not from what this worker knew."""
    index = tables.subscriber_index
    store = tables.subscribers.data
    tables.read_local_later({0, 1})
    view1 = tables.subscriber_view(1)
    assert sorted(view1) == ["s1", "s2"]  # read
    view1["mine"] = {"n": 1}  # a batch of this worker, then a rebalance takes partition 1
    tables.stage()
    tables.read_local_later({0})
    assert index.size(1) == 0 and 1 not in index.unread and list(view1) == []
    # Partition 0 unread across the rebalance, with a change pending: still exact.
    tables.subscriber_view(0)["s7"] = {"n": 1}
    tables.read_local_later({0})
    assert sorted(tables.subscriber_view(0)) == ["s0"]  # the change was never flushed
    # Another worker deletes s1 and adds s4 in partition 1; it comes back here.
    store.write([(1, b"s1", None), (1, b"s4", b"{}")])
    tables.read_local_later({0, 1})
    assert sorted(view1) == ["mine", "s2", "s4"]


def test_the_memory_store_keeps_its_index_in_memory() -> None:
    class Memory:
        def __init__(self) -> None:
            self.data: dict[str, Any] = {}

        def send_changelog(self, *args: Any, **kwargs: Any) -> None:
            pass

    tables = StateTables(Memory(), Memory())
    view = tables.subscriber_view(1)
    view["s1"] = {"n": 1}
    tables.flush()
    tables.read_local_later({0, 1})  # no local store: nothing to read later
    index = tables.subscriber_index
    assert index.unread == {} and index.size(1) == 1 and index.size(0) == 0
    assert list(view) == ["s1"] and index.count() == 1 and index.read == 0


def test_an_index_on_its_own_stays_in_memory() -> None:
    """The group and calibration stages' caches have an index never given a store."""
    index = PartitionIndex()
    cache = BatchCache(type("T", (), {"data": {}})(), index)
    cache.set(2, "k", 1)
    assert index.partition_keys(2) == {"k"} and index.size(2) == 1 and index.count() == 1
