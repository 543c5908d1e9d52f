"""Command line: ``python -m pipeline <stage> [hydra overrides...]``.

Stages: ``generate`` (alias ``data``), ``features``, ``train``, ``explain``, ``policy``
(simulator mode), ``report``, and ``run`` for all of them; ``score`` runs on its own, and
so do ``policy`` (it then scores with the registry champion) and ``report`` (it then
rebuilds the page from the outputs on disk) when asked for by name. This module is the
Hydra entry point only: it turns the command line into a composed config and hands it to
:mod:`pipeline.stages.driver`; tests and tools call :func:`execute` with a config they
composed themselves.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.adapters.model_registry import attach_trial
from pipeline.adapters.tracking import TrackingError, from_config
from pipeline.base.config import REPO_ROOT, ConfigError, register_configs
from pipeline.base.io import DataError
from pipeline.stages import policy as policy_stage
from pipeline.stages import report as report_stage
from pipeline.stages import score as score_stage
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


def execute(
    cfg: Any, overrides: list[str] | None = None, sweep: tuple[str, int] | None = None
) -> dict[str, Any]:
    """Run what ``cfg.stage`` names; logic lives outside ``@hydra.main`` so tests call it.

    ``sweep`` (sweep directory, trial number) nests the run under the sweep's MLflow run.
    """
    tracker = from_config(cfg.tracking)
    stage = str(cfg.stage)
    if stage in SINGLE:  # report alone rebuilds the page; the run summary and config stay
        return run_single(cfg, tracker, stage, SINGLE[stage], overrides)
    summary = run_pipeline(cfg, tracker, stages_for(stage, cfg), overrides)
    if sweep is not None:
        attach_trial(tracker, sweep[0], sweep[1], summary.get("mlflow_run_id"), objective(summary))
    return summary


def objective(summary: dict[str, Any]) -> float | None:
    """What a sweep maximises: validation AUC (never an out-of-time figure)."""
    auc = summary.get("valid", {}).get("auc")
    return float(auc) if isinstance(auc, (int, float)) else None


@hydra.main(config_path=str(REPO_ROOT / "conf"), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> float | None:
    sweep = None
    try:
        hc = HydraConfig.get()
        overrides = list(hc.overrides.task)
        if hc.mode == RunMode.MULTIRUN:
            sweep = (str(hc.sweep.dir), int(hc.job.num))
    except ValueError:
        overrides = []
    try:
        summary = execute(cfg, [o for o in overrides if not o.startswith("stage=")], sweep)
    except (ConfigError, DataError, TrackingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    # a sweeper (Optuna) reads the task function's return value as the trial's objective
    return objective(summary) if sweep is not None else None


def main() -> None:
    argv = sys.argv[1:]
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
    _app()


if __name__ == "__main__":
    main()
