"""docs/contracts.md shows one example per schema; each must validate."""

from __future__ import annotations

import re
from pathlib import Path

import fastjsonschema
import orjson
import pytest

from stream.contracts import SCHEMA_NAMES, schema

DOC = Path(__file__).parents[2] / "docs" / "contracts.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", re.S)


def examples() -> dict[str, str]:
    return dict(EXAMPLE.findall(DOC.read_text("utf-8")))


def test_every_schema_has_an_example() -> None:
    assert sorted(examples()) == sorted(SCHEMA_NAMES)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_example_validates(name: str) -> None:
    fastjsonschema.validate(schema(name), orjson.loads(examples()[name]))
