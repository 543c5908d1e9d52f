"""The competing-risks model: person-months, incidence, censoring, metrics, leaderboard,
and the survival stage's outputs on the shared trained world."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from pipeline.base.causes import CAUSES
from pipeline.base.config import ConfigError, validate
from pipeline.core import survival as core

LOW_YIELD = core.CLASSES.index("low_yield")
SUDDEN = core.CLASSES.index("sudden_stop")


# ---- person-months -------------------------------------------------------------------


def test_person_months_stop_at_the_closure_the_end_or_the_longest_horizon():
    time = np.array([2, 5, 3, 15])
    status = np.array([LOW_YIELD, 0, core.OVERDUE_CLASS, SUDDEN])
    pm = core.person_months(time, status, max_ahead=12)
    assert pm.row.tolist() == [0, 0] + [1] * 5 + [2] * 3 + [3] * 12
    assert pm.ahead.tolist() == [1, 2, 1, 2, 3, 4, 5, 1, 2, 3, *range(1, 13)]
    # the month of a closure carries its class; a closure after the last month is unseen
    assert pm.target.tolist() == [0, LOW_YIELD] + [0] * 5 + [0, 0, core.OVERDUE_CLASS] + [0] * 12
    assert np.all(pm.weight == 1.0)


def test_subsampling_keeps_every_closure_and_weights_the_rest():
    rng = np.random.default_rng(1)
    time = rng.integers(1, 13, size=4000)
    status = np.where(rng.random(4000) < 0.3, LOW_YIELD, 0)
    full = core.person_months(time, status, 12)
    half = core.person_months(time, status, 12, keep=0.25, seed=3)
    closures = full.target != 0
    assert (half.target != 0).sum() == closures.sum()
    assert np.all(half.weight[half.target != 0] == 1.0)
    assert np.all(half.weight[half.target == 0] == 4.0)
    # the weighted count of event-free months estimates the full count
    kept = half.weight[half.target == 0].sum()
    assert abs(kept / (~closures).sum() - 1) < 0.05
    again = core.person_months(time, status, 12, keep=0.25, seed=3)
    assert np.array_equal(again.row, half.row) and np.array_equal(again.ahead, half.ahead)
    with pytest.raises(ValueError, match="keep"):
        core.person_months(time, status, 12, keep=0.0)


def test_event_of_censors_at_the_split_end_and_keeps_the_follow_up():
    snap = np.array([12, 12, 20, 30])
    close = np.array([14, 30, np.iinfo(np.int32).max, 33])
    cls = np.array([LOW_YIELD, SUDDEN, 0, core.OVERDUE_CLASS])
    end = np.array([24, 24, 24, 35])
    time, status, follow = core.event_of(snap, close, cls, end)
    assert time.tolist() == [2, 12, 4, 3]
    assert status.tolist() == [LOW_YIELD, 0, 0, core.OVERDUE_CLASS]  # 30 > 24: censored
    assert follow.tolist() == [12, 12, 4, 5]
    with pytest.raises(ValueError, match="closed at or before"):
        core.event_of(np.array([14]), np.array([14]), np.array([1]), np.array([24]))


def test_observed_selects_on_the_follow_up_only_never_on_the_outcome():
    """A row that closed early in a window the world does not reach is not kept: keeping
    it (and not its open twin) would fill the horizon with closures."""
    follow = np.array([5, 5, 12])
    assert core.observed(follow, 6).tolist() == [False, False, True]
    assert core.observed(follow, 5).tolist() == [True, True, True]


# ---- incidence -----------------------------------------------------------------------


def test_incidence_from_constant_hazards_matches_the_closed_form():
    n, K = 3, 6
    h = np.zeros((n, K, core.N_CLASSES))
    h[:, :, LOW_YIELD] = 0.02
    h[:, :, SUDDEN] = 0.03
    h[:, :, core.OVERDUE_CLASS] = 0.01
    h[:, :, 0] = 1 - 0.06
    cif = core.incidence(h)
    t = np.arange(1, K + 1)
    survive = 0.94**t
    assert np.allclose(cif[0, :, LOW_YIELD - 1], 0.02 * (1 - survive) / 0.06)
    assert np.allclose(cif[0, :, SUDDEN - 1], 0.03 * (1 - survive) / 0.06)
    # every class's incidence plus still open adds up to one; "any" leaves overdue out
    assert np.allclose(cif[0].sum(axis=1) + survive, 1.0)
    assert np.allclose(core.any_closure(cif)[0], 0.05 * (1 - survive) / 0.06)


def test_aalen_johansen_without_censoring_is_the_share_closed_and_with_it_reweights():
    time = np.array([1, 2, 2, 3, 3, 3])
    status = np.array([LOW_YIELD, SUDDEN, 0, LOW_YIELD, 0, 0])
    aj = core.aalen_johansen(time, status, 4)
    # month 1: 1 of 6; month 2: 1 of 5 at risk; month 3: 1 of 3 at risk (one censored at 2)
    s1, s2 = 5 / 6, 5 / 6 * 4 / 5
    assert np.isclose(aj[0, LOW_YIELD - 1], 1 / 6)
    assert np.isclose(aj[1, SUDDEN - 1], s1 * 1 / 5)
    assert np.isclose(aj[2, LOW_YIELD - 1], 1 / 6 + s2 * 1 / 3)
    assert np.isnan(aj[3]).all()  # no row at risk in month 4
    whole = core.aalen_johansen(np.array([1, 2, 4, 4]), np.array([SUDDEN, SUDDEN, 0, 0]), 4)
    assert np.isclose(whole[3, SUDDEN - 1], 0.5)


# ---- metrics -------------------------------------------------------------------------


def test_c_index_counts_the_pairs_a_truncated_horizon_allows():
    time = np.array([1, 2, 3, 3, 5])
    status = np.array([LOW_YIELD, SUDDEN, 0, core.OVERDUE_CLASS, 0])
    good = np.array([0.9, 0.8, 0.1, 0.2, 0.05])
    assert core.c_index(good, time, status, 3) == 1.0
    assert core.c_index(-good, time, status, 3) == 0.0
    # the overdue closure is a control however late: pairs (0,1..4), (1,2..4) -> 7
    bad = good.copy()
    bad[3] = 0.95
    assert np.isclose(core.c_index(bad, time, status, 3), 5 / 7)


def test_evaluate_gives_no_figure_where_the_world_ends_first():
    rng = np.random.default_rng(0)
    n = 3000
    risk = rng.random(n)
    closes = rng.random(n) < 0.3 * risk
    time = np.where(closes, rng.integers(1, 4, n), 3)
    status = np.where(closes, LOW_YIELD, 0)
    follow = np.full(n, 3)
    cif = np.zeros((n, 6, core.N_CLASSES - 1))
    cif[:, :, LOW_YIELD - 1] = (0.3 * risk)[:, None] * np.minimum(np.arange(1, 7), 3)[None] / 3
    ev = core.evaluate(cif, time, status, follow, [1, 3, 6], reps=10)
    assert ev["td_auc"]["6"] is None and ev["ece_by_horizon"]["6"] is None
    assert "the world ends first" in ev["by_horizon"]["6"]["why_none"]
    assert ev["td_auc"]["3"]["auc"] > 0.6 and ev["td_auc"]["3"]["se"] > 0
    assert ev["ibs"]["months"] == [1, 2, 3]
    assert ev["ibs"]["se"] > 0
    assert ev["ece_by_horizon"]["3"]["n"] == n


def test_calibration_per_month_repairs_a_halved_incidence():
    rng = np.random.default_rng(2)
    n = 20_000
    true_p = rng.uniform(0.02, 0.4, n)
    y = rng.random(n) < true_p
    time = np.where(y, 2, 3)
    status = np.where(y, LOW_YIELD, 0)
    follow = np.full(n, 3)
    cif = np.zeros((n, 3, core.N_CLASSES - 1))
    cif[:, 1:, LOW_YIELD - 1] = (true_p / 2)[:, None]
    cal = core.fit_calibration(cif, time, status, follow)
    assert cal.fitted.tolist() == [False, True, True]  # month 1 saw no closure
    fixed = core.calibrate(cif, cal)
    before = np.abs(core.any_closure(cif)[:, 1].mean() - y.mean())
    after = np.abs(core.any_closure(fixed)[:, 1].mean() - y.mean())
    assert after < 0.005 < before
    back = core.Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert np.allclose(core.calibrate(cif, back), fixed)
    # a month no validation row reaches carries the last fitted month's map
    a, b = core.carried_maps(core.Calibration(cal.a, cal.b, np.array([False, True, False]), cal.n))
    assert (a[0], b[0]) == (0.0, 1.0) and (a[2], b[2]) == (cal.a[1], cal.b[1])


def test_the_design_gathers_its_rows_block_by_block_into_the_same_float32_matrix(monkeypatch):
    """Gathered a block at a time, written straight into float32: the same numbers as the
    person-month rows copied whole, then cast."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 4)) * 1e3  # float64 values that float32 rounds
    X[3, 2] = np.nan
    time = rng.integers(1, 13, 50)
    pm = core.person_months(time, np.zeros(50, dtype=np.int64), 12)
    want = np.column_stack([X[pm.row].astype(np.float32), pm.ahead.astype(np.float32)]).astype(
        np.float32
    )
    monkeypatch.setattr(core, "DESIGN_BLOCK", 7)  # several blocks, the last one partial
    got = core.design(X, pm.ahead, pm.row)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(core.design(X[pm.row], pm.ahead), want)  # rows given whole
    np.testing.assert_array_equal(core.design(X, 3)[:, -1], np.full(50, 3, np.float32))


