"""pipeline.core.compose: scorecards and boosters as one LightGBM model, exactly."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from pipeline.core.baselines import Scorecard
from pipeline.core.compose import ComposeError, compile_terms, model_text
from pipeline.core.selection import lgb_matrix
from pipeline.core.treeshap import TreeShap, supports

NAMES = ["x0", "x1", "cat", "code"]
CAT = ["cat"]  # categorical for LightGBM: its -1 (missing) code reaches LightGBM as NaN
WOE_CAT = ["cat", "code"]  # "code" is categorical for the scorecard only
TOL = 1e-9
# SHAP of a scorecard feature against its exact training mean: covers of leaves without
# training rows (count 1 on ~2**31) move the mean by less than this
SHAP_TOL = 1e-8


def _table(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.normal(size=n),
            rng.lognormal(size=n),  # float64 values float32 cannot hold exactly
            rng.integers(-1, 5, n),
            rng.integers(-2, 4, n),
        ]
    ).astype(float)
    X[rng.random(n) < 0.1, 0] = np.nan
    z = np.nan_to_num(X[:, 0]) + X[:, 1] - 1.5 + (X[:, 2] == 2) - 0.7 * (X[:, 3] < 0)
    y = (z + rng.logistic(size=n) > 0).astype(int)
    return X, y


X_TRAIN, Y_TRAIN = _table(600, 1)


def _edge_rows(card: Scorecard) -> np.ndarray:
    """Rows that probe every boundary: edges, infinities, NaN, seen and unseen codes."""
    base = X_TRAIN[:1].copy()
    base[0, 0], base[0, 1] = 0.1, 1.0
    rows = []
    for b in card.bins_:
        j = NAMES.index(b.feature)
        if b.categorical:
            vals = [*b.codes, 7.0, 100.0]
            if b.feature not in CAT:  # raw codes: unseen negative ones too
                vals += [-5.0]
        else:
            vals = [*b.edges, np.nan, np.inf, -np.inf, -1e6, 1e6]
        for v in vals:
            row = base.copy()
            row[0, j] = v
            rows.append(row)
    return np.vstack([X_TRAIN, *rows])


def _card_raw(card: Scorecard, X: np.ndarray) -> np.ndarray:
    out = np.full(len(X), card.intercept_)
    for b, c in zip(card.bins_, card.coef_, strict=True):
        out = out + c * b.transform(X[:, NAMES.index(b.feature)])
    return out


def _booster_raw(booster: lgb.Booster, X: np.ndarray, cat: list[str]) -> np.ndarray:
    return np.asarray(booster.predict(lgb_matrix(X, NAMES, cat), raw_score=True))


def _train(params: dict, rounds: int, cat: list[str]) -> lgb.Booster:
    base = {"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": 3}
    data = lgb.Dataset(
        lgb_matrix(X_TRAIN, NAMES, cat),
        label=Y_TRAIN,
        feature_name=NAMES,
        categorical_feature=cat or "auto",
        params={"feature_pre_filter": False, "verbosity": -1},
    )
    return lgb.train({**base, **params}, data, num_boost_round=rounds)


@pytest.fixture(scope="module")
def card() -> Scorecard:
    return Scorecard(min_iv=0.0).fit(X_TRAIN, Y_TRAIN, NAMES, WOE_CAT)


@pytest.fixture(scope="module")
def gbdt() -> lgb.Booster:
    # many-vs-many category splits (bit sets) as well as one-hot ones
    return _train({"num_leaves": 6, "min_data_in_leaf": 10, "max_cat_to_onehot": 2}, 15, CAT)


@pytest.fixture(scope="module")
def forest() -> lgb.Booster:
    params = {"boosting": "rf", "bagging_fraction": 0.632, "bagging_freq": 1}
    return _train({**params, "feature_fraction": 0.5, "num_leaves": 8}, 12, CAT)


def _raw(b: lgb.Booster, X: np.ndarray, cat: list[str] = CAT) -> np.ndarray:
    return np.asarray(b.predict(lgb_matrix(X, NAMES, cat), raw_score=True))


# --------------------------------------------------------------------------- identity


def test_scorecard_alone_is_exact_on_every_boundary(card):
    X = _edge_rows(card)
    assert np.isnan(X).any() and np.isinf(X).any() and (X[:, 2] == -1).any()
    b = compile_terms(0.0, [(1.0, card)], NAMES, CAT)
    np.testing.assert_allclose(_raw(b, X), _card_raw(card, X), rtol=0, atol=TOL)
    # the probability is the scorecard's own
    np.testing.assert_allclose(
        b.predict(lgb_matrix(X, NAMES, CAT)), card.predict_proba(X), atol=TOL
    )
    # rows as the rest of the pipeline passes them (the -1 code kept, not turned into
    # NaN) reach the same leaves: the -1 code's own bin, not the missing one
    X32 = X.astype(np.float32)  # as the pipeline's matrices are
    raw_rows = np.asarray(b.predict(X32, raw_score=True))
    np.testing.assert_allclose(raw_rows, _raw(b, X32), rtol=0, atol=TOL)
    minus_one = X32[:, NAMES.index("cat")] == -1
    assert minus_one.any()
    np.testing.assert_allclose(
        raw_rows[minus_one], _card_raw(card, X32[minus_one]), rtol=0, atol=TOL
    )


def test_unseen_codes_and_nan_land_in_the_missing_bin(card):
    b = compile_terms(0.0, [(1.0, card)], NAMES, CAT)
    for feature, values in (("code", [-5.0, 9.0, np.nan]), ("cat", [9.0, 100.0])):
        bins = next(x for x in card.bins_ if x.feature == feature)
        coef = card.coef_[card.bins_.index(bins)]
        X = np.repeat(X_TRAIN[:1], len(values), axis=0)
        X[:, NAMES.index(feature)] = values
        ref = X_TRAIN[:1].copy()
        j = NAMES.index(feature)
        shift = coef * (bins.woe[-1] - bins.transform(ref[:, j])[0])
        np.testing.assert_allclose(_raw(b, X), _raw(b, ref)[0] + shift, atol=TOL)


def test_scorecard_without_categorical_columns_reads_float64_exactly(card):
    # no LightGBM-categorical column: the matrix stays float64, so a value one double
    # above an edge already falls in the next bin
    numeric = [b for b in card.bins_ if not b.categorical]
    X = _edge_rows(card)
    nudged = []
    for b in numeric:
        for e in b.edges:
            row = X[:1].copy()
            row[0, NAMES.index(b.feature)] = np.nextafter(e, np.inf)
            nudged.append(row)
    X = np.vstack([X, *nudged])
    b = compile_terms(0.0, [(1.0, card)], NAMES, [])
    np.testing.assert_allclose(_raw(b, X, []), _card_raw(card, X), rtol=0, atol=TOL)


def test_gbdt_with_categorical_splits_scaled(card, gbdt):
    assert any(t["num_cat"] > 0 for t in gbdt.dump_model()["tree_info"])
    X = _edge_rows(card)
    b = compile_terms(0.0, [(0.7, gbdt)], NAMES, CAT)
    np.testing.assert_allclose(_raw(b, X), 0.7 * _booster_raw(gbdt, X, CAT), rtol=0, atol=TOL)


def test_forest_enters_without_averaging(forest):
    assert "average_output" in forest.model_to_string()
    X = X_TRAIN
    w = 1.0 / forest.num_trees()  # LightGBM's raw score of a forest sums its trees
    b = compile_terms(0.0, [(w, forest)], NAMES, CAT)
    assert "average_output" not in model_text(0.0, [(w, forest)], NAMES, CAT)
    np.testing.assert_allclose(_raw(b, X), w * _booster_raw(forest, X, CAT), atol=TOL)
    # and then the composite's probability is the forest's own
    Xl = lgb_matrix(X, NAMES, CAT)
    np.testing.assert_allclose(b.predict(Xl), forest.predict(Xl), atol=TOL)


def test_committee_of_all_three_with_bias(card, gbdt, forest):
    terms = [(0.4, card), (0.35, gbdt), (0.25 / forest.num_trees(), forest)]
    X = _edge_rows(card)
    b = compile_terms(-0.3, terms, NAMES, CAT, X_ref=X_TRAIN)
    want = -0.3 + 0.4 * _card_raw(card, X)
    want += 0.35 * _booster_raw(gbdt, X, CAT) + terms[2][0] * _booster_raw(forest, X, CAT)
    np.testing.assert_allclose(_raw(b, X), want, rtol=0, atol=TOL)
    assert b.num_trees() == 1 + len(card.bins_) + gbdt.num_trees() + forest.num_trees()
    contrib = b.predict(lgb_matrix(X, NAMES, CAT), pred_contrib=True)
    assert np.isfinite(contrib).all()
    np.testing.assert_allclose(contrib.sum(axis=1), want, atol=TOL)


def test_zero_weight_terms_are_left_out(card, gbdt):
    b = compile_terms(0.5, [(0.0, card), (1.0, gbdt)], NAMES, CAT)
    assert b.num_trees() == 1 + gbdt.num_trees()
    np.testing.assert_allclose(_raw(b, X_TRAIN), 0.5 + _booster_raw(gbdt, X_TRAIN, CAT), atol=TOL)


# --------------------------------------------------------------------------- counts and SHAP


def test_counts_are_the_training_counts(card, gbdt):
    b = compile_terms(0.0, [(1.0, card), (1.0, gbdt)], NAMES, CAT)
    info = b.dump_model()["tree_info"]
    for k, bins in enumerate(card.bins_, start=1):
        weights: dict[float, float] = {}
        for leaf in _leaves(info[k]["tree_structure"]):
            weights[leaf["leaf_value"]] = weights.get(leaf["leaf_value"], 0) + leaf["leaf_weight"]
        assert sorted(weights.values()) == sorted(float(c) for c in bins.counts)
        assert info[k]["tree_structure"]["internal_weight"] == len(X_TRAIN)
    first = 1 + len(card.bins_)
    for own, copied in zip(gbdt.dump_model()["tree_info"], info[first:], strict=True):
        a, c = _leaves(own["tree_structure"]), _leaves(copied["tree_structure"])
        assert [x["leaf_count"] for x in a] == [x["leaf_count"] for x in c]
        assert [x["leaf_weight"] for x in a] == [x["leaf_weight"] for x in c]


def _leaves(node: dict) -> list[dict]:
    if "leaf_index" in node:
        return [node]
    return _leaves(node["left_child"]) + _leaves(node["right_child"])


def test_shap_of_a_scorecard_is_its_centred_points(card):
    w = 0.8
    X = _edge_rows(card)
    b = compile_terms(0.2, [(w, card)], NAMES, CAT)
    Xl = lgb_matrix(X, NAMES, CAT)
    assert supports(b)
    raw = 0.2 + w * _card_raw(card, X)
    for phi in (TreeShap(b).shap_values(Xl), b.predict(Xl, pred_contrib=True)):
        np.testing.assert_allclose(phi.sum(axis=1), raw, atol=TOL)
        expected_value = 0.2 + w * card.intercept_
        for bins, coef in zip(card.bins_, card.coef_, strict=True):
            j = NAMES.index(bins.feature)
            mean = np.dot(bins.counts, bins.woe) / np.sum(bins.counts)
            want = w * coef * (bins.transform(X[:, j]) - mean)
            np.testing.assert_allclose(phi[:, j], want, rtol=0, atol=SHAP_TOL)
            expected_value += w * coef * mean
        np.testing.assert_allclose(phi[:, -1], expected_value, atol=SHAP_TOL)


def test_treeshap_and_pred_contrib_agree_on_a_numeric_committee(card):
    gb = _train({"num_leaves": 6, "min_data_in_leaf": 10}, 10, [])
    rf = _train({"boosting": "rf", "bagging_fraction": 0.632, "bagging_freq": 1}, 8, [])
    terms = [(0.5, card), (0.6, gb), (0.4 / rf.num_trees(), rf)]
    b = compile_terms(0.1, terms, NAMES, [])
    assert supports(b)
    X = X_TRAIN
    want = 0.1 + 0.5 * _card_raw(card, X) + 0.6 * _booster_raw(gb, X, [])
    want += terms[2][0] * _booster_raw(rf, X, [])
    ours, theirs = TreeShap(b).shap_values(X), b.predict(X, pred_contrib=True)
    np.testing.assert_allclose(ours.sum(axis=1), want, atol=TOL)
    np.testing.assert_allclose(ours, theirs, atol=1e-9)


# --------------------------------------------------------------------------- text


def test_same_inputs_same_bytes(card, gbdt, forest):
    terms = [(0.4, card), (0.35, gbdt), (0.01, forest)]
    a = model_text(-0.3, terms, NAMES, CAT, X_TRAIN)
    again = Scorecard(min_iv=0.0).fit(X_TRAIN, Y_TRAIN, NAMES, WOE_CAT)
    b = model_text(-0.3, [(0.4, again), (0.35, gbdt), (0.01, forest)], NAMES, CAT, X_TRAIN)
    assert a == b
    assert a != model_text(-0.3, [(0.41, card), *terms[1:]], NAMES, CAT, X_TRAIN)


def test_round_trips(card, gbdt, forest, tmp_path):
    terms = [(0.4, card), (0.35, gbdt), (0.01, forest)]
    b = compile_terms(-0.3, terms, NAMES, CAT, X_ref=X_TRAIN)
    path = tmp_path / "model.txt"
    b.save_model(str(path))
    loaded = lgb.Booster(model_file=str(path))
    again = lgb.Booster(model_str=loaded.model_to_string())
    X = lgb_matrix(_edge_rows(card), NAMES, CAT)
    for other in (loaded, again):
        assert np.array_equal(other.predict(X, raw_score=True), b.predict(X, raw_score=True))
        np.testing.assert_allclose(
            other.predict(X, pred_contrib=True), b.predict(X, pred_contrib=True), atol=1e-12
        )
    assert loaded.model_to_string() == again.model_to_string()
    dump = b.dump_model()
    assert dump["feature_names"] == NAMES
    assert len(dump["tree_info"]) == b.num_trees()
    assert "average_output" not in dump or not dump["average_output"]


# --------------------------------------------------------------------------- bad input


def test_bad_terms_are_refused_with_the_reason(card, gbdt):
    with pytest.raises(ComposeError, match="feature names"):
        compile_terms(0.0, [(1.0, gbdt)], ["a", "b", "c", "d"], [])
    with pytest.raises(ComposeError, match="term 0 is a dict"):
        compile_terms(0.0, [(1.0, {})], NAMES, CAT)  # type: ignore[list-item]
    with pytest.raises(ComposeError, match="not fitted"):
        compile_terms(0.0, [(1.0, Scorecard())], NAMES, CAT)
    with pytest.raises(ComposeError, match="non-finite weight"):
        compile_terms(0.0, [(np.nan, card)], NAMES, CAT)
    with pytest.raises(ComposeError, match="'x1'.*categorical for LightGBM"):
        compile_terms(0.0, [(1.0, card)], NAMES, ["cat", "x1"])
    # two negative codes in a LightGBM-categorical column both read as NaN: refused
    # when the codes lie in different bins (no merging: one bin per code)
    two = Scorecard(min_iv=0.0, bin_pvalue=1.0, min_bin_share=0.0, max_features=4)
    two.fit(X_TRAIN, Y_TRAIN, NAMES, WOE_CAT)
    code = next(b for b in two.bins_ if b.feature == "code")
    assert code.bin_of_code(0) != code.bin_of_code(1)  # codes -2 and -1
    with pytest.raises(ComposeError, match="'code'.*read as missing"):
        compile_terms(0.0, [(1.0, two)], NAMES, ["cat", "code"])
