"""Runs never mix: one invocation per output root, sweep jobs in folders of their own,
only a sweep's best trial registered, and model-derived outputs checked against the
model they claim to be of."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import TINY, compose_config
from mlflow.tracking import MlflowClient

from pipeline.adapters.runlock import LOCK_NAME, RootBusy, hold_root, holder_record
from pipeline.adapters.tracking import from_config
from pipeline.base.config import REPO_ROOT, ConfigError, validate
from pipeline.base.io import DataError
from pipeline.stages.common import STAMP_KEY, check_stamp, model_stamp, stamped


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- the lock


def test_second_holder_fails_at_once_naming_the_first(tmp_path):
    with hold_root(tmp_path):
        rec = json.loads((tmp_path / LOCK_NAME).read_text())
        assert rec["pid"] == os.getpid()
        with pytest.raises(RootBusy) as err:
            with hold_root(tmp_path, "fail"):
                pytest.fail("a second exclusive holder got the lock")
    msg = str(err.value)
    assert f"PID {os.getpid()}" in msg and str(tmp_path) in msg and "lock=fail" in msg
    # released: the root is free again, and the file no longer names a holder
    with hold_root(tmp_path, "fail"):
        pass
    assert (tmp_path / LOCK_NAME).read_text() == ""


def test_second_holder_waits_and_says_for_whom(tmp_path):
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with hold_root(tmp_path):
            held.set()
            release.wait(10)

    t = threading.Thread(target=first)
    t.start()
    held.wait(10)
    said: list[str] = []
    threading.Timer(1.0, release.set).start()
    start = time.monotonic()
    with hold_root(tmp_path, "wait", say=said.append):
        waited = time.monotonic() - start
    t.join()
    assert waited >= 0.9, waited
    assert said and said[0].startswith(f"waiting for {tmp_path}")
    assert f"PID {os.getpid()}" in said[0] and "python" in said[0]


def test_shared_holders_coexist_and_keep_an_exclusive_one_out(tmp_path):
    with hold_root(tmp_path, shared=True), hold_root(tmp_path, "fail", shared=True):
        with pytest.raises(RootBusy, match="sweep job"):
            with hold_root(tmp_path, "fail"):
                pass


def test_lock_file_never_holds_a_secret(monkeypatch):
    monkeypatch.setattr(
        sys, "argv", ["pipeline", "run", "tracking.uri=http://me:hunter2pw@127.0.0.1:5050"]
    )
    rec = holder_record()
    assert "hunter2pw" not in json.dumps(rec) and "me:***@" in str(rec["command"])


def test_lock_file_names_the_command_as_typed(monkeypatch, tmp_path):
    from pipeline.adapters import runlock

    monkeypatch.setattr(runlock, "COMMAND", ["python -m pipeline", "run", "data.seed=2"])
    with hold_root(tmp_path):
        rec = json.loads((tmp_path / LOCK_NAME).read_text())
    assert rec["command"] == "python -m pipeline run data.seed=2"


def test_lock_mode_is_checked(tmp_path):
    cfg = compose_config(tmp_path, ["lock=fail"])
    validate(cfg)
    cfg = compose_config(tmp_path, ["lock=sometimes"])
    with pytest.raises(ConfigError, match="'lock'.*wait, fail"):
        validate(cfg)


@pytest.mark.slow
def test_cli_with_lock_fail_refuses_a_held_root(tmp_path):
    with hold_root(tmp_path):
        r = _cli("generate", f"paths.root={tmp_path}", "lock=fail", "tracking=off", *TINY)
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"in use by PID {os.getpid()}" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- multirun jobs


def test_multirun_job_writes_in_its_own_folder_and_reads_the_shared_one(tmp_path):
    from pipeline.stages.driver import isolate_job

    cfg = compose_config(tmp_path, ["stage=train"])
    job = tmp_path / "outputs" / "multirun" / "x" / "3"
    base = isolate_job(cfg, job, ["train"])
    assert base == tmp_path
    assert Path(cfg.paths.models_dir) == job / "models"
    assert Path(cfg.paths.processed_dir) == tmp_path / "data" / "processed"
    assert Path(cfg.paths.raw_dir) == tmp_path / "data" / "raw"
    assert str(cfg.tracking.uri) == f"sqlite:///{tmp_path}/mlflow.db"
    # a job that generates its own world keeps all of it in its folder
    cfg = compose_config(tmp_path, ["stage=run"])
    isolate_job(cfg, job, ["generate", "features", "train"])
    assert Path(cfg.paths.raw_dir) == job / "data" / "raw"
    assert Path(cfg.paths.processed_dir) == job / "data" / "processed"
    assert str(cfg.tracking.uri) == f"sqlite:///{tmp_path}/mlflow.db"


@pytest.mark.slow
def test_sweep_registers_only_its_best_trial(tmp_path):
    from pipeline.stages.driver import run_pipeline

    cfg = compose_config(tmp_path, [*TINY, "tracking=off"])
    run_pipeline(cfg, from_config(cfg.tracking), ["generate", "features"])
    r = _cli(
        "train",
        "--multirun",
        "model.num_leaves=4,31",
        f"paths.root={tmp_path}",
        *TINY,
        "model.baselines=false",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-5000:]
    db = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(db, registry_uri=db)
    exp = client.get_experiment_by_name("closure-risk")
    runs = client.search_runs([exp.experiment_id])
    trials = [x for x in runs if x.data.tags.get("sweep_trial") is not None]
    assert len(trials) == 2 and all(x.info.status == "FINISHED" for x in trials)
    best = max(trials, key=lambda x: x.data.metrics["sweep.objective"])
    trains = {x.data.tags["mlflow.parentRunId"]: x for x in runs if x.data.tags.get("stage")}
    versions = client.search_model_versions("name='closure-risk-lgbm'")
    assert [v.run_id for v in versions] == [trains[best.info.run_id].info.run_id]
    assert str(client.get_model_version_by_alias("closure-risk-lgbm", "champion").version) == "1"
    serving = client.search_model_versions("name='closure-risk-lgbm-serving'")
    assert len(serving) == 1
    assert "sweep best trial" in r.stdout
    # it ends with the winning parameters and the command that trains with them
    leaves = best.data.tags["overrides"].split("model.num_leaves=")[1].split()[0]
    assert f"best parameters: model.num_leaves={leaves}" in r.stdout
    assert f'train with them: make train ARGS="model.num_leaves={leaves}' in r.stdout
    # ...where the sweep read its data, and every trial's UI hint opens the sweep's store
    train_line = next(x for x in r.stdout.splitlines() if x.startswith("train with them"))
    assert train_line.endswith(f'paths.root={tmp_path}"'), train_line
    ui = [x for x in r.stdout.splitlines() if x.startswith("open the UI")]
    assert ui == [f"open the UI: make ui ROOT={tmp_path.resolve()}"], ui
    # a calm console: one line a trial, one summary; each trial's console in its folder,
    # Optuna's, the launcher's and MLflow's own lines in the sweep's log file
    trials = [x for x in r.stdout.splitlines() if x.startswith("trial ")]
    assert len(trials) == 2 and all("validation AUC 0." in x for x in trials), trials
    assert "run summary ===" not in r.stdout
    assert "\x1b[" not in r.stderr + r.stdout and "Successfully registered" not in r.stderr
    assert "Joblib.Parallel" not in r.stdout + r.stderr
    consoles = sorted((tmp_path / "outputs" / "multirun").rglob("console.txt"))
    assert len(consoles) == 2 and all("run summary ===" in c.read_text() for c in consoles)
    logs = (tmp_path / "outputs" / "multirun").rglob("pipeline.log")
    assert any("registered model" in x.read_text().lower() for x in logs)
    # each job trained into its own folder; nothing was written to the shared models folder
    models = sorted((tmp_path / "outputs" / "multirun").rglob("models/model.txt"))
    assert len(models) == 2 and models[0].read_text() != models[1].read_text()
    assert not (tmp_path / "models" / "model.txt").exists()


# --------------------------------------------------------------------------- model stamps


def test_stale_part_of_another_model_is_refused(tmp_path, capsys):
    from pipeline.stages.driver import run_pipeline, summarize

    common = [*TINY, "tracking=off"]
    cfg_a = compose_config(tmp_path, [*common, f"paths.models_dir={tmp_path}/models_a"])
    run_pipeline(cfg_a, from_config(cfg_a.tracking), ["generate", "features", "train", "explain"])
    cfg_b = compose_config(
        tmp_path, [*common, f"paths.models_dir={tmp_path}/models_b", "model.num_leaves=4"]
    )
    tracker_b = from_config(cfg_b.tracking)
    run_pipeline(cfg_b, tracker_b, ["train", "explain"])
    a, b = tmp_path / "models_a", tmp_path / "models_b"
    stamp_a, stamp_b = model_stamp(a), model_stamp(b)
    assert stamp_a != stamp_b
    for part in ("train", "explain"):
        check_stamp(a / "summary_parts" / f"{part}.json", stamp_a)
        check_stamp(b / "summary_parts" / f"{part}.json", stamp_b)
    own = json.loads((b / "summary_parts" / "explain.json").read_text())
    # the other model's explanation slipped into this model's folder
    shutil.copy(a / "summary_parts" / "explain.json", b / "summary_parts" / "explain.json")
    stale = b / "summary_parts" / "explain.json"
    with pytest.raises(DataError) as err:
        check_stamp(stale, stamp_b)
    msg = str(err.value)
    assert str(stale) in msg and stamp_a[:12] in msg and stamp_b[:12] in msg
    assert "another model" in msg
    capsys.readouterr()
    summary = summarize(cfg_b, {}, tracker_b)
    out = capsys.readouterr().out
    assert f"summary: skipped {stale}" in out
    assert summary[STAMP_KEY] == stamp_b
    assert "fidelity" not in summary and "valid" in summary
    # its own part is merged again once it is back
    (b / "summary_parts" / "explain.json").write_text(json.dumps(own))
    assert summarize(cfg_b, {}, tracker_b)["fidelity"] == own["fidelity"]


def test_outputs_without_a_stamp_are_refused(tmp_path):
    path = tmp_path / "fidelity.json"
    path.write_text(json.dumps({"top1": 0.5}))
    with pytest.raises(DataError, match="carries no model stamp"):
        check_stamp(path, "ab" * 32)
    path.write_text(json.dumps(stamped({"top1": 0.5}, "ab" * 32)))
    check_stamp(path, "ab" * 32)
    with pytest.raises(DataError, match="not readable JSON"):
        (tmp_path / "broken.json").write_text("{")
        check_stamp(tmp_path / "broken.json", "ab" * 32)
    with pytest.raises(DataError, match="run `make train` first"):
        model_stamp(tmp_path)


def test_stages_print_no_figures_of_a_model_trained_on_other_data(tmp_path, capsys):
    from helpers import run_world

    off = ["tracking.enabled=false", "model.baselines=false", "model.n_estimators=40"]
    for stage in ("generate", "features", "train"):
        run_world(tmp_path, [*off, "data.seed=1"], stage)
    trained = json.loads((tmp_path / "models" / "summary.json").read_text())
    assert "auc" in trained["oot"]
    capsys.readouterr()
    # a new world: the old model's figures no longer describe the data on disk
    for stage in ("generate", "features"):
        _, summary = run_world(tmp_path, [*off, "data.seed=2"], stage)
        printed = capsys.readouterr().out
        assert "oot" not in summary and "valid" not in summary, stage
        assert "AUC valid" not in printed and f"summary: {stage} done" in printed, stage
        assert "figures are left out" in printed, stage
    _, summary = run_world(tmp_path, [*off, "data.seed=2"], "train")
    assert summary["oot"]["auc"] != trained["oot"]["auc"]


def test_the_data_stages_a_sweep_runs_first_print_one_line_each(tmp_path):
    """`make sweep` runs generate and features before its trials: each says what it did
    in its own line and one summary line, not a run summary of dashes (the sweep prints
    the one summary)."""
    args = [*TINY, "tracking=off", f"paths.root={tmp_path}"]
    for stage in ("generate", "features"):
        r = subprocess.run(
            [sys.executable, "-m", "pipeline", stage, *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        assert "run summary ===" not in r.stdout and "open the UI" not in r.stdout, r.stdout
        lines = r.stdout.strip().splitlines()
        summary = [x for x in lines if x.startswith("summary: ")]
        assert summary == [
            f"summary: {stage} done -> {tmp_path / 'models' / 'summary.json'} "
            "(MLflow run: tracking off)"
        ], lines
        # the summary file is still written, with the outputs
        written = json.loads((tmp_path / "models" / "summary.json").read_text())
        assert written["outputs"]["raw"] == str(tmp_path / "data" / "raw")
        assert len(lines) <= 4, lines  # the stage's own lines and the summary line