def test_the_model_learns_which_cause_a_feature_drives():
    """Two features, each raising one cause's monthly hazard: the fitted model ranks the
    cause of the larger feature first on fresh rows."""
    rng = np.random.default_rng(5)

    def world(n):
        X = rng.random((n, 2)).astype(np.float32)
        h_low, h_sud = 0.01 + 0.12 * X[:, 0], 0.01 + 0.12 * X[:, 1]
        time = np.full(n, 12)
        status = np.zeros(n, dtype=np.int64)
        open_ = np.ones(n, dtype=bool)
        for k in range(1, 13):
            u = rng.random(n)
            low = open_ & (u < h_low)
            sud = open_ & ~low & (u < h_low + h_sud)
            time[low | sud] = k
            status[low], status[sud] = LOW_YIELD, SUDDEN
            open_ &= ~(low | sud)
        return X, time, status

    X, t, s = world(4000)
    Xv, tv, sv = world(1000)
    params = core.lgb_params(7, 0.1, 20, 1.0, 1.0, 0, 0.0, 63, 1, 0)
    pm, pmv = core.person_months(t, s, 12, 0.5, 0), core.person_months(tv, sv, 12, 0.5, 1)
    model = core.fit(X, pm, Xv, pmv, ["a", "b"], params, 80, 10)
    Xt = rng.random((500, 2)).astype(np.float32)
    cif = core.incidence(core.hazards(model, Xt, 12))
    first = core.cause_ranking(cif[:, 5])[:, 0]
    want = np.where(Xt[:, 0] > Xt[:, 1], CAUSES.index("low_yield"), CAUSES.index("sudden_stop"))
    clear = np.abs(Xt[:, 0] - Xt[:, 1]) > 0.2
    assert (first[clear] == want[clear]).mean() > 0.9
    F = core.any_closure(cif)
    assert np.all(np.diff(F, axis=1) >= -1e-12)  # incidence never falls with the horizon
    again = core.fit(X, pm, Xv, pmv, ["a", "b"], params, 80, 10)
    assert again.model_to_string() == model.model_to_string()  # same data and seed

    # the curves up to a horizon are those of the full curves to the bit: months after
    # it are not predicted (a map carried from an earlier month, a month before any map)
    cal = core.Calibration(
        np.array([0.0, 0.3, 0.0, -0.2, 0.0, 0.1] * 2),
        np.array([1.0, 0.9, 1.0, 1.1, 1.0, 1.0] * 2),
        np.array([False, True, False, True, False, True] * 2),
        np.full(12, 100, dtype=np.int64),
    )
    full = core.predicted_incidence(model, cal, Xt)
    assert full.shape == (500, 12, core.N_CLASSES - 1)
    for months in (1, 3, 4, 12):
        head = core.predicted_incidence(model, cal, Xt, months)
        assert head.shape[1] == months
        assert np.array_equal(head, full[:, :months])
    cause = core.CauseModel(model, cal, ["a", "b"], [1, 3, 6, 12], [1, 3, 6, 12])
    want_cols = core.curve_columns(full, [3, 4])
    got_cols = cause.curves(Xt, [4, 3])
    assert list(got_cols) == [f"risk_h4{s}" for s in ["", *[f"_{c}" for c in CAUSES]]] + [
        f"risk_h3{s}" for s in ["", *[f"_{c}" for c in CAUSES]]
    ]
    assert all(np.array_equal(got_cols[k], want_cols[k]) for k in want_cols)
    for months in (0, 13):
        with pytest.raises(ValueError, match="months 1 .. 12"):
            core.predicted_incidence(model, cal, Xt, months)


