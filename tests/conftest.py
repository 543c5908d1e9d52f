"""Shared fixtures; the helpers they build on live in ``helpers.py``."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    BLANK_STORE,
    SHARED_WORLD,
    SMALL,
    blank_store,
    compose_config,
    run_base,
    shared_world,
)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., Any]:
    """Compose the real config with outputs and the MLflow store under ``tmp_path``."""

    def _make(*overrides: str, small: bool = True, root: Path | None = None) -> Any:
        return compose_config(root or tmp_path, [*(SMALL if small else []), *overrides])

    return _make


@pytest.fixture(scope="session", autouse=True)
def _blank_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Local stores composed by :func:`helpers.compose_config` start from a blank copy."""
    BLANK_STORE[:] = [blank_store(run_base(tmp_path_factory))]


@pytest.fixture(scope="session")
def trained_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[str, Any]]:
    """One trained SMALL world (root, composed config, run summary) for the whole run.

    Built once per test run, whatever the number of xdist workers: they share the parent
    of their base temporary folders, and :func:`helpers.shared_world` locks the build.
    Tests must only read it; a test that changes outputs copies them into ``tmp_path``.
    """
    root, summary = shared_world(run_base(tmp_path_factory))
    return root, compose_config(root, [*SMALL, *SHARED_WORLD]), summary


#: the longest test files (about a minute or more each), started first when the suite
#: runs in several processes, so that no process is left alone with one of them at the end
LONGEST_FIRST = ("test_readme.py", "test_bench.py", "test_distributed.py", "test_tracking.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the files: the longest ones, then those with slow tests, then the rest.

    Tests keep their order within a file; with ``--dist loadfile`` each file runs in
    one process, handed out in this order.
    """

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        if name in LONGEST_FIRST:
            return 0, LONGEST_FIRST.index(name)
        return (1, 0) if slow_files.get(name) else (2, 0)

    slow_files: dict[str, bool] = {}
    for item in items:
        slow_files[item.path.name] = slow_files.get(item.path.name, False) or (
            item.get_closest_marker("slow") is not None
        )
    items[:] = sorted(items, key=rank)  # stable: file and test order kept within a rank


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collecting imported (the whole machine-learning stack) out of the
    garbage collector's reach, as the command line does once it has imported the stages:
    the collections between the stages (``release_memory``) then walk only what the test
    made, not the hundreds of thousands of imported objects each time."""
    gc.freeze()
