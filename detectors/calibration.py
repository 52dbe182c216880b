"""Calibration: one global model learns from call-centre outcomes and port-outs.

An alert's ``risk_score`` is a noisy-or of hand-set signal strengths. What an alert is
worth shows afterwards: the call that follows it (``retained``: the alert was right and
the call worked; ``not_at_risk``: a false alarm; ``unreachable``/``no_answer``: nothing
either way) and, in the end, whether the number left (a ``port_out`` or ``deactivation``
after the alert) or stayed for the whole horizon. :class:`RiskCalibrator` learns
P(the alerted subscriber is leaving) from those labels over the alert's own features;
:class:`OutcomeLearner` turns the three streams (alerts, outcomes, exits) into labels in
event time, learns them a day at a time and re-scores each alert with the model as it
was when the alert fired. Zones follow the calibrated score (white, silence, stays white).

Pure and event-time, like the engine: no I/O, the state is plain versioned data.
``docs/outcomes.md`` says how the stream shares the one model across partitions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, MutableMapping
from typing import Any

from detectors.alert_features import (
    CALIBRATION_STATE_VERSION,
    LABELS,
    OUTCOMES,
    alert_features,
    leading_reason,
    outcome_label,
    zone_of,
)
from detectors.days import Clock, parse_ts
from detectors.risk_calibrator import RiskCalibrator

__all__ = [
    "CALIBRATION_STATE_VERSION",
    "LABELS",
    "OUTCOMES",
    "OutcomeLearner",
    "RiskCalibrator",
    "alert_features",
    "leading_reason",
    "learn_stream",
    "outcome_label",
    "zone_of",
]

DAY_S = 86400.0
META_KEY = "__calibration__"
MODEL_KEY = "__calibration_model__"
# Label sources, in the order they win a tie at the same instant.
BY_OUTCOME, BY_EXIT, BY_HORIZON = 0, 1, 2


class OutcomeLearner:
    """Labels alerts from outcomes, exits and the horizon; learns a day at a time.

    Every input is in event time. ``alert()`` scores a subscriber alert with the model
    that has learned every label dated before the start of day ``D - lag_days`` (the
    alert on day ``D``) and keeps the alert's features until it gets a label:

    * an outcome (:data:`LABELS`; ``unreachable``/``no_answer`` give none),
    * a ``port_out``/``deactivation`` of the subscriber after the alert (positive),
    * nothing for ``horizon_days`` (negative, dated at the horizon).

    An alert takes its earliest label (ties: outcome, exit, horizon). Labels are learned
    when their day is *sealed* (once an input of day ``d + 1 + lag_days`` comes), in
    (time, alert id) order, so the order in which the inputs of one day interleave cannot
    change the model. A label for a day already sealed is late: counted (``late_labels``)
    and learned with the next day. Every input moves the clock, outcomes too: an outcome
    of day ``D`` finds its alert labelled or forgotten as sealing day ``D - 1 - lag_days``
    left it, whatever came before it.

    Parameters
    ----------
    calibrator
        The model (a fresh :class:`RiskCalibrator` if None; ignored when ``store`` holds a
        saved learner).
    store
        Where the learner keeps its state (a dict, or a table on a single partition):
        ``"__calibration__"`` (the clock, counters), ``"__calibration_model__"`` (the
        model, written when a day's labels change it), ``"a:<alert_id>"`` (a pending
        alert), ``"u:<subscriber_id>"`` (a subscriber's pending alerts) and
        ``"b:<day>"`` (alerts with a label candidate that day).
    horizon_days
        An alert with no label this long after it is a false alarm.
    lag_days
        Extra days a label waits before it is used: the slack the stream has for late
        outcomes and slow partitions (``docs/outcomes.md``).
    green, yellow, red
        Zone thresholds for the calibrated score, a probability: red is 85% likely to be
        leaving (chosen on seeds 1-20, ``docs/outcomes.md``; the engine's 0.7 is for its
        noisy-or score, and most alerts are right, so 0.7 would make most of them red).

    Examples
    --------
    Two kinds of alert, one right 9 times in 10, the other half the time; a call centre
    reaches a third of the subscribers a day later, and those at risk port out 20 days
    after their alert:

    >>> import random
    >>> from datetime import datetime, timedelta, timezone
    >>> rng = random.Random(12345)
    >>> t0 = datetime(2026, 1, 5, 10, tzinfo=timezone(timedelta(hours=8)))
    >>> items = []
    >>> for i in range(600):
    ...     ts = t0 + timedelta(hours=4 * i)
    ...     code = rng.choice(["usage_drop", "forwarding_off_net"])
    ...     right = rng.random() < (0.5 if code == "usage_drop" else 0.9)
    ...     items.append((ts, "alert", {"alert_id": f"a{i:04d}", "kind": "subscriber",
    ...         "status": "open", "subscriber_id": f"s{i}", "zone": "red",
    ...         "risk_score": 0.75, "segment": "consumer", "tier": None,
    ...         "value_at_risk": 50.0, "reasons": [{"code": code, "summary": "-"}],
    ...         "ts": ts.isoformat()}))
    ...     if rng.random() < 0.33:
    ...         when = ts + timedelta(days=1)
    ...         items.append((when, "outcome", {"alert_id": f"a{i:04d}",
    ...             "subscriber_id": f"s{i}", "ts": when.isoformat(),
    ...             "outcome": "retained" if right else "not_at_risk"}))
    ...     if right:
    ...         when = ts + timedelta(days=20)
    ...         items.append((when, "exit", {"subscriber_id": f"s{i}",
    ...                                      "ts": when.isoformat()}))
    >>> items.sort(key=lambda item: item[0])
    >>> learner = OutcomeLearner(RiskCalibrator(warmup=30, min_class=5))
    >>> scored = learn_stream(learner, [(kind, msg) for _, kind, msg in items])
    >>> late = scored[-150:]
    >>> sorted(Counter((a["reasons"][0]["code"], a["zone"]) for a in late).items())
    [(('forwarding_off_net', 'red'), 66), (('usage_drop', 'yellow'), 84)]
    >>> scored[-1]["raw_zone"], scored[-1]["raw_risk_score"], scored[-1]["calibration_version"]
    ('red', 0.75, 'newton-1/441@2026-04-13')
    >>> [(k[7:], v) for k, v in sorted(learner.counters.items()) if k.startswith("labels_")]
    [('exit_pos', 264), ('horizon_neg', 71), ('outcome_neg', 64), ('outcome_pos', 136)]
    >>> restored = OutcomeLearner(store=learner.store)
    >>> restored.to_state() == learner.to_state()
    True

    """

    def __init__(
        self,
        calibrator: RiskCalibrator | None = None,
        store: MutableMapping[str, Any] | None = None,
        *,
        horizon_days: int = 60,
        lag_days: int = 1,
        tz_offset_hours: float = 8.0,
        green: float = 0.2,
        yellow: float = 0.45,
        red: float = 0.85,
    ):
        self.store: MutableMapping[str, Any] = store if store is not None else {}
        self.horizon_s = horizon_days * DAY_S
        self.lag_days = lag_days
        self.clock = Clock(tz_offset_hours, 0.0)
        self.thresholds = (green, yellow, red)
        saved = self.store.get(META_KEY)
        if saved is not None:
            self.calibrator = RiskCalibrator.from_state(self.store[MODEL_KEY])
            self.sealed: int | None = saved["sealed"]
            self.counters: Counter[str] = Counter(saved["counters"])
        else:
            self.calibrator = calibrator if calibrator is not None else RiskCalibrator()
            self.sealed = None
            self.counters = Counter()

    # -- inputs ---------------------------------------------------------------------------
    def alert(self, alert: dict[str, Any]) -> dict[str, Any]:
        """Score a subscriber alert (a copy, calibrated) and keep it until it is labelled.

        Group alerts and resolutions come back unchanged. Once the model is warm the copy
        has the calibrated ``risk_score`` and ``zone`` and the engine's as
        ``raw_risk_score``/``raw_zone``; before, the engine's score and zone. Always
        ``calibration_version`` (model, labels learned, last day learned).
        """
        if (alert.get("kind", "subscriber") != "subscriber"
                or alert["status"] in ("resolved", "closed")):
            return alert
        ts = parse_ts(alert["ts"])
        self.advance(ts)
        x = alert_features(alert)
        cal = self.calibrator
        raw = float(alert["risk_score"])
        out = dict(alert)
        if cal.warm:
            score = cal.score(x, raw)
            out["raw_risk_score"], out["raw_zone"] = raw, alert["zone"]
            out["risk_score"] = score
            if alert["zone"] != "white":  # silence stays white: no score says otherwise
                out["zone"] = zone_of(score, *self.thresholds)
        out["calibration_version"] = self.version
        self.counters["alerts_calibrated" if cal.warm else "alerts_raw"] += 1
        aid, sid = str(alert["alert_id"]), str(alert["subscriber_id"])
        if self.knows(aid):
            self.counters["alerts_duplicate"] += 1  # a redelivery: keep the first
        else:
            # "m": segment, zone published and leading reason, kept for the outcome
            # metrics (also in the tombstone: a call may be reported after the port-out
            # labelled it).
            self.store[f"a:{aid}"] = {"s": sid, "t": ts, "x": x, "c": [],
                                      "m": [str(alert.get("segment") or "unknown"),
                                            out["zone"], leading_reason(alert)]}
            self.store[f"u:{sid}"] = [*self.store.get(f"u:{sid}", []), aid]
            self._index(self.clock.day(ts + self.horizon_s), aid)
            self.counters["alerts_pending"] += 1
        self._save()  # every input moves the counters, which are state
        return out

    def outcome(self, outcome: dict[str, Any]) -> str | None:
        """Take a call-centre outcome (validated against the contract).

        Returns None when it was used (or says nothing: ``unreachable``, ``no_answer``),
        else why it is a dead letter: ``"unknown_alert"`` (no alert of that id in the last
        ``horizon_days``) or ``"subscriber_mismatch"``. An outcome for an alert already
        labelled (a ``churned`` report after the port-out) is counted, not learned.
        """
        reason = self._outcome(outcome)
        self._save()  # every input moves the counters, which are state
        return reason

    def _outcome(self, outcome: dict[str, Any]) -> str | None:
        # The outcome's time seals the days before it, as an alert's would: whether its
        # alert is labelled or past its horizon then depends on the outcome alone, not on
        # which other subscribers' inputs came first (the stream's partitions differ there).
        self.advance(parse_ts(outcome["ts"]))
        kind = str(outcome["outcome"])
        self.counters[f"outcome_{kind}"] += 1
        rec = self.store.get(f"a:{outcome['alert_id']}")
        if rec is None:
            self.counters["outcomes_unknown_alert"] += 1
            return "unknown_alert"
        if rec["s"] != outcome["subscriber_id"]:
            self.counters["outcomes_subscriber_mismatch"] += 1
            return "subscriber_mismatch"
        if "done" in rec:
            self.counters["outcomes_after_label"] += 1  # e.g. "churned" after the port-out
            return None
        label = LABELS[kind]
        if label is not None:
            self._candidate(str(outcome["alert_id"]), parse_ts(outcome["ts"]), BY_OUTCOME, label)
        return None

    def knows(self, alert_id: str) -> bool:
        """Has the alert ``alert_id`` been taken (and not yet forgotten past its horizon)?"""
        return f"a:{alert_id}" in self.store

    def exit(self, subscriber_id: str, ts: str | float) -> None:
        """A ``port_out`` or ``deactivation``: the subscriber's pending alerts were right."""
        when = parse_ts(ts) if isinstance(ts, str) else float(ts)
        self.advance(when)
        for aid in self.store.get(f"u:{subscriber_id}", ()):
            rec = self.store.get(f"a:{aid}")
            if rec is None or "done" in rec:
                continue
            if rec["t"] <= when < rec["t"] + self.horizon_s:
                self._candidate(aid, when, BY_EXIT, True)
        self.counters["exits"] += 1
        self._save()

    def advance(self, ts: float) -> None:
        """Move event time to ``ts``: seal (learn) every day before ``day(ts) - lag_days``."""
        target = self.clock.day(ts) - 1 - self.lag_days
        if self.sealed is None:
            self.sealed = target
            self._save(model=True)
            return
        if target <= self.sealed:
            return
        learned = self.calibrator.n
        while self.sealed < target:
            self.sealed += 1
            self._seal(self.sealed)
        self._save(model=self.calibrator.n != learned)

    # -- state ----------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """``calibration_version`` of alerts scored now: model, labels, last day learned."""
        day = self.clock.date(self.sealed) if self.sealed is not None else "none"
        return f"{self.calibrator.version}@{day}"

    def to_state(self) -> dict[str, Any]:
        """The learner's own state (the model, the clock, counters)."""
        return {"v": CALIBRATION_STATE_VERSION, "sealed": self.sealed,
                "model": self.calibrator.to_state(), "counters": dict(self.counters)}

    def _save(self, model: bool = False) -> None:
        # The clock and counters change with every input; the model only when a day is
        # sealed with labels in it, so it has a key of its own, written then.
        self.store[META_KEY] = {"v": CALIBRATION_STATE_VERSION, "sealed": self.sealed,
                                "counters": dict(self.counters)}
        if model:
            self.store[MODEL_KEY] = self.calibrator.to_state()

    # -- labels ---------------------------------------------------------------------------
    def _index(self, day: int, aid: str) -> None:
        # Sorted: the stream's partitions interleave a day's inputs as they come, and the
        # state must be replay's whatever the interleaving.
        key = f"b:{day}"
        self.store[key] = sorted({*self.store.get(key, []), aid})

    def _candidate(self, aid: str, ts: float, source: int, label: bool) -> None:
        day = self.clock.day(ts)
        if self.sealed is not None and day <= self.sealed:
            self.counters["late_labels"] += 1
            day = self.sealed + 1
        rec = self.store[f"a:{aid}"]
        rec["c"] = [*rec["c"], [ts, source, label, day]]
        self.store[f"a:{aid}"] = rec  # reassigned: a table must see the change
        self._index(day, aid)

    def _seal(self, day: int) -> None:
        ids = self.store.pop(f"b:{day}", None)
        if not ids:
            return
        examples: list[tuple[float, str, dict[str, float], bool, int]] = []
        for aid in sorted(set(ids)):
            rec = self.store.get(f"a:{aid}")
            expiry = rec["t"] + self.horizon_s if rec is not None else 0.0
            expires = self.clock.day(expiry) == day
            if rec is None or "done" in rec:
                if rec is not None and expires:
                    del self.store[f"a:{aid}"]  # the tombstone has served its horizon
                continue
            found = [(c[0], c[1], c[2]) for c in rec["c"] if c[3] == day]
            if expires:
                found.append((expiry, BY_HORIZON, False))
            if not found:
                continue
            ts, source, label = min(found)
            examples.append((ts, aid, rec["x"], label, source))
            if expires:
                del self.store[f"a:{aid}"]
            else:
                # A tombstone until the horizon: a later outcome for it is no dead letter.
                self.store[f"a:{aid}"] = {"s": rec["s"], "t": rec["t"], "m": rec.get("m"),
                                          "done": 1}
            left = [a for a in self.store.get(f"u:{rec['s']}", []) if a != aid]
            if left:
                self.store[f"u:{rec['s']}"] = left
            else:
                self.store.pop(f"u:{rec['s']}", None)
        examples.sort(key=lambda e: (e[0], e[1]))
        names = ("outcome", "exit", "horizon")
        for _, _, x, label, source in examples:
            self.calibrator.learn_one(x, label)
            self.counters[f"labels_{names[source]}_{'pos' if label else 'neg'}"] += 1
            self.counters["alerts_pending"] -= 1


def learn_stream(
    learner: OutcomeLearner, items: Iterable[tuple[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Drive a learner over ``("alert" | "outcome" | "exit", message)`` in event-time order.

    Returns the alerts as scored (calibrated copies for subscriber alerts). An exit is a
    billing event (``port_out`` or ``deactivation``).
    """
    out: list[dict[str, Any]] = []
    for kind, message in items:
        if kind == "alert":
            out.append(learner.alert(message))
        elif kind == "outcome":
            learner.outcome(message)
        else:
            learner.exit(str(message["subscriber_id"]), str(message["ts"]))
    return out