# ---- the leaderboard -----------------------------------------------------------------


def test_leaderboard_grades_on_the_oracle_rows_beside_the_ceiling():
    truth = np.array(["low_yield", "sudden_stop", "low_yield", "thin_file"], dtype=object)
    right = {"reason_1_cause": truth.copy()}
    wrong = {"reason_1_cause": np.array(["thin_file"] * 4, dtype=object)}
    ceiling = {"reason_1_cause": np.array(["low_yield", "low_yield", "low_yield"], dtype=object)}
    at = np.array([0, 1, 2])
    board = core.leaderboard({"right": right, "wrong": wrong}, truth, (at, ceiling))
    by = {b["name"]: b for b in board}
    assert by["right"]["top1"] == 1.0 and by["right"]["n"] == 3
    assert by["right"]["ceiling_top1"] == pytest.approx(2 / 3)
    assert by["wrong"]["top1"] == 0.0 and by["wrong"]["all_top1"] == 0.25
    assert by["right"]["by_cause"]["sudden_stop"]["ceiling_top1"] == 0.0
    alone = core.leaderboard({"right": right}, truth, None)
    assert alone[0]["ceiling_top1"] is None and alone[0]["n"] == 4


# ---- config --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.horizons=[]", "model.horizons"),
        ("model.horizons=[0,3]", "model.horizons"),
        ("model.horizons=[3,3]", "model.horizons"),
        ("model.survival_keep=0", "model.survival_keep"),
        ("model.survival_rounds=0", "model.survival_rounds"),
        ("model.survival_learning_rate=2", "model.survival_learning_rate"),
        ("model.survival_patience=-1", "model.survival_patience"),
        ("model.survival_threads=-1", "model.survival_threads"),
        ("model.survival_snapshot_step=0", "model.survival_snapshot_step"),
    ],
)
def test_bad_survival_keys_are_refused_naming_the_key(make_cfg, override, key):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(override))
    assert key in str(err.value)


