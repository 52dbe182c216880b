"""`churnwatch bench` runs end to end on a tiny world and reports every figure asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from stream.tools.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_bench_prints_and_writes_figures(broker: EmbeddedBroker, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap,
           "CHURNWATCH_SESSION_TIMEOUT_S": "6", "CHURNWATCH_REQUEST_TIMEOUT_S": "20"}
    done = subprocess.run(
        [sys.executable, "-m", "stream", "bench", "--subscribers", "40", "--days", "12",
         "--repeat", "1", "--only", "raw,pipeline,catchup,replay,state", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=220,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = orjson.loads(out.read_bytes())
    assert figures["events"] > 1000
    for name in ("raw_events_per_s", "pipeline_events_per_s", "replay_events_per_s"):
        assert figures[name] > 0, name
    assert 0 < figures["state"]["serialized_mean"] <= figures["state"]["serialized_max"]
    assert figures["catchup"]["events_per_s"] > 0
    assert figures["catchup"]["forced"] == 0 and figures["catchup"]["out_of_order"] == 0
    assert "catch-up on a backlog" in done.stdout
    assert "pipeline, 1 worker" in done.stdout and "replay, one core" in done.stdout
