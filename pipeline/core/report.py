"""The model report: one self-contained HTML page for reviewers.

:func:`render` turns an :class:`Inputs` (what the stages wrote, already read by the
``report`` stage) into a single HTML string. The page itself is the Jinja2 template
``templates/report.html.j2``, rendered with autoescaping on: every value reaches the
page as text, never as markup. The Python side only shapes the figures (formatted
numbers, table rows, labels); the wording and layout live in the template. Every plot
is embedded as a base64 PNG and the page loads nothing from anywhere, so the file opens
offline and can be mailed or archived as it is.

A part that a run did not produce (the policy simulation before ``make policy``) is
shown as "not produced by this run" with the command that produces it, never silently
dropped. The sections that describe a simulated world only (:data:`SIMULATOR_ONLY`)
are left out of a bring-your-own-table run's page: they do not apply to it.

The page carries a small inline script that, once loaded, records on ``<body>`` how
many of its plots decoded (``data-plots-ok`` / ``data-plots``) and which sections it
shows (``data-sections``); the browser test reads those attributes.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from pipeline.base.causes import ALL_CAUSES, CAUSE_TEXT
from pipeline.base.io import DataError
from pipeline.base.registry import BY_NAME, Feature
from pipeline.core import drift as drift_core
from pipeline.core.labels import Labels, labels_of
from pipeline.core.policy import Money
from pipeline.core.simulate import ACTIONS

#: Section ids, in page order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"),
    ("data-card", "Data card"),
    ("metrics", "Metrics"),
    ("cutoffs", "Cut-off tiers"),
    ("scorecard", "Scorecard points"),
    ("calibration", "Calibration"),
    ("shap", "SHAP explanations"),
    ("fidelity", "Fidelity of the reasons"),
    ("survival", "Risk curves by horizon and cause; the explanation leaderboard"),
    ("policy", "Policy frontier"),
    ("stability", "Feature stability"),
    ("advice", "Advice"),
    ("advice-world", "Does the advice work?"),
    ("dictionary", "Feature dictionary"),
)

#: sections about a simulated world (its truth, outcomes, feature registry): a table
#: run's page leaves them out
SIMULATOR_ONLY = (
    "fidelity",
    "policy",
    "stability",
    "advice",
    "advice-world",
    "dictionary",
    "survival",
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Columns of ``scorecard.csv`` the points table shows.
SCORECARD_COLUMNS = ("feature", "bin", "n", "bad_rate", "woe", "points")
#: Columns of the feature dictionary, in order (the report and the generated document).
DICTIONARY_COLUMNS = ("name", "family", "causes", "monotone", "actionable", "zh", "en")


@dataclass(frozen=True)
class Words:
    """The words a run uses for what it predicts, one set per mode.

    A simulator run speaks of closures of borrowers' accounts at monthly snapshots, and
    evaluates on out-of-time rows. A table run speaks of its own target (``event``, e.g.
    ``creditability = bad``), of rows, and of a hold-out unless the split is by time.
    """

    table: bool
    title: str  # the report's heading
    tagline: str  # the line under it
    summary_title: str  # the console summary's heading
    event: str  # what the positive class is: "closure" / "creditability = bad"
    events: str  # rows of the positive class, in a sentence
    count_head: str  # heading of a column counting them
    rate: str  # their share of rows
    rate_long: str  # the same, as the overview names it
    rows: str  # what a row is
    split: str  # the evaluation rows: "out-of-time" or "hold-out"
    entity: str  # one scored unit: "borrower" / "row"

    def split_name(self, split: str) -> str:
        """A split's name in tables: a table run's ``oot`` is its hold-out (or out-of-time)."""
        return self.split if self.table and split == "oot" else split


def words(info: Mapping[str, Any]) -> Words:
    """The words of a run, from the model's metadata (``model.json``) or the run summary.

    ``info["mode"]`` picks the mode; in table mode ``info["table"]`` gives ``target``,
    ``positive`` and ``time`` (a time column makes the hold-out out-of-time) and
    ``path`` (the table's file). A summary without them still gets table words, naming
    the positive class generically.
    """
    if str(info.get("mode", "simulator")) != "table":
        return Words(
            table=False,
            title="Closure-risk model report",
            tagline="Why never-overdue accounts get closed",
            summary_title="closure-risk run summary",
            event="closure",
            events="closures",
            count_head="closures",
            rate="closure rate",
            rate_long="closure rate in the horizon",
            rows="rows (borrower × snapshot)",
            split="out-of-time",
            entity="borrower",
        )
    t = info.get("table") or {}
    target, positive = str(t.get("target") or ""), str(t.get("positive") or "")
    event = f"{target} = {positive}" if target and positive else target or "the positive class"
    source = Path(str(t["path"])).name if t.get("path") else "the table"
    rate = f"{event} rate"
    return Words(
        table=True,
        title=f"What drives {event}",
        tagline=f"Model report on {source}",
        summary_title=f"run summary: what drives {event}",
        event=event,
        events=f"rows with {event}",
        count_head=event,
        rate=rate,
        rate_long=rate,
        rows="rows",
        split="out-of-time" if t.get("time") else "hold-out",
        entity="row",
    )


@dataclass
class Inputs:
    """What the report is made of; missing parts are ``None``/empty.

    ``plots`` maps a plot's name to its PNG bytes; ``scored`` holds the calibrated
    probability and the 0/1 label of every scored held-out row (the cut-off view);
    ``tier_cuts``/``tier_names`` are the score tiers of the ``score`` config.
    """

    models: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    data_card: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None
    survival: dict[str, Any] | None = None  # the survival stage's evaluation.json
    shap_importance: list[tuple[str, float]] = field(default_factory=list)
    cause_importance: list[tuple[str, float]] = field(default_factory=list)
    policy: dict[str, Any] | None = None
    matched: list[dict[str, str]] = field(default_factory=list)
    stability: list[dict[str, str]] = field(default_factory=list)
    gains: list[dict[str, str]] = field(default_factory=list)
    scorecard: list[dict[str, str]] = field(default_factory=list)
    # base points, selection log and score bands of the scorecard (scorecard_card.json)
    scorecard_card: dict[str, Any] | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    advice: list[dict[str, Any]] = field(default_factory=list)
    scored: tuple[np.ndarray, np.ndarray] | None = None
    tier_cuts: list[float] = field(default_factory=lambda: [0.05, 0.15])
    tier_names: list[str] = field(default_factory=lambda: ["low", "medium", "high"])
    plots: dict[str, bytes] = field(default_factory=dict)
    learning_curve: dict[str, Any] | None = None

    @property
    def simulator(self) -> bool:
        return str(self.model.get("mode", "simulator")) == "simulator"

    @property
    def words(self) -> Words:
        return words(self.model)

    @property
    def labels(self) -> Labels:
        try:
            return labels_of(self.model)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"the model's metadata: key 'encoding' cannot be read ({exc})") from exc

    @property
    def id_column(self) -> str:
        """The id column of the explained rows (``borrower_id`` for a simulator model)."""
        if self.simulator:
            return "borrower_id"
        return str(self.model.get("table", {}).get("id") or "row_id")


# --------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Code:
    """A code (feature name, cause) shown in monospace, with its English and Chinese text."""

    text: str
    en: str = ""
    zh: str = ""


@dataclass(frozen=True)
class Lines:
    """Several lines in one cell, each an English text with an optional Chinese one."""

    lines: tuple[tuple[str, str], ...]


Cell = str | Code | Lines


@dataclass
class Table:
    head: Sequence[str]
    rows: list[Sequence[Cell]]
    caption: str = ""
    cls: str = ""


_NUMERIC = re.compile(r"[-+–0-9.,%eE\s]*")


def _is_figure(c: Any) -> bool:
    """Figures align right, words left."""
    return isinstance(c, str) and _NUMERIC.fullmatch(c) is not None


def _num(v: Any, fmt: str = ".4f") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v) if v not in (None, "") else "–"
    if math.isnan(f):
        return "–"
    if fmt == "int":
        return f"{f:,.0f}"
    if fmt == "pct":
        return f"{f:.1%}"
    return format(f, fmt)


def feature_label(name: str) -> Code:
    f = BY_NAME.get(name)
    return Code(name) if f is None else Code(name, f.en, f.zh)


def _feature(inp: Inputs, name: str, texts: bool = True) -> Code:
    """A feature as the reader knows it: the registry's texts, or the table's column name."""
    if inp.simulator:
        return feature_label(name) if texts else Code(name)
    return Code(inp.labels.name(name))


def cause_label(code: str) -> Code:
    zh, en = CAUSE_TEXT.get(code, ("", ""))
    return Code(code, en, zh)


def _png(name: str, data: bytes) -> str:
    if not data.startswith(PNG_MAGIC):
        raise DataError(f"plot {name!r}: not a PNG image")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _fig(inp: Inputs, name: str, caption: str) -> dict[str, str] | None:
    data = inp.plots.get(name)
    if data is None:
        return None
    return {"name": name, "caption": caption, "src": _png(name, data)}


def _figs(inp: Inputs, *named: tuple[str, str]) -> list[dict[str, str]]:
    return [f for f in (_fig(inp, n, c) for n, c in named) if f is not None]


# --------------------------------------------------------------------------- pure views


def cutoff_table(
    probability: np.ndarray, label: np.ndarray, cuts: Sequence[float], names: Sequence[str]
) -> list[dict[str, Any]]:
    """Rows, closures, observed rate and share of closures captured per score tier.

    Tier ``names[k]`` holds ``cuts[k-1] <= p < cuts[k]`` (the rule of the ``score``
    command). Tiers come riskiest first; ``cum_capture`` adds up the captured share from
    the top tier down, so it reads as "closures caught by acting on this tier and above".
    """
    p = np.asarray(probability, dtype=float)
    y = np.asarray(label)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"probability {p.shape} and label {y.shape} must be 1-d of one length")
    cut = np.asarray(cuts, dtype=float)
    if len(names) != len(cut) + 1 or np.any(np.diff(cut) <= 0):
        raise ValueError(f"tiers: {len(names)} names need {len(names) - 1} increasing cuts")
    tier = np.searchsorted(cut, p, side="right")
    pos = y == 1
    total = max(int(pos.sum()), 1)
    out: list[dict[str, Any]] = []
    cum = 0
    for k in range(len(names) - 1, -1, -1):
        inside = tier == k
        n, closed = int(inside.sum()), int((inside & pos).sum())
        cum += closed
        if 0 < k < len(cut):
            span = f"{cut[k - 1]:g} ≤ p < {cut[k]:g}"
        elif k > 0:
            span = f"p ≥ {cut[k - 1]:g}"
        else:
            span = f"p < {cut[0]:g}" if len(cut) else "all"
        out.append(
            {
                "tier": str(names[k]),
                "range": span,
                "n": n,
                "share": n / len(p) if len(p) else float("nan"),
                "closures": closed,
                "mean_probability": float(p[inside].mean()) if n else float("nan"),
                "rate": closed / n if n else float("nan"),
                "capture": closed / total,
                "cum_capture": cum / total,
            }
        )
    return out


def _monotone_text(m: int) -> str:
    return {1: "+1 (more: riskier)", -1: "-1 (more: safer)"}.get(int(m), "0 (free)")


def dictionary_rows(features: Iterable[Feature]) -> list[dict[str, str]]:
    """One row of text per registered feature (the columns of :data:`DICTIONARY_COLUMNS`)."""
    return [
        {
            "name": f.name,
            "family": f.family,
            "causes": ", ".join(f.causes) if f.causes else "–",
            "monotone": _monotone_text(f.monotone),
            "actionable": "yes" if f.actionable else "no",
            "zh": f.zh,
            "en": f.en,
        }
        for f in features
    ]


# --------------------------------------------------------------------------- sections

_METRICS = (
    ("auc", "AUC", ".4f"),
    ("ks", "KS", ".4f"),
    ("pr_auc", "PR AUC", ".4f"),
    ("brier", "Brier", ".4f"),
    ("ece", "ECE", ".4f"),
    ("lift_10", "lift@10%", ".2f"),
    ("capture_10", "capture@10%", "pct"),
    ("positive_rate", "positive rate", "pct"),
    ("n", "rows", "int"),
)


def _metric_head(w: Words, label: str) -> str:
    """A metric's column heading; a table run names its positive rate after the target."""
    return w.rate if w.table and label == "positive rate" else label


def _metric_cells(d: Mapping[str, Any]) -> list[Cell]:
    return [_num(d.get(k), f) for k, _, f in _METRICS]


def _overview(inp: Inputs) -> dict[str, Any]:
    s, m, w = inp.summary, inp.model, inp.words
    data = m.get("config", {}).get("data", {})
    params = m.get("params", {})
    rows: list[tuple[str, Cell]] = [
        ("mode", str(m.get("mode", "simulator"))),
        ("MLflow run", Code(str(s.get("mlflow_run_id") or "–"))),
        (w.rows, _num(s.get("n_rows"), "int")),
        (w.rate_long, _num(s.get("closure_rate"), "pct")),
        ("validation AUC", _num(s.get("valid", {}).get("auc"))),
        (f"{w.split} AUC", _num(s.get("oot", {}).get("auc"))),
        ("trees (best iteration)", _num(m.get("best_iteration"), "int")),
        ("calibration", str(m.get("calibration", "–"))),
        ("features", _num(len(m.get("feature_names", [])), "int")),
    ]
    if inp.simulator:
        rows.insert(2, ("borrowers simulated", _num(data.get("n_borrowers"), "int")))
        rows.insert(3, ("seed", str(data.get("seed", "–"))))
    else:
        table = m.get("table", {})
        rows.insert(2, ("table", Code(str(table.get("path") or data.get("path", "–")))))
        rows.insert(3, ("split", str(table.get("split_rule") or "–")))
    champ = s.get("champion")
    if isinstance(champ, dict):
        reg = (
            f"{champ.get('name')} v{champ.get('version')} · "
            f"@{champ.get('alias')} → v{champ.get('champion_version')}"
        )
        rows.append(("registry", reg))
    keys = ("learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "lambda_l2")
    prm = ", ".join(f"{k}={params[k]}" for k in keys if k in params)
    rows.append(("LightGBM", prm or "–"))
    return {"table": Table(("", ""), list(rows), cls="kv"), "warnings": drift_warnings(inp)}


def drift_warnings(inp: Inputs) -> list[str]:
    """The train stage's drift and extrapolation warnings, and what out-of-time is not."""
    d = (inp.evaluation or inp.summary).get("drift")
    if not isinstance(d, Mapping):
        return []
    out = [str(w) for w in d.get("warnings", [])]
    share = d.get("oot_rows_of_training_borrowers")
    if isinstance(share, (int, float)) and math.isfinite(float(share)):
        out.append(drift_core.borrower_overlap_sentence(float(share)))
    return out


def _data_card(inp: Inputs) -> dict[str, Any]:
    glossary = [cause_label(c) for c in ALL_CAUSES] if inp.simulator else []
    dc = inp.data_card
    if dc is None:
        return {
            "card": False,
            "n_rows": _num(inp.summary.get("n_rows"), "int"),
            "rate": _num(inp.summary.get("closure_rate"), "pct"),
            "rate_name": inp.words.rate,
            "glossary": glossary,
        }
    metrics = dc.get("metrics", {})
    by_cause = dc.get("by_cause", {})
    total = sum(float(v) for v in by_cause.values()) or 1.0
    causes = Table(
        ("true cause", "closures", "share"),
        [
            (cause_label(c), _num(v, "int"), _num(float(v) / total, "pct"))
            for c, v in sorted(by_cause.items(), key=lambda kv: -float(kv[1]))
        ],
        caption="closures by cause",
    )
    occ = dc.get("by_occupation", {})
    occupation = Table(
        ("occupation", "borrowers closed"),
        [(str(k), _num(v, "pct")) for k, v in occ.items()],
        caption="share of borrowers closed, by occupation",
    )
    return {
        "card": True,
        "closure_rate": _num(metrics.get("closure_rate_borrowers"), "pct"),
        "overdue_share": _num(metrics.get("overdue_share_of_closures"), "pct"),
        "book0": _num(metrics.get("book_month0"), "int"),
        "book_last": _num(metrics.get("book_last_month"), "int"),
        "inflow": _num(metrics.get("inflow_per_month"), "int"),
        "annual": _num(metrics.get("annual_closure_rate_never_overdue"), "pct"),
        "pre": _num(metrics.get("monthly_closure_rate_pre_tightening"), "pct"),
        "post": _num(metrics.get("monthly_closure_rate_post_tightening"), "pct"),
        "causes": causes,
        "occupation": occupation if occ else None,
        "figs": _figs(
            inp,
            ("closure_rate_by_cause", "monthly closure rate by true cause"),
            ("distributions", "distributions of the simulated world"),
        ),
        "glossary": glossary,
    }


def _metric_tables(inp: Inputs) -> list[Table]:
    ev = inp.evaluation or inp.summary
    w = inp.words
    rows: list[Sequence[Cell]] = []
    kind = str((ev.get("model") or {}).get("kind", "lightgbm"))
    label = "LightGBM" if kind == "lightgbm" else f"model ({kind})"
    for split in ("valid", "oot"):
        if split in ev:
            rows.append([label, w.split_name(split), *_metric_cells(ev[split])])
        for name, b in sorted(ev.get("baselines", {}).items()):
            if split in b:
                rows.append([str(name), w.split_name(split), *_metric_cells(b[split])])
    train = inp.summary.get("train") or inp.model.get("metrics", {}).get("train")
    if isinstance(train, dict):
        rows.append([label, "train", *_metric_cells(train)])
    head = ["model", "split", *(_metric_head(w, label) for _, label, _ in _METRICS)]
    tables = [Table(head, rows, caption="discrimination and calibration by split")]
    cv = ev.get("cv") or inp.summary.get("cv")
    if isinstance(cv, dict) and cv:
        tables.append(_cv_table(cv))
    hold = ev.get("holdout") or inp.summary.get("holdout")
    if isinstance(hold, dict) and "auc" in hold:
        tables.append(_holdout_table(hold, w))
    return tables


def _cv_table(cv: Mapping[str, Any]) -> Table:
    """Every candidate of the model selection, the selected one marked, and why: each
    mean AUC with its plain and corrected standard errors, its shortfall to the best and
    the rule's verdict under both errors; the untouched hold-out in the caption."""
    chosen = (cv.get("selected") or {}).get("name")
    candidates = cv.get("candidates") or [
        {"name": k, **v} for k, v in sorted(cv.items()) if isinstance(v, dict) and k != "selected"
    ]
    checks = {str(r.get("name")): r for r in cv.get("rule_check") or []}

    def verdict(name: Any) -> str:
        r = checks.get(str(name))
        if not r:
            return ""
        if not r.get("behind_best"):
            return "best"
        yes = {True: "within", False: "outside"}
        return (
            f"{yes[bool(r.get('within_one_se_corrected'))]} one corrected se "
            f"({yes[bool(r.get('within_one_se_plain'))]} one plain se)"
        )

    rows: list[Sequence[Cell]] = [
        (
            str(c.get("name")),
            _num(c.get("auc_mean")),
            _num(c.get("auc_se_corrected")),
            _num(c.get("auc_se")),
            _num((checks.get(str(c.get("name"))) or {}).get("behind_best")),
            verdict(c.get("name")),
            "selected" if c.get("name") == chosen else "",
        )
        for c in candidates
    ]
    n = cv.get("rows")
    caption = f"cross-validation ({cv.get('scheme', '')}"
    caption += f", on {int(n):,} training and validation rows)" if n else ")"
    if chosen:
        caption += f"; the model is the selected candidate, {chosen}: {cv.get('reason', '')}"
    fixed = cv.get("lightgbm_fixed")
    if isinstance(fixed, dict):
        caption += (
            f"; a fixed LightGBM (300 trees, learning rate 0.03, 15 leaves) in the same folds: "
            f"{_num(fixed.get('auc_mean'))}, tuned minus fixed "
            f"{_num(fixed.get('tuned_minus_fixed'))} (se {_num(fixed.get('tuned_minus_fixed_se'))})"
        )
    nested = cv.get("nested")
    if isinstance(nested, dict):
        caption += (
            f"; the whole selection, nested ({nested.get('scheme', '')}): AUC "
            f"{_num(nested.get('auc_mean'))} (corrected se {_num(nested.get('auc_se_corrected'))})"
        )
    head = (
        "candidate",
        "AUC mean",
        "se (corrected)",
        "se (plain)",
        "behind the best",
        "one-se rule",
        "",
    )
    return Table(head, rows, caption=caption)


def _holdout_table(h: Mapping[str, Any], w: Words) -> Table:
    """The hold-out rows the selection never saw, scored once by the selected model."""
    rows: list[Sequence[Cell]] = [
        (
            w.split,
            _num(h.get("auc")),
            _num(h.get("auc_se")),
            _num(h.get("n"), "int"),
            _num(h.get("n_bad"), "int"),
        )
    ]
    head = ("split", "AUC", "se (DeLong)", "rows", w.count_head)
    return Table(
        head, rows, caption=f"the selected model on the {w.split}, which the selection never saw"
    )


def _oracle_table(o: Any) -> dict[str, Any]:
    """The model between the two oracles, each AUC with its standard error and each
    oracle's Monte Carlo bias where it was measured."""
    if not isinstance(o, dict) or "observable_auc" not in o:
        return {"table": None}
    rows: list[Sequence[Cell]] = [
        (
            label,
            _num(o.get(f"{k}_auc")),
            _num(o.get(f"{k}_auc_se")),
            _num(o.get(f"{k}_mc_bias")) if f"{k}_mc_bias" in o else "",
            _num(o.get(f"{k}_auc_extrapolated")) if f"{k}_auc_extrapolated" in o else "",
        )
        for k, label in (
            ("full", "oracle, full state (knows the latent traits and the platform's judgement)"),
            (
                "observable",
                "oracle, traits known (the platform's judgement and a stop's length redrawn)",
            ),
            ("model", "model"),
        )
    ]
    caption = (
        f"AUC on the {_num(o.get('n_rows'), 'int')} out-of-time rows "
        f"({_num(o.get('n_positives'), 'int')} closures) with oracle futures, "
        f"{_num(o.get('futures'), 'int')} futures per row and oracle; Monte Carlo bias: "
        "the AUC from all futures less the mean AUC from each half of them"
    )
    head = ("score", "AUC", "standard error", "Monte Carlo bias", "AUC, bias removed")
    return {
        "table": Table(head, rows, caption=caption),
        "gap_observable": _num(o.get("gap_observable")),
        "gap_observable_se": _num(o.get("gap_observable_se")),
        "gap_full": _num(o.get("gap_full")),
        "gap_full_se": _num(o.get("gap_full_se")),
        "mc_bias": _num(o.get("mc_bias")) if "mc_bias" in o else None,
        "futures": _num(o.get("futures"), "int"),
    }


def _learning_curve(lc: Any) -> dict[str, Any] | None:
    """The learning curve (``make learning-curve``): the model at each world size, its
    asymptote and the two oracles, all on the same common rows."""
    if not isinstance(lc, dict) or not isinstance(lc.get("sizes"), list):
        return None
    a, o, sc = lc.get("asymptote", {}), lc.get("oracles", {}), lc.get("scoring", {})
    rows: list[Sequence[Cell]] = [
        (
            f"model, {_num(s.get('factor'), '.4g')}x ({_num(s.get('n_borrowers'), 'int')} borrowers)",
            _num(s.get("auc")),
            _num(s.get("auc_se")),
        )
        for s in lc["sizes"]
    ]
    ci = a.get("ci95") or [None, None]
    rows += [
        (
            f"asymptote of the curve (95% {_num(ci[0])} to {_num(ci[1])})",
            _num(a.get("auc")),
            _num(a.get("se")),
        ),
        ("oracle, traits known", _num(o.get("trait_auc")), _num(o.get("trait_auc_se"))),
        ("oracle, full state", _num(o.get("full_auc")), _num(o.get("full_auc_se"))),
    ]
    caption = (
        f"learning curve: AUC on the same {_num(sc.get('n_rows'), 'int')} rows "
        f"({_num(sc.get('n_positives'), 'int')} closures), out-of-time rows with oracle "
        f"futures of a world of {_num(sc.get('n_borrowers'), 'int')} borrowers drawn with "
        f"seed {sc.get('seed', '?')}"
    )
    return {
        "table": Table(("score", "AUC", "standard error"), rows, caption=caption),
        "asymptote": _num(a.get("auc")),
        "asymptote_se": _num(a.get("se")),
        "trait": _num(o.get("trait_auc")),
    }


def _metrics(inp: Inputs) -> dict[str, Any]:
    ev = inp.evaluation or inp.summary
    oracle = None
    if "oracle_auc" in ev:
        oracle = {
            "rows": _num(ev.get("oracle_rows"), "int"),
            "auc": _num(ev.get("oracle_auc")),
            "model_auc": _num(ev.get("oracle_model_auc")),
            "gap": _num(ev.get("oracle_gap")),
            "psi": _num(ev.get("score_psi"), ".3f"),
            **_oracle_table(ev.get("oracle")),
        }
    segments = []
    for key, label in (
        ("oot_by_occupation", "occupation"),
        ("oot_by_city_tier", "city tier"),
        ("oot_by_tenure_band", "tenure band"),
        ("oot_by_regime", "regime"),
    ):
        seg = ev.get(key)
        if isinstance(seg, dict) and seg:
            seg_rows: list[Sequence[Cell]] = [(str(k), *_metric_cells(v)) for k, v in seg.items()]
            head = (label, *(lab for _, lab, _ in _METRICS))
            segments.append(Table(head, seg_rows, caption=f"out-of-time metrics by {label}"))
    gains = None
    if inp.gains:
        g_rows: list[Sequence[Cell]] = [
            (
                str(r.get("decile")),
                _num(r.get("n"), "int"),
                _num(r.get("min_score"), ".3f"),
                _num(r.get("positives"), "int"),
                _num(r.get("rate"), "pct"),
                _num(r.get("cum_capture"), "pct"),
            )
            for r in inp.gains
        ]
        w = inp.words
        head = ("decile", "rows", "min score", w.count_head, "rate", "cumulative capture")
        gains = Table(head, g_rows, caption=f"{w.split} gains table")
    mc = ev.get("monotone_check")
    monotone = None
    if isinstance(mc, dict):
        monotone = {
            "features": _num(len(mc.get("features", {})), "int"),
            "checks": _num(mc.get("checks"), "int"),
            "violations": _num(mc.get("violations"), "int"),
        }
    return {
        "tables": _metric_tables(inp),
        "oracle": oracle,
        "learning": _learning_curve(inp.learning_curve),
        "segments": segments,
        "figs": _figs(inp, ("roc", "ROC curves"), ("gains", "cumulative gains")),
        "gains": gains,
        "monotone": monotone,
    }


def _cutoffs(inp: Inputs) -> dict[str, Any]:
    if inp.scored is None:
        return {"table": None}
    prob, label = inp.scored
    tiers = cutoff_table(prob, label, inp.tier_cuts, inp.tier_names)
    rows: list[Sequence[Cell]] = [
        (
            t["tier"],
            t["range"],
            _num(t["n"], "int"),
            _num(t["share"], "pct"),
            _num(t["mean_probability"], "pct"),
            _num(t["closures"], "int"),
            _num(t["rate"], "pct"),
            _num(t["capture"], "pct"),
            _num(t["cum_capture"], "pct"),
        )
        for t in tiers
    ]
    ev = inp.evaluation or inp.summary
    oot = ev.get("oot") if isinstance(ev.get("oot"), dict) else {}
    n_total = oot.get("n") if oot else None
    w = inp.words
    split = w.split if w.table else "out-of-time" if n_total else "held-out"
    noun, one = w.events, w.event
    positives = int(sum(t["closures"] for t in tiers))
    head: tuple[str, ...] = ("tier", "probability", "rows", "share of rows", "mean probability")
    head += (w.count_head, f"{one} rate")
    head += (f"share of {noun}", "captured, this tier and above")
    return {
        "table": Table(head, rows, caption=f"score tiers on the scored {split} rows"),
        "simulator": inp.simulator,
        "split": split,
        "noun": noun,
        "noun_one": one,
        "n": _num(len(prob), "int"),
        "positives": _num(positives, "int"),
        "rate": _num(positives / len(prob) if len(prob) else float("nan"), "pct"),
        "sampled": n_total is not None and float(n_total) > len(prob),
        "n_total": _num(n_total, "int"),
        "cuts": ", ".join(f"{c:g}" for c in inp.tier_cuts),
        "top": tiers[0]["tier"],
    }


def _bin_text(inp: Inputs, feature: str, text: str) -> str:
    """A scorecard bin as the reader knows it: ``= code`` of a table's categorical column
    becomes ``= level`` (the table's own text); other bins stay as written."""
    if not inp.words.table or not text.startswith("= ") or feature not in inp.labels.levels:
        return text
    return "= " + inp.labels.value(feature, text[2:])


def _scorecard(inp: Inputs) -> dict[str, Any]:
    sc = inp.model.get("config", {}).get("model", {}).get("scorecard", {})
    if not inp.scorecard or not sc:
        return {"table": None}
    pdo, base, odds = float(sc["pdo"]), float(sc["base_score"]), float(sc["base_odds"])
    factor = pdo / math.log(2.0)
    points: dict[str, list[float]] = {}
    rows: list[Sequence[Cell]] = []
    for r in inp.scorecard:
        name = r["feature"]
        first = name not in points  # the feature's texts on its first bin only
        points.setdefault(name, []).append(float(r["points"]))
        rows.append(
            (
                _feature(inp, name, texts=first),
                _bin_text(inp, name, str(r["bin"])),
                _num(r["n"], "int"),
                _num(r["bad_rate"], "pct"),
                _num(r["woe"], ".3f"),
                _num(r["points"], ".1f"),
            )
        )
    head = ("feature", "bin", "rows (train)", "bad rate (train)", "WoE", "points")
    card = inp.scorecard_card or {}
    start = float(card.get("base_points", 0.0))
    out: dict[str, Any] = {
        "table": Table(head, rows, caption="points per feature bin"),
        "pdo": _num(pdo, "g"),
        "base": _num(base, "g"),
        "odds": _num(odds, "g"),
        "factor": _num(factor, ".2f"),
        "offset": _num(base - factor * math.log(odds), ".1f"),
        "features": _num(len(points), "int"),
        "entity": inp.words.entity,
        "base_points": _num(start, ".1f") if card else None,
        "low": _num(start + sum(min(v) for v in points.values()), ".0f"),
        "high": _num(start + sum(max(v) for v in points.values()), ".0f"),
    }
    out.update(_scorecard_selection(inp, card))
    return out


def _scorecard_selection(inp: Inputs, card: dict[str, Any]) -> dict[str, Any]:
    """How the scorecard's features were chosen, what its signs dropped, its score bands."""
    if not card:
        return {"rules": None, "dropped": None, "bands": None}
    log = list(card.get("selection", []))
    stages = ("bins", "iv", "correlation", "vif", "sign", "stepwise")
    counts = {s: sum(1 for r in log if r.get("stage") == s) for s in stages}
    rules = dict(card.get("rules", {}))
    dropped: list[Sequence[Cell]] = [
        (_feature(inp, str(r["feature"])), str(r["reason"]))
        for r in log
        if r.get("stage") == "sign"
    ]
    bands = card.get("bands") or []
    splits = [s for s in ("train", "valid", "oot") if bands and f"n_{s}" in bands[0]]
    band_rows: list[Sequence[Cell]] = []
    for b in bands:
        cells: list[Cell] = [str(b["band"])]
        for s in splits:
            cells += [_num(b[f"n_{s}"], "int"), _rate_se(b[f"bad_rate_{s}"], b[f"se_{s}"])]
        band_rows.append(cells)
    band_head = ["score band"]
    for s in splits:
        band_head += [
            f"rows ({inp.words.split_name(s)})",
            f"bad rate ± se ({inp.words.split_name(s)})",
        ]
    return {
        "rules": {k: _num(v, "pct" if k == "min_bin_share" else "g") for k, v in rules.items()},
        "candidates": _num(len(log), "int"),
        "counts": {k: _num(v, "int") for k, v in counts.items()},
        "against": _num(card.get("coef_against_woe", 0), "int"),
        "dropped": Table(
            ("feature", "why it was left out"), dropped, caption="dropped for its sign"
        )
        if dropped
        else None,
        "bands": Table(band_head, band_rows, caption="score bands (cut at training deciles)")
        if band_rows
        else None,
    }


def _rate_se(rate: Any, se: Any) -> str:
    if rate is None or se is None or not math.isfinite(float(rate)):
        return "–"
    return f"{float(rate):.1%} ± {float(se):.1%}"


def _calibration(inp: Inputs) -> dict[str, Any]:
    cal = (inp.evaluation or inp.summary).get("calibration", {})
    table = None
    if isinstance(cal, dict) and cal:
        rows: list[Sequence[Cell]] = [
            (
                inp.words.split_name(split),
                _num(cal.get(f"{split}_ece_before")),
                _num(cal.get(f"{split}_ece_after")),
            )
            for split in ("valid", "oot")
        ]
        head = ("split", "ECE raw", "ECE calibrated")
        table = Table(head, rows, caption="expected calibration error")
    tail = None
    if isinstance(cal, dict) and "top1pct_observed" in cal:
        tail = {
            "n": _num(cal.get("top1pct_n"), "int"),
            "predicted": _num(cal.get("top1pct_predicted"), ".3f"),
            "observed": _num(cal.get("top1pct_observed"), ".3f"),
            "observed_se": _num(cal.get("top1pct_observed_se"), ".3f"),
            "worse": bool(cal.get("worse")),
            "exact": _num(int(cal.get("n_exact_0", 0)) + int(cal.get("n_exact_1", 0)), "int"),
            "rate": inp.words.rate,
        }
    sel = cal.get("selection") if isinstance(cal, dict) else None
    return {
        "method": str(cal.get("method", "–")) if table else "",
        "table": table,
        "tail": tail,
        "selection": ", ".join(f"{k} {_num(v)}" for k, v in sel.items())
        if isinstance(sel, dict) and sel
        else "",
        "figs": _figs(inp, ("calibration", "reliability diagram")),
    }


def _reason_rows(inp: Inputs) -> list[Sequence[Cell]]:
    """The highest-risk simulator rows: borrower, snapshot, probability, true cause, reasons."""
    rows: list[Sequence[Cell]] = []
    for r in inp.reasons:
        lines = tuple(
            (str(r.get(f"reason_{i}_en", "")), str(r.get(f"reason_{i}_zh", "")))
            for i in (1, 2, 3)
            if r.get(f"reason_{i}_cause") not in (None, "")
        ) or tuple(  # a row under the lowest tier: no closure concern, what protects it
            (str(r.get(f"protect_{i}_en", "")), str(r.get(f"protect_{i}_zh", "")))
            for i in (1, 2, 3)
            if _present(r.get(f"protect_{i}_en"))
        )
        rows.append(
            (
                str(r.get("borrower_id")),
                str(r.get("snapshot")),
                _num(r.get("probability"), ".3f"),
                str(r.get("label_cause", "–")),
                Lines(lines),
            )
        )
    return rows


def _present(v: Any) -> bool:
    """Whether a cell read from a file holds something (not None, NaN or empty text)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return False
    return str(v) != ""


def table_reasons(r: Mapping[str, Any], labels: Labels, top_k: int = 3) -> list[str]:
    """A table row's reasons, rebuilt from its features: ``<column> = <value> (+SHAP)``.

    Built from ``reason_<i>_feature`` and ``reason_<i>_value`` with the table's own names
    and levels, so a reasons file written with the model's safe names reads the same.
    """
    out = []
    for i in range(1, top_k + 1):
        f, v, phi = (
            r.get(f"reason_{i}_feature"),
            r.get(f"reason_{i}_value"),
            r.get(f"reason_{i}_shap"),
        )
        if not _present(f):
            continue
        text = labels.reason(str(f), v)
        out.append(f"{text} ({float(str(phi)):+.3f})" if _present(phi) else text)
    return out


def _yes_no(v: Any) -> str:
    """A 0/1 label read from a file as ``yes``/``no`` (anything else as ``–``)."""
    try:
        return {1: "yes", 0: "no"}.get(int(float(str(v))), "–")
    except (ValueError, OverflowError):
        return "–"


def _table_reason_rows(inp: Inputs) -> list[Sequence[Cell]]:
    """The highest-risk table rows: row id, probability, observed outcome, feature reasons."""
    labels = inp.labels
    rows: list[Sequence[Cell]] = []
    for r in inp.reasons:
        reasons = table_reasons(r, labels)
        label = _yes_no(r.get("label"))
        rows.append(
            (
                str(r.get(inp.id_column)) if _present(r.get(inp.id_column)) else "–",
                _num(r.get("probability"), ".3f"),
                label,
                Lines(
                    tuple((t, "") for t in reasons)
                    or (("nothing raises this row's risk above the average", ""),)
                ),
            )
        )
    return rows


def _examples(inp: Inputs) -> Table | None:
    if not inp.reasons:
        return None
    w = inp.words
    caption = f"highest-risk {w.split} rows and their reasons"
    if inp.simulator:
        sim = ("borrower", "snapshot", "probability", "true cause", "top reasons")
        return Table(sim, _reason_rows(inp), caption=caption)
    head = (inp.id_column, "probability", f"{w.event}?", "top reasons (feature = value, SHAP)")
    return Table(head, _table_reason_rows(inp), caption=caption)


def _shap(inp: Inputs) -> dict[str, Any]:
    if not inp.shap_importance:
        return {"top": None}
    top = [
        (str(i + 1), _feature(inp, f), _num(v)) for i, (f, v) in enumerate(inp.shap_importance[:15])
    ]
    dependence = [
        (n, f"SHAP dependence: {inp.labels.name(n.removeprefix('dependence_'))}")
        for n in sorted(n for n in inp.plots if n.startswith("dependence_"))
    ]
    causes = [(cause_label(c), _num(v)) for c, v in inp.cause_importance]
    return {
        "top": Table(("#", "feature", "mean |SHAP|"), list(top), caption="top features"),
        "figs": _figs(
            inp,
            ("shap_bar", "mean |SHAP| by feature"),
            ("shap_beeswarm", "SHAP values by feature and value"),
            *dependence,
        ),
        "causes": Table(
            ("cause", "mean |attribution|"), list(causes), caption="SHAP grouped by closure cause"
        )
        if causes
        else None,
        "cause_figs": _figs(inp, ("cause_importance", "attribution by closure cause"))
        if causes
        else [],
        "examples": _examples(inp),
    }


def _fidelity(inp: Inputs) -> dict[str, Any]:
    fid = inp.fidelity
    if fid is None:
        return {"fid": None}
    by = fid.get("by_cause", {})
    pair = fid.get("paired")
    ceiling = isinstance(pair, dict)
    head: tuple[str, ...] = ("true cause", "closures", "top-1 agreement")
    if ceiling:
        head += ("with oracle futures", "top-1 there", "oracle agreement top-1")
    rows: list[Sequence[Cell]] = [
        (cause_label(c), _num(v.get("n"), "int"), _num(v.get("top1"), "pct"))
        + (
            (
                _num(v.get("oracle_n"), "int"),
                _num(v.get("oracle_rows_top1"), "pct"),
                _num(v.get("oracle_agreement_top1"), "pct"),
            )
            if ceiling
            else ()
        )
        for c, v in by.items()
    ]
    p = pair if isinstance(pair, dict) else {}
    return {
        "fid": {
            "n": _num(fid.get("n"), "int"),
            "top1": _num(fid.get("top1"), "pct"),
            "top3": _num(fid.get("top3"), "pct"),
            "chance": _num(fid.get("chance_top1"), "pct"),
            "attribution": str(fid.get("attribution", "–")),
            "source": str(fid.get("source", "shap")),
            "shap": _shap_beside(fid.get("shap")),
            "ceiling": {
                "n": _num(p.get("n"), "int"),
                "futures": _num(p.get("futures"), "int"),
                "top1": _num(p.get("top1"), "pct"),
                "top1_se": _num(p.get("top1_se"), "pct"),
                "top3": _num(p.get("top3"), "pct"),
                "ceiling_top1": _num(p.get("ceiling_top1"), "pct"),
                "ceiling_top1_se": _num(p.get("ceiling_top1_se"), "pct"),
                "ceiling_top3": _num(p.get("ceiling_top3"), "pct"),
                "share": _num(p.get("share_of_ceiling_top1"), "pct"),
            }
            if ceiling
            else None,
        },
        "by_cause": Table(
            head,
            rows,
            caption="by cause: on all closures, then on those with oracle futures; per cause "
            "the oracle's agreement is not a bound (naming one cause always agrees 100% on it)",
        )
        if rows
        else None,
        "figs": _figs(inp, ("fidelity_confusion", "true cause against the first-ranked cause")),
    }


def _shap_beside(sh: Any) -> dict[str, Any] | None:
    """The SHAP-mapped reasons' fidelity, shown beside the cause model's headline."""
    if not isinstance(sh, dict):
        return None
    p = sh.get("paired") if isinstance(sh.get("paired"), dict) else {}
    return {
        "top1": _num(sh.get("top1"), "pct"),
        "top3": _num(sh.get("top3"), "pct"),
        "paired_top1": _num(p.get("top1"), "pct") if p else None,
        "paired_top1_se": _num(p.get("top1_se"), "pct") if p else None,
        "paired_share": _num(p.get("share_of_ceiling_top1"), "pct") if p else None,
    }


def _pm(v: Any, se: Any, fmt: str = ".4f") -> str:
    """A figure with its standard error ("–" when absent)."""
    if not isinstance(v, (int, float)):
        return "–"
    if fmt == "pct":
        return f"{v:.1%}" + (f" ± {se:.1%}" if isinstance(se, (int, float)) else "")
    return f"{v:{fmt}}" + (f" ± {se:{fmt}}" if isinstance(se, (int, float)) else "")


def _survival_horizons(ev: Mapping[str, Any]) -> Table:
    rows: list[Sequence[Cell]] = []
    for t, r in sorted(ev.get("by_horizon", {}).items(), key=lambda kv: int(kv[0])):
        if "td_auc" not in r:
            rows.append((f"{t} months", _num(r.get("n"), "int"), "–", "–", "–", "–", "–"))
            continue
        rows.append(
            (
                f"{t} months",
                _num(r.get("n"), "int"),
                _num(r.get("events"), "int"),
                _pm(r["td_auc"], r.get("td_auc_se")),
                _pm(r["c_index"], r.get("c_index_se")),
                _pm(r["brier"], r.get("brier_se")),
                _pm(r["ece"], r.get("ece_se")),
            )
        )
    head = ("horizon", "rows observing it", "closures", "td-AUC", "C-index", "Brier", "ECE")
    return Table(head, rows, caption="any never-overdue closure, out-of-time rows")


def _survival_board(ev: Mapping[str, Any]) -> Table:
    rows: list[Sequence[Cell]] = [
        (
            e["name"],
            _num(e.get("n"), "int"),
            _pm(e.get("top1"), e.get("top1_se"), "pct"),
            _pm(e.get("top3"), e.get("top3_se"), "pct"),
            _pm(e.get("ceiling_top1"), e.get("ceiling_top1_se"), "pct"),
            _num(e.get("all_n"), "int"),
            _pm(e.get("all_top1"), e.get("all_top1_se"), "pct"),
        )
        for e in ev.get("explainers", [])
    ]
    head = (
        "explainer",
        "closures with oracle futures",
        "top-1",
        "top-3",
        "ceiling top-1 (same rows)",
        "all closures",
        "top-1 on all",
    )
    return Table(head, rows, caption="graded against the true cause of each closure")


def _survival_by_cause(ev: Mapping[str, Any]) -> Table | None:
    board = ev.get("explainers", [])
    if not board:
        return None
    causes = list(board[0].get("by_cause", {}))
    ceiling = "ceiling_top1" in next(iter(board[0].get("by_cause", {}).values()), {})
    head = ("true cause", "closures", *(e["name"] for e in board))
    head += ("ceiling",) if ceiling else ()
    rows: list[Sequence[Cell]] = []
    for c in causes:
        first = board[0]["by_cause"][c]
        row: list[Cell] = [cause_label(c), _num(first.get("n"), "int")]
        row += [_num(e["by_cause"].get(c, {}).get("top1"), "pct") for e in board]
        if ceiling:
            row.append(_num(first.get("ceiling_top1"), "pct"))
        rows.append(tuple(row))
    return Table(head, rows, caption="top-1 by true cause, on the same closures")


def _survival(inp: Inputs) -> dict[str, Any]:
    ev = inp.survival
    if ev is None:
        return {"sv": None}
    ibs = ev.get("ibs", {})
    months = ibs.get("months") or []
    b = ev.get("beside_classifier") or {}
    return {
        "sv": {
            "ibs": _pm(ibs.get("ibs"), ibs.get("se")),
            "ibs_months": f"{months[0]}-{months[-1]}" if months else "–",
            "horizons": _survival_horizons(ev),
            "board": _survival_board(ev),
            "by_cause": _survival_by_cause(ev),
            "beside": {
                "n": _num(b.get("n"), "int"),
                "h": str(b.get("horizon")),
                "model": _pm(b["cause_model"]["auc"], b["cause_model"]["auc_se"]),
                "clf": _pm(b["classifier"]["auc"], b["classifier"]["auc_se"]),
                "diff": _pm(b.get("auc_difference"), b.get("auc_difference_se")),
            }
            if b
            else None,
        },
        "figs": _figs(
            inp,
            (
                "survival_curves",
                "cumulative incidence by month: predicted (mean over out-of-time rows) "
                "against observed (Aalen-Johansen)",
            ),
        ),
    }


def _policy(inp: Inputs) -> dict[str, Any]:
    pol = inp.policy
    if pol is None:
        return {"pol": None, "simulator": inp.data_card is not None}
    none, plat = pol.get("none", {}), pol.get("platform", {})
    rows: list[Sequence[Cell]] = [
        (
            _num(r.get("threshold_close"), ".3f"),
            _num(r.get("loss"), "int"),
            _num(r.get("close_good_hit"), "int"),
            _num(r.get("tiered_good_hit"), "int"),
            _num(r.get("tiered_good_closed"), "int"),
            _num(r.get("close_revenue"), "int"),
            _num(r.get("tiered_revenue"), "int"),
        )
        for r in inp.matched
    ]
    head: tuple[str, ...] = (
        "close threshold",
        "loss (matched)",
        "good hit: close",
        "good hit: tiered",
    )
    head += ("good closed: tiered", "revenue: close", "revenue: tiered")
    caption = "closing above a threshold against the tiered strategy at matched loss"
    a = pol.get("assumptions", {})
    tuned_raw = pol.get("tuned")
    tuned: Mapping[str, Any] = tuned_raw if isinstance(tuned_raw, Mapping) else {}
    levels = tuned.get("levels") or []
    t_rows: list[Sequence[Cell]] = [
        (
            _num(r.get("threshold_close"), ".3f"),
            _num(r.get("oot_loss"), "int"),
            f"t={_num(r.get('tiered_threshold'), 'g')}, cut to {_num(r.get('reduce_factor'), 'g')}"
            f" from {_num(r.get('medium_ratio'), 'g')}·t, raise under "
            f"{_num(r.get('raise_max_prob'), 'g')}",
            _pm_fmt(r.get("good_hit_saved"), r.get("good_hit_saved_se"), ",.1f"),
            _pm_fmt(r.get("revenue_gain"), r.get("revenue_gain_se"), ",.0f"),
        )
        for r in levels
        if isinstance(r, Mapping)
    ]
    t_head = (
        "close threshold",
        "out-of-time loss",
        "tiered setting tuned on validation rows",
        "good hit saved ± SE",
        "revenue gained ± SE",
    )
    return {
        "pol": {
            "source": str(pol.get("source", "–")),
            "rows": _num(pol.get("rows"), "int"),
            "horizon": str(pol.get("horizon")),
            "revenue": _num(none.get("revenue"), "int"),
            "loss": _num(none.get("loss"), "int"),
            "closures": _num(plat.get("closures"), "int"),
            "good_hit": _num(plat.get("good_hit"), "int"),
        },
        "terms": {k: _num(a.get(k), "g") for k in Money.__dataclass_fields__},
        "matched": Table(head, rows, caption=caption) if rows else None,
        "verdict": str(pol.get("verdict_sentence") or ""),
        "tuned": Table(
            t_head,
            t_rows,
            caption="the tuned tiered strategy against closing, at the same out-of-time loss "
            f"(harm: a cut counts {_num(tuned.get('cut_harm'), 'g')} of a closure)",
        )
        if t_rows
        else None,
        "figs": _figs(inp, ("frontier", "policy frontier")),
    }


def _pm_fmt(v: Any, se: Any, fmt: str) -> str:
    """``value ± se`` (``–`` where the value is missing)."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "–"
    try:
        e = float(se)
    except (TypeError, ValueError):
        return format(x, fmt)
    return f"{format(x, fmt)} ± {format(e, fmt)}"


def _psi(r: Mapping[str, str]) -> float:
    try:
        v = float(r.get("psi_train_oot", "nan"))
    except ValueError:
        return -1.0
    return v if math.isfinite(v) else -1.0


def _stability(inp: Inputs) -> dict[str, Any]:
    if not inp.stability:
        return {"table": None, "simulator": inp.data_card is not None}
    rows: list[Sequence[Cell]] = [
        (
            feature_label(r.get("feature", "")),
            str(r.get("family", "")),
            _num(r.get("missing_rate"), "pct"),
            _num(r.get("iv_train"), ".3f"),
            _num(r.get("psi_train_oot"), ".3f"),
            _num(r.get("oot_outside_train_range"), "pct"),
        )
        for r in sorted(inp.stability, key=_psi, reverse=True)[:12]
    ]
    head = ("feature", "family", "missing", "IV (train)", "PSI train→oot", "oot outside range")
    caption = "least stable features (PSI ≥ 0.25 is usually read as a shift)"
    ev = inp.evaluation or inp.summary
    by_snap = ev.get("oot_by_snapshot") or {}
    vintage = None
    if isinstance(by_snap, Mapping) and by_snap:
        vintage = Table(
            ("out-of-time snapshot", "rows", "closure rate", "AUC", "KS"),
            [
                (
                    str(k),
                    _num(v.get("n"), "int"),
                    _num(v.get("positive_rate"), "pct"),
                    _num(v.get("auc")),
                    _num(v.get("ks")),
                )
                for k, v in sorted(by_snap.items(), key=lambda kv: int(kv[0]))
            ],
            caption="the vintage view: each out-of-time snapshot month on its own",
        )
    d_raw, s_raw = ev.get("drift"), ev.get("splits")
    d: Mapping[str, Any] = d_raw if isinstance(d_raw, Mapping) else {}
    splits: Mapping[str, Any] = s_raw if isinstance(s_raw, Mapping) else {}
    return {
        "table": Table(head, rows, caption=caption),
        "vintage": vintage,
        "score_psi": _num(d.get("score_psi"), ".3f") if d else None,
        "splits": dict(splits),
    }


def _advice(inp: Inputs) -> dict[str, Any]:
    if not inp.advice:
        return {"table": None}
    adv = inp.summary.get("advice", {})
    head = ("borrower", "before", "after", "achieved", "advice")
    rows: list[Sequence[Cell]] = [
        (
            str(r.get("borrower_id")),
            _num(r.get("p_before"), ".3f"),
            _num(r.get("p_after"), ".3f"),
            str(r.get("achieved")),
            Lines(tuple((line, "") for line in str(r.get("advice_en", "")).split("\n"))),
        )
        for r in inp.advice
    ]
    summary = None
    if adv:
        summary = {
            "n": _num(adv.get("n"), "int"),
            "share": _num(adv.get("achieved_share"), "pct"),
            "threshold": _num(adv.get("threshold"), ".2f"),
            "cost": _num(adv.get("mean_cost"), ".2f"),
        }
    return {
        "summary": summary,
        "table": Table(head, rows, caption="advice for the highest-risk rows"),
    }


def _advice_world(inp: Inputs) -> dict[str, Any]:
    """The advice carried out in the simulated world: its whole bill, against the model."""
    w = inp.summary.get("advice", {}).get("world") if inp.simulator else None
    if not w:
        return {"world": None}
    by = w.get("by_action", {})
    move, true_move = _move, _true_move
    rows: list[Sequence[Cell]] = [
        (
            Lines(((a, ""), (ACTIONS.get(a, ""), ""))),
            str(f.get("kind", "–")),
            _num(f.get("n"), "int"),
            _num(f.get("cost"), ".2f"),
            move(f, "total"),
            move(f, "overdue", ".2%"),
            true_move(f),
            move(f, "interest", ",.0f"),
            move(f, "loss", ",.0f"),
            _signed(f.get("model_change")),
            _same_sign(f),
        )
        for a, f in ((a, by[a]) for a in w.get("ranking", by))
    ]
    head: tuple[str, ...] = ("action", "what it does", "borrowers", "mean cost")
    head += ("closures, any cause (± 2 s.e. of the change)", "overdue closures")
    head += ("never-overdue closures", "interest paid = revenue (yuan)")
    head += ("written off = loss (yuan)", "model's change", "same sign?")
    causes: list[Sequence[Cell]] = [
        (cause_label(c), _num(v.get("before"), "pct"), _num(v.get("after"), "pct"))
        for c, v in w.get("by_cause", {}).items()
    ]
    works = [a for a in w.get("ranking", []) if _works(by[a])]
    adv = inp.summary.get("advice", {})
    chosen, draw = adv.get("chosen", {}), adv.get("draw", {})
    return {
        "world": {
            "n": _num(w.get("n"), "int"),
            "n_tested": _num(w.get("n_tested"), "int"),
            "n_several": _num(w.get("n_several"), "int"),
            "n_futures": _num(w.get("n_futures"), "int"),
            "p_before": _num(w.get("p_before"), "pct"),
            "p_after": _num(w.get("p_after"), "pct"),
            "total": move(w, "total"),
            "overdue": move(w, "overdue", ".2%"),
            "interest": move(w, "interest", ",.0f"),
            "cut": _num(w.get("true_cut"), "pct"),
            "model_p_after": _num(w.get("model_p_after"), "pct"),
            "recomputed": _num(w.get("model_p_after_recomputed"), "pct"),
            "recomputed_se": _num(
                2 * float(w.get("model_p_after_recomputed_se", float("nan"))), "pct"
            ),
            "recomputed_n": _num(w.get("model_p_after_recomputed_n"), "int"),
            "recomputed_before": _num(w.get("model_p_before_recomputed"), "pct"),
            "scored_share": _num(w.get("scored_share_after_recomputed"), "pct"),
            "p_after_same_rows": _num(w.get("p_after_on_recomputed_rows"), "pct"),
            "recomputed_gap": _num(w.get("model_p_after_recomputed_gap"), "pct"),
            "recomputed_gap_se": _num(
                2 * float(w.get("model_p_after_recomputed_gap_se", float("nan"))), "pct"
            ),
            "next_months": _num(w.get("next_months"), "int"),
            "gap": _num(w.get("model_gap"), ".3f"),
            "works": works,
            "fails": [a for a in w.get("ranking", []) if a not in works],
            "lowers": [a for a in w.get("ranking", []) if by[a].get("kind") == "lowers risk"],
            "avoids": [a for a in w.get("ranking", []) if by[a].get("kind") == "avoids a trigger"],
            "differs": list(w.get("sign_differs", [])),
            "unclear": list(w.get("sign_unclear", [])),
            "rule": str(chosen.get("rule", "")),
            "n_above": _num(chosen.get("n_at_or_above_threshold"), "int"),
            "n_tied": _num(chosen.get("n_tied_at_top"), "int"),
            "need_share": _num(draw.get("need_share"), "pct"),
            "not_advised": [
                (why, _num(n, "int")) for why, n in draw.get("not_advised", {}).items()
            ],
        },
        "bill": _bill(w),
        "by_action": Table(head, rows, caption="by action, best true cut per unit of cost first"),
        "by_cause": Table(
            ("closure cause", "before", "after"),
            causes,
            caption="whole advice carried out: share of futures closing by each cause",
        )
        if causes
        else None,
    }


def _move(f: Mapping[str, Any], name: str, fmt: str = "pct") -> str:
    """``before → after (± 2 s.e. of the change)`` of a bill figure."""
    b, a = f.get(f"{name}_before"), f.get(f"{name}_after")
    se = f.get(f"{name}_change_se", float("nan"))
    return f"{_num(b, fmt)} → {_num(a, fmt)} (± {_num(2 * float(se), fmt)})"


def _true_move(f: Mapping[str, Any]) -> str:
    se = 2 * float(f.get("true_change_se", float("nan")))
    return (
        f"{_num(f.get('p_before'), 'pct')} → {_num(f.get('p_after'), 'pct')} (± {_num(se, 'pct')})"
    )


def _bill(w: Mapping[str, Any]) -> Table:
    """The whole bill of the two arms, per advised borrower."""
    bill: list[Sequence[Cell]] = [
        (
            label,
            _num(w.get(f"total_{arm}"), "pct"),
            _num(w.get(f"overdue_{arm}"), ".2%"),
            _num(w.get(f"p_{arm}"), "pct"),
            _num(w.get(f"interest_{arm}"), ",.0f"),
            _num(w.get(f"loss_{arm}"), ",.0f"),
            _num(w.get(f"drawn_{arm}"), ",.0f"),
        )
        for label, arm in (("without the advice", "before"), ("with the whole advice", "after"))
    ]
    return Table(
        (
            "arm",
            "closures, any cause",
            "overdue closures",
            "never-overdue closures",
            "interest paid = revenue (yuan)",
            "written off = loss (yuan)",
            "drawn (yuan)",
        ),
        bill,
        caption="the whole bill per advised borrower over the horizon "
        f"({_num(w.get('n'), 'int')} borrowers; means)",
    )


def _signed(v: Any) -> str:
    try:
        return "–" if math.isnan(float(v)) else f"{float(v):+.3f}"
    except (TypeError, ValueError):
        return "–"


def _same_sign(f: Mapping[str, Any]) -> str:
    if f.get("sign_differs"):
        return "no: opposite signs"
    return "opposite, within noise" if f.get("sign_unclear") else "yes"


def _works(f: Mapping[str, Any]) -> bool:
    """The action cuts true closure risk by more than twice its standard error."""
    change, se = float(f.get("true_change", 0.0)), float(f.get("true_change_se", 0.0))
    return change < 0 and not (math.isfinite(se) and -change <= 2 * se)


def _dictionary(inp: Inputs) -> dict[str, Any]:
    if not inp.simulator:
        return {"table": None}
    used = [BY_NAME[n] for n in inp.model.get("feature_names", []) if n in BY_NAME]
    rows: list[Sequence[Cell]] = [
        (
            Code(r["name"]),
            r["family"],
            r["causes"],
            r["monotone"],
            r["actionable"],
            r["en"],
            r["zh"],
        )
        for r in dictionary_rows(used)
    ]
    head: tuple[str, ...] = (
        "feature",
        "family",
        "causes (primary first)",
        "monotone",
        "actionable",
    )
    head += ("English", "中文")
    caption = "the model's features, from the feature registry"
    return {"table": Table(head, rows, caption=caption), "n": _num(len(rows), "int")}


# --------------------------------------------------------------------------- page

_BUILDERS = {
    "overview": _overview,
    "data-card": _data_card,
    "metrics": _metrics,
    "cutoffs": _cutoffs,
    "scorecard": _scorecard,
    "calibration": _calibration,
    "shap": _shap,
    "fidelity": _fidelity,
    "survival": _survival,
    "policy": _policy,
    "stability": _stability,
    "advice": _advice,
    "advice-world": _advice_world,
    "dictionary": _dictionary,
}

_TEMPLATES = Path(__file__).parent / "templates"
_ENV: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    """The template environment (autoescaping on, undefined names are errors)."""
    global _ENV
    if _ENV is None:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        env.tests["code"] = lambda c: isinstance(c, Code)
        env.tests["lines"] = lambda c: isinstance(c, Lines)
        env.tests["figure"] = _is_figure
        _ENV = env
    return _ENV


def render(inp: Inputs, title: str | None = None) -> str:
    """The whole report as one HTML string (no external resources).

    ``title`` defaults to the run's own (see :func:`words`).
    """
    w = inp.words
    sections = [
        {"id": sid, "heading": heading, **_BUILDERS[sid](inp)}
        for sid, heading in SECTIONS
        if not (w.table and sid in SIMULATOR_ONLY)
    ]
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            title=title or w.title,
            tagline=w.tagline,
            mode=str(inp.model.get("mode", "simulator")),
            run_id=str(inp.summary.get("mlflow_run_id") or "–"),
            models=inp.models,
            sections=sections,
        )
    )
