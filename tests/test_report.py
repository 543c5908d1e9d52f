"""The HTML model report: complete, self-contained, logged, and shown by a real browser."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import run_world
from mlflow.tracking import MlflowClient

from pipeline.base.io import DataError
from pipeline.core import report

IMG = re.compile(r'<img class="plot" data-plot="([^"]+)"[^>]*src="([^"]+)"')


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cfg, summary = run_world(root, [])
    return root, cfg, summary


def _pngs(root: Path) -> set[str]:
    found = set()
    for folder in ("data/raw/plots", "models/plots", "models/policy"):
        found |= {p.stem for p in (root / folder).glob("*.png")}
    return found


def test_run_writes_a_complete_self_contained_report(world):
    root, cfg, summary = world
    path = root / "models" / "report.html"
    assert summary["report"] == str(path)
    page = path.read_text(encoding="utf-8")

    for sid, heading in report.SECTIONS:
        assert f'<section id="{sid}">' in page, sid
        assert f"<h2>{heading}</h2>" in page, heading
    # a simulator run produces every part: no section says it is missing
    assert 'class="missing"' not in page

    # nothing is fetched from anywhere: no remote or relative references at all
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    imgs = IMG.findall(page)
    assert {name for name, _ in imgs} == _pngs(root)
    assert len(imgs) >= 12
    for name, src in imgs:
        assert src.startswith("data:image/png;base64,"), name
        assert base64.b64decode(src.split(",", 1)[1]).startswith(report.PNG_MAGIC), name

    # the page shows this run's own figures
    assert f"{summary['oot']['auc']:.4f}" in page
    assert f"{summary['valid']['auc']:.4f}" in page
    assert f"{summary['fidelity']['top1']:.1%}" in page
    assert summary["mlflow_run_id"] in page
    matched = (root / "models" / "policy" / "matched_loss.csv").read_text().splitlines()
    pol = page.split('<section id="policy">')[1].split("</section>")[0]
    assert pol.count("<tr>") == len(matched)  # header + one row per matched threshold
    top = json.loads((root / "models" / "shap_importance.json").read_text())["importance"][0][0]
    shap_part = page.split('<section id="shap">')[1].split("</section>")[0]
    assert f"<code>{top}</code>" in shap_part


def test_report_is_logged_with_the_run(world):
    _, cfg, summary = world
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    parent = client.get_run(summary["mlflow_run_id"])
    exp_id = parent.info.experiment_id
    children = [
        r
        for r in client.search_runs([exp_id])
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]
    rep = next(r for r in children if r.data.tags["stage"] == "report")
    assert {a.path for a in client.list_artifacts(rep.info.run_id, "report")} == {
        "report/report.html"
    }
    assert rep.data.metrics["report.plots"] == len(IMG.findall(Path(summary["report"]).read_text()))
    pol = next(r for r in children if r.data.tags["stage"] == "policy")
    assert pol.data.metrics["rows"] > 0


def test_missing_parts_are_named_not_dropped(world, tmp_path):
    root, _, _ = world
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    shutil.rmtree(models / "policy")
    (models / "fidelity.json").unlink()
    page = report.render(report.collect(models, root / "data" / "raw", root / "data" / "processed"))
    pol = page.split('<section id="policy">')[1].split("</section>")[0]
    assert 'class="missing"' in pol and "make policy" in pol
    fid = page.split('<section id="fidelity">')[1].split("</section>")[0]
    assert 'class="missing"' in fid
    assert "frontier" not in {n for n, _ in IMG.findall(page)}


def test_corrupt_parts_fail_naming_the_file(world, tmp_path):
    root, _, _ = world
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    raw, processed = root / "data" / "raw", root / "data" / "processed"
    (models / "fidelity.json").write_text("{not json")
    with pytest.raises(DataError, match=r"fidelity\.json: not a readable JSON file"):
        report.collect(models, raw, processed)
    (models / "fidelity.json").unlink()
    (models / "plots" / "roc.png").write_bytes(b"GIF89a not a png")
    with pytest.raises(DataError, match=r"roc\.png: not a PNG image"):
        report.render(report.collect(models, raw, processed))
    (models / "model.json").unlink()
    with pytest.raises(DataError, match=r"model\.json: file not found"):
        report.collect(models, raw, processed)


def test_values_are_escaped(world, tmp_path):
    root, _, _ = world
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    summary = json.loads((models / "summary.json").read_text())
    summary["mlflow_run_id"] = "<script>alert(1)</script>"
    (models / "summary.json").write_text(json.dumps(summary))
    page = report.render(report.collect(models, root / "data" / "raw", root / "data" / "processed"))
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# ------------------------------------------------------------------ headless Chromium

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # the page must not need the network: every host name fails to resolve
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    if os.environ.get("CLOSURE_RISK_REQUIRE_CHROMIUM"):
        pytest.fail("Chromium is required here but not installed (.ci/install-chromium)")
    pytest.skip("Chromium is not installed (bash .ci/install-chromium installs it)")


def _browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _body(dom: str) -> dict[str, str]:
    m = re.search(r"<body([^>]*)>", dom)
    assert m, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))


@pytest.mark.slow
def test_report_renders_in_headless_chromium(world, tmp_path):
    root, _, _ = world
    page = root / "models" / "report.html"
    n_plots = len(IMG.findall(page.read_text(encoding="utf-8")))

    dom = _browse(page, tmp_path / "p1", "--virtual-time-budget=10000", "--dump-dom").stdout
    body = _body(dom)
    assert body.get("data-plots") == str(n_plots), body
    assert body.get("data-plots-ok") == str(n_plots), body  # every plot decoded
    assert body.get("data-sections", "").split() == [sid for sid, _ in report.SECTIONS]

    shot = tmp_path / "page.png"
    _browse(page, tmp_path / "p2", "--window-size=1280,2400", f"--screenshot={shot}")
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2400, 1280)
    # a painted page, not a blank one: many distinct colours (text, tables, plots)
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200

    # the check can fail: a broken plot is counted as not shown
    broken = tmp_path / "broken.html"
    text = page.read_text(encoding="utf-8")
    name, src = IMG.findall(text)[0]
    broken.write_text(text.replace(src, "data:image/png;base64,iVBORw0KGgoAAAA=", 1))
    body = _body(
        _browse(broken, tmp_path / "p3", "--virtual-time-budget=10000", "--dump-dom").stdout
    )
    assert body["data-plots"] == str(n_plots)
    assert body["data-plots-ok"] == str(n_plots - 1), name


def test_run_without_out_of_time_rows_still_reports(tmp_path):
    """No out-of-time snapshots: the policy comparison is skipped, the run and report go on."""
    _, summary = run_world(tmp_path, ["features.oot_snapshots=[]"])
    assert not (tmp_path / "models" / "policy").exists()
    page = Path(summary["report"]).read_text(encoding="utf-8")
    pol = page.split('<section id="policy">')[1].split("</section>")[0]
    assert 'class="missing"' in pol and "out-of-time rows" in pol
    assert f"{summary['valid']['auc']:.4f}" in page


def test_report_command_and_stale_outputs(world, tmp_path):
    """`report` alone leaves the run's records; a new model makes derived parts vanish."""
    from helpers import compose_config

    from pipeline.__main__ import execute
    from tests.test_table import GERMAN

    src, _, _ = world
    for part in ("data", "models"):
        shutil.copytree(src / part, tmp_path / part)
    models = tmp_path / "models"
    summary_before = (models / "summary.json").read_bytes()
    config_before = (models / "resolved_config.yaml").read_bytes()
    (models / "report.html").unlink()

    rep = execute(compose_config(tmp_path, ["tracking=off"], stage="report"), [])
    assert Path(rep["path"]) == models / "report.html" and (models / "report.html").exists()
    assert (models / "summary.json").read_bytes() == summary_before
    assert (models / "resolved_config.yaml").read_bytes() == config_before

    # a bring-your-own-table model trained into the same folders: everything derived
    # from the simulator's model goes, and the simulator's data is not shown as its own
    table = ["tracking=off", "data=table", f"data.path={GERMAN}", "data.target=creditability"]
    table += ["data.positive=bad", "model.cv_repeats=1"]
    execute(compose_config(tmp_path, table, stage="train"), [])
    for gone in ("policy", "reasons.parquet", "fidelity.json", "report.html"):
        assert not (models / gone).exists(), gone
    assert not list((models / "plots").glob("dependence_*.png"))
    rep = execute(compose_config(tmp_path, table, stage="report"), [])
    page = Path(rep["path"]).read_text(encoding="utf-8")
    for sid in ("data-card", "fidelity", "policy", "stability", "shap"):
        part = page.split(f'<section id="{sid}">')[1].split("</section>")[0]
        assert 'class="missing"' in part, sid
    assert "closure_rate_by_cause" not in page
    summary = json.loads((models / "summary.json").read_text())
    assert summary["closure_rate"] == pytest.approx(0.3)  # the table's own bad rate
    assert "30.0%" in page


def test_crafted_values_in_csv_outputs_are_escaped(world, tmp_path):
    root, _, _ = world
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    processed = tmp_path / "processed"
    shutil.copytree(root / "data" / "processed", processed)
    evil = "<img src=x onerror=alert(1)>"
    stab = (processed / "stability.csv").read_text().splitlines()
    # every feature renamed: whichever rows the page shows carry the crafted text
    stab = [stab[0]] + [evil + line[line.index(",") :] for line in stab[1:]]
    (processed / "stability.csv").write_text("\n".join(stab) + "\n")
    page = report.render(report.collect(models, root / "data" / "raw", processed))
    assert evil not in page
    assert html.escape(evil, quote=True) in page
