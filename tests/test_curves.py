"""Risk curves by horizon and cause outside the survival stage: batch scoring, the served
model and a borrower's story, each checked against the stage's own incidences."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.base.causes import CAUSES
from pipeline.core import survival as core

SERVING = "closure-risk-lgbm-serving"
HORIZONS = (1, 3, 6, 12)


# ---- the core: what the curves guarantee ---------------------------------------------


def _wild_calibration(K: int) -> core.Calibration:
    """Maps that differ month by month (one shrinks, the next inflates): the calibrated
    curve would fall somewhere without the running maximum."""
    rng = np.random.default_rng(5)
    return core.Calibration(
        rng.normal(0, 1.5, K), rng.uniform(0.3, 2.0, K), np.ones(K, bool), np.full(K, 100)
    )


def test_calibrated_curves_never_fall_and_the_causes_sum_to_any_closure():
    rng = np.random.default_rng(4)
    n, K = 500, 12
    h = rng.dirichlet(np.r_[60.0, np.ones(core.N_CLASSES - 1)], size=(n, K))
    cif = core.calibrate(core.incidence(h), _wild_calibration(K))
    cols = core.curve_columns(cif, range(1, K + 1))
    for t in range(1, K):
        assert (cols[f"risk_h{t + 1}"] >= cols[f"risk_h{t}"] - 1e-12).all(), t
    for t in range(1, K + 1):
        total = np.sum([cols[f"risk_h{t}_{c}"] for c in CAUSES], axis=0)
        np.testing.assert_allclose(total, cols[f"risk_h{t}"], rtol=0, atol=1e-12)
    assert set(cols) == {f"risk_h{t}" for t in range(1, K + 1)} | {
        f"risk_h{t}_{c}" for t in range(1, K + 1) for c in CAUSES
    }


@pytest.mark.parametrize(
    "asked, words",
    [
        ([0], "holds 0, outside 1 .. 12"),
        ([3, 13], "holds 13, outside 1 .. 12"),
        ([-1], "holds -1, outside 1 .. 12"),
        ([2.5], "holds 2.5, not a whole number"),
        (["3"], "holds '3', not a whole number"),
        ([True], "holds True, not a whole number"),
        ([], "is empty"),
        ("3", "is not a list"),
    ],
)
def test_bad_horizons_are_refused_naming_the_field_and_the_rule(asked, words):
    with pytest.raises(ValueError) as err:
        core.check_horizons(asked, 12, "request: params.horizons")
    msg = str(err.value)
    assert msg.startswith("request: params.horizons") and words in msg
    assert "rule: a list of whole months from 1 to 12" in msg


def test_horizons_keep_their_order_once_each():
    assert core.check_horizons([6, 1, 6, 3.0], 12) == [6, 1, 3]


# ---- batch scoring on the shared world -------------------------------------------------


def _stage_rows(root: Path, n: int = 300) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-time feature rows that the survival stage wrote curves for, and those curves."""
    stage = pd.read_parquet(root / "models" / "survival" / "reasons.parquet")
    df = pd.read_parquet(root / "data" / "processed" / "features.parquet")
    rows = df.merge(stage[["borrower_id", "snapshot"]].head(n), on=["borrower_id", "snapshot"])
    return rows.drop(columns=["split", "label", "label_cause"]), stage


def _score(root: Path, *overrides: str) -> Any:
    from helpers import SMALL, compose_config

    from pipeline.stages.driver import execute

    cfg = compose_config(root, [*SMALL, "tracking=off", *overrides], stage="score")
    return execute(cfg, [])


def test_score_columns_are_the_survival_stages_own_incidences(trained_world, tmp_path, capsys):
    root, _, _ = trained_world
    rows, stage = _stage_rows(root)
    src, out = tmp_path / "rows.parquet", tmp_path / "scores.parquet"
    rows.to_parquet(src)
    summary = _score(root, f"score.input={src}", f"score.output={out}")
    said = capsys.readouterr().out
    assert "score: risk curves at 1, 3, 6, 12 months from the cause model" in said
    assert "6, 12 months not validated" in said
    assert summary.summary["score"]["curves"] == {"horizons": [1, 3, 6, 12], "validated": [1, 3]}
    got = pd.read_parquet(out).merge(stage, on=["borrower_id", "snapshot"])
    assert len(got) == len(rows) > 100
    for t in HORIZONS:  # the same function on the same rows: equal to the last bit
        np.testing.assert_array_equal(got[f"risk_h{t}"], got[f"p_any_{t}m"])
    for c in CAUSES:  # the stage's per-cause incidences are at features.horizon (3)
        np.testing.assert_array_equal(got[f"risk_h3_{c}"], got[f"incidence_{c}"])
    for a, b in zip(HORIZONS, HORIZONS[1:], strict=False):
        assert (got[f"risk_h{b}"] >= got[f"risk_h{a}"] - 1e-12).all()
    for t in HORIZONS:
        total = got[[f"risk_h{t}_{c}" for c in CAUSES]].to_numpy().sum(axis=1)
        np.testing.assert_allclose(total, got[f"risk_h{t}"], rtol=0, atol=1e-12)
    assert got.risk_h3.between(0, 1).all() and got.risk_h12.lt(1).all()


