"""The service agrees with ``churnwatch replay``: same alerts, also with poison and a crash.

A small simulated world goes through the embedded broker and real workers (real
detectors); ``replay_directory`` runs over the same files in-process. Alert ids are
deterministic, so the sets must be equal.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from stream.service.group_stage import CONTEXT_POLL_S
from tests.integration.helpers import (
    STORES,
    WorkerProc,
    all_applied,
    all_committed,
    committed_offsets,
    end_offsets,
    read_topic,
    unique_settings,
    wait_for,
)

pytestmark = pytest.mark.integration

SUBSCRIBERS, DAYS, SEED = 120, 70, 5


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from stream.tools.simulator import WorldParams, simulate

    out = tmp_path_factory.mktemp("world")
    simulate(out, WorldParams(subscribers=SUBSCRIBERS, days=DAYS, seed=SEED))
    return out


def _poison(clean: Path, out: Path, every: int = 20) -> Counter[str]:
    """Copy ``clean`` with every ``every``-th input line followed by a bad one (5%)."""
    bad = [
        ("malformed_json", lambda i: b'{"event_id": "bad%d", "ts": ' % i),
        ("not_utf8", lambda i: b'{"event_id": "bad%d", "x": "\xff\xfe"}' % i),
        ("schema", lambda i: b'{"event_id": "bad%d", "subscriber_id": "s"}' % i),
        ("absurd_value", None),
    ]
    out.mkdir()
    counts: Counter[str] = Counter()
    n = 0
    for path in clean.iterdir():
        if path.suffix != ".jsonl" or path.stem not in ("calls", "billing"):
            (out / path.name).write_bytes(path.read_bytes())
            continue
        lines = []
        for line in path.read_bytes().splitlines():
            lines.append(line)
            n += 1
            if n % every:
                continue
            reason, make = bad[(n // every) % len(bad)]
            if make is None:  # a copy of the event with a negative amount/duration
                event = orjson.loads(line)
                event["event_id"] = f"bad{n}"
                field = "duration_s" if path.stem == "calls" else "amount"
                if path.stem == "billing" and event["kind"] not in ("charge", "topup"):
                    reason, bad_line = "malformed_json", b"{"
                else:
                    event[field] = -1
                    bad_line = orjson.dumps(event)
            else:
                bad_line = make(n)
            if path.stem == "billing" and reason == "oversized":
                continue
            lines.append(bad_line)
            counts[reason] += 1
        lines.append(b'{"pad": "' + b"x" * 70_000 + b'"}')  # one oversized per file
        counts["oversized"] += 1
        (out / path.name).write_bytes(b"\n".join(lines) + b"\n")
    return counts


def _replay(directory: Path, settings) -> tuple[dict[str, dict], Counter[str], dict]:
    from stream.tools.replay import replay_directory

    counters: Counter[str] = Counter()
    stores: list[dict] = []
    alerts = {
        a["alert_id"]: a
        for a in replay_directory(directory, partitions=settings.partitions,
                                  engine_config=settings.engine_config(),
                                  counters=counters, stores=stores,
                                  # The stream calibrates (CHURNWATCH_CALIBRATION on):
                                  # the same learner, no outcomes in these worlds.
                                  learner=settings.outcome_learner({}))
    }
    state = {k: v for store in stores for k, v in store.items()}
    return alerts, counters, state


def _summary(alert: dict) -> tuple:
    # Members' group context is added from the group stage as it stands when the member
    # alert is made: in memory at once in replay, a poll behind on the stream. Everything
    # else must be equal, the contact windows (learned from the calls) included.
    return (alert["alert_id"], alert["kind"], alert["status"], alert["zone"],
            tuple(r["code"] for r in alert["reasons"] if r["code"] != "group_context"),
            json.dumps(alert.get("contact"), sort_keys=True))


def _check_group_context(alerts: list[dict], expected: dict[str, dict]) -> int:
    """Members' group context names a real group alert of their group; how many have it."""
    groups = {a["alert_id"]: a["group_id"] for a in expected.values() if a["kind"] == "group"}
    assert groups, "the world has a group alert"
    n = 0
    for alert in alerts:
        for reason in alert["reasons"]:
            if reason["code"] == "group_context":
                figures = reason["figures"]
                assert alert["kind"] == "subscriber" and alert["status"] != "resolved"
                assert groups.get(figures["group_alert_id"]) == alert["group_id"], reason
                n += 1
    return n


