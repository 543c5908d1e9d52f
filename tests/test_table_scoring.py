"""A table model scores its own raw table: the saved encoding, applied exactly as in training.

The table is the German credit file made awkward: a semicolon separator, an id column
of text, a money column stored as text with a decimal comma and thousands points, and
missing values in a category and in a number.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import GERMAN, SMALL, compose_config, post_invocations

from pipeline.base.io import DataError

pytestmark = pytest.mark.slow

BASE = [
    "tracking.enabled=false",
    "data=table",
    "data.target=creditability",
    "data.positive=bad",
    "data.id=loan_ref",
    "model.cv_repeats=0",
    "model.n_estimators=60",
    "score.advice_rows=0",
]


def _awkward(rows: pd.DataFrame) -> pd.DataFrame:
    df = rows.copy()
    df.insert(0, "loan_ref", [f"L{i:04d}" for i in range(len(df))])
    amount = df.credit_amount * 1.01 + 0.005 * (np.arange(len(df)) % 7)
    # 1.181,69: thousands points and a decimal comma
    text = amount.map(lambda x: f"{x:,.2f}".replace(",", " ").replace(".", ",").replace(" ", "."))
    df["credit_amount"] = text.astype(object)
    rng = np.random.default_rng(0)
    df.loc[rng.random(len(df)) < 0.05, "purpose"] = None
    df["age_in_years"] = df.age_in_years.astype(float)
    df.loc[rng.random(len(df)) < 0.05, "age_in_years"] = np.nan
    df.loc[7, "credit_amount"] = None
    return df


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from pipeline.stages.driver import execute

    root = tmp_path_factory.mktemp("table_scoring")
    src = root / "loans.csv"
    _awkward(pd.read_csv(GERMAN)).to_csv(src, sep=";", index=False)
    execute(_cfg(root, src, stage="train"), [])
    return root, src


def _cfg(root: Path, src: Path, *overrides: str, stage: str = "score"):
    return compose_config(root, [*SMALL, *BASE, f"data.path={src}", *overrides], stage=stage)


def _meta(root: Path) -> dict:
    return json.loads((root / "models" / "model.json").read_text())


def _score(root: Path, src: Path, inp: Path, out: Path, *overrides: str) -> dict:
    from pipeline.stages.driver import execute

    cfg = _cfg(root, src, f"score.input={inp}", f"score.output={out}", *overrides)
    return execute(cfg, [])


def test_the_training_table_scores_as_in_training(trained, tmp_path):
    root, src = trained
    meta = _meta(root)
    by_name = {c["name"]: c for c in meta["encoding"]["columns"]}
    assert by_name["credit_amount"]["from_text"] and by_name["credit_amount"]["decimal_comma"]
    assert by_name["purpose"]["kind"] == "categorical"
    raw_out = tmp_path / "raw.csv"
    summary = _score(root, src, src, raw_out)
    raw = pd.read_csv(raw_out)
    # the encoded feature table of the train stage, scored directly: the same rows
    feats = root / "data" / "processed" / "table_features.parquet"
    coded_out = tmp_path / "coded.parquet"
    _score(root, src, feats, coded_out)
    coded = pd.read_parquet(coded_out)
    assert len(raw) == 1000 == summary.summary["score"]["rows"]
    # no risk curves: a table has no closure months or causes, and the summary says so
    assert summary.summary["score"]["curves"] == {
        "absent": "a table model has no closure months or causes (simulator mode only)"
    }
    assert not [c for c in raw.columns if c.startswith("risk_h")]
    assert raw.loan_ref.tolist() == pd.read_csv(src, sep=";").loan_ref.tolist()
    assert raw.loan_ref.tolist() == coded.loan_ref.tolist()
    np.testing.assert_array_equal(raw.probability.to_numpy(), coded.probability.to_numpy())
    # the training rows are never flagged; the flag columns exist
    for col in ("flag_unseen_category", "flag_out_of_range", "flag_unparsed_number"):
        assert raw[col].fillna("").eq("").all(), col
    # reasons name a category by its level text, as the table writes it
    cats = {c["safe"]: c for c in meta["encoding"]["columns"] if c["kind"] == "categorical"}
    hit = raw[raw.reason_1_feature.isin(list(cats))]
    assert len(hit) > 100
    for feature, name, en in zip(
        hit.reason_1_feature, hit.reason_1_name, hit.reason_1_en, strict=True
    ):
        col, _, level = en.partition(" = ")
        assert col == name == cats[feature]["name"]
        assert level in [*cats[feature]["levels"], "rare", "missing"], en
    # and the same probabilities as the model itself on the rows it was trained on
    from pipeline.adapters.catalog import load_scoring_model

    model = load_scoring_model(root / "models")
    frame = pd.read_parquet(feats)
    np.testing.assert_array_equal(
        model.prob(frame[model.names].to_numpy()), raw.probability.to_numpy()
    )


def _new_rows(src: Path) -> pd.DataFrame:
    new = pd.read_csv(src, sep=";", dtype=str).head(30).drop(columns="creditability")
    new.loc[2, "purpose"] = "spaceship"
    new.loc[4, "age_in_years"] = "150"
    new.loc[5, "credit_amount"] = "lots"
    return new


def test_serve_example_of_a_table_model_sends_its_hold_out_rows_as_the_file_spells_them(
    trained,
):
    from pipeline.adapters.catalog import Catalog
    from pipeline.tools.serve_example import request_body

    root, src = trained
    body = request_body(Catalog.of(_cfg(root, src)), 3)["dataframe_split"]
    meta = _meta(root)
    names = [c["name"] for c in meta["encoding"]["columns"]]
    assert body["columns"] == ["loan_ref", *names]
    feats = pd.read_parquet(root / "data" / "processed" / "table_features.parquet")
    held = feats[feats.split == "oot"].loan_ref.head(3).tolist()
    assert [r[0] for r in body["data"]] == held
    raw = pd.read_csv(src, sep=";", dtype=str).set_index("loan_ref")
    amount = body["columns"].index("credit_amount")
    # the text as in the file (thousands points, decimal comma), for the served model
    # to encode as training did
    assert [r[amount] for r in body["data"]] == [raw.loc[str(i), "credit_amount"] for i in held]


def test_unseen_category_out_of_range_and_text_number_are_flagged(trained, tmp_path):
    root, src = trained
    inp = tmp_path / "new.csv"
    _new_rows(src).to_csv(inp, sep=";", index=False)  # the target is absent
    out = tmp_path / "scores.parquet"
    summary = _score(root, src, inp, out)
    t = pd.read_parquet(out)
    assert summary.summary["score"]["flagged_rows"] == {
        "flag_unseen_category": 1,
        "flag_out_of_range": 1,
        "flag_unparsed_number": 1,
    }
    assert t.loan_ref.tolist()[:3] == ["L0000", "L0001", "L0002"]
    assert t.flag_unseen_category[2] == "purpose"
    assert t.flag_out_of_range[4] == "age_in_years"
    assert t.flag_unparsed_number[5] == "credit_amount"
    assert t.probability.between(0, 1).all()


def test_strict_refuses_naming_file_column_and_rule(trained, tmp_path):
    root, src = trained
    inp = tmp_path / "new.csv"
    _new_rows(src).to_csv(inp, sep=";", index=False)
    out = tmp_path / "scores.csv"
    with pytest.raises(DataError) as exc:
        _score(root, src, inp, out, "score.strict=true")
    msg = str(exc.value)
    age = next(c for c in _meta(root)["encoding"]["columns"] if c["name"] == "age_in_years")
    assert str(inp) in msg
    assert "column 'purpose'" in msg and "'spaceship' for id 'L0002'" in msg
    assert "categories seen in training" in msg
    assert (
        "column 'age_in_years'" in msg
        and f"training range {age['low']:g} .. {age['high']:g}" in msg
    )
    assert "column 'credit_amount'" in msg and "'lots'" in msg and "decimal comma" in msg
    assert not out.exists()


def test_a_missing_column_or_id_is_refused_by_name(trained, tmp_path):
    root, src = trained
    rows = pd.read_csv(src, sep=";", dtype=str).head(10)
    inp = tmp_path / "short.csv"
    rows.drop(columns="purpose").to_csv(inp, sep=";", index=False)
    out = tmp_path / "scores.csv"
    with pytest.raises(DataError, match=r"short.csv: column\(s\) 'purpose' missing"):
        _score(root, src, inp, out)
    rows.drop(columns="loan_ref").to_csv(inp, sep=";", index=False)
    with pytest.raises(DataError, match=r"short.csv: column 'loan_ref' is missing"):
        _score(root, src, inp, out)
    assert not out.exists()


def test_other_types_and_formats_get_the_same_codes(trained, tmp_path):
    """A comma CSV (quoted fields) and a Parquet copy with its own types score the same."""
    root, src = trained
    rows = pd.read_csv(src, sep=";").head(50)
    ref = tmp_path / "ref.csv"
    rows.to_csv(ref, sep=";", index=False)
    _score(root, src, ref, tmp_path / "ref_scores.csv")
    comma = tmp_path / "comma.csv"
    rows.to_csv(comma, index=False)  # a comma separator, detected; quoted fields
    _score(root, src, comma, tmp_path / "comma_scores.csv")
    pq_in = tmp_path / "rows.parquet"
    rows.to_parquet(pq_in)
    _score(root, src, pq_in, tmp_path / "pq_scores.csv")
    a = pd.read_csv(tmp_path / "ref_scores.csv")
    for name in ("comma_scores.csv", "pq_scores.csv"):
        b = pd.read_csv(tmp_path / name)
        np.testing.assert_array_equal(a.probability.to_numpy(), b.probability.to_numpy())
        assert b.flag_unseen_category.fillna("").eq("").all(), name


# ---- serving: the pyfunc takes the raw columns too ------------------------------------

SERVING = "loans-serving"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from pipeline.stages.driver import execute

    root = tmp_path_factory.mktemp("table_serving")
    src = root / "loans.csv"
    _awkward(pd.read_csv(GERMAN)).to_csv(src, sep=";", index=False)
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        execute(_cfg(root, src, "tracking.enabled=true", stage="train"), [])
    (root / "train_console.txt").write_text(console.getvalue(), encoding="utf-8")
    return root, src


def test_the_registry_speaks_of_the_hold_out(served):
    root, _ = served
    text = (root / "train_console.txt").read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if ln.startswith("registry:"))
    assert "(hold-out AUC " in line and "is the first 'champion'" in line
    assert "out-of-time" not in line


def _pyfunc(root: Path):
    import mlflow
    import mlflow.pyfunc

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{root}/mlflow.db")
    return mlflow.pyfunc.load_model(f"models:/{SERVING}@champion")


def _train_time(root: Path, ids: list[str]) -> np.ndarray:
    """Probabilities of the local model on the train stage's encoded rows of ``ids``."""
    from pipeline.adapters.catalog import load_scoring_model

    model = load_scoring_model(root / "models")
    frame = pd.read_parquet(root / "data" / "processed" / "table_features.parquet")
    frame = frame.set_index("loan_ref").loc[ids]
    return model.prob(frame[model.names].to_numpy())


