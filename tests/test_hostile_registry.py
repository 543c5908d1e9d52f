"""One truth for "the current model": the hostile cases of the registry surface.

A training run that registered its model and then died before publishing, or a run with
tracking off that published a model the registry never saw, left the registry's champion
and ``models/`` describing different models; ``score`` (``model_source=auto``) then
silently scored with the champion while the summary and report described the other.
"""

from __future__ import annotations

import subprocess

import pytest
from helpers import TINY, compose_config

from pipeline.base.config import REPO_ROOT
from pipeline.base.io import DataError
from pipeline.stages.driver import execute

pytestmark = pytest.mark.slow

LIGHT = [*TINY, "model.baselines=false", "explain.advice_rows=0"]


def _score(root, *extra: str) -> dict:
    out = root / f"scores{len(extra)}.parquet"
    return execute(compose_config(root, [*LIGHT, f"score.output={out}", *extra], "score"), [])


def test_score_refuses_a_champion_that_is_not_the_published_model(tmp_path):
    for stage in ("generate", "features", "train"):
        summary = execute(compose_config(tmp_path, LIGHT, stage), [])
    # the UI hint opens this root's store, and the Makefile's UI reads it
    assert summary["ui"] == f"make ui ROOT={tmp_path.resolve()}"
    dry = subprocess.run(
        ["make", "-n", "ui", f"ROOT={tmp_path.resolve()}"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"sqlite:///{tmp_path.resolve()}/mlflow.db" in dry
    # the champion is the published model: scored as before
    _score(tmp_path)
    # a second model published without the registry knowing
    execute(compose_config(tmp_path, [*LIGHT, "tracking=off", "model.num_leaves=5"], "train"), [])
    with pytest.raises(
        DataError, match=r"is not the model published in .*model\.txt.*model_source"
    ):
        _score(tmp_path, "score.overwrite=true")
    # told which one to use, each works
    _score(tmp_path, "score.model_source=local", "score.overwrite=true")
    _score(tmp_path, "score.model_source=registry", "score.overwrite=true", "score.top_k=2")


def test_an_alias_moved_by_a_train_that_never_published_is_put_back(tmp_path, monkeypatch):
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline.stages import train as train_stage

    for stage in ("generate", "features"):
        execute(compose_config(tmp_path, LIGHT, stage), [])

    def fail(*args, **kwargs):
        raise RuntimeError("died after registering, before publishing")

    monkeypatch.setattr(train_stage, "_report", fail)
    with pytest.raises(RuntimeError, match="before publishing"):
        execute(compose_config(tmp_path, LIGHT, "train"), [])
    assert not (tmp_path / "models" / "model.txt").exists()  # nothing was published
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    versions = client.search_model_versions("name='closure-risk-lgbm'")
    assert len(versions) == 1  # the version was registered...
    for name in ("closure-risk-lgbm", "closure-risk-lgbm-serving"):
        with pytest.raises(MlflowException):  # ...and its alias taken back
            client.get_model_version_by_alias(name, "champion")
    monkeypatch.undo()
    execute(compose_config(tmp_path, LIGHT, "train"), [])
    assert int(client.get_model_version_by_alias("closure-risk-lgbm", "champion").version) == 2


def test_the_ui_hint_names_the_folder_of_the_store_not_paths_root(tmp_path):
    from pipeline.base.config import REPO_ROOT
    from pipeline.stages.driver import ui_hint

    store = tmp_path / "sweep"
    hint = ui_hint(f"sqlite:///{store}/mlflow.db", f"{store}/mlartifacts")
    assert hint == f"make ui ROOT={store.resolve()}"
    assert ui_hint(f"sqlite:///{REPO_ROOT}/mlflow.db", f"{REPO_ROOT}/mlartifacts") == "make ui"
    # a store `make ui` cannot open by ROOT gets the mlflow command itself
    other = ui_hint(f"sqlite:///{store}/runs.db", f"{store}/mlartifacts")
    assert other.startswith(".venv/bin/mlflow ui --backend-store-uri sqlite:///")
    assert "runs.db" in other
    elsewhere = ui_hint(f"sqlite:///{store}/mlflow.db", f"{tmp_path}/artifacts")
    assert elsewhere.startswith(".venv/bin/mlflow ui") and "artifacts" in elsewhere


def test_a_sweep_job_hints_at_the_sweeps_store(tmp_path):
    """A multirun job writes under its own folder but logs to the sweep's store."""
    from pipeline.stages.driver import isolate_job, ui_hint

    cfg = compose_config(tmp_path, LIGHT, "train")
    isolate_job(cfg, tmp_path / "outputs" / "multirun" / "0", ["train"])
    assert str(cfg.paths.root).endswith("multirun/0")
    assert ui_hint(str(cfg.tracking.uri), str(cfg.tracking.artifact_root)) == (
        f"make ui ROOT={tmp_path.resolve()}"
    )


def test_make_ui_names_the_runs_page_of_the_latest_experiment(tmp_path):
    """The UI's root page is MLflow's GenAI welcome page: `make ui` prints the runs page."""
    import sqlite3

    from pipeline.tools.ui_url import runs_page

    assert "no MLflow store" in runs_page(tmp_path, 5000)
    con = sqlite3.connect(tmp_path / "mlflow.db")
    con.executescript(
        "CREATE TABLE experiments (experiment_id INTEGER, lifecycle_stage TEXT);"
        "CREATE TABLE runs (run_uuid TEXT, experiment_id INTEGER, lifecycle_stage TEXT,"
        " start_time INTEGER);"
        "INSERT INTO experiments VALUES (0, 'active'), (3, 'active'), (4, 'deleted');"
    )
    con.commit()
    assert "no runs in" in runs_page(tmp_path, 5000)
    con.executescript(
        "INSERT INTO runs VALUES ('a', 0, 'active', 1), ('b', 3, 'active', 5),"
        " ('c', 4, 'active', 9), ('d', 0, 'deleted', 8);"
    )
    con.commit()
    con.close()
    line = runs_page(tmp_path, 5123)
    assert line == (
        "open the runs page: http://127.0.0.1:5123/#/experiments/3/runs"
        "?workflowType=machine_learning&viewStateShareKey=headline"
    )
    # the make target prints it before the UI starts, for the store it opens
    dry = subprocess.run(
        ["make", "-n", "ui", f"ROOT={tmp_path}", "PORT=5123"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f'pipeline.tools.ui_url --root "{tmp_path}" --port 5123' in dry
    assert dry.index("pipeline.tools.ui_url") < dry.index("mlflow ui")
