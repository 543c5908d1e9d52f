"""Scores never replace what they must not; table models flag rows they never saw in training.

Each test makes the bad call and checks that the refusal names the file, column or key
and the rule, and that the protected file keeps its bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.adapters.catalog import Catalog
from pipeline.base.config import REPO_ROOT
from pipeline.base.io import DataError

WORLD = [
    "tracking.enabled=false",
    "model.baselines=false",
    "model.n_estimators=60",
    "score.advice_rows=0",
]
GERMAN = REPO_ROOT / "data" / "external" / "german_credit" / "german_credit.csv"
TABLE = [
    "tracking.enabled=false",
    "data=table",
    f"data.path={GERMAN}",
    "data.target=creditability",
    "data.positive=bad",
    "model.cv_repeats=0",
    "model.n_estimators=60",
]


def _cfg(root: Path, base: list[str], *overrides: str, stage: str = "score"):
    from helpers import SMALL, compose_config

    return compose_config(root, [*SMALL, *base, *overrides], stage=stage)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from helpers import seed_small_data

    from pipeline.stages.driver import execute

    root = tmp_path_factory.mktemp("guard_world")
    seed_small_data(tmp_path_factory, root)
    for stage in ("generate", "features", "train"):
        execute(_cfg(root, WORLD, stage=stage), [])
    return root


@pytest.fixture(scope="module")
def table_world(tmp_path_factory):
    from pipeline.stages.driver import execute

    root = tmp_path_factory.mktemp("guard_table")
    execute(_cfg(root, TABLE, stage="train"), [])
    return root


def _score(root: Path, base: list[str], *overrides: str):
    from pipeline.stages.driver import execute

    return execute(_cfg(root, base, *overrides), [])


def _rows(root: Path, n: int = 40) -> pd.DataFrame:
    """Feature rows of distinct borrowers (the last out-of-time snapshot)."""
    df = pd.read_parquet(root / "data" / "processed" / "features.parquet")
    last = df[df.snapshot == df.snapshot[df.split == "oot"].max()]
    return last.drop(columns=["split", "label", "label_cause"]).head(n).reset_index(drop=True)


# ---- score.output -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["model", "model_meta", "borrowers", "features"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_output_never_replaces_a_pipeline_file(world, tmp_path, entry, overwrite):
    path = Catalog.of(_cfg(world, WORLD)).path(entry)
    before = path.read_bytes()
    with pytest.raises(DataError) as exc:
        _score(world, WORLD, f"score.output={path}", f"score.overwrite={str(overwrite).lower()}")
    msg = str(exc.value)
    assert f"score.output = {path}: refused" in msg and f"'{entry}'" in msg, msg
    assert "even with score.overwrite=true" in msg
    assert path.read_bytes() == before


@pytest.mark.slow
def test_cli_refuses_writing_scores_over_the_model(world):
    """``python -m pipeline score score.output=models/model.txt`` from the output root."""
    model = world / "models" / "model.txt"
    before = model.read_bytes()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "score",
            f"paths.root={world}",
            "tracking.enabled=false",
            "score.output=models/model.txt",
        ],
        cwd=world,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "score.output = models/model.txt: refused, it is the model" in proc.stderr
    assert model.read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [False, True])
def test_output_never_replaces_the_scoring_input(world, tmp_path, overwrite):
    src = tmp_path / "new.parquet"
    _rows(world).to_parquet(src)
    before = src.read_bytes()
    with pytest.raises(DataError, match="it is the scoring input") as exc:
        _score(
            world,
            WORLD,
            f"score.input={src}",
            f"score.output={src}",
            f"score.overwrite={str(overwrite).lower()}",
        )
    assert str(src) in str(exc.value)
    assert src.read_bytes() == before
    # nor a file inside a raw folder being scored
    raw = world / "data" / "raw"
    inside = raw / "scores.parquet"
    with pytest.raises(DataError, match="it is the scoring input"):
        _score(world, WORLD, f"score.input={raw}", f"score.output={inside}")
    assert not inside.exists()


@pytest.mark.slow
def test_existing_file_needs_overwrite_and_suffix_decides_format(world, tmp_path):
    mine = tmp_path / "mine.csv"
    mine.write_text("precious,data\n1,2\n")
    before = mine.read_bytes()
    with pytest.raises(DataError) as exc:
        _score(world, WORLD, f"score.output={mine}")
    msg = str(exc.value)
    assert str(mine) in msg and "the file exists" in msg and "score.overwrite=true" in msg
    assert mine.read_bytes() == before
    _score(world, WORLD, f"score.output={mine}", "score.overwrite=true")
    as_csv = pd.read_csv(mine)
    assert "probability" in as_csv.columns and len(as_csv) > 10
    pq_out = tmp_path / "scores.parquet"
    _score(world, WORLD, f"score.output={pq_out}")
    as_pq = pd.read_parquet(pq_out)
    assert pq_out.read_bytes()[:4] == b"PAR1"
    np.testing.assert_allclose(as_csv.probability, as_pq.probability, rtol=1e-6)
    assert list(as_csv.borrower_id) == list(as_pq.borrower_id)


@pytest.mark.slow
def test_default_output_is_not_replaced_without_overwrite(world, tmp_path):
    """A second ``score`` with no ``score.output`` refuses to replace models/scores.parquet."""
    src = tmp_path / "new.parquet"
    _rows(world).to_parquet(src)
    default = Catalog.of(_cfg(world, WORLD)).path("scores")
    assert not default.exists()
    try:
        _score(world, WORLD, f"score.input={src}")
        before = default.read_bytes()
        with pytest.raises(DataError) as exc:
            _score(world, WORLD, f"score.input={src}", "score.top_k=1")
        msg = str(exc.value)
        assert f"score.output = {default} (the default, score.output is empty)" in msg, msg
        assert "the file exists" in msg and "score.overwrite=true" in msg
        assert default.read_bytes() == before
        _score(world, WORLD, f"score.input={src}", "score.overwrite=true")
        assert len(pd.read_parquet(default)) == len(_rows(world))
    finally:  # the module's world is shared: leave it as it was
        default.unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["scores.txt", "scores.json", "scores"])
def test_output_suffix_outside_the_formats_is_refused(world, tmp_path, name):
    out = tmp_path / name
    with pytest.raises(DataError) as exc:
        _score(world, WORLD, f"score.output={out}")
    msg = str(exc.value)
    assert f"score.output = {out}" in msg and ".parquet or .csv" in msg, msg
    assert not out.exists()


@pytest.mark.slow
def test_output_folder_is_refused(world, tmp_path):
    folder = tmp_path / "scores.parquet"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    with pytest.raises(DataError, match="is a folder") as exc:
        _score(world, WORLD, f"score.output={folder}", "score.overwrite=true")
    assert str(folder) in str(exc.value)
    assert (folder / "keep.txt").read_text() == "keep"
    with pytest.raises(DataError, match="is a folder"):
        _score(world, WORLD, f"score.output={tmp_path / 'new'}/")


# ---- one borrower from a file the pipeline makes -------------------------------------


@pytest.mark.slow
def test_one_borrower_from_the_feature_table(world, tmp_path, capsys):
    feats = world / "data" / "processed" / "features.parquet"
    table = pd.read_parquet(feats, columns=["borrower_id", "snapshot"])
    counts = table.borrower_id.value_counts()
    bid = int(counts.index[counts > 1][0])  # a borrower with rows at several snapshots
    latest = int(table.snapshot[table.borrower_id == bid].max())
    one = tmp_path / "one.parquet"
    _score(world, WORLD, f"score.input={feats}", f"score.borrower_id={bid}", f"score.output={one}")
    o = pd.read_parquet(one)
    assert list(o.borrower_id) == [bid] and list(o.snapshot) == [latest]
    assert "probability" in capsys.readouterr().out
    # the same number as scoring every row of that snapshot
    batch = tmp_path / "batch.parquet"
    _score(
        world, WORLD, f"score.input={feats}", f"score.snapshot={latest}", f"score.output={batch}"
    )
    b = pd.read_parquet(batch)
    assert (b.snapshot == latest).all() and b.borrower_id.is_unique
    assert o.probability.iloc[0] == pytest.approx(b.probability[b.borrower_id == bid].iloc[0])
    with pytest.raises(DataError) as exc:
        _score(
            world,
            WORLD,
            f"score.input={feats}",
            "score.borrower_id=99999999",
            f"score.output={tmp_path / 'none.parquet'}",
        )
    msg = str(exc.value)
    assert "no eligible row with borrower_id = 99999999" in msg and "e.g." in msg, msg


# ---- table models ---------------------------------------------------------------------


def _table_rows(root: Path, n: int = 60) -> tuple[pd.DataFrame, dict]:
    meta = json.loads((root / "models" / "model.json").read_text())
    df = pd.read_parquet(root / "data" / "processed" / "table_features.parquet")
    rows = df[df.split == "oot"].drop(columns=["split", "label"]).head(n).reset_index(drop=True)
    return rows, meta


def _spoil(rows: pd.DataFrame, meta: dict) -> tuple[pd.DataFrame, str, str]:
    cat = meta["categorical"][0]
    num = next(n for n in meta["feature_names"] if n not in meta["categorical"])
    bad = rows.copy()
    bad.loc[3, cat] = 999
    bad.loc[4, cat] = -5
    bad.loc[5, num] = 1e9
    return bad, cat, num


@pytest.mark.slow
def test_table_model_flags_unseen_categories_and_out_of_range(table_world, tmp_path):
    rows, meta = _table_rows(table_world)
    bad, cat, num = _spoil(rows, meta)
    src = tmp_path / "new.parquet"
    bad.to_parquet(src)
    out = tmp_path / "scores.parquet"
    summary = _score(table_world, TABLE, f"score.input={src}", f"score.output={out}")
    flagged = summary.summary["score"]["flagged_rows"]
    assert flagged == {"flag_unseen_category": 2, "flag_out_of_range": 1}
    t = pd.read_parquet(out)
    assert list(t.row_id) == list(bad.row_id)
    assert list(t.flag_unseen_category[[3, 4]]) == [cat, cat]
    assert t.flag_out_of_range[5] == num
    clean = t.drop(index=[3, 4, 5])
    assert (clean.flag_unseen_category == "").all() and (clean.flag_out_of_range == "").all()
    # the training rows themselves are never flagged
    train = pd.read_parquet(table_world / "data" / "processed" / "table_features.parquet")
    train = train[train.split == "train"].drop(columns=["split", "label"])
    src2 = tmp_path / "train.parquet"
    train.to_parquet(src2)
    out2 = tmp_path / "train_scores.parquet"
    _score(table_world, TABLE, f"score.input={src2}", f"score.output={out2}")
    t2 = pd.read_parquet(out2)
    assert (t2.flag_unseen_category == "").all() and (t2.flag_out_of_range == "").all()


@pytest.mark.slow
def test_table_model_strict_refuses_naming_column_and_rule(table_world, tmp_path):
    rows, meta = _table_rows(table_world)
    bad, cat, num = _spoil(rows, meta)
    src = tmp_path / "new.parquet"
    bad.to_parquet(src)
    out = tmp_path / "scores.parquet"
    with pytest.raises(DataError) as exc:
        _score(table_world, TABLE, f"score.input={src}", f"score.output={out}", "score.strict=true")
    msg = str(exc.value)
    n_codes = len(meta["categories"][cat])
    assert str(src) in msg and f"column '{cat}'" in msg and f"codes -1 .. {n_codes - 1}" in msg
    assert "e.g. 999 for id" in msg and f"column '{num}'" in msg and "training range" in msg
    assert not out.exists()
    _score(table_world, TABLE, f"score.input={src}", f"score.output={out}")  # flagged instead
    assert out.exists()


@pytest.mark.slow
def test_table_model_refuses_a_simulator_raw_folder(table_world, world, tmp_path):
    raw = world / "data" / "raw"
    out = tmp_path / "scores.parquet"
    with pytest.raises(DataError) as exc:
        _score(table_world, TABLE, f"score.input={raw}", f"score.output={out}")
    msg = str(exc.value)
    assert str(raw) in msg and "raw tables" in msg and str(GERMAN) in msg
    assert "'row_id'" in msg and "set score.input" in msg, msg
    assert not out.exists()
