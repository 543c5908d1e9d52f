from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.adapters.tracking import Tracker
from pipeline.base.causes import ALL_CAUSES, OVERDUE
from pipeline.base.config import SimulatorConfig
from pipeline.base.io import file_digest
from pipeline.core.simulate import (
    RAW_TABLES,
    SCHEMAS,
    TRUTH_TABLES,
    WorldSpec,
    iter_chunks,
    simulate,
)
from pipeline.stages.generate import generate

OFF = Tracker("", "", "", enabled=False)


def spec(n=1500, seed=3, chunk=256, **sim):
    cfg = OmegaConf.structured(SimulatorConfig)
    cfg.chunk_size = chunk
    cfg.oracle_rows = 200
    cfg.oracle_futures = 8
    for k, v in sim.items():
        cfg[k] = v
    return WorldSpec(
        n_borrowers=n,
        n_months=36,
        seed=seed,
        sim=OmegaConf.to_object(cfg),
        oracle_snapshots=(26, 30),
        horizon=3,
    )


def test_tables_follow_their_schemas():
    world = simulate(spec(600))
    for name in RAW_TABLES:
        assert world[name].schema.equals(SCHEMAS[name]), name
    for name in TRUTH_TABLES:
        assert name in world
    am = world["account_months"].to_pandas()
    assert not am.duplicated(["borrower_id", "month"]).any()
    assert (am[["line", "balance", "draw_amount", "repayment", "interest_paid"]] >= 0).all().all()
    b = world["borrowers"].to_pandas()
    assert (am.merge(b, on="borrower_id").eval("month >= signup_month")).all()


def test_same_seed_same_world_and_other_seed_differs():
    a = simulate(spec(700, seed=11))
    b = simulate(spec(700, seed=11))
    c = simulate(spec(700, seed=12))
    for name in RAW_TABLES + TRUTH_TABLES:
        assert a[name].equals(b[name]), name
    assert not a["account_months"].equals(c["account_months"])


def test_worker_processes_do_not_change_the_world():
    s = spec(900, chunk=256)
    serial = [t for _, t in iter_chunks(s, n_jobs=1)]
    parallel = [t for _, t in iter_chunks(s, n_jobs=2, block_size=512)]
    assert len(serial) == len(parallel) == s.n_chunks
    for x, y in zip(serial, parallel, strict=True):
        for name in x:
            assert x[name].equals(y[name]), name


def test_block_size_and_jobs_give_identical_files(make_cfg, tmp_path):
    digests = []
    for i, extra in enumerate((["data.block_size=512"], ["data.block_size=2048", "data.n_jobs=2"])):
        cfg = make_cfg("data.n_borrowers=1200", *extra, root=tmp_path / f"w{i}")
        generate(cfg, OFF)
        raw = tmp_path / f"w{i}" / "data" / "raw"
        truth = tmp_path / f"w{i}" / "data" / "truth"
        digests.append(
            {p.name: file_digest(p) for d in (raw, truth) for p in sorted(d.glob("*.parquet"))}
        )
    assert digests[0] == digests[1]
    assert len(digests[0]) == len(RAW_TABLES) + len(TRUTH_TABLES)


@pytest.fixture(scope="module")
def world():
    return simulate(spec(6000, seed=5, chunk=1024))


def test_every_cause_occurs_and_overdue_is_a_minority(world):
    ev = world["platform_events"].to_pandas()
    closures = ev[ev.event == "closure"]
    counts = closures.cause.value_counts()
    for cause in ALL_CAUSES:
        assert counts.get(cause, 0) > 0, cause
    assert counts[OVERDUE] / counts.sum() < 0.2
    # a closed account has no rows after its closure month
    am = world["account_months"].to_pandas()
    last = am.groupby("borrower_id").month.max()
    closed_at = closures.set_index("borrower_id").month
    assert (last.loc[closed_at.index] == closed_at).all()


def test_closures_rise_after_tightening():
    # the default tightening happens in the burn-in: move it into the recorded months
    world = simulate(spec(3000, pilot_month=17, tightening_month=27))
    ev = world["platform_events"].to_pandas()
    am = world["account_months"].to_pandas()
    t, pilot = 27, 17
    pol = ev[(ev.event == "closure") & (ev.cause == "policy_tightening")]
    assert (pol.month >= pilot).all()
    per_month = (
        pol.groupby("month").size().reindex(range(36), fill_value=0) / am.groupby("month").size()
    )
    # the full tightening's first half-year closes far more for policy than the pilot's last
    assert per_month.loc[t : t + 5].mean() > 1.25 * per_month.loc[t - 6 : t - 1].mean()
    # and the full regime more than the pilot phase as a whole
    assert per_month.loc[t:].mean() > per_month.loc[pilot : t - 1].mean()


