"""Table state survives ``kill -9`` completely: every key comes back with its latest state.

The embedded broker's ListOffsets(latest) stops short of the log end (it answers the base
offset of the last batch + 1); :mod:`stream.service.faust_internals.transport` asks for the high
watermark with a
Fetch instead. These tests prove the bug is real here, that the fix sees the true end,
and that a restarted worker holds exactly the latest changelog value of every key.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from stream.service.tables import APPLIED_KEY
from stream.service.write_ahead import is_wal_key
from tests.integration.helpers import (
    SESSION_TIMEOUT_S,
    STORES,
    WorkerProc,
    all_committed,
    call_event,
    committed_offsets,
    events_records,
    latest_by_key,
    produce,
    read_topic,
    unique_settings,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.mark.timeout(30)
def test_fetch_highwater_sees_the_whole_last_batch(broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from stream.service.faust_internals.transport import fetch_highwaters

    topic = "recovery-probe"
    broker.create_topics([topic], partitions=1)

    async def go() -> tuple[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
        await producer.start()
        futures = [await producer.send(topic, b"x%d" % i, partition=0) for i in range(20)]
        await asyncio.gather(*futures)  # one batch of 20
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            listed = (await consumer.end_offsets([tp]))[tp]
            fetched = (await fetch_highwaters(consumer, [tp]))[tp]
        finally:
            await consumer.stop()
        return listed, fetched

    listed, fetched = asyncio.run(go())
    assert fetched == 20
    assert listed <= fetched  # Tansu 0.6 answers 1 here: the base offset of the batch + 1


@pytest.mark.timeout(30)
def test_records_fetched_before_a_seek_lie_at_or_above_the_fetch_position(broker):
    """What the worker's consumer relies on to drop records fetched before a rebalance's
    seek (stream.service.faust_internals.transport.FetchHighwaterConsumer): those records are at
    or above
    aiokafka's fetch position after the seek, and records returned since are below it."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from stream.service.faust_internals.transport import fetch_position

    topic = "seek-probe"
    broker.create_topics([topic], partitions=1)

    async def go() -> tuple[list[int], int | None, int | None, list[int], int | None]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        for i in range(30):
            await producer.send_and_wait(topic, b"x%d" % i, partition=0)
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            before = fetch_position(consumer, tp)  # not assigned yet
            consumer.assign([tp])
            consumer.seek(tp, 10)
            in_hand = []
            while len(in_hand) < 20:  # a fetch's records, not yet handled...
                batch = await consumer.getmany(tp, timeout_ms=2000, max_records=20)
                in_hand += [r.offset for r in batch.get(tp, [])]
            read_to = fetch_position(consumer, tp)
            consumer.seek(tp, 12)  # ...when a rebalance seeks back to a committed offset
            after_seek = fetch_position(consumer, tp)
            again = await consumer.getmany(tp, timeout_ms=2000, max_records=5)
            return in_hand, before, read_to, [r.offset for r in again[tp]], after_seek
        finally:
            await consumer.stop()

    in_hand, before, read_to, again, after_seek = asyncio.run(go())
    assert before is None
    assert in_hand == list(range(10, 30)) and read_to == 30  # all returned: below it
    assert after_seek == 12
    # Stale after the seek: 12 and up, which the fetcher delivers again from 12.
    assert [o for o in in_hand if o >= after_seek] == list(range(12, 30))
    assert again == list(range(12, 17))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("store", STORES)
