"""Explanations: cause attribution, reason codes, fidelity against the simulator's truth,
probability-space contributions and the one-borrower report."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from helpers import cause_matrix

from pipeline.base.causes import CAUSES
from pipeline.base.io import DataError
from pipeline.base.registry import BY_NAME, FEATURE_NAMES, risk_side
from pipeline.core import explain as ex

NAMES = list(FEATURE_NAMES)


def _by_cause(cause: str) -> list[int]:
    return [j for j, f in enumerate(NAMES) if BY_NAME[f].causes[:1] == (cause,)]


def test_fixed_attribution_rows_sum_to_one_and_follow_the_registry():
    for method in ("primary", "registry"):
        W = ex.attribution_matrix(NAMES, method)
        assert W.shape == (len(NAMES), len(CAUSES) + 1)
        np.testing.assert_allclose(W.sum(axis=1), 1.0)
        for j, f in enumerate(NAMES):
            causes = BY_NAME[f].causes
            if not causes:
                assert W[j, ex.PROFILE] == 1.0
            else:
                assert W[j, CAUSES.index(causes[0])] == W[j].max() > 0
                assert set(np.flatnonzero(W[j])) <= {CAUSES.index(c) for c in causes}
    W = ex.attribution_matrix(NAMES, "registry")
    j = NAMES.index("draw_months_3")  # two causes: 2/3 and 1/3
    assert W[j, CAUSES.index("sudden_stop")] == pytest.approx(2 / 3)
    assert W[j, CAUSES.index("low_activity_competition")] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="unknown fixed attribution"):
        ex.attribution_matrix(NAMES, "magic")


def test_reason_codes_rank_causes_and_keep_additivity():
    rng = np.random.default_rng(0)
    n, p = 50, len(NAMES)
    phi = rng.normal(0, 0.01, (n, p))
    # rows 0..24: misuse features push hardest; rows 25..49: thin-file ones
    phi[:25, _by_cause("fund_misuse")] += 0.5
    phi[25:, _by_cause("thin_file")] += 0.5
    contrib = np.column_stack([phi, np.full(n, -2.0)])
    X = rng.uniform(0, 1, (n, p)).astype(np.float32)
    # the planted features' values on the side their cause declares (reference 0.5)
    for rows, cause in ((slice(0, 25), "fund_misuse"), (slice(25, 50), "thin_file")):
        for j in _by_cause(cause):
            X[rows, j] = 0.5 + 0.4 * risk_side(NAMES[j], cause)
    W = ex.attribution_matrix(NAMES, "registry")
    r = ex.reason_codes(contrib, X, NAMES, 3, W, reference=np.full(p, 0.5))
    assert list(r["reason_1_cause"][:25]) == ["fund_misuse"] * 25
    assert list(r["reason_1_cause"][25:]) == ["thin_file"] * 25
    # the feature behind a reason feeds that cause, and its value is the row's value
    for i in (0, 30):
        f = r["reason_1_feature"][i]
        assert r["reason_1_cause"][i] in BY_NAME[f].causes
        assert r["reason_1_value"][i] == pytest.approx(X[i, NAMES.index(f)])
    assert r["reason_1_en"][0].startswith("loan money flowed")
    assert "（" in r["reason_1_zh"][0]
    assert (r["reason_1_shap"] >= r["reason_2_shap"]).all()
    assert (r["reason_2_shap"] >= r["reason_3_shap"]).all()
    # cause scores add up to the SHAP total (rows of W sum to one)
    scores, _ = cause_matrix(contrib, NAMES, W)
    np.testing.assert_allclose(scores.sum(axis=1), phi.sum(axis=1))
    # contrasting with a reference removes what every row shares
    shift = ex.reference_shift(phi)
    scores_ref, _ = cause_matrix(contrib, NAMES, W, shift)
    np.testing.assert_allclose(scores_ref.mean(axis=0), 0.0, atol=1e-12)


def test_learned_weights_recover_a_planted_mapping_from_training_closures():
    rng = np.random.default_rng(1)
    n = 1400
    truth = rng.choice(["sudden_stop", "thin_file", "low_yield", "fund_misuse"], n)
    # the twist: tenure (registry: low_yield) actually moves with thin-file closures
    phi = rng.normal(0, 0.05, (n, len(NAMES)))
    t = NAMES.index("tenure")
    for c in ("sudden_stop", "low_yield", "fund_misuse"):
        phi[np.ix_(truth == c, _by_cause(c))] += 0.3
    phi[truth == "thin_file", t] += 0.8
    fixed = ex.attribution_matrix(NAMES, "primary")
    fixed_top1 = (np.array(CAUSES)[(phi @ fixed)[:, : len(CAUSES)].argmax(1)] == truth).mean()
    fit = ex.fit_cause_weights(phi, truth, NAMES, support="all")
    np.testing.assert_allclose(fit.W.sum(axis=1), 1.0)
    assert (fit.W >= 0).all()
    assert fit.train_top1 > 0.95 > fixed_top1
    assert fit.W[t].argmax() == CAUSES.index("thin_file")
    assert fit.W[t, CAUSES.index("thin_file")] > 2 * fit.W[t, CAUSES.index("low_yield")]
    assert fit.temperature <= 10.0 + 1e-9
    assert sorted(fit.causes_seen) == sorted(set(truth))
    # registry support keeps each feature inside its declared causes
    fit_r = ex.fit_cause_weights(phi, truth, NAMES, support="registry")
    allowed = ex.support_matrix(NAMES, "registry")
    assert (fit_r.W[~allowed] == 0).all()
    # profile features never feed a cause
    for j, f in enumerate(NAMES):
        if not BY_NAME[f].causes:
            assert fit.W[j, ex.PROFILE] == 1.0
    with pytest.raises(ValueError, match="two causes"):
        ex.fit_cause_weights(phi[:5], ["thin_file"] * 5, NAMES)


def test_probability_contributions_add_up_to_the_probability_gap():
    rng = np.random.default_rng(2)
    contrib = np.column_stack([rng.normal(0, 0.5, (40, 6)), np.full(40, -2.2)])
    contrib[0, :-1] = 0.0  # a row at the base value
    pc = ex.probability_contributions(contrib)
    prob = 1 / (1 + np.exp(-contrib.sum(axis=1)))
    np.testing.assert_allclose(pc.sum(axis=1), prob, atol=1e-12)
    assert np.all(np.sign(pc[:, :-1]) == np.sign(contrib[:, :-1]))


def test_fidelity_counts_top1_top3_and_confusion():
    reasons = {
        "reason_1_cause": np.array(["sudden_stop", "low_yield", "thin_file", "thin_file"]),
        "reason_2_cause": np.array(["low_yield", "sudden_stop", "low_yield", "sudden_stop"]),
        "reason_3_cause": np.array(["thin_file", "thin_file", "sudden_stop", "fund_misuse"]),
    }
    true = np.array(["sudden_stop", "sudden_stop", "fund_misuse", "fund_misuse"])
    fid = ex.fidelity(reasons, true)
    assert fid.top1 == 0.25 and fid.top3 == 0.75 and fid.n == 4
    assert fid.confusion.loc["sudden_stop", "low_yield"] == 1
    assert fid.confusion.loc["fund_misuse", "thin_file"] == 2
    assert int(fid.confusion.to_numpy().sum()) == 4
    assert fid.by_cause["fund_misuse"]["top1"] == 0.0


def test_contributions_match_lightgbm_and_add_up():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(0, 0.5, 600) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 8, "seed": 0},
        lgb.Dataset(X, y),
        30,
    )
    contrib, method = ex.contributions(booster, X[:100], 1)
    ref = booster.predict(X[:100], pred_contrib=True)
    assert contrib.shape == (100, 6)
    np.testing.assert_allclose(contrib, ref, atol=1e-6)
    np.testing.assert_allclose(contrib.sum(1), booster.predict(X[:100], raw_score=True), atol=1e-6)
    assert method in ("treeshap", "lightgbm_pred_contrib")
    reasons = ex.feature_reasons(contrib, X[:100], [f"x{i}" for i in range(5)], 2)
    pos = reasons["reason_1_shap"] > 0
    assert all(t.startswith("x") for t in reasons["reason_1_en"][pos])
    assert (reasons["reason_1_en"][~pos] == "").all()


# ---- the stage on a small fixed-seed world ------------------------------------------

WORLD = [
    "tracking.enabled=false",
    "model.baselines=false",
    "explain.advice_rows=25",
    "explain.plot_sample=300",
    "explain.dependence_top=2",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from helpers import run_world, seed_small_data

    root = tmp_path_factory.mktemp("explain_world")
    seed_small_data(tmp_path_factory, root)
    cfg, summary = run_world(root, WORLD)
    return root, cfg, summary


@pytest.mark.slow
def test_stage_reason_codes_fidelity_well_above_chance(world):
    root, cfg, summary = world
    models = root / "models"
    fid = json.loads((models / "fidelity.json").read_text())
    chance = 1 / len(CAUSES)
    assert fid["n"] > 100
    assert fid["top1"] > 2.5 * chance, fid
    assert fid["top3"] > 0.55, fid
    assert summary["fidelity"]["top1"] == pytest.approx(fid["top1"])
    assert summary["fidelity"]["top3"] == pytest.approx(fid["top3"])
    reasons = pd.read_parquet(models / "reasons.parquet")
    for col in (
        "borrower_id",
        "snapshot",
        "probability",
        "label_cause",
        "reason_1_cause",
        "reason_1_feature",
        "reason_1_value",
        "reason_1_zh",
        "reason_1_en",
        "reason_3_en",
    ):
        assert col in reasons.columns, col
    # a row none of whose causes raises its risk has no reason ("")
    assert set(reasons.reason_1_cause) <= set(CAUSES) | {""}
    conf = pd.read_csv(models / "fidelity_confusion.csv", index_col=0)
    assert list(conf.index) == list(CAUSES)
    assert int(conf.to_numpy().sum()) == fid["n"]
    weights = json.loads((models / "cause_weights.json").read_text())
    assert weights["info"]["attribution"] == "learned"
    # learned on the training split only: causes without training closures are reported
    feats = pd.read_parquet(
        models.parent / "data" / "processed" / "features.parquet", columns=["split", "label_cause"]
    )
    seen = set(feats[feats.split == "train"].label_cause) - {"none"}
    assert set(weights["info"]["causes_unseen"]) == set(CAUSES) - seen
    cimp = json.loads((models / "cause_importance.json").read_text())["importance"]
    assert {c for c, _ in cimp} == set(CAUSES) | {"profile"}
    for name in ("shap_bar", "shap_beeswarm", "cause_importance", "fidelity_confusion"):
        assert (models / "plots" / f"{name}.png").stat().st_size > 1000, name
    assert len(list((models / "plots").glob("dependence_*.png"))) == 2


@pytest.mark.slow
def test_stage_advice_is_rescored_under_the_threshold(world):
    from pipeline.stages.explain import _Model

    root, cfg, _ = world
    models = root / "models"
    adv = pd.read_parquet(models / "advice.parquet")
    assert len(adv) > 0
    thr = cfg.explain.advice_threshold
    assert (adv.p_before >= thr).all()
    assert adv.achieved.mean() > 0.5
    model = _Model(models)
    feats = pd.read_parquet(root / "data" / "processed" / "features.parquet")
    for rec in adv[adv.achieved].head(5).itertuples():
        row = feats[(feats.borrower_id == rec.borrower_id) & (feats.snapshot == rec.snapshot)]
        x = row[model.names].to_numpy(dtype=np.float64)[0].copy()
        for f, before, after in json.loads(rec.changes):
            assert x[model.names.index(f)] == pytest.approx(before, rel=1e-5, abs=1e-6)
            x[model.names.index(f)] = after
        assert float(model.prob(x[None, :])[0]) == pytest.approx(rec.p_after)
        assert rec.p_after < thr
        # said in the future tense, one line per action, no line on every advice
        assert rec.advice_en.startswith("You will") and "您将" in rec.advice_zh
        assert len(rec.advice_en.split("\n")) == len(rec.actions.split())
    lines = [ln for a in adv.advice_en for ln in a.split("\n") if ln]
    assert max(lines.count(ln) for ln in set(lines)) < len(adv)


@pytest.mark.slow
def test_one_borrower_story_and_unknown_id(world, capsys):
    from helpers import compose_config

    from pipeline.stages.driver import execute

    root, _, _ = world
    adv = pd.read_parquet(root / "models" / "advice.parquet")
    bid = int(adv.borrower_id.iloc[0])
    cfg = compose_config(root, [*WORLD, f"explain.borrower_id={bid}"], stage="explain")
    execute(cfg, [])
    out = capsys.readouterr().out
    assert f"borrower {bid}" in out and "closure risk" in out and "advice" in out
    assert (root / "models" / "plots" / f"waterfall_{bid}.png").stat().st_size > 1000
    report = json.loads((root / "models" / f"borrower_{bid}.json").read_text())
    assert report["reasons"] and report["reasons"][0]["cause"] in CAUSES
    assert report["advice"]["achieved"] == (
        report["advice"]["p_after"] < report["advice"]["threshold"]
    )
    # the fidelity of the batch run stays in the summary
    summary = json.loads((root / "models" / "summary.json").read_text())
    assert "top1" in summary["fidelity"]
    bad = compose_config(root, [*WORLD, "explain.borrower_id=987654321"], stage="explain")
    with pytest.raises(DataError, match="borrower_id = 987654321"):
        execute(bad, [])
    bad_snap = compose_config(
        root, [*WORLD, f"explain.borrower_id={bid}", "explain.snapshot=13"], stage="explain"
    )
    with pytest.raises(DataError, match="snapshot 13"):
        execute(bad_snap, [])


def test_a_reason_needs_a_risky_value_a_top_contribution_and_a_concern():
    p = len(NAMES)
    j = NAMES.index("months_since_last_draw")  # sudden stop: more months, more risk
    ref = np.full(p, 5.0)
    W = ex.attribution_matrix(NAMES, "registry")

    def one(value: float, phi_j: float, others: float = 0.0) -> dict[str, np.ndarray]:
        phi = np.full((1, p), -0.01)
        phi[0, j] = phi_j
        if others:  # six features linked to no cause, each pushing harder than j
            phi[0, [NAMES.index(f) for f in ("income", "city_tier", "age_band_code")]] = others
            phi[0, [NAMES.index(f) for f in ("occupation_code", "degree")]] = others
            phi[0, NAMES.index("line")] = others
        X = np.full((1, p), 5.0)
        X[0, j] = value
        return ex.reason_codes(np.column_stack([phi, [-2.0]]), X, NAMES, 3, W, reference=ref)

    hit = one(9.0, 0.4)
    assert hit["reason_1_cause"][0] == "sudden_stop"
    assert hit["reason_1_feature"][0] == "months_since_last_draw"
    # the same push with a value on the safe side of the median is not a reason
    assert one(2.0, 0.4)["reason_1_cause"][0] == ""
    # nor a value on the risky side whose contribution lowers the risk
    assert one(9.0, -0.4)["reason_1_cause"][0] == ""
    # nor one outside the row's five largest positive contributions
    assert one(9.0, 0.4, others=0.5)["reason_1_cause"][0] == ""
    # a feature with no declared side for a cause is never cited for it
    k = NAMES.index("draw_months_12")  # sudden stop +, low yield undeclared
    assert risk_side("draw_months_12", "low_yield") == 0
    phi = np.zeros((1, p))
    phi[0, k] = 0.5
    X = np.full((1, p), 5.0)
    X[0, k] = 11.0
    only_ly = np.zeros_like(W)
    only_ly[:, ex.PROFILE] = 1.0
    only_ly[k] = 0.0
    only_ly[k, CAUSES.index("low_yield")] = 1.0
    r = ex.reason_codes(np.column_stack([phi, [-2.0]]), X, NAMES, 3, only_ly, reference=ref)
    assert r["reason_1_cause"][0] == ""  # all its weight on the undeclared link
    r = ex.reason_codes(np.column_stack([phi, [-2.0]]), X, NAMES, 3, W, reference=ref)
    assert r["reason_1_cause"][0] == "sudden_stop"  # its declared link cites it
    assert r["reason_2_cause"][0] == ""
    # a row under the lowest tier cut-off: no closure concern, its protective factors
    phi = np.zeros((2, p))
    phi[:, j] = 0.4
    phi[:, NAMES.index("tenure")] = -0.3
    phi[:, NAMES.index("income")] = -0.6
    X = np.full((2, p), 5.0)
    X[:, j] = 9.0
    r = ex.reason_codes(
        np.column_stack([phi, [-2.0, -2.0]]),
        X,
        NAMES,
        3,
        W,
        reference=ref,
        prob=np.array([0.01, 0.2]),
        floor=0.05,
    )
    assert list(r["closure_concern"]) == [False, True]
    assert r["reason_1_cause"][0] == "" and r["reason_1_cause"][1] == "sudden_stop"
    assert list(r["protect_1_feature"]) == ["income", ""]
    assert r["protect_2_feature"][0] == "tenure" and r["protect_3_feature"][0] == ""
    assert r["protect_1_en"][0].startswith("no closure concern: monthly income")
    assert r["protect_1_shap"][0] == pytest.approx(-0.6)


def test_number_texts_write_each_value_as_number_text_does():
    from pipeline.core.labels import number_text, number_texts

    values = np.array([3.0, -0.0, 0.0, np.nan, 0.12345, 1234.56, np.inf, 3.0, np.nan, -2.5, 7])
    got = number_texts(values)
    assert got.dtype == object and len(got) == len(values)
    assert list(got) == [number_text(v) for v in values]
    assert list(got[[0, 1, 3, 6]]) == ["3", "0", "n/a", "n/a"]
    assert len(number_texts(np.array([]))) == 0


def test_strongest_interaction_picks_what_shaps_search_picks():
    """The dependence plots' colouring feature, found for all features at once, is the
    one ``shap.utils.approximate_interactions`` finds column by column: with ties, a
    column of zeros, missing values, a short last block and tiny samples."""
    from shap.utils import approximate_interactions

    from pipeline.core.explain import strongest_interaction

    rng = np.random.default_rng(0)
    picked = set()
    for n in (5, 9, 37, 200, 1234, 5000):
        width = 12
        X = rng.normal(size=(n, width)).astype(np.float32)
        X[:, 5] = np.round(X[:, 0])  # ties
        X[:, 2] = 0.0  # a column of zeros
        X[rng.random(n) < 0.1, 3] = np.nan  # missing values
        S = np.nan_to_num(rng.normal(size=(n, width)) + X * X[:, [1]])
        for j in range(width):
            order = [j, *(i for i in range(width) if i != j)]
            want = order[approximate_interactions(0, S[:, order], X[:, order])[0]]
            assert strongest_interaction(j, S, X) == want, (n, j)
            picked.add(want)
    assert len(picked) > 3  # not one answer for every feature
    with pytest.raises(ValueError, match="10,000"):
        strongest_interaction(0, np.zeros((10_001, 2)), np.zeros((10_001, 2)))
