"""Hostile input at the processor: routing checks, null values, closed labels, quiet logs."""

from __future__ import annotations

import logging
import re
from collections import Counter
from types import SimpleNamespace as NS
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stream.contracts.partitioning import partition_of
from stream.service.metrics import OTHER, VOCABULARY, Metrics
from stream.service.processor import BatchProcessor
from stream.service.redaction import install, uninstall
from tests.integration.helpers import call_event
from tests.service.test_processor import KINDS, Tables

CALLS, SUBS = "telecom.calls", "telecom.subscribers"
PARTITIONS = 4
NUMBER = "13912345678"


def _msg(topic: str, offset: int, value: bytes | None, key: bytes | None,
         partition: int) -> NS:
    return NS(topic=topic, partition=partition, offset=offset, key=key, value=value)


def _call(i: int, sid: str, offset: int | None = None, **kw: Any) -> NS:
    event = call_event(i, sid)
    partition = kw.pop("partition", partition_of(sid, PARTITIONS))
    key = kw.pop("key", sid.encode())
    return _msg(CALLS, i if offset is None else offset, orjson.dumps(event), key, partition)


class ProfileAlerts:
    """An engine that opens an alert for every profile, in the profile's segment."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.seen: list[dict[str, Any]] = []

    def process(self, kind: str, event: dict[str, Any], ts: float | None = None) -> list:
        self.seen.append(event)
        if kind != "subscribers":
            return []
        return [{"kind": "subscriber", "status": "open", "subscriber_id": event["subscriber_id"],
                 "segment": event["segment"], "zone": "red",
                 "reasons": [{"code": "usage_drop"}]}]


def _processor(engine: Any, metrics: Metrics | None = None) -> BatchProcessor:
    return BatchProcessor(Tables(), KINDS, lambda p: engine, metrics=metrics,
                          partitions=PARTITIONS)


def test_key_and_partition_are_checked_and_a_null_value_is_its_own_reason(caplog) -> None:
    engine = ProfileAlerts()
    proc = _processor(engine)
    sid = "s-00042"
    right = partition_of(sid, PARTITIONS)
    wrong = (right + 1) % PARTITIONS
    items = [
        _call(0, sid),                                  # good
        _call(1, sid, key=b"s-00041"),                  # another subscriber's key
        _call(2, sid, key=None),                        # no key
        _call(3, sid, offset=0, partition=wrong),       # off murmur2
        _call(4, sid, offset=1, partition=wrong),       # again: warned once
        _msg(CALLS, 3, None, sid.encode(), right),      # a null value
        _msg(CALLS, 4, b"", sid.encode(), right),       # an empty one
    ]
    with caplog.at_level(logging.WARNING):
        result = proc.process(items, None)
    reasons = [letter["reason"] for _, letter in result.dead_letters]
    assert reasons == ["key_mismatch", "key_mismatch", "wrong_partition", "wrong_partition",
                       "null_value", "malformed_json"]
    assert [e["event_id"] for e in engine.seen] == ["c0"]  # only the good one processed
    assert len(result.done) == len(items)  # every one acked
    wrong_letter = result.dead_letters[2][1]
    assert "murmur2_random" in wrong_letter["detail"] and sid not in wrong_letter["detail"]
    assert result.dead_letters[4][1]["raw_size"] == 0
    warnings = [r.getMessage() for r in caplog.records if "murmur2" in r.getMessage()]
    assert len(warnings) == 1 and CALLS in warnings[0] and sid not in warnings[0]


def test_without_a_partition_count_only_the_key_is_checked() -> None:
    engine = ProfileAlerts()
    proc = BatchProcessor(Tables(), KINDS, lambda p: engine)
    result = proc.process([_call(0, "s1", partition=3), _call(1, "s1", key=b"s2")], None)
    assert [letter["reason"] for _, letter in result.dead_letters] == ["key_mismatch"]


@pytest.mark.parametrize("segment", [NUMBER, "sme\x07\n\x00", "consumer\r\nzone=\"red\"",
                                     "x" * 32, "其他"])
def test_hostile_profile_segments_are_counted_as_other(segment: str) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    proc = _processor(ProfileAlerts(), metrics)
    profiles = [{"subscriber_id": sid, "msisdn": NUMBER, "account_id": None, "segment": seg}
                for sid, seg in (("s1", segment), ("s2", "sme"))]
    items = [_msg(SUBS, i, orjson.dumps(p), p["subscriber_id"].encode(),
                  partition_of(p["subscriber_id"], PARTITIONS)) for i, p in enumerate(profiles)]
    result = proc.process(items, None)
    assert not result.dead_letters  # valid profiles: the segment is free text
    assert {a["segment"] for _, a in result.alerts} == {segment, "sme"}  # alerts keep it
    text = generate_latest(registry).decode()
    segments = set(re.findall(r'churnwatch_open_alerts\{segment="([^"]*)"', text))
    assert segments == {OTHER, "sme"}
    assert NUMBER not in text


def test_every_labelled_metric_maps_unknown_values_to_other() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    hostile = f"{NUMBER}\x07"
    metrics.outcomes.labels(outcome=hostile, segment=hostile, zone=hostile, reason=hostile).inc()
    metrics.alerts.labels(kind=hostile, zone=hostile).inc()
    metrics.alert_reasons.labels(code=hostile).inc()
    metrics.open_alerts.labels(segment=hostile, zone="red").inc()
    metrics.dead_letters.labels(reason=hostile).inc()
    metrics.events.labels(topic=CALLS, outcome=hostile).inc()
    text = generate_latest(registry).decode()
    assert NUMBER not in text and "\\x07" not in text and "\x07" not in text
    for label, allowed in VOCABULARY.items():
        values = set(re.findall(rf'[{{,]{label}="([^"]*)"', text))
        assert values <= allowed | {OTHER}, (label, values - allowed)


class Failing:
    counters: Counter[str] = Counter()

    def process(self, kind: str, event: dict[str, Any], ts: float | None = None) -> list:
        raise KeyError(f"{event['subscriber_id']} {NUMBER}")


def test_an_engine_error_logs_the_position_and_event_id_not_the_subscriber(caplog) -> None:
    proc = _processor(Failing())
    with caplog.at_level(logging.ERROR):
        result = proc.process([_call(7, "s-00042")], None)
    assert len(result.done) == 1
    (record,) = [r for r in caplog.records if "engine failed" in r.getMessage()]
    text = record.getMessage() + (caplog.text or "")
    assert f"{CALLS}[{partition_of('s-00042', PARTITIONS)}]@7" in text and "event c7" in text
    assert "KeyError" in text and "test_hostile_input.py" in text  # the stack, for a fix
    assert "s-00042" not in text and NUMBER not in text


def test_installed_redaction_covers_debug_logs_of_libraries(caplog) -> None:
    install()
    try:
        logger = logging.getLogger("faust.tables.base")
        with caplog.at_level(logging.DEBUG, logger="faust"):
            logger.debug("send changelog key=%r value=%r", b"s-00042",
                         orjson.dumps({"msisdn": NUMBER}))
            try:
                raise ValueError(f"bad {NUMBER}")
            except ValueError:
                logging.getLogger("aiokafka").exception("offset 12345678 of t[2]")
    finally:
        uninstall()
    assert "send changelog key=<redacted> value=<redacted>" in caplog.text
    assert "offset 12345678 of t[2]" in caplog.text and "ValueError: bad <number>" in caplog.text
    assert NUMBER not in caplog.text and "s-00042" not in caplog.text


def test_redacted_records_format_under_the_worker_formatter() -> None:
    """Faust's worker logs through mode's formatter, which wraps arguments that are not a
    tuple in one: a redacted record must still format (and not as a logging error)."""
    import io

    from mode.utils.logging import DEFAULT_FORMAT, ExtensionFormatter

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(ExtensionFormatter(stream=out, fmt=DEFAULT_FORMAT))
    handler.handleError = lambda record: out.write("LOGGING ERROR\n")  # type: ignore[method-assign]
    logger = logging.getLogger("churnwatch.test.formatter")
    logger.addHandler(handler)
    install()
    try:
        logger.warning("assigned %d partitions, %s", 4, f"msisdn {NUMBER}")
        logger.warning("no arguments at all: 50% done")
    finally:
        uninstall()
        logger.removeHandler(handler)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    assert "LOGGING ERROR" not in out.getvalue()
    assert lines[0].endswith("assigned 4 partitions, msisdn <number>")
    assert lines[1].endswith("no arguments at all: 50% done")
