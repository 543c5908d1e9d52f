"""Futures of chosen accounts with a borrower's action carried out (common random numbers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.base.causes import CAUSES, CHANNELS
from pipeline.base.config import SimulatorConfig
from pipeline.core.simulate import (
    ACTIONS,
    Futures,
    Intervention,
    WorldSpec,
    futures,
    futures_arms,
    simulate,
)

K = 16
SEC, OTHER, CONS = (CHANNELS.index(c) for c in ("securities", "other_lender", "consumption"))
PER_FUTURE = (
    "closed",
    "cause",
    "month",
    "draw_amount",
    "channel_amount",
    "early_repay",
    "interest",
    "loss",
)


def spec(n: int = 3000, seed: int = 9) -> WorldSpec:
    cfg = OmegaConf.structured(SimulatorConfig)
    cfg.chunk_size = 1024
    cfg.oracle_rows = 1500
    cfg.oracle_futures = K
    cfg.oracle_estimator = "count"  # futures() counts closures: the oracle the same way
    return WorldSpec(
        n_borrowers=n,
        n_months=36,
        seed=seed,
        sim=OmegaConf.to_object(cfg),
        oracle_snapshots=(26, 30),
        horizon=3,
    )


@pytest.fixture(scope="module")
def world() -> tuple[WorldSpec, dict]:
    s = spec()
    return s, simulate(s)


@pytest.fixture(scope="module")
def arms(world) -> dict[str | None, Futures]:
    """Every action, and none, for the oracle's accounts."""
    s, w = world
    o = w["oracle"].to_pandas()
    ids, snaps = o.borrower_id.to_numpy(), o.snapshot.to_numpy()
    return {a: futures(s, ids, snaps, action=a) for a in [None, *ACTIONS]}


def cause_share(f: Futures, cause: str) -> float:
    return float((f.cause == CAUSES.index(cause)).mean())


def test_no_action_reproduces_the_full_oracle(world, arms):
    s, w = world
    o = w["oracle"].to_pandas()
    np.testing.assert_array_equal(arms[None].p.astype(np.float32), o.p_full.to_numpy())
    assert (arms[None].borrower_id == o.borrower_id.to_numpy()).all()
    # asked in another order and with a repeat, each account gets its own row back
    back = o.iloc[::-1]
    ids = np.r_[back.borrower_id.to_numpy(), back.borrower_id.iloc[:1]]
    snaps = np.r_[back.snapshot.to_numpy(), back.snapshot.iloc[:1]]
    f = futures(s, ids, snaps)
    np.testing.assert_array_equal(f.p[:-1].astype(np.float32), back.p_full.to_numpy())
    np.testing.assert_array_equal(f.closed[-1], f.closed[0])


def test_futures_report_closures_with_their_cause(arms):
    f = arms[None]
    assert f.closed.shape == (len(f.borrower_id), K) and f.closed.any()
    assert ((f.cause >= 0) & (f.cause < len(CAUSES)) == f.closed).all()
    np.testing.assert_allclose(f.cause_share().sum(axis=1), f.p)
    closed_month = f.month[f.closed]
    snap = np.broadcast_to(f.snapshot[:, None], f.closed.shape)[f.closed]
    assert ((closed_month > snap) & (closed_month <= snap + 3)).all()
    assert set(f.cause_names()[f.closed]) <= set(CAUSES)


def test_route_to_consumption_sends_nothing_to_securities_or_other_lenders(arms):
    none, act = arms[None], arms["route_to_consumption"]
    assert none.channel_amount[..., [SEC, OTHER]].sum() > 0
    assert act.channel_amount[..., [SEC, OTHER]].sum() == 0
    assert act.channel_amount[..., CONS].sum() > none.channel_amount[..., CONS].sum()
    # the first month's draws do not depend on where money goes: same random numbers
    np.testing.assert_array_equal(act.draw_amount[..., 0], none.draw_amount[..., 0])


