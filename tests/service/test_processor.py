"""The service's in-process parts, without a broker: ordering, batch cache, processor.

The integration tests exercise the same parts over real sockets.
"""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import orjson

from stream.service.ordering import Reorder
from stream.service.processor import BatchProcessor, alert_key
from stream.service.tables import BatchCache, PartitionIndex, PartitionView, StateTables
from stream.service.write_ahead import is_wal_key
from tests.integration.fake_engine import FakeEngine
from tests.integration.helpers import call_event

CALLS, BILLING, SUBS = "telecom.calls", "telecom.billing", "telecom.subscribers"
KINDS = {CALLS: "calls", BILLING: "billing", SUBS: "subscribers"}


class FakeTable:
    def __init__(self) -> None:
        self.data: dict = {}
        self.sent: list = []

    def send_changelog(self, partition, key, value, **kwargs) -> None:
        self.sent.append((partition, key, None if value is None else orjson.loads(value)))


def Tables() -> StateTables:  # noqa: N802 - reads like the class it stands for
    """StateTables over plain dicts."""
    return StateTables(FakeTable(), FakeTable())


def _msg(topic, partition, offset, event) -> NS:
    return NS(topic=topic, partition=partition, offset=offset,
              key=event.get("subscriber_id", "").encode(), value=orjson.dumps(event))


def _processor(tables: StateTables, clock=None) -> BatchProcessor:
    return BatchProcessor(tables, KINDS, lambda p: FakeEngine(
        subscribers=tables.subscriber_view(p), population=tables.population_view(p)),
        **({} if clock is None else {"clock": clock}))


def test_reorder_releases_in_event_time_across_topics():
    r = Reorder()
    r.push(CALLS, 0, 0, 10.0, "calls", "c10")
    r.push(CALLS, 0, 1, 30.0, "calls", "c30")
    r.push(BILLING, 0, 0, 20.0, "billing", "b20")
    # Billing may still deliver something before 30: only up to 20 goes.
    assert r.release(KINDS, lambda t, p: 100.0 if t == SUBS else None) == ["c10", "b20"]
    # Billing caught up by a probe after the event was written: the rest goes.
    assert r.release(KINDS, lambda t, p: 100.0 if t != CALLS else None) == ["c30"]
    assert len(r) == 0


def test_reorder_waits_for_a_probe_newer_than_the_event():
    r = Reorder()
    r.push(CALLS, 1, 0, 10.0, "calls", "c", written_s=50.0)
    r.delivered(BILLING, 1)
    r.delivered(SUBS, 1)
    assert r.release(KINDS, lambda t, p: 40.0 if t != CALLS else None) == []
    assert r.release(KINDS, lambda t, p: 60.0 if t != CALLS else None) == ["c"]


def test_profiles_come_first_and_a_silent_topic_holds_back():
    r = Reorder()
    r.push(CALLS, 0, 0, 5.0, "calls", "call")
    assert r.release(KINDS, lambda t, p: None) == []  # nothing from billing/subscribers yet
    r.push(SUBS, 0, 0, 0.0, "subscribers", "profile")
    assert r.release(KINDS, lambda t, p: 1.0 if t == BILLING else None) == ["profile"]
    assert r.release(KINDS, lambda t, p: 1.0 if t != CALLS else None) == ["call"]


def test_reorder_counts_an_event_behind_what_its_partition_released():
    r = Reorder()
    r.push(CALLS, 0, 0, 10.0, "calls", "c10")
    r.push(CALLS, 0, 1, 30.0, "calls", "c30")
    assert r.release(KINDS, lambda t, p: 100.0) == ["c10", "c30"]
    r.push(BILLING, 0, 0, 30.0, "billing", "b30")  # after c30 in replay's order too
    r.push(CALLS, 1, 0, 5.0, "calls", "other partition")
    assert r.out_of_order == 0
    r.push(BILLING, 0, 1, 20.0, "billing", "b20")  # replay would have put it before c30
    assert r.out_of_order == 1
    assert r.release(KINDS, lambda t, p: 100.0) == ["b20", "b30", "other partition"]
    r.drop_partitions([0])  # a rebalance: what comes again is not out of order
    r.push(CALLS, 0, 0, 10.0, "calls", "c10")
    assert r.out_of_order == 1


