"""`churnwatch produce DIR`: publish a replay directory to the input topics (kafka-python).

The ported-numbers registry (``DIR/ported.jsonl``) goes first, to the compacted
``telecom.ported`` keyed by number, and is acknowledged before any event is sent: a worker
applies it before the events that follow (:mod:`stream.service.ported_feed`). Then
profiles (as the compacted topic is read first), then calls and billing merged by
event time, so each subscriber's events reach its partition in time order. Lines are sent
as they are, bad ones included: rejecting them is the worker's job, with a dead letter.

Every :data:`FLUSH_EVERY_S` the producer waits until the broker holds what it was given
an interval before. Unbounded, kafka-python's buffer can keep records for seconds (up to
3.3 s seen for a 65,000-event world on two busy cores), and a worker would take a
topic-partition whose earlier records are still in that buffer for caught up: events out
of replay's order. Bounded, the longest seen is about 0.25 s.
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from stream.contracts import INPUT_KINDS
from stream.contracts.ported import PORTED_FILE
from stream.service.ported_feed import ported_topic_name

_NO_TIME = float("-inf")
#: seconds between waits: a record reaches the broker within about twice this plus one
#: round trip of being stamped, well inside ``CHURNWATCH_ORDER_MARGIN_S``.
FLUSH_EVERY_S = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="holds calls/billing/subscribers.jsonl")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="events per second (default: as fast as the broker takes them)")
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap address (default: KAFKA_BOOTSTRAP)")


def _key_and_time(line: bytes, last_time: float) -> tuple[bytes | None, float]:
    """The subscriber key and event time of a line; a bad line keeps the previous time."""
    try:
        event = orjson.loads(line)
        key = event.get("subscriber_id") if isinstance(event, dict) else None
        when = event.get("ts") if isinstance(event, dict) else None
        epoch = datetime.fromisoformat(when).timestamp() if isinstance(when, str) else last_time
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None, last_time
    return (key.encode("utf-8") if isinstance(key, str) else None), epoch


def _read(directory: Path, kind: str) -> Iterator[tuple[float, int, int, bytes | None, bytes]]:
    path = directory / f"{kind}.jsonl"
    if not path.exists():
        return
    order = INPUT_KINDS.index(kind)
    last = _NO_TIME
    with path.open("rb") as handle:
        for number, line in enumerate(handle):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            key, last = _key_and_time(line, last)
            yield last, order, number, key, line


def messages(directory: Path) -> Iterator[tuple[str, bytes | None, bytes]]:
    """(kind, key, value) in publishing order."""
    for _, _, _, key, line in _read(directory, "subscribers"):
        yield "subscribers", key, line
    for _, order, _, key, line in heapq.merge(_read(directory, "calls"),
                                              _read(directory, "billing")):
        yield INPUT_KINDS[order], key, line


def ported_records(directory: Path) -> Iterator[tuple[bytes, bytes]]:
    """(number, line) of ``DIR/ported.jsonl``; lines without a number are skipped."""
    path = directory / PORTED_FILE
    if not path.exists():
        return
    with path.open("rb") as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                number = orjson.loads(line).get("number")
            except (orjson.JSONDecodeError, AttributeError):
                number = None
            if isinstance(number, str) and number:
                yield number.encode("utf-8"), line


def count_lines(directory: Path) -> int:
    total = 0
    for kind in INPUT_KINDS:
        path = directory / f"{kind}.jsonl"
        if path.exists():
            with path.open("rb") as handle:
                total += sum(1 for line in handle if line.strip())
    return total


def produce_directory(
    directory: Path, settings: Any, rate: float = 0.0, progress: Any = None,
    on_send: Callable[[str, bytes | None, bytes], None] | None = None,
) -> dict[str, int]:
    """Publish ``directory`` to the input topics of ``settings``; return counts by kind.

    ``on_send(kind, key, value)`` is called as each message is handed to the producer
    (the bench times produce-to-alert latency with it).
    """
    from kafka import KafkaProducer

    topics = {kind: topic for topic, kind in settings.input_topics.items()}
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap.split(","),
        client_id="churnwatch-produce",
        acks=1,
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=2 * 1024 * 1024,
        **settings.kafka_client_kwargs(),
    )
    counts = dict.fromkeys(INPUT_KINDS, 0)
    started = time.perf_counter()
    try:
        ported_topic = ported_topic_name(settings)
        for number, line in ported_records(directory):
            producer.send(ported_topic, key=number, value=line)
            counts["ported"] = counts.get("ported", 0) + 1
        if counts.get("ported"):
            producer.flush(timeout=60)  # acknowledged before the first event is sent
        # A record is stamped when it is handed over, and a worker waits only
        # CHURNWATCH_ORDER_MARGIN_S for an earlier-stamped one on another topic
        # (stream.service.ordering): none may linger in the buffer. Every FLUSH_EVERY_S,
        # wait for the records handed over an interval before, so the buffer holds at
        # most about two intervals and never runs dry.
        interval: list[Any] = []
        previous: list[Any] = []
        started_interval = time.monotonic()
        for n, (kind, key, value) in enumerate(messages(directory), start=1):
            interval.append(producer.send(topics[kind], key=key, value=value))
            if n % 256 == 0 and time.monotonic() - started_interval >= FLUSH_EVERY_S:
                for sent in previous:
                    sent.get(timeout=60)
                previous, interval = interval, []
                started_interval = time.monotonic()
            if on_send is not None:
                on_send(kind, key, value)
            counts[kind] += 1
            if progress is not None:
                progress.advance()
            if rate > 0:
                ahead = n / rate - (time.perf_counter() - started)
                if ahead > 0.001:
                    time.sleep(ahead)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    return counts


def run(args: argparse.Namespace) -> int:
    from stream.settings import client_settings
    from stream.tools.progress import Progress

    # A SettingsError reaches `churnwatch`'s one handler: one line, exit 2.
    settings = client_settings(args.bootstrap)
    if not args.directory.is_dir():
        print(f"produce: {args.directory} is not a directory", file=sys.stderr)
        return 2
    progress = Progress("produce", total=count_lines(args.directory))
    counts = produce_directory(args.directory, settings, rate=args.rate, progress=progress)
    progress.close()
    print("produce: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), file=sys.stderr)
    return 0
