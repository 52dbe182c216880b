"""Caps on forwarding evidence: what forwarding off-net may say when the line cannot
support red (a call or two on a line worth little; a line too new to tell a trip)."""

from __future__ import annotations

from typing import Any

from detectors.config import EngineConfig
from detectors.outputs import monthly_value
from detectors.risk import Signal
from detectors.spend import SpendDrop

__all__ = ["MODEST_STRENGTH", "modest", "unknown_line"]

#: The strongest a modest piece of evidence may be: yellow alone (yellow at 0.45, red 0.7).
MODEST_STRENGTH = 0.5


def modest(sig: Signal, st: dict[str, Any], spend: SpendDrop, cfg: EngineConfig) -> Signal:
    """Cap forwarding evidence of a few calls on a low-value line below red: red asks for a
    call within the working day, which a call or two forwarded on a line worth less than
    ``cfg.low_value_month`` a month does not justify on its own."""
    calls = sig.figures.get("forwarded", 0) + sig.figures.get("carried_forwarded", 0)
    monthly = monthly_value(st, spend) if spend.n else 0.0
    if calls < cfg.fwd_min_calls and monthly < cfg.low_value_month:
        sig.strength = min(sig.strength, MODEST_STRENGTH)
    return sig


def unknown_line(sig: Signal, age: int, cfg: EngineConfig) -> Signal:
    """Cap forwarding off-net that began on a line known for fewer days than a stay away
    needs (``cfg.warmup_days``; ``age``: the line's days then) at yellow: a trip with its
    calls forwarded cannot be told from a switch, so it is a warning, as a stay away that
    may be an absence is, until it outlasts a trip (``cfg.trip_days``).

    Examples
    --------
    >>> sig = unknown_line(Signal("forwarding_off_net", 1.0, "4 of 4 calls", {}), 16,
    ...                    EngineConfig())
    >>> sig.strength, sig.summary[:64]
    (0.5, '4 of 4 calls; it began when this line was known for 16 days, too')

    """
    if sig.strength > cfg.absence_fwd_strength:
        sig.strength = cfg.absence_fwd_strength
        sig.summary += (f"; it began when this line was known for {age} days, too few to "
                        f"tell a trip from a switch: it may be a trip (red if it runs past "
                        f"{cfg.trip_days} days)")
    return sig
