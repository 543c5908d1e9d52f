"""Reading the feature table by split gives what filtering the whole table gives.

The train stage reads one split at a time straight into float32 matrices, and the batch
explanation reads only the rows it explains; both must hand on the very rows, values and
order the whole-table path did, so the model and the reasons stay the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import catalog_in, load_feature_table

from pipeline.base.io import DataError
from pipeline.base.registry import FEATURE_NAMES
from pipeline.core import baselines
from pipeline.core import train as train_core
from pipeline.core.features import FEATURE_TABLE_SCHEMA
from pipeline.stages.explain import batch_rows
from pipeline.stages.train import SPLITS, TrainData, _split_rows, feature_matrix


def _table(path: Path, n: int = 3000, seed: int = 7, split: list[str] | None = None) -> Path:
    rng = np.random.default_rng(seed)
    snaps = rng.choice([12, 14, 22, 26, 28], size=n)
    order = np.lexsort((np.arange(n), snaps))
    snaps = snaps[order]
    names = split or ["valid" if s == 22 else "oot" if s >= 26 else "train" for s in snaps.tolist()]
    data: dict[str, pa.Array] = {
        "borrower_id": pa.array(np.arange(n, dtype=np.int64)),
        "snapshot": pa.array(snaps.astype(np.int16)),
        "split": pa.array(names, pa.string()),
        "label": pa.array((rng.random(n) < 0.2).astype(np.int8)),
        "label_cause": pa.array(rng.choice(["none", "overdue"], size=n).tolist(), pa.string()),
        "occupation": pa.array(rng.choice(["a", "b"], size=n).tolist(), pa.string()),
    }
    for j, name in enumerate(FEATURE_NAMES):
        x = rng.normal(size=n).astype(np.float32) + j
        x[rng.random(n) < 0.3] = -1.0  # repeated values, as the features' sentinels
        data[name] = pa.array(x)
    pq.write_table(pa.table(data, schema=FEATURE_TABLE_SCHEMA), path, row_group_size=700)
    return path


def _data(path: Path, frame: pd.DataFrame, by_split: bool) -> TrainData:
    return TrainData(
        mode="simulator",
        frame=frame,
        names=list(FEATURE_NAMES),
        categorical=[],
        woe_categorical=[],
        monotone=None,
        source=path,
        segments={"oot_by_occupation": "occupation"},
        by_split=by_split,
    )


@pytest.mark.parametrize("interleaved", [False, True])
def test_train_reads_each_split_as_the_whole_table_filtered(tmp_path, interleaved):
    path = _table(tmp_path / "features.parquet")
    if interleaved:  # the splits mixed within every row group, as in borrower order
        t = pq.read_table(path)
        t = t.take(np.random.default_rng(1).permutation(t.num_rows))
        pq.write_table(t, path, row_group_size=333)
    whole = load_feature_table(path)
    names = list(FEATURE_NAMES)
    X, y, splits = _split_rows(_data(path, load_feature_table(path, ["split", "label"]), True))
    for s in SPLITS:
        g = whole[whole.split == s]
        want = g[names].to_numpy(dtype=np.float32)
        assert X[s].dtype == np.float32 and X[s].flags["F_CONTIGUOUS"]
        np.testing.assert_array_equal(X[s], want)
        np.testing.assert_array_equal(y[s], g.label.to_numpy().astype(int))
        for col in ("borrower_id", "snapshot", "split", "label", "occupation"):
            assert splits[s][col].tolist() == g[col].tolist()
        # the old path's columns: all but the features, less those the rules and segments read
        needed = {*baselines.RULE_FEATURES, "occupation"}
        assert list(splits[s].columns) == [
            c for c in whole.columns if c not in names or c in needed
        ]


def test_a_model_fitted_on_the_split_matrices_is_the_same_model(tmp_path):
    path = _table(tmp_path / "features.parquet", n=4000)
    whole = load_feature_table(path)
    names = list(FEATURE_NAMES)
    X, y, _ = _split_rows(_data(path, load_feature_table(path, ["split", "label"]), True))
    old = {s: whole[whole.split == s][names].to_numpy(dtype=np.float32) for s in SPLITS}
    params = {"objective": "binary", "metric": "auc", "num_leaves": 7, "min_data_in_leaf": 20}
    params.update(seed=1, deterministic=True, force_col_wise=True, num_threads=1, verbosity=-1)

    def fit(m: dict[str, np.ndarray]) -> str:
        res = train_core.fit(m["train"], y["train"], m["valid"], y["valid"], names, params, 20, 5)
        return str(res.booster.model_to_string())

    assert fit(X) == fit(old)


def test_feature_matrix_is_column_major_float32():
    rows = pa.table({"a": pa.array([1.5, 2.0, 3.0], pa.float32()), "b": [1.0, 2.0, 3.0]})
    out = feature_matrix(rows, ["b", "a"])
    assert out.dtype == np.float32 and out.flags["F_CONTIGUOUS"]
    np.testing.assert_array_equal(out, np.array([[1, 1.5], [2, 2], [3, 3]], np.float32))


def test_explain_batch_reads_the_out_of_time_rows_and_training_closures(tmp_path):
    path = _table(tmp_path / "features.parquet")
    whole = load_feature_table(path)
    keep = (whole.split == "oot") | ((whole.split == "train") & (whole.label == 1))
    want = whole[keep].reset_index(drop=True)
    got = batch_rows(catalog_in(path.parent))
    pd.testing.assert_frame_equal(got, want)
    assert (got.split == "valid").sum() == 0 and len(got) < len(whole)


def test_explain_batch_still_checks_the_whole_file(tmp_path):
    n = 50
    bad = ["train"] * (n - 1) + ["holdout"]  # a row the filter would skip
    path = _table(tmp_path / "features.parquet", n=n, split=bad)
    with pytest.raises(DataError, match="split"):
        batch_rows(catalog_in(path.parent))


def test_explain_batch_reads_only_the_sample_it_explains(tmp_path):
    # borrowers with several snapshots, the file in borrower order: the sample must be
    # the rows DataFrame.sample draws from the whole split, in the order explain uses
    n = 4000
    rng = np.random.default_rng(3)
    snaps = np.tile(np.array([12, 22, 26, 28], np.int16), n // 4)
    data: dict[str, pa.Array] = {
        "borrower_id": pa.array(np.arange(n, dtype=np.int64) // 4),
        "snapshot": pa.array(snaps),
        "split": pa.array(["train", "valid", "oot", "oot"] * (n // 4), pa.string()),
        "label": pa.array((rng.random(n) < 0.3).astype(np.int8)),
        "label_cause": pa.array(rng.choice(["none", "overdue"], size=n).tolist(), pa.string()),
        "occupation": pa.array(rng.choice(["a", "b"], size=n).tolist(), pa.string()),
    }
    for j, name in enumerate(FEATURE_NAMES):
        data[name] = pa.array(rng.normal(size=n).astype(np.float32) + j)
    path = tmp_path / "features.parquet"
    pq.write_table(pa.table(data, schema=FEATURE_TABLE_SCHEMA), path, row_group_size=500)

    whole = load_feature_table(path)
    oot = whole[whole.split == "oot"].sample(n=300, random_state=11)
    oot = oot.sort_values(["snapshot", "borrower_id"]).reset_index(drop=True)
    closed = whole[(whole.split == "train") & (whole.label == 1)]
    closed = closed.sample(n=40, random_state=11).reset_index(drop=True)
    got = batch_rows(catalog_in(path.parent), max_rows=300, learn_rows=40, seed=11)
    pd.testing.assert_frame_equal(got[got.split == "oot"].reset_index(drop=True), oot)
    pd.testing.assert_frame_equal(got[got.split == "train"].reset_index(drop=True), closed)
    assert len(got) == 340
    # only one of the two sampled: the other comes whole, in the file's order
    got = batch_rows(catalog_in(path.parent), max_rows=300, learn_rows=10_000, seed=11)
    want = whole[(whole.split == "train") & (whole.label == 1)].reset_index(drop=True)
    pd.testing.assert_frame_equal(got[got.split == "train"].reset_index(drop=True), want)
    pd.testing.assert_frame_equal(got[got.split == "oot"].reset_index(drop=True), oot)


def test_the_data_card_counts_months_one_row_group_at_a_time(tmp_path):
    """The on-book counts per month, as a groupby on the whole column gives them."""
    from pipeline.stages.generate import _rows_per_month

    rng = np.random.default_rng(8)
    month = rng.integers(3, 30, 5000).astype(np.int16)
    month[month == 11] = 12  # a month with no rows
    am = tmp_path / "account_months.parquet"
    pq.write_table(pa.table({"month": month}), am, row_group_size=333)
    got = _rows_per_month(catalog_in(tmp_path))
    want = pd.DataFrame({"month": month}).groupby("month").size()
    assert got.index.tolist() == want.index.tolist() and 11 not in got.index
    assert got.tolist() == want.tolist()


def test_the_data_card_histograms_are_those_of_the_whole_columns(tmp_path):
    """Counted row group by row group, in two passes: np.histogram's bins and counts."""

    from pipeline.stages.generate import CARD_BINS, _distributions

    rng = np.random.default_rng(9)
    n = 4000
    # float32 like the simulator's columns; whole-hundred lines and balances at exact
    # fractions of them put many ratios on the bin edges, where the type of the
    # division decides the bin
    line = (rng.choice([0.0, 5e3, 2e4, 1e5], n) * rng.integers(1, 4, n)).astype(np.float32)
    balance = (line * rng.integers(0, 53, n) / 40).astype(np.float32)
    draw = np.where(rng.random(n) < 0.3, rng.lognormal(7, 1, n), 0.0).astype(np.float32)
    am = pa.table({"line": line, "balance": balance, "draw_amount": draw})
    pq.write_table(am, tmp_path / "account_months.parquet", row_group_size=300)
    income = rng.lognormal(8, 0.5, 500).astype(np.float32)  # the schema's type, as read
    pq.write_table(pa.table({"income": income}), tmp_path / "borrowers.parquet")
    got = _distributions(catalog_in(tmp_path))
    util = (pd.Series(balance) / pd.Series(line).where(line > 0)).dropna().clip(0, 1)
    whole = [
        np.log10(income.astype(float)),
        np.log10(line[line > 0].astype(float)),
        np.asarray(util, dtype=float),
        np.log10(draw[draw > 0].astype(float)),
    ]
    for (counts, edges), values in zip(got, whole, strict=True):
        want_counts, want_edges = np.histogram(np.asarray(values), bins=CARD_BINS)
        np.testing.assert_array_equal(edges, want_edges)
        np.testing.assert_array_equal(counts, want_counts)
