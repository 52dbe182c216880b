"""Pure churn detectors: per-subscriber models, population context, risk, zones, reasons.

Each per-subscriber model is a River estimator in its own module (:class:`HomeCell`,
:class:`PoissonCusum`, :class:`IncomingRate`, :class:`SpendDrop`, :class:`BillLevel`,
:class:`Forwarding`, :class:`AlertPolicy`, :class:`ContactWindows`); the :class:`Engine`
aggregates events into days (``events``), closes days and lets the models learn
(``closing``), then judges (``judgement``). Stored state is plain data of named records
(``state``, ``record``).

No I/O and no Kafka here: ``stream/`` and ``churnwatch replay`` drive the :class:`Engine`
(``tests/detectors/test_detectors_units.py`` proves in a fresh interpreter that importing this
package loads neither faust, aiokafka nor kafka).

>>> from detectors import Engine, EngineConfig
>>> engine = Engine(EngineConfig(), subscribers={}, population={})
>>> engine.process("calls", {"event_id": "c1", "ts": "2026-03-02T09:00:00+08:00",
...     "subscriber_id": "s1", "direction": "out", "other_party": "13900000000",
...     "duration_s": 60, "charge": 0.3})
[]
>>> engine.counters["events"], engine.counters["unknown_profile"]
(1, 1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detectors.bill import BillLevel
from detectors.config import MODEL_VERSION, EngineConfig
from detectors.contact import ContactWindows
from detectors.days import Clock, parse_ts
from detectors.engine import Engine
from detectors.forwarding import Forwarding
from detectors.numbers import OperatorLookup
from detectors.policy import ZONES, AlertPolicy
from detectors.population import Population
from detectors.presence import HomeCell
from detectors.risk import Assessment, Signal, combine
from detectors.spend import SpendDrop
from detectors.state import STATE_VERSION, deep_sizeof
from detectors.usage import IncomingRate, PoissonCusum

__all__ = [
    "MODEL_VERSION",
    "STATE_VERSION",
    "ZONES",
    "AlertPolicy",
    "Assessment",
    "BillLevel",
    "Clock",
    "ContactWindows",
    "Engine",
    "EngineConfig",
    "Forwarding",
    "HomeCell",
    "IncomingRate",
    "OperatorLookup",
    "OutcomeLearner",
    "PoissonCusum",
    "Population",
    "RiskCalibrator",
    "Signal",
    "SpendDrop",
    "combine",
    "deep_sizeof",
    "parse_ts",
]

if TYPE_CHECKING:
    from detectors.calibration import OutcomeLearner, RiskCalibrator


def __getattr__(name: str) -> Any:
    # The outcome calibration (off by default) is imported when first asked for: it loads
    # river's linear models and with them scipy, over a second of every worker's start.
    if name in ("OutcomeLearner", "RiskCalibrator"):
        from detectors import calibration

        return getattr(calibration, name)
    raise AttributeError(f"module 'detectors' has no attribute {name!r}")
