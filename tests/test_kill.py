"""Kill safety: SIGTERM ends an invocation's MLflow runs as KILLED; after a SIGKILL, the
next invocation ends the runs the dead process left RUNNING as FAILED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import TINY, compose_config
from mlflow.tracking import MlflowClient

from pipeline.adapters.runlock import hold_root
from pipeline.adapters.runstate import (
    ENDED_TAG,
    PID_TAG,
    owner_tags,
    process_alive,
    process_start,
)
from pipeline.base.config import REPO_ROOT
from pipeline.base.io import STAGING_DIR

pytestmark = pytest.mark.slow


def _start_run(root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", f"paths.root={root}", *TINY],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(proc: subprocess.Popen[str], prefix: str) -> None:
    """Read the child's output until a line starts with ``prefix`` (a stage has finished)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return
    proc.wait(30)
    stderr = proc.stderr.read() if proc.stderr else ""
    pytest.fail(f"no '{prefix}' line; stdout {''.join(seen)[-2000:]} stderr {stderr[-3000:]}")


def _runs_of(root: Path, pid: int) -> tuple[list[Any], list[Any]]:
    """The runs the process ``pid`` opened: (parent runs, their nested runs)."""
    db = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(db)
    exp = client.get_experiment_by_name("closure-risk")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get(PID_TAG) == str(pid) and "stages" in r.data.tags]
    ids = {r.info.run_id for r in parents}
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in ids]
    return parents, nested


def test_owner_tags_name_this_process():
    tags = owner_tags()
    assert tags[PID_TAG] == str(os.getpid()) and tags["pid_start"] == process_start(os.getpid())
    assert process_alive(os.getpid(), tags["pid_start"])
    # the same PID with another start time is another process (a reused PID)
    assert not process_alive(os.getpid(), str(int(tags["pid_start"]) + 1))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_end_the_runs_as_killed(tmp_path, sig):
    proc = _start_run(tmp_path)
    # the train stage's first line (its scorecard) comes while the stage still fits the
    # model: a signal then finds a stage running; right after "features:" it could land
    # between two stages, where no nested run is open to be killed
    _wait_for_line(proc, "train:")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert f"interrupted ({sig.name})" in err and "Traceback" not in err
    parents, nested = _runs_of(tmp_path, proc.pid)
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert sig.name in parents[0].data.tags[ENDED_TAG]
    statuses = {r.data.tags.get("mlflow.runName"): r.info.status for r in nested}
    # a stage that had finished stays FINISHED; the one running was killed
    assert statuses["generate"] == "FINISHED"
    assert "KILLED" in statuses.values() and "RUNNING" not in statuses.values()
    with hold_root(tmp_path, "fail"):  # and the output root is free again
        pass


def test_runs_left_running_by_sigkill_are_failed_by_the_next_invocation(tmp_path):
    from pipeline.stages.driver import execute

    proc = _start_run(tmp_path)
    _wait_for_line(proc, "features:")
    proc.kill()
    proc.communicate(timeout=60)
    parents, nested = _runs_of(tmp_path, proc.pid)
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"
    left = [r.info.run_id for r in nested if r.info.status == "RUNNING"]
    assert left  # the stage that was running when the process died
    with hold_root(tmp_path, "fail"):  # the kernel released the dead holder's lock
        pass
    deadline = time.monotonic() + 10
    while process_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    cfg = compose_config(tmp_path, TINY, stage="generate")
    execute(cfg, [])
    # whatever the dead process had staged or was publishing is settled
    assert not any((tmp_path / STAGING_DIR).iterdir())
    assert not (tmp_path / "models" / "model.txt").exists() or all(
        (tmp_path / "models" / name).exists() for name in ("model.json", "evaluation.json")
    )
    parents, nested = _runs_of(tmp_path, proc.pid)
    assert parents[0].info.status == "FAILED"
    assert "no longer exists" in parents[0].data.tags[ENDED_TAG]
    by_id = {r.info.run_id: r for r in nested}
    assert all(by_id[i].info.status == "FAILED" for i in left)
    assert all(r.info.status != "RUNNING" for r in nested)


def test_a_signal_dropped_on_its_way_is_raised_at_the_next_check():
    from pipeline.base import interrupt

    interrupt.watch(lambda: ["run-a"])
    try:
        # what Python does to an exception raised in a garbage-collection callback
        try:
            interrupt.interrupt(signal.SIGTERM)
        except interrupt.Interrupted:
            pass
        with pytest.raises(interrupt.Interrupted) as caught:
            interrupt.check()
        assert caught.value.signal_name == "SIGTERM" and caught.value.run_ids == ["run-a"]
    finally:
        interrupt.clear()
        interrupt.watch(lambda: [])
    interrupt.check()  # nothing pending: no exception


def test_a_dropped_signal_is_not_printed_as_an_error(capsys):
    from pipeline.base import interrupt

    interrupt.watch(lambda: [])

    class Dropping:
        def __del__(self) -> None:
            interrupt.interrupt(signal.SIGINT)  # raised where Python can only drop it

    try:
        Dropping()
        assert "Traceback" not in capsys.readouterr().err
        with pytest.raises(interrupt.Interrupted):
            interrupt.check()
    finally:
        interrupt.clear()