def test_kill9_then_restart_recovers_every_key_with_its_latest_state(broker, tmp_path, store):
    """The second worker has an empty data directory: everything from the changelog."""
    settings, environ = unique_settings(broker.bootstrap, CHURNWATCH_STORE=store)
    subscribers, per_subscriber = 300, 10
    events = [
        call_event(i, f"s{i % subscribers:04d}", day=1 + i // subscribers)
        for i in range(subscribers * per_subscriber)
    ]
    profiles = [
        {"subscriber_id": f"s{i:04d}", "msisdn": f"1380000{i:04d}", "account_id": f"a{i}",
         "group_id": None, "segment": "sme", "tier": None, "account_manager": None}
        for i in range(0, subscribers, 6)
    ]
    first = WorkerProc(environ, tmp_path, name="first").start()
    second = WorkerProc(environ, tmp_path, name="second")
    try:
        produce(broker.bootstrap, events_records(settings.topic_subscribers, profiles))
        produce(broker.bootstrap, events_records(settings.topic_calls, events))
        total = len(events) + len(profiles)
        wait_for(lambda: (first.dump() or {}).get("events") == total, 60,
                 lambda: f"the first worker to process {total} events\n{first.tail()}")
        wait_for(lambda: all_committed(broker.bootstrap, settings.app_id,
                                       settings.input_topics), 20, "offsets committed")
        first.kill9()
        # Let the broker expel the dead member, so that the second worker recovers in a
        # single rebalance: a later rebalance would flush Faust's recovery buffers and
        # hide a recovery that stopped short.
        time.sleep(SESSION_TIMEOUT_S + 1)

        changelog = f"{settings.app_id}-subscribers-changelog"
        expected = latest_by_key(read_topic(broker.bootstrap, changelog))
        # Write-ahead copies share the population changelog but never enter the table.
        expected_pop = {k: v for k, v in latest_by_key(
            read_topic(broker.bootstrap, f"{settings.app_id}-population-changelog")).items()
            if not is_wal_key(k)}
        assert len(expected) == subscribers
        assert all(state["n"] == per_subscriber for state in expected.values())
        assert sum(p["n"] for k, p in expected_pop.items()
                   if not k.endswith(APPLIED_KEY)) == len(events)
        assert _list_offsets_stop_short(broker.bootstrap, changelog), (
            "the changelog's last batches hold one record each: this test would not "
            "exercise the broker's end-offset bug"
        )

        second.start()
        dump = wait_for(
            lambda: (d := second.dump()) and d["recovered"]
            and set(d["assigned"]) == set(range(settings.partitions))
            and len(d["subscribers"]) >= subscribers and d,
            60, lambda: f"the second worker to recover: {second.dump()}\n{second.tail()}",
        )
        # Recovered from the changelog, not rebuilt: it consumed no input at all.
        assert dump["events"] == 0
        assert dump["subscribers"] == expected
        assert dump["population"] == expected_pop
        assert second.terminate() == 0
    finally:
        first.terminate(5)
        second.terminate(5)


def _list_offsets_stop_short(bootstrap: str, topic: str) -> bool:
    """True when ListOffsets(latest) is below the fetch high watermark on some partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.service.faust_internals.transport import fetch_highwaters

    async def go() -> bool:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            listed = await consumer.end_offsets(tps)
            fetched = await fetch_highwaters(consumer, tps)
            return any(listed[tp] < fetched[tp] for tp in tps)
        finally:
            await consumer.stop()

    return asyncio.run(go())


@pytest.mark.timeout(120)
def test_restart_with_applied_but_uncommitted_input_keeps_processing(broker, tmp_path):
    """The idle-after-ready bug: state (with its applied marks) on the changelog, offsets
    not committed, ``kill -9``. The restarted worker gets the old messages again and skips
    them (below the marks); new events must still flow. Before the fix the skipped
    topic-partitions never counted as read, so the new calls waited for billing that never
    came (``churnwatch_events_held`` stuck, nothing processed)."""
    settings, environ = unique_settings(
        broker.bootstrap, CHURNWATCH_COMMIT_INTERVAL_S="3600")  # never commits by itself
    subscribers = 12
    sids = [f"s{i:04d}" for i in range(subscribers)]
    profiles = [{"subscriber_id": s, "msisdn": f"1380000{i:04d}", "account_id": None,
                 "segment": "sme"} for i, s in enumerate(sids)]
    charges = [{"event_id": f"b{i}", "ts": "2026-03-01T23:00:00+08:00", "subscriber_id": s,
                "kind": "charge", "amount": 1.0} for i, s in enumerate(sids)]
    old_calls = [call_event(i, sids[i % subscribers], day=2) for i in range(48)]
    first = WorkerProc(environ, tmp_path, name="first").start()
    second = WorkerProc(environ, tmp_path, name="second")
    try:
        produce(broker.bootstrap, events_records(settings.topic_subscribers, profiles))
        produce(broker.bootstrap, events_records(settings.topic_billing, charges))
        produce(broker.bootstrap, events_records(settings.topic_calls, old_calls))
        total = len(profiles) + len(charges) + len(old_calls)
        wait_for(lambda: (d := first.dump()) and d["accepted"] == total
                 and sum(v["n"] for v in d["subscribers"].values()) == 60, 60,
                 lambda: f"the first worker to apply {total} events\n{first.tail()}")
        time.sleep(1.0)  # its last batch's state on the broker (flushed before the acks)
        first.kill9()
        committed = committed_offsets(broker.bootstrap, settings.app_id,
                                      settings.input_topics)
        assert all(v <= 0 for v in committed.values()), committed  # the scenario holds
        second.start()
        wait_for(lambda: (d := second.dump()) and d["recovered"]
                 and d["events"] >= total, 60,
                 lambda: f"the old input delivered again\n{second.tail()}")
        new_calls = [call_event(1000 + i, sids[i % subscribers], day=3) for i in range(24)]
        produce(broker.bootstrap, events_records(settings.topic_calls, new_calls))
        dump = wait_for(
            lambda: (d := second.dump()) and d["accepted"] == len(new_calls) and d, 30,
            lambda: f"the new calls to be processed: {second.dump() and second.dump()['accepted']}"
            f" (events held: {_held(second)})\n{second.tail()}")
        assert {k: v["n"] for k, v in dump["subscribers"].items()} == {s: 7 for s in sids}
        assert second.terminate() == 0, second.tail()
    finally:
        first.terminate(5)
        second.terminate(5)


def _held(worker: WorkerProc) -> float | None:
    from stream.tools.processes import metric_sum

    return metric_sum(worker.metrics_port, "churnwatch_events_held")
