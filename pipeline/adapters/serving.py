"""The model as an MLflow pyfunc: feature rows in; probability, tier and reasons out.

Logged by the train stage next to (not instead of) the LightGBM flavour, registered as
``<registered_model>-serving`` and given the champion alias whenever the LightGBM
model of the same run becomes the champion, so that

    mlflow models serve -m models:/closure-risk-lgbm-serving@champion --env-manager local -h 127.0.0.1

answers ``POST /invocations``. The artifacts are the LightGBM text model, the
calibration JSON and a small JSON with the feature names, mode and tier cut-offs; the
model class is logged as code (``serving_model.py``), so nothing is pickled. Reasons use the registry's feature -> cause split (the learned
split of the explain stage does not exist yet when the model is trained).
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel

from pipeline.adapters import catalog
from pipeline.base.io import DataError
from pipeline.core import scoring

SERVING_SUFFIX = "-serving"


class ClosureRiskModel(PythonModel):  # type: ignore[misc]
    """Calibrated closure risk with its tier and top reason codes."""

    def load_context(self, context: Any) -> None:
        art = context.artifacts
        booster = catalog.load_booster(Path(art["model"]))
        cal = catalog.parse_calibrator(Path(art["calibration"]))
        meta = json.loads(Path(art["meta"]).read_text())
        self.cuts = [float(c) for c in meta["tier_cuts"]]
        self.tiers = [str(t) for t in meta["tier_names"]]
        self.top_k = int(meta.get("top_k", 3))
        self.model = catalog.scoring_model(booster, meta, cal, "pyfunc", None)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        df = pd.DataFrame(model_input).reset_index(drop=True)
        missing = [n for n in self.model.names if n not in df.columns]
        if missing:
            raise DataError(f"request: column(s) {', '.join(missing)} missing (model features)")
        if "borrower_id" not in df.columns:
            df["borrower_id"] = np.arange(len(df), dtype=np.int64)
        df = scoring.validate_features(df, Path("request"), self.model.names, "borrower_id")
        out = scoring.score_frame(
            self.model, df, "borrower_id", self.cuts, self.tiers, self.top_k, advice_rows=0
        )
        return out.drop(columns=[c for c in out.columns if c.startswith("advice_")])


def log_serving_model(
    cfg: Any, tracker: Any, models_dir: Path, name: str | None, champion: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Log the pyfunc in the current run, register it, move its champion alias with the model's."""
    if not tracker.enabled or tracker.run_id is None:
        return None
    meta = json.loads((models_dir / "model.json").read_text())
    names = list(meta["feature_names"])
    serving_name = f"{name}{SERVING_SUFFIX}" if name else None
    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "feature_names": names,
            "mode": meta.get("mode", "simulator"),
            "tier_cuts": [float(c) for c in cfg.score.tier_cuts],
            "tier_names": [str(t) for t in cfg.score.tier_names],
            "top_k": int(cfg.score.top_k),
        }
        spec_path = Path(tmp) / "serving.json"
        spec_path.write_text(json.dumps(spec))
        cal_path = models_dir / "calibration.json"
        if not cal_path.exists():
            cal_path = Path(tmp) / "calibration.json"
            cal_path.write_text(json.dumps({"method": "none"}))
        artifacts = {
            "model": str(models_dir / "model.txt"),
            "calibration": str(cal_path),
            "meta": str(spec_path),
        }
        example = pd.DataFrame(np.zeros((2, len(names)), dtype=np.float64), columns=names)
        feat_path = Path(cfg.paths.processed_dir) / "features.parquet"
        if meta.get("mode", "simulator") == "simulator" and feat_path.exists():
            example = pq.read_table(feat_path, columns=names).slice(0, 2).to_pandas()
            example = example.astype(np.float64)
        model = ClosureRiskModel()
        model.load_context(type("Ctx", (), {"artifacts": artifacts})())
        signature = infer_signature(example, model.predict(None, example))
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
    out: dict[str, Any] = {"model_uri": str(info.model_uri), "registered": serving_name}
    if serving_name and champion and champion.get("promoted"):
        client = tracker.client
        versions = client.search_model_versions(
            f"name='{serving_name}' and run_id='{tracker.run_id}'"
        )
        if versions:
            v = max(versions, key=lambda x: int(x.version))
            alias = str(cfg.model.champion_alias)
            client.set_registered_model_alias(serving_name, alias, str(v.version))
            out.update(alias=alias, version=int(v.version))
    return out
