"""The simulator's two oracles (full state; traits known, the platform's individual
judgement and a stop's remaining length redrawn) and their cause shares."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from pipeline.base.causes import CAUSES, OVERDUE
from pipeline.base.config import SimulatorConfig
from pipeline.core.simulate import TRUTH_SCHEMAS, WorldSpec, simulate


def spec(n: int, futures: int, seed: int = 1, rows: int = 10**6) -> WorldSpec:
    cfg = OmegaConf.structured(SimulatorConfig)
    cfg.chunk_size = 1024
    cfg.oracle_rows = rows  # large: every eligible account at each snapshot
    cfg.oracle_futures = futures
    return WorldSpec(
        n_borrowers=n,
        n_months=36,
        seed=seed,
        sim=OmegaConf.to_object(cfg),
        oracle_snapshots=(24, 27, 30),
        horizon=3,
    )


def labelled(world: dict) -> pd.DataFrame:
    """Oracle rows with the world's own label: a non-overdue closure in (s, s + 3]."""
    o = world["oracle"].to_pandas()
    ev = world["platform_events"].to_pandas()
    closures = ev[ev.event == "closure"][["borrower_id", "month", "cause"]]
    m = o.merge(closures, on="borrower_id", how="left")
    m["y"] = (m.month > m.snapshot) & (m.month <= m.snapshot + 3) & (m.cause != OVERDUE)
    assert len(m) == len(o)
    return m


@pytest.fixture(scope="module")
def oracle() -> pd.DataFrame:
    return labelled(simulate(spec(6000, 32)))


def test_schema_has_both_oracles_and_cause_shares():
    names = TRUTH_SCHEMAS["oracle"].names
    for col in ("p_oracle", "p_full", "p_observable", "n_futures", "ess_observable"):
        assert col in names
    for c in CAUSES:
        assert f"f_{c}" in names and f"fo_{c}" in names


def test_observable_oracle_is_a_probability_that_differs_from_the_full_one(oracle):
    assert oracle.p_observable.between(0, 1).all()
    assert (oracle.p_full == oracle.p_oracle).all()
    assert (oracle.p_full != oracle.p_observable).mean() > 0.3
    # redrawing what is unobservable pulls probabilities towards each other
    assert oracle.p_observable.var() < 0.95 * oracle.p_full.var()
    # the futures are reweighted, not thrown away: the effective count stays in (1, k]
    assert oracle.ess_observable.between(1.0, 32.0 + 1e-3).all()
    assert oracle.ess_observable.median() > 16


def test_each_oracle_is_also_recorded_from_each_half_of_its_futures(oracle):
    for name in ("p_full", "p_observable"):
        h1, h2 = oracle[f"{name}_h1"], oracle[f"{name}_h2"]
        assert h1.between(0, 1).all() and h2.between(0, 1).all()
        assert (h1 != h2).mean() > 0.1  # the halves are different futures
    # the full-state futures are unweighted: all of them is the mean of the two halves
    np.testing.assert_allclose((oracle.p_full_h1 + oracle.p_full_h2) / 2, oracle.p_full, atol=1e-6)
    # the trait oracle's halves are weighted: all of them lies between the two
    lo = np.minimum(oracle.p_observable_h1, oracle.p_observable_h2) - 1e-6
    hi = np.maximum(oracle.p_observable_h1, oracle.p_observable_h2) + 1e-6
    assert oracle.p_observable.between(lo, hi).all()


@pytest.fixture(scope="module")
def both_estimators() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same world's oracle rows read from 128 futures both ways."""
    s = spec(3000, 128, seed=3, rows=1500)
    count = dataclasses.replace(s, sim=dataclasses.replace(s.sim, oracle_estimator="count"))
    return simulate(s)["oracle"].to_pandas(), simulate(count)["oracle"].to_pandas()


