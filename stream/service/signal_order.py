"""Member signals in event-time order for the group stage, by watermarks of their sources.

A group's members sit on several subscriber partitions, each with its own engine and its
own pace: on a worker reading a backlog, one partition can be days of event time ahead
of another. :class:`detectors.group.GroupStage` decides a group's day ``D`` on the first
signal of a later day, so a signal of day ``D`` coming after that (from a lagging
partition) is *late* and the decision may differ from the one made with it.

So signals pass a :class:`Sequencer` first, one per group partition. Every subscriber
partition (a *source*) reports its engine's *watermark*: the last day it has closed for
all its subscribers, after which it emits only signals of later days. A signal of day
``d`` is released to the group stage once every source's watermark is at least
``d - 1``: then every signal of the days before ``d`` has been released, and a decision
triggered by it sees all of them. Released signals go out sorted by (day, time,
subscriber). Replay and stream both use it, so they feed the group stage the same
signals for every decision, however the partitions interleave (``docs/groups.md``).

A source that has never reported holds every signal back (a partition with no events at
all stalls the groups, as with any event-time watermark).

Everything is plain data (:meth:`Sequencer.to_state`), so the stream keeps it in its
group table; a signal delivered again is released again, which the group stage ignores
(a member's older or identical signal changes nothing).

>>> seq = Sequencer(sources=2)
>>> sig = {"group_id": "G", "subscriber_id": "m1", "day": 10, "ts": "t10"}
>>> seq.add(sig)  # source 1 has not reported: held
[]
>>> seq.watermark(0, 9), seq.watermark(1, 8)
([], [])
>>> [s["subscriber_id"] for s in seq.watermark(1, 9)]
['m1']
"""

from __future__ import annotations

from typing import Any

SEQ_STATE_VERSION = 1


def _order(signal: dict[str, Any]) -> tuple[Any, ...]:
    return (int(signal["day"]), str(signal.get("ts") or ""), str(signal.get("subscriber_id")),
            str(signal.get("left") or ""))


class Sequencer:
    """Holds member signals until every source's watermark lets them through."""

    def __init__(self, sources: int) -> None:
        self.sources = sources
        #: source -> last day it has closed (its future signals are of later days)
        self.marks: dict[int, int] = {}
        self.held: list[dict[str, Any]] = []

    @property
    def low(self) -> float:
        """The lowest watermark over all sources (-inf until every source reported)."""
        if len(self.marks) < self.sources:
            return float("-inf")
        return min(self.marks.values())

    def add(self, signal: dict[str, Any]) -> list[dict[str, Any]]:
        """Take a signal; the signals released (it, if its day is already covered)."""
        if int(signal["day"]) <= self.low + 1:
            return [signal]
        self.held.append(signal)
        return []

    def watermark(self, source: int, day: int) -> list[dict[str, Any]]:
        """Source ``source`` has closed every day up to ``day``; the signals released."""
        if day <= self.marks.get(source, -1) or not 0 <= source < self.sources:
            return []
        self.marks[source] = day
        return self.release()

    def release(self) -> list[dict[str, Any]]:
        """Pop the held signals now covered, in order (copies delivered twice: once)."""
        if not self.held:
            return []
        bound = self.low + 1
        ready = [s for s in self.held if int(s["day"]) <= bound]
        if not ready:
            return []
        self.held = [s for s in self.held if int(s["day"]) > bound]
        ready.sort(key=_order)
        out: list[dict[str, Any]] = []
        for s in ready:
            if not out or s != out[-1]:
                out.append(s)
        return out

    def to_state(self) -> dict[str, Any]:
        return {"v": SEQ_STATE_VERSION, "n": self.sources,
                "m": {str(k): v for k, v in self.marks.items()}, "h": list(self.held)}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None, sources: int) -> Sequencer:
        seq = cls(sources)
        if state:
            if state.get("v") != SEQ_STATE_VERSION:
                raise ValueError(f"unknown sequencer state version {state.get('v')!r}")
            seq.marks = {int(k): int(v) for k, v in state["m"].items()}
            seq.held = list(state["h"])
        return seq


def is_watermark(message: Any) -> bool:
    """A watermark record on the signals topic (``{"source": p, "closed_to": day}``)."""
    return isinstance(message, dict) and "closed_to" in message and "group_id" not in message


def closed_to(engine: Any) -> int | None:
    """The last day ``engine`` has closed for all its subscribers (None: none yet).

    ``detectors.Engine.closed_to`` (kept in its population store too): after it, the
    engine judges only later days. Engines without it (test stand-ins) have none.
    """
    value = getattr(engine, "closed_to", None)
    return None if value is None else int(value)
