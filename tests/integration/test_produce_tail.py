"""`churnwatch produce` and `churnwatch alerts tail` against the embedded broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from stream.contracts.partitioning import partition_of
from stream.tools.broker import EmbeddedBroker
from stream.tools.produce import produce_directory
from stream.tools.simulator import WorldParams, simulate
from tests.integration.helpers import unique_settings

pytestmark = pytest.mark.integration


def drain(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, consumer_timeout_ms=2000)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records = []
        import time

        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


@pytest.mark.timeout(120)
def test_produce_keys_by_subscriber_in_time_order(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    simulate(tmp_path, WorldParams(subscribers=40, days=10, seed=2))
    settings, _ = unique_settings(broker.bootstrap)
    counts = produce_directory(tmp_path, settings)
    lines = {k: len((tmp_path / f"{k}.jsonl").read_bytes().splitlines()) for k in counts}
    assert counts == lines

    records = drain(broker.bootstrap, settings.topic_calls, counts["calls"])
    assert len(records) == counts["calls"]
    last_ts: dict[str, str] = {}
    for r in records:
        sid = r.key.decode()
        assert r.partition == partition_of(sid, settings.partitions)
        ts = orjson.loads(r.value)["ts"]
        assert ts >= last_ts.get(sid, "")  # same offset throughout: strings order
        last_ts[sid] = ts


@pytest.mark.timeout(120)
def test_alerts_tail_filters_and_prints(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings, environ = unique_settings(broker.bootstrap)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    base = {"kind": "subscriber", "status": "open", "msisdn": "13800000000",
            "account_id": "a", "group_id": None, "tier": "gold", "account_manager": "am",
            "risk_score": 0.7, "value_at_risk": 300.0, "ts": "2026-03-02T10:00:00+08:00",
            "emitted_at": "2026-03-02T02:00:00+00:00", "schema_version": 1,
            "model_version": "t", "reasons": [{"code": "spend_drop", "summary": "spend fell"}]}
    alerts = [
        {**base, "alert_id": "id-yellow-1", "subscriber_id": "s1", "zone": "yellow",
         "segment": "consumer"},
        {**base, "alert_id": "id-red-2", "subscriber_id": "s2", "zone": "red",
         "segment": "key_account"},
        {**base, "alert_id": "id-white-3", "subscriber_id": "s3", "zone": "white",
         "segment": "consumer"},
    ]
    for a in alerts:
        producer.send(settings.topic_alerts, key=a["subscriber_id"].encode(),
                      value=orjson.dumps(a))
    producer.flush()
    producer.close()

    def tail(*flags: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "stream", "alerts", "tail", "--from-beginning",
             "--idle-exit", "3", *flags],
            env={**os.environ, **environ}, capture_output=True, timeout=60, text=True,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    table = tail("--zone", "red")
    assert "s2" in table and "s3" in table and "s1" not in table
    assert "13800000000" not in table  # no phone numbers on screen
    as_json = [orjson.loads(line) for line in tail("--json", "--segment", "consumer")
               .splitlines()]
    assert sorted(a["alert_id"] for a in as_json) == ["id-white-3", "id-yellow-1"]
