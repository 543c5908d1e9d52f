"""The learning curve: the model on worlds of several sizes, scored on common rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import TINY

from pipeline.core import report
from pipeline.tools import learning_curve as lc


def test_fit_recovers_a_known_curve_and_its_asymptote():
    n = np.array([5_000, 10_000, 20_000, 40_000, 80_000])
    auc = 0.80 - 0.03 * (n / n.max()) ** -0.5
    fit = lc.fit_asymptote(n, auc, np.full(5, 0.01))
    assert fit["a"] == pytest.approx(0.80, abs=1e-9) and fit["c"] == pytest.approx(0.5)
    assert fit["b"] == pytest.approx(0.03, abs=1e-9)
    # a curve that falls with more data: no gain is claimed, the level is the mean
    flat = lc.fit_asymptote(n, auc[::-1], np.full(5, 0.01))
    assert flat["b"] == 0.0 and flat["a"] == pytest.approx(auc.mean())
    # a curve that would level off above 1 is held at 1
    steep = lc.fit_asymptote(n, np.array([0.80, 0.88, 0.94, 0.975, 0.995]), np.full(5, 0.01))
    assert steep["a"] <= 1.0 and steep["b"] > 0


def test_curve_gives_aucs_on_the_same_rows_and_a_bootstrap_interval():
    rng = np.random.default_rng(0)
    m = 3000
    signal = rng.normal(size=m)
    y = (rng.random(m) < 1 / (1 + np.exp(-(2 * signal - 2.5)))).astype(int)
    n = [1000, 2000, 4000, 8000, 16000]
    # larger worlds: less estimation noise around the same signal
    scores = [signal + rng.normal(scale=2.0 / np.sqrt(k / 1000), size=m) for k in n]
    out = lc.curve(y, scores, n)
    assert len(out["auc"]) == 5 and all(0 < s < 0.05 for s in out["auc_se"])
    assert out["auc"][-1] > out["auc"][0]
    a = out["asymptote"]
    assert a["auc"] >= max(out["auc"]) - 0.01 and 0 < a["se"] < 0.1
    assert a["ci95"][0] <= a["auc"] <= a["ci95"][1]
    assert a["bootstrap"] == lc.BOOTSTRAP


def _file() -> dict:
    sizes = [
        {"factor": f, "n_borrowers": int(1000 * f), "auc": 0.7 + 0.01 * i, "auc_se": 0.01}
        for i, f in enumerate(lc.FACTORS)
    ]
    return {
        "sizes": sizes,
        "asymptote": {"auc": 0.7612, "se": 0.012, "ci95": [0.74, 0.78]},
        "oracles": {"trait_auc": 0.8123, "trait_auc_se": 0.01, "full_auc": 0.83},
        "scoring": {"n_rows": 500, "n_positives": 50, "n_borrowers": 1000, "seed": 43},
    }


def test_report_shows_the_model_between_the_asymptote_and_the_oracles():
    view = report._learning_curve(_file())
    assert view is not None
    labels = [r[0] for r in view["table"].rows]
    assert len(labels) == 5 + 3 and labels[-3].startswith("asymptote")
    assert labels[-2] == "oracle, traits known" and view["asymptote"] == "0.7612"
    page = report.render(report.Inputs(learning_curve=_file()))
    assert "make learning-curve" in page and "0.7612" in page and "0.8123" in page
    assert report._learning_curve(None) is None
    assert "make learning-curve" not in report.render(report.Inputs())


@pytest.mark.slow
def test_tool_writes_five_sizes_and_an_asymptote(tmp_path):
    tiny = [o for o in TINY if not o.startswith("data.n_borrowers")]
    code = lc.main([f"paths.root={tmp_path}", "tracking=off", "data.n_borrowers=800", *tiny])
    assert code == 0
    out = json.loads((tmp_path / "models" / "learning_curve.json").read_text())
    assert [s["n_borrowers"] for s in out["sizes"]] == [200, 400, 800, 1600, 3200]
    for s in out["sizes"]:
        assert 0.5 < s["auc"] <= 1 and 0 < s["auc_se"] < 0.2 and s["trees"] >= 1
    assert np.isfinite(out["asymptote"]["auc"]) and out["asymptote"]["se"] > 0
    sc = out["scoring"]
    assert sc["seed"] == 43 and sc["n_rows"] > 100 and 0 < sc["n_positives"] < sc["n_rows"]
    assert 0.5 < out["oracles"]["trait_auc"] <= out["oracles"]["full_auc"] + 0.1
    # the training worlds carry no oracle futures; the scoring world does
    assert (tmp_path / "learning_curve" / "scoring" / "data" / "truth").exists()
