"""No secret reaches a file, and the console stays calm.

One whole run through the command line, at a tiny size, with a password in
``engine.address``: afterwards no file anywhere under the run's root holds the password
(Hydra's own config copies included), and the console shows neither third-party warnings
nor artifact-download progress bars; those went to the invocation's log file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY

from pipeline.base.config import REPO_ROOT

pytestmark = pytest.mark.slow

PASSWORD = "Zq8-s3cret-Pw0rd"


@pytest.fixture(scope="module")
def cli_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("secret_run")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "PYTHONWARNINGS")
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            f"paths.root={root}",
            "engine=local",
            f"engine.address=tcp://closure:{PASSWORD}@127.0.0.1:8786",
            *TINY,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return root, r


def test_no_file_under_the_root_holds_the_password(cli_run):
    root, r = cli_run
    files = [p for p in root.rglob("*") if p.is_file()]
    # the run really wrote everywhere: data, models, the MLflow store, Hydra's folder
    for part in ("data", "models", "mlartifacts", "outputs"):
        assert any(part in p.relative_to(root).parts for p in files), part
    assert (root / "mlflow.db").exists()
    leaking = [p for p in files if PASSWORD.encode() in p.read_bytes()]
    assert not leaking, leaking
    assert not list(root.rglob(".hydra")), "Hydra wrote its config copies"
    assert PASSWORD not in r.stdout + r.stderr


def test_model_metadata_holds_no_password(cli_run):
    root, _ = cli_run
    metas = list(root.rglob("model.json"))
    assert metas
    assert not [p for p in metas if PASSWORD.encode() in p.read_bytes()]


def test_console_shows_no_third_party_warnings_or_progress_bars(cli_run):
    root, r = cli_run
    assert "Downloading artifacts" not in r.stderr + r.stdout
    warning_lines = [ln for ln in r.stderr.splitlines() if "Warning" in ln or "WARNING" in ln]
    assert not warning_lines, warning_lines
    assert " INFO " not in r.stderr  # MLflow's (and Dask's) notices
    # what third-party libraries said is in the invocation's log file instead
    logs = list((root / "outputs").rglob("pipeline.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "mlflow" in text
    assert "=== closure-risk run summary ===" in r.stdout
