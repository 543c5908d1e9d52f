"""Thin stage runners: read inputs, call the pure cores, write outputs atomically, log.

Each runner takes the resolved config and a :class:`~pipeline.tracking.Tracker`.
A stage records a manifest (config digest and input digests) next to its outputs and
is skipped when nothing changed, unless ``force=true``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from pipeline import explain as explain_core
from pipeline import features as feat_core
from pipeline import simulate as sim_core
from pipeline import train as train_core
from pipeline.causes import AGE_BANDS, ALL_CAUSES, CAUSES, CHANNELS, EVENTS, OCCUPATIONS, OVERDUE
from pipeline.config import physical_cores, validate
from pipeline.io import DataError, ParquetSink, digest_of, file_digest, read_table, write_json, write_parquet, write_text
from pipeline.metrics import information_value, psi
from pipeline.progress import progress
from pipeline.registry import BY_NAME, FEATURE_NAMES, registry_json
from pipeline.tracking import Tracker, flatten

log = logging.getLogger("pipeline")


def _say(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class Paths:
    raw: Path
    truth: Path
    processed: Path
    models: Path

    @classmethod
    def of(cls, cfg: Any) -> Paths:
        return cls(Path(cfg.paths.raw_dir), Path(cfg.paths.truth_dir), Path(cfg.paths.processed_dir), Path(cfg.paths.models_dir))


# --------------------------------------------------------------------------- manifests


def _manifest_path(out_dir: Path, stage: str) -> Path:
    return out_dir / f"_{stage}.manifest.json"


def _up_to_date(out_dir: Path, stage: str, key: dict[str, Any], outputs: list[Path]) -> bool:
    mp = _manifest_path(out_dir, stage)
    if not mp.exists() or not all(p.exists() for p in outputs):
        return False
    try:
        saved = json.loads(mp.read_text())
    except (OSError, ValueError):
        return False
    if saved.get("key") != digest_of(key):
        return False
    return all(saved.get("outputs", {}).get(p.name) == file_digest(p) for p in outputs)


def _write_manifest(out_dir: Path, stage: str, key: dict[str, Any], outputs: list[Path]) -> None:
    write_json({"key": digest_of(key), "outputs": {p.name: file_digest(p) for p in outputs}}, _manifest_path(out_dir, stage))


def _inputs_digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: file_digest(p) for p in paths if p.exists()}


# --------------------------------------------------------------------------- generate


def world_spec(cfg: Any) -> sim_core.WorldSpec:
    return sim_core.WorldSpec(
        n_borrowers=int(cfg.data.n_borrowers),
        n_months=int(cfg.data.n_months),
        seed=int(cfg.data.seed),
        sim=OmegaConf.to_object(cfg.simulator),
        oracle_snapshots=tuple(int(s) for s in cfg.features.oot_snapshots),
        horizon=int(cfg.features.horizon),
    )


def generate(cfg: Any, tracker: Tracker) -> dict[str, Any]:
    if cfg.data.kind != "simulator":
        _say("generate: data.kind=table, nothing to simulate")
        return {}
    p = Paths.of(cfg)
    spec = world_spec(cfg)
    raw_paths = {name: p.raw / f"{name}.parquet" for name in sim_core.RAW_TABLES}
    truth_paths = {name: p.truth / f"{name}.parquet" for name in sim_core.TRUTH_TABLES}
    key = {"data": OmegaConf.to_container(cfg.data), "simulator": OmegaConf.to_container(cfg.simulator),
           "oracle": [list(spec.oracle_snapshots), spec.horizon], "version": 1}
    key["data"].pop("block_size", None)
    key["data"].pop("n_jobs", None)
    outputs = list(raw_paths.values()) + list(truth_paths.values())
    if not cfg.force and _up_to_date(p.raw, "generate", key, outputs):
        _say(f"generate: inputs and config unchanged, keeping {p.raw} (force=true to recompute)")
        return {"skipped": True}
    t0 = time.perf_counter()
    schemas = {**sim_core.SCHEMAS, **sim_core.TRUTH_SCHEMAS}
    stream_paths = {k: v for k, v in {**raw_paths, **truth_paths}.items() if k != "macro_months"}
    counts: dict[str, int] = dict.fromkeys(stream_paths, 0)
    with ParquetSink(stream_paths, schemas) as sink:
        chunks = sim_core.iter_chunks(spec, n_jobs=int(cfg.data.n_jobs), block_size=int(cfg.data.block_size))
        for _, tables in progress(chunks, total=spec.n_chunks, desc="generate"):
            for name, table in tables.items():
                sink.write(name, table)
                counts[name] += table.num_rows
    write_parquet(sim_core.macro_table(spec), raw_paths["macro_months"])
    counts["macro_months"] = spec.n_months
    seconds = time.perf_counter() - t0
    _write_manifest(p.raw, "generate", key, outputs)
    card = data_card(cfg, p)
    metrics = {f"rows_{k}": float(v) for k, v in counts.items()}
    metrics["seconds"] = seconds
    metrics["borrower_months_per_s"] = counts["account_months"] / max(seconds, 1e-9)
    metrics.update({k: v for k, v in card["metrics"].items()})
    tracker.log_metrics(metrics)
    tracker.log_artifact(p.raw / "data_card.md", "data_card")
    tracker.log_artifact(p.raw / "data_card.json", "data_card")
    _say(f"generate: {spec.n_borrowers:,} borrowers x {spec.n_months} months -> {p.raw} ({seconds:.1f}s)")
    return {"seconds": seconds, "counts": counts}


def data_card(cfg: Any, p: Paths) -> dict[str, Any]:
    """Closure rates overall, per cause, per regime and per occupation, as markdown + JSON."""
    ev = pq.read_table(p.raw / "platform_events.parquet", columns=["borrower_id", "month", "event", "cause"]).to_pandas()
    b = pq.read_table(p.raw / "borrowers.parquet", columns=["borrower_id", "occupation"]).to_pandas()
    am = pq.read_table(p.raw / "account_months.parquet", columns=["month"]).to_pandas()
    n = len(b)
    closures = ev[ev.event == "closure"].merge(b, on="borrower_id")
    t_month = int(cfg.simulator.tightening_month)
    on_book = am.groupby("month").size()
    per_month = closures.groupby("month").size().reindex(on_book.index, fill_value=0) / on_book
    pre = per_month[per_month.index < t_month].mean()
    post = per_month[per_month.index >= t_month].mean()
    by_cause = closures.groupby("cause").size().reindex(list(ALL_CAUSES), fill_value=0)
    by_occ = (closures[closures.cause != OVERDUE].groupby("occupation").borrower_id.nunique() / b.groupby("occupation").size()).fillna(0.0)
    metrics = {
        "closure_rate_borrowers": float(closures.borrower_id.nunique() / max(n, 1)),
        "monthly_closure_rate_pre_tightening": float(pre),
        "monthly_closure_rate_post_tightening": float(post),
        "overdue_share_of_closures": float(by_cause.get(OVERDUE, 0) / max(by_cause.sum(), 1)),
    }
    for c in ALL_CAUSES:
        metrics[f"closure_share_{c}"] = float(by_cause[c] / max(by_cause.sum(), 1))
    lines = [
        "# Data card: simulated borrower world",
        "",
        f"- borrowers: {n:,}; months: {cfg.data.n_months}; seed: {cfg.data.seed}",
        f"- borrowers ever closed: {metrics['closure_rate_borrowers']:.1%}",
        f"- monthly closure rate before / after tightening (month {t_month}): {pre:.2%} / {post:.2%}",
        "",
        "## Closures by cause",
        "",
        "| cause | closures | share |",
        "|---|---:|---:|",
    ]
    for c in ALL_CAUSES:
        lines.append(f"| {c} | {int(by_cause[c])} | {metrics[f'closure_share_{c}']:.1%} |")
    lines += ["", "## Non-overdue closure rate by occupation", "", "| occupation | borrowers closed |", "|---|---:|"]
    for occ, r in by_occ.items():
        lines.append(f"| {occ} | {r:.1%} |")
    write_text("\n".join(lines) + "\n", p.raw / "data_card.md")
    card = {"metrics": metrics, "by_occupation": by_occ.to_dict(), "by_cause": by_cause.astype(int).to_dict(),
            "monthly_closure_rate": {int(k): float(v) for k, v in per_month.items()}}
    write_json(card, p.raw / "data_card.json")
    return card


# --------------------------------------------------------------------------- features

RAW_RULES: dict[str, dict[str, Any]] = {
    "borrowers": dict(non_negative=("income", "initial_line", "signup_month"), unique=("borrower_id",),
                      allowed={"occupation": OCCUPATIONS, "age_band": AGE_BANDS}),
    "account_months": dict(non_negative=("line", "n_draws", "draw_amount", "repayment", "balance", "interest_paid", "n_early_repay", "dpd"),
                           unique=("borrower_id", "month")),
    "fund_flows": dict(non_negative=("amount", "days_after_draw"), allowed={"channel": CHANNELS}),
    "bureau_months": dict(non_negative=("ext_cards", "ext_loans", "ext_new_accounts", "ext_inquiries", "ext_utilisation", "months_since_ext_activity"),
                          unique=("borrower_id", "month")),
    "consumption_months": dict(non_negative=("spend_daily", "spend_durables", "spend_services", "spend_weekly_cv", "competitor_baitiao", "competitor_fenfu"),
                               unique=("borrower_id", "month")),
    "platform_events": dict(non_negative=("line_before", "line_after"), allowed={"event": EVENTS, "cause": (*ALL_CAUSES, "none")}),
    "macro_months": dict(non_negative=("competitor_intensity",), unique=("month",)),
    "social_edges": dict(non_negative=("tie_strength",)),
}


def read_raw(path: Path, name: str, n_months: int, filters: Any = None) -> pa.Table:
    rules = dict(RAW_RULES[name])
    schema = sim_core.SCHEMAS[name]
    if "month" in schema.names:
        rules["ranges"] = {"month": (0, n_months - 1)}
    table = read_table(path, schema, **rules)
    if filters is not None:
        table = table.filter(filters)
    return table


def _block_filter(lo: int, hi: int, col: str = "borrower_id") -> Any:
    import pyarrow.compute as pc

    return (pc.field(col) >= lo) & (pc.field(col) < hi)


def feature_spec(cfg: Any) -> feat_core.FeatureSpec:
    f = cfg.features
    return feat_core.FeatureSpec(
        snapshots=tuple(int(s) for s in f.snapshots),
        horizon=int(f.horizon),
        valid_snapshots=tuple(int(s) for s in f.valid_snapshots),
        oot_snapshots=tuple(int(s) for s in f.oot_snapshots),
        fund_days=int(f.fund_days),
        small_draw_ratio=float(f.small_draw_ratio),
        never_overdue_only=bool(f.never_overdue_only),
    )


def build_features(raw_dir: Path, n_months: int, spec: feat_core.FeatureSpec, tightening_month: int, block_size: int) -> pa.Table:
    """Validate the raw tables and compute the feature table block by block."""
    names = ("borrowers", "account_months", "fund_flows", "bureau_months", "consumption_months", "platform_events")
    paths = {name: raw_dir / f"{name}.parquet" for name in (*names, "macro_months", "social_edges")}
    macro = read_raw(paths["macro_months"], "macro_months", n_months)
    edges = read_raw(paths["social_edges"], "social_edges", n_months)
    # validate every table in full once (cheap relative to the features), then stream blocks
    tables = {name: read_raw(paths[name], name, n_months) for name in names}
    bid = tables["borrowers"].column("borrower_id").to_numpy()
    if len(bid) == 0:
        raise DataError(f"{paths['borrowers']}: no borrowers")
    lo_id, hi_id = int(bid.min()), int(bid.max()) + 1
    for name in names[1:]:
        ids = tables[name].column("borrower_id").to_numpy()
        if len(ids) and (ids.min() < lo_id or ids.max() >= hi_id or not np.isin(ids, bid).all()):
            raise DataError(f"{paths[name]}: column 'borrower_id' has ids that are not in {paths['borrowers']}")
    parts: list[dict[str, np.ndarray]] = []
    statuses: list[feat_core.BlockStatus] = []
    starts = list(range(lo_id, hi_id, block_size))
    for lo in progress(starts, total=len(starts), desc="features"):
        hi = min(hi_id, lo + block_size)
        block = {name: t.filter(_block_filter(lo, hi)) if len(starts) > 1 else t for name, t in tables.items()}
        block["macro_months"] = macro
        cols, status = feat_core.block_features(block, lo, hi - lo, n_months, spec, tightening_month)
        parts.append(cols)
        statuses.append(status)
    cols = {k: np.concatenate([p_[k] for p_ in parts]) for k in parts[0]}
    status = feat_core.BlockStatus(
        borrower_id=np.concatenate([s.borrower_id for s in statuses]),
        first_closed=np.concatenate([s.first_closed for s in statuses]),
        first_overdue=np.concatenate([s.first_overdue for s in statuses]),
    )
    social = feat_core.social_features(
        cols["borrower_id"].astype(np.int64), cols["snapshot"].astype(np.int64),
        edges.column("src").to_numpy(), edges.column("dst").to_numpy(), edges.column("tie_strength").to_numpy().astype(np.float64), status,
    )
    cols.update(social)
    return feat_core.to_table(cols, spec)


def stability_report(df: pd.DataFrame) -> pd.DataFrame:
    train = df[df.split == "train"]
    oot = df[df.split == "oot"]
    rows = []
    for name in FEATURE_NAMES:
        x = df[name].to_numpy()
        rows.append({
            "feature": name,
            "family": BY_NAME[name].family,
            "causes": " ".join(BY_NAME[name].causes),
            "missing_rate": float(np.mean(~np.isfinite(x))) if len(x) else float("nan"),
            "iv_train": information_value(train[name].to_numpy(), train.label.to_numpy()),
            "psi_train_oot": psi(train[name].to_numpy(), oot[name].to_numpy()),
        })
    return pd.DataFrame(rows)


def features(cfg: Any, tracker: Tracker) -> dict[str, Any]:
    if cfg.data.kind != "simulator":
        _say("features: data.kind=table, the table is used as it is")
        return {}
    p = Paths.of(cfg)
    spec = feature_spec(cfg)
    out = p.processed / "features.parquet"
    reg_path = p.processed / "feature_registry.json"
    stab_path = p.processed / "stability.csv"
    raw_files = sorted(p.raw.glob("*.parquet"))
    key = {"features": OmegaConf.to_container(cfg.features), "tightening": int(cfg.simulator.tightening_month),
           "n_months": int(cfg.data.n_months), "inputs": _inputs_digest(raw_files), "version": 1}
    outputs = [out, reg_path, stab_path]
    if not cfg.force and _up_to_date(p.processed, "features", key, outputs):
        _say(f"features: inputs and config unchanged, keeping {out} (force=true to recompute)")
        return {"skipped": True}
    t0 = time.perf_counter()
    table = build_features(p.raw, int(cfg.data.n_months), spec, int(cfg.simulator.tightening_month), int(cfg.data.block_size))
    seconds = time.perf_counter() - t0
    df = table.to_pandas()
    stab = stability_report(df)
    write_parquet(table, out)
    write_json(registry_json(), reg_path)
    write_text(stab.to_csv(index=False), stab_path)
    _write_manifest(p.processed, "features", key, outputs)
    metrics = {"rows": float(len(df)), "seconds": seconds, "n_features": float(len(FEATURE_NAMES))}
    for split, g in df.groupby("split"):
        metrics[f"rows_{split}"] = float(len(g))
        metrics[f"label_rate_{split}"] = float(g.label.mean())
    tracker.log_metrics(metrics)
    for path in outputs[1:]:
        tracker.log_artifact(path, "features")
    _say(f"features: {len(df):,} rows x {len(FEATURE_NAMES)} features -> {out} ({seconds:.1f}s)")
    return {"rows": len(df), "seconds": seconds}


# --------------------------------------------------------------------------- train

FEATURE_READ_SCHEMA = feat_core.FEATURE_TABLE_SCHEMA


def load_feature_table(path: Path) -> pd.DataFrame:
    table = read_table(path, FEATURE_READ_SCHEMA, allowed={"split": ("train", "valid", "oot")}, ranges={"label": (0, 1)},
                       unique=("borrower_id", "snapshot"))
    return table.to_pandas()


def monotone_vector(names: list[str]) -> list[int]:
    return [BY_NAME[n].monotone if n in BY_NAME else 0 for n in names]


def train(cfg: Any, tracker: Tracker) -> dict[str, Any]:
    p = Paths.of(cfg)
    feat_path = p.processed / "features.parquet"
    df = load_feature_table(feat_path)
    names = list(FEATURE_NAMES)
    splits = {s: df[df.split == s] for s in ("train", "valid", "oot")}
    for s in ("train", "valid"):
        if len(splits[s]) == 0 or splits[s].label.nunique() < 2:
            raise DataError(f"{feat_path}: split '{s}' needs rows of both classes in column 'label'")
    threads = int(cfg.model.num_threads) or physical_cores()
    params = train_core.lgb_params(cfg.model, int(cfg.data.seed), threads, monotone_vector(names) if cfg.model.monotone else None)
    X = {s: g[names].to_numpy(dtype=np.float32) for s, g in splits.items()}
    y = {s: g.label.to_numpy() for s, g in splits.items()}
    t0 = time.perf_counter()
    res = train_core.fit(X["train"], y["train"], X["valid"], y["valid"], names, params, int(cfg.model.n_estimators),
                         int(cfg.model.early_stopping_rounds))
    seconds = time.perf_counter() - t0
    metrics = train_core.evaluate(res.booster, {s: (X[s], y[s]) for s in X})
    p.models.mkdir(parents=True, exist_ok=True)
    model_path = p.models / "model.txt"
    meta_path = p.models / "model.json"
    text = res.booster.model_to_string(num_iteration=res.best_iteration)
    write_text(text, model_path)
    meta = {"feature_names": names, "best_iteration": res.best_iteration, "params": params, "metrics": metrics,
            "config": OmegaConf.to_container(cfg, resolve=True), "train_seconds": seconds}
    write_json(meta, meta_path)
    flat = {f"{s}.{k}": v for s, m in metrics.items() for k, v in m.items()}
    flat["best_iteration"] = res.best_iteration
    flat["train_seconds"] = seconds
    tracker.log_metrics(flat)
    tracker.log_artifact(meta_path, "model_meta")
    example = X["valid"][:5]
    model_uri = tracker.log_lightgbm_model(
        res.booster, pd.DataFrame(example, columns=names), str(cfg.tracking.registered_model) or None
    )
    _say(f"train: {res.best_iteration} trees, valid AUC {metrics['valid']['auc']:.4f}, "
         f"out-of-time AUC {metrics.get('oot', {}).get('auc', float('nan')):.4f} ({seconds:.1f}s) -> {model_path}")
    return {"metrics": metrics, "model_uri": model_uri, "seconds": seconds}


def load_model(models_dir: Path) -> tuple[Any, dict[str, Any]]:
    import lightgbm as lgb

    model_path = models_dir / "model.txt"
    meta_path = models_dir / "model.json"
    for path in (model_path, meta_path):
        if not path.exists():
            raise DataError(f"{path}: file not found (run `make train` first)")
    try:
        booster = lgb.Booster(model_str=model_path.read_text())
        meta = json.loads(meta_path.read_text())
    except Exception as exc:
        raise DataError(f"{model_path}: not a readable LightGBM model ({exc})") from exc
    return booster, meta


# --------------------------------------------------------------------------- explain


def explain(cfg: Any, tracker: Tracker) -> dict[str, Any]:
    p = Paths.of(cfg)
    booster, meta = load_model(p.models)
    names = meta["feature_names"]
    df = load_feature_table(p.processed / "features.parquet")
    oot = df[df.split == "oot"]
    if len(oot) > cfg.explain.max_rows:
        oot = oot.sample(n=int(cfg.explain.max_rows), random_state=int(cfg.data.seed)).sort_values(["snapshot", "borrower_id"])
    X = oot[names].to_numpy(dtype=np.float32)
    threads = int(cfg.explain.n_jobs) or physical_cores()
    t0 = time.perf_counter()
    contrib, method = explain_core.contributions(booster, X, threads)
    seconds = time.perf_counter() - t0
    # additivity on a sample: contributions must add up to the raw score
    rng = np.random.default_rng(0)
    sample = rng.choice(len(X), size=min(len(X), 2000), replace=False) if len(X) else np.zeros(0, dtype=int)
    raw = booster.predict(X[sample], raw_score=True)
    additivity = float(np.max(np.abs(contrib[sample].sum(axis=1) - raw))) if len(sample) else 0.0
    if additivity > 1e-3:
        raise RuntimeError(f"SHAP additivity check failed: max |sum - raw score| = {additivity:.2e}")
    reasons = explain_core.reason_codes(contrib, X, names, int(cfg.explain.top_k))
    prob = booster.predict(X)
    table = pd.DataFrame({"borrower_id": oot.borrower_id.to_numpy(), "snapshot": oot.snapshot.to_numpy(), "probability": prob,
                          "label": oot.label.to_numpy(), "label_cause": oot.label_cause.to_numpy(), **reasons})
    out = p.models / "reasons.parquet"
    write_parquet(pa.Table.from_pandas(table, preserve_index=False), out)
    importance = explain_core.global_importance(contrib, names)
    write_json({"method": method, "importance": importance}, p.models / "shap_importance.json")
    plots = _shap_plots(contrib, X, names, p.models / "plots", int(cfg.explain.plot_sample), int(cfg.data.seed))
    metrics = {"rows": float(len(X)), "seconds": seconds, "rows_per_s": len(X) / max(seconds, 1e-9), "additivity_max_abs": additivity}
    closed = table[table.label == 1]
    if len(closed):
        metrics["fidelity_top1"] = float((closed.reason_1_cause == closed.label_cause).mean())
        top3 = np.zeros(len(closed), dtype=bool)
        for k in range(1, min(3, int(cfg.explain.top_k)) + 1):
            top3 |= closed[f"reason_{k}_cause"].to_numpy() == closed.label_cause.to_numpy()
        metrics["fidelity_top3"] = float(top3.mean())
    tracker.log_metrics(metrics)
    tracker.set_tags({"shap_method": method})
    tracker.log_artifact(out, "explain")
    tracker.log_artifact(p.models / "shap_importance.json", "explain")
    for plot in plots:
        tracker.log_artifact(plot, "plots")
    _say(f"explain: {len(X):,} rows by {method} ({seconds:.1f}s), additivity {additivity:.1e} -> {out}")
    return {"metrics": metrics, "importance": importance, "method": method}


def _shap_plots(contrib: np.ndarray, X: np.ndarray, names: list[str], out_dir: Path, n_plot: int, seed: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), size=min(n_plot, len(X)), replace=False) if len(X) else np.zeros(0, dtype=int)
    exp = shap.Explanation(values=contrib[idx, :-1], base_values=contrib[idx, -1], data=X[idx], feature_names=names)
    paths = []
    for kind in ("bar", "beeswarm"):
        plt.figure()
        getattr(shap.plots, kind)(exp, max_display=15, show=False)
        path = out_dir / f"shap_{kind}.png"
        _save_fig(plt.gcf(), path)
        plt.close("all")
        paths.append(path)
    return paths


def _save_fig(fig: Any, path: Path) -> None:
    from pipeline.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


# --------------------------------------------------------------------------- the whole pipeline

STAGES: dict[str, Callable[[Any, Tracker], dict[str, Any]]] = {
    "generate": generate,
    "features": features,
    "train": train,
    "explain": explain,
}
ALIASES = {"data": "generate"}


def run_pipeline(cfg: Any, tracker: Tracker, stages: list[str], overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the given stages under one parent MLflow run; returns the summary."""
    validate(cfg)
    results: dict[str, Any] = {}
    params = flatten(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    tags = {"overrides": " ".join(overrides or []) or "(none)", "stages": ",".join(stages)}
    with tracker.run(f"pipeline:{'+'.join(stages)}", tags=tags):
        tracker.log_params(params)
        resolved = OmegaConf.to_yaml(cfg, resolve=True)
        Path(cfg.paths.models_dir).mkdir(parents=True, exist_ok=True)
        cfg_path = Path(cfg.paths.models_dir) / "resolved_config.yaml"
        write_text(resolved, cfg_path)
        tracker.log_artifact(cfg_path, "config")
        for stage in stages:
            with tracker.run(stage, tags={"stage": stage}):
                tracker.log_params({k: v for k, v in params.items() if k.split(".")[0] in _STAGE_KEYS.get(stage, ())})
                results[stage] = STAGES[stage](cfg, tracker)
        summary = summarize(cfg, results, tracker)
        if "train" in results:
            tracker.log_metrics({k: v for k, v in _flatten_numbers(summary).items()})
    return summary


_STAGE_KEYS = {"generate": ("data", "simulator"), "features": ("features",), "train": ("model",), "explain": ("explain",)}


def _flatten_numbers(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten_numbers(v, key))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"summary.{key}"] = float(v)
    return out


