"""The calibration stage gives the learner replay's inputs whatever the partitions' pace."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from detectors.days import Clock
from stream.contracts.partitioning import partition_of
from stream.service.calibration_stage import CalibrationStage, position
from stream.settings import Settings

TZ = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 2, tzinfo=TZ).timestamp()
DAY = 86400.0
PARTITIONS = 3
CLOCK = Clock(8.0, 0.0)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, TZ).isoformat()


def _learner(store):
    return Settings.from_env({"CHURNWATCH_CALIBRATION_WARMUP": "6",
                              "CHURNWATCH_CALIBRATION_MIN_CLASS": "2",
                              "CHURNWATCH_CALIBRATION_HORIZON_DAYS": "12"}
                             ).outcome_learner(store)


def _world(seed: int, days: int = 40, subscribers: int = 24):
    """Each partition's ``churn.calibration`` records in its own order (alerts, exits and a
    day mark at each day's first event), and call-centre outcomes, some for alerts that
    never were: what the engines and a call centre send the stage."""
    rng = random.Random(seed)
    records: dict[int, list[dict]] = {p: [] for p in range(PARTITIONS)}
    outcomes: list[dict] = []
    for i in range(subscribers):
        sid = f"s{i:03d}"
        p = partition_of(sid, PARTITIONS)
        t = T0 + rng.uniform(1, 10) * DAY
        while t < T0 + (days - 8) * DAY:
            aid = f"a{i:03d}{int(t)}"
            alert = {"alert_id": aid, "kind": "subscriber", "status": "open",
                     "subscriber_id": sid, "zone": "red", "risk_score": 0.75,
                     "segment": "consumer", "tier": None, "value_at_risk": 50.0,
                     "reasons": [{"code": rng.choice(["usage_drop", "forwarding_off_net"]),
                                  "summary": "-"}], "ts": _iso(t)}
            records[p].append({"kind": "alert", "partition": p, "at": [t, 0], "alert": alert})
            leaves = rng.random() < 0.5
            if rng.random() < 0.7:  # a call, hours to days later (some "churned" after it)
                when = t + rng.uniform(0.05, 3) * DAY
                kind = rng.choice(["retained", "not_at_risk", "unreachable", "churned"]
                                  if leaves else ["not_at_risk", "no_answer"])
                outcomes.append({"alert_id": aid, "subscriber_id": sid, "ts": _iso(when),
                                 "outcome": kind})
            if rng.random() < 0.1:
                outcomes.append({"alert_id": "f" * 24, "subscriber_id": sid,
                                 "ts": _iso(t + DAY), "outcome": "retained"})
            if leaves:
                gone = t + rng.uniform(0.5, 6) * DAY
                records[p].append({"kind": "exit", "partition": p, "at": [gone, 1],
                                   "subscriber_id": sid, "ts": _iso(gone)})
                break
            t += rng.uniform(4, 15) * DAY
    for p in range(PARTITIONS):
        for d in range(days):  # the day closes with a partition's first event of the next
            at = T0 + (d + 1) * DAY + rng.uniform(0, 600)
            records[p].append({"kind": "day", "partition": p, "at": [at, 0],
                               "day": CLOCK.day(T0 + d * DAY)})
        records[p].sort(key=lambda r: position(r["at"]))
    return records, sorted(outcomes, key=lambda o: o["ts"])


def _replay(records, outcomes):
    """Replay's order: every record and outcome by (time, kind order, partition)."""
    items = [((r["at"][0], r["at"][1], r["partition"]), "c", r)
             for rs in records.values() for r in rs if r["kind"] != "day"]
    items += [((datetime.fromisoformat(o["ts"]).timestamp(), 2, 0), "o", o) for o in outcomes]
    items.sort(key=lambda x: x[0])
    store: dict = {}
    learner = _learner(store)
    alerts, letters = [], Counter()
    for _, src, item in items:
        if src == "o":
            reason = learner.outcome(item)
            if reason:
                letters[reason] += 1
        elif item["kind"] == "alert":
            alerts.append(learner.alert(item["alert"]))
        else:
            learner.exit(item["subscriber_id"], item["ts"])
    return store, alerts, letters


