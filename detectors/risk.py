"""Risk: combine the signals into a score in 0..1, a zone, and reasons an agent can read out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detectors.policy import ZONES

__all__ = ["Signal", "Assessment", "combine", "drop_score"]


@dataclass
class Signal:
    """One piece of evidence: its strength in 0..1, a reason code, a sentence and figures."""

    code: str
    strength: float
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)

    def reason(self) -> dict[str, Any]:
        """The reason as it goes into an alert, with its ``strength`` (0..1: how strongly
        it pushed the score; reasons come strongest first)."""
        return {"code": self.code, "summary": self.summary, "figures": self.figures,
                "strength": round(self.strength, 2)}


@dataclass
class Assessment:
    """The result of judging one subscriber at one moment."""

    score: float
    zone: str
    signals: list[Signal]
    hold: bool = False  # away or unreachable: the day says nothing either way

    @property
    def level(self) -> int:
        """Index of the zone in :data:`detectors.policy.ZONES`."""
        return ZONES.index(self.zone)

    def reasons(self) -> list[dict[str, Any]]:
        """Reasons, strongest first."""
        ordered = sorted(self.signals, key=lambda s: -s.strength)
        return [s.reason() for s in ordered]


def drop_score(ratio: float, z: float, start: float, full: float, min_z: float) -> float:
    """Strength of a drop: 0 at ``ratio >= start``, 1 at ``ratio <= full``, linear between.

    Zero unless the drop is also significant (``z <= -min_z``), so noisy low users and a
    short dip within the noise do not count.

    Examples
    --------
    >>> drop_score(0.38, -6.0, start=0.8, full=0.35, min_z=2.5)
    0.93
    >>> drop_score(0.38, -1.0, start=0.8, full=0.35, min_z=2.5)
    0.0

    """
    if z > -min_z or ratio >= start:
        return 0.0
    return round(min(1.0, (start - ratio) / (start - full)), 2)


def combine(
    signals: list[Signal],
    green: float,
    yellow: float,
    red: float,
    silent: bool = False,
) -> Assessment:
    """Noisy-or of the signals' strengths, and the zone it falls in.

    ``silent`` (an active subscriber gone quiet, no port-out) makes the zone white.

    Examples
    --------
    >>> spend = Signal("spend_drop", 0.5, "spend fell")
    >>> fwd = Signal("forwarding_off_net", 0.55, "calls forwarded off-net")
    >>> a = combine([spend, fwd], green=0.2, yellow=0.45, red=0.7)
    >>> a.score, a.zone, [r["code"] for r in a.reasons()]
    (0.775, 'red', ['forwarding_off_net', 'spend_drop'])
    >>> combine([], 0.2, 0.45, 0.7).zone
    'blue'

    """
    keep = 1.0
    for s in signals:
        keep *= 1.0 - min(1.0, max(0.0, s.strength))
    score = round(1.0 - keep, 3)
    if silent:
        score = max(score, 0.9)
        zone = "white"
    elif score >= red:
        zone = "red"
    elif score >= yellow:
        zone = "yellow"
    elif score >= green:
        zone = "green"
    else:
        zone = "blue"
    return Assessment(score, zone, signals)
