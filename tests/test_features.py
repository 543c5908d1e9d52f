from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from pipeline.base.causes import CAUSES, OVERDUE
from pipeline.base.config import SimulatorConfig
from pipeline.base.registry import FEATURE_NAMES, FEATURES
from pipeline.core import features as F
from pipeline.core.simulate import WorldSpec, simulate

SNAPS = (12, 16, 20, 24, 28, 32)
SPEC = F.FeatureSpec(snapshots=SNAPS, horizon=3, valid_snapshots=(24,), oot_snapshots=(28, 32))
N = 800


@pytest.fixture(scope="module")
def world():
    sim = OmegaConf.structured(SimulatorConfig)
    sim.chunk_size = 400
    sim.oracle_rows = 0
    return simulate(WorldSpec(n_borrowers=N, n_months=36, seed=21, sim=OmegaConf.to_object(sim)))


def build(world, spec=SPEC):
    cols, status = F.block_features(world, 0, N, 36, spec)
    e = world["social_edges"]
    snap = cols["snapshot"].astype(np.int64)
    lookup = F.SocialLookup.build(
        e["src"].to_numpy(),
        e["dst"].to_numpy(),
        e["tie_strength"].to_numpy().astype(np.float64),
        status,
        np.unique(snap),
        n_ids=int(cols["borrower_id"].max(initial=-1)) + 1,
    )
    cols.update(lookup.rows(cols["borrower_id"], snap))
    return F.to_table(cols, spec).to_pandas()


def test_registry_covers_every_cause_and_names_are_unique():
    assert {c for f in FEATURES for c in f.causes} >= set(CAUSES)
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    for f in FEATURES:
        assert f.zh and f.en and f.monotone in (-1, 0, 1)
        assert set(f.causes) <= set(CAUSES)


def test_split_by_snapshot_and_float32_features(world):
    df = build(world)
    assert set(df.split) == {"train", "valid", "oot"}
    assert (df[df.split == "oot"].snapshot.isin(SPEC.oot_snapshots)).all()
    assert not df.duplicated(["borrower_id", "snapshot"]).any()
    assert all(df[c].dtype == np.float32 for c in FEATURE_NAMES)
    assert np.isfinite(df[list(FEATURE_NAMES)].to_numpy()).all()


def test_population_and_label_window(world):
    df = build(world)
    am = world["account_months"].to_pandas()
    ev = world["platform_events"].to_pandas()
    b = world["borrowers"].to_pandas().set_index("borrower_id")
    closures = ev[ev.event == "closure"].set_index("borrower_id")
    first_dpd = am[am.dpd > 0].groupby("borrower_id").month.min()
    for s in SNAPS:
        rows = set(df[df.snapshot == s].borrower_id)
        expected = set()
        for bid in b.index:
            if b.loc[bid, "signup_month"] > s:
                continue
            # closed, or overdue, in a going concern's burn-in (before month 0)
            if b.loc[bid, "prior_closure"] > 0 or b.loc[bid, "prior_overdue"]:
                continue
            if bid in closures.index and closures.loc[bid, "month"] <= s:
                continue
            if bid in first_dpd.index and first_dpd.loc[bid] <= s:
                continue
            expected.add(bid)
        assert rows == expected, s
        sub = df[df.snapshot == s].set_index("borrower_id")
        for bid, row in sub.iterrows():
            closed_in_window = bid in closures.index and s < closures.loc[bid, "month"] <= s + 3
            non_overdue = closed_in_window and closures.loc[bid, "cause"] != OVERDUE
            assert row.label == int(non_overdue)
            assert row.label_cause == (closures.loc[bid, "cause"] if non_overdue else "none")