def test_keep_drawing_draws_in_k_months_and_leaves_natural_draws_alone(world, arms):
    s, w = world
    none, act = arms[None], arms["keep_drawing"]
    months = (act.draw_amount > 0).sum(axis=2)
    open_all = ~act.closed & (act.cause < 0)
    assert (months[open_all] >= 2).mean() > 0.95
    assert ((none.draw_amount > 0).sum(axis=2)[open_all] >= 2).mean() < 0.8
    natural = none.draw_amount[..., 0] > 0
    np.testing.assert_array_equal(
        act.draw_amount[..., 0][natural], none.draw_amount[..., 0][natural]
    )
    o = w["oracle"].to_pandas().iloc[:50]
    three = futures(s, o.borrower_id, o.snapshot, action="keep_drawing", keep_drawing_months=3)
    assert (three.draw_amount > 0).sum() > (act.draw_amount[:50] > 0).sum()


def test_external_record_kept_live_ends_thin_file_signals_only(arms):
    none, act = arms[None], arms["keep_external_live"]
    # a borrower without external credit gets a product only when the bureau approves
    # it, so thin-file closures fall but do not vanish
    assert cause_share(act, "thin_file") < 0.5 * cause_share(none, "thin_file")
    assert cause_share(act, "thin_file") > 0.05 * cause_share(none, "thin_file")
    for c in CAUSES:
        if c != "thin_file":  # same random numbers: the other causes barely move
            assert abs(cause_share(act, c) - cause_share(none, c)) < 0.002, c


def test_no_competitors_cuts_competition_closures(arms):
    none, act = arms[None], arms["stop_competitors"]
    assert cause_share(act, "low_activity_competition") < 0.8 * cause_share(
        none, "low_activity_competition"
    )


def test_repay_on_schedule_has_no_early_repayment(arms):
    assert arms[None].early_repay.sum() > 0
    assert arms["repay_on_schedule"].early_repay.sum() == 0


def test_moderate_use_never_draws_more(arms):
    none, act = arms[None], arms["moderate_use"]
    first = act.draw_amount[..., 0], none.draw_amount[..., 0]
    assert (first[0] <= first[1]).all() and (first[0] < first[1]).any()


def test_every_action_changes_the_world(arms):
    for a in ACTIONS:
        assert not np.array_equal(arms[a].cause, arms[None].cause), a
        assert ACTIONS[a]


def test_same_call_same_futures(world):
    s, w = world
    o = w["oracle"].to_pandas().iloc[:40]
    a = futures(s, o.borrower_id, o.snapshot, action="keep_drawing", n_futures=4)
    b = futures(s, o.borrower_id, o.snapshot, action="keep_drawing", n_futures=4)
    for name in PER_FUTURE:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.closed.shape == (40, 4)


def test_bad_requests_name_what_is_wrong(world):
    s, w = world
    with pytest.raises(ValueError, match="unknown action 'save_more'"):
        futures(s, [1], 26, action="save_more")
    with pytest.raises(ValueError, match="borrower_id 99999 is outside"):
        futures(s, [99999], 26)
    with pytest.raises(ValueError, match="keep_drawing_months"):
        futures(s, [1], 26, action="keep_drawing", keep_drawing_months=4)
    ev = w["platform_events"].to_pandas()
    gone = ev[(ev.event == "closure") & (ev.month < 20)].borrower_id.iloc[0]
    with pytest.raises(ValueError, match=f"borrower {gone} is not on book at the end of month 26"):
        futures(s, [gone], 26)
    assert isinstance(ev, pd.DataFrame)


# --------------------------------------------------------------------------- several actions


def test_a_tuple_of_one_action_is_that_action(world):
    s, w = world
    o = w["oracle"].to_pandas().iloc[:60]
    ids, snaps = o.borrower_id, o.snapshot
    for name, k in (("keep_drawing", 3), ("route_to_consumption", 2)):
        one = futures(s, ids, snaps, action=name, n_futures=4, keep_drawing_months=k)
        tup = futures(s, ids, snaps, action=(name,), n_futures=4, keep_drawing_months=k)
        for field in PER_FUTURE:
            np.testing.assert_array_equal(getattr(tup, field), getattr(one, field), field)
        assert one.action == tup.action == name
    none = futures(s, ids, snaps, n_futures=4)
    empty = futures(s, ids, snaps, action=(), n_futures=4)
    np.testing.assert_array_equal(empty.cause, none.cause)
    assert Intervention.of(("stop_competitors", "keep_drawing", "stop_competitors")).actions == (
        "keep_drawing",
        "stop_competitors",
    )


