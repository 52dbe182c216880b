"""A re-sent event is a duplicate while its day is open and ``too_late`` after, the same in
``churnwatch replay`` and in the worker's processor, whichever order the worker receives
the calls and billing topics in (``stream.service.lateness``, ``detectors.dedupe``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any

import orjson
import pytest

from detectors import Engine, EngineConfig
from stream.contracts.partitioning import partition_of
from stream.service.processor import BatchProcessor
from stream.service.tables import StateTables
from tests.service.test_processor import FakeTable

CALLS, BILLING, SUBS = "telecom.calls", "telecom.billing", "telecom.subscribers"
KINDS = {CALLS: "calls", BILLING: "billing", SUBS: "subscribers"}
FILES = {CALLS: "calls.jsonl", BILLING: "billing.jsonl", SUBS: "subscribers.jsonl"}
PARTITIONS = 2
#: Allowed lateness of the wide horizon: a day closes a day and a half after its end.
WIDE = 36 * 3600.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stream.tools.simulator import WorldParams, simulate

    out = tmp_path_factory.mktemp("world")
    simulate(out, WorldParams(subscribers=60, days=60, seed=7))
    return out


def _ts(line: bytes) -> datetime:
    return datetime.fromisoformat(orjson.loads(line)["ts"])


def _resent(clean: Path, out: Path) -> dict[str, datetime]:
    """``clean`` with three calls sent again, byte for byte, further down the calls file:
    one of 23:xx the next day at 00:30 (its day still open for the default hour), one the
    next day and one two days later (both of the afternoon). Returns when each original
    happened, by name."""
    out.mkdir()
    for path in clean.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    lines = (clean / "calls.jsonl").read_bytes().splitlines()
    third = len(lines) // 3

    def after(i: int, hours: range) -> int:
        return next(j for j in range(i, len(lines)) if _ts(lines[j]).hour in hours)

    picks = {"night": after(third, range(23, 24)), "next_day": after(third, range(13, 18)),
             "two_days": after(2 * third, range(13, 18))}
    originals = {name: _ts(lines[i]) for name, i in picks.items()}
    due = {"night": datetime.combine(originals["night"].date() + timedelta(days=1),
                                     datetime.min.time(), originals["night"].tzinfo)
           + timedelta(minutes=30),
           "next_day": originals["next_day"] + timedelta(days=1),
           "two_days": originals["two_days"] + timedelta(days=2)}
    inserts = sorted(((next(j for j in range(len(lines)) if _ts(lines[j]) >= due[name]),
                       lines[picks[name]]) for name in picks), reverse=True)
    for at, line in inserts:
        lines.insert(at, line)
    (out / "calls.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return originals


def _replay(directory: Path, config: EngineConfig) -> tuple[list[tuple], Counter[str], dict]:
    from stream.tools.replay import replay_directory

    counters: Counter[str] = Counter()
    stores: list[dict[str, Any]] = []
    alerts = [_summary(a) for a in replay_directory(
        directory, partitions=PARTITIONS, engine_config=config, counters=counters,
        stores=stores, groups=False)]
    states = {sid: st for store in stores for sid, st in store.items()}
    return alerts, counters, orjson.loads(orjson.dumps(states))


def _summary(alert: dict[str, Any]) -> tuple:
    return (alert["alert_id"], alert["status"], alert["zone"],
            tuple(r["code"] for r in alert["reasons"]))


def _logs(directory: Path) -> dict[tuple[str, int], list[NS]]:
    """Each input topic-partition's records, as ``churnwatch produce`` writes them."""
    logs: dict[tuple[str, int], list[NS]] = {}
    for topic, name in FILES.items():
        for line in (directory / name).read_bytes().splitlines():
            sid = orjson.loads(line)["subscriber_id"]
            p = partition_of(sid, PARTITIONS)
            log = logs.setdefault((topic, p), [])
            log.append(NS(topic=topic, partition=p, offset=len(log), key=sid.encode(),
                          value=line))
    return logs


#: The fetches, in order: (topic, partition, records; None: all that remain).
Schedule = Callable[[], Iterator[tuple[str, int, int | None]]]


