"""Helpers shared by the tests: the real Hydra config, composed and shrunk, and a whole run.

Imported as ``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``); fixtures
stay in ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipeline.base.config import REPO_ROOT, register_configs

register_configs()

#: The German credit table shipped for the bring-your-own-table examples.
GERMAN = REPO_ROOT / "data" / "external" / "german_credit" / "german_credit.csv"

SMALL = [
    "data.n_borrowers=2000",
    "simulator.chunk_size=512",
    "simulator.oracle_rows=600",
    "simulator.oracle_futures=16",
    "model.n_estimators=200",
    "explain.plot_sample=500",
]


def compose_config(root: Path, overrides: list[str] | None = None, stage: str = "run") -> Any:
    """The real config with every output (and the MLflow store) under ``root``."""
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