def _stage(records, outcomes, seed: int, behind: int, repeats: int = 0):
    """The stage, with the outcomes there first and partition ``behind`` a day or two
    behind the others; a second of wall clock a batch: held items pass ``hold_s`` at once.
    ``repeats`` times, a partition sends its last few records again (an engine that
    resumes from before them)."""
    rng = random.Random(seed)
    now = [0.0]
    store: dict = {}
    stage = CalibrationStage(store, _learner, sources=PARTITIONS, hold_s=1.0, idle_s=120.0,
                             clock=lambda: now[0])
    alerts, letters = [], Counter()

    def run(messages):
        out = stage.process(messages)
        alerts.extend(out.alerts)
        letters.update(letter["reason"] for _, letter in out.dead_letters)
        now[0] += 1.0

    run([("o", i, orjson.dumps(o)) for i, o in enumerate(outcomes)])
    arrivals = []  # (when it reaches the topic, record); a partition's own order kept
    for p, rs in records.items():
        last = float("-inf")
        for r in rs:
            lag = rng.uniform(0.5, 2.0) * DAY if p == behind else rng.uniform(0, 600)
            last = max(last, r["at"][0] + lag)
            arrivals.append((last, p, len(arrivals), r))
    arrivals.sort(key=lambda a: a[:3])
    for _ in range(repeats):
        i = rng.randrange(5, len(arrivals))
        p = arrivals[i][1]
        again = [a for a in arrivals[:i + 1] if a[1] == p][-rng.randint(1, 5):]
        arrivals[i + 1:i + 1] = [(arrivals[i][0], p, -1, r) for *_, r in again]
    offset = 0
    while offset < len(arrivals):
        batch = [r for *_, r in arrivals[offset:offset + rng.randint(1, 6)]]
        run([("c", offset + i, orjson.dumps(r)) for i, r in enumerate(batch)])
        offset += len(batch)
    now[0] += 1000.0  # the input has ended: the last items go as the partitions fall idle
    run([])
    assert stage.held == 0
    return store, alerts, letters


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_learner_gets_replays_inputs_with_a_partition_days_behind(seed):
    """A partition a day or two behind the others: held items go by the days once every
    partition has closed the day before theirs, and an outcome also waits for its own
    subscriber's partition (else it can go ahead of its alert, a dead letter, or of the
    port-out); the learner's store, alerts and dead letters are replay's."""
    records, outcomes = _world(seed)
    want_store, want_alerts, want_letters = _replay(records, outcomes)
    behind = seed % PARTITIONS
    store, alerts, letters = _stage(records, outcomes, seed, behind)
    learned = {k: v for k, v in store.items() if k != "__stage__" and not k.startswith("h:")}
    assert letters == want_letters
    assert learned["__calibration__"] == want_store["__calibration__"]
    assert learned == want_store
    assert sorted(orjson.dumps(a, option=orjson.OPT_SORT_KEYS) for a in alerts) == sorted(
        orjson.dumps(a, option=orjson.OPT_SORT_KEYS) for a in want_alerts)
    assert store["__stage__"]["counters"]["released_by_days"] > 0  # the slack was used


def test_an_outcome_finds_the_label_replay_sealed_before_it():
    """An outcome let go by the days while another partition has not sent its alert of the
    outcome's day: replay's learner had sealed the day of the port-out before the outcome
    (that alert came first), so the outcome comes after the label (``outcomes_after_label``);
    the stage's must see the same. Outcomes move the learner's clock, so both seal it."""
    mine = next(f"s{i}" for i in range(50) if partition_of(f"s{i}", 2) == 0)
    other = next(f"s{i}" for i in range(50) if partition_of(f"s{i}", 2) == 1)

    def alert(aid, sid, t):
        return {"alert_id": aid, "kind": "subscriber", "status": "open", "subscriber_id": sid,
                "zone": "red", "risk_score": 0.75, "segment": "consumer", "tier": None,
                "value_at_risk": 50.0, "reasons": [{"code": "usage_drop", "summary": "-"}],
                "ts": _iso(t)}

    def mark(p, t, d):
        return {"kind": "day", "partition": p, "at": [t, 0], "day": CLOCK.day(T0 + d * DAY)}

    t_alert, t_exit, t_other, t_outcome = (T0 + 1.4 * DAY, T0 + 5.4 * DAY, T0 + 7.4 * DAY,
                                           T0 + 7.5 * DAY)
    records = {
        0: [{"kind": "alert", "partition": 0, "at": [t_alert, 0],
             "alert": alert("a1" * 8, mine, t_alert)},
            {"kind": "exit", "partition": 0, "at": [t_exit, 1], "subscriber_id": mine,
             "ts": _iso(t_exit)}, mark(0, T0 + 7.6 * DAY, 6)],
        1: [mark(1, T0 + 6.1 * DAY, 5), mark(1, T0 + 7.1 * DAY, 6),
            {"kind": "alert", "partition": 1, "at": [t_other, 0],
             "alert": alert("a2" * 8, other, t_other)}, mark(1, T0 + 8.1 * DAY, 7)],
    }
    outcome = {"alert_id": "a1" * 8, "subscriber_id": mine, "ts": _iso(t_outcome),
               "outcome": "churned"}
    want_store, _, _ = _replay(records, [outcome])
    assert want_store["__calibration__"]["counters"]["outcomes_after_label"] == 1

    now = [0.0]
    store: dict = {}
    stage = CalibrationStage(store, _learner, sources=2, hold_s=1.0, clock=lambda: now[0])
    stage.process([("o", 0, orjson.dumps(outcome))])
    # Partition 1 sends its day marks but not yet its alert of the outcome's day.
    sent = [*records[0], *records[1][:2]]
    now[0] = 5.0
    stage.process([("c", i, orjson.dumps(r)) for i, r in enumerate(sent)])
    assert stage.held == 0, store["__stage__"]
    assert store["__stage__"]["counters"].get("released_by_days") == 1, store["__stage__"]
    stage.process([("c", len(sent) + i, orjson.dumps(r)) for i, r in enumerate(records[1][2:])])
    learned = {k: v for k, v in store.items() if k != "__stage__"}
    assert learned == want_store


@pytest.mark.parametrize("seed", [5, 6])
def test_records_an_engine_sends_again_change_nothing(seed):
    """An engine that resumes from before its last records (a ``kill -9`` before its
    commit) sends them again: the stage drops them, publishes each alert once, and the
    learner's store is replay's."""
    records, outcomes = _world(seed)
    want_store, want_alerts, _ = _replay(records, outcomes)
    store, alerts, _ = _stage(records, outcomes, seed, behind=0, repeats=30)
    assert sorted(a["alert_id"] for a in alerts) == sorted(a["alert_id"] for a in want_alerts)
    assert {k: v for k, v in store.items() if k != "__stage__"} == want_store
    assert store["__stage__"]["counters"]["reemitted"] >= 30
