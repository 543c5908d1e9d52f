"""Discrete-time competing-risks model: when, and for which cause, an account closes.

Pure core: arrays in, arrays and plain dicts out. The runner is
:mod:`pipeline.stages.survival`.

The model
---------
Every snapshot row (a borrower open and never overdue at month ``s``, its features as of
``s``) is expanded into one row per month ahead ``k = 1, 2, ...`` while the account is
still open and the month ``s + k`` lies inside the row's split (a landmark, person-month
layout). The target of a month is its class: ``none`` (still open), one of the
never-overdue causes in :data:`~pipeline.base.causes.CAUSES`, or ``overdue`` (a competing
event). One LightGBM multiclass model reads the snapshot's features plus ``k`` and
returns, for each month, the hazard of every class given the account was open at its
start (the softmax output: the classes are exclusive within a month, so one model keeps
the hazards consistent where per-cause binary models would each assume the others away).
Months without a closure are most rows; a seeded share ``keep`` of them is kept, each
weighted ``1 / keep``, so the weighted likelihood is the full one's in expectation.

From the monthly hazards ``h_c(k)`` the cumulative incidence of cause ``c`` by month
``t`` is ``F_c(t) = sum_{k <= t} S(k - 1) h_c(k)`` with ``S(k) = prod_{j <= k} h_none(j)``
(the discrete Aalen-Johansen form). "Any closure" is the sum over the never-overdue
causes: the event the 3-month classifier predicts (an overdue closure competes with it).

Censoring
---------
The only censoring is administrative: a split's months end where the next split's label
months begin (the last month of the world for out-of-time rows), the same for every row
of a snapshot and independent of the borrower. Metrics at a horizon ``t`` are therefore
computed on the rows whose window ``(s, s + t]`` is fully observed (restriction, not
inverse-probability weighting); a horizon no row observes has no figure (None), never an
extrapolated one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from pipeline.base.causes import CAUSES, OVERDUE
from pipeline.core import compiled
from pipeline.core.evaluation import delong
from pipeline.core.metrics import expected_calibration_error

#: Classes of a month: still open, each never-overdue cause, then an overdue closure.
CLASSES: tuple[str, ...] = ("none", *CAUSES, OVERDUE)
N_CLASSES = len(CLASSES)
#: the column holding the month ahead in the model's input (after the snapshot features)
AHEAD = "months_ahead"
#: months with no closure: class 0
NONE = 0
OVERDUE_CLASS = N_CLASSES - 1


@dataclass(frozen=True)
class PersonMonths:
    """The expansion of snapshot rows into months at risk.

    ``row`` indexes the snapshot row, ``ahead`` the month ahead (1-based), ``target`` the
    class of that month, ``weight`` the sampling weight (1 or ``1 / keep``)."""

    row: np.ndarray
    ahead: np.ndarray
    target: np.ndarray
    weight: np.ndarray


def event_of(
    snapshot: np.ndarray, close_month: np.ndarray, close_class: np.ndarray, end_month: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's observed time, status and follow-up: ``(time, status, follow)``.

    ``time`` is the month ahead of the closure when it happened by ``end_month``, else the
    months observed; ``status`` the closure's class (0: still open at the end of the
    observed months, i.e. censored); ``follow`` the months observed had it not closed
    (``end_month - snapshot``)."""
    snapshot = np.asarray(snapshot, dtype=np.int64)
    close_month = np.asarray(close_month, dtype=np.int64)
    end = np.asarray(end_month, dtype=np.int64)
    if np.any(close_month <= snapshot):
        raise ValueError("a snapshot row is closed at or before its snapshot month")
    seen = close_month <= end
    time = np.where(seen, close_month - snapshot, end - snapshot)
    status = np.where(seen, np.asarray(close_class, dtype=np.int64), NONE)
    return time, status, end - snapshot


