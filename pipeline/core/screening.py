"""Feature screening as scorecard tools do it: information value, stability, correlation.

:func:`screen` bins every feature once (equal-count bins for numbers, one bin per code
for categories, a bin of its own for missing values, as the scorecard does) and
measures, on the rows it is given (the training rows):

* information value (IV) of the bins against the target;
* population stability index (PSI) of the feature across time, when a time column is
  given: the rows are cut into periods of about equal size by time (``n_periods``, fewer
  when a period would hold under 1,000 rows), and the largest
  PSI of a later period against the first is kept;
* the largest absolute correlation with another feature, of their weight-of-evidence
  values (so categories and numbers compare alike).

A column that is all missing, or holds one value in every training row, carries
nothing: it is always left out, whatever ``select`` says, and named with its reason.
The drop rules, applied in this order: IV below ``min_iv``; PSI above ``max_psi``;
|correlation| above ``max_corr`` with a feature of higher IV that is kept. At least
the feature of highest IV is always kept. :class:`Screening` lists what would be
dropped and why; with ``select`` its :attr:`Screening.use` leaves those out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.baselines import woe_bins
from pipeline.core.metrics import iv_from_counts, psi, psi_from_shares


@dataclass
class FeatureScreen:
    name: str
    iv: float
    psi: float | None  # None: no time column
    corr: float  # largest |correlation| with another feature (0 with one feature)
    corr_with: str | None
    drop: str = ""  # why it would be dropped ("" = kept)
    empty: str = ""  # why it carries nothing (all missing, constant): always left out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "iv": self.iv,
            "psi": self.psi,
            "corr": self.corr,
            "corr_with": self.corr_with,
            "drop": self.drop,
            "empty": self.empty,
        }


@dataclass
class Screening:
    features: list[FeatureScreen]
    rules: dict[str, float] = field(default_factory=dict)
    select: bool = False  # whether the caller should drop what the rules name

    @property
    def use(self) -> list[str]:
        """The features to model with: the kept ones when selecting, else all."""
        if self.select:
            return self.kept
        return [f.name for f in self.features if not f.empty] or self.kept

    @property
    def dropped(self) -> dict[str, str]:
        """Feature -> the rule it breaks, for every feature the rules would drop."""
        return {f.name: f.drop for f in self.features if f.drop}

    @property
    def kept(self) -> list[str]:
        return [f.name for f in self.features if not f.drop]

    def to_dict(self) -> dict[str, Any]:
        return {
            "select": self.select,
            "rules": dict(self.rules),
            "features": [f.to_dict() for f in self.features],
            "drop": self.dropped,
            "kept": self.kept,
        }


def _periods(t: np.ndarray, n_periods: int) -> np.ndarray:
    """Period number per row: whole time values, about equal row counts, in time order."""
    uniq, inverse, counts = np.unique(t, return_inverse=True, return_counts=True)
    share = np.cumsum(counts) / counts.sum()
    cut = np.minimum((share * n_periods - 1e-9).astype(int), n_periods - 1)
    # the first time value opens period 0; later ones never move back
    cut = np.maximum.accumulate(cut)
    return np.searchsorted(np.unique(cut), cut)[inverse]


def _stability(x: np.ndarray, categorical: bool, period: np.ndarray) -> float:
    """Largest PSI of a later period against the first one."""
    first = period == 0
    worst = 0.0
    for k in range(1, int(period.max()) + 1):
        later = period == k
        if categorical:
            codes = np.unique(x[np.isfinite(x)])
            e = np.array([(x[first] == c).mean() for c in codes])
            a = np.array([(x[later] == c).mean() for c in codes])
            value = psi_from_shares(e, a)
        else:
            value = psi(x[first], x[later])
        if np.isfinite(value):
            worst = max(worst, value)
    return float(worst)


def screen(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    categorical: list[str] | tuple[str, ...] = (),
    *,
    time: np.ndarray | None = None,
    min_iv: float = 0.02,
    max_psi: float = 0.25,
    max_corr: float = 0.9,
    n_bins: int = 10,
    n_periods: int = 4,
    select: bool = False,
) -> Screening:
    """Measure every column of ``X`` and mark what the rules would drop (see module doc).

    Missing category codes (negative) and NaN count as missing values.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y).astype(int)
    if X.shape[1] != len(names):
        raise ValueError(f"{X.shape[1]} columns but {len(names)} names")
    cat = set(categorical)
    woe = np.empty_like(X)
    ivs: list[float] = []
    empties: list[str] = []
    for j, name in enumerate(names):
        x = X[:, j].copy()
        if name in cat:
            x[x < 0] = np.nan
        bins = woe_bins(x, y, name, name in cat, n_bins)
        idx = bins.index(x)
        pos = np.bincount(idx, weights=y, minlength=len(bins.woe))
        neg = np.bincount(idx, weights=1 - y, minlength=len(bins.woe))
        ivs.append(iv_from_counts(pos, neg) if pos.sum() and neg.sum() else 0.0)
        woe[:, j] = bins.transform(x)
        empties.append(_emptiness(x))
    psis: list[float | None] = [None] * len(names)
    if time is not None:
        # PSI of a few hundred rows is mostly noise: about 1,000 rows a period at least
        period = _periods(np.asarray(time), max(2, min(n_periods, len(y) // 1_000)))
        if period.max() > 0:
            psis = [_stability(X[:, j], n in cat, period) for j, n in enumerate(names)]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(woe, rowvar=False), nan=0.0)
    corr = np.atleast_2d(corr)
    np.fill_diagonal(corr, 0.0)
    rows = []
    for j, name in enumerate(names):
        k = int(np.argmax(np.abs(corr[j]))) if len(names) > 1 else j
        rows.append(
            FeatureScreen(
                name=name,
                iv=float(ivs[j]),
                psi=psis[j],
                corr=float(abs(corr[j, k])) if k != j else 0.0,
                corr_with=names[k] if k != j else None,
                empty=empties[j],
            )
        )
    _apply_rules(rows, corr, min_iv, max_psi, max_corr)
    rules = {"min_iv": min_iv, "max_psi": max_psi, "max_corr": max_corr}
    return Screening(rows, rules, select)


def _emptiness(x: np.ndarray) -> str:
    """Why a column (missing values as NaN) carries nothing; "" when it carries something."""
    seen = x[np.isfinite(x)]
    if len(seen) == 0:
        return "all missing in the training rows"
    if len(seen) == len(x) and np.all(seen == seen[0]):
        return f"constant: {seen[0]:g} in every training row"
    return ""


def _apply_rules(
    rows: list[FeatureScreen], corr: np.ndarray, min_iv: float, max_psi: float, max_corr: float
) -> None:
    for r in rows:
        if r.empty:
            r.drop = f"{r.empty}; left out whatever features.select says"
        elif r.iv < min_iv:
            r.drop = f"information value {r.iv:.4f} < {min_iv:g}"
        elif r.psi is not None and r.psi > max_psi:
            r.drop = f"PSI across time {r.psi:.4f} > {max_psi:g}"
    kept: list[int] = []
    for j in sorted(range(len(rows)), key=lambda j: (-rows[j].iv, j)):
        if rows[j].drop:
            continue
        twin = next((k for k in kept if abs(corr[j, k]) > max_corr), None)
        if twin is None:
            kept.append(j)
        else:
            rows[j].drop = (
                f"|correlation| {abs(corr[j, twin]):.3f} > {max_corr:g} with "
                f"{rows[twin].name} (higher information value)"
            )
    if not kept and rows:  # never drop everything: keep the strongest feature
        best = max(range(len(rows)), key=lambda j: (rows[j].iv, -j))
        rows[best].drop = ""
