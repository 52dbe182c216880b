"""The tables' Faust class: raw keys and orjson values in the changelog, write-ahead chunks
kept out of the table, and the partition-aware RocksDB store.

Decision records: ``docs/decisions/0006-write-ahead-copy-of-each-batch.md`` and
``docs/decisions/0012-a-rocksdb-store-partitioned-by-the-caller.md``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from stream.service.write_ahead import WalReader, is_wal_key


@cache
def _plain_table_class() -> type:
    import faust

    class PlainTable(faust.Table):  # type: ignore[type-arg]
        """A table whose changelog has raw string keys and orjson values.

        Faust derives changelog codecs from ``key_type``/``value_type`` (JSON-quoted keys
        for ``str``), and builds the changelog topic inside its constructor, so the
        choice has to be made here rather than set afterwards. With ``wal`` set, write-ahead
        chunks read from the changelog go to it instead of into the table.
        """

        wal: WalReader | None = None

        def _serializer_from_type(self, typ: Any) -> Any:
            return "raw" if typ in (str, bytes) else "orjson"

        def _new_store_by_url(self, url: Any) -> Any:
            # Faust's RocksDB store picks partitions from the current stream event, which
            # a batch agent does not have (stream.service.faust_internals.rocksdb_store).
            from stream.service.faust_internals.rocksdb_store import is_rocksdb

            if not is_rocksdb(url):
                return super()._new_store_by_url(url)
            from stream.service.faust_internals.rocksdb_store import (
                ROCKSDB_OPTIONS,
                PartitionedRocksStore,
            )

            return PartitionedRocksStore(
                url, self.app, self, table_name=self.name, key_type=self.key_type,
                key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                value_type=self.value_type, loop=self.loop,
                options={**ROCKSDB_OPTIONS, **(self.options or {})})

        def apply_changelog_batch(self, batch: Any) -> None:
            wal = self.wal
            if wal is not None:
                rest = []
                for event in batch:
                    message = event.message
                    if is_wal_key(message.key):
                        wal.feed(message.partition, message.value)
                    else:
                        rest.append(event)
                batch = rest
            super().apply_changelog_batch(batch)

    return PlainTable


def plain_table(app: Any, name: str, **kwargs: Any) -> Any:
    """``app.Table(name, **kwargs)`` with the :class:`PlainTable` class (raw string keys,
    orjson values in the changelog)."""
    table = _plain_table_class()(app, name=name, beacon=app.tables.beacon, **kwargs)
    return app.tables.add(table)
