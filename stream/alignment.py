"""Event-time alignment of a partition's calls and billing streams.

A worker reads ``telecom.calls`` and ``telecom.billing`` partitions independently, and a
fetch of billing (a few events a subscriber a day) covers many more days than a fetch of
calls. Fed as they come, billing would run weeks ahead of calls, the detectors would close
days before their calls arrived, and the alerts would depend on fetch sizes. So each
input partition's events pass through an :class:`EventTimeAligner`: an event is released
only when every stream of that partition has reached its event time (the watermark is the
slowest stream's newest time), in (event time, stream, offset) order, the order
``churnwatch replay`` uses. A stream that has sent nothing for ``idle_s`` of wall-clock time
(say, no bills today) stops holding the others back; ``max_buffered`` bounds memory.
Releases forced by idleness or by the bound are counted: they are the only way the stream
and the replay can differ.

Profiles (``telecom.subscribers``) carry no event time: pushed as an *untimed* stream they
are released at once, ahead of any held event, and hold the other streams back only until
the first profile of the partition has been read (or the stream is idle), so a worker
starting on a backlog reads the profiles before the events, as the replay does.

Items are opaque (the agent passes the Faust event, so it can acknowledge it only once
processed: offsets are committed up to the oldest unprocessed event).
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any


class EventTimeAligner:
    """Merge streams by event time, releasing what no stream can still precede.

    Examples
    --------
    >>> clock = [0.0]
    >>> a = EventTimeAligner(("calls", "billing"), idle_s=5, clock=lambda: clock[0])
    >>> a.push("billing", 100.0, 0, "bill@100")
    >>> a.push("billing", 300.0, 1, "bill@300")
    >>> a.pop_ready()          # calls have not been heard from: wait
    []
    >>> a.push("calls", 50.0, 0, "call@50")
    >>> a.push("calls", 200.0, 1, "call@200")
    >>> a.pop_ready()          # calls reached 200, billing 300
    ['call@50', 'bill@100', 'call@200']
    >>> clock[0] = 6.0         # calls idle for 6 s: billing alone sets the pace
    >>> a.pop_ready(), a.counters["released_idle"]
    (['bill@300'], 1)

    Profiles first:

    >>> b = EventTimeAligner(("calls",), untimed=("subscribers",), clock=lambda: 0.0)
    >>> b.push("calls", 10.0, 0, "call@10")
    >>> b.pop_ready()          # no profile read yet on this partition
    []
    >>> b.push("subscribers", 0.0, 0, "profile")
    >>> b.pop_ready()
    ['profile', 'call@10']
    """

    def __init__(
        self,
        streams: Sequence[str],
        untimed: Sequence[str] = (),
        idle_s: float = 2.0,
        max_buffered: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.streams = tuple(streams) + tuple(untimed)
        self.untimed = frozenset(untimed)
        self.idle_s = idle_s
        self.max_buffered = max_buffered
        self.clock = clock
        self._order = {name: i for i, name in enumerate(self.streams)}
        self._frontier = dict.fromkeys(self.streams, -math.inf)
        self._heard = dict.fromkeys(self.streams, clock())
        self._heap: list[tuple[float, int, int, Any]] = []
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, stream: str, epoch_s: float, offset: int, item: Any) -> None:
        """Buffer ``item`` of ``stream`` stamped ``epoch_s`` (``offset`` breaks ties)."""
        if stream in self.untimed:
            epoch_s = -math.inf  # before any event; and never hold the others back again
            self._frontier[stream] = math.inf
        elif epoch_s > self._frontier[stream]:
            self._frontier[stream] = epoch_s
        self._heard[stream] = self.clock()
        heapq.heappush(self._heap, (epoch_s, self._order[stream], offset, item))

    def watermark(self) -> tuple[float, int]:
        """Event time up to which every live stream has been read, and a tie-break.

        An event stamped exactly at the watermark may still be followed by one with the same
        time on a stream that sorts before it; the second value is the lowest stream order
        that can still do that.
        """
        now = self.clock()
        live = [s for s in self.streams if now - self._heard[s] < self.idle_s]
        if not live:
            return math.inf, len(self.streams)
        mark = min(self._frontier[s] for s in live)
        ties = min(self._order[s] for s in live if self._frontier[s] == mark)
        return mark, ties

    def pop_ready(self) -> list[Any]:
        """Items at or before the watermark, in (event time, stream, offset) order."""
        heap = self._heap
        if not heap:
            return []
        mark, ties = self.watermark()
        frontier_min = min(self._frontier.values())
        out: list[Any] = []
        pop = heapq.heappop
        while heap and (heap[0][0] < mark or (heap[0][0] == mark and heap[0][1] <= ties)):
            if heap[0][0] > frontier_min:
                self.counters["released_idle"] += 1
            out.append(pop(heap)[3])
        while len(heap) > self.max_buffered:
            self.counters["released_full"] += 1
            out.append(pop(heap)[3])
        return out

    def drain(self) -> list[Any]:
        """Everything buffered, in order (shutdown: nothing is left unprocessed)."""
        out = [entry[3] for entry in sorted(self._heap)]
        self._heap.clear()
        return out
