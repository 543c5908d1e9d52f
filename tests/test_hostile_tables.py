"""Tables read as their authors wrote them: the hostile cases of the table surface.

Each case once gave a silent wrong result: decimal commas read as thousands separators
(values 1000x too big), a numeric column with a few bad cells turned into a category of
hundreds of levels, a repeated header renamed ``x1.1`` without a word, a column equal to
the target trained to AUC 1.0 without a warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.base.io import DataError
from pipeline.core import encoding
from pipeline.core.table import prepare, read_any


def _table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "key": np.arange(n),
            "x": x,
            "rate": rng.uniform(0, 1, n).round(3),
            "bad": (rng.random(n) < 1 / (1 + np.exp(-x))).astype(int),
        }
    )


def _write_semicolon(df: pd.DataFrame, path: Path) -> Path:
    # a European export: semicolons between fields, commas as decimal marks
    df.to_csv(path, sep=";", decimal=",", index=False)
    return path


def test_decimal_commas_are_read_as_decimals(tmp_path):
    df = _table()
    df.loc[0, "rate"] = 0.126  # "0,126" alone is ambiguous to a thousands reading
    df.loc[1, "x"] = -1.234  # "-1,234" too
    raw = read_any(_write_semicolon(df, tmp_path / "t.csv"))
    t = prepare(raw, tmp_path / "t.csv", target="bad", id_column="key")
    got = t.frame.set_index("key")
    np.testing.assert_allclose(got.loc[0, "rate"], 0.126, rtol=1e-6)
    np.testing.assert_allclose(got.loc[1, "x"], -1.234, rtol=1e-6)
    # every value equals the written one (float32 in the feature table)
    np.testing.assert_allclose(got.sort_index()["x"], df["x"], rtol=1e-6, atol=1e-6)
    cols = {c.name: c for c in t.encoding.columns}
    assert cols["x"].decimal_comma and cols["rate"].decimal_comma


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["0,126", "-1,234"], True),  # a zero integer part: only a decimal comma
        (["12,5", "3"], True),  # one fraction digit
        (["1.234,5"], True),  # thousands points before a decimal comma
        (["1,234,567", "12"], False),  # two groups: thousands
        (["1,234.5"], False),  # a decimal point after: thousands
        (["1,234", "2,345"], None),  # cannot tell
        (["0,5", "1,234,567"], None),  # both kinds: cannot tell
        (["12", "3.5"], None),  # no comma
    ],
)
def test_comma_convention_reads_the_whole_column(values, expected):
    assert encoding.comma_convention(pd.Series(values)) is expected


def test_scoring_reads_commas_by_the_same_rule():
    train = pd.DataFrame({"x": ["0,126", "-1,234", "2,5"] * 10})
    enc = encoding.fit(train)
    assert enc.columns[0].decimal_comma
    coded, found = enc.encode(pd.DataFrame({"x": ["0,5", "1,25", "0,640", "-1,234"]}))
    np.testing.assert_allclose(coded["x"], [0.5, 1.25, 0.64, -1.234])
    assert not [f for f in found if f.kind == "unparsed"]
    # a column that was numbers in training, sent as text with decimal commas
    enc = encoding.fit(pd.DataFrame({"x": np.linspace(0, 2, 30)}))
    coded, found = enc.encode(pd.DataFrame({"x": ["0,5", "1,25", "0,640"]}))
    np.testing.assert_allclose(coded["x"], [0.5, 1.25, 0.64])
    assert not [f for f in found if f.kind == "unparsed"]


def test_a_forced_decimal_mark_reads_ambiguous_commas():
    frame = pd.DataFrame({"x": ["1,234", "2,5", "7"] * 10})
    assert encoding.fit(frame).columns[0].decimal_comma  # 2,5 decides
    ambiguous = pd.DataFrame({"x": ["1,234", "2,345", "7"] * 10})
    assert not encoding.fit(ambiguous).columns[0].decimal_comma  # thousands by default
    forced = encoding.fit(ambiguous, decimal=",")
    coded, _ = forced.encode(pd.DataFrame({"x": ["1,234"]}))
    np.testing.assert_allclose(coded["x"], [1.234])
    # the forced mark travels with the saved encoding
    again = encoding.Encoding.from_json(forced.to_json())
    np.testing.assert_allclose(again.encode(pd.DataFrame({"x": ["1,234"]}))[0]["x"], [1.234])
    with pytest.raises(ValueError, match="decimal"):
        encoding.fit(ambiguous, decimal=";")


def test_a_mostly_numeric_column_stays_numeric_and_names_its_bad_cells(tmp_path):
    df = _table()
    text = df["x"].round(4).astype(str)
    text[df.index % 7 == 0] = "oops"  # 14% of the cells
    df["x"] = text
    t = prepare(df, tmp_path / "t.csv", target="bad", id_column="key")
    col = {c.name: c for c in t.encoding.columns}["x"]
    assert col.kind == "numeric" and col.from_text
    assert "x" not in t.categorical
    train = t.frame.split.to_numpy() == "train"
    assert col.bad_cells == int(text[train].eq("oops").sum()) > 0
    assert col.bad_examples == ["oops"]
    assert any("'x'" in n and "'oops'" in n and "missing" in n for n in t.notes)
    bad = np.asarray(df.index % 7 == 0)
    assert np.isnan(t.frame["x"].to_numpy()[bad]).all()
    assert np.isfinite(t.frame["x"].to_numpy()[~bad]).all()
    # a real text column (many distinct words) is still a category
    words = pd.Series([f"w{i % 40}" for i in range(len(df))])
    t2 = prepare(df.assign(x=words), tmp_path / "t.csv", target="bad", id_column="key")
    assert "x" in t2.categorical


def test_a_repeated_header_is_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("x1,x1,bad\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"dup\.csv.*'x1'.*own name"):
        read_any(path)


def test_a_column_that_is_the_target_is_refused_by_name(tmp_path):
    df = _table().assign(outcome_copy=lambda d: d.bad * 3 + 1)
    with pytest.raises(DataError, match=r"t\.csv.*'outcome_copy' \(AUC 1\.0000 alone\)"):
        prepare(df, tmp_path / "t.csv", target="bad", id_column="key")
    # as a text category too
    df = _table().assign(status=lambda d: np.where(d.bad == 1, "written off", "paid"))
    with pytest.raises(DataError, match="'status'"):
        prepare(df, tmp_path / "t.csv", target="bad", id_column="key")
    # turned off on request; an honest column passes
    t = prepare(df, tmp_path / "t.csv", target="bad", id_column="key", max_single_auc=1.0)
    assert "status" in t.feature_names
    prepare(_table(), tmp_path / "t.csv", target="bad", id_column="key")
