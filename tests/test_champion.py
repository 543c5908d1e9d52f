"""The champion is judged on the same rows as its challenger, whatever world it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import load_feature_table, run_world

from pipeline.adapters import catalog
from pipeline.core.metrics import binary_metrics


def _train(root: Path, overrides: list[str]) -> dict[str, Any]:
    for stage in ("generate", "features"):
        run_world(root, overrides, stage)
    return run_world(root, overrides, "train")[1]


@pytest.mark.slow
def test_a_champion_from_another_world_is_rescored_on_the_challengers_rows(
    tmp_path: Path,
) -> None:
    store = f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"
    art = f"tracking.artifact_root={tmp_path / 'mlartifacts'}"
    first = _train(tmp_path / "w1", [store, art, "data.seed=1"])
    assert first["champion"]["promoted"] is True
    holder = catalog.load_model(tmp_path / "w1" / "models")[0]

    second = _train(tmp_path / "w2", [store, art, "data.seed=2"])
    verdict = second["champion"]
    assert verdict["compared_on"] == "both scored on this run's out-of-time rows"
    # the holder's figure is its AUC on world 2's out-of-time rows, not its own logged one
    rows = load_feature_table(tmp_path / "w2" / "data" / "processed" / "features.parquet")
    oot = rows[rows.split == "oot"]
    names = holder.feature_name()
    expected = binary_metrics(
        oot.label.to_numpy().astype(int),
        np.asarray(holder.predict(oot[names].to_numpy(dtype=np.float32))),
    )["auc"]
    assert verdict["previous_oot_auc"] == pytest.approx(expected, abs=1e-9)
    assert verdict["previous_oot_auc"] != pytest.approx(first["oot"]["auc"], abs=1e-6)
    assert verdict["promoted"] is (second["oot"]["auc"] > expected)
