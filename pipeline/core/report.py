"""The model report: one self-contained HTML page for reviewers.

:func:`collect` reads what the stages wrote (the data card, the evaluation, the
calibration, SHAP importances and plots, the fidelity of the reasons, the policy
frontier, feature stability, advice) and :func:`render` turns it into a single HTML
string. Every plot is embedded as a base64 PNG and the page loads nothing from
anywhere, so the file opens offline and can be mailed or archived as it is.

A part that a run did not produce (the policy simulation before ``make policy``, the
simulator-only sections of a bring-your-own-table run) is shown as "not produced by
this run" with the command that produces it, never silently dropped.

The page carries a small inline script that, once loaded, records on ``<body>`` how
many of its plots decoded (``data-plots-ok`` / ``data-plots``) and which sections it
shows (``data-sections``); the browser test reads those attributes.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.base.causes import CAUSE_TEXT
from pipeline.base.io import DataError
from pipeline.base.registry import BY_NAME

#: Section ids, in page order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"),
    ("data-card", "Data card"),
    ("metrics", "Metrics"),
    ("calibration", "Calibration"),
    ("shap", "SHAP explanations"),
    ("fidelity", "Fidelity of the reasons"),
    ("policy", "Policy frontier"),
    ("stability", "Feature stability"),
    ("advice", "Advice"),
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Inputs:
    """What the report is made of; missing parts are ``None``/empty."""

    models: Path
    raw: Path
    processed: Path
    summary: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    data_card: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None
    shap_importance: list[tuple[str, float]] = field(default_factory=list)
    cause_importance: list[tuple[str, float]] = field(default_factory=list)
    policy: dict[str, Any] | None = None
    matched: list[dict[str, str]] = field(default_factory=list)
    stability: list[dict[str, str]] = field(default_factory=list)
    gains: list[dict[str, str]] = field(default_factory=list)
    reasons: list[dict[str, Any]] = field(default_factory=list)
    advice: list[dict[str, Any]] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc


def _csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc


def _parquet_rows(path: Path, columns: Sequence[str], n: int, sort_by: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        t = pq.read_table(path, columns=[c for c in columns if c in names]).to_pandas()
    except Exception as exc:  # noqa: BLE001 - any reader failure is a corrupt file here
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    if sort_by in t.columns:
        t = t.sort_values(sort_by, ascending=False, kind="stable")
    return t.head(n).to_dict(orient="records")  # type: ignore[return-value]


def collect(models: Path, raw: Path, processed: Path, example_rows: int = 5) -> Inputs:
    """Read every part of the report that exists; a corrupt part raises ``DataError``."""
    models, raw, processed = Path(models), Path(raw), Path(processed)
    if not (models / "model.json").exists():
        raise DataError(f"{models / 'model.json'}: file not found (train a model first)")
    inp = Inputs(models=models, raw=raw, processed=processed)
    inp.model = _json(models / "model.json")
    # a bring-your-own-table model: the simulator folders, if any, belong to another run
    simulator = str(inp.model.get("mode", "simulator")) == "simulator"
    if (models / "summary.json").exists():
        inp.summary = _json(models / "summary.json")
    if (models / "evaluation.json").exists():
        inp.evaluation = _json(models / "evaluation.json")
    if simulator and (raw / "data_card.json").exists():
        inp.data_card = _json(raw / "data_card.json")
    if (models / "fidelity.json").exists():
        inp.fidelity = _json(models / "fidelity.json")
    if (models / "shap_importance.json").exists():
        inp.shap_importance = [
            (str(f), float(v)) for f, v in _json(models / "shap_importance.json")["importance"]
        ]
    if (models / "cause_importance.json").exists():
        inp.cause_importance = [
            (str(c), float(v)) for c, v in _json(models / "cause_importance.json")["importance"]
        ]
    if (models / "policy" / "policy.json").exists():
        inp.policy = _json(models / "policy" / "policy.json")
        if (models / "policy" / "matched_loss.csv").exists():
            inp.matched = _csv(models / "policy" / "matched_loss.csv")
    if simulator and (processed / "stability.csv").exists():
        inp.stability = _csv(processed / "stability.csv")
    if (models / "gains_oot.csv").exists():
        inp.gains = _csv(models / "gains_oot.csv")
    reason_cols = ["borrower_id", "snapshot", "probability", "label", "label_cause"]
    reason_cols += [f"reason_{i}_{k}" for i in (1, 2, 3) for k in ("cause", "shap", "zh", "en")]
    if (models / "reasons.parquet").exists():
        inp.reasons = _parquet_rows(
            models / "reasons.parquet", reason_cols, example_rows, "probability"
        )
    if (models / "advice.parquet").exists():
        inp.advice = _parquet_rows(
            models / "advice.parquet",
            ["borrower_id", "snapshot", "p_before", "p_after", "achieved", "cost", "advice_en"],
            example_rows,
            "p_before",
        )
    folders = (raw / "plots",) if simulator else ()
    for folder in (*folders, models / "plots", models / "policy"):
        if folder.is_dir():
            for png in sorted(folder.glob("*.png")):
                inp.plots[png.stem] = png
    return inp


# --------------------------------------------------------------------------- rendering


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(v: Any, fmt: str = ".4f") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _e(v) if v not in (None, "") else "–"
    if math.isnan(f):
        return "–"
    if fmt == "int":
        return f"{f:,.0f}"
    if fmt == "pct":
        return f"{f:.1%}"
    return format(f, fmt)


def _table(
    head: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "", caption: str = ""
) -> str:
    out = [f'<table class="{_e(cls)}">' if cls else "<table>"]
    if caption:
        out.append(f"<caption>{_e(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead>")
    out.append("<tbody>")
    for r in rows:
        out.append("<tr>" + "".join(_cell(c) for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


_NUMERIC = re.compile(r"[-+–0-9.,%eE\s]*")


def _cell(c: str) -> str:
    # figures align right, words left
    return f"<td>{c}</td>" if _NUMERIC.fullmatch(c) else f'<td class="t">{c}</td>'


def _png(path: Path) -> str:
    data = path.read_bytes()
    if not data.startswith(PNG_MAGIC):
        raise DataError(f"{path}: not a PNG image")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _plot(inp: Inputs, name: str, caption: str) -> str:
    path = inp.plots.get(name)
    if path is None:
        return ""
    return (
        f'<figure><img class="plot" data-plot="{_e(name)}" alt="{_e(caption)}" '
        f'src="{_png(path)}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _missing(what: str, how: str) -> str:
    return f'<p class="missing">{_e(what)} not produced by this run; {_e(how)}.</p>'


def _feature_label(name: str) -> str:
    f = BY_NAME.get(name)
    if f is None:
        return f"<code>{_e(name)}</code>"
    return f"<code>{_e(name)}</code><br><small>{_e(f.en)} · {_e(f.zh)}</small>"


def _cause_label(code: str) -> str:
    zh, en = CAUSE_TEXT.get(code, ("", ""))
    if not en:
        return f"<code>{_e(code)}</code>"
    return f"<code>{_e(code)}</code><br><small>{_e(en)} · {_e(zh)}</small>"


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


def _overview(inp: Inputs) -> str:
    s, m = inp.summary, inp.model
    cfg = m.get("config", {})
    data = cfg.get("data", {})
    params = m.get("params", {})
    mode = str(m.get("mode", "simulator"))
    rows = [
        ("mode", _e(mode)),
        ("MLflow run", f"<code>{_e(s.get('mlflow_run_id') or '–')}</code>"),
        ("rows (borrower × snapshot)", _num(s.get("n_rows"), "int")),
        ("closure rate in the horizon", _num(s.get("closure_rate"), "pct")),
        ("validation AUC", _num(s.get("valid", {}).get("auc"))),
        ("out-of-time AUC", _num(s.get("oot", {}).get("auc"))),
        ("trees (best iteration)", _num(m.get("best_iteration"), "int")),
        ("calibration", _e(m.get("calibration", "–"))),
        ("features", _num(len(m.get("feature_names", [])), "int")),
    ]
    if mode == "simulator":
        rows.insert(2, ("borrowers simulated", _num(data.get("n_borrowers"), "int")))
        rows.insert(3, ("seed", _e(data.get("seed", "–"))))
    else:
        rows.insert(2, ("table", f"<code>{_e(data.get('path', '–'))}</code>"))
    champ = s.get("champion")
    if isinstance(champ, dict):
        rows.append(
            (
                "registry",
                f"{_e(champ.get('name'))} v{_e(champ.get('version'))} · "
                f"@{_e(champ.get('alias'))} → v{_e(champ.get('champion_version'))}",
            )
        )
    keys = ("learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction", "lambda_l2")
    prm = ", ".join(f"{k}={_e(params[k])}" for k in keys if k in params)
    rows.append(("LightGBM", prm or "–"))
    return _table(("", ""), rows, cls="kv")


def _data_card(inp: Inputs) -> str:
    dc = inp.data_card
    if dc is None:
        n = inp.summary.get("n_rows")
        return (
            f"<p>Bring-your-own table: {_num(n, 'int')} rows, positive rate "
            f"{_num(inp.summary.get('closure_rate'), 'pct')}.</p>"
            + _missing("The simulator's data card", "it describes simulated worlds only")
        )
    parts = []
    metrics = dc.get("metrics", {})
    by_cause = dc.get("by_cause", {})
    total = sum(float(v) for v in by_cause.values()) or 1.0
    parts.append(
        "<p>Borrowers closed within the simulated months: "
        f"<b>{_num(metrics.get('closure_rate_borrowers'), 'pct')}</b>; of the closures, "
        f"{_num(metrics.get('overdue_share_of_closures'), 'pct')} follow an overdue and the "
        "rest are the never-overdue closures this project studies. Monthly closure rate "
        f"before the tightening {_num(metrics.get('monthly_closure_rate_pre_tightening'), 'pct')},"
        f" after it {_num(metrics.get('monthly_closure_rate_post_tightening'), 'pct')}.</p>"
    )
    rows = [
        (_cause_label(c), _num(v, "int"), _num(float(v) / total, "pct"))
        for c, v in sorted(by_cause.items(), key=lambda kv: -float(kv[1]))
    ]
    parts.append(_table(("true cause", "closures", "share"), rows, caption="closures by cause"))
    occ = dc.get("by_occupation", {})
    if occ:
        parts.append(
            _table(
                ("occupation", "borrowers closed"),
                [(_e(k), _num(v, "pct")) for k, v in occ.items()],
                caption="share of borrowers closed, by occupation",
            )
        )
    parts.append(_plot(inp, "closure_rate_by_cause", "monthly closure rate by true cause"))
    parts.append(_plot(inp, "distributions", "distributions of the simulated world"))
    return "\n".join(p for p in parts if p)


def _metrics(inp: Inputs) -> str:
    ev = inp.evaluation or inp.summary
    parts = []
    head = ["model", "split", *(label for _, label, _ in _METRICS)]
    rows: list[list[str]] = []
    for split in ("valid", "oot"):
        if split in ev:
            rows.append(["LightGBM", split, *(_num(ev[split].get(k), f) for k, _, f in _METRICS)])
        for name, b in sorted(ev.get("baselines", {}).items()):
            if split in b:
                rows.append([_e(name), split, *(_num(b[split].get(k), f) for k, _, f in _METRICS)])
    train = inp.summary.get("train") or inp.model.get("metrics", {}).get("train")
    if isinstance(train, dict):
        rows.append(["LightGBM", "train", *(_num(train.get(k), f) for k, _, f in _METRICS)])
    parts.append(_table(head, rows, caption="discrimination and calibration by split"))
    cv = ev.get("cv") or inp.summary.get("cv")
    if isinstance(cv, dict) and cv:
        cv_rows = [
            (_e(k), _num(v.get("auc_mean")), _num(v.get("auc_std")))
            for k, v in sorted(cv.items())
            if isinstance(v, dict)
        ]
        parts.append(
            _table(
                ("model", "AUC mean", "AUC std"),
                cv_rows,
                caption=f"cross-validation ({cv.get('scheme', '')})",
            )
        )
    if "oracle_auc" in ev:
        parts.append(
            "<p>Against the simulator's own closure probabilities on "
            f"{_num(ev.get('oracle_rows'), 'int')} out-of-time rows: oracle AUC "
            f"<b>{_num(ev.get('oracle_auc'))}</b>, model AUC {_num(ev.get('oracle_model_auc'))}"
            f", gap {_num(ev.get('oracle_gap'))}. Score PSI between training and out-of-time "
            f"rows: {_num(ev.get('score_psi'), '.3f')}.</p>"
        )
    for key, label in (("oot_by_occupation", "occupation"), ("oot_by_regime", "regime")):
        seg = ev.get(key)
        if isinstance(seg, dict) and seg:
            seg_rows = [
                (_e(k), *(_num(v.get(m), f) for m, _, f in _METRICS)) for k, v in seg.items()
            ]
            parts.append(
                _table(
                    (label, *(lab for _, lab, _ in _METRICS)),
                    seg_rows,
                    caption=f"out-of-time metrics by {label}",
                )
            )
    parts.append(_plot(inp, "roc", "ROC curves"))
    parts.append(_plot(inp, "gains", "cumulative gains"))
    if inp.gains:
        g_rows = [
            (
                _e(r.get("decile")),
                _num(r.get("n"), "int"),
                _num(r.get("min_score"), ".3f"),
                _num(r.get("positives"), "int"),
                _num(r.get("rate"), "pct"),
                _num(r.get("cum_capture"), "pct"),
            )
            for r in inp.gains
        ]
        parts.append(
            _table(
                ("decile", "rows", "min score", "closures", "rate", "cumulative capture"),
                g_rows,
                caption="out-of-time gains table",
            )
        )
    mc = ev.get("monotone_check")
    if isinstance(mc, dict):
        parts.append(
            f"<p>Monotone constraints on {_num(len(mc.get('features', {})), 'int')} features, "
            f"checked on {_num(mc.get('checks'), 'int')} perturbations: "
            f"{_num(mc.get('violations'), 'int')} violations.</p>"
        )
    return "\n".join(p for p in parts if p)


def _calibration(inp: Inputs) -> str:
    cal = (inp.evaluation or inp.summary).get("calibration", {})
    parts = []
    if isinstance(cal, dict) and cal:
        rows = [
            (
                _e(split),
                _num(cal.get(f"{split}_ece_before")),
                _num(cal.get(f"{split}_ece_after")),
            )
            for split in ("valid", "oot")
        ]
        parts.append(
            f"<p>Method: <b>{_e(cal.get('method', '–'))}</b>, fitted on the validation rows.</p>"
        )
        parts.append(
            _table(
                ("split", "ECE raw", "ECE calibrated"), rows, caption="expected calibration error"
            )
        )
    parts.append(_plot(inp, "calibration", "reliability diagram"))
    if not any(parts):
        return _missing("The calibration", "run `make train`")
    return "\n".join(p for p in parts if p)


def _shap(inp: Inputs) -> str:
    if not inp.shap_importance:
        return _missing("SHAP explanations", "run `make explain`")
    parts = []
    rows = [
        (str(i + 1), _feature_label(f), _num(v))
        for i, (f, v) in enumerate(inp.shap_importance[:15])
    ]
    parts.append(_table(("#", "feature", "mean |SHAP|"), rows, caption="top features"))
    parts.append(_plot(inp, "shap_bar", "mean |SHAP| by feature"))
    parts.append(_plot(inp, "shap_beeswarm", "SHAP values by feature and value"))
    for name in sorted(n for n in inp.plots if n.startswith("dependence_")):
        feat = name.removeprefix("dependence_")
        parts.append(_plot(inp, name, f"SHAP dependence: {feat}"))
    if inp.cause_importance:
        cause_rows = [(_cause_label(c), _num(v)) for c, v in inp.cause_importance]
        parts.append(
            _table(
                ("cause", "mean |attribution|"), cause_rows, caption="SHAP grouped by closure cause"
            )
        )
        parts.append(_plot(inp, "cause_importance", "attribution by closure cause"))
    if inp.reasons:
        ex_rows = []
        for r in inp.reasons:
            reasons = "<br>".join(
                f"{_e(r.get(f'reason_{i}_en', ''))} <small>({_e(r.get(f'reason_{i}_zh', ''))})</small>"
                for i in (1, 2, 3)
                if r.get(f"reason_{i}_cause") not in (None, "")
            )
            ex_rows.append(
                (
                    _e(r.get("borrower_id")),
                    _e(r.get("snapshot")),
                    _num(r.get("probability"), ".3f"),
                    _e(r.get("label_cause", "–")),
                    reasons,
                )
            )
        parts.append(
            _table(
                ("borrower", "snapshot", "probability", "true cause", "top reasons"),
                ex_rows,
                caption="highest-risk out-of-time rows and their reasons",
            )
        )
    return "\n".join(p for p in parts if p)


def _fidelity(inp: Inputs) -> str:
    fid = inp.fidelity
    if fid is None:
        return _missing(
            "The fidelity check", "it needs the simulator's true causes (simulator mode)"
        )
    parts = [
        f"<p>On {_num(fid.get('n'), 'int')} out-of-time closures, the top reason names the "
        f"true cause in <b>{_num(fid.get('top1'), 'pct')}</b> of them and one of the top three "
        f"in {_num(fid.get('top3'), 'pct')} (chance: {_num(fid.get('chance_top1'), 'pct')}). "
        f"Attribution: {_e(fid.get('attribution', '–'))}.</p>"
    ]
    by = fid.get("by_cause", {})
    if by:
        rows = [
            (_cause_label(c), _num(v.get("n"), "int"), _num(v.get("top1"), "pct"))
            for c, v in by.items()
        ]
        parts.append(
            _table(("true cause", "closures", "top-1 agreement"), rows, caption="by cause")
        )
    parts.append(_plot(inp, "fidelity_confusion", "true cause against top reason"))
    return "\n".join(p for p in parts if p)


def _policy(inp: Inputs) -> str:
    pol = inp.policy
    if pol is None:
        if inp.data_card is None:
            return _missing("The policy simulation", "it needs simulated outcomes (simulator mode)")
        return _missing(
            "The policy simulation",
            "run `make policy` (it needs out-of-time rows) and then `make report`",
        )
    none, plat = pol.get("none", {}), pol.get("platform", {})
    parts = [
        f"<p>Scored with: <code>{_e(pol.get('source', '–'))}</code>.</p>",
        f"<p>{_num(pol.get('rows'), 'int')} out-of-time accounts, outcomes over "
        f"{_e(pol.get('horizon'))} months. No action: revenue {_num(none.get('revenue'), 'int')}, "
        f"losses {_num(none.get('loss'), 'int')}. The simulated platform's own closures: "
        f"{_num(plat.get('closures'), 'int')} ({_num(plat.get('good_hit'), 'int')} of them "
        "never went overdue).</p>",
    ]
    if inp.matched:
        rows = [
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
        parts.append(
            _table(
                (
                    "close threshold",
                    "loss (matched)",
                    "good hit: close",
                    "good hit: tiered",
                    "good closed: tiered",
                    "revenue: close",
                    "revenue: tiered",
                ),
                rows,
                caption="closing above a threshold against the tiered strategy at matched loss",
            )
        )
    parts.append(_plot(inp, "frontier", "policy frontier"))
    return "\n".join(p for p in parts if p)


def _stability(inp: Inputs) -> str:
    if not inp.stability:
        if inp.data_card is None:
            return _missing("The feature stability table", "it is built for simulator features")
        return _missing("The feature stability table", "run `make features`")

    def psi(r: dict[str, str]) -> float:
        try:
            v = float(r.get("psi_train_oot", "nan"))
        except ValueError:
            return -1.0
        return v if math.isfinite(v) else -1.0

    top = sorted(inp.stability, key=psi, reverse=True)[:12]
    rows = [
        (
            _feature_label(r.get("feature", "")),
            _e(r.get("family", "")),
            _num(r.get("missing_rate"), "pct"),
            _num(r.get("iv_train"), ".3f"),
            _num(r.get("psi_train_oot"), ".3f"),
        )
        for r in top
    ]
    return _table(
        ("feature", "family", "missing", "IV (train)", "PSI train→oot"),
        rows,
        caption="least stable features (PSI ≥ 0.25 is usually read as a shift)",
    )


def _advice(inp: Inputs) -> str:
    if not inp.advice:
        return _missing("Advice", "run `make explain` on a simulator run")
    adv = inp.summary.get("advice", {})
    parts = []
    if adv:
        parts.append(
            f"<p>{_num(adv.get('n'), 'int')} high-risk rows advised; the suggested actions bring "
            f"{_num(adv.get('achieved_share'), 'pct')} of them under "
            f"{_num(adv.get('threshold'), '.2f')} at a mean cost of "
            f"{_num(adv.get('mean_cost'), '.2f')} actions.</p>"
        )
    rows = [
        (
            _e(r.get("borrower_id")),
            _num(r.get("p_before"), ".3f"),
            _num(r.get("p_after"), ".3f"),
            _e(r.get("achieved")),
            _e(r.get("advice_en", "")).replace("\n", "<br>"),
        )
        for r in inp.advice
    ]
    parts.append(
        _table(
            ("borrower", "before", "after", "achieved", "advice"),
            rows,
            caption="advice for the highest-risk rows",
        )
    )
    return "\n".join(parts)


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#fafbfc}
header{background:#17324d;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:1.5em}header p{margin:4px 0 0;opacity:.85}
nav{padding:8px 32px;background:#e8eef4;position:sticky;top:0}
nav a{margin-right:14px;color:#17324d;text-decoration:none;font-size:.92em}
main{padding:8px 32px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:12px 20px;margin:16px 0}
h2{font-size:1.2em;border-bottom:1px solid #dde3ea;padding-bottom:4px}
table{border-collapse:collapse;margin:10px 0;font-size:.88em}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #dde3ea;padding:4px 8px;text-align:right;vertical-align:top}
td:first-child,th:first-child{text-align:left}
table.kv td,td.t{text-align:left}
figure{margin:12px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#566}
.missing{color:#8a5a00;background:#fff6e0;padding:6px 10px;border-radius:4px}
small{color:#566}code{font-size:.95em}
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img.plot"));
  // a plot counts when its image decoded and it is laid out with a size on the page
  var ok = imgs.filter(function (i) {
    return i.complete && i.naturalWidth > 0 && i.offsetWidth > 0 && i.offsetHeight > 0;
  });
  // a section counts when something besides its heading is laid out with a size
  var shown = Array.prototype.slice.call(document.querySelectorAll("main > section"))
    .filter(function (s) {
      return Array.prototype.slice.call(s.children).some(function (c) {
        return c.tagName !== "H2" && c.offsetHeight > 0;
      });
    })
    .map(function (s) { return s.id; });
  document.body.setAttribute("data-plots", String(imgs.length));
  document.body.setAttribute("data-plots-ok", String(ok.length));
  document.body.setAttribute("data-sections", shown.join(" "));
});
"""


def render(inp: Inputs, title: str = "Closure-risk model report") -> str:
    """The whole report as one HTML string (no external resources)."""
    builders = {
        "overview": _overview,
        "data-card": _data_card,
        "metrics": _metrics,
        "calibration": _calibration,
        "shap": _shap,
        "fidelity": _fidelity,
        "policy": _policy,
        "stability": _stability,
        "advice": _advice,
    }
    body = []
    for sid, heading in SECTIONS:
        body.append(f'<section id="{sid}"><h2>{_e(heading)}</h2>\n{builders[sid](inp)}\n</section>')
    nav = "".join(f'<a href="#{sid}">{_e(h)}</a>' for sid, h in SECTIONS)
    run_id = inp.summary.get("mlflow_run_id") or "–"
    mode = inp.model.get("mode", "simulator")
    subtitle = (
        f"Why never-overdue accounts get closed · mode: {mode} · MLflow run: {run_id} · "
        f"models: {inp.models}"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header>\n"
        f"<nav>{nav}</nav>\n<main>\n" + "\n".join(body) + "\n</main>\n"
        f"<script>{_SCRIPT}</script>\n</body></html>\n"
    )
