"""Runner of the ``train`` stage: fit, calibrate, compare with baselines, evaluate, register.

Two modes share everything after the data is loaded:

* ``data.kind=simulator``: the feature table of the ``features`` stage, the monotone
  directions of the feature registry, the oracle of the simulated world;
* ``data.kind=table``: any CSV or Parquet table (:mod:`pipeline.core.table`), written back as
  ``data/processed/table_features.parquet`` for the explain stage, with repeated
  stratified cross-validation on top of the held-out splits.

Outputs in ``models/``: ``model.txt`` (LightGBM text), ``model.json`` (feature names,
best iteration, params, metrics, config, mode, categorical mapping, calibration),
``calibration.json``, ``evaluation.json``, ``scorecard.csv``, ``gains_oot.csv`` and
plots under ``models/plots/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from omegaconf import OmegaConf

from pipeline.adapters import distributed, model_registry
from pipeline.adapters.catalog import Catalog, data_digest, derived, entry_row_groups
from pipeline.adapters.serving import log_serving_model
from pipeline.adapters.tracking import Tracker, flatten_numbers, redact_tree
from pipeline.base.causes import AGE_BANDS, OCCUPATIONS
from pipeline.base.config import Config, label_window_clash, physical_cores, split_snapshots
from pipeline.base.io import (
    DataError,
    write_text,
)
from pipeline.base.registry import BY_NAME, CATEGORICAL, FEATURE_NAMES
from pipeline.core import baselines as base_core
from pipeline.core import calibration as cal_core
from pipeline.core import compose as compose_core
from pipeline.core import drift as drift_core
from pipeline.core import evaluation as eval_core
from pipeline.core import explain as explain_core
from pipeline.core import report as report_core
from pipeline.core import screening as screening_core
from pipeline.core import selection as selection_core
from pipeline.core import table as table_core
from pipeline.core import train as train_core
from pipeline.core.features import FEATURE_TABLE_SCHEMA
from pipeline.core.selection import ORDER
from pipeline.stages.common import Result, release_memory, say

SPLITS = ("train", "valid", "oot")
MONOTONE_SAMPLE = 400  # rows swept per constrained feature by the monotone check


def monotone_vector(names: list[str]) -> list[int]:
    return [BY_NAME[n].monotone if n in BY_NAME else 0 for n in names]


@dataclass
class TrainData:
    """What both modes hand to the common part of the stage."""

    mode: str  # simulator | table
    frame: pd.DataFrame  # split, label, features, and any key / segment columns
    names: list[str]
    categorical: list[str]  # passed to LightGBM as categorical
    woe_categorical: list[str]  # treated per code by the scorecard
    monotone: list[int] | None
    source: Path
    meta: dict[str, Any] = field(default_factory=dict)
    segments: dict[str, str] = field(default_factory=dict)  # summary key -> column
    oracle: pd.DataFrame | None = None
    # simulator: ``frame`` holds the key columns only; the rows are read from ``source``
    # into one matrix per split when the model is fitted (one row group at a time), so
    # the whole table is never in memory at once
    by_split: bool = False

    @property
    def words(self) -> report_core.Words:
        """The run's words for what it predicts and where it is judged."""
        return report_core.words({"mode": self.mode, **self.meta})


def _simulator_data(cfg: Any, p: Catalog) -> TrainData:
    feat_path = p.path("features")
    # the whole file's rules (split names, labels, unique keys) on its key columns only;
    # the feature rows are read later, into one matrix per split (:func:`_split_rows`)
    df = p.read("features", ["split", "label"]).to_pandas()
    names = list(FEATURE_NAMES)
    oracle = None
    if p.path("oracle").exists():
        cols = ["borrower_id", "snapshot", "p_oracle", "p_full", "p_observable", "n_futures"]
        halves = [f"{c}_h{j}" for c in ("p_full", "p_observable") for j in (1, 2)]
        oracle = p.read("oracle", cols + halves).to_pandas()
    return TrainData(
        mode="simulator",
        frame=df,
        names=names,
        categorical=[],  # codes kept numeric so the explain stage's fast TreeSHAP applies
        woe_categorical=list(CATEGORICAL),
        monotone=monotone_vector(names) if cfg.model.monotone else None,
        source=feat_path,
        # per out-of-time snapshot month: the vintage view of the report
        segments={
            "oot_by_regime": "regime",
            "oot_by_occupation": "occupation",
            "oot_by_snapshot": "snapshot",
            "oot_by_city_tier": "city_tier",
            "oot_by_tenure_band": "tenure",  # in bands (evaluation.tenure_band)
        },
        oracle=oracle,
        by_split=True,
    )


def _table_data(cfg: Any, p: Catalog) -> TrainData:
    d = cfg.data
    path = Path(str(d.path)).expanduser()
    raw = table_core.read_any(path, sep=str(d.sep))  # "": detected
    prepared = table_core.prepare(
        raw,
        path,
        target=str(d.target),
        id_column=str(d.id),
        time=str(d.time),
        positive=str(d.positive),
        valid_frac=float(d.valid_frac),
        oot_frac=float(d.oot_frac),
        seed=int(d.seed),
        decimal=str(d.decimal),
        max_single_auc=float(d.max_single_auc),
    )
    for note in prepared.notes:
        say(f"train: {path}: {note}")
    out = p.write("table_features", pa.Table.from_pandas(prepared.frame, preserve_index=False))
    say(
        f"train: table {path} -> {out} ({len(prepared.frame):,} rows, "
        f"{len(prepared.feature_names)} features, {len(prepared.categorical)} categorical; "
        f"{prepared.split_rule})"
    )
    # features.select (off unless set) drops what the screening rules name
    select = bool(cfg.features.select)
    screened = _table_screening(prepared, raw, str(d.time), select)
    if screened.dropped:
        verb = "drops" if select else "would drop"
        found = ", ".join(f"{k} ({v})" for k, v in screened.dropped.items())
        say(f"train: screening {verb} {found}")
    names = screened.use
    categorical = [c for c in prepared.categorical if c in names]
    monotone = _declared_monotone(dict(d.monotone or {}), prepared, names, path)
    return TrainData(
        mode="table",
        frame=prepared.frame,
        names=names,
        categorical=categorical,
        woe_categorical=categorical,
        monotone=monotone,
        source=path,
        meta={
            "table": {
                "path": str(path),
                "target": str(d.target),
                "positive": prepared.positive,
                "id": prepared.id_column,
                "time": str(d.time) or None,
                "split_rule": prepared.split_rule,
                "features_path": str(out),
            },
            "categories": prepared.categories,
            "encoding": prepared.encoding.to_json() if prepared.encoding else None,
            "screening": screened.to_dict(),
        },
    )


