"""examples/callcentre_consumer.py on the embedded broker: deduplicated, prioritised alerts.

Alerts are published to a topic of the test's own with repeats (same ``alert_id``, a later
``emitted_at``, as a worker restart would re-publish them), an escalation, a resolution, a
group alert, a port-out closing an open episode (``closed``) and one undecodable record.
The example's consumer group must hand each alert over once and order the open work by
zone, then value at risk; after a simulated stream no open item is a customer who left.
"""

from __future__ import annotations

import doctest
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import fastjsonschema
import orjson
import pytest

from stream import contracts
from tests.integration.helpers import REPO, produce, unique_settings

pytestmark = pytest.mark.integration

# Tansu: joining a group takes about half the session timeout.
TANSU_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def load_example() -> ModuleType:
    path = REPO / "examples" / "callcentre_consumer.py"
    spec = importlib.util.spec_from_file_location("callcentre_consumer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-free, but doctest wants it importable
    spec.loader.exec_module(module)
    return module


def alert(aid: str, sid: str | None, zone: str, value: float, status: str = "open", *,
          segment: str = "consumer", kind: str = "subscriber", group: str | None = None,
          msisdn: str | None = "13800000000", day: int = 2) -> dict[str, Any]:
    code = status if status in ("resolved", "closed") else "usage_drop"
    return {
        "alert_id": aid, "kind": kind, "status": status, "subscriber_id": sid,
        "msisdn": msisdn, "account_id": None, "group_id": group, "segment": segment,
        "tier": None, "account_manager": "AM001", "zone": zone, "risk_score": 0.8,
        "value_at_risk": value,
        "reasons": [{"code": code, "summary": f"{code} for the test", "figures": {}}],
        "ts": f"2026-03-{day:02d}T09:00:00+08:00", "emitted_at": "2026-03-02T01:00:00Z",
        "schema_version": 1, "model_version": "test",
    }


def published_alerts() -> list[dict[str, Any]]:
    """In publication order; repeats come later, as after a worker restart."""
    first = [
        alert("id-yel-big-000001", "S01", "yellow", 900.0, segment="key_account"),
        alert("id-red-small-0002", "S02", "red", 40.0),
        alert("id-red-big-000003", "S03", "red", 700.0, segment="sme"),
        alert("id-white-00000004", "S04", "white", 10.0),
        alert("id-yel-small-00005", "S05", "yellow", 20.0),
        alert("id-to-resolve-006", "S06", "red", 5000.0),
        alert("id-escalate-00007", "S07", "yellow", 300.0),
        alert("id-group-00000008", None, "red", 2500.0, kind="group", group="G01",
              segment="key_account", msisdn=None),
    ]
    later = [
        alert("id-escalated-0009", "S07", "red", 300.0, "escalated", day=3),
        alert("id-resolved-00010", "S06", "blue", 5000.0, "resolved", day=9),
        # S02 ported out with its episode open: the item goes, whatever its zone.
        dict(alert("id-closed-0000012", "S02", "red", 40.0, "closed", day=10),
             ported_to="China Unicom"),
    ]
    repeats = [dict(a, emitted_at="2026-03-09T02:00:00Z") for a in first[:5] + later[:1]]
    return first + later + repeats


# Most urgent first: white, red by value (the group, S03, S07 escalated), yellow by value;
# S06 resolved and S02 (ported out) closed.
EXPECTED_ORDER = ["id-white-00000004", "id-group-00000008", "id-red-big-000003",
                  "id-escalated-0009", "id-yel-big-000001", "id-yel-small-00005"]


def publish(bootstrap: str, topic: str, alerts: list[dict[str, Any]],
            garbage: bool = False) -> int:
    records: list[tuple[str, bytes | None, bytes]] = []
    for a in alerts:
        key = a["group_id"] if a["kind"] == "group" else a["subscriber_id"]
        records.append((topic, key.encode(), orjson.dumps(a)))
    if garbage:
        records.insert(3, (topic, b"S99", b"{not json"))
    return produce(bootstrap, records)


def test_the_test_alerts_follow_the_contract() -> None:
    validate = fastjsonschema.compile(contracts.schema("alert"))
    for a in published_alerts():
        validate(a)


def test_example_doctests() -> None:
    result = doctest.testmod(load_example())
    assert result.attempted > 0 and result.failed == 0


def test_consumer_group_gets_each_alert_once_in_priority_order(broker) -> None:
    cc = load_example()
    settings, _env = unique_settings(broker.bootstrap)
    topic = settings.topic_alerts
    alerts = published_alerts()
    sent = publish(broker.bootstrap, topic, alerts, garbage=True)
    unique_ids = list(dict.fromkeys(a["alert_id"] for a in alerts))
    assert sent == len(alerts) + 1 and len(unique_ids) < len(alerts)

    group = f"callcentre-{settings.app_id}"
    seen_outcomes: list[tuple[str, str | None]] = []
    queue = cc.consume(broker.bootstrap, group, topic=topic, max_messages=sent,
                       max_seconds=60, security={},
                       on_alert=lambda o, a: seen_outcomes.append((o, a.get("alert_id"))),
                       **TANSU_GROUP)

    assert len(seen_outcomes) == sent, "every record was read"
    assert sorted(queue.handled) == sorted(unique_ids), "each alert handed over once"
    assert len(queue.handled) == len(set(queue.handled))
    assert queue.counts["duplicate"] == len(alerts) - len(unique_ids)
    assert queue.counts["undecodable"] == 1
    assert queue.counts["closed"] == 2 and queue.counts["updated"] == 1
    assert [a["alert_id"] for a in queue.items()] == EXPECTED_ORDER
    # Per-key order held: S07's escalation replaced its open alert, S06 and S02 are gone.
    assert not any(a["subscriber_id"] in ("S06", "S02") for a in queue.items())

    # The group committed its offsets: a consumer that restarts in the same group, with the
    # work store kept, reads only what came after, and repeats of handled alerts are dropped.
    more = [dict(alerts[0], emitted_at="2026-03-10T00:00:00Z"),
            alert("id-new-red-000011", "S11", "red", 800.0)]
    publish(broker.bootstrap, topic, more)
    cc.consume(broker.bootstrap, group, topic=topic, queue=queue, max_messages=len(more),
               max_seconds=60, security={}, **TANSU_GROUP)
    assert queue.counts["duplicate"] == len(alerts) - len(unique_ids) + 1
    assert queue.handled[-1] == "id-new-red-000011"
    assert [a["alert_id"] for a in queue.items()][:4] == [
        "id-white-00000004", "id-group-00000008", "id-new-red-000011", "id-red-big-000003"]


def test_command_line_prints_the_queue_without_phone_numbers(broker, tmp_path: Path) -> None:
    settings, _env = unique_settings(broker.bootstrap)
    alerts = published_alerts()
    sent = publish(broker.bootstrap, settings.topic_alerts, alerts)
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "callcentre_consumer.py"),
         "--bootstrap", broker.bootstrap, "--topic", settings.topic_alerts,
         "--group", f"cc-cli-{settings.app_id}", "--max-messages", str(sent),
         "--max-seconds", "60", "--session-timeout-ms", "6000",
         "--heartbeat-interval-ms", "1000"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},  # not importable from here: stream/, detectors/
    )
    assert out.returncode == 0, out.stderr
    assert "13800000000" not in out.stdout + out.stderr
    queue_part = out.stdout.split("work queue", 1)[1]
    rows = [line.split() for line in queue_part.splitlines()[2:] if line.strip()]
    assert [r[1] for r in rows] == ["white", "red", "red", "red", "yellow", "yellow"]
    assert [r[4] for r in rows] == ["S04", "group", "S03", "S07", "S01", "S05"]
    assert "duplicate 6" in out.stdout