def _mutate_after(world, s, rng):
    """Change or delete every raw row dated after ``s``; leave the rest alone."""
    out = dict(world)
    for name in (
        "account_months",
        "fund_flows",
        "bureau_months",
        "consumption_months",
        "platform_events",
    ):
        t = world[name].to_pandas()
        late = t.month > s
        t = t[~late | (rng.random(len(t)) < 0.5)].copy()  # delete about half of the future rows
        late = t.month > s
        for col in t.columns:
            if col in ("borrower_id", "month"):
                continue
            if t[col].dtype.kind == "f":
                t.loc[late, col] = (t.loc[late, col] * rng.uniform(0, 3, late.sum())).astype(
                    t[col].dtype
                )
            elif t[col].dtype.kind in "iu" and col not in ("channel",):
                t.loc[late, col] = (t.loc[late, col] + rng.integers(0, 3, late.sum())).astype(
                    t[col].dtype
                )
        if name == "platform_events":
            t.loc[late, "cause"] = rng.choice(list(CAUSES), late.sum())
        out[name] = pa.Table.from_pandas(t, schema=world[name].schema, preserve_index=False)
    return out


@settings(max_examples=12, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), s_idx=st.integers(0, len(SNAPS) - 1))
def test_future_events_never_move_features(world, seed, s_idx):
    s = SNAPS[s_idx]
    spec = F.FeatureSpec(snapshots=(s,), horizon=3, valid_snapshots=(), oot_snapshots=())
    rng = np.random.default_rng(seed)
    before = build(world, spec).set_index("borrower_id")
    after = build(_mutate_after(world, s, rng), spec).set_index("borrower_id")
    assert list(before.index) == list(after.index)
    pd.testing.assert_frame_equal(before[list(FEATURE_NAMES)], after[list(FEATURE_NAMES)])


def test_social_features_read_only_the_past(world):
    df = build(world)
    e = world["social_edges"].to_pandas()
    ev = world["platform_events"].to_pandas()
    closed = ev[(ev.event == "closure") & (ev.cause != OVERDUE)].groupby("borrower_id").month.min()
    row = df[(df.degree > 0) & (df.contacts_closed_share > 0)].iloc[0]
    contacts = e[e.src == row.borrower_id].dst
    share = np.mean([c in closed.index and closed.loc[c] < row.snapshot for c in contacts])
    assert row.contacts_closed_share == pytest.approx(share, rel=1e-6)
    assert row.degree == len(contacts)


def test_stability_report_matches_the_metric_definitions(tmp_path):
    """The fused, threaded report gives the figures of helpers.information_value / psi."""
    from helpers import information_value

    from pipeline.core.metrics import psi
    from pipeline.stages.features import stability_report

    rng = np.random.default_rng(3)
    n = 5000
    split = rng.choice(["train", "valid", "oot"], size=n, p=[0.6, 0.2, 0.2])
    label = (rng.random(n) < 0.1).astype(np.int8)
    cols: dict[str, object] = {"split": split, "label": label}
    for j, name in enumerate(FEATURE_NAMES):
        x = rng.normal(j % 5, 1 + j % 3, n).astype(np.float32)
        if j % 4 == 0:
            x = np.round(x)  # ties
        if j % 7 == 0:
            x[rng.random(n) < 0.2] = np.nan  # missing values
        if j == 1:
            x[split == "oot"] += 2.0  # a shifted feature
        cols[name] = x
    table = pa.table(cols)
    rep = stability_report(table, threads=2).set_index("feature")
    train, oot = split == "train", split == "oot"
    for name in FEATURE_NAMES:
        x = table.column(name).to_numpy()
        assert rep.loc[name, "missing_rate"] == pytest.approx(np.mean(~np.isfinite(x)))
        assert rep.loc[name, "iv_train"] == pytest.approx(
            information_value(x[train], label[train]), rel=1e-12, abs=1e-15
        ), name
        assert rep.loc[name, "psi_train_oot"] == pytest.approx(
            psi(x[train], x[oot]), rel=1e-12, abs=1e-15
        ), name
    assert rep.loc[FEATURE_NAMES[1], "psi_train_oot"] > 0.5  # the shift is seen
    # from the Parquet file, column by column (row groups of 700 rows), the same report
    path = tmp_path / "features.parquet"
    pq.write_table(table, path, row_group_size=700)
    from_file = stability_report(path, threads=2).set_index("feature")
    pd.testing.assert_frame_equal(from_file, rep)


