"""Training core: LightGBM with early stopping, monotone checks and cross-validation.

Pure: arrays and plain parameters in, boosters and numbers out. The runner
(:mod:`pipeline.stages.train`) reads the tables, calibrates, evaluates and logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np

from pipeline.base.config import ModelConfig
from pipeline.core import compiled
from pipeline.core.metrics import binary_metrics


@dataclass
class TrainResult:
    booster: lgb.Booster
    best_iteration: int
    params: dict[str, Any]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def lgb_params(
    model_cfg: ModelConfig,
    seed: int,
    num_threads: int,
    monotone: list[int] | None,
    n_train: int = 0,
) -> dict[str, Any]:
    """The LightGBM parameter dict, deterministic for a fixed seed and thread count."""
    params: dict[str, Any] = {
        "objective": model_cfg.objective,
        "metric": "auc",
        "learning_rate": model_cfg.learning_rate,
        "num_leaves": model_cfg.num_leaves,
        "min_data_in_leaf": model_cfg.min_child_samples,
        "feature_fraction": model_cfg.feature_fraction,
        "bagging_fraction": model_cfg.bagging_fraction,
        "bagging_freq": model_cfg.bagging_freq,
        "lambda_l2": model_cfg.lambda_l2,
        "max_bin": model_cfg.max_bin,
        "num_threads": num_threads,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }
    if n_train:
        # a leaf must be able to hold a few percent of a small table, or nothing splits
        params["min_data_in_leaf"] = int(min(params["min_data_in_leaf"], max(5, n_train // 50)))
    if monotone and any(monotone):
        params["monotone_constraints"] = list(monotone)
        params["monotone_constraints_method"] = "intermediate"
    return params


def fit(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    feature_names: list[str],
    params: dict[str, Any],
    n_estimators: int,
    early_stopping_rounds: int,
    categorical: list[str] | None = None,
) -> TrainResult:
    cat: list[str] | Literal["auto"] = [
        c for c in (categorical or []) if c in feature_names
    ] or "auto"
    dtrain = lgb.Dataset(
        X_train,
        label=y_train,
        feature_name=feature_names,
        categorical_feature=cat,
        free_raw_data=True,
    )
    dvalid = lgb.Dataset(
        X_valid, label=y_valid, reference=dtrain, categorical_feature=cat, free_raw_data=True
    )
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=n_estimators,
        valid_sets=[dvalid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    return TrainResult(booster=booster, best_iteration=int(best), params=params)


def evaluate(
    booster: lgb.Booster, splits: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, dict[str, float]]:
    out = {}
    for name, (X, y) in splits.items():
        if len(y):
            out[name] = binary_metrics(y, predict(booster, X))
    return out


def predict(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    return compiled.predict(booster, X, num_iteration=booster.best_iteration or None)


def monotone_violations(
    booster: lgb.Booster,
    X: np.ndarray,
    monotone: list[int],
    n_grid: int = 21,
    tol: float = 1e-12,
) -> dict[int, dict[str, float]]:
    """Sweep each constrained feature over a grid for the rows of ``X``.

    For every column ``j`` with ``monotone[j] != 0`` the column is set, row by row, to each
    point of a grid spanning its observed range (plus a little beyond, so a split beyond
    the data is crossed too), and the raw score must never move against the declared
    direction. Returns, per column, the number of offending steps and the largest one.
    """
    out: dict[int, dict[str, float]] = {}
    for j, sign in enumerate(monotone):
        if not sign:
            continue
        col = X[:, j][np.isfinite(X[:, j])]
        lo, hi = (float(col.min()), float(col.max())) if len(col) else (0.0, 1.0)
        pad = 0.1 * (hi - lo) + 1e-3
        grid = np.linspace(lo - pad, hi + pad, n_grid, dtype=np.float32)
        tiled = np.repeat(X, n_grid, axis=0)
        tiled[:, j] = np.tile(grid, len(X))
        raw = np.asarray(booster.predict(tiled, raw_score=True)).reshape(len(X), n_grid)
        steps = np.diff(raw, axis=1) * sign
        bad = steps < -tol
        out[j] = {
            "violations": float(bad.sum()),
            "worst": float(-steps.min()) if bad.any() else 0.0,
            "checks": float(steps.size),
        }
    return out