def test_a_message_after_a_hole_waits_for_the_hole_to_be_fetched_again():
    tables = Tables()
    now = [0.0]
    proc = _processor(tables, clock=lambda: now[0])
    events = [call_event(i, "s1") for i in range(8)]
    msgs = [_msg(CALLS, 0, i, e) for i, e in enumerate(events)]
    first = proc.process(msgs[:3] + msgs[5:7], None)  # 3 and 4 never came
    assert [m.offset for m in first.done] == [0, 1, 2]
    assert proc.take_holes() == {(CALLS, 0): 3} and proc.take_holes() == {}
    # Messages already on their way after the seek: skipped, no second seek yet.
    assert proc.process([msgs[7]], None).done == [] and proc.take_holes() == {}
    again = proc.process(msgs[3:8], None)  # fetched again from the hole
    assert [m.offset for m in again.done] == [3, 4, 5, 6, 7]
    proc.flush()
    assert tables.subscribers.data["s1"]["n"] == 8  # each event once


def test_a_hole_that_never_fills_is_given_up_after_three_fetches():
    tables = Tables()
    now = [0.0]
    proc = _processor(tables, clock=lambda: now[0])
    events = [call_event(i, "s1") for i in range(4)]
    msgs = [_msg(CALLS, 0, o, e) for o, e in zip((0, 1, 3, 4), events)]  # 2: a marker
    assert [m.offset for m in proc.process(msgs[:3], None).done] == [0, 1]
    for _ in range(2):
        now[0] += 1.0
        assert proc.process([msgs[2]], None).done == []
    assert len(proc.take_holes()) == 1
    now[0] += 1.0
    assert [m.offset for m in proc.process(msgs[2:], None).done] == [3, 4]


def test_batch_cache_writes_each_key_once_with_its_partition():
    table, index = FakeTable(), PartitionIndex()
    cache = BatchCache(table, index)
    view = PartitionView(cache, 2)
    for n in range(5):
        view["s1"] = {"n": n}
    view["s2"] = {"n": 0}
    assert table.data == {} and sorted(view) == ["s1", "s2"]
    assert cache.flush() == 2
    assert table.sent == [(2, "s1", {"n": 4}), (2, "s2", {"n": 0})]
    del view["s2"]
    cache.flush()
    assert "s2" not in table.data and sorted(view) == ["s1"]


def test_processor_dead_letters_alerts_and_marks():
    tables = Tables()
    proc = _processor(tables)
    events = [call_event(i, "s1") for i in range(5)]
    items = [_msg(CALLS, 0, i, e) for i, e in enumerate(events)]
    items.insert(2, NS(topic=CALLS, partition=0, offset=2, key=b"s1", value=b"{"))
    for offset, item in enumerate(items):
        item.offset = offset
    result = proc.process(items, None)
    assert [letter["reason"] for _, letter in result.dead_letters] == ["malformed_json"]
    assert [alert_key(a) for _, a in result.alerts] == ["s1"]
    assert result.alerts[0][1]["emitted_at"]
    assert len(result.done) == 6
    proc.flush()
    assert tables.subscribers.data["s1"]["n"] == 5
    assert tables.applied_marks(0) == {CALLS: 6}


def test_processor_skips_what_the_recovered_state_already_has():
    tables = Tables()
    first = _processor(tables)
    events = [call_event(i, "s1") for i in range(10)]
    first.process([_msg(CALLS, 0, i, e) for i, e in enumerate(events[:6])], None)
    first.flush()
    # A restart: a new processor over the same (recovered) tables gets everything again.
    second = _processor(tables)
    result = second.process([_msg(CALLS, 0, i, e) for i, e in enumerate(events)], None)
    second.flush()
    assert len(result.done) == 10 and result.accepted == 4
    assert tables.subscribers.data["s1"]["n"] == 10
    assert [a["alert_id"] for _, a in result.alerts] == ["s1-10"]


