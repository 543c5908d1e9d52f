"""The model as an MLflow pyfunc: id and feature rows in; id, probability, tier, reasons out.

Logged by the train stage next to (not instead of) the LightGBM flavour, registered as
``<registered_model>-serving`` and given the champion alias whenever the LightGBM
model of the same run becomes the champion, so that

    mlflow models serve -m models:/closure-risk-lgbm-serving@champion --env-manager local -h 127.0.0.1

answers ``POST /invocations``. Every request row carries its id (``borrower_id``, or a
table model's own id column); the answer returns it beside the row's score, unchanged
and in the request's order, so a score is never credited to another borrower. A request
without the id column, or with a value the model refuses (out of range, unknown
category code), gets HTTP 400 with the column and the rule in the message.

A table model's rows may come in the training table's own format (its column names,
text categories, numbers stored as text) or as the encoded features: the former are
encoded with the encoding saved with the model, as in batch scoring, and flagged per row
(``flag_unseen_category``, ``flag_out_of_range``, ``flag_unparsed_number``). Its
signature and input example show the raw columns (the coded names that differ are
optional inputs). The artifacts are the LightGBM text model, the
calibration JSON and a small JSON with the feature names, mode, tier cut-offs and (table
models) the encoding; the model class is logged as code (``serving_model.py``), so
nothing is pickled. Reasons use the registry's feature -> cause split (the learned
split of the explain stage does not exist yet when the model is trained).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

from pipeline.adapters import catalog
from pipeline.base.config import Config, tier_cuts
from pipeline.base.io import DataError, file_digest, note_undo
from pipeline.core import scoring
from pipeline.core import survival as survival_core
from pipeline.core import table as table_core
from pipeline.core.encoding import Encoding

SERVING_SUFFIX = "-serving"
#: the request parameter asking for risk curves, and the model-version tag naming the
#: classifier a serving version carries (the digest of its ``model.txt``)
HORIZONS = "horizons"
CLASSIFIER_TAG = "classifier_digest"


def table_guards(cat: catalog.Catalog, meta: dict[str, Any]) -> scoring.FeatureGuards:
    """Categories and training ranges of a table model.

    The ranges come from the model's metadata; a model that saves none gets them from
    the training rows of the table-mode feature table, when that table still holds this
    model's features (else numeric columns stay unchecked).
    """
    ranges = None
    path = cat.path("table_features")
    if scoring.saved_ranges(meta) is None and path.exists():
        names = [str(n) for n in meta["feature_names"]]
        numeric = [n for n in names if n not in (meta.get("categories") or {})]
        if set([*numeric, "split"]) <= set(pq.read_schema(path).names):
            train = pq.read_table(path, columns=[*numeric, "split"]).to_pandas()
            ranges = scoring.training_ranges(train[train.split == "train"], numeric)
    return scoring.table_guards(meta, ranges)


def without_nan(out: pd.DataFrame) -> pd.DataFrame:
    """``out`` with each missing number as None: the scoring server writes a float NaN as
    the bare word ``NaN``, which is not JSON (a browser's or Java's parser refuses the whole
    answer); None is written as ``null``. Columns without a missing value keep their type."""
    out = out.copy()
    for col in out.columns:
        if out[col].dtype.kind == "f" and out[col].isna().any():
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


class RefusedRequest(MlflowException):
    """A request the model refuses (HTTP 400), whose message stays the rule.

    MLflow's scoring server rewrites the message of an exception raised by ``predict`` to
    ``Failed to predict data '<the request as a data frame>'. Error: <message>``: hundreds
    to thousands of characters of the request before the rule. The first message set (the
    rule, naming the column) is the one answered; later rewrites are ignored.
    """

    @property
    def message(self) -> str:
        return self._rule

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_rule"):
            self._rule = str(value)


class ClosureRiskModel(PythonModel):
    """Calibrated closure risk with its tier and top reason codes, beside the caller's id."""

    def load_context(self, context: Any) -> None:
        art = context.artifacts
        booster = catalog.load_booster(Path(art["model"]))
        cal = catalog.parse_calibrator(Path(art["calibration"]))
        meta = json.loads(Path(art["meta"]).read_text())
        self.cuts = [float(c) for c in meta["tier_cuts"]]
        self.tiers = [str(t) for t in meta["tier_names"]]
        self.top_k = int(meta.get("top_k", 3))
        self.id_col = str(meta.get("id_column", "borrower_id"))
        self.guards = (
            scoring.FeatureGuards.from_json(meta["guards"]) if meta.get("guards") else None
        )
        self.model = catalog.scoring_model(booster, meta, cal, "pyfunc", None)
        enc = meta.get("encoding")
        self.encoding = Encoding.from_json(enc) if isinstance(enc, dict) else None
        self.cause: survival_core.CauseModel | None = None
        if "cause_model" in art:  # logged again by the survival stage, with its curves
            spec = json.loads(Path(art["cause_spec"]).read_text())
            self.cause = survival_core.CauseModel.from_spec(
                catalog.load_booster(Path(art["cause_model"])), spec
            )

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        """Scores; a refused request raises MLflow's INVALID_PARAMETER_VALUE (HTTP 400).

        ``params["horizons"]`` (a list of months) asks for the risk curves at those
        months: ``risk_h<t>`` and ``risk_h<t>_<cause>`` per row, as batch scoring writes
        them. Refused when the served model carries no cause model, or a month is not a
        whole number from 1 to the longest month the cause model gives."""
        try:
            horizons = self._horizons(params)
            return without_nan(
                self._score(pd.DataFrame(model_input).reset_index(drop=True), horizons)
            )
        except DataError as exc:
            raise RefusedRequest(str(exc), error_code=INVALID_PARAMETER_VALUE) from None

    def _horizons(self, params: Any) -> list[int] | None:
        asked = (params or {}).get(HORIZONS)
        if asked is None or (hasattr(asked, "__len__") and len(asked) == 0):
            return None
        field = f"request: params.{HORIZONS}"
        if self.cause is None:
            raise DataError(
                f"{field} = {list(asked)!r}: this served model carries no cause model "
                "(rule: curves come only from a serving version the survival stage logged; "
                "run the survival stage with tracking on, or leave out horizons)"
            )
        try:
            return survival_core.check_horizons(
                [*asked] if hasattr(asked, "__iter__") and not isinstance(asked, str) else asked,
                self.cause.longest,
                field,
            )
        except ValueError as exc:
            raise DataError(str(exc)) from None

    def _score(self, df: pd.DataFrame, horizons: list[int] | None = None) -> pd.DataFrame:
        if self.id_col not in df.columns:
            raise DataError(
                f"request: column '{self.id_col}' is missing (rule: every row carries its "
                "id, which is returned beside its score)"
            )
        if self.encoding is not None and not scoring.is_encoded(df, self.model.names):
            return self._score_raw(df.infer_objects(), self.encoding, horizons)
        missing = [n for n in self.model.names if n not in df.columns]
        if missing:
            raise DataError(f"request: column(s) {', '.join(missing)} missing (model features)")
        table_mode = self.model.mode == "table"
        df = scoring.validate_features(
            df.drop(columns=["snapshot"], errors="ignore"),
            Path("request"),
            self.model.names,
            self.id_col,
            table_mode,
        )
        out = self._scored(df, horizons)
        if self.guards is not None:
            for name, values in scoring.guard_flags(df, self.guards).items():
                out[name] = values.astype(str)
        return out

    def _scored(self, rows: pd.DataFrame, horizons: list[int] | None) -> pd.DataFrame:
        """Checked feature rows scored as batch scoring does, without advice columns."""
        out = scoring.score_frame(
            self.model,
            rows,
            self.id_col,
            self.cuts,
            self.tiers,
            self.top_k,
            advice_rows=0,
            cause=self.cause if horizons else None,
            horizons=horizons,
        )
        return out.drop(columns=[c for c in out.columns if c.startswith("advice_")])

    def _score_raw(
        self, df: pd.DataFrame, enc: Encoding, horizons: list[int] | None = None
    ) -> pd.DataFrame:
        """Rows in the training table's own format, encoded with the saved encoding."""
        rows = scoring.encode_raw(df, enc, Path("request"), self.id_col)
        coded = scoring.validate_features(
            rows.frame, Path("request"), self.model.names, self.id_col, table_mode=True
        )
        out = self._scored(coded, horizons)
        for name, values in rows.flags.items():
            out[name] = values.astype(str)
        return out


