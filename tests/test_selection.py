"""Model selection: budget, one-standard-error rule, no peeking, forest, committee, terms."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.model_selection import RepeatedStratifiedKFold

from pipeline.core import selection
from pipeline.core.baselines import Scorecard
from pipeline.core.selection import ORDER, Candidate, budget, choose, paired_se

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
    how = {
        "scorecard": lambda: Scorecard(max_bins=5),
        "base_params": BASE,
        "n_estimators": 200,
        "early_stopping_rounds": 20,
        "folds": 2,
        "repeats": 1,
        "seed": 3,
        "tune_seconds": 300,
        "trials": 3,
    }
    return selection.select(X, y, names, ["kind"], **{**how, **kw})


def test_budget_is_a_number_of_trials_and_time_only_a_cap():
    small, mid, big = budget(1_000), budget(150_000), budget(1_000_000)
    assert small.trials < mid.trials <= big.trials
    # the cap is the same on every table unless set: it is a safety net, not a plan
    assert small.seconds == mid.seconds == big.seconds == selection.DEFAULT_CAP_SECONDS
    assert budget(1_000, tune_seconds=12).seconds == 12
    # a search sees the whole training part of a fold up to TUNE_ROWS rows
    assert big.tune_rows == selection.TUNE_ROWS >= 75_000


def test_simplest_within_one_paired_standard_error_wins():
    base = np.array([0.76, 0.78] * 5)

    def cand(name, shift, wobble=0.0):
        # fold AUCs: the shared fold pattern, a shift, and a wobble of its own
        return Candidate(name, list(base + shift + wobble * np.array([1.0, -1.0] * 5)))

    close = [
        cand("scorecard", -0.003, 0.01),  # behind by 0.003, paired se 0.0033
        cand("lightgbm", -0.001, 0.01),
        cand("forest", -0.002, 0.01),
        cand("blend", 0.0),
    ]
    name, why = choose(close)
    assert name == "scorecard" and "within one paired standard error" in why
    apart = [
        cand("scorecard", -0.05, 0.01),
        cand("lightgbm", -0.04, 0.01),
        cand("forest", -0.03, 0.01),
        cand("blend", 0.0),
    ]
    name, why = choose(apart)
    assert name == "blend" and "best mean AUC" in why
    # behind on every fold by the same 0.004: the folds tell it apart from the best,
    # though each candidate's own spread (se 0.0032) would have called it a tie
    apart[2] = cand("forest", -0.004)
    assert apart[2].auc_se > 0.004 - 1e-3
    assert choose(apart)[0] == "blend"
    assert paired_se(apart[3], apart[2]) == pytest.approx(0.0, abs=1e-12)
    apart[2] = cand("forest", -0.004, 0.02)  # same shortfall, but fold by fold a toss-up
    assert choose(apart)[0] == "forest"


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


def _without_seconds(d):
    """A selection dict without its timings (the only part that varies between runs)."""
    if isinstance(d, dict):
        return {k: _without_seconds(v) for k, v in d.items() if k != "seconds"}
    if isinstance(d, list):
        return [_without_seconds(v) for v in d]
    return d


def test_result_form_and_reproducible():
    X, y, names = _data()
    first = _select(X, y, names).to_dict()
    again = _select(X, y, names).to_dict()
    assert {"name", "auc_mean", "auc_std", "auc_se_corrected"} <= set(first["selected"])
    assert [c["name"] for c in first["candidates"]] == list(ORDER)
    assert list(ORDER) == ["scorecard", "lightgbm", "forest", "blend"]
    for c in first["candidates"]:
        assert {"name", "auc_mean", "auc_std", "auc_se", "seconds"} <= set(c)
        assert 0.6 < c["auc_mean"] <= 1.0 and c["seconds"] > 0
        assert c["auc_se"] == pytest.approx(c["auc_std"] / np.sqrt(len(c["auc_folds"])))
    chosen = next(c for c in first["candidates"] if c["name"] == first["selected"]["name"])
    assert chosen["auc_mean"] == first["selected"]["auc_mean"]
    assert first["budget"] == budget(len(y), 300).to_dict() | {"trials": 3}
    assert _without_seconds(first) == _without_seconds(again)


def test_search_keeps_a_starting_point_unless_clearly_beaten():
    def trial(start, value, se):
        return selection._Trial({}, value, se, 100, start)

    # the fixed LightGBM (start 0) first, then the shallow start, unless clearly beaten
    near = [trial(0, 0.755, 0.01), trial(1, 0.76, 0.01), trial(2, 0.765, 0.01)]
    assert selection._one_se_choice(near).start == 0
    shallow = [trial(0, 0.74, 0.01), trial(1, 0.76, 0.01), trial(2, 0.765, 0.01)]
    assert selection._one_se_choice(shallow).start == 1
    far = [trial(0, 0.75, 0.01), trial(1, 0.76, 0.01), trial(2, 0.80, 0.01)]
    assert selection._one_se_choice(far).start == 2


def test_committee_is_the_mean_of_standardised_log_odds():
    rng = np.random.default_rng(4)
    n = 3000
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * signal))).astype(int)
    Z = np.column_stack(
        [
            2 * signal + rng.normal(scale=0.5, size=n) - 1,
            0.1 * signal + rng.normal(scale=0.1, size=n) + 3,  # same signal, other scale
            40 * signal + rng.normal(scale=30, size=n),
        ]
    )
    mix = selection.fit_committee(y, Z)
    mu, sd = Z.mean(axis=0), Z.std(axis=0)
    a, b = mix.slope, mix.intercept
    assert mix.weights == pytest.approx(a / (3 * sd), rel=1e-12)
    assert mix.bias == pytest.approx(b - a * np.sum(mu / (3 * sd)), rel=1e-12)
    mean = ((Z - mu) / sd).mean(axis=1)
    np.testing.assert_allclose(mix.log_odds(Z), a * mean + b, atol=1e-12)
    # the Platt map makes it log-odds of the target on these rows: the mean probability
    # is the base rate, and the slope is the logistic regression's on the mean
    p = 1 / (1 + np.exp(-mix.log_odds(Z)))
    assert p.mean() == pytest.approx(y.mean(), abs=1e-9)
    assert np.sum((y - p) * mean) == pytest.approx(0.0, abs=1e-6)
    assert a > 0
    # scale-free: a member's log-odds stretched and shifted leave the blend unchanged
    stretched = Z * np.array([1.0, 25.0, 1.0]) + np.array([0.0, -7.0, 0.0])
    again = selection.fit_committee(y, stretched)
    np.testing.assert_allclose(again.log_odds(stretched), mix.log_odds(Z), atol=1e-9)
    # a member ranking backwards out of fold, or one without spread, is left out
    Z[:, 1] = -Z[:, 1]
    assert selection.fit_committee(y, Z).used == (True, False, True)
    Z[:, 1] = 0.5
    assert selection.fit_committee(y, Z).weights[1] == 0.0
    with pytest.raises(ValueError, match="3 members"):
        selection.fit_committee(y, Z[:, :2])


def test_blend_scales_come_from_the_training_fold_only():
    """Scrambling one fold's features changes nothing the other split's blend learns."""
    X, y, names = _data()
    splits = list(RepeatedStratifiedKFold(n_splits=2, n_repeats=1, random_state=3).split(X, y))
    tr0, te0 = splits[0]
    scrambled = X.copy()
    rng = np.random.default_rng(11)
    scrambled[np.ix_(te0, [1, 2, 3])] = rng.normal(size=(len(te0), 3)) * 5
    base = _select(X, y, names).to_dict()
    leak = _select(scrambled, y, names).to_dict()
    mixes = [next(c for c in d["candidates"] if c["name"] == "blend") for d in (base, leak)]
    first, second = (m["weights_per_fold"] for m in mixes)
    assert first[0] == second[0]  # split 0 trains on tr0 only: scales bit-identical
    assert first[1] != second[1]  # split 1 trains on the scrambled rows: a live sentinel
    assert mixes[0]["auc_folds"][0] != mixes[1]["auc_folds"][0]  # te0 is scored, though


def test_forest_parameters_scale_and_carry_constraints():
    base = {"num_threads": 4, "max_bin": 63, "deterministic": True, "monotone_constraints": []}
    small = selection.forest_params(500, base, seed=1)
    big = selection.forest_params(1_000_000, base, seed=1)
    assert small["boosting"] == big["boosting"] == "rf"
    assert small["min_data_in_leaf"] == 5 < big["min_data_in_leaf"]
    assert small["num_threads"] == 1 and big["num_threads"] == 4  # the one-thread rule
    # a tree draws 63.2% of the rows, at most FOREST_TREE_ROWS: its cost stops growing
    assert small["bagging_fraction"] == 0.632
    assert big["bagging_fraction"] * 1_000_000 == pytest.approx(selection.FOREST_TREE_ROWS)
    assert small["max_bin"] == 63 and small["deterministic"] is True
    assert "monotone_constraints" not in small  # an empty list constrains nothing
    mono = {**base, "monotone_constraints": [1, 0], "monotone_constraints_method": "intermediate"}
    params = selection.forest_params(500, mono, seed=1)
    assert params["monotone_constraints"] == [1, 0]
    assert params["monotone_constraints_method"] == "intermediate"


def test_forest_honours_a_monotone_constraint():
    rng = np.random.default_rng(2)
    n = 1500
    X = rng.normal(size=(n, 2)).astype(np.float32)
    bumpy = 2 * X[:, 0] - 3 * np.exp(-4 * X[:, 0] ** 2)  # not monotone in the first column
    y = (rng.random(n) < 1 / (1 + np.exp(-bumpy))).astype(int)
    grid = np.linspace(-2.5, 2.5, 41, dtype=np.float32)

    def worst_step(constraints):
        forest = selection.fit_forest(
            X, y, ["a", "b"], [], {"monotone_constraints": constraints, "num_threads": 1}, 3
        )
        steps = []
        for row in X[:25]:
            sweep = np.repeat(row[None, :], len(grid), axis=0)
            sweep[:, 0] = grid
            steps.append(np.diff(selection.member_log_odds(forest, sweep, ["a", "b"], [])).min())
        return min(steps)

    assert worst_step([1, 0]) >= -1e-12
    assert worst_step([0, 0]) < 0  # without it the dip shows: the check can fail


def test_blend_weights_and_tuned_parameters_are_reported():
    X, y, names = _data()
    d = _select(X, y, names).to_dict()
    rows = {c["name"]: c for c in d["candidates"]}
    mixes = rows["blend"]["weights_per_fold"]
    assert len(mixes) == 2
    assert mixes[0]["members"] == ["scorecard", "lightgbm", "forest"]
    assert all(w > 0 for w in mixes[0]["weights"]) and np.isfinite(mixes[0]["bias"])
    assert {"learning_rate", "num_leaves", "rounds"} <= set(rows["lightgbm"]["params_per_fold"][0])
    assert rows["lightgbm"]["trials_per_fold"] == [3, 3]
    assert rows["forest"]["trees"] == 300 and len(rows["forest"]["min_data_in_leaf_per_fold"]) == 2


def _raw(member, X, names, categorical):
    """A member's raw score, written out from its own parts."""
    if isinstance(member, Scorecard):
        return member.intercept_ + member._woe(X) @ member.coef_
    return member.predict(selection.lgb_matrix(X, names, categorical), raw_score=True)


