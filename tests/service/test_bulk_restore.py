"""The bulk restore writes what Faust's own recovery writes, without a broker.

The same changelog records (puts, overwrites, tombstones, write-ahead chunks of a complete
and of an incomplete batch) go once through Faust's path (``PlainTable.apply_changelog_batch``
-> ``faust.stores.rocksdb.Store.apply_changelog_batch``) and once through
:func:`stream.service.faust_internals.bulk_restore.apply_records`; the databases (keys,
values and the persisted offset) and the write-ahead readers must be the same.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stream.service.faust_internals.plain_table import plain_table
from stream.service.write_ahead import WalReader, wal_chunks

pytest.importorskip("rocksdict")


def _table(datadir: Path) -> Any:
    import faust

    from stream.service import codecs

    codecs.register()
    app = faust.App(f"bulk-{datadir.name}", store="rocksdb://", datadir=str(datadir),
                    autodiscover=False)
    table = plain_table(app, "population", partitions=2, key_type=str)
    table.wal = WalReader()
    return table


def _records(partition: int) -> list[tuple[bytes, bytes | None]]:
    """A changelog: keys written, overwritten and deleted; a complete write-ahead copy of
    two chunks among them; the first chunk of a copy that never completed at the end."""
    entries = [(b"p", f"{partition}/k{i}", b'{"n":%d}' % i) for i in range(6)]
    complete = wal_chunks("b1", partition, entries, limit=40)
    assert len(complete) >= 2
    torn = wal_chunks("b2", partition, [*entries, (b"s", "s9", None)], limit=40)[:1]
    out: list[tuple[bytes, bytes | None]] = [
        (f"{partition}/a".encode(), b'{"v":1}'),
        (f"{partition}/b".encode(), b'{"v":2}'),
    ]
    out += [(k.encode(), v) for k, v in complete]
    out += [(f"{partition}/a".encode(), b'{"v":3}'), (f"{partition}/b".encode(), None),
            (f"{partition}/c".encode(), b'{"v":4}')]
    out += [(k.encode(), v) for k, v in torn]
    return out


def _contents(table: Any, partition: int) -> dict[bytes, bytes]:
    return dict(table.data._db_for_partition(partition).items())


def _close(table: Any) -> None:
    for db in table.data._dbs.values():
        db.close()
    table.data._dbs.clear()


def test_bulk_records_give_the_same_databases_and_copies_as_fausts_recovery(
        tmp_path: Path) -> None:
    from faust.types import TP

    from stream.service.faust_internals.bulk_restore import apply_records

    faust_side, bulk_side = _table(tmp_path / "faust"), _table(tmp_path / "bulk")
    topic = faust_side.changelog_topic.get_topic_name()
    for partition in (0, 1):
        records = _records(partition)
        # Faust's recovery: events in buffers of some size (here 3), applied in order.
        events = [SimpleNamespace(message=SimpleNamespace(
            tp=TP(topic, partition), partition=partition, offset=10 + i, key=k, value=v))
            for i, (k, v) in enumerate(records)]
        for start in range(0, len(events), 3):
            faust_side.apply_changelog_batch(events[start:start + 3])
        # The bulk read: fetches of another size (here 4), then a record past the end.
        fetched = [SimpleNamespace(offset=10 + i, key=k, value=v)
                   for i, (k, v) in enumerate(records)]
        fetched.append(SimpleNamespace(offset=10 + len(records), key=b"late", value=b"1"))
        end = 10 + len(records)
        taken = 0
        for start in range(0, len(fetched), 4):
            n, _ = apply_records(bulk_side.data, partition, fetched[start:start + 4], end,
                                 bulk_side.wal)
            taken += n
        assert taken == len(records)
        got, want = _contents(bulk_side, partition), _contents(faust_side, partition)
        assert got == want
        # What the fixture is for: a deletion, an overwrite, no chunk in the database, and
        # the offset of the last record written (the chunks at the end not counted).
        assert f"{partition}/b".encode() not in got
        assert got[f"{partition}/a".encode()] == b'{"v":3}'
        assert not any(b"__wal__" in k for k in got)
        assert got[faust_side.data.offset_key] == str(10 + len(records) - 2).encode()
        tp = TP(topic, partition)
        assert bulk_side.data.persisted_offset(tp) == faust_side.data.persisted_offset(tp)
    assert list(bulk_side.wal.copies()) == list(faust_side.wal.copies())
    assert {p for p, _, _ in bulk_side.wal.copies()} == {0, 1}
    assert bulk_side.wal.pending.keys() == faust_side.wal.pending.keys() == {0, 1}
    assert all(bulk_side.wal.pending[p]["chunks"] == faust_side.wal.pending[p]["chunks"]
               for p in (0, 1))
    _close(faust_side)
    _close(bulk_side)


def test_a_fetch_of_only_write_ahead_chunks_leaves_the_database_alone(tmp_path: Path) -> None:
    from stream.service.faust_internals.bulk_restore import apply_records

    table = _table(tmp_path)
    chunks = wal_chunks("b1", 0, [(b"s", "s1", b'{"n":1}')])
    fetched = [SimpleNamespace(offset=5, key=k.encode(), value=v) for k, v in chunks]
    assert apply_records(table.data, 0, fetched, 100, table.wal) == (1, 5)
    assert _contents(table, 0) == {}  # no record and no offset: Faust reads the chunk again
    assert [(p, subs) for p, subs, _ in table.wal.copies()] == [(0, {"s1": {"n": 1}})]
    _close(table)
