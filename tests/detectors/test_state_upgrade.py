"""A deployment keeps its subscribers: the engine carries on from the states today's
(state version 3) engine wrote, with the same alerts, signals and final states.

``fixtures/engine_v3.json.gz`` was written by the version-3 engine before the models became
named records: 36 subscribers of a simulated world (four of each kind: churners, trips,
habitual forwarders, plan downgrades, ported numbers...), their states and the population
store as JSON after 60% of their events (``at_cut``), the remaining events, and what that
engine produced from them (``alerts``, ``signals``, ``final`` states; ``counters`` are
those of its whole run).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors import Engine, EngineConfig
from detectors.state import DayCounts, Numbers, Profile

FIXTURE = Path(__file__).parent / "fixtures" / "engine_v3.json.gz"


@pytest.fixture(scope="module")
def v3() -> dict[str, Any]:
    with gzip.open(FIXTURE, "rb") as f:
        data: dict[str, Any] = orjson.loads(f.read())
    return data


def test_states_written_by_the_v3_engine_carry_on_exactly(v3: dict[str, Any]) -> None:
    subscribers = v3["at_cut"]["subscribers"]
    assert {st["v"] for st in subscribers.values()} == {3}
    engine = Engine(EngineConfig(ported_numbers=v3["ported_numbers"]),
                    subscribers=subscribers, population=v3["at_cut"]["population"],
                    signals=True)
    alerts = [a for kind, event in v3["events"] for a in engine.process(kind, event)]
    assert len(v3["alerts"]) >= 5, "too few alerts to prove much"
    assert alerts == v3["alerts"]
    assert engine.drain_signals() == v3["signals"]
    # Equal as data and byte for byte as the changelog writes them.
    assert subscribers == v3["final"]
    assert orjson.dumps(subscribers) == orjson.dumps(v3["final"])
    assert engine.counters["events"] == len(v3["events"])


def test_read_back_states_are_named_records_again(v3: dict[str, Any]) -> None:
    subscribers = orjson.loads(orjson.dumps(v3["at_cut"]["subscribers"]))
    engine = Engine(EngineConfig(ported_numbers=v3["ported_numbers"]),
                    subscribers=subscribers, population=v3["at_cut"]["population"])
    kind, event = v3["events"][0]
    engine.process(kind, event)
    st = subscribers[event["subscriber_id"]]
    assert type(st["m"]) is Numbers and type(st["p"]) is Profile
    assert all(type(row) is DayCounts for row in st["o"])
    assert st["m"].age > 30 and st["p"].segment != "unknown"