def person_months(
    time: np.ndarray,
    status: np.ndarray,
    max_ahead: int,
    keep: float = 1.0,
    seed: int = 0,
) -> PersonMonths:
    """Months at risk ``k = 1 .. min(time, max_ahead)`` of every row; the month of a
    closure carries its class. Months without one are kept with probability ``keep``
    (seeded, weight ``1 / keep``); every closure month is kept with weight 1."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must lie in (0, 1], got {keep}")
    time = np.asarray(time, dtype=np.int64)
    status = np.asarray(status, dtype=np.int64)
    n_months = np.clip(time, 0, max_ahead)
    row = np.repeat(np.arange(len(time)), n_months)
    start = np.cumsum(n_months) - n_months
    ahead = np.arange(len(row)) - np.repeat(start, n_months) + 1
    target = np.where(ahead == time[row], status[row], NONE)
    weight = np.ones(len(row))
    if keep < 1:
        rng = np.random.default_rng(seed)
        u = rng.random(len(row))
        kept = (target != NONE) | (u < keep)
        weight = np.where(target != NONE, 1.0, 1.0 / keep)[kept]
        row, ahead, target = row[kept], ahead[kept], target[kept]
    return PersonMonths(row, ahead.astype(np.int64), target.astype(np.int64), weight)


#: rows gathered at a time into the design matrix (bounds the temporary copy)
DESIGN_BLOCK = 1 << 18


def design(X: np.ndarray, ahead: np.ndarray | int, rows: np.ndarray | None = None) -> np.ndarray:
    """The model's input: the snapshot features (of ``X[rows]`` when ``rows`` is given),
    then the month ahead, as float32.

    Written straight into one float32 matrix, ``rows`` gathered a block at a time: the
    person-month table is several times the snapshot rows, and a float64 copy of it (then
    a float32 one, then the matrix) tripled the stage's peak memory."""
    X = np.asarray(X)
    n = len(X) if rows is None else len(rows)
    p = X.shape[1]
    out = np.empty((n, p + 1), dtype=np.float32)
    if rows is None:
        out[:, :p] = X
    else:
        for lo in range(0, n, DESIGN_BLOCK):
            out[lo : lo + DESIGN_BLOCK, :p] = X[rows[lo : lo + DESIGN_BLOCK]]
    out[:, p] = np.broadcast_to(np.asarray(ahead, dtype=np.float32), (n,))
    return out


def lgb_params(
    num_leaves: int,
    learning_rate: float,
    min_child_samples: int,
    feature_fraction: float,
    bagging_fraction: float,
    bagging_freq: int,
    lambda_l2: float,
    max_bin: int,
    threads: int,
    seed: int,
) -> dict[str, Any]:
    """LightGBM parameters of the multiclass hazard model (deterministic)."""
    return {
        "objective": "multiclass",
        "num_class": N_CLASSES,
        "metric": "multi_logloss",
        "num_leaves": num_leaves,
        "learning_rate": learning_rate,
        "min_child_samples": min_child_samples,
        "feature_fraction": feature_fraction,
        "bagging_fraction": bagging_fraction,
        "bagging_freq": bagging_freq,
        "lambda_l2": lambda_l2,
        "max_bin": max_bin,
        "num_threads": threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
    }


def fit(
    X_train: np.ndarray,
    pm_train: PersonMonths,
    X_valid: np.ndarray,
    pm_valid: PersonMonths,
    names: Sequence[str],
    params: dict[str, Any],
    rounds: int,
    early_stopping: int,
    log: dict[str, Any] | None = None,
) -> lgb.Booster:
    """Fit the hazard model on training months, stopping early on validation months.

    The booster returned stops at its best round; ``log`` (when given) receives
    ``rounds_fitted``, the rounds grown before the early stop."""
    if len(pm_train.row) == 0 or not np.any(pm_train.target != NONE):
        raise ValueError("the training months hold no closure: nothing to learn hazards from")
    cols = [*names, AHEAD]
    dtrain = lgb.Dataset(
        design(X_train, pm_train.ahead, pm_train.row),
        label=pm_train.target,
        weight=pm_train.weight,
        feature_name=cols,
        free_raw_data=True,
    )
    valid_sets: list[lgb.Dataset] = []
    callbacks: list[Any] = []
    if len(pm_valid.row) and early_stopping > 0:
        dvalid = lgb.Dataset(
            design(X_valid, pm_valid.ahead, pm_valid.row),
            label=pm_valid.target,
            weight=pm_valid.weight,
            reference=dtrain,
        )
        valid_sets = [dvalid]
        callbacks = [lgb.early_stopping(early_stopping, verbose=False)]
    grown: list[int] = []
    callbacks.append(lambda env: grown.append(env.iteration))
    booster = lgb.train(
        params, dtrain, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks
    )
    if log is not None:
        log["rounds_fitted"] = len(grown)
    return booster


