"""Runner of the ``score`` command: score new borrowers with the champion model.

``python -m pipeline score score.input=PATH score.output=PATH`` where ``PATH`` is a
folder of raw tables (features are built at ``score.snapshot``, default the latest
month) or a Parquet / CSV feature table with ``score.id_column`` and the model's
features. ``score.borrower_id=ID`` scores one borrower and prints the result.
The output (Parquet, or CSV when the name ends in ``.csv``) is written atomically.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.adapters import catalog, model_registry
from pipeline.adapters.tracking import Tracker
from pipeline.base.config import physical_cores
from pipeline.base.io import DataError, atomic_path, write_parquet
from pipeline.core import scoring as core
from pipeline.stages.common import Paths, say


def load_scoring_model(cfg: Any, tracker: Tracker, source: str | None = None) -> core.ScoringModel:
    """The registry champion when tracking is on and the alias exists, else the local model.

    ``source`` (auto | registry | local) overrides ``score.model_source``.
    """
    p = Paths.of(cfg)
    source = str(cfg.score.model_source) if source is None else source
    model = None
    if source in ("auto", "registry") and tracker.enabled:
        name = model_registry.registered_name(cfg) or ""
        model = model_registry.load_champion(tracker, name, str(cfg.model.champion_alias), p.models)
        if model is None and source == "registry":
            raise DataError(
                f"registry: no model version has the alias "
                f"'{cfg.model.champion_alias}' under '{name}' (score.model_source=registry)"
            )
    if model is None:
        model = catalog.load_scoring_model(p.models)
    return model


def raw_months(raw_dir: Path) -> int:
    path = raw_dir / "account_months.parquet"
    if not path.exists():
        raise DataError(f"{path}: file not found (score.input must hold the raw tables)")
    try:
        months = pq.read_table(path, columns=["month"]).column("month").to_numpy()
    except Exception as exc:
        raise DataError(f"{path}: column 'month' is not readable ({exc})") from exc
    if len(months) == 0:
        raise DataError(f"{path}: table has no rows")
    return int(months.max()) + 1


def features_from_raw(cfg: Any, raw_dir: Path, snapshot: int | None) -> tuple[pd.DataFrame, int]:
    """Features of every eligible account at ``snapshot`` (default: the latest month)."""
    from pipeline.core import features as feat_core
    from pipeline.stages.features import build_features

    n_months = raw_months(raw_dir)
    snap = n_months - 1 if snapshot is None else int(snapshot)
    if not 1 <= snap <= n_months - 1:
        raise DataError(
            f"{raw_dir}: score.snapshot = {snap} is outside the months of the data [1, {n_months - 1}]"
        )
    f = cfg.features
    spec = feat_core.FeatureSpec(
        snapshots=(snap,),
        horizon=int(f.horizon),
        valid_snapshots=(),
        oot_snapshots=(),
        fund_days=int(f.fund_days),
        small_draw_ratio=float(f.small_draw_ratio),
        never_overdue_only=bool(f.never_overdue_only),
    )
    table = build_features(
        raw_dir,
        n_months,
        spec,
        int(cfg.data.block_size),
        engine=cfg.engine,
    )
    df = table.to_pandas().drop(columns=["split", "label", "label_cause"])
    return df, snap


def write_scores(table: pd.DataFrame, out: Path) -> None:
    if out.suffix.lower() == ".csv":
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    else:
        write_parquet(pa.Table.from_pandas(table, preserve_index=False), out)


def score(cfg: Any, tracker: Tracker) -> dict[str, Any]:
    s = cfg.score
    p = Paths.of(cfg)
    model = load_scoring_model(cfg, tracker)
    say(f"score: model from {model.source} (reasons: {model.attribution} cause split)")
    inp = Path(str(s.input)) if s.input else p.raw
    id_col = str(s.id_column)
    snap = None
    if inp.is_dir():
        df, snap = features_from_raw(cfg, inp, s.snapshot)
        id_col = "borrower_id"
        say(f"score: {len(df):,} eligible accounts at month {snap} built from {inp}")
    else:
        df = core.read_feature_file(inp, model.names, id_col)
    if s.borrower_id is not None:
        mine = df[df[id_col] == int(s.borrower_id)]
        if len(mine) == 0:
            raise DataError(
                f"{inp}: no eligible row with {id_col} = {s.borrower_id} (score.borrower_id)"
                + (f" at month {snap}" if snap is not None else "")
            )
        df = mine
    threads = physical_cores()
    with contextlib.ExitStack() as stack:
        shap_fn = None
        if cfg.engine.kind == "dask":  # SHAP row blocks on the cluster, same values
            from pipeline.adapters import distributed

            client = stack.enter_context(distributed.client_for(cfg.engine))

            def shap_fn(booster: Any, X: np.ndarray) -> np.ndarray:
                return distributed.shap_values(
                    client, booster, X, n_threads=int(cfg.engine.threads_per_worker)
                )

        table = core.score_frame(
            model,
            df,
            id_col,
            [float(c) for c in s.tier_cuts],
            [str(t) for t in s.tier_names],
            int(s.top_k),
            int(s.advice_rows),
            threads,
            shap_fn=shap_fn,
        )
    table["model_source"] = model.source
    out = Path(str(s.output)) if s.output else p.models / "scores.parquet"
    write_scores(table, out)
    counts = {str(t): int((table.tier == t).sum()) for t in s.tier_names}
    metrics = {"rows": float(len(table)), "mean_probability": float(table.probability.mean())}
    metrics.update({f"tier.{t}": float(c) for t, c in counts.items()})
    tracker.log_metrics(metrics)
    tracker.set_tags({"model_source": model.source, "input": str(inp)})
    tracker.log_artifact(out, "scores")
    say(
        f"score: {len(table):,} rows -> {out}; tiers "
        + ", ".join(f"{t} {c:,}" for t, c in counts.items())
    )
    if s.borrower_id is not None:
        _print_one(table.iloc[0], int(s.top_k))
    return {"summary": {"score": {"rows": len(table), "tiers": counts, "source": model.source}}}


def _print_one(row: pd.Series, top_k: int) -> None:
    lines = [f"  probability {row.probability:.2%}, tier {row.tier}"]
    for r in range(1, top_k + 1):
        en = row.get(f"reason_{r}_en")
        if isinstance(en, str) and en and np.isfinite(row.get(f"reason_{r}_shap", 0.0)):
            lines.append(f"  {r}. {row[f'reason_{r}_zh']} / {en}")
    if row.advice_en:
        lines.append("  advice:\n" + "\n".join(f"    - {a}" for a in row.advice_en.split("\n")))
    say("\n".join(lines))
