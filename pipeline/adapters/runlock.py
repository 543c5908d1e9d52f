"""One invocation at a time per output root.

An invocation holds an exclusive ``flock`` on ``<root>/.pipeline.lock`` while it reads and
writes under that root, and writes its PID, host and (redacted) command line into the
file so that a second invocation can say who it is waiting for. The kernel drops the
lock when the holder exits or is killed, so a lock is never left stale.

Sweep jobs write into folders of their own and only read the data under the sweep's
root: they take the lock there *shared*, so any number of them run side by side while
an ordinary invocation (exclusive) on that root waits for them, and they for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.base.errors import PipelineError
from pipeline.base.redact import redact_text

LOCK_NAME = ".pipeline.lock"
#: how often a waiting invocation repeats who it is waiting for
REMIND_S = 60.0
#: the command line as the user typed it, when the entry point knows it (it may rewrite
#: ``sys.argv`` before the lock is taken)
COMMAND: list[str] = []


class RootBusy(PipelineError, RuntimeError):
    """Another invocation holds the output root and ``lock=fail`` was asked for."""


def holder_record() -> dict[str, object]:
    """Who this process is: written into the lock file while it holds the lock."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": redact_text(" ".join(COMMAND or [Path(sys.executable).name, *sys.argv])),
        "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()),
    }


def describe_holder(path: Path) -> str:
    """The holder as its lock file tells it, in words."""
    try:
        rec = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        rec = {}
    if not rec:  # shared holders (sweep jobs) write nothing
        return "another process (a sweep job reading this root, or one just starting)"
    return (
        f"PID {rec.get('pid')} on {rec.get('host')} since {rec.get('since')}: {rec.get('command')}"
    )


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def hold_root(
    root: str | os.PathLike[str],
    mode: str = "wait",
    shared: bool = False,
    say: Callable[[str], None] = _say,
    remind_s: float = REMIND_S,
) -> Iterator[Path]:
    """Hold the lock of ``root`` for the duration of the block; yields the lock file.

    ``mode="wait"`` blocks until the root is free, saying who holds it (and again every
    ``remind_s`` seconds); ``mode="fail"`` raises :class:`RootBusy` at once.
    """
    path = Path(root) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        _acquire(fd, kind, path, mode, say, remind_s)
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder_record()).encode(), 0)
        try:
            yield path
        finally:
            if not shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _acquire(
    fd: int, kind: int, path: Path, mode: str, say: Callable[[str], None], remind_s: float
) -> None:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    who = describe_holder(path)
    if mode == "fail":
        raise RootBusy(
            f"{path.parent}: in use by {who}; lock=fail refuses to wait (lock=wait waits "
            "for it to finish)"
        )
    say(f"waiting for {path.parent}: in use by {who}")
    deadline = time.monotonic() + remind_s
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            say(f"{path.parent}: free, going on")
            return
        except BlockingIOError:
            time.sleep(0.2)
        if time.monotonic() >= deadline:
            say(f"still waiting for {path.parent}: in use by {describe_holder(path)}")
            deadline = time.monotonic() + remind_s
