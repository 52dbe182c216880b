"""Prometheus metrics of a worker: ours (``churnwatch_*``) and Faust's sensor (``faust_*``).

Labels never carry a subscriber id, a phone number or any other per-subscriber value:
only topic names, outcomes, reasons, kinds, zones, reason codes and table names. Labels
whose values come from input data (a profile's segment, an outcome, a zone or reason code
an alert carries) are taken from a closed vocabulary (:data:`VOCABULARY`): any other value
is counted as ``other``, so a hostile profile can neither put a number into a label nor
grow the number of series.
The registry is passed in, so tests can build as many workers as they like.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: The value every label outside its vocabulary is counted under.
OTHER = "other"
#: Label name -> the values it may take (the contract's vocabulary; docs/contracts.md,
#: docs/alerts.md). ``unknown``: a subscriber with no profile yet, or an outcome whose
#: alert the calibration stage no longer knows.
VOCABULARY: dict[str, frozenset[str]] = {
    "segment": frozenset({"consumer", "sme", "key_account", "government", "unknown"}),
    "tier": frozenset({"diamond", "gold", "silver", "none"}),
    "zone": frozenset({"blue", "green", "yellow", "red", "white", "unknown"}),
    "kind": frozenset({"subscriber", "group"}),
    "code": frozenset({"usage_drop", "spend_drop", "forwarding_off_net", "silent",
                       "bill_drop", "stay_away", "resolved", "closed", "group_context", "none",
                       "unknown"}),
    "reason": frozenset({"usage_drop", "spend_drop", "forwarding_off_net", "silent",
                         "bill_drop", "stay_away", "resolved", "group_context", "none", "unknown",
                         # dead-letter reasons (stream.contracts.validation, outcomes)
                         "oversized", "not_utf8", "malformed_json", "schema", "absurd_value",
                         "null_value", "key_mismatch", "wrong_partition", "too_late",
                         "unknown_alert",
                         "subscriber_mismatch"}),
    "outcome": frozenset({"retained", "unreachable", "not_at_risk", "churned", "no_answer",
                          # churnwatch_events_total outcomes
                          "accepted", "rejected", "redelivered", "hole", "engine_error"}),
}


def closed(name: str, value: object) -> str:
    """``value`` as a label ``name`` may carry: itself if in the vocabulary, else ``other``
    (labels without a vocabulary pass unchanged: they never come from input data).

    >>> closed("segment", "sme"), closed("segment", "13912345678"), closed("table", "x")
    ('sme', 'other', 'x')
    """
    allowed = VOCABULARY.get(name)
    text = str(value)
    return text if allowed is None or text in allowed else OTHER


class ClosedLabels:
    """A labelled metric whose ``labels(...)`` maps every value through :func:`closed`."""

    def __init__(self, metric: Counter | Gauge) -> None:
        self.metric = metric

    def labels(self, **values: object) -> Any:
        return self.metric.labels(**{k: closed(k, v) for k, v in values.items()})

    def collect(self) -> Any:
        return self.metric.collect()


BATCH_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """Our metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = ClosedLabels(Counter(
            "churnwatch_events_total",
            "Input messages consumed, by topic and outcome (accepted, rejected, "
            "redelivered, hole, engine_error).",
            ["topic", "outcome"],
            registry=registry,
        ))
        self.dead_letters = ClosedLabels(Counter(
            "churnwatch_dead_letters_total",
            "Messages written to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        ))
        self.alerts = ClosedLabels(Counter(
            "churnwatch_alerts_total",
            "Alerts published, by kind (subscriber, group) and zone.",
            ["kind", "zone"],
            registry=registry,
        ))
        self.alert_reasons = ClosedLabels(Counter(
            "churnwatch_alert_reasons_total",
            "Reason codes carried by published alerts.",
            ["code"],
            registry=registry,
        ))
        self.engine_events = Counter(
            "churnwatch_engine_events_total",
            "Engine counters (late, duplicate, unknown_profile, ...), by name.",
            ["counter"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "churnwatch_batch_seconds",
            "Time to process one agent batch (validate, detect, write state, publish).",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=registry,
        )
        self.batch_events = Histogram(
            "churnwatch_batch_events",
            "Messages per agent batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=registry,
        )
        self.event_time_lag = Gauge(
            "churnwatch_event_time_lag_seconds",
            "Wall clock minus the newest event time this worker has processed.",
            registry=registry,
        )
        self.events_held = Gauge(
            "churnwatch_events_held",
            "Accepted events waiting for their partition's event-time order to settle.",
            registry=registry,
        )
        self.events_out_of_order = Counter(
            "churnwatch_events_out_of_order_total",
            "Accepted events that came after their partition had released a later one "
            "(held by a producer beyond CHURNWATCH_ORDER_MARGIN_S, or late): processed "
            "in another order than replay's.",
            registry=registry,
        )
        self.events_forced = Counter(
            "churnwatch_events_forced_total",
            "Accepted events released before their partition's event-time order settled, "
            "because the reorder held CHURNWATCH_ORDER_MAX_HELD events: processed in "
            "another order than replay's.",
            registry=registry,
        )
        self.order_lag = Gauge(
            "churnwatch_order_lag_seconds",
            "Event time between the newest event read and the oldest event held for "
            "event-time order (the largest over this worker's partitions).",
            registry=registry,
        )
        self.inputs_held_back = Gauge(
            "churnwatch_inputs_held_back",
            "Input topic-partitions not fetched for now: they ran ahead of the other input "
            "topics of their partition in event time.",
            registry=registry,
        )
        self.subscribers_tracked = Gauge(
            "churnwatch_subscribers_tracked",
            "Subscribers with state in this worker's active partitions (on RocksDB, until "
            "a partition's first day close, by RocksDB's estimate).",
            registry=registry,
        )
        self.table_keys = Gauge(
            "churnwatch_table_keys",
            "Keys per table (active and standby partitions; on RocksDB a partition whose "
            "keys are not read yet, until its first day close, by RocksDB's estimate).",
            ["table"],
            registry=registry,
        )
        self.open_alerts = ClosedLabels(Gauge(
            "churnwatch_open_alerts",
            "Subscribers in an open episode, by segment and zone, from the alerts this "
            "worker published (open/escalated add, resolved or a port-out removes); "
            "sum over workers.",
            ["segment", "zone"],
            registry=registry,
        ))
        self.consumer_lag = Gauge(
            "churnwatch_consumer_lag",
            "Messages behind the high watermark, summed over this worker's assigned "
            "partitions of each input topic.",
            ["topic"],
            registry=registry,
        )
        self.dead_letter_failures = Counter(
            "churnwatch_dead_letter_failures_total",
            "Dead letters that could not be published (too large for the producer or the "
            "broker, a broker error); their input was acked anyway. See the worker's log.",
            registry=registry,
        )
        self.partitions_assigned = Gauge(
            "churnwatch_partitions_assigned",
            "Input partitions this worker processes.",
            registry=registry,
        )

        # The calibration stage (docs/outcomes.md). The unreachable share is
        # sum(outcomes{outcome=~"unreachable|no_answer"}) / sum(outcomes); precision by
        # zone or reason is (retained + churned) / (retained + churned + not_at_risk).
        self.outcomes = ClosedLabels(Counter(
            "churnwatch_outcomes_total",
            "Call-centre outcomes taken by the calibration stage, by outcome, the alerted "
            "subscriber's segment, the zone the alert was published in and its leading "
            "reason code (dead letters not included).",
            ["outcome", "segment", "zone", "reason"],
            registry=registry,
        ))
        self.labels_learned = Counter(
            "churnwatch_calibration_labels_total",
            "Labels the calibration model learned, by source (outcome, exit, horizon) and "
            "label (pos: the subscriber was at risk, neg: a false alarm).",
            ["source", "label"],
            registry=registry,
        )
        self.late_labels = Counter(
            "churnwatch_calibration_late_labels_total",
            "Labels dated in a day the model had already learned (learned a day late).",
            registry=registry,
        )
        self.calibration_held = Gauge(
            "churnwatch_calibration_held",
            "Alerts, exits and outcomes the calibration stage holds for replay's order.",
            registry=registry,
        )
        self.calibration_forced = Counter(
            "churnwatch_calibration_forced_total",
            "Items released out of order because the stage held more than its limit.",
            registry=registry,
        )
        self.calibration_idle = Counter(
            "churnwatch_calibration_released_idle_total",
            "Items released without waiting for partitions that sent nothing for "
            "CHURNWATCH_CALIBRATION_IDLE_S seconds (no traffic, or a stuck worker).",
            registry=registry,
        )
        self.calibration_uncalibrated = Counter(
            "churnwatch_calibration_uncalibrated_total",
            "Subscriber alerts the calibration stage published as the engine made them "
            "because it could not score them (see the worker's log).",
            registry=registry,
        )

    def add_engine_counters(self, delta: Mapping[str, int]) -> None:
        for name, value in delta.items():
            if value:
                self.engine_events.labels(counter=str(name)).inc(value)


def install_faust_sensor(app: Any, registry: CollectorRegistry) -> None:
    """Faust's Prometheus monitor (``faust_*`` metrics) on ``app``, into ``registry``."""
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

    app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(registry, "faust"))


def serve(registry: CollectorRegistry, host: str, port: int) -> Any:
    """Serve ``registry`` at ``http://host:port/metrics``; returns the server (``.shutdown()``)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