def hazards(
    booster: lgb.Booster, X: np.ndarray, max_ahead: int, follow: np.ndarray | None = None
) -> np.ndarray:
    """Monthly class hazards, shape ``(n, max_ahead, N_CLASSES)``; rows sum to one.

    With ``follow`` (each row's observed months), month ``k`` is predicted only for the
    rows that observe it (``follow >= k``), the others left NaN: a caller that reads a
    month only on the rows observing it (the calibration fit) skips months no row sees.
    A row's hazards do not depend on which other rows are predicted with it."""
    n = len(X)
    out = np.empty((n, max_ahead, N_CLASSES))
    it = booster.best_iteration or None
    for k in range(1, max_ahead + 1):
        rows = slice(None) if follow is None else np.flatnonzero(np.asarray(follow) >= k)
        Xk = X[rows]
        if follow is not None:
            out[:, k - 1] = np.nan
            if len(Xk) == 0:
                continue
        # the compiled predictor: LightGBM's numbers, checked on the first rows
        out[rows, k - 1] = np.asarray(
            compiled.predict(booster, design(Xk, k), num_iteration=it)
        ).reshape(len(Xk), N_CLASSES)
    return out


def class_booster(booster: lgb.Booster, cls: int, num_iteration: int | None = None) -> lgb.Booster:
    """The trees of one class of the multiclass model as a one-output model: its raw
    output and its TreeSHAP values are that class's, equal to the last bit to the
    multiclass model's (the same trees summed in the same order), at a ninth of the cost
    of computing every class."""
    text = booster.model_to_string(num_iteration=num_iteration)
    head, rest = text.split("\nTree=0\n", 1)
    trees, _ = rest.split("\nend of trees\n", 1)
    per_iteration = int(re.search(r"^num_tree_per_iteration=(\d+)$", head, re.M).group(1))  # type: ignore[union-attr]
    blocks = [b for b in ("Tree=0\n" + trees).split("\n\n") if b.strip()]
    mine = [re.sub(r"^Tree=\d+", f"Tree={j}", b) for j, b in enumerate(blocks[cls::per_iteration])]
    for key, value in (("num_class", "1"), ("num_tree_per_iteration", "1")):
        head = re.sub(rf"^{key}=\d+$", f"{key}={value}", head, flags=re.M)
    head = re.sub(r"^objective=.*$", "objective=regression", head, flags=re.M)
    head = re.sub(r"^tree_sizes=.*\n", "", head, flags=re.M)  # sizes of the kept trees differ
    return lgb.Booster(model_str=head + "\n" + "\n\n".join(mine) + "\n\nend of trees\n")


def incidence(h: np.ndarray) -> np.ndarray:
    """Cumulative incidence by month of every closing class, ``(n, K, N_CLASSES - 1)``
    (column ``j`` is class ``j + 1``): ``F_c(t) = sum_{k <= t} S(k-1) h_c(k)``."""
    h = np.asarray(h, dtype=np.float64)
    surv_before = np.cumprod(np.concatenate([np.ones_like(h[:, :1, 0]), h[:, :-1, NONE]], 1), 1)
    return np.cumsum(surv_before[:, :, None] * h[:, :, 1:], axis=1)


def any_closure(cif: np.ndarray) -> np.ndarray:
    """Cumulative incidence of a never-overdue closure (every cause but overdue)."""
    return cif[:, :, : len(CAUSES)].sum(axis=2)


