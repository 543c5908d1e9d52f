"""Training stage: calibration, baselines, monotone constraints, determinism, registry."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.adapters.catalog import load_calibrator, load_model
from pipeline.base.causes import OCCUPATIONS
from pipeline.base.registry import BY_NAME
from pipeline.core import baselines, calibration
from pipeline.core import train as train_core
from pipeline.core.metrics import expected_calibration_error
from pipeline.stages.driver import execute


def _synthetic(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    logit = -2.0 + 1.2 * X[:, 0] - 0.8 * X[:, 1]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


# --------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_reduces_error_and_round_trips_through_json(method):
    rng = np.random.default_rng(1)
    true_p = rng.uniform(0.01, 0.4, 20_000)
    y = (rng.random(len(true_p)) < true_p).astype(int)
    raw = true_p**0.5  # overconfident scores, same ranking
    cal = calibration.fit(method, raw[:10_000], y[:10_000])
    before = expected_calibration_error(y[10_000:], raw[10_000:])
    after = expected_calibration_error(y[10_000:], cal.apply(raw[10_000:]))
    assert after < before / 3
    again = calibration.Calibrator.from_json(json.loads(json.dumps(cal.to_json())))
    assert np.array_equal(again.apply(raw), cal.apply(raw))


def test_calibration_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibration.fit("sigmoid", np.array([0.1, 0.2]), np.array([0, 1]))


# --------------------------------------------------------------------------- baselines


def test_scorecard_points_add_up_and_rank_risk():
    X, y = _synthetic()
    card = baselines.Scorecard(pdo=20, base_score=600, base_odds=50, max_bins=8).fit(
        X, y, ["a", "b", "noise"]
    )
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, card.predict_proba(X)) > 0.75
    table = card.table()
    assert {"feature", "bin", "woe", "points"} <= set(table.columns)
    # a borrower's score is the base points plus the points of their bins
    total = np.full(len(X), card.base_points)
    for b, j in zip(card.bins_, card._cols, strict=True):
        pts = table[table.feature == b.feature].points.to_numpy()
        total += pts[b.index(X[:, j])]
    assert np.allclose(total, card.points(X))
    # pdo: doubling the good:bad odds adds pdo points
    z = np.log(card.predict_proba(X[:1]) / (1 - card.predict_proba(X[:1])))
    assert np.isclose(card.points(X[:1]), card.offset - card.factor * z).all()
    assert np.isclose(card.factor * np.log(2), 20)
    # higher risk, fewer points
    assert np.corrcoef(card.points(X), card.predict_proba(X))[0, 1] < -0.9


def test_rules_baseline_scores_flag_combinations_by_training_rate():
    frame = pd.DataFrame(
        {
            "months_since_last_draw": [5, 0, 0, 4],
            "draw_months_12": [6, 10, 10, 1],
            "ext_active_products": [1, 0, 2, 1],
            "months_since_ext_activity": [0, 15, 0, 0],
            "misuse_share_k": [0.0, 0.0, 0.9, 0.0],
        }
    )
    flags = baselines.rule_flags(frame)
    assert flags.long_idle.tolist() == [True, False, False, False]
    assert flags.thin_file.tolist() == [False, True, False, False]
    assert flags.fund_misuse.tolist() == [False, False, True, False]
    rules = baselines.RulesBaseline().fit(frame, np.array([1, 0, 1, 0]))
    assert rules.predict_proba(frame).tolist() == [1.0, 0.0, 1.0, 0.0]


# --------------------------------------------------------------------------- monotone check


def test_monotone_check_finds_violations_and_constraints_remove_them():
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 1, (3000, 2)).astype(np.float32)
    # risk falls with feature 0: a +1 constraint is against the data
    y = (rng.random(3000) < 0.5 - 0.4 * X[:, 0]).astype(int)
    params = {"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": 0}
    free = lgb.train(params, lgb.Dataset(X, y), 30)
    assert train_core.monotone_violations(free, X[:100], [1, 0])[0]["violations"] > 0
    tied = lgb.train({**params, "monotone_constraints": [1, 0]}, lgb.Dataset(X, y), 30)
    assert train_core.monotone_violations(tied, X[:100], [1, 0])[0]["violations"] == 0


# --------------------------------------------------------------------------- the stage
# (a small simulated world trained once per module; marked slow, still run by CI)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from helpers import SMALL, compose_config

    from pipeline.adapters.tracking import from_config
    from pipeline.stages.driver import run_pipeline

    root = tmp_path_factory.mktemp("train")
    cfg = compose_config(root, SMALL)
    stages = ["generate", "features", "train"]
    summary = run_pipeline(cfg, from_config(cfg.tracking), stages)
    return cfg, root, summary


@pytest.mark.slow
def test_stage_writes_the_contracted_files_and_summary(trained):
    cfg, root, summary = trained
    models = root / "models"
    booster, meta = load_model(models)
    assert meta["mode"] == "simulator" and cfg.model.calibration == "auto"
    assert meta["feature_names"] == booster.feature_name()
    assert meta["best_iteration"] == booster.current_iteration()
    # auto: the candidate with the lowest out-of-fold validation log-loss, recorded as such
    cal = load_calibrator(models)
    assert meta["calibration"] == cal.method in calibration.AUTO_CANDIDATES
    assert set(cal.selection) == set(calibration.AUTO_CANDIDATES)
    assert cal.selection[cal.method] == min(cal.selection.values())
    for name in ("scorecard.csv", "rules_baseline.csv", "evaluation.json", "gains_oot.csv"):
        assert (models / name).stat().st_size > 0, name
    for plot in ("roc.png", "gains.png", "calibration.png"):
        assert (models / "plots" / plot).stat().st_size > 1000, plot
    on_disk = json.loads((models / "summary.json").read_text())
    for split in ("valid", "oot"):
        for key in ("auc", "ks", "pr_auc", "brier", "ece", "ece_raw", "lift_5", "capture_10"):
            assert np.isfinite(on_disk[split][key]), (split, key)
    assert 0.5 < on_disk["oracle_auc"] <= 1 and np.isfinite(on_disk["oracle_gap"])
    assert set(on_disk["baselines"]) == {"scorecard", "rules"}
    assert on_disk["baselines"]["rules"]["oot"]["auc"] > 0.5
    assert set(on_disk["oot_by_regime"]) <= {"0", "1", "2"} and on_disk["oot_by_regime"]
    assert "salaried" in on_disk["oot_by_occupation"]
    assert np.isfinite(on_disk["score_psi"])
    assert on_disk["monotone_check"]["violations"] == 0
    assert on_disk["champion"]["promoted"] is True
    # the baselines are nested runs under the train stage's run
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([exp.experiment_id])
    train_run = next(r for r in runs if r.data.tags.get("stage") == "train")
    nested = {
        r.data.tags.get("baseline")
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == train_run.info.run_id
    }
    assert nested == {"scorecard", "rules"}
    alias = client.get_model_version_by_alias(cfg.tracking.registered_model, "champion")
    assert alias.run_id == train_run.info.run_id


@pytest.mark.slow
def test_monotone_constraints_hold_on_sampled_rows(trained):
    """Sweep each constrained feature over a grid: predictions never move the wrong way."""
    _, root, _ = trained
    booster, meta = load_model(root / "models")
    names = meta["feature_names"]
    constrained = [n for n in names if BY_NAME[n].monotone]
    assert len(constrained) >= 3
    df = pd.read_parquet(root / "data" / "processed" / "features.parquet")
    rows = df.sample(n=300, random_state=0)[names].to_numpy(np.float32)
    for name in constrained:
        j = names.index(name)
        sign = BY_NAME[name].monotone
        grid = np.linspace(df[name].min() - 1, df[name].max() + 1, 25, dtype=np.float32)
        preds = []
        for v in grid:
            X = rows.copy()
            X[:, j] = v
            preds.append(booster.predict(X))
        steps = np.diff(np.stack(preds, axis=1), axis=1) * sign
        assert (steps >= -1e-12).all(), name


@pytest.mark.slow
def test_training_is_deterministic_and_champion_moves_only_on_improvement(trained):
    cfg, root, first = trained
    models = root / "models"
    text1 = (models / "model.txt").read_bytes()
    cal1 = (models / "calibration.json").read_bytes()
    cfg.stage = "train"
    second = execute(cfg, [])
    assert (models / "model.txt").read_bytes() == text1
    assert (models / "calibration.json").read_bytes() == cal1
    # same out-of-time AUC is not an improvement: the first version keeps the alias
    assert second["champion"]["promoted"] is False
    assert second["champion"]["champion_version"] == first["champion"]["version"]
    # a deliberately weak model does not take it either
    from helpers import SMALL, compose_config

    weak = compose_config(root, [*SMALL, "model.num_leaves=2", "model.n_estimators=2"], "train")
    third = execute(weak, [])
    assert third["oot"]["auc"] < first["oot"]["auc"]
    assert third["champion"]["promoted"] is False
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    alias = client.get_model_version_by_alias(cfg.tracking.registered_model, "champion")
    assert int(alias.version) == first["champion"]["version"]


@pytest.mark.slow
def test_calibration_none_and_platt_are_configurable(make_cfg, trained, tmp_path):
    import shutil

    from pipeline.base.config import ConfigError, validate

    _, root, _ = trained
    shutil.copytree(root / "data", tmp_path / "data")  # the same features, a private models dir
    models = tmp_path / "models"
    boosters, raw = {}, {}
    for method in ("none", "platt"):
        cfg = make_cfg(f"model.calibration={method}", "tracking=off", "model.baselines=false")
        cfg.stage = "train"
        out = execute(cfg, [])
        assert out["calibration"]["method"] == method
        assert json.loads((models / "calibration.json").read_text())["method"] == method
        on_disk = json.loads((models / "summary.json").read_text())
        boosters[method] = (models / "model.txt").read_bytes()
        booster, meta = load_model(models)
        assert meta["calibration"] == method
        cal = load_calibrator(models)
        assert cal.method == method
        df = pd.read_parquet(tmp_path / "data" / "processed" / "features.parquet")
        raw[method] = train_core.predict(
            booster, df[df.split == "valid"][meta["feature_names"]].to_numpy(np.float32)
        )
        served = cal.apply(raw[method])
        if method == "none":  # scores are the booster's own probabilities
            np.testing.assert_array_equal(served, raw[method])
            assert on_disk["valid"]["ece"] == on_disk["valid"]["ece_raw"]
        else:  # a fitted logistic map of the raw logit: it moves the scores, keeps their order
            assert (cal.a, cal.b) != (1.0, 0.0)
            assert np.max(np.abs(served - raw[method])) > 1e-3
            order = np.argsort(raw[method], kind="stable")
            assert (np.diff(served[order]) >= -1e-12).all()
            assert on_disk["valid"]["ece"] != on_disk["valid"]["ece_raw"]
    # calibration sits on top of the booster: the trees are the same either way
    assert boosters["none"] == boosters["platt"]
    np.testing.assert_array_equal(raw["none"], raw["platt"])

    with pytest.raises(ConfigError, match="model.calibration"):
        validate(make_cfg("model.calibration=sigmoid"))


@pytest.mark.slow
def test_scorecard_points_follow_woe_and_the_card_says_how_it_was_built(trained):
    """The validator's reading of ``scorecard.csv``: 0 coefficients against WoE, at most
    ``max_features`` features, monotone bad rates where the registry declares a
    direction, a missing bin only where training rows were missing."""
    cfg, root, summary = trained
    models = root / "models"
    card = pd.read_csv(models / "scorecard.csv")
    meta = json.loads((models / "scorecard_card.json").read_text())
    assert {"feature", "bin", "woe", "points"} <= set(card.columns)
    assert (card.coef < 0).all()
    assert meta["coef_against_woe"] == 0
    assert summary["scorecard"]["coef_against_woe"] == 0
    assert 1 <= card.feature.nunique() <= cfg.model.scorecard.max_features
    assert summary["scorecard"]["n_features"] == card.feature.nunique()
    df = pd.read_parquet(
        root / "data" / "processed" / "features.parquet", columns=["split", *card.feature.unique()]
    )
    train = df[df.split == "train"]
    for name, part in card.groupby("feature", sort=False):
        # points rise with WoE
        order = np.argsort(part.woe.to_numpy(), kind="stable")
        assert np.all(np.diff(part.points.to_numpy()[order]) >= -1e-9), name
        seen = part[part.bin != "missing"]
        assert ("missing" in set(part.bin)) == bool(train[name].isna().any()), name
        assert seen.n.sum() == train[name].notna().sum(), name
        direction = BY_NAME[name].monotone
        if direction and name != "occupation_code":
            steps = np.diff(seen.bad_rate.to_numpy()) * direction
            assert np.all(steps > 0), name
        assert all("e+" not in b and "e-" not in b for b in part.bin), name
    if "occupation_code" in set(card.feature):
        levels = set(card[card.feature == "occupation_code"].bin)
        assert all(lv.split(", ")[0] in OCCUPATIONS for lv in levels)
    # the bands count every row of every split once
    bands = pd.DataFrame(meta["bands"])
    for split in ("train", "valid", "oot"):
        assert bands[f"n_{split}"].sum() == (df.split == split).sum()
    kept = {r["feature"] for r in meta["selection"] if r["kept"]}
    assert kept == set(card.feature)
    assert all(r["reason"] for r in meta["selection"])