def _recover(log: list[tuple[str, int, str, bytes | None]]) -> StateTables:
    """A fresh StateTables from changelog records, as Faust plus the write-ahead reader do."""
    tables = Tables()
    for table, partition, key, value in log:
        if table == "p" and is_wal_key(key):
            tables.wal.feed(partition, value)
            continue
        data = (tables.subscribers if table == "s" else tables.population).data
        if value is None:
            data.pop(key, None)
        else:
            data[key] = orjson.loads(value)
    tables.wal.overlay(tables)
    return tables


def test_a_batch_cut_anywhere_recovers_as_the_batch_before_or_after():
    """Every prefix of the changelog a crash can leave gives one whole batch's state."""
    tables = Tables()
    tables.wal_chunk_bytes = 120  # several chunks per batch
    proc = _processor(tables)
    log: list[tuple[str, int, str, bytes | None]] = []
    states = [({}, {})]
    offsets = [0, 0]  # each partition's own offsets, without holes
    for batch in range(3):
        events = [call_event(100 * batch + i, f"s{i % 7}") for i in range(20)]
        # A subscriber's events all come on one partition, as with keyed topics.
        items = []
        for i, e in enumerate(events):
            p = i % 7 % 2
            items.append(_msg(CALLS, p, offsets[p], e))
            offsets[p] += 1
        proc.process(items, None)
        staged = proc.stage()
        assert len(staged.wal) > 2
        log += [("p", p, k, v) for p, k, v in staged.wal]
        log += [("s", p, k, v) for p, k, v in staged.subscribers]
        log += [("p", p, k, v) for p, k, v in staged.population]
        states.append((dict(tables.subscribers.data), dict(tables.population.data)))
    def part(subs: dict, pops: dict, p: int) -> tuple[dict, dict]:
        # Partitions are independent (own engine, marks, copy): judge each on its own.
        return ({k: v for k, v in subs.items() if k in tables.subscriber_index.keys[p]},
                {k: v for k, v in pops.items() if k.startswith(f"{p}/")})

    for p in (0, 1):
        starts = [0]
        for n in range(1, len(log) + 1):
            got = _recover(log[:n])
            mine = part(got.subscribers.data, got.population.data, p)
            whole = [i for i, state in enumerate(states) if part(*state, p) == mine]
            assert whole, f"a cut after {n} of {len(log)} records mixes batches of {p}"
            starts.append(whole[-1])
        assert starts == sorted(starts) and starts[-1] == 3  # never back; ends complete
        assert set(starts) == {0, 1, 2, 3}
    marks = _recover(log).population.data
    assert marks["1/__applied__"] == {CALLS: offsets[1]} == {CALLS: 27}
    assert "0/__wal__/0" not in marks


def test_open_alerts_gauge_follows_published_alerts_and_port_outs():
    from collections import Counter

    from prometheus_client import CollectorRegistry

    from stream.service.metrics import Metrics

    script = {"c1": ("open", "yellow"), "c2": ("escalated", "red"), "c3": ("resolved", "green"),
              "c4": ("open", "red")}

    class Scripted:
        counters: Counter = Counter()

        def process(self, kind, event, ts=None):
            assert kind == "subscribers" or ts is not None  # the validator's time is passed
            if event.get("event_id") not in script:
                return []
            status, zone = script[event["event_id"]]
            return [{"alert_id": event["event_id"], "kind": "subscriber", "status": status,
                     "subscriber_id": event["subscriber_id"], "segment": "sme", "zone": zone}]

    metrics = Metrics(CollectorRegistry())
    proc = BatchProcessor(Tables(), KINDS, lambda p: Scripted(), metrics=metrics)

    def gauge() -> dict:
        return {(s.labels["segment"], s.labels["zone"]): s.value
                for m in metrics.open_alerts.collect() for s in m.samples if s.value}

    port_out = {"event_id": "b9", "ts": "2026-03-02T10:00:00+08:00", "subscriber_id": "s2",
                "account_id": None, "kind": "port_out", "amount": 0.0, "previous_amount": None}
    steps = [
        (_msg(CALLS, 0, 0, {**call_event(1, "s1"), "event_id": "c1"}), {("sme", "yellow"): 1}),
        (_msg(CALLS, 0, 1, {**call_event(4, "s2"), "event_id": "c4"}),
         {("sme", "yellow"): 1, ("sme", "red"): 1}),
        (_msg(CALLS, 0, 2, {**call_event(2, "s1"), "event_id": "c2"}), {("sme", "red"): 2}),
        (_msg(BILLING, 0, 0, port_out), {("sme", "red"): 1}),
        (_msg(CALLS, 0, 3, {**call_event(3, "s1"), "event_id": "c3"}), {}),
    ]
    for message, want in steps:
        proc.process([message], None)
        assert gauge() == want


