"""Batch scoring: raw folders and feature tables, validation messages, one borrower."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pandera.errors
import pytest

from pipeline.base.causes import OCCUPATIONS
from pipeline.base.io import DataError
from pipeline.base.registry import FEATURES
from pipeline.core import scoring
from pipeline.core.scoring import assign_tiers

WORLD = [
    "tracking.enabled=false",
    "model.baselines=false",
    "model.n_estimators=60",
    "explain.advice_rows=5",
    "explain.plot_sample=200",
    "explain.dependence_top=1",
    "score.advice_rows=5",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from helpers import run_world, seed_small_data

    root = tmp_path_factory.mktemp("score_world")
    seed_small_data(tmp_path_factory, root)
    run_world(root, WORLD)
    return root


def _score(root, *overrides):
    from helpers import SMALL, compose_config

    from pipeline.stages.driver import execute

    cfg = compose_config(root, [*SMALL, *WORLD, *overrides], stage="score")
    return execute(cfg, [])


def _features(root) -> pd.DataFrame:
    df = pd.read_parquet(root / "data" / "processed" / "features.parquet")
    oot = df[df.split == "oot"]
    # one row per borrower: the last out-of-time snapshot (full tightening, regime 2)
    last = oot[oot.snapshot == oot.snapshot.max()]
    return last.drop(columns=["split", "label", "label_cause"]).head(300)


def test_assign_tiers_boundaries():
    tiers = assign_tiers(
        np.array([0.0, 0.049, 0.05, 0.149, 0.15, 1.0]), [0.05, 0.15], ["l", "m", "h"]
    )
    assert list(tiers) == ["l", "l", "m", "m", "h", "h"]


@pytest.mark.slow
def test_score_raw_folder_latest_month(world, tmp_path):
    out = tmp_path / "scores.parquet"
    summary = _score(world, f"score.output={out}")
    t = pd.read_parquet(out)
    assert len(t) == summary.summary["score"]["rows"] > 100
    assert (t.snapshot == 35).all()  # the latest month of a 36-month world
    assert t.borrower_id.is_unique
    assert t.probability.between(0, 1).all()
    assert set(t.tier) <= {"low", "medium", "high"}
    assert (t.probability[t.tier == "high"] >= 0.15).all()
    assert (t.probability[t.tier == "low"] < 0.05).all()
    # a first reason wherever the row supports one: every high-tier row, most rows at or
    # above the lowest cut-off; a low-tier row has no closure concern, and says so with
    # what protects it; an empty reason, never a made-up one
    has = t.reason_1_cause != ""
    low = t.tier == "low"
    assert has[t.tier == "high"].all() and has[~low].mean() > 0.5
    assert not has[low].any() and (t.closure_concern == ~low).all()
    assert t.protect_1_en[low].str.startswith("no closure concern").all()
    assert (t.protect_1_en[~low] == "").all()
    for col in ("reason_1_feature", "reason_1_zh", "reason_1_en"):
        assert (t[col][has] != "").all() and (t[col][~has] == "").all(), col
    assert t.reason_1_value[has].notna().all() and (t.reason_1_shap[has] > 0).all()
    assert (t.reason_1_shap[~has] == 0).all()
    # month 35 lies in full tightening: the world's riskiest months fill the high tier, more
    # than score.advice_rows=5 of them, so the advice cap is exercised
    high = t[t.tier == "high"]
    assert len(high) > 5
    advised = high.advice_en != ""
    assert advised.sum() == 5  # the highest-risk high-tier rows, none of the others
    assert high.probability[advised].min() >= high.probability[~advised].max()
    assert (t.advice_en[t.tier != "high"] == "").all()
    assert t.model_source.str.startswith("local").all()


@pytest.mark.slow
def test_score_feature_table_csv_matches_parquet_and_one_borrower(world, tmp_path, capsys):
    df = _features(world)
    src = tmp_path / "new.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "scores.csv"
    _score(world, f"score.input={src}", f"score.output={out}")
    t = pd.read_csv(out)
    assert len(t) == len(df)
    pq_src = tmp_path / "new.parquet"
    df.to_parquet(pq_src)
    out2 = tmp_path / "scores.parquet"
    _score(world, f"score.input={pq_src}", f"score.output={out2}")
    t2 = pd.read_parquet(out2)
    np.testing.assert_allclose(t.probability, t2.probability, rtol=1e-6)
    bid = int(df.borrower_id.iloc[7])
    one = tmp_path / "one.parquet"
    _score(world, f"score.input={pq_src}", f"score.output={one}", f"score.borrower_id={bid}")
    o = pd.read_parquet(one)
    assert list(o.borrower_id) == [bid]
    assert o.probability.iloc[0] == pytest.approx(t2.probability[t2.borrower_id == bid].iloc[0])
    assert "probability" in capsys.readouterr().out
    none = tmp_path / "none.parquet"  # a fresh output: the refusal is about the borrower
    with pytest.raises(DataError, match="no eligible row with borrower_id = 99999999"):
        _score(world, f"score.input={pq_src}", f"score.output={none}", "score.borrower_id=99999999")
    assert not none.exists()


def _break(df: pd.DataFrame, how: str) -> pd.DataFrame:
    df = df.copy()
    if how == "missing":
        return df.drop(columns=["tenure"])
    if how == "dtype":
        df["tenure"] = "long"
    elif how == "nan":
        df.loc[df.index[3], "tenure"] = np.nan
    elif how == "inf":
        df.loc[df.index[3], "tenure"] = np.inf
    elif how == "huge":  # finite in float64, inf in the model's float32
        df.loc[df.index[3], "draw_amount_3"] = 1e300
    elif how == "negative":
        df.loc[df.index[3], "draw_amount_3"] = -5.0
    elif how == "category":
        df.loc[df.index[3], "occupation_code"] = 9.0
    elif how == "occupation":
        df.loc[df.index[3], "occupation"] = "astronaut"
    elif how == "tier":  # the simulator has city tiers 1 to 4
        df.loc[df.index[3], "city_tier"] = 999.0
    elif how == "duplicate":
        df.loc[df.index[3], "borrower_id"] = df.borrower_id.iloc[4]
    return df


@pytest.mark.slow
@pytest.mark.parametrize(
    "how, column, rule",
    [
        ("missing", "tenure", "required column"),
        ("dtype", "tenure", "coerce_dtype"),
        ("nan", "tenure", "not_nullable"),
        ("inf", "tenure", "finite"),
        ("huge", "draw_amount_3", "within float32's range"),
        ("negative", "draw_amount_3", "greater_than_or_equal_to(0"),
        ("category", "occupation_code", "isin([0.0, 1.0"),
        ("occupation", "occupation", "isin"),
        ("tier", "city_tier", "less_than_or_equal_to(4"),
        ("duplicate", "borrower_id", "field_uniqueness"),
    ],
)
def test_bad_feature_table_names_file_column_rule(world, tmp_path, how, column, rule):
    src = tmp_path / f"bad_{how}.parquet"
    _break(_features(world), how).to_parquet(src)
    out = tmp_path / "never.parquet"
    with pytest.raises(DataError) as exc:
        _score(world, f"score.input={src}", f"score.output={out}")
    msg = str(exc.value)
    assert str(src) in msg and f"'{column}'" in msg and rule in msg, msg
    assert not out.exists()


@pytest.mark.slow
def test_bad_raw_folder_and_snapshot(world, tmp_path):
    empty = tmp_path / "empty"  # a folder without raw tables (the output lies outside it)
    empty.mkdir()
    with pytest.raises(DataError, match="account_months.parquet: file not found"):
        _score(world, f"score.input={empty}", f"score.output={tmp_path / 'x.parquet'}")
    raw = world / "data" / "raw"
    with pytest.raises(DataError, match="score.snapshot = 99"):
        _score(
            world,
            f"score.input={raw}",
            "score.snapshot=99",
            f"score.output={tmp_path / 'x.parquet'}",
        )


def test_score_config_is_validated(make_cfg):
    from pipeline.base.config import ConfigError, validate

    with pytest.raises(ConfigError, match="score.tier_cuts"):
        validate(make_cfg("score.tier_cuts=[0.3,0.1]"))
    with pytest.raises(ConfigError, match="score.tier_names"):
        validate(make_cfg("score.tier_names=[a,b]"))
    with pytest.raises(ConfigError, match="score.model_source"):
        validate(make_cfg("score.model_source=cloud"))


def _valid_features(n: int = 6) -> tuple[pd.DataFrame, list[str]]:
    """A feature table that meets every rule: each value at its lower bound (or 0)."""
    names = [f.name for f in FEATURES]
    cols = {"borrower_id": np.arange(n, dtype=np.int64), "snapshot": np.full(n, 20)}
    for f in FEATURES:
        lo, hi = f.bounds
        cols[f.name] = np.full(n, lo if np.isfinite(lo) else min(0.0, hi))
    cols["occupation"] = [OCCUPATIONS[i % len(OCCUPATIONS)] for i in range(n)]
    return pd.DataFrame(cols), names


def _broken(df: pd.DataFrame, how: str) -> pd.DataFrame:
    out = df.copy()
    cat, num = "occupation_code", "months_since_ext_activity"
    if how == "nan":
        out.loc[2, num] = np.nan
    elif how == "inf":
        out.loc[1, num] = np.inf
    elif how == "beyond_float32":
        out.loc[1, num] = 1e39
    elif how == "below_bound":
        out.loc[3, num] = -1.0
    elif how == "above_bound":
        hi = max(h for h in (f.bounds[1] for f in FEATURES) if np.isfinite(h))
        name = next(f.name for f in FEATURES if f.bounds[1] == hi)
        out.loc[0, name] = hi + 1
    elif how == "unknown_category":
        out.loc[0, cat] = 99.0
    elif how == "fractional_category":
        out.loc[0, cat] = 1.5
    elif how == "negative_id":
        out.loc[4, "borrower_id"] = -4
    elif how == "duplicate_id":
        out.loc[1, "borrower_id"] = 0
    elif how == "int32_id":
        out["borrower_id"] = out["borrower_id"].astype(np.int32)
    elif how == "text_feature":
        out[num] = out[num].astype(str)
    elif how == "missing_feature":
        out = out.drop(columns=[num])
    elif how == "unknown_occupation":
        out.loc[0, "occupation"] = "astronaut"
    elif how == "missing_occupation_value":
        out["occupation"] = out["occupation"].astype(object)
        out.loc[0, "occupation"] = None
    return out


BROKEN = [
    "nan",
    "inf",
    "beyond_float32",
    "below_bound",
    "above_bound",
    "unknown_category",
    "fractional_category",
    "negative_id",
    "duplicate_id",
    "int32_id",
    "missing_feature",
    "unknown_occupation",
    "missing_occupation_value",
]


@pytest.mark.parametrize("how", BROKEN)
def test_the_quick_check_accepts_no_table_that_pandera_refuses(how):
    """The whole-matrix check of validate_features never lets through a broken table;
    the broken table gets pandera's own words."""
    df, names = _valid_features()
    bad = _broken(df.drop(columns=["snapshot"]), how)
    assert not scoring._meets_schema(bad, names, "borrower_id", False, False), how
    with pytest.raises(pandera.errors.SchemaErrors):
        scoring.feature_schema(names, "borrower_id").validate(bad, lazy=True)
    with pytest.raises(DataError, match="request: "):
        scoring.validate_features(bad, Path("request"), names, "borrower_id")