def test_the_hazard_model_trains_on_every_nth_training_snapshot_counted_from_the_last():
    from pipeline.stages.survival import _thinned

    snap = np.array([8, 9, 10, 11, 12, 20, 24, 26, 30, 9, 12])
    split = np.array(["train"] * 6 + ["valid", "valid", "oot"] + ["train"] * 2)
    out = _thinned(split, snap, 3)
    # training snapshots 8..12 and 20, counted back from the last: 20, 12, 11, 10, ..;
    # every third of them is 20 and 10
    assert set(snap[out == "train"]) == {20, 10}
    assert (out[6:9] == split[6:9]).all()  # validation and out-of-time rows untouched
    assert set(out[(split == "train") & ~np.isin(snap, [10, 20])]) == {"unused"}
    assert (_thinned(split, snap, 1) == split).all()


# ---- the stage on the shared world ----------------------------------------------------


def test_the_run_writes_the_survival_summary_keys_the_curves_and_the_leaderboard(trained_world):
    root, _, summary = trained_world
    sv = summary["survival"]
    assert {"horizons", "td_auc", "ibs", "ece_by_horizon"} <= set(sv)
    assert sv["horizons"] == [1, 3, 6, 12]
    assert set(sv["td_auc"]) == {"1", "3", "6", "12"}
    three = sv["td_auc"]["3"]
    assert 0.5 < three["auc"] < 1 and three["se"] > 0 and three["n"] > 0
    # the SMALL world ends 5 months after its first out-of-time snapshot
    assert sv["td_auc"]["12"] is None and sv["ece_by_horizon"]["12"] is None
    assert isinstance(sv["ibs"], float) and 0 < sv["ibs"] < 0.25
    names = [e["name"] for e in summary["explainers"]]
    assert names[:2] == ["shap_registry", "shap_learned_weights"] and "cause_model" in names
    for e in summary["explainers"]:
        assert {"name", "top1", "top3", "n", "ceiling_top1"} <= set(e)
        assert e["n"] > 0 and 0 <= e["top1"] <= e["top3"] <= 1 and e["top1_se"] > 0
    # one set of closures and one ceiling for every explainer
    assert len({(e["n"], e["ceiling_top1"]) for e in summary["explainers"]}) == 1
    models = root / "models"
    assert (models / "survival" / "survival_curves.png").exists()
    # the fit stops model.survival_patience rounds after its best (or at the round cap),
    # not after the classifier's patience
    fit = json.loads((models / "survival" / "evaluation.json").read_text())["training"]
    assert fit["patience"] == 10 and fit["learning_rate"] == 0.05
    assert fit["rounds"] in (fit["best_iteration"] + fit["patience"], 300), fit
    # every training snapshot by default (model.survival_snapshot_step=1)
    assert fit["snapshot_step"] == 1 and fit["train_snapshots"] == [12, 14, 16, 18, 20]
    reasons = models / "survival" / "reasons.parquet"
    import pyarrow.parquet as pq

    table = pq.read_table(reasons).to_pandas()
    assert set(table.cause_1) <= set(CAUSES)
    assert (table.cause_1_incidence >= table.cause_2_incidence).all()
    assert (table.p_any_12m >= table.p_any_1m - 1e-12).all()
    # features for a seeded sample of at most model.survival_shap_rows rows, the rest empty
    has = table.cause_1_feature_1 != ""
    assert has.sum() == min(len(table), 2000) > 0
    assert table.cause_1_feature_1_shap[~has].isna().all()
    assert table.cause_1_feature_1_shap[has].notna().all()
    page = (models / "report.html").read_text()
    assert 'id="survival"' in page and 'data-plot="survival_curves"' in page


