"""One encoding of a table's feature columns, fitted on the training rows and saved as JSON.

:func:`fit` learns, per column, how to turn raw values into the numbers a model reads:

* numbers stay numbers; numbers stored as text (``"1,200"``, ``" 3.5 "``, ``"2,5"`` with a
  decimal comma) are parsed the same way every time. Whether a comma is a decimal mark
  or a thousands separator is read from the whole column (:func:`comma_convention`:
  ``0,126``, ``12,5`` or ``1.234,5`` can only be decimal commas, ``1,234,567`` or
  ``1,234.5`` only thousands separators), or forced with ``decimal``; a column whose
  commas say nothing either way (``1,234`` only) reads them as thousands separators;
* a column whose values are mostly numbers (:data:`MOSTLY_NUMERIC` of them, the rest a
  few distinct words such as ``oops``) stays numeric: the other cells are read as
  missing and counted in :attr:`ColumnEncoding.bad_cells`, so the caller can name them;
* text, boolean and category columns become integer codes, one per level seen at least
  ``min_count`` times in training; rarer levels share one ``rare`` code, a missing value
  is :data:`MISSING_CODE`;
* every column gets a name LightGBM accepts (no commas, quotes, brackets, colons or
  other JSON-special characters), the original kept beside it for the reader.

:meth:`Encoding.transform` applies exactly that mapping to any frame with the same
columns: a level never seen in training gets the column's rare code, a number outside
the training range is kept as is, and both are flagged in the text column
:data:`FLAG_COLUMN` (one entry ``"unseen:<column>"``, ``"range:<column>"`` or
``"unparsed:<column>"`` per finding, ``;``-separated, empty when the row is clean);
:meth:`Encoding.encode` returns the same findings as :class:`Finding` masks with their
rule. A level is matched by its exact text, else by a loose form (case, ``1`` = ``1.0``),
so a file read with other types than the training table still gets the same codes.
:meth:`Encoding.to_json` / :meth:`Encoding.from_json` store it without pickle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.base.io import DataError

FLAG_COLUMN = "encoding_flags"
MISSING_CODE = -1
RARE = "rare"
VERSION = 1
# text read as a missing value in any column
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "-", "--", "."})
NUMERIC_SHARE = 0.99  # a text column is numeric when this share of its values parse
#: ... or when this share parse and the rest are at most MAX_BAD_WORDS distinct texts
MOSTLY_NUMERIC = 0.8
MAX_BAD_WORDS = 3
#: how a table writes its decimal mark: "" read from each column, "." or ","
DECIMAL_MARKS = ("", ".", ",")
# a comma that can only be a decimal mark: a fraction of other than three digits, a zero
# or a four-digit integer part, or dots grouping the thousands before it
_DECIMAL_ONLY = re.compile(
    r"[+-]?(?:\d*,(?:\d{1,2}|\d{4,})|0,\d+|\d{4,},\d+|\d{1,3}(?:\.\d{3})+,\d+)"
)
# commas that can only separate thousands: two groups or more, or a decimal point after
_THOUSANDS_ONLY = re.compile(r"[+-]?\d{1,3}(?:(?:,\d{3}){2,}(?:\.\d+)?|(?:,\d{3})+\.\d+)")
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


#: tokens that are missing in a numeric column but may be a real level of a category
#: (German credit's "other debtors: none" is the commonest answer, not a blank)
LEVEL_WORDS = frozenset({"none"})


def _as_text(s: pd.Series, category: bool = False) -> pd.Series:
    """Values as stripped text, with the missing-value tokens as ``<NA>``.

    ``category``: the values are levels, where a word such as ``none`` is kept.
    """
    text = s.astype("string").str.strip()
    tokens = MISSING_TOKENS - LEVEL_WORDS if category else MISSING_TOKENS
    return text.mask(text.str.lower().isin(tokens))


def parse_numbers(s: pd.Series, decimal_comma: bool) -> pd.Series:
    """Numbers from text: thousands commas dropped, or a decimal comma read as a point."""
    text = _as_text(s)
    if decimal_comma:
        text = text.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    else:
        text = text.str.replace(_THOUSANDS, "", regex=True)
    return pd.to_numeric(text, errors="coerce").astype(float)


def comma_convention(s: pd.Series) -> bool | None:
    """Whether the column's commas are decimal marks (True), thousands separators (False),
    or cannot tell (None: no comma, only ambiguous ones such as ``1,234``, or both kinds)."""
    text = _as_text(s).dropna()
    text = text[text.str.contains(",", regex=False)]
    if text.empty:
        return None
    decimal = bool(text.str.fullmatch(_DECIMAL_ONLY).any())
    thousands = bool(text.str.fullmatch(_THOUSANDS_ONLY).any())
    return decimal if decimal != thousands else None


def _reading(s: pd.Series, decimal: str = "") -> bool:
    """The decimal-comma reading of a text column: forced, else read from its commas."""
    if decimal:
        return decimal == ","
    return bool(comma_convention(s))


def _numeric_reading(s: pd.Series, decimal: str = "") -> tuple[bool, bool, int]:
    """Whether a text column holds numbers, whether they use a decimal comma, and how
    many of its non-missing cells are not numbers (read as missing)."""
    text = _as_text(s)
    n = int(text.notna().sum())
    if n == 0:
        return False, False, 0
    comma = _reading(text, decimal)
    parsed = parse_numbers(text, comma)
    ok = int(parsed.notna().sum())
    if ok >= NUMERIC_SHARE * n:
        return True, comma, n - ok
    bad_words = text[parsed.isna() & text.notna()].str.lower().nunique()
    if ok >= MOSTLY_NUMERIC * n and bad_words <= MAX_BAD_WORDS:
        return True, comma, n - ok
    return False, comma, 0


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
    # numeric from text: training cells that were not numbers (read as missing), and a
    # few of their distinct texts, for the message that names them
    bad_cells: int = 0
    bad_examples: list[str] = field(default_factory=list)

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
                bad_cells=int(self.bad_cells),
                bad_examples=list(self.bad_examples),
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
            bad_cells=int(d.get("bad_cells", 0)),
            bad_examples=[str(v) for v in d.get("bad_examples", [])],
        )


def _fit_column(
    name: str, safe: str, s: pd.Series, min_count: int, decimal: str = ""
) -> ColumnEncoding:
    is_bool = pd.api.types.is_bool_dtype(s)
    if pd.api.types.is_numeric_dtype(s) and not is_bool:
        x = s.to_numpy(dtype=float)
        col = ColumnEncoding(name, safe, "numeric")
    else:
        numeric, comma, bad = (False, False, 0) if is_bool else _numeric_reading(s, decimal)
        if not numeric:
            counts = _as_text(s, category=True).value_counts()
            kept = sorted(str(v) for v, c in counts.items() if c >= min_count)
            rare = sorted(str(v) for v, c in counts.items() if c < min_count)
            return ColumnEncoding(name, safe, "categorical", levels=kept, rare_levels=rare)
        parsed = parse_numbers(s, comma)
        x = parsed.to_numpy(dtype=float)
        col = ColumnEncoding(name, safe, "numeric", from_text=True, decimal_comma=comma)
        if bad:
            text = _as_text(s)
            words = text[parsed.isna() & text.notna()].value_counts()
            col.bad_cells, col.bad_examples = bad, [str(v) for v in words.index[:MAX_BAD_WORDS]]
    finite = x[np.isfinite(x)]
    if len(finite):
        col.low, col.high = float(finite.min()), float(finite.max())
    return col


@dataclass(frozen=True)
class Finding:
    """Rows of one column that the encoding flags: ``kind`` is unseen, range or unparsed."""

    kind: str
    column: str  # the name in the table
    mask: np.ndarray  # per row: flagged
    rule: str  # what the rows break, in words


def _canonical(text: str) -> str:
    """A level's text compared loosely: lower case, a number written one way (1 = 1.0)."""
    low = text.strip().lower()
    try:
        x = float(low)
    except ValueError:
        return low
    if not np.isfinite(x):
        return low
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else repr(x)


