"""MLflow runs of processes that were interrupted or died.

Every run an invocation opens carries its host, PID and the PID's start time as tags.
An interrupted invocation (SIGINT, SIGTERM) ends its open runs as KILLED; one that was
killed outright (SIGKILL, a crash of the machine's memory manager) cannot, so the next
invocation on this host ends as FAILED every run still RUNNING whose process no longer
exists. The PID's start time tells a dead process from a new one that reused its PID.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from typing import Any

from pipeline.adapters.tracking import Tracker, _retry
from pipeline.base.io import pid_alive

HOST_TAG = "host"
PID_TAG = "pid"
PID_START_TAG = "pid_start"
ENDED_TAG = "ended_by"


def process_start(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot), or '' where /proc cannot tell."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - one short read
    except OSError:
        return ""
    # the command name (field 2) may hold spaces: count fields after its closing ')'
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_tags() -> dict[str, str]:
    """The tags that name this process as the owner of a run."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: process_start(pid)}


def process_alive(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` exists and, when ``start`` is known, is the same process."""
    if not pid_alive(pid):
        return False
    return not start or process_start(pid) in ("", start)


def _experiment_id(tracker: Tracker) -> str | None:
    exp = _retry(lambda: tracker.client.get_experiment_by_name(tracker.experiment))
    return None if exp is None else str(exp.experiment_id)


def _running(tracker: Tracker, exp_id: str, extra: str) -> list[Any]:
    flt = f"attributes.status = 'RUNNING' and {extra}"
    return list(
        _retry(lambda: tracker.client.search_runs([exp_id], filter_string=flt, max_results=5000))
    )


def reap_orphans(tracker: Tracker) -> list[str]:
    """End as FAILED the RUNNING runs of dead processes on this host; returns their ids.

    The nested runs of such a run (stages, baselines) are ended with it, whether or not
    they carry owner tags themselves.
    """
    if not tracker.enabled:
        return []
    exp_id = _experiment_id(tracker)
    if exp_id is None:
        return []
    host = socket.gethostname().replace("'", "")
    orphans = []
    for run in _running(tracker, exp_id, f"tags.{HOST_TAG} = '{host}'"):
        tags = run.data.tags
        try:
            pid = int(tags.get(PID_TAG, ""))
        except ValueError:
            continue
        if not process_alive(pid, tags.get(PID_START_TAG, "")):
            orphans.append(run.info.run_id)
    ended: list[str] = []
    queue = list(orphans)
    while queue:
        run_id = queue.pop()
        if run_id in ended:
            continue
        _end(tracker, run_id, "FAILED", "a later invocation: its process no longer exists")
        ended.append(run_id)
        queue += [
            r.info.run_id
            for r in _running(tracker, exp_id, f"tags.`mlflow.parentRunId` = '{run_id}'")
        ]
    return ended


def mark_killed(tracker: Tracker, run_ids: Iterable[str], signal_name: str) -> list[str]:
    """End as KILLED the given runs (after the tracker has ended them as FAILED) and any run
    of this process still RUNNING: a signal landing while a run was being closed leaves
    it open without being among the runs the handler saw."""
    if not tracker.enabled:
        return []
    done = []
    host = socket.gethostname().replace("'", "")
    mine = f"tags.{PID_TAG} = '{os.getpid()}' and tags.{HOST_TAG} = '{host}'"
    exp_id = _experiment_id(tracker)
    left = [r.info.run_id for r in _running(tracker, exp_id, mine)] if exp_id else []
    for run_id in dict.fromkeys([*run_ids, *left]):
        with contextlib.suppress(Exception):  # the store may be what is going away
            _end(tracker, run_id, "KILLED", f"{signal_name} to process {os.getpid()}")
            done.append(run_id)
    return done


def _end(tracker: Tracker, run_id: str, status: str, why: str) -> None:
    client = tracker.client
    _retry(lambda: client.set_tag(run_id, ENDED_TAG, why))
    _retry(lambda: client.set_terminated(run_id, status=status))
