"""Helpers for the integration tests: worker processes, producing and reading topics."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream.service.admin import ensure_topics
from stream.settings import Settings
from stream.tools.broker import free_port
from stream.tools.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
_ids = itertools.count(1)
SESSION_TIMEOUT_S = 6
#: The table stores the guarantees are proved on (RocksDB comes with the ``dev`` extra).
STORES = ("memory://", "rocksdb://")


def unique_settings(bootstrap: str, **env: str) -> tuple[Settings, dict[str, str]]:
    """Settings and worker environment with a topic prefix and app id of their own."""
    n = next(_ids)
    tag = f"t{os.getpid()}x{n}"
    environ = {
        "KAFKA_BOOTSTRAP": bootstrap,
        "CHURNWATCH_TOPIC_PREFIX": f"{tag}.",
        "CHURNWATCH_APP_ID": f"cw-{tag}",
        "CHURNWATCH_BATCH_WITHIN_S": "0.1",
        # Joining a group takes about half the session timeout on the embedded broker.
        "CHURNWATCH_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
        "CHURNWATCH_HEARTBEAT_S": "1",
        "CHURNWATCH_REQUEST_TIMEOUT_S": "20",
        **env,
    }
    settings = Settings.from_env(environ)
    ensure_topics(settings)
    return settings, environ


@dataclass
class WorkerProc:
    """A worker in a child process (``tests.integration.worker_proc``)."""

    environ: dict[str, str]
    workdir: Path
    name: str = "w"
    fake_engine: bool = True
    #: the name of the worker whose data directory this one uses (a restart on local state)
    data_of: str | None = None
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / f"{self.name}.log"

    @property
    def dump_path(self) -> Path:
        return self.workdir / f"{self.name}.dump.json"

    def start(self) -> WorkerProc:
        self.metrics_port = free_port()
        self.dump_path.unlink(missing_ok=True)
        env = {
            **os.environ,
            **self.environ,
            "CHURNWATCH_DATADIR": str(self.workdir / f"{self.data_of or self.name}.data"),
            "CHURNWATCH_METRICS_PORT": str(self.metrics_port),
            "TEST_DUMP": str(self.dump_path),
            "TEST_FAKE_ENGINE": "1" if self.fake_engine else "0",
            "TEST_LOGLEVEL": os.environ.get("TEST_LOGLEVEL", "WARNING"),
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.worker_proc"],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def dump(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.dump_path.read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, grace_s: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL after ``grace_s``. The exit code."""
        proc = self.process
        if proc is None:
            return 0
        return stop_process(proc, grace_s)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text("utf-8", "replace")[-n:]
        except FileNotFoundError:
            return ""


def wait_for(
    pred: Callable[[], Any], timeout: float, what: str | Callable[[], str], step: float = 0.2
) -> Any:
    """Poll ``pred`` until it is truthy (its value) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}")


def call_event(i: int, sid: str, day: int = 2) -> dict[str, Any]:
    return {
        "event_id": f"c{i}",
        "ts": f"2026-03-{day:02d}T09:15:00+08:00",
        "subscriber_id": sid,
        "direction": "in",
        "other_party": "13800000000",
        "duration_s": 62,
    }


def produce(bootstrap: str, records: Iterable[tuple[Any, ...]]) -> int:
    """Publish ``(topic, key, value[, partition])`` records in order; the count."""
    from aiokafka import AIOKafkaProducer

    async def go() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        n = 0
        try:
            for topic, key, value, *partition in records:
                await producer.send(topic, value, key=key,
                                    partition=partition[0] if partition else None)
                n += 1
            await producer.flush()
        finally:
            await producer.stop()
        return n

    return asyncio.run(go())


def events_records(topic: str, events: Iterable[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
    return [(topic, e["subscriber_id"].encode(), orjson.dumps(e)) for e in events]


def read_topic(bootstrap: str, topic: str, *, timeout: float = 10.0) -> list[Any]:
    """Every record of ``topic`` up to its high watermark (fetch-based, not ListOffsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.service.faust_internals.transport import fetch_highwaters

    async def go() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            ends = await fetch_highwaters(consumer, tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
                batch = await consumer.getmany(timeout_ms=200)
                for recs in batch.values():
                    records.extend(recs)
            else:
                raise AssertionError(f"could not read {topic} to its end within {timeout} s")
            return records
        finally:
            await consumer.stop()

    return asyncio.run(go())


def committed_offsets(bootstrap: str, group: str, topics: Iterable[str]) -> dict[Any, int]:
    """The group's committed offset per ``(topic, partition)`` (-1 when none)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def go() -> dict[Any, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            out: dict[Any, int] = {}
            for t in topics:
                for p in sorted(consumer.partitions_for_topic(t) or ()):
                    offset = await consumer.committed(TopicPartition(t, p))
                    out[(t, p)] = -1 if offset is None else offset
            return out
        finally:
            await consumer.stop()

    return asyncio.run(go())


def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[Any, int]:
    """True end offsets (fetch high watermarks) of every partition of ``topics``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.service.faust_internals.transport import fetch_highwaters

    async def go() -> dict[Any, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            tps = [
                TopicPartition(t, p)
                for t in topics
                for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            return {(tp.topic, tp.partition): o
                    for tp, o in (await fetch_highwaters(consumer, tps)).items()}
        finally:
            await consumer.stop()

    return asyncio.run(go())


def all_committed(bootstrap: str, group: str, topics: Iterable[str]) -> bool:
    topics = list(topics)
    ends = end_offsets(bootstrap, topics)
    done = committed_offsets(bootstrap, group, topics)
    return all(end == 0 or done.get(tp, -1) >= end for tp, end in ends.items())


def all_applied(bootstrap: str, group: str, topics: Iterable[str],
                dump: dict[str, Any] | None) -> bool:
    """Is every input message in a worker's state: below its applied mark (from the
    worker's dump), or below the group's committed offset (a partition with nothing left
    to deliver after a restart has no mark loaded)?"""
    if not dump:
        return False
    topics = list(topics)
    marks = dump.get("applied", {})
    ends = end_offsets(bootstrap, topics)
    done = committed_offsets(bootstrap, group, topics)
    return all(
        end == 0 or max(marks.get(f"{tp[0]}/{tp[1]}", -1), done.get(tp, -1)) >= end
        for tp, end in ends.items()
    )


def latest_by_key(records: Iterable[Any]) -> dict[str, Any]:
    """The last value per key of changelog records (None = deleted)."""
    latest: dict[str, Any] = {}
    for r in records:
        key = r.key.decode()
        if r.value is None:
            latest.pop(key, None)
        else:
            latest[key] = orjson.loads(r.value)
    return latest
