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

import math
from collections import Counter
from collections.abc import Iterable, MutableMapping
from typing import Any

import numpy as np
from river import linear_model, optim, preprocessing

from detectors.days import Clock, parse_ts

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
ZONES = ("blue", "green", "yellow", "red", "white")
DAY_S = 86400.0
META_KEY = "__calibration__"
MODEL_KEY = "__calibration_model__"
# Label sources, in the order they win a tie at the same instant.
BY_OUTCOME, BY_EXIT, BY_HORIZON = 0, 1, 2


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


class RiskCalibrator:
    """One global online model of P(alert right | alert features), as plain data.

    Parameters
    ----------
    model
        ``"newton"`` (the default, measured best: ``docs/outcomes.md``): see below.
        ``"logistic"``: River ``preprocessing.StandardScaler() |
        linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=l2)``.
        ``"bins"``: a Beta-binomial rate per (leading reason code, raw zone) cell, shrunk
        to the raw score by ``prior`` pseudo-labels.
        ``"offset"``: a logistic regression on the standardised features that learns a
        correction to the raw score's log-odds (it starts at the raw score, so it does not
        need many labels to be no worse than it); SGD with rate ``lr`` and penalty ``l2``.
        ``"newton"``: an L2-penalised (``l2``) logistic regression refitted exactly
        (Newton's method) on the last ``window`` labels whenever it is asked for a score
        after new labels: few labels go much further than with one SGD pass.
    lr, l2
        Learning rate and L2 penalty of the logistic model.
    prior
        Pseudo-labels at the raw score in each cell of the ``bins`` model.
    warmup
        Labels needed (and ``min_class`` of each class) before scores are calibrated;
        until then :meth:`score` returns the raw score.
    min_class
        Labels of each class needed before scores are calibrated.
    window
        Labels the ``newton`` model keeps and refits on (the oldest go first).

    Examples
    --------
    Alerts whose leading reason is a usage drop turn out right half the time, forwarding
    ones 9 times in 10, which the raw scores (all 0.72) do not say:

    >>> import random
    >>> rng = random.Random(12345)
    >>> cal = RiskCalibrator(warmup=40, min_class=5)
    >>> def alert(code):
    ...     return {"risk_score": 0.72, "zone": "red", "segment": "consumer", "tier": None,
    ...             "value_at_risk": 60.0, "reasons": [{"code": code, "summary": "-"}]}
    >>> for _ in range(1000):
    ...     code = rng.choice(["usage_drop", "forwarding_off_net"])
    ...     right = rng.random() < (0.5 if code == "usage_drop" else 0.9)
    ...     cal.learn_one(alert_features(alert(code)), right)
    >>> cal.warm, cal.n, cal.version
    (True, 1000, 'newton-1/1000')
    >>> round(cal.score(alert_features(alert("usage_drop")), 0.72), 2)
    0.49
    >>> round(cal.score(alert_features(alert("forwarding_off_net")), 0.72), 2)
    0.87
    >>> RiskCalibrator.from_state(cal.to_state()).to_state() == cal.to_state()
    True

    """

    def __init__(
        self,
        model: str = "newton",
        lr: float = 0.05,
        l2: float = 10.0,
        prior: float = 4.0,
        warmup: int = 40,
        min_class: int = 5,
        window: int = 5000,
    ):
        if model not in ("logistic", "bins", "offset", "newton"):
            raise ValueError(f"unknown calibration model {model!r}")
        self.model = model
        self.lr = lr
        self.l2 = l2
        self.prior = prior
        self.warmup = warmup
        self.min_class = min_class
        self.window = window
        self.n = 0
        self.n_pos = 0
        # River's estimators are untyped: held as Any so strict mypy checks the rest.
        self._scaler: Any = preprocessing.StandardScaler()
        self._logistic: Any = linear_model.LogisticRegression(
            optimizer=optim.SGD(lr), l2=l2, intercept_lr=lr)
        self._bins: dict[str, list[float]] = {}  # cell -> [positives, labels, raw sum]
        # offset: feature -> [count, mean, M2] (Welford), weights, intercept.
        self._stats: dict[str, list[float]] = {}
        self._w: dict[str, float] = {}
        self._b = 0.0
        # newton: the labelled examples (features in sorted key order, label), and the fit
        # (None: to be refitted before the next score).
        self._keys: list[str] = []
        self._examples: list[list[float]] = []
        self._fit: dict[str, list[float]] | None = None

    @property
    def warm(self) -> bool:
        """Enough labels of both classes to calibrate."""
        return (self.n >= self.warmup and self.n_pos >= self.min_class
                and self.n - self.n_pos >= self.min_class)

    @property
    def version(self) -> str:
        """Model kind, state version and labels learned: ``"logistic-1/400"``."""
        return f"{self.model}-{CALIBRATION_STATE_VERSION}/{self.n}"

    @staticmethod
    def _cell(x: dict[str, float]) -> str:
        lead = max(CODES, key=lambda c: (x[f"strength_{c}"], -CODES.index(c)))
        lead = lead if x[f"strength_{lead}"] > 0 else "none"
        zone = "white" if x["zone_white"] else "red" if x["zone_red"] else "yellow"
        return f"{lead}|{zone}"

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        """Learn one labelled alert (``y``: the subscriber was at risk)."""
        self.n += 1
        self.n_pos += int(y)
        if self.model == "bins":
            cell = self._bins.setdefault(self._cell(x), [0.0, 0.0, 0.0])
            cell[0] += float(y)
            cell[1] += 1.0
            cell[2] += x["score"]
            return
        if self.model == "newton":
            if not self._keys:
                self._keys = sorted(x)
            self._examples.append([*(x[k] for k in self._keys), float(y)])
            if len(self._examples) > self.window:
                del self._examples[0]
            self._fit = None
            return
        if self.model == "offset":
            for k, v in x.items():
                st = self._stats.setdefault(k, [0.0, 0.0, 0.0])
                st[0] += 1.0
                delta = v - st[1]
                st[1] += delta / st[0]
                st[2] += delta * (v - st[1])
            z = self._standard(x)
            g = self._offset_proba(x, z) - float(y)  # d(log loss)/d(logit)
            self._b -= self.lr * g
            for k, v in z.items():
                w = self._w.get(k, 0.0)
                self._w[k] = w - self.lr * (g * v + self.l2 * w)
            return
        # River's pipeline order: the scaler learns the example, then the model learns it
        # scaled (what ``Pipeline.learn_one`` does).
        self._scaler.learn_one(x)
        self._logistic.learn_one(self._scaler.transform_one(x), y)

    def predict_one(self, x: dict[str, float]) -> float:
        """The model's probability, warm or not."""
        if self.model == "bins":
            cell = self._bins.get(self._cell(x))
            pos, n = (cell[0], cell[1]) if cell else (0.0, 0.0)
            return (pos + self.prior * x["score"]) / (n + self.prior)
        if self.model == "offset":
            return self._offset_proba(x, self._standard(x))
        if self.model == "newton":
            if not self._examples:
                return x["score"]
            if self._fit is None:
                self._fit = self._newton()
            fit = self._fit
            logit = fit["w"][0] + sum(
                w * (x[k] - mu) / sd
                for k, w, mu, sd in zip(self._keys, fit["w"][1:], fit["mu"], fit["sd"],
                                        strict=True))
            return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, logit))))
        proba = self._logistic.predict_proba_one(self._scaler.transform_one(x))
        return float(proba.get(True, 0.0))

    def _newton(self) -> dict[str, list[float]]:
        """Fit the penalised logistic regression on the kept examples (Newton, exact)."""
        data = np.array(self._examples, dtype=float)
        X, y = data[:, :-1], data[:, -1]
        mu, sd = X.mean(axis=0), X.std(axis=0)
        sd[sd == 0] = 1.0
        Z = np.hstack([np.ones((len(X), 1)), (X - mu) / sd])
        penalty = np.full(Z.shape[1], self.l2)
        penalty[0] = 0.0  # the intercept is not shrunk
        w = np.zeros(Z.shape[1])
        for _ in range(25):
            p = 1.0 / (1.0 + np.exp(-np.clip(Z @ w, -30, 30)))
            grad = Z.T @ (p - y) + penalty * w
            hess = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hess, grad)
            w -= step
            if float(np.abs(step).max()) < 1e-8:
                break
        return {"w": [float(v) for v in w], "mu": [float(v) for v in mu],
                "sd": [float(v) for v in sd]}

    def _standard(self, x: dict[str, float]) -> dict[str, float]:
        z = {}
        for k, v in x.items():
            st = self._stats.get(k)
            if st is not None and st[0] > 1 and st[2] > 0:
                z[k] = (v - st[1]) / math.sqrt(st[2] / st[0])
        return z

    def _offset_proba(self, x: dict[str, float], z: dict[str, float]) -> float:
        raw = min(0.99, max(0.01, x["score"]))
        logit = math.log(raw / (1.0 - raw)) + self._b
        logit += sum(self._w.get(k, 0.0) * v for k, v in z.items())
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, logit))))

    def score(self, x: dict[str, float], raw: float) -> float:
        """The calibrated score (rounded to 3 places), or ``raw`` while not warm."""
        return round(self.predict_one(x), 3) if self.warm else raw

    def to_state(self) -> dict[str, Any]:
        """Plain data: counts, settings, scaler statistics, weights, bins."""
        sc, lg = self._scaler, self._logistic
        return {
            "v": CALIBRATION_STATE_VERSION,
            "model": self.model, "lr": self.lr, "l2": self.l2, "prior": self.prior,
            "warmup": self.warmup, "min_class": self.min_class,
            "n": self.n, "n_pos": self.n_pos,
            "scaler": {"counts": dict(sc.counts), "means": dict(sc.means),
                       "vars": dict(sc.vars)},
            "weights": dict(lg._weights), "intercept": lg.intercept,
            "iterations": lg.optimizer.n_iterations,
            "bins": {k: list(v) for k, v in self._bins.items()},
            "offset": {"stats": {k: list(v) for k, v in self._stats.items()},
                       "weights": dict(self._w), "intercept": self._b},
            "newton": {"window": self.window, "keys": list(self._keys),
                       "examples": [list(e) for e in self._examples]},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RiskCalibrator:
        """Rebuild a calibrator from :meth:`to_state` (exactly: it carries on the same)."""
        if state.get("v") != CALIBRATION_STATE_VERSION:
            raise ValueError(f"calibration state version {state.get('v')!r} unknown")
        cal = cls(state["model"], state["lr"], state["l2"], state["prior"], state["warmup"],
                  state["min_class"])
        cal.n, cal.n_pos = int(state["n"]), int(state["n_pos"])
        sc = cal._scaler
        sc.counts.update({k: int(v) for k, v in state["scaler"]["counts"].items()})
        sc.means.update({k: float(v) for k, v in state["scaler"]["means"].items()})
        sc.vars.update({k: float(v) for k, v in state["scaler"]["vars"].items()})
        lg = cal._logistic
        for k, v in state["weights"].items():
            lg._weights[k] = float(v)
        lg.intercept = float(state["intercept"])
        lg.optimizer.n_iterations = int(state["iterations"])
        cal._bins = {k: [float(f) for f in v] for k, v in state["bins"].items()}
        off = state["offset"]
        cal._stats = {k: [float(f) for f in v] for k, v in off["stats"].items()}
        cal._w = {k: float(v) for k, v in off["weights"].items()}
        cal._b = float(off["intercept"])
        newton = state["newton"]
        cal.window = int(newton["window"])
        # Examples kept by an earlier vocabulary lose the features since dropped
        # (``code_group_context``): the model is refitted on the features alerts have now.
        keep = [i for i, k in enumerate(newton["keys"]) if k in FEATURES]
        cal._keys = [str(newton["keys"][i]) for i in keep]
        cal._examples = [[float(e[i]) for i in keep] + [float(e[-1])]
                         for e in newton["examples"]]
        return cal


class OutcomeLearner:
    """Labels alerts from outcomes, exits and the horizon; learns a day at a time.

    Every input is in event time. ``alert()`` scores a subscriber alert with the model
    that has learned every label dated before the start of day ``D - lag_days`` (the
    alert on day ``D``) and keeps the alert's features until it gets a label:

    * an outcome (:data:`LABELS`; ``unreachable``/``no_answer`` give none),
    * a ``port_out``/``deactivation`` of the subscriber after the alert (positive),
    * nothing for ``horizon_days`` (negative, dated at the horizon).

    An alert takes its earliest label (ties: outcome, exit, horizon). Labels are learned
    when their day is *sealed* (once an alert or an exit of day ``d + 1 + lag_days``
    comes), in (time, alert id) order, so the order in which the inputs of one day
    interleave cannot change the model. A label for a day already sealed is late: counted
    (``late_labels``) and learned with the next day. Outcomes never move the clock.

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
        key = f"a:{aid}"
        if key in self.store:
            self.counters["alerts_duplicate"] += 1  # a redelivery: keep the first
            return out
        # "m": segment, zone published and leading reason, kept for the outcome metrics
        # (also in the tombstone: a call may be reported after the port-out labelled it).
        self.store[key] = {"s": sid, "t": ts, "x": x, "c": [],
                           "m": [str(alert.get("segment") or "unknown"), out["zone"],
                                 leading_reason(alert)]}
        self.store[f"u:{sid}"] = [*self.store.get(f"u:{sid}", []), aid]
        self._index(self.clock.day(ts + self.horizon_s), aid)
        self.counters["alerts_pending"] += 1
        self._save()
        return out

    def outcome(self, outcome: dict[str, Any]) -> str | None:
        """Take a call-centre outcome (validated against the contract).

        Returns None when it was used (or says nothing: ``unreachable``, ``no_answer``),
        else why it is a dead letter: ``"unknown_alert"`` (no alert of that id in the last
        ``horizon_days``) or ``"subscriber_mismatch"``. An outcome for an alert already
        labelled (a ``churned`` report after the port-out) is counted, not learned.
        """
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
            self._save()
            return None
        label = LABELS[kind]
        if label is not None:
            self._candidate(str(outcome["alert_id"]), parse_ts(outcome["ts"]), BY_OUTCOME, label)
        self._save()
        return None

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
        key = f"b:{day}"
        self.store[key] = [*self.store.get(key, []), aid]

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
