"""Probability calibration fitted on the validation split, stored as plain JSON.

Two methods: isotonic regression (a monotone step function, kept as its knots and
applied by linear interpolation) and Platt scaling (a logistic curve on the model's
log-odds). Neither needs pickle: :meth:`Calibrator.to_json` holds every number that
:meth:`Calibrator.apply` uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("isotonic", "platt", "none")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass
class Calibrator:
    method: str = "none"
    # isotonic: knots x (raw probability) -> y (calibrated probability)
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    # platt: p = 1 / (1 + exp(-(a * logit(raw) + b)))
    a: float = 1.0
    b: float = 0.0

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        if self.method == "isotonic":
            return np.interp(p, np.asarray(self.x), np.asarray(self.y))
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.a * _logit(p) + self.b)))
        return p

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.method == "isotonic":
            out.update(x=[float(v) for v in self.x], y=[float(v) for v in self.y])
        elif self.method == "platt":
            out.update(a=float(self.a), b=float(self.b))
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibrator:
        method = str(d.get("method", "none"))
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")
        return cls(
            method=method,
            x=list(d.get("x", [])),
            y=list(d.get("y", [])),
            a=float(d.get("a", 1.0)),
            b=float(d.get("b", 0.0)),
        )


def fit(method: str, p: np.ndarray, y: np.ndarray) -> Calibrator:
    """Fit a calibrator mapping raw probabilities ``p`` to observed rates of ``y``."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    if method == "none" or len(p) == 0:
        return Calibrator("none")
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
        iso.fit(p, y)
        return Calibrator(
            "isotonic",
            x=[float(v) for v in iso.X_thresholds_],
            y=[float(v) for v in iso.y_thresholds_],
        )
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
    lr.fit(_logit(p)[:, None], y.astype(int))
    return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def reliability(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted against observed rate over equal-count bins (the reliability curve)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    order = np.argsort(p, kind="mergesort")
    rows = []
    for part in np.array_split(order, min(n_bins, max(len(p), 1))):
        if len(part):
            rows.append(
                {
                    "n": float(len(part)),
                    "predicted": float(p[part].mean()),
                    "observed": float(y[part].mean()),
                }
            )
    return rows
