"""Command line: ``python -m pipeline <command> [hydra overrides...]``.

The commands are ``run`` and the stages of :mod:`pipeline.stages.plan` (``python -m
pipeline --help`` lists them). This module is the Hydra entry point only: it turns the
command line into a composed config and hands it to :func:`pipeline.stages.driver.execute`,
which holds the output root, recovers what a killed invocation left, handles signals
(:mod:`pipeline.adapters.invocation`) and runs the stages; tests and tools call
``execute`` with a config they composed themselves. Each job of a ``--multirun`` writes
into its own Hydra job folder and registers nothing; the sweep's best trial is
registered once the sweep is over (:mod:`pipeline.tools.sweep_end`). Third-party log
lines and warnings go to ``pipeline.log`` in the invocation's Hydra folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.adapters import runlock
from pipeline.adapters.invocation import install_signal_handlers
from pipeline.adapters.logfile import quiet_environment, route_to_file
from pipeline.adapters.runlock import RootBusy
from pipeline.adapters.tracking import TrackingError
from pipeline.base.config import REPO_ROOT, ConfigError, register_configs
from pipeline.base.interrupt import Interrupted
from pipeline.base.io import DataError
from pipeline.stages.driver import execute, isolate_job, objective
from pipeline.stages.plan import COMMANDS, help_lines, stages_for

register_configs()


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
    if argv[:1] in (["--help"], ["-h"], ["help"]):
        print("python -m pipeline <command> [hydra overrides...]; commands:")
        print("\n".join(help_lines()))
        return
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
