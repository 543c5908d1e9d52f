"""The served pyfunc keeps the caller's ids: each score comes back beside its own id.

A request without the id column, or with a value the model refuses, gets HTTP 400 with
the column and the rule in the body, checked both through MLflow's scoring server code
in-process and through a real ``mlflow models serve``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import GERMAN, model_server, post_invocations_text

WORLD = [
    "model.baselines=false",
    "model.n_estimators=60",
    "explain.advice_rows=0",
    "score.advice_rows=0",
]
NAME = "closure-risk-lgbm-serving"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A trained world (tracking on, so the pyfunc is registered) and shuffled rows."""
    from helpers import SMALL, compose_config, seed_small_data

    from pipeline.stages.driver import execute

    root = tmp_path_factory.mktemp("serving_ids")
    seed_small_data(tmp_path_factory, root)
    for stage in ("generate", "features", "train"):
        execute(compose_config(root, [*SMALL, *WORLD], stage=stage), [])
    df = pd.read_parquet(root / "data" / "processed" / "features.parquet")
    last = df[df.snapshot == df.snapshot[df.split == "oot"].max()].head(30)
    rows = last.sample(frac=1.0, random_state=7).reset_index(drop=True)  # ids out of order
    assert not rows.borrower_id.is_monotonic_increasing
    names = json.loads((root / "models" / "model.json").read_text())["feature_names"]
    request = rows[["borrower_id", *names]].copy()
    request[names] = request[names].astype(np.float64)
    return root, request, names


def _batch(root: Path, request: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """The score stage on the same rows (local model), for comparison."""
    from helpers import SMALL, compose_config

    from pipeline.stages.driver import execute

    src, out = tmp_path / "rows.parquet", tmp_path / "batch.parquet"
    request.to_parquet(src)
    over = [f"score.input={src}", f"score.output={out}", "score.model_source=local"]
    execute(compose_config(root, [*SMALL, *WORLD, *over], stage="score"), [])
    return pd.read_parquet(out)


def _pyfunc(root: Path):
    import mlflow
    import mlflow.pyfunc

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{root}/mlflow.db")
    return mlflow.pyfunc.load_model(f"models:/{NAME}@champion")


def _bad_category(request: pd.DataFrame) -> pd.DataFrame:
    bad = request.copy()
    bad.loc[2, "occupation_code"] = 9.0
    return bad


@pytest.mark.slow
def test_signature_takes_and_returns_the_id(served):
    root, _, names = served
    sig = _pyfunc(root).metadata.signature
    inputs = {c.name: str(c.type) for c in sig.inputs.inputs}
    assert list(inputs) == ["borrower_id", *names]
    assert "long" in inputs["borrower_id"].lower()
    assert "borrower_id" in [c.name for c in sig.outputs.inputs]


@pytest.mark.slow
def test_shuffled_ids_come_back_with_their_own_scores(served, tmp_path):
    root, request, _ = served
    out = _pyfunc(root).predict(request)
    assert list(out.borrower_id) == list(request.borrower_id)  # the caller's order, unchanged
    batch = _batch(root, request, tmp_path).set_index("borrower_id")
    np.testing.assert_allclose(
        out.probability, batch.probability.loc[out.borrower_id].to_numpy(), rtol=1e-6
    )
    assert list(out.tier) == list(batch.tier.loc[out.borrower_id])


def _invoke_in_process(model, frame: pd.DataFrame) -> tuple[int, str]:
    """What MLflow's scoring server answers, through its own request handling."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))})
    try:
        answer = scoring_server.invocations(
            body, "application/json", model, model.metadata.get_input_schema()
        )
    except MlflowException as exc:  # the server turns these into its HTTP answer
        return exc.get_http_status_code(), exc.serialize_as_json()
    return answer.status, answer.response


@pytest.mark.slow
def test_refusals_are_400_naming_column_and_rule_in_process(served):
    root, request, _ = served
    model = _pyfunc(root)
    status, body = _invoke_in_process(model, request)
    assert status == 200
    assert [p["borrower_id"] for p in json.loads(body)["predictions"]] == list(request.borrower_id)
    status, body = _invoke_in_process(model, _bad_category(request))
    assert status == 400, body
    assert "occupation_code" in body and "isin([0.0" in body and "INVALID_PARAMETER_VALUE" in body
    # the answer is the rule, not MLflow's dump of the whole request before it
    message = json.loads(body)["message"]
    assert "Failed to predict data" not in message and len(message) < 600, message
    status, body = _invoke_in_process(model, request.drop(columns=["borrower_id"]))
    assert status == 400 and "borrower_id" in body, body
    # called directly (no schema in between), the model names the id column itself
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="column 'borrower_id' is missing"):
        model.unwrap_python_model().predict(None, request.drop(columns=["borrower_id"]))


def _post(port: int, frame: pd.DataFrame) -> tuple[int, str]:
    body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
    return post_invocations_text(port, body)


@pytest.mark.slow
def test_mlflow_models_serve_keeps_ids_and_answers_400(served, tmp_path):
    root, request, _ = served
    with model_server(root, f"models:/{NAME}@champion", tmp_path / "serve.log") as port:
        status, body = _post(port, request)
        assert status == 200, body
        preds = json.loads(body)["predictions"]
        assert [p["borrower_id"] for p in preds] == list(request.borrower_id)
        batch = _batch(root, request, tmp_path).set_index("borrower_id")
        served_p = [p["probability"] for p in preds]
        want = batch.probability.loc[list(request.borrower_id)].to_numpy()
        np.testing.assert_allclose(served_p, want, rtol=1e-6)
        status, body = _post(port, _bad_category(request))
        assert status == 400, body
        assert "occupation_code" in body and "isin([0.0" in body, body
        status, body = _post(port, request.drop(columns=["borrower_id"]))
        assert status == 400 and "borrower_id" in body, body


@pytest.mark.slow
def test_table_model_serving_keeps_its_own_id_and_flags_rows(tmp_path_factory):
    """A bring-your-own-table model: its id column in and out, unseen codes flagged."""
    import mlflow
    import mlflow.pyfunc
    from helpers import SMALL, compose_config

    from pipeline.stages.driver import execute

    root = tmp_path_factory.mktemp("serving_table")
    german = GERMAN
    table = [
        "data=table",
        f"data.path={german}",
        "data.target=creditability",
        "data.positive=bad",
        "model.cv_repeats=0",
        "model.n_estimators=60",
    ]
    execute(compose_config(root, [*SMALL, *table], stage="train"), [])
    meta = json.loads((root / "models" / "model.json").read_text())
    names, cat = meta["feature_names"], meta["categorical"][0]
    feats = pd.read_parquet(root / "data" / "processed" / "table_features.parquet")
    rows = feats[feats.split == "oot"].head(20).sample(frac=1.0, random_state=3)
    request = rows[["row_id", *names]].reset_index(drop=True)
    request[names] = request[names].astype(np.float64)
    request.loc[1, cat] = 999.0
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{root}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/german-credit-serving@champion")
    assert [c.name for c in model.metadata.signature.inputs.inputs][0] == "row_id"
    out = model.predict(request)
    assert list(out.row_id) == list(request.row_id)
    assert out.flag_unseen_category[1] == cat
    assert (out.flag_unseen_category.drop(index=1) == "").all()
    status, body = _invoke_in_process(model, request.drop(columns=["row_id"]))
    assert status == 400 and "row_id" in body, body
