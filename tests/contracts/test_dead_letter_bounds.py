"""Dead letters within the broker's limit, routing checks, the plausible window of time."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import fastjsonschema
import orjson
import pytest

from stream.contracts import schema
from stream.contracts.partitioning import partition_of
from stream.contracts.validation import (
    KAFKA_MAX_MESSAGE_BYTES,
    MAX_KEY_BYTES,
    RECORD_HEADROOM,
    Rejected,
    Validator,
    check_routing,
    dead_letter,
    dead_letter_key,
)

validate = fastjsonschema.compile(schema("deadletter"))


def _call(ts: str, sid: str = "s1") -> bytes:
    return orjson.dumps({"event_id": "c1", "ts": ts, "subscriber_id": sid, "direction": "in",
                         "other_party": "13800000000", "duration_s": 62})


@pytest.mark.parametrize("size", [900_000, 3_000_000, 10_000_000])
@pytest.mark.parametrize("limit", [KAFKA_MAX_MESSAGE_BYTES, 4 * 1024 * 1024, 100_000])
def test_a_dead_letter_fits_the_limit_and_describes_the_whole_original(size, limit) -> None:
    raw = bytes(range(256)) * (size // 256) + b"!" * (size % 256)
    rejected = Validator().check("calls", raw)
    assert rejected.reason == "oversized"
    letter = dead_letter(raw, "telecom.calls", 1, 99, rejected, max_bytes=limit)
    validate(letter)
    encoded = orjson.dumps(letter)
    assert len(encoded) + RECORD_HEADROOM <= limit
    assert letter["raw_size"] == size
    assert letter["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    kept = base64.b64decode(letter["raw_base64"])
    assert raw.startswith(kept)
    assert letter["raw_truncated"] is (len(kept) < size)
    # What fits is kept: the prefix fills the limit but for the base64 rounding.
    if letter["raw_truncated"]:
        assert len(encoded) + RECORD_HEADROOM > limit - 8


def test_a_small_dead_letter_keeps_everything() -> None:
    raw = b'{"event_id": "c1", "duration_s": -5}'
    letter = dead_letter(raw, "telecom.calls", 0, 1, Rejected("absurd_value", "duration_s", "x"))
    assert base64.b64decode(letter["raw_base64"]) == raw and not letter["raw_truncated"]


def test_hostile_field_and_detail_are_bounded() -> None:
    letter = dead_letter(b"{}", "t", 0, 0, Rejected("schema", "f" * 100_000, "d" * 100_000))
    assert len(letter["field"]) <= 200 and len(letter["detail"]) <= 1000
    validate(letter)


def test_a_huge_key_is_not_carried() -> None:
    assert dead_letter_key(b"s1") == b"s1"
    assert dead_letter_key(b"k" * (MAX_KEY_BYTES + 1)) is None
    assert dead_letter_key(None) is None


def test_a_null_value_is_not_an_empty_one() -> None:
    v = Validator()
    assert v.check("calls", None).reason == "null_value"
    assert v.check("calls", b"").reason == "malformed_json"
    letter = dead_letter(None, "telecom.calls", 0, 0, v.check("calls", None))
    assert letter["raw_size"] == 0 and letter["reason"] == "null_value"
    validate(letter)


def test_a_1970_timestamp_is_absurd_even_as_the_first_event() -> None:
    v = Validator()
    first = v.check("calls", _call("1970-01-01T08:00:00+08:00"))
    assert (first.reason, first.field) == ("absurd_value", "ts")
    assert v.check("calls", _call("2026-03-02T09:15:00+08:00")).ok


def test_the_plausible_window_is_configurable() -> None:
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    assert Validator(max_past=timedelta(days=30)).check("calls", _call(old)).reason == (
        "absurd_value")
    assert Validator(max_past=timedelta(days=50)).check("calls", _call(old)).ok


def test_routing() -> None:
    event = {"subscriber_id": "s-00042"}
    right = partition_of("s-00042", 4)
    assert check_routing(event, b"s-00042", right, 4) is None
    assert check_routing(event, b"s-00042", right + 1, None) is None
    for key in (None, b"", b"s-00041", "s-00042".encode("utf-16")):
        assert check_routing(event, key, right, 4).reason == "key_mismatch"
    wrong = check_routing(event, b"s-00042", (right + 1) % 4, 4)
    assert wrong.reason == "wrong_partition" and "partitioner=murmur2_random" in wrong.detail
    assert "s-00042" not in wrong.detail


def test_the_asyncapi_dead_letter_examples_validate() -> None:
    from pathlib import Path

    import yaml

    doc = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "asyncapi.yaml").read_text())
    message = doc["components"]["messages"]["deadLetter"]
    assert message["payload"]["schema"]["$ref"].endswith("deadletter.schema.json")
    assert doc["channels"]["deadletters"]["address"] == "churn.deadletter"
    assert len(message["examples"]) == 2
    for example in message["examples"]:
        validate(example["payload"])
