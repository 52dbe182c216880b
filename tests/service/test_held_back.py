"""Input topic-partitions running ahead in event time are held back from the fetches, so
the reorder stays bounded without releasing anything early (``stream.service.ordering``)."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace as NS

from faust.types import TP

from stream.service.faust_internals.transport import FetchHighwaterConsumer
from stream.service.ordering import Reorder

CALLS, BILLING, SUBS = "telecom.calls", "telecom.billing", "telecom.subscribers"
KINDS = {CALLS: "calls", BILLING: "billing", SUBS: "subscribers"}


def test_held_events_are_counted_per_topic_partition_through_every_way_out():
    r = Reorder(max_held=3)
    for i in range(3):
        r.push(CALLS, 0, i, 10.0 + i, "calls", f"c{i}")
    r.push(BILLING, 0, 0, 50.0, "billing", "b")
    r.push(CALLS, 1, 0, 5.0, "calls", "other")
    assert r.held_by == {(CALLS, 0): 3, (BILLING, 0): 1, (CALLS, 1): 1}
    # Nothing proves the order yet, so the limit forces out the two oldest.
    assert r.release(KINDS, lambda t, p: None) == ["other", "c0"]
    assert r.forced == 2 and r.peak == 5
    assert r.held_by == {(CALLS, 0): 2, (BILLING, 0): 1, (CALLS, 1): 0}
    assert r.lag_s() == 50.0 - 11.0  # partition 0: billing read to 50, calls held from 11
    assert r.release(KINDS, lambda t, p: 100.0 if t == SUBS else None) == ["c1", "c2"]
    assert r.held_by[(CALLS, 0)] == 0 and r.lag_s() == 0.0  # 'b' waits for calls
    r.drop_partitions([0])
    assert (BILLING, 0) not in r.held_by and len(r) == 0


def test_running_ahead_names_the_partitions_over_their_share_until_half_of_it():
    r = Reorder()
    for i in range(10):
        r.push(BILLING, 0, i, 100.0 + i, "billing", i)
    r.push(CALLS, 0, 0, 1.0, "calls", "c")
    assert r.running_ahead(10) == {(BILLING, 0)}
    assert r.running_ahead(11) == set()
    r.release(KINDS, lambda t, p: 1000.0 if t == SUBS else None)  # calls at 1: only "c"
    assert r.running_ahead(10) == {(BILLING, 0)}
    r.push(CALLS, 0, 1, 104.5, "calls", "c2")
    r.release(KINDS, lambda t, p: 1000.0 if t == SUBS else None)  # billing up to 104
    assert r.held_by[(BILLING, 0)] == 5
    assert r.running_ahead(10, paused=[(BILLING, 0)]) == set()  # 5 is half: resumed
    assert r.running_ahead(9, paused=[(BILLING, 0)]) == {(BILLING, 0)}  # 5 > 4: still held


def _catch_up(hold_back: bool, max_held: int = 200, per_fetch: int = 50) -> tuple[Reorder, list]:
    """A backlog of 125 days read as a fetcher reads it: every topic-partition not held
    back gives ``per_fetch`` records a round; a call every half hour, a billing event every
    three hours (so billing runs ahead in event time). Returns the reorder and what it
    released."""
    logs = {CALLS: [1800.0 * i for i in range(6000)],
            BILLING: [10800.0 * i for i in range(1000)]}
    at = dict.fromkeys(logs, 0)
    r = Reorder(max_held=max_held)
    r.push(SUBS, 0, 0, 0.0, "subscribers", (0.0, 0))
    held_back: set = set()
    out: list = []
    for _ in itertools.count():
        fetched = False
        for topic, times in logs.items():
            if (topic, 0) in held_back or at[topic] >= len(times):
                continue
            for offset in range(at[topic], min(at[topic] + per_fetch, len(times))):
                kind = KINDS[topic]
                r.push(topic, 0, offset, times[offset], kind, (times[offset], kind == "billing"))
                fetched = True
            at[topic] = min(at[topic] + per_fetch, len(times))

        def caught_up(topic: str, partition: int) -> float | None:
            done = topic == SUBS or at[topic] >= len(logs[topic])
            return float("inf") if done else None

        out += r.release(KINDS, caught_up)
        if hold_back:
            held_back = r.running_ahead(max_held // (2 * 3), held_back)
        if not fetched and not len(r):
            return r, out


def test_holding_back_the_topic_ahead_keeps_the_hold_bounded_and_the_order_exact():
    r, out = _catch_up(hold_back=True)
    assert len(out) == 1 + 6000 + 1000
    assert out == sorted(out)  # event time, calls before billing at the same time
    assert r.forced == 0 and r.peak <= r.max_held


def test_without_holding_back_the_hold_overflows_and_releases_out_of_order():
    # The same backlog read at the fetcher's pace: the check above can fail.
    r, out = _catch_up(hold_back=False)
    assert r.forced > 0 and out != sorted(out)


def test_the_consumer_leaves_held_back_partitions_out_of_its_fetches():
    asked: list = []

    async def getmany(active, timeout):
        asked.append(set(active))
        return {}

    async def sleep(seconds):
        asked.append(seconds)

    consumer = FetchHighwaterConsumer.__new__(FetchHighwaterConsumer)
    consumer._thread = NS(getmany=getmany)
    consumer.sleep = sleep
    calls, billing = TP(CALLS, 0), TP(BILLING, 0)
    consumer.hold_back([(CALLS, 0)])
    asyncio.run(consumer._getmany({calls, billing}, 1.0))
    assert asked == [{billing}]
    # Everything held back: aiokafka would read an empty set as "all", so it waits.
    consumer.hold_back([(CALLS, 0), (BILLING, 0)])
    asyncio.run(consumer._getmany({calls, billing}, 1.0))
    assert asked[-1] == 0.05
    consumer.hold_back(())
    asyncio.run(consumer._getmany({calls, billing}, 1.0))
    assert asked[-1] == {calls, billing}
