"""Runner of the ``explain`` stage: SHAP values, reason codes, fidelity, advice, plots.

Batch (default): explains the out-of-time rows (``models/reasons.parquet``), ranks each
row's closure causes (``explain.cause_source``: the survival stage's cause model, fitted
before this stage, else the SHAP-mapped reasons), measures how often the first-ranked
cause is the simulator's true cause (``models/fidelity.json``,
``fidelity_confusion.csv`` and a heatmap), advises the highest-risk borrowers
(``models/advice.parquet``) and draws the global views under ``models/plots/``.

One borrower (``explain.borrower_id=ID``): prints the probability, the reasons and the
advice for the borrower's latest out-of-time snapshot (or ``explain.snapshot``) and
writes ``models/plots/waterfall_<ID>.png`` and ``models/borrower_<ID>.json``.

In table mode (``"mode": "table"`` in ``model.json``) there are no causes: reasons are
features, and fidelity and advice are skipped. Whatever a person reads (reasons text,
plot labels, a row's story) names the table's columns and category levels as the table
does (:mod:`pipeline.core.labels`); the files keep the model's safe names beside them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.adapters import catalog, distributed
from pipeline.adapters.tracking import Tracker
from pipeline.base.causes import CAUSES
from pipeline.base.config import Config, physical_cores
from pipeline.base.io import (
    DataError,
    atomic_path,
    digest_of,
    file_digest,
    write_json,
)
from pipeline.base.registry import BY_NAME
from pipeline.core import advice as advice_core
from pipeline.core import compiled
from pipeline.core import explain as explain_core
from pipeline.core import survival as survival_core
from pipeline.core import world_advice as world_core
from pipeline.core.labels import Labels, labels_of
from pipeline.core.report import Words, words
from pipeline.stages.common import Result, say, stamped
from pipeline.stages.features import feature_spec as _feature_spec
from pipeline.stages.generate import world_spec

# ---- loading ----------------------------------------------------------------------


class _Model:
    """The booster with its calibration: ``prob`` is what the product reports."""

    def __init__(self, models_dir: Path) -> None:
        self.booster, self.meta = catalog.load_model(models_dir)
        self.names: list[str] = list(self.meta["feature_names"])
        self.mode = str(self.meta.get("mode", "simulator"))
        self.calibrator = catalog.load_calibrator(models_dir)
        self.digest = file_digest(models_dir / catalog.ENTRIES["model"].relpath)
        meta_path = models_dir / catalog.ENTRIES["model_meta"].relpath
        try:  # what a person reads: the table's own column names and levels
            self.labels: Labels = labels_of(self.meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{meta_path}: key 'encoding' cannot be read ({exc})") from exc
        self.words: Words = words(self.meta)
        self.shown: list[str] = self.labels.all_names(self.names)

    def prob(self, X: np.ndarray) -> np.ndarray:
        raw = compiled.predict(self.booster, np.asarray(X, dtype=np.float32))
        return np.asarray(self.calibrator.apply(raw), dtype=np.float64)

    @property
    def reference(self) -> np.ndarray | None:
        """The training medians a reason's risky side is read against (None: not saved)."""
        return explain_core.reference_medians(self.meta, self.names)


def _floor(cfg: Config) -> float | None:
    """The lowest tier cut-off (``score.tier_cuts``): under it a row has no closure concern."""
    cuts = list(cfg.score.tier_cuts)
    return float(min(cuts)) if cuts else None


def _load_rows(
    cfg: Any, p: catalog.Catalog, model: _Model, batch: bool = False
) -> tuple[pd.DataFrame, str, Path]:
    """The scored table and its id column, in either mode.

    ``batch`` (simulator mode): only the rows the batch reads, the out-of-time rows and
    the training split's closures (for the learned cause weights); the whole file's
    rules are still checked, on its key columns.
    """
    if model.mode == "table":
        path = p.path("table_features")
        if not path.exists():
            raise DataError(f"{path}: file not found (run `make train` in table mode first)")
        df = p.read("table_features").to_pandas()
        id_col = str(model.meta.get("table", {}).get("id") or df.columns[0])
        need = [id_col, "split", "label", *model.names]
    else:
        path = p.path("features")
        e = cfg.explain
        df = (
            batch_rows(p, int(e.max_rows), int(e.learn_rows), int(cfg.data.seed))
            if batch
            else p.read("features").to_pandas()
        )
        id_col = "borrower_id"
        need = [id_col, "snapshot", "split", "label", "label_cause", *model.names]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{path}: column(s) {', '.join(missing)} missing (the model needs them)")
    return df, id_col, path


def batch_rows(
    cat: catalog.Catalog, max_rows: int = 0, learn_rows: int = 0, seed: int = 0
) -> pd.DataFrame:
    """The rows of the feature table the batch explanation reads: the out-of-time rows
    and the training split's closures (for the learned weights).

    The whole file's rules (split names, labels, unique keys) are checked on its key
    columns; the other rows are skipped by a Parquet filter, so at a million borrowers
    the ~7 million training and validation rows never reach memory. With ``max_rows``
    (``learn_rows``) > 0 and more out-of-time rows (closures) than that, only the
    sample the explanation uses is read (by position, one row group at a time), drawn
    as ``DataFrame.sample(n, random_state=seed)`` draws it from all of them: the
    sampled out-of-time rows come sorted by snapshot and borrower, the closures in the
    order drawn, as :func:`_rows_to_explain` and :func:`_cause_weights` would have
    them. Otherwise the rows come in the file's order, out-of-time rows and closures
    interleaved.
    """
    # the key columns of every row, kept in Arrow (millions of split names as Python
    # strings would be the largest thing this process holds)
    keys = cat.read("features", ["split", "label"])
    split = pc.field("split")
    oot = pc.equal(keys.column("split"), "oot").to_numpy(zero_copy_only=False)
    closed = pc.and_(
        pc.equal(keys.column("split"), "train"), pc.equal(keys.column("label"), 1)
    ).to_numpy(zero_copy_only=False)
    n_oot, n_closed = int(oot.sum()), int(closed.sum())
    if not (0 < max_rows < n_oot or 0 < learn_rows < n_closed):
        wanted = (split == "oot") | ((split == "train") & (pc.field("label") == 1))
        return cat.read("features", where=wanted).to_pandas()
    pick_oot = _draw(np.flatnonzero(oot), max_rows, seed)
    pick_closed = _draw(np.flatnonzero(closed), learn_rows, seed)
    pairs = np.column_stack(
        [keys.column("borrower_id").to_numpy(), keys.column("snapshot").to_numpy()]
    )
    del keys, oot, closed
    want_oot, want_closed = pairs[pick_oot], pairs[pick_closed]
    # only the drawn rows, by their positions, one row group at a time
    at = np.sort(np.concatenate([pick_oot, pick_closed]))
    rows = cat.read("features", rows=at).to_pandas()
    first = catalog.in_key_order(rows, want_oot[:, 0], want_oot[:, 1])
    if 0 < max_rows < n_oot:
        first = first.sort_values(["snapshot", "borrower_id"])
    second = catalog.in_key_order(rows, want_closed[:, 0], want_closed[:, 1])
    return pd.concat([first, second], ignore_index=True)


