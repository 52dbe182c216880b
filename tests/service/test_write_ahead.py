"""A batch's writers: the write-ahead copy, then the per-key records a slice at a time."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from stream.service.write_ahead import Staged


class _Table:
    def __init__(self, name: str, log: list[Any]) -> None:
        self.name, self.log = name, log

    def send_changelog(self, partition: int, key: str, value: Any, **_: Any) -> None:
        self.log.append((self.name, partition, key))


def test_records_go_a_slice_per_writer_after_the_copy_and_the_settling() -> None:
    log: list[Any] = []
    tables = SimpleNamespace(subscribers=_Table("s", log), population=_Table("p", log),
                             settle=lambda parts: log.append(("settle", sorted(parts))))
    staged = Staged(tables, wal=[(0, "0/__wal__/0", b"{}")],
                    subscribers=[(i % 2, f"s{i}", b"1") for i in range(5)],
                    population=[(1, "1/__applied__", b"{}")])
    writers = [staged.send_wal, *staged.record_writers(per_write=2)]
    assert len(writers) == 1 + 3 + 1  # the copy; 5 subscribers by 2; 1 population record
    calls = []
    for write in writers:
        before = len(log)
        write()
        calls.append(log[before:])
    assert calls == [
        [("p", 0, "0/__wal__/0")],
        [("settle", [0, 1]), ("s", 0, "s0"), ("s", 1, "s1")],
        [("s", 0, "s2"), ("s", 1, "s3")],
        [("s", 0, "s4")],
        [("p", 1, "1/__applied__")],
    ]
    # All at once, as the synchronous path sends them: the same records in the same order.
    again: list[Any] = []
    tables.subscribers.log = tables.population.log = again
    tables.settle = lambda parts: again.append(("settle", sorted(parts)))
    staged.send_wal()
    staged.send_records()
    assert again == [entry for call in calls for entry in call]
    assert len(staged.writers()) == 1 + 1 + 1  # default slices: one each table
