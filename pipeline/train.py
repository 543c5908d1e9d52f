"""Training core: LightGBM with early stopping, evaluated on validation and out of time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from pipeline.metrics import binary_metrics


@dataclass
class TrainResult:
    booster: lgb.Booster
    best_iteration: int
    params: dict[str, Any]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def lgb_params(
    model_cfg: Any, seed: int, num_threads: int, monotone: list[int] | None
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
    cat = [c for c in (categorical or []) if c in feature_names] or "auto"
    dtrain = lgb.Dataset(
        X_train,
        label=y_train,
        feature_name=feature_names,
        categorical_feature=cat,
        free_raw_data=True,
    )
    dvalid = lgb.Dataset(X_valid, label=y_valid, reference=dtrain)
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
            out[name] = binary_metrics(
                y, booster.predict(X, num_iteration=booster.best_iteration or None)
            )
    return out