def test_the_explain_stage_ranks_causes_by_the_cause_model_and_grades_that_ranking(trained_world):
    """The run fits the cause model before the explain stage, whose headline causes and
    fidelity are the cause model's: the same figure, on the same closures, as the
    leaderboard's cause_model row; the SHAP-mapped reasons are graded beside it."""
    import pyarrow.parquet as pq

    root, _, summary = trained_world
    fid = summary["fidelity"]
    assert fid["source"] == "cause_model" and fid["horizon"] == 3
    board = {e["name"]: e for e in summary["explainers"]}
    cm, pair = board["cause_model"], fid["paired"]
    assert pair["n"] == cm["n"] and pair["top1"] == pytest.approx(cm["top1"], abs=1e-12)
    assert pair["ceiling_top1"] == pytest.approx(cm["ceiling_top1"], abs=1e-12)
    shap = fid["shap"]
    assert shap["paired"]["n"] == pair["n"] and 0 <= shap["paired"]["top1"] <= 1
    assert shap["paired"]["top1"] != pair["top1"]  # two rankings, two figures
    mine = pq.read_table(root / "models" / "reasons.parquet").to_pandas()
    theirs = pq.read_table(root / "models" / "survival" / "reasons.parquet").to_pandas()
    both = mine.merge(theirs, on=["borrower_id", "snapshot"], suffixes=("", "_sv"))
    assert len(both) == len(theirs) > 0
    for r in (1, 2, 3):
        assert (both[f"cause_{r}"] == both[f"cause_{r}_sv"]).all()
    page = (root / "models" / "report.html").read_text()
    assert "ranked by the competing-risks cause model" in page


