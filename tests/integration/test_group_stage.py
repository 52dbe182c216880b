"""The group stage on the embedded broker: the same group alerts as the in-memory fold.

Member signals (scripted groups, some defecting) are produced to the internal
``churn.group-signals`` topic keyed by ``group_id``; a worker running only the group agent
(:mod:`stream.service.group_stage`, on the service's app class) folds them into its table and
publishes group alerts. The in-memory :class:`detectors.group.GroupStage`, one per
partition as in ``churnwatch replay``, must give the same alert ids. The second test moves
partitions to a second worker halfway (a rebalance): the groups' state must come back from
the changelog, or the second half's alerts would differ.

This module is also the worker: ``python -m tests.integration.test_group_stage``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.helpers import (
    REPO,
    SESSION_TIMEOUT_S,
    produce,
    read_topic,
    unique_settings,
    wait_for,
)

pytestmark = pytest.mark.integration

DAY0 = date(2026, 1, 5)
EPOCH_DAY0 = (DAY0 - date(1970, 1, 1)).days
GROUPS, DAYS = 16, 60


def scripted_signals(seed: int = 7) -> list[dict[str, Any]]:
    """Member signals of ``GROUPS`` groups over ``DAYS`` days, in day order, shuffled within
    each day; every third group defects (members forward to one competitor, the plan is
    cut, members port out)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    sizes = [rng.randint(4, 25) for _ in range(GROUPS)]
    for d in range(DAYS):
        today = []
        for g, size in enumerate(sizes):
            gid = f"GS{g:03d}"
            defects = g % 3 == 0
            start = 25 + 3 * g % 20
            for m in range(size):
                signal = {"group_id": gid, "subscriber_id": f"{gid}-{m:03d}",
                          "ts": (DAY0 + timedelta(days=d + 1)).isoformat() + "T01:00:00+08:00",
                          "day": EPOCH_DAY0 + d, "left": None}
                if defects and m < 0.8 * size and d >= start + m % 5:
                    if d == start + 15 + m:
                        today.append({**signal, "zone": None, "operator": None,
                                      "spend_ratio": None, "monthly_value": 0.0,
                                      "left": "port_out"})
                    elif d < start + 15 + m:
                        cut = d >= start + 6
                        today.append({**signal, "zone": "red", "operator": "China Unicom",
                                      "spend_ratio": 0.9 if cut else 1.0 + d % 2 / 10,
                                      "monthly_value": 8.0 if cut else 250.0})
                elif d % 3 == m % 3:
                    today.append({**signal, "zone": "blue", "operator": None,
                                  "spend_ratio": round(rng.uniform(0.9, 1.1), 1),
                                  "monthly_value": 250.0})
        rng.shuffle(today)
        out.extend(today)
    return out


def expected_alerts(signals: list[dict[str, Any]], partitions: int) -> list[dict[str, Any]]:
    from detectors.group import GroupConfig, GroupStage
    from stream.contracts.partitioning import partition_of

    stages = [GroupStage(GroupConfig(), {}, meta_key=f"__stage__/{p}")
              for p in range(partitions)]
    return [a for s in signals for a in stages[partition_of(s["group_id"], partitions)].process(s)]


def _records(topic: str, signals: list[dict[str, Any]], partitions: int = 4,
             sources: int = 4) -> list[tuple[Any, ...]]:
    """The signals keyed by group, each day followed by every source's watermark (the
    subscriber partitions have closed that day) on every signals partition."""
    out: list[tuple[Any, ...]] = []
    for i, s in enumerate(signals):
        out.append((topic, s["group_id"].encode(), orjson.dumps(s)))
        if i + 1 == len(signals) or signals[i + 1]["day"] != s["day"]:
            out.extend((topic, b"__watermark__",
                        orjson.dumps({"source": source, "closed_to": s["day"]}), g)
                       for source in range(sources) for g in range(partitions))
    return out


class GroupWorker:
    def __init__(self, environ: dict[str, str], workdir: Path, name: str) -> None:
        self.environ, self.workdir, self.name = environ, workdir, name
        self.log = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> GroupWorker:
        env = {**os.environ, **self.environ,
               "CHURNWATCH_DATADIR": str(self.workdir / f"{self.name}.data")}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.test_group_stage"], cwd=REPO,
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return self

    def stop(self, grace_s: float = 20.0) -> int:
        from stream.tools.processes import stop_process

        return 0 if self.process is None else stop_process(self.process, grace_s)

    def tail(self) -> str:
        return self.log.read_text("utf-8", "replace")[-3000:] if self.log.exists() else ""


def _setup(broker: Any) -> tuple[Any, dict[str, str], str]:
    from stream.service.admin import create_topics
    from stream.service.group_stage import group_topic_names, signals_topic_name

    settings, environ = unique_settings(broker.bootstrap)
    topic = signals_topic_name(settings)
    create_topics(broker.bootstrap, group_topic_names(settings), settings.partitions,
                  settings.replication)
    return settings, environ, topic


