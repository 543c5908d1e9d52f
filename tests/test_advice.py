"""Advice: smallest lever changes, re-scored, feasible, monotone and consistent."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.base.registry import BY_NAME, FEATURE_NAMES
from pipeline.core import advice as adv

NAMES = list(FEATURE_NAMES)
COL = {n: j for j, n in enumerate(NAMES)}


def _row(**values: float) -> np.ndarray:
    base = {
        "tenure": 24,
        "city_tier": 2,  # the simulator's tiers are 1 to 4
        "line": 10_000,
        "months_since_last_draw": 4,
        "draw_months_3": 0,
        "draw_months_6": 2,
        "draw_months_12": 7,
        "n_draws_3": 0,
        "n_draws_6": 3,
        "n_draws_12": 10,
        "draw_amount_3": 0,
        "draw_amount_6": 3000,
        "draw_amount_12": 12000,
        "draw_trend": -0.6,
        "util_mean_3": 0.85,
        "util_mean_6": 0.8,
        "util_mean_12": 0.6,
        "util_max_12": 0.95,
        "share_securities_k": 0.3,
        "share_other_lender_k": 0.3,
        "misuse_share_k": 0.6,
        "share_business_6": 0.1,
        "share_consumption_6": 0.3,
        "ext_active_products": 0,
        "ext_cards": 0,
        "ext_loans": 0,
        "months_since_ext_activity": 20,
        "competitor_months_6": 5,
        "competitor_share_6": 0.25,
    }
    base.update(values)
    x = np.zeros(len(NAMES))
    for k, v in base.items():
        x[COL[k]] = v
    return x


def _score(weights: dict[str, float], bias: float):
    def score(X: np.ndarray) -> np.ndarray:
        z = bias + sum(w * np.asarray(X[:, COL[f]], dtype=np.float64) for f, w in weights.items())
        return 1 / (1 + np.exp(-z))

    return score


def test_cheapest_change_under_the_threshold_is_found_and_rescored():
    # risk falls with recent draws and rises with misuse; one cadence step is enough
    score = _score({"draw_months_3": -1.5, "misuse_share_k": 1.0}, -0.5)
    x = _row()
    draw = adv.draw_size(450.0, 1200.0, 0.5)  # repays 450 a month, draws 1,200 usually
    assert draw == (450.0, "")
    a = adv.advise(x, NAMES, score, threshold=0.3, draw=draw)
    assert a.p_before >= 0.3 and a.achieved and a.p_after < 0.3
    assert a.actions == ["keep_drawing:1"] and a.cost == 1 and a.draw_size == 450.0
    changed = dict((f, after) for f, _, after in a.changes)
    x2 = x.copy()
    for f, v in changed.items():
        x2[COL[f]] = v
    assert score(x2[None, :])[0] == pytest.approx(a.p_after)
    # coupled features move together and stay consistent
    assert changed["draw_months_3"] == 1 and changed["draw_months_6"] == 3
    assert changed["draw_months_12"] == 8 and changed["months_since_last_draw"] == 0
    assert x2[COL["draw_months_3"]] <= x2[COL["draw_months_6"]] <= x2[COL["draw_months_12"]]
    assert x2[COL["n_draws_3"]] >= x2[COL["draw_months_3"]]
    # amounts grow by the advised draw, not by the borrower's usual one
    assert changed["draw_amount_3"] == pytest.approx(x[COL["draw_amount_3"]] + 450.0)
    # said in the future tense, with the borrower's own amount; no line on every advice
    assert "450" in a.zh[0] and "借款" in a.zh[0]
    assert a.en[0].startswith("You will") and "450 yuan" in a.en[0]
    assert len(a.en) == 1 and not a.not_advised
    # without a repayment history no draw is advised, and the advice says why
    b = adv.advise(x, NAMES, score, threshold=0.3, draw=adv.draw_size(float("nan"), 1200, 0.5))
    assert not any(t.startswith("keep_drawing") for t in b.actions)
    assert "no repayment" in b.not_advised["keep_drawing"]


def test_an_advised_draw_is_never_above_the_repayment_capacity_or_the_need_share():
    rng = np.random.default_rng(0)
    cap = rng.lognormal(6.0, 1.0, 500)
    typical = rng.lognormal(7.0, 1.0, 500)
    for c, t in zip(cap, typical, strict=True):
        size, why = adv.draw_size(float(c), float(t), 0.5)
        if np.isfinite(size):
            assert adv.MIN_DRAW <= size <= c and size <= 0.5 * t and why == ""
        else:
            assert min(c, 0.5 * t) < adv.MIN_DRAW and "under" in why
    assert "no draw" in adv.draw_size(500.0, float("nan"), 0.5)[1]


def test_several_levers_when_one_is_not_enough_and_costs_are_minimal():
    score = _score({"misuse_share_k": 6.0, "months_since_ext_activity": 0.15}, -3.0)
    x = _row()
    a = adv.advise(x, NAMES, score, threshold=0.2)
    assert a.achieved and a.p_after < 0.2
    X, cost, _, _, _ = adv.candidates(x, NAMES)
    p = score(X)
    # nothing cheaper reaches the threshold
    assert not (p[cost < a.cost] < 0.2).any()
    levers = {s.split(":")[0] for s in a.actions}
    assert {"route_to_consumption", "keep_external_live"} <= levers
    ch = {f: (b, v) for f, b, v in a.changes}
    sec = ch.get("share_securities_k", (0, x[COL["share_securities_k"]]))[1]
    oth = ch.get("share_other_lender_k", (0, x[COL["share_other_lender_k"]]))[1]
    assert ch["misuse_share_k"][1] == pytest.approx(sec + oth)
    assert ch["ext_active_products"][1] == ch["ext_cards"][1] + x[COL["ext_loans"]]


def test_a_value_no_action_sets_is_never_changed_even_out_of_its_range():
    """Only what an action sets is kept inside its feasible range: a borrower's own value
    (here a city tier the simulator never has) is left for the scorer to refuse, never
    "advised" into range."""
    x = _row(city_tier=0.0)
    X, *_ = adv.candidates(x, NAMES, draw=300.0)
    assert (X[:, COL["city_tier"]] == 0.0).all()


def test_candidates_are_feasible_monotone_and_only_touch_actionable_features():
    x = _row()
    X, cost, combos, options, levers = adv.candidates(x, NAMES, draw=300.0)
    assert len(X) > 50 and cost[0] == 0 and combos[0] == (0,) * len(levers)
    np.testing.assert_array_equal(X[0], x)
    delta = X - x[None, :]
    for j, f in enumerate(NAMES):
        feat = BY_NAME[f]
        lo, hi = feat.bounds
        assert (X[:, j] >= lo).all() and (X[:, j] <= hi).all(), f
        if feat.monotone:
            assert not (delta[:, j] * feat.monotone > 1e-12).any(), f
        # inquiries follow an application; the derived traces follow the options
        if not feat.actionable and f != "ext_inquiries_6" and f not in adv.DERIVED:
            assert (delta[:, j] == 0).all(), f
    # the traces move with what carries them out: drawing again ends the stop signals,
    # fund use routed to consumption lowers the 3-month misuse share too
    drew = delta[:, COL["draw_months_3"]] > 0
    assert drew.any()
    assert (X[drew, COL["stop_watch_1"]] == 0).all() and (X[drew, COL["stop_watch_2"]] == 0).all()
    routed = delta[:, COL["misuse_share_k"]] < 0
    if x[COL["misuse_share_3"]] > 0:
        assert (X[routed, COL["misuse_share_3"]] <= X[routed, COL["misuse_share_k"]] + 1e-9).all()
    dm = X[:, [COL["draw_months_3"], COL["draw_months_6"], COL["draw_months_12"]]]
    assert (np.diff(dm, axis=1) >= 0).all()


def test_unreachable_threshold_returns_best_effort():
    score = _score({"income": 1e-3}, 0.0)  # nothing actionable moves this score
    x = _row(income=5000)
    a = adv.advise(x, NAMES, score, threshold=0.05)
    assert not a.achieved and a.p_after == pytest.approx(a.p_before)
    assert a.cost == 0


def test_already_low_risk_needs_no_change():
    score = _score({"draw_months_3": 0.0}, -5.0)
    a = adv.advise(_row(), NAMES, score, threshold=0.1)
    assert a.achieved and a.changes == [] and a.actions == []
