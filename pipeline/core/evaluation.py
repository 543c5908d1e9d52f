"""Evaluation of scores: metric sets, segments, stability, the oracle gap, and plots.

Metric definitions live in :mod:`pipeline.core.metrics`; this module arranges them into the
report a model review asks for. The ranking metrics (AUC, KS, PR-AUC, lift, capture)
are taken on the model's own score, the probability metrics (Brier, calibration
error) on the calibrated probability, with the uncalibrated ones kept as
``brier_raw`` and ``ece_raw``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from pipeline.base.io import atomic_path
from pipeline.core.metrics import binary_metrics, expected_calibration_error, gains_table, psi

MIN_SEGMENT_ROWS = 50


def score_metrics(
    y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray | None = None, n_bins: int = 10
) -> dict[str, float]:
    """All metrics of one scored sample; see the module docstring for which score is used."""
    y = np.asarray(y).astype(int)
    out = binary_metrics(y, raw, n_bins)
    if calibrated is not None:
        out["brier_raw"], out["ece_raw"] = out["brier"], out["ece"]
        cal = np.asarray(calibrated, dtype=float)
        out["brier"] = float(np.mean((cal - y) ** 2)) if len(y) else float("nan")
        out["ece"] = expected_calibration_error(y, cal, n_bins)
    return out


def segment_metrics(
    y: np.ndarray,
    raw: np.ndarray,
    calibrated: np.ndarray | None,
    segment: np.ndarray,
    n_bins: int = 10,
) -> dict[str, dict[str, float]]:
    """Metrics per value of ``segment`` (segments smaller than 50 rows are skipped)."""
    out: dict[str, dict[str, float]] = {}
    seg = np.asarray(segment)
    for value in sorted(pd.unique(seg), key=str):
        mask = seg == value
        if mask.sum() < MIN_SEGMENT_ROWS:
            continue
        key = (
            str(int(value))
            if isinstance(value, (float, np.floating)) and float(value).is_integer()
            else str(value)
        )
        out[key] = score_metrics(
            y[mask], raw[mask], None if calibrated is None else calibrated[mask], n_bins
        )
    return out


def delong(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several scores on the same rows and their covariance (DeLong et al. 1988).

    Returns ``(auc, cov)`` with ``auc`` of shape ``(k,)`` and ``cov`` of shape ``(k, k)``;
    ``sqrt(cov[i, i])`` is the standard error of AUC ``i`` and ``cov`` also gives the
    standard error of a difference of two AUCs on the same rows. Ties count one half.
    """
    y = np.asarray(y).astype(bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    n1, n0 = len(pos), len(neg)
    if n1 < 2 or n0 < 2:
        raise ValueError(f"DeLong needs at least two rows of each class, got {n1} and {n0}")
    v10 = np.empty((len(scores), n1))
    v01 = np.empty((len(scores), n0))
    auc = np.empty(len(scores))
    for i, s in enumerate(scores):
        s = np.asarray(s, dtype=float)
        r_all = rankdata(s)
        r_pos = rankdata(s[pos])
        r_neg = rankdata(s[neg])
        v10[i] = (r_all[pos] - r_pos) / n0  # share of negatives below each positive
        v01[i] = 1.0 - (r_all[neg] - r_neg) / n1  # share of positives above each negative
        auc[i] = v10[i].mean()
    cov = np.atleast_2d(np.cov(v10)) / n1 + np.atleast_2d(np.cov(v01)) / n0
    return auc, cov


def oracle_gap(
    keys: pd.DataFrame, y: np.ndarray, p_model: np.ndarray, oracle: pd.DataFrame
) -> dict[str, Any]:
    """The model between the simulator's two oracles, on the same matched rows.

    ``keys`` has the join columns (borrower_id, snapshot) of the scored rows; ``oracle``
    has those plus ``p_oracle`` and, when the world records them, ``p_full`` (the oracle
    that knows the latent state) and ``p_observable`` (the ceiling of a model of the
    observables). Returns the flat keys ``oracle_rows``, ``oracle_auc`` (the full-state
    oracle), ``oracle_model_auc`` and ``oracle_gap`` (oracle minus model), and under
    ``oracle`` each AUC with its DeLong standard error, ``n_rows``, and the model's gaps
    to both oracles with the standard errors of those paired differences.
    """
    on = ["borrower_id", "snapshot"]
    cols = [c for c in ("p_oracle", "p_full", "p_observable") if c in oracle.columns]
    if "p_oracle" not in cols:
        raise ValueError("oracle rows need the column 'p_oracle'")
    frame = keys[on].reset_index(drop=True).assign(_y=np.asarray(y), _p=np.asarray(p_model))
    m = frame.merge(oracle[[*on, *cols]], on=on, how="inner")
    out: dict[str, Any] = {"oracle_rows": float(len(m))}
    y_m = m._y.to_numpy().astype(int)
    if len(m) == 0 or min(y_m.sum(), len(y_m) - y_m.sum()) < 2:
        return out
    full = m.p_full if "p_full" in m else m.p_oracle
    named = {"full": full.to_numpy(), "model": m._p.to_numpy()}
    if "p_observable" in m:
        named["observable"] = m.p_observable.to_numpy()
    auc, cov = delong(y_m, list(named.values()))
    idx = {k: i for i, k in enumerate(named)}
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    part: dict[str, float] = {"n_rows": int(len(m)), "n_positives": int(y_m.sum())}
    for k, i in idx.items():
        part[f"{k}_auc"] = float(auc[i])
        part[f"{k}_auc_se"] = float(se[i])
    for k in ("full", "observable"):
        if k in idx:
            i, j = idx[k], idx["model"]
            part[f"gap_{k}"] = float(auc[i] - auc[j])
            part[f"gap_{k}_se"] = float(np.sqrt(max(cov[i, i] + cov[j, j] - 2 * cov[i, j], 0)))
    out.update(
        oracle_auc=part["full_auc"],
        oracle_model_auc=part["model_auc"],
        oracle_gap=part["gap_full"],
        oracle_positives=float(y_m.sum()),
        oracle_brier=float(np.mean((full.to_numpy() - y_m) ** 2)),
        oracle=part,
    )
    return out


def score_psi(train_scores: np.ndarray, oot_scores: np.ndarray) -> float:
    return psi(train_scores, oot_scores)


def gains_frame(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    return pd.DataFrame(gains_table(y, p, n_bins))


# --------------------------------------------------------------------------- plots


def _plt() -> Any:
    import matplotlib  # matplotlib: loaded only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: loaded only when a plot is drawn

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_roc(y: np.ndarray, scores: dict[str, np.ndarray], path: Path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_gains(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    path: Path,
    title: str,
    rows: str = "accounts",
    events: str = "closures",
) -> Path:
    """Cumulative share of ``events`` captured against the share of ``rows``, riskiest first."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    y = np.asarray(y, dtype=float)
    for name, s in scores.items():
        order = np.argsort(-np.asarray(s), kind="mergesort")
        cum = np.r_[0.0, np.cumsum(y[order]) / max(y.sum(), 1.0)]
        ax.plot(np.linspace(0, 1, len(cum)), cum, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(
        xlabel=f"share of {rows}, riskiest first", ylabel=f"share of {events} captured", title=title
    )
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_reliability(curves: dict[str, list[dict[str, float]]], path: Path, title: str) -> Path:
    """Observed against predicted rate per bin, one line per curve (e.g. before / after)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    hi = 0.0
    for name, rows in curves.items():
        xs = [r["predicted"] for r in rows]
        ys = [r["observed"] for r in rows]
        hi = max(hi, *xs, *ys) if xs else hi
        ax.plot(xs, ys, "o-", ms=3, label=name)
    hi = hi * 1.05 or 1.0
    ax.plot([0, hi], [0, hi], "k:", lw=0.8)
    ax.set(xlim=(0, hi), ylim=(0, hi), xlabel="mean predicted probability", ylabel="observed rate")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path
