"""The calibration stage on a Faust app: its topics, table and agent
(:class:`stream.service.calibration_stage.CalibrationStage` does the work)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from stream.service.calibration_stage import (
    AGENT_NAME,
    CALIBRATION_TABLE,
    TICK_S,
    CalibrationStage,
    StageOutput,
    uncalibrated,
)
from stream.service.dead_letters import DeadLetters
from stream.service.faust_internals.batch import commit, current
from stream.service.faust_internals.gate import BatchGate, gate_for_agent
from stream.service.redaction import stack

log = logging.getLogger(__name__)


class TableStore(MutableMapping[str, Any]):
    """The stage's view of its one-partition table, through a batch cache."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def __getitem__(self, key: str) -> Any:
        return self.cache.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.cache.set(0, key, value)

    def __delitem__(self, key: str) -> None:
        self.cache.delete(0, key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.cache.contains(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self.cache.get(key)
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.cache.data))

    def __len__(self) -> int:
        return len(self.cache.data)


@dataclass
class Calibration:
    """What :func:`declare` put on the app."""

    topic: Any  #: churn.calibration + churn.outcomes, raw (the agent's input)
    table: Any
    stage: CalibrationStage
    agent: Any = None
    alerts_topic: Any = None
    deadletter_topic: Any = None
    cache: Any = None
    handle: Any = None


def declare(app: Any, settings: Any, *, alerts_topic: Any, deadletter_topic: Any,
            metrics: Any = None, gate: BatchGate | None = None) -> Calibration:
    """Declare the calibration stage on ``app``: its input topic, table and agent."""
    from stream.service.codecs import RAW
    from stream.service.faust_internals.plain_table import plain_table
    from stream.service.tables import BatchCache, PartitionIndex
    from stream.service.write_ahead import WalReader, send_records, wal_chunks

    topic = app.topic(settings.topic_calibration, settings.topic_outcomes, partitions=1,
                      replicas=settings.replication, key_type=bytes, key_serializer=RAW,
                      value_type=bytes, value_serializer=RAW)
    table = plain_table(app, CALIBRATION_TABLE, partitions=1, key_type=str,
                        help="The calibration learner and stage (one partition).")
    wal = table.wal = WalReader()

    async def overlay() -> None:
        # The last complete write-ahead copy over the recovered keys: the batch whole.
        for _, subs, _ in wal.copies():
            for key, value in subs.items():
                if value is None:
                    table.data.pop(key, None)
                else:
                    table.data[key] = value
        wal.latest.clear()
        wal.pending.clear()

    table.on_recover(overlay)
    cache = BatchCache(table, PartitionIndex())
    stage = CalibrationStage(
        TableStore(cache), settings.outcome_learner, settings.partitions,
        keys=lambda: list(table.data),
        hold_s=settings.calibration_hold_s, idle_s=settings.calibration_idle_s,
        max_held=settings.calibration_max_held,
        topics=(settings.topic_calibration, settings.topic_outcomes),
        tz_offset_hours=settings.tz_offset_hours)
    cal = Calibration(topic=topic, table=table, stage=stage, alerts_topic=alerts_topic,
                      deadletter_topic=deadletter_topic, cache=cache)
    if gate is None:
        gate = gate_for_agent(app, AGENT_NAME)
    lock = gate.lock
    dead_letters = DeadLetters(deadletter_topic, metrics)

    async def handle(events: list[Any]) -> None:
        async with lock:
            if gate.closed:  # stopping: not acked, so delivered again
                return
            events, _ = current(app, events)
            if not events and not stage.heap:
                return
            try:
                out = stage.process([(e.message.topic, e.message.offset, e.message.value)
                                     for e in events])
            except Exception as exc:  # a model bug must not stop the stage, nor lose alerts
                log.error("calibration stage failed on a batch of %d: %s", len(events),
                          stack(exc))
                cache.discard()
                stage.reset()
                # The batch's alerts go out as the engines made them (counted); its exits
                # and outcomes are lost to the model, not to anyone waiting for an alert.
                raw_alerts = uncalibrated(e.message.value for e in events
                                          if e.message.topic == settings.topic_calibration)
                await commit(app, [await alerts_topic.send(
                    key=str(a["subscriber_id"]).encode(), value=a) for a in raw_alerts],
                    acks=[e.ack for e in events])
                if metrics is not None:
                    metrics.calibration_uncalibrated.inc(len(raw_alerts))
                return
            sent = []
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            for alert in out.alerts:
                alert["emitted_at"] = stamp
                sent.append(await alerts_topic.send(
                    key=str(alert["subscriber_id"]).encode(), value=alert))
            sent += await dead_letters.send(out.dead_letters)
            await commit(app, sent, state, acks=[e.ack for e in events])
            if metrics is not None:
                _record(metrics, stage, out)

    def state() -> list[Callable[[], None]]:
        records = cache.drain()
        if not records:
            return []
        # The batch's keys land together: a write-ahead copy, then key by key.
        chunks = wal_chunks(os.urandom(6).hex(), 0, [(b"s", k, v) for _, k, v in records])
        return [partial(send_records, table, [(0, k, v) for k, v in chunks]),
                partial(send_records, table, records)]

    async def calibrate(stream: Any) -> None:
        async for events in stream.noack_take(500, within=0.05):
            await handle(events)

    async def tick() -> None:
        # Held items may be due (hold_s) with no message coming.
        if stage.loaded and stage.heap:
            await handle([])

    async def on_partitions_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        async with lock:  # after the batch in hand
            cache.discard()
            stage.reset()

    async def on_partitions_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        async with lock:  # loaded from the recovered table on the next batch
            stage.reset()

    app.on_partitions_revoked.connect(on_partitions_revoked)
    app.on_partitions_assigned.connect(on_partitions_assigned)
    app.timer(TICK_S, name="churnwatch-calibration-tick")(tick)
    cal.agent = app.agent(topic, name=AGENT_NAME, concurrency=1)(calibrate)
    cal.handle = handle
    return cal


LEARNED = "labels_"


def _record(metrics: Any, stage: CalibrationStage, out: StageOutput) -> None:
    """Metrics of one batch (counters as deltas of the learner's and stage's own)."""
    for alert in out.alerts:
        metrics.alerts.labels(kind="subscriber", zone=str(alert.get("zone"))).inc()
        for reason in alert.get("reasons") or ():
            metrics.alert_reasons.labels(code=str(reason.get("code"))).inc()
    for outcome, segment, zone, reason in out.outcomes:
        metrics.outcomes.labels(outcome=outcome, segment=segment, zone=zone,
                                reason=reason).inc()
    for _, letter in out.dead_letters:
        metrics.dead_letters.labels(reason=str(letter["reason"])).inc()
    reported = stage.reported
    for name, value in stage.totals().items():
        delta = value - reported.get(name, 0)
        if delta <= 0:
            continue
        reported[name] = value
        if name.startswith("l." + LEARNED):
            _, source, label = name[2:].split("_")
            metrics.labels_learned.labels(source=source, label=label).inc(delta)
        elif name == "l.late_labels":
            metrics.late_labels.inc(delta)
        elif name == "s.forced":
            metrics.calibration_forced.inc(delta)
        elif name == "s.released_idle":
            metrics.calibration_idle.inc(delta)
        elif name == "s.uncalibrated":
            metrics.calibration_uncalibrated.inc(delta)
    metrics.calibration_held.set(stage.held)
