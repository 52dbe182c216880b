"""What the engine publishes: subscriber alerts (with their value at risk and contact advice)
and the member signals its group stage reads (part of :class:`detectors.engine.Engine`)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from detectors.config import MODEL_VERSION, EngineConfig
from detectors.contact import ContactWindows
from detectors.forwarding import Forwarding
from detectors.numbers import OperatorLookup, normalise
from detectors.policy import ZONES, AlertPolicy
from detectors.risk import Assessment
from detectors.spend import SpendDrop
from detectors.state import Profile

__all__ = ["Outputs", "alert_id", "monthly_value"]

State = dict[str, Any]

UNKNOWN_PROFILE = Profile.new()


def monthly_value(st: State, spend: SpendDrop) -> float:
    """What the line is worth a month: its usual daily spend x 30 (the recent days' while
    there is no baseline yet). After a plan cut, the spend baseline moves to the new fee at
    once, but the usual monthly bill still holds what the customer paid before (it follows
    new bills over a month or two): the larger counts, because a cut is often the first
    step out, and the value at stake is what they paid until then.
    """
    daily = spend.mean if spend.n else (
        spend.recent_total / len(spend.recent) if spend.recent else 0.0
    )
    monthly = 30.0 * daily
    m = st["m"]
    if m.downgrade >= 0 and m.bill_n:
        monthly = max(monthly, m.bill_mean)
    return monthly


def alert_id(sid: str, start: int, zone: str | None, status: str) -> str:
    """The alert's id: the same for the same episode, zone and status, however often and
    wherever it is replayed (consumers deduplicate by it).

    >>> alert_id("S1", 1773075600, "red", "open")
    '461585c4d835111b53d3cb36'
    """
    return hashlib.sha1(f"{sid}|{start}|{zone}|{status}".encode()).hexdigest()[:24]


class Outputs:
    """The alerts and member signals of one subscriber's state."""

    # Set by :class:`detectors.engine.Engine` (see its ``__init__``).
    config: EngineConfig
    signals: list[dict[str, Any]]
    lookup: OperatorLookup
    _contact: ContactWindows

    def _models(self, st: State) -> tuple[SpendDrop, SpendDrop]:
        raise NotImplementedError  # :class:`detectors.judgement.Judgement`'s

    def _message(self, sid: str, st: State, status: str, zone: str | None, start: int,
                 score: float, spend: SpendDrop, reasons: list[dict[str, Any]]
                 ) -> dict[str, Any]:
        """The fields every subscriber alert has before ``contact`` or ``ported_to`` (the
        caller adds those, then ``ts`` and the versions: the published order)."""
        cfg = self.config
        profile = st.get("p") or UNKNOWN_PROFILE
        msisdn, account_id, group_id, segment, tier, manager = profile
        weight = cfg.segment_weights.get(str(segment), 1.0) * cfg.tier_weights.get(
            str(tier), 1.0
        )
        return {
            "alert_id": alert_id(sid, start, zone, status),
            "kind": "subscriber",
            "status": status,
            "subscriber_id": sid,
            "msisdn": msisdn,
            "account_id": account_id,
            "group_id": group_id,
            "segment": segment,
            "tier": tier,
            "account_manager": manager,
            "zone": zone,
            "risk_score": score,
            "value_at_risk": round(monthly_value(st, spend) * weight, 2),
            "reasons": reasons,
        }

    def _alert(
        self,
        sid: str,
        st: State,
        status: str,
        assessment: Assessment,
        ts_iso: str,
        start: int,
        models: tuple[SpendDrop, SpendDrop, Forwarding] | None,
    ) -> dict[str, Any]:
        cfg = self.config
        spend = models[0] if models is not None else self._models(st)[0]
        zone = assessment.zone
        reasons = assessment.reasons()
        if status == "resolved":
            reasons.insert(0, {
                "code": "resolved",
                "summary": f"no warning sign on each of the last {cfg.resolve_days} days; "
                           f"risk score now {assessment.score:.2f} (0 to 1)",
                "figures": {"days": cfg.resolve_days, "risk_score": assessment.score},
            })
        alert = self._message(sid, st, status, zone, start, assessment.score, spend, reasons)
        contact = self._contact
        contact.state = st.get("h", "")
        first = alert["account_manager"] if alert["segment"] in cfg.manager_first_segments \
            else None
        alert["contact"] = contact.advice(account_manager=first)
        alert.update(ts=ts_iso, schema_version=1, model_version=MODEL_VERSION)
        return alert

    def _closed_alert(self, sid: str, st: State, kind: str, ts_iso: str) -> dict[str, Any]:
        """The ``closed`` alert of an open episode whose subscriber ported out or was
        deactivated (``kind``); its id follows from the episode like every other alert's."""
        cfg = self.config
        policy = AlertPolicy.from_state(st["a"], cfg.resolve_days, cfg.cooldown_days * 86400.0)
        zone = ZONES[policy.level]
        start = policy.start
        policy.close()
        st["a"] = policy.to_state()
        msisdn = (st.get("p") or UNKNOWN_PROFILE).msisdn
        # The operator the number went to, when the ported-numbers registry knows it.
        operator = (self.lookup.ported.get(normalise(msisdn))
                    if msisdn and kind == "port_out" else None)
        if operator == cfg.our_operator:
            operator = None
        if kind == "port_out":
            summary = "ported out" + (f" to {operator}" if operator else "")
        else:
            summary = "deactivated"
        summary += f" on {ts_iso[:10]}: the episode is closed, there is no one left to call"
        reasons = [{"code": "closed", "summary": summary,
                    "figures": {"left": kind, "operator": operator}}]
        alert = self._message(sid, st, "closed", zone, start, 1.0, self._models(st)[0],
                              reasons)
        alert.update(ported_to=operator, ts=ts_iso, schema_version=1,
                     model_version=MODEL_VERSION)
        return alert

    def _member_signal(
        self,
        sid: str,
        st: State,
        day: int,
        ts_iso: str,
        assessment: Assessment,
        models: tuple[SpendDrop, SpendDrop, Forwarding] | None,
    ) -> None:
        operator = None
        for sig in assessment.signals:
            if sig.code == "forwarding_off_net":
                operator = sig.figures.get("operator") or "off-net"
        spend = models[0] if models is not None else self._models(st)[0]
        ratio = None
        value = 30.0 * spend.mean if spend.n else 0.0
        if spend.ready:
            recent, expected, _ = spend.window(self.config.recent_days)
            ratio = round(recent / expected, 2) if expected > 0 else None
        self._emit(sid, st, ts_iso, day, assessment.zone, operator, ratio, value=value)

    def _emit(
        self,
        sid: str,
        st: State,
        ts_iso: str,
        day: int,
        zone: str | None,
        operator: str | None,
        ratio: float | None,
        value: float = 0.0,
        left: str | None = None,
    ) -> None:
        """Append a member signal if it differs from the last one this member emitted."""
        # Value in steps of about 10% (log scale): the group's value at stake follows it.
        key = [zone, operator, None if ratio is None else round(ratio * 10), left,
               round(10 * math.log1p(value))]
        if st.get("g") == key:
            return
        st["g"] = key
        profile = st["p"]
        self.signals.append({
            "group_id": profile.group_id, "subscriber_id": sid, "ts": ts_iso, "day": day,
            "zone": zone, "operator": operator, "spend_ratio": ratio,
            "monthly_value": round(value, 2), "left": left,
            "segment": profile.segment, "account_id": profile.account_id,
            "account_manager": profile.account_manager,
        })
