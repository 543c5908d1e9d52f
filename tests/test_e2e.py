"""The whole pipeline on ~2,000 borrowers with the real config and a private MLflow store."""

from __future__ import annotations

import json

import lightgbm as lgb
import mlflow.lightgbm
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.stages.driver import execute

pytestmark = pytest.mark.slow


def test_run_end_to_end_with_mlflow(make_cfg, tmp_path):
    cfg = make_cfg()
    summary = execute(cfg, ["data.n_borrowers=2000"])

    models = tmp_path / "models"
    for name in (
        "model.txt",
        "model.json",
        "reasons.parquet",
        "summary.json",
        "shap_importance.json",
    ):
        assert (models / name).exists(), name
    assert (models / "plots" / "shap_beeswarm.png").stat().st_size > 1000
    assert (tmp_path / "data" / "processed" / "features.parquet").exists()
    on_disk = json.loads((models / "summary.json").read_text())
    for key in ("n_rows", "mlflow_run_id"):
        assert key in on_disk
    assert on_disk["valid"]["auc"] > 0.6
    assert on_disk["oot"]["auc"] > 0.6, on_disk["oot"]
    assert 0 < on_disk["oot"]["brier"] < 0.25
    assert summary["mlflow_run_id"] == on_disk["mlflow_run_id"]
    assert not list(models.glob("*.pkl")) and not list(models.glob("*.pickle"))

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    assert exp.artifact_location.startswith("file://" + str(tmp_path))
    runs = client.search_runs([exp.experiment_id])
    parent = client.get_run(on_disk["mlflow_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["stage"] for r in children) == [
        "explain",
        "features",
        "generate",
        "policy",
        "report",
        "survival",
        "train",
    ]
    # the run the UI opens lists the models its train stage logged (model and serving)
    # and the serving model the survival stage logged again, with the cause model
    outputs = {m.model_id for m in parent.outputs.model_outputs}
    logged = client.search_logged_models([exp.experiment_id])
    train_id = next(r.info.run_id for r in children if r.data.tags["stage"] == "train")
    survival_id = next(r.info.run_id for r in children if r.data.tags["stage"] == "survival")
    by_stage = {
        sid: {m.model_id for m in logged if m.source_run_id == sid}
        for sid in (train_id, survival_id)
    }
    assert len(by_stage[train_id]) == 2 and len(by_stage[survival_id]) == 1
    assert outputs == by_stage[train_id] | by_stage[survival_id]
    assert parent.data.params["data.n_borrowers"] == "2000"
    assert parent.data.params["model.num_leaves"] == "31"
    assert "data.n_borrowers=2000" in parent.data.tags["overrides"]
    train_run = next(r for r in children if r.data.tags["stage"] == "train")
    assert train_run.data.metrics["oot.auc"] > 0.6
    assert {"valid.auc", "valid.ks", "valid.pr_auc", "valid.brier", "oot.ks"} <= set(
        train_run.data.metrics
    )
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config", "summary"} <= artifacts
    explain_run = next(r for r in children if r.data.tags["stage"] == "explain")
    plots = {a.path for a in client.list_artifacts(explain_run.info.run_id, "plots")}
    assert {"plots/shap_bar.png", "plots/shap_beeswarm.png"} <= plots
    versions = client.search_model_versions(f"name='{cfg.tracking.registered_model}'")
    assert len(versions) == 1
    version = versions[0]
    assert version.run_id == train_run.info.run_id
    # the version points at a logged model (models:/<model id>) made by the train run
    assert version.source.startswith("models:/m-"), version.source
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == train_run.info.run_id
    # the registered model is the booster written to models/model.txt
    registered = mlflow.lightgbm.load_model(logged.artifact_location)
    local = lgb.Booster(model_file=str(models / "model.txt"))
    feats = pd.read_parquet(tmp_path / "data" / "processed" / "features.parquet")
    X = feats[local.feature_name()].head(500).to_numpy(np.float32)
    np.testing.assert_array_equal(registered.predict(X), local.predict(X))

    # a second run lands in the same experiment, and unchanged stages are skipped
    summary2 = execute(cfg, [])
    assert summary2["mlflow_run_id"] != summary["mlflow_run_id"]
    parents = [
        r
        for r in client.search_runs([exp.experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    ]
    assert len(parents) == 2
    assert len(client.search_model_versions(f"name='{cfg.tracking.registered_model}'")) == 2
