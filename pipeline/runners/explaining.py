"""Runner of the ``explain`` stage: SHAP values, reason codes, plots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline import explain as explain_core
from pipeline.config import physical_cores
from pipeline.io import atomic_path, write_json, write_parquet
from pipeline.runners.common import Paths, say
from pipeline.runners.training import load_feature_table, load_model
from pipeline.tracking import Tracker


def explain(cfg: Any, tracker: Tracker) -> dict[str, Any]:
    p = Paths.of(cfg)
    booster, meta = load_model(p.models)
    names = meta["feature_names"]
    df = load_feature_table(p.processed / "features.parquet")
    oot = df[df.split == "oot"]
    if len(oot) > cfg.explain.max_rows:
        oot = oot.sample(n=int(cfg.explain.max_rows), random_state=int(cfg.data.seed)).sort_values(
            ["snapshot", "borrower_id"]
        )
    X = oot[names].to_numpy(dtype=np.float32)
    threads = int(cfg.explain.n_jobs) or physical_cores()
    t0 = time.perf_counter()
    contrib, method = explain_core.contributions(booster, X, threads)
    seconds = time.perf_counter() - t0
    # additivity on a sample: contributions must add up to the raw score
    rng = np.random.default_rng(0)
    sample = (
        rng.choice(len(X), size=min(len(X), 2000), replace=False)
        if len(X)
        else np.zeros(0, dtype=int)
    )
    raw = booster.predict(X[sample], raw_score=True)
    additivity = float(np.max(np.abs(contrib[sample].sum(axis=1) - raw))) if len(sample) else 0.0
    if additivity > 1e-3:
        raise RuntimeError(
            f"SHAP additivity check failed: max |sum - raw score| = {additivity:.2e}"
        )
    reasons = explain_core.reason_codes(contrib, X, names, int(cfg.explain.top_k))
    prob = booster.predict(X)
    table = pd.DataFrame(
        {
            "borrower_id": oot.borrower_id.to_numpy(),
            "snapshot": oot.snapshot.to_numpy(),
            "probability": prob,
            "label": oot.label.to_numpy(),
            "label_cause": oot.label_cause.to_numpy(),
            **reasons,
        }
    )
    out = p.models / "reasons.parquet"
    write_parquet(pa.Table.from_pandas(table, preserve_index=False), out)
    importance = explain_core.global_importance(contrib, names)
    write_json({"method": method, "importance": importance}, p.models / "shap_importance.json")
    plots = _shap_plots(
        contrib, X, names, p.models / "plots", int(cfg.explain.plot_sample), int(cfg.data.seed)
    )
    metrics = {
        "rows": float(len(X)),
        "seconds": seconds,
        "rows_per_s": len(X) / max(seconds, 1e-9),
        "additivity_max_abs": additivity,
    }
    closed = table[table.label == 1]
    if len(closed):
        metrics["fidelity_top1"] = float((closed.reason_1_cause == closed.label_cause).mean())
        top3 = np.zeros(len(closed), dtype=bool)
        for k in range(1, min(3, int(cfg.explain.top_k)) + 1):
            top3 |= closed[f"reason_{k}_cause"].to_numpy() == closed.label_cause.to_numpy()
        metrics["fidelity_top3"] = float(top3.mean())
    tracker.log_metrics(metrics)
    tracker.set_tags({"shap_method": method})
    tracker.log_artifact(out, "explain")
    tracker.log_artifact(p.models / "shap_importance.json", "explain")
    for plot in plots:
        tracker.log_artifact(plot, "plots")
    say(
        f"explain: {len(X):,} rows by {method} ({seconds:.1f}s), additivity {additivity:.1e} -> {out}"
    )
    part: dict[str, Any] = {"shap": {"method": method, "rows_per_s": metrics["rows_per_s"]}}
    if "fidelity_top1" in metrics:
        part["fidelity"] = {"top1": metrics["fidelity_top1"], "top3": metrics["fidelity_top3"]}
    return {"metrics": metrics, "importance": importance, "method": method, "summary": part}


def _shap_plots(
    contrib: np.ndarray, X: np.ndarray, names: list[str], out_dir: Path, n_plot: int, seed: int
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    idx = (
        rng.choice(len(X), size=min(n_plot, len(X)), replace=False)
        if len(X)
        else np.zeros(0, dtype=int)
    )
    exp = shap.Explanation(
        values=contrib[idx, :-1], base_values=contrib[idx, -1], data=X[idx], feature_names=names
    )
    paths = []
    for kind in ("bar", "beeswarm"):
        plt.figure()
        getattr(shap.plots, kind)(exp, max_display=15, show=False)
        path = out_dir / f"shap_{kind}.png"
        _save_fig(plt.gcf(), path)
        plt.close("all")
        paths.append(path)
    return paths


def _save_fig(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
