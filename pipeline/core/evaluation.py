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
        out[key]["auc_se"] = auc_se(y[mask], raw[mask])
    return out


def auc_se(y: np.ndarray, score: np.ndarray) -> float:
    """The DeLong standard error of the AUC of ``score`` (NaN without both classes)."""
    y = np.asarray(y).astype(int)
    if y.sum() < 2 or (1 - y).sum() < 2:
        return float("nan")
    _, cov = delong(y, [np.asarray(score, dtype=float)])
    return float(np.sqrt(max(cov[0, 0], 0.0)))


#: tenure bands of the segment view (months on book): [lower, upper)
TENURE_BANDS = ((0, 12, "<12"), (12, 24, "12-23"), (24, 48, "24-47"), (48, None, "48+"))


def tenure_band(tenure: np.ndarray) -> np.ndarray:
    """Months on book as bands (:data:`TENURE_BANDS`); a missing tenure as ``missing``."""
    t = np.asarray(tenure, dtype=np.float64)
    out = np.full(len(t), "missing", dtype=object)
    for lo, hi, name in TENURE_BANDS:
        out[(t >= lo) & ((t < hi) if hi is not None else np.isfinite(t))] = name
    return out


def calibration_change(y: np.ndarray, raw: np.ndarray, cal: np.ndarray) -> dict[str, float]:
    """The Brier score before and after calibration on the same rows, and the standard
    error of the paired difference (after minus before: positive is worse)."""
    y = np.asarray(y, dtype=np.float64)
    d = (np.asarray(cal, dtype=np.float64) - y) ** 2 - (np.asarray(raw, dtype=np.float64) - y) ** 2
    n = len(y)
    return {
        "n": float(n),
        "brier_diff": float(d.mean()) if n else float("nan"),
        "brier_diff_se": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
    }


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


#: The oracles' score columns: the full-state oracle and the trait oracle.
_ORACLES = {"full": "p_full", "observable": "p_observable"}


def oracle_gap(
    keys: pd.DataFrame, y: np.ndarray, p_model: np.ndarray, oracle: pd.DataFrame
) -> dict[str, Any]:
    """The model between the simulator's two oracles, on the same matched rows.

    ``keys`` has the join columns (borrower_id, snapshot) of the scored rows; ``oracle``
    has those plus ``p_oracle`` and, when the world records them, ``p_full`` (the oracle
    that knows the latent state) and ``p_observable`` (the *trait oracle*: exact latent
    traits, the platform's individual judgement and the remaining length of a stop
    redrawn; a yardstick, not a bound on a model of the observables).

    Returns the flat keys ``oracle_rows``, ``oracle_auc`` (the full-state oracle),
    ``oracle_model_auc``, ``oracle_gap`` (the trait oracle's AUC minus the model's; the
    full-state oracle's where the trait oracle is not recorded) and ``oracle_gap_full``
    (the full-state oracle's minus the model's), and under ``oracle`` each AUC with its
    DeLong standard error, ``n_rows``, the model's gaps to both oracles with the
    standard errors of those paired differences (``gap`` = ``gap_observable``; the
    trait oracle is also under ``trait_*``), and, where the oracle rows carry each
    oracle from the two halves of its futures (``p_<oracle>_h1``/``_h2``), the Monte
    Carlo bias (see :func:`mc_bias`): ``futures`` (per row), ``mc_bias`` (the larger of
    the two oracles'), ``<oracle>_mc_bias`` with its standard error and
    ``<oracle>_auc_extrapolated`` (the AUC with infinitely many futures).
    """
    on = ["borrower_id", "snapshot"]
    halves = [f"{c}_h{j}" for c in _ORACLES.values() for j in (1, 2)]
    cols = [
        c
        for c in ("p_oracle", "p_full", "p_observable", "n_futures", *halves)
        if c in oracle.columns
    ]
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
    main = "observable" if "observable" in idx else "full"
    part["gap"], part["gap_se"] = part[f"gap_{main}"], part[f"gap_{main}_se"]
    if "observable" in idx:
        for k in ("auc", "auc_se"):
            part[f"trait_{k}"] = part[f"observable_{k}"]
        part["gap_trait"], part["gap_trait_se"] = part["gap_observable"], part["gap_observable_se"]
    if "n_futures" in m:
        part["futures"] = int(m.n_futures.min())
    part.update(_mc_bias_part(m, y_m, [k for k in _ORACLES if k in idx]))
    out.update(
        oracle_auc=part["full_auc"],
        oracle_model_auc=part["model_auc"],
        oracle_gap=part["gap"],
        oracle_gap_full=part["gap_full"],
        oracle_positives=float(y_m.sum()),
        oracle_brier=float(np.mean((full.to_numpy() - y_m) ** 2)),
        oracle=part,
    )
    return out


def mc_bias(
    y: np.ndarray, p_all: np.ndarray, p_h1: np.ndarray, p_h2: np.ndarray
) -> dict[str, float]:
    """Monte Carlo bias of an oracle's AUC, from the oracle over all its futures and
    over each half of them, on the same rows.

    Noise in a probability can only blur its ranking, so with ``k`` futures the AUC sits
    below its limit by about ``b / k``. The AUC from ``k / 2`` futures is then about
    ``b / k`` further below, so ``AUC(k) - mean(AUC(half 1), AUC(half 2))`` estimates
    the bias left at ``k`` futures (``bias``, with its DeLong standard error ``bias_se``
    from the three AUCs' covariance on the same rows) and ``AUC(k) + bias`` the AUC
    with infinitely many (``auc_extrapolated``). The 1/k law is an assumption, close
    when the bias is small; the estimate says nothing of any error that more futures
    would not remove.
    """
    auc, cov = delong(y, [p_all, p_h1, p_h2])
    w = np.array([1.0, -0.5, -0.5])
    bias = float(w @ auc)
    return {
        "bias": bias,
        "bias_se": float(np.sqrt(max(float(w @ cov @ w), 0.0))),
        "auc_extrapolated": float(auc[0] + bias),
    }


def _mc_bias_part(m: pd.DataFrame, y: np.ndarray, present: list[str]) -> dict[str, float]:
    """:func:`mc_bias` of each oracle whose half-future columns are recorded."""
    part: dict[str, float] = {}
    for k in present:
        col = _ORACLES[k]
        h1, h2 = f"{col}_h1", f"{col}_h2"
        if h1 not in m or h2 not in m or m[h1].isna().any() or m[h2].isna().any():
            continue
        b = mc_bias(y, m[col].to_numpy(), m[h1].to_numpy(), m[h2].to_numpy())
        part[f"{k}_mc_bias"], part[f"{k}_mc_bias_se"] = b["bias"], b["bias_se"]
        part[f"{k}_auc_extrapolated"] = b["auc_extrapolated"]
    found = [part[f"{k}_mc_bias"] for k in present if f"{k}_mc_bias" in part]
    if found:
        part["mc_bias"] = float(max(found))
    return part


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
