"""A stage behind its topic does not hold the input back: the records of the topics that
are not the batch path's wait in a lane of their own
(``stream.service.faust_internals.side_lane``, decision record 0017)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace as NS

import pytest
from faust.types import TP

from stream.service.faust_internals.side_lane import SideLane
from stream.service.faust_internals.transport import FetchHighwaterConsumer

CALLS, SIGNALS = TP("telecom.calls", 0), TP("churn.group-signals", 0)


class _Consumer(FetchHighwaterConsumer):
    """The consumer's drain loop over scripted fetches, with a stage whose buffer is full
    (its ``callback`` waits for ``room``) and a batch path (``sink``)."""

    flow_active = True
    should_stop = False

    def __init__(self, fetches: list[dict], room: asyncio.Event, log: list) -> None:
        self.fetches = fetches
        self.room = room
        self.log = log
        self.done = asyncio.Event()
        self._stopped = asyncio.Event()
        self._read_offset: dict = dict.fromkeys((CALLS, SIGNALS))
        self._buffered_partitions: set = set()
        self._commit_every = None
        self._n_acked = 0
        self.suspend_flow = asyncio.Event()
        self.diag = NS(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self.app = NS(churnwatch=NS(batch_sink=self.sink, batch_topics={CALLS.topic},
                                    topics=NS(kinds={CALLS.topic: "calls"})),
                      monitor=NS(track_tp_end_offset=lambda tp, offset: None),
                      consumer_generation_id=1,
                      topics=NS(acks_enabled_for=lambda topic: True))

    async def sink(self, batch: list) -> None:
        self.log.append(("sink", [m.offset for m in batch]))

    async def callback(self, message) -> None:
        await self.room.wait()  # the stage's stream buffer is full
        self.log.append(("stage", message.offset))

    async def wait_first(self, *coros):
        for other in coros[1:]:
            other.close()  # the flow is never suspended here
        return await coros[0]

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    async def _wait_next_records(self, timeout: float):
        if self.fetches:
            return self.fetches.pop(0), None
        await self.done.wait()
        self._stopped.set()
        return None, None

    def _to_message(self, tp, record):
        return NS(topic=tp.topic, partition=tp.partition, offset=record.offset)

    def _fetch_position(self, tp) -> int:
        return 1_000

    def highwater(self, tp) -> int:
        return 1_000


def _records(*offsets: int) -> list:
    return [NS(offset=o, topic=SIGNALS.topic) for o in offsets]


def test_the_input_is_processed_while_a_stage_waits_for_room():
    async def main() -> list:
        room, log = asyncio.Event(), []
        consumer = _Consumer([{SIGNALS: _records(0, 1, 2)}, {CALLS: _records(7)}], room, log)
        fetcher = NS(_stopped=asyncio.Event())
        drain = asyncio.ensure_future(consumer._drain_messages(fetcher))
        # Faust's own loop waited here for the stage: the input's fetch came after it.
        for _ in range(100):
            if ("sink", [7]) in log:
                break
            await asyncio.sleep(0.01)
        assert log == [("sink", [7])]
        assert consumer._lane.busy == {SIGNALS}  # not fetched again meanwhile
        room.set()
        await consumer._lane.drain()
        consumer.done.set()
        await asyncio.wait_for(drain, 5)
        assert consumer._read_offset[SIGNALS] == 2
        return log

    log = asyncio.run(main())
    assert log == [("sink", [7]), ("stage", 0), ("stage", 1), ("stage", 2)]


def test_the_consumer_leaves_partitions_in_the_lane_out_of_its_fetches():
    asked: list = []

    async def getmany(active, timeout):
        asked.append(set(active))
        return {}

    async def main() -> None:
        consumer = FetchHighwaterConsumer.__new__(FetchHighwaterConsumer)
        consumer._thread = NS(getmany=getmany)
        stage_waits = asyncio.Event()

        async def deliver(tp, records):
            await stage_waits.wait()

        consumer._lane = SideLane(deliver)
        consumer._lane.add([(SIGNALS, [0])])
        await consumer._getmany({CALLS, SIGNALS}, 1.0)
        assert asked[-1] == {CALLS}
        stage_waits.set()
        await consumer._lane.drain()
        await consumer._getmany({CALLS, SIGNALS}, 1.0)
        assert asked[-1] == {CALLS, SIGNALS}

    asyncio.run(main())


def test_a_failed_delivery_is_raised_in_the_consumer_loop_and_drops_the_rest():
    got: list = []

    async def deliver(tp, records):
        if tp == SIGNALS:
            raise RuntimeError("stage broke")
        got.extend(records)

    async def main() -> SideLane:
        lane = SideLane(deliver)
        lane.add([(SIGNALS, [0]), (CALLS, [1])])
        await lane.drain()
        return lane

    lane = asyncio.run(main())
    assert got == [] and not lane.busy
    with pytest.raises(RuntimeError, match="stage broke"):
        lane.check()
    lane.check()  # raised once


def test_a_stop_drops_what_is_not_delivered():
    got: list = []

    async def main() -> SideLane:
        never = asyncio.Event()

        async def deliver(tp, records):
            await never.wait()
            got.extend(records)

        lane = SideLane(deliver)
        lane.add([(SIGNALS, [0])])
        await asyncio.sleep(0)
        await lane.stop()
        return lane

    lane = asyncio.run(main())
    assert got == [] and not lane.busy
