"""Validation at the boundary: raw bytes in, an accepted event or an explained rejection out.

Every input message passes here, on the hot path, so each schema is compiled ahead, twice:
jsonschema-rs (compiled Rust, about 2 microseconds a call record) says whether a message
is valid; fastjsonschema (generated Python, about 6) explains a message that is not: which
rule, which field. A message is accepted when either accepts it, so the first only ever
saves time (``tests/contracts/test_validation.py`` checks that it accepts nothing the second
rejects). Nothing here raises on bad input: a bad message becomes a :class:`Rejected` with a
reason code, the offending field and a sentence.

Reason codes (also the ``reason`` label of the dead-letter metric):

- ``oversized``: larger than ``max_bytes``;
- ``not_utf8``: the bytes are not UTF-8 text;
- ``malformed_json``: not parseable JSON;
- ``schema``: a missing field, a wrong type, a value outside an enumeration or pattern;
- ``absurd_value``: well-formed but impossible (a negative duration, a timestamp in the
  future, before the plausible window or years before the stream's event time);
- ``null_value``: the message has no value at all (a Kafka tombstone), as distinct from an
  empty value;
- ``key_mismatch``: the message key is missing or is not the event's ``subscriber_id``
  (:func:`check_routing`);
- ``wrong_partition``: the key is right but the record sits on another partition than
  Kafka's murmur2 partitioner gives it (:func:`check_routing`).
- ``too_late``: dated in a day its partition has already closed
  (:mod:`stream.service.lateness`, where the engine's state is known).

A dead letter (:func:`dead_letter`) always fits the broker's message limit: beyond it, it
keeps a bounded prefix of the original bytes with their full size and SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fastjsonschema
import jsonschema_rs
import orjson

from stream.contracts import INPUT_KINDS, SCHEMA_VERSION, schema
from stream.contracts.partitioning import partition_of

REASONS = ("oversized", "not_utf8", "malformed_json", "schema", "absurd_value", "null_value",
           "key_mismatch", "wrong_partition", "too_late")
#: Kafka's default ``max.message.bytes`` (broker and topic): the largest record batch a
#: broker takes unless configured otherwise.
KAFKA_MAX_MESSAGE_BYTES = 1_048_588
#: Room left in a dead letter's limit for the record's own framing (batch and record
#: headers, the key) beyond the JSON value.
RECORD_HEADROOM = 1024
#: A dead letter keeps the original key only up to this size (a hostile key can be huge).
MAX_KEY_BYTES = 256
_MAX_FIELD_CHARS = 200
_MAX_DETAIL_CHARS = 1000
_RANGE_RULES = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})


@dataclass(frozen=True, slots=True)
class Accepted:
    event: dict[str, Any]
    epoch_s: float  # event time, parsed once here

    ok = True


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    field: str | None
    detail: str

    ok = False


class Validator:
    """Checks input messages against the contract schemas.

    Parameters
    ----------
    max_bytes
        Larger messages are rejected unread (``oversized``).
    max_future
        An event stamped further ahead of the wall clock than this is ``absurd_value``:
        call records and bills describe the past. (The only wall-clock check: replaying
        history never trips it.)
    max_age
        An event stamped this much before the newest event time seen by this validator is
        ``absurd_value`` (a mangled year), not merely late.
    max_past
        An event stamped further back than this from the wall clock is ``absurd_value``,
        even the first one a validator sees (a 1970 timestamp would otherwise open the
        stream's event time decades early). With ``max_future`` this is the plausible
        window of event time.

    Examples
    --------
    >>> v = Validator()
    >>> ok = v.check("calls", b'{"event_id": "c1", "ts": "2026-03-02T09:15:00+08:00", '
    ...     b'"subscriber_id": "s1", "direction": "in", "other_party": "13800000000", '
    ...     b'"duration_s": 62}')
    >>> ok.ok, ok.event["subscriber_id"]
    (True, 's1')
    >>> bad = v.check("calls", b'{"event_id": "c2", "ts": "2026-03-02T09:15:00+08:00", '
    ...     b'"subscriber_id": "s1", "direction": "in", "other_party": "13800000000", '
    ...     b'"duration_s": -5}')
    >>> bad.reason, bad.field
    ('absurd_value', 'duration_s')
    >>> v.check("billing", b'{"event_id": ').reason
    'malformed_json'
    """

    def __init__(
        self,
        max_bytes: int = 64 * 1024,
        max_future: timedelta = timedelta(days=1),
        max_age: timedelta = timedelta(days=400),
        max_past: timedelta = timedelta(days=3650),
    ) -> None:
        self.max_bytes = max_bytes
        self.max_future = max_future
        self.max_age = max_age
        self.max_past = max_past
        kinds = (*INPUT_KINDS, "outcome")
        # jsonschema-rs decides (fast); fastjsonschema explains what it rejects.
        self._is_valid = {kind: jsonschema_rs.validator_for(schema(kind)).is_valid
                          for kind in kinds}
        self._explaining = {kind: fastjsonschema.compile(schema(kind)) for kind in kinds}
        self._max_age_s = max_age.total_seconds()
        self._newest = float("-inf")

    def check(self, kind: str, raw: bytes | None) -> Accepted | Rejected:
        """Decode and validate one message of ``kind`` ("calls", "billing", "subscribers",
        or "outcome" for ``churn.outcomes``); ``None`` is a record without a value."""
        if raw is None:
            return Rejected("null_value", None, "the record has no value (null)")
        if len(raw) > self.max_bytes:
            return Rejected("oversized", None, f"{len(raw)} bytes, limit {self.max_bytes}")
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as uexc:
                return Rejected("not_utf8", None, f"not UTF-8 at byte {uexc.start}")
            return Rejected("malformed_json", None, f"not JSON: {exc}")
        if not self._is_valid[kind](event):
            try:
                self._explaining[kind](event)
            except fastjsonschema.JsonSchemaValueException as exc:
                return _explain(kind, event, exc)
        if kind == "subscribers":
            return Accepted(event, 0.0)  # profiles carry no event time
        return self._check_time(event)

    def _check_time(self, event: dict[str, Any]) -> Accepted | Rejected:
        ts = event["ts"]
        try:
            when = datetime.fromisoformat(ts)
        except ValueError as exc:  # matches the pattern but is no date, e.g. month 13
            return Rejected("schema", "ts", f"ts {ts!r} is not a date: {exc}")
        epoch = when.timestamp()
        now = time.time()
        if epoch > now + self.max_future.total_seconds():
            return Rejected("absurd_value", "ts", f"ts {ts} is in the future")
        if epoch < now - self.max_past.total_seconds():
            return Rejected("absurd_value", "ts", f"ts {ts} is more than "
                            f"{self.max_past.days} days before the wall clock")
        if epoch < self._newest - self._max_age_s:
            days = (self._newest - epoch) / 86400
            return Rejected("absurd_value", "ts", f"ts {ts} is {days:.0f} days before the stream")
        if epoch > self._newest:
            self._newest = epoch
        return Accepted(event, epoch)


def _explain(kind: str, event: Any, exc: fastjsonschema.JsonSchemaValueException) -> Rejected:
    # Off the hot path: only bad messages get here.
    if exc.rule == "required" and isinstance(event, dict):
        missing = [name for name in schema(kind)["required"] if name not in event]
        return Rejected("schema", missing[0], f"missing field(s): {', '.join(missing)}")
    field = (exc.name or "data").removeprefix("data").lstrip(".") or None
    if field is None:
        return Rejected("schema", None, f"a {kind} message must be a JSON object")
    if field == "ts" and exc.rule == "pattern":
        return Rejected("schema", "ts", "ts must be ISO 8601 with a UTC offset, e.g. "
                        "2026-03-02T09:15:00+08:00")
    reason = "absurd_value" if exc.rule in _RANGE_RULES else "schema"
    return Rejected(reason, field, exc.message.removeprefix("data."))


def check_routing(
    event: dict[str, Any], key: bytes | None, partition: int, partitions: int | None
) -> Rejected | None:
    """A valid input event's key and partition against its ``subscriber_id``.

    The key must be the ``subscriber_id`` (UTF-8), and the record must sit on the partition
    Kafka's default murmur2 partitioner gives that key among ``partitions`` (``None``: not
    checked). Otherwise a subscriber's state would be written from two partitions, and a
    partition's population baseline would differ from replay's. The detail never quotes
    the key or the id.

    >>> ev = {"subscriber_id": "s-00042"}
    >>> check_routing(ev, b"s-00042", 3, 4) is None
    True
    >>> check_routing(ev, b"s-00041", 3, 4).reason
    'key_mismatch'
    >>> check_routing(ev, b"s-00042", 0, 4).reason
    'wrong_partition'
    """
    sid = event.get("subscriber_id")
    if key is None:
        return Rejected("key_mismatch", "subscriber_id", "the record has no key; the key "
                        "must be the subscriber_id")
    if not isinstance(sid, str) or key != sid.encode("utf-8"):
        return Rejected("key_mismatch", "subscriber_id",
                        "the record key is not the event's subscriber_id")
    if partitions is not None:
        expected = partition_of(sid, partitions)
        if partition != expected:
            return Rejected(
                "wrong_partition", None,
                f"on partition {partition}, but murmur2 of the key gives {expected} of "
                f"{partitions}: produce with Kafka's default partitioner "
                "(librdkafka: partitioner=murmur2_random)")
    return None


def dead_letter(
    raw: bytes | None, topic: str, partition: int | None, offset: int | None,
    rejected: Rejected, max_bytes: int = KAFKA_MAX_MESSAGE_BYTES,
) -> dict[str, Any]:
    """The ``churn.deadletter`` value for a rejected message: original bytes and position.

    The serialized letter (plus :data:`RECORD_HEADROOM` for the record around it) stays
    within ``max_bytes``, the broker's message limit: when the original bytes, base64,
    would not fit, only a prefix is kept (``raw_truncated``); ``raw_size`` and
    ``raw_sha256`` always describe the whole original.

    >>> r = Rejected("oversized", None, "3000000 bytes, limit 65536")
    >>> letter = dead_letter(b"x" * 3_000_000, "telecom.calls", 0, 7, r)
    >>> letter["raw_truncated"], letter["raw_size"], len(orjson.dumps(letter)) < 1_048_588
    (True, 3000000, True)
    """
    data = b"" if raw is None else raw
    letter: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": rejected.reason,
        "field": None if rejected.field is None else rejected.field[:_MAX_FIELD_CHARS],
        "detail": rejected.detail[:_MAX_DETAIL_CHARS],
        "raw_base64": "",
        "raw_size": len(data),
        "raw_sha256": hashlib.sha256(data).hexdigest(),
        "raw_truncated": False,
        "rejected_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    room = max_bytes - RECORD_HEADROOM - len(orjson.dumps(letter))
    keep = max(0, room) // 4 * 3  # base64: 4 characters per 3 bytes
    if len(data) > keep:
        data = data[:keep]
        letter["raw_truncated"] = True
    letter["raw_base64"] = base64.b64encode(data).decode("ascii")
    return letter


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The key a dead letter is published with: the original, unless it is too big to
    carry (then none)."""
    return key if key is None or len(key) <= MAX_KEY_BYTES else None
