"""The pipeline driver: runs what a command names, stage by stage, under MLflow runs.

Each stage (:mod:`pipeline.stages.plan`) takes the resolved config and a
:class:`~pipeline.adapters.tracking.Tracker`, reads its inputs through the catalog, calls
a pure core, writes its outputs (staged, published together) and logs to MLflow. The
invocation around them (the held root, recovery, signals, sweep isolation) is
:mod:`pipeline.adapters.invocation`.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.adapters.catalog import Catalog, data_digest, made_from, world_digest
from pipeline.adapters.invocation import guarded, isolate
from pipeline.adapters.model_registry import attach_trial
from pipeline.adapters.runstate import owner_tags
from pipeline.adapters.tracking import (
    Tracker,
    flatten,
    flatten_numbers,
    from_config,
    redact_tree,
    redact_uri,
    run_name,
)
from pipeline.base import interrupt
from pipeline.base.config import REPO_ROOT, Config, validate
from pipeline.base.io import DataError, resolve, write_text
from pipeline.core import report as report_core
from pipeline.core.labels import labels_of
from pipeline.stages import plan
from pipeline.stages.common import (
    STAMP_KEY,
    Stage,
    check_stamp,
    model_stamp,
    publishing,
    release_memory,
    say,
)


def execute(
    cfg: Any,
    overrides: list[str] | None = None,
    sweep: tuple[str, int] | None = None,
    shared_root: Path | None = None,
) -> Any:
    """Run what ``cfg.stage`` names; logic lives outside ``@hydra.main`` so tests call it.

    The config is validated here, before the output root is taken; the output root
    (``paths.root``) is held for the whole invocation. ``sweep`` (sweep directory, trial number) nests the run under the
    sweep's MLflow run, and leaves registration to the end of the sweep;
    ``shared_root`` is the root a sweep job reads. Returns the run summary, or a single
    command's result.
    """
    validate(cfg)
    tracker = from_config(cfg.tracking)
    command = str(cfg.stage)
    with guarded(cfg, tracker, shared_root) as recovered:
        if recovered:
            say(f"outputs: a killed invocation left work behind; {'; '.join(recovered)}")
        if command != "run" and plan.stage_of(command).single:
            # report alone rebuilds the page; the run summary and config stay
            return run_single(cfg, tracker, plan.stage_of(command), overrides)
        summary = run_pipeline(
            cfg, tracker, plan.stages_for(command, cfg), overrides, register=sweep is None
        )
        if sweep is not None:
            attach_trial(
                tracker, sweep[0], sweep[1], summary.get("mlflow_run_id"), objective(summary)
            )
    return summary


#: where a sweep trial's console goes, in its job folder (the sweep prints one line a trial)
TRIAL_CONSOLE = "console.txt"


def trial_parameters(overrides: Sequence[str]) -> list[str]:
    """A sweep trial's own overrides: neither Hydra's, the sweep's, the paths nor the stage."""
    return [o for o in overrides if not o.startswith(("hydra", "+sweep", "paths.", "stage="))]


def trial_line(num: int, overrides: Sequence[str], summary: Any, console: Path) -> str:
    """A sweep trial in one line: its parameters, objective, out-of-time AUC, console."""

    def auc(split: str) -> str:
        v = summary.get(split, {}).get("auc") if isinstance(summary, dict) else None
        return f"{v:.4f}" if isinstance(v, float) else "-"

    chosen = trial_parameters(overrides)
    return (
        f"trial {num} ({' '.join(chosen) or 'the defaults'}): validation AUC {auc('valid')} "
        f"(the objective), out-of-time AUC {auc('oot')}; its console: {console}"
    )


def ui_hint(uri: str, artifact_root: str) -> str:
    """The command that opens the MLflow UI on a local SQLite store ``uri``.

    ``make ui ROOT=<dir>`` opens ``<dir>/mlflow.db`` with ``<dir>/mlartifacts``, so it is
    named where the store lies there (the store's folder, not ``paths.root``: a sweep's
    job writes its outputs under its own folder but logs to the sweep's store); any
    other store gets the ``mlflow ui`` command itself.
    """
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    home = db.parent
    art = Path(artifact_root.removeprefix("file://")).resolve()
    if db.name == "mlflow.db" and art == home / "mlartifacts":
        return "make ui" if home == REPO_ROOT.resolve() else f"make ui ROOT={home}"
    return f".venv/bin/mlflow ui --backend-store-uri {uri} --default-artifact-root {artifact_root}"


def isolate_job(cfg: Any, job_dir: Path, stages: Sequence[Stage | str]) -> Path:
    """Move a multirun job's outputs into its own folder (the folders its stages write
    follow it); returns the root it reads from."""
    written = {f for s in _stages(stages) for f in s.folders(side=False)}
    return isolate(cfg, job_dir, written)


def objective(summary: dict[str, Any]) -> float | None:
    """What a sweep maximises: validation AUC (never an out-of-time figure)."""
    auc = summary.get("valid", {}).get("auc")
    return float(auc) if isinstance(auc, (int, float)) else None