def _declared_monotone(
    declared: dict[str, int], prepared: table_core.PreparedTable, names: list[str], path: Path
) -> list[int] | None:
    """``data.monotone`` ({column: 1 or -1}, the table's own names) as a vector over ``names``.

    A column that is not a feature of the table, a categorical one (its codes have no
    order) or one the screening dropped is refused, naming the column.
    """
    if not declared:
        return None
    safe = (
        {orig: s for s, orig in prepared.encoding.original_names.items()}
        if prepared.encoding
        else {}
    )
    out = dict.fromkeys(names, 0)
    for column, direction in declared.items():
        s = safe.get(str(column))
        if s is None:
            raise DataError(
                f"{path}: data.monotone names column {column!r}, which is not a feature "
                f"column of the table (features: {', '.join(safe) or '-'})"
            )
        if s in prepared.categorical:
            raise DataError(
                f"{path}: column {column!r} is categorical; data.monotone applies to numeric "
                "columns only (category codes have no order)"
            )
        if s not in out:
            raise DataError(
                f"{path}: column {column!r} of data.monotone was dropped by the screening "
                "(features.select); keep it or drop its constraint"
            )
        out[s] = int(direction)
    return [out[n] for n in names]


def _table_screening(
    prepared: table_core.PreparedTable, raw: pd.DataFrame, time: str, select: bool
) -> screening_core.Screening:
    """IV, PSI across ``time`` (when given) and correlation on the training rows."""
    train = (prepared.frame.split == "train").to_numpy()
    rows = prepared.frame[train]
    when = table_core.time_values(raw, time)[train] if time else None
    return screening_core.screen(
        rows[prepared.feature_names].to_numpy(dtype=float),
        rows.label.to_numpy(),
        prepared.feature_names,
        prepared.categorical,
        time=when,
        select=select,
    )


def _scorecard(sc: Any, data: TrainData) -> base_core.Scorecard:
    """An unfitted scorecard with the ``model.scorecard`` settings, the directions the
    data declares (the registry, or a table's ``data.monotone``) and its level names."""
    if data.mode == "simulator":
        declared = monotone_vector(data.names)  # the registry's, whatever model.monotone says
        levels: dict[str, list[str]] = {
            "occupation_code": list(OCCUPATIONS),
            "age_band_code": list(AGE_BANDS),
        }
    else:
        declared = list(data.monotone or [0] * len(data.names))
        levels = {k: list(v) for k, v in dict(data.meta.get("categories") or {}).items()}
    return base_core.Scorecard(
        pdo=float(sc.pdo),
        base_score=float(sc.base_score),
        base_odds=float(sc.base_odds),
        max_bins=int(sc.max_bins),
        min_iv=float(sc.min_iv),
        max_features=int(sc.max_features),
        max_corr=float(sc.max_corr),
        max_vif=float(sc.max_vif),
        min_bin_share=float(sc.min_bin_share),
        bin_pvalue=float(sc.bin_pvalue),
        enter_pvalue=float(sc.enter_pvalue),
        directions={n: int(d) for n, d in zip(data.names, declared, strict=True) if d},
        levels=levels,
    )


def _fit_baselines(
    m: Any, data: Any, X: dict[str, np.ndarray], y: dict[str, np.ndarray], splits: dict[str, Any]
) -> tuple[base_core.Scorecard, base_core.RulesBaseline | None]:
    """The scorecard (and, on simulator data, the seed's rules) fitted on the training split."""
    card = _scorecard(m.scorecard, data).fit(
        X["train"], y["train"], data.names, data.woe_categorical
    )
    rules = None
    if data.mode == "simulator":
        rules = base_core.RulesBaseline().fit(splits["train"], y["train"])
    return card, rules


@dataclass
class Fitted:
    """The trained booster with the split matrices and the scores it gave them."""

    booster: Any
    best_iteration: int
    seconds: float
    params: dict[str, Any]
    splits: dict[str, pd.DataFrame]  # per split: the non-feature columns still needed
    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]  # uncalibrated probabilities
    calibrator: cal_core.Calibrator
    cal: dict[str, np.ndarray]  # calibrated probabilities
    metrics: dict[str, dict[str, float]]
    n_bins: int
    n_rows: int

    @property
    def eval_split(self) -> str:
        return "oot" if len(self.y["oot"]) else "valid"


@dataclass
class Baselines:
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)  # scorecard_card.json


def _finite_or_none(v: Any) -> Any:
    """JSON has no infinity: an open end of a score band is written as null."""
    return None if isinstance(v, float) and not np.isfinite(v) else v


def _say_card(card: dict[str, Any]) -> None:
    dropped = card["sign_dropped"]
    signs = "; dropped for a coefficient against its WoE: " + ", ".join(dropped) if dropped else ""
    say(
        f"train: scorecard of {card['n_features']} features (base points "
        f"{card['base_points']:.1f}, {card['pdo']:g} points double the odds), "
        f"{card['coef_against_woe']} coefficients against their WoE{signs}"
    )


def card_summary(card: dict[str, Any]) -> dict[str, Any]:
    """The scorecard's part of the summary: its size, scaling, signs and what the signs
    dropped (the whole selection log stays in ``scorecard_card.json``)."""
    keys = ("n_features", "features", "coef_against_woe", "sign_dropped", "base_points")
    return {
        **{k: card[k] for k in keys},
        "pdo": card["pdo"],
        "base_score": card["base_score"],
        "base_odds": card["base_odds"],
    }