def test_score_without_a_cause_model_says_why_in_one_line(trained_world, tmp_path, capsys):
    root, _, _ = trained_world
    rows, _ = _stage_rows(root, 50)
    src = tmp_path / "rows.parquet"
    rows.to_parquet(src)
    off = tmp_path / "off.parquet"
    summary = _score(root, f"score.input={src}", f"score.output={off}", "model.survival=false")
    said = capsys.readouterr().out
    assert "score: no risk curves (risk_h* columns absent): model.survival=false" in said
    assert summary.summary["score"]["curves"] == {"absent": "model.survival=false"}
    t = pd.read_parquet(off)
    assert len(t) == len(rows) and not [c for c in t.columns if c.startswith("risk_h")]


def test_a_cause_model_of_another_classifier_gives_no_curves(trained_world, tmp_path, capsys):
    """A stale cause model (fitted beside another model.txt) must not pass for this one's."""
    root, _, _ = trained_world
    shutil.copytree(root / "models", tmp_path / "models")
    shutil.copytree(root / "data", tmp_path / "data")
    ev_path = tmp_path / "models" / "survival" / "evaluation.json"
    ev = json.loads(ev_path.read_text())
    ev["model_stamp"] = "0" * 64
    ev_path.write_text(json.dumps(ev))
    rows, _ = _stage_rows(tmp_path, 20)
    src, out = tmp_path / "rows.parquet", tmp_path / "s.parquet"
    rows.to_parquet(src)
    _score(tmp_path, f"score.input={src}", f"score.output={out}")
    assert "was fitted beside another classifier" in capsys.readouterr().out
    assert not [c for c in pd.read_parquet(out).columns if c.startswith("risk_h")]


# ---- the served model ----------------------------------------------------------------


def _request(root: Path, rows: pd.DataFrame) -> pd.DataFrame:
    names = json.loads((root / "models" / "model.json").read_text())["feature_names"]
    return rows[["borrower_id", *names]].astype({n: np.float64 for n in names})


def _load(root: Path, ref: str) -> Any:
    import mlflow
    import mlflow.pyfunc

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{root}/mlflow.db")
    return mlflow.pyfunc.load_model(f"models:/{SERVING}{ref}")


def test_the_champion_serves_the_curves_it_is_asked_for(trained_world):
    from mlflow.exceptions import MlflowException

    root, _, summary = trained_world
    served = summary["survival"]["serving"]
    assert served["alias"] == "champion" and served["curves"] is True
    assert served["version"] > summary["serving"]["version"]  # train's version, then this one
    rows, stage = _stage_rows(root, 40)
    rows = rows.drop_duplicates("borrower_id")
    model = _load(root, "@champion")
    out = model.predict(_request(root, rows), params={"horizons": [6, 1, 3]})
    want = rows[["borrower_id", "snapshot"]].merge(stage, on=["borrower_id", "snapshot"])
    assert out.borrower_id.tolist() == want.borrower_id.tolist()
    for t in (1, 3, 6):
        np.testing.assert_allclose(out[f"risk_h{t}"], want[f"p_any_{t}m"], rtol=0, atol=1e-12)
    for c in CAUSES:
        np.testing.assert_allclose(out[f"risk_h3_{c}"], want[f"incidence_{c}"], rtol=0, atol=1e-12)
    assert "risk_h12" not in out  # only the months asked for
    plain = model.predict(_request(root, rows))
    assert not [c for c in plain.columns if c.startswith("risk_h")]
    np.testing.assert_array_equal(plain.probability, out.probability)
    for bad, words in (([0], "holds 0, outside 1 .. 12"), ([13], "holds 13, outside 1 .. 12")):
        with pytest.raises(MlflowException, match="params.horizons") as err:
            model.predict(_request(root, rows), params={"horizons": bad})
        assert words in str(err.value) and err.value.get_http_status_code() == 400
    # the version the train stage logged carries no cause model: asking for curves is refused
    first = _load(root, f"/{summary['serving']['version']}")
    with pytest.raises(MlflowException, match="carries no cause model") as err:
        first.predict(_request(root, rows), params={"horizons": [3]})
    assert err.value.get_http_status_code() == 400


