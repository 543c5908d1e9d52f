"""The compiled (QuickScorer) predictor gives LightGBM's own predictions, or steps aside."""

from __future__ import annotations

import warnings

import lightgbm as lgb
import numpy as np
import pytest

from pipeline.core import compiled


def _data(n: int = 4000, nan_share: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8))
    X[:, 3] = rng.integers(0, 5, size=n)  # a few repeated values: thresholds between them
    X[:, 5] = np.round(X[:, 5], 1)  # ties exactly at thresholds
    logit = X[:, 0] - 0.8 * X[:, 1] + 0.5 * (X[:, 3] > 2) + 0.3 * X[:, 5] * X[:, 2]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    if nan_share:
        X[rng.random(X.shape) < nan_share] = np.nan
    return X, y


def _fit(X: np.ndarray, y: np.ndarray, rounds: int = 60, **params: object) -> lgb.Booster:
    base = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.1, "verbose": -1, "seed": 1}
    return lgb.train({**base, **params}, lgb.Dataset(X, label=y), num_boost_round=rounds)


def _missing_types(booster: lgb.Booster) -> set[str]:
    found: set[str] = set()

    def walk(node: dict[str, object]) -> None:
        if "split_index" in node:
            found.add(str(node["missing_type"]))
            walk(node["left_child"])  # type: ignore[arg-type]
            walk(node["right_child"])  # type: ignore[arg-type]

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return found


def _check_equal(booster: lgb.Booster, X: np.ndarray, num_iteration: int | None = None) -> None:
    """The kernel itself (no fallback) gives LightGBM's numbers, and ``predict`` uses it."""
    model, why = compiled.compile_booster(booster, num_iteration)
    assert model is not None, why
    for raw in (True, False):
        want = np.asarray(booster.predict(X, raw_score=raw, num_iteration=num_iteration))
        got = compiled.predict_compiled(model, X, raw_score=raw)
        if raw:  # the same leaves summed in the same order: the same doubles
            np.testing.assert_array_equal(got, want)
        else:
            assert np.max(np.abs(got - want)) <= 1e-12
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a disagreement would warn and fall back
            via = compiled.predict(booster, X, num_iteration=num_iteration, raw_score=raw)
        np.testing.assert_array_equal(via, got)


def test_the_compiled_predictions_equal_lightgbms_for_float32_and_float64_rows() -> None:
    X, y = _data()
    booster = _fit(X, y)
    _check_equal(booster, X)
    _check_equal(booster, X.astype(np.float32))
    # exactly at each threshold: `x <= threshold` goes left in both
    model, _ = compiled.compile_booster(booster)
    assert model is not None
    at = np.tile(X[:1], (len(model.thresholds), 1))
    at[np.arange(len(at)), np.repeat(np.arange(model.n_features), np.diff(model.start))] = (
        model.thresholds
    )
    _check_equal(booster, at)


def test_trees_of_33_to_64_leaves_use_64_bit_words_and_stay_equal() -> None:
    X, y = _data(nan_share=0.05)
    small, big = _fit(X, y, rounds=10), _fit(X, y, rounds=10, num_leaves=50, min_data_in_leaf=5)
    m_small, _ = compiled.compile_booster(small)
    m_big, _ = compiled.compile_booster(big)
    assert m_small is not None and m_small.mask.dtype == np.uint32
    assert m_big is not None and m_big.mask.dtype == np.uint64
    assert max(t["num_leaves"] for t in big.dump_model()["tree_info"]) > 32
    _check_equal(big, X)


def test_missing_values_follow_lightgbms_rules_under_nan_and_none() -> None:
    X, y = _data(nan_share=0.15)
    with_nan = _fit(X, y)
    assert "NaN" in _missing_types(with_nan)
    _check_equal(with_nan, X)  # missing_type NaN: the default side
    Xn, yn = _data(seed=3)
    booster = _fit(Xn, yn, use_missing=False)  # missing_type None: a NaN compares as 0.0
    assert _missing_types(booster) == {"None"}
    Xq = Xn.copy()
    Xq[::7, :] = np.nan
    Xq[1::11, 2] = 1e-40  # within LightGBM's zero threshold: zero
    _check_equal(booster, Xq)