@pytest.mark.parametrize(
    "variant", ["as_is", "int_column", "float32_column", "extra_column", "per_snapshot"]
)
def test_the_quick_check_returns_what_pandera_returns(variant):
    df, names = _valid_features()
    per_snapshot = variant == "per_snapshot"
    if per_snapshot:  # one borrower at two snapshots
        df.loc[1, "borrower_id"] = 0
        df.loc[1, "snapshot"] = 21
    else:
        df = df.drop(columns=["snapshot"])
    if variant == "int_column":
        df["months_since_ext_activity"] = df["months_since_ext_activity"].astype(np.int64)
    if variant == "float32_column":
        df["months_since_ext_activity"] = df["months_since_ext_activity"].astype(np.float32)
    if variant == "extra_column":
        df["note"] = "x"
    assert scoring._meets_schema(df, names, "borrower_id", False, per_snapshot)
    quick = scoring.validate_features(df, Path("request"), names, "borrower_id")
    slow = scoring.feature_schema(names, "borrower_id", per_snapshot=per_snapshot).validate(df)
    pd.testing.assert_frame_equal(quick, slow, check_exact=True)
    assert quick is not df


def test_a_column_of_number_texts_is_left_to_pandera_which_reads_it():
    df, names = _valid_features()
    df = _broken(df.drop(columns=["snapshot"]), "text_feature")
    assert not scoring._meets_schema(df, names, "borrower_id", False, False)
    checked = scoring.validate_features(df, Path("request"), names, "borrower_id")
    assert checked["months_since_ext_activity"].dtype == np.float64


def test_table_mode_lets_missing_values_through_as_pandera_does():
    df, names = _valid_features()
    df = df.drop(columns=["snapshot"])
    df.loc[2, "months_since_ext_activity"] = np.nan
    df.loc[3, "occupation_code"] = np.nan
    df["borrower_id"] = [f"b{i}" for i in range(len(df))]  # a table's own ids
    assert scoring._meets_schema(df, names, "borrower_id", True, False)
    quick = scoring.validate_features(df, Path("t"), names, "borrower_id", table_mode=True)
    slow = scoring.feature_schema(names, "borrower_id", table_mode=True).validate(df)
    pd.testing.assert_frame_equal(quick, slow, check_exact=True)
