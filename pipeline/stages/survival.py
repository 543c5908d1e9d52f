"""Runner of the ``survival`` stage: closure-risk curves by horizon and cause, and the
explanation leaderboard.

Fits the discrete-time competing-risks model of :mod:`pipeline.core.survival` on the
training months (event-free months subsampled with weights), calibrates its any-closure
incidence month by month on the validation months, and evaluates it on the out-of-time
rows (``models/survival/evaluation.json``): time-dependent AUC, C-index, Brier score and
calibration error per horizon (``model.horizons``), the integrated Brier score, per-cause
incidence against Aalen-Johansen, and the 3-month figure beside the classifier on the same
rows. ``models/survival/reasons.parquet`` ranks each out-of-time row's causes by predicted
incidence at ``features.horizon`` months, with the features that raise the first one
(TreeSHAP of that cause's output). The leaderboard grades every explainer against the true
cause of the same out-of-time closures, beside the cause oracle on the same rows.
Off with ``model.survival=false``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.adapters import catalog, model_registry, serving
from pipeline.adapters.tracking import Tracker
from pipeline.base.causes import CAUSES
from pipeline.base.config import Config, idle_cores, physical_cores, split_snapshots
from pipeline.base.io import DataError, atomic_path, digest_of, file_digest
from pipeline.base.registry import BY_NAME
from pipeline.core import explain as explain_core
from pipeline.core import survival as core
from pipeline.core.evaluation import delong
from pipeline.core.metrics import expected_calibration_error
from pipeline.stages.common import Result, model_stamp, say, stamped

#: what the stage writes (removed when it is off)
OUTPUTS = ("survival_model", "survival_eval", "survival_reasons", "survival_plot", "survival_part")
#: rows per snapshot whose mean SHAP vector is the snapshot reference of one explainer
REFERENCE_ROWS = 5_000


@dataclass(frozen=True)
class SurvivalResult(Result):
    seconds: float = 0.0


def survival(cfg: Config, tracker: Tracker) -> SurvivalResult:
    if not bool(cfg.model.survival):
        return _switched_off(cfg)
    t0 = time.perf_counter()
    p = catalog.Catalog.of(cfg)
    booster, meta = catalog.load_model(p.models)
    if str(meta.get("mode", "simulator")) == "table":
        say("survival: a table has no closure months or causes; skipped")
        return SurvivalResult(skipped=True)
    names = list(meta["feature_names"])
    frame = p.read("features").to_pandas()
    missing = [c for c in ("borrower_id", "snapshot", "split", "label", *names) if c not in frame]
    if missing:
        raise DataError(f"{p.path('features')}: column(s) {', '.join(missing)} missing")
    close_month, close_class = _closures(p, frame.borrower_id.to_numpy())
    end = _split_ends(cfg, frame.split.to_numpy())
    time_, status, follow = core.event_of(frame.snapshot.to_numpy(), close_month, close_class, end)
    horizons = sorted({int(h) for h in cfg.model.horizons})
    K = max(horizons)
    seed = int(cfg.data.seed)
    split = frame.split.to_numpy()
    X = frame[names].to_numpy(dtype=np.float32)
    threads = int(cfg.model.num_threads) or physical_cores()

    va, oo = split == "valid", split == "oot"
    m = cfg.model
    fit_log: dict[str, Any] = {}
    model, pm_tr, pm_va, fit_seconds = _fit(cfg, X, time_, status, frame, names, K, fit_log)
    cal = core.fit_calibration(
        core.incidence(core.hazards(model, X[va], K, follow[va])),
        time_[va],
        status[va],
        follow[va],
    )
    cif = core.predicted_incidence(model, cal, X[oo])
    ev = core.evaluate(
        cif, time_[oo], status[oo], follow[oo], horizons, int(m.calibration_bins), seed=seed
    )
    oot = frame.loc[oo].reset_index(drop=True)
    ev["beside_classifier"] = _beside_classifier(
        p,
        booster,
        X[oo],
        cif,
        time_[oo],
        status[oo],
        follow[oo],
        int(cfg.features.horizon),
        int(m.calibration_bins),
    )
    ev["training"] = {
        "person_months_train": int(len(pm_tr.row)),
        "person_months_valid": int(len(pm_va.row)),
        "keep": float(m.survival_keep),
        "snapshot_step": int(m.survival_snapshot_step),
        "train_snapshots": fit_log["train_snapshots"],
        "learning_rate": float(m.survival_learning_rate),
        "patience": int(m.survival_patience),
        "rounds": int(fit_log["rounds_fitted"]),
        "best_iteration": int(model.best_iteration or model.current_iteration()),
        "censoring": "restriction: a horizon's figures use only the rows whose window "
        "it fully observes (administrative censoring at each split's last month)",
        "split_end_month": {
            s: int(end[split == s].max()) for s in ("train", "valid", "oot") if (split == s).any()
        },
    }
    ev["calibration"] = cal.to_dict()

    # ---- reasons from the cause model, and the leaderboard
    h = int(cfg.features.horizon)
    reasons, contrib_rows = _cause_reasons(cfg, model, oot, X[oo], cif, names, h, threads)
    ref = explain_core.reference_medians(meta, names)
    board = _leaderboard(cfg, p, booster, frame, oot, X, cif, names, h, threads, ref)
    ev["explainers"] = board

    stamp = model_stamp(p.models)
    # the explain stage's cause ranking came from the cause model this one replaces
    p.remove_derived("survival_model")
    p.write("survival_model", portable_model(model, int(m.survival_threads)))
    p.write("survival_eval", stamped(ev, stamp))
    p.write("survival_reasons", pa.Table.from_pandas(reasons, preserve_index=False))
    plot = _plot_curves(ev, p.path("survival_plot"))
    seconds = time.perf_counter() - t0
    part = _part(ev, horizons, fit_seconds, seconds)
    part["survival"]["fit_threads"] = int(fit_log["threads"])
    logged = _log_serving(cfg, tracker, p, names, ev, stamp)
    if logged is not None:
        part["survival"]["serving"] = logged
    metrics = {"survival_fit_seconds": fit_seconds, "survival_seconds": seconds}
    if ev["ibs"]["ibs"] is not None:
        metrics["survival_ibs"] = float(ev["ibs"]["ibs"])
    for t, rec in ev["td_auc"].items():
        if rec is not None:
            metrics[f"survival_td_auc_{t}"] = rec["auc"]
    tracker.log_metrics(metrics)
    for a in (p.path("survival_eval"), p.path("survival_reasons"), plot):
        tracker.log_artifact(a, "survival")
    say(_headline(ev, board, fit_seconds, seconds, len(pm_tr.row), contrib_rows, fit_log))
    return SurvivalResult(summary=part, seconds=seconds)


def _log_serving(
    cfg: Config,
    tracker: Tracker,
    p: catalog.Catalog,
    names: list[str],
    ev: dict[str, Any],
    stamp: str,
) -> dict[str, Any] | None:
    """With tracking on, the serving pyfunc logged again with the cause model beside the
    classifier, so that a request can ask for curves (``params.horizons``); it takes the
    champion alias when the holder serves this very classifier."""
    if not tracker.enabled:
        return None
    spec = core.spec_of_evaluation(ev, names, stamp)
    out = serving.log_serving_model(
        cfg,
        tracker,
        p.models,
        model_registry.registered_name(cfg),
        None,
        (p.path("survival_model"), spec),
    )
    if out is not None:
        say(
            f"survival: serving model logged with its curves ({out.get('registered')} "
            f"version {out.get('version', '?')}"
            + (f", alias {out['alias']})" if "alias" in out else ", no alias moved)")
        )
    return out


def _thinned(split: np.ndarray, snapshot: np.ndarray, step: int) -> np.ndarray:
    """``split`` with the training rows of all but every ``step``-th training snapshot
    (counted back from the last) marked ``"unused"``: the hazard model's training rows."""
    tr = split == "train"
    if step <= 1 or not tr.any():
        return split
    months = np.unique(snapshot[tr])[::-1][::step]
    out = split.astype(object)  # a copy
    out[tr & ~np.isin(snapshot, months)] = "unused"
    return out


