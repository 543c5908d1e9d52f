"""The HTML model report: complete, self-contained, logged, and shown by a real browser."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import markupsafe
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import chromium, compose_config, run_world
from mlflow.tracking import MlflowClient

from pipeline.adapters.catalog import Catalog
from pipeline.base.causes import ALL_CAUSES, CAUSE_TEXT
from pipeline.base.config import REPO_ROOT
from pipeline.base.io import DataError
from pipeline.base.registry import BY_NAME, FEATURES
from pipeline.core import report
from pipeline.core.scoring import assign_tiers
from pipeline.stages.driver import execute
from pipeline.stages.report import collect as _collect
from pipeline.tools import dictionary

IMG = re.compile(r'<img class="plot" data-plot="([^"]+)"[^>]*src="([^"]+)"')


@pytest.fixture
def world(trained_world):
    """The shared trained SMALL world (a whole run, MLflow under its root): read only."""
    return trained_world


def collect(models: Path, raw: Path, processed: Path) -> report.Inputs:
    """The report stage's reader on three folders (the truth folder is not read)."""
    return _collect(Catalog(raw, raw.parent / "truth", processed, models))


def _section(page: str, sid: str) -> str:
    return page.split(f'<section id="{sid}">')[1].split("</section>")[0]


def _pngs(root: Path) -> set[str]:
    found = set()
    for folder in ("data/raw/plots", "models/plots", "models/survival", "models/policy"):
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
    pj = json.loads((root / "models" / "policy" / "policy.json").read_text())
    levels = pj["tuned"]["levels"]
    # header + one row per matched threshold, then header + one row per tuned level
    assert pol.count("<tr>") == len(matched) + 1 + len(levels) and levels
    assert str(markupsafe.escape(pj["verdict_sentence"])) in pol
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
    page = report.render(collect(models, root / "data" / "raw", root / "data" / "processed"))
    pol = page.split('<section id="policy">')[1].split("</section>")[0]
    assert 'class="missing"' in pol and "make policy" in pol
    fid = page.split('<section id="fidelity">')[1].split("</section>")[0]
    assert 'class="missing"' in fid
    assert "frontier" not in {n for n, _ in IMG.findall(page)}


def test_parts_of_another_model_are_refused(world, tmp_path):
    root, _, _ = world
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    raw, processed = root / "data" / "raw", root / "data" / "processed"
    collect(models, raw, processed)  # the run's own parts are accepted
    for name in ("fidelity.json", "shap_importance.json", "policy/policy.json"):
        path = models / name
        original = path.read_text()
        part = json.loads(original)
        part["model_stamp"] = "0" * 64
        path.write_text(json.dumps(part))
        with pytest.raises(
            DataError, match=rf"{re.escape(name)}: was derived from model 000000000000"
        ):
            collect(models, raw, processed)
        del part["model_stamp"]
        path.write_text(json.dumps(part))
        with pytest.raises(DataError, match=r"carries no model stamp"):
            collect(models, raw, processed)
        path.write_text(original)


