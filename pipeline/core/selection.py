"""Model selection for a table: scorecard, tuned LightGBM or their blend, by cross-validation.

Candidates, simplest first (:data:`ORDER`):

* ``scorecard``: logistic regression on weight-of-evidence bins
  (:class:`pipeline.core.baselines.Scorecard`);
* ``lightgbm``: LightGBM whose parameters a small Optuna search picks (:func:`tune`),
  on the training part of each fold only: an inner 3-fold CV on those rows scores
  every trial, so the evaluation fold never influences the parameters or the number
  of trees;
* ``blend``: a logistic regression on the two models' log-odds (stacking), its weights
  fitted on out-of-fold scores of both models within the training part of each fold
  (the better model alone if the other one's weight comes out non-positive).

All three are scored on the same repeated stratified k-fold splits (5x2 by default).
The winner is the simplest candidate whose mean AUC is within one standard error of
the best mean (standard error = standard deviation of the fold AUCs / sqrt(folds)).

The search has a deterministic number of trials for the table's size (:func:`budget`)
and a time limit that only stops it early on a machine slower than planned; when the
limit cuts a search short the result says so, as the outcome may then vary between
runs. Pure core: arrays and parameters in, figures and fitted models out.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RepeatedStratifiedKFold

from pipeline.core.baselines import Scorecard
from pipeline.core.metrics import binary_metrics

ORDER = ("scorecard", "lightgbm", "blend")  # simplest first
INNER_FOLDS = 3
ONE_THREAD_ROWS = 10_000
N_STARTS = 2  # trials run at fixed starting points before the search proper
# a second starting point beside the configured parameters: few, shallow, randomised trees
SHALLOW = {
    "learning_rate": 0.03,
    "num_leaves": 8,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "lambda_l2": 1.0,
    "extra_trees": True,
    "max_cat_to_onehot": 32,  # one-hot category splits: many-vs-many ones overfit small tables
}
_EPS = 1e-7


@dataclass(frozen=True)
class Budget:
    """How much searching one selection may do."""

    seconds: float  # time limit of all searches together
    trials: int  # trials of each search (the same on every machine)
    tune_rows: int  # each search sees at most this many rows (stratified sample)

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "trials": self.trials, "tune_rows": self.tune_rows}


def budget(n_rows: int, tune_seconds: float = 0.0) -> Budget:
    """The search budget for a table of ``n_rows`` rows (1,000 to 1,000,000 and beyond).

    A small table gets fewer trials: its inner scores are noisy, so many trials mostly
    find a lucky one. The number grows slowly with the rows (15 at 1,000 rows, 21 at a
    million), each search working on a stratified sample of at most 20,000 rows, so a
    trial costs about the same from 20,000 rows up. ``tune_seconds`` > 0 sets the time
    limit of all searches together; 0 scales it with the rows, from one minute at 1,000
    rows to five from about 125,000 rows on.
    """
    n = max(int(n_rows), 1)
    decades = math.log10(max(n, 1000) / 1000)  # 0 at 1,000 rows, 3 at 1,000,000
    trials = int(round(15.0 + 2.0 * decades))
    seconds = float(tune_seconds) if tune_seconds > 0 else min(300.0, 60.0 * 10 ** (decades / 3))
    return Budget(seconds=seconds, trials=trials, tune_rows=20_000)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Blend:
    """Stacked logistic regression on the two models' log-odds: per row, three numbers."""

    intercept: float = 0.0
    scorecard: float = 0.5
    lightgbm: float = 0.5

    def predict(self, p_scorecard: np.ndarray, p_lightgbm: np.ndarray) -> np.ndarray:
        z = self.intercept + self.scorecard * _logit(p_scorecard)
        z = z + self.lightgbm * _logit(p_lightgbm)
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, float]:
        return {"intercept": self.intercept, "scorecard": self.scorecard, "lightgbm": self.lightgbm}


