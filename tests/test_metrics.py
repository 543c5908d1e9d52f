"""The one-sort ranking metrics against their textbook definitions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pipeline.core.metrics import binary_metrics


# textbook definitions, one sort per figure, to check the one-sort implementation against
def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """Largest gap between the score distributions of positives and negatives."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(p), kind="mergesort")
    ys, ps = y[order], np.asarray(p)[order]
    tpr = np.cumsum(ys) / ys.sum()
    fpr = np.cumsum(~ys) / (~ys).sum()
    last = np.r_[ps[1:] != ps[:-1], True]  # only at the end of runs of tied scores
    return float(np.max(np.abs(tpr[last] - fpr[last])))


def lift_capture(y: np.ndarray, p: np.ndarray, frac: float) -> tuple[float, float]:
    """Lift and capture rate in the top ``frac`` of scores."""
    y = np.asarray(y, dtype=float)
    n_top = max(1, int(round(frac * len(y))))
    top = np.argsort(-np.asarray(p), kind="mergesort")[:n_top]
    return float(y[top].mean() / y.mean()), float(y[top].sum() / y.sum())


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [7, 1000, 20000])
def test_binary_metrics_match_the_definitions(n, ties):
    rng = np.random.default_rng(n + ties)
    y = (rng.random(n) < 0.15).astype(int)
    y[:2] = [0, 1]  # both classes
    p = np.clip(0.1 + 0.3 * y + rng.normal(0, 0.25, n), 0, 1)
    if ties:
        p = np.round(p, 1)  # heavy ties, across the classes
    m = binary_metrics(y, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m["ks"] == pytest.approx(ks_statistic(y, p), abs=1e-12)
    for frac in (0.05, 0.10):
        lift, cap = lift_capture(y, p, frac)
        assert m[f"lift_{int(frac * 100)}"] == pytest.approx(lift, abs=1e-12)
        assert m[f"capture_{int(frac * 100)}"] == pytest.approx(cap, abs=1e-12)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["n"] == n and m["positive_rate"] == pytest.approx(y.mean())


def test_binary_metrics_one_class_and_empty():
    m = binary_metrics(np.zeros(10, dtype=int), np.linspace(0, 1, 10))
    assert np.isnan(m["auc"]) and np.isnan(m["ks"]) and np.isnan(m["pr_auc"])
    assert np.isnan(m["lift_10"])  # no positives: no lift
    e = binary_metrics(np.zeros(0, dtype=int), np.zeros(0))
    assert e["n"] == 0 and np.isnan(e["auc"]) and np.isnan(e["brier"])


def test_binary_metrics_refuse_non_finite_scores():
    with pytest.raises(ValueError, match="NaN or infinity"):
        binary_metrics(np.array([0, 1, 0, 1]), np.array([0.1, np.nan, 0.3, 0.9]))
