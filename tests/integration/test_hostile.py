"""Hostile input never hurts: a generated corpus through ``replay`` and a live worker.

A small simulated world gets hostile messages mixed in: in its files (what ``replay``
reads: undecodable bytes, deep JSON, NaN, 1e400, years 1970 and 9999, wrong types,
impossible values, a 70 KB line...) and on the topics only (what files cannot carry: a
null value, a key that is not the subscriber, no key, a record on the wrong partition,
messages of 0.9, 3 and 10 MB). Each hostile message is a corrupted copy of a real event
with a new ``event_id``, so one accepted by mistake would change the state and the alerts.

Both paths must give the clean world's alerts, one dead letter per hostile message with
the expected reason, every dead letter within the broker's message limit, and a worker
alive at the end.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.contracts.partitioning import partition_of
from stream.contracts.validation import KAFKA_MAX_MESSAGE_BYTES
from stream.service.metrics import OTHER, VOCABULARY
from stream.tools.broker import free_port
from stream.tools.processes import stop_process
from tests.integration.helpers import (
    REPO,
    WorkerProc,
    all_committed,
    read_topic,
    unique_settings,
    wait_for,
)

pytestmark = pytest.mark.integration

SUBSCRIBERS, DAYS, SEED = 60, 45, 11
#: Sizes of the big messages, bytes: under Kafka's 1 MB, and two over it.
BIG = (900_000, 3_000_000, 10_000_000)
#: The producer limit the big messages need (aiokafka's default is 1 MB).
PRODUCER_MAX_REQUEST = 16 * 1024 * 1024

Change = Callable[[dict[str, Any]], bytes]


def _with(**fields: Any) -> Change:
    return lambda event: orjson.dumps({**event, **fields})


def _text(template: bytes) -> Change:
    """A line from raw ``template`` bytes; ``%(id)s`` is the copied event's new id."""
    return lambda event: template.replace(b"%(id)s", event["event_id"].encode())


def _without(name: str) -> Change:
    return lambda event: orjson.dumps({k: v for k, v in event.items() if k != name})


_CALL = (b'{"event_id": "%(id)s", "ts": "2026-03-02T09:15:00+08:00", "subscriber_id": "s1", '
         b'"direction": "in", "other_party": "13800000000", "duration_s": ')

#: (file kind, how to corrupt a copy of one of its events, the reason it must get)
FILE_CASES: list[tuple[str, Change, str]] = [
    ("calls", _text(b'{"event_id": "%(id)s", "ts": '), "malformed_json"),
    ("calls", _text(b'{"event_id": "%(id)s", "x": "\xff\xfe"}'), "not_utf8"),
    ("calls", _text(b"\xc3\x28"), "not_utf8"),
    ("calls", _text(b"[" * 30_000 + b"]" * 30_000), "malformed_json"),  # deep nesting
    ("calls", _text(_CALL + b"NaN}"), "malformed_json"),
    ("calls", _text(_CALL + b"1e400}"), "malformed_json"),
    ("calls", _text(b"\xef\xbb\xbf" + _CALL + b"5}"), "malformed_json"),  # a BOM
    ("calls", _text(b"null"), "schema"),
    ("calls", _text(b"[]"), "schema"),
    ("calls", _text(b'"a string"'), "schema"),
    ("calls", _text(b"42"), "schema"),
    ("calls", _text(b"{}"), "schema"),
    ("calls", _with(ts="9999-03-02T09:15:00+08:00"), "absurd_value"),
    ("calls", _with(ts="2026-03-02T09:15:00"), "schema"),
    ("calls", _with(ts="2026-13-02T09:15:00+08:00"), "schema"),
    ("calls", _with(duration_s=-5), "absurd_value"),
    ("calls", _text(_CALL + b"1000000000000000000000000000000}"), "absurd_value"),
    ("calls", _with(duration_s="62"), "schema"),
    ("calls", _with(charge=-0.01), "absurd_value"),
    ("calls", _with(direction="sideways"), "schema"),
    ("calls", _with(other_party="call me"), "schema"),
    ("calls", _with(subscriber_id=""), "schema"),
    ("calls", _with(subscriber_id="s" * 200), "schema"),
    ("calls", _with(event_id=None), "schema"),
    ("calls", _without("ts"), "schema"),
    ("calls", _with(pad="x" * 70_000), "oversized"),
    ("billing", _with(kind="refund"), "schema"),
    ("billing", _with(amount=-3), "absurd_value"),
    ("billing", _with(amount="50"), "schema"),
    ("billing", _with(schema_version=2), "absurd_value"),
    ("billing", _with(ts="1970-01-02T00:00:00+00:00"), "absurd_value"),
    ("subscribers", _with(tier="platinum"), "schema"),
    ("subscribers", _with(msisdn=13800000000), "schema"),
    ("subscribers", _with(segment="x" * 40), "schema"),
    ("subscribers", _without("msisdn"), "schema"),
]
#: The very first event of the calls file, from 1970: rejected although nothing came before.
FIRST_1970 = "absurd_value"
#: Days after the original that a call is sent again (same event_id) and a late call (an
#: event_id of its own) comes: their day is closed by then.
RESEND_AFTER_DAYS = 2


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stream.tools.simulator import WorldParams, simulate

    out = tmp_path_factory.mktemp("world")
    simulate(out, WorldParams(subscribers=SUBSCRIBERS, days=DAYS, seed=SEED))
    return out