# ---- calibration per month ahead -----------------------------------------------------


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _platt(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Logistic recalibration ``sigmoid(a + b logit p)`` by Newton steps (light L2 on
    ``b - 1`` and ``a`` keeps a near-separable fit finite)."""
    z = _logit(p)
    a, b = 0.0, 1.0
    for _ in range(50):
        q = 1 / (1 + np.exp(-(a + b * z)))
        w = q * (1 - q)
        g = np.array([np.sum(q - y) + 1e-3 * a, np.sum((q - y) * z) + 1e-3 * (b - 1)])
        H = np.array([[w.sum() + 1e-3, (w * z).sum()], [(w * z).sum(), (w * z * z).sum() + 1e-3]])
        step = np.linalg.solve(H, g)
        a, b = a - step[0], b - step[1]
        if np.max(np.abs(step)) < 1e-9:
            break
    return float(a), float(b)


@dataclass(frozen=True)
class Calibration:
    """Per month ahead ``t`` (1-based), ``sigmoid(a + b logit F_any(t))``. A month the
    validation rows do not observe (``fitted`` False) takes the map of the last fitted
    month before it (the curve would jump where the maps stop otherwise); months before
    any fitted one keep the raw output."""

    a: np.ndarray
    b: np.ndarray
    fitted: np.ndarray  # bool per month
    n: np.ndarray  # validation rows behind each month's map

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "platt_per_month",
            "a": self.a.tolist(),
            "b": self.b.tolist(),
            "fitted": self.fitted.tolist(),
            "n": self.n.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(
            np.asarray(d["a"], dtype=np.float64),
            np.asarray(d["b"], dtype=np.float64),
            np.asarray(d["fitted"], dtype=bool),
            np.asarray(d["n"], dtype=np.int64),
        )


def fit_calibration(
    cif: np.ndarray,
    time: np.ndarray,
    status: np.ndarray,
    follow: np.ndarray,
    min_events: int = 10,
) -> Calibration:
    """Fit each month's map on the validation rows that observe that month."""
    K = cif.shape[1]
    F = any_closure(cif)
    a, b = np.zeros(K), np.ones(K)
    fitted, n = np.zeros(K, dtype=bool), np.zeros(K, dtype=np.int64)
    for t in range(1, K + 1):
        obs = observed(follow, t)
        y = event_by(time, status, t)[obs]
        n[t - 1] = int(obs.sum())
        if y.sum() >= min_events and (len(y) - y.sum()) >= min_events:
            a[t - 1], b[t - 1] = _platt(F[obs, t - 1], y.astype(np.float64))
            fitted[t - 1] = True
    return Calibration(a, b, fitted, n)


def carried_maps(cal: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """Each month's map coefficients, an unfitted month carrying the last fitted one."""
    a, b = np.zeros(len(cal.a)), np.ones(len(cal.b))
    last: int | None = None
    for t in range(len(cal.a)):
        if cal.fitted[t]:
            last = t
        if last is not None:
            a[t], b[t] = cal.a[last], cal.b[last]
    return a, b


def calibrate(cif: np.ndarray, cal: Calibration) -> np.ndarray:
    """The calibrated incidences: the any-closure incidence mapped month by month (kept
    non-decreasing in the month), each cause's share of it kept as the model had it."""
    F = any_closure(cif)
    a, b = carried_maps(cal)
    mapped = 1 / (1 + np.exp(-(a[None, :] + b[None, :] * _logit(F))))
    mapped = np.maximum.accumulate(mapped, axis=1)
    scale = np.divide(mapped, F, out=np.ones_like(F), where=F > 0)
    out = cif.copy()
    out[:, :, : len(CAUSES)] *= scale[:, :, None]
    return out


def predicted_incidence(
    booster: lgb.Booster, cal: Calibration, X: np.ndarray, months: int | None = None
) -> np.ndarray:
    """The calibrated cumulative incidences of rows ``X`` by month ``1 .. months``
    (default ``len(cal.a)``, every month the calibration has), ``(n, months,
    N_CLASSES - 1)``: what the survival stage reports, and what scoring, serving and a
    borrower's story return (one function, so they cannot part).

    Month ``t`` reads only the months up to ``t`` (the incidence accumulates forward, an
    unfitted month carries an earlier map, the mapped curve is kept non-decreasing
    forward), so the first ``months`` columns equal those of the full curves to the bit
    and the months after them are not predicted at all."""
    K = len(cal.a) if months is None else int(months)
    if not 1 <= K <= len(cal.a):
        raise ValueError(f"months = {months!r}: the cause model gives months 1 .. {len(cal.a)}")
    head = Calibration(cal.a[:K], cal.b[:K], cal.fitted[:K], cal.n[:K])
    return calibrate(incidence(hazards(booster, X, K)), head)


# ---- curves for scoring, serving and a borrower's story ------------------------------


def curve_columns(cif: np.ndarray, horizons: Sequence[int]) -> dict[str, np.ndarray]:
    """Per horizon ``t``: ``risk_h<t>``, the any-closure incidence (the sum over the
    never-overdue causes, :func:`any_closure`), then ``risk_h<t>_<cause>`` for each cause
    of :data:`~pipeline.base.causes.CAUSES`. An overdue closure (a competing event) has
    no column: it is not a closure the classifier predicts."""
    F = any_closure(cif)
    out: dict[str, np.ndarray] = {}
    for t in horizons:
        out[f"risk_h{t}"] = F[:, t - 1]
        for j, c in enumerate(CAUSES):
            out[f"risk_h{t}_{c}"] = cif[:, t - 1, j]
    return out


def check_horizons(horizons: Any, longest: int, field: str = "horizons") -> list[int]:
    """``horizons`` as whole months ``1 .. longest``, in the order given, each once; a
    ValueError naming ``field`` and the rule otherwise."""
    rule = f"rule: a list of whole months from 1 to {longest}, the months the cause model gives"
    if isinstance(horizons, (str, bytes)) or not isinstance(horizons, (Sequence, np.ndarray)):
        raise ValueError(f"{field} = {horizons!r} is not a list ({rule})")
    out: list[int] = []
    for h in horizons:
        ok = isinstance(h, (int, np.integer)) and not isinstance(h, (bool, np.bool_))
        if not ok and isinstance(h, (float, np.floating)) and float(h).is_integer():
            h, ok = int(h), True
        if not ok:
            raise ValueError(f"{field} holds {h!r}, not a whole number of months ({rule})")
        if not 1 <= int(h) <= longest:
            raise ValueError(f"{field} holds {int(h)}, outside 1 .. {longest} ({rule})")
        if int(h) not in out:
            out.append(int(h))
    if not out:
        raise ValueError(f"{field} is empty ({rule})")
    return out


@dataclass(frozen=True)
class CauseModel:
    """The published competing-risks model, ready to give curves.

    ``horizons``: the stage's ``model.horizons``; ``validated``: those the out-of-time
    rows observe (the others have no figure in the stage's evaluation); the model gives
    every month ``1 .. longest`` (``longest`` = the last month of its calibration).
    ``stamp``: the digest of the classifier it was fitted beside."""

    booster: lgb.Booster
    calibration: Calibration
    names: list[str]
    horizons: list[int]
    validated: list[int]
    stamp: str | None = None
    why_not_validated: dict[int, str] | None = None

    @property
    def longest(self) -> int:
        return len(self.calibration.a)

    def curves(self, X: np.ndarray, horizons: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """:func:`curve_columns` of rows ``X`` (the classifier's features, in its order) at
        ``horizons`` (default: the stage's)."""
        hs = self.horizons if horizons is None else check_horizons(horizons, self.longest)
        # only the months up to the last horizon are predicted (the others cost as much
        # each and change nothing before them)
        cif = predicted_incidence(self.booster, self.calibration, X, max(hs))
        return curve_columns(cif, hs)

    def spec(self) -> dict[str, Any]:
        """What, beside the booster's text, rebuilds the model (:meth:`from_spec`)."""
        return {
            "calibration": self.calibration.to_dict(),
            "names": list(self.names),
            "horizons": list(self.horizons),
            "validated": list(self.validated),
            "stamp": self.stamp,
            "why_not_validated": {str(k): v for k, v in (self.why_not_validated or {}).items()},
        }

    @classmethod
    def from_spec(cls, booster: lgb.Booster, spec: dict[str, Any]) -> CauseModel:
        names = [str(n) for n in spec["names"]]
        if list(booster.feature_name()) != [*names, AHEAD]:
            raise ValueError(
                f"the cause model reads {booster.feature_name()}, not the features "
                f"{names} followed by '{AHEAD}'"
            )
        return cls(
            booster,
            Calibration.from_dict(spec["calibration"]),
            names,
            [int(t) for t in spec["horizons"]],
            [int(t) for t in spec["validated"]],
            spec.get("stamp"),
            {int(k): str(v) for k, v in (spec.get("why_not_validated") or {}).items()},
        )


def spec_of_evaluation(
    ev: dict[str, Any], names: Sequence[str], stamp: str | None
) -> dict[str, Any]:
    """The :meth:`CauseModel.spec` the survival stage's ``evaluation.json`` records: its
    calibration maps, its horizons and which of them the out-of-time rows observe."""
    by_h = ev["by_horizon"]
    return {
        "calibration": ev["calibration"],
        "names": list(names),
        "horizons": [int(t) for t in ev["horizons"]],
        "validated": [int(t) for t in ev["horizons"] if "td_auc" in by_h[str(t)]],
        "stamp": stamp,
        "why_not_validated": {
            str(t): str(by_h[str(t)].get("why_none", ""))
            for t in ev["horizons"]
            if "td_auc" not in by_h[str(t)]
        },
    }


# ---- observed outcomes ---------------------------------------------------------------


def observed(follow: np.ndarray, t: int) -> np.ndarray:
    """Rows whose window ``(s, s + t]`` lies inside their observed months (``follow``,
    the months from the snapshot to the split's last month). The follow-up is fixed by
    the calendar, known for every row whether it closed or not, so keeping these rows
    selects on the snapshot month only, never on the outcome."""
    return np.asarray(follow) >= t


def event_by(time: np.ndarray, status: np.ndarray, t: int, cause: int | None = None) -> np.ndarray:
    """A never-overdue closure (or one of ``cause``, a class index) by month ``t``."""
    time, status = np.asarray(time), np.asarray(status)
    hit = (status != NONE) & (status != OVERDUE_CLASS) if cause is None else status == cause
    return hit & (time <= t)


def aalen_johansen(time: np.ndarray, status: np.ndarray, max_t: int) -> np.ndarray:
    """Observed cumulative incidence of every closing class by month, ``(max_t,
    N_CLASSES - 1)``, from censored rows (Aalen-Johansen; discrete months, a row censored
    at ``t`` is at risk through month ``t``). NaN from the first month no row is at risk."""
    time, status = np.asarray(time), np.asarray(status)
    out = np.full((max_t, N_CLASSES - 1), np.nan)
    surv, cum = 1.0, np.zeros(N_CLASSES - 1)
    for t in range(1, max_t + 1):
        at_risk = int((time >= t).sum())
        if at_risk == 0:
            break
        d = np.bincount(status[(time == t) & (status != NONE)], minlength=N_CLASSES)[1:]
        cum = cum + surv * d / at_risk
        surv *= 1 - d.sum() / at_risk
        out[t - 1] = cum
    return out


# ---- evaluation ----------------------------------------------------------------------


def _bootstrap_se(stat: Any, n: int, reps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(reps):
        v = stat(rng.integers(0, n, n))
        if np.isfinite(v):
            vals.append(v)
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")


def c_index(risk: np.ndarray, time: np.ndarray, status: np.ndarray, horizon: int) -> float:
    """Time-truncated concordance for a never-overdue closure: over pairs where ``i``
    closes at month ``T_i <= horizon`` and ``j`` is known to be event-free past ``T_i``
    (open beyond it, closed later, censored at or after ``T_i``, or closed overdue, a
    competing event treated as never having the event), the share with ``risk_i >
    risk_j`` (ties one half). Same-month pairs are not comparable."""
    risk, time, status = np.asarray(risk), np.asarray(time), np.asarray(status)
    case = (status != NONE) & (status != OVERDUE_CLASS)
    free_past = np.where(
        case, time - 0.5, np.where(status == OVERDUE_CLASS, np.inf, time + 0.5)
    )  # j is event-free through month floor(free_past)
    num = den = 0.0
    for t in range(1, horizon + 1):
        cases = risk[case & (time == t)]
        if len(cases) == 0:
            continue
        ctrl = np.sort(risk[free_past > t])
        if len(ctrl) == 0:
            continue
        lo = np.searchsorted(ctrl, cases, side="left")
        hi = np.searchsorted(ctrl, cases, side="right")
        num += float(lo.sum() + 0.5 * (hi - lo).sum())
        den += float(len(cases) * len(ctrl))
    return num / den if den else float("nan")


def brier(F: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(y, dtype=np.float64) - F) ** 2)) if len(y) else float("nan")


def _horizon_record(
    cif: np.ndarray,
    F: np.ndarray,
    aj: np.ndarray,
    time: np.ndarray,
    status: np.ndarray,
    follow: np.ndarray,
    t: int,
    n_bins: int,
    reps: int,
    seed: int,
) -> dict[str, Any]:
    """The figures of one horizon (see :func:`evaluate`)."""
    obs = observed(follow, t)
    y = event_by(time, status, t)[obs]
    p = F[obs, t - 1] if t <= F.shape[1] else np.zeros(0)
    rec: dict[str, Any] = {"n": int(obs.sum()), "events": int(y.sum())}
    if y.sum() >= 2 and len(y) - y.sum() >= 2:
        auc, cov = delong(y, [p])
        rec["td_auc"] = float(auc[0])
        rec["td_auc_se"] = float(np.sqrt(cov[0, 0]))
        sub_t, sub_s = np.asarray(time)[obs], np.asarray(status)[obs]
        rec["c_index"] = c_index(p, sub_t, sub_s, t)
        rec["c_index_se"] = _bootstrap_se(
            lambda i: c_index(p[i], sub_t[i], sub_s[i], t), len(p), reps, seed
        )
        rec["brier"] = brier(p, y)
        rec["brier_se"] = float(np.std((y - p) ** 2, ddof=1) / np.sqrt(len(y)))
        rec["ece"] = expected_calibration_error(y, p, n_bins)
        rec["ece_se"] = _bootstrap_se(
            lambda i: expected_calibration_error(y[i], p[i], n_bins), len(p), reps, seed + 1
        )
        rec["mean_predicted"] = float(p.mean())
        rec["observed_rate"] = float(y.mean())
    else:
        rec["why_none"] = (
            "no row observes this horizon (the world ends first)"
            if not obs.any()
            else "fewer than two events or non-events among the rows observing it"
        )
    if t <= len(aj) and np.isfinite(aj[t - 1]).all():
        rec["by_cause"] = {
            c: {
                "predicted": float(cif[:, t - 1, j].mean()),
                "observed_aalen_johansen": float(aj[t - 1, j]),
            }
            for j, c in enumerate(CLASSES[1:])
        }
    return rec


def _integrated_brier(
    F: np.ndarray,
    time: np.ndarray,
    status: np.ndarray,
    follow: np.ndarray,
    last: int,
    reps: int,
    seed: int,
) -> dict[str, Any]:
    """Mean of the monthly Brier scores over the months 1 .. ``last`` some row observes,
    each on the rows observing it; bootstrap standard error over rows."""
    time, status, follow = np.asarray(time), np.asarray(status), np.asarray(follow)
    months = [t for t in range(1, min(last, F.shape[1]) + 1) if observed(follow, t).any()]

    def by_month(i: np.ndarray) -> list[float]:
        vals = []
        for m in months:
            o = observed(follow[i], m)
            if o.any():
                vals.append(brier(F[i][o, m - 1], event_by(time[i], status[i], m)[o]))
        return vals

    everyone = np.arange(len(F))
    scores = by_month(everyone)
    if not scores:
        return {"ibs": None, "se": None, "months": [], "n_by_month": [], "brier_by_month": []}
    se = _bootstrap_se(lambda i: float(np.mean(by_month(i))), len(F), reps, seed)
    return {
        "ibs": float(np.mean(scores)),
        "se": se,
        "months": months,
        "n_by_month": [int(observed(follow, m).sum()) for m in months],
        "brier_by_month": scores,
    }


def evaluate(
    cif: np.ndarray,
    time: np.ndarray,
    status: np.ndarray,
    follow: np.ndarray,
    horizons: Sequence[int],
    n_bins: int = 10,
    reps: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """The survival figures on rows with observed times (out-of-time rows).

    Per horizon ``t``: time-dependent AUC (cumulative cases, every other row a control,
    DeLong standard error), the time-truncated C-index, the Brier score and the
    calibration error (equal-count bins) of the any-closure incidence, each on the rows
    observing ``t`` (bootstrap standard errors over rows for the C-index and ECE), and per
    cause the mean predicted against the observed (Aalen-Johansen) incidence on every row.
    The integrated Brier score is the mean of the monthly Brier scores over the months
    1 .. max(horizons) that some row observes (``ibs.months`` lists them).
    """
    F = any_closure(cif)
    K = cif.shape[1]
    aj = aalen_johansen(time, status, K)
    by_h = {
        str(t): _horizon_record(cif, F, aj, time, status, follow, t, n_bins, reps, seed)
        for t in horizons
    }
    return {
        "horizons": [int(t) for t in horizons],
        "td_auc": {
            t: {"auc": r["td_auc"], "se": r["td_auc_se"], "n": r["n"], "events": r["events"]}
            if "td_auc" in r
            else None
            for t, r in by_h.items()
        },
        "ibs": _integrated_brier(F, time, status, follow, max(horizons), reps, seed + 2),
        "ece_by_horizon": {
            t: {"ece": r["ece"], "se": r["ece_se"], "n": r["n"]} if "ece" in r else None
            for t, r in by_h.items()
        },
        "by_horizon": by_h,
        "observed_incidence": {
            c: [None if not np.isfinite(v) else float(v) for v in aj[:, j]]
            for j, c in enumerate(CLASSES[1:])
        },
        "predicted_incidence": {
            c: [float(v) for v in cif[:, :, j].mean(axis=0)] for j, c in enumerate(CLASSES[1:])
        },
    }


# ---- reasons and the leaderboard -----------------------------------------------------


def cause_ranking(cif_h: np.ndarray) -> np.ndarray:
    """Causes (indices into :data:`CAUSES`) ranked per row by predicted incidence at the
    chosen horizon, largest first; ties by cause order. ``cif_h`` is ``(n, >= len(CAUSES))``."""
    return np.argsort(-np.asarray(cif_h)[:, : len(CAUSES)], axis=1, kind="stable")


def ranked_reasons(order: np.ndarray, top_k: int = 3) -> dict[str, np.ndarray]:
    """``reason_<r>_cause`` columns from a ranking (as the fidelity functions read them)."""
    names = np.asarray(CAUSES, dtype=object)
    return {f"reason_{r + 1}_cause": names[order[:, r]] for r in range(min(top_k, order.shape[1]))}


def hit_rates(reasons: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, float]:
    """Top-1 and top-3 hit rates against the true cause, with binomial standard errors."""
    truth = np.asarray(truth, dtype=object)
    n = len(truth)
    hit1 = np.asarray(reasons["reason_1_cause"], dtype=object) == truth
    hit3 = hit1.copy()
    for r in (2, 3):
        if f"reason_{r}_cause" in reasons:
            hit3 |= np.asarray(reasons[f"reason_{r}_cause"], dtype=object) == truth
    out: dict[str, float] = {"n": n}
    for name, hit in (("top1", hit1), ("top3", hit3)):
        m = float(hit.mean()) if n else float("nan")
        out[name] = m
        out[f"{name}_se"] = float(np.sqrt(m * (1 - m) / n)) if n > 1 else float("nan")
    return out


def paired_se(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of the mean of ``a - b`` (paired hits on the same rows)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def top_features(
    contrib: np.ndarray, names: Sequence[str], k: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` features with the largest positive SHAP values (names, values;
    "" and 0 where fewer than ``k`` raise the output)."""
    phi = np.asarray(contrib)[:, : len(names)]
    order = np.argsort(-phi, axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(phi, order, axis=1)
    labels = np.asarray(names, dtype=object)[order]
    return np.where(vals > 0, labels, ""), np.where(vals > 0, vals, 0.0)


def _by_cause(reasons: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, Any]:
    out = {}
    for c in CAUSES:
        mask = truth == c
        if mask.any():
            sub = {k: np.asarray(v)[mask] for k, v in reasons.items() if k.endswith("_cause")}
            out[c] = hit_rates(sub, truth[mask])
    return out


def leaderboard(
    explainers: dict[str, dict[str, np.ndarray]],
    truth: np.ndarray,
    paired: tuple[np.ndarray, dict[str, np.ndarray]] | None,
) -> list[dict[str, Any]]:
    """Each explainer's ``reason_<r>_cause`` columns graded against the true causes.

    With ``paired`` (positions of the closures that have oracle futures, and the oracle's
    ranking of their causes): ``top1``/``top3``/``n`` on those closures beside the
    oracle's ``ceiling_top1`` on the very same rows, ``gap_se`` the paired standard error
    of the explainer's top-1 minus the ceiling's, ``by_cause`` there too. ``all_*`` are on
    every closure. Standard errors are binomial."""
    truth = np.asarray(truth, dtype=object)
    board = []
    for name, reasons in explainers.items():
        rec: dict[str, Any] = {"name": name}
        every = hit_rates(reasons, truth)
        rec.update({f"all_{k}": v for k, v in every.items()})
        if paired is None:
            rec.update({k: every[k] for k in ("top1", "top1_se", "top3", "top3_se", "n")})
            rec["ceiling_top1"] = None
            rec["by_cause"] = _by_cause(reasons, truth)
            board.append(rec)
            continue
        at, ceiling = paired
        sub = {k: np.asarray(v)[at] for k, v in reasons.items() if k.endswith("_cause")}
        mine = hit_rates(sub, truth[at])
        ceil = hit_rates(ceiling, truth[at])
        hit = np.asarray(sub["reason_1_cause"], dtype=object) == truth[at]
        chit = np.asarray(ceiling["reason_1_cause"], dtype=object) == truth[at]
        rec.update({k: mine[k] for k in ("top1", "top1_se", "top3", "top3_se", "n")})
        rec.update(
            ceiling_top1=ceil["top1"],
            ceiling_top1_se=ceil["top1_se"],
            ceiling_top3=ceil["top3"],
            ratio_to_ceiling=mine["top1"] / ceil["top1"] if ceil["top1"] else None,
            gap_se=paired_se(hit, chit),
        )
        by = _by_cause(sub, truth[at])
        cby = _by_cause(ceiling, truth[at])
        for c, v in by.items():
            v["ceiling_top1"] = cby[c]["top1"]
        rec["by_cause"] = by
        board.append(rec)
    return board