@dataclass(frozen=True)
class TrainResult(Result):
    """What the train stage hands back to the driver (``summary``: its evaluation, with
    what the registry made of the model)."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    model_uri: str | None = None
    seconds: float = 0.0


@dataclass
class Trained:
    """What either engine hands to the one ending of the stage (:func:`_finish`)."""

    engine: str  # local | dask
    mode: str  # simulator | table
    booster: Any
    best_iteration: int
    seconds: float
    params: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    calibrator: cal_core.Calibrator
    names: list[str]
    categorical: list[str]
    monotone: list[int] | None
    source: Path  # the data the model was trained on
    part: dict[str, Any]  # the evaluation, as published in evaluation.json
    gains: pd.DataFrame
    gains_split: str
    example: pd.DataFrame  # a few rows for the logged model's signature
    words: report_core.Words
    meta: dict[str, Any] = field(default_factory=dict)  # more keys of model.json
    plots: list[Path] = field(default_factory=list)
    base_metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # scores another booster on this model's evaluation rows: (labels, this model's scores,
    # the other's), or None when its features differ (None: the rows are not here)
    rescore: model_registry.Rescore | None = None


def train(cfg: Config, tracker: Tracker) -> TrainResult:
    p = Catalog.of(cfg)
    if cfg.engine.kind == "dask" and cfg.data.kind != "table":
        return _finish(cfg, tracker, p, _train_dask(cfg, p))
    return _finish(cfg, tracker, p, _train_local(cfg, tracker, p))


def _train_local(cfg: Config, tracker: Tracker, p: Catalog) -> Trained:
    """engine=local: the rows in this process; baselines, segments, oracle and (table
    mode) cross-validated model selection."""
    data = _table_data(cfg, p) if cfg.data.kind == "table" else _simulator_data(cfg, p)
    if data.mode == "table":  # the user's table as the run's dataset input
        tracker.log_table(
            data.source,
            data_digest(data.source),
            data.frame.dtypes.astype(str).to_dict(),
            rows=len(data.frame),
            rows_per_split={str(k): int(v) for k, v in data.frame["split"].value_counts().items()},
        )
    # table mode: the candidates are cross-validated first; the selected one is the model
    cv = _cross_validate(cfg, data) if data.mode == "table" and cfg.model.cv_repeats > 0 else None
    fitted = _fit(cfg, data, cv["selected"]["name"] if cv else None)
    base = _baselines(cfg, tracker, p, data, fitted)
    part = _evaluate(cfg, data, fitted, base, cv)
    part["model"]["engine"] = "local"
    if data.mode == "table" and len(fitted.y["oot"]):
        part["tiers"] = holdout_tiers(fitted.cal["oot"], list(cfg.score.tier_quantiles))
        data.meta["tier_cuts"] = part["tiers"]["cuts"]
    split = fitted.eval_split
    y, raw = fitted.y, fitted.raw
    return Trained(
        engine="local",
        mode=data.mode,
        booster=fitted.booster,
        best_iteration=fitted.best_iteration,
        seconds=fitted.seconds,
        params=fitted.params,
        metrics=fitted.metrics,
        calibrator=fitted.calibrator,
        names=data.names,
        categorical=data.categorical,
        monotone=data.monotone,
        source=data.source,
        part=part,
        gains=eval_core.gains_frame(y[split], raw[split]),
        gains_split=split,
        example=pd.DataFrame(fitted.X["valid"][:5], columns=data.names),
        words=data.words,
        meta={**data.meta, **_reference(data.mode, data.names, fitted.X["train"])},
        plots=_plots(
            y,
            raw,
            fitted.cal,
            base.scores,
            p,
            fitted.n_bins,
            data.words,
            str(part["model"]["kind"]),
        ),
        base_metrics=base.metrics,
        rescore=_rescorer(data.names, fitted.X["oot"], fitted.y["oot"], fitted.raw["oot"]),
    )


def _reference(mode: str, names: list[str], X: np.ndarray) -> dict[str, Any]:
    """model.json's ``reference``: each feature's median over the training rows, the value
    a reason's risky side is read against (simulator models; see
    :func:`pipeline.core.explain.reason_codes`). A missing median is written as null."""
    if mode != "simulator":
        return {}
    med = explain_core.feature_reference(X)
    return {
        "reference": {
            n: float(v) if np.isfinite(v) else None for n, v in zip(names, med, strict=True)
        }
    }


def _train_dask(cfg: Config, p: Catalog) -> Trained:
    """engine=dask: trained with LightGBM's Dask estimator and evaluated from histograms
    (:func:`pipeline.adapters.distributed.train_on_cluster`); neither the features nor
    the scores of the splits come to this process, so the baselines, segments and
    oracle comparison, which need the rows, are left out, and the champion is judged on
    the figures its runs logged."""
    m, names = cfg.model, list(FEATURE_NAMES)
    feat_path = p.path("features")
    if not feat_path.exists():
        raise DataError(f"{feat_path}: no feature table; run the features stage first")
    monotone = monotone_vector(names) if m.monotone else None
    with distributed.client_for(cfg.engine) as client:
        run = distributed.train_on_cluster(
            client, feat_path, names, m, int(cfg.data.seed), monotone
        )
    fit = run.fit
    run.part["splits"] = splits_part(cfg)
    if "score_psi" in run.part:
        # the rows stay on the workers: no SHAP ranking of the drivers, so no feature is
        # checked for extrapolation under engine=dask (``extrapolated`` is None: unknown)
        drift = drift_core.drift_summary(_stability(p), [], float(run.part["score_psi"]))
        run.part["drift"] = {**drift, "extrapolated": None}
    return Trained(
        engine="dask",
        mode="simulator",
        booster=fit.booster,
        best_iteration=fit.best_iteration,
        seconds=fit.seconds,
        params=run.params,
        metrics=run.metrics,
        calibrator=run.calibrator,
        names=names,
        categorical=[],
        monotone=monotone,
        source=feat_path,
        part=run.part,
        gains=pd.DataFrame(run.gains),
        gains_split="oot" if "oot" in run.metrics else "valid",
        example=fit.example,
        words=report_core.words({"mode": "simulator"}),
        meta={"engine": "dask"},
    )


def _finish(cfg: Config, tracker: Tracker, p: Catalog, t: Trained) -> TrainResult:
    """The one ending of the stage, whatever the engine: publish the model and its
    evaluation, then register what was published (log, judge the champion, log the
    serving model), then print."""
    model_path = _publish(cfg, p, t)
    model_uri, registry = _register(cfg, tracker, p, t)
    _report(t.part, t.metrics, t.base_metrics, t.best_iteration, t.seconds, model_path, t.words)
    return TrainResult(
        summary={**t.part, **registry}, metrics=t.metrics, model_uri=model_uri, seconds=t.seconds
    )


def _params(cfg: Config, data: TrainData) -> dict[str, Any]:
    """The configured LightGBM parameters for this data (monotone directions included)."""
    m = cfg.model
    threads = int(m.num_threads) or physical_cores()
    n_train = int((data.frame.split == "train").sum())
    return train_core.lgb_params(m, int(cfg.data.seed), threads, data.monotone, n_train=n_train)


def _fit(cfg: Config, data: TrainData, selected: str | None = None) -> Fitted:
    """The model and its calibration on the validation split.

    ``selected`` (table mode) names the candidate the cross-validation chose: it is fitted
    on the training split as in each fold and compiled into one LightGBM model
    (:func:`_selected_booster`). Otherwise: LightGBM with early stopping on validation.
    """
    m = cfg.model
    df, names = data.frame, data.names
    for s in ("train", "valid"):
        labels = df.label[df.split == s]
        if len(labels) == 0 or labels.nunique() < 2:
            raise DataError(
                f"{data.source}: split '{s}' needs rows of both classes in column 'label'"
            )
    params = _params(cfg, data)
    n_rows = len(df)
    if data.by_split:
        X, y, splits = _split_rows(data)
        data.frame = pd.DataFrame()
    else:
        splits = {s: df[df.split == s] for s in SPLITS}
        X = {s: g[names].to_numpy(dtype=np.float32) for s, g in splits.items()}
        y = {s: g.label.to_numpy().astype(int) for s, g in splits.items()}
    del df

    t0 = time.perf_counter()
    if selected is not None:
        booster = _selected_booster(cfg, data, selected, X["train"], y["train"], params)
        best_iteration = booster.num_trees()
    else:
        res = train_core.fit(
            X["train"],
            y["train"],
            X["valid"],
            y["valid"],
            names,
            params,
            int(m.n_estimators),
            int(m.early_stopping_rounds),
            data.categorical,
        )
        booster, best_iteration = res.booster, res.best_iteration
    seconds = time.perf_counter() - t0
    # the training Datasets are gone with the fit: hand their memory back before the
    # baselines build their own matrices on top of the split matrices
    release_memory()
    raw = {s: train_core.predict(booster, X[s]) for s in SPLITS}
    calibrator = cal_core.fit(str(m.calibration), raw["valid"], y["valid"])
    cal = {s: calibrator.apply(raw[s]) for s in SPLITS}
    n_bins = int(m.calibration_bins)
    metrics = {
        s: eval_core.score_metrics(y[s], raw[s], cal[s], n_bins) for s in SPLITS if len(y[s])
    }
    return Fitted(
        booster,
        best_iteration,
        seconds,
        params,
        splits,
        X,
        y,
        raw,
        calibrator,
        cal,
        metrics,
        n_bins,
        n_rows,
    )


def _split_rows(
    data: TrainData,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, pd.DataFrame]]:
    """Per split: the feature matrix, the labels and the other columns still needed.

    One pass over the file, one row group at a time: each group's rows go straight from
    Arrow into the float32 matrix of their split, allocated once at its final size
    (the split sizes come from the key columns already read); only the columns the
    evaluation and the rules baseline read stay as a frame. At a million borrowers this
    holds one row group besides the matrices, instead of a split's whole table, and
    decodes the file once instead of once per split.
    """
    names = data.names
    needed = {*base_core.RULE_FEATURES, *data.segments.values()}
    keep = [c for c in FEATURE_TABLE_SCHEMA.names if c not in set(names) or c in needed]
    sizes = data.frame["split"].value_counts()
    X = {
        s: np.empty((int(sizes.get(s, 0)), len(names)), dtype=np.float32, order="F") for s in SPLITS
    }
    y = {s: np.empty(len(X[s]), dtype=int) for s in SPLITS}
    kept: dict[str, list[pa.Table]] = {s: [] for s in SPLITS}
    at = dict.fromkeys(SPLITS, 0)
    for group in entry_row_groups("features", data.source):
        split = group.column("split")
        for s in SPLITS:
            mask = pc.equal(split, s)
            rows = group.filter(mask)
            a, b = at[s], at[s] + rows.num_rows
            if b > len(X[s]):
                raise DataError(f"{data.source}: split '{s}' has more rows than when first read")
            feature_matrix(rows, names, out=X[s][a:b])
            y[s][a:b] = rows.column("label").to_numpy()
            kept[s].append(rows.select(keep))
            at[s] = b
        del group, split
    splits: dict[str, pd.DataFrame] = {}
    for s in SPLITS:
        if at[s] != len(X[s]):
            raise DataError(f"{data.source}: split '{s}' has fewer rows than when first read")
        pieces = kept.pop(s) or [FEATURE_TABLE_SCHEMA.empty_table().select(keep)]
        splits[s] = pa.concat_tables(pieces).to_pandas()
    release_memory()
    return X, y, splits


def feature_matrix(rows: pa.Table, names: list[str], out: np.ndarray | None = None) -> np.ndarray:
    """``rows``' columns ``names`` as one float32 matrix, filled column by column
    (into ``out``, a slice of a larger matrix, if given).

    Column-major, the layout LightGBM and NumPy take without a copy, and the one a
    pandas frame of float32 columns hands out, so a model fitted on it is the same.
    """
    if out is None:
        out = np.empty((rows.num_rows, len(names)), dtype=np.float32, order="F")
    for j, name in enumerate(names):
        out[:, j] = rows.column(name).to_numpy()
    return out


def _selected_booster(
    cfg: Config,
    data: TrainData,
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
) -> Any:
    """The selected candidate fitted on ``X`` and written as one LightGBM model.

    Every candidate is a sum of log-odds terms (a scorecard, boosters, their committee):
    :func:`pipeline.core.compose.compile_terms` writes that sum exactly as trees, so
    serving, TreeSHAP, the registry and the champion's rescoring take it as they take
    any LightGBM model.
    """
    m = cfg.model
    final = selection_core.fit_selected(
        name,
        X,
        y,
        data.names,
        data.categorical,
        scorecard=lambda: _scorecard(m.scorecard, data),
        woe_categorical=data.woe_categorical,
        base_params=params,
        n_estimators=int(m.n_estimators),
        early_stopping_rounds=int(m.early_stopping_rounds),
        seed=int(cfg.data.seed),
        tune_seconds=float(m.tune_seconds),
    )
    bias, terms = final.terms()
    booster = compose_core.compile_terms(bias, terms, data.names, data.categorical)
    got = np.asarray(booster.predict(X, raw_score=True))
    want = final.log_odds(X)
    worst = float(np.max(np.abs(got - want))) if len(got) else 0.0
    if not worst <= 1e-6:  # the compiled model must be the selected one, row for row
        raise RuntimeError(
            f"the compiled {name} model differs from the fitted one by {worst:.3g} in "
            "log-odds on the training rows"
        )
    return booster


def _monotone_check(cfg: Config, data: TrainData, fitted: Fitted) -> dict[str, Any]:
    """Constrained features swept on sampled validation rows: the violations found."""
    if not data.monotone or not any(data.monotone):
        return {}
    rng = np.random.default_rng(int(cfg.data.seed))
    pool = fitted.X["valid"]
    rows = pool[rng.choice(len(pool), size=min(MONOTONE_SAMPLE, len(pool)), replace=False)]
    found = train_core.monotone_violations(fitted.booster, rows, data.monotone)
    return {
        "features": {data.names[j]: int(data.monotone[j]) for j in found},
        "violations": int(sum(v["violations"] for v in found.values())),
        "checks": int(sum(v["checks"] for v in found.values())),
    }


def _baselines(
    cfg: Config, tracker: Tracker, p: Catalog, data: TrainData, fitted: Fitted
) -> Baselines:
    """The baselines on the same split, each its own nested run."""
    m = cfg.model
    out = Baselines()
    if not m.baselines:
        return out
    X, y, splits = fitted.X, fitted.y, fitted.splits
    sc_cfg = m.scorecard
    scorecard_path = p.path("scorecard")
    card, rules = _fit_baselines(m, data, X, y, splits)
    out.scores["scorecard"] = {s: card.predict_proba(X[s]) for s in SPLITS}
    write_text(card.table().to_csv(index=False), scorecard_path)
    present = [s for s in SPLITS if len(y[s])]
    bands = base_core.score_bands(card, {s: X[s] for s in present}, {s: y[s] for s in present})
    records = [{k: _finite_or_none(v) for k, v in r.items()} for r in bands.to_dict("records")]
    out.card = {**card.card(), "bands": records}
    card_path = p.write("scorecard_card", out.card)
    artifacts = {"scorecard": [scorecard_path, card_path]}
    _say_card(out.card)
    if rules is not None:
        out.scores["rules"] = {s: rules.predict_proba(splits[s]) for s in SPLITS}
        rules_path = p.path("rules_baseline")
        write_text(rules.table().to_csv(index=False), rules_path)
        artifacts["rules"] = [rules_path]
    for name, scores in out.scores.items():
        out.metrics[name] = {
            s: eval_core.score_metrics(y[s], scores[s], None, fitted.n_bins)
            for s in SPLITS
            if len(y[s])
        }
        with tracker.run(f"baseline:{name}", tags={"baseline": name}):
            tracker.log_metrics(
                {f"{s}.{k}": v for s, mm in out.metrics[name].items() for k, v in mm.items()}
            )
            if name == "scorecard":
                tracker.log_params(
                    {
                        "pdo": sc_cfg.pdo,
                        "base_score": sc_cfg.base_score,
                        "base_odds": sc_cfg.base_odds,
                        "features_kept": len(card.bins_),
                        "coef_against_woe": out.card["coef_against_woe"],
                    }
                )
            else:
                tracker.log_params(base_core.RULES)
            for path in artifacts[name]:
                tracker.log_artifact(path, "baseline")
    return out


def _evaluate(
    cfg: Config,
    data: TrainData,
    fitted: Fitted,
    base: Baselines,
    cv: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The evaluation part of the summary: calibration, segments, stability, oracle, CV."""
    metrics, y, raw, cal, splits = fitted.metrics, fitted.y, fitted.raw, fitted.cal, fitted.splits
    part: dict[str, Any] = {
        "mode": data.mode,
        "model": {
            "kind": "lightgbm",
            "best_iteration": fitted.best_iteration,
            "train_seconds": fitted.seconds,
        },
        "calibration": {
            "method": fitted.calibrator.method,
            "valid_ece_before": metrics["valid"].get("ece_raw", metrics["valid"]["ece"]),
            "valid_ece_after": metrics["valid"]["ece"],
        },
    }
    if fitted.calibrator.selection:  # auto: each candidate's validation log-loss
        part["calibration"]["selection"] = dict(fitted.calibrator.selection)
    if len(y["oot"]):
        part["calibration"].update(
            oot_ece_before=metrics["oot"].get("ece_raw", metrics["oot"]["ece"]),
            oot_ece_after=metrics["oot"]["ece"],
        )
    c, split = part["calibration"], fitted.eval_split
    c.update(
        cal_core.summary(
            y[split], raw[split], cal[split], c[f"{split}_ece_before"], c[f"{split}_ece_after"]
        )
    )
    if len(y["oot"]):
        part["score_psi"] = eval_core.score_psi(raw["train"], raw["oot"])
        for key, col in data.segments.items():
            if col in splits["oot"].columns:
                values = splits["oot"][col].to_numpy()
                if key == "oot_by_tenure_band":
                    values = eval_core.tenure_band(values)
                part[key] = eval_core.segment_metrics(
                    y["oot"], raw["oot"], cal["oot"], values, fitted.n_bins
                )
        if data.oracle is not None:
            part.update(eval_core.oracle_gap(splits["oot"], y["oot"], raw["oot"], data.oracle))
    part["valid"] = metrics["valid"]
    if "oot" in metrics:
        part["oot"] = metrics["oot"]
    if base.metrics:
        part["baselines"] = {
            n: {s: bm[s] for s in ("valid", "oot") if s in bm} for n, bm in base.metrics.items()
        }
    if base.card:
        part["scorecard"] = card_summary(base.card)
    mono = _monotone_check(cfg, data, fitted)
    if mono:
        part["monotone_check"] = mono
    if cv is not None:
        part["cv"] = cv
        part["model"]["kind"] = cv["selected"]["name"]
        # the rows the selection never saw, scored once by the selected model
        part["holdout"] = holdout_part(y["oot"], raw["oot"], data.words)
    if data.mode == "table":
        part["n_rows"] = int(fitted.n_rows)
    else:
        part["splits"] = splits_part(cfg)
        if len(y["oot"]):
            part["drift"] = _drift(cfg, fitted, part["score_psi"])
            _weak_spots(part, y, raw, cal)
    return part


