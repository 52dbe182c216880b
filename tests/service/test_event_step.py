"""The per-event step a worker and ``churnwatch replay`` share (stream.service.event_step)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from detectors.days import Clock, parse_ts
from stream.service.event_step import EventStep

SID = "s-0042"


class Scripted:
    """A stand-in engine: alerts and signals per event id, a closed day it can move."""

    def __init__(self, alerts: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.counters: Counter[str] = Counter()
        self.clock = Clock(8.0, 3600.0)
        self.closed_to: int | None = None
        self.signals: list[dict[str, Any]] = []
        self.alerts = alerts or {}
        self.seen: list[str] = []

    def process(self, kind: str, event: dict[str, Any], ts: float | None = None) -> list:
        self.seen.append(event.get("event_id", "profile"))
        if event.get("event_id") == "boom":
            raise KeyError(event["subscriber_id"])  # its text holds the subscriber id
        if kind != "subscribers":
            self.signals.append({"group_id": "G", "subscriber_id": event["subscriber_id"]})
            self.closed_to = self.clock.closable(ts) if ts is not None else None
        return list(self.alerts.get(event.get("event_id", ""), []))

    def drain_signals(self) -> list[dict[str, Any]]:
        out, self.signals = self.signals, []
        return out


def call(event_id: str, ts: str) -> dict[str, Any]:
    return {"event_id": event_id, "ts": ts, "subscriber_id": SID}


def alert(status: str = "open") -> dict[str, Any]:
    return {"kind": "subscriber", "status": status, "subscriber_id": SID, "group_id": "G",
            "reasons": []}


def test_an_engine_exception_is_logged_without_personal_data_and_the_next_event_goes_on(
        caplog):
    engine = Scripted({"c2": [alert()]})
    step = EventStep()
    with caplog.at_level(logging.ERROR, logger="stream.service.event_step"):
        failed = step.process(engine, "telecom.calls", 3, 17, "calls",
                              call("boom", "2026-03-01T09:00:00+08:00"),
                              parse_ts("2026-03-01T09:00:00+08:00"))
    assert failed.failed and failed.alerts == [] and failed.exit is None
    assert failed.signals == [] and failed.watermark is None
    [record] = caplog.records
    assert "telecom.calls[3]@17" in record.getMessage() and "KeyError" in record.getMessage()
    assert SID not in record.getMessage()
    after = step.process(engine, "telecom.calls", 3, 18, "calls",
                         call("c2", "2026-03-01T10:00:00+08:00"),
                         parse_ts("2026-03-01T10:00:00+08:00"))
    assert not after.failed and after.alerts == [alert()]


def test_a_closed_day_is_too_late_and_never_reaches_the_engine():
    engine = Scripted()
    step = EventStep()
    step.process(engine, "telecom.calls", 0, 0, "calls", call("c1", "2026-03-03T09:00:00+08:00"),
                 parse_ts("2026-03-03T09:00:00+08:00"))  # closes 2026-03-02
    late = step.process(engine, "telecom.billing", 0, 0, "billing",
                        call("b1", "2026-03-02T09:00:00+08:00"),
                        parse_ts("2026-03-02T09:00:00+08:00"))
    assert late.late is not None and late.late.reason == "too_late"
    assert engine.seen == ["c1"]
    # Rule 1: the topic-partition's own newest event makes it late, before any engine.
    fresh = Scripted()
    assert step.late_arrival(fresh, "telecom.sms", 0, "calls",
                             parse_ts("2026-03-05T09:00:00+08:00")) is None
    assert step.late_arrival(fresh, "telecom.sms", 0, "calls",
                             parse_ts("2026-03-04T09:00:00+08:00")).reason == "too_late"


def test_members_get_group_context_signals_go_out_and_a_watermark_only_when_it_moves():
    engine = Scripted({"c1": [alert(), alert("resolved")]})
    context = {"code": "group_context", "group_id": "G"}
    step = EventStep(group_context=lambda gid: context)
    first = step.process(engine, "telecom.calls", 1, 0, "calls",
                         call("c1", "2026-03-03T09:00:00+08:00"),
                         parse_ts("2026-03-03T09:00:00+08:00"))
    assert [a["reasons"] for a in first.alerts] == [[context], []]
    assert first.signals == [{"group_id": "G", "subscriber_id": SID}]
    assert engine.closed_to is not None and first.watermark == engine.closed_to
    again = step.process(engine, "telecom.calls", 1, 1, "calls",
                         call("c2", "2026-03-03T10:00:00+08:00"),
                         parse_ts("2026-03-03T10:00:00+08:00"))
    assert again.watermark is None and len(again.signals) == 1
    step.clear()  # a rebalance: the next step reports the watermark again
    third = step.process(engine, "telecom.calls", 1, 2, "calls",
                         call("c3", "2026-03-03T11:00:00+08:00"),
                         parse_ts("2026-03-03T11:00:00+08:00"))
    assert third.watermark == engine.closed_to


def test_with_calibration_subscriber_alerts_then_the_exit_go_to_the_stage_at_the_events_place():
    engine = Scripted({"b1": [alert(), {"kind": "group", "group_id": "G"}]})
    step = EventStep(calibration=True)
    ts = parse_ts("2026-03-03T09:00:00+08:00")
    event = {"event_id": "b1", "ts": "2026-03-03T09:00:00+08:00", "subscriber_id": SID,
             "kind": "port_out"}
    out = step.process(engine, "telecom.billing", 2, 5, "billing", event, ts)
    assert out.alerts == [{"kind": "group", "group_id": "G"}]  # not the stage's
    assert out.calibration == [
        {"kind": "alert", "partition": 2, "at": [ts, 1], "alert": alert()},
        {"kind": "exit", "partition": 2, "at": [ts, 1], "subscriber_id": SID,
         "ts": "2026-03-03T09:00:00+08:00"},
    ]
    assert out.exit is event and out.at == [ts, 1]
    # Without calibration (replay's learner works in process) the same event publishes.
    plain = EventStep().process(Scripted({"b1": [alert()]}), "telecom.billing", 2, 5,
                                "billing", event, ts)
    assert plain.alerts == [alert()] and plain.calibration == [] and plain.exit is event
