"""Validation at the boundary: raw bytes in, an accepted event or an explained rejection out.

Every input message passes here, on the hot path, so the schemas are compiled once with
fastjsonschema (a few microseconds a message; ``churnwatch bench`` and
``tests/contracts/test_validation.py`` measure it). Nothing here raises on bad input: a bad
message becomes a :class:`Rejected` with a reason code, the offending field and a sentence.

Reason codes (also the ``reason`` label of the dead-letter metric):

- ``oversized``: larger than ``max_bytes``;
- ``not_utf8``: the bytes are not UTF-8 text;
- ``malformed_json``: not parseable JSON;
- ``schema``: a missing field, a wrong type, a value outside an enumeration or pattern;
- ``absurd_value``: well-formed but impossible (a negative duration, a timestamp in the
  future or years before the stream's event time).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fastjsonschema
import orjson

from stream.contracts import INPUT_KINDS, SCHEMA_VERSION, schema

REASONS = ("oversized", "not_utf8", "malformed_json", "schema", "absurd_value")
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
    ) -> None:
        self.max_bytes = max_bytes
        self.max_future = max_future
        self.max_age = max_age
        self._compiled = {kind: fastjsonschema.compile(schema(kind))
                          for kind in (*INPUT_KINDS, "outcome")}
        self._max_age_s = max_age.total_seconds()
        self._newest = float("-inf")

    def check(self, kind: str, raw: bytes) -> Accepted | Rejected:
        """Decode and validate one message of ``kind`` ("calls", "billing", "subscribers",
        or "outcome" for ``churn.outcomes``)."""
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
        try:
            self._compiled[kind](event)
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


def dead_letter(
    raw: bytes, topic: str, partition: int | None, offset: int | None, rejected: Rejected
) -> dict[str, Any]:
    """The ``churn.deadletter`` value for a rejected message: original bytes and position."""
    return {
        "schema_version": SCHEMA_VERSION,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": rejected.reason,
        "field": rejected.field,
        "detail": rejected.detail,
        "raw_base64": base64.b64encode(raw).decode("ascii"),
        "rejected_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
