"""A bring-your-own-table run speaks the table's language: its own column names and levels
in everything a person reads, and its target's words instead of the simulator's closures."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import GERMAN, compose_config

from pipeline.core import encoding, report
from pipeline.core import explain as explain_core
from pipeline.core.labels import Labels, labels_of
from pipeline.stages import explain as explain_stage
from pipeline.stages.driver import execute

# column names LightGBM refuses, and the safe names the encoding gives them
ODD = {
    "amount, EUR": "amount_EUR",
    'housing "type"': "housing_type",
    "years at address": "years_at_address",
    "grade:{letter}": "grade_letter",
}


def _odd_table(n: int = 800, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.gamma(2.0, 1500.0, n).round(0)
    housing = rng.choice(["own", "rent", "free"], n, p=[0.5, 0.35, 0.15])
    years = rng.integers(0, 30, n)
    grade = rng.choice(["A", "B", "C", "D"], n)
    z = (
        0.0006 * (amount - 3000)
        + np.where(housing == "rent", 0.9, 0.0)
        - 0.05 * years
        + np.select([grade == "D", grade == "C"], [1.2, 0.5], 0.0)
        + rng.normal(0, 0.8, n)
    )
    return pd.DataFrame(
        {
            "amount, EUR": amount,
            'housing "type"': housing,
            "years at address": years,
            "grade:{letter}": grade,
            "defaulted": np.where(z > np.quantile(z, 0.7), "yes", "no"),
        }
    )


def _visible(page: str) -> str:
    """What a reader of the page sees: its text and image descriptions, unescaped."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    alts = " ".join(re.findall(r'alt="([^"]*)"', page))
    return html.unescape(re.sub(r"<[^>]+>", " ", page) + " " + alts)


def _section(page: str, sid: str) -> str:
    return page.split(f'<section id="{sid}">')[1].split("</section>")[0]


def _cells(part: str) -> list[list[str]]:
    body = part.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [
        [
            html.unescape(re.sub(r"<[^>]+>", " ", c)).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)
    ]


# ---- pure parts ---------------------------------------------------------------------


def test_words_follow_the_mode_the_target_and_the_split_rule():
    sim = report.words({"mode": "simulator"})
    assert sim.split == "out-of-time" and "closure" in sim.rate and "borrower" in sim.rows
    table = {"target": "creditability", "positive": "bad", "time": None, "path": "/x/g.csv"}
    w = report.words({"mode": "table", "table": table})
    assert w.title == "What drives creditability = bad"
    assert w.split == "hold-out" and w.rows == "rows" and w.rate == "creditability = bad rate"
    assert w.split_name("oot") == "hold-out" and w.split_name("valid") == "valid"
    assert "g.csv" in w.tagline
    for text in (w.title, w.tagline, w.summary_title, w.events, w.rate, w.rows, w.entity):
        assert "clos" not in text.lower() and "borrower" not in text.lower()
    timed = report.words({"mode": "table", "table": {**table, "time": "month"}})
    assert timed.split == "out-of-time" and timed.split_name("oot") == "out-of-time"
    # a summary that carries only the mode still gets table words
    assert report.words({"mode": "table"}).split == "hold-out"


def test_labels_map_safe_names_and_codes_back_to_the_table():
    df = _odd_table(200)
    enc = encoding.fit(df.drop(columns="defaulted"), min_count=1)
    meta = {"mode": "table", "encoding": enc.to_json()}
    lab = labels_of(meta)
    assert {lab.name(s): s for s in enc.feature_names} == {o: s for o, s in ODD.items()}
    levels = enc.categories()["housing_type"]
    assert lab.value("housing_type", levels.index("rent")) == "rent"
    assert lab.value("housing_type", encoding.MISSING_CODE) == "missing"
    assert lab.value("amount_EUR", 1234.0) == "1234"
    assert lab.reason("grade_letter", 3) == "grade:{letter} = D"
    # a simulator model, or a table model saved without an encoding: names as they are
    assert labels_of({"mode": "simulator", "encoding": enc.to_json()}).identity
    assert labels_of({"mode": "table"}).name("amount_EUR") == "amount_EUR"


def test_feature_reasons_speak_with_the_table_names_and_levels():
    names = ["amount_EUR", "housing_type"]
    lab = Labels(
        names={"amount_EUR": "amount, EUR", "housing_type": 'housing "type"'},
        levels={"housing_type": ["free", "own", "rent", "rare"]},
    )
    X = np.array([[5000.0, 2.0], [100.0, 0.0]], dtype=np.float32)
    contrib = np.array([[0.1, 0.7, -1.0], [-0.2, 0.3, -1.0]])
    r = explain_core.feature_reasons(contrib, X, names, 2, lab)
    assert list(r["reason_1_en"]) == ['housing "type" = rent', 'housing "type" = free']
    assert list(r["reason_2_en"]) == ["amount, EUR = 5000", ""]
    assert list(r["reason_1_feature"]) == ["housing_type", "housing_type"]  # files keep safe
    assert list(r["reason_1_name"]) == ['housing "type"'] * 2
    rebuilt = report.table_reasons(
        {k: v[0] for k, v in r.items()}, lab
    )  # the report rebuilds the same text from the features
    assert rebuilt[0].startswith('housing "type" = rent (+0.700)')


# ---- whole runs ---------------------------------------------------------------------

TINY = ["tracking=off", "model.cv_repeats=1", "model.n_estimators=60", "explain.dependence_top=2"]


def _run(root: Path, table: list[str], stage: str, *extra: str) -> Any:
    return execute(compose_config(root, [*TINY, *table, *extra], stage=stage), [])


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """Train, explain (plots captured), report and one row's story on the odd-named table."""
    root = tmp_path_factory.mktemp("odd_names")
    path = root / "odd names.csv"
    _odd_table().to_csv(path, index=False)
    table = ["data=table", f"data.path={path}", "data.target=defaulted", "data.positive=yes"]
    texts: dict[str, list[str]] = {}
    save = explain_stage._save_fig

    def capture(fig: Any, out: Path) -> None:  # every label the plot shows a reader
        found = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
        texts[out.stem] = [t for t in found if t]
        save(fig, out)

    mp = pytest.MonkeyPatch()
    mp.setattr(explain_stage, "_save_fig", capture)
    try:
        _run(root, table, "train")
        _run(root, table, "explain")
        _run(root, table, "report")
        reasons = pq.read_table(root / "models" / "reasons.parquet").to_pandas()
        top = reasons.sort_values("probability", ascending=False).iloc[0]
        _run(root, table, "explain", f"explain.borrower_id={int(top['row_id'])}")
    finally:
        mp.undo()
    return root, int(top["row_id"]), texts


@pytest.mark.slow
def test_odd_column_names_reach_the_reader_as_the_table_spells_them(odd_run):
    root, rid, texts = odd_run
    models = root / "models"
    page = (models / "report.html").read_text(encoding="utf-8")
    seen = _visible(page)
    for safe in ODD.values():
        assert safe not in seen, safe
    shap_part = _visible(_section(page, "shap"))
    assert sum(o in shap_part for o in ODD) >= 3  # the top features, by their own names
    # the scorecard points table lists features by the table's names too
    card = _cells(_section(page, "scorecard"))
    assert {r[0] for r in card if r[0]} & set(ODD)
    # the highest-risk rows: id, score, outcome, reasons from the features, never None
    rows = _cells(_section(page, "shap").split("highest-risk")[1])
    assert rows and all("None" not in " ".join(r) for r in rows)
    assert all(re.search(r" = .+\([+]\d", r[3]) for r in rows)
    # the story of one row
    story = json.loads((models / f"borrower_{rid}.json").read_text())
    assert story["reasons"] and story["event"] == "defaulted = yes"
    for r in story["reasons"]:
        assert r["name"] == {v: k for k, v in ODD.items()}[r["feature"]]
        for key in ("en", "zh", "name"):
            assert r[key].startswith(r["name"]) and not any(s in r[key] for s in ODD.values())
    # the files others read keep the safe names, with the reader's names beside them
    imp = json.loads((models / "shap_importance.json").read_text())
    assert {f for f, _ in imp["importance"]} == set(ODD.values())
    assert imp["names"] == {v: k for k, v in ODD.items()}
    reasons = pq.read_table(models / "reasons.parquet").to_pandas()
    named = reasons[reasons.reason_1_feature != ""]
    assert (named.reason_1_name == named.reason_1_feature.map({v: k for k, v in ODD.items()})).all()
    # every plot's labels: the table's names, never the safe ones
    for plot in ("shap_bar", "shap_beeswarm", f"waterfall_{rid}"):
        labels = " ".join(texts[plot])
        assert any(o in labels for o in ODD), plot
        assert not any(s in labels for s in ODD.values()), (plot, labels)
    deps = [k for k in texts if k.startswith("dependence_")]
    assert len(deps) == 2
    for k in deps:
        assert not any(s in " ".join(texts[k]) for s in ODD.values()), texts[k]


#: the simulator's words: none may reach a reader of a table run (its console, report
#: and plots); the table's own column names are the table's words and are left aside
SIMULATOR_WORDS = (
    "out-of-time",
    "closure",
    "closed",
    "fidelity",
    "borrower",
    "snapshot",
    "never-overdue",
    "oracle",
    "simulated",
    "oot",
)


def _simulator_words(text: str, columns: list[str]) -> list[str]:
    for c in sorted(columns, key=len, reverse=True):
        text = text.replace(c, " ")
    return [w for w in SIMULATOR_WORDS if re.search(rf"\b{re.escape(w)}", text, flags=re.I)]


@pytest.mark.slow
def test_german_credit_report_speaks_of_the_table_not_of_closures(tmp_path, capsys):
    from pipeline.core import evaluation

    table = ["data=table", f"data.path={GERMAN}", "data.target=creditability"]
    table.append("data.positive=bad")
    texts: dict[str, list[str]] = {}
    saves = {explain_stage: explain_stage._save_fig, evaluation: evaluation._save}

    def capture(module: Any) -> Any:
        def save(fig: Any, out: Path) -> None:  # every label the plot shows a reader
            found = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
            texts[out.stem] = [t for t in found if t]
            saves[module](fig, out)

        return save

    mp = pytest.MonkeyPatch()
    mp.setattr(explain_stage, "_save_fig", capture(explain_stage))
    mp.setattr(evaluation, "_save", capture(evaluation))
    try:
        _run(tmp_path, table, "train")
        _run(tmp_path, table, "explain")
        _run(tmp_path, table, "report")
    finally:
        mp.undo()
    console = capsys.readouterr().out
    page = (tmp_path / "models" / "report.html").read_text(encoding="utf-8")
    seen = _visible(page)
    columns = pd.read_csv(GERMAN, nrows=1).columns.tolist()
    assert "What drives creditability = bad" in seen
    assert "hold-out" in seen and "hold-out" in console
    assert {"roc", "gains", "calibration"} <= set(texts) and len(texts) >= 6
    assert _simulator_words(console, columns) == [], console
    assert _simulator_words(seen, columns) == []
    for name, found in texts.items():
        assert _simulator_words(" ".join(found), columns) == [], (name, found)
    # the candidate's name in the ROC legend; the rows a figure rests on in its title
    model = json.loads((tmp_path / "models" / "evaluation.json").read_text())["model"]["kind"]
    assert any(t.startswith(f"{model} (AUC") for t in texts["roc"]), texts["roc"]
    assert any("200 rows" in t for t in texts["roc"])
    # sections about a simulated world are left out, not announced
    assert 'class="missing"' not in page.split('<section id="data-card">')[1].split("</section>")[0]
    for sid in ("fidelity", "policy", "stability", "advice", "dictionary"):
        assert f'<section id="{sid}">' not in page, sid
    # the scorecard and the dependence plots show the table's levels, not codes
    points = _cells(_section(page, "scorecard"))
    purpose = [r[1] for r in points if r[0] == "purpose"]
    assert len(purpose) >= 2 and not any(re.search(r"(^|, )-?\d+(,|$)", b) for b in purpose), (
        purpose
    )
    assert "car (used)" in " ".join(purpose), purpose
    deps = [k for k in texts if k.startswith("dependence_")]
    status = next(k for k in deps if "checking" in k)
    assert any("< 0 DM" in t for t in texts[status]), texts[status]
    rows = _cells(_section(page, "shap").split("highest-risk")[1])
    assert len(rows) == 5
    for r in rows:
        assert "None" not in r and r[0].isdigit() and float(r[1]) > 0
        assert r[3] and "no feature" not in r[3]
