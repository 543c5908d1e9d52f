"""Runner of the ``report`` stage: the self-contained HTML model report.

:func:`collect` reads what the other stages wrote (named by the artifact catalog) into
a :class:`pipeline.core.report.Inputs`; :func:`pipeline.core.report.render` turns it into
the page. The stage writes ``models/report.html`` atomically and logs it to its nested
MLflow run under ``report/``. In ``run`` it comes last, after the run summary is
written, so the page shows the figures of the run it belongs to.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.adapters.catalog import Catalog
from pipeline.adapters.tracking import Tracker
from pipeline.base.config import Config, ScoreConfig, tier_cuts
from pipeline.base.io import DataError
from pipeline.core import report as core
from pipeline.stages.common import STAMP_KEY, Result, check_stamp, model_stamp, say

REASON_COLUMNS = (
    ["borrower_id", "snapshot", "probability", "label", "label_cause"]
    + [
        f"reason_{i}_{k}"
        for i in (1, 2, 3)
        for k in ("cause", "feature", "value", "shap", "zh", "en")
    ]
    + [f"protect_{i}_{k}" for i in (1, 2, 3) for k in ("zh", "en")]
)
ADVICE_COLUMNS = ["borrower_id", "snapshot", "p_before", "p_after", "achieved", "cost", "advice_en"]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc


def _csv(path: Path, required: Sequence[str] = ()) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            names = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc
    lacking = [c for c in required if c not in names]
    if lacking:
        raise DataError(f"{path}: column {lacking[0]!r} is missing (needs {', '.join(required)})")
    return rows


def _parquet(path: Path, columns: Sequence[str]) -> Any:
    try:
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[c for c in columns if c in names]).to_pandas()
    except Exception as exc:  # noqa: BLE001 - any reader failure is a corrupt file here
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc


def _top_rows(path: Path, columns: Sequence[str], n: int, sort_by: str) -> list[dict[str, Any]]:
    t = _parquet(path, columns)
    if sort_by in t.columns:
        t = t.sort_values(sort_by, ascending=False, kind="stable")
    return t.head(n).to_dict(orient="records")


def _scored(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Probability and label of every scored row (the cut-off view)."""
    t = _parquet(path, ["probability", "label"])
    for col in ("probability", "label"):
        if col not in t.columns:
            raise DataError(f"{path}: column {col!r} is missing (the cut-off view needs it)")
    prob = t["probability"].to_numpy(dtype=float)
    label = t["label"].to_numpy()
    if not np.isin(label, (0, 1)).all():
        raise DataError(f"{path}: column 'label' must hold 0 or 1 only")
    if not np.isfinite(prob).all() or ((prob < 0) | (prob > 1)).any():
        raise DataError(f"{path}: column 'probability' must hold probabilities in [0, 1]")
    return prob, label.astype(np.int8)


def _png(path: Path) -> bytes:
    data = path.read_bytes()
    if not data.startswith(core.PNG_MAGIC):
        raise DataError(f"{path}: not a PNG image")
    return data


def _explained(cat: Catalog, inp: core.Inputs, example_rows: int, stamp: str) -> None:
    """The explain stage's parts: importances, fidelity, reasons, advice, scored rows."""
    if cat.path("fidelity").exists():
        inp.fidelity = _derived(cat.path("fidelity"), stamp)
    for name in ("shap_importance", "cause_importance"):
        if cat.path(name).exists():
            imp = _derived(cat.path(name), stamp)["importance"]
            pairs = [(str(k), float(v)) for k, v in imp]
            setattr(inp, name, pairs)
    reasons = cat.path("reasons")
    if reasons.exists():
        columns = list(dict.fromkeys([inp.id_column, *REASON_COLUMNS]))  # a table: its own id
        inp.reasons = _top_rows(reasons, columns, example_rows, "probability")
        inp.scored = _scored(reasons)
    if cat.path("advice").exists():
        inp.advice = _top_rows(cat.path("advice"), ADVICE_COLUMNS, example_rows, "p_before")


