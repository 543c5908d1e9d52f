"""Scoring metrics used across training, evaluation and reports."""

from __future__ import annotations

import numpy as np


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Weighted mean gap between predicted and observed rates over equal-count bins."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    bins = np.array_split(order, min(n_bins, len(y)))
    return float(sum(len(b) * abs(y[b].mean() - p[b].mean()) for b in bins if len(b)) / len(y))


def _ranking_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, KS, average precision, lift and capture at 5% and 10%, from one sort.

    The same figures as ``sklearn.metrics.roc_auc_score`` (trapezoids over the ROC
    points, tied scores forming one point), ``average_precision_score`` (precision
    weighted by the recall step at each distinct score), the largest gap between the
    two cumulative distributions (KS), and the positives among the top 5% and 10% of
    scores (ties broken by row order): all read off the scores sorted once.
    """
    order = np.argsort(-p, kind="mergesort")
    ys = y[order].astype(bool)
    ps = p[order]
    n_pos = int(ys.sum())
    n_neg = len(ys) - n_pos
    out: dict[str, float] = {}
    if n_pos == 0 or n_neg == 0:
        out.update(auc=float("nan"), ks=float("nan"), pr_auc=float("nan"))
    else:
        last = np.r_[ps[1:] != ps[:-1], True]  # the end of each run of tied scores
        tps = np.cumsum(ys)[last].astype(float)
        fps = np.cumsum(~ys)[last].astype(float)
        tpr, fpr = tps / n_pos, fps / n_neg
        out["auc"] = float(np.trapezoid(np.r_[0.0, tpr], np.r_[0.0, fpr]))
        out["ks"] = float(np.max(np.abs(tpr - fpr)))
        precision = tps / (tps + fps)
        out["pr_auc"] = float(np.sum(np.diff(np.r_[0.0, tpr]) * precision))
    base = float(ys.mean()) if len(ys) else 0.0
    for frac in (0.05, 0.10):
        n_top = max(1, int(round(frac * len(ys))))
        top = ys[:n_top]
        pct = int(frac * 100)
        if base == 0:
            out[f"lift_{pct}"], out[f"capture_{pct}"] = float("nan"), float("nan")
        else:
            out[f"lift_{pct}"] = float(top.mean() / base)
            out[f"capture_{pct}"] = float(top.sum() / ys.sum())
    return out


def binary_metrics(y: np.ndarray, p: np.ndarray, ece_bins: int = 10) -> dict[str, float]:
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    if not np.isfinite(p).all():
        raise ValueError("scores contain NaN or infinity; metrics need a finite score per row")
    out: dict[str, float] = {
        "n": float(len(y)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
    }
    ranking = _ranking_metrics(y, p)
    for k in ("auc", "ks", "pr_auc"):
        out[k] = ranking.pop(k)
    out["brier"] = float(np.mean((p - y) ** 2)) if len(y) else float("nan")
    out["ece"] = expected_calibration_error(y, p, ece_bins)
    out.update(ranking)
    return out


def decile_edges(x: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Inner cut points of equal-count bins of the finite values ``x`` (ties kept together)."""
    return np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)[1:-1]))


def psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two bin-share vectors (empty bins floored at 1e-6)."""
    e = np.clip(expected, 1e-6, None)
    a = np.clip(actual, 1e-6, None)
    return float(np.sum((a - e) * np.log(a / e)))


def iv_from_counts(pos: np.ndarray, neg: np.ndarray) -> float:
    """Information value of per-bin counts of positives and negatives."""
    dp = np.clip(pos / pos.sum(), 1e-6, None)
    dn = np.clip(neg / neg.sum(), 1e-6, None)
    return float(np.sum((dp - dn) * np.log(dp / dn)))


def psi(expected: np.ndarray, actual: np.ndarray, n_bins: int = 10) -> float:
    """Population stability index of ``actual`` against ``expected`` on expected's deciles."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    e = e[np.isfinite(e)]
    a = a[np.isfinite(a)]
    if len(e) == 0 or len(a) == 0:
        return float("nan")
    edges = decile_edges(e, n_bins)
    ec = np.bincount(np.searchsorted(edges, e, side="right"), minlength=len(edges) + 1) / len(e)
    ac = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1) / len(a)
    return psi_from_shares(ec, ac)


def gains_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Decile gains table, highest scores first."""
    y = np.asarray(y, dtype=float)
    order = np.argsort(-np.asarray(p), kind="mergesort")
    rows = []
    total = y.sum()
    cum = 0.0
    for i, part in enumerate(np.array_split(order, n_bins)):
        if len(part) == 0:
            continue
        cum += y[part].sum()
        rows.append(
            {
                "decile": i + 1,
                "n": float(len(part)),
                "min_score": float(np.asarray(p)[part].min()),
                "positives": float(y[part].sum()),
                "rate": float(y[part].mean()),
                "cum_capture": float(cum / total) if total else float("nan"),
            }
        )
    return rows