def test_expected_hazards_estimate_what_counting_closing_futures_estimates(both_estimators):
    hazard, count = both_estimators
    assert len(hazard) > 500 and (hazard.borrower_id == count.borrower_id).all()
    for name in ("p_full", "p_observable", *(f"f_{c}" for c in CAUSES)):
        d = hazard[name].to_numpy(float) - count[name].to_numpy(float)
        se = d.std() / np.sqrt(len(d))
        assert abs(d.mean()) < 4 * se + 1e-4, (name, d.mean(), se)  # no bias we can see
    assert np.corrcoef(hazard.p_full, count.p_full)[0, 1] > 0.95


def test_expected_hazards_have_less_monte_carlo_noise_than_counting(both_estimators):
    hazard, count = both_estimators
    for name in ("p_full", "p_observable"):
        noise = {
            how: float(np.var(o[f"{name}_h1"] - o[f"{name}_h2"]))
            for how, o in (("hazard", hazard), ("count", count))
        }
        assert noise["hazard"] < noise["count"] / 3, (name, noise)
    # the probabilities stay probabilities, and an event-free future still counts
    assert hazard.p_full.between(0, 1).all() and (hazard.p_full > 0).mean() > 0.99


def test_one_future_records_no_halves():
    o = simulate(spec(400, 1, rows=100))["oracle"].to_pandas()
    assert len(o) > 10
    assert o.p_full_h1.isna().all() and o.p_observable_h2.isna().all()


def test_full_oracle_ranks_the_worlds_labels_better(oracle):
    y = oracle.y.to_numpy()
    assert 400 < y.sum() < len(y) / 2  # enough closures to rank (494 in this world)
    full = roc_auc_score(y, oracle.p_full)
    observable = roc_auc_score(y, oracle.p_observable)
    # seeded check; at this size the gap is about four of its standard errors
    assert full > observable, (full, observable)
    assert observable > 0.7


def test_cause_shares_sum_to_the_closure_probability(oracle):
    f = oracle[[f"f_{c}" for c in CAUSES]].to_numpy(dtype=float)
    fo = oracle[[f"fo_{c}" for c in CAUSES]].to_numpy(dtype=float)
    assert (f >= 0).all() and (fo >= 0).all()
    np.testing.assert_allclose(f.sum(axis=1), oracle.p_full, atol=1e-5)
    np.testing.assert_allclose(fo.sum(axis=1), oracle.p_observable, atol=1e-5)


def test_most_frequent_cause_in_futures_names_the_realised_cause(oracle):
    """The cause ceiling: far above naming the commonest cause for every closure."""
    closed = oracle[oracle.y]
    f = closed[[f"f_{c}" for c in CAUSES]].to_numpy()
    top1 = np.array(CAUSES)[f.argmax(axis=1)] == closed.cause.to_numpy()
    commonest = closed.cause.value_counts(normalize=True).iloc[0]
    assert top1.mean() > commonest + 0.2, (top1.mean(), commonest)
    top3 = np.argsort(-f, axis=1)[:, :3] == closed.cause.map(CAUSES.index).to_numpy()[:, None]
    assert top3.any(axis=1).mean() > top1.mean()


def test_same_seed_same_oracle_other_seed_differs():
    a = simulate(spec(800, 8, seed=4, rows=300))["oracle"]
    b = simulate(spec(800, 8, seed=4, rows=300))["oracle"]
    c = simulate(spec(800, 8, seed=5, rows=300))["oracle"]
    assert a.num_rows > 100
    assert a.equals(b)
    assert not a.equals(c)


def test_a_chunk_reports_the_seconds_of_its_oracle_beside_its_whole_simulation():
    from pipeline.core.simulate import oracle_seconds, simulate_chunk

    s = spec(400, 8, rows=100)
    tables = simulate_chunk(s, 0)
    oracle_s, chunk_s = oracle_seconds(tables["oracle"])
    assert tables["oracle"].num_rows > 0
    assert 0 < oracle_s < chunk_s
    # a table without the record reads as zero; the time never reaches the files
    assert oracle_seconds(tables["oracle"].replace_schema_metadata(None)) == (0.0, 0.0)
