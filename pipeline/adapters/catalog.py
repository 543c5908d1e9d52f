"""The artifact catalog: every file the pipeline reads or writes, named once.

Each :class:`Entry` says where a file lives (one of four folders fixed by the ``paths``
config group), its format, the rules it is checked against when read (:class:`Rules`),
which stage writes it and what it is derived from. Stages never build a path from a
literal: they read and write through the catalog (``cat.read("features", columns=...)``,
``cat.write("evaluation", part)``, ``cat.path("model")``), so a rename is one edit here;
``make lint`` fails on a catalog file name written anywhere else in the package
(:mod:`pipeline.tools.layers`). What a new output makes stale follows from the entries'
``derived_from`` (:meth:`Catalog.remove_derived`), not from hand-kept lists.

The catalog is also the one place that turns stored files back into objects: the one
model loader (:func:`load_model`, :func:`load_calibrator`, :func:`load_scoring_model`,
the survival stage's cause model :func:`load_cause_model`) and the one cause-weights
reader (:func:`read_cause_weights`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.base.causes import AGE_BANDS, ALL_CAUSES, CHANNELS, EVENTS, OCCUPATIONS
from pipeline.base.config import PathsConfig
from pipeline.base.io import (
    DataError,
    OutputPath,
    ParquetSink,
    digest_of,
    file_digest,
    iter_row_groups,
    read_table,
    remove_paths,
    resolve,
    staged_glob,
    write_json,
    write_parquet,
    write_parquet_stream,
    write_text,
)
from pipeline.core import explain as explain_core
from pipeline.core import features as feat_core
from pipeline.core import simulate as sim_core
from pipeline.core import survival as survival_core
from pipeline.core.calibration import Calibrator
from pipeline.core.scoring import ScoringModel

Folder = Literal["raw", "truth", "processed", "models"]


@dataclass(frozen=True)
class Rules:
    """What a reader checks in a Parquet entry: its schema and the rules of its columns.

    ``keys`` are read with every projection (the rows stay identifiable) and must be
    unique over the rows read; ``month`` is checked against the world's months when the
    reader gives their count. A rule on a column the reader does not ask for is skipped.
    """

    schema: pa.Schema
    non_negative: tuple[str, ...] = ()
    allowed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    unique: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()

    def of(self, columns: list[str]) -> dict[str, Any]:
        """The keyword rules of :func:`~pipeline.base.io.read_table` for ``columns``."""
        keep = set(columns)
        return {
            "non_negative": tuple(c for c in self.non_negative if c in keep),
            "allowed": {c: v for c, v in self.allowed.items() if c in keep},
            "ranges": {c: v for c, v in self.ranges.items() if c in keep},
            # the duplicate-key check needs every key column, or none
            "unique": self.unique if set(self.unique) <= keep else (),
        }


@dataclass(frozen=True)
class Entry:
    """One named file (or, with ``{field}`` in its path, a family of files) of the pipeline.

    ``derived_from`` names the entries it is made from: when a stage replaces an entry,
    :meth:`Catalog.remove_derived` deletes what was derived from the old one.
    """

    name: str
    folder: Folder
    relpath: str
    fmt: str
    writer: str
    rules: Rules | None = None
    derived_from: tuple[str, ...] = ()
    doc: str = ""

    @property
    def pattern(self) -> str:
        """The glob matching every file of the entry (its path for a single file)."""
        return re.sub(r"\{[^}]*\}", "*", self.relpath)

    @property
    def family(self) -> bool:
        return "{" in self.relpath


def _e(
    name: str,
    folder: Folder,
    relpath: str,
    writer: str,
    rules: Rules | None = None,
    derived_from: tuple[str, ...] = (),
    doc: str = "",
) -> Entry:
    fmt = relpath.rsplit(".", 1)[-1] if "." in relpath.rsplit("/", 1)[-1] else "folder"
    return Entry(name, folder, relpath, fmt, writer, rules, derived_from, doc)


#: the rules of the raw tables beyond their schemas (``month`` is checked against the
#: world's months by the reader, which knows their count)
_RAW_RULES: dict[str, dict[str, Any]] = {
    "borrowers": dict(
        # a going concern's opening book signed up before month 0 (negative months)
        non_negative=("income", "initial_line"),
        unique=("borrower_id",),
        allowed={"occupation": OCCUPATIONS, "age_band": AGE_BANDS},
    ),
    "account_months": dict(
        non_negative=(
            "line",
            "n_draws",
            "draw_amount",
            "repayment",
            "balance",
            "interest_paid",
            "n_early_repay",
            "dpd",
        ),
        unique=("borrower_id", "month"),
    ),
    "fund_flows": dict(non_negative=("amount", "days_after_draw"), allowed={"channel": CHANNELS}),
    "bureau_months": dict(
        non_negative=(
            "ext_cards",
            "ext_loans",
            "ext_new_accounts",
            "ext_inquiries",
            "ext_utilisation",
            "months_since_ext_activity",
        ),
        unique=("borrower_id", "month"),
    ),
    "consumption_months": dict(
        non_negative=(
            "spend_daily",
            "spend_durables",
            "spend_services",
            "spend_weekly_cv",
            "competitor_baitiao",
            "competitor_fenfu",
        ),
        unique=("borrower_id", "month"),
    ),
    "platform_events": dict(
        non_negative=("line_before", "line_after"),
        allowed={"event": EVENTS, "cause": (*ALL_CAUSES, "none")},
    ),
    "macro_months": dict(non_negative=("competitor_intensity",), unique=("month",)),
    "social_edges": dict(non_negative=("tie_strength",)),
}
RAW = tuple(sim_core.SCHEMAS)
TRUTH = tuple(sim_core.TRUTH_SCHEMAS)
_FEATURES = Rules(
    feat_core.FEATURE_TABLE_SCHEMA,
    allowed={"split": ("train", "valid", "oot")},
    ranges={"label": (0, 1)},
    unique=("borrower_id", "snapshot"),
    keys=("borrower_id", "snapshot"),
)
_ORACLE_RANGES: dict[str, tuple[float, float]] = {
    "p_oracle": (0, 1),
    "p_full": (0, 1),
    "p_observable": (0, 1),
}
_MODEL = ("model",)  # what a newly trained model makes stale
#: the explain stage's files that hold its cause ranking (the cause model's, by default):
#: stale when the model or the cause model is fitted again
_RANKED = ("model", "survival_model")
#: what each stage's part of the run summary is derived from (none: kept)
_PART_FROM = {"explain": _RANKED, "survival": _MODEL, "policy": _MODEL}
#: the global views of the batch explanation (borrower stories apart)
EXPLAIN_VIEWS = (
    "reasons",
    "advice",
    "fidelity",
    "fidelity_confusion",
    "shap_importance",
    "cause_importance",
    "explain_part",
    "shap_plot",
    "dependence_plot",
    "cause_importance_plot",
    "fidelity_confusion_plot",
)
_POLICY = ("model", "account_months", "platform_events")


#: the files of the simulated world, by table name: the raw tables, then the truth tables
_WORLD_FILES = {
    "borrowers": ("raw", "borrowers.parquet", "one row per borrower"),
    "account_months": ("raw", "account_months.parquet", ""),
    "fund_flows": ("raw", "fund_flows.parquet", ""),
    "bureau_months": ("raw", "bureau_months.parquet", ""),
    "consumption_months": ("raw", "consumption_months.parquet", ""),
    "social_edges": ("raw", "social_edges.parquet", ""),
    "macro_months": ("raw", "macro_months.parquet", ""),
    "platform_events": ("raw", "platform_events.parquet", ""),
    "traits": ("truth", "traits.parquet", "latent traits"),
    "hazards": ("truth", "hazards.parquet", "monthly cause hazards"),
    "oracle": ("truth", "oracle.parquet", "Monte Carlo oracle"),
}
if set(_WORLD_FILES) != {*RAW, *TRUTH}:  # the simulator's tables, each with its file
    raise ImportError("the catalog's world files differ from the simulator's tables")


def _world_entries() -> tuple[Entry, ...]:
    """The raw tables and the truth tables, one entry each, checked by their schemas."""
    out = []
    for name, (folder, relpath, doc) in _WORLD_FILES.items():
        if folder == "raw":
            rules = Rules(sim_core.SCHEMAS[name], **_RAW_RULES[name])
        else:
            ranges = _ORACLE_RANGES if name == "oracle" else {}
            rules = Rules(sim_core.TRUTH_SCHEMAS[name], ranges=ranges)
        out.append(Entry(name, folder, relpath, "parquet", "generate", rules, (), doc))  # type: ignore[arg-type]
    return tuple(out)


def _survival_entries() -> tuple[Entry, ...]:
    """The survival stage's files: the competing-risks model, its curves, the leaderboard."""
    return (
        _e("survival_dir", "models", "survival", "survival", None, _MODEL),
        _e("survival_model", "models", "survival/model.txt", "survival", None, _MODEL),
        _e(
            "survival_eval",
            "models",
            "survival/evaluation.json",
            "survival",
            None,
            _MODEL,
            "td-AUC, C-index, Brier, ECE by horizon; calibration maps; explainer leaderboard",
        ),
        _e("survival_reasons", "models", "survival/reasons.parquet", "survival", None, _MODEL),
        _e("survival_plot", "models", "survival/survival_curves.png", "survival", None, _MODEL),
        _e(
            "serving_cause",
            "models",
            "serving_cause.json",
            "survival",
            None,
            _MODEL,
            "the cause model's calibration and horizons inside the serving pyfunc",
        ),
    )