def fit_blend(y: np.ndarray, p_scorecard: np.ndarray, p_lightgbm: np.ndarray) -> Blend:
    """Weights from out-of-fold predictions.

    A model whose weight comes out <= 0 adds nothing the other one lacks: the blend is
    then the other model alone (the plain mean of log-odds if both do).
    """
    Z = np.column_stack([_logit(p_scorecard), _logit(p_lightgbm)])
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(Z, np.asarray(y).astype(int))
    a, b = (float(v) for v in lr.coef_[0])
    if a > 0 and b > 0:
        return Blend(float(lr.intercept_[0]), a, b)
    if a > 0:
        return Blend(0.0, 1.0, 0.0)
    if b > 0:
        return Blend(0.0, 0.0, 1.0)
    return Blend()


def blend(p_scorecard: np.ndarray, p_lightgbm: np.ndarray) -> np.ndarray:
    """Probability from the mean of the two models' log-odds (per row, no fitting)."""
    return Blend().predict(p_scorecard, p_lightgbm)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(binary_metrics(y, p)["auc"])


def _stratified_sample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted row indices of about ``n`` rows keeping the class shares."""
    if len(y) <= n:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        keep.append(rng.permutation(idx)[: max(1, int(round(n * len(idx) / len(y))))])
    return np.sort(np.concatenate(keep))


# --------------------------------------------------------------------------- tuning


@dataclass
class Tuned:
    """Parameters and tree count chosen by one search."""

    params: dict[str, Any]
    rounds: int
    inner_auc: float
    trials: int
    seconds: float
    cut_short: bool  # the time limit ended the search before its trials were done
    fit_rows: int = 0  # rows each inner fit saw
    threads: int = 1  # configured threads, for fits on more rows than the search saw
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # rows searched
    inner: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # their folds
    oof: np.ndarray = field(default_factory=lambda: np.zeros(0))  # out-of-fold predictions


def _bounds(n_fit: int) -> tuple[int, int, int]:
    """Size-scaled limits: smallest and largest leaf size, most leaves per tree.

    On a small table a leaf must hold a few percent of the rows and a tree stays
    small, or the search rewards trees that memorise the noise of its inner folds.
    """
    lo_leaf = int(min(100, max(5, n_fit // 20)))
    hi_leaf = int(max(2 * lo_leaf, min(1_000, n_fit // 8)))
    hi_leaves = int(min(64, max(8, n_fit // 20)))
    return lo_leaf, hi_leaf, hi_leaves


def _space(trial: Any, n_fit: int, has_categorical: bool) -> dict[str, Any]:
    """One point of the search space (small: the parameters that matter most)."""
    lo_leaf, hi_leaf, hi_leaves = _bounds(n_fit)
    out = {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.1, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, hi_leaves, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", lo_leaf, hi_leaf, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.3, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 100.0, log=True),
        # random split points: a strong regulariser on small, noisy tables
        "extra_trees": trial.suggest_categorical("extra_trees", [False, True]),
    }
    if has_categorical:
        out["cat_smooth"] = trial.suggest_float("cat_smooth", 5.0, 100.0, log=True)
        out["max_cat_to_onehot"] = trial.suggest_categorical("max_cat_to_onehot", [4, 32])
    return out


def _start_point(base: dict[str, Any], n_fit: int, has_categorical: bool) -> dict[str, Any]:
    """The configured parameters, clipped into the space: the search's first trial."""
    lo_leaf, hi_leaf, hi_leaves = _bounds(n_fit)
    out = {
        "learning_rate": float(np.clip(base.get("learning_rate", 0.05), 0.01, 0.1)),
        "num_leaves": int(np.clip(base.get("num_leaves", 31), 4, hi_leaves)),
        "min_data_in_leaf": int(np.clip(base.get("min_data_in_leaf", 20), lo_leaf, hi_leaf)),
        "feature_fraction": float(np.clip(base.get("feature_fraction", 0.8), 0.3, 1.0)),
        "bagging_fraction": float(np.clip(base.get("bagging_fraction", 0.8), 0.5, 1.0)),
        "lambda_l2": float(np.clip(base.get("lambda_l2", 1.0), 1e-3, 100.0)),
        "extra_trees": bool(base.get("extra_trees", False)),
    }
    if has_categorical:
        out["cat_smooth"] = 10.0
        out["max_cat_to_onehot"] = int(base.get("max_cat_to_onehot", 4))
    return out