def _stages(stages: Sequence[Stage | str]) -> list[Stage]:
    return [plan.stage_of(s) if isinstance(s, str) else s for s in stages]


@contextmanager
def _parent_run(
    cfg: Any, tracker: Tracker, stages: list[str], overrides: list[str] | None
) -> Iterator[dict[str, Any]]:
    """Open the invocation's parent run; yields the flat params."""
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
    cfg: Any, tracker: Tracker, stage: Stage | str, overrides: list[str] | None = None
) -> Any:
    """Run one stage that is not part of ``run`` under its own parent MLflow run."""
    (st,) = _stages([stage])
    fn = plan.ALONE.get(st.name, st.run)
    with _parent_run(cfg, tracker, [st.name], overrides) as params:
        with tracker.run(st.name, tags={"stage": st.name, **owner_tags()}):
            tracker.log_params({k: v for k, v in params.items() if k.split(".")[0] in st.groups})
            with publishing(cfg, st.name, st.folders()):
                result = fn(cfg, tracker)
    return replace(result, mlflow_run_id=tracker.parent_run_id)


def run_pipeline(
    cfg: Any,
    tracker: Tracker,
    stages: Sequence[Stage | str],
    overrides: list[str] | None = None,
    register: bool = True,
) -> dict[str, Any]:
    """Run the given stages under one parent MLflow run; returns the summary.

    ``register=False`` (sweep trials) logs the model without offering it to the registry.
    The config is checked first: this is an entry point of its own (the benchmark and
    the tests call it without :func:`execute`), and an unchecked size can exhaust the
    machine's memory before any stage fails.
    """
    validate(cfg)
    todo = _stages(stages)
    results: dict[str, Any] = {}
    cat = Catalog.of(cfg)
    with _parent_run(cfg, tracker, [s.name for s in todo], overrides) as params:
        if not register:
            cfg = _without_registry(cfg)
        tracker.log_params(params)
        resolved = OmegaConf.to_yaml(
            OmegaConf.create(redact_tree(OmegaConf.to_container(cfg, resolve=True)))
        )
        cfg_path = cat.path("resolved_config")
        _log_config(tracker, resolved, cfg_path.name)
        pending = [cfg_path]  # goes out with the invocation's first published outputs

        def publish_config() -> None:
            if pending:
                write_text(resolved, pending.pop())

        def run_stage(stage: Stage) -> None:
            with tracker.run(stage.name, tags={"stage": stage.name, **owner_tags()}):
                interrupt.check()  # a signal dropped in a garbage-collection hook
                tracker.log_params(
                    {k: v for k, v in params.items() if k.split(".")[0] in stage.groups}
                )
                folders = (*stage.folders(), *(("models_dir",) if pending else ()))
                with publishing(cfg, stage.name, folders):
                    publish_config()
                    results[stage.name] = stage.run(cfg, tracker)
                    interrupt.check()
            release_memory()

        for stage in todo:
            if stage.name != "report":
                run_stage(stage)
        with publishing(cfg, "summary", ("models_dir",)):
            publish_config()
            summary = summarize(cfg, results, tracker)
        if "train" in results:
            tracker.log_metrics(flatten_numbers(summary, "summary"))
        if any(s.name == "report" for s in todo):
            # last: the page shows the summary just written
            run_stage(plan.BY_NAME["report"])
            summary["report"] = results["report"].path
            cat.write("summary", summary)
    return summary