def test_two_actions_in_one_future_change_both_behaviours(world, arms):
    s, w = world
    o = w["oracle"].to_pandas()
    ids, snaps = o.borrower_id.to_numpy(), o.snapshot.to_numpy()
    both = futures(s, ids, snaps, action=("keep_drawing", "keep_external_live"))
    assert both.action == ("keep_drawing", "keep_external_live")
    # drawing kept up: the first month's draws are those of keep_drawing alone
    np.testing.assert_array_equal(
        both.draw_amount[..., 0], arms["keep_drawing"].draw_amount[..., 0]
    )
    assert (both.draw_amount[..., 0] > 0).sum() > (arms[None].draw_amount[..., 0] > 0).sum()
    # and the external record kept live: thin-file closures fall as with that action alone
    assert cause_share(both, "thin_file") < 0.5 * cause_share(arms[None], "thin_file")
    assert cause_share(both, "thin_file") < 0.5 * cause_share(arms["keep_drawing"], "thin_file")
    money = futures(s, ids, snaps, action=("route_to_consumption", "repay_on_schedule"))
    assert money.channel_amount[..., [SEC, OTHER]].sum() == 0
    assert money.early_repay.sum() == 0
    assert arms["route_to_consumption"].early_repay.sum() > 0


def test_arms_from_one_replay_are_the_single_calls(world):
    s, w = world
    o = w["oracle"].to_pandas().iloc[::9].iloc[:80]
    ids, snaps = o.borrower_id.to_numpy(), o.snapshot.to_numpy()
    pair = Intervention(("keep_external_live", "stop_competitors"))
    kinds = [Intervention(), Intervention(("keep_drawing",), 3), pair]
    mixed = [kinds[i % 3] for i in range(len(ids))]  # each account its own intervention
    got = futures_arms(s, ids, snaps, [Intervention(), pair, mixed], n_futures=4)
    assert [g.arm for g in got[:2]] == [Intervention(), pair] and got[2].arm == tuple(mixed)
    for iv in kinds:
        f = futures(s, ids, snaps, iv.actions, 4, iv.keep_drawing_months)
        rows = np.array([m == iv for m in mixed])
        for field in PER_FUTURE:
            np.testing.assert_array_equal(getattr(got[2], field)[rows], getattr(f, field)[rows])
        if iv == pair:
            np.testing.assert_array_equal(got[1].cause, f.cause)
    again = futures_arms(s, ids, snaps, [Intervention(), pair, mixed], n_futures=4)
    for a, b in zip(got, again, strict=True):
        np.testing.assert_array_equal(a.cause, b.cause)
        np.testing.assert_array_equal(a.draw_amount, b.draw_amount)
    with pytest.raises(ValueError, match="each account carried out its own"):
        _ = got[2].action


def test_bad_arms_name_what_is_wrong(world):
    s, w = world
    am = w["account_months"].to_pandas()
    a, b = (int(x) for x in am[am.month == 26].borrower_id.iloc[:2])  # on book at month 26
    with pytest.raises(ValueError, match="unknown action 'save_more'"):
        futures(s, [a], 26, action=("keep_drawing", "save_more"))
    with pytest.raises(ValueError, match="one Intervention per account asked: got 1 for 2"):
        futures_arms(s, [a, b], 26, [[Intervention()]])
    with pytest.raises(ValueError, match="asked twice at one snapshot with different"):
        futures_arms(s, [a, a], 26, [[Intervention(), Intervention(("moderate_use",))]])