def _fit(
    cfg: Config,
    X: np.ndarray,
    time_: np.ndarray,
    status: np.ndarray,
    frame: pd.DataFrame,
    names: list[str],
    K: int,
    log: dict[str, Any] | None = None,
) -> tuple[lgb.Booster, core.PersonMonths, core.PersonMonths, float]:
    """The hazard model fitted on the months of ``frame``'s training rows (every
    ``model.survival_snapshot_step``-th training snapshot), stopped early on validation
    months (``log`` receives the training snapshots and the rounds grown:
    :func:`pipeline.core.survival.fit`)."""
    seed = int(cfg.data.seed)
    snap = frame.snapshot.to_numpy()
    split = _thinned(frame.split.to_numpy(), snap, int(cfg.model.survival_snapshot_step))
    tr, va = split == "train", split == "valid"
    keep = float(cfg.model.survival_keep)
    pm_tr = core.person_months(time_[tr], status[tr], K, keep, seed)
    pm_va = core.person_months(time_[va], status[va], K, keep, seed + 1)
    m = cfg.model
    params = core.lgb_params(
        int(m.num_leaves),
        float(m.survival_learning_rate),
        int(m.min_child_samples),
        float(m.feature_fraction),
        float(m.bagging_fraction),
        int(m.bagging_freq),
        float(m.lambda_l2),
        int(m.max_bin),
        int(m.survival_threads) or idle_cores(),
        seed,
    )
    if log is not None:
        log["threads"] = int(params["num_threads"])
        log["train_snapshots"] = [int(v) for v in np.unique(snap[tr])]  # ascending
    t_fit = time.perf_counter()
    model = core.fit(
        X[tr],
        pm_tr,
        X[va],
        pm_va,
        names,
        params,
        int(m.survival_rounds),
        int(m.survival_patience),
        log,
    )
    return model, pm_tr, pm_va, time.perf_counter() - t_fit


