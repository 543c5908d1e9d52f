"""What a person reads about a model's features: the table's own column names and levels.

A bring-your-own table reaches the model under safe column names (see
:mod:`pipeline.core.encoding`), and its text categories as integer codes. Files that
other code reads keep those names and codes; everything written for a person (the
report, reasons text, plot labels, console lines) goes through :class:`Labels` to show
the column as the table names it and a category as its level text.

:func:`labels_of` builds it from a model's metadata (``models/model.json``). A simulator
model's features are the registry's own names: there the labels are the identity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.encoding import MISSING_CODE, Encoding

MISSING_TEXT = "missing"


def number_text(v: float) -> str:
    """A feature value as short text: integers whole, small numbers to 3 significant digits."""
    f = float(v)
    if not math.isfinite(f):
        return "n/a"
    if f.is_integer():
        return f"{int(f)}"
    return f"{f:.3g}" if abs(f) < 1 else f"{f:,.1f}"


def number_texts(values: Any) -> np.ndarray:
    """:func:`number_text` of every value, as an object array: each distinct value is
    written once (a feature column repeats few values; a reasons table reads hundreds of
    thousands of them)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) == 0:
        return np.empty(0, dtype=object)
    # -0.0 and 0.0 meet as one value, NaNs as one: their texts are the same
    distinct, at = np.unique(v, return_inverse=True)
    texts = np.array([number_text(d) for d in distinct], dtype=object)
    return texts[at.reshape(-1)]


@dataclass(frozen=True)
class Labels:
    """Safe feature name -> the table's name, and categorical codes -> their level text."""

    names: Mapping[str, str] = field(default_factory=dict)
    levels: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def identity(self) -> bool:
        """Whether every name reads as it is (a simulator model, or a table of safe names)."""
        return not self.levels and all(k == v for k, v in self.names.items())

    def name(self, feature: str) -> str:
        """The column name as the table spells it (an unknown feature as it is)."""
        return self.names.get(feature, feature)

    def all_names(self, features: Sequence[str]) -> list[str]:
        return [self.name(f) for f in features]

    def value(self, feature: str, v: Any) -> str:
        """A value as text: a category's level, ``missing`` for its missing code, else the number."""
        levels = self.levels.get(feature)
        try:
            f = float(v)
        except (TypeError, ValueError):
            return str(v)
        if levels is not None and math.isfinite(f) and f.is_integer():
            code = int(f)
            if code == MISSING_CODE:
                return MISSING_TEXT
            if 0 <= code < len(levels):
                return str(levels[code])
        return number_text(f)

    def reason(self, feature: str, v: Any) -> str:
        """One reason as a person reads it: ``<column> = <value>``."""
        return f"{self.name(feature)} = {self.value(feature, v)}"


def labels_of(meta: Mapping[str, Any]) -> Labels:
    """The labels of a model, from its metadata (``model.json``); identity for a simulator model.

    A table model saved without an encoding (older models) keeps its names as they are.
    Raises ``ValueError`` when the saved encoding cannot be read.
    """
    if str(meta.get("mode", "simulator")) != "table" or not meta.get("encoding"):
        return Labels()
    enc = Encoding.from_json(dict(meta["encoding"]))
    return Labels(names=enc.original_names, levels=enc.categories())
