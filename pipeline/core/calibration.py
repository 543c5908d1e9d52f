"""Probability calibration fitted on the validation split, stored as plain JSON.

Methods:

* ``isotonic``: a monotone step function fitted on equal-count groups of at least
  :func:`min_bin_size` validation rows (so no level rests on a handful of rows), each
  level a smoothed rate ``(closures + 0.5) / (rows + 1)``; kept as one knot per level,
  at the mean raw score of that level's rows, and applied by linear interpolation
  between the knots, so the map is strictly increasing and two rows with different raw
  scores never share a probability (a flat step would tie whole tails of rows, and the
  riskiest rows would then be ranked by row order). Beyond the end knots the map keeps
  a slope of :data:`TAIL_SLOPE` of the room left to 0 or 1, so the tails stay ordered
  while moving the probability by at most that share;
* ``platt``: a logistic curve on the model's log-odds;
* ``beta``: a logistic regression on ``[ln p, -ln(1 - p)]`` (beta calibration), with
  both slopes kept non-negative so the map stays monotone;
* ``auto``: the one of the three with the lowest validation log-loss, each measured
  out of fold (:data:`CV_FOLDS` folds of the validation rows) and then refitted on all
  of them; the fitted calibrator records its method and every candidate's log-loss;
* ``none``: the identity.

No method claims certainty: every calibrated probability lies in
``[P_MIN, 1 - P_MIN]``. None needs pickle: :meth:`Calibrator.to_json` holds every
number that :meth:`Calibrator.apply` uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

#: What ``fit`` accepts; a fitted calibrator is one of :data:`FITTED`.
METHODS = ("isotonic", "platt", "beta", "auto", "none")
FITTED = ("isotonic", "platt", "beta", "none")
AUTO_CANDIDATES = ("isotonic", "platt", "beta")
CV_FOLDS = 5
#: Calibrated probabilities are kept inside [P_MIN, 1 - P_MIN].
P_MIN = 1e-5
_EPS = 1e-6
MIN_BIN = 50  # fewest validation rows behind one isotonic level
#: Beyond the isotonic end knots the probability moves by at most this share of the
#: room left to 0 (below the first knot) or 1 (above the last), linearly in the raw
#: score: enough to keep the tail rows in the raw order, too little to matter as a rate.
TAIL_SLOPE = 1e-3


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _beta_features(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.column_stack([np.log(p), -np.log1p(-p)])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))


def min_bin_size(n: int) -> int:
    """Fewest validation rows behind one isotonic level: 50, or n / 200 when larger."""
    return max(MIN_BIN, int(n) // 200)


@dataclass
class Calibrator:
    method: str = "none"
    # isotonic: knots x (raw probability) -> y (calibrated probability)
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    # platt: p = sigmoid(a * logit(raw) + b)
    # beta:  p = sigmoid(a * ln(raw) - b * ln(1 - raw) + c)
    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    # auto: the candidates' out-of-fold validation log-loss (empty otherwise)
    selection: dict[str, float] = field(default_factory=dict)

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        if self.method == "isotonic":
            out = _isotonic_map(p, np.asarray(self.x), np.asarray(self.y))
        elif self.method == "platt":
            out = _sigmoid(self.a * _logit(p) + self.b)
        elif self.method == "beta":
            f = _beta_features(p.ravel())
            out = _sigmoid(self.a * f[:, 0] + self.b * f[:, 1] + self.c).reshape(p.shape)
        else:
            return p
        return np.clip(out, P_MIN, 1 - P_MIN)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.method == "isotonic":
            out.update(x=[float(v) for v in self.x], y=[float(v) for v in self.y])
        elif self.method == "platt":
            out.update(a=float(self.a), b=float(self.b))
        elif self.method == "beta":
            out.update(a=float(self.a), b=float(self.b), c=float(self.c))
        if self.selection:
            out["selection"] = {k: float(v) for k, v in self.selection.items()}
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibrator:
        method = str(d.get("method", "none"))
        if method not in FITTED:
            raise ValueError(
                f"unknown fitted calibration method {method!r}; known: {', '.join(FITTED)}"
            )
        x, y = list(d.get("x", [])), list(d.get("y", []))
        if method == "isotonic" and (len(x) != len(y) or not x):
            raise ValueError(
                f"isotonic calibration needs knots x and y of one length > 0, got {len(x)} and {len(y)}"
            )
        return cls(
            method=method,
            x=[float(v) for v in x],
            y=[float(v) for v in y],
            a=float(d.get("a", 1.0)),
            b=float(d.get("b", 0.0)),
            c=float(d.get("c", 0.0)),
            selection={str(k): float(v) for k, v in dict(d.get("selection", {})).items()},
        )


def _isotonic_map(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Linear interpolation between the knots, with a :data:`TAIL_SLOPE` slope beyond them."""
    shape = np.shape(p)
    p = np.atleast_1d(p)
    out = np.interp(p, x, y)
    lo, hi = p < x[0], p > x[-1]
    if lo.any():  # from y[0] at x[0] down to y[0] * (1 - TAIL_SLOPE) at raw 0
        out[lo] = y[0] * (1.0 - TAIL_SLOPE * (x[0] - p[lo]) / max(x[0], _EPS))
    if hi.any():  # from y[-1] at x[-1] up to y[-1] + TAIL_SLOPE * (1 - y[-1]) at raw 1
        out[hi] = y[-1] + (1.0 - y[-1]) * TAIL_SLOPE * (p[hi] - x[-1]) / max(1.0 - x[-1], _EPS)
    return out.reshape(shape)