def _group_alerts(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    alerts = [orjson.loads(r.value) for r in read_topic(bootstrap, topic)]
    assert all(a["kind"] == "group" for a in alerts)
    return {a["alert_id"]: a for a in alerts}


def _summary(alerts: Any) -> dict[str, tuple[str, str, str, str]]:
    return {a["alert_id"]: (a["group_id"], a["ts"], a["status"], a["zone"]) for a in alerts}


@pytest.mark.timeout(120)
def test_group_alerts_on_the_broker_equal_the_in_memory_fold(broker, tmp_path):
    import fastjsonschema

    from stream.contracts import schema

    settings, environ, topic = _setup(broker)
    signals = scripted_signals()
    expected = expected_alerts(signals, settings.partitions)
    assert len({a["group_id"] for a in expected}) >= 3, "the script makes groups defect"
    worker = GroupWorker(environ, tmp_path, "g1").start()
    try:
        produce(broker.bootstrap, _records(topic, signals))
        got = wait_for(
            lambda: len(a := _group_alerts(broker.bootstrap, settings.topic_alerts))
            >= len(expected) and a, 60,
            lambda: f"{len(expected)} group alerts\n{worker.tail()}")
        assert worker.stop() == 0, worker.tail()
    finally:
        worker.stop(5)
    assert _summary(got.values()) == _summary(expected)
    check = fastjsonschema.compile(schema("alert"))
    for alert in got.values():
        check(alert)


@pytest.mark.timeout(180)
def test_groups_move_with_a_rebalance_without_losing_their_state(broker, tmp_path):
    settings, environ, topic = _setup(broker)
    signals = scripted_signals(seed=7)
    expected = expected_alerts(signals, settings.partitions)
    half = len(signals) // 2
    first_half = {a["alert_id"] for a in expected_alerts(signals[:half], settings.partitions)}
    # Signals of the second half must need the first half's state: episodes that opened
    # in the first half escalate in the second, on every partition (whichever moves).
    from stream.contracts.partitioning import partition_of

    spanning = {a["group_id"] for a in expected if a["alert_id"] in first_half} & {
        a["group_id"] for a in expected if a["alert_id"] not in first_half}
    assert {partition_of(g, settings.partitions) for g in spanning} == set(
        range(settings.partitions))
    one = GroupWorker(environ, tmp_path, "one").start()
    two = GroupWorker(environ, tmp_path, "two")
    try:
        produce(broker.bootstrap, _records(topic, signals[:half]))
        wait_for(lambda: set(_group_alerts(broker.bootstrap, settings.topic_alerts))
                 >= first_half, 60, lambda: f"first-half alerts\n{one.tail()}")
        two.start()  # takes half the partitions, with their groups' state
        wait_for(lambda: _last_assignment(two.tail()), 60,
                 lambda: f"partitions assigned to the second worker\n{two.tail()}")
        produce(broker.bootstrap, _records(topic, signals[half:]))
        got = wait_for(
            lambda: set(a := _group_alerts(broker.bootstrap, settings.topic_alerts))
            >= {x["alert_id"] for x in expected} and a, 90,
            lambda: f"all group alerts\n{one.tail()}\n{two.tail()}")
        assert one.stop() == 0, one.tail()
        assert two.stop() == 0, two.tail()
    finally:
        one.stop(5)
        two.stop(5)
    assert _summary(got.values()) == _summary(expected)
    # The second worker really took partitions from the first: with them, groups whose
    # episode opened before the rebalance and went on after it (their state moved).
    took = _last_assignment(two.tail())
    assert took and set(took) < set(range(settings.partitions)), two.tail()


def _last_assignment(log: str) -> list[int]:
    lines = [line for line in log.splitlines() if "assigned signals partitions [" in line]
    if not lines:
        return []
    listed = lines[-1].split("partitions", 1)[1]
    return list(orjson.loads(listed[: listed.index("]") + 1]))


def main() -> int:
    """A worker with only the group stage (the test's subprocess)."""
    import faust

    from stream.service import codecs
    from stream.service.app import ChurnwatchApp
    from stream.service.group_stage import AGENT_NAME, declare
    from stream.settings import Settings

    settings = Settings.from_env()
    codecs.register()
    app = ChurnwatchApp(
        settings.app_id,
        broker=[f"kafka://{settings.bootstrap}"],
        store="memory://",
        datadir=settings.datadir,
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_disable_leader=True,
        key_serializer=codecs.RAW,
        value_serializer=codecs.ORJSON,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=1,
        web_enabled=False,
    )
    stage = declare(app, settings)
    assert stage.agent.name.endswith(AGENT_NAME)

    @app.on_partitions_assigned.connect
    async def assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        parts = sorted(tp.partition for tp in assigned if tp.topic == stage.signals_topic
                       .get_topic_name())
        print(f"assigned signals partitions {parts}", flush=True)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
