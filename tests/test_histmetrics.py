"""Metrics from score histograms against the exact ones on random samples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.core import histmetrics as hm
from pipeline.core.metrics import binary_metrics, expected_calibration_error, gains_table, psi


def _sample(seed: int, n: int, rate: float = 0.08, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    z = rng.normal(-2.5 + 1.2 * y, 1.0)
    if ties:  # a coarse score: many rows share a value
        z = np.round(z, 1)
    return y, 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bins", [50, 1000, hm.N_BINS])
def test_binned_auc_within_its_stated_bound(seed, n_bins):
    y, p = _sample(seed, 20_000)
    h = hm.histogram(y, p, n_bins)
    value, bound = hm.auc(h)
    exact = roc_auc_score(y, p)
    assert abs(value - exact) <= bound + 1e-12
    assert bound > 0
    if n_bins == hm.N_BINS:  # fine bins: the bound is far below anything reported
        assert bound < 1e-3 and abs(value - exact) < 1e-3


def test_tied_scores_in_one_bin_give_the_exact_auc():
    # every distinct score in a bin of its own: ties count one half, as sklearn counts them
    y, p = _sample(3, 5_000, ties=True)
    value, bound = hm.auc(hm.histogram(y, p))
    assert abs(value - roc_auc_score(y, p)) < 1e-12
    assert bound > 0  # the tied rows share bins


def test_partitions_add_up_to_the_whole():
    y, p = _sample(4, 30_000)
    parts = [hm.histogram(y[i : i + 7_000], p[i : i + 7_000]) for i in range(0, len(y), 7_000)]
    total = parts[0]
    for h in parts[1:]:
        total = total + h
    whole = hm.histogram(y, p)
    np.testing.assert_array_equal(total.pos, whole.pos)
    np.testing.assert_array_equal(total.neg, whole.neg)
    np.testing.assert_array_equal(total.min_p, whole.min_p)
    np.testing.assert_allclose(total.sum_p, whole.sum_p)
    assert hm.auc(total) == pytest.approx(hm.auc(whole), abs=1e-15)
    with pytest.raises(ValueError, match="do not add"):
        _ = whole + hm.histogram(y, p, 100)


def test_other_figures_against_the_exact_ones():
    y, p = _sample(5, 40_000)
    h = hm.histogram(y, p)
    exact = binary_metrics(y, p, 10)
    got = hm.binary_metrics(h, 10)
    assert got["n"] == exact["n"] and got["positive_rate"] == exact["positive_rate"]
    assert got["brier"] == pytest.approx(exact["brier"], rel=1e-9)  # exact by construction
    ks_exact = exact["ks"]
    assert got["ks"] <= ks_exact + 1e-12 <= got["ks"] + got["ks_error_bound"] + 1e-12
    assert got["ece"] == pytest.approx(expected_calibration_error(y, p, 10), abs=2e-3)
    for k in ("pr_auc", "lift_5", "lift_10", "capture_5", "capture_10"):
        assert got[k] == pytest.approx(exact[k], rel=0.01), k
    rows, exact_rows = hm.gains(h), gains_table(y, p)
    assert len(rows) == len(exact_rows) == 10
    assert sum(r["n"] for r in rows) == len(y)
    widest = float(np.max(h.pos + h.neg))  # a group may gain or lose a bin at each edge
    for r, e in zip(rows, exact_rows, strict=True):
        assert r["n"] == pytest.approx(e["n"], abs=2 * widest)
        assert r["positives"] == pytest.approx(e["positives"], abs=2 * widest)
        assert r["min_score"] == pytest.approx(e["min_score"], rel=0.01)
    assert rows[-1]["cum_capture"] == 1.0
    y2, p2 = _sample(6, 40_000, rate=0.12)
    assert hm.psi(h, hm.histogram(y2, p2)) == pytest.approx(psi(p, p2), abs=2e-3)


def test_calibrated_metrics_keep_the_raw_ones():
    y, p = _sample(7, 10_000)
    cal = np.clip(p * 1.3, 0, 1)
    out = hm.score_metrics(hm.histogram(y, p), hm.histogram(y, cal))
    assert out["brier_raw"] == pytest.approx(np.mean((p - y) ** 2))
    assert out["brier"] == pytest.approx(np.mean((cal - y) ** 2))
    assert out["auc"] == hm.auc(hm.histogram(y, p))[0]


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        hm.histogram(np.array([0, 1]), np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        hm.histogram(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    assert np.isnan(hm.auc(hm.empty())[0])