def _level_codes(c: ColumnEncoding, text: pd.Series) -> pd.Series:
    """Code of each level text; a value with no exact match tries its loose form (a
    boolean or number read differently than in training, e.g. ``true`` or ``1.0``)."""
    lookup = {v: i for i, v in enumerate(c.levels)}
    lookup.update({v: c.rare_code for v in c.rare_levels})
    codes = text.map(lookup)
    loose = codes.isna() & text.notna()
    if loose.any():
        by_form: dict[str, int | None] = {}
        for v, code in lookup.items():
            form = _canonical(v)
            by_form[form] = code if by_form.get(form, code) == code else None
        forms = {k: v for k, v in by_form.items() if v is not None}
        codes[loose] = text[loose].map(_canonical).map(forms)
    return codes


def _some(values: list[str], k: int = 8) -> str:
    head = ", ".join(repr(v) for v in values[:k])
    return head + (f" and {len(values) - k} more" if len(values) > k else "")


def _encode_column(
    c: ColumnEncoding, s: pd.Series, decimal: str = ""
) -> tuple[np.ndarray, list[Finding]]:
    found = []
    if c.kind == "numeric":
        if c.from_text or not pd.api.types.is_numeric_dtype(s):
            # the same rule as in training: the column's own commas decide where they
            # can, the training reading (or the forced mark) where they cannot
            seen = None if decimal else comma_convention(s)
            comma = (decimal == ",") if decimal else (c.decimal_comma if seen is None else seen)
            x = parse_numbers(s, comma).to_numpy(dtype=float)
            bad = np.isnan(x) & _as_text(s).notna().to_numpy()
            sep = "decimal comma" if comma else "decimal point"
            found.append(Finding("unparsed", c.name, bad, f"a number ({sep}) or blank"))
        else:
            x = s.to_numpy(dtype=float)
        if not np.isnan(c.low):
            out = (x < c.low) | (x > c.high)
            found.append(Finding("range", c.name, out, f"training range {c.low:g} .. {c.high:g}"))
        return x, [f for f in found if f.mask.any()]
    text = _as_text(s, category=True)
    codes = _level_codes(c, text)
    unseen = (codes.isna() & text.notna()).to_numpy()
    rule = f"categories seen in training: {_some([*c.levels, *c.rare_levels])}"
    found.append(Finding("unseen", c.name, unseen, rule))
    codes = codes.mask(unseen, c.rare_code).fillna(MISSING_CODE)
    return codes.to_numpy(dtype=np.int32), [f for f in found if f.mask.any()]


