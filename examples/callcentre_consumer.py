"""A call-centre work queue fed by churnwatch's alert topic: an example consumer.

It reads ``churn.alerts`` in a consumer group of its own, drops repeats by ``alert_id``
(delivery is at least once), keeps one work item per subscriber (an ``escalated`` alert
replaces the ``open`` one; ``resolved``, or ``closed`` when the subscriber ported out or was
deactivated, ends it: so does any status it does not know) and orders the queue by zone
(white, red, yellow) then by ``value_at_risk``. The topic contract is docs/alerts.md.

Only kafka-python is needed; the connection settings are churnwatch's own variables::

    KAFKA_BOOTSTRAP=localhost:29092 python examples/callcentre_consumer.py --group callcentre

    # a secured cluster
    KAFKA_BOOTSTRAP=kafka:9093 KAFKA_SASL_MECHANISM=SCRAM-SHA-512 \\
    KAFKA_SASL_USERNAME=callcentre KAFKA_SASL_PASSWORD=... KAFKA_SSL_CAFILE=ca.pem \\
    python examples/callcentre_consumer.py --group callcentre

The queue shows subscriber ids and account managers, never phone numbers: a real tool
looks the number up in its CRM when an agent takes the item. Here the seen ids live in
memory; a real tool stores them (a unique column) in the same transaction as the work item
and commits the Kafka offset after that, so a restart neither loses nor repeats work.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: Work order of the zones: the severity order of detectors/policy.py, worst first.
ZONE_PRIORITY = {"white": 0, "red": 1, "yellow": 2, "green": 3, "blue": 4}
TOPIC = "churn.alerts"
#: Statuses that keep a work item open; ``resolved`` and ``closed`` (and any status a newer
#: contract adds) end it.
OPEN_STATUSES = frozenset({"open", "escalated"})


class WorkQueue:
    """Deduplicated alerts folded into one open work item per subscriber (or group).

    Examples
    --------
    >>> q = WorkQueue()
    >>> def alert(i, sid, status, zone, var):
    ...     return {"alert_id": i, "kind": "subscriber", "subscriber_id": sid,
    ...             "group_id": None, "status": status, "zone": zone, "value_at_risk": var}
    >>> q.offer(alert("a1", "S1", "open", "yellow", 900.0))
    'opened'
    >>> q.offer(alert("a2", "S2", "open", "red", 50.0))
    'opened'
    >>> q.offer(alert("a1", "S1", "open", "yellow", 900.0))  # delivered again
    'duplicate'
    >>> [a["subscriber_id"] for a in q.items()]  # red before yellow, whatever the value
    ['S2', 'S1']
    >>> q.offer(alert("a3", "S2", "resolved", "blue", 50.0))
    'closed'
    >>> [a["alert_id"] for a in q.items()]
    ['a1']
    >>> q.offer(alert("a4", "S1", "closed", "yellow", 900.0))  # ported out
    'closed'
    >>> q.items()
    []
    """

    def __init__(self, remember: int = 1_000_000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._open: dict[str, dict[str, Any]] = {}
        self.handled: list[str] = []  #: alert ids in the order first received
        self.counts: dict[str, int] = {}

    def offer(self, alert: Mapping[str, Any]) -> str:
        """Take one alert; what it did: opened, updated, closed, duplicate or ignored."""
        alert_id = str(alert["alert_id"])
        if alert_id in self._seen:
            self._seen.move_to_end(alert_id)
            return self._count("duplicate")
        self._seen[alert_id] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        self.handled.append(alert_id)
        key = work_key(alert)
        if alert["status"] not in OPEN_STATUSES:
            return self._count("closed" if self._open.pop(key, None) else "ignored")
        outcome = "updated" if key in self._open else "opened"
        self._open[key] = dict(alert)
        return self._count(outcome)

    def items(self) -> list[dict[str, Any]]:
        """Open work, most urgent first: zone, then value at risk, then the older alert."""
        return sorted(self._open.values(), key=priority)

    def _count(self, outcome: str) -> str:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        return outcome


def work_key(alert: Mapping[str, Any]) -> str:
    """One work item per subscriber; per group for group alerts."""
    if alert.get("kind") == "group":
        return f"group:{alert['group_id']}"
    return f"subscriber:{alert['subscriber_id']}"


def priority(alert: Mapping[str, Any]) -> tuple[int, float, str]:
    return (ZONE_PRIORITY.get(str(alert["zone"]), 9), -float(alert["value_at_risk"]),
            str(alert.get("ts", "")))


def security_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """kafka-python security settings from churnwatch's KAFKA_* variables."""
    env = os.environ if environ is None else environ
    mechanism = env.get("KAFKA_SASL_MECHANISM", "").strip().upper()
    tls = bool(env.get("KAFKA_SSL_CAFILE") or env.get("KAFKA_SSL_CERTFILE"))
    protocol = env.get("KAFKA_SECURITY_PROTOCOL", "").strip().upper() or (
        ("SASL_SSL" if tls else "SASL_PLAINTEXT") if mechanism else ("SSL" if tls else "PLAINTEXT")
    )
    config: dict[str, Any] = {"security_protocol": protocol}
    if mechanism:
        config.update(sasl_mechanism=mechanism,
                      sasl_plain_username=env.get("KAFKA_SASL_USERNAME"),
                      sasl_plain_password=env.get("KAFKA_SASL_PASSWORD"))
    if protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=env.get("KAFKA_SSL_CAFILE") or None)
        if env.get("KAFKA_SSL_CERTFILE"):
            ctx.load_cert_chain(env["KAFKA_SSL_CERTFILE"], env.get("KAFKA_SSL_KEYFILE") or None)
        config["ssl_context"] = ctx
    return config


