"""The MLflow model registry: registered names, the champion alias, sweep runs.

Every call that may legitimately find nothing (no alias yet, no version for a run)
catches exactly MLflow's "resource does not exist" error; any other fault (a store
that cannot be reached, a permission error) propagates with its own message, so it is
never mistaken for "no champion yet".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.lightgbm
import numpy as np
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from pipeline.adapters.catalog import ENTRIES, parse_calibrator, scoring_model
from pipeline.adapters.serving import SERVING_SUFFIX
from pipeline.adapters.tracking import Tracker, _retry, headline_figures, tag_model_version
from pipeline.base.config import Config, dataset_name
from pipeline.base.io import note_undo
from pipeline.core.evaluation import delong
from pipeline.core.scoring import ScoringModel

_MISSING = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)
_INVALID = ErrorCode.Name(INVALID_PARAMETER_VALUE)
#: Run tag holding the digest of the data a model was trained on (its feature table).
DATA_DIGEST_TAG = "data_digest"
#: The artifact folder of a training run that holds the model's metadata files.
META_FOLDER = "model_meta"
#: The metric on a sweep trial's run that the sweep maximised.
OBJECTIVE_METRIC = "sweep.objective"
#: The one-sided level of the promotion test when the configuration gives none.
PROMOTE_ALPHA = 0.05

#: The labels of the challenger's evaluation rows, its scores and the holder's there.
Paired = tuple[np.ndarray, np.ndarray, np.ndarray]
#: ``rescore(booster, feature_names)``: :data:`Paired` for the holder's booster, or None
#: when its features differ from the challenger's.
Rescore = Callable[[Any, list[str]], Paired | None]


def paired_auc_test(y: np.ndarray, challenger: np.ndarray, holder: np.ndarray) -> dict[str, float]:
    """One-sided paired DeLong test that the challenger's AUC beats the holder's on the
    same rows: both AUCs, their difference, its standard error and the p-value of
    "no better" (the normal tail above ``difference / se``)."""
    from scipy.stats import norm

    auc, cov = delong(y, [challenger, holder])
    diff = float(auc[0] - auc[1])
    se = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    if se > 0:
        p = float(norm.sf(diff / se))
    else:  # the two rank the rows alike: no evidence either way unless the AUCs differ
        p = 0.0 if diff > 0 else 1.0
    return {
        "auc": float(auc[0]),
        "previous_auc": float(auc[1]),
        "difference": diff,
        "se": se,
        "p_value": p,
    }


def _is_missing(exc: MlflowException) -> bool:
    """Whether MLflow says the name or alias does not exist (and nothing else went wrong).

    A missing model name is RESOURCE_DOES_NOT_EXIST; the SQL store reports an unset alias
    on an existing name as INVALID_PARAMETER_VALUE "Registered model alias ... not found".
    """
    code = str(exc.error_code)
    if code == _MISSING:
        return True
    msg = exc.message.lower()
    return code == _INVALID and "alias" in msg and "not found" in msg


def registered_name(cfg: Config) -> str | None:
    """Simulator models share one registry entry; each bring-your-own table gets its own,
    under the table's clean name (:func:`~pipeline.base.config.dataset_name`, e.g.
    ``german``), in the registry of its own run folder."""
    base = str(cfg.tracking.registered_model)
    if not base:
        return None
    if cfg.data.kind == "table":
        return dataset_name(cfg.data.name, cfg.data.path)
    return base


def alias_note(name: str, alias: str, holder: Any | None) -> dict[str, Any]:
    """What :func:`restore_alias` needs to put ``name@alias`` back on ``holder``."""
    return {
        "name": name,
        "alias": alias,
        "previous": None if holder is None else int(holder.version),
    }


def restore_alias(tracker: Tracker, note: dict[str, Any]) -> str:
    """Put an alias back where it was before a stage that never published moved it."""
    name, alias, previous = str(note["name"]), str(note["alias"]), note.get("previous")
    if not tracker.enabled:
        return (
            f"'{alias}' of {name} was moved by a stage that never published; tracking is off "
            "in this invocation, so it was not restored (run with tracking on to restore it)"
        )
    client = tracker.client
    if previous is None:
        with contextlib.suppress(MlflowException):  # already gone
            _retry(lambda: client.delete_registered_model_alias(name, alias))
        return f"removed '{alias}' of {name} (set by a stage that never published)"
    _retry(lambda: client.set_registered_model_alias(name, alias, str(previous)))
    return f"restored '{alias}' of {name} to v{previous} (moved by a stage that never published)"


def alias_holder(tracker: Tracker, name: str, alias: str) -> Any | None:
    """The model version behind ``name@alias``, or None when the alias is not set."""
    client = tracker.client
    try:
        return _retry(lambda: client.get_model_version_by_alias(name, alias))
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise


def load_champion(tracker: Tracker, name: str, alias: str, models_dir: Path) -> ScoringModel | None:
    """The model version behind ``name@alias`` with its run's calibration; None if no alias."""
    if not tracker.enabled or not name:
        return None
    version = alias_holder(tracker, name, alias)
    if version is None:
        return None
    booster = mlflow.lightgbm.load_model(f"models:/{name}@{alias}")
    logged = {Path(a.path).name for a in tracker.client.list_artifacts(version.run_id, META_FOLDER)}
    needed = (ENTRIES["model_meta"].relpath, ENTRIES["calibration"].relpath)
    lacking = [f for f in needed if f not in logged]
    if lacking:
        raise MlflowException(
            f"registry models:/{name}@{alias} (v{version.version}): its run {version.run_id} "
            f"has no {', '.join(META_FOLDER + '/' + f for f in lacking)}; retrain to register "
            "a complete version"
        )
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=META_FOLDER, dst_path=tmp
            )
        )
        meta = json.loads((local / needed[0]).read_text())
        cal = parse_calibrator(local / needed[1])
    return scoring_model(
        booster,
        meta,
        cal,
        f"registry models:/{name}@{alias} (v{version.version})",
        models_dir / ENTRIES["cause_weights"].relpath,
    )


