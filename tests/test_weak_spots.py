"""Weak spots in words: segments well below the whole and calibration that made things
worse join the drift warnings."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import drift as drift_core
from pipeline.core import evaluation as eval_core


def test_a_segment_is_flagged_only_when_its_fall_is_large_and_beyond_noise():
    whole = {"auc": 0.78, "auc_se": 0.005, "n": 40000}
    views = {
        "oot_by_occupation": {
            # 0.10 below, SE 0.01: flagged
            "student": {"auc": 0.68, "auc_se": 0.01, "n": 3000},
            # 0.10 below but SE 0.08 (a small segment): noise, not flagged
            "retired": {"auc": 0.68, "auc_se": 0.08, "n": 60},
            # 0.03 below, however precise: not material
            "salaried": {"auc": 0.75, "auc_se": 0.001, "n": 20000},
        },
        "oot_by_tenure_band": {"<12": {"auc": 0.70, "auc_se": 0.02, "n": 5000}},
        "oot_by_city_tier": {"1": {"auc": 0.80, "auc_se": 0.01, "n": 9000}},
    }
    detail, words = drift_core.segment_warnings(whole, views)
    assert [(d["segment"], d["value"]) for d in detail] == [
        ("occupation", "student"),
        ("tenure band", "<12"),
    ]
    assert words[0].startswith("weak spot: occupation student: out-of-time AUC 0.680 (SE 0.010")
    assert "3,000 rows" in words[0] and "0.100 below the whole's 0.780" in words[0]
    assert drift_core.segment_warnings({"auc": float("nan")}, views) == ([], [])


def test_calibration_that_made_the_error_worse_is_a_warning():
    cal = {
        "valid_ece_before": 0.010,
        "valid_ece_after": 0.004,
        "oot_ece_before": 0.012,
        "oot_ece_after": 0.020,
        "oot_brier_diff": 0.0003,
        "oot_brier_diff_se": 0.0001,
        "oot_rows": 40000.0,
    }
    words = drift_core.calibration_warnings(cal)
    assert len(words) == 1 and words[0].startswith("calibration: on the out-of-time rows")
    assert "(0.0200) than before (0.0120)" in words[0] and "40,000 rows" in words[0]
    assert drift_core.calibration_warnings({**cal, "oot_ece_after": 0.011}) == []


def test_tenure_bands_and_the_paired_brier_change():
    bands = eval_core.tenure_band(np.array([0, 11, 12, 23.5, 24, 47, 48, 120, np.nan]))
    assert list(bands) == [
        "<12",
        "<12",
        "12-23",
        "12-23",
        "24-47",
        "24-47",
        "48+",
        "48+",
        "missing",
    ]
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=5000) < 0.2).astype(int)
    raw = np.clip(0.2 + 0.1 * (y - 0.2) + rng.normal(0, 0.05, 5000), 0.01, 0.99)
    ch = eval_core.calibration_change(y, raw, raw)
    assert ch["brier_diff"] == 0.0 and ch["n"] == 5000
    worse = eval_core.calibration_change(y, raw, np.clip(raw + 0.2, 0, 1))
    assert worse["brier_diff"] > 5 * worse["brier_diff_se"] > 0
    se = eval_core.auc_se(y, raw)
    assert 0 < se < 0.02
    assert np.isnan(eval_core.auc_se(np.zeros(10, dtype=int), raw[:10]))
    seg = eval_core.segment_metrics(y, raw, None, np.where(np.arange(5000) < 2500, "a", "b"))
    assert seg["a"]["auc_se"] == pytest.approx(eval_core.auc_se(y[:2500], raw[:2500]))
