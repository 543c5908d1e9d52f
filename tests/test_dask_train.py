"""engine=dask trains with LightGBM's Dask estimator on the workers and evaluates from histograms.

The feature table is built once (local engine); the train stage then runs with each
engine on it. The Dask pass records the scheduler's task stream (which tasks ran, on
which worker) and makes the in-process paths that would load the table fail.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from dask.utils import key_split
from distributed import get_task_stream

from pipeline.adapters import distributed
from pipeline.adapters.tracking import Tracker
from pipeline.stages import train as train_stage
from pipeline.stages.features import features
from pipeline.stages.generate import generate

OFF = Tracker("", "", "", enabled=False)


def test_best_iteration_follows_the_early_stopping_rule():
    # validation AUC rising to round 4, then flat or lower: with patience 3, round 4 is kept
    aucs = [0.60, 0.65, 0.70, 0.72, 0.72, 0.71, 0.70, 0.75]
    n_bins = 200
    curve = np.zeros((len(aucs), 2, n_bins))
    for t, a in enumerate(aucs):
        # 1000 negatives in bin 0 and 1000 positives: a share `a` above them, the rest tied
        curve[t, 0, 0] = 1000
        curve[t, 1, 1] = 1000 * (2 * a - 1)
        curve[t, 1, 0] = 1000 * (2 - 2 * a)
    best, seen = distributed.best_iteration(curve, patience=3)
    assert best == 4
    assert seen == pytest.approx(aucs[:7])  # stops once 3 rounds passed without a gain
    best, seen = distributed.best_iteration(curve, patience=10)
    assert best == 8 and len(seen) == 8


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the feature table was loaded in the client process under engine=dask")


@pytest.mark.slow
def test_training_on_dask_matches_local(make_cfg, tmp_path, monkeypatch):
    root = tmp_path / "world"
    base = ["data.n_borrowers=3000", "tracking=off", "engine.memory_limit=2GiB"]
    cfg = make_cfg(*base, root=root)
    generate(cfg, OFF)
    features(cfg, OFF)
    local = train_stage.train(cfg, OFF)
    local_auc = local.metrics["oot"]["auc"]

    tasks: list[tuple[str, str]] = []
    workers: set[str] = set()
    real = distributed.client_for

    @contextlib.contextmanager
    def recording(engine: Any):
        with real(engine) as client:
            with get_task_stream(client) as stream:
                yield client
            workers.update(client.scheduler_info()["workers"])
        tasks.extend((key_split(t["key"]), t["worker"]) for t in stream.data)

    cfg = make_cfg(*base, "engine=dask", "engine.memory_limit=2GiB", root=root)
    with monkeypatch.context() as m:
        m.setattr(distributed, "client_for", recording)
        m.setattr(train_stage, "_simulator_data", _refuse)
        m.setattr(train_stage, "entry_row_groups", _refuse)
        res = train_stage.train(cfg, OFF)

    # LightGBM's training tasks, the validation curve and the histograms ran on the workers
    ran = Counter(name for name, _ in tasks)
    assert ran["train_part"] >= 1, ran
    assert ran["curve_part"] >= 2 and ran["hist_part"] >= 1, ran
    assert tasks and all(w in workers for _, w in tasks)

    assert local.summary["model"]["engine"] == "local"
    assert res.summary["model"]["engine"] == "dask"
    assert abs(res.metrics["oot"]["auc"] - local_auc) < 0.01, (res.metrics["oot"], local_auc)
    # the binned AUC states its own bound, and the bound is small at these bin counts
    assert 0 < res.metrics["oot"]["auc_error_bound"] < 2e-3

    models = root / "models"
    meta = json.loads((models / "model.json").read_text())
    assert (
        meta["engine"] == "dask"
        and meta["best_iteration"] == res.summary["model"]["best_iteration"]
    )
    assert meta["params"]["monotone_constraints"] == train_stage.monotone_vector(
        meta["feature_names"]
    )
    evaluation = json.loads((models / "evaluation.json").read_text())
    assert evaluation["model"]["engine"] == "dask"
    assert (models / "gains_oot.csv").exists() and (models / "calibration.json").exists()
    # the saved model keeps the rounds early stopping chose, and scores like the summary says
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    booster = lgb.Booster(model_file=str(models / "model.txt"))
    assert booster.current_iteration() == meta["best_iteration"]
    table = pd.read_parquet(root / "data" / "processed" / "features.parquet")
    oot = table[table.split == "oot"]
    exact = roc_auc_score(oot.label, booster.predict(oot[meta["feature_names"]].to_numpy()))
    assert abs(exact - res.metrics["oot"]["auc"]) <= res.metrics["oot"]["auc_error_bound"] + 1e-9


def test_features_and_label_reach_lightgbm_in_the_same_partitions(tmp_path):
    """Dask cuts a Parquet query into partitions by the bytes of the columns it reads;
    lazily, the features and the label alone were cut differently, and LightGBM's Dask
    estimator, pairing them partition by partition, failed on a 3,000,000-borrower table.
    A small partition size makes this table behave like that one."""
    import dask
    import pandas as pd
    from distributed import Client, LocalCluster

    rng = np.random.default_rng(0)
    n, names = 24_000, [f"f{i}" for i in range(30)]
    df = pd.DataFrame(rng.normal(size=(n, len(names))).astype("float32"), columns=names)
    df["label"] = (df.f0 + rng.normal(size=n) > 0).astype("int8")
    df["split"] = np.where(np.arange(n) % 5 == 0, "valid", "train")
    path = tmp_path / "features.parquet"  # 24 pieces, as a big file's row groups are read
    path.mkdir()
    for i in range(24):
        df.iloc[i * 1_000 : (i + 1) * 1_000].to_parquet(path / f"part-{i:02d}.parquet")
    params = {"objective": "binary", "learning_rate": 0.1, "num_leaves": 7, "verbosity": -1}
    with dask.config.set({"dataframe.parquet.minimum-partition-size": "1MB"}):
        lazy = distributed.split_frame(path, names, "train")
        assert lazy[names].optimize().npartitions != lazy["label"].optimize().npartitions
        with (
            LocalCluster(
                n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            X, y = distributed.training_parts(path, names, "train", 2)
            assert X.npartitions == y.npartitions
            assert X.map_partitions(len).compute().tolist() == (
                y.map_partitions(len).compute().tolist()
            )
            assert list(X.dtypes.unique()) == [np.dtype("float32")] and y.dtype == "int32"
            fit = distributed.fit_on_cluster(client, path, names, params, 5, patience=3)
    assert fit.rounds == 5 and len(fit.valid_y) == int((df.split == "valid").sum())


@pytest.mark.slow
def test_score_after_dask_training_uses_the_dask_model(tmp_path):
    """engine=dask ends training as the local engine does: the model is registered,
    judged for champion and logged for serving, so ``score`` then uses it (not an older
    champion, not the local file by default)."""
    from helpers import run_world
    from mlflow.tracking import MlflowClient

    from pipeline.adapters.catalog import data_digest
    from pipeline.adapters.model_registry import DATA_DIGEST_TAG, registered_name

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = [f"tracking.uri={uri}", f"tracking.artifact_root={tmp_path / 'mlartifacts'}"]
    root = tmp_path / "world"
    for stage in ("generate", "features"):
        run_world(root, base, stage)
    cfg, summary = run_world(root, [*base, "engine=dask", "engine.memory_limit=2GiB"], "train")
    champion = summary["champion"]
    assert champion["promoted"] is True  # the first model of a fresh registry
    assert summary["serving"]["alias"] == cfg.model.champion_alias
    name, version = registered_name(cfg), champion["version"]
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(client.get_model_version(name, str(version)).run_id)
    assert run.data.tags["engine"] == "dask"
    # the version is the Dask run's, trained on this world's feature table
    features_path = root / "data" / "processed" / "features.parquet"
    assert run.data.tags[DATA_DIGEST_TAG] == data_digest(features_path)
    assert json.loads((root / "models" / "model.json").read_text())["engine"] == "dask"

    _, scored = run_world(root, base, "score")
    assert scored.source == f"registry models:/{name}@{cfg.model.champion_alias} (v{version})"
    rows = pd.read_parquet(root / "models" / "scores.parquet")
    assert set(rows.model_source) == {scored.source}
