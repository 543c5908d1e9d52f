"""One exception base for the project, and no broad ``except`` without its reason.

The classes are found by reading every module of ``pipeline/``, so a new exception class
that forgets :class:`PipelineError` fails here.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from pathlib import Path

import pytest

from pipeline.base.errors import PipelineError
from pipeline.base.interrupt import Interrupted
from pipeline.base.io import DataError

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
BUILTIN_EXCEPTIONS = {
    name
    for name in dir(builtins)
    if isinstance(getattr(builtins, name), type)
    and issubclass(getattr(builtins, name), BaseException)
}
#: Deliberately outside the base: a signal must unwind past ``except Exception``.
OUTSIDE = {"Interrupted"}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def exception_classes() -> list[tuple[str, str]]:
    """(module, class name) of every exception class defined in ``pipeline/``."""
    classes: dict[str, tuple[str, list[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b).split(".")[-1] for b in node.bases]
                classes[node.name] = (_module(path), bases)
    found = {n for n, (_, bases) in classes.items() if set(bases) & BUILTIN_EXCEPTIONS}
    grew = True
    while grew:  # subclasses of the project's own exceptions
        more = {n for n, (_, bases) in classes.items() if set(bases) & found} - found
        found |= more
        grew = bool(more)
    return sorted((classes[n][0], n) for n in found if n != "PipelineError")


def test_the_scan_finds_the_known_classes() -> None:
    names = {n for _, n in exception_classes()}
    assert {"DataError", "ConfigError", "TrackingError", "Interrupted"} <= names
    assert len(names) >= 10


@pytest.mark.parametrize(("module", "name"), exception_classes())
def test_every_exception_derives_from_the_base(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    if name in OUTSIDE:
        assert not issubclass(cls, Exception), f"{name} would be caught by `except Exception`"
        return
    assert issubclass(cls, PipelineError), f"{module}.{name} does not derive from PipelineError"
    builtin = [b for b in cls.__mro__ if b.__module__ == "builtins" and b not in (object,)]
    assert builtin[0] is not Exception, f"{name} keeps no built-in base (ValueError, ...)"


def test_callers_catching_the_builtin_base_still_catch() -> None:
    with pytest.raises(ValueError):
        raise DataError("x.parquet: column 'a' is missing")
    with pytest.raises(PipelineError):
        raise DataError("x.parquet: column 'a' is missing")
    assert not issubclass(Interrupted, PipelineError)


BROAD = re.compile(r"^\s*except\s*(\(?\s*(Exception|BaseException)\b|:)")
REASON = re.compile(r"#\s*noqa: BLE001 - \S")


def test_every_broad_except_states_its_reason() -> None:
    bare = [
        f"{path.relative_to(PACKAGE.parent)}:{i}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if BROAD.match(line) and not REASON.search(line)
    ]
    assert not bare, f"a broad except without '# noqa: BLE001 - <reason>': {bare}"