def test_futures_beyond_one_block_keep_the_first_block_and_add_fresh_ones(world):
    from pipeline.core.simulate import FUTURE_BLOCK

    s, w = world
    o = w["oracle"].to_pandas().iloc[:30]
    ids, snaps = o.borrower_id.to_numpy(), o.snapshot.to_numpy()
    one = futures(s, ids, snaps, n_futures=FUTURE_BLOCK)
    more = futures(s, ids, snaps, n_futures=FUTURE_BLOCK + 8)
    assert more.closed.shape == (30, FUTURE_BLOCK + 8)
    # the first block is the block a smaller ask gets, future for future
    for name in PER_FUTURE:
        np.testing.assert_array_equal(getattr(more, name)[:, :FUTURE_BLOCK], getattr(one, name))
    # the next block has its own random numbers, not a copy of the first
    extra, first = more.month[:, FUTURE_BLOCK:], more.month[:, :8]
    assert (extra != first).any() or (
        more.draw_amount[:, FUTURE_BLOCK:] != one.draw_amount[:, :8]
    ).any()


def test_external_approval_follows_the_bureau():
    """Approval is the borrower's own chance of a new product within a year: a student
    (low external engagement) is approved far less often than an engaged borrower."""
    from pipeline.core.simulate import ext_approval, ext_open_prob

    sim = OmegaConf.to_object(OmegaConf.structured(SimulatorConfig))
    eng, jug = np.array([0.05, 0.9]), np.array([0.0, 0.0])
    p = ext_approval(sim, eng, jug)
    np.testing.assert_allclose(p, 1 - (1 - ext_open_prob(sim, eng, jug)) ** 12)
    assert 0 < p[0] < 0.5 * p[1] < 1


def test_keep_drawing_with_a_size_draws_that_size_at_most(world):
    """A draw made only because of the advice is one draw of at most the advised size;
    the borrower's own draws are left alone and interest is charged on the balance."""
    s, w = world
    o = w["oracle"].to_pandas()
    ids, snaps = o.borrower_id.to_numpy(), o.snapshot.to_numpy()
    none, small = futures_arms(
        s, ids, snaps, [Intervention(), Intervention(("keep_drawing",), 2, 50.0)]
    )
    # the first month starts from the same state in both arms: a draw there that the
    # borrower would not have made is the advised one
    natural = none.draw_amount > 0
    forced = ~natural[..., 0] & (small.draw_amount[..., 0] > 0)
    assert forced.sum() > 100
    assert small.draw_amount[..., 0][forced].max() <= 50.0
    np.testing.assert_array_equal(
        small.draw_amount[..., 0][natural[..., 0]], none.draw_amount[..., 0][natural[..., 0]]
    )
    assert (small.interest >= 0).all() and small.interest.sum() > none.interest.sum()
    assert (none.loss[none.cause != len(CAUSES)] == 0).all()


def test_moderate_use_keeps_the_balance_under_the_advised_share(world):
    """A lower advised utilisation leaves less to draw: the first month's draws (same
    state, same random numbers) fall as the cap falls."""
    s, w = world
    o = w["oracle"].to_pandas()
    ids, snaps = o.borrower_id.to_numpy(), o.snapshot.to_numpy()
    caps = [Intervention(("moderate_use",), util_cap=c) for c in (0.9, 0.5, 0.3)]
    got = futures_arms(s, ids, snaps, caps)
    first = [f.draw_amount[..., 0].sum() for f in got]
    assert first[0] > first[1] > first[2] > 0
    assert caps[2].label == "moderate_use:30%" and caps[1].label == "moderate_use"
    with pytest.raises(ValueError, match="util_cap must lie in"):
        Intervention(("moderate_use",), util_cap=0.0)


def test_route_to_consumption_keeps_at_most_the_advised_share_away(world):
    s, w = world
    o = w["oracle"].to_pandas()
    ids, snaps = o.borrower_id.to_numpy(), o.snapshot.to_numpy()
    none, keep = futures_arms(
        s, ids, snaps, [Intervention(), Intervention(("route_to_consumption",), route_share=0.15)]
    )
    away = keep.channel_amount[..., [SEC, OTHER]].sum(axis=-1)
    drawn = keep.channel_amount.sum(axis=-1)
    assert (away <= 0.15 * drawn + 1e-6).all() and away.sum() > 0
    assert away.sum() < none.channel_amount[..., [SEC, OTHER]].sum()
    assert Intervention(("route_to_consumption",), route_share=0.15).label == (
        "route_to_consumption:15%"
    )
