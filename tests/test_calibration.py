"""Calibration: no certainty claimed, the automatic choice, JSON round trips, tail check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from pipeline.base.config import CALIBRATIONS
from pipeline.core import calibration as cal


def _scores(n: int, seed: int, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores and outcomes whose true rate is a known distortion of the score."""
    rng = np.random.default_rng(seed)
    raw = rng.beta(1.2, 8.0, n)
    z = np.log(raw / (1 - raw))
    if shape == "logistic":  # exactly a Platt map: Platt / beta are the right family
        true = 1 / (1 + np.exp(-(0.6 * z - 0.4)))
    else:  # a step: no smooth two-parameter curve follows it, isotonic does
        true = np.where(raw < np.quantile(raw, 0.7), 0.02, 0.6)
    return raw, (rng.random(n) < true).astype(int)


def test_config_allows_every_fit_method():
    assert set(cal.METHODS) <= set(CALIBRATIONS) and set(CALIBRATIONS) <= set(cal.METHODS)


@pytest.mark.parametrize("method", ["isotonic", "platt", "beta", "auto"])
def test_no_probability_is_exactly_zero_or_one_on_extreme_inputs(method):
    rng = np.random.default_rng(0)
    raw = np.r_[np.zeros(400), np.ones(40), rng.uniform(0, 1e-12, 300), rng.uniform(0, 1, 3000)]
    # extreme outcomes: nothing closes at the bottom, everything at the very top
    y = np.r_[np.zeros(400), np.ones(40), np.zeros(300), (rng.random(3000) < 0.3)].astype(int)
    c = cal.fit(method, raw, y)
    probe = np.r_[0.0, 1.0, 1e-300, 1 - 1e-16, raw]
    out = c.apply(probe)
    assert np.isfinite(out).all()
    assert (out > 0).all() and (out < 1).all(), (out.min(), out.max())
    assert out.min() >= cal.P_MIN and out.max() <= 1 - cal.P_MIN
    # and still so after a float32 round trip (how probabilities are written)
    o32 = out.astype(np.float32)
    assert (o32 > 0).all() and (o32 < 1).all()
    # monotone in the raw score
    order = np.argsort(probe, kind="mergesort")
    assert (np.diff(out[order]) >= -1e-12).all()


def test_isotonic_levels_rest_on_enough_rows():
    raw, y = _scores(30_000, 1, "step")
    c = cal.fit("isotonic", raw, y)
    # one knot per group of at least min_bin_size rows: the top level is no handful of rows
    assert len(c.x) <= len(raw) // cal.min_bin_size(len(raw))
    assert 0.0 < c.y[0] and c.y[-1] < 1.0
    assert cal.min_bin_size(len(raw)) == 150 and cal.min_bin_size(1000) == cal.MIN_BIN


@pytest.mark.parametrize(
    ("shape", "expect"), [("logistic", {"platt", "beta"}), ("step", {"isotonic"})]
)
def test_auto_picks_the_lowest_validation_log_loss(shape, expect):
    raw, y = _scores(20_000, 2, shape)
    c = cal.fit("auto", raw, y)
    scores = {m: cal.validation_log_loss(m, raw, y) for m in cal.AUTO_CANDIDATES}
    assert c.selection == pytest.approx(scores)
    assert c.method == min(scores, key=lambda m: scores[m])
    assert c.method in expect, scores
    # the chosen map is refitted on all rows: the same as fitting that method directly
    direct = cal.fit(c.method, raw, y)
    np.testing.assert_array_equal(direct.apply(raw), c.apply(raw))


@pytest.mark.parametrize("method", ["isotonic", "platt", "beta", "auto", "none"])
def test_each_method_round_trips_through_json(method):
    raw, y = _scores(5000, 3, "logistic")
    c = cal.fit(method, raw, y)
    text = json.dumps(c.to_json())
    again = cal.Calibrator.from_json(json.loads(text))
    assert again.method == c.method
    probe = np.r_[0.0, 1.0, raw]
    assert np.array_equal(again.apply(probe), c.apply(probe))
    assert json.dumps(again.to_json()) == text