def promote_champion(
    tracker: Tracker,
    name: str,
    alias: str,
    oot_auc: float,
    run_id: str | None = None,
    rescore: Rescore | None = None,
    split: str = "out-of-time",
    alpha: float = PROMOTE_ALPHA,
) -> dict[str, Any]:
    """Point ``alias`` at a run's model version if its out-of-time AUC beats the holder's
    by a one-sided paired DeLong test at level ``alpha``.

    ``split`` names the evaluation rows in the messages: a table run's are its
    "hold-out" unless they are split off by time.

    The run is ``run_id``, or the tracker's current run. Both models are judged on the
    same rows: ``rescore(booster, feature_names)`` scores the holder on the challenger's
    out-of-time rows and returns the labels and both models' scores there (None when the
    holder's features differ); the alias moves only when the test's p-value is below
    ``alpha``, so a difference within the noise of the rows keeps the holder. When the
    holder cannot be re-scored (no ``rescore``, as on the Dask engine, or other
    features) there is no paired test: the holder's own logged ``oot.auc`` is used only
    if both runs saw the same data (equal ``data_digest`` tags), and the alias moves
    when the challenger's figure is higher; otherwise the two figures come from
    different worlds and the alias moves to the newer model. The message says which.
    ``info["compared_on"]`` records which comparison was made; a paired test adds
    ``auc_difference``, ``auc_difference_se``, ``p_value`` and ``alpha``.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"promote_champion: alpha must lie in (0, 1), got {alpha}")
    client = tracker.client
    run_id = run_id or tracker.run_id
    versions = _retry(lambda: client.search_model_versions(f"name='{name}' and run_id='{run_id}'"))
    if not versions:
        return {"promoted": False, "reason": "no registered version for this run"}
    mine = max(versions, key=lambda v: int(v.version))
    current = alias_holder(tracker, name, alias)
    info: dict[str, Any] = {
        "name": name,
        "alias": alias,
        "version": int(mine.version),
        "oot_auc": oot_auc,
    }
    champ_auc, test = None, None
    if current is not None:
        champ_auc, info["compared_on"], test = _holder_auc(
            tracker, name, alias, current, run_id, rescore, split
        )
        info.update(previous_version=int(current.version), previous_oot_auc=champ_auc)
    if current is None or champ_auc is None:
        promote = True
    elif test is not None:
        promote = test["p_value"] < alpha
        info.update(
            auc_difference=test["difference"],
            auc_difference_se=test["se"],
            p_value=test["p_value"],
            alpha=alpha,
        )
    else:
        promote = oot_auc > champ_auc
    if promote:
        note_undo("alias", alias_note(name, alias, current))
        _retry(lambda: client.set_registered_model_alias(name, alias, str(mine.version)))
    info["promoted"] = bool(promote)
    info["champion_version"] = int((mine if promote or current is None else current).version)
    if current is None:
        info["message"] = (
            f"registry: {name} v{mine.version} ({split} AUC {oot_auc:.4f}) is the first '{alias}'"
        )
        return info
    verdict = "moves to it" if promote else "stays"
    prev = f"{champ_auc:.4f}" if champ_auc is not None else "not comparable"
    head = (
        f"registry: {name} v{mine.version} {split} AUC {oot_auc:.4f} vs '{alias}' "
        f"v{current.version} {prev} ({info['compared_on']})"
    )
    if test is not None:
        sign = "<" if promote else ">="
        info["message"] = (
            f"{head}: difference {test['difference']:+.4f}, standard error {test['se']:.4f}, "
            f"one-sided paired DeLong p = {test['p_value']:.3g} {sign} {alpha:g} "
            f"-> '{alias}' {verdict}"
        )
    else:
        info["message"] = (
            f"{head}; no paired test (the holder was not re-scored) -> '{alias}' {verdict}"
        )
    return info


def _holder_auc(
    tracker: Tracker,
    name: str,
    alias: str,
    current: Any,
    run_id: str | None,
    rescore: Rescore | None,
    split: str = "out-of-time",
) -> tuple[float | None, str, dict[str, float] | None]:
    """The alias holder's AUC to compare with, on what it was measured, and the paired
    test when both models were scored on the same rows (None otherwise)."""
    client = tracker.client
    if rescore is not None:
        booster = mlflow.lightgbm.load_model(f"models:/{name}/{current.version}")
        paired = rescore(booster, list(booster.feature_name()))
        if paired is not None:
            test = paired_auc_test(*paired)
            return test["previous_auc"], f"both scored on this run's {split} rows", test
    if not current.run_id:
        return None, "holder has no run", None
    holder = _retry(lambda: client.get_run(current.run_id))
    mine = _retry(lambda: client.get_run(run_id)) if run_id else None
    theirs_digest = holder.data.tags.get(DATA_DIGEST_TAG)
    mine_digest = mine.data.tags.get(DATA_DIGEST_TAG) if mine is not None else None
    if theirs_digest and theirs_digest == mine_digest:
        return (
            holder.data.metrics.get("oot.auc"),
            "same data, the holder's logged figure",
            None,
        )
    return (
        None,
        "different data and features: not comparable, the newer model takes the alias",
        None,
    )


# --------------------------------------------------------------------------- sweeps


def sweep_parent(tracker: Tracker, sweep_dir: str) -> str | None:
    """The one MLflow run that groups every trial of a sweep, made by the first trial.

    Trials may run in parallel processes; a lock file in the sweep directory makes sure
    only one of them creates the run, the others find it by its ``sweep_dir`` and
    ``sweep_role`` tags.
    """
    if not tracker.enabled:
        return None
    client = tracker.client
    exp_id = client.get_experiment_by_name(tracker.experiment).experiment_id
    lock = Path(sweep_dir) / ".mlflow_sweep.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            found = _retry(
                lambda: client.search_runs(
                    [exp_id],
                    filter_string=f"tags.sweep_dir = '{sweep_dir}' and tags.sweep_role = 'parent'",
                    max_results=1,
                )
            )
            if found:
                return str(found[0].info.run_id)
            name = f"sweep {Path(sweep_dir).name}"
            run = _retry(
                lambda: client.create_run(
                    exp_id,
                    tags={"mlflow.runName": name, "sweep_dir": sweep_dir, "sweep_role": "parent"},
                    run_name=name,
                )
            )
            return str(run.info.run_id)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def attach_trial(
    tracker: Tracker, sweep_dir: str, trial: int, run_id: str | None, objective: float | None
) -> None:
    """Nest a finished trial's pipeline run under the sweep run and update the best score."""
    parent = sweep_parent(tracker, sweep_dir)
    if parent is None or run_id is None:
        return
    client = tracker.client
    _retry(
        lambda: client.log_batch(
            run_id,
            tags=[
                RunTag("mlflow.parentRunId", parent),
                RunTag("sweep_dir", sweep_dir),
                RunTag("sweep_trial", str(trial)),
            ],
        )
    )
    if objective is not None and np.isfinite(objective):
        now = int(time.time() * 1000)
        _retry(
            lambda: client.log_batch(
                parent, metrics=[Metric("trial.valid.auc", float(objective), now, int(trial))]
            )
        )
        _retry(
            lambda: client.log_batch(
                run_id, metrics=[Metric(OBJECTIVE_METRIC, float(objective), now, 0)]
            )
        )
    _retry(lambda: client.set_terminated(parent, status="FINISHED"))


