"""The work queue's fold, order, claims and outcome checks, without Faust or a broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from stream.service import work_queue as wq
from stream.service.work_queue_web import WorkQueueService, _report_outcome


def alert(alert_id: str, sid: str, status: str = "open", zone: str = "yellow",
          risk: float = 0.5, value: float = 100.0, **extra: Any) -> dict[str, Any]:
    return {"alert_id": alert_id, "kind": "subscriber", "status": status,
            "subscriber_id": sid, "msisdn": "13800000000", "account_id": "a1",
            "group_id": None, "segment": "consumer", "tier": None, "account_manager": None,
            "zone": zone, "risk_score": risk, "value_at_risk": value,
            "ts": "2026-03-02T10:00:00+08:00", **extra}


class FakeTopic:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[Any, Any]] = []

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, key: Any = None, value: Any = None, **kw: Any) -> None:
        self.sent.append((key, value))


def service() -> WorkQueueService:
    return WorkQueueService(table={}, agent=None, outcomes_topic=FakeTopic("churn.outcomes"),
                            deadletter_topic=FakeTopic("churn.deadletter"), capacity=0,
                            tz_offset_hours=8.0)


def test_episode_lifecycle_in_the_table() -> None:
    svc = service()
    assert svc.apply_alert(alert("a1", "s1")) == "opened"
    assert svc.apply_alert(alert("a1", "s1")) == "duplicate"
    assert svc.apply_alert(alert("a2", "s1", "escalated", "red")) == "updated"
    item = svc.table["s1"]
    assert item["zone"] == "red" and item["alert_ids"] == ["a1", "a2"]
    assert "msisdn" not in item  # no phone numbers in the queue
    assert svc.apply_alert(alert("a3", "s1", "resolved", "green")) == "closed"
    assert svc.table == {}
    svc.apply_alert(alert("b1", "s2"))
    # A status this version does not know (a later ``closed``, or anything) ends the item.
    assert svc.apply_alert(alert("b2", "s2", "closed")) == "closed"
    svc.apply_alert(alert("c1", "s3"))
    assert svc.apply_alert(alert("c2", "s3", "withdrawn")) == "closed"
    assert svc.apply_alert(alert("c3", "s9", "resolved")) == "ignored"
    group = {**alert("g1", "x"), "kind": "group", "subscriber_id": None, "group_id": "G7"}
    assert svc.apply_alert(group) == "opened" and "G7" in svc.table


def test_priority_filters_and_capacity() -> None:
    items = [wq.fold(None, a) for a in (
        alert("1", "big-yellow", zone="yellow", risk=0.9, value=1000.0),
        alert("2", "small-red", zone="red", risk=0.8, value=100.0, segment="sme"),
        alert("3", "tiny-white", zone="white", risk=0.95, value=10.0),
        alert("4", "mid-red", zone="red", risk=0.7, value=300.0, account_manager="am-1"),
    )]
    assert all(i is not None for i in items)
    listed = [i["key"] for i in wq.ordered(items)]  # type: ignore[arg-type]
    # value x risk x urgency: 210 (red), 128.6 (yellow: a week), 80 (red), 19 (white)
    assert listed == ["mid-red", "big-yellow", "small-red", "tiny-white"]
    # Capacity 2: the two of highest expected retained value (900 and 210), by priority.
    assert [i["key"] for i in wq.ordered(items, 2)] == ["mid-red", "big-yellow"]  # type: ignore[arg-type]
    only_red = wq.Filters(zone=frozenset({"red"}))
    assert {i["key"] for i in items if only_red.accepts(i)} == {"small-red", "mid-red"}  # type: ignore[index, arg-type]
    am = wq.Filters(account_manager="am-1")
    assert [i["key"] for i in items if am.accepts(i)] == ["mid-red"]  # type: ignore[index, arg-type]
    # Reachable now: these alerts carry no contact, so the filter passes everything.
    now = wq.Filters(reachable_at=datetime(2026, 3, 2, 3, 0, tzinfo=UTC))
    assert all(now.accepts(i) for i in items)  # type: ignore[arg-type]


def test_reach_lowers_expected_value_and_windows_filter() -> None:
    windows = [{"weekdays": [6, 7], "start": "09:00", "end": "12:00"}]
    hard = wq.fold(None, alert("1", "hard", zone="red", risk=0.9, value=500.0,
                               contact={"answered_share": 0.1, "windows": windows}))
    easy = wq.fold(None, alert("2", "easy", zone="red", risk=0.9, value=200.0))
    assert hard is not None and easy is not None
    assert [i["key"] for i in wq.ordered([hard, easy], 1)] == ["easy"]
    saturday_10 = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)  # 10:00 at UTC+8
    monday_10 = datetime(2026, 3, 9, 2, 0, tzinfo=UTC)
    assert wq.in_contact_window(hard, saturday_10)
    assert not wq.in_contact_window(hard, monday_10)
    assert wq.in_contact_window(easy, monday_10)


def test_reachable_now_reads_the_contact_windows_the_engine_writes() -> None:
    from tests.detectors.test_contact import _engine_world

    _, alerts = _engine_world(answer_evenings=True)
    opened = [a for a in alerts if a["status"] == "open"]
    assert opened
    item = wq.fold(None, opened[0])
    assert item is not None and item["contact"] == opened[0]["contact"]
    best = item["contact"]["windows"][0]
    assert best["weekdays"] == [1, 2, 3, 4, 5]
    hour = int(best["start"][:2])
    monday = datetime(2026, 3, 9, hour - 8, 30, tzinfo=UTC)  # in the window at UTC+8
    now = wq.Filters(reachable_at=monday)
    assert now.accepts(item)
    windows = item["contact"]["windows"]
    closed = [h for h in range(8, 24) if not any(
        1 in w["weekdays"] and int(w["start"][:2]) <= h < int(w["end"][:2]) for w in windows)]
    assert closed, "some hour of a Monday from 08:00 is outside every window"
    at = datetime(2026, 3, 9, closed[0] - 8, 30, tzinfo=UTC)  # Monday, local time
    assert not wq.Filters(reachable_at=at).accepts(item)
    answered = sum(w["answered_calls"] for w in windows)
    incoming = sum(w["incoming_calls"] for w in windows)
    assert wq.reach(item) == (answered + 1) / (incoming + 2) < 1.0


def test_reach_weighs_the_calls_behind_a_window() -> None:
    """One call answered out of one is not a certainty: the pick prefers a subscriber
    who answered 9 of 10 there (the engine ranks windows with the same prior)."""
    def window(answered: int, incoming: int) -> dict[str, Any]:
        return {"weekdays": [1, 2, 3, 4, 5], "start": "18:00", "end": "21:00",
                "answered_share": answered / incoming, "incoming_calls": incoming,
                "answered_calls": answered}

    thin = wq.fold(None, alert("1", "thin", zone="red", risk=0.9, value=100.0, contact={
        "answered_share": 1.0, "windows": [window(1, 1)]}))
    solid = wq.fold(None, alert("2", "solid", zone="red", risk=0.9, value=100.0, contact={
        "answered_share": 0.9, "windows": [window(9, 10)]}))
    unknown = wq.fold(None, alert("3", "unknown", zone="red", risk=0.9, value=100.0,
                                  contact={"answered_share": None, "windows": []}))
    assert thin is not None and solid is not None and unknown is not None
    assert wq.reach(solid) == 10 / 12 and wq.reach(thin) == 2 / 3 and wq.reach(unknown) == 0.5
    assert [i["key"] for i in wq.ordered([thin, unknown, solid], 1)] == ["solid"]
    assert [i["key"] for i in wq.ordered([thin, unknown], 1)] == ["thin"]


def test_claims_expire_and_are_idempotent() -> None:
    item = wq.fold(None, alert("a1", "s1"))
    assert item is not None
    first = wq.claim(item, "agent-1", now=100.0, hold_s=60)
    assert first.granted and wq.claimed_by(first.item, 159.0) == "agent-1"
    assert wq.claim(first.item, "agent-1", now=150.0).item == first.item
    assert not wq.claim(first.item, "agent-2", now=150.0).granted
    assert wq.claimed_by(first.item, 161.0) is None
    assert wq.claim(first.item, "agent-2", now=161.0).item["claim"]["by"] == "agent-2"
    # Claimed items leave the default listing while the claim holds.
    assert not wq.Filters(now=150.0).accepts(first.item)
    assert wq.Filters(now=150.0, include_claimed=True).accepts(first.item)
    assert wq.Filters(now=170.0).accepts(first.item)


def outcome(**over: Any) -> bytes:
    return orjson.dumps({"alert_id": "a1-alert", "subscriber_id": "s1",
                         "ts": "2026-03-03T10:00:00+08:00", "outcome": "no_answer", **over})


def test_outcomes_are_validated_published_and_close_the_work() -> None:
    svc = service()
    svc.apply_alert(alert("a1-alert", "s1"))
    run = asyncio.run
    status, body = run(_report_outcome(svc, "s1", outcome()))
    assert status == 202 and body == {"published": True, "item_closed": False}
    assert svc.table["s1"]["attempts"] == 1 and svc.table["s1"]["last_outcome"] == "no_answer"
    assert svc.outcomes_topic.sent[-1][0] == b"s1"
    for bad, reason in ((b"{", "malformed_json"), (outcome(outcome="maybe"), "schema"),
                        (outcome(alert_id="other-alert"), "schema"),
                        (outcome(subscriber_id="s2"), "schema")):
        status, body = run(_report_outcome(svc, "s1", bad))
        assert status == 422 and body["error"] == reason, body
    assert len(svc.deadletter_topic.sent) == 4
    assert len(svc.outcomes_topic.sent) == 1  # nothing rejected was published
    status, body = run(_report_outcome(svc, "s1", outcome(outcome="retained")))
    assert status == 202 and body["item_closed"] and not wq.is_open(svc.table["s1"])
    # After the work is done an outcome still counts (docs/alerts.md).
    status, _ = run(_report_outcome(svc, "s1", outcome(outcome="churned")))
    assert status == 202 and len(svc.outcomes_topic.sent) == 3


def test_a_worked_episode_stays_out_of_the_work_until_it_ends() -> None:
    # Reached and retained; the engine escalates the same episode the next morning: the
    # customer does not come back to the call centre. A resolution ends the episode, and
    # the next one is work again.
    svc = service()
    svc.apply_alert(alert("a1-alert", "s1"))
    asyncio.run(_report_outcome(svc, "s1", outcome(outcome="retained")))
    assert svc.local_items() == []
    svc.apply_alert(alert("a2-alert", "s1", "escalated", "red"))
    assert svc.local_items() == [] and svc.table["s1"]["worked"] == "retained"
    # An outcome for the escalation names an alert of the episode: accepted.
    status, _ = asyncio.run(_report_outcome(svc, "s1", outcome(alert_id="a2-alert")))
    assert status == 202
    assert svc.apply_alert(alert("a3", "s1", "resolved", "green")) == "closed"
    assert "s1" not in svc.table
    svc.apply_alert(alert("a4", "s1"))
    assert [i["alert_id"] for i in svc.local_items()] == ["a4"]


def test_openapi_documents_every_view_and_method() -> None:
    from pathlib import Path

    import yaml

    from stream.service.app import create_app
    from stream.settings import Settings

    doc = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "openapi.yaml").read_text())
    assert str(doc["openapi"]).startswith("3.1")
    app = create_app(Settings(bootstrap="127.0.0.1:9", web_enabled=True))
    views = {path: view for path, view in app.web.views.items() if path.startswith("/queue")}
    assert set(doc["paths"]) == set(views)
    for path, view in views.items():
        cls = view if isinstance(view, type) else type(view)
        served = {m for m in ("get", "post", "put", "patch", "delete") if m in vars(cls)}
        assert {m for m in doc["paths"][path] if m != "parameters"} == served, path
    # Without the web server there is no queue (nothing to serve it).
    assert not create_app(Settings(bootstrap="127.0.0.1:9")).churnwatch.work_queue


def test_capacity_from_the_command_line_and_the_environment() -> None:
    import argparse

    from stream.settings import Settings, SettingsError
    from stream.tools.worker import add_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--capacity", "40", "--web-port", "6100"])
    settings = settings_from_args(args, environ={"CHURNWATCH_QUEUE_CAPACITY": "7"})
    assert (settings.queue_capacity, settings.web_enabled, settings.web_host) == (
        40, True, "127.0.0.1")  # loopback unless told otherwise
    assert settings_from_args(parser.parse_args([]), environ={
        "CHURNWATCH_QUEUE_CAPACITY": "7"}).queue_capacity == 7
    with pytest.raises(SettingsError, match="CHURNWATCH_QUEUE_CAPACITY"):
        Settings.from_env({"CHURNWATCH_QUEUE_CAPACITY": "-1"})