def _signal(day: int, sid: str, gid: str = "G1") -> dict:
    return {"group_id": gid, "subscriber_id": sid, "day": day, "ts": f"t{day:05d}{sid}",
            "zone": "red", "operator": None, "spend_ratio": 1.0, "monthly_value": 9.0,
            "left": None}


def test_sequencer_releases_a_day_once_every_source_closed_the_day_before():
    from stream.service.signal_order import Sequencer

    seq = Sequencer(sources=3)
    assert seq.add(_signal(5, "b")) == [] and seq.add(_signal(4, "a")) == []
    assert seq.watermark(0, 10) == [] and seq.watermark(1, 10) == []  # source 2 unheard
    assert [s["day"] for s in seq.watermark(2, 3)] == [4]  # up to 3 closed: day 4 may go
    again = seq.from_state(orjson.loads(orjson.dumps(seq.to_state())), 3)
    assert again.watermark(2, 2) == []  # a watermark only rises (delivered again: nothing)
    # Copies of one signal (a redelivered batch) come out once, in (day, time) order.
    again.add(_signal(5, "c"))
    again.add(_signal(5, "b"))
    assert [(s["day"], s["subscriber_id"]) for s in again.watermark(2, 4)] == [
        (5, "b"), (5, "c")]
    assert again.add(_signal(5, "d"))  # covered already: straight through
    assert again.held == []


