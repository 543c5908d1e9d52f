"""The cost model of docs/scale.md: its fits, its measurement, and the committed runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.tools import scale

RUNS = Path(__file__).resolve().parents[1] / "docs" / "scale_runs.json"


def test_the_power_law_and_the_line_recover_their_coefficients():
    n = np.array([1e4, 1e5, 1e6])
    law = scale.power_law(n, 0.02 * n**1.3)
    assert law["a"] == pytest.approx(0.02, rel=1e-9) and law["b"] == pytest.approx(1.3)
    assert law["r2"] == pytest.approx(1.0)
    line = scale.linear(n, 0.4 + 2e-6 * n)
    assert line["r0"] == pytest.approx(0.4) and line["r1"] == pytest.approx(2e-6)
    with pytest.raises(ValueError, match="two sizes"):
        scale.power_law(np.array([5.0, 5.0]), np.array([1.0, 2.0]))


def _records(b: float = 1.2) -> list[dict]:
    recs = [
        {
            "stage": "startup",
            "n_borrowers": 0,
            "cpu_s": 4.0,
            "wall_s": 5.0,
            "peak_rss_gib": 0.3,
            "bytes_written": 0,
        }
    ]
    for n in (10_000, 40_000, 160_000):
        recs.append(
            {
                "stage": "train",
                "n_borrowers": n,
                "cpu_s": 4.0 + 1e-3 * n**b,
                "wall_s": 5.0 + 5e-4 * n**b,
                "peak_rss_gib": 0.3 + 1e-6 * n,
                "bytes_written": 100 * n,
                "cores": 4,
            }
        )
    return recs


def test_the_fit_takes_the_startup_out_and_the_prediction_splits_the_borrowers():
    m = scale.fit(_records())["train"]
    assert m["cpu"]["b"] == pytest.approx(1.2) and m["cpu"]["startup"] == 4.0
    # the smallest of three sizes is left out of the fit and kept as its check
    assert m["sizes"] == [40_000, 160_000] and m["check"]["n_borrowers"] == 10_000
    assert m["check"]["predicted_cpu_s"] == pytest.approx(m["check"]["cpu_s"])
    assert m["wall"]["a"] == pytest.approx(5e-4)
    one = scale.predict(m, 1e6, 1)
    assert one["cpu_s"] == pytest.approx(4.0 + 1e-3 * 1e6**1.2)
    sixteen = scale.predict(m, 1e6, 16)
    # each worker: one share's wall and memory; the CPU is the whole work plus W startups
    assert sixteen["wall_s"] == pytest.approx(5.0 + 5e-4 * (1e6 / 16) ** 1.2)
    assert sixteen["rss_gib"] == pytest.approx(0.3 + 1e-6 * 1e6 / 16)
    assert sixteen["cpu_s"] == pytest.approx(16 * 4.0 + 1e-3 * 1e6**1.2)
    # a worker cannot finish before its share of the CPU seconds over its cores
    slow = dict(m, cores=1)
    assert scale.predict(slow, 1e6, 16)["wall_s"] == pytest.approx(5.0 + 1e-3 * (1e6 / 16) ** 1.2)
    text = scale.markdown({"train": m})
    assert "| train | 40,000, 160,000 |" in text and "| 100,000,000 | 64 |" in text
    table = scale.measured(_records())
    assert "| train | 160,000 |" in table and table.count("\n") == 5
    # a record under an override that changes the stage's own work is shown, not fitted
    other = [*_records(), {**_records()[-1], "n_borrowers": 640_000, "cpu_s": 1e9}]
    other[-1].update(stage="explain", overrides=["model.survival=false"])
    assert not scale.fitted(other[-1]) and "explain" not in scale.fit(other)
    assert "| explain (model.survival=false, not fitted) | 640,000 |" in scale.measured(other)


def test_a_measured_stage_reads_its_own_resources_and_a_failed_one_names_its_command(tmp_path):
    rec = scale.measure_stage("startup", 0, tmp_path, (), tmp_path / "log")
    assert rec["wall_s"] > 0 and rec["cpu_s"] > 0 and 0.05 < rec["peak_rss_gib"] < 8
    with pytest.raises(RuntimeError, match="no_such_key"):
        scale.measure_stage("generate", 100, tmp_path, ["no_such_key=1"], tmp_path / "log")


@pytest.mark.skipif(not RUNS.exists(), reason="no committed runs")
def test_the_committed_cost_model_reproduces_its_smallest_measured_size():
    """docs/scale.md's laws, refitted to the committed runs, against the smallest
    measured size, which the fit leaves out (CPU seconds within a factor of 1.5, peak
    memory within 0.5 GiB); and the tables in docs/scale.md are the tool's own."""
    records = json.loads(RUNS.read_text())
    models = scale.fit(records)
    assert set(models) == set(scale.STAGES)
    for stage, m in models.items():
        k = m["check"]
        assert k["n_borrowers"] < min(m["sizes"]), stage
        ratio = k["predicted_cpu_s"] / k["cpu_s"]
        assert 1 / 1.5 <= ratio <= 1.5, (stage, ratio)
        assert k["predicted_rss_gib"] == pytest.approx(k["peak_rss_gib"], abs=0.5), stage
    page = (RUNS.parent / "scale.md").read_text(encoding="utf-8")
    for table in (scale.measured(records), *scale.markdown(models).split("\n\n")):
        assert table in page


def test_the_tool_refuses_an_override_of_what_it_sets_and_an_unknown_stage(tmp_path, capsys):
    runs = tmp_path / "runs.json"
    args = ["measure", "--sizes", "100", "--root", str(tmp_path), "--runs", str(runs)]
    assert scale.main([*args, "data.n_borrowers=5"]) == 2
    assert "data.n_borrowers=5: set by --sizes" in capsys.readouterr().out
    assert scale.main([*args, "--stages", "generate,nope"]) == 2
    assert "unknown stage(s) nope" in capsys.readouterr().out
    assert not runs.exists()
    assert scale.main(["fit", "--runs", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
