"""A worker restarted on its RocksDB data directory reads only the changelog's tail.

Faust keeps, in each partition's database, the changelog offset the database holds; a
restarted worker's recovery starts there. Worker A processes a first wave and stops; worker
B, with an empty data directory, restores everything from the changelog, processes a
second wave (the tail) and stops; A starts again on its own directory and must read exactly
the records B added, and end with every key's latest changelog value.

Both read the changelog in bulk before Faust's recovery
(:mod:`stream.service.faust_internals.bulk_restore`): Faust's own loop, one record at a
time, is left nothing.
"""

from __future__ import annotations

import time

import pytest

from stream.service.write_ahead import is_wal_key
from tests.integration.helpers import (
    WorkerProc,
    all_committed,
    call_event,
    end_offsets,
    events_records,
    latest_by_key,
    produce,
    read_topic,
    unique_settings,
    wait_for,
)

pytestmark = pytest.mark.integration

SUBSCRIBERS = 3000
TOUCHED = 60  # subscribers with events in the second wave


def _changelog_records(bootstrap: str, topics: list[str]) -> int:
    return sum(end_offsets(bootstrap, topics).values())


@pytest.mark.timeout(180)
def test_restart_on_local_state_reads_only_the_changelog_tail(broker, tmp_path):
    settings, environ = unique_settings(broker.bootstrap, CHURNWATCH_STORE="rocksdb://")
    changelogs = [f"{settings.app_id}-subscribers-changelog",
                  f"{settings.app_id}-population-changelog"]
    first = [call_event(i, f"s{i % SUBSCRIBERS:05d}") for i in range(SUBSCRIBERS * 2)]
    second = [call_event(len(first) + i, f"s{i % TOUCHED:05d}", day=3) for i in range(TOUCHED)]
    a = WorkerProc(environ, tmp_path, name="a")
    b = WorkerProc(environ, tmp_path, name="b")
    try:
        a.start()
        produce(broker.bootstrap, events_records(settings.topic_calls, first))
        wait_for(lambda: (a.dump() or {}).get("events") == len(first), 90,
                 lambda: f"worker a to process the first wave\n{a.tail()}")
        wait_for(lambda: all_committed(broker.bootstrap, settings.app_id,
                                       settings.input_topics), 20, "the first wave committed")
        assert a.terminate() == 0, a.tail()
        before_b = _changelog_records(broker.bootstrap, changelogs)

        b.start()
        wait_for(lambda: (d := b.dump()) and d["recovered"] and d["assigned"], 60,
                 lambda: f"worker b to recover\n{b.tail()}")
        produce(broker.bootstrap, events_records(settings.topic_calls, second))
        wait_for(lambda: (b.dump() or {}).get("events") == len(second), 60,
                 lambda: f"worker b to process the second wave\n{b.tail()}")
        wait_for(lambda: all_committed(broker.bootstrap, settings.app_id,
                                       settings.input_topics), 20, "the second wave committed")
        restored_b, bulk_b = b.dump()["restored"], b.dump()["bulk_restored"]
        assert b.terminate() == 0, b.tail()
        after_b = _changelog_records(broker.bootstrap, changelogs)

        started = time.monotonic()
        a.start()
        dump = wait_for(lambda: (d := a.dump()) and d["recovered"]
                        and set(d["assigned"]) == set(range(settings.partitions)) and d, 60,
                        lambda: f"worker a to recover again\n{a.tail()}")
        recovered_s = time.monotonic() - started
        expected = latest_by_key(read_topic(broker.bootstrap, changelogs[0]))
        expected_pop = {k: v for k, v in latest_by_key(
            read_topic(broker.bootstrap, changelogs[1])).items() if not is_wal_key(k)}
        assert a.terminate() == 0, a.tail()
    finally:
        a.terminate(5)
        b.terminate(5)
    tail = after_b - before_b
    print(f"changelog records: {after_b}; b (empty directory) restored {bulk_b} in bulk, "
          f"{restored_b} through Faust; a (local state) restored {dump['bulk_restored']} in "
          f"bulk, {dump['restored']} through Faust (the tail: {tail}); "
          f"a recovered in {recovered_s:.1f} s")
    # B had nothing local: it read the whole changelog as it stood, all of it in bulk.
    assert bulk_b == before_b > SUBSCRIBERS and restored_b == 0
    # A read exactly what B added, nothing it already held ...
    assert 0 < dump["bulk_restored"] == tail < SUBSCRIBERS // 10 and dump["restored"] == 0
    # ... and holds every key's latest value: its old keys, B's changes over them.
    assert dump["events"] == 0
    assert dump["subscribers"] == expected and len(expected) == SUBSCRIBERS
    # The day sweeps see every subscriber, not only those in the tail; the subscriber ids
    # are read from the databases at each partition's first sweep, not on the way to the
    # first event (tests/service/test_tables_index.py).
    assert dump["indexed"] == SUBSCRIBERS
    assert dump["unread"] == list(range(settings.partitions))
    assert dump["population"] == expected_pop
    assert {k: v["n"] for k, v in expected.items() if v["n"] == 3} == {
        f"s{i:05d}": 3 for i in range(TOUCHED)}