def test_the_social_lookup_refuses_rows_it_was_not_built_for():
    status = F.BlockStatus(np.arange(4), np.array([3, F.NEVER, 1, 5]), np.full(4, F.NEVER))
    src, dst = np.array([0, 0, 1, 2, 3]), np.array([1, 2, 0, 0, 2])
    look = F.SocialLookup.build(src, dst, np.ones(5), status, np.array([6, 2]))
    out = look.rows(np.array([0, 0, 3]), np.array([2, 6, 6]))
    assert out["degree"].tolist() == [2, 2, 1]
    # borrower 0's contacts 1 (never closed) and 2 (closed in month 1): half before 2 and 6
    assert out["contacts_closed_share"].tolist() == [0.5, 0.5, 1.0]
    with pytest.raises(ValueError, match="snapshots"):
        look.rows(np.array([0]), np.array([4]))
    with pytest.raises(ValueError, match="borrowers"):
        look.rows(np.array([9]), np.array([6]))


def _window(t: pd.DataFrame, s: int, lo: int, hi: int) -> pd.DataFrame:
    """Rows of ``t`` in months ``s - lo .. s - hi`` (inclusive)."""
    return t[(t.month >= s - lo) & (t.month <= s - hi)]


def test_review_window_features_follow_their_definitions(world):
    """The three-month fund use, reliance, stop watch, own-past spending and tightening
    segments, recomputed row by row from the raw tables."""
    df = build(world)
    am = world["account_months"].to_pandas()
    fl = world["fund_flows"].to_pandas()
    co = world["consumption_months"].to_pandas()
    bu = world["bureau_months"].to_pandas()
    ev = world["platform_events"].to_pandas()
    rng = np.random.default_rng(0)
    rows = df[df.draw_amount_3 > 0]
    rows = pd.concat(
        [
            rows.iloc[rng.choice(len(rows), 60, replace=False)],
            df.iloc[:20],
            df[df.n_freezes + df.n_line_decreases > 0].iloc[:10],
            df[df.competition_watch_1 > 0].iloc[:10],
        ]
    )
    seen = {"misuse": 0, "watch": 0, "reliance": 0, "tight": 0, "acted": 0, "competition": 0}
    for _, r in rows.iterrows():
        s, b = int(r.snapshot), int(r.borrower_id)
        a = am[am.borrower_id == b].set_index("month")
        f3 = _window(fl[fl.borrower_id == b], s, 2, 0)
        fast = f3[f3.days_after_draw <= SPEC.fund_days]
        drawn = f3.amount.sum()
        mis = fast[fast.channel.isin(["securities", "other_lender"])].amount.sum()
        nonc = f3[f3.channel != "consumption"].amount.sum()
        assert r.misuse_share_3 == pytest.approx(mis / drawn if drawn > 0 else 0, abs=1e-5)
        assert r.noncons_share_3 == pytest.approx(nonc / drawn if drawn > 0 else 0, abs=1e-5)
        seen["misuse"] += mis > 0

        drew = {m: int(a.n_draws.get(m, 0) > 0) for m in range(s - 11, s + 1)}
        w1 = sum(drew[m] for m in range(max(0, s - 10), s - 1))
        w2 = sum(drew[m] for m in range(max(0, s - 9), s))
        assert r.stop_watch_1 == (w1 if drew[s] + drew[s - 1] == 0 else 0)
        assert r.stop_watch_2 == (w2 if drew[s] == 0 else 0)
        assert r.draw_months_9 == sum(drew[m] for m in range(s - 8, s + 1))
        seen["watch"] += r.stop_watch_2 > 0

        util = (a.balance / a.line).reindex(range(s - 2, s + 1)).dropna()
        loans = bu[(bu.borrower_id == b) & (bu.month == s)].ext_loans.iloc[0]
        dm3 = sum(drew[m] for m in range(s - 2, s + 1))
        expect = util.mean() * (dm3 >= 2) * (2 if loans >= 3 else 1)
        assert r.reliance_3 == pytest.approx(expect, rel=1e-5, abs=1e-6)
        assert r.util_now == pytest.approx(a.balance[s] / a.line[s], rel=1e-5)
        seen["reliance"] += r.reliance_3 > 0

        c = co[co.borrower_id == b].set_index("month")
        spend = c.spend_daily + c.spend_durables + c.spend_services
        past = spend.reindex(range(s - 11, s - 2)).dropna()
        ratio = spend[s] / past.mean() if len(past) else 1.0
        assert r.spend_ratio_1 == pytest.approx(ratio, rel=1e-5)
        assert r.weekly_cv_1 == pytest.approx(c.spend_weekly_cv[s], rel=1e-6)
        comp = (c.competitor_baitiao + c.competitor_fenfu) > 0
        for j in (1, 2, 3):
            months = range(s - 5 + j, s + 1)
            used = sum(bool(comp.get(m, False)) for m in months)
            idle = sum(drew[m] for m in months) <= 1
            assert r[f"competition_watch_{j}"] == (used if idle else 0)
        seen["competition"] += r.competition_watch_1 > 0

        e = ev[(ev.borrower_id == b) & (ev.month <= s)]
        acted = e[e.event.isin(["line_decrease", "freeze"])].month
        assert r.months_since_cut_or_freeze == (min(s - acted.max(), 12) if len(acted) else 12)
        changed = e[e.event.isin(["line_increase", "line_decrease"])].month
        assert r.months_since_line_change == (min(s - changed.max(), 12) if len(changed) else 12)
        seen["acted"] += len(acted) > 0

        on = r.regime > 0
        assert r.tightening_util_3 == (r.util_mean_3 if on else 0)
        assert r.tightening_noncons_3 == (r.noncons_share_3 if on else 0)
        seen["tight"] += on and r.tightening_noncons_3 > 0
    assert all(v > 0 for v in seen.values()), seen  # every branch was exercised


