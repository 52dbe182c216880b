"""A restarted worker resumes without waiting for the broker to expire its old session.

With dynamic membership, a member killed with ``kill -9`` stays in the group until its
session times out, and the restarted process waits for that before it gets partitions.
With static membership (``CHURNWATCH_INSTANCE_ID``, Kafka's ``group.instance.id``) the
restarted member takes the old one's place at once. These tests check that aiokafka and
the embedded broker support it, and that the worker passes the id on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_MS = 20_000

#: A group member in a child process: joins, prints how long the join took, then waits.
MEMBER = """
import asyncio, sys, time
from aiokafka import AIOKafkaConsumer

async def main():
    bootstrap, topic, group, instance, session_ms = sys.argv[1:6]
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group,
        group_instance_id=instance or None, session_timeout_ms=int(session_ms),
        rebalance_timeout_ms=int(session_ms), heartbeat_interval_ms=1000,
        request_timeout_ms=int(session_ms) + 10_000, enable_auto_commit=False)
    started = time.monotonic()
    await consumer.start()
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    print(f"{time.monotonic() - started:.2f}", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _join(bootstrap: str, topic: str, group: str, instance: str) -> tuple[subprocess.Popen, float]:
    """Start a member; the process and the seconds its join took."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MEMBER, bootstrap, topic, group, instance,
         str(SESSION_TIMEOUT_MS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"the member did not join: {proc.communicate(timeout=10)[1][-2000:]}")
    return proc, float(line)


@pytest.mark.timeout(120)
def test_a_static_member_killed_and_restarted_rejoins_before_its_session_expires(broker):
    topic = "static-membership"
    broker.create_topics([topic], partitions=2)
    group = f"static-{os.getpid()}-{time.monotonic_ns()}"
    first, _ = _join(broker.bootstrap, topic, group, "worker-1")
    again = None
    try:
        first.send_signal(signal.SIGKILL)  # no LeaveGroup: its session stays
        first.wait(10)
        again, took = _join(broker.bootstrap, topic, group, "worker-1")
    finally:
        for proc in (first, again):
            if proc is not None:
                proc.kill()
                proc.communicate(timeout=10)  # reaped, pipes closed
    print(f"static member rejoined in {took:.1f} s (session timeout "
          f"{SESSION_TIMEOUT_MS / 1000:.0f} s)")
    # A dynamic member waits for the old session to expire first (more than the session
    # timeout on this broker); the static one takes its place.
    assert took < SESSION_TIMEOUT_MS / 1000


def test_the_worker_joins_with_its_instance_id():
    from stream.service.app import create_app
    from stream.settings import Settings

    app = create_app(Settings(bootstrap="127.0.0.1:9", instance_id="worker-1"))
    assert app.conf.consumer_group_instance_id == "worker-1"
    app = create_app(Settings(bootstrap="127.0.0.1:9"))
    assert app.conf.consumer_group_instance_id is None


@pytest.mark.timeout(180)
def test_with_a_standby_replica_the_other_worker_takes_over_a_killed_ones_state(broker,
                                                                              tmp_path):
    """``CHURNWATCH_STANDBY_REPLICAS=1`` with two workers: each follows the other's
    changelogs; when one is killed the survivor takes its partitions over with every
    key's latest state and goes on processing (with the in-memory store Faust still
    reads the taken-over changelogs from their start: docs/operations.md)."""
    from tests.integration.helpers import (
        WorkerProc,
        all_committed,
        call_event,
        events_records,
        latest_by_key,
        produce,
        read_topic,
        unique_settings,
        wait_for,
    )

    settings, environ = unique_settings(broker.bootstrap, CHURNWATCH_STANDBY_REPLICAS="1")
    subscribers = 200
    events = [call_event(i, f"s{i % subscribers:04d}", day=1 + i // subscribers)
              for i in range(subscribers * 5)]
    one = WorkerProc(environ, tmp_path, name="one").start()
    two = WorkerProc(environ, tmp_path, name="two").start()
    try:
        def split() -> bool:
            a, b = one.dump(), two.dump()
            return bool(a and b and a["assigned"] and b["assigned"]
                        and not set(a["assigned"]) & set(b["assigned"]))

        wait_for(split, 90, lambda: f"both workers with partitions\n{two.tail()}")
        produce(broker.bootstrap, events_records(settings.topic_calls, events))
        wait_for(lambda: all_committed(broker.bootstrap, settings.app_id,
                                       settings.input_topics), 60, "input committed")
        expected = latest_by_key(read_topic(
            broker.bootstrap, f"{settings.app_id}-subscribers-changelog"))
        assert len(expected) == subscribers
        one.kill9()
        killed = time.monotonic()
        dump = wait_for(
            lambda: (d := two.dump()) and d["recovered"]
            and set(d["assigned"]) == set(range(settings.partitions))
            and d["subscribers"] == expected and d, 90,
            lambda: f"the survivor to own every partition with its state\n{two.tail()}")
        took = time.monotonic() - killed
        more = [call_event(10_000 + i, f"s{i:04d}", day=9) for i in range(subscribers)]
        produce(broker.bootstrap, events_records(settings.topic_calls, more))
        dump = wait_for(
            lambda: (d := two.dump()) and all(v["n"] == 6 for v in d["subscribers"].values())
            and d, 60, lambda: f"the new calls processed\n{two.tail()}")
        assert len(dump["subscribers"]) == subscribers
        assert two.terminate() == 0, two.tail()
    finally:
        one.terminate(5)
        two.terminate(5)
    print(f"the survivor owned every partition with its state {took:.1f} s after the kill")