def _draw(positions: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``positions`` sampled as ``DataFrame.sample(n, random_state=seed)`` samples rows
    (all of them, in order, when there are at most ``n`` or ``n`` is 0)."""
    if n <= 0 or len(positions) <= n:
        return positions
    return positions[np.random.RandomState(seed).choice(len(positions), size=n, replace=False)]


# ---- feature -> cause weights -------------------------------------------------------


def _cause_weights(
    cfg: Any, p: catalog.Catalog, model: _Model, df: pd.DataFrame, threads: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """``W`` for the configured attribution; the learned one is cached with the model."""
    e = cfg.explain
    if e.attribution != "learned":
        return explain_core.attribution_matrix(model.names, str(e.attribution)), {
            "attribution": str(e.attribution)
        }
    key = {
        "model": model.digest,
        "support": str(e.learn_support),
        "rows": int(e.learn_rows),
        "seed": int(cfg.data.seed),
        "names": model.names,
        # a registry change (new links) must not reuse weights learned under the old ones
        "links": {n: list(BY_NAME[n].causes) for n in model.names if n in BY_NAME},
    }
    path = p.path("cause_weights")
    saved = catalog.read_cause_weights(path, model.names, key=digest_of(key))
    if saved is not None:
        return saved, json.loads(path.read_text())["info"]
    closed = df[(df.split == "train") & (df.label == 1)]
    if len(closed) > int(e.learn_rows):
        closed = closed.sample(n=int(e.learn_rows), random_state=int(cfg.data.seed))
    info: dict[str, Any] = {"attribution": "learned", "support": str(e.learn_support)}
    try:
        if len(closed) == 0:
            raise ValueError("the training split has no labelled closures")
        contrib, _ = explain_core.contributions(
            model.booster, closed[model.names].to_numpy(dtype=np.float32), threads
        )
        fit = explain_core.fit_cause_weights(
            contrib[:, :-1], closed.label_cause.to_numpy(), model.names, str(e.learn_support)
        )
    except ValueError as exc:
        say(f"explain: cannot learn cause weights ({exc}); using the registry split")
        return explain_core.attribution_matrix(model.names, "registry"), {
            "attribution": "registry",
            "learned_failed": str(exc),
        }
    info.update(
        n_rows=fit.n_rows,
        train_top1=fit.train_top1,
        temperature=fit.temperature,
        causes_seen=fit.causes_seen,
        causes_unseen=[c for c in CAUSES if c not in fit.causes_seen],
    )
    weights = {
        f: {c: float(fit.W[j, k]) for k, c in enumerate(explain_core.CAUSE_COLUMNS)}
        for j, f in enumerate(model.names)
    }
    write_json({"key": digest_of(key), "info": info, "weights": weights}, path)
    return fit.W, info


def _shift(
    cfg: Any, contrib: np.ndarray, p_feat: int, groups: np.ndarray | None
) -> np.ndarray | None:
    if cfg.explain.reference == "snapshot" and groups is not None:
        return explain_core.reference_shift(contrib[:, :p_feat], groups)
    return None


# ---- the stage --------------------------------------------------------------------


@dataclass(frozen=True)
class ExplainResult(Result):
    """Batch: the rows explained, their SHAP method and global importance; one borrower:
    the borrower's story."""

    metrics: dict[str, float] = field(default_factory=dict)
    importance: list[Any] = field(default_factory=list)
    method: str = ""
    borrower: dict[str, Any] | None = None


def explain(cfg: Any, tracker: Tracker) -> ExplainResult:
    t0 = time.perf_counter()
    p = catalog.Catalog.of(cfg)
    model = _Model(p.models)
    df, id_col, src = _load_rows(cfg, p, model, batch=cfg.explain.borrower_id is None)
    threads = int(cfg.explain.n_jobs) or physical_cores()
    if cfg.explain.borrower_id is not None:
        return _borrower(cfg, p, model, df, id_col, src, threads, tracker)
    res = _batch(cfg, p, model, df, id_col, threads, tracker)
    world = res.summary.get("advice", {}).get("world")
    if world:  # what the world test costs, as a share of the whole stage
        total = time.perf_counter() - t0
        world["explain_seconds"] = total
        world["share_of_explain"] = float(world["seconds"]) / max(total, 1e-9)
        say(
            f"explain: the world test took {world['seconds']:.1f}s of the stage's {total:.1f}s "
            f"({world['share_of_explain']:.0%})"
        )
    return res


def _batch(
    cfg: Config,
    p: catalog.Catalog,
    model: _Model,
    df: pd.DataFrame,
    id_col: str,
    threads: int,
    tracker: Tracker,
) -> ExplainResult:
    e = cfg.explain
    names = model.names
    sim = model.mode != "table"
    oot = _rows_to_explain(cfg, df, id_col, sim)
    X = oot[names].to_numpy(dtype=np.float32)
    contrib, method, seconds = _shap(cfg, model, X, threads)
    additivity = _additivity(model, X, contrib)
    raw_score = compiled.predict(model.booster, X)
    prob = model.calibrator.apply(raw_score)

    cols: dict[str, Any] = {id_col: oot[id_col].to_numpy()}
    if sim:
        cols["snapshot"] = oot.snapshot.to_numpy()
    cols.update(probability=prob, label=oot.label.to_numpy())
    info: dict[str, Any] = {}
    W = None
    ranked: dict[str, np.ndarray] = {}
    source: dict[str, Any] = {}
    if sim:
        cols["label_cause"] = oot.label_cause.to_numpy()
        W, info = _cause_weights(cfg, p, model, df, threads)
        shift = _shift(cfg, contrib, len(names), oot.snapshot.to_numpy())
        reasons = explain_core.reason_codes(
            contrib, X, names, int(e.top_k), W, shift, model.reference, prob, _floor(cfg)
        )
        ranked, source = _ranked_causes(cfg, p, model, X, reasons)
        cols.update({f"cause_{r + 1}": v for r, v in enumerate(ranked.values())})
    else:
        reasons = explain_core.feature_reasons(contrib, X, names, int(e.top_k), model.labels)
    if e.probability:
        _add_probability_reasons(reasons, contrib, int(e.top_k))
    table = pd.DataFrame({**cols, **reasons})
    # new global views replace the old ones whole (dependence plots differ by feature);
    # the report and policy figures were built from the old ones
    p.remove(*catalog.EXPLAIN_VIEWS)
    p.remove_derived(*catalog.EXPLAIN_VIEWS)
    out = p.write("reasons", pa.Table.from_pandas(table, preserve_index=False))
    importance = explain_core.global_importance(contrib, names)
    # "importance" keeps the model's names (other code reads it); "names" gives the reader's
    imp_path = p.write(
        "shap_importance",
        stamped(
            {
                "method": method,
                "importance": importance,
                "names": {f: model.labels.name(f) for f, _ in importance},
            },
            model.digest,
        ),
    )
    views = _Views(model.digest, artifacts=[out, imp_path])
    views.plots = _shap_plots(
        contrib,
        X,
        model.shown,
        p,
        int(e.plot_sample),
        int(cfg.data.seed),
        [names.index(f) for f, _ in importance],
        int(e.dependence_top),
        names,
        levels=model.labels.value,
    )
    views.metrics = {
        "rows": float(len(X)),
        "seconds": seconds,
        "rows_per_s": len(X) / max(seconds, 1e-9),
        "additivity_max_abs": additivity,
    }
    views.part = {"shap": {"method": method, "rows_per_s": views.metrics["rows_per_s"]}}
    if sim:
        assert W is not None
        _cause_views(cfg, p, views, contrib, names, W, info, table, reasons, ranked, source)
        if e.advice_rows > 0:
            _advice_views(cfg, p, views, model, oot, prob, raw_score)
    tracker.log_metrics(views.metrics)
    tracker.set_tags(
        {"shap_method": method, "attribution": str(info.get("attribution", "features"))}
    )
    for a in views.artifacts:
        tracker.log_artifact(a, "explain")
    for plot in views.plots:
        tracker.log_artifact(plot, "plots")
    say(
        f"explain: {len(X):,} rows by {method} ({seconds:.1f}s, "
        f"{views.metrics['rows_per_s']:,.0f} rows/s), additivity {additivity:.1e} -> {out}"
    )
    return ExplainResult(
        summary=views.part, metrics=views.metrics, importance=importance, method=method
    )


def _advice_views(
    cfg: Config,
    p: catalog.Catalog,
    views: _Views,
    model: _Model,
    oot: pd.DataFrame,
    prob: np.ndarray,
    raw_score: np.ndarray,
) -> None:
    """Advice for the riskiest rows, then (``explain.world_rows``) carried out in the world."""
    e = cfg.explain
    adv = _batch_advice(cfg, model, oot, prob, raw_score, p)
    if adv is None:
        return
    views.artifacts.append(p.path("advice"))
    views.part["advice"] = adv
    views.metrics.update(
        {f"advice_{k}": float(v) for k, v in adv.items() if isinstance(v, (int, float))}
    )
    if e.world_rows <= 0:
        return
    world = world_core.evaluate(
        world_spec(cfg),
        p.read("advice").to_pandas(),
        oot,
        model.names,
        model.prob,
        int(e.world_futures),
        int(e.world_rows),
        _raw_borrowers(cfg),
        history=_advised_history(p, e.world_rows),
        feature_spec=_feature_spec(cfg),
        next_months=int(e.world_next_months),
        n_jobs=int(e.n_jobs) or physical_cores(),
    ).summary
    views.part["advice"]["world"] = world
    views.metrics.update(world_core.metrics(world))
    say(world_core.headline(world))


@dataclass
class _Views:
    """What the batch explanation wrote and will log: files, plots, metrics, summary."""

    stamp: str  # the digest of the model every file here is derived from
    artifacts: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    part: dict[str, Any] = field(default_factory=dict)


def _rows_to_explain(cfg: Config, df: pd.DataFrame, id_col: str, sim: bool) -> pd.DataFrame:
    """The out-of-time rows (validation rows when a table has none), sampled to max_rows."""
    e = cfg.explain
    oot = df[df.split == "oot"]
    if len(oot) == 0:  # a table without a held-out part: explain validation rows
        oot = df[df.split == "valid"]
    if len(oot) > e.max_rows:
        oot = oot.sample(n=int(e.max_rows), random_state=int(cfg.data.seed))
        oot = oot.sort_values(["snapshot", id_col] if sim else [id_col])
    return oot


def _shap(cfg: Config, model: _Model, X: np.ndarray, threads: int) -> tuple[np.ndarray, str, float]:
    """SHAP contributions of ``X`` (on the cluster with ``engine=dask``), method, seconds."""
    t0 = time.perf_counter()
    if cfg.engine.kind == "dask":
        with distributed.client_for(cfg.engine) as client:
            contrib = distributed.shap_values(
                client, model.booster, X, n_threads=int(cfg.engine.threads_per_worker)
            )
        method = "treeshap_dask"
    else:
        contrib, method = explain_core.contributions(model.booster, X, threads)
    return contrib, method, time.perf_counter() - t0


def _add_probability_reasons(reasons: dict[str, Any], contrib: np.ndarray, top_k: int) -> None:
    """Each reason's share of the probability change, beside its log-odds SHAP value."""
    pc = explain_core.probability_contributions(contrib)
    total = contrib[:, :-1].sum(axis=1)
    slope = np.divide(
        pc[:, :-1].sum(axis=1), total, out=np.zeros(len(contrib)), where=np.abs(total) > 1e-12
    )
    for r in range(1, top_k + 1):
        if f"reason_{r}_shap" in reasons:
            reasons[f"reason_{r}_prob"] = reasons[f"reason_{r}_shap"] * slope


def _cause_model(
    cfg: Config, p: catalog.Catalog, model: _Model
) -> tuple[survival_core.CauseModel | None, str]:
    """The published cause model when it was fitted beside this classifier on the same
    features, else None and why."""
    cause, why = catalog.published_cause_model(p.models, model.mode, bool(cfg.model.survival))
    if cause is not None and cause.names != model.names:
        return None, "the cause model reads other features than the classifier"
    return cause, why


def _ranked_causes(
    cfg: Config, p: catalog.Catalog, model: _Model, X: np.ndarray, reasons: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each row's closure causes, ranked (``reason_<r>_cause`` columns, as the fidelity
    functions read them), and where the ranking comes from.

    With ``explain.cause_source=cause_model`` the published competing-risks model ranks
    the causes by their predicted incidence at the feature horizon (the months the
    classifier's label looks ahead), when it was fitted beside this classifier on the
    same features; otherwise the SHAP-mapped reasons' causes are the ranking."""
    keys = [f"reason_{r}_cause" for r in range(1, 4)]
    shap_ranked = {k: np.asarray(reasons[k], dtype=object) for k in keys if k in reasons}
    if cfg.explain.cause_source == "shap":
        return shap_ranked, {"source": "shap", "why": "explain.cause_source=shap"}
    cause, why = _cause_model(cfg, p, model)
    h = int(cfg.features.horizon)
    if cause is not None and h > cause.longest:
        cause, why = None, f"the cause model's curves end before the {h}-month horizon"
    if cause is None:
        return shap_ranked, {"source": "shap", "why": why}
    cols = cause.curves(X, [h])
    at_h = np.column_stack([cols[f"risk_h{h}_{c}"] for c in CAUSES])
    order = survival_core.cause_ranking(at_h)
    return survival_core.ranked_reasons(order, 3), {"source": "cause_model", "horizon": h}


def _cause_views(
    cfg: Config,
    p: catalog.Catalog,
    views: _Views,
    contrib: np.ndarray,
    names: list[str],
    W: np.ndarray,
    info: dict[str, Any],
    table: pd.DataFrame,
    reasons: dict[str, Any],
    ranked: dict[str, np.ndarray],
    source: dict[str, Any],
) -> None:
    """Cause importance, and fidelity against the true causes of closures: of the
    headline ranking of causes (``ranked``, from ``source``) and, when that is the cause
    model's, of the SHAP-mapped reasons beside it (``fidelity.shap``)."""
    cimp = explain_core.cause_importance(contrib, names, W)
    cimp_path = p.write(
        "cause_importance", stamped({"attribution": info, "importance": cimp}, views.stamp)
    )
    views.artifacts.append(cimp_path)
    views.plots.append(
        _bar_plot(cimp, p.path("cause_importance_plot"), "mean |SHAP| per cause (log-odds)")
    )
    closed = table.label.to_numpy() == 1
    if not closed.any():
        return
    truth = table.label_cause.to_numpy()[closed]
    keys = table.loc[closed, ["borrower_id", "snapshot"]]
    oracle = p.read("oracle").to_pandas() if p.path("oracle").exists() else None

    def graded(
        rank: dict[str, Any],
    ) -> tuple[explain_core.Fidelity, dict[str, Any] | None]:
        """A ranking's fidelity on all closures and, beside the ceiling, on those with
        the oracle's futures (the cause ranking of the futures from the same closures)."""
        mine = {k: np.asarray(v)[closed] for k, v in rank.items()}
        fid = explain_core.fidelity(mine, truth)
        ceil = None if oracle is None else explain_core.oracle_fidelity(keys, truth, mine, oracle)
        return fid, ceil

    fid, ceil = graded(ranked)
    conf_path = p.path("fidelity_confusion")
    with atomic_path(conf_path) as tmp:  # with its index: the true causes
        fid.confusion.to_csv(tmp)
    fid_path = p.path("fidelity")
    fid_part: dict[str, Any] = {
        "top1": fid.top1,
        "top3": fid.top3,
        "n": fid.n,
        "chance_top1": 1.0 / len(CAUSES),
        "source": source["source"],
        "attribution": info.get("attribution"),
        "reference": str(cfg.explain.reference),
    }
    fid_part.update({k: v for k, v in source.items() if k != "source"})
    overall, by_cause = explain_core.with_ceiling(fid, ceil)
    fid_part.update(overall)
    fid_part["by_cause"] = by_cause
    if source["source"] != "shap":  # the SHAP-mapped reasons, graded the same way
        sfid, sceil = graded(reasons)
        fid_part["shap"] = {"top1": sfid.top1, "top3": sfid.top3, "n": sfid.n}
        if sceil is not None:
            fid_part["shap"]["paired"] = explain_core.paired(sceil)
    write_json(stamped({**fid_part, "weights": info}, views.stamp), fid_path)
    views.artifacts += [conf_path, fid_path]
    views.plots.append(_heatmap(fid.confusion, p.path("fidelity_confusion_plot")))
    # fidelity_top1 is the figure paired with the ceiling; the all-closure one is _all
    views.metrics.update(
        fidelity_top1_all=fid.top1, fidelity_top3_all=fid.top3, fidelity_n_all=float(fid.n)
    )
    if ceil is not None:
        pair = fid_part["paired"]
        views.metrics.update(
            fidelity_top1=float(pair["top1"]),
            fidelity_top3=float(pair["top3"]),
            fidelity_n=float(pair["n"]),
            fidelity_ceiling_top1=float(pair["ceiling_top1"]),
            fidelity_ceiling_top3=float(pair["ceiling_top3"]),
            fidelity_ceiling_top1_se=float(pair["ceiling_top1_se"]),
        )
    shap_pair = fid_part.get("shap", {}).get("paired")
    if shap_pair is not None:
        views.metrics.update(
            fidelity_shap_top1=float(shap_pair["top1"]),
            fidelity_shap_top3=float(shap_pair["top3"]),
        )
    views.part["fidelity"] = fid_part
    say(_fidelity_lines(fid, fid_part, ceil is not None, str(info.get("attribution"))))


def _fidelity_lines(
    fid: explain_core.Fidelity, fid_part: dict[str, Any], ceiling: bool, attribution: str
) -> str:
    """The console's fidelity lines: the ranking's figures, beside the ceiling, the
    SHAP-mapped reasons' where the ranking is the cause model's, and per cause."""
    by_cause = fid_part["by_cause"]
    shap_pair = fid_part.get("shap", {}).get("paired")
    by = (
        f"the cause model's incidence at {fid_part['horizon']} months"
        if fid_part["source"] == "cause_model"
        else f"the SHAP-mapped reasons, {attribution} attribution"
        + (f"; no cause model: {fid_part['why']}" if fid_part.get("why") else "")
    )
    lines = [
        f"explain: causes ranked by {by}; fidelity on all {fid.n:,} out-of-time closures: "
        f"top-1 {fid.top1:.1%}, top-3 {fid.top3:.1%} (chance top-1 {1 / len(CAUSES):.1%})"
    ]
    if ceiling:
        pair = fid_part["paired"]
        lines.append(
            f"  paired with the ceiling on the {pair['n']:,} closures with oracle futures "
            f"({pair.get('futures', '?')} per closure): top-1 {pair['top1']:.1%} +- "
            f"{pair['top1_se']:.1%} against ceiling {pair['ceiling_top1']:.1%} +- "
            f"{pair['ceiling_top1_se']:.1%} ({pair['share_of_ceiling_top1']:.1%} of it); "
            f"top-3 {pair['top3']:.1%} against {pair['ceiling_top3']:.1%}"
        )
    if "shap" in fid_part:
        sh = fid_part["shap"]
        lines.append(
            f"  the SHAP-mapped reasons ({attribution} attribution) beside it: "
            f"top-1 {sh['top1']:.1%}, top-3 {sh['top3']:.1%} on all closures"
            + (
                f"; on the same {shap_pair['n']:,} closures top-1 {shap_pair['top1']:.1%} +- "
                f"{shap_pair['top1_se']:.1%} ({shap_pair['share_of_ceiling_top1']:.1%} of "
                "the ceiling)"
                if shap_pair is not None
                else ""
            )
        )
    lines += [
        f"  {c:<26} n {v['n']:>6,.0f}  top-1 {v['top1']:6.1%}"
        + (
            f"  with oracle futures n {v['oracle_n']:>5,.0f}  top-1 {v['oracle_rows_top1']:6.1%}"
            f"  oracle agreement {v['oracle_agreement_top1']:6.1%}"
            if "oracle_agreement_top1" in v
            else ""
        )
        for c, v in by_cause.items()
    ]
    return "\n".join(lines)


def _additivity(model: _Model, X: np.ndarray, contrib: np.ndarray) -> float:
    """Contributions must add up to the raw score; checked on a sample."""
    if len(X) == 0:
        return 0.0
    rng = np.random.default_rng(0)
    sample = rng.choice(len(X), size=min(len(X), 2000), replace=False)
    raw = model.booster.predict(X[sample], raw_score=True)
    err = float(np.max(np.abs(contrib[sample].sum(axis=1) - raw)))
    if err > 1e-3:
        raise RuntimeError(f"SHAP additivity check failed: max |sum - raw score| = {err:.2e}")
    return err


def _batch_advice(
    cfg: Any,
    model: _Model,
    rows: pd.DataFrame,
    prob: np.ndarray,
    raw_score: np.ndarray,
    p: catalog.Catalog,
) -> dict[str, Any] | None:
    """Advice for the highest-risk borrowers (their latest explained snapshot).

    The riskiest are taken by the calibrated probability, ties (the flat top of an
    isotonic map) broken by the score before calibration, then by id.
    """
    thr = float(cfg.explain.advice_threshold)
    frame = rows.assign(_p=prob, _raw=raw_score)
    frame = frame.sort_values(["snapshot", "borrower_id"]).drop_duplicates(
        "borrower_id", keep="last"
    )
    n_above = int((frame._p >= thr).sum())
    frame = frame[frame._p >= thr].sort_values(
        ["_p", "_raw", "borrower_id"], ascending=[False, False, True]
    )
    n_tied = int((frame._p == frame._p.max()).sum()) if len(frame) else 0
    frame = frame.head(int(cfg.explain.advice_rows))
    if len(frame) == 0:
        say(f"explain: no out-of-time borrower at or above the advice threshold {thr:.0%}")
        return None
    ids, snaps = frame.borrower_id.to_numpy(), frame.snapshot.to_numpy()
    capacity = _repay_capacity(p, ids, snaps)
    share = float(cfg.explain.advice_draw_share)
    recs = []
    for bid, snap, x, raw, cap in zip(
        ids,
        snaps,
        frame[model.names].to_numpy(dtype=np.float64),
        frame._raw.to_numpy(),
        capacity,
        strict=True,
    ):
        draw = advice_core.draw_size(cap, _typical_draw(x, model.names), share)
        a = advice_core.advise(x, model.names, model.prob, thr, draw=draw)
        recs.append(
            {
                "borrower_id": int(bid),
                "snapshot": int(snap),
                "raw_score": float(raw),
                "p_before": a.p_before,
                "p_after": a.p_after,
                "achieved": a.achieved,
                "cost": a.cost,
                "actions": " ".join(a.actions),
                "changes": json.dumps([list(c) for c in a.changes]),
                "repay_capacity": float(cap),
                "draw_size": a.draw_size,
                "not_advised": json.dumps(a.not_advised),
                "advice_zh": "\n".join(a.zh),
                "advice_en": "\n".join(a.en),
            }
        )
    table = pd.DataFrame(recs)
    out = p.write("advice", pa.Table.from_pandas(table, preserve_index=False))
    achieved = table.achieved.to_numpy()
    why = pd.Series(
        [r for d in table.not_advised for r in json.loads(d).values()], dtype=object
    ).value_counts()
    summary: dict[str, Any] = {
        "n": float(len(table)),
        "threshold": thr,
        "achieved_share": float(achieved.mean()),
        "mean_cost": float(table.cost[achieved].mean()) if achieved.any() else float("nan"),
        "chosen": {
            "rule": "highest calibrated probability, ties broken by the score before "
            "calibration, then by borrower id; one row per borrower (latest out-of-time "
            "snapshot)",
            "n_at_or_above_threshold": n_above,
            "n_tied_at_top": n_tied,
        },
        "draw": {
            "need_share": share,
            "n_sized": int(np.isfinite(table.draw_size).sum()),
            "max_draw_over_capacity": float(
                np.nanmax(table.draw_size / table.repay_capacity)
                if np.isfinite(table.draw_size).any()
                else float("nan")
            ),
            "not_advised": {str(k): int(v) for k, v in why.items()},
        },
    }
    say(
        f"explain: advice for {len(table)} borrowers at risk >= {thr:.0%} (riskiest by "
        f"calibrated probability, {n_tied} tied at the top broken by the score before "
        f"calibration): {summary['achieved_share']:.0%} brought under the threshold -> {out}"
    )
    return summary


def _advised_history(p: catalog.Catalog, n: int) -> dict[str, pa.Table] | None:
    """The raw tables of the advised borrowers (the first ``n`` of the advice table), from
    which the world test recomputes their futures' features."""
    ids = p.read("advice", ["borrower_id"]).column("borrower_id").to_numpy()[: int(n)]
    keep = pc.field("borrower_id").isin(pa.array(np.unique(ids).astype(np.int64)))
    names = ("borrowers", *world_core.TRACE_TABLES)
    return {name: p.read(name, where=keep) for name in names}


def _typical_draw(x: np.ndarray, names: Sequence[str]) -> float:
    """The borrower's typical draw over the last twelve months (nan without one)."""
    col = {n: j for j, n in enumerate(names)}
    if "draw_amount_12" not in col or "n_draws_12" not in col:
        return float("nan")
    n = float(x[col["n_draws_12"]])
    return float(x[col["draw_amount_12"]]) / n if n > 0 else float("nan")


def _repay_capacity(p: catalog.Catalog, ids: np.ndarray, snaps: np.ndarray) -> np.ndarray:
    """Each borrower's median monthly repayment over the twelve months to its snapshot
    (months with a repayment; nan when none): what it has shown it repays in a month."""
    want = pd.DataFrame({"borrower_id": ids.astype(np.int64), "snapshot": snaps.astype(np.int64)})
    am = p.read(
        "account_months",
        ["borrower_id", "month", "repayment"],
        where=pc.field("borrower_id").isin(pa.array(np.unique(ids).astype(np.int64))),
    ).to_pandas()
    am = am.astype({"borrower_id": np.int64, "month": np.int64})
    m = am.merge(want, on="borrower_id")
    m = m[(m.month <= m.snapshot) & (m.month > m.snapshot - 12) & (m.repayment > 0)]
    med = m.groupby(["borrower_id", "snapshot"]).repayment.median()
    got = want.set_index(["borrower_id", "snapshot"]).index.map(med.to_dict())
    return np.asarray(pd.Series(got, dtype=np.float64).to_numpy(), dtype=np.float64)


# ---- one borrower -------------------------------------------------------------------


def _borrower(
    cfg: Config,
    p: catalog.Catalog,
    model: _Model,
    df: pd.DataFrame,
    id_col: str,
    src: Path,
    threads: int,
    tracker: Tracker,
) -> ExplainResult:
    e = cfg.explain
    bid = e.borrower_id
    sim = model.mode != "table"
    row = _borrower_row(cfg, df, id_col, src, sim)
    x = row[model.names].to_numpy(dtype=np.float32)
    contrib, method = explain_core.contributions(model.booster, x, threads)
    prob = float(model.prob(x)[0])
    if sim:
        W, _ = _cause_weights(cfg, p, model, df, threads)
        shift = _snapshot_shift(cfg, model, df, int(row.snapshot.iloc[0]), threads)
        reasons = explain_core.reason_codes(
            contrib,
            x,
            model.names,
            int(e.top_k),
            W,
            shift,
            model.reference,
            np.array([prob]),
            _floor(cfg),
        )
    else:
        reasons = explain_core.feature_reasons(contrib, x, model.names, int(e.top_k), model.labels)
    lines = [
        "",
        f"=== borrower {bid}, snapshot {int(row.snapshot.iloc[0])} ==="
        if sim
        else f"=== row {id_col} = {bid} ===",
        (
            f"closure risk in the next {cfg.features.horizon} months: {prob:.1%}"
            if sim
            else f"probability of {model.words.event}: {prob:.1%}"
        )
        + (" (calibrated)" if model.calibrator.method != "none" else ""),
        "reasons / 原因:",
    ]
    report: dict[str, Any] = {
        "borrower_id": bid,
        "snapshot": int(row.snapshot.iloc[0]) if sim else None,
        "probability": prob,
        "reasons": _story_reasons(reasons, int(e.top_k), lines, model.labels),
        "method": method,
    }
    if sim:
        report["risk_curve"] = _story_curve(cfg, p, model, x, prob, lines)
        report["advice"] = _story_advice(cfg, model, x, lines, int(row.snapshot.iloc[0]))
    else:
        report.update(id_column=id_col, event=model.words.event)
    shown = [model.labels.value(f, v) for f, v in zip(model.names, x[0], strict=True)]
    plot = _waterfall(
        contrib[0],
        x[0],
        model.shown,
        p.path("waterfall_plot", id=bid),
        None if model.labels.identity else shown,
    )
    rep_path = p.write("borrower_story", report, id=bid)
    lines.append(f"waterfall plot: {plot}")
    say("\n".join(lines))
    tracker.log_artifact(plot, "borrowers")
    tracker.log_artifact(rep_path, "borrowers")
    return ExplainResult(borrower=report)


def _story_curve(
    cfg: Config, p: catalog.Catalog, model: _Model, x: np.ndarray, prob: float, lines: list[str]
) -> dict[str, Any]:
    """The borrower's risk curve from the published cause model, beside the classifier's
    one probability: printed into ``lines`` and returned for the story's JSON."""
    cause, why = _cause_model(cfg, p, model)
    if cause is None:
        lines.append(f"risk curve: absent ({why})")
        return {"absent": why}
    cols = cause.curves(x)
    h = int(cfg.features.horizon)
    lines.append(
        "risk curve (competing-risks cause model, calibrated per month): the chance this "
        "account is closed without ever being overdue within t months of the snapshot, in "
        f"all and by cause; the classifier above gives one number, for {h} months:"
    )
    curve: dict[str, Any] = {"horizons": cause.horizons, "any": {}, "by_cause": {}}
    for t in cause.horizons:
        risk = float(cols[f"risk_h{t}"][0])
        by = {c: float(cols[f"risk_h{t}_{c}"][0]) for c in CAUSES}
        curve["any"][str(t)], curve["by_cause"][str(t)] = risk, by
        seen = (
            "validated on the out-of-time rows"
            if t in cause.validated
            else "not validated: " + (cause.why_not_validated or {}).get(t, "no figure")
        )
        top = sorted(by.items(), key=lambda kv: -kv[1])
        lines.append(
            f"  {t:>2} month{'s' if t > 1 else ' '}: {risk:6.1%} ({seen}); by cause "
            + ", ".join(f"{c} {v:.1%}" for c, v in top)
        )
    if h in cause.horizons:
        lines.append(
            f"  at {h} months the curve reads {curve['any'][str(h)]:.1%} and the classifier "
            f"{prob:.1%}: two models of the same event, fitted apart, so they need not agree"
        )
    curve.update(
        validated=cause.validated,
        not_validated={str(k): v for k, v in (cause.why_not_validated or {}).items()},
        classifier_probability=prob,
        classifier_horizon=h,
    )
    return curve


def _borrower_row(cfg: Config, df: pd.DataFrame, id_col: str, src: Path, sim: bool) -> pd.DataFrame:
    """The one row a story tells: the asked-for snapshot, else the latest out-of-time one."""
    e = cfg.explain
    bid = e.borrower_id
    key = df[id_col].to_numpy()
    try:
        mine = df[key == type(key[0])(bid)] if len(key) else df.iloc[:0]
    except (TypeError, ValueError):
        mine = df.iloc[:0]
    if len(mine) == 0:
        raise DataError(
            f"{src}: no row with {id_col} = {bid} (explain.borrower_id); "
            f"ids range from {key.min()} to {key.max()}"
            if len(key)
            else f"{src}: table is empty"
        )
    if not sim:
        return mine.iloc[:1]
    snaps = sorted(int(s) for s in mine.snapshot.unique())
    if e.snapshot is not None:
        if int(e.snapshot) not in snaps:
            raise DataError(
                f"{src}: borrower {bid} has no row at snapshot {e.snapshot} "
                f"(explain.snapshot); available: {snaps}"
            )
        return mine[mine.snapshot == int(e.snapshot)].iloc[:1]
    oot = mine[mine.split == "oot"]
    if len(oot) == 0:
        raise DataError(
            f"{src}: borrower {bid} has no out-of-time row (closed or not yet on book); "
            f"choose one of the snapshots {snaps} with explain.snapshot=..."
        )
    return oot[oot.snapshot == oot.snapshot.max()].iloc[:1]


def _snapshot_shift(
    cfg: Config, model: _Model, df: pd.DataFrame, snap: int, threads: int
) -> np.ndarray | None:
    """Mean contributions of the borrower's peers at the snapshot (reference=snapshot)."""
    if cfg.explain.reference != "snapshot":
        return None
    peers = df[df.snapshot == snap]
    if len(peers) > 20_000:
        peers = peers.sample(n=20_000, random_state=int(cfg.data.seed))
    pc, _ = explain_core.contributions(
        model.booster, peers[model.names].to_numpy(dtype=np.float32), threads
    )
    return pc[:, : len(model.names)].mean(axis=0, keepdims=True)


def _story_reasons(
    reasons: dict[str, Any], top_k: int, lines: list[str], labels: Labels
) -> list[dict[str, Any]]:
    """The reasons that raise the risk, as printed lines and as records (``feature`` the
    model's name, ``name`` the one the reader knows)."""
    out = []
    for r in range(1, top_k + 1):
        if f"reason_{r}_en" not in reasons or not reasons[f"reason_{r}_shap"][0] > 0:
            continue  # only what raises the risk is a reason for a person
        en, zh = reasons[f"reason_{r}_en"][0], reasons[f"reason_{r}_zh"][0]
        lines += [f"  {r}. {zh}"] + ([f"     {en}"] if en != zh else [])
        out.append(
            {
                "cause": str(reasons.get(f"reason_{r}_cause", [""])[0]),
                "feature": str(reasons[f"reason_{r}_feature"][0]),
                "name": labels.name(str(reasons[f"reason_{r}_feature"][0])),
                "value": float(reasons[f"reason_{r}_value"][0]),
                "shap": float(reasons[f"reason_{r}_shap"][0]),
                "zh": zh,
                "en": en,
            }
        )
    if not out and not bool(reasons.get("closure_concern", [True])[0]):
        lines.append(f"  {explain_core.NO_CONCERN[0]} / {explain_core.NO_CONCERN[1]}")
        for r in range(1, top_k + 1):
            en = str(reasons.get(f"protect_{r}_en", [""])[0])
            if en:
                lines.append(f"  - {reasons[f'protect_{r}_zh'][0]}\n    {en}")
    elif not out:
        lines.append("  (nothing the registry links to a closure cause raises this one's risk)")
    return out


def _story_advice(
    cfg: Config, model: _Model, x: np.ndarray, lines: list[str], snapshot: int
) -> dict[str, Any]:
    """The smallest feasible change that brings the borrower under the advice threshold,
    and the borrower's simulated world before and after it."""
    thr = float(cfg.explain.advice_threshold)
    bid = int(cfg.explain.borrower_id or 0)
    cap = _repay_capacity(catalog.Catalog.of(cfg), np.array([bid]), np.array([snapshot]))[0]
    xb = x[0].astype(np.float64)
    draw = advice_core.draw_size(
        cap, _typical_draw(xb, model.names), float(cfg.explain.advice_draw_share)
    )
    a = advice_core.advise(xb, model.names, model.prob, thr, draw=draw)
    if a.p_before < thr:
        lines.append(f"advice / 建议 (risk already under {thr:.0%}; keep it so):")
    elif a.achieved:
        lines.append(f"advice / 建议 (re-scored risk {a.p_after:.1%} < {thr:.0%}):")
    else:
        lines.append(
            f"advice / 建议 (no feasible change reaches {thr:.0%}; best re-scored risk {a.p_after:.1%}):"
        )
    for zh, en in zip(a.zh, a.en, strict=True):
        lines += [f"  - {zh}", f"    {en}"]
    for act, why in a.not_advised.items():
        lines.append(f"  ({act} not advised: {why})")
    for f, before, after in a.changes:
        lines.append(f"    {f}: {before:.4g} -> {after:.4g}")
    world = world_core.borrower_world(
        world_spec(cfg),
        int(cfg.explain.borrower_id or 0),
        snapshot,
        x[0],
        model.names,
        a.actions,
        a.changes,
        model.prob,
        int(cfg.explain.world_futures),
        _raw_borrowers(cfg),
        a.draw_size,
    )
    lines += world_core.story_lines(world)
    return {
        "world": world,
        "threshold": thr,
        "p_after": a.p_after,
        "achieved": a.achieved,
        "cost": a.cost,
        "actions": a.actions,
        "changes": a.changes,
        "zh": a.zh,
        "en": a.en,
    }


def _raw_borrowers(cfg: Config) -> pd.DataFrame:
    """The raw borrowers the world test checks its replayed world against."""
    cols = list(world_core.RAW_COLUMNS)
    return catalog.Catalog.of(cfg).read("borrowers", cols).to_pandas()


# ---- plots --------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib  # matplotlib: loaded only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: loaded only when a plot is drawn

    return plt


def _shap_plots(
    contrib: np.ndarray,
    X: np.ndarray,
    names: list[str],
    cat: catalog.Catalog,
    n_plot: int,
    seed: int,
    ranked: list[int],
    n_dependence: int,
    files: list[str] | None = None,
    levels: Callable[[str, Any], str] | None = None,
) -> list[Path]:
    """Summary plots labelled with ``names`` (what the reader knows), and dependence plots
    of the first ``n_dependence`` features of ``ranked`` (column positions), each in a file
    named after ``files[j]`` (the model's name, safe on any file system). ``levels``
    (feature, code) -> text labels a categorical column's codes with the table's own
    levels; each dependence plot's title gives the rows it shows."""
    plt = _plt()
    import shap  # shap: slow to import, needed only here

    cat.path("plots").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    idx = (
        np.sort(rng.choice(len(X), size=min(n_plot, len(X), 10_000), replace=False))
        if len(X)
        else np.zeros(0, dtype=int)
    )
    exp = shap.Explanation(
        values=contrib[idx, :-1], base_values=contrib[idx, -1], data=X[idx], feature_names=names
    )
    paths: list[Path] = []
    if len(idx) == 0:
        return paths
    for kind in ("bar", "beeswarm"):
        plt.figure()
        getattr(shap.plots, kind)(exp, max_display=15, show=False)
        path = cat.path("shap_plot", kind=kind)
        _save_fig(plt.gcf(), path)
        plt.close("all")
        paths.append(path)
    for j in ranked[:n_dependence]:
        plt.figure()
        # coloured by the feature SHAP's own search would pick (``color=exp``), found faster
        pick = explain_core.strongest_interaction(j, exp.values, X[idx])
        shap.plots.scatter(exp[:, j], color=exp[:, pick], show=False)
        _level_ticks(plt.gca(), X[idx, j], (files or names)[j], levels)
        plt.gca().set_title(f"{names[j]} ({len(idx):,} rows)", fontsize=9)
        path = cat.path("dependence_plot", feature=(files or names)[j])
        _save_fig(plt.gcf(), path)
        plt.close("all")
        paths.append(path)
    return paths


def _level_ticks(
    ax: Any, values: np.ndarray, feature: str, levels: Callable[[str, Any], str] | None
) -> None:
    """A categorical column's codes on the x axis written as its levels (a numeric
    column, whose values read as themselves, keeps its ticks)."""
    if levels is None:
        return
    codes = np.unique(values[np.isfinite(values)])
    texts = [levels(feature, c) for c in codes]
    numeric = all(t == levels("", c) for t, c in zip(texts, codes, strict=True))
    if numeric or len(codes) > 30:
        return
    ax.set_xticks(codes)
    ax.set_xticklabels([t[:28] for t in texts], rotation=35, ha="right", fontsize=6)


def _bar_plot(items: list[tuple[str, float]], path: Path, title: str) -> Path:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [k for k, _ in items][::-1]
    vals = [v for _, v in items][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(items) + 1))
    ax.barh(labels, vals, color="#3b7dd8")
    ax.set_xlabel(title)
    _save_fig(fig, path)
    plt.close(fig)
    return path


def _heatmap(conf: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    m = conf.to_numpy(dtype=float)
    rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 6))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(m.shape[1]), list(conf.columns), rotation=45, ha="right")
    ax.set_yticks(range(m.shape[0]), list(conf.index))
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    f"{int(m[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("first-ranked cause")
    ax.set_ylabel("true cause (simulator)")
    fig.colorbar(im, ax=ax, label="share of the true cause's closures")
    _save_fig(fig, path)
    plt.close(fig)
    return path


def _waterfall(
    phi: np.ndarray, x: np.ndarray, names: list[str], path: Path, shown: list[str] | None = None
) -> Path:
    """The one row's SHAP waterfall, labelled ``names`` and, when given, values ``shown``."""
    plt = _plt()
    import shap  # shap: slow to import, needed only here

    path.parent.mkdir(parents=True, exist_ok=True)
    exp = shap.Explanation(
        values=phi[:-1],
        base_values=float(phi[-1]),
        data=x,
        display_data=None if shown is None else np.asarray(shown, dtype=object),
        feature_names=names,
    )
    plt.figure()
    shap.plots.waterfall(exp, max_display=12, show=False)
    _save_fig(plt.gcf(), path)
    plt.close("all")
    return path


def _save_fig(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
