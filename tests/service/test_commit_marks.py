"""The worker's consumer commits input partitions at the durable applied marks.

``FetchHighwaterConsumer._new_offset`` is Faust's hook for "what may be committed now";
these tests drive it with the consumer's bookkeeping set by hand (a consumer that is not
started), the states seen around rebalances in the crash tests.
"""

from __future__ import annotations

from collections import defaultdict

from faust.types import TP
from intervaltree import IntervalTree

from stream.service.faust_internals.transport import FetchHighwaterConsumer

CALLS = TP("telecom.calls", 3)


def _consumer(committed: int | None, acked: list[int]) -> FetchHighwaterConsumer:
    consumer = FetchHighwaterConsumer.__new__(FetchHighwaterConsumer)
    consumer._committed_offset = defaultdict(lambda: None, {CALLS: committed})
    consumer._acked = defaultdict(list, {CALLS: list(acked)})
    consumer._acked_index = defaultdict(set, {CALLS: set(acked)})
    consumer._gap = defaultdict(IntervalTree)
    return consumer


def test_without_marks_faust_decides():
    consumer = _consumer(100, [100, 101, 102, 105])
    assert consumer._new_offset(CALLS) == 103  # Faust's: the first consecutive run


def test_a_committed_offset_read_too_early_does_not_stop_the_commit():
    # Seen after a kill -9: Faust's record of the committed offset (6012) was behind the
    # broker's (9045), where the fetch began, so the acks start "after a hole" and
    # Faust's own rule never commits again.
    consumer = _consumer(6012, list(range(9045, 9812)))
    assert consumer._new_offset(CALLS) is None
    consumer.mark_durable({(CALLS.topic, CALLS.partition): 9812})
    assert consumer._new_offset(CALLS) == 9812
    assert consumer._acked[CALLS] == [] and not consumer._acked_index[CALLS]


def test_acks_above_the_mark_wait_for_it():
    consumer = _consumer(10, [10, 11, 11, 12, 20, 21])  # an offset acked twice
    consumer.mark_durable({(CALLS.topic, CALLS.partition): 12})
    assert consumer._new_offset(CALLS) == 12
    assert consumer._acked[CALLS] == [12, 20, 21]
    consumer._committed_offset[CALLS] = 12
    assert consumer._new_offset(CALLS) is None  # nothing new to commit


def test_a_rebalance_forgets_the_marks():
    consumer = _consumer(50, [50, 51])
    consumer.mark_durable({(CALLS.topic, CALLS.partition): 80})
    consumer.forget_durable()
    assert consumer._new_offset(CALLS) == 52
