"""Command line: ``python -m pipeline <stage> [hydra overrides...]``.

Stages: ``generate`` (alias ``data``), ``features``, ``train``, ``explain``, ``policy``
(simulator mode), ``report``, and ``run`` for all of them; ``score`` runs on its own, and
so do ``policy`` (it then scores with the registry champion) and ``report`` (it then
rebuilds the page from the outputs on disk) when asked for by name. This module is the
Hydra entry point only: it turns the command line into a composed config and hands it to
:mod:`pipeline.stages.driver`; tests and tools call :func:`execute` with a config they
composed themselves.

An invocation holds its output root (``paths.root``) for its whole length: a second one
waits, naming the holder, or fails at once with ``lock=fail``. SIGINT and SIGTERM end its
MLflow runs as KILLED; runs that a killed process left RUNNING are ended as FAILED by the
next invocation. Each job of a ``--multirun`` writes into its own Hydra job folder and
registers nothing; the sweep's best trial is registered once the sweep is over
(:mod:`pipeline.tools.sweep_end`). Third-party log lines and warnings go to
``pipeline.log`` in the invocation's Hydra folder.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.adapters import runlock
from pipeline.adapters.logfile import quiet_environment, route_to_file
from pipeline.adapters.model_registry import attach_trial
from pipeline.adapters.runlock import RootBusy, hold_root
from pipeline.adapters.runstate import mark_killed, reap_orphans
from pipeline.adapters.tracking import Tracker, TrackingError, from_config
from pipeline.base.config import REPO_ROOT, ConfigError, register_configs, validate
from pipeline.base.interrupt import Interrupted, interrupt, watch
from pipeline.base.io import DataError, recover
from pipeline.stages import policy as policy_stage
from pipeline.stages import report as report_stage
from pipeline.stages import score as score_stage
from pipeline.stages.common import WRITES, say
from pipeline.stages.driver import ALIASES, STAGES, pipeline_stages, run_pipeline, run_single

COMMANDS = (
    "run",
    "generate",
    "data",
    "features",
    "train",
    "explain",
    "report",
    "score",
    "policy",
)
#: Commands that run one stage on a parent run of their own (not a step of ``run``).
SINGLE = {"score": score_stage.score, "policy": policy_stage.policy, "report": report_stage.report}
register_configs()


def stages_for(command: str, cfg: Any = None) -> list[str]:
    if command == "run":
        return pipeline_stages(cfg) if cfg is not None else list(STAGES)
    return [ALIASES.get(command, command)]


#: the trackers of the invocation in progress (the signal handler reads their open runs)
_ACTIVE: list[Tracker] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    interrupt(signum)


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM unwind the invocation so that its MLflow runs end as KILLED."""
    watch(lambda: [run_id for t in _ACTIVE for run_id in t._run_stack])
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)


@contextmanager
def _guarded(cfg: Any, tracker: Tracker, shared_root: Path | None) -> Iterator[None]:
    """Hold the output root, settle the outputs and runs of dead processes, end ours as
    KILLED on a signal."""
    with ExitStack() as stack:
        if shared_root is not None:  # a sweep job reads the sweep's data: held shared
            stack.enter_context(hold_root(shared_root, str(cfg.lock), shared=True))
        stack.enter_context(hold_root(str(cfg.paths.root), str(cfg.lock)))
        _recover_outputs(Path(str(cfg.paths.root)))
        _ACTIVE.append(tracker)
        try:
            reap_orphans(tracker)
            yield
        except Interrupted as exc:
            mark_killed(tracker, exc.run_ids, exc.signal_name)
            raise
        finally:
            _ACTIVE.remove(tracker)


def _recover_outputs(root: Path) -> None:
    """Finish the publication a killed invocation began, drop the outputs of stages it
    never finished; one line when there was something to do."""
    done = recover(root)
    if done:
        say(f"outputs: a killed invocation left work behind; {'; '.join(done)}")


def execute(
    cfg: Any,
    overrides: list[str] | None = None,
    sweep: tuple[str, int] | None = None,
    shared_root: Path | None = None,
) -> dict[str, Any]:
    """Run what ``cfg.stage`` names; logic lives outside ``@hydra.main`` so tests call it.

    The output root (``paths.root``) is held for the whole invocation. ``sweep`` (sweep
    directory, trial number) nests the run under the sweep's MLflow run, and leaves
    registration to the end of the sweep; ``shared_root`` is the root a sweep job reads.
    """
    validate(cfg)
    tracker = from_config(cfg.tracking)
    stage = str(cfg.stage)
    with _guarded(cfg, tracker, shared_root):
        if stage in SINGLE:  # report alone rebuilds the page; the run summary and config stay
            return run_single(cfg, tracker, stage, SINGLE[stage], overrides)
        summary = run_pipeline(
            cfg, tracker, stages_for(stage, cfg), overrides, register=sweep is None
        )
        if sweep is not None:
            attach_trial(
                tracker, sweep[0], sweep[1], summary.get("mlflow_run_id"), objective(summary)
            )
    return summary


def isolate_job(cfg: Any, job_dir: Path, stages: list[str]) -> Path:
    """Move a multirun job's outputs into its own folder; returns the root it reads from.

    The folders the job's stages write follow ``paths.root`` to ``job_dir``; those it
    only reads, the MLflow store and Hydra's own folders stay where the sweep's root put
    them.
    """
    base = Path(str(cfg.paths.root))
    written = {d for s in stages for d in WRITES.get(s, ())}
    cfg.tracking.uri = str(cfg.tracking.uri)
    cfg.tracking.artifact_root = str(cfg.tracking.artifact_root)
    cfg.paths.outputs_dir = str(cfg.paths.outputs_dir)
    for folder in ("raw_dir", "truth_dir", "processed_dir", "models_dir"):
        if folder not in written:
            cfg.paths[folder] = str(cfg.paths[folder])
    cfg.paths.root = str(job_dir)
    return base


def objective(summary: dict[str, Any]) -> float | None:
    """What a sweep maximises: validation AUC (never an out-of-time figure)."""
    auc = summary.get("valid", {}).get("auc")
    return float(auc) if isinstance(auc, (int, float)) else None


@hydra.main(config_path=str(REPO_ROOT / "conf"), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> float | None:
    sweep, shared_root = None, None
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    job_dir = Path(hc.runtime.output_dir)
    route_to_file(job_dir / "pipeline.log")
    if hc.mode == RunMode.MULTIRUN:
        sweep = (str(hc.sweep.dir), int(hc.job.num))
        shared_root = isolate_job(cfg, job_dir, stages_for(str(cfg.stage), cfg))
    try:
        summary = execute(
            cfg, [o for o in overrides if not o.startswith("stage=")], sweep, shared_root
        )
    except (ConfigError, DataError, TrackingError, RootBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(
            f"interrupted ({exc.signal_name}): outputs of finished stages are kept; the "
            "MLflow runs of this invocation ended as KILLED",
            file=sys.stderr,
        )
        sys.exit(128 + exc.signum)
    # a sweeper (Optuna) reads the task function's return value as the trial's objective
    return objective(summary) if sweep is not None else None


def main() -> None:
    argv = sys.argv[1:]
    runlock.COMMAND[:] = ["python -m pipeline", *argv]
    command = "run"
    if argv and not argv[0].startswith("-") and "=" not in argv[0]:
        command = argv.pop(0)
    if command not in COMMANDS:
        print(
            f"error: unknown command '{command}'; choose one of: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.argv = [sys.argv[0], *argv, f"stage={command}"]
    install_signal_handlers()
    quiet_environment()
    _app()


if __name__ == "__main__":
    main()
