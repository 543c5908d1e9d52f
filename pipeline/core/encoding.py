"""One encoding of a table's feature columns, fitted on the training rows and saved as JSON.

:func:`fit` learns, per column, how to turn raw values into the numbers a model reads:

* numbers stay numbers; numbers stored as text (``"1,200"``, ``" 3.5 "``, ``"2,5"`` with a
  decimal comma) are parsed the same way every time;
* text, boolean and category columns become integer codes, one per level seen at least
  ``min_count`` times in training; rarer levels share one ``rare`` code, a missing value
  is :data:`MISSING_CODE`;
* every column gets a name LightGBM accepts (no commas, quotes, brackets, colons or
  other JSON-special characters), the original kept beside it for the reader.

:meth:`Encoding.transform` applies exactly that mapping to any frame with the same
columns: a level never seen in training gets the column's rare code, a number outside
the training range is kept as is, and both are flagged in the text column
:data:`FLAG_COLUMN` (one entry ``"unseen:<column>"``, ``"range:<column>"`` or
``"unparsed:<column>"`` per finding, ``;``-separated, empty when the row is clean).
:meth:`Encoding.to_json` / :meth:`Encoding.from_json` store it without pickle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

FLAG_COLUMN = "encoding_flags"
MISSING_CODE = -1
RARE = "rare"
VERSION = 1
# text read as a missing value in any column
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "-", "--", "."})
NUMERIC_SHARE = 0.99  # a text column is numeric when this share of its values parse
_UNSAFE = re.compile(r"[^0-9A-Za-z_]+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")


def safe_name(name: str) -> str:
    """The column name with every run of characters outside ``[0-9A-Za-z_]`` made ``_``."""
    out = _UNSAFE.sub("_", str(name)).strip("_")
    return out or "column"


def _safe_names(names: list[str]) -> dict[str, str]:
    """Original -> safe name, distinct (a clash gets a ``_2``, ``_3`` ... suffix)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        base = safe_name(name)
        cand, k = base, 2
        while cand.lower() in taken:
            cand, k = f"{base}_{k}", k + 1
        taken.add(cand.lower())
        out[name] = cand
    return out


def _as_text(s: pd.Series) -> pd.Series:
    """Values as stripped text, with the missing-value tokens as ``<NA>``."""
    text = s.astype("string").str.strip()
    return text.mask(text.str.lower().isin(MISSING_TOKENS))


def parse_numbers(s: pd.Series, decimal_comma: bool) -> pd.Series:
    """Numbers from text: thousands commas dropped, or a decimal comma read as a point."""
    text = _as_text(s)
    if decimal_comma:
        text = text.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    else:
        text = text.str.replace(_THOUSANDS, "", regex=True)
    return pd.to_numeric(text, errors="coerce").astype(float)


def _numeric_reading(s: pd.Series) -> tuple[bool, bool]:
    """Whether a text column holds numbers, and whether they use a decimal comma."""
    text = _as_text(s)
    n = int(text.notna().sum())
    if n == 0:
        return False, False
    best = (0, False)
    for comma in (False, True):
        ok = int(parse_numbers(text, comma).notna().sum())
        if ok > best[0]:
            best = (ok, comma)
    return best[0] >= NUMERIC_SHARE * n, best[1]


@dataclass
class ColumnEncoding:
    name: str  # as in the table
    safe: str  # as the model sees it
    kind: str  # numeric | categorical
    from_text: bool = False  # numeric column stored as text
    decimal_comma: bool = False
    low: float = float("nan")  # training range of a numeric column
    high: float = float("nan")
    levels: list[str] = field(default_factory=list)  # categorical: code i = levels[i]
    rare_levels: list[str] = field(default_factory=list)  # training levels merged into rare

    @property
    def rare_code(self) -> int:
        """Code shared by rare and unseen levels (one past the kept levels)."""
        return len(self.levels)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "safe": self.safe, "kind": self.kind}
        if self.kind == "numeric":
            out.update(
                from_text=self.from_text,
                decimal_comma=self.decimal_comma,
                low=None if np.isnan(self.low) else float(self.low),
                high=None if np.isnan(self.high) else float(self.high),
            )
        else:
            out.update(levels=list(self.levels), rare_levels=list(self.rare_levels))
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ColumnEncoding:
        low, high = d.get("low"), d.get("high")
        return cls(
            name=str(d["name"]),
            safe=str(d["safe"]),
            kind=str(d["kind"]),
            from_text=bool(d.get("from_text", False)),
            decimal_comma=bool(d.get("decimal_comma", False)),
            low=float("nan") if low is None else float(low),
            high=float("nan") if high is None else float(high),
            levels=[str(v) for v in d.get("levels", [])],
            rare_levels=[str(v) for v in d.get("rare_levels", [])],
        )


