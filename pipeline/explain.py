"""Explanation core: exact TreeSHAP contributions, cause-level reason codes."""

from __future__ import annotations

from collections.abc import Sequence

import lightgbm as lgb
import numpy as np

from pipeline.causes import CAUSE_TEXT, CAUSES
from pipeline.registry import BY_NAME


def contributions(
    booster: lgb.Booster, X: np.ndarray, n_threads: int = 0
) -> tuple[np.ndarray, str]:
    """SHAP values in log-odds, shape ``(n, p + 1)``, last column the expected value.

    Uses the project's exact TreeSHAP where the model allows it, LightGBM's own
    ``pred_contrib`` (the same path-dependent algorithm) otherwise. Returns the values
    and the name of the method used.
    """
    try:
        from pipeline.treeshap import TreeShap, supports
    except ImportError:  # pragma: no cover - the module ships with the package
        supports = None  # type: ignore[assignment]
    if supports is not None and supports(booster):
        ts = TreeShap(booster)
        kwargs = {"n_threads": n_threads} if n_threads else {}
        return ts.shap_values(np.asarray(X), **kwargs), "treeshap"
    num_iteration = booster.best_iteration or None
    contrib = booster.predict(np.asarray(X), pred_contrib=True, num_iteration=num_iteration)
    return np.asarray(contrib, dtype=np.float64), "lightgbm_pred_contrib"


def cause_of(feature: str) -> str:
    f = BY_NAME.get(feature)
    return f.primary_cause if f is not None else "other"


def cause_matrix(contrib: np.ndarray, feature_names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Sum SHAP values over the features of each cause; columns follow the returned names."""
    names = list(CAUSES) + ["profile", "other"]
    col = {c: i for i, c in enumerate(names)}
    agg = np.zeros((len(names), len(feature_names)))
    for j, f in enumerate(feature_names):
        agg[col.get(cause_of(f), col["other"]), j] = 1.0
    return contrib[:, : len(feature_names)] @ agg.T, names


def reason_codes(
    contrib: np.ndarray, X: np.ndarray, feature_names: Sequence[str], top_k: int = 3
) -> dict[str, np.ndarray]:
    """Top reasons per row: the causes with the largest positive summed SHAP, and the
    feature behind each (its largest positive contributor within the cause)."""
    n, p = X.shape
    by_cause, names = cause_matrix(contrib, feature_names)
    studied = np.array([c in CAUSES for c in names])
    masked = np.where(studied[None, :], by_cause, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :top_k]
    feat_cause = np.array(
        [
            names.index(cause_of(f)) if cause_of(f) in names else len(names) - 1
            for f in feature_names
        ]
    )
    out: dict[str, np.ndarray] = {}
    rows = np.arange(n)
    for k in range(top_k):
        ci = order[:, k]
        # strongest feature of that cause for each row
        phi = contrib[:, :p]
        mask = feat_cause[None, :] == ci[:, None]
        fj = np.argmax(np.where(mask, phi, -np.inf), axis=1)
        cause_names = np.asarray(names, dtype=object)[ci]
        out[f"reason_{k + 1}_cause"] = cause_names
        out[f"reason_{k + 1}_shap"] = by_cause[rows, ci]
        out[f"reason_{k + 1}_feature"] = np.asarray(feature_names, dtype=object)[fj]
        out[f"reason_{k + 1}_value"] = X[rows, fj].astype(np.float64)
        out[f"reason_{k + 1}_en"] = np.array([CAUSE_TEXT[c][1] for c in cause_names], dtype=object)
        out[f"reason_{k + 1}_zh"] = np.array([CAUSE_TEXT[c][0] for c in cause_names], dtype=object)
    return out


def global_importance(contrib: np.ndarray, feature_names: Sequence[str]) -> list[tuple[str, float]]:
    imp = np.abs(contrib[:, : len(feature_names)]).mean(axis=0)
    order = np.argsort(-imp, kind="stable")
    return [(feature_names[i], float(imp[i])) for i in order]