def _threads(n_rows: int, configured: Any) -> int:
    """One thread below :data:`ONE_THREAD_ROWS` rows (faster there, and reproducible)."""
    return 1 if n_rows < ONE_THREAD_ROWS else int(configured or 1)


def lgb_matrix(X: np.ndarray, names: list[str], categorical: list[str]) -> np.ndarray:
    """``X`` with negative (missing) category codes as NaN, which is how LightGBM reads them."""
    cols = [j for j, n in enumerate(names) if n in categorical]
    if not cols:
        return X
    out = np.array(X, dtype=np.float32, copy=True)
    part = out[:, cols]
    part[part < 0] = np.nan
    out[:, cols] = part
    return out


def _patience(params: dict[str, Any], early_stopping_rounds: int) -> int:
    """Early-stopping patience, longer at small learning rates (a slow curve is not flat)."""
    return max(int(early_stopping_rounds), int(2.0 / float(params["learning_rate"])))


def _dataset(X: np.ndarray, y: np.ndarray, names: list[str], categorical: list[str]) -> Any:
    cat = [c for c in categorical if c in names]
    return lgb.Dataset(
        lgb_matrix(X, names, cat),
        label=y,
        feature_name=names,
        categorical_feature=cat or "auto",
        params={"feature_pre_filter": False, "verbosity": -1},
        free_raw_data=False,
    )


def tune(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    categorical: list[str],
    base_params: dict[str, Any],
    *,
    trials: int,
    seconds: float,
    seed: int,
    n_estimators: int,
    early_stopping_rounds: int,
    max_rows: int = 20_000,
) -> Tuned:
    """Optuna (TPE, seeded) over :func:`_space`, each trial scored by inner 3-fold CV AUC.

    The first trial is the configured parameters, so the search never ends worse than
    them on its own rows. Early stopping picks the tree count on the inner folds.
    """
    # optuna takes over two seconds to import: only a table run's selection needs it
    import optuna

    t0 = time.perf_counter()
    rows = _stratified_sample(y, max_rows, seed)
    dset = _dataset(X[rows], y[rows], names, categorical)
    # small tables: more inner folds, so an inner fit sees nearly as many rows as the
    # model the search is for (a 3-fold fit on a few hundred rows misjudges it)
    k_inner = INNER_FOLDS if len(rows) >= 5_000 else 5
    inner = list(
        RepeatedStratifiedKFold(n_splits=k_inner, n_repeats=1, random_state=seed).split(
            rows, y[rows]
        )
    )
    n_fit = int(len(rows) * (k_inner - 1) / k_inner)
    has_cat = any(c in names for c in categorical)
    fixed = {
        k: v
        for k, v in base_params.items()
        if k not in ("monotone_constraints", "monotone_constraints_method") or v
    }
    # log loss (smooth) stops the trees; the trial is scored by AUC at that point
    fixed.update(
        metric=["binary_logloss", "auc"], bagging_freq=1, verbosity=-1, feature_pre_filter=False
    )
    fixed["num_threads"] = _threads(len(rows), base_params.get("num_threads"))

    def objective(trial: Any) -> float:
        params = {**fixed, **_space(trial, n_fit, has_cat)}
        res = lgb.cv(
            params,
            dset,
            num_boost_round=n_estimators,
            folds=inner,
            callbacks=[
                lgb.early_stopping(
                    _patience(params, early_stopping_rounds), first_metric_only=True, verbose=False
                )
            ],
        )
        curve = np.asarray(res["valid auc-mean"], dtype=float)
        spread = np.asarray(res["valid auc-stdv"], dtype=float)
        trial.set_user_attr("rounds", len(curve))
        trial.set_user_attr("se", float(spread[-1]) / math.sqrt(len(inner)))
        return float(curve[-1])

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks enqueue_trial experimental
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, trials // 3))
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.enqueue_trial(_start_point(base_params, n_fit, has_cat))
            study.enqueue_trial(_start_point(SHALLOW, n_fit, has_cat))
            study.optimize(objective, n_trials=trials, timeout=max(seconds, 1e-3))
    finally:
        optuna.logging.set_verbosity(level)
    done_trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = _one_se_choice(done_trials)
    done = len(done_trials)
    chosen = {**fixed, **_space_values(best.params, has_cat)}
    rounds = int(best.user_attrs["rounds"])
    return Tuned(
        params=chosen,
        rounds=rounds,
        inner_auc=float(best.value),
        trials=done,
        seconds=time.perf_counter() - t0,
        cut_short=done < trials,
        fit_rows=n_fit,
        threads=int(base_params.get("num_threads") or 1),
        rows=rows,
        inner=inner,
        oof=_out_of_fold(chosen, rounds, dset, inner),
    )


