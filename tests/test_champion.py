"""The champion is judged on the same rows as its challenger, whatever world it came from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers import load_feature_table, run_world
from scipy.stats import norm

from pipeline.adapters import catalog, model_registry
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
    # the alias moves only on a significant paired DeLong difference on those rows
    assert verdict["alpha"] == 0.05 and verdict["auc_difference_se"] > 0
    assert verdict["auc_difference"] == pytest.approx(second["oot"]["auc"] - expected, abs=1e-9)
    z = verdict["auc_difference"] / verdict["auc_difference_se"]
    assert verdict["p_value"] == pytest.approx(float(norm.sf(z)))
    assert verdict["promoted"] is (verdict["p_value"] < 0.05)


# --------------------------------------------------------------------------- the rule


class _Client:
    """The registry calls promote_champion makes, on one holder (v1) and one run (v2)."""

    def __init__(self, digests: tuple[str, str] = ("a", "b"), holder_auc: float = 0.7) -> None:
        self.alias: dict[str, str] = {"champion": "1"}
        self.runs = {
            "r1": SimpleNamespace(
                data=SimpleNamespace(
                    tags={model_registry.DATA_DIGEST_TAG: digests[0]},
                    metrics={"oot.auc": holder_auc},
                )
            ),
            "r2": SimpleNamespace(
                data=SimpleNamespace(tags={model_registry.DATA_DIGEST_TAG: digests[1]}, metrics={})
            ),
        }

    def search_model_versions(self, _filter: str) -> list[Any]:
        return [SimpleNamespace(version="2", run_id="r2")]

    def get_model_version_by_alias(self, _name: str, alias: str) -> Any:
        return SimpleNamespace(version=self.alias[alias], run_id="r1")

    def set_registered_model_alias(self, _name: str, alias: str, version: str) -> None:
        self.alias[alias] = version

    def get_run(self, run_id: str) -> Any:
        return self.runs[run_id]


class _Booster:
    def feature_name(self) -> list[str]:
        return ["f"]


def _judge(
    monkeypatch: pytest.MonkeyPatch,
    y: np.ndarray,
    challenger: np.ndarray,
    holder: np.ndarray,
    alpha: float = 0.05,
) -> tuple[dict[str, Any], _Client]:
    monkeypatch.setattr(model_registry.mlflow.lightgbm, "load_model", lambda _uri: _Booster())
    client = _Client()
    tracker = SimpleNamespace(client=client, run_id="r2")
    auc = binary_metrics(y, challenger)["auc"]
    info = model_registry.promote_champion(
        tracker,  # type: ignore[arg-type]
        "m",
        "champion",
        auc,
        rescore=lambda _b, _f: (y, challenger, holder),
        alpha=alpha,
    )
    return info, client


def _world(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(signal - 2.5)))).astype(int)
    return y, signal, rng


def test_a_challenger_ahead_by_noise_does_not_take_the_alias(monkeypatch):
    y, signal, rng = _world(6000, 11)
    # two models of the same quality, each with its own noise on the same rows
    one, two = signal + rng.normal(size=len(y)), signal + rng.normal(size=len(y))
    # the challenger is whichever of the two happens to score higher on these rows
    challenger, holder = sorted((one, two), key=lambda s: binary_metrics(y, s)["auc"])[::-1]
    a, b = binary_metrics(y, challenger)["auc"], binary_metrics(y, holder)["auc"]
    assert 0 < a - b < 0.003  # ahead: the rule of "higher AUC wins" would promote it
    info, client = _judge(monkeypatch, y, challenger, holder)
    assert info["promoted"] is False and client.alias["champion"] == "1"
    assert info["champion_version"] == 1
    assert info["auc_difference"] == pytest.approx(a - b, abs=1e-12)
    assert info["previous_oot_auc"] == pytest.approx(b, abs=1e-12)
    assert info["p_value"] > 0.05 and info["auc_difference_se"] > 5 * info["auc_difference"]
    msg = info["message"]
    assert (
        f"difference {a - b:+.4f}" in msg
        and f"standard error {info['auc_difference_se']:.4f}" in msg
    )
    assert f"p = {info['p_value']:.3g} >= 0.05" in msg and "'champion' stays" in msg


def test_a_clearly_better_challenger_takes_the_alias(monkeypatch):
    y, signal, rng = _world(6000, 12)
    challenger = signal + 0.3 * rng.normal(size=len(y))
    holder = signal + 2.0 * rng.normal(size=len(y))
    info, client = _judge(monkeypatch, y, challenger, holder)
    assert info["auc_difference"] > 0.05 and info["p_value"] < 1e-6
    assert info["promoted"] is True and client.alias["champion"] == "2"
    assert info["champion_version"] == 2 and "'champion' moves to it" in info["message"]
    # the level is the configured one: nothing passes a level of (almost) zero
    strict, client = _judge(monkeypatch, y, challenger, holder, alpha=1e-300)
    assert strict["promoted"] is False and client.alias["champion"] == "1"
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
        _judge(monkeypatch, y, challenger, holder, alpha=1.0)


def test_a_holder_that_cannot_be_rescored_is_judged_by_its_logged_figure():
    # the Dask engine passes no rescore: same data, the holder's logged AUC, no test
    for challenger_auc, promoted in ((0.7001, True), (0.6999, False)):
        client = _Client(digests=("same", "same"), holder_auc=0.7)
        tracker = SimpleNamespace(client=client, run_id="r2")
        info = model_registry.promote_champion(tracker, "m", "champion", challenger_auc)  # type: ignore[arg-type]
        assert info["promoted"] is promoted and "p_value" not in info
        assert info["compared_on"] == "same data, the holder's logged figure"
        assert "no paired test" in info["message"]
    # different data: not comparable, the newer model takes the alias
    client = _Client()
    info = model_registry.promote_champion(
        SimpleNamespace(client=client, run_id="r2"), "m", "champion", 0.5
    )  # type: ignore[arg-type]
    assert info["promoted"] is True and client.alias["champion"] == "2"
