"""Helpers shared by the tests: the real Hydra config, composed and shrunk, and a whole run.

Imported as ``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``); fixtures
stay in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipeline.base.config import REPO_ROOT, register_configs

register_configs()

#: The German credit table shipped for the bring-your-own-table examples.
GERMAN = REPO_ROOT / "data" / "external" / "german_credit" / "german_credit.csv"

#: smaller than SMALL: enough rows for every stage, seconds per stage
TINY = [
    "data.n_borrowers=600",
    "simulator.chunk_size=300",
    "simulator.oracle_rows=200",
    "simulator.oracle_futures=4",
    "model.n_estimators=30",
    "explain.plot_sample=200",
]


SMALL = [
    "data.n_borrowers=2000",
    "simulator.chunk_size=512",
    "simulator.oracle_rows=600",
    "simulator.oracle_futures=16",
    "model.n_estimators=200",
    "explain.plot_sample=500",
]


#: an empty MLflow SQLite store of this test run (:func:`blank_store`), set by conftest
BLANK_STORE: list[Path] = []


def compose_config(root: Path, overrides: list[str] | None = None, stage: str = "run") -> Any:
    """The real config with every output (and the MLflow store) under ``root``.

    A local SQLite store that does not exist yet starts as a copy of this test run's
    :func:`blank_store` (MLflow builds a new one through all its schema migrations, about
    2 s). A root that only the command line opens (test_e2e, test_readme and most of
    the subprocess runs) still gets a store MLflow builds from nothing.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config", overrides=[f"paths.root={root}", f"stage={stage}", *(overrides or [])]
        )
    try:  # a config a test makes broken on purpose is left for the stages to refuse
        uri = str(cfg.tracking.uri) if BLANK_STORE and cfg.tracking.enabled is True else ""
    except Exception:  # noqa: BLE001 - OmegaConf's errors of resolution and of type
        uri = ""
    store = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and not store.exists() and store.parent.is_dir():
        shutil.copyfile(BLANK_STORE[0], store)
    return cfg


def blank_store(base: Path) -> Path:
    """An MLflow SQLite store with every migration applied and no experiment in it, made
    once per test run by the installed MLflow. Its default experiment is removed: MLflow
    makes it again, at the new store's own artifact root, when the copy is first opened."""

    def build(root: Path) -> str:
        import sqlite3

        from mlflow.tracking import MlflowClient

        root.mkdir(parents=True)
        MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").search_experiments()
        with contextlib.closing(sqlite3.connect(root / "mlflow.db")) as con, con:
            con.execute("DELETE FROM experiments WHERE experiment_id = 0")
        return "blank"

    root, _ = built_once(base, "blank-store", build)
    return root / "mlflow.db"


def run_world(root: Path, overrides: list[str], stage: str = "run") -> tuple[Any, dict[str, Any]]:
    """Compose the shrunk real config with ``overrides`` and run ``stage`` under ``root``."""
    from pipeline.stages.driver import execute

    cfg = compose_config(root, [*SMALL, *overrides], stage)
    return cfg, execute(cfg, [])


#: the shared world: a whole ``run`` of the SMALL world, MLflow tracking under its root
SHARED_WORLD: list[str] = []


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (the test workers of one run)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def built_once(base: Path, name: str, build: Callable[[Path], str]) -> tuple[Path, str]:
    """``base/name``, built once per test run by ``build(root)`` and reused.

    The first process to take the lock builds it and records what ``build`` returned
    last (``base/name.record``); every later caller, in this process or another worker
    of the same run, finds that record and reuses the folder. A build that did not
    finish (no record) is started again from nothing."""
    root = base / name
    record = base / f"{name}.record"
    with file_lock(base / f"{name}.lock"):
        if not record.exists():
            shutil.rmtree(root, ignore_errors=True)
            text = build(root)
            part = record.with_name(record.name + ".part")
            part.write_text(text)
            part.rename(record)
    return root, record.read_text()


