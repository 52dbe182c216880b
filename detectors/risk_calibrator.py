"""The calibration model: P(the alerted subscriber is leaving) from an alert's features,
learned online from outcomes and exits (:mod:`detectors.calibration`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from river import linear_model, optim, preprocessing

from detectors.alert_features import CALIBRATION_STATE_VERSION, CODES, FEATURES

__all__ = ["RiskCalibrator"]


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

    >>> from detectors.alert_features import alert_features
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
