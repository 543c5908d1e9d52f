"""The pyfunc: logged by the train stage, loadable from the registry, served over HTTP."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import model_server

from pipeline.adapters.catalog import load_scoring_model
from pipeline.core.scoring import score_frame

WORLD = [
    "model.baselines=false",
    "model.n_estimators=60",
    "explain.advice_rows=0",
    "explain.plot_sample=200",
    "explain.dependence_top=1",
]
NAME = "closure-risk-lgbm-serving"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from helpers import SMALL, compose_config, seed_small_data

    from pipeline.stages.driver import execute

    root = tmp_path_factory.mktemp("serving_world")
    seed_small_data(tmp_path_factory, root)
    for stage in ("generate", "features", "train"):
        execute(compose_config(root, [*SMALL, *WORLD], stage=stage), [])
    df = pd.read_parquet(root / "data" / "processed" / "features.parquet")
    # one row per borrower: a request scores each borrower once
    return root, df[df.split == "oot"].drop_duplicates("borrower_id").head(20)


def _names(root: Path) -> list[str]:
    return json.loads((root / "models" / "model.json").read_text())["feature_names"]


def _check_reasons(out: pd.DataFrame, floor: float = 0.05) -> None:
    """Reasons follow the rule: a row under the lowest tier cut-off (``floor``) names no
    closure reason but "no closure concern" and what protects it; the others name only
    causes that raise their risk.

    A rank is filled exactly when its cause is (text, feature and cause together), the
    ranks are filled from the first, rows under the floor have no reason and a
    protective factor, rows at or above it have no protective factor, every row of the
    top tier names at least one reason, and most rows above the floor name one.
    """
    filled = {}
    for r in (1, 2, 3):
        cause = out[f"reason_{r}_cause"].fillna("").astype(str).str.len().gt(0)
        for k in ("en", "feature"):
            assert (out[f"reason_{r}_{k}"].fillna("").astype(str).str.len().gt(0) == cause).all()
        filled[r] = cause
    assert (filled[1] | ~filled[2]).all() and (filled[2] | ~filled[3]).all()
    low = out.probability.astype(float) < floor
    concern = out.closure_concern.astype(str).str.lower().isin(["true", "1"])
    assert (concern == ~low).all()
    assert not filled[1][low].any()
    protect = out.protect_1_en.fillna("").astype(str)
    assert protect[low].str.startswith("no closure concern").all()
    assert (protect[~low] == "").all()
    assert filled[1][out.tier == "high"].all()
    if (~low).any():
        assert filled[1][~low].mean() >= 0.5, filled[1][~low].mean()


@pytest.mark.slow
def test_pyfunc_champion_matches_batch_scoring(trained):
    import mlflow
    import mlflow.pyfunc

    root, rows = trained
    summary = json.loads((root / "models" / "summary_parts" / "train.json").read_text())
    assert summary["serving"]["alias"] == "champion"
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{root}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    names = _names(root)
    request = rows[["borrower_id", *names]].astype({n: np.float64 for n in names})
    out = model.predict(request)
    assert len(out) == len(rows)
    assert out.borrower_id.tolist() == rows.borrower_id.tolist()
    assert out.probability.between(0, 1).all()
    assert set(out.tier) <= {"low", "medium", "high"}
    _check_reasons(out)
    # the same numbers as the local model with its calibration
    local = load_scoring_model(root / "models")
    np.testing.assert_allclose(out.probability, local.prob(rows[names].to_numpy()), rtol=1e-6)
    # and the same tiers and reasons as batch scoring of the same rows
    from helpers import SMALL, compose_config

    score = compose_config(root, [*SMALL, *WORLD]).score
    batch = score_frame(
        local,
        rows,
        "borrower_id",
        list(score.tier_cuts),
        list(score.tier_names),
        int(score.top_k),
        advice_rows=0,
    )
    for col in ["tier", *[c for c in out.columns if c.startswith("reason_")]]:
        served = out[col]
        if pd.api.types.is_numeric_dtype(batch[col]):
            # a missing number is answered as None (JSON null), batch keeps NaN
            served = served.map(lambda v: np.nan if v is None else v).astype(np.float64)
            np.testing.assert_allclose(served, batch[col], rtol=1e-6, err_msg=col)
        else:
            assert served.astype(str).tolist() == batch[col].astype(str).tolist(), col
    bad = request.copy()
    bad.loc[bad.index[0], "tenure"] = np.inf
    with pytest.raises(Exception, match="tenure"):
        model.predict(bad)


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(trained, tmp_path):
    root, rows = trained
    names = _names(root)
    with model_server(root, f"models:/{NAME}@champion", tmp_path / "serve.log") as port:
        body = {
            "dataframe_split": json.loads(
                rows[["borrower_id", *names]].to_json(orient="split", index=False)
            )
        }
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        preds = answer["predictions"]
        assert len(preds) == len(rows)
        assert all(0 <= p["probability"] <= 1 for p in preds)
        assert all(p["tier"] in ("low", "medium", "high") for p in preds)
        _check_reasons(pd.DataFrame(preds))