class SignalEngine(FakeEngine):
    """A fake engine that emits a member signal per event and closes the event's day."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.signals: list = []
        self.closed_to = None

    def process(self, kind, event, ts=None):
        alerts = super().process(kind, event, ts)
        day = int(event["ts"][8:10])
        self.signals.append(_signal(day, event["subscriber_id"]))
        self.closed_to = day - 1
        return alerts

    def drain_signals(self):
        out, self.signals = self.signals, []
        return out


def test_processor_hands_over_signals_watermarks_and_members_group_context():
    tables = Tables()
    context = {"group_id": "G1", "code": "group_context"}
    proc = BatchProcessor(tables, KINDS, lambda p: SignalEngine(
        subscribers=tables.subscriber_view(p), population=tables.population_view(p)),
        group_context=lambda gid: context if gid == "G1" else None)
    events = [call_event(i, "s1", day=3 + i // 5) for i in range(10)]
    result = proc.process([_msg(CALLS, 0, i, e) for i, e in enumerate(events)], None)
    assert [s["day"] for s in result.signals] == [3] * 5 + [4] * 5
    assert result.watermarks == [(0, 3)]
    # Only a moved watermark is reported again.
    assert proc.process([_msg(CALLS, 0, 10, call_event(10, "s1", day=4))], None).watermarks == []
    # A member's open alert gets its group's context; a resolution does not.
    alert = {"kind": "subscriber", "status": "open", "group_id": "G1", "reasons": []}
    other = {"kind": "subscriber", "status": "resolved", "group_id": "G1", "reasons": []}
    engine = proc.engine(0)
    engine.process = lambda kind, event, ts=None: [alert, other]
    out = proc.process([_msg(CALLS, 0, 11, call_event(11, "s1", day=4))], None)
    assert [a for _, a in out.alerts] == [alert, other]
    assert alert["reasons"] == [context] and other["reasons"] == []


def test_calibration_gets_subscriber_alerts_exits_and_marks_in_replay_order():
    """Calibration on: subscriber alerts leave churn.alerts for the stage, with each
    event's merge position, then the event's exit, then each partition's progress mark;
    a stage fed those records calibrates them (doctest of stream.service.calibration_stage)."""
    from collections import Counter

    from detectors.days import parse_ts
    from stream.service.calibration_stage import CalibrationStage
    from stream.settings import Settings

    class Scripted:
        counters: Counter = Counter()
        closed_to = 20513

        def process(self, kind, event, ts=None):
            if event.get("event_id") != "c1":
                return []
            return [{"alert_id": "a1", "kind": "subscriber", "status": "open",
                     "subscriber_id": event["subscriber_id"], "segment": "sme", "zone": "red",
                     "risk_score": 0.8, "reasons": [], "ts": "2026-03-02T01:00:00+08:00"},
                    {"alert_id": "g1", "kind": "group", "group_id": "G", "status": "open",
                     "zone": "red"}]

    proc = BatchProcessor(Tables(), KINDS, lambda p: Scripted(), calibration=True)
    port_out = {"event_id": "b9", "ts": "2026-03-02T10:00:00+08:00", "subscriber_id": "s1",
                "account_id": None, "kind": "port_out", "amount": 0.0, "previous_amount": None}
    result = proc.process([_msg(CALLS, 0, 0, {**call_event(1, "s1"), "event_id": "c1"}),
                           _msg(BILLING, 0, 0, port_out)], None)
    assert [a["alert_id"] for _, a in result.alerts] == ["g1"]  # group alerts unchanged
    call_at = [parse_ts(call_event(1, "s1")["ts"]), 0]
    bill_at = [parse_ts(port_out["ts"]), 1]
    assert [(r["kind"], r["partition"], r["at"]) for r in result.calibration] == [
        ("alert", 0, call_at), ("exit", 0, bill_at), ("day", 0, bill_at)]
    assert result.calibration[-1]["day"] == 20513
    assert result.calibration[1]["subscriber_id"] == "s1"

    store: dict = {}
    stage = CalibrationStage(store, Settings().outcome_learner, sources=1)
    out = stage.process([("c", i, orjson.dumps(r)) for i, r in enumerate(result.calibration)])
    assert [a["alert_id"] for a in out.alerts] == ["a1"] and stage.held == 0
    assert out.alerts[0]["calibration_version"].startswith("newton-1/0@")
    assert store["__calibration__"]["counters"]["exits"] == 1
    # Delivered again (a restart before the commit): nothing changes.
    before = {k: v for k, v in store.items() if k != "__stage__"}
    again = stage.process([("c", i, orjson.dumps(r)) for i, r in enumerate(result.calibration)])
    assert not again.alerts and {k: v for k, v in store.items() if k != "__stage__"} == before
    assert store["__stage__"]["counters"]["redelivered"] == 3


def test_calibration_stage_holds_outcomes_until_the_partitions_pass_them():
    from stream.service.calibration_stage import CalibrationStage
    from stream.settings import Settings

    store: dict = {}
    stage = CalibrationStage(store, Settings().outcome_learner, sources=2)
    outcome = {"alert_id": "a1f3c09e5b7d2e44", "subscriber_id": "s1",
               "ts": "2026-03-02T12:00:00+08:00", "outcome": "retained"}
    t = 1772424000.0  # 2026-03-02T12:00:00+08:00
    assert not stage.process([("o", 0, orjson.dumps(outcome))]).dead_letters
    assert stage.held == 1
    mark = {"kind": "day", "partition": 0, "at": [t + 1, 0], "day": 1}
    stage.process([("c", 0, orjson.dumps(mark))])
    assert stage.held == 1  # partition 1 has not passed it
    mark1 = {**mark, "partition": 1, "at": [t, 1]}  # at its time, not past it
    stage.process([("c", 1, orjson.dumps(mark1))])
    assert stage.held == 1
    out = stage.process([("c", 2, orjson.dumps({**mark1, "at": [t + 5, 0]}))])
    assert stage.held == 0
    # Never alerted: an unknown alert, a dead letter with the original bytes and offset.
    (letter,) = [v for _, v in out.dead_letters]
    assert (letter["reason"], letter["offset"]) == ("unknown_alert", 0)
    assert stage.process([("o", 1, b'{"alert_id": ')]).dead_letters[0][1]["reason"] == \
        "malformed_json"


def test_calibration_stage_stops_waiting_for_a_partition_that_sends_nothing():
    """A partition with no traffic never reports: after ``idle_s`` the items held that
    long go without it (counted), where they used to wait for ``max_held``."""
    from stream.service.calibration_stage import CalibrationStage
    from stream.settings import Settings

    now = [0.0]
    store: dict = {}
    stage = CalibrationStage(store, Settings().outcome_learner, sources=3, hold_s=5.0,
                             idle_s=60.0, clock=lambda: now[0])
    t = 1772424000.0  # 2026-03-02T12:00:00+08:00
    alert = {"alert_id": "a1", "kind": "subscriber", "status": "open", "subscriber_id": "s1",
             "zone": "red", "risk_score": 0.8, "reasons": [], "ts": "2026-03-02T12:00:00+08:00"}
    records = [{"kind": "alert", "partition": 0, "at": [t, 0], "alert": alert},
               {"kind": "day", "partition": 1, "at": [t + 60, 0], "day": 1}]
    assert not stage.process([("c", i, orjson.dumps(r)) for i, r in enumerate(records)]).alerts
    now[0] = 59.0  # partition 2 (no traffic) is not idle yet
    mark0 = {"kind": "day", "partition": 0, "at": [t + 60, 0], "day": 1}
    assert not stage.process([("c", 2, orjson.dumps(mark0))]).alerts and stage.held == 1
    now[0] = 61.0  # partitions 0 and 1 passed the alert; partition 2 never said a word
    out = stage.process([])
    assert [a["alert_id"] for a in out.alerts] == ["a1"] and stage.held == 0
    assert store["__stage__"]["counters"]["released_idle"] == 1
    # A partition that reports again is waited for again.
    later = {**alert, "alert_id": "a2", "ts": "2026-03-02T12:10:00+08:00"}
    stage.process([("c", 3, orjson.dumps({"kind": "day", "partition": 2, "at": [t, 0],
                                          "day": 1})),
                   ("c", 4, orjson.dumps({"kind": "alert", "partition": 0,
                                          "at": [t + 600, 0], "alert": later}))])
    now[0] = 150.0  # partition 2 speaks again, still behind the alert
    stage.process([("c", 5, orjson.dumps({**mark0, "at": [t + 700, 0]})),
                   ("c", 6, orjson.dumps({**mark0, "partition": 1, "at": [t + 700, 0]})),
                   ("c", 7, orjson.dumps({**mark0, "partition": 2, "at": [t + 1, 0]}))])
    now[0] = 170.0  # a2 held 109 s, but partition 2 spoke 20 s ago: it is waited for
    assert not stage.process([]).alerts and stage.held == 1
    now[0] = 211.0  # 61 s of silence since
    assert [a["alert_id"] for a in stage.process([]).alerts] == ["a2"]
    assert store["__stage__"]["counters"]["released_idle"] == 2


def test_reorder_lets_one_partition_pass_its_day_close_per_call():
    r = Reorder()
    for p in (0, 1, 2):
        for i, ts in enumerate((10.0, 20.0, 30.0)):
            r.push(CALLS, p, i, ts, "calls", f"p{p}-{ts:.0f}")
    everything = lambda t, p: 100.0  # noqa: E731 - every topic caught up
    sweep_at = lambda p, ts: {0: 20.0, 1: 20.0, 2: math.inf}[p]  # noqa: E731
    # Partition 0 closes its day (from 20 on); 1 stops before its close; 2 has none due.
    assert r.release(KINDS, everything, sweep_at) == [
        "p0-10", "p0-20", "p0-30", "p1-10", "p2-10", "p2-20", "p2-30"]
    # Partition 0's next close is later: partition 1's close is the next call's.
    sweep_at = lambda p, ts: {0: 50.0, 1: 20.0, 2: math.inf}[p]  # noqa: E731
    assert r.release(KINDS, everything, sweep_at) == ["p1-20", "p1-30"]
    assert len(r) == 0


def test_partitions_take_turns_to_pass_their_day_close():
    r = Reorder()
    everything = lambda t, p: 100.0  # noqa: E731 - every topic caught up
    r.push(CALLS, 0, 0, 20.0, "calls", "p0-20")
    r.push(CALLS, 1, 0, 20.0, "calls", "p1-20")
    assert r.release(KINDS, everything, lambda p, ts: 20.0) == ["p0-20"]
    # Partition 0 is at its next close again (a backlog): partition 1's turn first.
    r.push(CALLS, 0, 1, 40.0, "calls", "p0-40")
    closes = {0: 40.0, 1: 20.0}
    assert r.release(KINDS, everything, lambda p, ts: closes[p]) == ["p1-20"]
    assert r.release(KINDS, everything, lambda p, ts: closes[p]) == ["p0-40"]


def test_a_batch_closes_the_day_of_one_partition_and_ends_as_one_batch_would():
    """A day close sweeps every subscriber of its partition, and the batch keeps each state
    it writes: a batch closes the day of one partition at most, the others' events from
    their close on wait for the next batch. States end as processed all at once."""
    from detectors import Engine, EngineConfig

    def messages() -> list[NS]:
        msgs, offsets = [], dict.fromkeys(range(3), 0)
        for day in (2, 3, 4):  # day 3's 09:00 closes day 2 (at 01:00), day 4's day 3
            for p in range(3):
                for n in range(4):
                    event = call_event(len(msgs), f"s{p}-{n}", day=day)
                    event["ts"] = f"2026-03-{day:02d}T09:{n:02d}:00+08:00"
                    msgs.append(_msg(CALLS, p, offsets[p], event))
                    offsets[p] += 1
        return msgs

    def run(caught_up, alone_from: int = 0,
            unread: bool = False) -> tuple[dict, list[set[int]]]:
        tables = Tables()
        if unread:  # a restart on a local store: partitions read at their first sweep
            tables.subscriber_index.read_later(_LocalKeys(tables.subscribers.data), range(3))
        processor = BatchProcessor(tables, KINDS, lambda p: Engine(
            EngineConfig(), subscribers=tables.subscriber_view(p),
            population=tables.population_view(p)), sweep_alone_from=alone_from)
        for p in range(3):
            processor.reorder.delivered(BILLING, p, float("inf"))
            processor.reorder.delivered(SUBS, p, float("inf"))
        items, swept = messages(), []
        while items or len(processor.reorder):
            before = {p: e.counters["sweeps"] for p, e in processor.engines.items()}
            processor.process(items, caught_up)
            items = []
            swept.append({p for p, e in processor.engines.items()
                          if e.counters["sweeps"] > before.get(p, 0)})
            processor.flush()
        return tables.subscribers.data, swept

    states, swept = run(lambda t, p: 1e12)  # every topic caught up
    # Day 2's events, then one partition's closes per batch (a partition takes both of
    # its closes in one: a batch holds its own keys once).
    assert swept == [{0}, {1}, {2}], swept
    # All at once (no bound: a closed input) the first batch sweeps every partition.
    at_once, swept_at_once = run(None)
    assert swept_at_once == [{0, 1, 2}]
    assert states == at_once
    assert len(states) == 12
    # Partitions too small to matter close their days together, as before.
    small, swept_small = run(lambda t, p: 1e12, alone_from=5)
    assert swept_small == [{0, 1, 2}]
    assert small == states
    # Partitions not read yet from a local store count as large (memory bound): their
    # closes are taken one partition per batch, as for large partitions.
    unread, swept_unread = run(lambda t, p: 1e12, alone_from=5, unread=True)
    assert swept_unread == [{0}, {1}, {2}], swept_unread
    assert unread == states


class _LocalKeys:
    """Partition keys as a local store lists them (``s<partition>-<n>``), for the index."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def partition_keys(self, partition: int):
        return (k.encode() for k in list(self.data) if k.startswith(f"s{partition}-"))

    def estimate_keys(self, partition: int) -> int:
        return 0
