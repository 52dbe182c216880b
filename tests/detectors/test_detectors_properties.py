"""Property tests of the engine: valid events never make it raise, its state round-trips
exactly as plain JSON, and the result does not depend on how the calls and billing streams
interleave (within the allowed lateness); the familiar numbers packed in one integer are
the textbook Misra-Gries summary."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import fastjsonschema
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors import Engine, EngineConfig
from detectors.forwarding import familiar_numbers, is_familiar, pack_familiar, see_contact
from stream.contracts import schema

TZ = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 2, tzinfo=TZ)
NUMBERS = ["13900000001", "18611112222", "18912345678", "12599", "+8613012345678",
           "19212345678", "13700000002"]
SUBSCRIBERS = ["s1", "s2", "s3"]
# A sensitive configuration, so short random streams reach every judgement.
SENSITIVE = EngineConfig(warmup_days=3, recent_days=2, cusum_yellow=0.5, cusum_red=1.0,
                         fwd_min_calls=1, silent_days=2, resolve_days=1, cooldown_days=1,
                         ported_numbers={"18912345678": "China Mobile"})
VALIDATE_ALERT = fastjsonschema.compile(schema("alert"))

seconds = st.integers(min_value=0, max_value=30 * 86400)


def _iso(offset_s: int) -> str:
    return (T0 + timedelta(seconds=offset_s)).isoformat()


@st.composite
def calls(draw: st.DrawFn, n: int) -> dict[str, Any]:
    direction = draw(st.sampled_from(["in", "out"]))
    forwarded = draw(st.one_of(st.none(), st.sampled_from(NUMBERS))) if direction == "in" \
        else None
    return {
        "event_id": f"c{n}-{draw(st.integers(0, 3))}",
        "ts": _iso(draw(seconds)),
        "subscriber_id": draw(st.sampled_from(SUBSCRIBERS)),
        "direction": direction,
        "other_party": draw(st.sampled_from(NUMBERS)),
        "duration_s": draw(st.integers(0, 3600)),
        "charge": draw(st.sampled_from([0.0, 0.1, 1.5, 99.99])),
        "forwarded_to": forwarded,
        "cell_id": None if forwarded else draw(st.sampled_from([None, "C1", "C2", "R1"])),
    }


@st.composite
def billing(draw: st.DrawFn, n: int, closing: bool = True) -> dict[str, Any]:
    kinds = ["charge", "topup", "bill", "plan_change"]
    if closing:
        kinds += ["port_out", "deactivation"]
    kind = draw(st.sampled_from(kinds))
    return {
        "event_id": f"b{n}-{draw(st.integers(0, 3))}",
        "ts": _iso(draw(seconds)),
        "subscriber_id": draw(st.sampled_from(SUBSCRIBERS)),
        "account_id": draw(st.sampled_from([None, "A1"])),
        "kind": kind,
        "amount": draw(st.sampled_from([0.0, 3.0, 58.0, 128.0, 1e6])),
        "previous_amount": draw(st.sampled_from([None, 0.0, 128.0])),
    }


@st.composite
def profiles(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "subscriber_id": draw(st.sampled_from(SUBSCRIBERS)),
        "msisdn": draw(st.sampled_from(NUMBERS)),
        "account_id": "A1",
        "group_id": draw(st.sampled_from([None, "G1"])),
        "segment": draw(st.sampled_from(["consumer", "sme", "other"])),
        "tier": draw(st.sampled_from([None, "gold", "diamond"])),
        "account_manager": draw(st.sampled_from([None, "AM1"])),
    }


@st.composite
def any_events(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    size = draw(st.integers(0, 120))
    out: list[tuple[str, dict[str, Any]]] = []
    for n in range(size):
        kind = draw(st.sampled_from(["calls", "calls", "calls", "billing", "subscribers"]))
        if kind == "calls":
            out.append((kind, draw(calls(n))))
        elif kind == "billing":
            out.append((kind, draw(billing(n))))
        else:
            out.append((kind, draw(profiles())))
    return out


def _run(engine: Engine, events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    for kind, event in events:
        alerts.extend(engine.process(kind, event))
    return alerts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=any_events(), sensitive=st.booleans(), sorted_=st.booleans())
def test_any_valid_events_never_raise(
    events: list[tuple[str, dict[str, Any]]], sensitive: bool, sorted_: bool
) -> None:
    if sorted_:
        events = sorted(events, key=lambda item: item[1].get("ts", ""))
    engine = Engine(SENSITIVE if sensitive else EngineConfig())
    for alert in _run(engine, events):
        VALIDATE_ALERT({**alert, "emitted_at": "2026-03-02T00:00:00+00:00"})
    assert engine.counters["events"] == len(events)
    for state in engine.subscribers.values():
        assert orjson.loads(orjson.dumps(state)) == state


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=any_events(), cut=st.floats(0, 1))
def test_state_round_trips_and_a_restored_engine_carries_on(
    events: list[tuple[str, dict[str, Any]]], cut: float
) -> None:
    events = sorted(events, key=lambda item: item[1].get("ts", ""))
    k = int(len(events) * cut)
    whole = Engine(SENSITIVE)
    first = _run(whole, events[:k])
    rest = _run(whole, events[k:])
    half = Engine(SENSITIVE)
    assert _run(half, events[:k]) == first
    # Restart: plain JSON state is all there is.
    subscribers = orjson.loads(orjson.dumps(half.subscribers))
    population = orjson.loads(orjson.dumps(half.population.store))
    assert subscribers == half.subscribers and population == half.population.store
    restored = Engine(SENSITIVE, subscribers=subscribers, population=population)
    again = _run(restored, events[k:])
    key = lambda a: orjson.dumps(a, option=orjson.OPT_SORT_KEYS)  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, rest))
    assert restored.subscribers == whole.subscribers


@st.composite
def two_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    n_calls = draw(st.integers(0, 150))
    n_bills = draw(st.integers(0, 60))
    call_list = [draw(calls(n)) for n in range(n_calls)]
    bill_list = [draw(billing(n, closing=False)) for n in range(n_bills)]
    call_list.sort(key=lambda e: e["ts"])
    bill_list.sort(key=lambda e: e["ts"])
    return call_list, bill_list


def _arrivals(stream: list[dict[str, Any]], jitter: list[int]) -> list[float]:
    """Arrival keys: each event within the lateness after its time, the stream's order kept."""
    keys: list[float] = []
    last = float("-inf")
    for event, j in zip(stream, jitter, strict=False):
        t = datetime.fromisoformat(event["ts"]).timestamp() + j
        last = max(last, t)
        keys.append(last)
    return keys


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams=two_streams(), data=st.data())
def test_interleaving_of_calls_and_billing_does_not_matter(
    streams: tuple[list[dict[str, Any]], list[dict[str, Any]]], data: st.DataObject
) -> None:
    call_list, bill_list = streams
    config = SENSITIVE
    lateness = int(config.allowed_lateness_s)
    jitter = st.lists(st.integers(0, lateness - 1), min_size=300, max_size=300)
    jc, jb = data.draw(jitter), data.draw(jitter)
    canonical = sorted(
        [("calls", e) for e in call_list] + [("billing", e) for e in bill_list],
        key=lambda item: item[1]["ts"],
    )
    merged = sorted(
        [(k, 0, i, "calls", e) for i, (k, e) in enumerate(zip(_arrivals(call_list, jc),
                                                           call_list, strict=False))]
        + [(k, 1, i, "billing", e) for i, (k, e) in enumerate(zip(_arrivals(bill_list, jb),
                                                              bill_list, strict=False))],
        key=lambda item: item[:3],
    )
    a, b = Engine(config), Engine(config)
    alerts_a = _run(a, canonical)
    alerts_b = _run(b, [(kind, e) for *_, kind, e in merged])
    key = lambda x: orjson.dumps(x, option=orjson.OPT_SORT_KEYS)  # noqa: E731
    assert sorted(map(key, alerts_a)) == sorted(map(key, alerts_b))
    assert a.counters["late"] == b.counters["late"] == 0

    def strip(store: Any) -> dict[str, Any]:
        return {sid: {k: v for k, v in s.items() if k != "e"} for sid, s in store.items()}

    sa, sb = strip(a.subscribers), strip(b.subscribers)
    diff = {(sid, k): (sa[sid].get(k), sb[sid].get(k)) for sid in sa for k in sa[sid]
            if sa[sid].get(k) != sb.get(sid, {}).get(k)}
    assert diff == {}
    assert a.population.store == b.population.store


def _misra_gries(counts: dict[int, int], fp: int, size: int) -> dict[int, int]:
    """The textbook Misra-Gries step, on a dict."""
    if fp in counts:
        return {**counts, fp: counts[fp] + 1}
    if len(counts) < size:
        return {**counts, fp: 1}
    return {k: c - 1 for k, c in counts.items() if c > 1}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 7, 4242, 0xFFFE, 0xFFFF]), max_size=120))
def test_familiar_numbers_in_one_integer_are_the_textbook_summary(fps: list[int]) -> None:
    packed, counts = 0, {}
    for fp in fps:
        packed = see_contact(packed, fp, 2)
        counts = _misra_gries(counts, fp, 2)
        assert dict(familiar_numbers(packed)) == counts
    assert all(is_familiar(packed, fp, c) and not is_familiar(packed, fp, c + 1)
               for fp, c in counts.items())
    flat = [x for pair in counts.items() for x in pair]
    assert dict(familiar_numbers(pack_familiar(flat))) == counts
