"""Stage runners and the pipeline driver.

Each runner takes the resolved config and a :class:`~pipeline.adapters.tracking.Tracker`, reads
its inputs, calls a pure core, writes outputs atomically and logs to MLflow.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from omegaconf import OmegaConf

from pipeline.adapters.catalog import data_digest, made_from, world_digest
from pipeline.adapters.runstate import owner_tags
from pipeline.adapters.tracking import (
    Tracker,
    flatten,
    flatten_numbers,
    redact_tree,
    redact_uri,
    run_name,
)
from pipeline.base import interrupt
from pipeline.base.config import Config, validate
from pipeline.base.io import DataError, resolve, write_json, write_text
from pipeline.core import report as report_core
from pipeline.core.labels import labels_of
from pipeline.stages.common import (
    STAMP_KEY,
    Paths,
    check_stamp,
    model_stamp,
    publishing,
    release_memory,
    say,
)
from pipeline.stages.explain import explain
from pipeline.stages.features import features
from pipeline.stages.generate import generate
from pipeline.stages.policy import policy
from pipeline.stages.report import report
from pipeline.stages.train import train

#: Each stage returns its result: a dataclass (or, for older stages, a dict) whose
#: ``summary`` field is the stage's part of the run summary.
STAGES: dict[str, Callable[[Any, Tracker], Any]] = {
    "generate": generate,
    "features": features,
    "train": train,
    "explain": explain,
    # the strategy comparison, on this run's own model (simulator mode only)
    "policy": lambda cfg, tracker: policy(cfg, tracker, source="local", in_run=True),
    "report": report,
}
ALIASES = {"data": "generate"}
#: stages that need the simulator's ground truth
SIMULATOR_ONLY = ("policy",)
#: stages whose outputs (and summary parts) are derived from the model
MODEL_STAGES = ("train", "explain", "policy", "report")


def pipeline_stages(cfg: Any) -> list[str]:
    """What ``run`` runs: every stage, less those the data mode cannot feed."""
    simulator = str(cfg.data.kind) == "simulator"
    return [s for s in STAGES if simulator or s not in SIMULATOR_ONLY]


@contextmanager
def _parent_run(
    cfg: Any, tracker: Tracker, stages: list[str], overrides: list[str] | None
) -> Iterator[dict[str, Any]]:
    """Check the config, then open the invocation's parent run; yields the flat params."""
    validate(cfg)
    params = flatten(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    tags = {
        "overrides": " ".join(overrides or []) or "(none)",
        "stages": ",".join(stages),
        **owner_tags(),
    }
    with tracker.run(run_name(str(cfg.stage), overrides, cfg), tags=tags):
        yield params


def _without_registry(cfg: Any) -> Any:
    """A copy of ``cfg`` whose train stage logs its model but registers nothing.

    Sweep trials run this way: only the sweep's best trial is offered to the registry,
    once the sweep is over.
    """
    out = copy.deepcopy(cfg)
    out.tracking.registered_model = ""
    return out


def run_single(
    cfg: Any,
    tracker: Tracker,
    stage: str,
    fn: Callable[[Any, Tracker], dict[str, Any]],
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run one stage that is not part of ``run`` under its own parent MLflow run."""
    with _parent_run(cfg, tracker, [stage], overrides) as params:
        with tracker.run(stage, tags={"stage": stage, **owner_tags()}):
            tracker.log_params({k: v for k, v in params.items() if k.split(".")[0] == stage})
            with publishing(cfg, stage):
                result = fn(cfg, tracker)
    result.setdefault("mlflow_run_id", tracker.parent_run_id)
    return result


def run_pipeline(
    cfg: Any,
    tracker: Tracker,
    stages: list[str],
    overrides: list[str] | None = None,
    register: bool = True,
) -> dict[str, Any]:
    """Run the given stages under one parent MLflow run; returns the summary.

    ``register=False`` (sweep trials) logs the model without offering it to the registry.
    """
    results: dict[str, Any] = {}
    with _parent_run(cfg, tracker, stages, overrides) as params:
        if not register:
            cfg = _without_registry(cfg)
        tracker.log_params(params)
        resolved = OmegaConf.to_yaml(
            OmegaConf.create(redact_tree(OmegaConf.to_container(cfg, resolve=True)))
        )
        cfg_path = Path(cfg.paths.models_dir) / "resolved_config.yaml"
        _log_config(tracker, resolved, cfg_path.name)
        pending = [cfg_path]  # goes out with the invocation's first published outputs

        def publish_config() -> None:
            if pending:
                write_text(resolved, pending.pop())

        def run_stage(stage: str) -> None:
            with tracker.run(stage, tags={"stage": stage, **owner_tags()}):
                interrupt.check()  # a signal dropped in a garbage-collection hook
                tracker.log_params(
                    {
                        k: v
                        for k, v in params.items()
                        if k.split(".")[0] in _STAGE_KEYS.get(stage, ())
                    }
                )
                with publishing(cfg, stage, also=("models_dir",) if pending else ()):
                    publish_config()
                    results[stage] = STAGES[stage](cfg, tracker)
                    interrupt.check()
            release_memory()

        for stage in stages:
            if stage != "report":
                run_stage(stage)
        with publishing(cfg, "summary"):
            publish_config()
            summary = summarize(cfg, results, tracker)
        if "train" in results:
            tracker.log_metrics(flatten_numbers(summary, "summary"))
        if "report" in stages:  # last: the page shows the summary just written
            run_stage("report")
            summary["report"] = results["report"]["path"]
            write_json(summary, Paths.of(cfg).models / "summary.json")
    return summary


def _log_config(tracker: Tracker, text: str, name: str) -> None:
    """Log the resolved config to the parent run (from a scratch copy: the one in the
    models folder is published with the first stage's outputs)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        tracker.log_artifact(path, "config")


_STAGE_KEYS = {
    "generate": ("data", "simulator"),
    "features": ("features",),
    "train": ("model",),
    "explain": ("explain",),
    "policy": ("policy",),
}


def summarize(cfg: Any, results: dict[str, Any], tracker: Tracker) -> dict[str, Any]:
    """Print the run summary and write ``models/summary.json``."""
    p = Paths.of(cfg)
    summary: dict[str, Any] = {
        "mlflow_run_id": tracker.parent_run_id,
        "tracking_uri": redact_uri(tracker.uri) if tracker.enabled else None,
    }
    # a table run's rows are in table_features.parquet; features.parquet, if there, is
    # a simulator run's
    table_mode = str(cfg.data.kind) == "table"
    feat_path = p.processed / ("table_features.parquet" if table_mode else "features.parquet")
    features_current = table_mode or _features_current(p)
    if not features_current:
        say(
            f"summary: {feat_path} was built from another world than {p.raw}; its rows and "
            "the model's figures are left out (make features, make train)"
        )
    if features_current and resolve(feat_path).exists():
        t = pq.read_table(resolve(feat_path), columns=["split", "label"]).to_pandas()
        summary["n_rows"] = int(len(t))
        summary["closure_rate"] = float(t.label.mean()) if len(t) else float("nan")
    model_meta = p.models / "model.json"
    meta = json.loads(resolve(model_meta).read_text()) if resolve(model_meta).exists() else None
    meta = meta if features_current else None
    if meta is not None and features_current and not _trained_on(meta, cfg, feat_path):
        say(
            f"summary: the model in {p.models} was trained on other data than {feat_path}; "
            "its figures are left out (make train to retrain)"
        )
        meta = None
    if meta is not None:
        for split, m in meta["metrics"].items():
            summary[split] = {
                k: m[k]
                for k in ("auc", "ks", "pr_auc", "brier", "ece", "n", "positive_rate")
                if k in m
            }
    imp = p.models / "shap_importance.json"
    if meta is not None and resolve(imp).exists():
        importance = json.loads(resolve(imp).read_text())["importance"]
        summary["top_features"] = [f for f, _ in importance[:5]]
    has_model = resolve(p.models / "model.txt").exists()
    stamp = model_stamp(p.models) if meta is not None and has_model else None
    if stamp is not None:
        summary[STAMP_KEY] = stamp
    _merge_parts(summary, p.models / "summary_parts", results, stamp)
    summary["outputs"] = {"raw": str(p.raw), "features": str(feat_path), "models": str(p.models)}
    local_store = str(cfg.tracking.uri).startswith("sqlite:")
    summary["ui"] = "make ui" if local_store else str(summary["tracking_uri"])
    if tracker.enabled:  # the runs page in the headline view, not the GenAI overview
        base = "http://127.0.0.1:5000" if local_store else str(summary["tracking_uri"])
        summary["ui_url"] = tracker.ui_url(base)
    write_json(summary, p.models / "summary.json")
    tracker.log_artifact(p.models / "summary.json", "summary")
    info = meta or {"mode": "table" if table_mode else "simulator", "table": _table_info(cfg)}
    _print_summary(summary, report_core.words(info), labels_of(meta or {}).name)
    return summary


def _table_info(cfg: Any) -> dict[str, Any]:
    """What the words of a table run need, from the config (when no model says it)."""
    d = cfg.data
    return {"target": d.target, "positive": d.positive, "time": d.time, "path": d.path}


def _features_current(p: Paths) -> bool:
    """Whether the feature table was built from the world now in the raw folder (a table
    whose manifest names no world is taken at its word)."""
    source = made_from(p.processed, "features")
    return source is None or source == world_digest(p.raw)


def _trained_on(meta: dict[str, Any], cfg: Config, feat_path: Path) -> bool:
    """Whether the model in ``meta`` was trained on the data this invocation sees.

    A simulator model records the digest of its feature table; a table model, the path
    of its table. A model saved without the record is taken at its word.
    """
    if str(cfg.data.kind) == "table":
        return str(meta.get("table", {}).get("path", cfg.data.path)) == str(
            Path(str(cfg.data.path)).expanduser()
        )
    if "data_digest" not in meta:
        return True
    return resolve(feat_path).exists() and meta["data_digest"] == data_digest(feat_path)


def _merge_parts(
    summary: dict[str, Any], parts_dir: Path, results: dict[str, Any], stamp: str | None
) -> None:
    """Write this invocation's summary parts, then merge every part on disk into ``summary``.

    Parts are kept on disk so that a single-stage invocation still reports what earlier
    stages found. The parts of model-derived stages carry the model's stamp and are merged
    only when it is the current model's: a part left by another model is skipped, with a
    message, never mixed in.
    """
    for stage, result in results.items():
        part = result.get("summary") if isinstance(result, dict) else result.summary
        if part:
            if stage in MODEL_STAGES and stamp is not None:
                part = {STAMP_KEY: stamp, **part}
            write_json(part, parts_dir / f"{stage}.json")
    for stage in STAGES:
        path = parts_dir / f"{stage}.json"
        if not resolve(path).exists():
            continue
        if stage in MODEL_STAGES:
            try:
                if stamp is None:
                    raise DataError(
                        f"{path}: no model trained on this data to tell which model it is of"
                    )
                check_stamp(path, stamp)
            except DataError as exc:
                say(f"summary: skipped {exc}")
                continue
        part = json.loads(resolve(path).read_text())
        part.pop(STAMP_KEY, None)
        _deep_merge(summary, part)


def _deep_merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v


def _print_summary(
    s: dict[str, Any], w: report_core.Words, name: Callable[[str], str] = str
) -> None:
    """The console summary, in the run's words (``w``) and the table's column names."""

    def g(split: str, k: str) -> str:
        v = s.get(split, {}).get(k)
        return f"{v:.4f}" if isinstance(v, float) else "-"

    def row(label: str, value: str) -> str:
        return f"{label:<27}: {value}"

    rows = s.get("n_rows")
    rate = s.get("closure_rate")
    lines = [
        "",
        f"=== {w.summary_title} ===",
        row(w.rows, f"{rows:,}" if isinstance(rows, int) else "-"),
        row(w.rate_long, f"{rate:.2%}" if isinstance(rate, float) else "-"),
        row(f"AUC valid / {w.split}", f"{g('valid', 'auc')} / {g('oot', 'auc')}"),
        row(f"KS / Brier {w.split}", f"{g('oot', 'ks')} / {g('oot', 'brier')}"),
    ]
    if "oracle" in s and "observable_auc" in s["oracle"]:
        o = s["oracle"]
        lines.append(
            f"AUC on the oracle's rows   : model {o['model_auc']:.4f}, observable oracle "
            f"{o['observable_auc']:.4f}, full-state oracle {o['full_auc']:.4f} "
            f"({o['n_rows']:,} rows)"
        )
    if "fidelity" in s:
        f = s["fidelity"]
        line = f"explanation fidelity       : top-1 {f['top1']:.2%}, top-3 {f['top3']:.2%}"
        if "ceiling_top1" in f and "oracle_rows_top1" in f:
            line += (
                f"; on the {int(f.get('ceiling_n', 0)):,} closures with oracle futures "
                f"{f['oracle_rows_top1']:.2%} / {f['oracle_rows_top3']:.2%} against the cause "
                f"ceiling {f['ceiling_top1']:.2%} / {f['ceiling_top3']:.2%}"
            )
        lines.append(line)
    if "top_features" in s:
        top = ", ".join(name(f) for f in s["top_features"])
        lines.append(row("top features (mean |SHAP|)", top))
    lines += [
        f"outputs                    : {s['outputs']['raw']}, {s['outputs']['features']}, {s['outputs']['models']}",
        f"MLflow run                 : {s.get('mlflow_run_id') or '(tracking off)'}",
        "open the UI                : "
        + (
            f"make ui   (then {s.get('ui_url') or 'http://127.0.0.1:5000'})"
            if s.get("ui") == "make ui"
            else str(s.get("ui_url") or s.get("ui"))
        ),
        "",
    ]
    say("\n".join(lines))