def test_no_feature_is_the_calendar_alone(world):
    """Besides the regime, every feature differs between borrowers of one snapshot: a
    value shared by a whole snapshot would be the calendar, which out-of-time rows
    always push beyond what training saw."""
    df = build(world)
    per_snapshot = df.groupby("snapshot")[list(FEATURE_NAMES)].nunique().max()
    assert set(per_snapshot[per_snapshot <= 1].index) == {"regime"}


def test_kernel_slots_follow_the_registry():
    # every output row of the compiled pass is named, numbered 0.. in registry order
    assert [int(s) for s in F.Slot] == list(range(len(F.Slot)))
    assert F.KERNEL_FEATURES == tuple(f.name for f in FEATURES if f.family in F.KERNEL_FAMILIES)
    assert set(F.KERNEL_FEATURES) | set(F.SOCIAL_FEATURES) <= set(FEATURE_NAMES)


@pytest.mark.parametrize(
    "change",
    [
        lambda fs: fs[1:],  # a feature the kernel computes left the registry
        lambda fs: (fs[1], fs[0], *fs[2:]),  # two features swapped places
        lambda fs: (*fs[:5], dataclasses.replace(fs[0], name="new_feature"), *fs[5:]),
    ],
)
def test_a_registry_out_of_step_with_the_kernel_fails_at_import(monkeypatch, change):
    monkeypatch.setattr(F, "FEATURES", change(FEATURES))
    with pytest.raises(ImportError, match=r"pipeline/core/features\.py.*Slot.*registry"):
        F._check_slots()
