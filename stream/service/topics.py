"""The topics a worker reads and writes, declared on an app from settings.

Inputs are read as raw bytes (keys and values): validation, not Faust's deserializer,
decides what is good, so bad input is dead-lettered instead of crashing the agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream.service.codecs import ORJSON, RAW


@dataclass(frozen=True)
class Topics:
    inputs: Any  #: one Faust topic over the three input topics
    alerts: Any
    deadletter: Any
    kinds: dict[str, str]  #: input topic name -> kind ("calls", "billing", "subscribers")
    #: churn.calibration (one partition, internal), when calibration is on
    calibration: Any = None


def declare(app: Any, settings: Any) -> Topics:
    """Declare the contract topics of ``settings`` on ``app``."""
    kinds = settings.input_topics
    common = {
        "partitions": settings.partitions,
        "replicas": settings.replication,
        "key_type": bytes,
        "key_serializer": RAW,
    }
    return Topics(
        inputs=app.topic(*kinds, value_type=bytes, value_serializer=RAW, **common),
        alerts=app.topic(settings.topic_alerts, value_serializer=ORJSON, **common),
        deadletter=app.topic(settings.topic_deadletter, value_serializer=ORJSON, **common),
        kinds=dict(kinds),
        # Faust creates an internal topic it lacks (with ONE partition: one model).
        calibration=app.topic(settings.topic_calibration, value_serializer=ORJSON,
                              internal=True, partitions=1, replicas=settings.replication,
                              key_type=bytes, key_serializer=RAW)
        if settings.calibration else None,
    )