def test_without_a_cause_model_fitted_beside_the_classifier_explain_ranks_by_shap(
    tmp_path, trained_world
):
    import shutil

    import pyarrow.parquet as pq
    from helpers import SMALL, compose_config

    from pipeline.adapters.tracking import from_config
    from pipeline.stages.driver import run_pipeline

    root, _, summary = trained_world
    shutil.copytree(root / "models", tmp_path / "models")
    shutil.copytree(root / "data", tmp_path / "data")
    shap_pair = summary["fidelity"]["shap"]["paired"]
    for extra, why in (
        (["explain.cause_source=shap"], "explain.cause_source=shap"),
        (["model.survival=false"], "model.survival=false"),
    ):
        cfg = compose_config(tmp_path, [*SMALL, "tracking=off", *extra], "explain")
        out = run_pipeline(cfg, from_config(cfg.tracking), ["explain"])
        fid = out["fidelity"]
        assert fid["source"] == "shap" and fid["why"] == why and "shap" not in fid
        # the SHAP-mapped reasons' own figure, as graded beside the cause model before
        assert fid["paired"]["top1"] == pytest.approx(shap_pair["top1"], abs=1e-12)
        table = pq.read_table(tmp_path / "models" / "reasons.parquet").to_pandas()
        assert (table.cause_1 == table.reason_1_cause).all()


def test_the_hazard_model_file_is_the_same_whatever_the_thread_count(tmp_path, trained_world):
    """model.survival_threads=0 follows the machine's load; the trees do not depend on
    the thread count and the saved text records the setting, so the file is the same."""
    import shutil

    from helpers import SMALL, compose_config

    from pipeline.adapters.tracking import from_config
    from pipeline.stages.driver import run_pipeline

    root, _, _ = trained_world
    shutil.copytree(root / "models", tmp_path / "models")
    shutil.copytree(root / "data", tmp_path / "data")
    texts, threads = [], []
    for n in (1, 2):
        cfg = compose_config(
            tmp_path, [*SMALL, "tracking=off", f"model.survival_threads={n}"], "survival"
        )
        out = run_pipeline(cfg, from_config(cfg.tracking), ["survival"])
        threads.append(out["survival"]["fit_threads"])
        texts.append((tmp_path / "models" / "survival" / "model.txt").read_text())
    assert threads == [1, 2]
    assert texts[0].replace("[num_threads: 1]", "[num_threads: 2]") == texts[1]
    assert texts[0].count("[num_threads: 1]") == 1
    # the default run recorded its setting (0: the idle cores), not the count it used
    default = (root / "models" / "survival" / "model.txt").read_text()
    assert default.count("[num_threads: 0]") == 1
    assert default.replace("[num_threads: 0]", "[num_threads: 1]") == texts[0]


