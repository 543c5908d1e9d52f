"""What holds an invocation together, whatever it runs: the output root held for its
whole length, the publication a killed invocation left half-done finished, the MLflow
runs of dead processes ended, SIGINT and SIGTERM turned into runs ended as KILLED, and a
multirun job's outputs moved into its own folder.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.adapters import model_registry
from pipeline.adapters.runlock import hold_root
from pipeline.adapters.runstate import mark_killed, reap_orphans
from pipeline.adapters.tracking import Tracker
from pipeline.base.interrupt import Interrupted, interrupt, watch
from pipeline.base.io import on_dropped, recover

#: the trackers of the invocation in progress (the signal handler reads their open runs)
_ACTIVE: list[Tracker] = []
#: the output folders (``paths`` keys) of a run
FOLDERS = ("raw_dir", "truth_dir", "processed_dir", "models_dir")


def _on_signal(signum: int, frame: FrameType | None) -> None:
    interrupt(signum)


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM unwind the invocation so that its MLflow runs end as KILLED."""
    watch(lambda: [run_id for t in _ACTIVE for run_id in t._run_stack])
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)


@contextmanager
def guarded(cfg: Any, tracker: Tracker, shared_root: Path | None) -> Iterator[list[str]]:
    """Hold the output root, settle the outputs and runs of dead processes, end ours as
    KILLED on a signal. Yields what was done to a killed invocation's outputs (one line
    each; empty when there was nothing to do)."""
    with ExitStack() as stack:
        if shared_root is not None:  # a sweep job reads the sweep's data: held shared
            stack.enter_context(hold_root(shared_root, str(cfg.lock), shared=True))
        stack.enter_context(hold_root(str(cfg.paths.root), str(cfg.lock)))
        # a stage dropped (now, or by a process that died) puts back the aliases it moved
        on_dropped("alias", lambda note: model_registry.restore_alias(tracker, note))
        done = recover(Path(str(cfg.paths.root)))
        _ACTIVE.append(tracker)
        try:
            reap_orphans(tracker)
            yield done
        except Interrupted as exc:
            mark_killed(tracker, exc.run_ids, exc.signal_name)
            raise
        finally:
            _ACTIVE.remove(tracker)


def isolate(cfg: Any, job_dir: Path, written: set[str]) -> Path:
    """Move a multirun job's outputs into its own folder; returns the root it reads from.

    The folders the job writes (``written``, ``paths`` keys) follow ``paths.root`` to
    ``job_dir``; those it only reads, the MLflow store and Hydra's own folders stay where
    the sweep's root put them.
    """
    base = Path(str(cfg.paths.root))
    cfg.tracking.uri = str(cfg.tracking.uri)
    cfg.tracking.artifact_root = str(cfg.tracking.artifact_root)
    cfg.paths.outputs_dir = str(cfg.paths.outputs_dir)
    for folder in FOLDERS:
        if folder not in written:
            cfg.paths[folder] = str(cfg.paths[folder])
    cfg.paths.root = str(job_dir)
    return base