@dataclass
class Encoding:
    columns: list[ColumnEncoding]
    min_count: int = 10
    decimal: str = ""  # the forced decimal mark ("" read from each column)

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

    @property
    def text_columns(self) -> list[str]:
        """Table names of the columns read as text: categories and numbers stored as text."""
        return [c.name for c in self.columns if c.kind == "categorical" or c.from_text]

    def select(self, safe_names: list[str]) -> Encoding:
        """The encoding of the columns a model uses (``safe_names``), in that order."""
        by_safe = {c.safe: c for c in self.columns}
        unknown = [n for n in safe_names if n not in by_safe]
        if unknown:
            raise ValueError(f"model feature(s) {unknown} are not columns of the encoding")
        return Encoding(
            columns=[by_safe[n] for n in safe_names],
            min_count=self.min_count,
            decimal=self.decimal,
        )

    def encode(
        self, frame: pd.DataFrame, source: str = "table"
    ) -> tuple[pd.DataFrame, list[Finding]]:
        """The encoded feature columns (safe names) and what was flagged, column by column.

        Numeric columns come out as float64 (missing: NaN), categorical ones as int32
        codes (missing: :data:`MISSING_CODE`). A column of the encoding that ``frame``
        lacks raises :class:`~pipeline.base.io.DataError` naming ``source`` and the column.
        """
        missing = [c for c in self.columns if c.name not in frame.columns]
        if missing:
            named = ", ".join(
                repr(c.name) + (f" (model feature {c.safe!r})" if c.safe != c.name else "")
                for c in missing
            )
            raise DataError(
                f"{source}: column(s) {named} missing (rule: the table must have every "
                "column the model was trained on, under its name in the training table)"
            )
        out: dict[str, np.ndarray] = {}
        found: list[Finding] = []
        for c in self.columns:
            values, col_found = _encode_column(c, frame[c.name], self.decimal)
            out[c.safe] = values
            found.extend(col_found)
        return pd.DataFrame(out, index=frame.index), found

    def transform(self, frame: pd.DataFrame, source: str = "table") -> pd.DataFrame:
        """The encoded feature columns (see :meth:`encode`) and :data:`FLAG_COLUMN`."""
        result, found = self.encode(frame, source)
        flags = np.full(len(frame), "", dtype=object)
        for f in found:
            m = f.mask
            flags[m] = flags[m] + np.where(flags[m] == "", "", ";") + f"{f.kind}:{f.column}"
        result[FLAG_COLUMN] = flags.astype(str)
        return result

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "min_count": self.min_count,
            "decimal": self.decimal,
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
            decimal=str(d.get("decimal", "")),
        )


def fit(frame: pd.DataFrame, min_count: int = 10, decimal: str = "") -> Encoding:
    """Learn the encoding of every column of ``frame`` (give it the training rows only).

    ``decimal`` forces the decimal mark of numbers stored as text (``"."`` or ``","``);
    empty, each column's own commas decide (:func:`comma_convention`).
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    if decimal not in DECIMAL_MARKS:
        raise ValueError(f"decimal must be one of {DECIMAL_MARKS}, got {decimal!r}")
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate column names {dup}; every column needs its own name")
    safe = _safe_names(names)
    cols = [
        _fit_column(n, safe[n], frame[c], min_count, decimal)
        for n, c in zip(names, frame.columns, strict=True)
    ]
    return Encoding(columns=cols, min_count=min_count, decimal=decimal)