def _fit_column(name: str, safe: str, s: pd.Series, min_count: int) -> ColumnEncoding:
    is_bool = pd.api.types.is_bool_dtype(s)
    if pd.api.types.is_numeric_dtype(s) and not is_bool:
        x = s.to_numpy(dtype=float)
        col = ColumnEncoding(name, safe, "numeric")
    else:
        numeric, comma = (False, False) if is_bool else _numeric_reading(s)
        if not numeric:
            counts = _as_text(s).value_counts()
            kept = sorted(str(v) for v, c in counts.items() if c >= min_count)
            rare = sorted(str(v) for v, c in counts.items() if c < min_count)
            return ColumnEncoding(name, safe, "categorical", levels=kept, rare_levels=rare)
        x = parse_numbers(s, comma).to_numpy(dtype=float)
        col = ColumnEncoding(name, safe, "numeric", from_text=True, decimal_comma=comma)
    finite = x[np.isfinite(x)]
    if len(finite):
        col.low, col.high = float(finite.min()), float(finite.max())
    return col


@dataclass
class Encoding:
    columns: list[ColumnEncoding]
    min_count: int = 10

    @property
    def feature_names(self) -> list[str]:
        """The model's (safe) column names, in table order."""
        return [c.safe for c in self.columns]

    @property
    def original_names(self) -> dict[str, str]:
        """Safe name -> the name in the table, for showing to the reader."""
        return {c.safe: c.name for c in self.columns}

    @property
    def categorical(self) -> list[str]:
        return [c.safe for c in self.columns if c.kind == "categorical"]

    def categories(self) -> dict[str, list[str]]:
        """Safe name -> text of each code (the rare code last, as ``rare``)."""
        return {c.safe: [*c.levels, RARE] for c in self.columns if c.kind == "categorical"}

    def transform(self, frame: pd.DataFrame, source: str = "table") -> pd.DataFrame:
        """The encoded feature columns (safe names) and :data:`FLAG_COLUMN`.

        Numeric columns come out as float64 (missing: NaN), categorical ones as int32
        codes (missing: :data:`MISSING_CODE`).
        """
        missing = [c.name for c in self.columns if c.name not in frame.columns]
        if missing:
            raise KeyError(
                f"{source}: column(s) {', '.join(repr(m) for m in missing)} of the encoding "
                "are missing; the table must have every column the model was trained on"
            )
        out: dict[str, np.ndarray] = {}
        flags = np.full(len(frame), "", dtype=object)

        def flag(mask: np.ndarray, what: str) -> None:
            if mask.any():
                flags[mask] = flags[mask] + np.where(flags[mask] == "", "", ";") + what

        for c in self.columns:
            s = frame[c.name]
            if c.kind == "numeric":
                if c.from_text or not pd.api.types.is_numeric_dtype(s):
                    x = parse_numbers(s, c.decimal_comma).to_numpy(dtype=float)
                    flag(np.isnan(x) & _as_text(s).notna().to_numpy(), f"unparsed:{c.name}")
                else:
                    x = s.to_numpy(dtype=float)
                if not np.isnan(c.low):
                    flag((x < c.low) | (x > c.high), f"range:{c.name}")
                out[c.safe] = x
            else:
                text = _as_text(s)
                lookup = {v: i for i, v in enumerate(c.levels)}
                lookup.update({v: c.rare_code for v in c.rare_levels})
                codes = text.map(lookup)
                unseen = (codes.isna() & text.notna()).to_numpy()
                flag(unseen, f"unseen:{c.name}")
                codes = codes.mask(unseen, c.rare_code).fillna(MISSING_CODE)
                out[c.safe] = codes.to_numpy(dtype=np.int32)
        result = pd.DataFrame(out, index=frame.index)
        result[FLAG_COLUMN] = flags.astype(str)
        return result

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "min_count": self.min_count,
            "columns": [c.to_json() for c in self.columns],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Encoding:
        if int(d.get("version", -1)) != VERSION:
            raise ValueError(
                f"encoding version {d.get('version')!r} is not {VERSION}; retrain the model"
            )
        return cls(
            columns=[ColumnEncoding.from_json(c) for c in d["columns"]],
            min_count=int(d.get("min_count", 10)),
        )


def fit(frame: pd.DataFrame, min_count: int = 10) -> Encoding:
    """Learn the encoding of every column of ``frame`` (give it the training rows only)."""
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate column names {dup}; every column needs its own name")
    safe = _safe_names(names)
    cols = [
        _fit_column(n, safe[n], frame[c], min_count)
        for n, c in zip(names, frame.columns, strict=True)
    ]
    return Encoding(columns=cols, min_count=min_count)
