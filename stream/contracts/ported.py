"""The ported-numbers registry: which operator a ported number now belongs to.

Number portability makes a number's prefix an unreliable guide to its operator, so the
engine looks ported numbers up here first.
"""

from __future__ import annotations

from pathlib import Path

import orjson

#: The registry's file in a replay directory (what ``churnwatch simulate`` writes, replay
#: loads and ``churnwatch produce`` publishes to ``telecom.ported``).
PORTED_FILE = "ported.jsonl"


def load_ported_numbers(path: Path) -> dict[str, str]:
    """Number -> operator from a JSON Lines file of ``{"number", "operator"}`` objects."""
    numbers: dict[str, str] = {}
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                record = orjson.loads(line)
                numbers[str(record["number"])] = str(record["operator"])
    return numbers
