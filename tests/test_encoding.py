"""The table encoding: fitted once on training rows, applied identically, saved as JSON."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from pipeline.base.io import DataError
from pipeline.core import encoding
from pipeline.core.encoding import FLAG_COLUMN, MISSING_CODE, Encoding


def _train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount, EUR": ["1,200", " 3.5 ", "NA", "7", "10", "1,000,000"],
            "colour": ["red", "red", "blue", "blue", "green", None],
            "rate": ["2,5", "3,25", "1,0", "", "4,75", "0,5"],
            "n": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0],
            'odd"[name]:{x}': [1, 2, 3, 4, 5, 6],
        }
    )


def test_fit_reads_numbers_stored_as_text_and_codes_levels():
    enc = encoding.fit(_train(), min_count=2)
    out = enc.transform(_train())
    assert out["amount_EUR"].tolist()[:2] == [1200.0, 3.5]
    assert np.isnan(out["amount_EUR"].iloc[2]) and out["amount_EUR"].iloc[5] == 1e6
    assert out["rate"].tolist()[:3] == [2.5, 3.25, 1.0]  # decimal comma recognised
    by_name = {c.name: c for c in enc.columns}
    assert by_name["rate"].decimal_comma and not by_name["amount, EUR"].decimal_comma
    # levels seen twice keep a code; green (once) shares the rare code; missing is -1
    assert by_name["colour"].levels == ["blue", "red"]
    assert by_name["colour"].rare_levels == ["green"]
    assert out["colour"].tolist() == [1, 1, 0, 0, 2, MISSING_CODE]
    assert enc.categorical == ["colour"]
    assert (out[FLAG_COLUMN] == "").all()


def test_unseen_levels_and_out_of_range_values_are_flagged():
    enc = encoding.fit(_train(), min_count=2)
    new = _train().iloc[:3].copy()
    new["colour"] = ["purple", "red", "green"]
    new["n"] = [0.5, 2.0, 99.0]
    new["amount, EUR"] = ["abc", "5", "7"]
    out = enc.transform(new)
    assert out["colour"].tolist() == [2, 1, 2]  # unseen -> the declared rare code
    assert out[FLAG_COLUMN].tolist() == [
        "unparsed:amount, EUR;unseen:colour;range:n",
        "",
        "range:n",
    ]


def test_json_round_trip_applies_the_same_mapping():
    enc = encoding.fit(_train(), min_count=2)
    back = Encoding.from_json(json.loads(json.dumps(enc.to_json())))
    pd.testing.assert_frame_equal(back.transform(_train()), enc.transform(_train()))
    assert back.original_names == enc.original_names
    with pytest.raises(ValueError, match="encoding version"):
        Encoding.from_json({**enc.to_json(), "version": 99})


def test_safe_names_are_accepted_by_lightgbm_and_stay_distinct():
    df = pd.DataFrame({"a,b": [1.0, 2.0] * 20, "a:b": [3.0, 1.0] * 20, 'q"[x]': [0.0, 1.0] * 20})
    enc = encoding.fit(df)
    names = enc.feature_names
    assert len(set(names)) == 3 and all(n.replace("_", "").isalnum() for n in names)
    assert enc.original_names[names[1]] == "a:b"
    X = enc.transform(df)[names].to_numpy()
    lgb.Dataset(X, label=np.arange(40) % 2, feature_name=names).construct()
    with pytest.raises(Exception, match="special JSON"):
        lgb.Dataset(X, label=np.arange(40) % 2, feature_name=list(df.columns)).construct()


def test_missing_column_at_transform_is_named():
    enc = encoding.fit(_train())
    with pytest.raises(DataError, match=r"new.csv: column\(s\) 'rate' missing"):
        enc.transform(_train().drop(columns="rate"), source="new.csv")


def test_mostly_text_column_stays_categorical():
    df = pd.DataFrame({"c": ["1", "2", "x", "y"] * 10})
    enc = encoding.fit(df, min_count=1)
    assert enc.columns[0].kind == "categorical" and enc.columns[0].levels == ["1", "2", "x", "y"]


def test_levels_read_with_other_types_get_the_training_codes():
    train = pd.DataFrame(
        {"flag": ["True", "False"] * 10, "grade": ["1", "2", "x"] * 6 + ["1", "2"]}
    )
    enc = encoding.fit(train, min_count=1)
    exact = enc.transform(train)
    # a boolean written in lower case, a grade read as a number (with a missing value)
    other = pd.DataFrame({"flag": ["true", "FALSE", None], "grade": [1.0, 2.0, np.nan]})
    out = enc.transform(other)
    assert out["flag"].tolist() == [exact["flag"][0], exact["flag"][1], MISSING_CODE]
    assert out["grade"].tolist() == [exact["grade"][0], exact["grade"][1], MISSING_CODE]
    assert (out[FLAG_COLUMN] == "").all()
    # a loose form shared by two training levels stays unseen rather than guessed
    twins = encoding.fit(pd.DataFrame({"c": ["1", "1.0", "b"] * 5}), min_count=1)
    res = twins.transform(pd.DataFrame({"c": ["1.0", "1.00", "B"]}))
    assert res["c"].tolist() == [1, twins.columns[0].rare_code, 2]
    assert res[FLAG_COLUMN].tolist() == ["", "unseen:c", ""]


def test_findings_name_column_and_rule_and_select_keeps_model_columns():
    enc = encoding.fit(_train(), min_count=2)
    assert enc.text_columns == ["amount, EUR", "colour", "rate"]
    new = _train().iloc[:2].copy()
    new["rate"] = ["lots", "2,5"]
    new["n"] = [99.0, 1.0]
    _, found = enc.encode(new, "new.csv")
    rules = {(f.kind, f.column): (f.mask.tolist(), f.rule) for f in found}
    assert rules[("unparsed", "rate")] == ([True, False], "a number (decimal comma) or blank")
    assert rules[("range", "n")] == ([True, False], "training range 1 .. 6")
    sub = enc.select(["n", "colour"])
    assert sub.feature_names == ["n", "colour"]
    coded = sub.transform(new[["colour", "n"]])  # other columns are not needed
    assert coded["colour"].tolist() == enc.transform(new)["colour"].tolist()
    with pytest.raises(ValueError, match="not columns of the encoding"):
        enc.select(["nothere"])


def test_none_is_a_level_of_a_category_but_missing_in_a_number():
    frame = pd.DataFrame(
        {
            "other_debtors": ["none"] * 20 + ["guarantor"] * 12 + ["NA"] * 3,
            "amount": ["12"] * 20 + ["none"] * 12 + ["7"] * 3,
        }
    )
    enc = encoding.fit(frame, min_count=2)
    cat, num = enc.columns
    assert cat.kind == "categorical" and "none" in cat.levels
    assert num.kind == "numeric"
    coded = enc.transform(frame)
    assert (coded[cat.safe][:20] == cat.levels.index("none")).all()
    assert (coded[cat.safe][-3:] == -1).all()  # NA stays missing
    assert np.isnan(coded[num.safe][20:32]).all()