@pytest.mark.slow
def test_mlflow_models_serve_answers_horizons_and_refuses_bad_ones(trained_world, tmp_path):
    from helpers import model_server, post_invocations

    root, _, _ = trained_world
    rows, stage = _stage_rows(root, 10)
    rows = rows.drop_duplicates("borrower_id")
    split = json.loads(_request(root, rows).to_json(orient="split", index=False))

    with model_server(root, f"models:/{SERVING}@champion", tmp_path / "serve.log") as port:
        status, answer = post_invocations(
            port, {"dataframe_split": split, "params": {"horizons": [1, 3, 6]}}
        )
        assert status == 200
        preds = pd.DataFrame(answer["predictions"])
        want = rows[["borrower_id", "snapshot"]].merge(stage, on=["borrower_id", "snapshot"])
        for t in (1, 3, 6):
            np.testing.assert_allclose(preds[f"risk_h{t}"], want[f"p_any_{t}m"], atol=1e-12)
        assert {f"risk_h6_{c}" for c in CAUSES} <= set(preds.columns)
        for bad in ([0], [24]):
            status, answer = post_invocations(
                port, {"dataframe_split": split, "params": {"horizons": bad}}
            )
            assert status == 400, answer
            assert "params.horizons" in answer["message"] and "rule:" in answer["message"]


# ---- the single-borrower story -------------------------------------------------------


def test_the_story_prints_the_curve_beside_the_probability(trained_world, tmp_path, capsys):
    from helpers import SMALL, compose_config

    from pipeline.stages.driver import execute

    root, _, _ = trained_world
    shutil.copytree(root / "models", tmp_path / "models")
    shutil.copytree(root / "data", tmp_path / "data")
    stage = pd.read_parquet(root / "models" / "survival" / "reasons.parquet")
    last = stage[stage.snapshot == stage.snapshot.max()]
    bid = int(last.borrower_id.iloc[0])
    cfg = compose_config(
        tmp_path, [*SMALL, "tracking=off", f"explain.borrower_id={bid}"], stage="explain"
    )
    execute(cfg, [])
    said = capsys.readouterr().out
    assert "risk curve (competing-risks cause model" in said
    mine = last.iloc[0]
    for t in HORIZONS:
        line = next(x for x in said.splitlines() if x.startswith(f"  {t:>2} month"))
        assert f"{mine[f'p_any_{t}m']:6.1%}" in line
        assert ("not validated" in line) == (t in (6, 12)), line
    story = json.loads((tmp_path / "models" / f"borrower_{bid}.json").read_text())
    curve = story["risk_curve"]
    assert curve["validated"] == [1, 3] and set(curve["not_validated"]) == {"6", "12"}
    for t in HORIZONS:
        assert curve["any"][str(t)] == mine[f"p_any_{t}m"]
    assert curve["by_cause"]["3"] == {c: mine[f"incidence_{c}"] for c in CAUSES}
    assert curve["classifier_probability"] == story["probability"]
    assert f"at 3 months the curve reads {mine['p_any_3m']:.1%}" in said


# ---- the survival stage's shortcuts give the very same numbers ------------------------


def _small_cause_model() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A small fitted hazard model on three features, with validation-like rows whose
    observed months differ (``follow`` 1..12)."""
    rng = np.random.default_rng(11)
    n = 3000
    X = rng.random((n, 3)).astype(np.float32)
    time = rng.integers(1, 13, n)
    status = np.where(rng.random(n) < 0.4 + 0.3 * X[:, 0], rng.integers(1, core.N_CLASSES, n), 0)
    pm = core.person_months(time, status, 12, 0.5, 0)
    params = core.lgb_params(7, 0.1, 20, 1.0, 1.0, 0, 0.0, 63, 1, 0)
    model = core.fit(X, pm, X, pm, ["a", "b", "c"], params, 30, 5)
    follow = rng.integers(1, 13, n)
    return model, X, time, status, follow


def test_one_class_of_the_model_explains_to_the_last_bit_of_the_whole():
    model, X, _, _, _ = _small_cause_model()
    it = model.best_iteration or None
    D = core.design(X[:400], 4)
    every = model.predict(D, pred_contrib=True, num_iteration=it).reshape(400, core.N_CLASSES, -1)
    raw = model.predict(D, raw_score=True, num_iteration=it)
    for c in range(core.N_CLASSES):
        one = core.class_booster(model, c, it)
        np.testing.assert_array_equal(one.predict(D, pred_contrib=True), every[:, c])
        np.testing.assert_array_equal(one.predict(D), raw[:, c])


def test_hazards_of_the_observed_months_only_fit_the_same_calibration():
    model, X, time, status, follow = _small_cause_model()
    whole = core.hazards(model, X, 12)
    seen = core.hazards(model, X, 12, follow)
    observed = follow[:, None] >= np.arange(1, 13)[None, :]
    np.testing.assert_array_equal(seen[observed], whole[observed])
    assert np.isnan(seen[~observed]).all()
    a = core.fit_calibration(core.incidence(whole), time, status, follow)
    b = core.fit_calibration(core.incidence(seen), time, status, follow)
    assert a.to_dict() == b.to_dict() and a.fitted.any()
