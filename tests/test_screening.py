"""Feature screening: information value, PSI across time and correlation drop rules."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import information_value

from pipeline.core.screening import screen


def _data(n: int = 6000, seed: int = 0):
    rng = np.random.default_rng(seed)
    strong = rng.normal(size=n)
    twin = strong + rng.normal(scale=0.25, size=n)  # nearly the same feature, noisier
    noise = rng.normal(size=n)
    cat = rng.integers(0, 3, n).astype(float)
    t = np.repeat(np.arange(6), n // 6)
    drifting = rng.normal(size=n) + (t >= 3) * 2.0  # shifts half-way through time
    logit = 1.5 * strong + 0.8 * (cat == 2) + 0.6 * drifting - 2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    X = np.column_stack([strong, twin, noise, cat, drifting])
    return X, y, ["strong", "twin", "noise", "cat", "drifting"], t


def test_rules_name_what_they_would_drop_and_why():
    X, y, names, t = _data()
    s = screen(X, y, names, ["cat"], time=t)
    drop = s.dropped
    assert set(drop) == {"twin", "noise", "drifting"}
    assert drop["noise"].startswith("information value")
    assert drop["drifting"].startswith("PSI across time")
    assert "with strong" in drop["twin"]
    assert s.kept == ["strong", "cat"]
    assert s.use == names  # reporting only
    assert screen(X, y, names, ["cat"], time=t, select=True).use == ["strong", "cat"]
    row = {f.name: f for f in s.features}
    assert row["strong"].corr_with == "twin" and row["strong"].corr > 0.9
    # the IV is close to the shared decile IV of the metrics module
    assert row["strong"].iv == pytest.approx(information_value(X[:, 0], y), rel=0.1)


def test_without_time_no_psi_and_thresholds_move_the_verdict():
    X, y, names, _ = _data()
    s = screen(X, y, names, ["cat"])
    assert all(f.psi is None for f in s.features)
    assert "drifting" not in s.dropped
    loose = screen(X, y, names, ["cat"], min_iv=0.0, max_corr=1.0)
    assert loose.dropped == {}


def test_never_drops_every_feature():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 2))
    y = rng.integers(0, 2, 500)
    s = screen(X, y, ["a", "b"], min_iv=10.0)
    assert len(s.kept) == 1


def test_constant_and_all_missing_columns_are_named_and_always_left_out():
    rng = np.random.default_rng(0)
    n = 600
    signal = rng.normal(size=n)
    y = (signal + rng.normal(size=n) > 0).astype(int)
    X = np.column_stack([signal, np.full(n, 5.0), np.full(n, np.nan), np.full(n, -1.0)])
    names = ["signal", "const", "blank", "code"]
    s = screen(X, y, names, categorical=["code"])
    drop = s.dropped
    assert drop["const"].startswith("constant: 5 in every training row")
    assert drop["blank"].startswith("all missing")
    assert drop["code"].startswith("all missing")  # only the missing code
    assert s.use == ["signal"]  # left out even without features.select
    assert screen(X[:, :1], y, ["signal"]).use == ["signal"]
