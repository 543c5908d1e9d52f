"""The stages of the pipeline, one record each (:class:`~pipeline.stages.common.Stage`).

The driver runs them from here (``run`` takes those with ``in_run``, in this order), the
command line takes its commands from here (``python -m pipeline --help`` prints their
lines), and the staging of a stage's outputs follows the folders of what it writes. The
Makefile's help cannot import the package before the environment exists, so each stage
target repeats its record's line there, with make's own usage in brackets;
``tests/test_tools.py`` fails when the two differ. A new stage is one record here, its
entries in the catalog and a ``make`` target.
"""

from __future__ import annotations

from typing import Any

from pipeline.adapters.catalog import EXPLAIN_VIEWS, RAW, TRUTH
from pipeline.adapters.tracking import Tracker
from pipeline.stages.common import Stage
from pipeline.stages.explain import explain
from pipeline.stages.features import features
from pipeline.stages.generate import generate
from pipeline.stages.policy import PolicyResult, policy
from pipeline.stages.report import report
from pipeline.stages.score import score
from pipeline.stages.survival import OUTPUTS as SURVIVAL_OUTPUTS
from pipeline.stages.survival import survival
from pipeline.stages.train import train

_MODEL_FILES = (
    "model",
    "model_meta",
    "calibration",
    "scorecard",
    "scorecard_card",
    "rules_baseline",
    "evaluation",
    "gains",
    "roc_plot",
    "gains_plot",
    "calibration_plot",
    "train_part",
)
_POLICY_FILES = (
    "policy_frontier",
    "policy_matched",
    "policy_plot",
    "policy_summary",
    "policy_part",
)


def _policy_in_run(cfg: Any, tracker: Tracker) -> PolicyResult:
    """The strategy comparison on this run's own model (``run`` never asks the registry)."""
    return policy(cfg, tracker, source="local", in_run=True)


#: Every stage and command, in the order ``run`` runs them.
STAGES: tuple[Stage, ...] = (
    Stage(
        "generate",
        generate,
        "Simulate the borrower world into data/raw (and ground truth into data/truth)",
        writes=(*RAW, *TRUTH, "data_card", "data_card_md", "raw_plots", "generate_part"),
        groups=("data", "simulator"),
        aliases=("data",),
    ),
    Stage(
        "features",
        features,
        "Build point-in-time features into data/processed",
        reads=RAW,
        writes=("features", "feature_registry", "stability", "features_part"),
        groups=("features",),
    ),
    Stage(
        "train",
        train,
        "Train and evaluate the LightGBM closure-risk model into models/",
        reads=("features", "oracle"),
        writes=_MODEL_FILES,
        side=("table_features",),
        groups=("model",),
        model_derived=True,
    ),
    Stage(
        "survival",
        survival,
        "Competing-risks closure curves by horizon and cause, and the explanation leaderboard",
        reads=("features", "platform_events", "model", "model_meta", "calibration", "oracle"),
        writes=SURVIVAL_OUTPUTS,
        groups=("model",),
        simulator_only=True,
        model_derived=True,
    ),
    Stage(
        "explain",
        explain,
        "SHAP values, reason codes and plots for out-of-time rows",
        reads=(
            "features",
            "table_features",
            "model",
            "model_meta",
            "calibration",
            "oracle",
            "survival_model",
            "survival_eval",
        ),
        writes=(*EXPLAIN_VIEWS, "cause_weights", "borrower_story", "waterfall_plot"),
        groups=("explain",),
        model_derived=True,
    ),
    Stage(
        "policy",
        _policy_in_run,
        "Compare closing with the tiered strategy on simulated outcomes (registry champion)",
        reads=("features", "model", "account_months", "platform_events"),
        writes=_POLICY_FILES,
        groups=("policy",),
        simulator_only=True,
        model_derived=True,
        single=True,
    ),
    Stage(
        "report",
        report,
        "Rebuild the self-contained HTML model report from the outputs",
        reads=(
            "model_meta",
            "evaluation",
            *EXPLAIN_VIEWS,
            "survival_eval",
            "survival_plot",
            "policy_summary",
            "summary",
        ),
        writes=("report",),
        model_derived=True,
        single=True,
    ),
    Stage(
        "score",
        score,
        "Score new rows with the champion (score.input=PATH score.output=PATH)",
        reads=(
            *RAW,
            "model",
            "model_meta",
            "calibration",
            "cause_weights",
            "survival_model",
            "survival_eval",
        ),
        writes=("scores",),
        groups=("score",),
        in_run=False,
        single=True,
    ),
)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
#: the single-stage runs that replace a stage's own function when asked for by name:
#: policy alone scores with ``score.model_source`` (the registry champion by default)
ALONE = {"policy": policy}
#: every command of ``python -m pipeline``: ``run``, each stage and its aliases
COMMANDS: tuple[str, ...] = ("run", *(n for s in STAGES for n in (s.name, *s.aliases)))


def stage_of(command: str) -> Stage:
    """The stage a command (a stage's name or alias) names."""
    for s in STAGES:
        if command == s.name or command in s.aliases:
            return s
    raise KeyError(f"unknown command '{command}'; choose one of: {', '.join(COMMANDS)}")


def pipeline_stages(cfg: Any) -> list[Stage]:
    """What ``run`` runs: every stage of the run, less those the data mode cannot feed."""
    simulator = str(cfg.data.kind) == "simulator"
    return [s for s in STAGES if s.in_run and (simulator or not s.simulator_only)]


def stages_for(command: str, cfg: Any = None) -> list[Stage]:
    """The stages a command runs (``run``: :func:`pipeline_stages`; without a config, all
    of the run's)."""
    if command == "run":
        return pipeline_stages(cfg) if cfg is not None else [s for s in STAGES if s.in_run]
    return [stage_of(command)]


def help_lines() -> list[str]:
    """One line per command, for ``make help``."""
    lines = ["  run              every stage of the run in order, then the summary"]
    for s in STAGES:
        alias = f" (alias {', '.join(s.aliases)})" if s.aliases else ""
        lines.append(f"  {s.name:<16} {s.doc}{alias}")
    return lines
