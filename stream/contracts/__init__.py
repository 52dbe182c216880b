"""Topic names and the JSON Schemas that are the single source of truth for messages.

The schemas ship as package data in ``stream/contracts/schemas/``; ``docs/contracts.md`` describes
them with an example of each message.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

TOPIC_CALLS = "telecom.calls"
TOPIC_BILLING = "telecom.billing"
TOPIC_SUBSCRIBERS = "telecom.subscribers"
TOPIC_ALERTS = "churn.alerts"
TOPIC_DEADLETTER = "churn.deadletter"
#: Call-centre tools report what a contact achieved on an alert (one partition).
TOPIC_OUTCOMES = "churn.outcomes"
#: The ported-numbers registry: compacted, keyed by number, ``{"number", "operator"}``
#: values (latest wins; stream/service/ported_feed.py). Published by ``churnwatch produce``.
TOPIC_PORTED = "telecom.ported"
#: Internal: raw subscriber alerts, exits and day marks on their way to the one
#: calibration model (one partition; docs/outcomes.md).
TOPIC_CALIBRATION = "churn.calibration"

#: Input topic -> the kind of event it carries (also the schema name and the replay file stem).
INPUT_TOPICS: dict[str, str] = {
    TOPIC_CALLS: "calls",
    TOPIC_BILLING: "billing",
    TOPIC_SUBSCRIBERS: "subscribers",
}
INPUT_KINDS: tuple[str, ...] = tuple(INPUT_TOPICS.values())
TOPIC_OF_KIND: dict[str, str] = {kind: topic for topic, kind in INPUT_TOPICS.items()}
ALL_TOPICS: tuple[str, ...] = (*INPUT_TOPICS, TOPIC_ALERTS, TOPIC_DEADLETTER)

SCHEMA_NAMES: tuple[str, ...] = (*INPUT_KINDS, "alert", "deadletter", "outcome")
#: Version written into alerts and dead letters (``schema_version``).
SCHEMA_VERSION = 1


@cache
def schema(name: str) -> dict[str, Any]:
    """The JSON Schema called ``name`` (one of :data:`SCHEMA_NAMES`)."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"no schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    package = resources.files("stream.contracts.schemas")
    text = package.joinpath(f"{name}.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
