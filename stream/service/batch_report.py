"""A batch's figures, reported to the worker's Prometheus metrics
(:mod:`stream.service.metrics`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from stream.service.ordering import Reorder


class Reported(Protocol):
    """What a report reads of the processor (:class:`stream.service.processor.BatchProcessor`)."""

    engines: dict[int, Any]
    newest_event_s: float
    clock: Callable[[], float]
    reorder: Reorder
    tables: Any


class BatchReport:
    """Counts each batch of a :class:`~stream.service.processor.BatchProcessor` once, and
    keeps ``churnwatch_open_alerts`` to the open episodes of the alerts published."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        #: subscriber -> (partition, segment, zone) of an open episode this worker alerted
        self.open_episodes: dict[str, tuple[int, str, str]] = {}
        #: partition -> the engine's counters as last reported
        self._reported: dict[int, Counter[str]] = {}
        self._out_of_order_reported = 0
        self._forced_reported = 0

    def reset(self) -> None:
        """A rebalance: the engines start again, and their episodes are not ours."""
        self._reported.clear()
        for _, segment, zone in self.open_episodes.values():
            self.metrics.open_alerts.labels(segment=segment, zone=zone).dec()
        self.open_episodes.clear()

    def batch(self, processor: Reported, outcomes: Counter[tuple[str, str]],
              reasons: Counter[str], alerts: list[tuple[str | None, dict[str, Any]]],
              episodes: list[tuple[int, dict[str, Any]]]) -> None:
        """Report one batch of ``processor``: its outcomes by topic, dead letters by
        reason, alerts, the engines' counters, the reorder and the tables."""
        metrics = self.metrics
        for (topic, outcome), n in outcomes.items():
            metrics.events.labels(topic=topic, outcome=outcome).inc(n)
        for reason, n in reasons.items():
            metrics.dead_letters.labels(reason=reason).inc(n)
        for _, alert in alerts:
            metrics.alerts.labels(kind=str(alert.get("kind")), zone=str(alert.get("zone"))).inc()
            for reason in alert.get("reasons") or ():
                metrics.alert_reasons.labels(code=str(reason.get("code"))).inc()
        for partition, engine in processor.engines.items():
            seen = self._reported.setdefault(partition, Counter())
            now = Counter(engine.counters)
            delta = {k: v - seen.get(k, 0) for k, v in now.items() if v != seen.get(k, 0)}
            if delta:
                metrics.add_engine_counters(delta)
                self._reported[partition] = now
        if processor.newest_event_s > float("-inf"):
            metrics.event_time_lag.set(max(0.0, processor.clock() - processor.newest_event_s))
        metrics.events_held.set(len(processor.reorder))
        late = processor.reorder.out_of_order - self._out_of_order_reported
        if late:
            metrics.events_out_of_order.inc(late)
            self._out_of_order_reported += late
        forced = processor.reorder.forced - self._forced_reported
        if forced:
            metrics.events_forced.inc(forced)
            self._forced_reported += forced
        metrics.order_lag.set(processor.reorder.lag_s())
        # The indexes, not len(store): a RocksDB store counts by walking every key (and its
        # partitions not read yet are counted by RocksDB's estimate).
        subscribers = processor.tables.subscriber_index.count()
        metrics.subscribers_tracked.set(subscribers)
        metrics.table_keys.labels(table="subscribers").set(subscribers)
        metrics.table_keys.labels(table="population").set(
            processor.tables.population_index.count())
        if episodes:
            self._track_episodes(episodes)

    def _track_episodes(self, episodes: list[tuple[int, dict[str, Any]]]) -> None:
        """Keep ``churnwatch_open_alerts`` to the open episodes of the alerts published."""
        gauge = self.metrics.open_alerts
        open_ = self.open_episodes
        for partition, what in episodes:
            sid = str(what.get("subscriber_id"))
            before = open_.pop(sid, None)
            if before is not None:
                gauge.labels(segment=before[1], zone=before[2]).dec()
            if what.get("status") in ("open", "escalated"):
                now = (partition, str(what.get("segment") or "unknown"), str(what.get("zone")))
                open_[sid] = now
                gauge.labels(segment=now[1], zone=now[2]).inc()
