"""A worker on the embedded broker: alerts, dead letters, metrics, SIGTERM, scale-out."""

from __future__ import annotations

import urllib.request

import orjson
import pytest

from tests.integration.fake_engine import ALERT_EVERY
from tests.integration.helpers import (
    STORES,
    WorkerProc,
    all_committed,
    call_event,
    events_records,
    produce,
    read_topic,
    unique_settings,
    wait_for,
)

pytestmark = pytest.mark.integration


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        return reply.read().decode()


def _sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{" if labels else name + " "):
            head, _, value = line.rpartition(" ")
            got = head[len(name):].strip("{}")
            if ",".join(sorted(got.split(","))) == want or (not labels and not got):
                return float(value)
    return 0.0


POISON = {
    "malformed_json": b'{"event_id": "p1", "ts": ',
    "not_utf8": b"\xff\xfe\x00garbage",
    "schema": orjson.dumps({"event_id": "p3", "ts": "2026-03-02T09:15:00+08:00",
                            "subscriber_id": "s0001", "direction": "sideways",
                            "other_party": "13800000000", "duration_s": 5}),
    "absurd_value": orjson.dumps({**call_event(999_001, "s0002"), "duration_s": -5}),
    "oversized": b'{"pad": "' + b"x" * 70_000 + b'"}',
}


@pytest.mark.timeout(60)
def test_worker_publishes_alerts_and_dead_letters_and_stops_cleanly(broker, tmp_path):
    settings, environ = unique_settings(broker.bootstrap)
    subscribers, per_subscriber = 40, 10
    events = [call_event(i, f"s{i % subscribers:04d}") for i in range(subscribers * per_subscriber)]
    records = events_records(settings.topic_calls, events)
    # Poison in the middle of the stream, keyed like good events.
    for n, (reason, raw) in enumerate(POISON.items()):
        records.insert(50 + 37 * n, (settings.topic_calls, f"s{n:04d}".encode(), raw))
    worker = WorkerProc(environ, tmp_path).start()
    try:
        produce(broker.bootstrap, records)
        expected_alerts = subscribers * (per_subscriber // ALERT_EVERY)
        alerts = wait_for(
            lambda: len(got := read_topic(broker.bootstrap, settings.topic_alerts))
            >= expected_alerts and got,
            40, lambda: f"{expected_alerts} alerts\n{worker.tail()}",
        )
        letters = read_topic(broker.bootstrap, settings.topic_deadletter)
        wait_for(lambda: all_committed(broker.bootstrap, settings.app_id,
                                       settings.input_topics), 20, "offsets committed")
        # The lag gauge is refreshed every few seconds: wait for a reading after the end.
        text = wait_for(lambda: (t := _metrics(worker.metrics_port))
                        and f'churnwatch_consumer_lag{{topic="{settings.topic_calls}"}} 0.0' in t
                        and t, 20, lambda: f"a consumer lag of 0\n{worker.tail()}")
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.terminate(5)

    assert len(alerts) == expected_alerts
    for record in alerts:
        alert = orjson.loads(record.value)
        assert record.key == alert["subscriber_id"].encode()
        assert alert["emitted_at"].endswith("+00:00")
    assert len({orjson.loads(r.value)["alert_id"] for r in alerts}) == expected_alerts

    assert sorted(orjson.loads(r.value)["reason"] for r in letters) == sorted(POISON)
    positions = {(r.partition, r.offset) for r in read_topic(broker.bootstrap,
                                                             settings.topic_calls)}
    import base64

    for record in letters:
        letter = orjson.loads(record.value)
        assert letter["topic"] == settings.topic_calls
        assert (letter["partition"], letter["offset"]) in positions
        assert base64.b64decode(letter["raw_base64"]) == POISON[letter["reason"]]

    calls = settings.topic_calls
    assert _sample(text, "churnwatch_events_total", topic=calls, outcome="accepted") == len(events)
    assert _sample(text, "churnwatch_events_total", topic=calls, outcome="rejected") == len(POISON)
    for reason in POISON:
        assert _sample(text, "churnwatch_dead_letters_total", reason=reason) == 1
    assert _sample(text, "churnwatch_alerts_total", kind="subscriber",
                   zone="yellow") == expected_alerts
    # Every subscriber's episode opened (the fake engine's alerts say "open", no segment).
    assert _sample(text, "churnwatch_open_alerts", segment="unknown",
                   zone="yellow") == subscribers
    assert f'churnwatch_consumer_lag{{topic="{settings.topic_billing}"}} 0.0' in text
    assert "faust_messages_received" in text  # Faust's own sensor, same registry
    assert "s0001" not in text and "13800000000" not in text  # no subscriber data in labels


@pytest.mark.timeout(90)
def test_two_workers_share_partitions_and_one_takes_over(broker, tmp_path):
    settings, environ = unique_settings(broker.bootstrap)
    one = WorkerProc(environ, tmp_path, name="one").start()
    two = WorkerProc(environ, tmp_path, name="two").start()
    subscribers = 60
    try:
        def split() -> bool:
            a, b = one.dump(), two.dump()
            if not (a and b and a["recovered"] and b["recovered"]):
                return False
            pa, pb = set(a["assigned"]), set(b["assigned"])
            return bool(pa and pb) and not pa & pb and pa | pb == set(range(settings.partitions))

        wait_for(split, 40, lambda: f"two workers to split the partitions: "
                 f"{one.dump() and one.dump()['assigned']} / "
                 f"{two.dump() and two.dump()['assigned']}\n{one.tail()}\n{two.tail()}")
        first = [call_event(i, f"s{i % subscribers:04d}") for i in range(subscribers * 5)]
        produce(broker.bootstrap, events_records(settings.topic_calls, first))
        wait_for(lambda: (one.dump()["events"] + two.dump()["events"]) == len(first), 30,
                 "both workers to process the first half")
        assert one.dump()["events"] > 0 and two.dump()["events"] > 0

        assert two.terminate() == 0, two.tail()
        wait_for(lambda: (d := one.dump()) and d["recovered"]
                 and set(d["assigned"]) == set(range(settings.partitions)), 40,
                 lambda: f"the remaining worker to take every partition\n{one.tail()}")
        second = [call_event(i, f"s{i % subscribers:04d}")
                  for i in range(len(first), len(first) * 2)]
        produce(broker.bootstrap, events_records(settings.topic_calls, second))
        expected = {f"s{s:04d}-{n}" for s in range(subscribers) for n in (5, 10)}
        alerts = wait_for(
            lambda: {orjson.loads(r.value)["alert_id"]
                     for r in read_topic(broker.bootstrap, settings.topic_alerts)} >= expected
            and read_topic(broker.bootstrap, settings.topic_alerts),
            30, lambda: f"all alerts\n{one.tail()}",
        )
        want = {f"s{s:04d}": 10 for s in range(subscribers)}
        state = wait_for(
            lambda: (d := one.dump()) and {k: v["n"] for k, v in d["subscribers"].items()} == want
            and d["subscribers"], 10, lambda: f"state of every subscriber: {one.dump()}")
        assert one.terminate() == 0, one.tail()
    finally:
        one.terminate(5)
        two.terminate(5)
    # Same end result as one worker: each subscriber counted all 10 of its events once
    # (the taken-over partitions' state came from the changelog) and every alert exists.
    assert {sid: st["n"] for sid, st in state.items()} == {
        f"s{s:04d}": 10 for s in range(subscribers)}
    assert {orjson.loads(r.value)["alert_id"] for r in alerts} == expected


@pytest.mark.timeout(120)
@pytest.mark.parametrize("store", STORES)
def test_sigterm_during_a_batch_finishes_it_and_loses_nothing(broker, tmp_path, store):
    """SIGTERM while a batch is in hand (a slow engine keeps one in hand most of the time):
    the worker finishes it, writes its state and exits 0; a new worker then ends with every
    event counted once and every alert. On RocksDB the new worker starts on the first one's
    data directory, as a rolling restart does."""
    settings, environ = unique_settings(broker.bootstrap, TEST_ENGINE_DELAY_S="0.0003",
                                        CHURNWATCH_STORE=store)
    subscribers, per_subscriber = 2000, 10
    events = [call_event(i, f"s{i % subscribers:04d}")
              for i in range(subscribers * per_subscriber)]
    produce(broker.bootstrap, events_records(settings.topic_calls, events))
    one = WorkerProc(environ, tmp_path, name="one").start()
    two = None
    try:
        wait_for(lambda: (d := one.dump()) and d["events"] > 0, 40,
                 lambda: f"the first batch\n{one.tail()}", step=0.05)
        assert one.terminate() == 0, one.tail()
        assert one.dump()["events"] < len(events), "stopped too late to test anything"
        two = WorkerProc(environ, tmp_path, name="two",
                         data_of="one" if store.startswith("rocksdb") else None).start()
        want = {f"s{s:04d}": per_subscriber for s in range(subscribers)}
        state = wait_for(
            lambda: (d := two.dump()) and {k: v["n"] for k, v in d["subscribers"].items()}
            == want and d["subscribers"], 60,
            lambda: f"every event counted once\n{two.tail()}")
        assert two.terminate() == 0, two.tail()
    finally:
        one.terminate(5)
        if two is not None:
            two.terminate(5)
    assert len(state) == subscribers
    expected = {f"s{s:04d}-{n}" for s in range(subscribers) for n in (5, 10)}
    assert {orjson.loads(r.value)["alert_id"]
            for r in read_topic(broker.bootstrap, settings.topic_alerts)} == expected


@pytest.mark.timeout(60)
def test_churnwatch_worker_command_serves_metrics_and_exits_0_on_sigterm(broker, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from stream.tools.broker import free_port
    from tests.integration.helpers import REPO

    settings, environ = unique_settings(broker.bootstrap)
    port = free_port()
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream", "worker", "--metrics-port", str(port),
         "--datadir", str(tmp_path / "data")],
        cwd=REPO, env={**os.environ, **environ}, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        text = wait_for(lambda: _try_metrics(port), 30,
                        lambda: (tmp_path / "worker.log").read_text())
        assert "churnwatch_events_total" in text or "churnwatch_batch_seconds" in text
        produce(broker.bootstrap, events_records(settings.topic_calls, [call_event(1, "s1")]))
        wait_for(lambda: _sample(_metrics(port), "churnwatch_events_total",
                                 topic=settings.topic_calls, outcome="accepted") == 1, 30,
                 lambda: (tmp_path / "worker.log").read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "worker.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def _try_metrics(port: int) -> str | None:
    try:
        return _metrics(port)
    except OSError:
        return None
