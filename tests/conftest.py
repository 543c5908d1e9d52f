"""Shared fixtures: the real Hydra config, composed and shrunk, with outputs in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipeline.base.config import REPO_ROOT, register_configs

register_configs()

SMALL = [
    "data.n_borrowers=2000",
    "simulator.chunk_size=512",
    "simulator.oracle_rows=600",
    "simulator.oracle_futures=16",
    "model.n_estimators=200",
    "explain.plot_sample=500",
]


def compose_config(root: Path, overrides: list[str] | None = None, stage: str = "run") -> Any:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(
            "config", overrides=[f"paths.root={root}", f"stage={stage}", *(overrides or [])]
        )


def run_world(root: Path, overrides: list[str], stage: str = "run") -> tuple[Any, dict[str, Any]]:
    """Compose the shrunk real config with ``overrides`` and run ``stage`` under ``root``."""
    from pipeline.__main__ import execute

    cfg = compose_config(root, [*SMALL, *overrides], stage)
    return cfg, execute(cfg, [])


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., Any]:
    """Compose the real config with outputs and the MLflow store under ``tmp_path``."""

    def _make(*overrides: str, small: bool = True, root: Path | None = None) -> Any:
        return compose_config(root or tmp_path, [*(SMALL if small else []), *overrides])

    return _make