def _find_sweep_parent(tracker: Tracker, exp_id: str, sweep_dir: str) -> str | None:
    client = tracker.client
    found = _retry(
        lambda: client.search_runs(
            [exp_id],
            filter_string=f"tags.sweep_dir = '{sweep_dir}' and tags.sweep_role = 'parent'",
            max_results=1,
        )
    )
    return str(found[0].info.run_id) if found else None


def best_trial(tracker: Tracker, sweep_dir: str) -> tuple[str, str, Any] | None:
    """The sweep run, the best trial's run and that trial's train-stage run, or None.

    Best is the highest objective the trials reported; trials without one (failed
    before training) are never chosen.
    """
    client = tracker.client
    exp_id = client.get_experiment_by_name(tracker.experiment).experiment_id
    parent = _find_sweep_parent(tracker, exp_id, sweep_dir)
    if parent is None:
        return None
    trials = _retry(
        lambda: client.search_runs(
            [exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=5000
        )
    )
    scored = [
        (float(r.data.metrics[OBJECTIVE_METRIC]), r.info.run_id)
        for r in trials
        if np.isfinite(r.data.metrics.get(OBJECTIVE_METRIC, np.nan))
    ]
    if not scored:
        return None
    _, best = max(scored, key=lambda t: (t[0], t[1]))
    stage_runs = _retry(
        lambda: client.search_runs(
            [exp_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{best}' and tags.stage = 'train'",
            max_results=1,
        )
    )
    if not stage_runs:
        return None
    return parent, best, stage_runs[0]


def register_best_trial(
    tracker: Tracker, sweep_dir: str, name: str, alias: str
) -> dict[str, Any] | None:
    """Offer the sweep's best trial (and its serving pyfunc) to the registry, once.

    Trials log their models without registering them; this registers the best one's and
    judges it for champion exactly as a single training run is judged. None when the
    sweep has no finished trial.
    """
    found = best_trial(tracker, sweep_dir)
    if found is None:
        return None
    parent, trial_run, train_run = found
    client = tracker.client
    train_id = train_run.info.run_id
    logged = _retry(
        lambda: client.search_logged_models(
            experiment_ids=[train_run.info.experiment_id],
            filter_string=f"source_run_id = '{train_id}'",
        )
    )
    by_name = {m.name: m for m in logged}
    if "model" not in by_name:
        return None
    version = mlflow.register_model(f"models:/{by_name['model'].model_id}", name)
    trial = _retry(lambda: client.get_run(trial_run))
    figures = headline_figures(trial.data.metrics)
    tag_model_version(client, name, version.version, figures, trial.info.run_name or "")
    info: dict[str, Any] = {"trial_run": trial_run, "version": int(version.version)}
    oot_auc = train_run.data.metrics.get("oot.auc")
    if oot_auc is not None:
        info.update(promote_champion(tracker, name, alias, float(oot_auc), run_id=train_id))
    else:
        info["message"] = f"registry: {name} v{version.version} (no out-of-time rows to judge it)"
    if "serving" in by_name:
        serving_name = f"{name}{SERVING_SUFFIX}"
        sv = mlflow.register_model(f"models:/{by_name['serving'].model_id}", serving_name)
        tag_model_version(client, serving_name, sv.version, figures, trial.info.run_name or "")
        if info.get("promoted"):
            _retry(lambda: client.set_registered_model_alias(serving_name, alias, str(sv.version)))
    _retry(
        lambda: client.log_batch(
            parent,
            tags=[
                RunTag("best_trial_run", trial_run),
                RunTag("registered_version", str(version.version)),
            ],
        )
    )
    return info
