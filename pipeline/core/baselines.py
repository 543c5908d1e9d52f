"""Baselines the LightGBM model has to beat, fitted on the same split.

* :class:`Scorecard`: the classic credit scorecard. Each feature is cut into
  equal-count bins (categorical codes keep one bin per code, missing values get their
  own bin), every bin is replaced by its weight of evidence, a logistic regression is
  fitted on those values, and its log-odds are scaled to points (``pdo`` points double
  the odds, ``base_score`` at ``base_odds`` good:bad).
* :func:`rules_score`: the seed's hand-written heuristics (a long idle spell after
  regular use, a thin credit file, loan money routed to investment or other lenders)
  counted as flags; no fitting at all.

Pure core: arrays and frames in, arrays and tables out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

_SMOOTH = 0.5  # added to bin counts so an all-good or all-bad bin has a finite WoE


@dataclass
class WoeBins:
    """Weight-of-evidence bins of one feature."""

    feature: str
    categorical: bool
    edges: list[float]  # numeric: inner cut points; bin i is (edges[i-1], edges[i]]
    codes: list[float]  # categorical: one bin per code
    woe: list[float]  # one per bin, then the missing-value bin last
    counts: list[int]
    bads: list[int]
    iv: float

    def index(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        missing = ~np.isfinite(x)
        n_bins = len(self.woe) - 1
        if self.categorical:
            lookup = {c: i for i, c in enumerate(self.codes)}
            # an unseen code falls into the missing bin (weight of evidence near 0)
            idx = np.array([lookup.get(v, n_bins) for v in np.where(missing, np.nan, x)])
            idx = idx.astype(int) if len(idx) else np.zeros(0, dtype=int)
        else:
            idx = np.searchsorted(np.asarray(self.edges), x, side="left")
        return np.where(missing, n_bins, idx)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.woe)[self.index(x)]

    def labels(self) -> list[str]:
        if self.categorical:
            out = [f"= {c:g}" for c in self.codes]
        else:
            bounds = [-np.inf, *self.edges, np.inf]
            out = [f"({bounds[i]:.4g}, {bounds[i + 1]:.4g}]" for i in range(len(bounds) - 1)]
        return [*out, "missing"]


def woe_bins(
    x: np.ndarray, y: np.ndarray, feature: str, categorical: bool, max_bins: int
) -> WoeBins:
    """Bins and weight of evidence ln(share of goods / share of bads) per bin."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y).astype(int)
    ok = np.isfinite(x)
    if categorical:
        codes = [float(c) for c in np.unique(x[ok])]
        edges: list[float] = []
        lookup = {c: i for i, c in enumerate(codes)}
        idx = np.array([lookup[v] for v in x[ok]], dtype=int)
        n_bins = len(codes)
    else:
        codes = []
        qs = np.quantile(x[ok], np.linspace(0, 1, max_bins + 1)[1:-1]) if ok.any() else []
        edges = [float(e) for e in np.unique(qs)]
        idx = np.searchsorted(np.asarray(edges), x[ok], side="left")
        n_bins = len(edges) + 1
    full = np.full(len(x), n_bins)
    full[ok] = idx
    counts = np.bincount(full, minlength=n_bins + 1)
    bads = np.bincount(full, weights=y, minlength=n_bins + 1)
    goods = counts - bads
    total_bad, total_good = max(bads.sum(), 1.0), max(goods.sum(), 1.0)
    dist_good = (goods + _SMOOTH) / (total_good + _SMOOTH * (n_bins + 1))
    dist_bad = (bads + _SMOOTH) / (total_bad + _SMOOTH * (n_bins + 1))
    woe = np.log(dist_good / dist_bad)
    woe[counts == 0] = 0.0
    iv = float(np.sum((dist_good - dist_bad) * woe))
    return WoeBins(
        feature,
        categorical,
        edges,
        codes,
        [float(v) for v in woe],
        [int(v) for v in counts],
        [int(v) for v in bads],
        iv,
    )