def _weak_spots(
    part: dict[str, Any],
    y: dict[str, np.ndarray],
    raw: dict[str, np.ndarray],
    cal: dict[str, np.ndarray],
) -> None:
    """Segments well below the whole and calibration that made things worse, as warnings
    beside the drift ones (``drift.warnings``; details in ``drift.weak_segments``)."""
    c = part["calibration"]
    for split in ("valid", "oot"):
        if len(y[split]):
            ch = eval_core.calibration_change(y[split], raw[split], cal[split])
            c.update(
                {
                    f"{split}_brier_diff": ch["brier_diff"],
                    f"{split}_brier_diff_se": ch["brier_diff_se"],
                    f"{split}_rows": ch["n"],
                }
            )
    whole = {**part.get("oot", {}), "auc_se": eval_core.auc_se(y["oot"], raw["oot"])}
    detail, seg_words = drift_core.segment_warnings(whole, part)
    d = part["drift"]
    d["weak_segments"] = detail
    d["warnings"] = [*d.get("warnings", []), *seg_words, *drift_core.calibration_warnings(c)]


def splits_part(cfg: Config) -> dict[str, Any]:
    """The snapshot months of each split, the horizon, and whether their labels stay apart."""
    f = cfg.features
    months = split_snapshots(f)
    return {
        "train_snapshots": months["train"],
        "valid_snapshots": months["valid"],
        "oot_snapshots": months["oot"],
        "horizon": int(f.horizon),
        "gap_ok": label_window_clash(f) is None,
    }


