"""engine=dask gives the same outputs as the local engine (a local two-worker cluster).

Each test also proves the cluster did the work: every client the stages open is wrapped so
that the scheduler's task stream is recorded (which tasks ran, on which worker), and in the
Dask pass the in-process paths are made to fail.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from dask.utils import key_split
from distributed import get_task_stream

from pipeline.adapters import distributed
from pipeline.adapters.tracking import Tracker
from pipeline.base.io import file_digest
from pipeline.core import simulate as sim_core
from pipeline.stages import features as features_stage
from pipeline.stages.generate import generate

pytestmark = pytest.mark.slow
OFF = Tracker("", "", "", enabled=False)


class TaskLog:
    """Tasks run by the clusters the stages open: task name and the worker that ran it.

    The task name is Dask's prefix of the key, the function's name less leading underscores
    (``_shap_block`` runs as ``shap_block``).
    """

    def __init__(self) -> None:
        self.tasks: list[tuple[str, str]] = []
        self.workers: set[str] = set()  # every worker address of those clusters

    def counts(self) -> Counter[str]:
        return Counter(name for name, _ in self.tasks)

    def on_workers(self) -> bool:
        return bool(self.tasks) and all(w in self.workers for _, w in self.tasks)


@pytest.fixture
def dask_tasks(monkeypatch) -> TaskLog:
    """Record the task stream of every client ``distributed.client_for`` hands out."""
    log = TaskLog()
    real = distributed.client_for

    @contextlib.contextmanager
    def recording(engine: Any):
        with real(engine) as client:
            with get_task_stream(client) as stream:
                yield client
            log.workers |= set(client.scheduler_info()["workers"])
        log.tasks += [(key_split(t["key"]), t["worker"]) for t in stream.data]

    monkeypatch.setattr(distributed, "client_for", recording)
    return log


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("an in-process path ran under engine=dask")


@contextlib.contextmanager
def _cluster_only(monkeypatch):
    """Within the block, simulating or building features in this process fails."""
    with monkeypatch.context() as m:
        m.setattr(sim_core, "iter_chunks", _refuse)
        m.setattr(features_stage, "_local_blocks", _refuse)
        yield


@pytest.fixture(scope="module")
def client():
    from omegaconf import OmegaConf

    from pipeline.adapters import distributed
    from pipeline.base.config import EngineConfig

    engine = OmegaConf.structured(EngineConfig(kind="dask", n_workers=2, memory_limit="2GiB"))
    with distributed.client_for(engine) as c:
        yield c


def test_generate_on_dask_is_bit_identical(make_cfg, tmp_path, dask_tasks, monkeypatch):
    digests = []
    for engine in ("local", "dask"):
        root = tmp_path / engine
        cfg = make_cfg(
            "data.n_borrowers=1500", f"engine={engine}", "engine.memory_limit=2GiB", root=root
        )
        with _cluster_only(monkeypatch) if engine == "dask" else contextlib.nullcontext():
            generate(cfg, OFF)
        files = sorted((root / "data" / "raw").glob("*.parquet")) + sorted(
            (root / "data" / "truth").glob("*.parquet")
        )
        digests.append({f.name: file_digest(f) for f in files})
        assert not list((root / "data" / "raw").glob(".staging-*"))
    assert digests[0] == digests[1]
    # one simulation task per chunk, each run by a worker of the cluster
    # (a going concern simulates more accounts than its book: the world's own size)
    from pipeline.stages.generate import world_spec

    n_chunks = world_spec(cfg).n_chunks
    assert n_chunks == math.ceil(world_spec(cfg).n_borrowers / cfg.simulator.chunk_size) > 1
    assert dask_tasks.counts() == {"simulate_to_parts": n_chunks}
    assert dask_tasks.on_workers()


def test_a_failure_in_the_client_stops_the_cluster_blocks(make_cfg, tmp_path, monkeypatch):
    """A block the client cannot use ends the stage: no file, the blocks not yet submitted
    never run (a few per worker are in flight, not all), and nothing fails unseen while
    the cluster is taken down."""
    import sys

    cfg = make_cfg("data.n_borrowers=1500", "engine=local", root=tmp_path)
    generate(cfg, OFF)
    raw, out = tmp_path / "data" / "raw", tmp_path / "features.parquet"
    dask = make_cfg("engine=dask", "engine.n_workers=2", "engine.memory_limit=2GiB").engine
    n_blocks = math.ceil(1500 / 100)

    def refuse(*args: Any) -> None:
        raise RuntimeError("the client refuses the first block")

    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(features_stage, "_same_status", refuse)
    log = TaskLog()
    real = distributed.client_for

    @contextlib.contextmanager
    def recording(engine: Any):
        with real(engine) as client:
            stream = get_task_stream(client)
            stream.__enter__()
            try:
                yield client
            finally:  # the stage fails: record what ran all the same
                stream.__exit__(None, None, None)
                log.tasks += [(key_split(t["key"]), t["worker"]) for t in stream.data]

    monkeypatch.setattr(distributed, "client_for", recording)
    spec = features_stage.feature_spec(cfg)
    with pytest.raises(RuntimeError, match="first block"):
        features_stage.write_features(raw, out, 36, spec, 100, engine=dask)
    assert not out.exists()
    assert 1 <= log.counts()["feature_block"] <= 2 * 2 + 2 < n_blocks
    assert unraisable == []


def test_shap_on_dask_matches_local(client):
    import lightgbm as lgb

    from pipeline.core.explain import contributions

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 8)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=3000) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 15}, lgb.Dataset(X, y), 30
    )
    local, _ = contributions(booster, X)
    with get_task_stream(client) as stream:
        remote = distributed.shap_values(client, booster, X, block_rows=700)
    assert remote.shape == local.shape
    # one task per block of 700 rows, each run by one of the cluster's workers
    ran = [(key_split(t["key"]), t["worker"]) for t in stream.data]
    assert Counter(name for name, _ in ran) == {"shap_block": math.ceil(3000 / 700)}
    assert {w for _, w in ran} <= set(client.scheduler_info()["workers"])
    assert np.max(np.abs(remote - local)) < 1e-9


def test_whole_pipeline_on_dask_matches_local(make_cfg, tmp_path, dask_tasks, monkeypatch):
    """`run engine=dask`: same raw data and features bit for bit; a model trained on the
    workers that scores like the local one; SHAP values on the cluster equal to local ones."""
    import json
    import shutil

    import pandas as pd

    from pipeline.stages.driver import execute

    def cfg_for(engine: str, root, *more: str):
        return make_cfg(
            "data.n_borrowers=1500",
            "data.block_size=500",
            f"engine={engine}",
            "engine.memory_limit=2GiB",
            "tracking=off",
            "explain.advice_rows=5",
            *more,
            root=root,
        )

    roots = {}
    for engine in ("local", "dask"):
        roots[engine] = tmp_path / f"run_{engine}"
        cfg = cfg_for(engine, roots[engine])
        with _cluster_only(monkeypatch) if engine == "dask" else contextlib.nullcontext():
            execute(cfg, [])
    # the world, the feature blocks, the training and the SHAP values ran on the cluster
    ran = dask_tasks.counts()
    # a going concern simulates more accounts than its book of 1,500: the world's own size
    from pipeline.stages.generate import world_spec

    n_ids = world_spec(cfg).n_borrowers
    assert ran["simulate_to_parts"] == world_spec(cfg).n_chunks
    assert ran["feature_block"] == math.ceil(n_ids / 500)
    assert ran["status_block"] >= 1  # the first pass (first-event months) ran there too
    assert ran["train_part"] >= 1 and ran["shap_block"] >= 1, ran
    assert dask_tasks.on_workers()
    for rel in ("data/raw/account_months.parquet", "data/processed/features.parquet"):
        assert file_digest(roots["local"] / rel) == file_digest(roots["dask"] / rel), rel
    # LightGBM's Dask training is not bit-identical to the local one: the partitions reach
    # it in the order the workers finish, so bagging samples other rows. On this small
    # world (1,500 borrowers) that alone moves the out-of-time AUC by up to ~0.015; the
    # 0.01 agreement is checked on a larger world in tests/test_dask_train.py
    summary = {e: json.loads((r / "models" / "summary.json").read_text()) for e, r in roots.items()}
    assert abs(summary["dask"]["oot"]["auc"] - summary["local"]["oot"]["auc"]) < 0.03, summary
    # the explain stage run locally on the Dask run's model gives the same reasons
    again = tmp_path / "explain_local"
    shutil.copytree(roots["dask"], again)
    (again / "models" / "reasons.parquet").unlink()  # must be computed anew
    explain = cfg_for("local", again, "force=true")
    explain.stage = "explain"
    with monkeypatch.context() as m:  # no cluster this time
        m.setattr(distributed, "client_for", _refuse)
        execute(explain, [])
    a = pd.read_parquet(again / "models" / "reasons.parquet")
    b = pd.read_parquet(roots["dask"] / "models" / "reasons.parquet")
    assert len(a) == len(b) > 0
    assert np.allclose(a.probability, b.probability, atol=1e-12)
    assert np.allclose(a.reason_1_shap, b.reason_1_shap, atol=1e-9)
    assert (a.reason_1_cause == b.reason_1_cause).all()


def test_scoring_on_dask_matches_local(make_cfg, tmp_path, dask_tasks, monkeypatch):
    """`score engine=dask`: features and SHAP of new borrowers on the cluster, same scores."""
    import pandas as pd

    from pipeline.stages.driver import execute

    root = tmp_path / "score"
    base = ["data.n_borrowers=1200", "data.block_size=400", "tracking=off", "explain.advice_rows=5"]
    execute(make_cfg(*base, root=root), [])
    frames = {}
    for engine in ("local", "dask"):
        out = tmp_path / f"scores_{engine}.parquet"
        cfg = make_cfg(
            *base, f"engine={engine}", "engine.memory_limit=2GiB", f"score.output={out}", root=root
        )
        cfg.stage = "score"
        with _cluster_only(monkeypatch) if engine == "dask" else contextlib.nullcontext():
            execute(cfg, [])
        frames[engine] = pd.read_parquet(out)
    # the new borrowers' features and SHAP values came from the cluster
    ran = dask_tasks.counts()
    assert set(ran) == {"status_block", "feature_block", "shap_block"}
    from pipeline.stages.generate import world_spec

    # feature blocks cover the world's ids (a going concern's exceed its book of 1,200)
    assert ran["feature_block"] == math.ceil(world_spec(cfg).n_borrowers / 400)
    assert dask_tasks.on_workers()
    a, b = frames["local"], frames["dask"]
    assert len(a) == len(b) > 0
    assert (a.borrower_id.to_numpy() == b.borrower_id.to_numpy()).all()
    assert np.allclose(a.probability, b.probability, atol=1e-12)
    assert (a.reason_1_cause == b.reason_1_cause).all()


def test_features_spill_to_disk_and_stay_identical(make_cfg, tmp_path):
    """A worker told to keep almost nothing in memory moves block results to disk; same table."""
    from pipeline.stages.driver import execute
    from pipeline.stages.features import features

    roots = {}
    for engine in ("local", "dask"):
        root = tmp_path / engine
        base = ["data.n_borrowers=1500", "data.block_size=250", "tracking=off"]
        execute(make_cfg(*base, "stage=generate", root=root), [])
        cfg = make_cfg(
            *base,
            f"engine={engine}",
            "engine.n_workers=1",
            "engine.memory_limit=2GiB",
            "engine.spill_target=0.0001",  # ~200 KiB: every finished block goes to disk
            root=root,
        )
        res = features(cfg, OFF)
        roots[engine] = root
        if engine == "dask":
            assert res.stats["dask_spilled_bytes"] > 100_000, res
    rel = "data/processed/features.parquet"
    assert file_digest(roots["local"] / rel) == file_digest(roots["dask"] / rel)
