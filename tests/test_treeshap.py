"""pipeline.core.treeshap.TreeShap must equal LightGBM's pred_contrib (exact TreeSHAP)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from pipeline.core.treeshap import TreeShap, supports, unsupported_reason

TOL = 1e-4


def _data(n=2000, p=8, seed=0, nan_frac=0.1, zero_frac=0.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    if zero_frac:
        X[rng.random(X.shape) < zero_frac] = 0.0
    Xf = X.copy()
    if nan_frac:
        X[rng.random(X.shape) < nan_frac] = np.nan
    logit = (
        1.5 * Xf[:, 0]
        - Xf[:, 1] * Xf[:, 2]
        + np.sin(2 * Xf[:, 3])
        + 0.8 * np.isnan(X[:, 4])
        + (Xf[:, 5] == 0) * 1.2
    )
    y = (logit + rng.logistic(size=n) > 0).astype(int)
    return X, y


def _train(X, y, rounds=30, **params):
    base = dict(objective="binary", verbose=-1, num_threads=1, learning_rate=0.1, seed=1)
    base.update(params)
    return lgb.train(base, lgb.Dataset(X, y), rounds)


def _check(booster, X, ts=None, **kw):
    ts = ts or TreeShap(booster, **kw)
    phi = ts.shap_values(X)
    ref = booster.predict(X, pred_contrib=True)
    raw = booster.predict(X, raw_score=True)
    assert phi.shape == ref.shape == (X.shape[0], booster.num_feature() + 1)
    assert phi.dtype == np.float64
    assert np.abs(phi - ref).max() < TOL
    np.testing.assert_allclose(phi.sum(axis=1), raw, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(phi[:, -1], ts.expected_value)
    return phi


@pytest.mark.parametrize(
    "params",
    [
        dict(num_leaves=31),
        dict(num_leaves=7, max_depth=3),
        dict(num_leaves=63, min_data_in_leaf=5),
        dict(num_leaves=15, max_depth=12, min_data_in_leaf=2, bagging_fraction=0.7, bagging_freq=1),
        dict(num_leaves=31, use_missing=False),
    ],
)
def test_matches_pred_contrib_with_nans(params):
    X, y = _data()
    b = _train(X, y, **params)
    Xt, _ = _data(n=800, seed=7)
    _check(b, Xt)
    # the per-row O(d^2) path (no tables) must give the same answer
    _check(b, Xt, max_table_depth=0)
    _check(b, Xt, max_table_depth=4)
    _check(b, Xt, max_table_bytes=0)


def test_zero_as_missing():
    X, y = _data(zero_frac=0.3, nan_frac=0.1, seed=3)
    b = _train(X, y, num_leaves=31, zero_as_missing=True)
    dump = b.dump_model()
    mts = set()
    stack = [t["tree_structure"] for t in dump["tree_info"]]
    while stack:
        nd = stack.pop()
        if "split_index" in nd:
            mts.add(nd["missing_type"])
            stack += [nd["left_child"], nd["right_child"]]
    assert "Zero" in mts
    Xt, _ = _data(n=600, zero_frac=0.3, nan_frac=0.1, seed=4)
    Xt[:5, :] = 1e-40  # below LightGBM's kZeroThreshold: treated as zero
    Xt[5:10, :] = -1e-36
    _check(b, Xt)
    _check(b, Xt, max_table_depth=0)


def test_nan_on_model_trained_without_nans_and_inf():
    X, y = _data(nan_frac=0.0, seed=5)
    b = _train(X, y, num_leaves=15)
    Xt, _ = _data(n=500, nan_frac=0.2, seed=6)
    Xt[:20, 0] = np.inf
    Xt[20:40, 1] = -np.inf
    Xt[40:60, :] = 0.0
    _check(b, Xt)


def test_float32_and_dataframe_and_threads():
    X, y = _data(seed=8)
    b = _train(X.astype(np.float32), y, num_leaves=31)
    Xt = _data(n=700, seed=9)[0].astype(np.float32)
    ts = TreeShap(b)
    phi = _check(b, Xt, ts=ts)
    phi1 = ts.shap_values(Xt, n_threads=1)
    np.testing.assert_allclose(phi1, phi, rtol=0, atol=1e-12)
    df = pd.DataFrame(Xt, columns=[f"f{i}" for i in range(Xt.shape[1])])
    np.testing.assert_allclose(ts.shap_values(df), phi, rtol=0, atol=1e-12)
    assert ts.shap_values(Xt[:0]).shape == (0, Xt.shape[1] + 1)
    np.testing.assert_allclose(ts.shap_values(Xt[3]), phi[3:4], rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        ts.shap_values(Xt[:, :-1])


def test_constant_trees():
    X, y = _data(seed=10)
    # no split can satisfy min_data_in_leaf: a single-leaf (constant) tree
    const = _train(X, y, rounds=5, min_data_in_leaf=len(X))
    assert all("split_index" not in t["tree_structure"] for t in const.dump_model()["tree_info"])
    phi = _check(const, X[:200])
    assert np.all(phi[:, :-1] == 0.0)
    # constant tree followed by ordinary ones
    mixed = lgb.train(
        dict(objective="binary", verbose=-1, num_leaves=15, num_threads=1),
        lgb.Dataset(X, y),
        20,
        init_model=const,
    )
    infos = mixed.dump_model()["tree_info"]
    assert "split_index" not in infos[0]["tree_structure"]
    assert "split_index" in infos[-1]["tree_structure"]
    _check(mixed, X[:300])


def test_early_stopping_uses_best_iteration():
    X, y = _data(n=2000, seed=11)
    Xv, yv = _data(n=1000, seed=12)
    b = lgb.train(
        dict(objective="binary", verbose=-1, num_leaves=31, learning_rate=0.3, num_threads=1),
        lgb.Dataset(X, y),
        200,
        valid_sets=[lgb.Dataset(Xv, yv)],
        callbacks=[lgb.early_stopping(5, verbose=False)],
        keep_training_booster=True,  # keep the trees after best_iteration
    )
    assert 0 < b.best_iteration < b.current_iteration()
    ts = TreeShap(b)
    _check(b, Xv[:300], ts=ts)
    # explicit num_iteration
    ts3 = TreeShap(b, num_iteration=3)
    phi3 = ts3.shap_values(Xv[:300])
    ref3 = b.predict(Xv[:300], pred_contrib=True, num_iteration=3)
    assert np.abs(phi3 - ref3).max() < TOL


def test_regression_objective():
    X, y = _data(seed=13)
    b = _train(X, y + 0.1 * np.nan_to_num(X[:, 0]), objective="regression", num_leaves=31)
    _check(b, X[:400])


def test_unsupported_models():
    X, y = _data(seed=14, nan_frac=0.0)
    Xc = X.copy()
    Xc[:, 2] = np.random.default_rng(0).integers(0, 12, len(X))
    yc = ((Xc[:, 2] % 3 == 0) ^ (X[:, 0] > 0)).astype(int)
    cat = lgb.train(
        dict(objective="binary", verbose=-1, num_leaves=15, num_threads=1, min_data_per_group=5),
        lgb.Dataset(Xc, yc, categorical_feature=[2]),
        10,
    )
    assert supports(cat) is False
    assert "categorical" in unsupported_reason(cat)
    with pytest.raises(ValueError, match="categorical"):
        TreeShap(cat)

    multi = lgb.train(
        dict(objective="multiclass", num_class=3, verbose=-1, num_threads=1),
        lgb.Dataset(X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)),
        3,
    )
    assert supports(multi) is False

    linear = _train(X, y, rounds=3, linear_tree=True, num_leaves=4)
    assert supports(linear) is False

    plain = _train(X, y, rounds=3)
    assert supports(plain) is True


# ---- independent oracle: brute-force Shapley values of the path-dependent game ----------


class _FakeBooster:
    """Just enough of lightgbm.Booster for TreeShap: a hand-made dump_model()."""

    best_iteration = 0
    params: dict = {}

    def __init__(self, trees, p):
        self._dump = dict(
            num_class=1,
            num_tree_per_iteration=1,
            max_feature_idx=p - 1,
            average_output=False,
            tree_info=[
                dict(tree_index=i, num_leaves=nl, num_cat=0, tree_structure=t)
                for i, (t, nl) in enumerate(trees)
            ],
        )

    def dump_model(self, num_iteration=None):
        return self._dump


def _random_tree(rng, p, max_depth):
    counter = {"split": 0, "leaf": 0}

    def grow(count, depth):
        if depth == max_depth or count < 2 or rng.random() < 0.15:
            k = counter["leaf"]
            counter["leaf"] += 1
            return dict(leaf_index=k, leaf_value=float(rng.normal()), leaf_count=int(count))
        k = counter["split"]
        counter["split"] += 1
        # occasionally an empty child (zero cover ratio)
        left = 0 if rng.random() < 0.08 else int(rng.integers(1, count))
        node = dict(
            split_index=k,
            split_feature=int(rng.integers(0, p)),
            threshold=float(rng.choice([rng.normal(), 1.0000000180025095e-35, 0.0])),
            decision_type="<=",
            default_left=bool(rng.random() < 0.5),
            missing_type=str(rng.choice(["None", "Zero", "NaN"])),
            internal_count=int(count),
        )
        node["left_child"] = grow(left, depth + 1)
        node["right_child"] = grow(count - left, depth + 1)
        return node

    root = grow(int(rng.integers(50, 500)), 0)
    # LightGBM numbers splits so that a parent precedes its children (split order)
    return root, counter["leaf"]


def _goes_left(node, x):
    mt = node["missing_type"]
    if np.isnan(x) and mt != "NaN":
        x = 0.0
    if (mt == "Zero" and -1e-35 < x <= 1e-35) or (mt == "NaN" and np.isnan(x)):
        return node["default_left"]
    return x <= node["threshold"]


def _cond_exp(node, x, S):
    """E[f(x) | x_S] under the path-dependent (cover-weighted) distribution."""
    if "leaf_index" in node:
        return node["leaf_value"]
    if node["split_feature"] in S:
        return _cond_exp(
            node["left_child" if _goes_left(node, x[node["split_feature"]]) else "right_child"],
            x,
            S,
        )
    tot = node["internal_count"]
    out = 0.0
    for side in ("left_child", "right_child"):
        ch = node[side]
        c = ch.get("internal_count", ch.get("leaf_count"))
        if c:
            out += c / tot * _cond_exp(ch, x, S)
    return out


def _brute_shap(trees, x, p):
    from itertools import combinations
    from math import factorial

    def v(S):
        return sum(_cond_exp(t, x, S) for t, _ in trees)

    phi = np.zeros(p + 1)
    for i in range(p):
        others = [j for j in range(p) if j != i]
        for k in range(p):
            w = factorial(k) * factorial(p - k - 1) / factorial(p)
            for S in combinations(others, k):
                S = set(S)
                phi[i] += w * (v(S | {i}) - v(S))
    phi[p] = v(set())
    return phi


def test_against_brute_force_shapley_on_synthetic_trees():
    rng = np.random.default_rng(123)
    p = 6
    trees = [_random_tree(rng, p, max_depth=int(rng.integers(1, 9))) for _ in range(6)]
    # renumber split_index by BFS order so parents precede children, like LightGBM
    for root, _ in trees:
        queue, k = [root], 0
        while queue:
            nd = queue.pop(0)
            if "split_index" in nd:
                nd["split_index"] = k
                k += 1
                queue += [nd["left_child"], nd["right_child"]]
    fake = _FakeBooster(trees, p)
    X = rng.normal(size=(12, p))
    X[rng.random(X.shape) < 0.2] = np.nan
    X[rng.random(X.shape) < 0.2] = 0.0
    ref = np.array([_brute_shap(trees, x, p) for x in X])
    for kw in (dict(), dict(max_table_depth=0), dict(max_table_depth=2)):
        phi = TreeShap(fake, **kw).shap_values(X)
        assert np.abs(phi - ref).max() < 1e-10, kw
