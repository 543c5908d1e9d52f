"""Progress bars for long loops: shown on a terminal, silent otherwise (CI, logs)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(it: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    disable = not sys.stderr.isatty()
    yield from tqdm(it, total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True)
