"""The advice carried out in the simulated world: the feature -> action map, the arms and
the summary the explain stage writes under ``advice.world``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.base.actions import ACTION_NAMES, FEATURE_ACTIONS, UnmappedChange, actions_for
from pipeline.base.causes import CAUSES
from pipeline.base.config import SimulatorConfig
from pipeline.base.registry import BY_NAME, FEATURES
from pipeline.core import advice as advice_core
from pipeline.core import world_advice as wa
from pipeline.core.simulate import (
    ACTIONS,
    Intervention,
    WorldSpec,
    futures,
    futures_arms,
    simulate,
)

K = 8


def spec() -> WorldSpec:
    cfg = OmegaConf.structured(SimulatorConfig)
    cfg.chunk_size = 1024
    cfg.oracle_rows = 600
    cfg.oracle_futures = K
    return WorldSpec(
        n_borrowers=2500,
        n_months=36,
        seed=5,
        sim=OmegaConf.to_object(cfg),
        oracle_snapshots=(28, 32),
        horizon=3,
    )


@pytest.fixture(scope="module")
def world() -> tuple[WorldSpec, pd.DataFrame]:
    """A small world and accounts on book at a snapshot (the oracle's sample)."""
    s = spec()
    return s, simulate(s)["oracle"].to_pandas()[["borrower_id", "snapshot"]]


# --------------------------------------------------------------------------- the map


def test_every_actionable_feature_maps_to_a_simulator_action():
    actionable = {f.name for f in FEATURES if f.actionable}
    assert set(FEATURE_ACTIONS) == actionable
    assert set(ACTION_NAMES) <= set(ACTIONS)
    for name, b in FEATURE_ACTIONS.items():
        assert b.up or b.down, name
        assert {b.up, b.down} - {None} <= set(ACTIONS), name


def _profiles() -> list[dict[str, float]]:
    """Borrowers that open every option of every lever (heavy, idle, misusing, ...)."""
    base = {f.name: 0.0 for f in FEATURES}
    base.update(tenure=24.0, line=20_000.0)
    idle = dict(base, months_since_last_draw=5.0, draw_amount_12=3000.0, n_draws_12=2.0)
    idle[advice_core.DRAW_SIZE] = 400.0  # a draw it can repay within the month
    heavy = dict(
        base,
        draw_months_3=3.0,
        draw_months_6=6.0,
        draw_months_12=12.0,
        n_draws_3=9.0,
        n_draws_6=15.0,
        n_draws_12=30.0,
        draw_amount_3=9000.0,
        draw_amount_6=15_000.0,
        draw_amount_12=30_000.0,
        util_mean_3=0.95,
        util_mean_6=0.9,
        util_mean_12=0.8,
    )
    misuse = dict(
        base,
        misuse_share_k=0.8,
        share_securities_k=0.5,
        share_other_lender_k=0.3,
        share_consumption_6=0.2,
        ext_active_products=2.0,
        months_since_ext_activity=14.0,
        competitor_months_6=6.0,
        competitor_share_6=0.5,
    )
    return [idle, heavy, misuse]


def test_every_change_the_advice_can_propose_has_a_behaviour():
    seen: set[str] = set()
    opened = dict.fromkeys(advice_core.LEVERS, 0)
    for x in _profiles():
        for lever, make in advice_core.LEVERS.items():
            options = make(x)
            opened[lever] += len(options)
            for o in options:
                changes = [(f, x.get(f, 0.0), v) for f, v in o.values.items()]
                acts = actions_for(changes)  # raises on a change with no behaviour
                assert len(acts) == 1, (lever, o.en, acts)
                seen |= set(acts)
                # the plan of that one lever is that action
                names = [n for n in x if n != advice_core.DRAW_SIZE]
                size = x.get(advice_core.DRAW_SIZE, float("nan"))
                plan = wa.steps(
                    np.array([x[n] for n in names]), names, f"{lever}:{o.cost}", changes, 3, size
                )
                assert [st.action for st in plan] == list(acts) == [lever]
    assert all(opened.values()), opened  # every lever was exercised
    assert {"keep_drawing", "moderate_use", "route_to_consumption"} <= seen
    assert {"keep_external_live", "stop_competitors"} <= seen


def test_a_change_without_behaviour_is_refused_by_name():
    with pytest.raises(
        UnmappedChange, match="'misuse_share_k': no action of the world makes it rise"
    ):
        actions_for([("misuse_share_k", 0.1, 0.4)])
    # a side effect (not actionable) needs no action; an unchanged value neither
    assert not BY_NAME["ext_inquiries_6"].actionable
    assert actions_for([("ext_inquiries_6", 0.0, 2.0), ("misuse_share_k", 0.2, 0.2)]) == ()


def test_cadence_draws_in_as_many_months_as_advised():
    names = ["draw_months_3", "months_since_last_draw"]
    plan = wa.steps(
        np.array([1.0, 0.0]),
        names,
        "keep_drawing:2",
        [("draw_months_3", 1.0, 3.0)],
        horizon=3,
        draw_size=250.0,
    )
    assert plan[0].arm == Intervention(("keep_drawing",), 3, 250.0)
    assert plan[0].arm.label == "keep_drawing:3x250"
    plan = wa.steps(
        np.array([0.0, 4.0]),
        names,
        "keep_drawing:1",
        [("draw_months_3", 0.0, 1.0), ("months_since_last_draw", 4.0, 0.0)],
        horizon=3,
        draw_size=120.0,
    )
    assert plan[0].arm == Intervention(("keep_drawing",), 1, 120.0) and plan[0].cost == 1
    # a draw is carried out only at the size the advice said
    with pytest.raises(ValueError, match="no advised draw size"):
        wa.steps(np.array([1.0, 0.0]), names, "keep_drawing:2", [("draw_months_3", 1.0, 3.0)], 3)
    with pytest.raises(ValueError, match="unknown lever 'save_more'"):
        wa.steps(np.array([0.0, 0.0]), names, "save_more:1", [], horizon=3)
    # moderate use is carried out at the utilisation the advice names
    plan = wa.steps(
        np.array([0.9]), ["util_mean_3"], "moderate_use:2", [("util_mean_3", 0.9, 0.5)], 3
    )
    assert plan[0].arm == Intervention(("moderate_use",), util_cap=0.5)
    plan = wa.steps(
        np.array([0.9]), ["util_mean_3"], "moderate_use:3", [("util_mean_3", 0.9, 0.3)], 3
    )
    assert plan[0].arm.util_cap == 0.3 and plan[0].arm.label == "moderate_use:30%"
    # and money routed to consumption down to the share the advice names
    plan = wa.steps(
        np.array([0.6, 0.3, 0.3]),
        ["misuse_share_k", "share_securities_k", "share_other_lender_k"],
        "route_to_consumption:2",
        [("misuse_share_k", 0.6, 0.15)],
        3,
    )
    assert plan[0].arm == Intervention(("route_to_consumption",), route_share=0.15)


# --------------------------------------------------------------------------- the arms


def test_arms_are_the_simulators_futures_from_one_replay(world):
    s, acc = world
    acc = acc.iloc[::7].iloc[:40]
    ids, snaps = acc.borrower_id.to_numpy(), acc.snapshot.to_numpy()
    both = Intervention(("keep_drawing", "keep_external_live"), 3)
    arms = [wa.NO_ACTION, Intervention(("keep_drawing",), 3), both]
    mixed = [arms[i % 3] for i in range(len(ids))]
    got = wa.run_arms(s, ids, snaps, [*arms, mixed], K)
    for arm, g in zip(arms, got, strict=False):
        f = futures(s, ids, snaps, arm.actions, K, arm.keep_drawing_months)
        np.testing.assert_array_equal(g.closed, f.closed, err_msg=arm.label)
        np.testing.assert_array_equal(g.cause, f.cause, err_msg=arm.label)
        mine = np.array([m == arm for m in mixed])
        np.testing.assert_array_equal(got[3].cause[mine], f.cause[mine], err_msg=arm.label)
    with pytest.raises(ValueError, match="unknown action 'save_more'"):
        wa.run_arms(s, ids, snaps, [Intervention(("save_more",))], K)


def test_a_world_other_than_the_raw_datas_is_refused(world):
    s, acc = world
    acc = acc.iloc[:6]
    ids, snaps = acc.borrower_id.to_numpy(), acc.snapshot.to_numpy()
    tables = simulate(s)
    raw = tables["borrowers"].to_pandas()
    ev = tables["platform_events"].to_pandas()
    gone = int(ev[(ev.event == "closure") & (ev.month < 20)].borrower_id.iloc[0])
    with pytest.raises(wa.WorldMismatch, match=f"borrower {gone} is not on book at the end of"):
        wa.run_arms(s, np.array([gone]), np.array([28]), [wa.NO_ACTION], K)
    # the raw data's own world passes, and gives the same futures as without the check
    checked = wa.run_arms(s, ids, snaps, [wa.NO_ACTION], K, raw)
    plain = wa.run_arms(s, ids, snaps, [wa.NO_ACTION], K)
    np.testing.assert_array_equal(checked[0].closed, plain[0].closed)
    other = WorldSpec(**{**s.__dict__, "seed": s.seed + 1})
    with pytest.raises(wa.WorldMismatch, match=f"borrower {min(ids)} has signup_month"):
        wa.run_arms(other, ids, snaps, [wa.NO_ACTION], K, raw)
    story = wa.borrower_world(
        other, int(ids[0]), int(snaps[0]), np.zeros(1), ["tenure"], [], [], _score, K, raw
    )
    assert "skipped" in story
    assert wa.story_lines(story)[0].startswith("in the world / 模拟世界: not told (borrowers table")


# --------------------------------------------------------------------------- the test


NAMES = [
    "months_since_last_draw",
    "draw_months_3",
    "draw_months_6",
    "draw_months_12",
    "n_draws_3",
    "n_draws_6",
    "n_draws_12",
    "draw_amount_3",
    "draw_amount_6",
    "draw_amount_12",
    "draw_trend",
    "ext_active_products",
    "ext_cards",
    "ext_new_accounts_12",
    "ext_inquiries_6",
    "months_since_ext_activity",
    "ext_utilisation",
    "tenure",
    "line",
]


def _score(X: np.ndarray) -> np.ndarray:
    """A stand-in model: risk grows with months without external activity and idle months."""
    j = {n: i for i, n in enumerate(NAMES)}
    z = 0.25 * X[:, j["months_since_ext_activity"]] + 1.2 * (3 - X[:, j["draw_months_3"]]) - 4
    return 1.0 / (1.0 + np.exp(-z))


#: the advised draw of the synthetic borrowers (yuan), and no reason against it
DRAW = (300.0, "")


def _advised(acc: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic feature rows for real accounts, and the advice the stand-in model gives."""
    rng = np.random.default_rng(3)
    n = len(acc)
    feats = pd.DataFrame({n_: np.zeros(n) for n_ in NAMES})
    feats["draw_months_3"] = rng.integers(0, 3, n).astype(float)
    feats["months_since_ext_activity"] = rng.integers(6, 20, n).astype(float)
    feats["ext_active_products"] = rng.integers(0, 2, n).astype(float)
    feats["tenure"], feats["line"] = 24.0, 20_000.0
    # every 10th borrower already under the threshold: nothing to carry out
    feats.loc[::10, ["draw_months_3", "months_since_ext_activity"]] = (3.0, 0.0)
    feats.insert(0, "snapshot", acc.snapshot.to_numpy())
    feats.insert(0, "borrower_id", acc.borrower_id.to_numpy())
    recs = []
    for r, x in zip(acc.itertuples(), feats[NAMES].to_numpy(dtype=np.float64), strict=True):
        a = advice_core.advise(
            x, NAMES, _score, 0.2, levers=["keep_drawing", "keep_external_live"], draw=DRAW
        )
        recs.append(
            {
                "borrower_id": r.borrower_id,
                "snapshot": r.snapshot,
                "p_before": a.p_before,
                "p_after": a.p_after,
                "actions": " ".join(a.actions),
                "changes": json.dumps([list(c) for c in a.changes]),
                "draw_size": a.draw_size,
            }
        )
    return pd.DataFrame(recs), feats


def test_the_advice_carried_out_in_the_world(world):
    s, acc = world
    acc = acc.iloc[:150]
    adv, feats = _advised(acc)
    res = wa.evaluate(s, adv, feats, NAMES, _score, n_futures=K, max_borrowers=120)
    w = res.summary
    # borrowers already under the threshold have no advice to carry out
    tested = adv[adv.actions != ""].head(120)
    assert len(tested) == 120 > (adv.head(120).actions != "").sum()
    several = tested.actions.str.split().str.len() > 1
    # every tested borrower carried out its whole advice, several actions together too
    assert w["n"] == w["n_tested"] == 120 and w["n_advised"] == 150
    assert 0 < w["n_several"] == int(several.sum()) < 120
    for key in (
        "p_before",
        "p_after",
        "model_p_after",
        "total_before",
        "total_after",
        "overdue_before",
        "overdue_after",
    ):
        assert 0.0 <= w[key] <= 1.0, key
    # the whole bill: any closure holds the never-overdue and the overdue ones
    assert w["total_after"] == pytest.approx(w["p_after"] + w["overdue_after"])
    assert w["total_before"] == pytest.approx(w["p_before"] + w["overdue_before"])
    assert w["interest_paid"] == w["interest_after"] > 0 and w["interest_before"] > 0
    for fig in w["by_action"].values():
        assert {"total_before", "total_after", "overdue_before", "overdue_after"} <= set(fig)
        assert fig["interest_paid"] >= 0 and fig["kind"] in (
            "lowers risk",
            "avoids a trigger",
            "no clear effect",
        )
    # the draws carried out are the advised ones: never above the advised size
    kd = w["by_action"]["keep_drawing"]
    assert kd["drawn_after"] > kd["drawn_before"]
    whole = res.rows[res.rows.action == "advice"]
    assert len(whole) == 120 and w["p_after"] == pytest.approx(whole.p_after.mean())
    # the model's after-advice probability is the advice's own re-scored figure
    np.testing.assert_allclose(whole.model_p_after, tested.p_after)
    # an advice of two actions is both carried out in the same futures
    i = int(np.flatnonzero(several.to_numpy())[0])
    two = whole.iloc[i]
    assert "+" in two.arm
    acts = tuple(a.split(":")[0] for a in two.arm.split("+"))
    k = [int(a.split(":")[1].split("x")[0]) for a in two.arm.split("+") if ":" in a]
    (f,) = futures_arms(
        s, tested.borrower_id, tested.snapshot, [Intervention(acts, k[0] if k else 2, DRAW[0])], K
    )
    assert two.p_after == pytest.approx(float(f.p[i]))
    mine = (res.rows.borrower_id == two.borrower_id) & (res.rows.snapshot == two.snapshot)
    alone = res.rows[mine & (res.rows.action != "advice")]
    assert sorted(alone.action) == sorted(acts) and (alone.n_actions == len(acts)).all()
    ext = w["by_action"]["keep_external_live"]
    assert {"n", "true_change", "model_change"} <= set(ext)
    assert ext["model_change"] < 0  # the stand-in model believes an active file helps
    rows = res.rows[res.rows.action == "keep_external_live"]
    assert rows.after_thin_file.mean() < rows.before_thin_file.mean()
    assert ext["true_change"] == pytest.approx((rows.p_after - rows.p_before).mean())
    # per cause, the changes add up to the action's true change
    assert sum(ext["by_cause"].values()) == pytest.approx(ext["true_change"])
    assert ext["by_cause"]["thin_file"] < 0
    assert set(w["by_cause"]) == set(CAUSES)
    assert sorted(w["ranking"]) == sorted(w["by_action"])
    # same inputs, same futures
    again = wa.evaluate(s, adv, feats, NAMES, _score, n_futures=K, max_borrowers=120)
    pd.testing.assert_frame_equal(again.rows, res.rows)


def test_a_missing_feature_row_is_named(world):
    s, acc = world
    adv, feats = _advised(acc.iloc[:5])
    with pytest.raises(ValueError, match=f"no row for advised borrower {adv.borrower_id.iloc[2]}"):
        wa.evaluate(s, adv, feats.drop(index=2), NAMES, _score, n_futures=K, max_borrowers=10)
    with pytest.raises(ValueError, match="column.*changes missing"):
        wa.evaluate(s, adv.drop(columns="changes"), feats, NAMES, _score, K, 10)


def _summary_rows(true: list[float], model: list[float], action: str) -> pd.DataFrame:
    n = len(true)
    return pd.DataFrame(
        {
            "borrower_id": np.arange(n),
            "snapshot": 30,
            "action": action,
            "cost": 1,
            "p_before": 0.5,
            "p_after": 0.5 + np.asarray(true),
            "model_p_before": 0.6,
            "model_p_after": 0.6 + np.asarray(model),
        }
    )


def test_actions_are_ranked_by_true_cut_per_cost_and_sign_disagreements_named():
    rows = pd.concat(
        [
            _summary_rows([-0.2, -0.1], [-0.1, -0.1], "keep_external_live"),
            _summary_rows([0.05, 0.03], [-0.2, -0.1], "moderate_use"),
            _summary_rows([-0.3, -0.3], [-0.3, -0.2], "keep_drawing").assign(cost=3),
            _summary_rows([0.05, -0.03], [-0.1, -0.1], "route_to_consumption"),
        ]
    )
    w = wa.summarize(rows, n_advised=8, n_futures=4)
    assert w["n"] == 0 and "p_after" not in w
    by = w["by_action"]
    assert by["moderate_use"]["true_change"] == pytest.approx(0.04)
    assert by["keep_drawing"]["true_cut_per_cost"] == pytest.approx(0.1)
    assert w["ranking"] == [
        "keep_external_live",
        "keep_drawing",
        "route_to_consumption",
        "moderate_use",
    ]
    # a clear opposite sign is named; one inside the Monte Carlo noise is set apart
    assert w["sign_differs"] == ["moderate_use"]
    assert w["sign_unclear"] == ["route_to_consumption"]
    assert by["route_to_consumption"]["true_change_se"] == pytest.approx(0.04)


def test_the_recomputed_view_is_paired_with_the_world_on_the_same_borrowers():
    """The gap model view - world is the mean of per-borrower differences, on the borrowers
    the view scored, with the standard error of those differences (not of either mean)."""
    rows = _summary_rows([-0.2, -0.1, -0.3, 0.0], [-0.1] * 4, "advice").assign(
        model_p_before_recomputed=[0.5, 0.4, np.nan, 0.6],
        model_p_after_recomputed=[0.35, 0.45, np.nan, 0.40],
        scored_share_before_recomputed=[1.0, 1.0, 0.0, 1.0],
        scored_share_after_recomputed=[1.0, 1.0, 0.0, 1.0],
        **{f"{arm}_{c}": 0.0 for arm in ("before", "after") for c in CAUSES},
    )
    w = wa.summarize(rows, n_advised=4, n_futures=4)
    # world after: 0.3, 0.4, (0.2 not scored), 0.5; model view 0.35, 0.45, 0.40
    diff = np.array([0.05, 0.05, -0.10])
    assert w["model_p_after_recomputed_n"] == 3
    assert w["p_after_on_recomputed_rows"] == pytest.approx(0.4)
    assert w["model_p_after_recomputed_gap"] == pytest.approx(diff.mean())
    assert w["model_p_after_recomputed_gap_se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(3))
    bill = {f"{k}_{x}": 0.0 for k in ("total", "overdue", "interest") for x in ("before", "after")}
    bill.update(total_change_se=0.0, overdue_change_se=0.0, n_tested=4, n_several=0)
    line = wa.headline({**w, **bill, "seconds": 1.0, "next_months": 1})
    assert f"against the world {diff.mean():+.1%}" in line and "1 month(s) on" in line


def test_the_summary_line_and_tracker_figures(world):
    s, acc = world
    adv, feats = _advised(acc.iloc[:40])
    w = wa.evaluate(s, adv, feats, NAMES, _score, n_futures=K, max_borrowers=40).summary
    line = wa.headline(w)
    assert f"{w['n']} of {w['n_tested']} advised borrowers" in line
    assert f"{w['p_before']:.1%} -> {w['p_after']:.1%}" in line
    m = wa.metrics(w)
    assert m["advice_world_p_after"] == w["p_after"]
    assert m["advice_world_keep_external_live_true_change"] == pytest.approx(
        w["by_action"]["keep_external_live"]["true_change"]
    )
    assert "no advised borrower had an action" in wa.headline({"n": 0, "n_tested": 0})
    assert f"({w['n_several']} of several actions together" in line


def test_one_borrowers_world_before_and_after_its_advice(world):
    s, acc = world
    adv, feats = _advised(acc.iloc[:40])
    two = adv[adv.actions.str.split().str.len() == 2].iloc[0]
    i = int(np.flatnonzero(adv.borrower_id.to_numpy() == two.borrower_id)[0])
    x = feats[NAMES].to_numpy(dtype=np.float64)[i]
    changes = [tuple(c) for c in json.loads(two.changes)]
    story = wa.borrower_world(
        s,
        int(two.borrower_id),
        int(two.snapshot),
        x,
        NAMES,
        two.actions.split(),
        changes,
        _score,
        32,
        draw_size=DRAW[0],
    )
    f = futures(s, [two.borrower_id], [two.snapshot], None, 32)
    assert story["p_before"] == pytest.approx(float(f.p[0]))
    assert [a["action"] for a in story["actions"]] == ["keep_drawing", "keep_external_live"]
    k = 2
    for a in story["actions"]:
        k = int(a["arm"].split(":")[1].split("x")[0]) if ":" in a["arm"] else k
        (g,) = futures_arms(
            s, [two.borrower_id], [two.snapshot], [Intervention(a["action"], k, DRAW[0])], 32
        )
        assert a["p_after"] == pytest.approx(float(g.p[0]))
        assert a["model_p_after"] < two.p_before  # each lever lowers the stand-in's risk
    # the whole advice: both actions in the same futures, and the advice's own re-score
    both = story["whole"]
    (g,) = futures_arms(
        s,
        [two.borrower_id],
        [two.snapshot],
        [Intervention(("keep_drawing", "keep_external_live"), k, DRAW[0])],
        32,
    )
    assert both["p_after"] == pytest.approx(float(g.p[0]))
    assert both["model_p_after"] == pytest.approx(two.p_after)
    assert both["arm"] == f"keep_drawing:{k}x300+keep_external_live"
    lines = wa.story_lines(story)
    assert f"without the advice: closes within the horizon in {story['p_before']:.1%}" in lines[1]
    assert len(lines) == 5 and f"with the whole advice ({both['arm']}" in lines[-1]
    # an advice of one action is its own whole; no advice, no whole
    one = wa.borrower_world(
        s,
        int(two.borrower_id),
        int(two.snapshot),
        x,
        NAMES,
        two.actions.split()[:1],
        changes,
        _score,
        8,
        draw_size=DRAW[0],
    )
    assert len(one["actions"]) == 1 and one["whole"]["p_after"] == one["actions"][0]["p_after"]
    assert len(wa.story_lines(one)) == 3
    assert (
        wa.borrower_world(s, int(two.borrower_id), int(two.snapshot), x, NAMES, [], [], _score, 8)[
            "whole"
        ]
        is None
    )


# --------------------------------------------------------------------------- the stage

STAGE = [
    "tracking.enabled=false",
    "model.baselines=false",
    "explain.advice_rows=30",
    "explain.world_futures=8",
    "explain.plot_sample=300",
    "explain.dependence_top=1",
]


@pytest.mark.slow
def test_the_explain_stage_writes_advice_world_and_tells_the_story(tmp_path, capsys):
    from helpers import SMALL, compose_config, run_world

    from pipeline.stages.driver import execute
    from pipeline.stages.generate import world_spec

    cfg, _ = run_world(tmp_path, STAGE)
    summary = json.loads((tmp_path / "models" / "summary.json").read_text())
    w = summary["advice"]["world"]
    assert {"n", "p_before", "p_after", "model_p_after", "by_action"} <= set(w)
    assert w["n_advised"] == summary["advice"]["n"] and w["n"] == w["n_tested"] <= 30
    new = {"total_before", "total_after", "overdue_before", "overdue_after", "interest_paid"}
    assert new | {"model_p_after_recomputed"} <= set(w)
    assert abs(w["model_p_after_recomputed"] - w["model_p_before_recomputed"]) < 1
    for fig in w["by_action"].values():
        assert {"n", "true_change", "model_change"} | new <= set(fig)
    assert "world advice:" in capsys.readouterr().out
    adv = pd.read_parquet(tmp_path / "models" / "advice.parquet")
    # no advised draw is larger than the borrower's median monthly repayment, and a draw
    # is advised only with its size; actions carry the world's names
    sized = adv.draw_size.notna()
    assert (adv.draw_size[sized] <= adv.repay_capacity[sized]).all()
    drawing = adv.actions.str.contains("keep_drawing")
    assert (drawing == sized).all()
    names = {t.split(":")[0] for a in adv.actions for t in a.split()}
    assert names <= set(ACTIONS)
    # the advised are the riskiest: by probability, then by the score before calibration
    order = adv[["p_before", "raw_score"]].to_numpy()
    assert all(tuple(order[i]) >= tuple(order[i + 1]) for i in range(len(order) - 1))
    rec = adv[adv.actions != ""].iloc[0]
    story_cfg = compose_config(
        tmp_path, [*SMALL, *STAGE, f"explain.borrower_id={rec.borrower_id}"], stage="explain"
    )
    execute(story_cfg, [])
    assert "in the world / 模拟世界" in capsys.readouterr().out
    story = json.loads((tmp_path / "models" / f"borrower_{rec.borrower_id}.json").read_text())
    world = story["advice"]["world"]
    f = futures(world_spec(cfg), [rec.borrower_id], [world["snapshot"]], None, 8)
    assert world["p_before"] == pytest.approx(float(f.p[0]))
    assert world["actions"] and all(a["action"] in ACTIONS for a in world["actions"])
    # asked with another world's config, the story says so instead of telling another world
    other = compose_config(
        tmp_path, [*STAGE, f"explain.borrower_id={rec.borrower_id}"], stage="explain"
    )
    execute(other, [])
    assert "in the world / 模拟世界: not told" in capsys.readouterr().out


def test_the_report_section_ranks_actions_and_names_sign_disagreements():
    from pipeline.core import report

    rows = pd.concat(
        [
            _summary_rows([-0.2, -0.1], [-0.1, -0.1], "keep_external_live"),
            _summary_rows([0.05, 0.03], [-0.2, -0.1], "moderate_use"),
            _summary_rows([0.05, -0.03], [-0.1, -0.1], "route_to_consumption"),
        ]
    )
    w = wa.summarize(rows, n_advised=6, n_futures=4)
    w.update(n=2, n_tested=4, p_before=0.5, p_after=0.35, model_p_after=0.45)
    w.update(
        true_cut=0.3, model_gap=0.1, by_cause={c: {"before": 0.1, "after": 0.05} for c in CAUSES}
    )
    sec = report._advice_world(report.Inputs(summary={"advice": {"world": w}}))
    assert [r[0].lines[0][0] for r in sec["by_action"].rows] == w["ranking"]
    assert sec["world"]["differs"] == ["moderate_use"]
    assert sec["world"]["works"] == ["keep_external_live"]
    page = report.render(report.Inputs(summary={"advice": {"world": w}}))
    part = page[page.index('<section id="advice-world">') :]
    part = part[: part.index("</section>")]
    assert "<h2>Does the advice work?</h2>" in part
    assert "disagree in sign on:</b> <code>moderate_use</code>" in part
    assert "35.0%" in part and "no: opposite signs" in part
    assert "within the Monte Carlo noise" in part and "<code>route_to_consumption</code>" in part
    # the whole bill and what each action does are in the section
    assert "the whole bill per advised borrower" in part and "closures, any cause" in part
    assert "Lowers the borrower's underlying risk" in part and "Avoids a monitoring trigger" in part
    # a table run has no world to test
    table = report.Inputs(model={"mode": "table"}, summary={"advice": {"world": w}})
    assert report._advice_world(table) == {"world": None}


# --------------------------------------------------------------------------- the model's view


def test_the_models_view_is_recomputed_from_each_futures_own_traces(world):
    """At the advised snapshot itself the traces add nothing: every future's features are
    the feature code's on the recorded history. A month on, they are the future's own."""
    from pipeline.core import features as feat_core

    s, acc = world
    acc = acc[acc.snapshot == 28].iloc[:12]
    ids, snaps = acc.borrower_id.to_numpy(), acc.snapshot.to_numpy()
    tables = simulate(s)
    fspec = feat_core.FeatureSpec(
        snapshots=(28,), horizon=3, valid_snapshots=(), oot_snapshots=(), never_overdue_only=True
    )
    names = ["draw_amount_12", "util_mean_3", "months_since_last_draw", "tenure"]
    cols, _ = feat_core.block_features(tables, 0, s.n_borrowers, s.n_months, fspec)
    stored = pd.DataFrame({n: cols[n] for n in ["borrower_id", *names]}).set_index("borrower_id")
    X = stored.loc[ids, names].to_numpy(dtype=np.float64)
    history = {n: tables[n] for n in ("borrowers", *wa.TRACE_TABLES)}
    none, drawn = futures_arms(
        s,
        ids,
        snaps,
        [wa.NO_ACTION, Intervention(("keep_drawing",), 1, 200.0)],
        K,
        trace_months=1,
        traced=(0, 1),
    )
    assert none.traces is not None and len(none.traces["account_months"]) == len(ids) * K
    for j, name in enumerate(names):
        pick = lambda F, j=j: F[:, j]  # noqa: E731 - the "model" reads one feature
        same, share = wa.recomputed(s, fspec, history, none, X, names, pick, 0)
        np.testing.assert_allclose(same, X[:, j], rtol=1e-5, err_msg=name)
        assert (share == 1).all()
    # a month on: the advised draw is in every scored future's last 12 months' amount
    j = names.index("months_since_last_draw")
    pick = lambda F: F[:, j]  # noqa: E731
    after, share = wa.recomputed(s, fspec, history, drawn, X, names, pick, 1)
    before, _ = wa.recomputed(s, fspec, history, none, X, names, pick, 1)
    assert (share > 0).all() and (share <= 1).all()
    ok = np.isfinite(after) & np.isfinite(before)
    assert ok.sum() >= 10
    assert (after[ok] <= before[ok]).all() and (after[ok] == 0).mean() > 0.8


def test_chunks_spread_over_processes_give_the_same_futures(world):
    s, acc = world
    acc = acc.iloc[::9].iloc[:30]
    ids, snaps = acc.borrower_id.to_numpy(), acc.snapshot.to_numpy()
    assert len(np.unique(ids // s.sim.chunk_size)) > 1
    mixed = [Intervention(("keep_drawing",), 2, 150.0) if i % 2 else wa.NO_ACTION for i in ids]
    arms = [wa.NO_ACTION, mixed]
    one = wa.run_arms(s, ids, snaps, arms, 4, None, 1, (0, 1))
    two = wa.run_arms(s, ids, snaps, arms, 4, None, 1, (0, 1), n_jobs=2)
    for a, b in zip(one, two, strict=True):
        for name in ("borrower_id", "snapshot", "closed", "cause", "interest", "draw_amount"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert a.arm == b.arm
        assert a.traces is not None and b.traces is not None
        for name, t in a.traces.items():
            assert t.equals(b.traces[name]), name


def test_two_actions_moving_the_same_feature_each_take_their_own_changes():
    """Drawing in more months and a heavy user's one draw a month both move draw counts;
    each change goes to the action that moves the feature its way."""
    names = ["draw_months_3", "n_draws_3", "n_draws_6", "draw_months_6", "util_mean_3"]
    x = np.array([1.0, 4.0, 6.0, 2.0, 0.9])
    changes = [
        ("draw_months_3", 1.0, 2.0),
        ("draw_months_6", 2.0, 3.0),
        ("n_draws_6", 6.0, 3.0),
        ("util_mean_3", 0.9, 0.5),
    ]
    plan = wa.steps(x, names, "keep_drawing:1 moderate_use:2", changes, 3, 200.0)
    got = {s_.action: {c[0] for c in s_.changes} for s_ in plan}
    assert got["keep_drawing"] == {"draw_months_3", "draw_months_6"}
    assert got["moderate_use"] == {"n_draws_6", "util_mean_3"}