def shared_world(base: Path) -> tuple[Path, dict[str, Any]]:
    """The trained world that tests only read: the whole pipeline (SMALL, overrides
    :data:`SHARED_WORLD`) run into ``base/shared-world`` once per test run
    (:func:`built_once`), with the run's summary. Tests that change outputs copy the
    folders they change."""

    def build(root: Path) -> str:
        return json.dumps(run_world(root, SHARED_WORLD)[1], default=str)

    root, summary = built_once(base, "shared-world", build)
    return root, json.loads(summary)


def run_base(factory: pytest.TempPathFactory) -> Path:
    """The folder every process of this test run shares (the xdist workers' base
    temporary folders have one parent): where the worlds built once per run live."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def small_data(base: Path) -> Path:
    """The SMALL world's ``data/`` (the generate and features stages' outputs, manifests
    included), built once per test run under ``base`` (:func:`built_once`)."""

    def build(root: Path) -> str:
        for stage in ("generate", "features"):
            run_world(root, ["tracking.enabled=false"], stage)
        return "done"

    return built_once(base, "small-data", build)[0] / "data"


def seed_small_data(factory: pytest.TempPathFactory, root: Path) -> None:
    """A copy of the SMALL world's ``data/`` under ``root``, for a module that trains
    its own models on the SMALL world: its generate and features stages find their
    outputs up to date (the manifests hold the config key and every file's digest, so a
    config that changes the data recomputes it) and keep them, instead of simulating
    the same world again."""
    shutil.copytree(small_data(run_base(factory)), root / "data")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def model_server(root: Path, model_uri: str, log_path: Path) -> Iterator[int]:
    """``mlflow models serve`` of ``model_uri`` from ``root``'s store on a free port.

    Yields the port once ``/ping`` answers; stops the server (its whole process group)
    afterwards. Its output goes to ``log_path``, quoted when it fails to start.
    """
    port = free_port()
    bin_dir = Path(sys.executable).parent  # uvicorn is started from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "PATH": str(bin_dir) + os.pathsep + os.environ.get("PATH", ""),
    }
    argv = [str(bin_dir / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager"]
    argv += ["local", "-h", "127.0.0.1", "-p", str(port)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log_path.read_text()[-3000:])
                time.sleep(1)
            yield port
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def chromium() -> str:
    """The headless browser of the browser tests; skipped (or failed, where CI requires
    it) when none is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    if os.environ.get("CLOSURE_RISK_REQUIRE_CHROMIUM"):
        pytest.fail("Chromium is required here but not installed (.ci/install-chromium)")
    pytest.skip("Chromium is not installed (bash .ci/install-chromium installs it)")


def catalog_in(folder: Path) -> Any:
    """A catalog whose four folders are ``folder`` (tests that write one table there)."""
    from pipeline.adapters.catalog import Catalog

    return Catalog(folder, folder, folder, folder)


def load_feature_table(path: Path, columns: Any = None, split: Any = None) -> Any:
    """The feature table at ``path``, read and checked by the catalog, as pandas."""
    from pipeline.adapters.catalog import read_entry

    return read_entry("features", path, columns, split).to_pandas()


def remove_parts(models: Path, patterns: Any) -> None:
    """Remove what ``patterns`` (globs under ``models``) match, as the catalog removes an
    entry's files: during a staging, at its publication."""
    from pipeline.base.io import remove_paths, staged_glob

    for pattern in patterns:
        remove_paths(staged_glob(models, pattern))


def information_value(x: Any, y: Any, n_bins: int = 10) -> float:
    """Information value of one feature on equal-count bins (ties kept together).

    The plain reference for the fused stability report of the features stage and for
    the screening's IV: one feature, one pass, no shared deciles.
    """
    import numpy as np

    from pipeline.core.metrics import decile_edges, iv_from_counts

    x = np.asarray(x, dtype=float)
    y = np.asarray(y).astype(int)
    ok = np.isfinite(x)
    x, y = x[ok], y[ok]
    if len(x) == 0 or y.sum() == 0 or y.sum() == len(y):
        return float("nan")
    edges = decile_edges(x, n_bins)
    b = np.searchsorted(edges, x, side="right")
    pos = np.bincount(b, weights=y, minlength=len(edges) + 1)
    neg = np.bincount(b, weights=1 - y, minlength=len(edges) + 1)
    return iv_from_counts(pos, neg)