def _calls_first() -> Iterator[tuple[str, int, int | None]]:
    """Every call before any billing event (the fetcher ran ahead on calls)."""
    for topic in (SUBS, CALLS, BILLING):
        for p in range(PARTITIONS):
            yield topic, p, None


def _billing_first() -> Iterator[tuple[str, int, int | None]]:
    for topic in (SUBS, BILLING, CALLS):
        for p in range(PARTITIONS):
            yield topic, p, None


def _round_robin() -> Iterator[tuple[str, int, int | None]]:
    """Fetches of equal size in bytes, as a backlog is read: billing runs ahead."""
    while True:
        for topic, size in ((SUBS, 100), (CALLS, 120), (BILLING, 40)):
            for p in range(PARTITIONS):
                yield topic, p, size


def _stream(directory: Path, config: EngineConfig, schedule: Schedule
            ) -> tuple[list[tuple], Counter[str], Counter[str], dict]:
    """Run the worker's processor over ``directory``'s records, delivered as ``schedule``
    says; its alerts, dead-letter reasons, engine counters and final states."""
    tables = StateTables(FakeTable(), FakeTable())
    proc = BatchProcessor(tables, KINDS, lambda p: Engine(
        config, subscribers=tables.subscriber_view(p), population=tables.population_view(p)),
        partitions=PARTITIONS)
    logs = _logs(directory)
    at = dict.fromkeys(logs, 0)
    alerts: list[tuple] = []
    reasons: Counter[str] = Counter()

    def caught_up(topic: str, partition: int) -> float | None:
        done = at.get((topic, partition), 0) >= len(logs.get((topic, partition), ()))
        return float("inf") if done else None

    def take(result: Any) -> None:
        alerts.extend(_summary(a) for _, a in result.alerts)
        reasons.update(letter["reason"] for _, letter in result.dead_letters)
        proc.flush()

    for topic, p, size in schedule():
        if all(at[tp] >= len(log) for tp, log in logs.items()):
            break
        log = logs.get((topic, p), [])
        if at.get((topic, p), 0) >= len(log):
            continue
        batch = log[at[(topic, p)]:None if size is None else at[(topic, p)] + size]
        at[(topic, p)] += len(batch)
        take(proc.process(batch, caught_up))
    take(proc.process([], None))
    counters: Counter[str] = Counter()
    for engine in proc.engines.values():
        counters.update(engine.counters)
    states = {sid: st for sid, st in tables.subscribers.data.items() if not sid.startswith("_")}
    return alerts, reasons, counters, orjson.loads(orjson.dumps(states))


@pytest.mark.parametrize(("lateness", "duplicates", "too_late"), [
    (3600.0, {"night"}, {"next_day", "two_days"}),
    (WIDE, {"night", "next_day"}, {"two_days"}),
])
def test_a_resend_is_a_duplicate_within_the_horizon_and_too_late_beyond_it_on_both_paths(
        world: Path, tmp_path: Path, lateness: float, duplicates: set[str],
        too_late: set[str]) -> None:
    config = EngineConfig(allowed_lateness_s=lateness)
    resent = tmp_path / "resent"
    originals = _resent(world, resent)
    assert originals["two_days"].hour >= 13  # so two days later is past even the wide close
    clean_alerts, clean_counts, clean_states = _replay(world, config)
    assert clean_alerts and clean_counts["engine.duplicate"] == 0
    assert clean_counts["rejected.too_late"] == 0

    # Replay: no model and no alert changes; each re-send counted once, as what it is.
    alerts, counts, states = _replay(resent, config)
    assert alerts == clean_alerts
    assert states == clean_states
    assert counts["engine.duplicate"] == len(duplicates)
    assert counts["rejected.too_late"] == len(too_late)
    assert counts["engine.late"] == 0

    # The worker's processor, however the two topics arrive: the same.
    for schedule in (_calls_first, _billing_first, _round_robin):
        got, reasons, engine_counts, got_states = _stream(resent, config, schedule)
        assert sorted(got) == sorted(clean_alerts), schedule.__name__
        assert reasons == Counter({"too_late": len(too_late)}), schedule.__name__
        assert engine_counts["duplicate"] == len(duplicates), schedule.__name__
        assert engine_counts["late"] == 0, schedule.__name__
        assert got_states == clean_states, schedule.__name__