def _fit_isotonic(p: np.ndarray, y: np.ndarray) -> Calibrator:
    """Isotonic regression on equal-count groups of at least ``min_bin_size`` rows,
    kept as one knot per level (its rows' mean raw score and smoothed rate)."""
    order = np.argsort(p, kind="mergesort")
    n_groups = max(1, len(p) // min_bin_size(len(p)))
    groups = np.array_split(order, n_groups)
    gs = np.array([p[g].sum() for g in groups])
    gn = np.array([len(g) for g in groups], dtype=float)
    gk = np.array([y[g].sum() for g in groups])
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip")
    level = iso.fit_transform(np.arange(len(groups)), gk / gn, sample_weight=gn)
    # pool the groups PAV joined: one knot per level, its rate smoothed over all its rows
    xs: list[float] = []
    ys: list[float] = []
    start = 0
    for end in [*np.flatnonzero(np.diff(level) != 0) + 1, len(groups)]:
        n = gn[start:end].sum()
        kx = float(gs[start:end].sum() / n)
        ky = float((gk[start:end].sum() + 0.5) / (n + 1.0))
        if xs and kx <= xs[-1]:  # equal raw centres (a run of tied scores): one knot
            ys[-1] = max(ys[-1], ky)
        elif xs and ky <= ys[-1]:
            # the smoothing can bring a level down to its neighbour's: keep it just above,
            # so the map stays strictly increasing
            xs.append(kx)
            ys.append(ys[-1] + 1e-9)
        else:
            xs.append(kx)
            ys.append(ky)
        start = end
    return Calibrator("isotonic", x=xs, y=ys)


def _fit_platt(p: np.ndarray, y: np.ndarray) -> Calibrator:
    lr = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
    lr.fit(_logit(p)[:, None], y.astype(int))
    return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))


def _fit_beta(p: np.ndarray, y: np.ndarray) -> Calibrator:
    """Beta calibration; a negative slope is dropped and the other refitted alone."""
    f = _beta_features(p)
    coef = np.zeros(2)
    use = [0, 1]
    for _ in range(2):
        lr = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
        lr.fit(f[:, use], y.astype(int))
        coef[:] = 0.0
        coef[use] = lr.coef_[0]
        intercept = float(lr.intercept_[0])
        if (coef[use] >= 0).all():
            break
        use = [j for j in use if coef[j] > 0] or [int(np.argmax(coef))]
    coef = np.maximum(coef, 0.0)
    return Calibrator("beta", a=float(coef[0]), b=float(coef[1]), c=intercept)


