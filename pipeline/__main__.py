"""Command line: ``python -m pipeline <stage> [hydra overrides...]``.

Stages: ``generate`` (alias ``data``), ``features``, ``train``, ``explain``, ``policy``
(simulator mode), ``report``, and ``run`` for all of them; ``score`` runs on its own, and
so do ``policy`` (it then scores with the registry champion) and ``report`` (it then
rebuilds the page from the outputs on disk) when asked for by name. The only module that talks
to Hydra.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.adapters.tracking import TrackingError
from pipeline.base.config import REPO_ROOT, ConfigError, register_configs
from pipeline.base.io import DataError

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
register_configs()


def stages_for(command: str, cfg: Any = None) -> list[str]:
    from pipeline.stages.driver import ALIASES, STAGES, pipeline_stages

    if command == "run":
        return pipeline_stages(cfg) if cfg is not None else list(STAGES)
    return [ALIASES.get(command, command)]


def execute(
    cfg: Any, overrides: list[str] | None = None, sweep: tuple[str, int] | None = None
) -> dict[str, Any]:
    """Run what ``cfg.stage`` names; logic lives outside ``@hydra.main`` so tests call it.

    ``sweep`` (sweep directory, trial number) nests the run under the sweep's MLflow run.
    """
    from pipeline.adapters.tracking import from_config
    from pipeline.stages.driver import run_pipeline

    tracker = from_config(cfg.tracking)
    if str(cfg.stage) in ("score", "policy", "report"):  # on their own parent run
        from pipeline.stages.score import run_single

        if str(cfg.stage) == "score":
            from pipeline.stages.score import score as fn
        elif str(cfg.stage) == "policy":
            from pipeline.stages.policy import policy as fn
        else:  # rebuilds the page from the outputs; the run summary and config stay as they are
            from pipeline.stages.report import report as fn
        return run_single(cfg, tracker, str(cfg.stage), fn, overrides)
    summary = run_pipeline(cfg, tracker, stages_for(str(cfg.stage), cfg), overrides)
    if sweep is not None:
        from pipeline.stages.train import attach_trial

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
