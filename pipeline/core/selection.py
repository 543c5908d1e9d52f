"""Model selection for a table: scorecard, tuned LightGBM, random forest or their committee.

Candidates, simplest first (:data:`ORDER`):

* ``scorecard``: logistic regression on weight-of-evidence bins
  (:class:`pipeline.core.baselines.Scorecard`);
* ``lightgbm``: LightGBM whose parameters a small Optuna search picks (:func:`tune`),
  on the training part of each fold only: an inner k-fold CV on those rows scores
  every trial, so the evaluation fold never influences the parameters or the number
  of trees;
* ``forest``: LightGBM in random-forest mode with fixed parameters scaled to the rows
  (:func:`forest_params`): bagged deep trees averaged, nothing tuned;
* ``blend``: a committee of the three, the mean of their log-odds each standardised
  (:class:`Committee`). The means and standard deviations come from out-of-fold
  log-odds of every member on the training part of the fold (the search's inner
  folds), never from the evaluation fold. Standardising makes the blend free of each
  member's scale: a forest's averaged leaf values and a boosted model's sum of trees
  spread differently, and neither dominates the mean.

All four are scored on the same repeated stratified k-fold splits (5x2 by default).
The winner is the simplest candidate whose mean AUC is within one standard error of
the best mean, the standard error being that of the fold-by-fold AUC difference
between the two (:func:`paired_se`): the candidates share their folds, so the
difference, not each candidate's own spread, says whether one is really behind.

Each fitted model is a sum of log-odds terms (:meth:`FinalModel.terms`): a bias and
weighted members, a member's term being a scorecard's linear score on its
weight-of-evidence bins or a LightGBM booster's raw score (the sum of its trees, so a
forest, which averages them, enters with weight 1 / trees).

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
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold

from pipeline.core.baselines import Scorecard

ORDER = ("scorecard", "lightgbm", "forest", "blend")  # simplest first
MEMBERS = ORDER[:-1]  # the blend's members, in this order
FOREST_TREES = 300
FOREST_TREE_ROWS = 50_000  # most rows one forest tree draws (its cost stops growing there)
INNER_FOLDS = 3
ONE_THREAD_ROWS = 10_000
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


#: the search's first trial and the yardstick of the tuned candidate: a plain LightGBM of
#: fixed settings (300 trees, no early stopping; everything else LightGBM's defaults)
FIXED = {
    "learning_rate": 0.03,
    "num_leaves": 15,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
}
FIXED_TREES = 300
#: most rows one search works on (a stratified sample above it); below, the search sees
#: the whole training part of the fold, so what it tunes (leaf sizes above all) is
#: tuned for the rows the model is then fitted on
TUNE_ROWS = 100_000
#: the time cap of one search when ``tune_seconds`` is 0: a safety net far above what
#: the fixed trials need, so that on any machine the same trials run to the end
DEFAULT_CAP_SECONDS = 1_800.0


@dataclass(frozen=True)
class Budget:
    """How much searching one selection does."""

    seconds: float  # time cap of each search (a safety net: hitting it changes the result)
    trials: int  # trials of each search (the same on every machine)
    tune_rows: int  # each search sees at most this many rows (stratified sample)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cap_seconds_per_search": self.seconds,
            "trials": self.trials,
            "tune_rows": self.tune_rows,
        }


def budget(n_rows: int, tune_seconds: float = 0.0) -> Budget:
    """The search budget for a table of ``n_rows`` rows (1,000 to 1,000,000 and beyond).

    The number of trials is fixed for the table's size, whatever the machine: a small
    table gets fewer (its inner scores are noisy, so many trials mostly find a lucky
    one), growing slowly with the rows (15 at 1,000 rows, 21 at a million). Each search
    sees the whole training part of its fold up to :data:`TUNE_ROWS` rows. Time only
    caps a search as a safety net (``tune_seconds`` > 0, else
    :data:`DEFAULT_CAP_SECONDS`): a search the cap cuts short is reported, as its
    result may then differ from one that ran all its trials.
    """
    n = max(int(n_rows), 1)
    decades = math.log10(max(n, 1000) / 1000)  # 0 at 1,000 rows, 3 at 1,000,000
    trials = int(round(15.0 + 2.0 * decades))
    seconds = float(tune_seconds) if tune_seconds > 0 else DEFAULT_CAP_SECONDS
    return Budget(seconds=seconds, trials=trials, tune_rows=TUNE_ROWS)


def _plan(n_rows: int, tune_seconds: float, trials: int) -> Budget:
    """:func:`budget`, with its number of trials replaced when ``trials`` > 0."""
    plan = budget(n_rows, tune_seconds)
    if trials > 0:
        plan = Budget(seconds=plan.seconds, trials=int(trials), tune_rows=plan.tune_rows)
    return plan


@dataclass(frozen=True)
class Committee:
    """The mean of the members' standardised log-odds, mapped onto log-odds of the target.

    Member m (of the M used) enters the mean with ``1 / (M * sd_m)`` and the mean's own
    bias is ``-sum(mean_m / (M * sd_m))``, where ``mean_m`` and ``sd_m`` are the mean
    and standard deviation of its out-of-fold log-odds on training rows. A member
    without spread, or ranking no better than chance out of fold, gets weight 0 and
    does not count in M. That mean is a rank, not log-odds (0 on average, whatever the
    base rate): a Platt map ``slope * mean + intercept``, fitted on the same
    out-of-fold rows, turns it into log-odds of the target, so the blend's raw score,
    its SHAP base value and probability shares speak of the target's odds. The map is
    part of the weights and the bias, so the compiled model holds it.
    """

    members: tuple[str, ...]
    mean: tuple[float, ...]
    sd: tuple[float, ...]
    used: tuple[bool, ...]
    slope: float = 1.0
    intercept: float = 0.0

    @property
    def weights(self) -> tuple[float, ...]:
        m = max(sum(self.used), 1)
        return tuple(
            self.slope / (m * s) if u else 0.0 for s, u in zip(self.sd, self.used, strict=True)
        )

    @property
    def bias(self) -> float:
        shift = float(sum(w * mu for w, mu in zip(self.weights, self.mean, strict=True)))
        return self.intercept - shift

    def log_odds(self, Z: np.ndarray) -> np.ndarray:
        """Per row, from the members' log-odds (one column each, in ``members`` order)."""
        Z = np.asarray(Z, dtype=float)
        out = np.full(Z.shape[0], self.bias)
        for j, w in enumerate(self.weights):
            out = out + w * Z[:, j]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "mean": [float(v) for v in self.mean],
            "sd": [float(v) for v in self.sd],
            "weights": [float(v) for v in self.weights],
            "bias": self.bias,
            "platt": {"slope": float(self.slope), "intercept": float(self.intercept)},
        }