def _split_at_first_context(world: Path, expected: dict[str, dict], settings,
                            tmp_path: Path) -> tuple[Path, Path, str, str]:
    """``world`` in two directories, cut at the event time of the first member alert with
    a group context in replay; with that alert's id and its group alert's id.

    The first part holds the profiles, the ported numbers, and every calls and billing
    line before the cut (a line without an event time stays with the one before it);
    replayed alone, it must raise the group alert and not the member alert.
    """
    from stream.tools.replay import replay_directory

    member = min((a for a in expected.values()
                  if any(r["code"] == "group_context" for r in a["reasons"])),
                 key=lambda a: (a["ts"], a["alert_id"]))
    group_alert = next(r["figures"]["group_alert_id"] for r in member["reasons"]
                       if r["code"] == "group_context")
    cut = datetime.fromisoformat(member["ts"]).timestamp()
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for path in world.iterdir():
        if path.suffix != ".jsonl" or path.stem not in ("calls", "billing"):
            (first / path.name).write_bytes(path.read_bytes())
            continue
        lines = path.read_bytes().splitlines()
        at = len(lines)
        for i, line in enumerate(lines):
            try:
                ts = datetime.fromisoformat(orjson.loads(line)["ts"]).timestamp()
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if ts >= cut:
                at = i
                break
        (first / path.name).write_bytes(b"".join(line + b"\n" for line in lines[:at]))
        (second / path.name).write_bytes(b"".join(line + b"\n" for line in lines[at:]))
    before = {a["alert_id"] for a in replay_directory(
        first, partitions=settings.partitions, engine_config=settings.engine_config(),
        learner=settings.outcome_learner({}))}
    assert group_alert in before and member["alert_id"] not in before
    return first, second, member["alert_id"], group_alert


def _lines(directory: Path) -> int:
    from stream.tools.produce import count_lines

    return count_lines(directory)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("store", STORES)