def _out_of_fold(
    params: dict[str, Any], rounds: int, dset: Any, inner: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Each searched row scored by the inner model that did not see it."""
    res = lgb.cv(params, dset, num_boost_round=rounds, folds=inner, return_cvbooster=True)
    X = dset.get_data()
    out = np.zeros(X.shape[0])
    cvb = res["cvbooster"]
    assert isinstance(cvb, lgb.CVBooster)
    for booster, (_, held) in zip(cvb.boosters, inner, strict=True):
        out[held] = booster.predict(X[held])
    return out


def _one_se_choice(trials: list[Any]) -> Any:
    """The best trial, unless a starting point is within one standard error of it.

    On a small table the best of many noisy inner scores is mostly luck; the starting
    points (the first trials) are kept unless the search clearly beats them.
    """
    best = max(trials, key=lambda t: t.value)
    starts = [t for t in trials if t.number < N_STARTS]
    if not starts:
        return best
    start = max(starts, key=lambda t: t.value)
    return start if start.value >= best.value - best.user_attrs["se"] else best


def _space_values(found: dict[str, Any], has_categorical: bool) -> dict[str, Any]:
    keys = ["learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction"]
    keys += ["bagging_fraction", "lambda_l2", "extra_trees"] + (
        ["cat_smooth", "max_cat_to_onehot"] if has_categorical else []
    )
    return {k: found[k] for k in keys}


def fit_lightgbm(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    categorical: list[str],
    tuned: Tuned,
    seed: int,
) -> lgb.Booster:
    """LightGBM on all of ``X`` with the tuned parameters and tree count.

    The tree count found on inner folds of (2/3 of) the tuning rows is scaled up in
    proportion to the rows here, as more rows support more trees at a learning rate.
    """
    scale = min(1.5, max(1.0, (len(y) / max(tuned.fit_rows, 1)) ** 0.25))
    rounds = max(1, int(round(tuned.rounds * scale)))
    params = {**tuned.params, "seed": seed}
    params["num_threads"] = _threads(len(y), tuned.threads)
    return lgb.train(params, _dataset(X, y, names, categorical), num_boost_round=rounds)


# --------------------------------------------------------------------------- selection


@dataclass
class Candidate:
    name: str
    aucs: list[float] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def auc_mean(self) -> float:
        return float(np.mean(self.aucs))

    @property
    def auc_std(self) -> float:
        return float(np.std(self.aucs))

    @property
    def auc_se(self) -> float:
        return self.auc_std / math.sqrt(len(self.aucs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "auc_mean": self.auc_mean,
            "auc_std": self.auc_std,
            "auc_se": self.auc_se,
            "seconds": self.seconds,
            "auc_folds": [float(a) for a in self.aucs],
            **self.extra,
        }


@dataclass
class Selection:
    folds: int
    repeats: int
    candidates: list[Candidate]
    selected: str
    reason: str
    budget: Budget
    seconds: float

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        chosen = self.candidate(self.selected)
        return {
            "scheme": f"stratified {self.folds}-fold x {self.repeats} repeats",
            "selected": {
                "name": chosen.name,
                "auc_mean": chosen.auc_mean,
                "auc_std": chosen.auc_std,
            },
            "candidates": [c.to_dict() for c in self.candidates],
            "reason": self.reason,
            "rule": "simplest candidate within one standard error of the best mean AUC "
            f"(order: {' < '.join(ORDER)})",
            "budget": self.budget.to_dict(),
            "seconds": self.seconds,
        }


def choose(candidates: list[Candidate]) -> tuple[str, str]:
    """The simplest candidate within one standard error of the best, and why."""
    best = max(candidates, key=lambda c: c.auc_mean)
    bar = best.auc_mean - best.auc_se
    rank = {n: i for i, n in enumerate(ORDER)}
    for c in sorted(candidates, key=lambda c: rank.get(c.name, len(ORDER))):
        if c.auc_mean >= bar:
            if c is best:
                why = f"{c.name} has the best mean AUC ({c.auc_mean:.4f})"
                simpler = [d for d in candidates if rank[d.name] < rank[c.name]]
                if simpler:
                    why += (
                        "; every simpler candidate is more than one standard error "
                        f"({best.auc_se:.4f}) below it"
                    )
                return c.name, why
            return c.name, (
                f"{c.name} (mean AUC {c.auc_mean:.4f}) is within one standard error "
                f"({best.auc_se:.4f}) of the best, {best.name} ({best.auc_mean:.4f}), "
                "and simpler"
            )
    return best.name, f"{best.name} has the best mean AUC ({best.auc_mean:.4f})"


def _stack(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    woe_categorical: list[str],
    scorecard: Callable[[], Scorecard],
    tuned: Tuned,
) -> Blend:
    """Blend weights from out-of-fold scores of both models on the searched rows."""
    Xs, ys = X[tuned.rows], y[tuned.rows]
    p_card = np.zeros(len(ys))
    for fit_rows, held in tuned.inner:
        card = scorecard().fit(Xs[fit_rows], ys[fit_rows], names, woe_categorical)
        p_card[held] = card.predict_proba(Xs[held])
    return fit_blend(ys, p_card, tuned.oof)


def select(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    categorical: list[str],
    *,
    scorecard: Callable[[], Scorecard],
    woe_categorical: list[str] | None = None,
    base_params: dict[str, Any],
    n_estimators: int,
    early_stopping_rounds: int,
    folds: int = 2,
    repeats: int = 5,
    seed: int = 42,
    tune_seconds: float = 0.0,
    trials: int = 0,
) -> Selection:
    """Score every candidate on the same repeated stratified folds and pick one.

    ``scorecard`` makes an unfitted :class:`Scorecard` with the configured settings;
    ``woe_categorical`` names the columns it bins per code (default: ``categorical``).
    ``trials`` > 0 replaces the budget's number of trials per search.
    """
    t_all = time.perf_counter()
    y = np.asarray(y).astype(int)
    plan = budget(len(y), tune_seconds)
    if trials > 0:
        plan = Budget(seconds=plan.seconds, trials=int(trials), tune_rows=plan.tune_rows)
    n_splits = folds * repeats
    share = plan.seconds / (n_splits + 1)  # the final model's search gets a share too
    woe_cat = list(categorical if woe_categorical is None else woe_categorical)
    cands = {n: Candidate(n) for n in ORDER}
    done, cut, weights, chosen_params = [], False, [], []
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    for k, (tr, te) in enumerate(cv.split(X, y)):
        t0 = time.perf_counter()
        card = scorecard().fit(X[tr], y[tr], names, woe_cat)
        p_card = card.predict_proba(X[te])
        t_card = time.perf_counter() - t0
        t0 = time.perf_counter()
        tuned = tune(
            X[tr],
            y[tr],
            names,
            categorical,
            base_params,
            trials=plan.trials,
            seconds=share,
            seed=seed + k,
            n_estimators=n_estimators,
            early_stopping_rounds=early_stopping_rounds,
            max_rows=plan.tune_rows,
        )
        booster = fit_lightgbm(X[tr], y[tr], names, categorical, tuned, seed + k)
        p_lgb = np.asarray(booster.predict(lgb_matrix(X[te], names, categorical)))
        t_lgb = time.perf_counter() - t0
        t0 = time.perf_counter()
        mix = _stack(X[tr], y[tr], names, woe_cat, scorecard, tuned)
        weights.append(mix.to_dict())
        t_mix = time.perf_counter() - t0
        done.append(tuned.trials)
        chosen_params.append({**_space_values(tuned.params, "cat_smooth" in tuned.params)})
        chosen_params[-1]["rounds"] = tuned.rounds
        cut = cut or tuned.cut_short
        for name, p, sec in (
            ("scorecard", p_card, t_card),
            ("lightgbm", p_lgb, t_lgb),
            ("blend", mix.predict(p_card, p_lgb), t_card + t_lgb + t_mix),
        ):
            cands[name].aucs.append(_auc(y[te], p))
            cands[name].seconds += sec
    cands["lightgbm"].extra = {
        "trials_per_fold": done,
        "search_cut_short": cut,
        "params_per_fold": chosen_params,
    }
    cands["blend"].extra = {"weights_per_fold": weights}
    chosen, why = choose(list(cands.values()))
    return Selection(
        folds=folds,
        repeats=repeats,
        candidates=list(cands.values()),
        selected=chosen,
        reason=why,
        budget=plan,
        seconds=time.perf_counter() - t_all,
    )


# --------------------------------------------------------------------------- final model


@dataclass
class FinalModel:
    """The selected candidate fitted on the training rows, scoring any rows alike."""

    name: str  # scorecard | lightgbm | blend
    scorecard: Scorecard | None
    booster: lgb.Booster | None
    blend: Blend | None
    names: list[str]
    categorical: list[str]
    tuned: Tuned | None = None

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p_card = self.scorecard.predict_proba(X) if self.scorecard is not None else None
        p_lgb = None
        if self.booster is not None:
            p_lgb = np.asarray(self.booster.predict(lgb_matrix(X, self.names, self.categorical)))
        if self.name == "scorecard" and p_card is not None:
            return p_card
        if self.name == "lightgbm" and p_lgb is not None:
            return p_lgb
        if self.name == "blend" and self.blend and p_card is not None and p_lgb is not None:
            return self.blend.predict(p_card, p_lgb)
        raise ValueError(f"final model {self.name!r} lacks the parts it needs")


def fit_selected(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    categorical: list[str],
    *,
    scorecard: Callable[[], Scorecard],
    woe_categorical: list[str] | None = None,
    base_params: dict[str, Any],
    n_estimators: int,
    early_stopping_rounds: int,
    seed: int = 42,
    tune_seconds: float = 0.0,
) -> FinalModel:
    """Fit the candidate ``name`` on ``X`` the way the cross-validation fitted it per fold.

    The search gets the share of the budget one fold had, on these rows only.
    """
    if name not in ORDER:
        raise ValueError(f"unknown candidate {name!r}; candidates: {', '.join(ORDER)}")
    y = np.asarray(y).astype(int)
    woe_cat = list(categorical if woe_categorical is None else woe_categorical)
    card = booster = mix = tuned = None
    if name in ("scorecard", "blend"):
        card = scorecard().fit(X, y, names, woe_cat)
    if name in ("lightgbm", "blend"):
        plan = budget(len(y), tune_seconds)
        tuned = tune(
            X,
            y,
            names,
            categorical,
            base_params,
            trials=plan.trials,
            seconds=plan.seconds / 11,  # a fold's share of a 5x2 selection
            seed=seed,
            n_estimators=n_estimators,
            early_stopping_rounds=early_stopping_rounds,
            max_rows=plan.tune_rows,
        )
        booster = fit_lightgbm(X, y, names, categorical, tuned, seed)
    if name == "blend" and tuned is not None:
        mix = _stack(X, y, names, woe_cat, scorecard, tuned)
    return FinalModel(name, card, booster, mix, list(names), list(categorical), tuned)