def test_pyfunc_scores_raw_and_encoded_rows_alike(served):
    from mlflow.exceptions import MlflowException

    root, src = served
    model = _pyfunc(root)
    schema = model.metadata.get_input_schema()
    raw_names = [c for c in pd.read_csv(src, sep=";", nrows=1).columns if c != "creditability"]
    assert schema.input_names() == raw_names  # id first, then the table's own columns
    assert list(model.input_example.columns) == raw_names
    rows = pd.read_csv(src, sep=";").iloc[100:120].drop(columns="creditability")
    rows = rows.iloc[::-1].reset_index(drop=True)  # any order: ids travel with the rows
    out = model.predict(rows)
    assert out.loan_ref.tolist() == rows.loan_ref.tolist()
    np.testing.assert_array_equal(out.probability, _train_time(root, rows.loan_ref.tolist()))
    assert (out.flag_unseen_category == "").all()
    # the encoded features of the same rows give the same answer
    coded = pd.read_parquet(root / "data" / "processed" / "table_features.parquet")
    coded = coded.set_index("loan_ref").loc[rows.loan_ref].reset_index()
    names = json.loads((root / "models" / "model.json").read_text())["feature_names"]
    again = model.predict(coded[["loan_ref", *names]])
    np.testing.assert_array_equal(again.probability, out.probability)
    # an unseen category is flagged; text where a number belongs too
    odd = rows.copy()
    odd.loc[0, "purpose"] = "spaceship"
    odd.loc[1, "credit_amount"] = "lots"
    flagged = model.predict(odd)
    assert flagged.flag_unseen_category[0] == "purpose"
    assert flagged.flag_unparsed_number[1] == "credit_amount"
    bad = rows.copy()
    bad["age_in_years"] = bad.age_in_years.astype(float)
    bad.loc[2, "age_in_years"] = np.inf
    with pytest.raises(MlflowException, match="age_in_years"):
        model.predict(bad)
    with pytest.raises(MlflowException, match="'purpose' missing"):
        model.predict(rows.drop(columns="purpose"))