def test_alerts_and_dead_letters_match_replay_on_a_poisoned_world(broker, world, tmp_path,
                                                                  store):
    from stream.tools.produce import produce_directory

    poisoned = tmp_path / "poisoned"
    bad = _poison(world, poisoned)
    settings, environ = unique_settings(
        broker.bootstrap, CHURNWATCH_PORTED_FILE=str(poisoned / "ported.jsonl"),
        CHURNWATCH_STORE=store)
    expected, counters, _ = _replay(poisoned, settings)
    clean_expected, _, _ = _replay(world, settings)
    assert expected and {k: _summary(a) for k, a in expected.items()} == {
        k: _summary(a) for k, a in clean_expected.items()}
    assert {k[len("rejected."):]: v for k, v in counters.items()
            if k.startswith("rejected.")} == dict(bad)

    # Members' group context is read from the group stage as it stands when the member
    # alert is made. To see it reach a member's alert whatever the machine's load, the
    # world goes in two parts: up to the first member alert that has a context in replay,
    # and, once its group's alert is out, the rest.
    first, second, member, group_alert = _split_at_first_context(poisoned, expected, settings,
                                                                 tmp_path)
    worker = WorkerProc(environ, tmp_path, fake_engine=False).start()
    try:
        produce_directory(first, settings)
        wait_for(lambda: group_alert in {orjson.loads(r.value)["alert_id"] for r in read_topic(
                     broker.bootstrap, settings.topic_alerts)}, 90,
                 lambda: f"the group alert before the first member context\n{worker.tail()}")
        time.sleep(10 * CONTEXT_POLL_S)  # the worker's reader of group contexts polls
        produce_directory(second, settings)
        total = _lines(poisoned)
        wait_for(lambda: (d := worker.dump()) and d["events"] == total, 90,
                 lambda: f"{total} messages processed: {worker.dump() and worker.dump()['events']}"
                 f"\n{worker.tail()}")
        # Group alerts follow their members' signals through the group stage.
        alerts = _alerts_when_complete(broker.bootstrap, settings, expected, worker)
        letters = read_topic(broker.bootstrap, settings.topic_deadletter)
        dump = worker.dump()
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.terminate(5)
    got = alerts
    assert len(got) == len({a["alert_id"] for a in got})  # no crash: each alert once
    assert {a["alert_id"]: _summary(a) for a in got} == {
        k: _summary(a) for k, a in expected.items()}, _order_report(dump)
    assert sum(a["kind"] == "group" for a in got) >= 2
    n = _check_group_context(got, expected)
    print(f"group context on {n} member alerts (replay: "
          f"{sum(_check_group_context([a], expected) for a in expected.values())})")
    assert _check_group_context([a for a in got if a["alert_id"] == member], expected) == 1
    reasons = Counter(orjson.loads(r.value)["reason"] for r in letters)
    assert reasons == bad
    for r in letters[:50]:
        letter = orjson.loads(r.value)
        assert letter["topic"] in settings.input_topics and letter["offset"] >= 0
        assert base64.b64decode(letter["raw_base64"])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("store, datadir", [
    *((store, "kept") for store in STORES),
    # The bulk restore (stream.service.faust_internals.bulk_restore) reads everything.
    ("rocksdb://", "empty"),
])
def test_kill9_mid_stream_then_restart_gives_the_replay_alerts_and_state(broker, world,
                                                                         tmp_path, store,
                                                                         datadir):
    """``kill -9`` halfway, restart: the run finishes with exactly the replay result, and
    every input offset committed. On RocksDB the restarted worker keeps the dead one's data
    directory (it carries on from its local state and the changelog's tail, read in bulk),
    or starts on an empty one (it reads the whole changelog in bulk). On RocksDB each
    partition's day close has a batch of its own, as on a large worker."""
    from stream.tools.produce import produce_directory

    settings, environ = unique_settings(
        broker.bootstrap, CHURNWATCH_PORTED_FILE=str(world / "ported.jsonl"),
        CHURNWATCH_STORE=store,
        CHURNWATCH_SWEEP_ALONE_FROM="0" if store.startswith("rocksdb") else "20000")
    expected, _, expected_state = _replay(world, settings)
    total = _lines(world)
    produce_directory(world, settings)
    first = WorkerProc(environ, tmp_path, name="first", fake_engine=False).start()
    rocksdb = store.startswith("rocksdb")
    second = WorkerProc(environ, tmp_path, name="second", fake_engine=False,
                        data_of="first" if rocksdb and datadir == "kept" else None)
    try:
        # Half the input processed, and some of it committed: its state is durable (the
        # commit follows the state's flush), so the restart has something to restore.
        wait_for(lambda: (d := first.dump()) and d["events"] >= total // 2
                 and any(acks[0] for acks in d["faust_acks"].values()), 60,
                 lambda: f"half the input processed\n{first.tail()}", step=0.05)
        first.kill9()
        second.start()
        # Every input message applied by the second worker (its applied marks reach the
        # log end), and committed: records fetched before a rebalance's seek once made
        # Faust count a gap as acked and stall the commit
        # (stream.service.faust_internals.transport).
        wait_for(lambda: all_applied(broker.bootstrap, settings.app_id, settings.input_topics,
                                     second.dump()),
                 90, lambda: f"all input applied: {second.dump() and second.dump()['applied']}"
                             f"\n{second.tail()}")
        wait_for(lambda: all_committed(broker.bootstrap, settings.app_id,
                                       settings.input_topics), 30,
                 lambda: f"all input committed: {_uncommitted(broker.bootstrap, settings)}"
                         f"\n{(second.dump() or {}).get('faust_acks')}")
        # A dump written after that (the worker rewrites it every 0.3 s).
        committed_at = time.time()
        dump = wait_for(lambda: second.dump_path.stat().st_mtime > committed_at + 0.1
                        and (d := second.dump()) and d["subscribers"] and d, 10, "a dump")
        state = dump["subscribers"]
        # Events the second worker applied itself: fewer than all, so the rest came with
        # the state it restored.
        restored = total - dump["accepted"]
        alerts = _alerts_when_complete(broker.bootstrap, settings, expected, second)
        assert second.terminate() == 0, second.tail()
    finally:
        first.terminate(5)
        second.terminate(5)
    # Exactly the replay: every alert id (repeats only with the same id), and every key's
    # final state, restored from the changelog (the first worker's write-ahead copies make
    # each batch whole) and then carried on from the applied marks, not rebuilt.
    ids = {a["alert_id"] for a in alerts}
    assert ids == set(expected), (
        f"{len(set(expected) - ids)} of {len(expected)} replay alerts missing, "
        f"{len(ids - set(expected))} extra")
    assert {a["alert_id"]: _summary(a) for a in alerts} == {
        k: _summary(a) for k, a in expected.items()}, _order_report(dump)
    assert any(a["kind"] == "group" for a in alerts)
    _check_group_context(alerts, expected)
    assert set(state) == set(expected_state)
    differing = {k: _fields_differing(v, expected_state[k]) for k, v in state.items()
                 if v != expected_state[k]}
    assert not differing, f"{len(differing)} subscribers differ: {list(differing.items())[:3]}"
    assert restored > 0, "the second worker rebuilt its state instead of restoring it"
    if rocksdb:
        # Every changelog record it needed came in bulk; Faust's own loop had none left.
        assert dump["restored"] == 0, (dump["bulk_restored"], dump["restored"])
        assert dump["bulk_restored"] > 0 or datadir == "kept"


