"""The MLflow UI as a modeller opens it, in a real (headless) browser.

Two runs are logged with the project's tracker, ``mlflow ui`` serves their store, and
headless Chromium loads the experiment page the project links to: both readable run
names, their data and their out-of-time AUC must be on the page, and a screenshot of it
must be painted.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import chromium

from pipeline.adapters.tracking import Tracker

# as in tests/test_report.py; host names do not resolve, only the local UI is reachable
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
WINDOW = (1920, 1000)
RUNS = {"run n=2k seed=7": 0.8123, "run n=2k seed=8": 0.7987}
WORLD = {"run n=2k seed=7": "a1b2c3d4e5f6", "run n=2k seed=8": "0f9e8d7c6b5a"}


def _browse(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    w, h = WINDOW
    return subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={w},{h}",
            "--virtual-time-budget=20000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_runs(uri: str, artifacts: Path) -> str:
    """Two pipeline-shaped runs (parent and stage runs) on two worlds; the experiment id."""
    for name, auc in RUNS.items():
        t = Tracker(uri, str(artifacts), "closure-risk")
        with t.run(name, tags={"stages": "generate,train"}):
            t.log_params({"data.n_borrowers": 2000, "data.seed": int(name[-1])})
            with t.run("generate", tags={"stage": "generate"}):
                t.log_dataset(
                    f"world baseline seed={name[-1]} n=2k",
                    WORLD[name],
                    artifacts / "raw",
                    profile={"seed": int(name[-1]), "n_borrowers": 2000},
                    context="source",
                )
            with t.run("train", tags={"stage": "train"}):
                t.log_metrics({"oot.auc": auc, "oot.ks": 0.4, "oracle_gap": 0.02})
    return str(t.client.get_experiment_by_name("closure-risk").experiment_id)


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[tuple[str, Tracker]]:
    """``mlflow ui`` on a fresh store holding the two runs; its base URL and a tracker."""
    chromium()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _log_runs(uri, tmp_path / "mlartifacts")
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen(
        [str(mlflow_bin), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow ui did not start:\n{(tmp_path / 'ui.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base, Tracker(uri, str(tmp_path / "mlartifacts"), "closure-risk")
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_runs_page_shows_readable_names_data_and_out_of_time_auc(ui, tmp_path):
    base, tracker = ui
    url = tracker.ui_url(base)
    assert "workflowType=machine_learning" in url  # the training runs, not the GenAI overview
    dom = _browse(url, tmp_path / "p1", "--dump-dom").stdout
    assert ">Runs<" in dom and ">Overview<" not in dom, dom[-3000:]
    for name, auc in RUNS.items():
        assert f">{name}<" in dom, name
        assert f">{auc}<" in dom, auc  # the oot_auc column of the saved view
        assert WORLD[name] in dom  # the Dataset column: the world's digest
    assert ">oot_auc<" in dom

    shot = tmp_path / "runs.png"
    _browse(url, tmp_path / "p2", f"--screenshot={shot}")
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    # a painted page, not a blank one: many distinct colours (text, icons, run colours)
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200, len(colours)
    keep = os.environ.get("CLOSURE_RISK_UI_SCREENSHOT")
    if keep:  # where to keep the screenshot for a person to look at
        shutil.copy(shot, keep)
