"""Event-time order across the input topics of one partition.

``churnwatch replay`` feeds each partition's engine the profiles first, then calls and
billing merged by event time. A worker receives the three topics' partition ``p`` as
separate streams, interleaved however the fetcher delivers them (thousands of calls may
arrive before the billing events of the same hours). The engine's day closing and
lateness depend on event time, so the worker restores the order before the engine:

* every accepted event waits in a heap per input partition, keyed like replay's merge:
  ``(event time, kind order, offset)`` (profiles carry time 0 and so come first);
* an event is released once no input topic-partition of its partition can still deliver
  an earlier one. A topic-partition rules that out if it has delivered an event at least
  as late (each topic-partition is in time order), or if it is *caught up*: everything
  below a high watermark that was read *after the event was written* (its Kafka
  timestamp) has been delivered. The worker probes the high watermarks with a Fetch
  (:func:`stream.service.faust_internals.transport.fetch_highwaters`) while events are held; a
  probe older than
  the event proves nothing, since an earlier event may have been written meanwhile, and
  a probe must come ``CHURNWATCH_ORDER_MARGIN_S`` after it, since a producer stamps a
  record when it is handed over, not when the broker has it (``churnwatch produce``
  waits for its records every 50 ms to stay well inside it).
  A topic-partition that has delivered nothing and is not caught up holds everything
  back, so profiles are read before the events.

Events arriving later than what was already released (real lateness on a live stream,
or a producer that held them past the margin) are still processed; the engine's allowed
lateness deals with them. They are counted (``out_of_order``; the worker's
``churnwatch_events_out_of_order_total``): their order is not replay's.

Bounded without losing the order: a worker behind its input (a backlog, an overload)
fetches every topic-partition at the same pace in bytes, not in event time (a fetch of
billing covers many more days than a fetch of calls), so the topic that runs ahead in
event time piles up here waiting for the others. :meth:`Reorder.running_ahead` names the
topic-partitions holding more than their share; the worker stops fetching those until
the others catch up (as Kafka Streams pauses a partition whose buffer is full), so the
hold stays within ``max_held`` and nothing is released early. ``max_held`` is the last
resort: beyond it the oldest events are released regardless (counted as ``forced``,
``churnwatch_events_forced_total``; their order is not replay's either).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

KIND_ORDER = {"subscribers": -1, "calls": 0, "billing": 1}
NOTHING = float("-inf")

TopicPartition = tuple[str, int]
#: (topic, partition) -> the wall-clock time of a high-watermark probe up to which
#: everything was delivered to us, or None when not caught up.
CaughtUp = Callable[[str, int], "float | None"]


class Reorder:
    """Per-partition heaps of held events, released in event-time order."""

    def __init__(self, max_held: int = 200_000) -> None:
        self.max_held = max_held
        self._heaps: dict[int, list[tuple[float, int, int, int, Any, float, str]]] = (
            defaultdict(list))
        self._newest: dict[TopicPartition, float] = {}
        #: events held per input topic-partition
        self.held_by: Counter[TopicPartition] = Counter()
        self._seq = itertools.count()
        self.held = 0
        #: the most events held at once
        self.peak = 0
        self.forced = 0
        #: events pushed behind what their partition had already released (their order
        #: against replay's is lost: a producer held them past the margin, or lateness)
        self.out_of_order = 0
        self._last: dict[int, tuple[float, int]] = {}
        #: the partition last let past its day close (see :meth:`release`)
        self._swept_last: int | None = None

    def push(self, topic: str, partition: int, offset: int, ts: float, kind: str,
             item: Any, written_s: float | None = None) -> None:
        """Hold ``item`` (an accepted event of ``kind`` at time ``ts``, written to Kafka at
        ``written_s``, wall clock; None: long ago)."""
        heapq.heappush(
            self._heaps[partition],
            (ts, KIND_ORDER[kind], offset, next(self._seq), item,
             float("-inf") if written_s is None else written_s, topic),
        )
        self.held_by[(topic, partition)] += 1
        last = self._last.get(partition)
        if last is not None and (ts, KIND_ORDER[kind]) < last:
            self.out_of_order += 1
        tp = (topic, partition)
        if ts > self._newest.get(tp, NOTHING):
            self._newest[tp] = ts
        self.held += 1
        if self.held > self.peak:
            self.peak = self.held

    def delivered(self, topic: str, partition: int, ts: float | None = None) -> None:
        """Note a delivery on ``(topic, partition)`` that holds nothing (e.g. a rejection)."""
        tp = (topic, partition)
        if tp not in self._newest:
            self._newest[tp] = NOTHING if ts is None else ts

    def release(self, topics: Iterable[str], caught_up: CaughtUp | None,
                sweep_at: Callable[[int, float], float] | None = None) -> list[Any]:
        """Pop every item that can no longer be preceded, in order, partition by partition.

        ``caught_up=None`` releases everything (a closed input, e.g. in tests).

        ``sweep_at(partition, ts)``: the event time from which the partition's engine, once
        it has an event at ``ts``, closes a day for every subscriber (a sweep). One
        partition per call may pass that time (profiles, which carry no time, never do); in
        the others the items from it on stay held, for a later call. A sweep writes every
        subscriber of its partition, and the batch keeps each written state until its
        changelog records are sent: a worker's day close done in one batch held every
        subscriber of the worker at once.
        """
        topics = tuple(topics)
        out: list[Any] = []
        pop = heapq.heappop
        granted = False  # a partition of this call passes its day close
        # The partition that passed its close last comes last: each waits its turn.
        heaps = sorted(self._heaps.items(), key=lambda ph: ph[0] == self._swept_last)
        for partition, heap in heaps:
            if not heap:
                continue
            if caught_up is None:
                while heap:
                    entry = pop(heap)
                    self.held_by[(entry[6], partition)] -= 1
                    out.append(entry[4])
                continue
            # Per topic-partition: the newest event time delivered, and since when it is
            # known to be caught up (None: not caught up).
            sources = [
                (self._newest.get((topic, partition), NOTHING), caught_up(topic, partition))
                for topic in topics
            ]
            bound = math.inf if sweep_at is None else None
            while heap:
                ts, written = heap[0][0], heap[0][5]
                if all(newest >= ts or (since is not None and written <= since)
                       for newest, since in sources):
                    if bound is None and heap[0][1] >= 0:  # from its first timed event
                        bound = sweep_at(partition, ts)  # type: ignore[misc]
                    if bound is not None and ts >= bound:
                        if granted:  # another partition's day close is this call's
                            break
                        granted, bound = True, math.inf
                        self._swept_last = partition
                    entry = pop(heap)
                    self._last[partition] = entry[:2]
                    self.held_by[(entry[6], partition)] -= 1
                    out.append(entry[4])
                else:
                    break
        if self.held - len(out) > self.max_held:
            out.extend(self._force(self.held - len(out) - self.max_held))
        self.held -= len(out)
        return out

    def _force(self, n: int) -> list[Any]:
        """Release the ``n`` oldest held items across partitions (memory bound)."""
        merged = heapq.nsmallest(
            n, ((entry, p) for p, heap in self._heaps.items() for entry in heap)
        )
        out = []
        for entry, p in merged:
            self._heaps[p].remove(entry)
            self.held_by[(entry[6], p)] -= 1
            out.append(entry[4])
        for p in {p for _, p in merged}:
            heapq.heapify(self._heaps[p])
        self.forced += len(out)
        return out

    def drop_partitions(self, partitions: Iterable[int]) -> list[Any]:
        """Forget the held items of ``partitions`` (revoked); they are returned, unprocessed."""
        dropped: list[Any] = []
        for p in partitions:
            dropped.extend(entry[4] for entry in self._heaps.pop(p, ()))
            self._last.pop(p, None)
            for tp in [tp for tp in self._newest if tp[1] == p]:
                del self._newest[tp]
            for tp in [tp for tp in self.held_by if tp[1] == p]:
                del self.held_by[tp]
        self.held -= len(dropped)
        return dropped

    def running_ahead(self, share: int, paused: Iterable[TopicPartition] = ()
                      ) -> set[TopicPartition]:
        """The input topic-partitions to stop fetching: those holding ``share`` events or
        more, and those in ``paused`` still holding more than half of it (so a paused one
        is not resumed for every event released)."""
        paused = set(paused)
        return {tp for tp, n in self.held_by.items()
                if n >= share or (tp in paused and n > share // 2)}

    def lag_s(self) -> float:
        """How far, in event time, the release point is behind the newest event read:
        the newest event time delivered on any input topic of a partition minus that of
        its oldest held event (the largest over partitions; 0 when nothing is held)."""
        newest: dict[int, float] = {}
        for (_, partition), ts in self._newest.items():
            newest[partition] = max(ts, newest.get(partition, NOTHING))
        return max((newest.get(p, NOTHING) - heap[0][0]
                    for p, heap in self._heaps.items() if heap), default=0.0)

    def __len__(self) -> int:
        return self.held