@dataclass
class Scorecard:
    """Logistic regression on weight-of-evidence bins, scaled to points."""

    pdo: float = 20.0
    base_score: float = 600.0
    base_odds: float = 50.0
    max_bins: int = 8
    min_iv: float = 0.02
    bins_: list[WoeBins] = field(default_factory=list)
    coef_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    intercept_: float = 0.0

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        names: list[str],
        categorical: list[str] | tuple[str, ...] = (),
    ) -> Scorecard:

        y = np.asarray(y).astype(int)
        cand = [
            woe_bins(X[:, j], y, n, n in categorical, self.max_bins) for j, n in enumerate(names)
        ]
        kept = [b for b in cand if b.iv >= self.min_iv and len(b.woe) > 2]
        if not kept:  # nothing clears the bar: keep the single strongest feature
            kept = [max(cand, key=lambda b: b.iv)]
        self.bins_ = kept
        self._cols = [names.index(b.feature) for b in kept]
        W = self._woe(X)
        lr = LogisticRegression(C=1.0, solver="lbfgs", max_iter=2000)
        lr.fit(W, y)
        self.coef_ = lr.coef_[0].copy()
        self.intercept_ = float(lr.intercept_[0])
        return self

    def _woe(self, X: np.ndarray) -> np.ndarray:
        # filled column by column: a list of columns stacked at the end would hold the
        # matrix twice (at a million borrowers, over a gigabyte more at the peak)
        out = np.empty((len(X), len(self.bins_)))
        for k, (b, j) in enumerate(zip(self.bins_, self._cols, strict=True)):
            out[:, k] = b.transform(X[:, j])
        return out

    def log_odds(self, X: np.ndarray) -> np.ndarray:
        """The linear score: log-odds of the positive (bad) class."""
        return np.asarray(self.intercept_ + self._woe(X) @ self.coef_, dtype=float)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of the positive (bad) class."""
        return 1.0 / (1.0 + np.exp(-self.log_odds(X)))

    @property
    def factor(self) -> float:
        return self.pdo / np.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * np.log(self.base_odds)

    def points(self, X: np.ndarray) -> np.ndarray:
        """Total score: higher means lower risk (offset + factor * ln(good:bad odds))."""
        return self.offset - self.factor * self.log_odds(X)

    def table(self) -> pd.DataFrame:
        """One row per feature and bin with its weight of evidence and points.

        The intercept's points are spread evenly over the features, so a borrower's score
        is exactly the sum of the points of their bins.
        """
        k = len(self.bins_)
        rows: list[dict[str, Any]] = []
        for b, c in zip(self.bins_, self.coef_, strict=True):
            for label, w, n, bad in zip(b.labels(), b.woe, b.counts, b.bads, strict=True):
                rows.append(
                    {
                        "feature": b.feature,
                        "bin": label,
                        "n": n,
                        "bad_rate": bad / n if n else float("nan"),
                        "woe": w,
                        "iv": b.iv,
                        "coef": float(c),
                        "points": float(
                            self.offset / k - self.factor * (c * w + self.intercept_ / k)
                        ),
                    }
                )
        return pd.DataFrame(rows)


# the seed's heuristics, thresholds in the units of the feature table
RULES: dict[str, str] = {
    "long_idle": "months_since_last_draw >= 3 and draw_months_12 >= 4 (active, then a long idle spell)",
    "thin_file": "ext_active_products == 0 and months_since_ext_activity >= 12",
    "fund_misuse": "misuse_share_k >= 0.5 (drawn money sent to investment or other lenders)",
}
RULE_FEATURES = (
    "months_since_last_draw",
    "draw_months_12",
    "ext_active_products",
    "months_since_ext_activity",
    "misuse_share_k",
)


def rule_flags(frame: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per rule in :data:`RULES`."""
    return pd.DataFrame(
        {
            "long_idle": (frame.months_since_last_draw >= 3) & (frame.draw_months_12 >= 4),
            "thin_file": (frame.ext_active_products == 0) & (frame.months_since_ext_activity >= 12),
            "fund_misuse": frame.misuse_share_k >= 0.5,
        },
        index=frame.index,
    )


@dataclass
class RulesBaseline:
    """The flags of :data:`RULES`; each combination of flags scores its closure rate in training.

    With no flag at all the score is the rate of the unflagged rows, so the ranking is
    exactly "which rules fired", and the scores are probabilities that can be compared
    with the models' on Brier and calibration error.
    """

    rates_: dict[int, float] = field(default_factory=dict)
    base_rate_: float = 0.0

    @staticmethod
    def _combo(frame: pd.DataFrame) -> np.ndarray:
        f = rule_flags(frame).to_numpy(dtype=int)
        return f @ (1 << np.arange(f.shape[1]))

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> RulesBaseline:
        combo = self._combo(frame)
        y = np.asarray(y, dtype=float)
        self.base_rate_ = float(y.mean()) if len(y) else 0.0
        self.rates_ = {int(c): float(y[combo == c].mean()) for c in np.unique(combo)}
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        combo = self._combo(frame)
        return np.array([self.rates_.get(int(c), self.base_rate_) for c in combo], dtype=float)

    def table(self) -> pd.DataFrame:
        names = list(RULES)
        rows = []
        for c, rate in sorted(self.rates_.items()):
            fired = [n for k, n in enumerate(names) if c >> k & 1]
            rows.append({"rules_fired": " + ".join(fired) or "(none)", "train_rate": rate})
        return pd.DataFrame(rows)