def test_beta_calibration_fits_a_beta_shaped_distortion():
    rng = np.random.default_rng(4)
    raw = rng.uniform(0.001, 0.999, 40_000)
    # true rate sigmoid(a ln p - b ln(1 - p) + c) with a != b: not a Platt curve
    a, b, c0 = 1.8, 0.5, -1.0
    true = 1 / (1 + np.exp(-(a * np.log(raw) - b * np.log1p(-raw) + c0)))
    y = (rng.random(len(raw)) < true).astype(int)
    fit = cal.fit("beta", raw, y)
    assert fit.a == pytest.approx(a, abs=0.15) and fit.b == pytest.approx(b, abs=0.15)
    assert cal.log_loss(y, fit.apply(raw)) < cal.log_loss(y, cal.fit("platt", raw, y).apply(raw))


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="unknown calibration method 'magic'"):
        cal.fit("magic", np.array([0.1, 0.2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="both classes"):
        cal.fit("platt", np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="unknown fitted calibration method 'auto'"):
        cal.Calibrator.from_json({"method": "auto"})
    with pytest.raises(ValueError, match="knots"):
        cal.Calibrator.from_json({"method": "isotonic", "x": [0.1, 0.2], "y": [0.1]})


def test_top_share_and_summary_report_the_riskiest_rows():
    y = np.r_[np.ones(3), np.zeros(297)]
    raw = np.linspace(0, 1, 300)[::-1].copy()  # the three closures score highest
    calibrated = np.full(300, 0.4)  # a flat map: ranking by it would be arbitrary
    top = cal.top_share(y, calibrated, 0.01, rank_by=raw)
    assert top["n"] == 3 and top["observed"] == 1.0 and top["predicted"] == pytest.approx(0.4)
    s = cal.summary(y, raw, calibrated, ece_before=0.02, ece_after=0.05)
    assert s["worse"] is True and s["n_exact_0"] == 0 and s["n_exact_1"] == 0
    assert s["top1pct_observed"] == 1.0 and s["top1pct_predicted"] == pytest.approx(0.4)
    s = cal.summary(y, raw, np.r_[1.0, calibrated[1:-1], 0.0], 0.05, 0.02)
    assert s["worse"] is False and s["n_exact_0"] == 1 and s["n_exact_1"] == 1
    with pytest.raises(ValueError, match="share"):
        cal.top_share(y, raw, 0.0)


def _flat_step_data() -> tuple[np.ndarray, np.ndarray]:
    """Outcomes with a rate that falls with the raw score in places: plain isotonic
    regression pools those stretches into long flat steps (and its top step covers the
    whole riskiest tail)."""
    rng = np.random.default_rng(7)
    raw = rng.uniform(0.01, 0.6, 20_000)
    true = np.where(raw < 0.3, 0.05, np.where(raw < 0.45, 0.35, 0.25))  # dips at the top
    return raw, (rng.random(len(raw)) < true).astype(int)


@pytest.mark.parametrize("method", ["isotonic", "auto"])
def test_calibration_keeps_the_raw_order_where_isotonic_would_be_flat(method):
    raw, y = _flat_step_data()
    plain = IsotonicRegression(out_of_bounds="clip").fit(raw, y).predict(np.sort(raw))
    assert cal.max_tie_share(plain) > 0.2  # the data do make plain isotonic flat
    c = cal.fit(method, raw, y)
    probe = np.r_[0.0, 1e-9, np.unique(raw), 0.9, 1.0 - 1e-9, 1.0]
    out = c.apply(probe)
    assert (np.diff(out) > 0).all(), (
        f"{c.method}: ties or inversions at {np.flatnonzero(np.diff(out) <= 0)[:5]}"
    )
    assert cal.max_tie_share(c.apply(raw)) == pytest.approx(1 / len(raw))
    # the map still calibrates: the pooled top stretch is near its observed rate
    top = raw > 0.3
    assert c.apply(raw[top]).mean() == pytest.approx(y[top].mean(), abs=0.02)
    # and the saved map is the one served: a JSON round trip gives the same numbers
    again = cal.Calibrator.from_json(json.loads(json.dumps(c.to_json())))
    assert np.array_equal(again.apply(probe), out)
    assert np.array_equal(again.apply(raw), c.apply(raw))


def test_isotonic_tails_move_little_and_stay_ordered():
    raw, y = _flat_step_data()
    c = cal.fit("isotonic", raw, y)
    assert c.method == "isotonic" and (np.diff(c.x) > 0).all() and (np.diff(c.y) > 0).all()
    hi = c.apply(np.array([c.x[-1], (c.x[-1] + 1) / 2, 1.0]))
    lo = c.apply(np.array([0.0, c.x[0] / 2, c.x[0]]))
    assert hi[0] < hi[1] < hi[2] <= c.y[-1] + cal.TAIL_SLOPE * (1 - c.y[-1]) + 1e-15
    assert lo[0] < lo[1] < lo[2] and lo[0] >= c.y[0] * (1 - cal.TAIL_SLOPE) - 1e-15
    # a scalar goes in and comes out as a scalar
    assert np.ndim(c.apply(np.float64(0.99))) == 0


def test_max_tie_share_counts_the_largest_group_of_equal_probabilities():
    assert cal.max_tie_share(np.array([0.1, 0.2, 0.2, 0.3, 0.2, 0.1, 0.4, 0.5])) == 3 / 8
    assert cal.max_tie_share(np.array([0.1, 0.2, 0.3, 0.4])) == 0.25
    assert cal.max_tie_share(np.full(5, 0.4)) == 1.0
    assert np.isnan(cal.max_tie_share(np.array([])))
    y = np.r_[np.ones(3), np.zeros(297)]
    raw = np.linspace(0, 1, 300)
    s = cal.summary(y, raw, np.r_[np.full(30, 0.4), raw[30:]], 0.02, 0.02)
    assert s["max_tie_share"] == pytest.approx(0.1)
