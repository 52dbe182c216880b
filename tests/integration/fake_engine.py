"""A tiny stand-in for ``detectors.Engine`` with the same API, for service tests.

State per subscriber: ``{"v": 1, "n": events applied, "last": last event_id, "ring": [...]}``;
a duplicate ``event_id`` (within the ring) is counted and changes nothing. Every
``ALERT_EVERY``-th event of a subscriber raises an alert whose ``alert_id`` is
deterministic (subscriber and count), so runs can be compared by alert ids.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

ALERT_EVERY = 5
RING = 64
#: Seconds each event takes (``TEST_ENGINE_DELAY_S``): widens a batch so a test can stop
#: the worker while one is in hand.
DELAY_S = float(os.environ.get("TEST_ENGINE_DELAY_S", "0") or 0)


class FakeEngine:
    def __init__(
        self,
        config: Any = None,
        *,
        subscribers: MutableMapping[str, Any],
        population: MutableMapping[str, Any],
    ) -> None:
        self.subscribers = subscribers
        self.population = population
        self.counters: Counter[str] = Counter()

    def process(
        self, kind: str, event: dict[str, Any], ts: float | None = None
    ) -> list[dict[str, Any]]:
        if DELAY_S:
            time.sleep(DELAY_S)
        sid = event["subscriber_id"]
        state = self.subscribers.get(sid)
        if state is None:
            state = {"v": 1, "n": 0, "last": None, "ring": [], "profile": None}
        else:
            state = dict(state)
        if kind == "subscribers":
            state["profile"] = event.get("segment")
            self.subscribers[sid] = state
            return []
        if event["event_id"] in state["ring"]:
            self.counters["duplicate"] += 1
            return []
        state["ring"] = (state["ring"] + [event["event_id"]])[-RING:]
        state["n"] += 1
        state["last"] = event["event_id"]
        self.subscribers[sid] = state
        pop = dict(self.population.get("events") or {"n": 0})
        pop["n"] += 1
        self.population["events"] = pop
        if state["n"] % ALERT_EVERY:
            return []
        return [
            {
                "alert_id": f"{sid}-{state['n']}",
                "kind": "subscriber",
                "status": "open",
                "subscriber_id": sid,
                "zone": "yellow",
                "reasons": [{"code": "fake", "summary": "every fifth event"}],
                "ts": event["ts"],
            }
        ]


def factory(tables: Any) -> Any:
    def make(partition: int) -> FakeEngine:
        return FakeEngine(
            subscribers=tables.subscriber_view(partition),
            population=tables.population_view(partition),
        )

    return make