def _raw_example(sep: str, meta: dict[str, Any], id_col: str, enc: Encoding) -> pd.DataFrame | None:
    """Two rows of the training table in its own format (id and raw feature columns), or
    None when the table cannot be read any more."""
    path = Path(str(meta.get("table", {}).get("path", "")))
    try:
        raw = table_core.read_any(path, sep, enc.text_columns)
    except DataError:
        return None
    names = [c.name for c in enc.columns]
    if not set(names) <= set(raw.columns) or len(raw) < 2:
        return None
    example = raw[names].head(2).reset_index(drop=True)
    ids = raw[id_col].head(2).to_numpy() if id_col in raw.columns else np.arange(2)
    example.insert(0, id_col, ids)
    return example


def _signature(example: pd.DataFrame, output: pd.DataFrame, id_col: str, safe: list[str]) -> Any:
    """Inputs: the id column (typed, required) and each raw column, plus any coded name
    that differs, of any type and optional (the pyfunc checks them itself and answers
    400 naming the column); outputs as inferred."""
    inferred = infer_signature(example, output)
    cols = [c for c in inferred.inputs.inputs if c.name == id_col]
    names = [str(c) for c in example.columns if c != id_col]
    names += [n for n in safe if n not in names]
    cols += [ColSpec(AnyType(), n, required=False) for n in names]
    return ModelSignature(inputs=Schema(cols), outputs=inferred.outputs)


