"""The agent: batches of raw input messages -> validation -> detectors -> alerts, state.

:class:`BatchProcessor` does the work and knows nothing of Faust's stream machinery (unit
tests drive it with plain message objects); :func:`register` wires it to an app as one
agent over the three input topics.

Per batch (``stream.take_events(batch_size, within=batch_within_s)``):

1. every message is validated; a rejection becomes a dead letter (original bytes, topic,
   partition, offset, reason), counted by reason; the agent keeps going;
2. accepted events go to the engine of their input partition (one engine per partition,
   each over :class:`stream.tables.PartitionView` s of the state tables, so each partition
   keeps its own population baseline, as ``churnwatch replay`` does);
3. each state key touched is written to its table and changelog once;
4. alerts (stamped with ``emitted_at``) go to the alert topic keyed by subscriber (group
   alerts by group), dead letters to the dead-letter topic;
5. Faust acks the batch's offsets only after all that, and flushes the producer before
   it commits them: at-least-once, with deterministic ``alert_id`` s for deduplication.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from stream.validation import Accepted, Validator, dead_letter

log = logging.getLogger(__name__)

AGENT_NAME = "churnwatch-detect"


class EngineLike(Protocol):
    counters: Counter[str]

    def process(self, kind: str, event: dict[str, Any]) -> list[dict[str, Any]]: ...


EngineFactory = Callable[[int], EngineLike]


class MessageLike(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class BatchResult:
    alerts: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, dict[str, Any]]] = field(default_factory=list)
    accepted: int = 0
    state_writes: int = 0


def alert_key(alert: dict[str, Any]) -> str | None:
    """The alert topic key: the group for group alerts, else the subscriber."""
    if alert.get("kind") == "group" and alert.get("group_id"):
        return str(alert["group_id"])
    sid = alert.get("subscriber_id")
    return None if sid is None else str(sid)


class BatchProcessor:
    """Validate, detect and collect the output of one batch of raw messages."""

    def __init__(
        self,
        tables: Any,
        kinds: dict[str, str],
        engine_factory: EngineFactory,
        metrics: Any = None,
        validator: Validator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tables = tables
        self.kinds = kinds
        self.engine_factory = engine_factory
        self.engines: dict[int, EngineLike] = {}
        self._reported: dict[int, Counter[str]] = {}
        self.metrics = metrics
        self.validator = validator or Validator()
        self.clock = clock
        self.newest_event_s = float("-inf")

    def engine(self, partition: int) -> EngineLike:
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.engines[partition] = self.engine_factory(partition)
            self._reported[partition] = Counter()
        return engine

    def process(self, messages: Iterable[MessageLike]) -> BatchResult:
        result = BatchResult()
        kinds = self.kinds
        check = self.validator.check
        metrics = self.metrics
        outcomes: Counter[tuple[str, str]] = Counter()
        reasons: Counter[str] = Counter()
        newest = self.newest_event_s
        try:
            for m in messages:
                kind = kinds[m.topic]
                raw = m.value if m.value is not None else b""
                verdict = check(kind, raw)
                if not isinstance(verdict, Accepted):
                    outcomes[(m.topic, "rejected")] += 1
                    reasons[verdict.reason] += 1
                    result.dead_letters.append(
                        (m.key, dead_letter(raw, m.topic, m.partition, m.offset, verdict))
                    )
                    continue
                if verdict.epoch_s > newest:
                    newest = verdict.epoch_s
                try:
                    alerts = self.engine(m.partition).process(kind, verdict.event)
                except Exception:  # a detector bug must not stop the partition: log, count
                    log.exception("engine failed on %s[%d]@%d", m.topic, m.partition, m.offset)
                    outcomes[(m.topic, "engine_error")] += 1
                    continue
                outcomes[(m.topic, "accepted")] += 1
                for alert in alerts:
                    result.alerts.append((alert_key(alert), alert))
            result.state_writes = self.tables.flush()
        except BaseException:
            self.tables.discard()
            raise
        self.newest_event_s = newest
        result.accepted = sum(v for (_, o), v in outcomes.items() if o == "accepted")
        stamp = datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="milliseconds")
        for _, alert in result.alerts:
            alert["emitted_at"] = stamp
        if metrics is not None:
            self._record(metrics, outcomes, reasons, result)
        return result

    def _record(
        self,
        metrics: Any,
        outcomes: Counter[tuple[str, str]],
        reasons: Counter[str],
        result: BatchResult,
    ) -> None:
        for (topic, outcome), n in outcomes.items():
            metrics.events.labels(topic=topic, outcome=outcome).inc(n)
        for reason, n in reasons.items():
            metrics.dead_letters.labels(reason=reason).inc(n)
        for _, alert in result.alerts:
            metrics.alerts.labels(kind=str(alert.get("kind")), zone=str(alert.get("zone"))).inc()
            for reason in alert.get("reasons") or ():
                metrics.alert_reasons.labels(code=str(reason.get("code"))).inc()
        for partition, engine in self.engines.items():
            seen = self._reported[partition]
            now = Counter(engine.counters)
            delta = {k: v - seen.get(k, 0) for k, v in now.items() if v != seen.get(k, 0)}
            if delta:
                metrics.add_engine_counters(delta)
                self._reported[partition] = now
        if self.newest_event_s > float("-inf"):
            metrics.event_time_lag.set(max(0.0, self.clock() - self.newest_event_s))
        metrics.subscribers_tracked.set(len(self.tables.subscriber_index))
        metrics.table_keys.labels(table="subscribers").set(len(self.tables.subscribers.data))
        metrics.table_keys.labels(table="population").set(len(self.tables.population.data))


def register(app: Any, topics: Any, processor: BatchProcessor, settings: Any) -> Any:
    """Define the agent on ``app``; returns it."""
    batch_size = settings.batch_size
    within = settings.batch_within_s
    metrics = processor.metrics
    alerts_topic = topics.alerts
    dead_topic = topics.deadletter

    async def detect(stream: Any) -> None:
        async for events in stream.take_events(batch_size, within=within):
            started = time.perf_counter()
            result = processor.process(e.message for e in events)
            for key, alert in result.alerts:
                await alerts_topic.send(key=None if key is None else key.encode(), value=alert)
            for key, letter in result.dead_letters:
                await dead_topic.send(key=key, value=letter)
            if metrics is not None:
                metrics.batch_seconds.observe(time.perf_counter() - started)
                metrics.batch_events.observe(len(events))

    return app.agent(topics.inputs, name=AGENT_NAME, concurrency=1)(detect)