def test_served_model_answers_raw_json_rows(served, tmp_path):

    from helpers import model_server

    root, src = served
    rows = pd.read_csv(src, sep=";", dtype=str).iloc[:8].drop(columns="creditability")
    rows.loc[3, "purpose"] = "spaceship"
    body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}

    with model_server(root, f"models:/{SERVING}@champion", tmp_path / "serve.log") as port:
        status, answer = post_invocations(port, body)
        assert status == 200, answer
        preds = answer["predictions"]
        assert [p["loan_ref"] for p in preds] == rows.loan_ref.tolist()
        got = np.array([p["probability"] for p in preds])
        want = _train_time(root, rows.loan_ref.tolist())
        keep = np.arange(len(rows)) != 3  # row 3 has an unseen category (the rare code)
        np.testing.assert_allclose(got[keep], want[keep], rtol=1e-12)
        assert preds[3]["flag_unseen_category"] == "purpose"
        assert all(p["flag_unseen_category"] == "" for i, p in enumerate(preds) if i != 3)
        no_id = {
            "dataframe_split": json.loads(
                rows.drop(columns="loan_ref").to_json(orient="split", index=False)
            )
        }
        status, answer = post_invocations(port, no_id)
        assert status == 400 and "loan_ref" in answer["message"], answer


