"""Runner of the ``train`` stage: fit LightGBM, evaluate, save and log the model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from pipeline import features as feat_core
from pipeline import train as train_core
from pipeline.config import physical_cores
from pipeline.io import DataError, read_table, write_json, write_text
from pipeline.registry import BY_NAME, FEATURE_NAMES
from pipeline.runners.common import Paths, say
from pipeline.tracking import Tracker

FEATURE_READ_SCHEMA = feat_core.FEATURE_TABLE_SCHEMA


def load_feature_table(path: Path) -> pd.DataFrame:
    table = read_table(
        path,
        FEATURE_READ_SCHEMA,
        allowed={"split": ("train", "valid", "oot")},
        ranges={"label": (0, 1)},
        unique=("borrower_id", "snapshot"),
    )
    return table.to_pandas()


def monotone_vector(names: list[str]) -> list[int]:
    return [BY_NAME[n].monotone if n in BY_NAME else 0 for n in names]


def train(cfg: Any, tracker: Tracker) -> dict[str, Any]:
    p = Paths.of(cfg)
    feat_path = p.processed / "features.parquet"
    df = load_feature_table(feat_path)
    names = list(FEATURE_NAMES)
    splits = {s: df[df.split == s] for s in ("train", "valid", "oot")}
    for s in ("train", "valid"):
        if len(splits[s]) == 0 or splits[s].label.nunique() < 2:
            raise DataError(
                f"{feat_path}: split '{s}' needs rows of both classes in column 'label'"
            )
    threads = int(cfg.model.num_threads) or physical_cores()
    params = train_core.lgb_params(
        cfg.model,
        int(cfg.data.seed),
        threads,
        monotone_vector(names) if cfg.model.monotone else None,
    )
    X = {s: g[names].to_numpy(dtype=np.float32) for s, g in splits.items()}
    y = {s: g.label.to_numpy() for s, g in splits.items()}
    t0 = time.perf_counter()
    res = train_core.fit(
        X["train"],
        y["train"],
        X["valid"],
        y["valid"],
        names,
        params,
        int(cfg.model.n_estimators),
        int(cfg.model.early_stopping_rounds),
    )
    seconds = time.perf_counter() - t0
    metrics = train_core.evaluate(res.booster, {s: (X[s], y[s]) for s in X})
    p.models.mkdir(parents=True, exist_ok=True)
    model_path = p.models / "model.txt"
    meta_path = p.models / "model.json"
    text = res.booster.model_to_string(num_iteration=res.best_iteration)
    write_text(text, model_path)
    meta = {
        "feature_names": names,
        "best_iteration": res.best_iteration,
        "params": params,
        "metrics": metrics,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "train_seconds": seconds,
    }
    write_json(meta, meta_path)
    flat = {f"{s}.{k}": v for s, m in metrics.items() for k, v in m.items()}
    flat["best_iteration"] = res.best_iteration
    flat["train_seconds"] = seconds
    tracker.log_metrics(flat)
    tracker.log_artifact(meta_path, "model_meta")
    example = X["valid"][:5]
    model_uri = tracker.log_lightgbm_model(
        res.booster,
        pd.DataFrame(example, columns=names),
        str(cfg.tracking.registered_model) or None,
    )
    say(
        f"train: {res.best_iteration} trees, valid AUC {metrics['valid']['auc']:.4f}, "
        f"out-of-time AUC {metrics.get('oot', {}).get('auc', float('nan')):.4f} ({seconds:.1f}s) -> {model_path}"
    )
    return {"metrics": metrics, "model_uri": model_uri, "seconds": seconds}


def load_model(models_dir: Path) -> tuple[Any, dict[str, Any]]:
    import lightgbm as lgb

    model_path = models_dir / "model.txt"
    meta_path = models_dir / "model.json"
    for path in (model_path, meta_path):
        if not path.exists():
            raise DataError(f"{path}: file not found (run `make train` first)")
    try:
        booster = lgb.Booster(model_str=model_path.read_text())
        meta = json.loads(meta_path.read_text())
    except Exception as exc:
        raise DataError(f"{model_path}: not a readable LightGBM model ({exc})") from exc
    return booster, meta
