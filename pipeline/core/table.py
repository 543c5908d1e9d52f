"""Bring your own table: read a CSV or Parquet file and turn it into a model table.

:func:`read_any` reads the file (a text file's separator is detected, or given);
:func:`prepare` checks it, splits it and returns a frame with the id column, ``split``
(train / valid / oot), ``label`` (0/1) and the feature columns encoded by one
:class:`~pipeline.core.encoding.Encoding` fitted on the training rows: numbers (also
numbers stored as text) as float32, text and boolean columns as integer category codes
(``-1`` for a missing value, one shared code for rare levels), under names LightGBM
accepts. The encoding is returned so it can be stored with the model and applied to
new rows. Every problem raises :class:`~pipeline.base.io.DataError` naming the file,
the column and the rule.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.base.io import DataError
from pipeline.core import encoding as encoding_core
from pipeline.core.encoding import FLAG_COLUMN, Encoding, safe_name

ROW_ID = "row_id"  # id column made up from the row number when the table has none
RESERVED = ("split", "label")


@dataclass
class PreparedTable:
    frame: pd.DataFrame  # id, split, label, features
    id_column: str
    feature_names: list[str]
    categorical: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    positive: str = "1"
    split_rule: str = ""
    encoding: Encoding | None = None  # fitted on the training rows, saved with the model
    flags: np.ndarray | None = None  # per row: what the encoding flagged ("" when clean)
    notes: list[str] = field(default_factory=list)  # what was read unusually, in words


SEPARATORS = (",", ";", "\t", "|")
_SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def sniff_separator(sample: str) -> str:
    """The field separator of a delimited text sample: comma, semicolon, tab or pipe.

    The separator that splits the most lines into as many fields as the header (more
    than one) wins, a wider header on a tie, a comma when nothing splits the header.
    Quoted fields are respected.
    """
    lines = [ln for ln in sample.splitlines() if ln.strip()][:50]
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        lines = lines[:-1]  # the sample may end inside a line
    best, best_key = ",", (0.0, 1)
    for sep in SEPARATORS:
        widths = [len(row) for row in csv.reader(lines, delimiter=sep)]
        if not widths or widths[0] < 2:
            continue
        key = (sum(w == widths[0] for w in widths) / len(widths), widths[0])
        if key > best_key:
            best, best_key = sep, key
    return best


def _read_text(p: Path, sep: str, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    compression = "gzip" if p.name.lower().endswith(".gz") else None
    opener = gzip.open if compression else open
    with opener(p, "rb") as fh:
        head = fh.read(1 << 16)
    try:
        sample, encoding = head.decode("utf-8-sig"), "utf-8-sig"
    except UnicodeDecodeError:
        # a cut multi-byte character at the end of the sample is not an error
        try:
            sample, encoding = head[:-4].decode("utf-8-sig"), "utf-8-sig"
        except UnicodeDecodeError:
            sample, encoding = head.decode("latin-1"), "latin-1"
    chosen = sep or sniff_separator(sample)
    header = next(csv.reader(sample.splitlines()[:1], delimiter=chosen), [])
    names = [h.strip() for h in header]
    dup = sorted({h for h in names if names.count(h) > 1})
    if dup:
        raise DataError(
            f"{p}: header repeats the column name(s) {', '.join(repr(d) for d in dup)} "
            "(rule: every column has its own name; rename or drop the repeats)"
        )
    try:
        df = pd.read_csv(
            p,
            sep=chosen,
            compression=compression,
            encoding=encoding,
            skipinitialspace=True,
            dtype=dict.fromkeys(text_columns, str) or None,
        )
    except pd.errors.ParserError as exc:
        raise DataError(
            f"{p}: rows do not split into the same number of fields with the "
            f"{_SEP_NAMES.get(chosen, repr(chosen))} separator ({str(exc).strip()}); "
            "check the file or set data.sep"
        ) from exc
    if len(df.columns) == 1 and not sep:
        raise DataError(
            f"{p}: only one column found (header {str(df.columns[0])[:60]!r}); "
            "the separator was not recognised: set data.sep"
        )
    return df


def read_any(
    path: str | Path, sep: str = "", text_columns: list[str] | None = None
) -> pd.DataFrame:
    """Read a ``.csv``/``.tsv``/``.txt`` (also gzipped) or ``.parquet`` file, with clear errors.

    A delimited text file's separator (comma, semicolon, tab or pipe) is detected from
    its first lines unless ``sep`` names it. ``text_columns`` of a text file are kept as
    the text in the file (blanks missing), whatever their values look like: an encoding
    reads its categories and numbers stored as text from exactly that text.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")
    name = p.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(p)
        elif name.removesuffix(".gz").endswith((".csv", ".tsv", ".txt")):
            df = _read_text(p, sep, tuple(text_columns or ()))
        else:
            raise DataError(f"{p}: unknown file type; use a .csv, .tsv or .parquet file")
    except DataError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{p}: file is empty (no header and no rows)") from exc
    except Exception as exc:  # noqa: BLE001 - readers fail in many ways; re-raised naming the file
        raise DataError(f"{p}: not a readable table ({exc})") from exc
    if len(df.columns) == 0 or len(df) == 0:
        raise DataError(f"{p}: table has no rows; at least one row per class is needed")
    return df


