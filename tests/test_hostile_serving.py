"""The served model's answers are JSON any client reads: the hostile cases of serving.

An answer holding a row without a third reason carried ``"reason_3_value": NaN``, which
MLflow's scoring server writes as it is and which is not JSON: a strict parser (a
browser's, Java's, Python's with ``parse_constant`` refusing it) rejected every answer.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc.scoring_server import predictions_to_json

from pipeline.adapters.serving import without_nan


def _strict(text: str) -> dict:
    def refuse(word: str) -> None:
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def test_a_missing_number_is_answered_as_null():
    out = pd.DataFrame(
        {
            "borrower_id": np.array([17, 18], dtype=np.int64),
            "probability": [0.2, 0.01],
            "reason_1_value": [3.5, np.nan],
            "reason_1_cause": ["sudden_stop", ""],
        }
    )
    raw = io.StringIO()
    predictions_to_json(out, raw)
    with pytest.raises(ValueError, match="NaN"):
        _strict(raw.getvalue())  # what the server wrote before
    served = io.StringIO()
    predictions_to_json(without_nan(out), served)
    rows = _strict(served.getvalue())["predictions"]
    assert [r["reason_1_value"] for r in rows] == [3.5, None]
    assert [r["borrower_id"] for r in rows] == [17, 18]
    # columns with every number present keep their type; the input is not changed
    kept = without_nan(out)
    assert kept.probability.dtype == np.float64 and kept.borrower_id.dtype == np.int64
    assert np.isnan(out.reason_1_value.iloc[1])
