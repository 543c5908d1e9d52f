"""Policy simulation: outcomes from the raw future, actions, money, matched-loss comparison."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.core import policy as core


def _world():
    # borrowers 0..3 over months 0..5; snapshot 2, horizon 2 -> months 3, 4
    am = pd.DataFrame(
        [
            (b, m, 100.0 * (b + 1), 10.0, 1 if (b == 1 and m == 4) else 0)
            for b in range(4)
            for m in range(6)
        ],
        columns=["borrower_id", "month", "balance", "interest_paid", "dpd"],
    )
    am.loc[(am.borrower_id == 1) & (am.month == 4), "balance"] = 500.0
    ev = pd.DataFrame(
        [
            (2, 3, "closure", "low_yield"),
            (3, 4, "closure", "overdue"),
            (0, 5, "closure", "thin_file"),
        ],
        columns=["borrower_id", "month", "event", "cause"],
    )
    rows = pd.DataFrame(
        {
            "borrower_id": [0, 1, 2, 3],
            "snapshot": [2, 2, 2, 2],
            "occupation": ["student", "salaried", "salaried", "student"],
            "probability": [0.01, 0.5, 0.2, 0.04],
            "line": [1000.0, 400.0, 2000.0, 3000.0],
            "tenure": [24.0, 24.0, 5.0, 24.0],
        }
    )
    return rows, am, ev


def test_outcomes_window_revenue_overdue_exposure_platform():
    rows, am, ev = _world()
    out = core.outcomes(rows, am, ev, horizon=2)
    assert list(out.revenue) == [20.0, 20.0, 20.0, 20.0]
    assert list(out.overdue) == [False, True, False, True]  # dpd in month 4; overdue closure
    assert out.ead.iloc[1] == 500.0  # balance at the first overdue month
    assert out.ead.iloc[3] == 400.0
    assert out.ead.iloc[0] == 0.0
    assert list(out.platform_closed) == [False, False, True, True]  # month 5 is outside
    assert list(out.months_observed) == [2, 2, 2, 2]
    late = rows.assign(snapshot=4)
    assert list(core.outcomes(late, am, ev, horizon=3).months_observed) == [1, 1, 1, 1]


def test_outcomes_need_only_the_months_from_the_first_snapshot_on():
    rows, am, ev = _world()
    whole = core.outcomes(rows, am, ev, horizon=2)
    later = core.outcomes(rows, am[am.month >= 2], ev[ev.month >= 2], horizon=2, first_month=2)
    pd.testing.assert_frame_equal(later, whole)
    # a borrower with no month left in the window stays known through its closure event
    gone = am[~((am.borrower_id == 2) & (am.month >= 2))]
    pd.testing.assert_frame_equal(
        core.outcomes(rows, gone[gone.month >= 2], ev[ev.month >= 2], 2, first_month=2),
        core.outcomes(rows, gone, ev, 2),
    )
    with pytest.raises(ValueError, match="first month"):
        core.outcomes(rows, am[am.month >= 3], ev, horizon=2, first_month=3)


def test_actions_and_money_follow_the_stated_assumptions():
    rows, am, ev = _world()
    frame = pd.concat([rows, core.outcomes(rows, am, ev, 2)], axis=1)
    m = core.Money(lgd=0.5, raise_max_prob=0.02, raise_min_tenure=12, medium_ratio=0.4)
    ok = np.array([True, True, False, True])
    a = core.actions("tiered", 0.3, frame.probability.to_numpy(), ok, m)
    assert list(a) == [core.RAISE, core.CLOSE, core.REDUCE, core.NONE]
    assert list(core.actions("close", 0.3, frame.probability.to_numpy(), ok, m)) == [0, 1, 0, 0]
    rev, loss = core.money(a, frame, m)
    assert rev[0] == pytest.approx(20.0 * 1.1)  # raise: uplift
    assert rev[1] == 0.0  # closed
    assert rev[2] == pytest.approx(20.0 * 0.75)  # reduced
    assert loss[1] == pytest.approx(
        0.5 * min(500.0, 200.0)
    )  # exposure capped at the snapshot balance
    assert loss[3] == pytest.approx(0.5 * 400.0)
    assert loss[0] == 0.0 and loss[2] == 0.0
    with pytest.raises(ValueError, match="unknown strategy"):
        core.actions("magic", 0.3, frame.probability.to_numpy(), ok, m)


def test_frontier_counts_good_customers_hit_and_matches_losses():
    rng = np.random.default_rng(0)
    n = 4000
    p = rng.beta(1, 12, n)
    od = rng.random(n) < p
    frame = pd.DataFrame(
        {
            "probability": p,
            "occupation": rng.choice(["a", "b"], n),
            "line": rng.uniform(500, 5000, n),
            "tenure": rng.integers(1, 30, n).astype(float),
            "revenue": rng.uniform(0, 50, n),
            "overdue": od,
            "ead": np.where(od, rng.uniform(100, 3000, n), 0.0),
            "balance0": rng.uniform(0, 2000, n),
            "platform_closed": rng.random(n) < 0.05,
        }
    )
    m = core.Money()
    front = core.frontier(frame, [0.05, 0.1, 0.2, 0.4], m)
    assert set(front.segment) == {"all", "a", "b"}
    allf = front[front.segment == "all"]
    close = allf[allf.strategy == "close"].sort_values("threshold")
    # a higher closing threshold closes fewer, hits fewer good customers, loses more
    assert close.closures.is_monotonic_decreasing and close.good_hit.is_monotonic_decreasing
    assert close.loss.is_monotonic_increasing
    t = allf[(allf.strategy == "close") & (allf.threshold == 0.1)].iloc[0]
    assert t.good_hit == ((p >= 0.1) & ~od).sum()
    # segments add up to the whole
    for strategy in ("close", "tiered"):
        seg = front[
            (front.strategy == strategy) & (front.segment != "all") & (front.threshold == 0.1)
        ]
        whole = allf[(allf.strategy == strategy) & (allf.threshold == 0.1)].iloc[0]
        assert seg.good_hit.sum() == whole.good_hit
        assert seg.loss.sum() == pytest.approx(whole.loss)
    none = allf[allf.strategy == "none"].iloc[0]
    assert none.loss == pytest.approx(0.6 * frame.ead.sum()) and none.good_hit == 0
    matched = core.matched_loss(front)
    assert len(matched) == 4
    inside = matched.dropna()
    tiered = allf[allf.strategy == "tiered"].sort_values("loss")
    for _, r in inside.iterrows():
        assert r.tiered_good_hit == pytest.approx(np.interp(r.loss, tiered.loss, tiered.good_hit))


@pytest.mark.slow
def test_policy_stage_writes_frontier_and_logs(tmp_path, capsys):
    from helpers import SMALL, compose_config

    from pipeline.stages.driver import execute

    world = [
        "model.baselines=false",
        "model.n_estimators=60",
        "explain.advice_rows=0",
        "explain.plot_sample=200",
        "explain.dependence_top=1",
    ]
    for stage in ("generate", "features", "train"):
        execute(compose_config(tmp_path, [*SMALL, *world], stage=stage), [])
    capsys.readouterr()
    res = execute(compose_config(tmp_path, [*SMALL, *world], stage="policy"), [])
    printed = capsys.readouterr().out
    # the console table names its strategies and terms, and prints no bare NaN
    assert "close above the threshold" in printed and "tiered strategy, same loss" in printed
    assert "'good hit': never-overdue accounts closed or cut" in printed
    assert "nan" not in printed.lower()
    out = tmp_path / "models" / "policy"
    for name in ("frontier.csv", "matched_loss.csv", "policy.json", "frontier.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "policy.json").read_text())
    assert summary["source"].startswith("registry models:/closure-risk-lgbm@champion")
    assert summary["rows"] > 100 and summary["none"]["loss"] > 0
    front = pd.read_csv(out / "frontier.csv")
    assert {"close", "tiered", "tiered_tuned", "none", "platform"} <= set(front.strategy)
    # the verdict: exactly its four keys, in the summary and said in one sentence
    assert set(summary["verdict"]) == {"winner", "good_hit_saved", "revenue_gain", "loss_range"}
    assert summary["verdict"]["winner"] in ("tiered", "close", "neither", "undecided")
    assert summary["valid_rows"] > 100
    assert summary["verdict_sentence"] in printed and "SE" in summary["verdict_sentence"]
    assert set(res.summary["policy"]["verdict"]) == set(summary["verdict"])
    assert {"all", "salaried", "student"} <= set(front.segment)
    # logged to a nested run of the tracking store
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(res.mlflow_run_id)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(children) == 1
    metrics = children[0].data.metrics
    assert metrics["rows"] == summary["rows"]
    assert "close.t0.1.good_hit" in metrics and "tiered.t0.1.revenue" in metrics
    arts = [a.path for a in client.list_artifacts(children[0].info.run_id, "policy")]
    assert "policy/frontier.png" in arts

    # scored block by block, the rows are those of the whole split, in the file's order
    from helpers import catalog_in, load_feature_table

    from pipeline.adapters.catalog import load_scoring_model
    from pipeline.stages.policy import scored_rows

    model = load_scoring_model(tmp_path / "models")
    feat = tmp_path / "data" / "processed" / "features.parquet"
    whole = load_feature_table(feat, split="oot")
    got = scored_rows(catalog_in(feat.parent), model, block_rows=97)
    assert len(got) == len(whole) == summary["rows"]
    for col in ("borrower_id", "snapshot", "occupation", "line", "tenure"):
        np.testing.assert_array_equal(got[col].to_numpy(), whole[col].to_numpy())
    want = model.prob(whole[model.names].to_numpy(dtype=np.float32))
    np.testing.assert_array_equal(got.probability.to_numpy(), want)


def _synthetic(seed: int, n_borrowers: int = 1500) -> pd.DataFrame:
    """Two snapshots per borrower; overdue drawn from the probability (a calibrated score)."""
    rng = np.random.default_rng(seed)
    b = np.repeat(np.arange(n_borrowers), 2)
    n = len(b)
    prob = rng.beta(1, 12, n)
    od = rng.uniform(size=n) < prob
    line = rng.uniform(1000, 5000, n)
    return pd.DataFrame(
        {
            "borrower_id": b,
            "snapshot": np.tile([30, 31], n_borrowers),
            "occupation": np.where(b % 2, "salaried", "student"),
            "probability": prob,
            "line": line,
            "tenure": rng.integers(1, 40, n).astype(float),
            "revenue": rng.uniform(10, 60, n),
            "overdue": od,
            "ead": np.where(od, line * rng.uniform(0.5, 1.0, n), 0.0),
            "balance0": line * rng.uniform(0.1, 0.9, n),
            "platform_closed": False,
            "months_observed": 3,
        }
    )


THRESHOLDS = [0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3]


def test_tuning_picks_the_least_harm_at_no_more_loss_on_validation_rows():
    m = core.Money()
    valid = _synthetic(1)
    grid = core.Grid((0.25, 0.5, 0.75), (0.2, 0.6, 1.0), (0.0, 0.02))
    choices = core.tune(valid, THRESHOLDS, m, grid)
    assert len(choices) == len(THRESHOLDS)
    for c in choices:
        _, loss_c, harm_c = core.per_row("close", c.threshold_close, valid, m)
        assert c.valid_loss <= loss_c.sum() * (1 + 1e-9)
        # no setting of the grid does better at no more loss
        for mm in grid.settings(m):
            for t in THRESHOLDS:
                _, lo, ha = core.per_row("tiered", t, valid, mm)
                if lo.sum() <= c.level * (1 + 1e-9):
                    assert c.valid_harm <= ha.sum() + 1e-9
        # and closing itself (no cuts, no raises) is in the grid: never worse than it
        assert c.valid_harm <= harm_c.sum() + 1e-9
    # a cut counts as cut_harm of a closure
    a_rev, a_loss, a_harm = core.per_row("tiered", 0.2, valid, m)
    acts = core.actions("tiered", 0.2, valid.probability.to_numpy(), core._raise_ok(valid, m), m)
    good = ~valid.overdue.to_numpy()
    want = ((acts == core.CLOSE) & good).sum() + m.cut_harm * ((acts == core.REDUCE) & good).sum()
    assert a_harm.sum() == pytest.approx(want)


def test_verdict_names_the_winner_beyond_noise_and_neither_when_the_strategies_agree():
    m = core.Money()
    grid = core.Grid((0.25, 0.5, 0.75), (0.2, 0.4, 0.6, 0.8, 1.0), (0.0, 0.01, 0.02))
    v = core.verdict(_synthetic(2), core.tune(_synthetic(1), THRESHOLDS, m, grid), m, 100, 0)
    d, se = v["verdict"], v["se"]
    assert set(d) == {"winner", "good_hit_saved", "revenue_gain", "loss_range"}
    # cuts bear part of the loss at half the harm here: the tuned tiered strategy wins
    assert d["winner"] == "tiered" and d["good_hit_saved"] > 1.96 * se["good_hit_saved"] > 0
    lo, hi = d["loss_range"]
    assert lo <= hi and v["rows"] == 3000 and v["borrowers"] == 1500
    text = core.verdict_sentence(v)
    assert text.startswith("policy verdict: the tiered strategy wins at losses")
    assert f"SE {se['good_hit_saved']:,.1f}" in text and "3,000" in text
    # the same verdict from the same seed (bit for bit)
    again = core.verdict(_synthetic(2), core.tune(_synthetic(1), THRESHOLDS, m, grid), m, 100, 0)
    assert again["verdict"] == d and again["se"] == se
    # a tiered strategy that can neither cut nor raise is the closing strategy: no winner
    same = core.tune(_synthetic(1), THRESHOLDS, m, core.Grid((0.5,), (1.0,), (0.0,)))
    v2 = core.verdict(_synthetic(2), same, m, 50, 0)
    assert v2["verdict"]["winner"] == "neither"
    assert v2["verdict"]["good_hit_saved"] == pytest.approx(0.0)
    # nothing to compare: undecided, said so
    v3 = core.verdict(_synthetic(2), [], m, 10, 0)
    assert v3["verdict"]["winner"] == "undecided" and "cannot be compared" in (
        core.verdict_sentence(v3)
    )


def test_policy_config_is_validated(make_cfg):
    from pipeline.base.config import ConfigError, validate

    with pytest.raises(ConfigError, match="policy.tune_medium_ratio"):
        validate(make_cfg("policy.tune_medium_ratio=[]"))
    with pytest.raises(ConfigError, match="policy.cut_harm"):
        validate(make_cfg("policy.cut_harm=2"))
    with pytest.raises(ConfigError, match="policy.bootstrap"):
        validate(make_cfg("policy.bootstrap=1"))

    with pytest.raises(ConfigError, match="policy.lgd"):
        validate(make_cfg("policy.lgd=1.5"))
    with pytest.raises(ConfigError, match="policy.thresholds"):
        validate(make_cfg("policy.thresholds=[0.0,0.5]"))