def test_after_a_simulated_stream_no_item_is_a_customer_who_left(
        broker, tmp_path: Path) -> None:
    """The engine's own alerts over a simulated world, through the broker to the example:
    every subscriber who ported out or was deactivated with an episode open is dropped."""
    from stream.tools.replay import replay_directory
    from stream.tools.simulator import WorldParams, simulate

    cc = load_example()
    simulate(tmp_path, WorldParams(subscribers=300, days=120, seed=7))
    alerts = [dict(a, emitted_at="2026-06-01T00:00:00Z") for a in replay_directory(tmp_path)]
    left = {e["subscriber_id"] for e in map(orjson.loads,
                                            (tmp_path / "billing.jsonl").read_bytes().splitlines())
            if e["kind"] in ("port_out", "deactivation")}
    alerted = {a["subscriber_id"] for a in alerts if a["kind"] == "subscriber"}
    closed = [a for a in alerts if a["status"] == "closed"]
    assert left & alerted, "the world has customers who left after an alert"
    assert {a["subscriber_id"] for a in closed if a["kind"] == "subscriber"} <= left
    settings, _env = unique_settings(broker.bootstrap)
    sent = publish(broker.bootstrap, settings.topic_alerts, alerts)
    queue = cc.consume(broker.bootstrap, f"cc-sim-{settings.app_id}",
                       topic=settings.topic_alerts, max_messages=sent, max_seconds=90,
                       security={}, **TANSU_GROUP)
    assert len(queue.handled) == len(alerts)
    open_items = {a["subscriber_id"] for a in queue.items() if a["kind"] == "subscriber"}
    assert open_items, "some customers are still to be called"
    assert not open_items & left, "no open item for a customer who left"
    # Every customer who left with an episode open got exactly one closed alert.
    last: dict[str, str] = {}
    for a in alerts:
        if a["kind"] == "subscriber":
            last[a["subscriber_id"]] = a["status"]
    assert {s for s in left if s in last and last[s] != "resolved"} == {
        a["subscriber_id"] for a in closed if a["kind"] == "subscriber"}