def _label(df: pd.DataFrame, path: Path, target: str, positive: str) -> tuple[np.ndarray, str]:
    if target not in df.columns:
        raise DataError(
            f"{path}: target column '{target}' is missing (columns: {', '.join(map(str, df.columns[:20]))})"
        )
    col = df[target]
    if col.isna().any():
        raise DataError(
            f"{path}: column '{target}' has {int(col.isna().sum())} missing values; the target must be complete"
        )
    values = pd.unique(col)
    if len(values) < 2:
        raise DataError(
            f"{path}: column '{target}' has one class only ({values[0]!r}); two classes are needed"
        )
    if positive != "":
        if len(values) > 2:
            raise DataError(
                f"{path}: column '{target}' has {len(values)} classes; a binary target is needed"
            )
        return _positive_mask(col, path, target, positive, values), positive
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=np.int8), "True"
    if pd.api.types.is_numeric_dtype(col) and set(np.unique(col.to_numpy())) <= {0, 1}:
        return col.to_numpy(dtype=np.int8), "1"
    raise DataError(
        f"{path}: column '{target}' has values {sorted(map(str, values))[:5]}; it must be 0/1 "
        "or name its positive class with data.positive=VALUE"
    )


def _positive_mask(
    col: pd.Series, path: Path, target: str, positive: str, values: np.ndarray
) -> np.ndarray:
    """1 where the target equals ``positive``: as text (spaces ignored), or as a number."""
    as_text = col.astype(str).str.strip()
    hit = as_text == positive.strip()
    if not hit.any() and pd.api.types.is_numeric_dtype(col):
        with contextlib.suppress(ValueError):
            hit = col == float(positive)
    if not hit.any():
        near = sorted({v for v in as_text if v.lower() == positive.strip().lower()})
        hint = f"; did you mean {near[0]!r}? (case matters)" if near else ""
        raise DataError(
            f"{path}: column '{target}' never takes the data.positive value {positive!r} "
            f"(values: {', '.join(map(str, sorted(map(str, values))[:10]))}){hint}"
        )
    return hit.to_numpy(dtype=np.int8)


