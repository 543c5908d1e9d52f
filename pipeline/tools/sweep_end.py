"""What happens once a Hydra multirun is over: its best trial is offered to the registry.

Trials of a sweep (``--multirun``) log their models without registering them, so that
neither the registry nor the champion alias sees every trial. Hydra calls
:class:`RegisterBestTrial` (named in ``conf/config.yaml`` under ``hydra.callbacks``) in
the sweeping process after the last trial; it registers the trial with the highest
objective (validation AUC) and judges it for champion.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, cast

from hydra.experimental.callback import Callback
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from pipeline.adapters.logfile import route_to_file
from pipeline.adapters.model_registry import register_best_trial, registered_name
from pipeline.adapters.tracking import TrackingError, from_config
from pipeline.base.config import Config
from pipeline.base.redact import redact_uri
from pipeline.stages.driver import trial_parameters, ui_hint


class RegisterBestTrial(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # the sweeping process's third-party lines (Optuna's study, the launcher's and
        # sweeper's settings, MLflow's registry notices) go to the sweep's log file
        import optuna

        optuna.logging.disable_default_handler()
        route_to_file(Path(str(config.hydra.sweep.dir)) / "pipeline.log")
        for name in ("optuna", "hydra_plugins", "hydra._internal.core_plugins"):
            logging.getLogger(name).setLevel(logging.INFO)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # the composed config, shaped by the Config schema (plus Hydra's own node)
        offer_best_trial(cast(Config, config), str(config.hydra.sweep.dir))


def offer_best_trial(cfg: Config, sweep_dir: str) -> dict[str, Any] | None:
    """Register the best trial of the sweep in ``sweep_dir``; prints what was decided."""
    tracker = from_config(cfg.tracking)
    name = registered_name(cfg)
    if not tracker.enabled or not name:
        return None
    try:
        info = register_best_trial(tracker, sweep_dir, name, str(cfg.model.champion_alias))
    except (TrackingError, MlflowException) as exc:
        print(f"error: the sweep's best trial could not be registered: {exc}", file=sys.stderr)
        return None
    if info is None:
        print(f"sweep {sweep_dir}: no finished trial to register", flush=True)
        return None
    print(f"sweep best trial: run {info['trial_run']}; {info.get('message', '')}", flush=True)
    print(best_command(tracker.client.get_run(info["trial_run"]).data.tags), flush=True)
    print(
        f"open the UI: {ui_hint(str(cfg.tracking.uri), str(cfg.tracking.artifact_root))}"
        if str(cfg.tracking.uri).startswith("sqlite:")
        else f"the runs are in {redact_uri(str(cfg.tracking.uri))}",
        flush=True,
    )
    return info


def best_command(tags: dict[str, str]) -> str:
    """The best trial's parameters and the command that trains with them."""
    given = [o for o in tags.get("overrides", "").split() if o != "(none)"]
    chosen = trial_parameters(given)
    # the command trains where the sweep read its data: its paths come along
    where = [o for o in given if o.startswith("paths.")]
    return (
        f"best parameters: {' '.join(chosen) or '(the defaults)'}\n"
        f'train with them: make train ARGS="{" ".join([*chosen, *where])}"'
    )
