"""The simulated world: deterministic, valid against the contract, consistent with truth."""

from __future__ import annotations

import json
import tracemalloc
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stream.contracts.validation import Validator
from stream.tools.simulator import WorldParams, simulate

FILES = ("calls.jsonl", "billing.jsonl", "subscribers.jsonl", "truth.jsonl", "groups.jsonl",
         "ported.jsonl", "world.json")

# A small world with enough of everything to check: groups (one collective), churners
# who port out inside the world, joiners, the holiday.
SMALL = WorldParams(subscribers=60, days=40, seed=5, group_share=0.4, collective_share=0.5,
                    warmup_days=8, group_last_start_before_end=30,
                    group_portout_after=(5, 15), churn_decay_days=(7, 14),
                    churn_last_start_before_end=20,
                    individual_kinds=(("individual_churn", 0.2), ("plan_downgrade", 0.1),
                                      ("trip", 0.1), ("sparse", 0.05), ("new_joiner", 0.1),
                                      ("habitual_forwarder", 0.05), ("ported_number", 0.05)))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    simulate(out, SMALL)
    return out


def test_same_seed_same_bytes_other_seed_differs(world: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    simulate(again, SMALL)
    for name in FILES:
        assert (again / name).read_bytes() == (world / name).read_bytes(), name
    other = tmp_path / "other"
    simulate(other, WorldParams(**{**SMALL.__dict__, "seed": 6}))
    assert (other / "calls.jsonl").read_bytes() != (world / "calls.jsonl").read_bytes()


def test_every_line_is_accepted_by_the_validator(world: Path) -> None:
    validator = Validator()
    for kind in ("calls", "billing", "subscribers"):
        lines = (world / f"{kind}.jsonl").read_bytes().splitlines()
        assert lines, kind
        for raw in lines:
            result = validator.check(kind, raw)
            assert result.ok, (kind, raw, result)
            assert result.event["ts"].endswith("+08:00")


def test_files_are_in_event_time_order_with_unique_ids(world: Path) -> None:
    for kind in ("calls", "billing", "subscribers"):
        events = _lines(world / f"{kind}.jsonl")
        times = [datetime.fromisoformat(e["ts"]) for e in events]
        assert times == sorted(times), kind
        if kind != "subscribers":
            ids = [e["event_id"] for e in events]
            assert len(ids) == len(set(ids)), kind


def test_truth_is_consistent_with_the_events(world: Path) -> None:
    truth = {t["subscriber_id"]: t for t in _lines(world / "truth.jsonl")}
    summary = json.loads((world / "world.json").read_text())
    assert len(truth) == SMALL.subscribers == summary["subscribers"]
    last: dict[str, datetime] = {}
    first: dict[str, datetime] = {}
    port_outs: dict[str, str] = {}
    plan_changes: dict[str, dict[str, Any]] = {}
    forwarded_to: dict[str, set[str]] = defaultdict(set)
    for kind in ("calls", "billing"):
        for e in _lines(world / f"{kind}.jsonl"):
            sid = e["subscriber_id"]
            ts = datetime.fromisoformat(e["ts"])
            assert sid in truth
            last[sid] = max(last.get(sid, ts), ts)
            first[sid] = min(first.get(sid, ts), ts)
            if kind == "billing" and e["kind"] == "port_out":
                assert sid not in port_outs
                port_outs[sid] = e["ts"]
            if kind == "billing" and e["kind"] == "plan_change":
                plan_changes[sid] = e
            if kind == "calls" and e["forwarded_to"] is not None:
                assert e["direction"] == "in"
                forwarded_to[sid].add(e["forwarded_to"])
    kinds = {t["kind"] for t in truth.values()}
    assert {"individual_churn", "group_churn", "new_joiner", "stable"} <= kinds
    assert port_outs, "the small world should see some port-outs"
    for sid, t in truth.items():
        if t["port_out_ts"] is not None:
            assert t["churn"]
            assert port_outs[sid] == t["port_out_ts"]
            assert last[sid] == datetime.fromisoformat(t["port_out_ts"])  # nothing after
        else:
            assert sid not in port_outs
        if t["join_ts"] is not None:
            assert first[sid] > datetime.fromisoformat(t["join_ts"])
        if t["plan_change"] is not None:
            e = plan_changes[sid]
            assert (e["ts"], e["previous_amount"], e["amount"]) == (
                t["plan_change"]["ts"], t["plan_change"]["from"], t["plan_change"]["to"])
        for f in t["forwarding"]:
            if f["start_day"] + 3 < min(f["end_day"], t["port_out_day"] or SMALL.days):
                assert f["to"] in forwarded_to[sid], (sid, f)
    profiles = _lines(world / "subscribers.jsonl")
    assert sorted(p["subscriber_id"] for p in profiles) == sorted(truth)


def test_collective_groups_forward_to_one_competitor(world: Path) -> None:
    from detectors.numbers import OperatorLookup

    truth = {t["subscriber_id"]: t for t in _lines(world / "truth.jsonl")}
    groups = _lines(world / "groups.jsonl")
    collective = [g for g in groups if g["collective"]]
    assert collective
    lookup = OperatorLookup()
    for g in collective:
        assert g["defecting_members"]
        targets = {f["to"] for m in g["defecting_members"] for f in truth[m]["forwarding"]
                   if f["why"] == "churn"}
        assert {lookup.operator(n) for n in targets} == {g["competitor"]}
        starts = [f["start_day"] for m in g["defecting_members"]
                  for f in truth[m]["forwarding"] if f["why"] == "churn"]
        assert max(starts) - min(starts) <= SMALL.group_forward_window
        for m in g["members"]:
            assert truth[m]["group_id"] == g["group_id"]


def test_written_day_by_day_with_flat_memory(tmp_path: Path) -> None:
    sizes: list[int] = []
    out = tmp_path / "w"

    def progress(day: int, days: int, events: int) -> None:
        sizes.append((out / "calls.jsonl").stat().st_size)

    simulate(out, WorldParams(subscribers=60, days=20, seed=2), progress=progress)
    assert len(sizes) == 20
    assert sizes == sorted(sizes) and 0 < sizes[10] < (out / "calls.jsonl").stat().st_size

    def peak(days: int) -> int:
        tracemalloc.start()
        simulate(tmp_path / f"m{days}", WorldParams(subscribers=20, days=days, seed=2))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    short, long = peak(8), peak(32)
    assert long < 1.5 * short  # events are not held: four times the days, same memory


def test_subscribers_answer_in_their_hours_and_call_out_in_them(world: Path,
                                                                 tmp_path: Path) -> None:
    truth = {t["subscriber_id"]: t for t in _lines(world / "truth.jsonl")}
    holiday = json.loads((world / "world.json").read_text())["holiday"]
    inside: defaultdict[str, list[int]] = defaultdict(list)  # answered (1) or not, by where
    out_in_hours = []
    for call in _lines(world / "calls.jsonl"):
        when = datetime.fromisoformat(call["ts"])
        answers = truth[call["subscriber_id"]]["answers"]
        if holiday and holiday["start"] <= call["ts"] < holiday["end"]:
            continue  # holidays use the weekend's hours (and the make-up days, weekdays')
        free = answers["weekend"] if when.weekday() >= 5 else answers["weekdays"]
        if call["direction"] == "out":
            out_in_hours.append(when.hour in free)
        elif not call["forwarded_to"]:
            inside["in" if when.hour in free else "out"].append(call["duration_s"] > 0)
    share_in, share_out = SMALL.answer_share
    answered_in = sum(inside["in"]) / len(inside["in"])
    answered_out = sum(inside["out"]) / len(inside["out"])
    assert abs(answered_in - share_in) < 0.03 and abs(answered_out - share_out) < 0.03
    # Own calls: most in their hours (the rest at the segment's hours, some of them too).
    assert sum(out_in_hours) / len(out_in_hours) >= SMALL.own_calls_in_hours
    # "always": every call answered, at the segment's hours; the calls drawn are the same
    # in number, day by day (answering moves hours and durations, not how many calls).
    always = tmp_path / "always"
    simulate(always, WorldParams(**{**SMALL.__dict__, "answer_hours": "always"}))
    calls = _lines(always / "calls.jsonl")
    assert all(c["duration_s"] > 0 for c in calls)
    assert all(t["answers"] is None for t in _lines(always / "truth.jsonl"))

    def per_day(lines: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for c in lines:
            counts[c["subscriber_id"], c["ts"][:10]] += 1
        return counts

    personal, same = per_day(_lines(world / "calls.jsonl")), per_day(calls)
    differ = [k for k in set(personal) | set(same) if personal.get(k) != same.get(k)]
    # Only join and port-out days may differ: their calls are cut at the join or port-out.
    edges = {(sid, (t["join_ts"] or "")[:10]) for sid, t in truth.items()} | {
        (sid, (t["port_out_ts"] or "")[:10]) for sid, t in truth.items()}
    assert set(differ) <= edges