#: out-of-time rows whose SHAP values rank the model's drivers for the drift check
DRIFT_SHAP_ROWS = 5000


def _drift(cfg: Config, fitted: Fitted, score_psi: float) -> dict[str, Any]:
    """Drift between training and out-of-time rows (:mod:`pipeline.core.drift`).

    The model's drivers are ranked by mean |SHAP| (TreeSHAP, log-odds) on a fixed sample
    of at most :data:`DRIFT_SHAP_ROWS` out-of-time rows; the features' PSI and
    out-of-range shares come from the features stage's stability report.
    """
    stability = _stability(Catalog.of(cfg))
    X = fitted.X["oot"]
    rows = np.random.default_rng(0).permutation(len(X))[:DRIFT_SHAP_ROWS]
    rows.sort()
    # the project's TreeSHAP: LightGBM's pred_contrib values, several times faster
    contrib = explain_core.contributions(fitted.booster, X[rows])[0][:, :-1]
    names = fitted.booster.feature_name()
    mean_abs = np.abs(contrib).mean(axis=0)
    order = sorted(range(len(names)), key=lambda j: (-mean_abs[j], names[j]))
    importance = [(names[j], float(mean_abs[j])) for j in order]
    tr, oot = fitted.splits["train"], fitted.splits["oot"]
    return drift_core.drift_summary(
        stability,
        importance,
        score_psi,
        train_regimes=tr["regime"].to_numpy() if "regime" in tr else None,
        oot_regimes=oot["regime"].to_numpy() if "regime" in oot else None,
        train_borrowers=tr["borrower_id"].to_numpy() if "borrower_id" in tr else None,
        oot_borrowers=oot["borrower_id"].to_numpy() if "borrower_id" in oot else None,
    )