def _switched_off(cfg: Config) -> SurvivalResult:
    """``model.survival=false``: the figures of an earlier run must not pass for this
    one's, nor the explain stage's cause ranking by the removed cause model."""
    cat = catalog.Catalog.of(cfg)
    cat.remove(*OUTPUTS)
    cat.remove_derived("survival_model")
    say("survival: off (model.survival=false)")
    return SurvivalResult(skipped=True)


def portable_model(model: lgb.Booster, setting: int) -> str:
    """The model's text with its thread count written as the configured ``setting``: the
    trees do not depend on the count (``deterministic=True``), so neither does the file
    when the count follows the machine's load (``model.survival_threads=0``)."""
    text = model.model_to_string()
    line = re.compile(r"^\[num_threads: -?\d+\]$", re.MULTILINE)
    if len(line.findall(text)) != 1:
        raise RuntimeError("the hazard model's text has no single num_threads line")
    return line.sub(f"[num_threads: {setting}]", text)


def _part(
    ev: dict[str, Any], horizons: list[int], fit_seconds: float, seconds: float
) -> dict[str, Any]:
    """The stage's part of the run summary (the leaderboard without its per-cause rows)."""
    return {
        "survival": {
            "horizons": horizons,
            "td_auc": ev["td_auc"],
            "ibs": ev["ibs"]["ibs"],
            "ibs_se": ev["ibs"]["se"],
            "ibs_months": ev["ibs"]["months"],
            "ece_by_horizon": ev["ece_by_horizon"],
            "beside_classifier": ev["beside_classifier"],
            "fit_seconds": fit_seconds,
            "seconds": seconds,
        },
        "explainers": [{k: v for k, v in e.items() if k != "by_cause"} for e in ev["explainers"]],
    }


# ---- inputs ----------------------------------------------------------------------------