def _example(cat: catalog.Catalog, meta: dict[str, Any], id_col: str) -> pd.DataFrame:
    """Two rows with distinct ids: the signature is inferred from them, id column included."""
    names = [str(n) for n in meta["feature_names"]]
    table_mode = meta.get("mode", "simulator") == "table"
    path = cat.path("table_features" if table_mode else "features")
    example = pd.DataFrame(np.zeros((2, len(names)), dtype=np.float64), columns=names)
    example.insert(0, id_col, np.arange(2, dtype=np.int64))
    if path.exists() and set([id_col, *names]) <= set(pq.read_schema(path).names):
        head = pq.ParquetFile(path).read_row_group(0, columns=[id_col, *names]).slice(0, 500)
        rows = head.to_pandas().drop_duplicates(id_col).head(2)
        if len(rows) == 2:
            example = rows.reset_index(drop=True)
            example[names] = example[names].astype(np.float64)
            if pd.api.types.is_integer_dtype(example[id_col]):
                example[id_col] = example[id_col].astype(np.int64)
    return example


def log_serving_model(
    cfg: Config,
    tracker: Any,
    models_dir: Path,
    name: str | None,
    champion: dict[str, Any] | None,
    cause: tuple[Path, dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Log the pyfunc in the current run, register it, move its champion alias with the model's.

    ``cause``: the cause model's text file and its spec (:meth:`CauseModel.spec`), when
    the survival stage logs the serving model again with its curves. That version takes
    the alias when the version holding it serves the same classifier (its
    :data:`CLASSIFIER_TAG`), so the champion gains curves without changing its scores.
    """
    if not tracker.enabled or tracker.run_id is None:
        return None
    cat = catalog.Catalog.of(cfg).at(models=models_dir)
    meta = json.loads(cat.path("model_meta").read_text())
    names = list(meta["feature_names"])
    table_mode = meta.get("mode", "simulator") == "table"
    id_col = str(meta.get("table", {}).get("id") or "row_id") if table_mode else "borrower_id"
    serving_name = f"{name}{SERVING_SUFFIX}" if name else None
    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "feature_names": names,
            "mode": meta.get("mode", "simulator"),
            "id_column": id_col,
            "tier_cuts": tier_cuts(cfg.score, meta),
            "tier_names": [str(t) for t in cfg.score.tier_names],
            "top_k": int(cfg.score.top_k),
        }
        if isinstance(meta.get("reference"), dict):  # the side a reason's value must lie on
            spec["reference"] = meta["reference"]
        enc = scoring.model_encoding(meta, names) if table_mode else None
        if table_mode:
            spec["guards"] = table_guards(catalog.Catalog.of(cfg), meta).to_json()
        if enc is not None:
            spec["encoding"] = enc.to_json()
        spec_path = catalog.file_in(Path(tmp), "serving")
        spec_path.write_text(json.dumps(spec))
        cal_path = cat.path("calibration")
        if not cal_path.exists():
            cal_path = catalog.file_in(Path(tmp), "calibration")
            cal_path.write_text(json.dumps({"method": "none"}))
        artifacts = {
            # os.fspath: where the file is now (a stage's staged output before it is published)
            "model": os.fspath(cat.path("model")),
            "calibration": os.fspath(cal_path),
            "meta": os.fspath(spec_path),
        }
        if cause is not None:
            cause_spec = catalog.file_in(Path(tmp), "serving_cause")
            cause_spec.write_text(json.dumps(cause[1]))
            artifacts.update(cause_model=os.fspath(cause[0]), cause_spec=os.fspath(cause_spec))
        raw = _raw_example(str(cfg.data.sep), meta, id_col, enc) if enc is not None else None
        example = raw if raw is not None else _example(catalog.Catalog.of(cfg), meta, id_col)
        model = ClosureRiskModel()
        model.load_context(type("Ctx", (), {"artifacts": artifacts})())
        with warnings.catch_warnings():  # the id is an integer column on purpose
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            output = model.predict(None, example)
            if raw is not None:
                signature = _signature(example, output, id_col, names)
            else:
                signature = infer_signature(example, output)
        # curves on request: {"dataframe_split": ..., "params": {"horizons": [1, 3]}}
        signature.params = ParamSchema([ParamSpec(HORIZONS, "long", [], shape=(-1,))])
        requirements = [
            f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "lightgbm", "numpy", "pandas", "pandera")
        ]
        with mlflow.start_run(run_id=tracker.run_id, nested=True):
            info = mlflow.pyfunc.log_model(
                name="serving",
                python_model=str(Path(__file__).with_name("serving_model.py")),
                artifacts=artifacts,
                signature=signature,
                input_example=example,
                registered_model_name=serving_name,
                pip_requirements=requirements,
            )
    tracker.link_model_to_parent(getattr(info, "model_id", None))
    out: dict[str, Any] = {"model_uri": str(info.model_uri), "registered": serving_name}
    if cause is not None:
        out["curves"] = True
    if serving_name:
        digest = file_digest(cat.path("model"))
        promoted = bool(champion and champion.get("promoted"))
        out.update(_tag_and_alias(cfg, tracker, serving_name, digest, promoted, cause is not None))
    return out


def _tag_and_alias(
    cfg: Config, tracker: Any, serving_name: str, digest: str, promoted: bool, follow: bool
) -> dict[str, Any]:
    """Tag the version this run registered with its classifier's digest; give it the
    champion alias when its classifier was promoted, or (``follow``) when the holder
    serves the same classifier."""
    client = tracker.client
    versions = client.search_model_versions(f"name='{serving_name}' and run_id='{tracker.run_id}'")
    if not versions:
        return {}
    v = max(versions, key=lambda x: int(x.version))
    client.set_model_version_tag(serving_name, str(v.version), CLASSIFIER_TAG, digest)
    alias = str(cfg.model.champion_alias)
    try:
        holder = client.get_model_version_by_alias(serving_name, alias)
        held: int | None = int(holder.version)
        same = dict(holder.tags or {}).get(CLASSIFIER_TAG) == digest
    except MlflowException:  # no holder yet
        held, same = None, False
    if not (promoted or (follow and same)):
        return {"version": int(v.version)}
    note_undo("alias", {"name": serving_name, "alias": alias, "previous": held})
    client.set_registered_model_alias(serving_name, alias, str(v.version))
    return {"alias": alias, "version": int(v.version)}
