"""Message codecs: orjson for JSON values, raw bytes for input values and keys.

Inputs are consumed as raw bytes (``"raw"``) so that a message that is not JSON, not UTF-8
or not in the contract is dead-lettered with its original bytes instead of crashing the
agent in Faust's deserializer. Everything we write (alerts, dead letters, table state) is
plain JSON through orjson, with no ``__faust`` metadata.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

ORJSON = "orjson"
RAW = "raw"


class OrjsonCodec(codecs.Codec):
    """Plain JSON with :mod:`orjson` (bytes in, bytes out; no str round trip)."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


def register() -> None:
    """Make ``"orjson"`` a Faust codec name (idempotent)."""
    if ORJSON not in codecs.codecs:
        codecs.register(ORJSON, OrjsonCodec())