def _stability(p: Catalog) -> pd.DataFrame:
    """The features stage's stability report (empty when it is not there)."""
    path = p.path("stability")
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def _publish(cfg: Config, p: Catalog, t: Trained) -> Path:
    """Write the model, its calibration, metadata, evaluation and gains; returns the
    model's path. What was derived from the previous model goes (at publication)."""
    p.models.mkdir(parents=True, exist_ok=True)
    # a new model: what was explained, simulated or reported for the old one is stale
    p.remove("gains", *derived("model"))
    p.write("gains", t.gains, split=t.gains_split)
    model_path = p.write("model", t.booster.model_to_string(num_iteration=t.best_iteration))
    cal_path = p.write("calibration", t.calibrator.to_json())
    meta = {
        "mode": t.mode,
        "feature_names": t.names,
        "categorical": t.categorical,
        "best_iteration": t.best_iteration,
        "params": t.params,
        "metrics": t.metrics,
        "calibration": t.calibrator.method,
        "calibration_path": str(cal_path),
        "data_digest": data_digest(t.source),
        "monotone": {n: int(v) for n, v in zip(t.names, t.monotone or [], strict=False) if v},
        "config": redact_tree(OmegaConf.to_container(cfg, resolve=True)),
        "train_seconds": t.seconds,
        **t.meta,
    }
    p.write("model_meta", meta)
    p.write("evaluation", t.part)
    return model_path


def _register(
    cfg: Config, tracker: Tracker, p: Catalog, t: Trained
) -> tuple[str | None, dict[str, Any]]:
    """Log the metrics and the published files, log and register the model, judge it for
    champion and log the serving model; returns the model's URI and what the registry
    made of it (``champion``, ``serving``), for the run summary."""
    metrics, part = t.metrics, t.part
    flat = {f"{s}.{k}": v for s, mm in metrics.items() for k, v in mm.items()}
    flat["best_iteration"] = t.best_iteration
    flat["train_seconds"] = t.seconds
    for key in ("score_psi", "oracle_auc", "oracle_gap", "oracle_gap_full", "oracle_model_auc"):
        if key in part:
            flat[key] = part[key]
    if "monotone_check" in part:
        flat["monotone_violations"] = part["monotone_check"]["violations"]
    for key, seg in part.items():
        if key.startswith("oot_by_"):
            flat.update({f"{key}.{v}.auc": mm["auc"] for v, mm in seg.items()})
    if "cv" in part:
        flat.update(flatten_numbers(part["cv"], "cv"))
    tracker.log_metrics(flat)
    tracker.set_tags(
        {
            "mode": t.mode,
            "engine": t.engine,
            "calibration": t.calibrator.method,
            model_registry.DATA_DIGEST_TAG: data_digest(t.source),
        }
    )
    for path in (
        p.path("model_meta"),
        p.path("calibration"),
        p.path("evaluation"),
        p.path("gains", split=t.gains_split),
    ):
        tracker.log_artifact(path, "model_meta")
    for plot in t.plots:
        tracker.log_artifact(plot, "plots")
    reg_name = model_registry.registered_name(cfg)
    # the registered model is the published one, tree for tree: a booster that carries
    # trees past its best iteration (the Dask engine's does not mark it) would otherwise
    # be logged whole, and the registry would serve another model than models/
    published = lgb.Booster(model_str=t.booster.model_to_string(num_iteration=t.best_iteration))
    model_uri = tracker.log_lightgbm_model(published, t.example, reg_name)
    registry: dict[str, Any] = {}
    if reg_name and tracker.enabled and "oot" in metrics:
        registry["champion"] = model_registry.promote_champion(
            tracker,
            reg_name,
            str(cfg.model.champion_alias),
            metrics["oot"]["auc"],
            rescore=t.rescore,
            split=t.words.split,
            alpha=float(cfg.model.promote_alpha),
        )
        say(registry["champion"].pop("message", ""))
    if tracker.enabled:  # the pyfunc for `mlflow models serve`, beside the lightgbm flavour
        registry["serving"] = log_serving_model(
            cfg, tracker, p.models, reg_name, registry.get("champion")
        )
    return model_uri, registry


def _rescorer(
    names: list[str], X: np.ndarray, y: np.ndarray, raw: np.ndarray
) -> model_registry.Rescore:
    """Scores another booster on these out-of-time rows: the labels, this model's scores
    ``raw`` and the other's, for a paired test; None if its features differ."""

    def rescore(booster: Any, features: list[str]) -> model_registry.Paired | None:
        if features != names:
            return None
        return y, raw, np.asarray(booster.predict(X), dtype=float)

    return rescore


