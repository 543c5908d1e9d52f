"""Futures stepped together (variants of the same rows, chunks replayed together, months
not recorded) give, bit for bit, the futures stepped one by one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline.base.config import SimulatorConfig
from pipeline.core import simulate as sim
from pipeline.core.simulate import Intervention, WorldSpec, futures_arms

K = 8


def spec(n: int = 2500, seed: int = 5) -> WorldSpec:
    cfg = OmegaConf.structured(SimulatorConfig)
    cfg.chunk_size = 1024
    cfg.oracle_rows = 600
    cfg.oracle_futures = K
    return WorldSpec(
        n_borrowers=n,
        n_months=36,
        seed=seed,
        sim=OmegaConf.to_object(cfg),
        oracle_snapshots=(28,),
        horizon=3,
    )


@pytest.fixture(scope="module")
def replayed() -> tuple[WorldSpec, sim._State, np.ndarray, int]:
    """Chunk 0 replayed to month 28, and 60 of its accounts on book then."""
    s = spec()
    st, streams, _ = sim._start_chunks(s, [0])
    t = 28
    for m in range(t + 1):
        sim._step(s, st, m, streams, record=False)
    on = np.flatnonzero(st.open & (st.signup <= t) & ~st.ever_overdue)
    return s, st, on[:: max(1, len(on) // 60)][:60], t


def same(a: sim.Futures, b: sim.Futures) -> None:
    for name in (*sim._PER_FUTURE, "cause_p"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        np.testing.assert_array_equal(x, y, err_msg=name)


def state_copy(st: sim._State) -> sim._State:
    return sim._State(**{f.name: getattr(st, f.name).copy() for f in dataclasses.fields(st)})


def test_variants_stepped_together_are_the_variants_stepped_alone(replayed):
    s, st, rows, t = replayed
    n = len(rows)
    each = [Intervention(("keep_drawing",)) if i % 2 else Intervention() for i in range(n)]
    variants = [
        sim._Variant(),
        sim._Variant(observable=True),
        sim._Variant(sim._ArmRows.of(Intervention(("stop_competitors", "moderate_use")), n)),
        sim._Variant(sim._ArmRows.of(each, n), trace=2),
    ]
    together = sim._run_variants(s, state_copy(st), rows, t, K, 0, variants)
    for v, got in zip(variants, together, strict=True):
        alone = sim._run_variants(s, state_copy(st), rows, t, K, 0, [v])[0]
        same(got, alone)
        if v.trace:
            assert got.traces is not None and alone.traces is not None
            for name, table in alone.traces.items():
                assert got.traces[name].equals(table), name


def test_the_oracles_shared_paths_are_its_variants_stepped_alone(replayed):
    s, st, rows, t = replayed
    full, obs = sim._run_variants(
        s, state_copy(st), rows, t, K, 0, [sim._Variant(), sim._Variant(observable=True)], True
    )
    same(full, sim._run_variants(s, state_copy(st), rows, t, K, 0, [sim._Variant()], True)[0])
    alone = sim._run_variants(
        s, state_copy(st), rows, t, K, 0, [sim._Variant(observable=True)], True
    )
    same(obs, alone[0])
    assert not np.array_equal(full.closed, obs.closed)  # the redraw does change the chances


def test_only_rows_whose_redraw_changed_more_than_the_frailty_are_stepped_again(replayed):
    s, st, rows, _ = replayed
    fut = st.take(np.tile(rows, 2))
    nk = len(rows)
    fut.frailty[nk:] += 0.5  # every later row: another frailty
    fut.stopped_left[nk + 3] = fut.stopped_left[3] + 2  # one of them: another stop length
    state, source, place, alias = sim._shared_paths(fut, nk, 2)
    assert len(state.bid) == nk + 1 and source.tolist() == [*range(nk), 3]
    assert place[1][3] == nk  # the one stepped again
    assert len(alias[0]) == nk - 1 and 3 not in alias[0].tolist()
    np.testing.assert_array_equal(alias[1], fut.frailty[nk:][alias[0]])


def test_expected_hazard_futures_leave_the_money_untallied(replayed):
    s, st, rows, t = replayed
    f = sim._run_futures(s, state_copy(st), rows, t, K, 0, expected=True)
    assert not f.draw_amount.any() and not f.interest.any() and not f.channel_amount.any()
    assert (f.cause == -1).all() and f.closed.max() > 0


@pytest.mark.parametrize("crn", [False, True])
def test_a_month_not_recorded_makes_the_same_draws_and_state(replayed, crn):
    s, st, rows, t = replayed

    def gen() -> np.random.Generator:
        bits = np.random.PCG64(7)
        return sim._CrnGenerator(bits) if crn else np.random.Generator(bits)

    got = []
    for record in (True, False):
        state, rng = state_copy(st), gen()
        out = sim._step(s, state, t + 1, rng, record=record)
        got.append((state, rng.random(4), out.closed, out.cause))
    (a, ra, ca, ka), (b, rb, cb, kb) = got
    np.testing.assert_array_equal(ra, rb)  # the streams stand at the same place
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(ka, kb)
    for f in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), err_msg=f.name)


def test_chunks_replayed_together_are_the_chunks_replayed_alone(monkeypatch):
    s = spec()
    w = sim.simulate(s)["oracle"].to_pandas()
    ids, snaps = w.borrower_id.to_numpy()[::5], w.snapshot.to_numpy()[::5]
    assert len(np.unique(ids // s.sim.chunk_size)) > 1
    arms = [Intervention(), Intervention(("keep_external_live",))]
    together = futures_arms(s, ids, snaps, arms, K, trace_months=1, traced=(0,))
    monkeypatch.setattr(sim, "REPLAY_ROWS", 1)  # one chunk at a time
    alone = futures_arms(s, ids, snaps, arms, K, trace_months=1, traced=(0,))
    for a, b in zip(together, alone, strict=True):
        same(a, b)
    assert together[0].traces is not None and alone[0].traces is not None
    for name, table in alone[0].traces.items():
        assert together[0].traces[name].equals(table), name


def test_month_counts_are_the_bool_sums():
    flags = np.random.default_rng(3).random((500, 12)) < 0.4
    got = sim._counts(flags, (3, 6, 12))
    for e, c in zip((3, 6, 12), got, strict=True):
        np.testing.assert_array_equal(c, flags[:, :e].sum(axis=1))
        assert c.dtype == np.int64
