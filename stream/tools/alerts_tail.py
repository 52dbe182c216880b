"""`churnwatch alerts tail`: read the alert topic, as a readable table or as JSON lines.

Shows subscriber ids, never phone numbers: a terminal scroll-back is a log too.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson

ZONES = ("blue", "green", "yellow", "red", "white")  # in order of severity
COLUMNS = "{ts:<19} {zone:<6} {status:<9} {kind:<5} {who:<14} {segment:<12} {tier:<7} " \
          "{var:>9} {risk:>4}  {reason}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["tail"], help="what to do with the alert topic")
    parser.add_argument("--zone", choices=ZONES, default=None,
                        help="only this zone or a more severe one")
    parser.add_argument("--segment", default=None, help="only this customer segment")
    parser.add_argument("--json", action="store_true", help="print each alert as JSON")
    parser.add_argument("--from-beginning", action="store_true",
                        help="start at the oldest alert (default: only new ones)")
    parser.add_argument("--idle-exit", type=float, default=0.0,
                        help="stop after this many seconds without an alert (default: never)")
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap address (default: KAFKA_BOOTSTRAP)")


def wanted(alert: dict[str, Any], zone: str | None, segment: str | None) -> bool:
    if segment is not None and alert.get("segment") != segment:
        return False
    if zone is not None and alert.get("zone") in ZONES:
        return ZONES.index(alert["zone"]) >= ZONES.index(zone)
    return True


def header() -> str:
    return COLUMNS.format(ts="event time", zone="zone", status="status", kind="kind",
                          who="subscriber", segment="segment", tier="tier", var="value/mo",
                          risk="risk", reason="why")


def row(alert: dict[str, Any]) -> str:
    reasons = alert.get("reasons") or []
    who = alert.get("subscriber_id") if alert.get("kind") == "subscriber" else alert.get(
        "group_id")
    return COLUMNS.format(
        ts=str(alert.get("ts", ""))[:19].replace("T", " "),
        zone=alert.get("zone", "?"),
        status=alert.get("status", "?"),
        kind=str(alert.get("kind", "?"))[:5],
        who=str(who)[:14],
        segment=str(alert.get("segment"))[:12],
        tier=str(alert.get("tier") or "-")[:7],
        var=f"{float(alert.get('value_at_risk') or 0):,.0f}",
        risk=f"{float(alert.get('risk_score') or 0):.2f}",
        reason=reasons[0]["summary"] if reasons else "",
    )


def read_alerts(
    settings: Any, from_beginning: bool, idle_exit: float, poll_s: float = 0.5
) -> Iterator[dict[str, Any]]:
    """Alerts from the alert topic, without a consumer group (tailing commits nothing)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap.split(","),
        client_id="churnwatch-tail",
        group_id=None,
        enable_auto_commit=False,
        **settings.kafka_client_kwargs(),
    )
    try:
        topic = settings.topic_alerts
        partitions = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + 10
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning:
            consumer.seek_to_beginning(*assigned)
        else:
            consumer.seek_to_end(*assigned)
        last = time.monotonic()
        while True:
            batch = consumer.poll(timeout_ms=int(poll_s * 1000))
            records = [r for rs in batch.values() for r in rs]
            for record in records:
                try:
                    yield orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    print(f"alerts: skipped an undecodable record at {record.partition}:"
                          f"{record.offset}", file=sys.stderr)
            if records:
                last = time.monotonic()
            elif idle_exit and time.monotonic() - last > idle_exit:
                return
    finally:
        consumer.close()


def run(args: argparse.Namespace) -> int:
    from stream.settings import client_settings

    # A SettingsError reaches `churnwatch`'s one handler: one line, exit 2.
    settings = client_settings(args.bootstrap)
    if not args.json:
        print(header(), flush=True)
    try:
        for alert in read_alerts(settings, args.from_beginning, args.idle_exit):
            if wanted(alert, args.zone, args.segment):
                line = orjson.dumps(alert).decode() if args.json else row(alert)
                print(line, flush=True)
    except KeyboardInterrupt:
        pass
    return 0
