"""The work queue's HTTP endpoints against running workers on the embedded broker.

Alerts are published to ``churn.alerts`` directly (the queue is fed from that topic,
whoever wrote it); two workers share the table, so requests sent to one worker about keys
the other owns are routed by Faust (``table_route``) and the listing gathers both.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import pytest
import yaml

from stream.contracts.partitioning import partition_of
from stream.tools.broker import EmbeddedBroker, free_port
from tests.integration.helpers import (
    REPO,
    WorkerProc,
    produce,
    read_topic,
    unique_settings,
    wait_for,
)

pytestmark = pytest.mark.integration

BASE = {"msisdn": "13800000000", "account_id": "a", "group_id": None, "tier": "gold",
        "account_manager": None, "ts": "2026-03-02T10:00:00+08:00",
        "emitted_at": "2026-03-02T02:00:00+00:00", "schema_version": 1, "model_version": "t",
        "reasons": [{"code": "spend_drop", "summary": "spend fell"}], "segment": "consumer"}


def alert(alert_id: str, sid: str, status: str, zone: str, risk: float, value: float,
          **extra: Any) -> dict[str, Any]:
    return {**BASE, "alert_id": alert_id, "kind": "subscriber", "subscriber_id": sid,
            "status": status, "zone": zone, "risk_score": risk, "value_at_risk": value,
            **extra}


def contact(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """An alert's ``contact`` with these windows (as the engine writes it)."""
    return {"first_contact": "subscriber", "account_manager": None, "answered_share": 0.8,
            "summary": "answers 80% of calls then",
            "windows": [{**w, "answered_share": 0.8, "incoming_calls": 10,
                         "answered_calls": 8, "calls_made": 5} for w in windows]}