def consume(
    bootstrap: str,
    group: str,
    *,
    topic: str = TOPIC,
    queue: WorkQueue | None = None,
    max_messages: int | None = None,
    idle_exit_s: float | None = None,
    max_seconds: float | None = None,
    on_alert: Callable[[str, dict[str, Any]], None] | None = None,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 3_000,
    security: Mapping[str, Any] | None = None,
) -> WorkQueue:
    """Read ``topic`` in consumer group ``group`` into ``queue`` until a limit is reached.

    Offsets are committed after each polled batch is in the queue. Stops after
    ``max_messages`` records, ``idle_exit_s`` without a record (once one has arrived),
    or ``max_seconds``.
    """
    from kafka import KafkaConsumer

    queue = queue if queue is not None else WorkQueue()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap.split(","),
        group_id=group,
        client_id=f"{group}-callcentre",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        **dict(security if security is not None else security_from_env()),
    )
    started = last = time.monotonic()
    received = 0
    try:
        while True:
            now = time.monotonic()
            if max_seconds is not None and now - started >= max_seconds:
                break
            if idle_exit_s is not None and received and now - last >= idle_exit_s:
                break
            batches = consumer.poll(timeout_ms=500)
            records = [r for batch in batches.values() for r in batch]
            for record in records:
                received += 1
                try:
                    alert = json.loads(record.value)
                    outcome = queue.offer(alert)
                except (ValueError, KeyError, TypeError):
                    outcome, alert = "undecodable", {}
                    queue.counts["undecodable"] = queue.counts.get("undecodable", 0) + 1
                if on_alert is not None:
                    on_alert(outcome, alert)
            if records:
                last = time.monotonic()
                consumer.commit()  # after the batch is in the queue: at least once
            if max_messages is not None and received >= max_messages:
                break
    finally:
        consumer.close()
    return queue


def format_queue(items: Iterable[Mapping[str, Any]]) -> str:
    """The work queue as a table, without phone numbers, and when each subscriber answers.

    >>> print(format_queue([{"zone": "red", "value_at_risk": 88.0, "segment": "consumer",
    ...     "subscriber_id": "s-1", "reasons": [{"summary": "outgoing calls fell"}],
    ...     "contact": {"summary": "answers 78% of calls on weekdays 18:00-21:00"}}]))
    ... # doctest: +NORMALIZE_WHITESPACE
      #  zone    value/mo  segment      who            manager  why
      1  red           88  consumer     s-1            -        outgoing calls fell
         when: answers 78% of calls on weekdays 18:00-21:00
    """
    lines = [f"{'#':>3}  {'zone':<6} {'value/mo':>9}  {'segment':<12} {'who':<14} "
             f"{'manager':<8} why"]
    for rank, a in enumerate(items, 1):
        who = a.get("subscriber_id") or f"group {a.get('group_id')}"
        why = a["reasons"][0]["summary"] if a.get("reasons") else ""
        lines.append(
            f"{rank:>3}  {a['zone']:<6} {float(a['value_at_risk']):>9,.0f}  "
            f"{str(a.get('segment')):<12} {who:<14} {str(a.get('account_manager') or '-'):<8} "
            f"{why[:70]}"
        )
        contact = a.get("contact")
        if isinstance(contact, Mapping) and contact.get("summary"):
            lines.append(f"{'':>3}  when: {contact['summary']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", ""),
                        help="host:port[,...] (default: $KAFKA_BOOTSTRAP)")
    parser.add_argument("--topic",
                        default=os.environ.get("CHURNWATCH_TOPIC_PREFIX", "") + TOPIC)
    parser.add_argument("--group", default="callcentre", help="this tool's consumer group")
    parser.add_argument("--max-messages", type=int, default=None)
    parser.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                        help="stop after this long without a message (once one arrived)")
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=3_000)
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error("set KAFKA_BOOTSTRAP or pass --bootstrap")

    def show(outcome: str, alert: dict[str, Any]) -> None:
        if outcome in ("opened", "updated", "closed"):
            who = alert.get("subscriber_id") or f"group {alert.get('group_id')}"
            print(f"{outcome:<8} {alert['status']:<9} {alert['zone']:<6} {who}", flush=True)

    queue = WorkQueue()
    try:
        consume(
            args.bootstrap, args.group, topic=args.topic, queue=queue,
            max_messages=args.max_messages, idle_exit_s=args.idle_exit,
            max_seconds=args.max_seconds, on_alert=show,
            session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=args.heartbeat_interval_ms,
        )
    except KeyboardInterrupt:
        pass  # Ctrl-C: show what was gathered
    counts = ", ".join(f"{k} {v}" for k, v in sorted(queue.counts.items()))
    print(f"\nwork queue ({len(queue.items())} open; {counts}):")
    print(format_queue(queue.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