_FITTERS = {"isotonic": _fit_isotonic, "platt": _fit_platt, "beta": _fit_beta}


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=float), 1e-15, 1 - 1e-15)
    y = np.asarray(y, dtype=float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def validation_log_loss(method: str, p: np.ndarray, y: np.ndarray, folds: int = CV_FOLDS) -> float:
    """Out-of-fold log-loss of ``method`` on the validation rows (folds by a fixed shuffle)."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    fold = np.random.default_rng(0).permutation(len(p)) % folds
    out = np.empty(len(p))
    for k in range(folds):
        test = fold == k
        train = ~test
        if len(np.unique(y[train])) < 2:
            return float("inf")
        out[test] = _FITTERS[method](p[train], y[train]).apply(p[test])
    return log_loss(y, out)


def fit(method: str, p: np.ndarray, y: np.ndarray) -> Calibrator:
    """Fit a calibrator mapping raw probabilities ``p`` to observed rates of ``y``."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    if method == "none" or len(p) == 0:
        return Calibrator("none")
    if len(np.unique(y)) < 2:
        raise ValueError(f"calibration '{method}' needs validation rows of both classes")
    if method != "auto":
        return _FITTERS[method](p, y)
    scores = {m: validation_log_loss(m, p, y) for m in AUTO_CANDIDATES}
    best = min(AUTO_CANDIDATES, key=lambda m: (scores[m], AUTO_CANDIDATES.index(m)))
    cal = _FITTERS[best](p, y)
    cal.selection = scores
    return cal


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


def top_share(
    y: np.ndarray, p: np.ndarray, share: float = 0.01, rank_by: np.ndarray | None = None
) -> dict[str, float]:
    """Mean predicted probability ``p`` and observed rate of the riskiest ``share`` of rows.

    Rows are ranked by ``rank_by`` (the model's own score, so that a calibration's
    flat steps do not decide who is in) or by ``p``; ties are broken by row order, so the
    count is exactly ``ceil(share * n)`` (at least one row when there are any).
    ``observed_se`` is the binomial standard error of the observed rate.
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if not 0 < share <= 1:
        raise ValueError(f"top_share: share must lie in (0, 1], got {share}")
    n = len(p)
    if n == 0:
        return {"n": 0.0, "predicted": float("nan"), "observed": float("nan")}
    key = p if rank_by is None else np.asarray(rank_by, dtype=float)
    k = max(1, int(np.ceil(share * n)))
    top = np.argsort(-key, kind="mergesort")[:k]
    obs = float(y[top].mean())
    return {
        "n": float(k),
        "predicted": float(p[top].mean()),
        "observed": obs,
        "observed_se": float(np.sqrt(obs * (1 - obs) / k)),
    }


def summary(
    y: np.ndarray, raw: np.ndarray, cal: np.ndarray, ece_before: float, ece_after: float
) -> dict[str, float | bool]:
    """What a reader of calibrated scores must know, for one split.

    ``worse``: the calibration raised the expected calibration error; ``n_exact_0`` /
    ``n_exact_1``: probabilities claiming certainty (none for any fitted method);
    ``top1pct_*``: the riskiest 1% by the model's score, mean calibrated probability
    against observed rate (and the raw mean, before calibration); ``max_tie_share``:
    the largest share of the rows sharing one calibrated probability
    (:func:`max_tie_share`).
    """
    cal = np.asarray(cal, dtype=float)
    top = top_share(y, cal, 0.01, rank_by=raw)
    top_raw = top_share(y, raw, 0.01, rank_by=raw)
    return {
        "worse": bool(ece_after > ece_before),
        "n_exact_0": int((cal == 0).sum()),
        "n_exact_1": int((cal == 1).sum()),
        "top1pct_n": top["n"],
        "top1pct_predicted": top["predicted"],
        "top1pct_predicted_raw": top_raw["predicted"],
        "top1pct_observed": top["observed"],
        "top1pct_observed_se": top.get("observed_se", float("nan")),
        "max_tie_share": max_tie_share(cal),
    }


def max_tie_share(p: np.ndarray) -> float:
    """The largest share of rows that share one value of ``p`` (1 / n when all differ;
    NaN when there are no rows). A calibration that keeps the raw order leaves only the
    raw score's own ties."""
    p = np.asarray(p, dtype=float).ravel()
    if len(p) == 0:
        return float("nan")
    return float(np.unique(p, return_counts=True)[1].max() / len(p))
