"""A worker that starts behind its input catches up exactly: replay's alerts.

The whole world is in the input topics before the worker starts (a first deployment on
topics with history, a restart after an outage), with a reorder limit far below the
world's size. The input topics of a partition must be read in step by event time
(``stream.service.ordering``: the topic-partitions running ahead are held back), or the
reorder fills up and releases events early, out of replay's order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import WorkerProc, all_applied, unique_settings, wait_for
from tests.integration.test_parity import _alerts_when_complete, _lines, _replay, _summary

pytestmark = pytest.mark.integration

SUBSCRIBERS, DAYS, SEED = 120, 70, 5
#: The reorder's limit: the world (about 65,000 events) is 16 times as large.
MAX_HELD = 4000


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from stream.tools.simulator import WorldParams, simulate

    out = tmp_path_factory.mktemp("world")
    simulate(out, WorldParams(subscribers=SUBSCRIBERS, days=DAYS, seed=SEED))
    return out


@pytest.mark.timeout(240)
def test_a_backlog_ten_times_the_hold_limit_gives_the_replay_alerts(broker, world, tmp_path):
    from stream.tools.produce import produce_directory

    settings, environ = unique_settings(
        broker.bootstrap, CHURNWATCH_PORTED_FILE=str(world / "ported.jsonl"),
        CHURNWATCH_ORDER_MAX_HELD=str(MAX_HELD))
    expected, _, _ = _replay(world, settings)
    total = _lines(world)
    assert total >= 10 * MAX_HELD
    produce_directory(world, settings)  # all of it, before the worker starts
    worker = WorkerProc(environ, tmp_path, fake_engine=False).start()
    try:
        wait_for(lambda: all_applied(broker.bootstrap, settings.app_id, settings.input_topics,
                                     worker.dump()), 180,
                 lambda: f"all input applied\n{worker.tail()}")
        alerts = _alerts_when_complete(broker.bootstrap, settings, expected, worker)
        dump = worker.dump()
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.terminate(5)
    assert dump is not None
    print(f"{total} events, reorder limit {MAX_HELD}: held at most {dump['held_peak']}, "
          f"forced {dump['forced']}, out of order {dump['out_of_order']}; held at most "
          f"by topic (sampled) {dump['held_peak_by_topic']}")
    assert dump["forced"] == 0 and dump["out_of_order"] == 0
    assert dump["held_peak"] <= MAX_HELD
    ids = {a["alert_id"] for a in alerts}
    assert ids == set(expected), (
        f"{len(set(expected) - ids)} of {len(expected)} replay alerts missing, "
        f"{len(ids - set(expected))} extra")
    assert {a["alert_id"]: _summary(a) for a in alerts} == {
        k: _summary(a) for k, a in expected.items()}


@pytest.mark.timeout(240)
def test_a_world_produced_unpaced_to_a_running_worker_gives_the_replay_alerts(broker, world,
                                                                               tmp_path):
    """The README's by-hand steps, with the default settings: a worker running, then
    ``churnwatch produce`` as fast as the broker takes it (faster than the worker)."""
    from stream.tools.produce import produce_directory

    settings, environ = unique_settings(
        broker.bootstrap, CHURNWATCH_PORTED_FILE=str(world / "ported.jsonl"))
    expected, _, _ = _replay(world, settings)
    worker = WorkerProc(environ, tmp_path, fake_engine=False).start()
    try:
        wait_for(lambda: (d := worker.dump()) and d["assigned"], 60,
                 lambda: f"the worker with its partitions\n{worker.tail()}")
        produce_directory(world, settings)
        wait_for(lambda: all_applied(broker.bootstrap, settings.app_id, settings.input_topics,
                                     worker.dump()), 180,
                 lambda: f"all input applied\n{worker.tail()}")
        alerts = _alerts_when_complete(broker.bootstrap, settings, expected, worker)
        dump = worker.dump()
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.terminate(5)
    assert dump is not None
    print(f"unpaced: held at most {dump['held_peak']}, forced {dump['forced']}, "
          f"out of order {dump['out_of_order']}")
    ids = {a["alert_id"] for a in alerts}
    assert ids == set(expected), (
        f"{len(set(expected) - ids)} of {len(expected)} replay alerts missing, "
        f"{len(ids - set(expected))} extra; out of order {dump['out_of_order']}")
    assert {a["alert_id"]: _summary(a) for a in alerts} == {
        k: _summary(a) for k, a in expected.items()}
    assert dump["forced"] == 0