def _uncommitted(bootstrap: str, settings) -> dict:
    """(topic, partition) -> (committed, end) where the group's commit is short."""
    ends = end_offsets(bootstrap, settings.input_topics)
    done = committed_offsets(bootstrap, settings.app_id, settings.input_topics)
    return {tp: (done.get(tp), end) for tp, end in ends.items() if done.get(tp, -1) < end}


def _alerts_when_complete(bootstrap: str, settings, expected: dict, worker: WorkerProc,
                          timeout: float = 30.0) -> list[dict]:
    """The alert topic once it holds every expected id (or at the timeout: what it has)."""
    alerts: list[dict] = []

    def complete() -> bool:
        alerts[:] = [orjson.loads(r.value) for r in read_topic(bootstrap, settings.topic_alerts)]
        return {a["alert_id"] for a in alerts} >= set(expected)

    try:
        wait_for(complete, timeout, "every expected alert", step=0.5)
    except AssertionError:
        pass  # compared (and reported) by the caller
    return alerts


def _order_report(*dumps: dict | None) -> str:
    """Why a stream may differ from replay: events processed out of replay's order (a
    producer held them past the order margin), records fetched before a seek."""
    return "; ".join(f"out of order {d.get('out_of_order')}, stale records dropped "
                     f"{d.get('stale_dropped')}" for d in dumps if d)


def _fields_differing(got: dict, want: dict) -> dict:
    return {f: (got.get(f), want.get(f)) for f in set(got) | set(want)
            if got.get(f) != want.get(f)}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("store", STORES)
def test_two_workers_share_the_world_and_one_stopped_mid_stream_hands_over(broker, world,
                                                                          tmp_path, store):
    """Scale out with the real engine: two workers split the partitions (subscribers and
    groups); one gets SIGTERM halfway, the other takes its partitions over, with their
    state, and the run ends with exactly the replay's alerts, group alerts included, and
    every input offset committed."""
    from stream.tools.produce import produce_directory

    settings, environ = unique_settings(
        broker.bootstrap, CHURNWATCH_PORTED_FILE=str(world / "ported.jsonl"),
        CHURNWATCH_STORE=store)
    expected, _, _ = _replay(world, settings)
    total = _lines(world)
    one = WorkerProc(environ, tmp_path, name="one", fake_engine=False).start()
    two = WorkerProc(environ, tmp_path, name="two", fake_engine=False).start()
    try:
        def split() -> bool:
            a, b = one.dump(), two.dump()
            return bool(a and b and a["assigned"] and b["assigned"]
                        and not set(a["assigned"]) & set(b["assigned"]))

        wait_for(split, 60, lambda: f"both workers with partitions\n{one.tail()}\n{two.tail()}")
        produce_directory(world, settings)
        wait_for(lambda: (d := one.dump()) and d["events"] >= total // 6, 60,
                 lambda: f"the first worker under way\n{one.tail()}", step=0.05)
        assert one.terminate() == 0, one.tail()  # SIGTERM: finishes its batch, exits 0
        wait_for(lambda: (d := two.dump()) and set(d["assigned"]) == set(
            range(settings.partitions)), 60,
                 lambda: f"the second worker owning every partition\n{two.tail()}")
        wait_for(lambda: all_applied(broker.bootstrap, settings.app_id, settings.input_topics,
                                     two.dump()), 90,
                 lambda: f"all input applied\n{two.tail()}")
        wait_for(lambda: all_committed(broker.bootstrap, settings.app_id,
                                       settings.input_topics), 30,
                 lambda: f"all input committed: {_uncommitted(broker.bootstrap, settings)}"
                         f"\n{(two.dump() or {}).get('faust_acks')}")
        alerts = _alerts_when_complete(broker.bootstrap, settings, expected, two)
        done_by_two = two.dump()["events"]
        dumps = (one.dump(), two.dump())
        assert two.terminate() == 0, two.tail()
    finally:
        one.terminate(5)
        two.terminate(5)
    assert 0 < done_by_two < total, "the work was shared"
    assert {a["alert_id"]: _summary(a) for a in alerts} == {
        k: _summary(a) for k, a in expected.items()}, _order_report(*dumps)
    assert sum(a["kind"] == "group" for a in expected.values()) >= 2
