"""A calm console: what third-party libraries say goes to a log file, not the screen.

The console carries the pipeline's own lines (stage results, the summary, errors).
MLflow's notices and schema hints, Dask's INFO lines (its scheduler and nannies run in
this process; a local cluster's workers log nothing below WARNING), LightGBM's native
warnings ("Met negative value in categorical features") and Python warnings raised
outside the pipeline are written to one log file per invocation instead; warnings the
pipeline itself raises stay on the console. Artifact downloads show no progress bars.
Dask is imported later than this set-up runs; it adds a console handler of its own only
when the root logger has none (Hydra gives it one).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pipeline.base.redact import redact_text

#: loggers of libraries whose messages belong in the log file
THIRD_PARTY = (
    "mlflow",
    "alembic",
    "distributed",
    "bokeh",
    "tornado",
    "numba",
    "urllib3",
    "optuna",
    "hydra_plugins",  # a sweep's launcher and sweeper (their settings, a joblib repr)
    "hydra._internal.core_plugins",  # Hydra's own launcher and sweeper
)
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


class _FileSink(logging.Handler):
    """Hands records to a file handler.

    Not itself a ``StreamHandler``: Dask lowers the level of every stream handler on its
    loggers while a local cluster starts, which would drop its INFO lines from the file.
    """

    def __init__(self, target: logging.FileHandler) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)

    def close(self) -> None:
        self.target.close()
        super().close()


class Redacting(logging.Filter):
    """Rewrites each record's text with its secrets hidden (passwords and tokens in URIs,
    ``key=value`` pairs whose key names a secret), the traceback's text included."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact_text(text)
        if clean != text:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


#: Hydra's hint after a config error: the error line says all there is to say
HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


class RedactingStream:
    """A console stream whose text has its secrets hidden before it is written (the lines
    third-party code prints, MLflow's run links and Hydra's error messages included)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if HYDRA_HINT in text:
            text = text.replace(HYDRA_HINT, "").rstrip("\n")
            if not text:
                return 0
        return self._stream.write(redact_text(text))

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def redact_console() -> None:
    """Route ``sys.stdout`` and ``sys.stderr`` through :class:`RedactingStream` (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))


def quiet_environment() -> None:
    """No progress bars on MLflow's artifact downloads (unless the user asked for them)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def route_to_file(log_file: Path) -> logging.Handler:
    """Send third-party log records and warnings to ``log_file``; returns its handler."""
    # MLflow sets its loggers up when it is first imported: it must be imported before
    # they are routed here, or its own handler would come back beside this one
    from mlflow.utils import logging_utils

    log_file.parent.mkdir(parents=True, exist_ok=True)
    quiet_environment()
    target = logging.FileHandler(log_file, encoding="utf-8")
    target.setFormatter(logging.Formatter(_FORMAT))
    target.addFilter(Redacting())
    handler = _FileSink(target)
    # the console handlers Hydra set up hide secrets too
    for console in logging.getLogger().handlers:
        if not any(isinstance(f, Redacting) for f in console.filters):
            console.addFilter(Redacting())
    for name in THIRD_PARTY:
        logger = logging.getLogger(name)
        _drop_handlers(logger)
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger("mlflow").setLevel(logging.INFO)
    logging.getLogger("distributed").setLevel(logging.INFO)
    warn_log = logging.getLogger("py.warnings")
    _drop_handlers(warn_log)
    warn_log.addHandler(handler)
    warn_log.propagate = False
    logging.captureWarnings(True)
    if not getattr(warnings.showwarning, "_keeps_own", False):
        warnings.showwarning = _own_on_console(warnings.showwarning)
    _route_lightgbm(logging.getLogger("lightgbm"), handler)
    _route_mlflow_prints(logging_utils.MLFLOW_LOGGING_STREAM, logging.getLogger("mlflow.console"))
    return handler


def _route_mlflow_prints(stream: Any, log: logging.Logger) -> None:
    """MLflow prints some notices itself ("Successfully registered model", "Created
    version '2' of model ...") to its own ``stream`` rather than through a logger: that
    stream's lines become records of ``log`` (the log file), one per line."""
    pending: list[str] = []

    def write(text: str) -> int:
        pending.append(text)
        *lines, rest = "".join(pending).split("\n")
        pending[:] = [rest] if rest else []
        for line in lines:
            if line.strip():
                log.info(line)
        return len(text)

    stream.write = write
    stream.flush = lambda: None


def _own_on_console(to_log: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` that prints the pipeline's own warnings and logs the rest."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if file is None and str(filename).startswith(_PACKAGE_DIR):
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            to_log(message, category, filename, lineno, file, line)

    show._keeps_own = True  # type: ignore[attr-defined]
    return show


def _route_lightgbm(logger: logging.Logger, handler: logging.Handler) -> None:
    """LightGBM's native messages (it prints them itself by default) into the log file."""
    import lightgbm as lgb  # heavy: imported once a run starts, not for a refused command

    _drop_handlers(logger)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    lgb.register_logger(logger)


def _drop_handlers(logger: logging.Logger) -> None:
    for old in list(logger.handlers):
        logger.removeHandler(old)
        if isinstance(old, (logging.FileHandler, _FileSink)):
            old.close()