def _feature_kind(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "categorical"
    if pd.api.types.is_numeric_dtype(s):
        return "numeric"
    if (
        isinstance(s.dtype, pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(s)
        or s.dtype == object
    ):
        # object columns may hold lists or dicts (nested Parquet): only text is usable
        odd = next((v for v in s.dropna().iloc[:1000] if not isinstance(v, str)), None)
        if odd is not None:
            return f"values of type {type(odd).__name__}"
        return "categorical"
    return f"type {s.dtype}"


def _order_by_time(df: pd.DataFrame, path: Path, time: str) -> np.ndarray:
    if time not in df.columns:
        raise DataError(f"{path}: time column '{time}' (data.time) is missing")
    t = df[time]
    if not (pd.api.types.is_numeric_dtype(t) or pd.api.types.is_datetime64_any_dtype(t)):
        try:
            t = pd.to_datetime(t)
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"{path}: column '{time}' (data.time) is neither numeric nor a date ({exc})"
            ) from exc
    if t.isna().any():
        raise DataError(
            f"{path}: column '{time}' (data.time) has {int(t.isna().sum())} missing values"
        )
    return t.to_numpy()


def time_values(df: pd.DataFrame, time: str, path: str | Path = "table") -> np.ndarray:
    """The ``data.time`` column as sortable values (numbers or dates), checked."""
    return _order_by_time(df, Path(path), time)


def _stratified_pick(y: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask selecting about ``frac`` of each class."""
    pick = np.zeros(len(y), dtype=bool)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        n = int(round(frac * len(idx)))
        pick[rng.permutation(idx)[:n]] = True
    return pick


def _ids(df: pd.DataFrame, p: Path, id_column: str) -> tuple[str, np.ndarray]:
    if not id_column:
        return ROW_ID, np.arange(len(df), dtype=np.int64)
    if id_column not in df.columns:
        raise DataError(f"{p}: id column '{id_column}' (data.id) is missing")
    ids = df[id_column]
    if ids.isna().any() or ids.duplicated().any():
        raise DataError(
            f"{p}: column '{id_column}' (data.id) must be unique and complete "
            f"({int(ids.duplicated().sum())} duplicated, {int(ids.isna().sum())} missing)"
        )
    return id_column, ids.to_numpy()


def _feature_columns(df: pd.DataFrame, p: Path, skip: set[str], id_name: str) -> list[Any]:
    """The usable feature columns of ``df``; anything else is refused by name."""
    cols = []
    for col in df.columns:
        name = str(col)
        if name in skip:
            continue
        if name in RESERVED or name == id_name or safe_name(name) in (*RESERVED, id_name):
            raise DataError(
                f"{p}: column '{name}' clashes with a column the prepared table adds; rename it"
            )
        kind = _feature_kind(df[col])
        if kind not in ("numeric", "categorical"):
            raise DataError(
                f"{p}: column '{name}' has {kind}, which cannot be used as a feature "
                "(numbers, text and booleans can); drop it"
                + (" or name it as data.time" if "datetime" in kind else "")
            )
        if kind == "numeric" and np.isinf(df[col].to_numpy(dtype=np.float64)).any():
            raise DataError(
                f"{p}: column '{name}' has infinite values; only finite numbers or blanks are allowed"
            )
        cols.append(col)
    if not cols:
        raise DataError(f"{p}: no feature columns left besides the target, id and time columns")
    return cols


#: a single column that separates the training classes better than this is refused
MAX_SINGLE_AUC = 0.99


#: fewest training rows of each class a table split may leave: below it the model is
#: near constant and its top features are noise
MIN_TRAIN_CLASS_ROWS = 20


def _split(
    df: pd.DataFrame,
    p: Path,
    y: np.ndarray,
    target: str,
    time: str,
    valid_frac: float,
    oot_frac: float,
    seed: int,
) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(seed)
    split = np.full(len(df), "train", dtype=object)
    if time:
        t = _order_by_time(df, p, time)
        uniq = np.unique(t)
        # the latest time values, whole, until about oot_frac of the rows are covered
        counts = pd.Series(t).value_counts().reindex(uniq[::-1]).to_numpy()
        n_keep = int(np.searchsorted(np.cumsum(counts), oot_frac * len(t)) + 1)
        n_keep = min(n_keep, len(uniq) - 1)
        cut = uniq[::-1][n_keep - 1] if n_keep >= 1 else None
        oot = t >= cut if cut is not None else np.zeros(len(t), dtype=bool)
        rule = f"out-of-time: {time} >= {cut}"
    else:
        oot = _stratified_pick(y, oot_frac, rng)
        rule = f"held out at random (stratified, {oot_frac:.0%})"
    split[oot] = "oot"
    rest = np.flatnonzero(~oot)
    valid = _stratified_pick(y[rest], valid_frac / (1 - oot_frac) if not time else valid_frac, rng)
    split[rest[valid]] = "valid"
    for s in ("train", "valid"):
        if len(np.unique(y[split == s])) < 2:
            raise DataError(
                f"{p}: column '{target}': split '{s}' ({rule}) gets rows of one class only; "
                "more rows of the rarer class are needed"
            )
    train_y = y[split == "train"]
    per_class = {int(c): int((train_y == c).sum()) for c in (0, 1)}
    if min(per_class.values()) < MIN_TRAIN_CLASS_ROWS:
        raise DataError(
            f"{p}: data.valid_frac = {valid_frac:g} and data.oot_frac = {oot_frac:g} ({rule}) "
            f"leave {len(train_y):,} training rows ({per_class[1]:,} of class 1, {per_class[0]:,} of "
            f"class 0; rule: at least {MIN_TRAIN_CLASS_ROWS} of each class): lower "
            "data.valid_frac or data.oot_frac, or give a table with more rows"
        )
    return split.astype(str), rule


def prepare(
    df: pd.DataFrame,
    path: str | Path,
    *,
    target: str,
    id_column: str = "",
    time: str = "",
    positive: str = "",
    valid_frac: float = 0.2,
    oot_frac: float = 0.2,
    seed: int = 42,
    min_count: int = 10,
    decimal: str = "",
    max_single_auc: float = MAX_SINGLE_AUC,
) -> PreparedTable:
    """Check the table, split it, and encode its features as fitted on the training rows.

    ``decimal`` forces the decimal mark of numbers written as text (see
    :func:`pipeline.core.encoding.fit`). A column that alone separates the classes of
    the training rows with an AUC above ``max_single_auc`` is refused by name: it is
    almost surely the target in disguise (or written after the outcome was known).
    """
    p = Path(path)
    y, pos = _label(df, p, target, positive)
    id_name, id_values = _ids(df, p, id_column)
    cols = _feature_columns(df, p, {target, id_column, time} - {""}, id_name)
    split, rule = _split(df, p, y, target, time, valid_frac, oot_frac, seed)
    raw = df[cols].set_axis([str(c) for c in cols], axis=1)
    enc = encoding_core.fit(raw[split == "train"], min_count=min_count, decimal=decimal)
    coded = enc.transform(raw, source=str(p))
    _refuse_leaks(enc, coded[split == "train"], y[split == "train"], p, target, max_single_auc)
    notes = [
        f"column '{c.name}' is read as numbers: {c.bad_cells:,} of its training cells are "
        f"not numbers ({', '.join(repr(w) for w in c.bad_examples)}) and are read as missing"
        for c in enc.columns
        if c.bad_cells
    ]
    feats = {
        c.safe: coded[c.safe].to_numpy(dtype=np.float32 if c.kind == "numeric" else np.int32)
        for c in enc.columns
    }
    frame = pd.DataFrame({id_name: id_values, "split": split, "label": y})
    frame = pd.concat([frame, pd.DataFrame(feats)], axis=1)
    return PreparedTable(
        frame=frame,
        id_column=id_name,
        feature_names=enc.feature_names,
        categorical=enc.categorical,
        categories=enc.categories(),
        positive=pos,
        split_rule=rule,
        encoding=enc,
        flags=coded[FLAG_COLUMN].to_numpy(),
        notes=notes,
    )


def _single_auc(x: np.ndarray, y: np.ndarray, categorical: bool) -> float:
    """How well one column alone separates the classes: max(AUC, 1 - AUC), missing rows
    left out. A category is scored by its level's bad rate in the other half of the rows
    (so that a level per row cannot separate by itself)."""
    if categorical:
        half = np.arange(len(x)) % 2 == 0
        score = np.full(len(x), np.nan)
        for a, b in ((half, ~half), (~half, half)):
            codes, inv = np.unique(x[a], return_inverse=True)
            rate = np.bincount(inv, weights=y[a]) / np.bincount(inv)
            pos = np.searchsorted(codes, x[b])
            pos = np.clip(pos, 0, len(codes) - 1)
            found = codes[pos] == x[b] if len(codes) else np.zeros(int(b.sum()), bool)
            score[b] = np.where(found, rate[pos], np.nan)
        x = score
    keep = np.isfinite(x)
    x, y = x[keep], y[keep]
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = pd.Series(x).rank().to_numpy()
    auc = (ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(max(auc, 1.0 - auc))


def _refuse_leaks(
    enc: Encoding, coded: pd.DataFrame, y: np.ndarray, p: Path, target: str, limit: float
) -> None:
    if limit >= 1.0:
        return
    y = np.asarray(y, dtype=np.float64)
    found = []
    for c in enc.columns:
        x = coded[c.safe].to_numpy(dtype=np.float64)
        if c.kind == "categorical":
            x = np.where(x == encoding_core.MISSING_CODE, np.nan, x)
        auc = _single_auc(x, y, c.kind == "categorical")
        if auc > limit:
            found.append(f"'{c.name}' (AUC {auc:.4f} alone)")
    if found:
        raise DataError(
            f"{p}: column(s) {', '.join(found)} separate the training rows' '{target}' "
            f"almost perfectly (rule: no single column above AUC {limit:g}; such a column is "
            "the target in disguise or was written after the outcome was known): drop it, "
            "or set data.max_single_auc=1 to keep it"
        )
