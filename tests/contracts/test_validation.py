"""Validation at the boundary: every schema's good and bad examples, and fuzzing."""

from __future__ import annotations

import json
from typing import Any

import fastjsonschema
import jsonschema_rs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.contracts import INPUT_KINDS, SCHEMA_NAMES, schema
from stream.contracts.validation import REASONS, Accepted, Rejected, Validator, dead_letter

GOOD: dict[str, dict[str, Any]] = {
    "calls": {
        "event_id": "c1", "ts": "2026-03-02T09:15:00+08:00", "subscriber_id": "s1",
        "direction": "in", "other_party": "13800000000", "duration_s": 62, "charge": 0.3,
        "forwarded_to": None, "cell_id": "cell-9",
    },
    "billing": {
        "event_id": "b1", "ts": "2026-03-01T00:00:00Z", "subscriber_id": "s1",
        "account_id": None, "kind": "topup", "amount": 50, "previous_amount": None,
    },
    "subscribers": {
        "subscriber_id": "s1", "msisdn": "13800000000", "account_id": "a1",
        "group_id": None, "segment": "consumer", "tier": None, "account_manager": None,
    },
}

# (kind, change to a good message, expected reason, expected field)
BAD = [
    ("calls", {"duration_s": -1}, "absurd_value", "duration_s"),
    ("calls", {"duration_s": 10**9}, "absurd_value", "duration_s"),
    ("calls", {"charge": -0.01}, "absurd_value", "charge"),
    ("calls", {"direction": "sideways"}, "schema", "direction"),
    ("calls", {"duration_s": "62"}, "schema", "duration_s"),
    ("calls", {"other_party": "call me"}, "schema", "other_party"),
    ("calls", {"forwarded_to": "abc"}, "schema", "forwarded_to"),
    ("calls", {"ts": "2026-03-02T09:15:00"}, "schema", "ts"),
    ("calls", {"ts": "2026-13-02T09:15:00+08:00"}, "schema", "ts"),
    ("calls", {"ts": "2099-03-02T09:15:00+08:00"}, "absurd_value", "ts"),
    ("calls", {"subscriber_id": ""}, "schema", "subscriber_id"),
    ("calls", {"event_id": None}, "schema", "event_id"),
    ("billing", {"kind": "refund"}, "schema", "kind"),
    ("billing", {"amount": -3}, "absurd_value", "amount"),
    ("billing", {"schema_version": 2}, "absurd_value", "schema_version"),
    ("subscribers", {"tier": "platinum"}, "schema", "tier"),
    ("subscribers", {"msisdn": 13800000000}, "schema", "msisdn"),
]


def encode(message: Any) -> bytes:
    return orjson.dumps(message)


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_good_example_is_accepted(kind: str) -> None:
    result = Validator().check(kind, encode(GOOD[kind]))
    assert isinstance(result, Accepted), result
    assert result.event == GOOD[kind]


def test_extra_fields_are_allowed() -> None:
    result = Validator().check("calls", encode({**GOOD["calls"], "mediation_node": 7}))
    assert result.ok


def test_event_time_is_parsed_once() -> None:
    result = Validator().check("billing", encode(GOOD["billing"]))
    assert isinstance(result, Accepted)
    assert result.epoch_s == 1772323200.0  # 2026-03-01T00:00:00Z


@pytest.mark.parametrize(("kind", "change", "reason", "field"), BAD)
def test_bad_example_is_rejected_with_reason_and_field(
    kind: str, change: dict[str, Any], reason: str, field: str
) -> None:
    result = Validator().check(kind, encode({**GOOD[kind], **change}))
    assert isinstance(result, Rejected), result
    assert (result.reason, result.field) == (reason, field)
    assert result.detail


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_missing_required_field_is_named(kind: str) -> None:
    required = schema(kind)["required"]
    message = {k: v for k, v in GOOD[kind].items() if k != required[-1]}
    result = Validator().check(kind, encode(message))
    assert isinstance(result, Rejected)
    assert (result.reason, result.field) == ("schema", required[-1])
    assert required[-1] in result.detail


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "not_utf8"),
        (b'{"event_id": "c1",', "malformed_json"),
        (b"", "malformed_json"),
        (b"[1, 2]", "schema"),
        (b"null", "schema"),
        (b'{"pad": "' + b"x" * 70_000 + b'"}', "oversized"),
    ],
)
def test_undecodable_messages(raw: bytes, reason: str) -> None:
    result = Validator().check("calls", raw)
    assert isinstance(result, Rejected)
    assert result.reason == reason