def _derived(path: Path, stamp: str) -> Any:
    """A JSON output derived from the model, refused unless it carries the model's stamp."""
    obj = _json(path)
    if not isinstance(obj, dict) or obj.get(STAMP_KEY) != stamp:
        check_stamp(path, stamp)  # raises, naming the model the file came from
    return obj


def collect(cat: Catalog, score: ScoreConfig | None = None, example_rows: int = 5) -> core.Inputs:
    """Read every part of the report that exists; a corrupt part raises ``DataError``.

    Every part derived from the model (explanations, policy) must carry the stamp of the
    model in ``models/``, else the page is refused rather than mixing two models; a run
    summary written for another model is left out. ``score`` gives the tiers of the
    cut-off view (its ``tier_cuts`` and ``tier_names``).
    """
    meta = cat.path("model_meta")
    if not meta.exists():
        raise DataError(f"{meta}: file not found (train a model first)")
    stamp = model_stamp(cat.models)
    tiers = score or ScoreConfig()
    model = _json(meta)
    inp = core.Inputs(
        models=str(cat.models),
        model=model,
        tier_cuts=tier_cuts(tiers, model),
        tier_names=[str(n) for n in tiers.tier_names],
    )
    # a bring-your-own-table model: the simulator folders, if any, belong to another run
    sim = inp.simulator
    if cat.path("evaluation").exists():
        inp.evaluation = _json(cat.path("evaluation"))
    if cat.path("summary").exists():
        summary = _json(cat.path("summary"))
        if summary.get(STAMP_KEY) == stamp:
            inp.summary = summary
        else:
            say(f"report: {cat.path('summary')} belongs to another model; left out")
    if sim and cat.path("data_card").exists():
        inp.data_card = _json(cat.path("data_card"))
    policy = cat.path("policy_dir")
    if cat.path("policy_summary").exists():
        inp.policy = _derived(cat.path("policy_summary"), stamp)
        if cat.path("policy_matched").exists():
            inp.matched = _csv(cat.path("policy_matched"))
    if sim and cat.path("learning_curve").exists():
        inp.learning_curve = _json(cat.path("learning_curve"))
    if sim and cat.path("stability").exists():
        inp.stability = _csv(cat.path("stability"))
    if cat.path("gains", split="oot").exists():
        inp.gains = _csv(cat.path("gains", split="oot"))
    baselines = inp.model.get("config", {}).get("model", {}).get("baselines", True)
    if baselines and cat.path("scorecard").exists():
        inp.scorecard = _csv(cat.path("scorecard"), core.SCORECARD_COLUMNS)
        if cat.path("scorecard_card").exists():
            inp.scorecard_card = _json(cat.path("scorecard_card"))
    _explained(cat, inp, example_rows, stamp)
    if sim and cat.path("survival_eval").exists():
        inp.survival = _derived(cat.path("survival_eval"), stamp)
    folders = (cat.path("raw_plots"),) if sim else ()
    for folder in (*folders, cat.path("plots"), cat.path("survival_dir"), policy):
        if folder.is_dir():
            for png in sorted(folder.glob("*.png")):
                inp.plots[png.stem] = _png(png)
    return inp


@dataclass(frozen=True)
class ReportResult(Result):
    """Where the page was written and how many plots it holds."""

    path: str = ""
    plots: int = 0


def report(cfg: Config, tracker: Tracker) -> ReportResult:
    cat = Catalog.of(cfg)
    page = core.render(collect(cat, cfg.score))
    path = cat.write("report", page)
    tracker.log_artifact(path, "report")
    n_plots = page.count('class="plot"')
    tracker.log_metrics({"report.bytes": float(len(page.encode("utf-8"))), "report.plots": n_plots})
    say(f"report                     : {path} ({n_plots} plots, opens offline)")
    return ReportResult(path=str(path), plots=n_plots)