def _log_config(tracker: Tracker, text: str, name: str) -> None:
    """Log the resolved config to the parent run (from a scratch copy: the one in the
    models folder is published with the first stage's outputs)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        tracker.log_artifact(path, "config")


def summarize(cfg: Any, results: dict[str, Any], tracker: Tracker) -> dict[str, Any]:
    """Print the run summary and write ``models/summary.json``."""
    p = Catalog.of(cfg)
    summary: dict[str, Any] = {
        "mlflow_run_id": tracker.parent_run_id,
        "tracking_uri": redact_uri(tracker.uri) if tracker.enabled else None,
    }
    # a table run's rows are in its table_features; the features, if there, are a
    # simulator run's
    table_mode = str(cfg.data.kind) == "table"
    feat_name = "table_features" if table_mode else "features"
    feat_path = p.path(feat_name)
    features_current = table_mode or _features_current(p)
    if not features_current:
        say(
            f"summary: {feat_path} was built from another world than {p.raw}; its rows and "
            "the model's figures are left out (make features, make train)"
        )
    if features_current and resolve(feat_path).exists():
        label = p.read(feat_name, ["label"]).column("label").to_numpy()
        summary["n_rows"] = int(len(label))
        summary["closure_rate"] = float(label.mean()) if len(label) else float("nan")
    model_meta = p.path("model_meta")
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
    imp = p.path("shap_importance")
    if meta is not None and resolve(imp).exists():
        importance = json.loads(resolve(imp).read_text())["importance"]
        summary["top_features"] = [f for f, _ in importance[:5]]
    has_model = p.exists("model")
    stamp = model_stamp(p.models) if meta is not None and has_model else None
    if stamp is not None:
        summary[STAMP_KEY] = stamp
    _merge_parts(summary, p, results, stamp)
    summary["outputs"] = {"raw": str(p.raw), "features": str(feat_path), "models": str(p.models)}
    local_store = str(cfg.tracking.uri).startswith("sqlite:")
    summary["ui"] = (
        ui_hint(str(cfg.tracking.uri), str(cfg.tracking.artifact_root))
        if local_store
        else str(summary["tracking_uri"])
    )
    if tracker.enabled:  # the runs page in the headline view, not the GenAI overview
        base = "http://127.0.0.1:5000" if local_store else str(summary["tracking_uri"])
        summary["ui_url"] = tracker.ui_url(base)
    written = p.write("summary", summary)
    tracker.log_artifact(written, "summary")
    if results and set(results) <= DATA_STAGES:
        # generate or features alone (as `make sweep` runs them before its trials): the
        # model's figures are not this invocation's, so one line instead of the block
        run = summary["mlflow_run_id"] or "tracking off"
        say(f"summary: {', '.join(results)} done -> {written} (MLflow run: {run})")
        return summary
    info = meta or {"mode": "table" if table_mode else "simulator", "table": _table_info(cfg)}
    _print_summary(summary, report_core.words(info), labels_of(meta or {}).name)
    return summary


#: the stages that make data only: an invocation of these alone prints a one-line summary
DATA_STAGES = frozenset({"generate", "features"})


def _table_info(cfg: Any) -> dict[str, Any]:
    """What the words of a table run need, from the config (when no model says it)."""
    d = cfg.data
    return {"target": d.target, "positive": d.positive, "time": d.time, "path": d.path}


def _features_current(p: Catalog) -> bool:
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
    summary: dict[str, Any], cat: Catalog, results: dict[str, Any], stamp: str | None
) -> None:
    """Write this invocation's summary parts, then merge every part on disk into ``summary``.

    Parts are kept on disk so that a single-stage invocation still reports what earlier
    stages found. The parts of model-derived stages carry the model's stamp and are merged
    only when it is the current model's: a part left by another model is skipped, with a
    message, never mixed in.
    """
    for stage, result in results.items():
        part = result.summary
        if part:
            if plan.BY_NAME[stage].model_derived and stamp is not None:
                part = {STAMP_KEY: stamp, **part}
            cat.write(f"{stage}_part", part)
    for st in plan.STAGES:
        if not st.in_run:
            continue
        path = cat.path(f"{st.name}_part")
        if not resolve(path).exists():
            continue
        if st.model_derived:
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
            f"AUC on the oracle's rows   : model {o['model_auc']:.4f}, trait oracle "
            f"{o['observable_auc']:.4f}, full-state oracle {o['full_auc']:.4f} "
            f"({o['n_rows']:,} rows, {o.get('futures', '?')} futures per row)"
        )
        if "gap" in o:
            lines.append(
                row(
                    "oracle_gap / _full",
                    f"{o['gap']:.4f} +- {o['gap_se']:.4f} (to the trait oracle) / "
                    f"{o['gap_full']:.4f} +- {o['gap_full_se']:.4f} (to the full-state oracle)"
                    + (
                        f"; Monte Carlo bias of the oracle AUCs at most {o['mc_bias']:.4f}"
                        if "mc_bias" in o
                        else ""
                    ),
                )
            )
    if "fidelity" in s:
        f = s["fidelity"]
        line = (
            f"explanation fidelity       : all {int(f['n']):,} closures top-1 {f['top1']:.2%}, "
            f"top-3 {f['top3']:.2%}"
        )
        pair = f.get("paired")
        if isinstance(pair, dict):
            line += (
                f"; paired, on the {pair['n']:,} closures with oracle futures, top-1 "
                f"{pair['top1']:.2%} +- {pair['top1_se']:.2%} / top-3 {pair['top3']:.2%} "
                f"against the cause ceiling {pair['ceiling_top1']:.2%} +- "
                f"{pair['ceiling_top1_se']:.2%} / {pair['ceiling_top3']:.2%}"
            )
        src = {"cause_model": "the cause model", "shap": "the SHAP-mapped reasons"}
        line += f" (causes ranked by {src.get(str(f.get('source')), 'the SHAP-mapped reasons')}"
        shap_pair = (f.get("shap") or {}).get("paired")
        if isinstance(shap_pair, dict):
            line += f"; the SHAP-mapped reasons there top-1 {shap_pair['top1']:.2%}"
        lines.append(line + ")")
    if "top_features" in s:
        top = ", ".join(name(f) for f in s["top_features"])
        lines.append(row("top features (mean |SHAP|)", top))
    lines += [
        f"outputs                    : {s['outputs']['raw']}, {s['outputs']['features']}, {s['outputs']['models']}",
        f"MLflow run                 : {s.get('mlflow_run_id') or '(tracking off)'}",
        "open the UI                : "
        + (
            f"{s['ui']}   (then {s.get('ui_url') or 'the runs page it prints'})"
            if str(s.get("ui", "")).startswith("make ui")
            else str(s.get("ui_url") or s.get("ui"))
        ),
        "",
    ]
    say("\n".join(lines))