def _entries() -> tuple[Entry, ...]:
    world = _world_entries()
    raw = tuple(e for e in world if e.folder == "raw")
    truth = tuple(e for e in world if e.folder == "truth")
    return (
        # ---- generate: the simulated world (data/raw) and its hidden truth (data/truth)
        *raw,
        _e("data_card", "raw", "data_card.json", "generate", None, RAW, "sizes, rates, seed"),
        _e("data_card_md", "raw", "data_card.md", "generate", None, RAW),
        _e("raw_plots", "raw", "plots", "generate", None, RAW, "PNG figures of the world"),
        *truth,
        # ---- features
        _e(
            "features",
            "processed",
            "features.parquet",
            "features",
            _FEATURES,
            RAW,
            "borrower x snapshot rows: id, split, label, true cause, features",
        ),
        _e("feature_registry", "processed", "feature_registry.json", "features", None, RAW),
        _e("stability", "processed", "stability.csv", "features", None, RAW, "missing, IV, PSI"),
        _e("table_features", "processed", "table_features.parquet", "train", doc="table mode"),
        # ---- train: the model and what is written with it
        _e("model", "models", "model.txt", "train", None, ("features",), "LightGBM text model"),
        _e("model_meta", "models", "model.json", "train", None, ("features",)),
        _e("calibration", "models", "calibration.json", "train", None, ("features",)),
        _e("scorecard", "models", "scorecard.csv", "train", None, ("features",)),
        _e("scorecard_card", "models", "scorecard_card.json", "train", None, ("features",)),
        _e("rules_baseline", "models", "rules_baseline.csv", "train", None, ("features",)),
        _e("evaluation", "models", "evaluation.json", "train", None, ("features",)),
        _e("gains", "models", "gains_{split}.csv", "train", None, ("features",)),
        _e("serving", "models", "serving.json", "train", None, ("features",)),
        _e("learning_curve", "models", "learning_curve.json", "make learning-curve"),
        _e("plots", "models", "plots", "train, explain", doc="PNG figures"),
        _e("roc_plot", "models", "plots/roc.png", "train", None, ("features",)),
        _e("gains_plot", "models", "plots/gains.png", "train", None, ("features",)),
        _e("calibration_plot", "models", "plots/calibration.png", "train", None, ("features",)),
        # ---- explain
        _e("reasons", "models", "reasons.parquet", "explain", None, _RANKED),
        _e("advice", "models", "advice.parquet", "explain", None, _MODEL),
        _e("fidelity", "models", "fidelity.json", "explain", None, _RANKED),
        _e("fidelity_confusion", "models", "fidelity_confusion.csv", "explain", None, _RANKED),
        _e("shap_importance", "models", "shap_importance.json", "explain", None, _MODEL),
        _e("cause_importance", "models", "cause_importance.json", "explain", None, _MODEL),
        _e("shap_plot", "models", "plots/shap_{kind}.png", "explain", None, _MODEL),
        _e("dependence_plot", "models", "plots/dependence_{feature}.png", "explain", None, _MODEL),
        _e(
            "cause_importance_plot", "models", "plots/cause_importance.png", "explain", None, _MODEL
        ),
        _e(
            "fidelity_confusion_plot",
            "models",
            "plots/fidelity_confusion.png",
            "explain",
            None,
            _RANKED,
        ),
        _e(
            "cause_weights",
            "models",
            "cause_weights.json",
            "explain",
            doc="learned weights; a cache read only when its key (model digest, config) matches",
        ),
        _e("borrower_story", "models", "borrower_{id}.json", "explain", None, _MODEL),
        _e("waterfall_plot", "models", "plots/waterfall_{id}.png", "explain", None, _MODEL),
        *_survival_entries(),
        # ---- policy
        _e("policy_dir", "models", "policy", "policy", None, _POLICY),
        _e("policy_frontier", "models", "policy/frontier.csv", "policy", None, _POLICY),
        _e("policy_matched", "models", "policy/matched_loss.csv", "policy", None, _POLICY),
        _e("policy_plot", "models", "policy/frontier.png", "policy", None, _POLICY),
        _e("policy_summary", "models", "policy/policy.json", "policy", None, _POLICY),
        # ---- report, the run's summary and its parts
        _e(
            "report",
            "models",
            "report.html",
            "report",
            None,
            ("model_meta", "evaluation", *EXPLAIN_VIEWS, "survival_eval", "policy_summary"),
        ),
        _e("resolved_config", "models", "resolved_config.yaml", "run"),
        # a user's output: kept when the model is retrained (each row names its model)
        _e("scores", "models", "scores.parquet", "score", doc="score.output default"),
        _e("summary", "models", "summary.json", "run", doc="rebuilt by every invocation"),
        *(
            _e(
                f"{stage}_part",
                "models",
                f"summary_parts/{stage}.json",
                stage,
                None,
                _PART_FROM.get(stage, ()),
            )
            for stage in SUMMARY_PARTS
        ),
    )


