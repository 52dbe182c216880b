"""Pure churn detectors: per-subscriber models, population context, risk, zones, reasons.

No I/O and no Kafka here: ``stream/`` and ``churnwatch replay`` drive the :class:`Engine`.

>>> import sys
>>> import detectors
>>> "faust" in sys.modules or "aiokafka" in sys.modules or "kafka" in sys.modules
False
"""

from __future__ import annotations

from detectors.config import MODEL_VERSION, EngineConfig
from detectors.days import Clock, parse_ts
from detectors.engine import Engine
from detectors.forwarding import Forwarding
from detectors.numbers import OperatorLookup
from detectors.policy import ZONES, AlertPolicy
from detectors.population import Population
from detectors.risk import Assessment, Signal, combine
from detectors.spend import SpendDrop
from detectors.state import STATE_VERSION, deep_sizeof

__all__ = [
    "MODEL_VERSION",
    "STATE_VERSION",
    "ZONES",
    "AlertPolicy",
    "Assessment",
    "Clock",
    "Engine",
    "EngineConfig",
    "Forwarding",
    "OperatorLookup",
    "Population",
    "Signal",
    "SpendDrop",
    "combine",
    "deep_sizeof",
    "parse_ts",
]
