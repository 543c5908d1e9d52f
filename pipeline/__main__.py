"""Command line: ``python -m pipeline <command> [hydra overrides...]``.

The commands are ``run`` and the stages of :mod:`pipeline.stages.plan` (``python -m
pipeline --help`` lists them). This module is the Hydra entry point only: it turns the
command line into a composed config and hands it to :func:`pipeline.stages.driver.execute`,
which holds the output root, recovers what a killed invocation left, handles signals
(:mod:`pipeline.adapters.invocation`) and runs the stages; tests and tools call
``execute`` with a config they composed themselves. Each job of a ``--multirun`` writes
into its own Hydra job folder and registers nothing; the sweep's best trial is
registered once the sweep is over (:mod:`pipeline.tools.sweep_end`). Third-party log
lines and warnings go to ``pipeline.log`` in the invocation's Hydra folder. The overrides
are checked before the stages are imported, so a refused command line is answered in a
fraction of a second, without importing the machine-learning stack.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import sys
from pathlib import Path
from typing import TextIO, cast

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.adapters import runlock
from pipeline.adapters.logfile import (
    RedactingStream,
    quiet_environment,
    redact_console,
    route_to_file,
)
from pipeline.base.config import REPO_ROOT, register_configs, unknown_override
from pipeline.base.errors import PipelineError
from pipeline.base.interrupt import Interrupted
from pipeline.base.redact import redact_text

register_configs()


@hydra.main(config_path=str(REPO_ROOT / "conf"), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> float | None:
    from pipeline.stages.driver import (
        TRIAL_CONSOLE,
        execute,
        isolate_job,
        objective,
        trial_line,
    )
    from pipeline.stages.plan import stages_for

    sweep, shared_root = None, None
    hc = HydraConfig.get()
    # as typed: an interpolation in a value (``${...}``) is resolved with the config, by
    # the stages, where an unresolvable one is refused in one line
    typed = OmegaConf.to_container(hc.overrides.task, resolve=False)
    overrides = [str(o) for o in cast(list[str], typed)]
    job_dir = Path(hc.runtime.output_dir)
    log_handler = route_to_file(job_dir / "pipeline.log")
    if hc.mode == RunMode.MULTIRUN:
        sweep = (str(hc.sweep.dir), int(hc.job.num))
        shared_root = isolate_job(cfg, job_dir, stages_for(str(cfg.stage), cfg))
    try:
        given = [o for o in overrides if not o.startswith("stage=")]
        if sweep is None:
            summary = execute(cfg, given, sweep, shared_root)
        else:  # a trial's whole console goes to its folder; the sweep prints a line for it
            with (job_dir / TRIAL_CONSOLE).open("w", encoding="utf-8") as out:
                with contextlib.redirect_stdout(cast(TextIO, RedactingStream(out))):
                    summary = execute(cfg, given, sweep, shared_root)
            print(trial_line(sweep[1], given, summary, job_dir / TRIAL_CONSOLE), flush=True)
    except PipelineError as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except OmegaConfBaseException as exc:
        # an interpolation that names no key, or a resolver that fails, met while a stage
        # read the config: the key and the reason, not OmegaConf's traceback
        key = getattr(exc, "full_key", None)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = f"config key '{key}'" if key else "config"
        print(f"error: {redact_text(f'{where}: {reason}')}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        # a folder made read-only or a disk filled during the run: the file and the
        # reason, without a traceback (which goes to the log file)
        crash = logging.getLogger("pipeline.crash")
        crash.propagate = False  # the traceback goes to the log file only
        crash.addHandler(log_handler)
        crash.exception("run stopped by an operating-system error")
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"error: cannot use{where}: {exc.strerror or exc} (outputs already published "
            "are kept; fix the folder and run again)",
            file=sys.stderr,
        )
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


def _unusable_root(argv: list[str]) -> str:
    """Why the folders a run writes under cannot be used ("" when they can).

    Checked before Hydra starts, which creates its output folder under ``paths.root``
    and would fail there with a traceback. Only literal paths are checked (an
    interpolation is resolved and used later, by the stages).
    """
    given = {}
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key in ("paths.root", "paths.outputs_dir") and "${" not in value:
            given[key] = value
    for key, value in given.items():
        if not value.strip().strip("'\""):
            # "" would put data/ and models/ at the filesystem's root
            return (
                f"{key} is empty (rule: a folder to write under; leave the key out for the default)"
            )
    root = Path(given.get("paths.root") or REPO_ROOT).expanduser()
    for key, path in (("paths.root", root), ("paths.outputs_dir", given.get("paths.outputs_dir"))):
        if path is None:
            continue
        path = Path(path).expanduser()
        if path.exists() and not path.is_dir():
            return (
                f"{key}={path} is an existing file, not a folder (rule: runs write under a folder)"
            )
        existing = next((q for q in (path, *path.parents) if q.exists()), None)
        if existing is not None and not existing.is_dir():
            return f"{key}={path}: {existing} is a file, so the folder cannot be made"
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            return (
                f"{key}={path}: {existing} is not writable (rule: runs write their data, "
                "models and logs under this folder)"
            )
    return ""


def _unknown_config_name(flags: list[str]) -> str:
    """Why ``--config-name`` cannot be used ("" when it can, or when another config folder
    is given): Hydra answers a name it cannot find with exit 1 and its search path."""
    if any(f.split("=")[0] in ("--config-path", "-cp", "--config-dir", "-cd") for f in flags):
        return ""
    for i, flag in enumerate(flags):
        key, sep, value = flag.partition("=")
        if key not in ("--config-name", "-cn"):
            continue
        if not sep:
            value = flags[i + 1] if i + 1 < len(flags) else ""
        known = sorted(p.stem for p in (REPO_ROOT / "conf").glob("*.yaml"))
        if value.removesuffix(".yaml") not in known:
            return (
                f"{key} '{value}': no such primary config in conf/ (choose one of: "
                f"{', '.join(known)})"
            )
    return ""


def _refused_by_hydra(argv: list[str]) -> str:
    """Why Hydra would refuse the overrides ("" when it composes them).

    Each override is parsed, each group choice checked (Hydra's own groups included) and,
    sweeps aside, the config composed here first: Hydra answers a bad override with exit 1
    and its config search path, or a traceback. The reason keeps Hydra's words, with any
    secret hidden, and names the override by its key, never by its value.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    flags, given = _flags_first(argv)
    options = [f for f in flags if f.startswith("-")]  # a flag's value is not an option
    unknown = _unknown_config_name(flags)
    if unknown:
        return unknown
    if any(f.split("=")[0] not in ("-m", "--multirun", "--cfg", "-c") for f in options):
        return ""  # another config, a package, --info...: Hydra's own answer stands
    parser = OverridesParser.create()
    parsed = []
    for arg in given:
        try:
            parsed.append(parser.parse_override(arg))
        except HydraException as exc:
            key = arg.partition("=")[0]
            return f"override '{key}': not valid override syntax ({str(exc).splitlines()[0]})"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            for o in parsed:
                group = o.key_or_group
                if o.is_delete() or o.is_sweep_override() or "." in group or "@" in group:
                    continue
                options = loader.get_group_options(group)
                value = o.value()
                if options and isinstance(value, str) and value not in options:
                    known = ", ".join(options)
                    return f"config group '{group}' has no option '{value}'; known: {known}"
                if not options and "/" in group:
                    return (
                        f"config group '{group}' does not exist (rule: a group is a folder of "
                        "conf/ or one of Hydra's own)"
                    )
            # a sweep's values are checked one by one before; the rest composes once
            plain = [a for a, o in zip(given, parsed, strict=True) if not o.is_sweep_override()]
            if plain:
                try:
                    compose(config_name="config", overrides=plain, return_hydra_config=True)
                except (HydraException, OmegaConfBaseException) as exc:
                    text = f"{exc}\n{exc.__cause__ or ''}"
                    for arg in given:  # the override by its key: its value may be a secret
                        if "=" in arg:
                            text = text.replace(arg, arg.partition("=")[0] + "=...")
                    text = re.sub(r"Value '[^']*'", "The value given", text)
                    lines = [x.strip() for x in text.splitlines() if x.strip()]
                    said = [
                        x
                        for x in lines
                        if not x.startswith(
                            ("To append", "full_key", "reference_type", "object_type")
                        )
                    ]
                    return "config: " + redact_text("; ".join(said[:2]) or type(exc).__name__)
    finally:
        GlobalHydra.instance().clear()
    return ""


#: Hydra's options that take the next word as their value (``--cfg job``)
_VALUE_FLAGS = frozenset(
    (
        "--cfg",
        "-c",
        "--package",
        "-p",
        "--config-path",
        "-cp",
        "--config-name",
        "-cn",
        "--config-dir",
        "-cd",
        "--experimental-rerun",
    )
)
#: ``--info`` takes a next word only if it is one of these
_INFO_TOPICS = frozenset(("all", "config", "defaults", "defaults-tree", "plugins", "searchpath"))


def _flags_first(argv: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's options (with their values) apart from the overrides, in their order.

    Hydra's parser takes the overrides as one run of positional words: an option typed
    between two overrides (``a=1 --cfg job b=2``) left ``b=2`` "unrecognized" (argparse's
    own exit 2, without this tool's ``error:`` line). Options go first, overrides after.
    """
    flags: list[str] = []
    overrides: list[str] = []
    words = iter(argv)
    for word in words:
        if not word.startswith("-"):
            overrides.append(word)
            continue
        flags.append(word)
        if word in _VALUE_FLAGS or word in ("--info", "-i"):
            value = next(words, None)
            if value is None:
                continue
            if word in _VALUE_FLAGS or value in _INFO_TOPICS:
                flags.append(value)
            else:
                overrides.append(value)
    return flags, overrides


def main() -> None:
    """Check the overrides, and only then import the stages, check the command and run.

    The stages import the machine-learning stack (LightGBM, MLflow, SHAP: seconds of
    imports); a refused override costs none of it.
    """
    argv = sys.argv[1:]
    if argv[:1] in (["--help"], ["-h"], ["help"]):
        from pipeline.stages.plan import help_lines

        print("python -m pipeline <command> [hydra overrides...]; commands:")
        print("\n".join(help_lines()))
        return
    runlock.COMMAND[:] = ["python -m pipeline", *argv]
    command = "run"
    if argv and not argv[0].startswith("-") and "=" not in argv[0]:
        command = argv.pop(0)
    redact_console()
    problem = (
        next((w for w in map(unknown_override, argv) if w), "")
        or _refused_by_hydra(argv)
        or _unusable_root(argv)
    )
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    from pipeline.adapters.invocation import install_signal_handlers
    from pipeline.stages.plan import COMMANDS  # the whole stack: every stage's module

    if command not in COMMANDS:
        print(
            f"error: unknown command '{command}'; choose one of: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        sys.exit(2)
    flags, overrides = _flags_first(argv)
    sys.argv = [sys.argv[0], *flags, *overrides, f"stage={command}"]

    install_signal_handlers()
    quiet_environment()
    # what is imported by now lives as long as the process: the collections between the
    # stages (release_memory) need not walk it again each time
    gc.freeze()
    _app()


if __name__ == "__main__":
    main()