def test_corrupt_parts_fail_naming_the_file(world, tmp_path):
    root, _, _ = world
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    raw, processed = root / "data" / "raw", root / "data" / "processed"
    (models / "fidelity.json").write_text("{not json")
    with pytest.raises(DataError, match=r"fidelity\.json: not a readable JSON file"):
        collect(models, raw, processed)
    (models / "fidelity.json").unlink()
    (models / "plots" / "roc.png").write_bytes(b"GIF89a not a png")
    with pytest.raises(DataError, match=r"roc\.png: not a PNG image"):
        collect(models, raw, processed)
    (models / "plots" / "roc.png").unlink()
    card = (models / "scorecard.csv").read_text().replace("points", "pts", 1)
    (models / "scorecard.csv").write_text(card)
    with pytest.raises(DataError, match=r"scorecard\.csv: column 'points' is missing"):
        collect(models, raw, processed)
    (models / "scorecard.csv").unlink()
    (models / "reasons.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(DataError, match=r"reasons\.parquet: not a readable Parquet file"):
        collect(models, raw, processed)
    pq.write_table(
        pa.table({"probability": [0.2, 1.5], "label": [0, 1]}), models / "reasons.parquet"
    )
    with pytest.raises(DataError, match=r"reasons\.parquet: column 'probability' must hold"):
        collect(models, raw, processed)
    pq.write_table(
        pa.table({"probability": [0.2, 0.5], "label": [0, 2]}), models / "reasons.parquet"
    )
    with pytest.raises(DataError, match=r"reasons\.parquet: column 'label' must hold 0 or 1"):
        collect(models, raw, processed)
    (models / "model.json").unlink()
    with pytest.raises(DataError, match=r"model\.json: file not found"):
        collect(models, raw, processed)


def test_values_are_escaped(world, tmp_path):
    root, _, _ = world
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    summary = json.loads((models / "summary.json").read_text())
    summary["mlflow_run_id"] = "<script>alert(1)</script>"
    (models / "summary.json").write_text(json.dumps(summary))
    page = report.render(collect(models, root / "data" / "raw", root / "data" / "processed"))
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


def _browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
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
    _, summary = run_world(
        tmp_path, ["features.snapshots=[12,14,16,18,20,24,26]", "features.oot_snapshots=[]"]
    )
    assert not (tmp_path / "models" / "policy").exists()
    page = Path(summary["report"]).read_text(encoding="utf-8")
    pol = page.split('<section id="policy">')[1].split("</section>")[0]
    assert 'class="missing"' in pol and "out-of-time rows" in pol
    assert f"{summary['valid']['auc']:.4f}" in page


def test_report_command_and_stale_outputs(world, tmp_path):
    """`report` alone leaves the run's records; a new model makes derived parts vanish."""
    from helpers import GERMAN

    src, _, _ = world
    for part in ("data", "models"):
        shutil.copytree(src / part, tmp_path / part)
    models = tmp_path / "models"
    summary_before = (models / "summary.json").read_bytes()
    config_before = (models / "resolved_config.yaml").read_bytes()
    (models / "report.html").unlink()

    rep = execute(compose_config(tmp_path, ["tracking=off"], stage="report"), [])
    assert Path(rep.path) == models / "report.html" and (models / "report.html").exists()
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
    page = Path(rep.path).read_text(encoding="utf-8")
    # what this run has not produced yet is named; what does not apply to a table
    # (the sections about a simulated world) is left out
    for sid in ("shap", "cutoffs"):
        part = page.split(f'<section id="{sid}">')[1].split("</section>")[0]
        assert 'class="missing"' in part, sid
    for sid in report.SIMULATOR_ONLY:
        assert f'<section id="{sid}">' not in page, sid
    assert 'class="missing"' not in _section(page, "data-card")
    assert "closure_rate_by_cause" not in page
    # the scorecard is fitted on the table's own columns: its points are shown
    card = _section(page, "scorecard")
    assert 'class="missing"' not in card
    points = card.split("</table>")[0]  # the points table; the score bands follow it
    assert len(_rows(points)) == len(pd.read_csv(models / "scorecard.csv"))
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
    page = report.render(collect(models, root / "data" / "raw", processed))
    assert evil not in page
    assert html.escape(evil, quote=True) in page


# ------------------------------------------------------------------ the modeller's views


def esc(text: object) -> str:
    """Text as the template's autoescaping writes it."""
    return str(markupsafe.escape(str(text)))


def _rows(part: str) -> list[list[str]]:
    """The body rows of the tables in ``part``, as lists of cell texts."""
    body = "".join(re.findall(r"<tbody>(.*?)</tbody>", part, flags=re.S))
    return [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", body)]


def feature_label_html(name: str) -> str:
    f = BY_NAME.get(name)
    return f"<br><small>{esc(f.en)} · {esc(f.zh)}</small>" if f else ""


def test_scorecard_points_table(world):
    root, cfg, _ = world
    page = (root / "models" / "report.html").read_text(encoding="utf-8")
    part = _section(page, "scorecard")
    card = pd.read_csv(root / "models" / "scorecard.csv")
    meta = json.loads((root / "models" / "scorecard_card.json").read_text())
    tables = part.split("</table>")
    rows = _rows(tables[0])
    assert len(rows) == len(card)  # every bin of every kept feature
    seen = set()
    for row, (_, want) in zip(rows, card.iterrows(), strict=True):
        label = feature_label_html(want.feature) if want.feature not in seen else ""
        assert row[0] == f"<code>{want.feature}</code>{label}"
        seen.add(want.feature)
        assert row[1] == esc(want["bin"])
        assert row[-1] == f"{want.points:.1f}"
    sc = cfg.model.scorecard
    assert f"base score <b>{sc.base_score:g}</b>" in part
    assert f"odds of <b>{sc.base_odds:g}:1</b>" in part
    assert f"every <b>{sc.pdo:g}</b> points (PDO)" in part
    base = meta["base_points"]
    assert f"the base points <b>{base:.1f}</b>" in part
    low = base + card.groupby("feature").points.min().sum()
    high = base + card.groupby("feature").points.max().sum()
    assert f"from {low:.0f} to {high:.0f}" in part
    assert "Coefficients against their WoE in the card: <b>0</b>" in part
    # the features dropped for their sign, each with its reason, then the score bands
    dropped = meta["sign_dropped"]
    if dropped:
        shown = _rows(tables[1])
        assert [r[0].split("<br>")[0] for r in shown] == [f"<code>{f}</code>" for f in dropped]
        assert all("points would fall as a bin gets safer" in r[1] for r in shown)
    bands = _rows(tables[-2])
    assert len(bands) == len(meta["bands"])
    assert sum(int(r[1].replace(",", "")) for r in bands) == sum(
        b["n_train"] for b in meta["bands"]
    )


def test_cutoff_view_matches_the_scored_rows(world):
    root, cfg, _ = world
    page = (root / "models" / "report.html").read_text(encoding="utf-8")
    scored = pq.read_table(root / "models" / "reasons.parquet").to_pandas()
    p, y = scored.probability.to_numpy(), scored.label.to_numpy()
    lo, hi = cfg.score.tier_cuts
    masks = {"high": p >= hi, "medium": (p >= lo) & (p < hi), "low": p < lo}
    rows = _rows(_section(page, "cutoffs"))
    assert [r[0] for r in rows] == list(reversed(cfg.score.tier_names))
    cum = 0
    for row in rows:
        k = masks[row[0]]
        cum += y[k].sum()
        assert row[2] == f"{k.sum():,}"
        assert row[4] == (f"{p[k].mean():.1%}" if k.any() else "–")
        assert row[5] == f"{y[k].sum():,}"
        assert row[6] == (f"{y[k].mean():.1%}" if k.any() else "–")
        assert row[7] == f"{y[k].sum() / y.sum():.1%}"
        assert row[8] == f"{cum / y.sum():.1%}"
    assert y[masks["high"]].mean() > y[masks["low"]].mean()  # the tiers do rank the risk


def test_cutoff_table_follows_the_score_commands_tiers():
    rng = np.random.default_rng(3)
    p = rng.beta(1, 12, size=5000)
    p[:3] = [0.05, 0.15, 0.0]  # on a cut: the tier above it, as the score command assigns
    y = (rng.random(5000) < 2 * p).astype(int)
    cuts, names = [0.05, 0.15], ["low", "medium", "high"]
    rows = report.cutoff_table(p, y, cuts, names)
    assert [r["tier"] for r in rows] == ["high", "medium", "low"]
    assert [r["range"] for r in rows] == ["p ≥ 0.15", "0.05 ≤ p < 0.15", "p < 0.05"]
    tiers = assign_tiers(p, cuts, names)
    for r in rows:
        k = tiers == r["tier"]
        assert (r["n"], r["closures"]) == (k.sum(), y[k].sum())
        assert r["rate"] == pytest.approx(y[k].mean())
        assert r["mean_probability"] == pytest.approx(p[k].mean())
        assert r["capture"] == pytest.approx(y[k].sum() / y.sum())
    cum = np.cumsum([r["capture"] for r in rows])
    assert [r["cum_capture"] for r in rows] == pytest.approx(cum)
    assert cum[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="increasing cuts"):
        report.cutoff_table(p, y, [0.15, 0.05], names)
    with pytest.raises(ValueError, match="one length"):
        report.cutoff_table(p, y[:-1], cuts, names)


def test_glossary_and_dictionary_where_they_are_used(world):
    root, _, _ = world
    page = (root / "models" / "report.html").read_text(encoding="utf-8")
    card = _section(page, "data-card")
    for code in ALL_CAUSES:  # every cause defined where the closures by cause are shown
        zh, en = CAUSE_TEXT[code]
        assert f'<dt id="cause-{code}"><code>{code}</code></dt>' in card
        assert f"<dd>{esc(en)} · {zh}</dd>" in card
    pol = _section(page, "policy")
    assumptions = json.loads((root / "models" / "policy" / "policy.json").read_text())[
        "assumptions"
    ]
    for term in ("good-hit", "good-closed", "matched-loss", "loss", "revenue", "tiered"):
        assert f'<dt id="term-{term}">' in pol, term
    assert "good hit: close" in pol and "good closed: tiered" in pol  # used in the same section
    assert f"{assumptions['lgd']:g} (the loss given default)" in pol
    # every in-page link lands on something
    ids = set(re.findall(r'id="([^"]+)"', page))
    assert {h for h in re.findall(r'href="#([^"]+)"', page)} <= ids

    names = json.loads((root / "models" / "model.json").read_text())["feature_names"]
    rows = _rows(_section(page, "dictionary"))
    assert [r[0] for r in rows] == [f"<code>{n}</code>" for n in names if n in BY_NAME]
    for r in rows:
        f = BY_NAME[r[0][6:-7]]
        assert r[1:] == [
            f.family,
            ", ".join(f.causes) or "–",
            {1: "+1 (more: riskier)", -1: "-1 (more: safer)", 0: "0 (free)"}[f.monotone],
            "yes" if f.actionable else "no",
            esc(f.en),
            f.zh,
        ]


def test_template_escapes_feature_and_cause_text(monkeypatch):
    evil = "<script>alert(1)</script>"
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    name = "months_since_last_draw"
    monkeypatch.setitem(BY_NAME, name, dataclasses.replace(BY_NAME[name], en=evil, zh=evil))
    monkeypatch.setitem(CAUSE_TEXT, "sudden_stop", (evil, evil))
    inp = report.Inputs(
        model={"mode": "simulator", "feature_names": [name, evil]},
        data_card={"metrics": {}, "by_cause": {"sudden_stop": 10, evil: 5}},
        shap_importance=[(name, 0.5), (evil, 0.2)],
        cause_importance=[("sudden_stop", 0.4), (evil, 0.1)],
        stability=[{"feature": evil, "family": evil, "psi_train_oot": "0.3"}],
    )
    page = report.render(inp)
    assert evil not in page
    assert page.count("<script>") == 1  # the page's own, and nothing else
    assert f"<code>{name}</code><br><small>{escaped} · {escaped}</small>" in _section(page, "shap")
    assert f"<code>{escaped}</code>" in _section(page, "shap")
    assert f"<dd>{escaped} · {escaped}</dd>" in _section(page, "data-card")
    assert f'<td class="t">{escaped}</td>' in _section(page, "dictionary")
    assert f"<code>{escaped}</code>" in _section(page, "stability")


def test_feature_dictionary_file_is_current(tmp_path):
    committed = (REPO_ROOT / "docs" / "feature_dictionary.md").read_text(encoding="utf-8")
    assert committed == dictionary.markdown()  # regenerate with python -m pipeline.tools.dictionary
    for f in FEATURES:
        assert f"| `{f.name}` | {f.family} | {', '.join(f.causes) or '–'} |" in committed
    out = tmp_path / "docs" / "dictionary.md"
    assert dictionary.main([str(out)]) == 0
    assert out.read_text(encoding="utf-8") == committed
    out.write_text(committed.replace(FEATURES[0].en, "something else"), encoding="utf-8")
    assert dictionary.main([str(out), "--check"]) == 1
    assert dictionary.main([str(out)]) == 0 and dictionary.main([str(out), "--check"]) == 0
