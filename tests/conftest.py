"""Shared fixtures; the helpers they build on live in ``helpers.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import SMALL, compose_config


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., Any]:
    """Compose the real config with outputs and the MLflow store under ``tmp_path``."""

    def _make(*overrides: str, small: bool = True, root: Path | None = None) -> Any:
        return compose_config(root or tmp_path, [*(SMALL if small else []), *overrides])

    return _make