def cause_matrix(
    contrib: Any, feature_names: Any, W: Any = None, shift: Any = None
) -> tuple[Any, list[str]]:
    """Cause scores ``(n, C + 1)``: SHAP (minus ``shift``) split by ``W`` within the
    registry's links; the whole-matrix reference for the reasons' per-row cause scores."""
    from pipeline.core.explain import CAUSE_COLUMNS, attribution_matrix, registry_weights

    p = len(feature_names)
    if W is None:
        W = attribution_matrix(feature_names, "primary")
    W = registry_weights(W, feature_names)
    phi = contrib[:, :p]
    if shift is not None:
        phi = phi - shift
    return phi @ W, list(CAUSE_COLUMNS)


def reason_rule_breaches(
    out: Any,
    booster: Any,
    X: Any,
    names: list[str],
    reference: dict[str, Any],
    floor: float,
    pool: int = 5,
) -> list[str]:
    """Every reason in ``out`` (one row per row of ``X``) that breaks the rule, in words.

    Checked afresh from LightGBM's own contributions (``pred_contrib``) and the
    registry: a cited feature raises the row's risk, is among its ``pool`` largest
    positive contributions, is linked to the cause, and its value (the row's own) lies
    on the side the registry declares for that cause against ``reference`` (the
    training medians of model.json); a row under ``floor`` cites nothing and names a
    protective factor whose contribution is negative.
    """
    import numpy as np

    from pipeline.base.registry import BY_NAME, risk_side

    X = np.asarray(X, dtype=np.float64)
    phi = np.asarray(booster.predict(X, pred_contrib=True))[:, : len(names)]
    bad: list[str] = []
    prob = np.asarray(out["probability"], dtype=np.float64)
    for i in range(len(X)):
        low = prob[i] < floor
        for r in (1, 2, 3):
            cause = str(out[f"reason_{r}_cause"].iloc[i] or "")
            feat = str(out[f"reason_{r}_feature"].iloc[i] or "")
            if not cause:
                if feat:
                    bad.append(f"row {i} rank {r}: feature {feat} without a cause")
                continue
            if low:
                bad.append(f"row {i}: probability {prob[i]:.4f} < {floor} yet reason {cause}")
            j = names.index(feat)
            value = float(out[f"reason_{r}_value"].iloc[i])
            if not np.isclose(value, X[i, j], rtol=1e-6, equal_nan=False):
                bad.append(f"row {i}: {feat} shown as {value}, the row holds {X[i, j]}")
            if not phi[i, j] > 1e-6:
                bad.append(f"row {i}: {feat} contributes {phi[i, j]:+.5f} (not raising)")
            larger = int((phi[i] > phi[i, j] + 1e-6).sum())
            if larger >= pool:
                bad.append(f"row {i}: {feat} has {larger} larger contributions (pool {pool})")
            if cause not in BY_NAME[feat].causes:
                bad.append(f"row {i}: {feat} is not linked to {cause}")
            side, ref = risk_side(feat, cause), reference.get(feat)
            ok = ref is not None and ((side > 0 and X[i, j] > ref) or (side < 0 and X[i, j] < ref))
            if not ok:
                bad.append(
                    f"row {i}: {feat} = {X[i, j]} is not on the risky side ({side:+d}) of "
                    f"{ref} for {cause}"
                )
        if low:
            f1 = str(out["protect_1_feature"].iloc[i] or "")
            if f1 and not phi[i, names.index(f1)] < 1e-6:
                bad.append(f"row {i}: protective factor {f1} does not lower the risk")
            if not str(out["protect_1_en"].iloc[i]).startswith("no closure concern"):
                bad.append(f"row {i}: a row under the lowest tier is not told 'no closure concern'")
    return bad


def post_invocations_text(port: int, body: dict[str, Any]) -> tuple[int, str]:
    """POST ``body`` to a local scoring server; its status and answer as sent."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def post_invocations(port: int, body: dict[str, Any]) -> tuple[int, Any]:
    """POST ``body`` to a local scoring server; its status and parsed JSON answer."""
    status, text = post_invocations_text(port, body)
    return status, json.loads(text)