def test_a_refitted_cause_model_removes_the_explain_stages_ranking_until_it_runs_again(
    tmp_path, trained_world
):
    """The explain stage's cause ranking and its fidelity were made by the cause model:
    a survival run (refitted or switched off) removes them, so that no reader mixes one
    cause model's ranking with another's; the explain stage writes them again."""
    import shutil

    from helpers import SMALL, compose_config

    from pipeline.adapters.tracking import from_config
    from pipeline.stages.driver import run_pipeline

    root, _, _ = trained_world
    shutil.copytree(root / "models", tmp_path / "models")
    shutil.copytree(root / "data", tmp_path / "data")
    models = tmp_path / "models"
    ranked = [
        models / "reasons.parquet",
        models / "fidelity.json",
        models / "summary_parts" / "explain.json",
    ]
    kept = [models / "shap_importance.json", models / "advice.parquet"]
    assert all(f.exists() for f in ranked + kept)
    for extra in ([], ["model.survival=false"]):
        cfg = compose_config(tmp_path, [*SMALL, "tracking=off", *extra], "survival")
        run_pipeline(cfg, from_config(cfg.tracking), ["survival"])
        assert not any(f.exists() for f in ranked), extra
        assert all(f.exists() for f in kept), extra  # not made by the cause model
        cfg = compose_config(tmp_path, [*SMALL, "tracking=off", *extra], "explain")
        out = run_pipeline(cfg, from_config(cfg.tracking), ["explain"])
        assert all(f.exists() for f in ranked), extra
        assert out["fidelity"]["source"] == ("shap" if extra else "cause_model")


def test_the_portable_text_refuses_a_model_text_without_one_thread_line():
    import lightgbm as lgb

    from pipeline.stages.survival import portable_model

    X = np.random.default_rng(0).normal(size=(200, 2))
    b = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lgb.Dataset(X, (X[:, 0] > 0).astype(int)),
        2,
    )
    assert "[num_threads: 7]" in portable_model(b, 7)

    class _NoLine:
        def model_to_string(self) -> str:
            return "tree\nend of trees\n"

    with pytest.raises(RuntimeError, match="num_threads"):
        portable_model(_NoLine(), 0)  # type: ignore[arg-type]


def test_switched_off_the_stage_leaves_no_figures_of_an_earlier_run(tmp_path, trained_world):
    import shutil

    from helpers import SMALL, compose_config

    from pipeline.adapters.tracking import from_config
    from pipeline.stages.driver import run_pipeline

    root, _, _ = trained_world
    shutil.copytree(root / "models", tmp_path / "models")
    shutil.copytree(root / "data", tmp_path / "data")
    assert (tmp_path / "models" / "summary_parts" / "survival.json").exists()
    cfg = compose_config(tmp_path, [*SMALL, "tracking=off", "model.survival=false"], "survival")
    summary = run_pipeline(cfg, from_config(cfg.tracking), ["survival"])
    assert "survival" not in summary and "explainers" not in summary
    assert not (tmp_path / "models" / "summary_parts" / "survival.json").exists()
    assert not (tmp_path / "models" / "survival" / "evaluation.json").exists()


def test_the_leaderboards_shap_reasons_read_the_models_training_medians(
    tmp_path, trained_world, monkeypatch
):
    """The leaderboard grades the explain stage's reason rule: a risky side is read
    against the model's saved training medians, not the medians of the closures."""
    import shutil

    from helpers import SMALL, compose_config

    from pipeline.adapters.catalog import load_model
    from pipeline.adapters.tracking import from_config
    from pipeline.core import explain as explain_core
    from pipeline.stages.driver import run_pipeline

    root, _, _ = trained_world
    shutil.copytree(root / "models", tmp_path / "models")
    shutil.copytree(root / "data", tmp_path / "data")
    _, meta = load_model(tmp_path / "models")
    medians = explain_core.reference_medians(meta, meta["feature_names"])
    assert medians is not None and np.isfinite(medians).any()
    seen: list[Any] = []
    real = explain_core.reason_codes

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[6] if len(args) > 6 else kwargs.get("reference"))
        return real(*args, **kwargs)

    monkeypatch.setattr(explain_core, "reason_codes", spy)
    cfg = compose_config(tmp_path, [*SMALL, "tracking=off"], "survival")
    run_pipeline(cfg, from_config(cfg.tracking), ["survival"])
    assert len(seen) == 3  # registry, learned weights, snapshot reference
    for ref in seen:
        np.testing.assert_array_equal(ref, medians)
