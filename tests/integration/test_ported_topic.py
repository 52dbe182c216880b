"""The ported-numbers registry on its topic: the README's by-hand steps give replay's alerts.

``churnwatch worker`` started by hand knows no ``CHURNWATCH_PORTED_FILE``; ``churnwatch
produce DIR`` publishes ``DIR/ported.jsonl`` to ``telecom.ported`` before the events, and
the worker applies it before them. In this world the file matters: replay without it
raises false alerts (forwarding to ported numbers taken for off-net, or the reverse).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from stream.tools.broker import EmbeddedBroker
from stream.tools.processes import stop_process
from tests.integration.helpers import read_topic, unique_settings, wait_for

pytestmark = pytest.mark.integration

SUBSCRIBERS, DAYS, SEED = 120, 70, 5


def _comparable(alert: dict) -> dict:
    """The alert without its wall-clock stamp and without members' group context (added
    from the group stage as it stands when the member alert is made: at once in replay,
    a poll behind on the stream; tests/integration/test_parity.py)."""
    kept = {k: v for k, v in alert.items() if k != "emitted_at"}
    kept["reasons"] = [r for r in alert["reasons"] if r["code"] != "group_context"]
    return kept


def _replay(directory: Path, settings, *, ported: bool) -> dict[str, dict]:
    from detectors import EngineConfig
    from stream.tools.replay import replay_directory

    config = None if ported else EngineConfig()  # None: DIR/ported.jsonl, as replay does
    return {a["alert_id"]: a for a in replay_directory(
        directory, partitions=settings.partitions, engine_config=config)}


@pytest.mark.timeout(240)
def test_by_hand_steps_give_replays_alerts(broker: EmbeddedBroker, tmp_path: Path) -> None:
    from stream.tools.simulator import WorldParams, simulate

    world = tmp_path / "world"
    simulate(world, WorldParams(subscribers=SUBSCRIBERS, days=DAYS, seed=SEED))
    assert (world / "ported.jsonl").read_bytes().strip()
    settings, environ = unique_settings(broker.bootstrap)
    assert "CHURNWATCH_PORTED_FILE" not in environ and not settings.ported_file
    expected = _replay(world, settings, ported=True)
    without = _replay(world, settings, ported=False)
    # The world is one where the registry matters (else this test could not fail).
    assert set(without) - set(expected), "the ported numbers change no alert here"

    env = {**os.environ, **environ, "CHURNWATCH_METRICS_PORT": "0",
           "CHURNWATCH_DATADIR": str(tmp_path / "worker.data")}
    env.pop("CHURNWATCH_PORTED_FILE", None)
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "stream", "worker"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        produced = subprocess.run([sys.executable, "-m", "stream", "produce", str(world)],
                                  env=env, capture_output=True, text=True, timeout=120)
        assert produced.returncode == 0, produced.stderr
        assert "ported" in produced.stderr
        registry = read_topic(broker.bootstrap, f"{settings.topic_prefix}telecom.ported")
        lines = (world / "ported.jsonl").read_bytes().splitlines()
        assert len(registry) == len([line for line in lines if line.strip()])
        assert all(orjson.loads(r.value)["number"] == r.key.decode() for r in registry)

        def alerts() -> dict[str, dict]:
            return {orjson.loads(r.value)["alert_id"]: orjson.loads(r.value)
                    for r in read_topic(broker.bootstrap, settings.topic_alerts)}

        # Group alerts come after their members' signals: wait for the set to settle.
        wait_for(lambda: set(alerts()) >= set(expected), 150,
                 lambda: f"replay's {len(expected)} alerts; stream has {len(alerts())}\n"
                 + (tmp_path / "worker.log").read_text(errors="replace")[-3000:])
        time.sleep(2)  # anything extra would show now
        tailed = subprocess.run(
            [sys.executable, "-m", "stream", "alerts", "tail", "--from-beginning", "--json",
             "--idle-exit", "3"], env=env, capture_output=True, text=True, timeout=60)
        assert tailed.returncode == 0, tailed.stderr
    finally:
        assert stop_process(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        log.close()
    got = {}
    for line in tailed.stdout.splitlines():
        alert = orjson.loads(line)
        got[alert["alert_id"]] = alert
    assert set(got) == set(expected)
    assert {k: _comparable(a) for k, a in got.items()} == {
        k: _comparable(a) for k, a in expected.items()}
    print(f"by hand: {len(got)} alerts = replay's {len(expected)}; without the registry "
          f"replay gives {len(without)} ({len(set(without) - set(expected))} not in it)")