#: the stages whose part of the run summary is kept on disk (``<stage>_part``)
SUMMARY_PARTS = ("generate", "features", "train", "explain", "survival", "policy", "report")

#: Every file, by name.
ENTRIES: dict[str, Entry] = {e.name: e for e in _entries()}


def entry(name: str) -> Entry:
    """The catalog entry ``name``; an unknown name is a programming error."""
    try:
        return ENTRIES[name]
    except KeyError:
        raise KeyError(f"'{name}' is not in the artifact catalog") from None


def derived(*names: str) -> list[str]:
    """Every entry made, directly or not, from the entries ``names`` (those excluded)."""
    out: list[str] = []
    frontier = set(names)
    while frontier:
        found = [
            e.name
            for e in ENTRIES.values()
            if e.name not in out and e.name not in names and frontier & set(e.derived_from)
        ]
        out += found
        frontier = set(found)
    return out


@dataclass
class Catalog:
    """The four output folders of one run, and every file in them by name.

    ``read`` and ``write`` are how a stage touches a dataset: the reader checks what the
    entry's rules say, the writer writes atomically in the entry's format.
    """

    raw: Path
    truth: Path
    processed: Path
    models: Path

    @classmethod
    def of(cls, cfg: Any) -> Catalog:
        """From the whole config or from its ``paths`` group. Reads through the catalog's
        paths see the running stage's staged outputs (:class:`~pipeline.base.io.OutputPath`)."""
        paths: PathsConfig = cfg.paths if hasattr(cfg, "paths") else cfg
        return cls(
            OutputPath(paths.raw_dir),
            OutputPath(paths.truth_dir),
            OutputPath(paths.processed_dir),
            OutputPath(paths.models_dir),
        )

    def at(self, **folders: Path) -> Catalog:
        """The same catalog with some folders elsewhere (``raw=`` a folder of raw tables
        to score, ``models=`` a downloaded model)."""
        return replace(self, **{k: OutputPath(v) for k, v in folders.items()})

    def folder(self, folder: Folder) -> Path:
        return OutputPath(getattr(self, folder))

    def path(self, name: str, **fields: Any) -> Path:
        """The path of the entry ``name`` (a family's member: its ``fields``)."""
        e = entry(name)
        if e.family and not fields:
            raise KeyError(f"'{name}' is a family of files ({e.relpath}): name the member")
        return self.folder(e.folder) / e.relpath.format(**fields)

    def exists(self, name: str, **fields: Any) -> bool:
        return resolve(self.path(name, **fields)).exists()

    def members(self, name: str) -> list[Path]:
        """The files of the entry as the running stage sees them (a family's: all)."""
        e = entry(name)
        return staged_glob(self.folder(e.folder), e.pattern)

    # ---- reading
    def read(
        self,
        name: str,
        columns: list[str] | None = None,
        split: str | None = None,
        rows: np.ndarray | None = None,
        where: Any = None,
        n_months: int | None = None,
    ) -> pa.Table:
        """The Parquet entry ``name``, checked against its rules (:func:`read_entry`)."""
        return read_entry(name, self.path(name), columns, split, rows, where, n_months)

    def row_groups(self, name: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The entry's row groups one after the other, each checked (:func:`entry_row_groups`)."""
        return entry_row_groups(name, self.path(name), columns)

    # ---- writing
    def write(self, name: str, obj: Any, row_group_size: int | None = None, **fields: Any) -> Path:
        """Write ``obj`` as the entry ``name`` (a family's member: its ``fields``),
        atomically, in the entry's format; returns the path.

        Parquet takes an Arrow table, JSON a JSON-able object, CSV a data frame (written
        without its index) or text, the text formats a string.
        """
        e, path = entry(name), self.path(name, **fields)
        if e.fmt == "parquet":
            write_parquet(obj, path, row_group_size=row_group_size)
        elif e.fmt == "json":
            write_json(obj, path)
        elif e.fmt == "csv":
            write_text(obj if isinstance(obj, str) else obj.to_csv(index=False), path)
        elif e.fmt in ("txt", "md", "html", "yaml"):
            write_text(str(obj), path)
        else:
            raise TypeError(f"the catalog cannot write '{name}' ({e.fmt})")
        return path

    def write_stream(
        self,
        name: str,
        tables: Iterable[pa.Table],
        row_group_size: int | None = None,
        path: Path | None = None,
    ) -> int:
        """Write a Parquet entry from ``tables`` in order, one row group waiting at a time
        (the very file :meth:`write` writes from their concatenation); returns its rows."""
        rules = entry(name).rules
        if rules is None:
            raise KeyError(f"'{name}' is not a checked table of the artifact catalog")
        return write_parquet_stream(
            tables, path if path is not None else self.path(name), rules.schema, row_group_size
        )

    def sink(self, names: Iterable[str]) -> ParquetSink:
        """One streaming writer for several Parquet entries, published together."""
        names = list(names)
        schemas = {}
        for name in names:
            rules = entry(name).rules
            if rules is None:
                raise KeyError(f"'{name}' is not a checked table of the artifact catalog")
            schemas[name] = rules.schema
        return ParquetSink({n: self.path(n) for n in names}, schemas)

    # ---- removing what is stale
    def remove(self, *names: str) -> None:
        """Delete every file of the entries ``names`` (inside a stage: at its publication)."""
        for name in names:
            e = entry(name)
            remove_paths(staged_glob(self.folder(e.folder), e.pattern))

    def remove_derived(self, *names: str) -> None:
        """Delete everything derived from the entries ``names``, called just before a stage
        writes new versions of them, so that no later reader (the report above all) mixes
        outputs of two models or runs."""
        self.remove(*derived(*names))


def file_in(folder: Path, name: str, **fields: Any) -> Path:
    """The entry ``name``'s file under ``folder``: for readers handed a folder rather than
    a run's catalog (a user's folder of raw tables to score, a block task on a worker)."""
    return Path(folder) / entry(name).relpath.format(**fields)


def read_entry(
    name: str,
    path: Path,
    columns: list[str] | None = None,
    split: str | None = None,
    rows: np.ndarray | None = None,
    where: Any = None,
    n_months: int | None = None,
) -> pa.Table:
    """The Parquet file ``path`` of the kind of entry ``name``, checked against its rules.

    Only ``columns`` (the entry's key columns are always read), the rows of one
    ``split``, the rows at positions ``rows`` (ascending; read one row group at a time)
    or the rows matching ``where`` (a pyarrow expression; a filter skips row groups by
    their statistics). ``n_months`` bounds the column ``month``. A rule on a column not
    read is skipped.
    """
    if entry(name).rules is None:  # a table of the pipeline's own making, read as written
        return _read_as_written(path, columns)
    rules, wanted = _projection(name, columns, split)
    filters = where
    if split is not None:
        on_split = pc.field("split") == split
        filters = on_split if filters is None else filters & on_split
    checks = _with_months(rules.of(wanted or rules.schema.names), rules, n_months)
    return read_table(path, rules.schema, columns=wanted, filters=filters, rows=rows, **checks)


def _read_as_written(path: Path, columns: list[str] | None) -> pa.Table:
    src = resolve(path)
    if not src.exists():
        raise DataError(f"{path}: file not found (run the stage that writes it first)")
    try:
        return pq.read_table(src, columns=columns)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt or short files; re-raised
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc


def entry_row_groups(
    name: str, path: Path, columns: list[str] | None = None, n_months: int | None = None
) -> Iterator[pa.Table]:
    """The row groups of ``path`` (of the kind of entry ``name``) one after the other, each
    checked (one decoded row group in memory at a time; rules that span rows, like
    unique keys, are the caller's)."""
    rules, wanted = _projection(name, columns, None)
    checks = _with_months(rules.of(wanted or rules.schema.names), rules, n_months)
    checks.pop("unique")
    return iter_row_groups(path, rules.schema, columns=wanted, **checks)


def _projection(
    name: str, columns: list[str] | None, split: str | None
) -> tuple[Rules, list[str] | None]:
    """The entry's rules and the columns to read (its keys first, then ``columns``)."""
    rules = entry(name).rules
    if rules is None:
        raise KeyError(f"'{name}' is not a checked table of the artifact catalog")
    if columns is None:
        return rules, None
    wanted = [*columns]
    if split is not None and "split" not in wanted:
        wanted.append("split")
    return rules, [*(k for k in rules.keys if k not in wanted), *wanted]


def _with_months(checks: dict[str, Any], rules: Rules, n_months: int | None) -> dict[str, Any]:
    if n_months is not None and "month" in rules.schema.names:
        checks["ranges"] = {**checks["ranges"], "month": (0, n_months - 1)}
    return checks


# --------------------------------------------------------------------------- tables


def in_key_order(rows: pd.DataFrame, borrower_id: Any, snapshot: Any) -> pd.DataFrame:
    """The rows of ``rows`` with these (``borrower_id``, ``snapshot``) keys, in their
    order (each key must be among the rows)."""
    have = pd.MultiIndex.from_arrays([rows.borrower_id.to_numpy(), rows.snapshot.to_numpy()])
    at = have.get_indexer(
        pd.MultiIndex.from_arrays([np.asarray(borrower_id), np.asarray(snapshot)])
    )
    if (at < 0).any():
        raise DataError(
            f"{int((at < 0).sum())} requested (borrower_id, snapshot) keys are not among the rows"
        )
    return rows.iloc[at]


def world_digest(raw_dir: Path) -> str | None:
    """The identity of the simulated world in ``raw_dir``: a digest of the digests its
    generate manifest records; None when there is no manifest."""
    manifest = resolve(raw_dir / "_generate.manifest.json")
    if not manifest.exists():
        return None
    return digest_of(json.loads(manifest.read_text()).get("outputs", {}))


def made_from(out_dir: Path, stage: str) -> str | None:
    """What a stage's manifest says its output was made from (None when it says nothing)."""
    manifest = resolve(out_dir / f"_{stage}.manifest.json")
    if not manifest.exists():
        return None
    value = json.loads(manifest.read_text()).get("made_from")
    return str(value) if value is not None else None


def data_digest(path: Path) -> str:
    """The digest of a data file; the features stage's manifest records the feature table's."""
    manifest = resolve(path.parent / "_features.manifest.json")
    if manifest.exists():
        recorded = json.loads(manifest.read_text()).get("outputs", {}).get(path.name)
        if recorded:
            return str(recorded)
    return file_digest(path)


# --------------------------------------------------------------------------- the model


def load_model(models_dir: Path) -> tuple[lgb.Booster, dict[str, Any]]:
    """The trained LightGBM booster and its metadata, or a DataError naming the file."""
    model_path = models_dir / ENTRIES["model"].relpath
    meta_path = models_dir / ENTRIES["model_meta"].relpath
    for path in (model_path, meta_path):
        if not resolve(path).exists():
            raise DataError(f"{path}: file not found (run `make train` first)")
    booster = load_booster(model_path)
    try:
        meta = json.loads(resolve(meta_path).read_text())
    except (ValueError, OSError) as exc:
        raise DataError(f"{meta_path}: not readable JSON ({exc})") from exc
    if not isinstance(meta, dict) or "feature_names" not in meta:
        raise DataError(f"{meta_path}: model metadata lacks 'feature_names'")
    return booster, meta


def check_model_text(text: str) -> str | None:
    """Why a LightGBM model text is cut short or damaged (None: whole).

    LightGBM parses the trees in parallel from the byte sizes its header lists, and a
    file cut inside them aborts the whole process from C++ (no Python exception to
    catch); so the sizes are checked against the text first."""
    head = re.search(r"\ntree_sizes=([0-9 ]*)\n", text)
    start = text.find("\nTree=")
    end = text.find("\nend of trees")
    if end < 0:
        return "no 'end of trees' line: the file is cut short"
    if head is None:
        return None if start < 0 else "trees without the header's 'tree_sizes' line"
    sizes = [int(x) for x in head.group(1).split()]
    blocks = text.count("\nTree=")
    if len(sizes) != blocks:
        return f"the header lists {len(sizes)} trees, the file holds {blocks}"
    if blocks and sum(sizes) != len(text[start + 1 : end + 1].encode()):
        return "the trees' sizes differ from the header's: the file is damaged"
    return None


def load_booster(path: Path) -> lgb.Booster:
    """A LightGBM model from its text file, or a DataError naming the file."""
    try:
        text = resolve(path).read_text()
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: not a readable LightGBM model ({exc})") from exc
    why = check_model_text(text)
    if why is not None:
        raise DataError(f"{path}: not a readable LightGBM model ({why})")
    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise DataError(f"{path}: not a readable LightGBM model ({exc})") from exc


def load_calibrator(models_dir: Path) -> Calibrator:
    """The calibration saved beside the model; the identity when the model was trained without."""
    path = models_dir / ENTRIES["calibration"].relpath
    if not resolve(path).exists():
        return Calibrator("none")
    return parse_calibrator(path)


def parse_calibrator(path: Path) -> Calibrator:
    try:
        return Calibrator.from_json(json.loads(resolve(path).read_text()))
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise DataError(f"{path}: not a readable calibration ({exc})") from exc


def read_cause_weights(path: Path, names: list[str], key: str | None = None) -> np.ndarray | None:
    """Learned feature -> cause weights saved by the explain stage, or None.

    None when the file is absent, was learned for another model (``key`` differs), or
    does not cover ``names``; a file that exists but cannot be parsed is an error.
    """
    if not resolve(path).exists():
        return None
    try:
        saved = json.loads(resolve(path).read_text())
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from exc
    if key is not None and saved.get("key") != key:
        return None
    weights = saved.get("weights", {})
    if not all(f in weights for f in names):
        return None
    try:
        return np.array([[weights[f][c] for c in explain_core.CAUSE_COLUMNS] for f in names])
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: cause weights lack a cause column ({exc})") from exc


def scoring_model(
    booster: Any, meta: dict[str, Any], cal: Calibrator, source: str, weights_path: Path | None
) -> ScoringModel:
    """Assemble a :class:`ScoringModel`; simulator models carry their cause weights.

    The weights are the explain stage's learned ones when ``weights_path`` holds weights
    covering the model's features, else the registry's feature -> cause split.
    """
    names = list(meta["feature_names"])
    mode = str(meta.get("mode", "simulator"))
    if mode != "simulator":
        return ScoringModel(booster, names, cal, mode, source, None, "features", meta=meta)
    W = read_cause_weights(weights_path, names) if weights_path is not None else None
    if W is None:
        W = explain_core.attribution_matrix(names, "registry")
        return ScoringModel(booster, names, cal, mode, source, W, "registry", meta=meta)
    return ScoringModel(booster, names, cal, mode, source, W, "learned", meta=meta)


def load_scoring_model(models_dir: Path) -> ScoringModel:
    """The model of the last successful train stage under ``models_dir``, ready to score."""
    booster, meta = load_model(models_dir)
    return scoring_model(
        booster,
        meta,
        load_calibrator(models_dir),
        f"local {models_dir / ENTRIES['model'].relpath}",
        models_dir / ENTRIES["cause_weights"].relpath,
    )


def load_cause_model(models_dir: Path) -> survival_core.CauseModel | None:
    """The competing-risks model the survival stage published under ``models_dir`` (its
    booster, and from its ``evaluation.json`` the calibration maps, the horizons and
    which of them the out-of-time rows observe); None when none is published, a
    DataError naming the file when one cannot be read."""
    model_path = models_dir / ENTRIES["survival_model"].relpath
    eval_path = models_dir / ENTRIES["survival_eval"].relpath
    if not (resolve(model_path).exists() and resolve(eval_path).exists()):
        return None
    booster = load_booster(model_path)
    try:
        ev = json.loads(resolve(eval_path).read_text())
        names = list(booster.feature_name())[:-1]
        spec = survival_core.spec_of_evaluation(ev, names, ev.get("model_stamp"))
        return survival_core.CauseModel.from_spec(booster, spec)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise DataError(f"{eval_path}: not a readable survival evaluation ({exc})") from exc


def published_cause_model(
    models_dir: Path, mode: str, survival_on: bool
) -> tuple[survival_core.CauseModel | None, str]:
    """The published cause model that belongs to the classifier under ``models_dir``, or
    None and why there is none (for the one console line that says curves are absent)."""
    if mode == "table":
        return None, "a table model has no closure months or causes (simulator mode only)"
    if not survival_on:
        return None, "model.survival=false"
    cause = load_cause_model(models_dir)
    if cause is None:
        return None, (
            f"no cause model is published in {models_dir / ENTRIES['survival_dir'].relpath} "
            "(run `make survival`)"
        )
    model_path = models_dir / ENTRIES["model"].relpath
    if not resolve(model_path).exists() or cause.stamp != file_digest(model_path):
        return None, (
            f"the cause model in {models_dir / ENTRIES['survival_dir'].relpath} was fitted "
            f"beside another classifier than {model_path} (run `make survival`)"
        )
    return cause, ""
