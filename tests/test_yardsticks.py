"""Yardsticks: AUCs with standard errors, the model between two oracles, the cause
ceiling beside fidelity, reasons that the registry allows, advice without 0% targets."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from helpers import cause_matrix
from sklearn.metrics import roc_auc_score

from pipeline.base.causes import CAUSES
from pipeline.base.registry import BY_NAME, FEATURE_NAMES
from pipeline.core import advice
from pipeline.core import evaluation as ev
from pipeline.core import explain as ex

NAMES = list(FEATURE_NAMES)


# ---- AUC standard errors and the two oracles ----------------------------------------


def _binormal(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    return y, rng.normal(size=n) + shift * y


def test_delong_auc_matches_sklearn_and_its_se_matches_the_spread_of_resamples():
    y, s = _binormal(2000, 1.0, 0)
    auc, cov = ev.delong(y, [s])
    assert auc[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # fresh samples of the same law: their AUCs spread as the standard error says
    spread = np.std([roc_auc_score(*_binormal(2000, 1.0, k)) for k in range(1, 201)])
    assert np.sqrt(cov[0, 0]) == pytest.approx(spread, rel=0.2)
    # Hanley-McNeil's formula for the same AUC agrees roughly
    a, n1, n0 = auc[0], y.sum(), len(y) - y.sum()
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    hm = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    assert np.sqrt(cov[0, 0]) == pytest.approx(hm, rel=0.15)
    # ties count one half, and a paired copy has a zero-variance difference
    auc2, cov2 = ev.delong(y, [s, s, np.round(s)])
    assert auc2[2] == pytest.approx(roc_auc_score(y, np.round(s)), abs=1e-12)
    assert cov2[0, 0] + cov2[1, 1] - 2 * cov2[0, 1] == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="two rows of each class"):
        ev.delong(np.array([1, 0, 0]), [np.array([0.3, 0.2, 0.1])])


def test_oracle_gap_puts_the_model_between_both_oracles_on_the_same_rows():
    rng = np.random.default_rng(1)
    n = 4000
    latent = rng.normal(size=n)
    seen = latent + rng.normal(scale=0.7, size=n)
    p_full = 1 / (1 + np.exp(-(2 * latent - 2)))
    y = (rng.random(n) < p_full).astype(int)
    p_obs = 1 / (1 + np.exp(-(1.2 * seen - 2)))
    model = seen + rng.normal(scale=0.8, size=n)
    keys = pd.DataFrame({"borrower_id": np.arange(n), "snapshot": 30})
    # the oracle has half of the rows, in another order, plus rows the model never scored
    half = rng.permutation(n)[: n // 2]
    oracle = pd.DataFrame(
        {
            "borrower_id": np.r_[half, n + np.arange(10)],
            "snapshot": 30,
            "p_oracle": np.r_[p_full[half], np.full(10, 0.5)],
            "p_full": np.r_[p_full[half], np.full(10, 0.5)],
            "p_observable": np.r_[p_obs[half], np.full(10, 0.5)],
        }
    )
    out = ev.oracle_gap(keys, y, model, oracle)
    o = out["oracle"]
    h = np.sort(half)
    assert o["n_rows"] == n // 2 == out["oracle_rows"]
    assert o["full_auc"] == pytest.approx(roc_auc_score(y[h], p_full[h]))
    assert o["observable_auc"] == pytest.approx(roc_auc_score(y[h], p_obs[h]))
    assert o["model_auc"] == pytest.approx(roc_auc_score(y[h], model[h]))
    assert o["full_auc"] > o["observable_auc"] > o["model_auc"]
    for k in ("full", "observable", "model"):
        assert 0.001 < o[f"{k}_auc_se"] < 0.05
    assert o["gap_observable"] == pytest.approx(o["observable_auc"] - o["model_auc"])
    assert 0 < o["gap_observable_se"] < o["observable_auc_se"] + o["model_auc_se"]
    # one figure, one name: oracle_gap is the gap to the trait oracle, everywhere;
    # the gap to the full-state oracle is oracle_gap_full
    assert out["oracle_auc"] == o["full_auc"] and out["oracle_model_auc"] == o["model_auc"]
    assert out["oracle_gap"] == o["gap"] == o["gap_observable"] == o["gap_trait"]
    assert o["gap_se"] == o["gap_observable_se"] and o["trait_auc"] == o["observable_auc"]
    assert out["oracle_gap_full"] == o["gap_full"] == pytest.approx(o["full_auc"] - o["model_auc"])
    assert out["oracle_gap_full"] > out["oracle_gap"]
    # no half-future columns: no Monte Carlo bias is claimed
    assert "mc_bias" not in o and "futures" not in o
    # an oracle file of an older world (no p_full / p_observable) still gives the gap
    old = ev.oracle_gap(keys, y, model, oracle[["borrower_id", "snapshot", "p_oracle"]])
    assert old["oracle_auc"] == o["full_auc"] and "observable_auc" not in old["oracle"]
    assert old["oracle_gap"] == old["oracle_gap_full"] == o["gap_full"]
    with pytest.raises(ValueError, match="p_oracle"):
        ev.oracle_gap(keys, y, model, oracle[["borrower_id", "snapshot", "p_full"]])


def _mc_oracle(k: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, and a Monte Carlo oracle from ``k`` futures per row and from each half."""
    rng = np.random.default_rng(seed)
    n = 6000
    p = 1 / (1 + np.exp(-(1.5 * rng.normal(size=n) - 2.5)))
    y = (rng.random(n) < p).astype(int)
    fut = rng.random((n, k)) < p[:, None]
    return y, fut.mean(axis=1), fut[:, : k // 2].mean(axis=1), fut[:, k // 2 :].mean(axis=1)


def test_mc_bias_from_half_the_futures_predicts_what_more_futures_recover():
    y, p8, h1, h2 = _mc_oracle(8)
    b = ev.mc_bias(y, p8, h1, h2)
    # far more futures on the same rows and labels: the AUC that 8 futures fall short of
    y_, p_many, _, _ = _mc_oracle(1024)
    assert (y_ == y).all()
    short = roc_auc_score(y, p_many) - roc_auc_score(y, p8)
    assert b["bias"] > 3 * b["bias_se"] > 0
    assert b["bias"] == pytest.approx(short, rel=0.5), (b, short)
    assert b["auc_extrapolated"] == pytest.approx(roc_auc_score(y, p8) + b["bias"])
    # with many futures the bias estimate is small
    assert abs(ev.mc_bias(y, *_mc_oracle(1024)[1:])["bias"]) < 0.003


def test_oracle_gap_reports_futures_and_the_larger_mc_bias():
    y, p, h1, h2 = _mc_oracle(16)
    _, q, g1, g2 = _mc_oracle(64, seed=3)
    n = len(y)
    oracle = pd.DataFrame(
        {
            "borrower_id": np.arange(n),
            "snapshot": 30,
            "p_oracle": p,
            "p_full": p,
            "p_observable": q,
            "n_futures": 16,
            "p_full_h1": h1,
            "p_full_h2": h2,
            "p_observable_h1": g1,
            "p_observable_h2": g2,
        }
    )
    keys = oracle[["borrower_id", "snapshot"]]
    o = ev.oracle_gap(keys, y, q + 0.01 * np.random.default_rng(0).normal(size=n), oracle)["oracle"]
    assert o["futures"] == 16
    assert o["full_mc_bias"] > o["observable_mc_bias"]  # 16 futures against 64
    assert o["mc_bias"] == o["full_mc_bias"]
    for k in ("full", "observable"):
        assert o[f"{k}_auc_extrapolated"] == pytest.approx(o[f"{k}_auc"] + o[f"{k}_mc_bias"])


# ---- the cause ceiling ------------------------------------------------------------


def _shares(rows: list[dict[str, float]]) -> np.ndarray:
    return np.array([[r.get(c, 0.0) for c in CAUSES] for r in rows])


def test_ceiling_ranks_causes_by_their_share_of_closing_futures():
    shares = _shares(
        [
            {"thin_file": 0.3, "sudden_stop": 0.1, "low_yield": 0.05},
            {"fund_misuse": 0.2, "over_reliance": 0.2},  # a tie: the prior decides
            {},  # no future closed: the prior alone
        ]
    )
    prior = np.zeros(len(CAUSES))
    prior[CAUSES.index("over_reliance")] = 0.02
    prior[CAUSES.index("policy_tightening")] = 0.01
    order = ex.ceiling_ranking(shares, prior)
    names = np.asarray(CAUSES)[order]
    assert list(names[0, :3]) == ["thin_file", "sudden_stop", "low_yield"]
    assert list(names[1, :2]) == ["over_reliance", "fund_misuse"]
    assert list(names[2, :2]) == ["over_reliance", "policy_tightening"]
    truth = np.array(["sudden_stop", "fund_misuse", "over_reliance"])
    reasons = {
        "reason_1_cause": np.array(["sudden_stop", "thin_file", ""]),
        "reason_2_cause": np.array(["thin_file", "fund_misuse", ""]),
        "reason_3_cause": np.array(["", "", ""]),
    }
    out = ex.fidelity_ceiling(reasons, truth, shares, prior)
    assert out["ceiling_top1"] == pytest.approx(1 / 3)  # only row 2 (by the prior)
    assert out["ceiling_top3"] == pytest.approx(1.0)
    assert out["top1"] == pytest.approx(1 / 3) and out["top3"] == pytest.approx(2 / 3)
    # standard errors over the closures: hits on row 1 (reasons) and row 2 (ceiling)
    hit = np.array([0.0, 0.0, 1.0])
    assert out["ceiling_top1_se"] == pytest.approx(hit.std(ddof=1) / np.sqrt(3))
    assert out["top1_se"] == pytest.approx(out["ceiling_top1_se"])
    diff = np.array([-1.0, 0.0, 1.0])  # ceiling minus reasons, closure by closure
    assert out["gap_top1_se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(3))
    bc = out["by_cause"]
    assert bc["sudden_stop"] == {
        "n": 1.0,
        "ceiling_top1": 0.0,
        "ceiling_top3": 1.0,
        "top1": 1.0,
        "top3": 1.0,
    }
    assert np.isnan(bc["thin_file"]["ceiling_top1"]) and bc["thin_file"]["n"] == 0
    with pytest.raises(ValueError, match="columns"):
        ex.ceiling_ranking(shares[:, :3])


def test_oracle_fidelity_joins_closures_to_their_oracle_rows():
    full = _shares([{"thin_file": 0.5}, {"sudden_stop": 0.4}, {"low_yield": 0.9}])
    oracle = pd.DataFrame(full, columns=[f"f_{c}" for c in CAUSES]).assign(
        borrower_id=[7, 3, 99], snapshot=[30, 30, 30]
    )
    keys = pd.DataFrame({"borrower_id": [3, 5, 7], "snapshot": [30, 30, 30]})
    truth = np.array(["sudden_stop", "thin_file", "low_yield"])
    reasons = {"reason_1_cause": np.array(["sudden_stop", "thin_file", "thin_file"])}
    out = ex.oracle_fidelity(keys, truth, reasons, oracle.assign(n_futures=512))
    assert out is not None and out["n"] == 2  # borrower 5 has no oracle row
    assert out["futures"] == 512
    assert out["ceiling_top1"] == 0.5 and out["top1"] == 0.5
    assert "ceiling_observable_top1" not in out
    with_obs = oracle.assign(**{f"fo_{c}": oracle[f"f_{c}"] for c in CAUSES})
    assert ex.oracle_fidelity(keys, truth, reasons, with_obs)["ceiling_observable_top1"] == 0.5
    assert ex.oracle_fidelity(keys.assign(snapshot=31), truth, reasons, oracle) is None
    with pytest.raises(ValueError, match="f_sudden_stop"):
        ex.oracle_fidelity(keys, truth, reasons, oracle.drop(columns="f_sudden_stop"))
    # merged with the figures on all closures: the paired figures are those on the
    # closures with oracle rows, the all-closure ones keep their place
    fid = ex.fidelity(reasons, truth)
    assert fid.n == 3 and fid.top1 == pytest.approx(2 / 3)
    overall, by_cause = ex.with_ceiling(fid, out)
    assert overall["ceiling_top1"] == 0.5 and overall["ceiling_n"] == 2
    assert overall["oracle_rows_top1"] == 0.5
    pair = overall["paired"]
    assert {"n", "top1", "top3", "ceiling_top1", "ceiling_top3", "ceiling_top1_se"} <= set(pair)
    assert pair["n"] == 2 and pair["top1"] == 0.5 and pair["ceiling_top1"] == 0.5
    assert pair["futures"] == 512 and pair["share_of_ceiling_top1"] == 1.0
    assert pair["ceiling_top1_se"] == pytest.approx(np.std([0.0, 1.0], ddof=1) / np.sqrt(2))
    # per cause: the oracle's agreement, not a ceiling
    assert by_cause["thin_file"]["top1"] == 1.0  # borrower 5, without oracle row
    assert by_cause["thin_file"]["oracle_n"] == 0 and np.isnan(
        by_cause["thin_file"]["oracle_agreement_top1"]
    )
    assert not any(k.startswith("ceiling") for v in by_cause.values() for k in v)
    low = by_cause["low_yield"]
    assert low["oracle_agreement_top1"] == 0.0 and low["top1"] == 0.0
    assert ex.with_ceiling(fid, None) == ({}, fid.by_cause)


# ---- reasons the registry allows ----------------------------------------------------


def _linked(feature: str, cause: str) -> bool:
    return cause in BY_NAME[feature].causes


def test_registry_weights_keep_learned_balance_within_the_links():
    rng = np.random.default_rng(2)
    W = rng.dirichlet(np.ones(len(ex.CAUSE_COLUMNS)), size=len(NAMES))  # feeds everything
    R = ex.registry_weights(W, NAMES)
    allowed = ex.support_matrix(NAMES, "registry")
    assert (R[~allowed] == 0).all()
    np.testing.assert_allclose(R.sum(axis=1), 1.0)
    j = next(j for j, f in enumerate(NAMES) if len(BY_NAME[f].causes) >= 2)
    idx = np.flatnonzero(allowed[j])
    np.testing.assert_allclose(R[j, idx] / R[j, idx].sum(), W[j, idx] / W[j, idx].sum())
    # all of a feature's weight outside its links: the registry split takes over
    W2 = np.zeros_like(W)
    W2[:, ex.PROFILE] = 1.0
    np.testing.assert_array_equal(
        ex.registry_weights(W2, NAMES), ex.attribution_matrix(NAMES, "registry")
    )
    with pytest.raises(ValueError, match="shape"):
        ex.registry_weights(W[:3], NAMES)


def test_reasons_cite_only_linked_features_and_only_push_risk_up():
    rng = np.random.default_rng(3)
    n, p = 300, len(NAMES)
    phi = rng.normal(0, 0.2, (n, p))
    phi[:50] = -np.abs(phi[:50])  # rows whose every feature lowers the risk
    contrib = np.column_stack([phi, np.full(n, -2.0)])
    X = rng.uniform(0, 1, (n, p)).astype(np.float32)
    # weights that send every feature to every cause, as a fit without support might
    W = np.full((p, len(ex.CAUSE_COLUMNS)), 1.0 / len(ex.CAUSE_COLUMNS))
    r = ex.reason_codes(contrib, X, NAMES, 3, W)
    n_listed = 0
    for k in (1, 2, 3):
        cause, feat, shap = r[f"reason_{k}_cause"], r[f"reason_{k}_feature"], r[f"reason_{k}_shap"]
        listed = cause != ""
        n_listed += int(listed.sum())
        assert (shap[listed] > 0).all() and (r[f"reason_{k}_feature_shap"][listed] > 0).all()
        assert all(_linked(f, c) for f, c in zip(feat[listed], cause[listed], strict=True))
        assert (shap[~listed] == 0).all() and (feat[~listed] == "").all()
        assert (r[f"reason_{k}_en"][~listed] == "").all()
        assert np.isnan(r[f"reason_{k}_value"][~listed]).all()
    assert (r["reason_1_cause"][:50] == "").all()  # nothing raises these rows' risk
    # such closures have their own column in the confusion table
    fid = ex.fidelity(r, np.full(n, "sudden_stop", dtype=object))
    assert fid.confusion[ex.NO_REASON].sum() == (r["reason_1_cause"] == "").sum() >= 50
    assert int(fid.confusion.to_numpy().sum()) == n
    assert n_listed > 400  # the others do get reasons
    # scores still add up to the SHAP total, now within the links
    scores, _ = cause_matrix(contrib, NAMES, W)
    np.testing.assert_allclose(scores.sum(axis=1), phi.sum(axis=1))


# ---- advice never asks for "no more than 0%" ---------------------------------------


def test_advice_never_sets_a_zero_percent_or_zero_count_limit():
    x = {
        "misuse_share_k": 0.8,
        "share_securities_k": 0.5,
        "share_other_lender_k": 0.3,
        "competitor_months_6": 5.0,
        "competitor_share_6": 0.4,
    }
    texts = [
        t
        for lever in ("route_to_consumption", "stop_competitors")
        for o in advice.LEVERS[lever](x)
        for t in (o.en, o.zh)
    ]
    assert len(texts) == 12  # three targets each, the last of them zero
    for t in texts:
        assert not re.search(r"(?<![\d.])0%|at most 0 |不超过0", t), t
    assert any("none of it will go to securities" in t for t in texts)
    assert any("You will stop using competing credit products" in t for t in texts)


# ---- a small world, end to end -------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from helpers import run_world, seed_small_data

    root = tmp_path_factory.mktemp("yardsticks_world")
    seed_small_data(tmp_path_factory, root)
    _, summary = run_world(
        root,
        ["tracking.enabled=false", "explain.advice_rows=0", "explain.dependence_top=1"],
    )
    return root, summary


@pytest.mark.slow
def test_world_reasons_follow_the_registry_and_push_risk_up(world):
    root, _ = world
    reasons = pd.read_parquet(root / "models" / "reasons.parquet")
    listed_total = 0
    for k in (1, 2, 3):
        cause, feat = reasons[f"reason_{k}_cause"], reasons[f"reason_{k}_feature"]
        listed = cause != ""
        listed_total += int(listed.sum())
        bad = [
            (f, c)
            for f, c in zip(feat[listed], cause[listed], strict=True)
            if c not in BY_NAME[f].causes
        ]
        assert not bad, bad[:5]
        assert (reasons.loc[listed, f"reason_{k}_shap"] > 0).all()
        assert (feat[~listed] == "").all()
    assert listed_total > len(reasons)  # most rows get more than one reason


@pytest.mark.slow
def test_world_summary_has_the_yardsticks(world):
    root, summary = world
    o = summary["oracle"]
    for k in ("full", "observable", "model"):
        assert 0.5 < o[f"{k}_auc"] <= 1 and 0 < o[f"{k}_auc_se"] < 0.1
    assert o["n_rows"] == summary["oracle_rows"] > 100
    assert summary["oracle_auc"] == o["full_auc"]
    fid = summary["fidelity"]
    for k in ("top1", "top3", "ceiling_top1", "ceiling_top3"):
        assert 0 <= fid[k] <= 1, k
    assert fid["ceiling_top3"] >= fid["ceiling_top1"] > 1 / len(CAUSES)
    assert set(fid["by_cause"]) == set(CAUSES)
    seen = [v for v in fid["by_cause"].values() if v.get("oracle_n", 0) > 0]
    assert seen and all({"top1", "oracle_agreement_top1"} <= set(v) for v in seen)
    pair = fid["paired"]
    assert pair["n"] == fid["ceiling_n"] and pair["ceiling_top1"] == fid["ceiling_top1"]
    assert pair["top1"] == fid["oracle_rows_top1"] and 0 < pair["ceiling_top1_se"] < 0.1
    assert (
        json.loads((root / "models" / "fidelity.json").read_text())["ceiling_top1"]
        == (fid["ceiling_top1"])
    )
    c = summary["calibration"]
    assert c["n_exact_0"] == 0 and c["n_exact_1"] == 0
    assert isinstance(c["worse"], bool)
    assert c["worse"] == (c["oot_ece_after"] > c["oot_ece_before"])
    assert 0 < c["top1pct_predicted"] < 1 and 0 <= c["top1pct_observed"] <= 1
    probs = pd.read_parquet(root / "models" / "reasons.parquet", columns=["probability"])
    assert ((probs.probability > 0) & (probs.probability < 1)).all()
    # the report page shows the model between both oracles and fidelity beside its ceiling
    page = (root / "models" / "report.html").read_text()
    assert "oracle, traits known" in page and f"{o['observable_auc']:.4f}" in page
    assert "oracle_gap_full" in page and f"{o['gap_full']:.4f}" in page
    assert "oracle agreement top-1" in page and f"{fid['ceiling_top1']:.1%}" in page
    assert "riskiest 1% of rows" in page