@pytest.mark.parametrize("name", ORDER)
def test_fit_selected_is_a_sum_of_log_odds_terms(name):
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
        trials=3,
    )
    p = final.predict_proba(X[new])
    assert p.shape == (200,) and np.all((p > 0) & (p < 1))
    assert selection._auc(y[new], p) > 0.65
    bias, parts = final.terms()
    z = bias + sum(w * _raw(m, X[new], names, ["kind"]) for w, m in parts)
    np.testing.assert_allclose(np.log(p / (1 - p)), z, rtol=0, atol=1e-9)
    kinds = [type(m).__name__ for _, m in parts]
    if name == "blend":
        assert kinds == ["Scorecard", "Booster", "Booster"] and bias != 0.0
        forest = final.forest
        assert forest is not None and forest.params["boosting"] == "rf"
    else:
        assert bias == 0.0 and len(parts) == 1
        assert kinds == ["Scorecard" if name == "scorecard" else "Booster"]
        # a forest's raw score sums its trees: weight 1/trees makes it their average
        assert parts[0][0] == (1 / 300 if name == "forest" else 1.0)
    assert (final.scorecard is None) == (name in ("lightgbm", "forest"))
    assert (final.booster is None) == (name in ("scorecard", "forest"))


def test_fit_selected_rejects_an_unknown_candidate():
    X, y, names = _data(200)
    with pytest.raises(ValueError, match="unknown candidate 'stack'; candidates: scorecard"):
        selection.fit_selected(
            "stack",
            X,
            y,
            names,
            [],
            scorecard=Scorecard,
            base_params=BASE,
            n_estimators=10,
            early_stopping_rounds=5,
        )