def test_traced_borrowers_close_more_often(world):
    """Thin-file, sudden-stop and fund-misuse borrowers close more often than others."""
    traits = world["traits"].to_pandas()
    ev = world["platform_events"].to_pandas()
    closed = set(ev[(ev.event == "closure") & (ev.cause != OVERDUE)].borrower_id)
    traits["closed"] = traits.borrower_id.isin(closed)
    base = traits.closed.mean()
    assert traits[traits.invest > traits.invest.quantile(0.9)].closed.mean() > base
    assert traits[traits.ext_engagement < traits.ext_engagement.quantile(0.1)].closed.mean() > base
    assert traits[traits.stop_prone > traits.stop_prone.quantile(0.9)].closed.mean() > base


def test_oracle_probabilities_exist_for_oot_rows(world):
    o = world["oracle"].to_pandas()
    assert set(o.snapshot) == {26, 30}
    assert o.p_oracle.between(0, 1).all() and (o.n_futures == 8).all()
    assert o.p_oracle.std() > 0


def test_social_edges_are_homophilous(world):
    e = world["social_edges"].to_pandas()
    traits = world["traits"].to_pandas().set_index("borrower_id")
    assert (e.src != e.dst).all()
    same = (traits.community.loc[e.src].to_numpy() == traits.community.loc[e.dst].to_numpy()).mean()
    assert same > 0.5
    f_src = traits.frailty.loc[e.src].to_numpy()
    f_dst = traits.frailty.loc[e.dst].to_numpy()
    assert np.corrcoef(f_src, f_dst)[0, 1] > 0.05


def test_default_world_is_settled_in_its_recorded_months():
    """The default tightening and the competitors' spread happen in the burn-in."""
    m = simulate(spec(300))["macro_months"].to_pandas()
    assert m.month.tolist() == list(range(36))
    assert set(m.regime) == {2}
    assert m.competitor_intensity.min() > 0.9


def test_macro_regime_table():
    t, pilot = 27, 17
    world = simulate(spec(300, pilot_month=pilot, tightening_month=t, competitor_midpoint=18.0))
    m = world["macro_months"].to_pandas()
    assert m.month.tolist() == list(range(36))  # one row per month, in order
    assert (m.regime == (m.month >= pilot).astype(int) + (m.month >= t).astype(int)).all()
    assert set(m.regime) == {0, 1, 2}
    # competitors spread every month: strictly rising, from a minority to a majority
    assert (m.competitor_intensity.diff().iloc[1:] > 0).all()
    assert m.competitor_intensity.iloc[0] < 0.5 < m.competitor_intensity.iloc[-1]


def _preset_world(make_cfg, *overrides: str) -> tuple[object, pd.DataFrame]:
    from pipeline.base.config import validate
    from pipeline.stages.generate import world_spec

    cfg = make_cfg(*overrides, "data.n_borrowers=3000", "simulator.chunk_size=1000")
    validate(cfg)
    return cfg, simulate(world_spec(cfg))["platform_events"].to_pandas()


def _policy_closures(ev: pd.DataFrame, lo: int, hi: int) -> int:
    """Closures for tightening in months ``lo <= month < hi``."""
    hit = (ev.event == "closure") & (ev.cause == "policy_tightening")
    return int((hit & ev.month.between(lo, hi - 1)).sum())


@pytest.mark.parametrize("preset", ["tightening", "competition_heavy"])
def test_scenario_presets_compose_and_shape_the_world(make_cfg, preset):
    cfg, ev = _preset_world(make_cfg, f"experiment={preset}")
    _, default_ev = _preset_world(make_cfg)
    closures = ev[ev.event == "closure"]
    policy = closures[closures.cause == "policy_tightening"]
    assert len(policy) > 0
    assert policy.month.min() >= cfg.simulator.pilot_month
    if preset == "tightening":
        # twice as hard, from the same month: more policy closures in the recorded months
        # (fewer than twice as many: the segments it targets were thinned in the burn-in)
        assert _policy_closures(ev, 0, 36) > 1.1 * _policy_closures(default_ev, 0, 36)
    if preset == "competition_heavy":
        lost = lambda e: e[(e.event == "closure") & (e.cause == "low_activity_competition")]  # noqa: E731
        midpoint = cfg.simulator.competitor_midpoint
        # competitors spread during the recorded months: closures for it follow their rise,
        # where the default world's settled market closes as many early as late
        before = lambda e: (lost(e).month < midpoint).sum() / midpoint  # noqa: E731
        after = lambda e: (lost(e).month >= midpoint).sum() / (36 - midpoint)  # noqa: E731
        assert after(ev) > 3 * before(ev)
        assert 0.7 < after(default_ev) / before(default_ev) < 1.4
