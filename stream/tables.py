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
    <stream.agents.BatchProcessor.flush>`): after a crash, messages delivered again below
    it are skipped, so state and alerts change exactly once per message.

The engine never touches a table directly: it gets a :class:`PartitionView` per input
partition, over a :class:`BatchCache` per table. During a batch, reads come from the cache
(falling back to the table) and writes stay in the cache; :meth:`BatchCache.flush` then
writes each touched key to the table and its changelog **once per batch**, with the right
partition. A :class:`PartitionIndex` remembers which keys belong to which partition
(filled from live writes and from changelog recovery), so a view can be iterated (the
engine's day sweep walks all subscribers of its partition).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, MutableMapping
from functools import cache
from typing import Any

SUBSCRIBERS_TABLE = "subscribers"
POPULATION_TABLE = "population"
#: Population-table key (after the partition prefix) of the applied-offset marks.
APPLIED_KEY = "__applied__"
_DELETED = object()


class PartitionIndex:
    """Which keys of one table belong to which partition (in this worker's memory)."""

    def __init__(self) -> None:
        self.keys: dict[int, set[str]] = defaultdict(set)

    def add(self, partition: int, key: str) -> None:
        self.keys[partition].add(key)

    def discard(self, partition: int, key: str) -> None:
        self.keys[partition].discard(key)

    def drop_partitions(self, partitions: set[int]) -> list[str]:
        """Forget ``partitions``; return their keys."""
        dropped: list[str] = []
        for p in partitions:
            dropped.extend(self.keys.pop(p, ()))
        return dropped

    def __len__(self) -> int:
        return sum(len(v) for v in self.keys.values())

    async def on_changelog_event(self, event: Any) -> None:
        """Faust ``on_changelog_event`` callback: index keys as recovery reads them."""
        message = event.message
        key = message.key
        if isinstance(key, bytes):
            key = key.decode("utf-8")
        if key is None:
            return
        if message.value is None:
            self.discard(message.partition, key)
        else:
            self.add(message.partition, key)


class BatchCache:
    """A write-back cache over a table's store for the duration of one batch."""

    def __init__(self, table: Any, index: PartitionIndex) -> None:
        self.table = table
        self.data = table.data  # the store (a dict for memory://)
        self.index = index
        self.cache: dict[str, Any] = {}
        self.dirty: dict[str, int] = {}  # key -> changelog partition

    def get(self, key: str) -> Any:
        try:
            value = self.cache[key]
        except KeyError:
            value = self.cache[key] = self.data[key]  # KeyError if absent
            return value
        if value is _DELETED:
            raise KeyError(key)
        return value

    def contains(self, key: str) -> bool:
        if key in self.cache:
            return self.cache[key] is not _DELETED
        return key in self.data

    def set(self, partition: int, key: str, value: Any) -> None:
        self.cache[key] = value
        self.dirty[key] = partition
        self.index.add(partition, key)

    def delete(self, partition: int, key: str) -> None:
        if not self.contains(key):
            raise KeyError(key)
        self.cache[key] = _DELETED
        self.dirty[key] = partition
        self.index.discard(partition, key)

    def flush(self) -> int:
        """Write every touched key to the table and its changelog once; return how many."""
        send = self.table.send_changelog
        data = self.data
        for key, partition in self.dirty.items():
            value = self.cache[key]
            if value is _DELETED:
                send(partition, key, None, value_serializer="raw")
                data.pop(key, None)
            else:
                send(partition, key, value)
                data[key] = value
        written = len(self.dirty)
        self.dirty.clear()
        self.cache.clear()
        return written

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
        for key in list(self._cache.index.keys.get(self.partition, ())):
            yield key[n:]

    def __len__(self) -> int:
        return len(self._cache.index.keys.get(self.partition, ()))


@cache
def _plain_table_class() -> type:
    import faust

    class PlainTable(faust.Table):  # type: ignore[misc]
        """A table whose changelog has raw string keys and orjson values.

        Faust derives changelog codecs from ``key_type``/``value_type`` (JSON-quoted keys
        for ``str``), and builds the changelog topic inside its constructor, so the
        choice has to be made here rather than set afterwards.
        """

        def _serializer_from_type(self, typ: Any) -> Any:
            return "raw" if typ in (str, bytes) else "orjson"

    return PlainTable


def _table(app: Any, name: str, **kwargs: Any) -> Any:
    """``app.Table(name, **kwargs)`` with the :class:`PlainTable` class."""
    table = _plain_table_class()(app, name=name, beacon=app.tables.beacon, **kwargs)
    return app.tables.add(table)


class StateTables:
    """The two tables with their indexes and caches, built on an app."""

    def __init__(self, app: Any, partitions: int) -> None:
        self.subscriber_index = PartitionIndex()
        self.population_index = PartitionIndex()
        self.subscribers = _table(
            app,
            SUBSCRIBERS_TABLE,
            partitions=partitions,
            key_type=str,
            on_changelog_event=self.subscriber_index.on_changelog_event,
            help="Detector state per subscriber (the engine's versioned dicts).",
        )
        self.population = _table(
            app,
            POPULATION_TABLE,
            partitions=partitions,
            key_type=str,
            on_changelog_event=self.population_index.on_changelog_event,
            help="Population baselines, one set per input partition.",
        )
        self.subscriber_cache = BatchCache(self.subscribers, self.subscriber_index)
        self.population_cache = BatchCache(self.population, self.population_index)

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

    def flush(self) -> int:
        return self.subscriber_cache.flush() + self.population_cache.flush()

    def discard(self) -> None:
        self.subscriber_cache.discard()
        self.population_cache.discard()

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop the in-memory index of partitions this worker no longer holds."""
        self.subscriber_index.drop_partitions(partitions)
        self.population_index.drop_partitions(partitions)
