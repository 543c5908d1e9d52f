"""Optuna sweep: two trials at a time on one SQLite store, nested under one sweep run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from pipeline.adapters.tracking import from_config
from pipeline.base.config import REPO_ROOT
from pipeline.stages.driver import run_pipeline

pytestmark = pytest.mark.slow


def test_parallel_sweep_nests_trials_and_shares_the_store(make_cfg, tmp_path):
    # data and features once; the sweep only retrains
    small = ["data.n_borrowers=1000", "simulator.chunk_size=500", "model.n_estimators=60"]
    cfg = make_cfg(*small, "tracking=off")
    run_pipeline(cfg, from_config(cfg.tracking), ["generate", "features"])
    args = [
        sys.executable,
        "-m",
        "pipeline",
        "train",
        "--multirun",
        "+sweep=lightgbm",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.launcher.n_jobs=2",
        f"paths.root={tmp_path}",
        "simulator.oracle_rows=300",
        "simulator.oracle_futures=8",
        "model.baselines=false",
        *small,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("closure-risk")
    runs = client.search_runs([exp.experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert len(sweeps) == 1
    parent = sweeps[0]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(r.data.tags["sweep_trial"]) for r in trials) == [0, 1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in trials)
    # every trial trained with its own parameters and wrote its model in its own folder
    leaves = {r.data.params["model.num_leaves"] for r in trials}
    assert len(leaves) > 1
    history = client.get_metric_history(parent.info.run_id, "trial.valid.auc")
    assert len(history) == 4 and all(0.5 < m.value <= 1 for m in history)
    models = list((tmp_path / "outputs" / "multirun").rglob("models/model.txt"))
    assert len(models) == 4
    # Optuna saw the objective (validation AUC) of every trial
    best = list((tmp_path / "outputs" / "multirun").rglob("optimization_results.yaml"))
    assert best and "best_value" in best[0].read_text()