def _hostile_files(clean: Path, out: Path, late: list[bytes] | None = None) -> Counter[str]:
    """Copy ``clean`` into ``out`` with :data:`FILE_CASES` mixed in; the reasons expected.

    A re-sent call and a late one go in two days after the original, or into ``late``
    when given (the caller publishes them itself)."""
    out.mkdir()
    expected: Counter[str] = Counter()
    for path in clean.iterdir():
        if path.suffix != ".jsonl" or path.stem not in ("calls", "billing", "subscribers"):
            (out / path.name).write_bytes(path.read_bytes())
            continue
        lines = path.read_bytes().splitlines()
        if path.stem == "calls":
            # A re-send, byte for byte, and a late call, both two days after the original.
            original = orjson.loads(lines[len(lines) // 3])
            due = datetime.fromisoformat(original["ts"]) + timedelta(days=RESEND_AFTER_DAYS)
            at = next(i for i, line in enumerate(lines) if _ts(line) >= due)
            resent = [lines[len(lines) // 3],
                      orjson.dumps({**original, "event_id": "hostile-late"})]
            if late is None:
                lines[at:at] = resent
            else:
                late.extend(resent)
            expected["too_late"] += 2
        cases = [(change, reason) for kind, change, reason in FILE_CASES if kind == path.stem]
        every = max(1, len(lines) // (len(cases) + 1))
        mixed: list[bytes] = []
        for n, line in enumerate(lines):
            mixed.append(line)
            if n % every == every - 1 and cases:
                change, reason = cases.pop(0)
                event = orjson.loads(line)
                event.setdefault("event_id", f"profile{n}")
                event["event_id"] = f"hostile-{path.stem}-{n}"
                mixed.append(change(event))
                expected[reason] += 1
        assert not cases, "every case placed"
        if path.stem == "calls":
            first = orjson.loads(lines[0])
            first.update(event_id="hostile-1970", ts="1970-01-01T08:00:00+08:00")
            mixed.insert(0, orjson.dumps(first))
            expected[FIRST_1970] += 1
        (out / path.name).write_bytes(b"\n".join(mixed) + b"\n")
    return expected


def _ts(line: bytes) -> datetime:
    return datetime.fromisoformat(orjson.loads(line)["ts"])


def _replay(directory: Path, settings: Any) -> tuple[dict[str, tuple], Counter[str]]:
    from stream.tools.replay import replay_directory

    counters: Counter[str] = Counter()
    alerts = {a["alert_id"]: _summary(a) for a in replay_directory(
        directory, partitions=settings.partitions, engine_config=settings.engine_config(),
        counters=counters, learner=settings.outcome_learner({}))}
    rejected = Counter({k.removeprefix("rejected."): v for k, v in counters.items()
                        if k.startswith("rejected.")})
    return alerts, rejected


def _summary(alert: dict[str, Any]) -> tuple:
    # As tests/integration/test_parity.py: the group context comes a poll later live.
    return (alert["alert_id"], alert["kind"], alert["status"], alert["zone"],
            tuple(r["code"] for r in alert["reasons"] if r["code"] != "group_context"))


def _topic_only_records(world: Path, settings: Any) -> tuple[list[tuple], Counter[str]]:
    """``(topic, key, value, partition)`` records files cannot carry, and their reasons."""
    calls = [orjson.loads(line) for line in (world / "calls.jsonl").read_bytes().splitlines()]
    one, other = calls[len(calls) // 2], next(
        c for c in calls if c["subscriber_id"] != calls[len(calls) // 2]["subscriber_id"])
    sid = one["subscriber_id"]
    topic = settings.topic_calls
    right = partition_of(sid, settings.partitions)

    def copy(tag: str) -> bytes:
        return orjson.dumps({**one, "event_id": f"hostile-topic-{tag}"})

    records: list[tuple] = [
        (topic, sid.encode(), None, right),
        (topic, other["subscriber_id"].encode(), copy("key"), None),
        (topic, None, copy("nokey"), right),
        (topic, sid.encode(), copy("partition"), (right + 1) % settings.partitions),
    ]
    reasons = Counter({"null_value": 1, "key_mismatch": 2, "wrong_partition": 1})
    for size in BIG:
        records.append((topic, sid.encode(), _big(size), right))
        reasons["oversized"] += 1
    return records, reasons


def _big(size: int) -> bytes:
    """A JSON message of exactly ``size`` bytes."""
    head = b'{"event_id": "big%d", "pad": "' % size
    return head + b"x" * (size - len(head) - 2) + b'"}'


def _produce(bootstrap: str, records: list[tuple]) -> None:
    """Publish with a producer limit large enough for the 10 MB message, each partition
    as given (None: the default partitioner)."""
    from aiokafka import AIOKafkaProducer

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap,
                                    max_request_size=PRODUCER_MAX_REQUEST)
        await producer.start()
        try:
            for topic, key, value, partition in records:
                await producer.send_and_wait(topic, value, key=key, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(go())


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _sample(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _label_values(text: str, label: str) -> set[str]:
    return set(re.findall(rf'[{{,]{label}="([^"]*)"', text))


@pytest.mark.timeout(240)
def test_hostile_corpus_gives_the_clean_alerts_on_replay_and_on_a_live_worker(
        broker: Any, world: Path, tmp_path: Path) -> None:
    from stream.tools.produce import count_lines, produce_directory

    hostile = tmp_path / "hostile"
    file_reasons = _hostile_files(world, hostile)
    # The worker gets the same files as a backlog (the re-send and the late call two days
    # down the calls topic: too late there as in replay, although a worker on a backlog
    # takes the topics in event-time order), then the two once more after the world is
    # processed: too late again.
    late: list[bytes] = []
    assert _hostile_files(world, tmp_path / "lines_only", late) == file_reasons
    settings, environ = unique_settings(
        broker.bootstrap, CHURNWATCH_PORTED_FILE=str(hostile / "ported.jsonl"))
    clean, clean_rejected = _replay(world, settings)
    assert clean and not clean_rejected
    # The replay path: the clean world's alerts, each hostile line one counted rejection.
    replayed, rejected = _replay(hostile, settings)
    assert replayed == clean
    assert rejected == file_reasons
    assert sum(file_reasons.values()) == len(FILE_CASES) + 3

    # The live path: the same files, plus what only topics carry.
    extra, extra_reasons = _topic_only_records(world, settings)
    produce_directory(hostile, settings)
    _produce(broker.bootstrap, extra)
    early = count_lines(hostile) + len(extra)
    total = early + len(late)
    worker = WorkerProc(environ, tmp_path, fake_engine=False).start()
    try:
        wait_for(lambda: (d := worker.dump()) and d["events"] == early, 120,
                 lambda: f"{early} messages: {(worker.dump() or {}).get('events')}"
                         f"\n{worker.tail()}")
        sid = orjson.loads(late[0])["subscriber_id"]
        _produce(broker.bootstrap, [(settings.topic_calls, sid.encode(), line,
                                     partition_of(sid, settings.partitions)) for line in late])
        wait_for(lambda: (d := worker.dump()) and d["events"] == total, 120,
                 lambda: f"{total} messages: {(worker.dump() or {}).get('events')}"
                         f"\n{worker.tail()}")
        expected_letters = file_reasons + extra_reasons + Counter(too_late=len(late))
        letters = wait_for(
            lambda: (got := read_topic(broker.bootstrap, settings.topic_deadletter))
            and len(got) >= sum(expected_letters.values()) and got, 30,
            lambda: f"every dead letter: {expected_letters} expected, got " + str(Counter(
                orjson.loads(r.value)["reason"]
                for r in read_topic(broker.bootstrap, settings.topic_deadletter))))
        alerts: list[dict[str, Any]] = []

        def complete() -> bool:
            alerts[:] = [orjson.loads(r.value)
                         for r in read_topic(broker.bootstrap, settings.topic_alerts)]
            return {a["alert_id"] for a in alerts} >= set(clean)

        wait_for(complete, 30, lambda: f"the clean alerts\n{worker.tail()}", step=0.5)
        wait_for(lambda: all_committed(broker.bootstrap, settings.app_id,
                                       settings.input_topics), 30, "all input committed")
        metrics = _scrape(worker.metrics_port)
        assert worker.alive(), worker.tail()
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.terminate(5)

    assert {a["alert_id"]: _summary(a) for a in alerts} == clean
    reasons = Counter(orjson.loads(r.value)["reason"] for r in letters)
    assert reasons == expected_letters
    assert _sample(metrics, "churnwatch_dead_letter_failures_total") == 0
    for reason, n in expected_letters.items():
        assert _sample(metrics, f'churnwatch_dead_letters_total{{reason="{reason}"}}') == n
    # The big ones: within the limit, a prefix, the whole original's size and digest.
    by_size = {}
    for record in letters:
        assert len(record.value) + len(record.key or b"") <= KAFKA_MAX_MESSAGE_BYTES
        letter = orjson.loads(record.value)
        by_size[letter["raw_size"]] = letter
    for size in BIG:
        letter = by_size[size]
        raw = _big(size)
        assert letter["raw_sha256"] == hashlib.sha256(raw).hexdigest()
        kept = base64.b64decode(letter["raw_base64"])
        assert raw.startswith(kept)
        assert letter["raw_truncated"] == (len(kept) < size)
    assert by_size[BIG[1]]["raw_truncated"] and by_size[BIG[2]]["raw_truncated"]
    # Labels from closed sets only, and no number in any of them.
    for label, allowed in VOCABULARY.items():
        assert _label_values(metrics, label) <= allowed | {OTHER}, label
    assert not re.search(r'="[^"]*\d{7,}[^"]*"', metrics)


@pytest.mark.timeout(120)
def test_a_dead_letter_that_cannot_be_published_is_counted_and_the_worker_goes_on(
        broker: Any, tmp_path: Path) -> None:
    """A dead-letter limit above what the producer takes (4 MiB): the 10 MB message's
    letter fails to publish; counted, logged once, its input committed, the next event
    processed."""
    from tests.integration.helpers import call_event

    settings, environ = unique_settings(
        broker.bootstrap, CHURNWATCH_DEADLETTER_MAX_BYTES=str(8_000_000))
    sid = "s-00007"
    right = partition_of(sid, settings.partitions)
    big = _big(10_000_000)
    _produce(broker.bootstrap, [
        (settings.topic_calls, sid.encode(), big, right),
        (settings.topic_calls, sid.encode(), orjson.dumps(call_event(1, sid)), right),
        (settings.topic_calls, sid.encode(), big, right),
    ])
    worker = WorkerProc(environ, tmp_path).start()
    try:
        wait_for(lambda: (d := worker.dump()) and d["events"] == 3, 60,
                 lambda: f"3 messages\n{worker.tail()}")
        wait_for(lambda: all_committed(broker.bootstrap, settings.app_id,
                                       [settings.topic_calls]), 30, "input committed")
        metrics = _scrape(worker.metrics_port)
        assert worker.dump()["accepted"] == 1
        assert worker.alive(), worker.tail()
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.terminate(5)
    assert _sample(metrics, "churnwatch_dead_letter_failures_total") == 2
    log = worker.tail(100_000)
    assert log.count("not published") == 1, log


@pytest.mark.timeout(150)
def test_a_debug_worker_logs_no_phone_number(broker: Any, tmp_path: Path) -> None:
    """``churnwatch worker --loglevel debug`` over a small world: Faust and aiokafka log
    every changelog send at debug level, the redaction leaves no 11-digit number."""
    from stream.tools.produce import count_lines, produce_directory
    from stream.tools.simulator import WorldParams, simulate

    small = tmp_path / "small"
    simulate(small, WorldParams(subscribers=20, days=20, seed=3))
    numbers = re.compile(rb"\d{11}")
    assert numbers.search((small / "subscribers.jsonl").read_bytes()), "the world has MSISDNs"
    settings, environ = unique_settings(broker.bootstrap)
    produce_directory(small, settings)
    total = count_lines(small)
    port = free_port()
    log = tmp_path / "debug.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker", "--loglevel", "debug"],
            cwd=REPO, env={**os.environ, **environ,
                           "CHURNWATCH_DATADIR": str(tmp_path / "data"),
                           "CHURNWATCH_METRICS_PORT": str(port)},
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        def processed() -> bool:
            try:
                return _sample(_scrape(port), "churnwatch_events_total") >= total
            except OSError:
                return False

        wait_for(processed, 90, lambda: f"{total} events\n{log.read_text()[-3000:]}")
        time.sleep(1.5)  # a commit and its changelog flushes after the last batch
    finally:
        assert stop_process(process, 30) == 0
    text = log.read_bytes()
    assert text.count(b"\n") > 1000 and b"aiokafka" in text, "debug logs were written"
    found = numbers.findall(text)
    assert not found, f"{len(found)} numbers, e.g. {found[:3]}"
