"""The stages' records wait in a lane of their own, never in front of the input.

Faust's consumer hands a fetch's records to the agents one at a time, each awaited (at
least a turn of the event loop a record, and a wait while the agent's stream buffer is
full), and fetches again only when the fetch in hand is delivered. One loop reads every
assigned partition, so a stage behind its topic (the group stage after a restart, folding
the signals of the day close before the stop) held the input topics' records behind its
own: a restarted worker's first input batch waited 7.2 s with 100,000 subscribers while
about 15,000 group signals were handed over, about 2,100 a second (the group agent's
batches were never full: the hand-over was the bottleneck).

:class:`SideLane` takes the records of the topics that are not the batch path's and
delivers them in a task of its own, in the order they were fetched; while a
topic-partition has records in the lane the consumer leaves it out of its fetches
(:meth:`FetchHighwaterConsumer._getmany
<stream.service.faust_internals.transport.FetchHighwaterConsumer._getmany>`), so the lane
holds one fetch per partition at most and the fetches go on for the input. Decision
record 0017 in ``docs/decisions/``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

#: delivers one topic-partition's fetched records, in order
Deliver = Callable[[Any, list[Any]], Awaitable[None]]


class SideLane:
    """Fetched records delivered in a task of their own, in fetch order.

    >>> import asyncio
    >>> got = []
    >>> async def deliver(tp, records):
    ...     await asyncio.sleep(0.01)
    ...     got.extend(records)
    >>> async def main():
    ...     lane = SideLane(deliver)
    ...     lane.add([("a", [1, 2]), ("b", [3])])
    ...     busy = sorted(lane.busy)          # not delivered yet: not fetched again
    ...     lane.add([("c", [4])])
    ...     await lane.drain()
    ...     return busy, lane.busy
    >>> asyncio.run(main()), got
    ((['a', 'b'], set()), [1, 2, 3, 4])
    """

    def __init__(self, deliver: Deliver) -> None:
        self.deliver = deliver
        #: topic-partitions with records in the lane
        self.busy: set[Any] = set()
        self._pending: deque[tuple[Any, list[Any]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def add(self, fetched: Iterable[tuple[Any, list[Any]]]) -> None:
        """Deliver ``(tp, records)`` after what the lane already holds; returns at once."""
        for tp, records in fetched:
            if records:
                self._pending.append((tp, records))
                self.busy.add(tp)
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        pending = self._pending
        while pending:
            tp, records = pending[0]
            try:
                await self.deliver(tp, records)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # for the consumer's loop to raise (check)
                self._error = exc
                pending.clear()
                self.busy.clear()
                return
            pending.popleft()
            if not any(t == tp for t, _ in pending):
                self.busy.discard(tp)

    def check(self) -> None:
        """Raise what a delivery raised (in the consumer's loop, as Faust's own would)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def drain(self) -> None:
        """Wait until everything added is delivered (or a delivery failed)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Drop what is not delivered yet (not acked: it comes again)."""
        task, self._task = self._task, None
        self._pending.clear()
        self.busy.clear()
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
