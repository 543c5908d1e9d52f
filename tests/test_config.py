from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException

from pipeline.base.config import REPO_ROOT, ConfigError, validate


def test_default_config_composes_and_validates(make_cfg):
    cfg = make_cfg(small=False)
    validate(cfg)
    assert cfg.data.n_borrowers == 20_000
    assert cfg.tracking.uri.startswith("sqlite:///") and cfg.tracking.uri.endswith("/mlflow.db")
    assert str(cfg.paths.root) in cfg.tracking.uri


def test_misspelt_key_fails_naming_it(make_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg("model.num_leavs=3")
    assert "num_leavs" in str(err.value.__cause__ or err.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.n_borrowers=-5", "data.n_borrowers"),
        ("data.n_borrowers=0", "data.n_borrowers"),
        ("simulator.draw_prob=1.5", "simulator.draw_prob"),
        ("simulator.stop_shock_rate=-0.1", "simulator.stop_shock_rate"),
        ("+simulator.closure_base.made_up_cause=0.1", "simulator.closure_base.made_up_cause"),
        ("simulator.closure_base.thin_file=-1", "simulator.closure_base.thin_file"),
        ("simulator.tightening_month=40", "simulator.tightening_month"),
        ("features.snapshots=[12,40]", "features.snapshots"),
        ("model.learning_rate=0", "model.learning_rate"),
    ],
)
def test_bad_values_are_refused_naming_the_key(make_cfg, override, key):
    cfg = make_cfg(override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert key in str(err.value)


def test_cli_misspelt_override_exits_with_message(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "model.num_leavs=3", f"paths.root={tmp_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "num_leavs" in proc.stderr
    assert not (tmp_path / "data" / "raw").exists()


def test_cli_bad_value_exits_before_work(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "generate",
            "data.n_borrowers=-5",
            f"paths.root={tmp_path}",
            "tracking=off",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "data.n_borrowers" in proc.stderr
    assert not (tmp_path / "data" / "raw").exists()