def summarize(cfg: Any, results: dict[str, Any], tracker: Tracker) -> dict[str, Any]:
    """Print the run summary and write ``models/summary.json``."""
    p = Paths.of(cfg)
    summary: dict[str, Any] = {"mlflow_run_id": tracker.parent_run_id, "tracking_uri": tracker.uri if tracker.enabled else None}
    feat_path = p.processed / "features.parquet"
    if feat_path.exists():
        t = pq.read_table(feat_path, columns=["split", "label"]).to_pandas()
        summary["n_rows"] = int(len(t))
        summary["closure_rate"] = float(t.label.mean()) if len(t) else float("nan")
    model_meta = p.models / "model.json"
    if model_meta.exists():
        meta = json.loads(model_meta.read_text())
        for split, m in meta["metrics"].items():
            summary[split] = {k: m[k] for k in ("auc", "ks", "pr_auc", "brier", "ece", "n", "positive_rate") if k in m}
    imp = p.models / "shap_importance.json"
    if imp.exists():
        summary["top_features"] = [f for f, _ in json.loads(imp.read_text())["importance"][:5]]
    if "explain" in results and "metrics" in results["explain"]:
        em = results["explain"]["metrics"]
        if "fidelity_top1" in em:
            summary["fidelity"] = {"top1": em["fidelity_top1"], "top3": em["fidelity_top3"]}
    summary["outputs"] = {"raw": str(p.raw), "features": str(feat_path), "models": str(p.models)}
    summary["ui"] = "make ui"
    write_json(summary, p.models / "summary.json")
    tracker.log_artifact(p.models / "summary.json", "summary")
    _print_summary(summary)
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    def g(split: str, k: str) -> str:
        v = s.get(split, {}).get(k)
        return f"{v:.4f}" if isinstance(v, float) else "-"

    lines = [
        "",
        "=== closure-risk run summary ===",
        f"rows (borrower x snapshot) : {s.get('n_rows', '-'):,}" if isinstance(s.get("n_rows"), int) else "rows: -",
        f"closure rate in horizon    : {s['closure_rate']:.2%}" if "closure_rate" in s else "closure rate: -",
        f"AUC valid / out-of-time    : {g('valid', 'auc')} / {g('oot', 'auc')}",
        f"KS / Brier out-of-time     : {g('oot', 'ks')} / {g('oot', 'brier')}",
    ]
    if "fidelity" in s:
        lines.append(f"explanation fidelity      : top-1 {s['fidelity']['top1']:.2%}, top-3 {s['fidelity']['top3']:.2%}")
    if "top_features" in s:
        lines.append(f"top features (mean |SHAP|) : {', '.join(s['top_features'])}")
    lines += [
        f"outputs                    : {s['outputs']['raw']}, {s['outputs']['features']}, {s['outputs']['models']}",
        f"MLflow run                 : {s.get('mlflow_run_id') or '(tracking off)'}",
        "open the UI                : make ui   (then http://127.0.0.1:5000)",
        "",
    ]
    _say("\n".join(lines))