def platt(y: np.ndarray, z: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """``(slope, intercept)`` of the logistic regression of ``y`` on one score ``z``.

    Newton's method from (1, logit of the base rate), unpenalised, so that on these
    rows the mapped scores' mean probability equals the base rate. The slope is kept
    positive (a map may not reverse the ranking the committee was chosen for).
    """
    y = np.asarray(y, dtype=float)
    z = np.asarray(z, dtype=float)
    rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    beta = np.array([1.0, math.log(rate / (1 - rate))])
    A = np.column_stack([z, np.ones_like(z)])
    for _ in range(iterations):
        with np.errstate(over="ignore"):  # exp(+large) -> inf -> p = 0, its exact limit
            p = 1.0 / (1.0 + np.exp(-(A @ beta)))
        grad = A.T @ (y - p)
        hess = (A * (p * (1 - p))[:, None]).T @ A + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    slope, intercept = float(beta[0]), float(beta[1])
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope <= 1e-3:
        # no usable slope (a committee that does not rank): keep its order, map its
        # mean onto the base rate
        return 1e-3, math.log(rate / (1 - rate))
    return slope, intercept


def fit_committee(y: np.ndarray, Z: np.ndarray, members: tuple[str, ...] = MEMBERS) -> Committee:
    """Scales and Platt map from out-of-fold log-odds ``Z`` (one column per member)."""
    Z = np.asarray(Z, dtype=float)
    y = np.asarray(y).astype(int)
    if Z.ndim != 2 or Z.shape != (len(y), len(members)):
        raise ValueError(
            f"committee scores: expected {len(y)} rows x {len(members)} members "
            f"({', '.join(members)}), got shape {Z.shape}"
        )
    if not np.isfinite(Z).all():
        raise ValueError("committee scores: out-of-fold log-odds contain NaN or infinity")
    mean, sd = Z.mean(axis=0), Z.std(axis=0)
    spread = [bool(s > 1e-12 * max(1.0, abs(m))) for m, s in zip(mean, sd, strict=True)]
    both = len(np.unique(y)) == 2
    ranks = [ok and (not both or _auc(y, Z[:, j]) > 0.5) for j, ok in enumerate(spread)]
    used = ranks if any(ranks) else spread
    plain = Committee(
        tuple(members),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in sd),
        tuple(used),
    )
    if not both:
        return plain
    slope, intercept = platt(y, plain.log_odds(Z))
    return Committee(plain.members, plain.mean, plain.sd, plain.used, slope, intercept)


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of any score (probability or log-odds: only ranks count)."""
    return float(roc_auc_score(np.asarray(y).astype(int), np.asarray(score, dtype=float)))


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
    oof: np.ndarray = field(default_factory=lambda: np.zeros(0))  # out-of-fold log-odds
    fixed: bool = False  # the fixed LightGBM won: it is fitted as such (its trees exactly)


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


def fixed_params(base_params: dict[str, Any]) -> dict[str, Any]:
    """The fixed LightGBM (:data:`FIXED`, :data:`FIXED_TREES` trees): ``base_params``'
    machine settings (threads, seed, bins, determinism, monotone directions) and
    LightGBM's own defaults for everything :data:`FIXED` does not set."""
    keep = (
        "objective",
        "max_bin",
        "num_threads",
        "seed",
        "deterministic",
        "force_col_wise",
        "force_row_wise",
    )
    out = {k: base_params[k] for k in keep if k in base_params}
    monotone = base_params.get("monotone_constraints")
    if monotone is not None and any(monotone):
        out["monotone_constraints"] = list(monotone)
        out["monotone_constraints_method"] = base_params.get("monotone_constraints_method", "basic")
    out.setdefault("objective", "binary")
    out.update(FIXED, verbosity=-1, feature_pre_filter=False)
    return out


