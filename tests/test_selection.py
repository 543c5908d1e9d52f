"""Model selection: budget, one-standard-error rule, no peeking, dict form, determinism."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.model_selection import RepeatedStratifiedKFold

from pipeline.core import selection
from pipeline.core.baselines import Scorecard
from pipeline.core.selection import ORDER, Candidate, budget, choose

BASE = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_threads": 1,
    "seed": 7,
    "deterministic": True,
    "force_col_wise": True,
    "verbosity": -1,
}


def _data(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    cat = rng.integers(-1, 4, n).astype(float)  # -1 = missing
    logit = 1.2 * x[:, 0] - 0.8 * np.abs(x[:, 1]) + 0.7 * (cat == 2) - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    ids = np.arange(n, dtype=float)
    X = np.column_stack([ids, x, cat]).astype(np.float32)
    return X, y, ["row", "a", "b", "c", "kind"]


def _select(X, y, names, **kw):
    return selection.select(
        X,
        y,
        names,
        ["kind"],
        scorecard=lambda: Scorecard(max_bins=5),
        base_params=BASE,
        n_estimators=200,
        early_stopping_rounds=20,
        folds=2,
        repeats=1,
        seed=3,
        tune_seconds=300,
        trials=3,
        **kw,
    )


def test_budget_scales_with_rows():
    small, mid, big = budget(1_000), budget(150_000), budget(1_000_000)
    assert small.trials < mid.trials <= big.trials
    assert small.seconds < mid.seconds <= big.seconds <= 600
    assert budget(1_000, tune_seconds=12).seconds == 12
    assert big.tune_rows < 150_000  # a search on a big table works on a sample


def test_simplest_within_one_standard_error_wins():
    def cand(name, mean, sd):
        return Candidate(name, [mean - sd, mean + sd] * 5)

    close = [
        cand("scorecard", 0.770, 0.01),
        cand("lightgbm", 0.772, 0.01),
        cand("blend", 0.773, 0.01),
    ]
    name, why = choose(close)
    assert name == "scorecard" and "within one standard error" in why
    apart = [cand("scorecard", 0.74, 0.01), cand("lightgbm", 0.75, 0.01), cand("blend", 0.79, 0.01)]
    name, why = choose(apart)
    assert name == "blend" and "best mean AUC" in why


def test_tuning_sees_training_rows_only(monkeypatch):
    X, y, names = _data()
    seen = []
    real_tune = selection.tune

    def spy(Xt, yt, *args, **kw):
        seen.append(set(Xt[:, 0].astype(int)))
        return real_tune(Xt, yt, *args, **kw)

    monkeypatch.setattr(selection, "tune", spy)
    _select(X, y, names)
    splits = RepeatedStratifiedKFold(n_splits=2, n_repeats=1, random_state=3).split(X, y)
    for rows, (tr, te) in zip(seen, splits, strict=True):
        assert rows == set(tr) and not rows & set(te)


def test_result_form_and_reproducible():
    X, y, names = _data()
    first = _select(X, y, names).to_dict()
    again = _select(X, y, names).to_dict()
    assert set(first["selected"]) == {"name", "auc_mean", "auc_std"}
    assert [c["name"] for c in first["candidates"]] == list(ORDER)
    for c in first["candidates"]:
        assert {"name", "auc_mean", "auc_std", "seconds"} <= set(c)
        assert 0.6 < c["auc_mean"] <= 1.0 and c["seconds"] > 0
    chosen = next(c for c in first["candidates"] if c["name"] == first["selected"]["name"])
    assert chosen["auc_mean"] == first["selected"]["auc_mean"]
    strip = lambda d: [(c["name"], c["auc_folds"]) for c in d["candidates"]]  # noqa: E731
    assert strip(first) == strip(again)


def test_blend_is_per_row_and_between_the_two():
    a = np.array([0.1, 0.5, 0.9])
    b = np.array([0.3, 0.5, 0.6])
    p = selection.blend(a, b)
    assert np.all((p >= np.minimum(a, b)) & (p <= np.maximum(a, b)))
    assert selection.blend(a[:1], b[:1])[0] == pytest.approx(p[0])


def test_search_keeps_a_starting_point_unless_clearly_beaten():
    def trial(number, value, se):
        return SimpleNamespace(number=number, value=value, user_attrs={"se": se})

    near = [trial(0, 0.75, 0.01), trial(1, 0.76, 0.01), trial(5, 0.765, 0.01)]
    assert selection._one_se_choice(near).number == 1
    far = [trial(0, 0.75, 0.01), trial(1, 0.76, 0.01), trial(5, 0.80, 0.01)]
    assert selection._one_se_choice(far).number == 5


def test_stacked_blend_learns_weights_from_out_of_fold_scores():
    rng = np.random.default_rng(4)
    n = 4000
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * signal))).astype(int)
    good = 1 / (1 + np.exp(-(2 * signal + rng.normal(scale=0.3, size=n))))
    weak = 1 / (1 + np.exp(-(0.5 * signal + rng.normal(scale=2.0, size=n))))
    mix = selection.fit_blend(y, weak, good)
    assert mix.lightgbm > mix.scorecard > 0  # the sharper model gets the larger weight
    # a model that ranks backwards is not stacked: the other model alone
    assert selection.fit_blend(y, 1 - good, good) == selection.Blend(0.0, 0.0, 1.0)
    assert selection.fit_blend(y, good, 1 - good) == selection.Blend(0.0, 1.0, 0.0)


def test_blend_weights_and_tuned_parameters_are_reported():
    X, y, names = _data()
    d = _select(X, y, names).to_dict()
    blend_row = next(c for c in d["candidates"] if c["name"] == "blend")
    lgb_row = next(c for c in d["candidates"] if c["name"] == "lightgbm")
    assert len(blend_row["weights_per_fold"]) == 2
    assert {"learning_rate", "num_leaves", "rounds"} <= set(lgb_row["params_per_fold"][0])
    assert lgb_row["trials_per_fold"] == [3, 3]


@pytest.mark.parametrize("name", ORDER)
def test_fit_selected_scores_like_its_candidate(name):
    X, y, names = _data(800, seed=5)
    fit, new = slice(0, 600), slice(600, 800)
    final = selection.fit_selected(
        name,
        X[fit],
        y[fit],
        names,
        ["kind"],
        scorecard=lambda: Scorecard(max_bins=5),
        base_params=BASE,
        n_estimators=200,
        early_stopping_rounds=20,
        seed=3,
        tune_seconds=300,
    )
    p = final.predict_proba(X[new])
    assert p.shape == (200,) and np.all((p > 0) & (p < 1))
    assert selection._auc(y[new], p) > 0.65
    assert (final.booster is None) == (name == "scorecard")
    assert (final.scorecard is None) == (name == "lightgbm")
    with pytest.raises(ValueError, match="unknown candidate 'forest'"):
        selection.fit_selected(
            "forest",
            X,
            y,
            names,
            [],
            scorecard=Scorecard,
            base_params=BASE,
            n_estimators=10,
            early_stopping_rounds=5,
        )