def _cross_validate(cfg: Any, data: TrainData) -> dict[str, Any]:
    """Model selection on the training and validation rows: scorecard, tuned LightGBM,
    forest, blend. The hold-out (``oot``) rows take no part: they are scored once, by
    the selected model (:func:`holdout_part`).

    The same repeated stratified folds score each candidate
    (:func:`pipeline.core.selection.select`); ``selected`` is the simplest within one
    corrected standard error of the best mean AUC, ``candidates`` lists them all.
    With ``model.nested`` the whole procedure is also estimated by an outer k-fold
    (:func:`pipeline.core.selection.nested`), on the same rows.
    """
    m = cfg.model
    rows = data.frame[data.frame.split != "oot"]
    X = rows[data.names].to_numpy(dtype=np.float32)
    y = rows.label.to_numpy().astype(int)
    folds, repeats = int(m.cv_folds), int(m.cv_repeats)
    if np.bincount(y, minlength=2).min() < folds * 2:
        raise DataError(
            f"{data.source}: column 'label' has too few training and validation rows of "
            f"the rarer class for {folds}-fold cross-validation (set model.cv_repeats=0 "
            "to skip it)"
        )
    cv_params = _params(cfg, data)
    cv_params["min_data_in_leaf"] = int(
        min(int(m.min_child_samples), max(5, int(len(y) * (1 - 1 / folds) * 0.8) // 50))
    )
    how: dict[str, Any] = {
        "scorecard": lambda: _scorecard(m.scorecard, data),
        "woe_categorical": data.woe_categorical,
        "base_params": cv_params,
        "n_estimators": int(m.n_estimators),
        "early_stopping_rounds": int(m.early_stopping_rounds),
        "folds": folds,
        "repeats": repeats,
        "seed": int(cfg.data.seed),
        "tune_seconds": float(m.tune_seconds),  # a safety cap only
    }
    chosen = selection_core.select(X, y, data.names, data.categorical, **how).to_dict()
    chosen["candidates"][ORDER.index("lightgbm")]["budget"] = chosen.pop("budget")
    res: dict[str, Any] = {"scheme": chosen.pop("scheme"), "splits": "train and valid"}
    for c in chosen["candidates"]:  # one entry per candidate, as the report tabulates them
        res[c["name"]] = {
            "auc_mean": c["auc_mean"],
            "auc_std": c["auc_std"],
            "auc_se_corrected": c["auc_se_corrected"],
        }
    res.update(chosen)
    if bool(m.nested):
        res["nested"] = selection_core.nested(
            X, y, data.names, data.categorical, outer=NESTED_FOLDS, **how
        )
    return res


#: outer folds of the nested estimate of the whole selection (model.nested)
NESTED_FOLDS = 5


def holdout_tiers(prob: np.ndarray, quantiles: list[float]) -> dict[str, Any]:
    """Tier cuts at ``quantiles`` of the hold-out's calibrated probabilities, so that a
    table's tiers hold those shares of its rows whatever its base rate (the simulator's
    fixed cuts would put most of a table with a high base rate in the top tier)."""
    p = np.asarray(prob, dtype=float)
    cuts = [float(c) for c in np.quantile(p, quantiles)] if len(p) else []
    # tied quantiles (few distinct probabilities) give equal cuts: keep them increasing
    for i in range(1, len(cuts)):
        cuts[i] = max(cuts[i], np.nextafter(cuts[i - 1], 1.0))
    cuts = [float(np.clip(c, 1e-9, 1 - 1e-9)) for c in cuts]
    shares = [float(v) for v in np.diff(np.r_[0.0, [float((p < c).mean()) for c in cuts], 1.0])]
    return {"cuts": cuts, "quantiles": list(quantiles), "rows": int(len(p)), "shares": shares}


def holdout_part(y: np.ndarray, raw: np.ndarray, words: report_core.Words) -> dict[str, Any]:
    """The hold-out rows scored once by the selected model: AUC, its DeLong standard
    error and the rows it rests on."""
    y = np.asarray(y).astype(int)
    out: dict[str, Any] = {"n": int(len(y)), "n_bad": int(y.sum()), "split": words.split}
    if min(int(y.sum()), int(len(y) - y.sum())) >= 2:
        auc, cov = eval_core.delong(y, [np.asarray(raw, dtype=float)])
        out.update(auc=float(auc[0]), auc_se=float(np.sqrt(cov[0, 0])))
    return out


def _plots(
    y: dict[str, np.ndarray],
    raw: dict[str, np.ndarray],
    cal: dict[str, np.ndarray],
    base_scores: dict[str, dict[str, np.ndarray]],
    cat: Catalog,
    n_bins: int,
    w: report_core.Words,
    kind: str = "lightgbm",
) -> list[Path]:
    """ROC, gains and reliability plots, in the run's words: a table run's hold-out,
    its target's rows and its candidate's name; each title gives the rows plotted."""
    split = "oot" if len(y["oot"]) and len(np.unique(y["oot"])) == 2 else "valid"
    label = w.split_name(split) if split == "oot" else "validation"
    name = kind if kind not in base_scores else f"model ({kind})"
    scores = {name: raw[split], **{n: s[split] for n, s in base_scores.items()}}
    n = f"{len(y[split]):,} rows, {int(np.sum(y[split])):,} {w.count_head}"
    rows = "rows" if w.table else "accounts"
    paths = [
        eval_core.plot_roc(y[split], scores, cat.path("roc_plot"), f"ROC, {label} ({n})"),
        eval_core.plot_gains(
            y[split], scores, cat.path("gains_plot"), f"Gains, {label} ({n})", rows, w.events
        ),
    ]
    names = {s: ("validation" if s == "valid" else w.split_name(s)) for s in ("valid", split)}
    curves = {
        f"{names[s]} before calibration": cal_core.reliability(y[s], raw[s], n_bins)
        for s in ("valid", split)
    }
    curves.update(
        {
            f"{names[s]} after calibration": cal_core.reliability(y[s], cal[s], n_bins)
            for s in ("valid", split)
        }
    )
    paths.append(
        eval_core.plot_reliability(
            curves, cat.path("calibration_plot"), f"Reliability (equal-count bins of {n_bins})"
        )
    )
    return paths


# --------------------------------------------------------------------------- printing


def _cv_lines(
    cv: dict[str, Any], holdout: dict[str, Any] | None, w: report_core.Words
) -> list[str]:
    """The selection in words: each candidate's mean AUC with both standard errors, the
    rule's verdict, the fixed LightGBM beside the tuned one, the untouched hold-out."""

    def f(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) and np.isfinite(v) else "-"

    n = int(cv.get("rows", 0))
    lines = [
        f"  cross-validated AUC ({cv['scheme']}, on {n:,} training and validation rows; "
        "+- corrected se, plain se in brackets):"
    ]
    for c in cv["candidates"]:
        lines.append(
            f"    {c['name']:<10} {f(c['auc_mean'])} +- {f(c.get('auc_se_corrected'))} "
            f"[{f(c.get('auc_se'))}]"
        )
    fixed = cv.get("lightgbm_fixed")
    if fixed:
        lines.append(
            f"    fixed LightGBM (300 trees, learning rate 0.03, 15 leaves) in the same folds "
            f"{f(fixed['auc_mean'])}; tuned minus fixed {fixed['tuned_minus_fixed']:+.4f} "
            f"+- {f(fixed['tuned_minus_fixed_se'])}"
        )
    for r in cv.get("rule_check", []):
        if r["behind_best"] > 0:
            lines.append(
                f"    {r['name']:<10} behind the best by {f(r['behind_best'])}: corrected se "
                f"{f(r['se_corrected'])} ({'within' if r['within_one_se_corrected'] else 'outside'}"
                f" one se), plain se {f(r['se_plain'])} "
                f"({'within' if r['within_one_se_plain'] else 'outside'})"
            )
    if "selected" in cv:
        lines.append(f"  selected: {cv['selected']['name']} ({cv['reason']})")
    if cv.get("search_cut_short"):
        lines.append(
            f"  WARNING: the time cap (model.tune_seconds) cut {cv['search_cut_short']} "
            "searches short: the selection may differ from one whose searches ran all "
            "their trials"
        )
    nested = cv.get("nested")
    if nested:
        lines.append(
            f"  nested estimate of the whole selection ({nested['scheme']}, {nested['rows']:,} "
            f"rows): AUC {f(nested['auc_mean'])} +- {f(nested['auc_se_corrected'])} "
            f"(corrected; folds {min(nested['auc_folds']):.3f}-{max(nested['auc_folds']):.3f}; "
            f"selected {', '.join(nested['selected_per_fold'])})"
        )
    if holdout and "auc" in holdout:
        lines.append(
            f"  {w.split} AUC of the selected model, on {holdout['n']:,} rows the selection "
            f"never saw ({holdout['n_bad']:,} with {w.event}): {f(holdout['auc'])} +- "
            f"{f(holdout['auc_se'])} (DeLong se)"
        )
    return lines


def _report(
    part: dict[str, Any],
    metrics: dict[str, dict[str, float]],
    base_metrics: dict[str, dict[str, dict[str, float]]],
    best_iteration: int,
    seconds: float,
    model_path: Path,
    w: report_core.Words | None = None,
) -> None:
    w = w or report_core.words({"mode": str(part.get("mode", "simulator"))})

    def f(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) and np.isfinite(v) else "-"

    split = "oot" if "oot" in metrics else "valid"
    kind = str(part.get("model", {}).get("kind", "lightgbm"))
    lines = [
        f"train: {kind} model, {best_iteration} trees in {seconds:.1f}s -> {model_path}",
        f"  {'model':<10} {'valid AUC':>9} {w.split_name(split) + ' AUC':>9} {'KS':>7} "
        f"{'Brier':>7} {'ECE':>7}",
    ]
    rows = {kind if kind not in base_metrics else f"model ({kind})": metrics, **base_metrics}
    for name, mm in rows.items():
        s = mm.get(split, {})
        lines.append(
            f"  {name:<10} {f(mm['valid']['auc']):>9} {f(s.get('auc')):>9} {f(s.get('ks')):>7} "
            f"{f(s.get('brier')):>7} {f(s.get('ece')):>7}"
        )
    c = part["calibration"]
    lines.append(
        f"  calibration ({c['method']}): {w.split_name(split)} ECE {f(c.get(split + '_ece_before'))} -> "
        f"{f(c.get(split + '_ece_after'))}{' (worse)' if c.get('worse') else ''}; riskiest 1% "
        f"({int(c.get('top1pct_n', 0)):,} rows) predicted {f(c.get('top1pct_predicted'))}, "
        f"observed {f(c.get('top1pct_observed'))} +- {f(c.get('top1pct_observed_se'))}; "
        f"exactly 0 or 1: {c.get('n_exact_0', 0) + c.get('n_exact_1', 0)}"
        + (
            f"; largest share of rows on one probability {c['max_tie_share']:.4%}"
            if "max_tie_share" in c
            else ""
        )
    )
    o = part.get("oracle")
    if o and "observable_auc" in o:
        lines.append(
            f"  on {o['n_rows']:,} out-of-time rows ({o['n_positives']:,} closures) with "
            f"oracle futures, AUC: full-state oracle {f(o['full_auc'])} +- "
            f"{f(o['full_auc_se'])}, trait oracle {f(o['observable_auc'])} +- "
            f"{f(o['observable_auc_se'])}, model {f(o['model_auc'])} +- {f(o['model_auc_se'])}"
        )
        lines.append(
            f"  oracle_gap (trait oracle - model) {f(o['gap'])} +- {f(o['gap_se'])}, "
            f"oracle_gap_full (full-state oracle - model) {f(o['gap_full'])} +- "
            f"{f(o['gap_full_se'])}"
        )
        if "mc_bias" in o:
            lines.append(
                f"  Monte Carlo bias of the oracle AUCs at {o.get('futures', '?')} futures per "
                f"row (all futures against each half): full-state {f(o['full_mc_bias'])} +- "
                f"{f(o['full_mc_bias_se'])}, trait {f(o.get('observable_mc_bias'))} +- "
                f"{f(o.get('observable_mc_bias_se'))}"
            )
    elif "oracle_auc" in part:
        lines.append(
            f"  oracle on {int(part['oracle_rows']):,} matched out-of-time rows: oracle AUC "
            f"{f(part['oracle_auc'])}, model {f(part['oracle_model_auc'])}, gap {f(part['oracle_gap'])}"
        )
    if "monotone_check" in part:
        mc = part["monotone_check"]
        lines.append(
            f"  monotone check: {mc['violations']} violations in {mc['checks']:,} steps "
            f"({', '.join(mc['features'])})"
        )
    d = part.get("drift")
    if d:
        lines.extend(f"  {w_}" for w_ in d.get("warnings", []))
        # weak segments and calibration share the list; this line speaks of drift only
        if not any(
            str(w_).startswith(("drift:", "extrapolation:")) for w_ in d.get("warnings", [])
        ):
            lines.append(
                f"  drift: none flagged (score PSI {f(d.get('score_psi'))}; no top-"
                f"{drift_core.TOP_DRIVERS} driver with PSI >= 0.25 or > 5% of out-of-time "
                "values outside its training range)"
            )
        if "oot_rows_of_training_borrowers" in d:
            lines.append(
                "  " + drift_core.borrower_overlap_sentence(d["oot_rows_of_training_borrowers"])
            )
    if "cv" in part:
        lines.extend(_cv_lines(part["cv"], part.get("holdout"), w))
    say("\n".join(lines))