@dataclass(frozen=True)
class _Trial:
    """One scored point of a search: its parameters, inner AUC, its se and tree count."""

    params: dict[str, Any]
    value: float
    se: float
    rounds: int
    start: int  # 0: the fixed LightGBM, 1: the shallow start, 2: a searched point


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
    max_rows: int = TUNE_ROWS,
) -> Tuned:
    """A fixed number of trials, each scored by inner k-fold CV AUC on ``X``'s rows.

    Trial 1 is the fixed LightGBM (:func:`fixed_params`, :data:`FIXED_TREES` trees, no
    early stopping); trial 2 a shallow, randomised start (:data:`SHALLOW`); the rest
    Optuna's seeded TPE search over :func:`_space`, whose tree counts early stopping
    picks on the inner folds. A searched point replaces the fixed LightGBM only when it
    beats it by more than one standard error of the inner folds
    (:func:`_one_se_choice`). ``seconds`` caps the whole search as a safety net: a
    search it cuts short says so (``cut_short``), as its result may then differ from
    one that ran all its trials; nothing else about the machine changes the result.
    """
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
    threads = _threads(len(rows), base_params.get("num_threads"))
    fixed["num_threads"] = threads

    def inner_cv(params: dict[str, Any], rounds: int, stop: bool) -> tuple[float, float, int]:
        return _inner_cv(params, dset, inner, rounds, early_stopping_rounds if stop else 0)

    plain = {
        **fixed_params({**base_params, "num_threads": threads}),
        "metric": ["binary_logloss", "auc"],
    }
    value, se, rounds = inner_cv(plain, FIXED_TREES, stop=False)
    scored = [_Trial(plain, value, se, rounds, 0)]

    def objective(trial: Any) -> float:
        params = {**fixed, **_space(trial, n_fit, has_cat)}
        value, se, rounds = inner_cv(params, n_estimators, stop=True)
        trial.set_user_attr("rounds", rounds)
        trial.set_user_attr("se", se)
        return value

    searched = max(int(trials) - 1, 0)
    left = max(float(seconds) - (time.perf_counter() - t0), 1e-3)
    done_trials = _study(objective, _start_point(SHALLOW, n_fit, has_cat), searched, left, seed)
    scored += [
        _Trial(
            {**fixed, **_space_values(t.params, has_cat)},
            float(t.value or 0.0),
            float(t.user_attrs["se"]),
            int(t.user_attrs["rounds"]),
            1 if t.number == 0 else 2,
        )
        for t in done_trials
    ]
    best = _one_se_choice(scored)
    return Tuned(
        params=dict(best.params),
        rounds=best.rounds,
        inner_auc=best.value,
        trials=len(scored),
        seconds=time.perf_counter() - t0,
        cut_short=len(done_trials) < searched,
        fit_rows=n_fit,
        threads=int(base_params.get("num_threads") or 1),
        rows=rows,
        inner=inner,
        oof=_out_of_fold(best.params, best.rounds, dset, inner),
        fixed=best.start == 0,
    )


