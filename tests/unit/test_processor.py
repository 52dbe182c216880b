"""The service's in-process parts, without a broker: ordering, batch cache, processor.

The integration tests exercise the same parts over real sockets.
"""

from __future__ import annotations

from types import SimpleNamespace as NS

import orjson

from stream.agents import BatchProcessor, alert_key
from stream.ordering import Reorder
from stream.tables import APPLIED_KEY, BatchCache, PartitionIndex, PartitionView
from tests.integration.fake_engine import FakeEngine
from tests.integration.helpers import call_event

CALLS, BILLING, SUBS = "telecom.calls", "telecom.billing", "telecom.subscribers"
KINDS = {CALLS: "calls", BILLING: "billing", SUBS: "subscribers"}


class FakeTable:
    def __init__(self) -> None:
        self.data: dict = {}
        self.sent: list = []

    def send_changelog(self, partition, key, value, **kwargs) -> None:
        self.sent.append((partition, key, value))


class Tables:
    """StateTables' interface over plain dicts."""

    def __init__(self) -> None:
        self.subscribers, self.population = FakeTable(), FakeTable()
        self.subscriber_index, self.population_index = PartitionIndex(), PartitionIndex()
        self.subscriber_cache = BatchCache(self.subscribers, self.subscriber_index)
        self.population_cache = BatchCache(self.population, self.population_index)

    def subscriber_view(self, p):
        return PartitionView(self.subscriber_cache, p)

    def population_view(self, p):
        return PartitionView(self.population_cache, p, prefix=f"{p}/")

    def applied_marks(self, p):
        try:
            return dict(self.population_cache.get(f"{p}/{APPLIED_KEY}"))
        except KeyError:
            return {}

    def set_applied_marks(self, p, marks):
        self.population_cache.set(p, f"{p}/{APPLIED_KEY}", {**self.applied_marks(p), **marks})

    def flush(self):
        return self.subscriber_cache.flush() + self.population_cache.flush()

    def discard(self):
        self.subscriber_cache.discard()
        self.population_cache.discard()


def _msg(topic, partition, offset, event) -> NS:
    return NS(topic=topic, partition=partition, offset=offset,
              key=event.get("subscriber_id", "").encode(), value=orjson.dumps(event))


def _processor(tables: Tables) -> BatchProcessor:
    return BatchProcessor(tables, KINDS, lambda p: FakeEngine(
        subscribers=tables.subscriber_view(p), population=tables.population_view(p)))


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