def http(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@functools.cache
def openapi_check(name: str) -> Callable[[Any], Any]:
    """A validator of the documented schema ``name`` (deploy/openapi.yaml)."""
    doc = yaml.safe_load((REPO / "deploy" / "openapi.yaml").read_text())
    return fastjsonschema.compile({"$ref": f"#/components/schemas/{name}",
                                   "components": doc["components"]})


def keys(port: int, query: str = "") -> list[str]:
    status, body = http(port, "GET", f"/queue{query}")
    assert status == 200, body
    openapi_check("Listing")(body)
    assert body["complete"], body
    return [i["key"] for i in body["items"]]


@pytest.mark.timeout(180)
def test_queue_endpoints_on_two_workers(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings, environ = unique_settings(broker.bootstrap, CHURNWATCH_PARTITIONS="2")
    ports = [free_port(), free_port()]
    workers = [WorkerProc({**environ, "CHURNWATCH_WEB_ENABLED": "true",
                           "CHURNWATCH_WEB_PORT": str(port)}, tmp_path, name=f"w{i}")
               for i, port in enumerate(ports)]
    # Subscribers on both partitions, so each worker owns some of the items.
    sids = [f"s-{n:05d}" for n in range(40)]
    by_part = {p: [s for s in sids if partition_of(s, 2) == p] for p in (0, 1)}
    s_a, s_b, s_c, s_d = by_part[0][0], by_part[1][0], by_part[0][1], by_part[1][1]
    try:
        for worker in workers:
            worker.start()
        wait_for(lambda: all((d := w.dump()) and d["recovered"] and d["assigned"]
                             for w in workers), 90,
                 lambda: "both workers assigned\n" + workers[0].tail() + workers[1].tail())
        alerts = [
            alert("alert-a-1", s_a, "open", "yellow", 0.5, 900.0, account_manager="am-1"),
            # s_b's contact window never opens (an empty one); s_a's is always open
            alert("alert-b-1", s_b, "open", "red", 0.8, 100.0, segment="sme",
                  contact=contact([{"weekdays": [1], "start": "00:00", "end": "00:00"}])),
            alert("alert-a-2", s_a, "escalated", "red", 0.9, 900.0, account_manager="am-1",
                  contact=contact([{"weekdays": [1, 2, 3, 4, 5, 6, 7], "start": "00:00",
                                    "end": "24:00"}])),
            alert("alert-c-1", s_c, "open", "yellow", 0.5, 50.0),
            alert("alert-c-2", s_c, "resolved", "green", 0.1, 50.0),
            alert("alert-d-1", s_d, "open", "white", 0.95, 20.0),
            alert("alert-d-2", s_d, "closed", "white", 0.95, 20.0),  # a later status
            alert("alert-a-1", s_a, "open", "yellow", 0.5, 900.0),  # delivered again
            {**alert("alert-g-1", "", "open", "red", 0.85, 5000.0), "kind": "group",
             "subscriber_id": None, "group_id": "G-1"},
        ]
        produce(broker.bootstrap, [
            (settings.topic_alerts, (a["group_id"] or a["subscriber_id"]).encode(),
             orjson.dumps(a)) for a in alerts])
        # priority: G-1 5000 x 0.85 x 1 = 4250; s_a 900 x 0.9 = 810; s_b 100 x 0.8 = 80
        wait_for(lambda: keys(ports[0]) == ["G-1", s_a, s_b], 60,
                 lambda: f"the queue: {keys(ports[0])}")
        assert keys(ports[1]) == ["G-1", s_a, s_b]  # the same from either worker
        assert keys(ports[1], "?zone=red&segment=sme") == [s_b]
        assert keys(ports[0], "?account_manager=am-1") == [s_a]
        assert keys(ports[0], "?capacity=1") == ["G-1"]
        # G-1 has no windows (a group item passes); s_a's window is open, s_b's is not.
        assert keys(ports[0], "?reachable_now=true") == ["G-1", s_a]
        status, body = http(ports[0], "GET", "/queue?capacity=x")
        assert status == 400

        # One item, routed to its owner from either worker; no phone number shown.
        for port in ports:
            status, item = http(port, "GET", f"/queue/items/{s_b}")
            assert status == 200 and item["alert_id"] == "alert-b-1", item
            openapi_check("Item")(item)
            assert "msisdn" not in item and item["due_at"].startswith("2026-03-03")
        assert http(ports[1], "GET", f"/queue/items/{s_c}")[0] == 404

        # Claims: idempotent for the holder, refused to others, hidden from the list.
        status, first = http(ports[1], "POST", f"/queue/items/{s_a}/claim?by=agent-1")
        assert status == 200 and first["claim"]["by"] == "agent-1", first
        openapi_check("Item")(first)
        status, again = http(ports[0], "POST", f"/queue/items/{s_a}/claim?by=agent-1")
        assert status == 200 and again["claim"] == first["claim"]
        status, other = http(ports[0], "POST", f"/queue/items/{s_a}/claim?by=agent-2")
        assert status == 409 and other["item"]["claim"]["by"] == "agent-1"
        assert keys(ports[0]) == ["G-1", s_b]
        assert keys(ports[0], "?include_claimed=true") == ["G-1", s_a, s_b]
        status, _ = http(ports[0], "POST", f"/queue/items/{s_b}/claim?by=agent-2&hold_s=1")
        assert status == 200
        wait_for(lambda: http(ports[1], "POST",
                              f"/queue/items/{s_b}/claim?by=agent-3")[0] == 200, 10,
                 "the 1 s claim to expire")
        assert http(ports[0], "POST", f"/queue/items/{s_b}/claim")[0] == 400

        # Outcomes: validated, published to churn.outcomes, and they end the work.
        def report(port: int, key: str, **fields: Any) -> tuple[int, Any]:
            outcome = {"alert_id": "alert-a-2", "subscriber_id": s_a,
                       "ts": "2026-03-02T15:00:00+08:00", "outcome": "no_answer", **fields}
            return http(port, "POST", f"/queue/items/{key}/outcome", orjson.dumps(outcome))

        for port in ports:  # whichever worker takes it, the owner answers
            status, body = report(port, s_a)
            assert status == 202 and body["item_closed"] is False, body
        status, item = http(ports[0], "GET", f"/queue/items/{s_a}")
        assert item["attempts"] == 2 and item["claim"] is None  # no answer: claim released
        status, body = report(ports[0], s_a, outcome="perhaps")
        assert status == 422 and body["field"] == "outcome", body
        openapi_check("Rejection")(body)
        status, body = report(ports[1], s_a, alert_id="alert-b-1")
        assert status == 422 and body["field"] == "alert_id", body
        status, body = report(ports[1], s_a, outcome="retained")
        assert status == 202 and body["item_closed"] is True
        assert http(ports[0], "GET", f"/queue/items/{s_a}")[0] == 404
        assert keys(ports[1], "?include_claimed=true") == ["G-1", s_b]

        published = [orjson.loads(r.value) for r in
                     read_topic(broker.bootstrap, settings.topic_outcomes)]
        assert [o["outcome"] for o in published] == ["no_answer", "no_answer", "retained"]
        assert all(o["subscriber_id"] == s_a for o in published)
        letters = [orjson.loads(r.value) for r in
                   read_topic(broker.bootstrap, settings.topic_deadletter)]
        assert sorted(d["field"] for d in letters) == ["alert_id", "outcome"]
        assert all(d["topic"] == settings.topic_outcomes for d in letters)

        # The example client: list red work, claim the first item free, report an outcome.
        def example(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, str(REPO / "examples" / "queue_client.py"),
                 "--url", f"http://127.0.0.1:{ports[1]}", "--agent", "agent-9", *args],
                capture_output=True, text=True, timeout=60)

        shown = example("--zone", "red")
        assert shown.returncode == 0 and "claimed G-1" in shown.stdout, shown
        reported = example("--report", s_b, "--alert-id", "alert-b-1", "--outcome", "churned")
        assert reported.returncode == 0 and '"item_closed": true' in reported.stdout, reported
        assert keys(ports[0], "?include_claimed=true") == ["G-1"]
        for worker in workers:
            log = worker.log.read_text(errors="replace")
            assert s_a not in log and s_b not in log and "13800000000" not in log
    finally:
        for worker in workers:
            worker.terminate(20)