def _out_of_fold(
    params: dict[str, Any], rounds: int, dset: Any, inner: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Each searched row's log-odds from the inner model that did not see it."""
    res = lgb.cv(params, dset, num_boost_round=rounds, folds=inner, return_cvbooster=True)
    X = dset.get_data()
    out = np.zeros(X.shape[0])
    cvb = res["cvbooster"]
    assert isinstance(cvb, lgb.CVBooster)
    for booster, (_, held) in zip(cvb.boosters, inner, strict=True):
        out[held] = booster.predict(X[held], raw_score=True)
    return out


def _study(
    objective: Callable[[Any], float], start: dict[str, Any], n: int, seconds: float, seed: int
) -> list[Any]:
    """The completed trials of a seeded TPE search of ``n`` trials (``start`` first),
    stopped early only by the time cap ``seconds``."""
    # optuna takes over two seconds to import: only a table run's selection needs it
    import optuna

    if n <= 0:
        return []
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks enqueue_trial experimental
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, n // 3))
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.enqueue_trial(start)
            study.optimize(objective, n_trials=n, timeout=seconds)
    finally:
        optuna.logging.set_verbosity(level)
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def _inner_cv(
    params: dict[str, Any],
    dset: Any,
    inner: list[tuple[np.ndarray, np.ndarray]],
    rounds: int,
    early_stopping_rounds: int,
) -> tuple[float, float, int]:
    """Inner-fold AUC of ``params`` at its last (or early-stopped) tree, its standard
    error over the folds and the tree count; ``early_stopping_rounds`` 0: no stopping."""
    callbacks: list[Callable[..., Any]] = []
    if early_stopping_rounds > 0:
        patience = _patience(params, early_stopping_rounds)
        callbacks.append(lgb.early_stopping(patience, first_metric_only=True, verbose=False))
    res = lgb.cv(params, dset, num_boost_round=rounds, folds=inner, callbacks=callbacks)
    curve = np.asarray(res["valid auc-mean"], dtype=float)
    spread = np.asarray(res["valid auc-stdv"], dtype=float)
    return float(curve[-1]), float(spread[-1]) / math.sqrt(len(inner)), len(curve)


def _one_se_choice(trials: list[_Trial]) -> _Trial:
    """The best trial, unless a starting point is within one standard error of it.

    On a small table the best of many noisy inner scores is mostly luck; the starting
    points (the fixed LightGBM first, then the shallow start) are kept unless the
    search clearly beats them.
    """
    best = max(trials, key=lambda t: t.value)
    for start in (0, 1):
        found = [t for t in trials if t.start == start]
        if found and found[0].value >= best.value - best.se:
            return found[0]
    return best


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

    The tree count found on inner folds of the tuning rows is scaled up in proportion
    to the rows here, as more rows support more trees at a learning rate; the fixed
    LightGBM keeps its :data:`FIXED_TREES` trees.
    """
    scale = min(1.5, max(1.0, (len(y) / max(tuned.fit_rows, 1)) ** 0.25))
    rounds = FIXED_TREES if tuned.fixed else max(1, int(round(tuned.rounds * scale)))
    params = {**tuned.params, "seed": seed}
    params["num_threads"] = _threads(len(y), tuned.threads)
    return lgb.train(params, _dataset(X, y, names, categorical), num_boost_round=rounds)


def fit_fixed(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    categorical: list[str],
    base_params: dict[str, Any],
    seed: int,
) -> lgb.Booster:
    """The fixed LightGBM (:func:`fixed_params`) on all of ``X``: the tuned one's yardstick."""
    params = {**fixed_params(base_params), "seed": seed}
    params["num_threads"] = _threads(len(y), base_params.get("num_threads"))
    return lgb.train(params, _dataset(X, y, names, categorical), num_boost_round=FIXED_TREES)


# --------------------------------------------------------------------------- forest


def forest_params(n_rows: int, base_params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Fixed random-forest parameters for a fit on ``n_rows`` rows.

    Each tree sees 63.2% of the rows (a bootstrap's share of distinct rows), at most
    :data:`FOREST_TREE_ROWS` of them, and half of the columns, and grows up to 256
    leaves; a leaf holds at least sqrt(rows)/4 rows (5 on small tables), so leaves stay
    fine where rows are few and their estimates steady where rows are many. Categories of up to 64 levels split one against the
    rest (many-against-many splits chase noise). The bin count, the determinism
    switches and any monotone constraints of ``base_params`` carry over.
    """
    out: dict[str, Any] = {
        "objective": "binary",
        "boosting": "rf",
        "bagging_fraction": min(0.632, FOREST_TREE_ROWS / max(int(n_rows), 1)),
        "bagging_freq": 1,
        "feature_fraction": 0.5,
        "num_leaves": 256,
        "min_data_in_leaf": int(max(5, math.sqrt(max(int(n_rows), 1)) / 4)),
        "max_cat_to_onehot": 64,
        "feature_pre_filter": False,
        "verbosity": -1,
        "seed": int(seed),
        "num_threads": _threads(n_rows, base_params.get("num_threads")),
    }
    for key in ("max_bin", "deterministic", "force_col_wise", "force_row_wise"):
        if key in base_params:
            out[key] = base_params[key]
    monotone = base_params.get("monotone_constraints")
    if monotone is not None and any(monotone):
        out["monotone_constraints"] = list(monotone)
        out["monotone_constraints_method"] = base_params.get("monotone_constraints_method", "basic")
    return out


def fit_forest(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    categorical: list[str],
    base_params: dict[str, Any],
    seed: int,
) -> lgb.Booster:
    """LightGBM in random-forest mode on all of ``X``: :data:`FOREST_TREES` bagged trees."""
    params = forest_params(len(y), base_params, seed)
    return lgb.train(params, _dataset(X, y, names, categorical), num_boost_round=FOREST_TREES)


# --------------------------------------------------------------------------- members

Member = Scorecard | lgb.Booster


def raw_score(
    member: Member, X: np.ndarray, names: list[str], categorical: list[str]
) -> np.ndarray:
    """A member's raw score per row: the unit of :meth:`FinalModel.terms`.

    A scorecard's linear score on its weight-of-evidence bins; a booster's raw score as
    LightGBM gives it, the sum of its trees (for a random forest too: LightGBM
    averages a forest's trees only when it predicts probabilities).
    """
    if isinstance(member, Scorecard):
        # the scorecard's score before its logistic link (its public methods give
        # probabilities or points, each a rounding step away from it)
        return member.log_odds(X)
    raw = member.predict(lgb_matrix(X, names, categorical), raw_score=True)
    return np.asarray(raw, dtype=float)


def tree_weight(member: Member) -> float:
    """What turns a member's raw score into its log-odds: 1 / trees for a forest, else 1."""
    if isinstance(member, lgb.Booster) and str(member.params.get("boosting")) in (
        "rf",
        "random_forest",
    ):
        return 1.0 / max(member.num_trees(), 1)
    return 1.0


def member_log_odds(
    member: Member, X: np.ndarray, names: list[str], categorical: list[str]
) -> np.ndarray:
    """A member's log-odds per row (a forest's: the average of its trees)."""
    return tree_weight(member) * raw_score(member, X, names, categorical)


@dataclass(frozen=True)
class _Setup:
    """What every fit of one selection shares."""

    names: list[str]
    categorical: list[str]
    woe_categorical: list[str]
    scorecard: Callable[[], Scorecard]
    base_params: dict[str, Any]
    n_estimators: int
    early_stopping_rounds: int
    trials: int
    tune_rows: int


def _setup(
    names: list[str],
    categorical: list[str],
    scorecard: Callable[[], Scorecard],
    woe_categorical: list[str] | None,
    base_params: dict[str, Any],
    plan: Budget,
    n_estimators: int,
    early_stopping_rounds: int,
) -> _Setup:
    return _Setup(
        names=list(names),
        categorical=list(categorical),
        woe_categorical=list(categorical if woe_categorical is None else woe_categorical),
        scorecard=scorecard,
        base_params=dict(base_params),
        n_estimators=int(n_estimators),
        early_stopping_rounds=int(early_stopping_rounds),
        trials=plan.trials,
        tune_rows=plan.tune_rows,
    )


def _tune(X: np.ndarray, y: np.ndarray, setup: _Setup, seed: int, seconds: float) -> Tuned:
    return tune(
        X,
        y,
        setup.names,
        setup.categorical,
        setup.base_params,
        trials=setup.trials,
        seconds=seconds,
        seed=seed,
        n_estimators=setup.n_estimators,
        early_stopping_rounds=setup.early_stopping_rounds,
        max_rows=setup.tune_rows,
    )


def _fit_member(
    name: str, X: np.ndarray, y: np.ndarray, setup: _Setup, seed: int, tuned: Tuned | None
) -> Member:
    """Member ``name`` fitted on ``X`` (the tuned LightGBM needs its search's result)."""
    if name == "scorecard":
        return setup.scorecard().fit(X, y, setup.names, setup.woe_categorical)
    if name == "forest":
        return fit_forest(X, y, setup.names, setup.categorical, setup.base_params, seed)
    if name == "lightgbm" and tuned is not None:
        return fit_lightgbm(X, y, setup.names, setup.categorical, tuned, seed)
    raise ValueError(f"cannot fit member {name!r} (members: {', '.join(MEMBERS)})")


def _committee(X: np.ndarray, y: np.ndarray, setup: _Setup, tuned: Tuned, seed: int) -> Committee:
    """The committee's scales from out-of-fold log-odds on the searched rows of ``X``.

    The search's inner folds serve every member: its own out-of-fold log-odds for the
    tuned LightGBM, one scorecard and one forest per inner fold for the others.
    ``X`` and ``y`` are training rows only; nothing else is seen.
    """
    Xs, ys = X[tuned.rows], y[tuned.rows]
    Z = np.zeros((len(ys), len(MEMBERS)))
    Z[:, MEMBERS.index("lightgbm")] = tuned.oof
    for i, (fit_rows, held) in enumerate(tuned.inner):
        for j, name in enumerate(MEMBERS):
            if name != "lightgbm":
                member = _fit_member(name, Xs[fit_rows], ys[fit_rows], setup, seed + i, None)
                Z[held, j] = member_log_odds(member, Xs[held], setup.names, setup.categorical)
    return fit_committee(ys, Z)


@dataclass
class _Split:
    """One split's candidates: their log-odds on the evaluation rows and seconds."""

    z: dict[str, np.ndarray]
    seconds: dict[str, float]
    tuned: Tuned
    committee: Committee
    fixed: np.ndarray  # the fixed LightGBM's log-odds on the evaluation rows (yardstick)


def _score_split(
    X_fit: np.ndarray,
    y_fit: np.ndarray,
    X_eval: np.ndarray,
    setup: _Setup,
    seed: int,
    seconds: float,
) -> _Split:
    """Every candidate fitted on the training rows, scored on the evaluation rows."""
    z: dict[str, np.ndarray] = {}
    sec: dict[str, float] = {}
    tuned = None
    for name in MEMBERS:
        t0 = time.perf_counter()
        if name == "lightgbm":
            tuned = _tune(X_fit, y_fit, setup, seed, seconds)
        member = _fit_member(name, X_fit, y_fit, setup, seed, tuned)
        z[name] = member_log_odds(member, X_eval, setup.names, setup.categorical)
        sec[name] = time.perf_counter() - t0
    assert tuned is not None  # MEMBERS holds the tuned LightGBM
    t0 = time.perf_counter()
    mix = _committee(X_fit, y_fit, setup, tuned, seed)
    z["blend"] = mix.log_odds(np.column_stack([z[n] for n in MEMBERS]))
    sec["blend"] = sum(sec.values()) + time.perf_counter() - t0
    if tuned.fixed:  # the search kept the fixed LightGBM: the same model, fitted alike
        plain = z["lightgbm"]
    else:
        model = fit_fixed(X_fit, y_fit, setup.names, setup.categorical, setup.base_params, seed)
        plain = member_log_odds(model, X_eval, setup.names, setup.categorical)
    return _Split(z, sec, tuned, mix, plain)


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
    ratio: float = 0.0  # evaluation rows / training rows of a fold (Nadeau-Bengio)
    rows: int = 0  # rows the cross-validation ran on
    fixed: Candidate | None = None  # the fixed LightGBM in the same folds (a yardstick)
    cut_short: int = 0  # searches the time cap ended before their trials were done

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        chosen = self.candidate(self.selected)
        best = max(self.candidates, key=lambda c: c.auc_mean)
        out: dict[str, Any] = {
            "scheme": f"stratified {self.folds}-fold x {self.repeats} repeats",
            "rows": self.rows,
            "selected": {
                "name": chosen.name,
                "auc_mean": chosen.auc_mean,
                "auc_std": chosen.auc_std,
                "auc_se": chosen.auc_se,
                "auc_se_corrected": corrected_se(chosen.aucs, self.ratio),
            },
            "candidates": [
                {**c.to_dict(), "auc_se_corrected": corrected_se(c.aucs, self.ratio)}
                for c in self.candidates
            ],
            "reason": self.reason,
            "rule": "simplest candidate within one corrected standard error (Nadeau-Bengio, "
            "of the paired fold differences) of the best mean AUC (order: "
            f"{' < '.join(ORDER)})",
            "rule_check": rule_check(self.candidates, best, self.ratio),
            "budget": self.budget.to_dict(),
            "search_cut_short": self.cut_short,
            "seconds": self.seconds,
        }
        if self.fixed is not None:
            tuned = self.candidate("lightgbm")
            out["lightgbm_fixed"] = {
                "settings": {**FIXED, "trees": FIXED_TREES},
                "auc_mean": self.fixed.auc_mean,
                "auc_se_corrected": corrected_se(self.fixed.aucs, self.ratio),
                "auc_folds": [float(a) for a in self.fixed.aucs],
                "tuned_minus_fixed": tuned.auc_mean - self.fixed.auc_mean,
                "tuned_minus_fixed_se": corrected_paired_se(tuned, self.fixed, self.ratio),
            }
        return out


#: candidates that keep declared monotone directions (LightGBM's constraints); the
#: scorecard's weight-of-evidence bins, and so the blend, do not
MONOTONE_SAFE = ("lightgbm", "forest")


def eligible(base_params: dict[str, Any]) -> tuple[str, ...]:
    """The candidates that may be selected under ``base_params``: all of them, or only
    those that keep the declared monotone directions when any are declared."""
    monotone = base_params.get("monotone_constraints")
    if monotone is not None and any(monotone):
        return MONOTONE_SAFE
    return ORDER


def paired_se(a: Candidate, b: Candidate) -> float:
    """Plain standard error of the mean fold-by-fold AUC difference of two candidates.

    Every candidate is scored on the same folds, so their fold AUCs rise and fall
    together (an easy fold is easy for all): the difference per fold removes that
    shared part. This error treats the folds as independent, which they are not (the
    training parts of repeated folds share most rows): it is too small, and is kept
    only beside the corrected one (:func:`corrected_paired_se`).
    """
    d = np.asarray(a.aucs, dtype=float) - np.asarray(b.aucs, dtype=float)
    if len(d) < 2:
        return 0.0
    return float(np.std(d, ddof=1) / math.sqrt(len(d)))


def corrected_se(values: list[float] | np.ndarray, ratio: float) -> float:
    """Nadeau and Bengio's corrected standard error of the mean of fold figures.

    Fold figures of repeated k-fold cross-validation are correlated through their
    overlapping training rows; the corrected variance of their mean is
    ``(1 / J + n_test / n_train) * s**2`` for ``J`` folds with sample variance ``s**2``
    (Nadeau and Bengio 2003, "Inference for the generalization error"). With
    ``ratio`` (``n_test / n_train``) 0 it is the plain standard error.
    """
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return 0.0
    return float(math.sqrt((1.0 / len(v) + float(ratio)) * np.var(v, ddof=1)))


def corrected_paired_se(a: Candidate, b: Candidate, ratio: float) -> float:
    """:func:`corrected_se` of the fold-by-fold AUC difference of two candidates."""
    return corrected_se(np.asarray(a.aucs, dtype=float) - np.asarray(b.aucs, dtype=float), ratio)


def rule_check(candidates: list[Candidate], best: Candidate, ratio: float) -> list[dict[str, Any]]:
    """Each candidate's shortfall to the best, with both standard errors and verdicts."""
    out = []
    for c in candidates:
        gap = best.auc_mean - c.auc_mean
        plain, corr = paired_se(best, c), corrected_paired_se(best, c, ratio)
        out.append(
            {
                "name": c.name,
                "behind_best": gap,
                "se_plain": plain,
                "se_corrected": corr,
                "within_one_se_plain": bool(gap <= plain),
                "within_one_se_corrected": bool(gap <= corr),
            }
        )
    return out


def choose(candidates: list[Candidate], ratio: float = 0.0) -> tuple[str, str]:
    """The simplest candidate within one standard error of the best, and why.

    The standard error is that of the candidate's fold-by-fold AUC difference to the
    best, corrected for the folds' overlap (:func:`corrected_paired_se`; ``ratio`` =
    evaluation rows / training rows of a fold, 0 for the plain error): a simpler
    candidate is preferred when its shortfall is within one such error, i.e. when the
    folds cannot tell it from the best.
    """
    best = max(candidates, key=lambda c: c.auc_mean)
    rank = {n: i for i, n in enumerate(ORDER)}
    kind = "corrected paired" if ratio > 0 else "paired"
    for c in sorted(candidates, key=lambda c: rank.get(c.name, len(ORDER))):
        if c is best:
            why = f"{c.name} has the best mean AUC ({c.auc_mean:.4f})"
            behind = [
                f"{d.name} by {best.auc_mean - d.auc_mean:.4f} "
                f"(se {corrected_paired_se(best, d, ratio):.4f})"
                for d in candidates
                if rank.get(d.name, len(ORDER)) < rank.get(c.name, len(ORDER))
            ]
            if behind:
                why += (
                    f"; every simpler candidate is more than one {kind} standard error "
                    f"behind it: {', '.join(behind)}"
                )
            return c.name, why
        se = corrected_paired_se(best, c, ratio)
        if best.auc_mean - c.auc_mean <= se:
            return c.name, (
                f"{c.name} (mean AUC {c.auc_mean:.4f}) is within one {kind} standard "
                f"error ({se:.4f}) of the best, {best.name} ({best.auc_mean:.4f}), "
                "and simpler"
            )
    return best.name, f"{best.name} has the best mean AUC ({best.auc_mean:.4f})"


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
    plan = _plan(len(y), tune_seconds, trials)
    setup = _setup(
        names,
        categorical,
        scorecard,
        woe_categorical,
        base_params,
        plan,
        n_estimators,
        early_stopping_rounds,
    )
    cands = {n: Candidate(n) for n in ORDER}
    plain = Candidate("lightgbm_fixed")
    done, cut, mixes, chosen_params, leaves = [], 0, [], [], []
    fit_rows, eval_rows = 0, 0
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    for k, (tr, te) in enumerate(cv.split(X, y)):
        part = _score_split(X[tr], y[tr], X[te], setup, seed + k, plan.seconds)
        fit_rows, eval_rows = fit_rows + len(tr), eval_rows + len(te)
        for name in ORDER:
            cands[name].aucs.append(_auc(y[te], part.z[name]))
            cands[name].seconds += part.seconds[name]
        plain.aucs.append(_auc(y[te], part.fixed))
        tuned = part.tuned
        done.append(tuned.trials)
        chosen_params.append(
            {**FIXED}
            if tuned.fixed
            else {**_space_values(tuned.params, "cat_smooth" in tuned.params)}
        )
        chosen_params[-1]["rounds"] = FIXED_TREES if tuned.fixed else tuned.rounds
        chosen_params[-1]["fixed"] = tuned.fixed
        cut += int(tuned.cut_short)
        mixes.append(part.committee.to_dict())
        leaves.append(forest_params(len(tr), base_params, seed + k)["min_data_in_leaf"])
    ratio = eval_rows / max(fit_rows, 1)
    cands["lightgbm"].extra = {
        "trials_per_fold": done,
        "search_cut_short": cut > 0,
        "params_per_fold": chosen_params,
    }
    cands["forest"].extra = {"trees": FOREST_TREES, "min_data_in_leaf_per_fold": leaves}
    cands["blend"].extra = {"weights_per_fold": mixes}
    chosen, why = choose([c for c in cands.values() if c.name in eligible(base_params)], ratio)
    if len(eligible(base_params)) < len(cands):
        why += (
            "; scorecard and blend were not eligible: they cannot keep the declared "
            "monotone directions"
        )
    return Selection(
        folds=folds,
        repeats=repeats,
        candidates=list(cands.values()),
        selected=chosen,
        reason=why,
        budget=plan,
        seconds=time.perf_counter() - t_all,
        ratio=ratio,
        rows=len(y),
        fixed=plain,
        cut_short=cut,
    )


def nested(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    categorical: list[str],
    *,
    outer: int = 5,
    seed: int = 42,
    **how: Any,
) -> dict[str, Any]:
    """The whole selection estimated by an outer stratified k-fold on ``X``.

    Each outer training part runs :func:`select` (its own repeated folds, searches and
    rule) and fits the candidate it selects (:func:`fit_selected`); the outer evaluation
    fold, which neither saw, scores it. The mean of those AUCs estimates what the
    procedure, not one model, achieves; the selected candidate may differ per fold.
    """
    y = np.asarray(y).astype(int)
    fit_keys = (
        "scorecard",
        "woe_categorical",
        "base_params",
        "n_estimators",
        "early_stopping_rounds",
        "tune_seconds",
        "trials",
    )
    aucs, picked, fit_rows, eval_rows = [], [], 0, 0
    splitter = RepeatedStratifiedKFold(n_splits=outer, n_repeats=1, random_state=seed + 7919)
    for k, (tr, te) in enumerate(splitter.split(X, y)):
        inner = select(X[tr], y[tr], names, categorical, seed=seed + 100 * k, **how)
        fitted = fit_selected(
            inner.selected,
            X[tr],
            y[tr],
            names,
            categorical,
            seed=seed + 100 * k,
            **{key: v for key, v in how.items() if key in fit_keys},
        )
        aucs.append(_auc(y[te], fitted.log_odds(X[te])))
        picked.append(inner.selected)
        fit_rows, eval_rows = fit_rows + len(tr), eval_rows + len(te)
    return {
        "scheme": f"stratified {outer}-fold outer, each running the whole selection",
        "rows": int(len(y)),
        "auc_mean": float(np.mean(aucs)),
        "auc_se": corrected_se(aucs, 0.0),
        "auc_se_corrected": corrected_se(aucs, eval_rows / max(fit_rows, 1)),
        "auc_folds": [float(a) for a in aucs],
        "selected_per_fold": picked,
    }


# --------------------------------------------------------------------------- final model


@dataclass
class FinalModel:
    """The selected candidate fitted on the training rows, scoring any rows alike.

    Its log-odds are a sum of terms (:meth:`terms`); its probability is their logistic.
    """

    name: str  # one of ORDER
    members: dict[str, Member]  # the fitted members the candidate uses, by name
    names: list[str]
    categorical: list[str]
    committee: Committee | None = None  # the blend's scales
    tuned: Tuned | None = None

    @property
    def scorecard(self) -> Scorecard | None:
        card = self.members.get("scorecard")
        return card if isinstance(card, Scorecard) else None

    @property
    def booster(self) -> lgb.Booster | None:
        """The tuned LightGBM booster, if the candidate uses it."""
        model = self.members.get("lightgbm")
        return model if isinstance(model, lgb.Booster) else None

    @property
    def forest(self) -> lgb.Booster | None:
        model = self.members.get("forest")
        return model if isinstance(model, lgb.Booster) else None

    def terms(self) -> tuple[float, list[tuple[float, Member]]]:
        """``(bias, [(weight, member), ...])``: log-odds = bias + sum(weight x raw score).

        A member's raw score is :func:`raw_score` (for a booster, LightGBM's
        ``predict(..., raw_score=True)``). A single scorecard or LightGBM model is
        ``(0.0, [(1.0, model)])``; a forest's weight is 1 / its trees, as LightGBM's
        raw score of a forest sums the trees it averages. The blend lists the members
        with a non-zero weight, each its committee weight times that factor.
        """
        if self.name == "blend":
            if self.committee is None:
                raise ValueError("final model 'blend' lacks its committee scales")
            mix = self.committee
            return mix.bias, [
                (w * tree_weight(self.members[n]), self.members[n])
                for n, w in zip(mix.members, mix.weights, strict=True)
                if w
            ]
        if self.name not in self.members:
            raise ValueError(f"final model {self.name!r} lacks its fitted model")
        member = self.members[self.name]
        return 0.0, [(tree_weight(member), member)]

    def log_odds(self, X: np.ndarray) -> np.ndarray:
        bias, parts = self.terms()
        out = np.full(len(X), bias, dtype=float)
        for weight, member in parts:
            out = out + weight * raw_score(member, X, self.names, self.categorical)
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.log_odds(X)))


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
    trials: int = 0,
) -> FinalModel:
    """Fit the candidate ``name`` on ``X`` the way the cross-validation fitted it per fold.

    The search runs the trials one fold's search ran, on these rows only;
    ``trials`` > 0 replaces the budget's number of trials, as in :func:`select`.
    """
    if name not in ORDER:
        raise ValueError(f"unknown candidate {name!r}; candidates: {', '.join(ORDER)}")
    y = np.asarray(y).astype(int)
    plan = _plan(len(y), tune_seconds, trials)
    setup = _setup(
        names,
        categorical,
        scorecard,
        woe_categorical,
        base_params,
        plan,
        n_estimators,
        early_stopping_rounds,
    )
    need = MEMBERS if name == "blend" else (name,)
    tuned = None
    if "lightgbm" in need:
        tuned = _tune(X, y, setup, seed, plan.seconds)
    members = {n: _fit_member(n, X, y, setup, seed, tuned) for n in need}
    mix = _committee(X, y, setup, tuned, seed) if name == "blend" and tuned else None
    return FinalModel(name, members, list(names), list(categorical), mix, tuned)
