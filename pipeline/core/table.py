"""Bring your own table: read a CSV or Parquet file and turn it into a model table.

:func:`read_any` reads the file; :func:`prepare` checks it and returns a frame with the
id column, ``split`` (train / valid / oot), ``label`` (0/1) and the feature columns:
numbers as float32, text and boolean columns as integer category codes (``-1`` for a
missing value; the code-to-text mapping is returned so it can be stored with the
model). Every problem raises :class:`~pipeline.base.io.DataError` naming the file, the
column and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.base.io import DataError

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


def read_any(path: str | Path) -> pd.DataFrame:
    """Read a ``.csv`` (also ``.csv.gz``) or ``.parquet`` file, with clear errors."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")
    name = p.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(p)
        elif name.endswith((".csv", ".csv.gz", ".txt")):
            df = pd.read_csv(p)
        else:
            raise DataError(f"{p}: unknown file type; use a .csv or .parquet file")
    except DataError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{p}: file is empty (no header and no rows)") from exc
    except Exception as exc:
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
        as_text = col.astype(str)
        if positive not in set(as_text):
            raise DataError(
                f"{path}: column '{target}' never takes the data.positive value {positive!r} "
                f"(values: {', '.join(map(str, sorted(map(str, values))[:10]))})"
            )
        if len(values) > 2:
            raise DataError(
                f"{path}: column '{target}' has {len(values)} classes; a binary target is needed"
            )
        return (as_text == positive).to_numpy(dtype=np.int8), positive
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=np.int8), "True"
    if pd.api.types.is_numeric_dtype(col) and set(np.unique(col.to_numpy())) <= {0, 1}:
        return col.to_numpy(dtype=np.int8), "1"
    raise DataError(
        f"{path}: column '{target}' has values {sorted(map(str, values))[:5]}; it must be 0/1 "
        "or name its positive class with data.positive=VALUE"
    )


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


def _stratified_pick(y: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask selecting about ``frac`` of each class."""
    pick = np.zeros(len(y), dtype=bool)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        n = int(round(frac * len(idx)))
        pick[rng.permutation(idx)[:n]] = True
    return pick


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
) -> PreparedTable:
    """Check the table and split it; see the module docstring."""
    p = Path(path)
    y, pos = _label(df, p, target, positive)
    if id_column:
        if id_column not in df.columns:
            raise DataError(f"{p}: id column '{id_column}' (data.id) is missing")
        ids = df[id_column]
        if ids.isna().any() or ids.duplicated().any():
            raise DataError(
                f"{p}: column '{id_column}' (data.id) must be unique and complete "
                f"({int(ids.duplicated().sum())} duplicated, {int(ids.isna().sum())} missing)"
            )
        id_name, id_values = id_column, ids.to_numpy()
    else:
        id_name, id_values = ROW_ID, np.arange(len(df), dtype=np.int64)
    skip = {target, id_column, time} - {""}
    feats: dict[str, np.ndarray] = {}
    categorical: list[str] = []
    categories: dict[str, list[str]] = {}
    for col in df.columns:
        name = str(col)
        if name in skip:
            continue
        if name in RESERVED or name == id_name:
            raise DataError(
                f"{p}: column '{name}' clashes with a column the prepared table adds; rename it"
            )
        kind = _feature_kind(df[col])
        if kind == "numeric":
            values = df[col].to_numpy(dtype=np.float64)
            if np.isinf(values).any():
                raise DataError(
                    f"{p}: column '{name}' has infinite values; only finite numbers or blanks are allowed"
                )
            feats[name] = values.astype(np.float32)
        elif kind == "categorical":
            text = df[col].astype("string")
            levels = sorted(text.dropna().unique().tolist())
            lookup = {v: i for i, v in enumerate(levels)}
            feats[name] = np.array([-1 if v is pd.NA else lookup[v] for v in text], dtype=np.int32)
            categorical.append(name)
            categories[name] = levels
        else:
            raise DataError(
                f"{p}: column '{name}' has {kind}, which cannot be used as a feature "
                "(numbers, text and booleans can); drop it"
                + (" or name it as data.time" if "datetime" in kind else "")
            )
    if not feats:
        raise DataError(f"{p}: no feature columns left besides the target, id and time columns")
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
    frame = pd.DataFrame({id_name: id_values, "split": split.astype(str), "label": y})
    frame = pd.concat([frame, pd.DataFrame(feats)], axis=1)
    return PreparedTable(
        frame=frame,
        id_column=id_name,
        feature_names=list(feats),
        categorical=categorical,
        categories=categories,
        positive=pos,
        split_rule=rule,
    )


def describe(t: PreparedTable) -> dict[str, Any]:
    counts = t.frame.split.value_counts().to_dict()
    return {
        "rows": int(len(t.frame)),
        "features": len(t.feature_names),
        "categorical": list(t.categorical),
        "split_rows": {k: int(v) for k, v in counts.items()},
        "positive_rate": float(t.frame.label.mean()),
        "split_rule": t.split_rule,
    }