def test_timestamp_years_before_the_stream_is_absurd() -> None:
    v = Validator()
    assert v.check("calls", encode(GOOD["calls"])).ok
    old = {**GOOD["calls"], "ts": "2019-03-02T09:15:00+08:00"}
    result = v.check("calls", encode(old))
    assert isinstance(result, Rejected)
    assert (result.reason, result.field) == ("absurd_value", "ts")
    # A few hours late is not absurd: the detectors count it as late.
    late = {**GOOD["calls"], "ts": "2026-03-02T03:15:00+08:00"}
    assert v.check("calls", encode(late)).ok


def test_dead_letter_keeps_original_bytes_and_matches_schema() -> None:
    raw = b'{"event_id": "c1", "duration_s": -5}'
    rejected = Validator().check("calls", raw)
    assert isinstance(rejected, Rejected)
    letter = dead_letter(raw, "telecom.calls", 3, 1200, rejected)
    fastjsonschema.validate(schema("deadletter"), letter)
    import base64

    assert base64.b64decode(letter["raw_base64"]) == raw
    assert (letter["partition"], letter["offset"], letter["reason"]) == (3, 1200, "schema")


def test_schemas_are_valid_and_versioned() -> None:
    for name in SCHEMA_NAMES:
        s = schema(name)
        fastjsonschema.compile(s)
        assert s["x-schema-version"] == 1
        assert "schema_version" in s["properties"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=6),
    max_leaves=20,
)


def near_valid(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Good messages with random fields replaced, dropped or added."""
    fields = list(GOOD[kind])
    return st.builds(
        lambda repl, drop, extra: {
            **{k: v for k, v in GOOD[kind].items() if k not in drop},
            **repl,
            **extra,
        },
        st.dictionaries(st.sampled_from(fields), json_values, max_size=3),
        st.sets(st.sampled_from(fields), max_size=2),
        st.dictionaries(st.text(max_size=5), json_values, max_size=2),
    )


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(INPUT_KINDS), value=json_values)
def test_random_json_never_raises(kind: str, value: Any) -> None:
    result = Validator().check(kind, json.dumps(value).encode())
    assert result.ok or result.reason in REASONS


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_near_valid_messages_never_raise(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(INPUT_KINDS))
    message = data.draw(near_valid(kind))
    result = Validator().check(kind, json.dumps(message).encode())
    assert result.ok or result.reason in REASONS


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_random_bytes_never_raise(raw: bytes) -> None:
    result = Validator().check("billing", raw)
    assert result.ok or result.reason in REASONS


#: Values at the edges of the schemas' rules: patterns (a trailing newline, non-ASCII
#: digits, 9 and 10 decimals), lengths, bounds, integers beyond 64 bits, booleans as numbers.
EDGES = [
    "", "1", "123", "+123", "++123", "123\n", "\n123", " 123", "１２３", "٣٣٣", "1" * 20,
    "1" * 21, "x" * 64, "x" * 65, "x" * 128, "x" * 129, "in", "out", "IN", "topup",
    "consumer", "sme", "2026-03-02T09:15:00+08:00", "2026-03-02T09:15:00Z",
    "2026-03-02T09:15:00+08:00\n", "2026-03-02T09:15:00.123456789Z",
    "2026-03-02T09:15:00.1234567890Z", "2026-03-02t09:15:00Z", "2026-03-02T09:15:00+0800",
    "2026-03-02T09:15:00", -1, -0.0, 0, 0.0, 1, 1.0, 1.5, 2, 86400, 86400.0, 86400.5,
    100000, 100000.01, 1e308, 2**63, 2**64, -(2**63) - 1, 10**30, True, False, None, [], {},
]


_FAST = {k: jsonschema_rs.validator_for(schema(k)).is_valid for k in (*INPUT_KINDS, "outcome")}
_EXPLAINING = {k: fastjsonschema.compile(schema(k)) for k in (*INPUT_KINDS, "outcome")}


@settings(max_examples=1000, deadline=None)
@given(data=st.data())
def test_the_fast_check_accepts_only_what_the_explaining_one_accepts(
        data: st.DataObject) -> None:
    """The validator accepts what jsonschema-rs accepts without asking fastjsonschema: the
    two must agree, at the edges of every rule of every schema."""
    kind = data.draw(st.sampled_from([*INPUT_KINDS, "outcome"]))
    base = GOOD.get(kind) or dict.fromkeys(schema(kind)["required"], "x")
    fields = list(schema(kind)["properties"])
    message = {**base, **data.draw(st.dictionaries(
        st.sampled_from(fields), st.sampled_from(EDGES) | json_values, max_size=3))}
    fast = _FAST[kind](message)
    try:
        _EXPLAINING[kind](message)
        explained = True
    except fastjsonschema.JsonSchemaValueException:
        explained = False
    assert fast == explained, message