def _closures(p: catalog.Catalog, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first closure month and class (a month past every snapshot and class 0
    for accounts never closed), from the platform's closure events."""
    ev = p.read("platform_events", ["borrower_id", "month", "event", "cause"])
    ev = ev.filter(pc.equal(ev.column("event"), "closure"))
    bid = ev.column("borrower_id").to_numpy()
    month = ev.column("month").to_numpy().astype(np.int64)
    cause = np.asarray(ev.column("cause").to_pylist(), dtype=object)
    lookup = {c: i for i, c in enumerate(core.CLASSES)}
    bad = sorted({str(c) for c in cause} - set(core.CLASSES[1:]))
    if bad:
        raise DataError(
            f"{p.path('platform_events')}: closure cause(s) {', '.join(bad)} are not among "
            f"{', '.join(core.CLASSES[1:])}"
        )
    order = np.lexsort((month, bid))
    first = order[np.r_[True, bid[order][1:] != bid[order][:-1]]] if len(order) else order
    uniq = bid[first]
    pos = np.searchsorted(uniq, ids)
    pos = np.clip(pos, 0, max(len(uniq) - 1, 0))
    hit = (uniq[pos] == ids) if len(uniq) else np.zeros(len(ids), dtype=bool)
    never = np.iinfo(np.int32).max
    cm = np.where(hit, month[first][pos] if len(uniq) else never, never)
    cls = (
        np.array([lookup[c] for c in cause[first]], dtype=np.int64)
        if len(first)
        else np.zeros(0, np.int64)
    )
    cc = np.where(hit, cls[pos] if len(uniq) else 0, 0)
    return cm.astype(np.int64), cc.astype(np.int64)


def _split_ends(cfg: Config, split: np.ndarray) -> np.ndarray:
    """The last month each row's split may observe: the next split's first snapshot (its
    label months start after it), the world's last month for the out-of-time rows."""
    snaps = split_snapshots(cfg.features)
    last = int(cfg.data.n_months) - 1
    first_valid = snaps["valid"][0] if snaps["valid"] else last
    first_oot = snaps["oot"][0] if snaps["oot"] else last
    ends = {"train": first_valid, "valid": first_oot, "oot": last}
    return np.array([ends[s] for s in split], dtype=np.int64)


# ---- beside today's classifier -----------------------------------------------------------


def _beside_classifier(
    p: catalog.Catalog,
    booster: lgb.Booster,
    X: np.ndarray,
    cif: np.ndarray,
    time_: np.ndarray,
    status: np.ndarray,
    follow: np.ndarray,
    h: int,
    bins: int,
) -> dict[str, Any] | None:
    """The any-closure incidence at ``h`` months and the classifier's calibrated
    probability on the same out-of-time rows (those observing ``h`` months): AUC with the
    paired DeLong standard error of their difference, Brier score, ECE."""
    if h > cif.shape[1]:
        return None
    obs = core.observed(follow, h)
    y = core.event_by(time_, status, h)[obs]
    if y.sum() < 2 or len(y) - y.sum() < 2:
        return None
    calibrator = catalog.load_calibrator(p.models)
    clf = np.asarray(calibrator.apply(np.asarray(booster.predict(X[obs]))), dtype=np.float64)
    surv = core.any_closure(cif)[obs, h - 1]
    auc, cov = delong(y, [surv, clf])
    out: dict[str, Any] = {"horizon": h, "n": int(len(y)), "events": int(y.sum())}
    for i, (name, s) in enumerate((("cause_model", surv), ("classifier", clf))):
        out[name] = {
            "auc": float(auc[i]),
            "auc_se": float(np.sqrt(cov[i, i])),
            "brier": core.brier(s, y),
            "ece": expected_calibration_error(y, s, bins),
        }
    out["auc_difference"] = float(auc[0] - auc[1])
    out["auc_difference_se"] = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    return out


# ---- reasons from the cause model ----------------------------------------------------


def _cause_shap(
    model: lgb.Booster, X: np.ndarray, cls: np.ndarray, h: int, n_names: int, threads: int = 0
) -> np.ndarray:
    """TreeSHAP of each row's class ``cls`` (its raw output) averaged over the months
    ahead 1..h (the SHAP values of the mean raw output): ``(n, p + 2)``, last column the
    expected value, the one before it the month ahead's share. Each class's trees are
    explained on its own rows only (:func:`~pipeline.core.survival.class_booster`): the
    same values as explaining every class of every row and keeping the row's own."""
    out = np.empty((len(X), n_names + 2))
    it = model.best_iteration or None
    for c in np.unique(cls):
        rows = np.flatnonzero(cls == c)
        one = core.class_booster(model, int(c), it)
        acc = None
        for k in range(1, h + 1):
            v = np.asarray(
                one.predict(
                    core.design(X[rows], k),
                    pred_contrib=True,
                    num_threads=threads or physical_cores(),
                ),
                dtype=np.float64,
            ).reshape(len(rows), n_names + 2)
            acc = v if acc is None else acc + v
        assert acc is not None
        out[rows] = acc / h
    return out


def _cause_reasons(
    cfg: Config,
    model: lgb.Booster,
    oot: pd.DataFrame,
    X: np.ndarray,
    cif: np.ndarray,
    names: list[str],
    h: int,
    threads: int,
) -> tuple[pd.DataFrame, int]:
    """Per out-of-time row (at most ``explain.max_rows``, seeded): the causes ranked by
    predicted incidence at ``h`` months; for a seeded sample of ``model.survival_shap_rows``
    of them, the three features that raise the first cause's output most (TreeSHAP; the
    other rows' feature columns are empty, their SHAP NaN). Returns the table and the
    number of rows with features."""
    n = len(oot)
    pick = np.arange(n)
    if n > int(cfg.explain.max_rows):
        rng = np.random.default_rng(int(cfg.data.seed))
        pick = np.sort(rng.choice(n, size=int(cfg.explain.max_rows), replace=False))
    at_h = cif[pick, min(h, cif.shape[1]) - 1]
    order = core.cause_ranking(at_h)
    cols: dict[str, Any] = {
        "borrower_id": oot.borrower_id.to_numpy()[pick],
        "snapshot": oot.snapshot.to_numpy()[pick],
    }
    F = core.any_closure(cif)[pick]
    for t in sorted({int(x) for x in cfg.model.horizons}):
        cols[f"p_any_{t}m"] = F[:, t - 1]
    for j, c in enumerate(CAUSES):
        cols[f"incidence_{c}"] = at_h[:, j]
    causes = np.asarray(CAUSES, dtype=object)
    for r in range(3):
        cols[f"cause_{r + 1}"] = causes[order[:, r]]
        cols[f"cause_{r + 1}_incidence"] = at_h[np.arange(len(pick)), order[:, r]]
    # positions (in ``pick``) of the rows that get their features
    at = np.arange(len(pick))
    k = int(cfg.model.survival_shap_rows)
    if len(at) > k:
        rng = np.random.default_rng([int(cfg.data.seed), 32])
        at = np.sort(rng.choice(len(at), size=k, replace=False))
    f = np.full((len(pick), 3), "", dtype=object)
    v = np.full((len(pick), 3), np.nan)
    step = 20_000
    for lo in range(0, len(at), step):
        pos = at[lo : lo + step]
        top_class = order[pos, 0] + 1  # class index of the first cause
        mine = _cause_shap(model, X[pick[pos]], top_class, h, len(names), threads)[:, : len(names)]
        f[pos], v[pos] = core.top_features(mine, names, 3)
    for r in range(3):
        cols[f"cause_1_feature_{r + 1}"] = f[:, r].astype(str)
        cols[f"cause_1_feature_{r + 1}_shap"] = v[:, r]
    return pd.DataFrame(cols), len(at)


# ---- the leaderboard ------------------------------------------------------------------


def _leaderboard(
    cfg: Config,
    p: catalog.Catalog,
    booster: lgb.Booster,
    frame: pd.DataFrame,
    oot: pd.DataFrame,
    X: np.ndarray,
    cif: np.ndarray,
    names: list[str],
    h: int,
    threads: int,
    reference: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Every explainer graded against the true cause of the same out-of-time closures.

    The SHAP explainers follow the explain stage's reason rule with the model's own
    training medians (``reference``), so ``shap_learned_weights`` names what the shipped
    reasons name, except that no row is left without a reason for falling under the
    lowest tier cut (the explain stage's paired figure counts those rows as misses).

    ``top1``/``top3``/``n`` are on the closures that have oracle futures, beside the cause
    oracle's ``ceiling_top1`` on the very same rows (``all_*``: on every out-of-time
    closure). Standard errors are binomial; ``gap_se`` is the paired standard error of
    the explainer's top-1 minus the ceiling's."""
    split = frame.split.to_numpy()
    closed = oot.label.to_numpy() == 1
    if not closed.any():
        return []
    rows = oot.loc[closed].reset_index(drop=True)
    truth = rows.label_cause.to_numpy().astype(object)
    Xo = X[split == "oot"]
    Xc = Xo[closed]
    contrib, _ = explain_core.contributions(booster, Xc, threads)
    W_reg = explain_core.attribution_matrix(names, "registry")
    W_learned = _learned_weights(cfg, p, booster, frame, X, names, threads)
    # the snapshot reference: mean SHAP of (a sample of) each out-of-time snapshot's rows
    shift = _snapshot_shift(cfg, booster, oot, Xo, rows.snapshot.to_numpy(), threads, len(names))
    explainers: dict[str, dict[str, np.ndarray]] = {
        "shap_registry": explain_core.reason_codes(contrib, Xc, names, 3, W_reg, None, reference),
    }
    if W_learned is not None:
        explainers["shap_learned_weights"] = explain_core.reason_codes(
            contrib, Xc, names, 3, W_learned, None, reference
        )
    explainers["shap_registry_snapshot_reference"] = explain_core.reason_codes(
        contrib, Xc, names, 3, W_reg, shift, reference
    )
    order = core.cause_ranking(cif[closed, min(h, cif.shape[1]) - 1])
    explainers["cause_model"] = core.ranked_reasons(order)
    # a floor: every closure named by the training split's cause frequencies
    tr_causes = frame.label_cause.to_numpy()[(split == "train") & (frame.label.to_numpy() == 1)]
    freq = np.array([(tr_causes == c).sum() for c in CAUSES], dtype=np.float64)
    prior = np.tile(np.argsort(-freq, kind="stable"), (len(rows), 1))
    explainers["training_cause_prior"] = core.ranked_reasons(prior)

    oracle = p.read("oracle").to_pandas() if p.exists("oracle") else None
    paired = _paired_rows(rows, oracle)
    return core.leaderboard(explainers, truth, paired)


def _paired_rows(
    rows: pd.DataFrame, oracle: pd.DataFrame | None
) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """The closures with oracle futures (positions in ``rows``) and the oracle's ranking
    of their causes (the ceiling)."""
    if oracle is None or len(oracle) == 0:
        return None
    on = ["borrower_id", "snapshot"]
    full = [f"f_{c}" for c in CAUSES]
    frame = rows[on].reset_index(drop=True).assign(_row=np.arange(len(rows)))
    m = frame.merge(oracle[[*on, *full]], on=on, how="inner").sort_values("_row", kind="stable")
    if len(m) == 0:
        return None
    prior = oracle[full].to_numpy(dtype=np.float64).mean(axis=0)
    order = explain_core.ceiling_ranking(m[full].to_numpy(dtype=np.float64), prior)
    return m._row.to_numpy(), core.ranked_reasons(order)


def _learned_weights(
    cfg: Config,
    p: catalog.Catalog,
    booster: lgb.Booster,
    frame: pd.DataFrame,
    X: np.ndarray,
    names: list[str],
    threads: int,
) -> np.ndarray | None:
    """The learned feature -> cause weights the explain stage saved for this model, else
    learned here the same way on training-split closures; None when none can be learned.

    The saved file is read only under the explain stage's key (the model's digest, the
    learning settings, the registry's links), so weights of another model are never
    graded as this one's."""
    e = cfg.explain
    key = {
        "model": file_digest(p.path("model")),
        "support": str(e.learn_support),
        "rows": int(e.learn_rows),
        "seed": int(cfg.data.seed),
        "names": names,
        "links": {n: list(BY_NAME[n].causes) for n in names if n in BY_NAME},
    }
    saved = catalog.read_cause_weights(p.path("cause_weights"), names, key=digest_of(key))
    if saved is not None:
        return saved
    closed = np.flatnonzero((frame.split.to_numpy() == "train") & (frame.label.to_numpy() == 1))
    if len(closed) == 0:
        return None
    if len(closed) > int(cfg.explain.learn_rows):
        rng = np.random.default_rng(int(cfg.data.seed))
        closed = np.sort(rng.choice(closed, size=int(cfg.explain.learn_rows), replace=False))
    contrib, _ = explain_core.contributions(booster, X[closed], threads)
    try:
        fit = explain_core.fit_cause_weights(
            contrib[:, :-1],
            frame.label_cause.to_numpy()[closed],
            names,
            str(cfg.explain.learn_support),
        )
    except ValueError as exc:
        say(f"survival: cannot learn cause weights ({exc}); that explainer is left out")
        return None
    return fit.W


def _snapshot_shift(
    cfg: Config,
    booster: lgb.Booster,
    oot: pd.DataFrame,
    Xo: np.ndarray,
    snaps_of_rows: np.ndarray,
    threads: int,
    p_feat: int,
) -> np.ndarray:
    """Per closure, the mean SHAP vector of (a seeded sample of) its snapshot's rows."""
    shift = np.zeros((len(snaps_of_rows), p_feat))
    snap_all = oot.snapshot.to_numpy()
    rng = np.random.default_rng(int(cfg.data.seed))
    for s in np.unique(snaps_of_rows):
        at = np.flatnonzero(snap_all == s)
        if len(at) > REFERENCE_ROWS:
            at = np.sort(rng.choice(at, size=REFERENCE_ROWS, replace=False))
        c, _ = explain_core.contributions(booster, Xo[at], threads)
        shift[snaps_of_rows == s] = c[:, :p_feat].mean(axis=0)
    return shift


# ---- plot and printing -----------------------------------------------------------------


def _plot_curves(ev: dict[str, Any], path: Path) -> Path:
    import matplotlib  # matplotlib: loaded only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: loaded only when a plot is drawn

    pred, obs = ev["predicted_incidence"], ev["observed_incidence"]
    K = len(next(iter(pred.values())))
    months = np.arange(1, K + 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    any_pred = np.sum([pred[c] for c in CAUSES], axis=0)
    any_obs = np.array(
        [
            np.nan if any(obs[c][i] is None for c in CAUSES) else sum(obs[c][i] for c in CAUSES)
            for i in range(K)
        ]
    )
    ax = axes[0]
    ax.plot(months, any_pred, "-o", label="predicted (mean over rows)")
    ax.plot(months, any_obs, "s--", label="observed (Aalen-Johansen)")
    ax.set_xlabel("months after the snapshot")
    ax.set_ylabel("cumulative incidence")
    ax.set_title("any never-overdue closure, out-of-time rows")
    ax.legend()
    ax = axes[1]
    for i, c in enumerate(CAUSES):
        color = f"C{i}"
        ax.plot(months, pred[c], "-", color=color, label=c)
        ax.plot(months, [np.nan if v is None else v for v in obs[c]], "o", color=color, ms=3)
    ax.set_xlabel("months after the snapshot")
    ax.set_title("by cause: lines predicted, dots observed")
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _fmt(v: Any, se: Any = None, pct: bool = False) -> str:
    if v is None:
        return "-"
    s = f"{v:.1%}" if pct else f"{v:.4f}"
    if se is not None and np.isfinite(se):
        s += f" ± {se:.1%}" if pct else f" ± {se:.4f}"
    return s


def _headline(
    ev: dict[str, Any],
    board: list[dict[str, Any]],
    fit_s: float,
    total_s: float,
    n_pm: int,
    n_reasons: int,
    fit_log: dict[str, Any],
) -> str:
    lines = [
        f"survival: competing-risks model on {n_pm:,} training person-months fitted on "
        f"{fit_log['threads']} thread(s) in {fit_s:.1f}s (stage {total_s:.1f}s); out-of-time "
        "figures by horizon:"
    ]
    for t, rec in ev["by_horizon"].items():
        if "td_auc" in rec:
            lines.append(
                f"  {t:>2} months: td-AUC {_fmt(rec['td_auc'], rec['td_auc_se'])}, C-index "
                f"{_fmt(rec['c_index'], rec['c_index_se'])}, Brier {_fmt(rec['brier'], rec['brier_se'])}, "
                f"ECE {_fmt(rec['ece'], rec['ece_se'])} ({rec['n']:,} rows, {rec['events']:,} closures)"
            )
        else:
            lines.append(f"  {t:>2} months: no figure ({rec['why_none']})")
    ibs = ev["ibs"]
    if ibs["ibs"] is not None:
        lines.append(
            f"  integrated Brier score {_fmt(ibs['ibs'], ibs['se'])} over months "
            f"{ibs['months'][0]}-{ibs['months'][-1]} (the months some row observes; "
            f"{min(ibs['n_by_month']):,}-{max(ibs['n_by_month']):,} rows a month)"
        )
    b = ev.get("beside_classifier")
    if b:
        lines.append(
            f"  {b['horizon']}-month any closure on the same {b['n']:,} rows: cause model AUC "
            f"{_fmt(b['cause_model']['auc'], b['cause_model']['auc_se'])}, classifier "
            f"{_fmt(b['classifier']['auc'], b['classifier']['auc_se'])} (difference "
            f"{_fmt(b['auc_difference'], b['auc_difference_se'])})"
        )
    if board:
        lines.append(
            "  explanation leaderboard (every explainer on the same closures; the SHAP rows "
            "without the explain stage's lowest-tier floor, which leaves low-risk rows "
            f"without a reason; cause-model reasons written with their features for "
            f"{n_reasons:,} sampled rows):"
        )
        for e in board:
            ceil = (
                f", ceiling {_fmt(e['ceiling_top1'], e.get('ceiling_top1_se'), True)}"
                if e.get("ceiling_top1") is not None
                else ""
            )
            lines.append(
                f"    {e['name']:<34} top-1 {_fmt(e['top1'], e['top1_se'], True)}, top-3 "
                f"{_fmt(e['top3'], e['top3_se'], True)} on {e['n']:,} closures{ceil}"
            )
    return "\n".join(lines)
