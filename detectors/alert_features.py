"""What the calibration learns from: call-centre outcomes as labels, and an alert's own
features (its reasons' strengths, segment, tier, value) in a fixed vocabulary
(:mod:`detectors.calibration`)."""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "CALIBRATION_STATE_VERSION",
    "FEATURES",
    "LABELS",
    "OUTCOMES",
    "alert_features",
    "leading_reason",
    "outcome_label",
    "zone_of",
]

#: Bump when the features or the state layout change meaning.
CALIBRATION_STATE_VERSION = 1
#: Outcomes a call-centre tool may report (``stream/contracts/schemas/outcome.schema.json``).
OUTCOMES: tuple[str, ...] = ("retained", "unreachable", "not_at_risk", "churned", "no_answer")
#: What each outcome says about risk: at risk (True), a false alarm (False), nothing (None).
LABELS: dict[str, bool | None] = {
    "retained": True,  # the alert was right; the call worked
    "churned": True,
    "not_at_risk": False,
    "unreachable": None,
    "no_answer": None,
}
# The feature vocabulary is fixed, so every example has the same keys (a scaler sees
# zeros too, not only the features an alert happens to carry). A member's
# ``group_context`` reason is not a feature: the service attaches it a poll later than
# replay does (docs/groups.md), and a feature that depends on such timing would make the
# service's model and scores differ from replay's.
CODES = ("usage_drop", "spend_drop", "forwarding_off_net", "silent", "bill_drop")
SEGMENTS = ("consumer", "sme", "key_account", "government")
TIERS = ("diamond", "gold", "silver")


def outcome_label(outcome: str) -> bool | None:
    """The label an outcome gives its alert: True at risk, False false alarm, None nothing.

    Examples
    --------
    >>> [outcome_label(o) for o in OUTCOMES]
    [True, None, False, True, None]

    """
    return LABELS[outcome]


def leading_reason(alert: dict[str, Any]) -> str:
    """The code of an alert's first reason (the strongest), ``"none"`` without one.

    >>> leading_reason({"reasons": [{"code": "usage_drop"}, {"code": "spend_drop"}]})
    'usage_drop'
    >>> leading_reason({"reasons": []})
    'none'
    """
    reasons = [r for r in alert.get("reasons") or () if r.get("code") != "resolved"]
    return str(reasons[0]["code"]) if reasons else "none"


def zone_of(score: float, green: float, yellow: float, red: float) -> str:
    """The zone a score falls in (thresholds as in :func:`detectors.risk.combine`).

    >>> zone_of(0.5, 0.2, 0.45, 0.7), zone_of(0.7, 0.2, 0.45, 0.7)
    ('yellow', 'red')
    """
    if score >= red:
        return "red"
    if score >= yellow:
        return "yellow"
    if score >= green:
        return "green"
    return "blue"


def _num(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else default


def alert_features(alert: dict[str, Any]) -> dict[str, float]:
    """Features of a subscriber alert, from the alert contract alone.

    The reason codes (and a reason's ``strength`` when it carries one), the figures that
    grade them (a drop's ratio and CUSUM, days of forwarding and the forwarded share),
    the forwarding target's usual share, the raw risk score, segment, tier, log value at
    risk, the raw zone, group membership and whether it is an escalation. Always the
    same keys.

    Examples
    --------
    >>> x = alert_features({"risk_score": 0.85, "zone": "red", "status": "open",
    ...     "segment": "sme", "tier": None, "value_at_risk": 120.0,
    ...     "reasons": [{"code": "forwarding_off_net", "summary": "...",
    ...                  "figures": {"days": 2, "forwarded": 6, "incoming": 8}}]})
    >>> x["score"], x["code_forwarding_off_net"], x["fwd_share"], x["segment_sme"]
    (0.85, 1.0, 0.75, 1.0)
    >>> len(x)
    29

    A member's ``group_context`` reason changes nothing (its timing differs between the
    service and replay):

    >>> member = {"risk_score": 0.85, "zone": "red", "reasons": [
    ...     {"code": "usage_drop", "figures": {"ratio": 0.4, "cusum": 8.1}},
    ...     {"code": "group_context", "figures": {"group_id": "G1"}}]}
    >>> alert_features(member) == alert_features({**member, "reasons": member["reasons"][:1]})
    True

    """
    x: dict[str, float] = {f"code_{c}": 0.0 for c in CODES}
    x.update({f"strength_{c}": 0.0 for c in CODES})
    x.update({"drop_ratio": 1.0, "cusum": 0.0, "fwd_days": 0.0, "fwd_share": 0.0,
              "fwd_usual": 0.0, "n_reasons": 0.0})
    reasons = [r for r in alert.get("reasons") or () if r.get("code") != "resolved"]
    for i, r in enumerate(reasons):
        code = str(r.get("code"))
        if code not in CODES:
            continue
        figures = r.get("figures") or {}
        x["n_reasons"] += 1.0
        x[f"code_{code}"] = 1.0
        # Engines that publish strengths give them; else the order says which led.
        x[f"strength_{code}"] = _num(r.get("strength"), 1.0 if i == 0 else 0.5)
        if code in ("usage_drop", "spend_drop"):
            x["drop_ratio"] = min(x["drop_ratio"], _num(figures.get("ratio"), 1.0))
            x["cusum"] = max(x["cusum"], _num(figures.get("cusum")) / 10.0)
        elif code == "forwarding_off_net":
            x["fwd_days"] = min(7.0, _num(figures.get("days"), 1.0)) / 7.0
            incoming = _num(figures.get("incoming"))
            if incoming > 0:
                x["fwd_share"] = _num(figures.get("forwarded")) / incoming
            x["fwd_usual"] = _num(figures.get("usual_share"))
    x["score"] = _num(alert.get("risk_score"))
    segment = alert.get("segment")
    for s in SEGMENTS:
        x[f"segment_{s}"] = 1.0 if segment == s else 0.0
    tier = alert.get("tier")
    for t in TIERS:
        x[f"tier_{t}"] = 1.0 if tier == t else 0.0
    x["log_value"] = math.log1p(max(0.0, _num(alert.get("value_at_risk"))))
    zone = alert.get("zone")
    x["zone_red"] = 1.0 if zone == "red" else 0.0
    x["zone_white"] = 1.0 if zone == "white" else 0.0
    x["in_group"] = 1.0 if alert.get("group_id") else 0.0
    x["escalated"] = 1.0 if alert.get("status") == "escalated" else 0.0
    return x


#: Every feature :func:`alert_features` gives, whatever the alert.
FEATURES = frozenset(alert_features({}))