def test_declared_monotone_directions_leave_only_constrained_candidates():
    from pipeline.core.selection import eligible

    assert eligible({}) == ORDER
    assert eligible({"monotone_constraints": [0, 0]}) == ORDER
    assert set(eligible({"monotone_constraints": [1, 0]})) == {"lightgbm", "forest"}


def test_corrected_standard_error_follows_nadeau_bengio():
    d = np.array([0.01, -0.004, 0.012, 0.003, -0.002, 0.008, 0.0, 0.006, 0.011, -0.001])
    s2 = np.var(d, ddof=1)
    assert selection.corrected_se(d, 0.0) == pytest.approx(np.sqrt(s2 / 10))
    # 5x2 folds: evaluation rows equal training rows, the variance grows (1/10 + 1)/(1/10)
    assert selection.corrected_se(d, 1.0) == pytest.approx(np.sqrt((0.1 + 1.0) * s2))
    assert selection.corrected_se(d, 1.0) / selection.corrected_se(d, 0.0) == pytest.approx(
        np.sqrt(11)
    )
    best = Candidate("blend", list(0.78 + d))
    forest = Candidate("forest", list(0.78 + d / 2))
    gap = best.auc_mean - forest.auc_mean
    plain = paired_se(best, forest)
    corrected = selection.corrected_paired_se(best, forest, 1.0)
    assert plain < gap <= corrected  # the plain error calls it behind, the corrected a tie
    cands = [Candidate("scorecard", list(0.70 + d)), Candidate("lightgbm", list(0.70 + d)), forest]
    assert choose([*cands, best], 0.0)[0] == "blend"
    name, why = choose([*cands, best], 1.0)
    assert name == "forest" and "corrected paired standard error" in why
    check = {r["name"]: r for r in selection.rule_check([*cands, best], best, 1.0)}
    assert check["forest"]["within_one_se_corrected"] and not check["forest"]["within_one_se_plain"]


