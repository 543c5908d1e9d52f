"""Bring your own table: preparation rules, clear errors, and the German credit example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.base.config import REPO_ROOT
from pipeline.base.io import DataError
from pipeline.core.selection import ORDER
from pipeline.core.table import prepare, read_any
from pipeline.stages.driver import execute

GERMAN = REPO_ROOT / "data" / "external" / "german_credit" / "german_credit.csv"
GERMAN_TABLE = (
    "data=table",
    f"data.path={GERMAN}",
    "data.target=creditability",
    "data.positive=bad",
)


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "key": np.arange(n) * 7,
            "x": x,
            "colour": rng.choice(["red", "green", None], n),
            "month": rng.integers(0, 10, n),
            "bad": (rng.random(n) < 1 / (1 + np.exp(-x))).astype(int),
        }
    )


def test_prepare_codes_categories_and_splits_by_time():
    df = _frame()
    t = prepare(df, "t.csv", target="bad", id_column="key", time="month")
    f = t.frame
    assert list(f.columns[:3]) == ["key", "split", "label"]
    assert t.feature_names == ["x", "colour"] and t.categorical == ["colour"]
    assert t.categories["colour"] == ["green", "red", "rare"]  # last: rare and unseen levels
    assert set(f.colour.unique()) == {-1, 0, 1}  # -1 = missing
    assert f.colour.dtype.kind == "i"
    # out-of-time = the latest months, whole
    latest = df.month[f.split == "oot"]
    assert latest.min() > df.month[f.split != "oot"].max()
    assert 0.1 < (f.split == "oot").mean() < 0.35
    assert set(f.split) == {"train", "valid", "oot"}


def test_prepare_text_target_needs_positive_value():
    df = _frame().assign(bad=lambda d: np.where(d.bad == 1, "bad", "good"))
    with pytest.raises(DataError, match=r"t.csv: column 'bad'.*data.positive"):
        prepare(df, "t.csv", target="bad")
    t = prepare(df, "t.csv", target="bad", positive="bad")
    assert t.frame.label.mean() == pytest.approx((df.bad == "bad").mean())
    with pytest.raises(DataError, match="never takes the data.positive value 'awful'"):
        prepare(df, "t.csv", target="bad", positive="awful")


def test_missing_target_is_named():
    with pytest.raises(DataError, match=r"t.csv: target column 'default' is missing"):
        prepare(_frame(), "t.csv", target="default")


def test_one_class_only_is_rejected():
    df = _frame().assign(bad=0)
    with pytest.raises(DataError, match=r"t.csv: column 'bad' has one class only"):
        prepare(df, "t.csv", target="bad")


def test_datetime_feature_column_is_rejected_with_a_hint(tmp_path):
    df = _frame().assign(when=pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(400), "D"))
    path = tmp_path / "t.parquet"
    df.to_parquet(path)
    with pytest.raises(DataError, match=r"t.parquet: column 'when' has type datetime.*data.time"):
        prepare(read_any(path), path, target="bad")
    # named as the time column it is used for the out-of-time split instead
    t = prepare(read_any(path), path, target="bad", time="when")
    assert (t.frame.split == "oot").sum() > 0 and "when" not in t.feature_names


def test_nested_list_column_is_rejected(tmp_path):
    df = _frame(50)
    table = pa.Table.from_pandas(df).append_column(
        "tags", pa.array([["a", "b"]] * len(df), type=pa.list_(pa.string()))
    )
    path = tmp_path / "nested.parquet"
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"nested.parquet: column 'tags' has values of type"):
        prepare(read_any(path), path, target="bad")


def test_empty_and_headless_files_are_rejected(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty.csv: file is empty"):
        read_any(empty)
    header = tmp_path / "header.csv"
    header.write_text("a,b,bad\n")
    with pytest.raises(DataError, match=r"header.csv: table has no rows"):
        read_any(header)
    with pytest.raises(DataError, match=r"nothere.csv: file not found"):
        read_any(tmp_path / "nothere.csv")


def test_duplicate_ids_are_rejected():
    df = _frame().assign(key=1)
    with pytest.raises(DataError, match=r"column 'key' \(data.id\) must be unique"):
        prepare(df, "t.csv", target="bad", id_column="key")


def test_table_mode_config_requires_path_and_target(make_cfg):
    from pipeline.base.config import ConfigError, validate

    with pytest.raises(ConfigError, match="data.path"):
        validate(make_cfg("data=table"))


def test_german_credit_end_to_end(make_cfg, tmp_path):
    """The worked example: train, evaluate and cross-validate on the shipped table."""
    cfg = make_cfg(
        *GERMAN_TABLE,
        "model.cv_repeats=1",
        "stage=train",
    )
    summary = execute(cfg, [])
    feats = pd.read_parquet(tmp_path / "data" / "processed" / "table_features.parquet")
    assert list(feats.columns[:3]) == ["row_id", "split", "label"]
    assert len(feats) == 1000 and feats.label.mean() == pytest.approx(0.3)
    meta = json.loads((tmp_path / "models" / "model.json").read_text())
    assert meta["mode"] == "table"
    assert "purpose" in meta["categorical"] and meta["categories"]["purpose"]
    assert meta["feature_names"] == list(feats.columns[3:])
    assert summary["cv"]["lightgbm"]["auc_mean"] > 0.7
    assert summary["cv"]["scorecard"]["auc_mean"] > 0.7
    cv = summary["cv"]
    assert [c["name"] for c in cv["candidates"]] == ["scorecard", "lightgbm", "forest", "blend"]
    assert {"name", "auc_mean", "auc_std", "auc_se_corrected"} <= set(cv["selected"])
    # the selection ran on the training and validation rows; the hold-out, which it
    # never saw, is scored once by the selected model
    assert cv["rows"] == 800 and cv["splits"] == "train and valid"
    hold = summary["holdout"]
    assert hold["n"] == 200 and hold["n_bad"] == 60 and hold["split"] == "hold-out"
    assert hold["auc"] == pytest.approx(summary["oot"]["auc"]) and 0 < hold["auc_se"] < 0.1
    assert cv["lightgbm_fixed"]["settings"]["num_leaves"] == 15
    assert {r["name"] for r in cv["rule_check"]} == set(ORDER)
    picked = next(c for c in cv["candidates"] if c["name"] == cv["selected"]["name"])
    assert picked["auc_mean"] == cv["selected"]["auc_mean"] and cv["reason"]
    assert all(c["seconds"] > 0 for c in cv["candidates"])
    # the encoding is saved with the model; screening says what it would drop
    enc = meta["encoding"]
    assert [c["safe"] for c in enc["columns"]] == meta["feature_names"]
    assert meta["screening"]["select"] is False
    assert {f["name"] for f in meta["screening"]["features"]} == set(meta["feature_names"])
    assert summary["oot"]["auc"] > 0.65
    assert "rules" not in summary["baselines"]
    assert summary["champion"]["name"] == "german-credit"  # the table's clean name

    # the report of a table run: the same page, without the simulator-only parts
    report_cfg = make_cfg(
        *GERMAN_TABLE,
        "model.cv_repeats=1",
        "stage=report",
    )
    rep = execute(report_cfg, [])
    page = Path(rep.path).read_text(encoding="utf-8")
    assert f"{summary['cv']['lightgbm']['auc_mean']:.4f}" in page
    assert f"{summary['oot']['auc']:.4f}" in page
    for sid in ("fidelity", "policy"):
        assert f'<section id="{sid}">' not in page, sid
    assert 'data-plot="roc"' in page  # train-stage plots are embedded
    # the report names the selected candidate as the model and says why
    chosen = summary["cv"]["selected"]["name"]
    assert f"the model is the selected candidate, {chosen}: {summary['cv']['reason']}" in page
    assert summary["model"]["kind"] == chosen


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_separator_is_detected(tmp_path, sep):
    df = _frame(60)
    path = tmp_path / "t.csv"
    df.to_csv(path, sep=sep, index=False)
    back = read_any(path)
    assert list(back.columns) == list(df.columns) and len(back) == 60
    # naming the separator gives the same table
    pd.testing.assert_frame_equal(read_any(path, sep=sep), back)


def test_unreadable_text_files_get_clear_messages(tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a;b;bad\n1;2;0\n3;4;1\n5;6;7;8;9\n")
    with pytest.raises(DataError, match=r"ragged.csv: rows do not split.*semicolon.*data.sep"):
        read_any(ragged)
    one = tmp_path / "one.csv"
    one.write_text("a b bad\n1 2 0\n3 4 1\n")
    with pytest.raises(DataError, match=r"one.csv: only one column found.*set data.sep"):
        read_any(one)


def test_numbers_stored_as_text_become_numbers(tmp_path):
    df = _frame(200)
    df["amount"] = [f"{v:,.0f}" for v in (df.x * 1000 + 5000)]  # "4,871"
    df["spaced"] = [f" {v:.2f} " for v in df.x]
    path = tmp_path / "t.csv"
    df.to_csv(path, sep=";", index=False)
    t = prepare(read_any(path), path, target="bad")
    assert "amount" not in t.categorical and "spaced" not in t.categorical
    assert np.allclose(t.frame.amount, np.round(df.x * 1000 + 5000), atol=0.5)
    assert np.allclose(t.frame.spaced, df.x, atol=0.006)


def test_text_target_with_spaces_and_numeric_positive():
    df = _frame().assign(bad=lambda d: np.where(d.bad == 1, " yes", "no "))
    t = prepare(df, "t.csv", target="bad", positive="yes")
    assert t.frame.label.mean() == pytest.approx((df.bad.str.strip() == "yes").mean())
    with pytest.raises(DataError, match=r"did you mean 'yes'\? \(case matters\)"):
        prepare(df, "t.csv", target="bad", positive="YES")
    floats = _frame().assign(bad=lambda d: d.bad.astype(float))
    t = prepare(floats, "t.csv", target="bad", positive="1")
    assert t.frame.label.sum() == floats.bad.sum()


# at random the split takes its shares of all rows; by time, validation takes its share
# of the rows left after the latest months: 60 rows leave about 15 for training
@pytest.mark.parametrize(("time", "n"), [("", 400), ("month", 60)])
def test_split_leaving_too_few_training_rows_is_refused_naming_the_keys(time, n):
    with pytest.raises(DataError) as err:
        prepare(
            _frame(n),
            "t.csv",
            target="bad",
            id_column="key",
            time=time,
            valid_frac=0.49,
            oot_frac=0.49,
        )
    msg = str(err.value)
    assert "t.csv: data.valid_frac = 0.49 and data.oot_frac = 0.49" in msg, msg
    assert "at least 20 of each class" in msg
    prepare(_frame(), "t.csv", target="bad", id_column="key", time=time)  # the defaults pass


def test_encoding_is_fitted_on_training_rows_and_names_are_made_safe():
    df = _frame(600).rename(columns={"x": "x, in [units]"})
    df.loc[:4, "colour"] = "violet"  # 5 rows: rarer than min_count
    t = prepare(df, "t.csv", target="bad", id_column="key", time="month", min_count=10)
    assert t.encoding is not None
    assert t.feature_names == ["x_in_units", "colour"]
    assert t.encoding.original_names["x_in_units"] == "x, in [units]"
    assert "violet" not in t.categories["colour"]
    train_levels = set(df.colour[t.frame.split == "train"].dropna())
    assert set(t.encoding.columns[1].levels) | set(t.encoding.columns[1].rare_levels) == (
        train_levels
    )
    assert t.flags is not None and len(t.flags) == len(df)


def test_declared_monotone_columns_are_honoured_and_checked(make_cfg, tmp_path):
    """data.monotone={column: direction} in the table's own names: the model keeps the
    direction on a grid of every validation row, and model.json records it."""
    cfg = make_cfg(
        *GERMAN_TABLE,
        "model.cv_repeats=1",
        "data.monotone={duration_in_month:1,age_in_years:-1}",
        "stage=train",
    )
    summary = execute(cfg, [])
    # only candidates that keep the directions may be selected; the compiled model keeps them
    assert summary["cv"]["selected"]["name"] in ("lightgbm", "forest")
    assert "not eligible" in summary["cv"]["reason"]
    meta = json.loads((tmp_path / "models" / "model.json").read_text())
    assert meta["monotone"] == {"duration_in_month": 1, "age_in_years": -1}
    check = summary["monotone_check"]
    assert set(check["features"]) == {"duration_in_month", "age_in_years"}
    assert check["checks"] > 0 and check["violations"] == 0


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ("{purpose:1}", "column 'purpose' is categorical"),
        ("{no_such_column:1}", "names column 'no_such_column', which is not a feature"),
    ],
)
def test_declared_monotone_refuses_what_cannot_be_ordered(make_cfg, declared, message):
    cfg = make_cfg(
        *GERMAN_TABLE,
        "model.cv_repeats=0",
        f"data.monotone={declared}",
        "stage=train",
    )
    with pytest.raises(DataError, match=re.escape(message)):
        execute(cfg, [])


def test_a_table_run_lives_in_its_own_home_and_leaves_the_simulators_models(tmp_path):
    """Without paths.root a table run writes under runs/<name>/ and registers under that
    name: the simulator's models/, data/ and registry at the repository root stay as
    they were."""
    import os
    import shutil

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pipeline.adapters.model_registry import registered_name
    from pipeline.base.config import dataset_name

    assert dataset_name("", "/x/German_Credit.v2.csv") == "german-credit"
    assert dataset_name("My Loans!", "/x/y.csv") == "my-loans"
    name = f"home-test-{os.getpid()}"
    src = tmp_path / "loans.csv"
    _frame(400, seed=5).to_csv(src, index=False)
    overrides = [
        "data=table",
        f"data.name={name}",
        f"data.path={src}",
        "data.target=bad",
        "model.cv_repeats=0",
        "model.baselines=false",
        "model.n_estimators=20",
        "tracking=off",
        "stage=train",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
        sim = compose("config", overrides=["stage=train"])
    home = REPO_ROOT / "runs" / name
    assert Path(cfg.paths.models_dir) == home / "models"
    assert Path(cfg.paths.processed_dir) == home / "data" / "processed"
    assert str(cfg.tracking.uri) == f"sqlite:///{home}/mlflow.db"
    assert Path(sim.paths.models_dir) == REPO_ROOT / "models"
    assert registered_name(cfg) == name
    assert registered_name(sim) == "closure-risk-lgbm"

    def state(folder: Path) -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")
            if p.is_file()
        }

    before = {d: state(REPO_ROOT / d) for d in ("models", "data")}
    try:
        execute(cfg, [])
        assert (home / "models" / "model.txt").exists()
        assert {d: state(REPO_ROOT / d) for d in ("models", "data")} == before
    finally:
        shutil.rmtree(home, ignore_errors=True)
