"""SIGINT and SIGTERM as an exception that unwinds the invocation, never lost on the way.

A signal handler raises :class:`Interrupted` wherever the main thread is. When that
happens inside a callback Python only reports (a weak-reference or ``__del__`` hook
during garbage collection), the exception is printed and dropped; so the handler also
notes the signal, and :func:`check` (called by the driver at every stage's start and
end) raises it again at a point where it cannot be dropped.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; carries the MLflow runs that were open at that moment."""

    def __init__(self, signum: int, run_ids: list[str]) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.run_ids = run_ids


_pending: list[int] = []
_open_runs: list[Callable[[], list[str]]] = []


def watch(open_runs: Callable[[], list[str]]) -> None:
    """Say where the runs open at a signal are found (the command line sets it once), and
    keep Python from printing a dropped :class:`Interrupted` as an error: it is noted, and
    :func:`check` raises it again."""
    _open_runs[:] = [open_runs]
    if sys.unraisablehook is not _quiet_unraisable:
        _default_hook[:] = [sys.unraisablehook]
        sys.unraisablehook = _quiet_unraisable


_default_hook: list[Callable[[Any], object]] = []


def _quiet_unraisable(unraisable: Any) -> None:
    if isinstance(unraisable.exc_value, Interrupted):
        return
    (_default_hook[0] if _default_hook else sys.__unraisablehook__)(unraisable)


def interrupt(signum: int) -> None:
    """The signal handler's body: note the signal, then raise it here and now."""
    _pending.append(signum)
    raise Interrupted(signum, _runs())


def check() -> None:
    """Raise a signal that arrived but was dropped on its way (see the module's note)."""
    if _pending:
        raise Interrupted(_pending[-1], _runs())


def clear() -> None:
    _pending.clear()


def _runs() -> list[str]:
    return _open_runs[0]() if _open_runs else []