def test_tuned_lightgbm_never_scores_below_the_fixed_one_in_the_same_folds():
    X, y, names = _data(900, seed=8)
    d = _select(X, y, names, trials=6).to_dict()
    fixed = d["lightgbm_fixed"]
    assert fixed["settings"] == {**selection.FIXED, "trees": 300}
    tuned = next(c for c in d["candidates"] if c["name"] == "lightgbm")
    assert len(fixed["auc_folds"]) == len(tuned["auc_folds"]) == 2
    assert fixed["tuned_minus_fixed"] >= 0.0
    assert fixed["tuned_minus_fixed"] == pytest.approx(tuned["auc_mean"] - fixed["auc_mean"])
    # where the search kept the fixed LightGBM its fold AUC is the fixed one's, exactly
    for kept, a, b in zip(
        tuned["params_per_fold"], tuned["auc_folds"], fixed["auc_folds"], strict=True
    ):
        assert (a == b) if kept["fixed"] else (kept["rounds"] != 300 or a != b)


def test_a_loaded_machine_selects_the_same_and_a_hit_cap_is_reported(monkeypatch):
    X, y, names = _data()
    quiet = _select(X, y, names).to_dict()
    assert quiet["search_cut_short"] == 0
    real = selection._inner_cv

    def slow(*args, **kw):  # every trial 0.3 s slower: a machine under load
        time.sleep(0.3)
        return real(*args, **kw)

    monkeypatch.setattr(selection, "_inner_cv", slow)
    loaded = _select(X, y, names, tune_seconds=0).to_dict()
    assert _without_seconds(loaded) == _without_seconds(quiet) | {
        "budget": _without_seconds(loaded)["budget"]
    }
    # a tiny cap cuts every search short (the fixed LightGBM and the search's first
    # point still run): the result may change, and it says so
    cut = _select(X, y, names, tune_seconds=0.01).to_dict()
    assert cut["search_cut_short"] == 2
    tuned = next(c for c in cut["candidates"] if c["name"] == "lightgbm")
    assert tuned["search_cut_short"] is True and max(tuned["trials_per_fold"]) < 3


def test_compiled_blend_speaks_log_odds_of_the_target():
    from pipeline.core import compose

    X, y, names = _data(1500, seed=9)
    final = selection.fit_selected(
        "blend",
        X,
        y,
        names,
        ["kind"],
        scorecard=lambda: Scorecard(max_bins=5),
        base_params=BASE,
        n_estimators=200,
        early_stopping_rounds=20,
        seed=3,
        trials=3,
    )
    bias, terms = final.terms()
    booster = compose.compile_terms(bias, terms, names, ["kind"])
    M = selection.lgb_matrix(X, names, ["kind"])
    raw = booster.predict(M, raw_score=True)
    rate = y.mean()
    assert abs(np.mean(1 / (1 + np.exp(-raw))) - rate) < 0.01
    base_value = booster.predict(M, pred_contrib=True)[:, -1]
    assert np.ptp(base_value) < 1e-9
    # TreeSHAP's base value is the mean log-odds of the training rows (which lies below
    # the log-odds of the base rate by Jensen's inequality: the map fits probabilities)
    assert base_value[0] == pytest.approx(raw.mean(), abs=0.05)
    # the map is in the compiled model: a slope and a shift away from the bare mean
    mix = final.committee
    assert mix is not None and mix.slope > 0 and mix.intercept < 0


def test_platt_on_a_score_that_separates_the_classes_warns_of_nothing():
    """Newton's steps run off to a huge slope when the score separates the classes; the
    logistic's exp overflows on the way, which is its exact limit and no cause for a
    console warning."""
    import warnings

    z = np.r_[np.linspace(-30, -1, 50), np.linspace(1, 30, 50)]
    y = np.r_[np.zeros(50), np.ones(50)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        slope, intercept = selection.platt(y, z)
    assert np.isfinite(slope) and np.isfinite(intercept) and slope > 1
