"""Scoring new borrowers with the champion model: probability, risk tier, reasons, advice.

Input is either a folder of raw borrower tables in the simulator's layout (features
are built at one snapshot month for the accounts still eligible then) or a feature
table (Parquet or CSV) holding an id column and the model's feature columns. A feature
table is checked with a pandera schema; every failure becomes a
:class:`~pipeline.base.io.DataError` naming the file, the column and the rule.

A table model also scores its own raw table (the training table's column names, text
categories, numbers stored as text): :func:`encode_raw` applies the encoding saved with
the model, exactly as in training, and keeps per row what it flagged (unseen category,
value outside the training range, text that is not a number) for the output columns
:data:`RAW_FLAGS`; :func:`refuse_findings` turns them into an error instead.

Which model scores (the registry's champion or the local one) is decided by the
adapters (:mod:`pipeline.adapters.model_registry`, :mod:`pipeline.adapters.catalog`);
:attr:`ScoringModel.source` says which. Reasons and advice reuse :mod:`pipeline.core.explain` and :mod:`pipeline.core.advice`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from pipeline.base.causes import OCCUPATIONS
from pipeline.base.io import DataError
from pipeline.base.registry import BY_NAME
from pipeline.core import advice as advice_core
from pipeline.core import compiled
from pipeline.core import explain as explain_core
from pipeline.core import survival as survival_core
from pipeline.core.calibration import Calibrator
from pipeline.core.encoding import Encoding, Finding
from pipeline.core.labels import labels_of
from pipeline.core.table import ROW_ID

#: Integer-coded categorical features and the number of their categories.
CATEGORY_CODES: dict[str, int] = {"occupation_code": len(OCCUPATIONS), "age_band_code": 5}


# ---- the model --------------------------------------------------------------------


@dataclass
class ScoringModel:
    booster: Any
    names: list[str]
    calibrator: Calibrator
    mode: str  # simulator | table
    source: str  # where it was loaded from, for messages and outputs
    W: np.ndarray | None = None  # feature -> cause weights (simulator mode)
    attribution: str = "registry"
    meta: dict[str, Any] = field(default_factory=dict)  # model.json, when the loader passes it

    @property
    def reference(self) -> np.ndarray | None:
        """The training rows' median of each feature (model.json ``reference``): a reason's
        risky side is read against it; None for a model saved without one."""
        return explain_core.reference_medians(self.meta, self.names)

    @property
    def id_column(self) -> str:
        """The id column the model's rows carry: ``borrower_id``, or the table's own id."""
        if self.mode == "table":
            return str(self.meta.get("table", {}).get("id") or "row_id")
        return "borrower_id"

    def prob(self, X: np.ndarray) -> np.ndarray:
        raw = compiled.predict(self.booster, np.asarray(X, dtype=np.float32))
        return np.asarray(self.calibrator.apply(raw), dtype=np.float64)


# ---- validation of a feature table ---------------------------------------------------


def feature_schema(
    names: Sequence[str], id_col: str, table_mode: bool = False, per_snapshot: bool = False
) -> Any:
    """The pandera schema a feature table must meet to be scored.

    ``table_mode``: ids of any type (the table's own), missing feature values allowed
    (the model was trained with them). ``per_snapshot``: an id may repeat, once per
    ``snapshot`` (checked by :func:`validate_features`).
    """
    # the model reads float32: a value beyond its range (about 3.4e38) would become inf
    big = float(np.finfo(np.float32).max)
    finite = pa.Check(
        lambda s: s.isna() | (s.abs() <= big), name="finite (no inf, within float32's range)"
    )
    id_checks = [] if table_mode else [pa.Check.ge(0)]
    cols: dict[str, Any] = {
        id_col: pa.Column(
            None if table_mode else "int64",
            nullable=False,
            unique=not per_snapshot,
            checks=id_checks,
        )
    }
    for n in names:
        checks = [finite]
        lo, hi = _bounds(n)
        if n in CATEGORY_CODES:
            checks.append(pa.Check.isin([float(v) for v in range(CATEGORY_CODES[n])]))
        elif lo == 0.0:
            checks.append(pa.Check.ge(0.0))
        elif np.isfinite(lo):
            checks.append(pa.Check.ge(lo))
        if np.isfinite(hi) and n not in CATEGORY_CODES:
            checks.append(pa.Check.le(hi))
        cols[n] = pa.Column("float64", nullable=table_mode, coerce=True, checks=checks)
    cols["occupation"] = _OCCUPATION_COLUMN
    return pa.DataFrameSchema(cols, strict=False)


_OCCUPATION_COLUMN = pa.Column(
    "str", required=False, nullable=False, checks=[pa.Check.isin(list(OCCUPATIONS))]
)
_OCCUPATION_SCHEMA = pa.DataFrameSchema({"occupation": _OCCUPATION_COLUMN}, strict=False)


def _bounds(name: str) -> tuple[float, float]:
    return BY_NAME[name].bounds if name in BY_NAME else (float("-inf"), float("inf"))


def _meets_schema(
    df: pd.DataFrame, names: Sequence[str], id_col: str, table_mode: bool, per_snapshot: bool
) -> bool:
    """Whether ``df`` meets every rule of :func:`feature_schema`, checked on the whole
    matrix at once.

    True only where pandera would accept the table too (``tests/test_scoring.py`` breaks
    each rule in turn and compares). Pandera checks column by column, which costs one to
    two milliseconds per column whatever the number of rows: a served request of one row
    spent most of its time there. A table with anything unusual (a column of another
    kind than numbers, a missing one) is left to pandera, which also words the failures.
    """
    ids = df[id_col]
    if bool(ids.isna().any()) or (not per_snapshot and not ids.is_unique):
        return False
    if not table_mode and (ids.dtype != np.int64 or bool((ids.to_numpy() < 0).any())):
        return False
    cols = [df[n] for n in names if n in df.columns]
    if len(cols) != len(names) or len(set(df.columns)) != len(df.columns):
        return False
    if not all(isinstance(c.dtype, np.dtype) and c.dtype.kind in "iuf" for c in cols):
        return False
    X = np.column_stack([c.to_numpy(dtype=np.float64) for c in cols])
    lo, hi = _limits(tuple(names))
    missing = np.isnan(X)
    if not table_mode and missing.any():
        return False
    with np.errstate(invalid="ignore"):
        ok = missing | ((np.abs(X) <= np.finfo(np.float32).max) & (X >= lo) & (X <= hi))
    codes = [j for j, n in enumerate(names) if n in CATEGORY_CODES]
    if codes:
        C = X[:, codes]
        ok[:, codes] &= missing[:, codes] | (C == np.floor(C))
    if not ok.all():
        return False
    if "occupation" in df.columns:
        try:
            _OCCUPATION_SCHEMA.validate(df[["occupation"]], lazy=True)
        except pa.errors.SchemaErrors:
            return False
    return True


@functools.lru_cache(maxsize=16)
def _limits(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's lowest and highest allowed value, as :func:`feature_schema` sets them
    (a category code: 0 to its count less one)."""
    lo = np.full(len(names), -np.inf)
    hi = np.full(len(names), np.inf)
    for j, n in enumerate(names):
        if n in CATEGORY_CODES:
            lo[j], hi[j] = 0.0, float(CATEGORY_CODES[n] - 1)
        else:
            lo[j], hi[j] = _bounds(n)
    return lo, hi


def validate_features(
    df: pd.DataFrame, path: Path, names: list[str], id_col: str, table_mode: bool = False
) -> pd.DataFrame:
    """Check ``df`` against :func:`feature_schema`; raise one DataError listing every failure.

    A table with a ``snapshot`` column (such as the features stage's own table) may hold
    one row per id and snapshot.
    """
    if id_col not in df.columns:
        raise DataError(
            f"{path}: column '{id_col}' is missing (rule: id column, set score.id_column)"
        )
    if not table_mode and not pd.api.types.is_integer_dtype(df[id_col]):
        raise DataError(
            f"{path}: column '{id_col}' has dtype {df[id_col].dtype} (rule: integer ids)"
        )
    per_snapshot = "snapshot" in df.columns and id_col != "snapshot"
    lines = []
    if per_snapshot:
        dup = df.duplicated([id_col, "snapshot"], keep=False).to_numpy()
        if dup.any():
            first = int(np.flatnonzero(dup)[0])
            lines.append(
                f"column '{id_col}' breaks rule 'field_uniqueness' (one row per id and "
                f"snapshot) in {int(dup.sum())} row(s) (e.g. {df[id_col].iloc[first]!r} "
                f"at data row {first})"
            )
    if not lines and _meets_schema(df, names, id_col, table_mode, per_snapshot):
        # what pandera returns for a table that meets its schema: a copy, numbers as float64
        checked = df.copy()
        for n in names:
            if checked[n].dtype != np.float64:
                checked[n] = checked[n].astype(np.float64)
        return checked
    try:
        checked = feature_schema(names, id_col, table_mode, per_snapshot).validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        fc = exc.failure_cases
        for (col, check), g in fc.groupby(["column", "check"], sort=False, dropna=False):
            if check == "column_in_dataframe":
                lines.append(
                    f"column '{g.failure_case.iloc[0]}' is missing (rule: required column)"
                )
                continue
            rows = g["index"].dropna()
            where = f" at data row {int(rows.iloc[0])}" if len(rows) else ""
            case = g.failure_case.iloc[0]
            case = case.item() if isinstance(case, np.generic) else case
            lines.append(
                f"column '{col}' breaks rule '{check}' in {len(g)} row(s) (e.g. {case!r}{where})"
            )
    if lines:
        raise DataError(f"{path}: " + "; ".join(dict.fromkeys(lines))) from None
    return checked


# ---- guards of a table model: categories and ranges seen in training ------------------

FLAG_UNSEEN = "flag_unseen_category"
FLAG_RANGE = "flag_out_of_range"


@dataclass(frozen=True)
class FeatureGuards:
    """What a table model saw in training.

    ``codes``: categorical feature -> number of codes (``0 .. n-1`` are categories,
    ``-1`` a missing value); ``ranges``: numeric feature -> training ``(low, high)``.
    A numeric feature absent from ``ranges`` has no known range and is not flagged.
    """

    codes: dict[str, int]
    ranges: dict[str, tuple[float, float]]

    def to_json(self) -> dict[str, Any]:
        return {"codes": dict(self.codes), "ranges": {k: list(v) for k, v in self.ranges.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FeatureGuards:
        return cls(
            {str(k): int(v) for k, v in d.get("codes", {}).items()},
            {str(k): (float(v[0]), float(v[1])) for k, v in d.get("ranges", {}).items()},
        )


def saved_ranges(meta: dict[str, Any]) -> dict[str, tuple[float, float]] | None:
    """Training ranges stored in a table model's metadata, or None when it stores none.

    Read from ``ranges`` (feature -> ``[low, high]``) or from the saved encoding's numeric
    columns (``encoding.columns[*].safe/low/high``).
    """
    if isinstance(meta.get("ranges"), dict):
        return {str(k): (float(v[0]), float(v[1])) for k, v in meta["ranges"].items()}
    enc = meta.get("encoding")
    if isinstance(enc, dict) and isinstance(enc.get("columns"), list):
        return {
            str(c["safe"]): (float(c["low"]), float(c["high"]))
            for c in enc["columns"]
            if c.get("kind") == "numeric" and c.get("low") is not None
        }
    return None


def training_ranges(frame: pd.DataFrame, names: list[str]) -> dict[str, tuple[float, float]]:
    """``(low, high)`` of the finite values of each of ``names`` in ``frame`` (training rows)."""
    out: dict[str, tuple[float, float]] = {}
    for n in names:
        x = frame[n].to_numpy(dtype=np.float64)
        x = x[np.isfinite(x)]
        if len(x):
            out[n] = (float(x.min()), float(x.max()))
    return out


def table_guards(
    meta: dict[str, Any], ranges: dict[str, tuple[float, float]] | None
) -> FeatureGuards:
    """The guards of a table model from its metadata; ``ranges`` when it saves none."""
    names = [str(n) for n in meta.get("feature_names", [])]
    cats = meta.get("categories", {}) or {}
    codes = {n: len(cats[n]) for n in names if n in cats}
    saved = saved_ranges(meta)
    known = saved if saved is not None else (ranges or {})
    return FeatureGuards(codes, {n: known[n] for n in names if n in known and n not in codes})


def _guard_masks(
    df: pd.DataFrame, guards: FeatureGuards
) -> list[tuple[str, str, np.ndarray, np.ndarray, str]]:
    """(kind, column, values, mask of flagged rows, rule) for every guarded column."""
    out = []
    for col, k in guards.codes.items():
        x = df[col].to_numpy(dtype=np.float64)
        ok = np.isnan(x) | (x == -1) | ((x >= 0) & (x < k) & (x == np.round(x)))
        out.append(("unseen", col, x, ~ok, f"codes -1 .. {k - 1}"))
    for col, (lo, hi) in guards.ranges.items():
        x = df[col].to_numpy(dtype=np.float64)
        # compared as the model reads them (float32): a training value never falls outside
        x32, lo32, hi32 = x.astype(np.float32), np.float32(lo), np.float32(hi)
        bad = ~np.isnan(x) & ((x32 < lo32) | (x32 > hi32))
        out.append(("range", col, x, bad, f"{lo:g} .. {hi:g}"))
    return out


def guard_flags(df: pd.DataFrame, guards: FeatureGuards) -> dict[str, np.ndarray]:
    """Per row, :data:`FLAG_UNSEEN` and :data:`FLAG_RANGE`: the ``;``-joined flagged columns."""
    flags = {FLAG_UNSEEN: np.full(len(df), "", dtype=object)}
    flags[FLAG_RANGE] = flags[FLAG_UNSEEN].copy()
    for kind, col, _, mask, _ in _guard_masks(df, guards):
        f = flags[FLAG_UNSEEN if kind == "unseen" else FLAG_RANGE]
        if mask.any():
            f[mask] = f[mask] + np.where(f[mask] == "", "", ";") + col
    return flags


def refuse_flagged(df: pd.DataFrame, guards: FeatureGuards, path: Path, ids: np.ndarray) -> None:
    """DataError naming every column with an unseen category or an out-of-range value."""
    what = {
        "unseen": "has category codes never seen in training",
        "range": "lies outside the training range",
    }
    lines = []
    for kind, col, x, mask, rule in _guard_masks(df, guards):
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            rid = ids[i].item() if isinstance(ids[i], np.generic) else ids[i]
            lines.append(
                f"column '{col}' {what[kind]} in {int(mask.sum())} row(s) "
                f"(e.g. {x[i]:g} for id {rid!r}; rule: {rule})"
            )
    _refuse_rows(path, lines)


# ---- a table model's own raw table: the saved encoding applied ------------------------

FLAG_UNPARSED = "flag_unparsed_number"
#: Output column of each kind of finding of the encoding.
RAW_FLAGS = {"unseen": FLAG_UNSEEN, "range": FLAG_RANGE, "unparsed": FLAG_UNPARSED}


def model_encoding(meta: dict[str, Any], names: list[str]) -> Encoding | None:
    """The encoding saved with a table model, cut to the model's features (``names``);
    None when the metadata holds none that covers them."""
    d = meta.get("encoding")
    if not isinstance(d, dict):
        return None
    enc = Encoding.from_json(d)
    if not set(names) <= set(enc.feature_names):
        return None
    return enc.select(names)


def is_encoded(df: pd.DataFrame, names: list[str]) -> bool:
    """Whether ``df`` already holds the coded features: every one under its model name,
    as numbers (a raw table has text categories or its own column names)."""
    return all(
        n in df.columns
        and pd.api.types.is_numeric_dtype(df[n])
        and not pd.api.types.is_bool_dtype(df[n])
        for n in names
    )


@dataclass
class RawRows:
    """A raw table encoded for scoring: id + coded features, and what was flagged."""

    frame: pd.DataFrame  # the id column, then the model's features (safe names)
    flags: dict[str, np.ndarray]  # RAW_FLAGS columns: per row the ;-joined table columns
    findings: list[Finding]


def raw_ids(df: pd.DataFrame, path: Path, id_col: str) -> np.ndarray:
    """The table's id column (unique, complete), or row numbers for a model without one."""
    if id_col in df.columns:
        ids = df[id_col]
        if ids.isna().any() or ids.duplicated().any():
            raise DataError(
                f"{path}: column '{id_col}' breaks rule 'unique and complete ids' "
                f"({int(ids.duplicated().sum())} duplicated, {int(ids.isna().sum())} missing)"
            )
        return ids.to_numpy()
    if id_col == ROW_ID:
        return np.arange(len(df), dtype=np.int64)
    raise DataError(
        f"{path}: column '{id_col}' is missing (rule: the id column of the training table, "
        "data.id, is kept beside each score)"
    )


def encode_raw(df: pd.DataFrame, enc: Encoding, path: Path, id_col: str) -> RawRows:
    """Apply the saved encoding to a raw table (target and other columns ignored)."""
    ids = raw_ids(df, path, id_col)
    coded, found = enc.encode(df, str(path))
    coded = coded.reset_index(drop=True)
    coded.insert(0, id_col, ids)
    flags = {name: np.full(len(df), "", dtype=object) for name in RAW_FLAGS.values()}
    for f in found:
        col = flags[RAW_FLAGS[f.kind]]
        col[f.mask] = col[f.mask] + np.where(col[f.mask] == "", "", ";") + f.column
    return RawRows(coded, flags, found)


def refuse_findings(df: pd.DataFrame, rows: RawRows, path: Path, id_col: str) -> None:
    """DataError naming every column the encoding flagged, an example and the rule."""
    what = {
        "unseen": "has categories never seen in training",
        "range": "lies outside the training range",
        "unparsed": "holds text that is not a number",
    }
    ids = rows.frame[id_col].to_numpy()
    lines = []
    for f in rows.findings:
        i = int(np.flatnonzero(f.mask)[0])
        value, rid = df[f.column].iloc[i], ids[i]
        value = value.item() if isinstance(value, np.generic) else value
        rid = rid.item() if isinstance(rid, np.generic) else rid
        lines.append(
            f"column '{f.column}' {what[f.kind]} in {int(f.mask.sum())} row(s) "
            f"(e.g. {value!r} for id {rid!r}; rule: {f.rule})"
        )
    _refuse_rows(path, lines)


def read_feature_file(
    path: Path, names: list[str], id_col: str, table_mode: bool = False
) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: file not found (score.input)")
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path)
        elif path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise DataError(f"{path}: unknown format (use .parquet or .csv)")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - readers fail in many ways; re-raised naming the file
        raise DataError(f"{path}: not a readable table ({exc})") from exc
    if len(df) == 0:
        raise DataError(f"{path}: table has no rows")
    df = df.reset_index(drop=True)  # rows in messages count data rows from 0
    return validate_features(df, path, names, id_col, table_mode)


# ---- scoring ----------------------------------------------------------------------


def assign_tiers(prob: np.ndarray, cuts: list[float], names: list[str]) -> np.ndarray:
    """Tier ``names[k]`` for ``cuts[k-1] <= p < cuts[k]``."""
    idx = np.searchsorted(np.asarray(cuts, dtype=float), np.asarray(prob), side="right")
    return np.asarray(names, dtype=object)[idx]


def score_frame(
    model: ScoringModel,
    df: pd.DataFrame,
    id_col: str,
    cuts: list[float],
    tier_names: list[str],
    top_k: int,
    advice_rows: int,
    threads: int = 0,
    shap_fn: Callable[[Any, np.ndarray], np.ndarray] | None = None,
    cause: survival_core.CauseModel | None = None,
    horizons: Sequence[int] | None = None,
) -> pd.DataFrame:
    """One output row per input row: probability, tier, risk curves (with ``cause``),
    top reasons, advice for the top tier.

    ``shap_fn(booster, X)`` replaces the local SHAP computation (e.g. on a Dask cluster).
    ``cause``: the published competing-risks model; from the same feature rows it adds
    :func:`pipeline.core.survival.curve_columns` (``risk_h<t>``, ``risk_h<t>_<cause>``)
    at ``horizons`` (default: the horizons it was evaluated at).
    """
    X = df[model.names].to_numpy(dtype=np.float32)
    prob = model.prob(X)
    tier = assign_tiers(prob, cuts, tier_names)
    out: dict[str, Any] = {id_col: df[id_col].to_numpy()}
    if "snapshot" in df.columns:
        out["snapshot"] = df["snapshot"].to_numpy()
    out.update(probability=prob, tier=tier)
    if cause is not None:
        if cause.names != model.names:
            raise ValueError("the cause model reads other features than the classifier")
        out.update(cause.curves(X, horizons))
    if shap_fn is not None:
        contrib = shap_fn(model.booster, X)
    else:
        contrib, _ = explain_core.contributions(model.booster, X, threads)
    keep: tuple[str, ...]
    if model.mode == "simulator":
        # the lowest cut-off: a row under it reads "no closure concern" and what protects it
        floor = float(cuts[0]) if len(cuts) else None
        reasons = explain_core.reason_codes(
            contrib, X, model.names, top_k, model.W, None, model.reference, prob, floor
        )
        keep = ("cause", "feature", "value", "shap", "zh", "en")
    else:
        # the text speaks the table's words: its column names and category levels
        labels = labels_of(model.meta)
        reasons = explain_core.feature_reasons(contrib, X, model.names, top_k, labels)
        keep = ("feature", "name", "value", "shap", "zh", "en")
    for r in range(1, top_k + 1):
        for k in keep:
            if f"reason_{r}_{k}" in reasons:
                out[f"reason_{r}_{k}"] = reasons[f"reason_{r}_{k}"]
    if "closure_concern" in reasons:
        out["closure_concern"] = reasons["closure_concern"]
        for r in range(1, top_k + 1):
            for k in ("feature", "value", "shap", "zh", "en"):
                if f"protect_{r}_{k}" in reasons:
                    out[f"protect_{r}_{k}"] = reasons[f"protect_{r}_{k}"]
    table = pd.DataFrame(out)
    n = len(table)
    adv_zh = np.full(n, "", dtype=object)
    adv_en = np.full(n, "", dtype=object)
    adv_p = np.full(n, np.nan)
    adv_ok = np.zeros(n, dtype=bool)
    if model.mode == "simulator" and len(cuts):
        target = float(cuts[-1])
        top = np.flatnonzero(tier == tier_names[-1])
        top = top[np.argsort(-prob[top], kind="stable")][:advice_rows]
        for i in top:
            # serving has no repayment history, so no draw is sized and none advised
            a = advice_core.advise(X[i].astype(np.float64), model.names, model.prob, target)
            zh, en = (a.zh, a.en) if a.actions else advice_core.NO_ACTION_TEXT
            adv_zh[i], adv_en[i] = "\n".join(zh), "\n".join(en)
            adv_p[i], adv_ok[i] = a.p_after, a.achieved
    table["advice_zh"] = adv_zh
    table["advice_en"] = adv_en
    table["advice_p_after"] = adv_p
    table["advice_achieved"] = adv_ok
    return table


def _refuse_rows(path: Path, lines: list[str]) -> None:
    """Refuse the scoring input when any guard found rows (``lines``: one per finding)."""
    if lines:
        raise DataError(
            f"{path}: " + "; ".join(lines) + " (score.strict=true refuses such rows; "
            "without it they are scored and flagged)"
        )
