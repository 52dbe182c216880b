"""The event-time aligner gives the replay's order whatever the arrival interleaving."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.alignment import EventTimeAligner

times = st.lists(st.integers(min_value=0, max_value=50), max_size=30).map(sorted)


@settings(max_examples=300, deadline=None)
@given(calls=times, bills=times, schedule=st.lists(st.integers(0, 2), max_size=200))
def test_any_interleaving_releases_in_event_time_order(
    calls: list[int], bills: list[int], schedule: list[int]
) -> None:
    aligner = EventTimeAligner(("calls", "billing"), idle_s=1e9, clock=lambda: 0.0)
    queues = {"calls": list(enumerate(calls)), "billing": list(enumerate(bills))}
    released: list[tuple[float, int, int]] = []
    for step in schedule:  # 0: a call arrives, 1: a bill arrives, 2: the agent polls
        if step == 2:
            released += aligner.pop_ready()
            continue
        name = ("calls", "billing")[step]
        if queues[name]:
            offset, t = queues[name].pop(0)
            aligner.push(name, float(t), offset, (float(t), step, offset))
    for step, name in enumerate(("calls", "billing")):
        for offset, t in queues[name]:
            aligner.push(name, float(t), offset, (float(t), step, offset))
    released += aligner.pop_ready() + aligner.drain()
    expected = sorted([(float(t), 0, i) for i, t in enumerate(calls)]
                      + [(float(t), 1, i) for i, t in enumerate(bills)])
    assert released == expected
    assert aligner.counters["released_idle"] == 0


def test_nothing_is_released_ahead_of_a_live_stream() -> None:
    aligner = EventTimeAligner(("calls", "billing"), idle_s=5, clock=lambda: 0.0)
    for i, t in enumerate((10.0, 20.0, 30.0)):
        aligner.push("billing", t, i, t)
    aligner.push("calls", 15.0, 0, "c15")
    assert aligner.pop_ready() == [10.0, "c15"]
    assert len(aligner) == 2


def test_an_idle_stream_stops_holding_and_the_bound_holds() -> None:
    now = [0.0]
    aligner = EventTimeAligner(("calls", "billing"), idle_s=2, max_buffered=3,
                               clock=lambda: now[0])
    for i in range(5):
        aligner.push("calls", float(i), i, i)
    assert aligner.pop_ready() == [0, 1]  # bound of 3: the two oldest forced out
    assert aligner.counters["released_full"] == 2
    now[0] = 2.5
    aligner.push("calls", 5.0, 5, 5)  # calls live, billing silent for 2.5 s
    assert aligner.pop_ready() == [2, 3, 4, 5]
    assert aligner.counters["released_idle"] == 4
