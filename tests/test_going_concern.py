"""The going-concern world: a steady book, splits whose labels never meet, drift in words."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.base.config import ConfigError, SimulatorConfig, validate
from pipeline.core import book as book_core
from pipeline.core import drift as drift_core
from pipeline.core.simulate import WorldSpec, simulate, world_size
from tests.helpers import TINY, run_world

# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "early", "late"),
    [
        # training 20 is labelled by months 21..23: validation 22 would see those months
        (
            [
                "features.snapshots=[12,14,16,18,20,22,24,28,30]",
                "features.valid_snapshots=[22,24]",
                "features.oot_snapshots=[28,30]",
            ],
            20,
            22,
        ),
        # validation 26 is labelled by 27..29: out-of-time 28 shares them
        (
            [
                "features.snapshots=[12,14,16,18,20,24,26,28,30,32]",
                "features.oot_snapshots=[28,30,32]",
            ],
            26,
            28,
        ),
        # a validation snapshot after an out-of-time one
        (["features.valid_snapshots=[30,32]", "features.oot_snapshots=[24,26]"], 32, 24),
    ],
)
def test_config_refuses_splits_that_share_label_months(make_cfg, overrides, early, late):
    cfg = make_cfg(*overrides, small=False)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    msg = str(err.value)
    assert "features.snapshots" in msg and "features.horizon=3" in msg
    assert f"snapshot {early}'s labels" in msg and f"snapshot {late}" in msg


def test_default_splits_are_apart(make_cfg):
    cfg = make_cfg(small=False)
    validate(cfg)
    f = cfg.features
    train = sorted(set(f.snapshots) - set(f.valid_snapshots) - set(f.oot_snapshots))
    assert max(train) + f.horizon < min(f.valid_snapshots)
    assert max(f.valid_snapshots) + f.horizon < min(f.oot_snapshots)


def test_regime_shift_preset_is_a_legal_cohort_world(make_cfg):
    cfg = make_cfg("experiment=regime_shift", small=False)
    validate(cfg)
    assert cfg.simulator.acquisition == "cohort"
    assert cfg.simulator.pilot_month < min(cfg.features.oot_snapshots) <= 32
    assert min(cfg.features.oot_snapshots) > cfg.simulator.tightening_month
    assert max(cfg.features.snapshots) < cfg.simulator.tightening_month or any(
        s < cfg.simulator.tightening_month for s in cfg.features.snapshots
    )


# --------------------------------------------------------------------------- world


def _spec(n: int = 1200, **sim: object) -> WorldSpec:
    c = OmegaConf.structured(SimulatorConfig)
    c.chunk_size, c.oracle_rows, c.oracle_futures = 400, 0, 1
    for k, v in sim.items():
        c[k] = v
    s = OmegaConf.to_object(c)
    return WorldSpec(n_borrowers=world_size(n, s, 36), n_months=36, seed=5, sim=s)


def test_world_size_maps_the_book_to_its_accounts():
    s = SimulatorConfig()
    assert world_size(20_000, s, 36) == round(20_000 * (1 + s.inflow_rate * (s.burn_in + 36)))
    assert world_size(20_000, SimulatorConfig(acquisition="cohort"), 36) == 20_000


def test_book_is_steady_and_its_burn_in_is_remembered():
    world = simulate(_spec())
    b = world["borrowers"].to_pandas()
    am = world["account_months"].to_pandas()
    # an opening book (signed up before month 0) and sign-ups in every recorded month
    assert (b.signup_month < 0).sum() > 0.3 * len(b)
    assert set(range(36)) <= set(b.signup_month[b.signup_month >= 0])
    # accounts closed in the burn-in have no recorded month, the others start at month 0
    closed = b.prior_closure > 0
    assert closed.sum() > 0 and not am.borrower_id.isin(b.borrower_id[closed]).any()
    assert am.groupby("borrower_id").month.min().le(35).all()
    # the book's size and tenure mix barely move from the first year to the last
    book = am.groupby("month").size()
    assert 0.8 < book.loc[30:35].mean() / book.loc[0:5].mean() < 1.2
    ten = am.merge(b[["borrower_id", "signup_month"]], on="borrower_id")
    ten["t"] = ten.month - ten.signup_month
    early, late = ten[ten.month.between(12, 20)].t, ten[ten.month.between(30, 32)].t
    assert abs(early.median() - late.median()) <= 3
    assert late.max() > 36  # long-tenure accounts exist, unlike in a 36-month cohort


def test_cohort_world_is_the_old_one():
    """acquisition=cohort draws sign-ups as the ageing-cohort world always did."""
    world = simulate(_spec(800, acquisition="cohort"))
    b = world["borrowers"].to_pandas()
    assert b.signup_month.between(0, 11).all() and len(b) == 800
    assert not b.prior_overdue.any() and (b.prior_closure == 0).all()


def test_book_over_time_counts():
    counts = np.array([[5, 0, 0, 0, 0], [3, 2, 0, 0, 0]])
    out = book_core.book_over_time(
        counts,
        signup_month=np.array([-3, 0, 0, 1]),
        closure_month=np.array([0, 1, 1]),
        closure_overdue=np.array([False, True, False]),
    )
    assert out.book.tolist() == [5, 5]
    assert out.inflow.tolist() == [2, 1]
    assert out.closures.tolist() == [1, 2]
    assert out.closures_never_overdue.tolist() == [1, 1]
    assert out["tenure 0-5"].tolist() == [1.0, 0.6]
    counter = book_core.TenureCounter(np.array([0, -10, -60]), 2)
    counter.add(np.array([0, 1, 2, 2]), np.array([0, 0, 1, 0]))
    assert counter.counts[0].tolist() == [1, 1, 0, 0, 1] and counter.counts[1].tolist() == [
        0,
        0,
        0,
        0,
        1,
    ]


# --------------------------------------------------------------------------- drift


def _stability(psi: dict[str, float], outside: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "feature": f,
                "family": "macro" if f == "regime" else "behaviour",
                "psi_train_oot": psi[f],
                "oot_outside_train_range": outside.get(f, 0.0),
            }
            for f in psi
        ]
    )


def test_drift_names_shifted_and_extrapolated_drivers():
    psi = {"tenure": 10.7, "regime": 9.0, "util": 0.01, "age": 0.3, "x": 0.02}
    importance = [("tenure", 1.0), ("util", 0.5), ("x", 0.4), ("regime", 0.3)]
    d = drift_core.drift_summary(
        _stability(psi, {"x": 0.06, "util": 0.05}),
        importance,
        score_psi=1.18,
        train_regimes=np.array([0, 1, 1]),
        oot_regimes=np.array([2, 2, 1]),
        train_borrowers=np.array([1, 2]),
        oot_borrowers=np.array([1, 3, 4, 2]),
    )
    assert d["extrapolated"] == ["tenure", "x", "regime"]  # util: exactly 5% is not more
    assert d["n_features_psi_over_0_25"] == 3
    assert [f["feature"] for f in d["features_psi_over_0_25"]] == ["tenure", "regime", "age"]
    assert d["unseen_regimes"] == [2]
    assert d["oot_rows_of_training_borrowers"] == 0.5
    text = "\n".join(d["warnings"])
    assert "score's PSI" in text and "1.18" in text
    assert "tenure (the model's #1 driver" in text and "6.0% of its out-of-time" in text
    assert "age (behaviour, PSI 0.30)" in text  # shifted, but not a top driver
    assert "67% of the out-of-time rows are under the full tightening" in text


def test_drift_is_quiet_when_nothing_moved():
    d = drift_core.drift_summary(
        _stability({"a": 0.01, "b": 0.09}, {}), [("a", 1.0), ("b", 0.1)], score_psi=0.02
    )
    assert d["warnings"] == [] and d["extrapolated"] == []
    assert d["n_features_psi_over_0_25"] == 0


# --------------------------------------------------------------------------- runs


def _train(root, overrides):
    for stage in ("generate", "features", "train"):
        _, summary = run_world(root, [*TINY, "tracking=off", *overrides], stage)
    return summary


@pytest.mark.slow
def test_default_run_reports_splits_and_drift(tmp_path, capsys):
    summary = _train(tmp_path, [])
    out = capsys.readouterr().out
    splits = summary["splits"]
    assert splits == {
        "train_snapshots": [12, 14, 16, 18, 20],
        "valid_snapshots": [24, 26],
        "oot_snapshots": [30, 32],
        "horizon": 3,
        "gap_ok": True,
    }
    d = summary["drift"]
    assert {"score_psi", "n_features_psi_over_0_25", "extrapolated"} <= set(d)
    assert d.get("unseen_regimes") == []
    assert "out-of-time is not out-of-borrower" in out
    for w in d["warnings"]:
        assert w in out  # every warning is printed
    ev = json.loads((tmp_path / "models" / "evaluation.json").read_text())
    assert set(ev["oot_by_snapshot"]) == {"30", "32"}


@pytest.mark.slow
def test_regime_shift_preset_says_it_measures_extrapolation(tmp_path, capsys):
    summary = _train(tmp_path, ["experiment=regime_shift"])
    out = capsys.readouterr().out
    d = summary["drift"]
    assert d["unseen_regimes"] == [2]
    assert "measure how the model extrapolates" in out
    assert summary["splits"]["gap_ok"] is True
