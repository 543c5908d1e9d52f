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