def test_the_best_iteration_is_used_as_booster_predict_uses_it() -> None:
    X, y = _data()
    dtrain = lgb.Dataset(X[:3000], label=y[:3000])
    dvalid = lgb.Dataset(X[3000:], label=y[3000:], reference=dtrain)
    booster = lgb.train(
        {"objective": "binary", "learning_rate": 0.3, "verbose": -1, "seed": 1},
        dtrain,
        num_boost_round=300,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(5, verbose=False)],
        keep_training_booster=True,  # keeps the trees after the best one
    )
    assert 0 < booster.best_iteration < booster.current_iteration()
    _check_equal(booster, X)
    _check_equal(booster, X, num_iteration=3)


def test_single_leaf_trees_and_a_regression_model() -> None:
    X, y = _data(n=300)
    # trees that cannot split (too few rows per leaf) are one leaf: a constant
    _check_equal(_fit(X, y, rounds=5, min_data_in_leaf=400), X)
    reg = lgb.train(
        {"objective": "regression", "verbose": -1, "seed": 1},
        lgb.Dataset(X, label=X[:, 0] * 2.0 + y),
        num_boost_round=30,
    )
    _check_equal(reg, X)


def test_a_multiclass_model_gives_lightgbms_softmax_and_raw_scores() -> None:
    """Trees take turns by class; each class's trees are summed in order and the softmax is
    LightGBM's: the same doubles, missing values included."""
    X, _ = _data(nan_share=0.05)
    y = (X[:, 0] > 0).astype(int) + (np.nan_to_num(X[:, 1]) > 1).astype(int)
    booster = _fit(
        X, y + (np.nan_to_num(X[:, 2]) > 1), rounds=30, objective="multiclass", num_class=4
    )
    model, why = compiled.compile_booster(booster)
    assert model is not None and model.n_classes == 4, why
    for raw in (True, False):
        got = compiled.predict_compiled(model, X, raw_score=raw)
        assert got.shape == (len(X), 4)
        np.testing.assert_array_equal(got, booster.predict(X, raw_score=raw))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(compiled.predict(booster, X), booster.predict(X))


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"num_leaves": 100, "min_data_in_leaf": 2}, "more than 64 leaves"),
        ({"objective": "multiclassova", "num_class": 3}, "several outputs"),
        ({"zero_as_missing": True}, "missing_type=Zero"),
        ({"objective": "regression", "reg_sqrt": True}, "reg_sqrt"),
    ],
)
def test_what_the_kernel_cannot_take_is_scored_by_lightgbm_and_named(
    params: dict[str, object], reason: str
) -> None:
    X, y = _data()
    if str(params.get("objective", "")).startswith("multiclass"):
        y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)
    X[:, 4] = np.where(X[:, 4] > 0.5, 0.0, X[:, 4])  # zeros to be missing under zero_as_missing
    booster = _fit(X, y, rounds=20, **params)
    model, why = compiled.compile_booster(booster)
    assert model is None and reason in why
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unsupported model is not a surprise: no warning
        got = compiled.predict(booster, X)
    np.testing.assert_array_equal(got, booster.predict(X))


def test_a_categorical_split_is_scored_by_lightgbm() -> None:
    X, y = _data()
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "seed": 1, "min_data_per_group": 5},
        lgb.Dataset(X, label=y, categorical_feature=[3]),
        num_boost_round=20,
    )
    model, why = compiled.compile_booster(booster)
    assert model is None and why == "categorical splits"
    np.testing.assert_array_equal(compiled.predict(booster, X), booster.predict(X))


def test_a_compiled_form_that_disagrees_is_dropped_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    X, y = _data()
    booster = _fit(X, y, rounds=10)
    real = compiled.predict_compiled
    monkeypatch.setattr(
        compiled, "predict_compiled", lambda m, X, raw_score=False: real(m, X, raw_score) + 1e-6
    )
    with pytest.warns(UserWarning, match="differs from LightGBM"):
        got = compiled.predict(booster, X)
    np.testing.assert_array_equal(got, booster.predict(X))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # dropped for good, and said once
        np.testing.assert_array_equal(compiled.predict(booster, X), booster.predict(X))


def test_rows_of_the_wrong_width_are_refused() -> None:
    X, y = _data(n=500)
    model, _ = compiled.compile_booster(_fit(X, y, rounds=3))
    assert model is not None
    with pytest.raises(ValueError, match="takes 8 features per row"):
        compiled.predict_compiled(model, X[:, :5])
