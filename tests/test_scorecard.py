"""The weight-of-evidence scorecard as a validator reads it (pipeline.core.baselines).

Signs follow WoE in every feature, declared directions hold, adjacent bins differ
significantly, a missing bin appears only where training rows had missing values,
labels read as amounts and level names, and selection filters, caps and explains.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.core.baselines import (
    Scorecard,
    fmt_amount,
    merge_runs,
    monotone_bins,
    score_bands,
    two_proportion_pvalue,
)


def _logistic(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(len(z)) < 1.0 / (1.0 + np.exp(-z))).astype(int)


def _suppressed(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``b`` looks risky on its own but, given ``a``, lowers the risk (a suppressor):
    its coefficient on its WoE comes out positive, against the WoE."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = a + 0.6 * rng.normal(size=n)
    c = rng.normal(size=n)
    y = _logistic(-2.0 + 2.0 * a - 1.0 * b + 0.7 * c, rng)
    return np.column_stack([a, b, c]), y, ["a", "b", "c"]


def _points_follow_woe(table: pd.DataFrame) -> None:
    for name, part in table.groupby("feature"):
        order = np.argsort(part.woe.to_numpy(), kind="stable")
        pts = part.points.to_numpy()[order]
        assert np.all(np.diff(pts) >= -1e-9), name


def test_a_feature_whose_sign_flips_is_dropped_and_said_why():
    X, y, names = _suppressed()
    # filters wide open so that only the sign check can stop b
    card = Scorecard(max_corr=1.0, max_vif=1e9).fit(X, y, names)
    assert np.all(card.coef_ < 0)
    assert card.card()["coef_against_woe"] == 0
    assert [b.feature for b in card.bins_] == ["a", "c"]
    why = card.card()["sign_dropped"]
    assert set(why) == {"b"}
    assert "coefficient on WoE would be +" in why["b"] and "closest: a" in why["b"]
    _points_follow_woe(card.table())
    # with no sign check a plain logistic regression on the same WoE gives b a + sign
    from sklearn.linear_model import LogisticRegression

    bins = [monotone_bins(X[:, j], y, n, False) for j, n in enumerate(names)]
    W = np.column_stack([b.transform(X[:, j]) for j, b in enumerate(bins)])
    assert LogisticRegression(max_iter=2000).fit(W, y).coef_[0][1] > 0


def test_declared_direction_makes_bad_rates_monotone():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 10, 30_000)
    # risk rises overall but dips in the middle: free bins would follow the dip
    z = -3.0 + 0.25 * x - 1.2 * ((x > 4) & (x < 6))
    y = _logistic(z, rng)
    free = monotone_bins(x, y, "x", False, direction=0)
    tied = monotone_bins(x, y, "x", False, direction=1)
    rate = lambda b: np.array(b.bads[:-1]) / np.array(b.counts[:-1])  # noqa: E731
    assert np.any(np.diff(rate(free)) < 0)  # the dip is real in the data
    assert np.all(np.diff(rate(tied)) > 0)  # but the declared direction holds
    assert np.all(np.diff(tied.woe[:-1]) < 0)  # so WoE falls with the value
    falling = monotone_bins(-x, y, "x", False, direction=-1)
    assert np.all(np.diff(rate(falling)) < 0)


def test_adjacent_bins_differ_significantly_and_respect_size():
    rng = np.random.default_rng(2)
    x = rng.normal(size=40_000)
    y = _logistic(-2.5 + 0.8 * x, rng)
    b = monotone_bins(x, y, "x", False, direction=1, max_bins=8, min_share=0.02)
    n, bad = np.array(b.counts[:-1]), np.array(b.bads[:-1])
    assert 2 <= len(n) <= 8
    assert n.min() >= 0.02 * len(x)
    for k in range(len(n) - 1):
        assert two_proportion_pvalue(n[k], bad[k], n[k + 1], bad[k + 1]) <= 0.05
    # noise alone: everything merges into one bin
    noise = monotone_bins(rng.normal(size=5_000), _logistic(np.full(5_000, -2.0), rng), "z", False)
    assert noise.n_bins == 1


def test_merge_runs_pools_violators_then_merges_alike_neighbours():
    n = [1000, 1000, 1000, 1000]
    b = [50, 40, 120, 125]  # a dip, then two alike bins
    groups = merge_runs(n, b, direction=1, min_count=0, max_pvalue=0.05, max_bins=8)
    assert groups == [[0, 1], [2, 3]]
    assert merge_runs(n, b, direction=0, min_count=0, max_pvalue=1.0, max_bins=2) == [
        [0, 1],
        [2, 3],
    ]


def test_missing_bin_only_where_training_rows_had_missing_values():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(10_000, 2))
    X[rng.random(10_000) < 0.1, 0] = np.nan
    y = _logistic(-2.0 + np.nan_to_num(X[:, 0], nan=1.5) + X[:, 1], rng)
    card = Scorecard(min_iv=0.0).fit(X, y, ["gappy", "full"])
    table = card.table()
    assert (table[table.feature == "gappy"].bin == "missing").sum() == 1
    assert (table[table.feature == "full"].bin == "missing").sum() == 0
    # an unseen missing value scores the average (WoE 0), not an empty bin's guess
    full = next(b for b in card.bins_ if b.feature == "full")
    assert full.transform(np.array([np.nan]))[0] == 0.0


def test_labels_read_as_amounts_and_level_names():
    assert fmt_amount(12630.0) == "12,630"
    assert fmt_amount(0.00689) == "0.00689"
    assert fmt_amount(2.5) == "2.5"
    assert "e+" not in fmt_amount(1.263e4)
    rng = np.random.default_rng(4)
    amount = rng.lognormal(9, 1, 20_000)
    code = rng.integers(0, 3, 20_000).astype(float)
    y = _logistic(-3 + 0.6 * np.log(amount / 8000) + (code == 2), rng)
    X = np.column_stack([amount, code])
    card = Scorecard(min_iv=0.0, levels={"job": ["clerk", "farmer", "trader"]})
    card.fit(X, y, ["amount", "job"], ["job"])
    labels = card.table().set_index("feature").bin
    assert all("e+" not in s for s in labels["amount"])
    assert any("," in s for s in labels["amount"])  # thousands separated
    assert "trader" in set(labels["job"])
    assert all("code" not in s and "=" not in s for s in labels["job"])


def test_selection_filters_caps_and_keeps_points_adding_up():
    rng = np.random.default_rng(5)
    n = 20_000
    base = rng.normal(size=(n, 6))
    twin = base[:, 0] + 0.05 * rng.normal(size=n)  # a near copy of x0
    noise = rng.normal(size=n)  # no information
    X = np.column_stack([base, twin, noise])
    names = [f"x{j}" for j in range(6)] + ["twin", "noise"]
    y = _logistic(-2.5 + base @ np.array([1.0, 0.8, 0.6, 0.5, 0.4, 0.3]), rng)
    card = Scorecard(max_features=4).fit(X, y, names)
    log = {r["feature"]: r for r in card.selection_}
    assert len(card.bins_) == 4
    # of x0 and its near copy, the one of lower information value goes, naming the other
    weaker, stronger = sorted(["x0", "twin"], key=lambda f: log[f]["iv"])
    assert log[weaker]["stage"] == "correlation" and stronger in log[weaker]["reason"]
    assert log["noise"]["stage"] in ("bins", "iv")
    assert any("features already in" in r["reason"] for r in card.selection_)
    assert all(r["reason"] for r in card.selection_)  # every feature says why
    # a row's score is the base points plus the points of its bins
    table = card.table()
    total = np.full(n, card.base_points)
    for b, j in zip(card.bins_, card._cols, strict=True):
        pts = table[table.feature == b.feature].points.to_numpy()
        total += pts[b.index(X[:, j])]
    np.testing.assert_allclose(total, card.points(X), atol=1e-9)
    assert roc_auc_score(y, card.predict_proba(X)) > 0.75


def test_score_bands_count_every_row_and_rank_risk():
    X, y, names = _suppressed(seed=6)
    card = Scorecard().fit(X, y, names)
    bands = score_bands(card, {"train": X}, {"train": y})
    assert bands.n_train.sum() == len(y)
    rates = bands.bad_rate_train.to_numpy()
    assert rates[0] > rates[-1]  # low scores, more bads
    assert np.all(np.isfinite(bands.se_train))


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_is_deterministic(seed):
    X, y, names = _suppressed(seed=seed)
    a = Scorecard().fit(X, y, names)
    b = Scorecard().fit(X, y, names)
    assert a.table().equals(b.table()) and a.selection_ == b.selection_


def test_the_stage_hands_the_declared_directions_and_level_names_to_the_card():
    from pathlib import Path

    from pipeline.base.config import ScorecardConfig
    from pipeline.base.registry import BY_NAME, FEATURE_NAMES
    from pipeline.stages.train import TrainData, _scorecard

    frame = pd.DataFrame()
    sim = TrainData("simulator", frame, list(FEATURE_NAMES), [], ["occupation_code"], None, Path())
    card = _scorecard(ScorecardConfig(), sim)
    # the registry's directions, whether or not LightGBM is constrained (monotone None)
    assert card.directions == {n: BY_NAME[n].monotone for n in FEATURE_NAMES if BY_NAME[n].monotone}
    assert card.levels["occupation_code"][0] == "salaried"
    table = TrainData(
        "table",
        frame,
        ["age", "job"],
        ["job"],
        ["job"],
        [-1, 0],
        Path(),
        meta={"categories": {"job": ["clerk", "farmer", "rare"]}},
    )
    card = _scorecard(ScorecardConfig(max_features=3), table)
    assert card.directions == {"age": -1} and card.max_features == 3
    assert list(card.levels["job"]) == ["clerk", "farmer", "rare"]


def test_the_score_test_in_row_blocks_equals_the_one_column_formula(monkeypatch):
    """The blocked score test gives each candidate's c'(y-p)^2 / (c'Vc - c'VA (A'VA)^-1 A'Vc)."""
    from pipeline.core import baselines as base_core

    rng = np.random.default_rng(5)
    n = 5_000
    W = rng.normal(size=(n, 6))
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.8 * W[:, 0] - 0.5 * W[:, 3])))).astype(float)
    chosen = [0]
    A = np.column_stack([np.ones(n), W[:, chosen]])
    p = 1 / (1 + np.exp(-(-0.1 + 0.7 * W[:, 0])))
    cand = [0, 1, 2, 3, 4, 5]
    v = p * (1 - p)
    info = A.T @ (A * v[:, None])
    want = []
    for j in cand:
        c = W[:, j]
        m = A.T @ (c * v)
        var = c @ (c * v) - m @ np.linalg.solve(info, m)
        u = c @ (y - p)
        want.append(u * u / var if var > 1e-12 else 0.0)
    monkeypatch.setattr(base_core, "SCORE_TEST_ROWS", 777)  # several blocks and a short last one
    got = base_core._score_test(W, y, A, p, cand)
    assert got[0] == 0.0  # a column already in the model adds nothing
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-9)
    assert int(np.argmax(got)) == 3  # the column that drives y and is not in yet
