"""Bring your own table: preparation rules, clear errors, and the German credit example."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.__main__ import execute
from pipeline.base.config import REPO_ROOT
from pipeline.base.io import DataError
from pipeline.core.table import prepare, read_any

GERMAN = REPO_ROOT / "data" / "external" / "german_credit" / "german_credit.csv"


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
    assert t.categories["colour"] == ["green", "red"]
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
        "data=table",
        f"data.path={GERMAN}",
        "data.target=creditability",
        "data.positive=bad",
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
    assert summary["oot"]["auc"] > 0.65
    assert "rules" not in summary["baselines"]
    assert summary["champion"]["name"].endswith("-german_credit")

    # the report of a table run: the same page, with the simulator-only parts named
    report_cfg = make_cfg(
        "data=table",
        f"data.path={GERMAN}",
        "data.target=creditability",
        "data.positive=bad",
        "model.cv_repeats=1",
        "stage=report",
    )
    rep = execute(report_cfg, [])
    page = Path(rep["path"]).read_text(encoding="utf-8")
    assert f"{summary['cv']['lightgbm']['auc_mean']:.4f}" in page
    assert f"{summary['oot']['auc']:.4f}" in page
    for sid in ("data-card", "fidelity", "policy"):
        part = page.split(f'<section id="{sid}">')[1].split("</section>")[0]
        assert 'class="missing"' in part, sid
    assert 'data-plot="roc"' in page  # train-stage plots are embedded