def test_numbers_only_table_without_ids_scores_with_row_numbers(tmp_path):
    """A table of numbers and no id column: its raw rows look encoded but carry no
    ``row_id``; they are scored with their row numbers, as in training."""
    from pipeline.stages.driver import execute

    german = pd.read_csv(GERMAN)
    numeric = [c for c in german.columns if pd.api.types.is_numeric_dtype(german[c])]
    src = tmp_path / "numbers.csv"
    german[[*numeric, "creditability"]].to_csv(src, index=False)
    base = [o for o in BASE if not o.startswith("data.id")]
    overrides = [*SMALL, *base, f"data.path={src}"]
    execute(compose_config(tmp_path, overrides, stage="train"), [])
    scored = {}
    feats = tmp_path / "data" / "processed" / "table_features.parquet"
    for name, inp in (("raw", src), ("coded", feats)):
        out = tmp_path / f"{name}.parquet"
        cfg = compose_config(
            tmp_path, [*overrides, f"score.input={inp}", f"score.output={out}"], stage="score"
        )
        execute(cfg, [])
        scored[name] = pd.read_parquet(out)
    assert scored["raw"].row_id.tolist() == list(range(len(german)))
    assert scored["coded"].row_id.tolist() == list(range(len(german)))
    np.testing.assert_array_equal(scored["raw"].probability, scored["coded"].probability)
