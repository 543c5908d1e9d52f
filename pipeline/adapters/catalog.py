"""The artifact catalog: every file the pipeline reads or writes, named once.

Each :class:`Entry` says where a file lives (one of four folders fixed by the ``paths``
config group), its format, the schema it is checked against when read, and which stage
writes it. Stages never build a path from a literal: they ask the catalog
(``cat.path("model")``), so a rename is one edit here, and the README's output table,
the report and the stages cannot disagree about a file's name.

The catalog is also the one place that turns stored files back into objects: the one
model loader (:func:`load_model`, :func:`load_calibrator`, :func:`load_scoring_model`)
and the one cause-weights reader (:func:`read_cause_weights`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.base.config import PathsConfig
from pipeline.base.io import DataError, OutputPath, digest_of, file_digest, read_table, resolve
from pipeline.core import explain as explain_core
from pipeline.core import features as feat_core
from pipeline.core.calibration import Calibrator
from pipeline.core.scoring import ScoringModel

Folder = Literal["raw", "truth", "processed", "models"]


@dataclass(frozen=True)
class Entry:
    """One named file (or, with a ``*``, a family of files) of the pipeline."""

    name: str
    folder: Folder
    relpath: str
    fmt: str
    writer: str
    schema: str = ""  # where the schema a reader checks is declared, "" when free-form
    doc: str = ""


def _e(
    name: str, folder: Folder, relpath: str, writer: str, schema: str = "", doc: str = ""
) -> Entry:
    fmt = relpath.rsplit(".", 1)[-1] if "." in relpath.rsplit("/", 1)[-1] else "folder"
    return Entry(name, folder, relpath, fmt, writer, schema, doc)


_SIM = "pipeline.core.simulate.SCHEMAS"
_TRUTH = "pipeline.core.simulate.TRUTH_SCHEMAS"

#: Every file, by name. Raw and truth tables are keyed by their table name.
ENTRIES: dict[str, Entry] = {
    e.name: e
    for e in (
        # ---- generate: the simulated world (data/raw) and its hidden truth (data/truth)
        _e("borrowers", "raw", "borrowers.parquet", "generate", _SIM, "one row per borrower"),
        _e("account_months", "raw", "account_months.parquet", "generate", _SIM),
        _e("fund_flows", "raw", "fund_flows.parquet", "generate", _SIM),
        _e("bureau_months", "raw", "bureau_months.parquet", "generate", _SIM),
        _e("consumption_months", "raw", "consumption_months.parquet", "generate", _SIM),
        _e("social_edges", "raw", "social_edges.parquet", "generate", _SIM),
        _e("macro_months", "raw", "macro_months.parquet", "generate", _SIM),
        _e("platform_events", "raw", "platform_events.parquet", "generate", _SIM),
        _e("data_card", "raw", "data_card.json", "generate", doc="sizes, rates, seed"),
        _e("data_card_md", "raw", "data_card.md", "generate"),
        _e("raw_plots", "raw", "plots", "generate", doc="PNG figures of the world"),
        _e("traits", "truth", "traits.parquet", "generate", _TRUTH, "latent traits"),
        _e("hazards", "truth", "hazards.parquet", "generate", _TRUTH, "monthly cause hazards"),
        _e("oracle", "truth", "oracle.parquet", "generate", _TRUTH, "Monte Carlo oracle"),
        # ---- features
        _e(
            "features",
            "processed",
            "features.parquet",
            "features",
            "pipeline.core.features.FEATURE_TABLE_SCHEMA",
            "borrower x snapshot rows: id, split, label, true cause, features",
        ),
        _e("feature_registry", "processed", "feature_registry.json", "features"),
        _e("stability", "processed", "stability.csv", "features", doc="missing, IV, PSI"),
        _e("table_features", "processed", "table_features.parquet", "train", doc="table mode"),
        # ---- train
        _e("model", "models", "model.txt", "train", doc="LightGBM text model"),
        _e("model_meta", "models", "model.json", "train", doc="names, config, metrics"),
        _e("calibration", "models", "calibration.json", "train"),
        _e("scorecard", "models", "scorecard.csv", "train"),
        _e("rules_baseline", "models", "rules_baseline.csv", "train"),
        _e("evaluation", "models", "evaluation.json", "train"),
        _e("gains_oot", "models", "gains_oot.csv", "train"),
        _e("serving", "models", "serving.json", "train"),
        _e("plots", "models", "plots", "train, explain", doc="PNG figures"),
        # ---- explain
        _e("reasons", "models", "reasons.parquet", "explain"),
        _e("advice", "models", "advice.parquet", "explain"),
        _e("fidelity", "models", "fidelity.json", "explain"),
        _e("fidelity_confusion", "models", "fidelity_confusion.csv", "explain"),
        _e("shap_importance", "models", "shap_importance.json", "explain"),
        _e("cause_importance", "models", "cause_importance.json", "explain"),
        _e("cause_weights", "models", "cause_weights.json", "explain", doc="learned weights"),
        _e("borrower_story", "models", "borrower_*.json", "explain"),
        # ---- policy, report, run
        _e("policy_dir", "models", "policy", "policy"),
        _e("report", "models", "report.html", "report"),
        _e("summary", "models", "summary.json", "run"),
        _e("summary_parts", "models", "summary_parts", "explain, policy"),
    )
}


@dataclass
class Catalog:
    """The four output folders of one run, and every file in them by name."""

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

    def folder(self, folder: Folder) -> Path:
        return OutputPath(getattr(self, folder))

    def path(self, name: str) -> Path:
        """The path of the catalog entry ``name``; an unknown name is a programming error."""
        try:
            entry = ENTRIES[name]
        except KeyError:
            raise KeyError(f"'{name}' is not in the artifact catalog") from None
        return self.folder(entry.folder) / entry.relpath


# --------------------------------------------------------------------------- tables


def load_feature_table(
    path: Path, columns: list[str] | None = None, split: str | None = None, where: Any = None
) -> pd.DataFrame:
    """The feature table, validated; optionally only ``columns``, one ``split`` and the
    rows matching ``where`` (a pyarrow expression).

    Reading one split uses a Parquet filter, so the other rows never reach memory.
    """
    return read_feature_table(path, columns, split, where).to_pandas()


def read_feature_table(
    path: Path, columns: list[str] | None = None, split: str | None = None, where: Any = None
) -> pa.Table:
    """:func:`load_feature_table` as an Arrow table (millions of split names stay
    compact instead of becoming Python strings)."""
    filters = where
    if split is not None:
        on_split = pc.field("split") == split
        filters = on_split if filters is None else filters & on_split
        if columns is not None and "split" not in columns:
            columns = [*columns, "split"]
    if columns is not None:
        keys = [c for c in ("borrower_id", "snapshot") if c not in columns]
        columns = [*keys, *columns]
    return read_table(
        path,
        feat_core.FEATURE_TABLE_SCHEMA,
        allowed={"split": ("train", "valid", "oot")}
        if columns is None or "split" in columns
        else None,
        ranges={"label": (0, 1)} if columns is None or "label" in columns else None,
        unique=("borrower_id", "snapshot"),
        columns=columns,
        filters=filters,
    )


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


def load_booster(path: Path) -> lgb.Booster:
    """A LightGBM model from its text file, or a DataError naming the file."""
    try:
        return lgb.Booster(model_str=resolve(path).read_text())
    except (lgb.basic.LightGBMError, UnicodeDecodeError, OSError) as exc:
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
