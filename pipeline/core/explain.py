"""Explanation core: exact TreeSHAP contributions, cause-level reason codes, fidelity.

Everything here is pure: arrays and names in, arrays and tables out. The runner
(:mod:`pipeline.stages.explain`) reads the model and the feature table, calls these
functions, writes the outputs and logs them.

Reason codes
------------
A feature's SHAP value (log-odds, positive class) is split among the closure causes by
a weight matrix ``W`` of shape ``(p, C + 1)`` whose rows sum to one (the last column,
``profile``, holds features that bear on no cause, such as income or age; it is never
a reason). A cause's score for a row is ``sum_j phi_j * W[j, c]``, so the scores of a
row add up to its SHAP total, and the top reasons are the causes with the largest
positive scores. Three ways to build ``W``:

* ``primary``: all of a feature's value goes to its primary (first listed) cause;
* ``registry``: split among the causes the registry lists for the feature, with
  weights halving down the list (two causes: 2/3 and 1/3);
* ``learned``: fitted on labelled closures of the training split only: the rows of
  ``W`` are softmax-parameterised (non-negative, summing to one) and chosen so that the
  highest-scoring cause matches the recorded cause as often as possible (multinomial
  likelihood with a fitted temperature capped at 10, light L2 on the logits). ``support`` says which
  causes a feature may feed: those the registry lists, or every cause (features
  without any registry cause stay in ``profile`` either way).

Optionally SHAP values are contrasted with a reference population (``reference``):
the mean SHAP vector of the reference rows is subtracted first, so that a shift shared
by everyone scored (e.g. all out-of-time accounts are older than the training ones)
does not become everyone's reason. For a model that is additive in its features this
equals interventional SHAP against that population; for trees it is an approximation.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.optimize import minimize

from pipeline.base.causes import CAUSE_TEXT, CAUSES
from pipeline.base.registry import BY_NAME, risk_side
from pipeline.core.labels import Labels, number_texts
from pipeline.core.treeshap import TreeShap, supports

#: Columns of a cause matrix: the studied causes, then ``profile`` (never a reason).
CAUSE_COLUMNS: tuple[str, ...] = (*CAUSES, "profile")
PROFILE = len(CAUSES)
SUPPORTS = ("registry", "all")


def contributions(
    booster: lgb.Booster, X: np.ndarray, n_threads: int = 0
) -> tuple[np.ndarray, str]:
    """SHAP values in log-odds, shape ``(n, p + 1)``, last column the expected value.

    Uses the project's exact TreeSHAP where the model allows it, LightGBM's own
    ``pred_contrib`` (the same path-dependent algorithm) otherwise or when the fast
    path fails (a warning says why). Returns the values and the name of the method.
    """
    X = np.asarray(X)
    if supports(booster):
        try:
            ts = TreeShap(booster)
            kwargs = {"n_threads": n_threads} if n_threads else {}
            return np.asarray(ts.shap_values(X, **kwargs), dtype=np.float64), "treeshap"
        except Exception as exc:  # noqa: BLE001 - a broken fast path must not stop the explanations; warned
            warnings.warn(
                f"fast TreeSHAP failed ({exc!r}); using LightGBM pred_contrib", stacklevel=2
            )
    num_iteration = booster.best_iteration or None
    contrib = booster.predict(X, pred_contrib=True, num_iteration=num_iteration)
    return np.asarray(contrib, dtype=np.float64), "lightgbm_pred_contrib"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def probability_contributions(contrib: np.ndarray) -> np.ndarray:
    """Probability-space contributions by proportional scaling (an approximation).

    Each log-odds contribution is multiplied by ``(sigmoid(f) - sigmoid(b)) / (f - b)``
    where ``f`` is the row's log-odds and ``b`` the expected value, so the values add up
    exactly to the gap between the row's probability and the base probability, keep
    their signs and their ratios. Where ``f`` is within 1e-9 of ``b`` the slope of the
    sigmoid at ``b`` is used. The last column becomes the base probability. This is not
    the exact interventional Shapley value of the probability output.
    """
    phi = contrib[:, :-1]
    base = contrib[:, -1]
    f = contrib.sum(axis=1)
    gap = f - base
    pb = _sigmoid(base)
    slope = np.where(
        np.abs(gap) > 1e-9,
        (_sigmoid(f) - pb) / np.where(np.abs(gap) > 1e-9, gap, 1.0),
        pb * (1.0 - pb),
    )
    return np.column_stack([phi * slope[:, None], pb])


# ---- feature -> cause weights ------------------------------------------------------


def _cause_index(feature: str) -> list[int]:
    f = BY_NAME.get(feature)
    if f is None:
        return []
    return [CAUSES.index(c) for c in f.causes if c in CAUSES]


def attribution_matrix(feature_names: Sequence[str], method: str = "registry") -> np.ndarray:
    """``W`` of shape ``(p, C + 1)`` for the fixed methods ``primary`` and ``registry``."""
    if method not in ("primary", "registry"):
        raise ValueError(f"unknown fixed attribution {method!r}; use 'primary' or 'registry'")
    W = np.zeros((len(feature_names), len(CAUSE_COLUMNS)))
    for j, name in enumerate(feature_names):
        idx = _cause_index(name)
        if not idx:
            W[j, PROFILE] = 1.0
        elif method == "primary":
            W[j, idx[0]] = 1.0
        else:
            w = 0.5 ** np.arange(len(idx))
            W[j, idx] = w / w.sum()
    return W


def support_matrix(feature_names: Sequence[str], support: str = "all") -> np.ndarray:
    """Which causes each feature may feed: boolean ``(p, C + 1)``."""
    if support not in SUPPORTS:
        raise ValueError(f"unknown support {support!r}; known: {', '.join(SUPPORTS)}")
    S = np.zeros((len(feature_names), len(CAUSE_COLUMNS)), dtype=bool)
    for j, name in enumerate(feature_names):
        idx = _cause_index(name)
        if not idx:
            S[j, PROFILE] = True
        elif support == "all":
            S[j, :PROFILE] = True
        else:
            S[j, idx] = True
    return S


def registry_weights(W: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
    """``W`` kept to the links of the registry: what a reason may cite.

    A feature's weight on a cause that the registry does not link it to is moved to the
    causes it is linked to, in proportion to their weights there (by the registry split
    where all of its weight was elsewhere); features without a registry cause go to
    ``profile``. Weights learned within the links keep their balance; rows still sum
    to one.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.shape != (len(feature_names), len(CAUSE_COLUMNS)):
        raise ValueError(
            f"cause weights have shape {W.shape}; expected "
            f"({len(feature_names)}, {len(CAUSE_COLUMNS)}) for the features and causes"
        )
    S = support_matrix(feature_names, "registry")
    kept = np.where(S, np.clip(W, 0.0, None), 0.0)
    total = kept.sum(axis=1, keepdims=True)
    fallback = attribution_matrix(feature_names, "registry")
    return np.where(total > 0, kept / np.where(total > 0, total, 1.0), fallback)


_TMAX = 10.0  # largest softmax temperature of the learned split (per log-odds unit)


@dataclass
class LearnedWeights:
    W: np.ndarray  # (p, C + 1)
    temperature: float
    n_rows: int
    train_top1: float
    causes_seen: list[str]


def fit_cause_weights(
    phi: np.ndarray,
    causes: Sequence[str],
    feature_names: Sequence[str],
    support: str = "all",
    l2: float = 1e-4,
    max_iter: int = 500,
    max_temperature: float | None = None,
) -> LearnedWeights:
    """Learn ``W`` from SHAP values ``phi`` (n, p) of closures with recorded ``causes``.

    Meant for the training split only. Rows with a cause outside the studied ones are
    ignored. The fit is deterministic (L-BFGS from a zero start: the uniform split).
    """
    phi = np.asarray(phi, dtype=np.float64)
    n_feat = len(feature_names)
    if phi.shape[1] != n_feat:
        raise ValueError(f"phi has {phi.shape[1]} columns for {n_feat} features")
    code = {c: i for i, c in enumerate(CAUSES)}
    y = np.array([code.get(str(c), -1) for c in causes], dtype=np.int64)
    keep = y >= 0
    X, y = phi[keep], y[keep]
    n = len(y)
    if n == 0 or len(np.unique(y)) < 2:
        raise ValueError("need labelled closures of at least two causes to learn weights")
    S = support_matrix(feature_names, support)
    k = len(CAUSE_COLUMNS)
    Y = np.zeros((n, k))
    Y[np.arange(n), y] = 1.0
    neg = np.where(S, 0.0, -np.inf)

    def weights(A: np.ndarray) -> np.ndarray:
        Z = A + neg
        Z = Z - Z.max(axis=1, keepdims=True)
        E = np.where(S, np.exp(np.where(S, Z, 0.0)), 0.0)
        return E / E.sum(axis=1, keepdims=True)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        A = theta[:-1].reshape(n_feat, k)
        t = float(np.exp(theta[-1]))
        W = weights(A)
        M = X @ W
        Sc = t * M
        Sc[:, PROFILE] = -np.inf  # profile is never a cause
        Sc = Sc - Sc.max(axis=1, keepdims=True)
        P = np.exp(Sc)
        P /= P.sum(axis=1, keepdims=True)
        loss = -np.log(P[np.arange(n), y] + 1e-300).mean() + l2 * float((A[S] ** 2).sum())
        G = (P - Y) / n
        G[:, PROFILE] = 0.0
        dW = t * (X.T @ G)
        dA = W * (dW - (dW * W).sum(axis=1, keepdims=True))
        dA = np.where(S, dA + 2 * l2 * A, 0.0)
        dt = float((G * M).sum()) * t
        return loss, np.concatenate([dA.ravel(), [dt]])

    # the temperature is capped: without a cap a separable fit grows it without bound
    # and ranks causes by tiny departures from the uniform split
    t_max = float(max_temperature if max_temperature is not None else _TMAX)
    res = minimize(
        objective,
        np.zeros(n_feat * k + 1),
        jac=True,
        method="L-BFGS-B",
        bounds=[(None, None)] * (n_feat * k) + [(None, float(np.log(t_max)))],
        options={"maxiter": max_iter},
    )
    W = weights(res.x[:-1].reshape(n_feat, k))
    scores = X @ W
    scores[:, PROFILE] = -np.inf
    top1 = float((scores.argmax(axis=1) == y).mean())
    return LearnedWeights(
        W=W,
        temperature=float(np.exp(res.x[-1])),
        n_rows=int(n),
        train_top1=top1,
        causes_seen=[CAUSES[i] for i in np.unique(y)],
    )


# ---- reason codes ------------------------------------------------------------------


def reference_shift(phi: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Mean SHAP vector of the reference rows, per row (``(n, p)``), by group if given."""
    shift = np.zeros_like(phi)
    if len(phi) == 0:
        return shift
    if groups is None:
        shift[:] = phi.mean(axis=0)
        return shift
    keys, inv = np.unique(groups, return_inverse=True)
    for g in range(len(keys)):
        m = inv == g
        shift[m] = phi[m].mean(axis=0)
    return shift


#: How many of a row's largest positive contributions a reason may cite from: a feature
#: outside them is not what drives the row, however its cause adds up.
REASON_POOL = 5


def risk_sides(feature_names: Sequence[str]) -> np.ndarray:
    """``(p, C)``: the registry's side (+1, -1, 0) of each feature's value for each cause."""
    D = np.zeros((len(feature_names), len(CAUSES)), dtype=np.int8)
    for j, name in enumerate(feature_names):
        for c, cause in enumerate(CAUSES):
            D[j, c] = risk_side(name, cause)
    return D


def feature_reference(X: np.ndarray) -> np.ndarray:
    """The value each feature is compared with for its risky side: the median of the rows
    (the train stage saves the training rows' medians with the model)."""
    X = np.asarray(X, dtype=np.float64)
    if len(X) == 0:
        return np.full(X.shape[1], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: NaN
        return np.nanmedian(X, axis=0)


def _text(cause: str, zh_f: str, en_f: str, v: str) -> tuple[str, str]:
    if not cause:
        return "", ""
    return f"{CAUSE_TEXT[cause][0]}（{zh_f}：{v}）", f"{CAUSE_TEXT[cause][1]} ({en_f}: {v})"


def _cause_sentence(cause: np.ndarray, i: int, zh_f: str, en_f: str, v: str) -> tuple[str, str]:
    """Row ``i``'s reason sentences: its cause (``cause[i]``, "" for none) and the cited
    feature's names and value text."""
    return _text(str(cause[i]), zh_f, en_f, v)


def _sentences(
    ok: np.ndarray,
    zh_f: np.ndarray,
    en_f: np.ndarray,
    value: np.ndarray,
    write: Callable[[int, str, str, str], tuple[str, str]],
) -> tuple[np.ndarray, np.ndarray]:
    """One rank's Chinese and English sentences: ``write(row, zh name, en name, value
    text)`` for each row that has something to say there (``ok``); the others read ""."""
    n = len(ok)
    zh, en = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
    said = np.flatnonzero(ok)
    for i, zf, ef, v in zip(said, zh_f[said], en_f[said], number_texts(value[said]), strict=True):
        zh[i], en[i] = write(int(i), zf, ef, v)
    return zh, en


#: what a row under the lowest tier cut-off is told instead of closure reasons
NO_CONCERN = ("无关闭风险", "no closure concern")


def reference_medians(meta: dict[str, Any], names: Sequence[str]) -> np.ndarray | None:
    """The training rows' median of each feature saved with the model (model.json
    ``reference``): what :func:`reason_codes` reads a risky side against; None for a
    model saved without one."""
    ref = meta.get("reference")
    if not isinstance(ref, dict):
        return None
    return np.array(
        [np.nan if ref.get(n) is None else float(ref[n]) for n in names], dtype=np.float64
    )


def reason_codes(
    contrib: np.ndarray,
    X: np.ndarray,
    feature_names: Sequence[str],
    top_k: int = 3,
    W: np.ndarray | None = None,
    shift: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    prob: np.ndarray | None = None,
    floor: float | None = None,
    pool: int = REASON_POOL,
) -> dict[str, np.ndarray]:
    """Top ``top_k`` closure reasons per row, as columns, and what a low-risk row reads.

    A reason cites a feature ``j`` for a cause ``c`` only when, for that row,

    * its contribution raises the risk: SHAP ``phi_j > 0`` (and still so after the
      reference ``shift``, where one is given);
    * it is among the row's ``pool`` largest positive contributions;
    * its value lies on the risky side the registry declares for ``c``
      (:data:`pipeline.base.registry.RISK_SIDES`) against ``reference`` (the training
      rows' medians; without it, the medians of ``X``): above it for ``+``, below it for
      ``-``; a missing value or a link without a declared side is never cited;
    * the registry links ``j`` to ``c`` (``W`` is first kept to the links,
      :func:`registry_weights`).

    A cause's score is the sum of ``phi_j * W[j, c]`` over the features it may cite, the
    causes with the largest positive scores are the reasons, and each cites its largest
    share. Where fewer than ``top_k`` causes qualify the remaining ranks are empty (cause,
    feature and sentences ``""``, SHAP 0, value NaN).

    With ``prob`` and ``floor`` (the lowest tier cut-off), a row with ``prob < floor``
    gets no closure reasons: ``closure_concern`` is False, and ``protect_<r>_*`` name its
    ``top_k`` strongest protective factors (the most negative contributions, any
    feature) after the words "no closure concern". Rows at or above the floor have
    empty protective columns.
    """
    n, p = X.shape
    if W is None:
        W = attribution_matrix(feature_names, "primary")
    W = registry_weights(W, feature_names)
    raw = np.asarray(contrib[:, :p], dtype=np.float64)
    phi = raw if shift is None else raw - shift
    Xf = np.asarray(X, dtype=np.float64)
    ref = feature_reference(Xf) if reference is None else np.asarray(reference, dtype=np.float64)
    if ref.shape != (p,):
        raise ValueError(f"reference has shape {ref.shape}; expected ({p},), one per feature")
    concern = np.ones(n, dtype=bool)
    if prob is not None and floor is not None:
        concern = ~(np.asarray(prob, dtype=np.float64) < float(floor))
    # the row's largest positive contributions
    up = (phi > 0) & (raw > 0)
    ranked = np.argsort(-np.where(up, phi, -np.inf), axis=1, kind="stable")[:, : max(pool, 0)]
    in_pool = np.zeros((n, p), dtype=bool)
    np.put_along_axis(in_pool, ranked, True, axis=1)
    in_pool &= up & concern[:, None]
    D = risk_sides(feature_names)
    above = Xf > ref[None, :]
    below = Xf < ref[None, :]  # NaN compares False on both sides
    n_c = len(CAUSES)
    scores = np.zeros((n, n_c))
    best = np.zeros((n, n_c), dtype=np.int64)
    rows = np.arange(n)
    for c in range(n_c):
        side = np.where(D[:, c] > 0, above, np.where(D[:, c] < 0, below, False))
        share = np.where(in_pool & side & (W[:, c] > 0)[None, :], phi * W[:, c][None, :], 0.0)
        scores[:, c] = share.sum(axis=1)
        best[:, c] = np.argmax(share, axis=1)
    k = min(top_k, n_c)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    names = np.asarray(feature_names, dtype=object)
    causes = np.asarray(CAUSE_COLUMNS, dtype=object)
    zh_f = np.array([BY_NAME[f].zh if f in BY_NAME else f for f in feature_names], dtype=object)
    en_f = np.array([BY_NAME[f].en if f in BY_NAME else f for f in feature_names], dtype=object)
    out: dict[str, np.ndarray] = {}
    for r in range(k):
        ci = order[:, r]
        score = scores[rows, ci]
        fj = best[rows, ci]
        ok = score > 0
        cause = np.where(ok, causes[ci], "").astype(object)
        value = np.where(ok, Xf[rows, fj], np.nan)
        zh, en = _sentences(
            ok,
            zh_f[fj],
            en_f[fj],
            value,
            functools.partial(_cause_sentence, cause),
        )
        out[f"reason_{r + 1}_cause"] = cause
        out[f"reason_{r + 1}_shap"] = np.where(ok, score, 0.0)
        out[f"reason_{r + 1}_feature"] = np.where(ok, names[fj], "").astype(object)
        out[f"reason_{r + 1}_value"] = value
        out[f"reason_{r + 1}_feature_shap"] = np.where(ok, phi[rows, fj], 0.0)
        out[f"reason_{r + 1}_zh"] = zh
        out[f"reason_{r + 1}_en"] = en
    out["closure_concern"] = concern
    out.update(_protective(raw, Xf, feature_names, top_k, ~concern, zh_f, en_f))
    return out


def _protective(
    raw: np.ndarray,
    X: np.ndarray,
    feature_names: Sequence[str],
    top_k: int,
    rows_on: np.ndarray,
    zh_f: np.ndarray,
    en_f: np.ndarray,
) -> dict[str, np.ndarray]:
    """``protect_<r>_*``: the ``top_k`` most negative contributions of the rows ``rows_on``."""
    n, p = raw.shape
    k = min(top_k, p)
    order = np.argsort(raw, axis=1, kind="stable")[:, :k]
    rows = np.arange(n)
    names = np.asarray(feature_names, dtype=object)
    out: dict[str, np.ndarray] = {}
    for r in range(k):
        fj = order[:, r]
        val = raw[rows, fj]
        ok = rows_on & (val < 0)
        value = np.where(ok, X[rows, fj], np.nan)
        zh, en = _sentences(
            ok,
            zh_f[fj],
            en_f[fj],
            value,
            lambda _, z, e, v: (
                f"{NO_CONCERN[0]}：{z}（{v}）降低风险",
                f"{NO_CONCERN[1]}: {e} ({v}) lowers the risk",
            ),
        )
        out[f"protect_{r + 1}_feature"] = np.where(ok, names[fj], "").astype(object)
        out[f"protect_{r + 1}_value"] = value
        out[f"protect_{r + 1}_shap"] = np.where(ok, val, 0.0)
        out[f"protect_{r + 1}_zh"] = zh
        out[f"protect_{r + 1}_en"] = en
    return out


def feature_reasons(
    contrib: np.ndarray,
    X: np.ndarray,
    feature_names: Sequence[str],
    top_k: int = 3,
    labels: Labels | None = None,
) -> dict[str, np.ndarray]:
    """Reasons as features (no causes known): the largest positive SHAP values.

    ``reason_<r>_feature`` is the model's feature name; ``reason_<r>_name`` and the text
    columns speak as ``labels`` say (the table's own column names and category levels).
    """
    lab = labels or Labels()
    n, p = X.shape
    phi = contrib[:, :p]
    k = min(top_k, p)
    order = np.argsort(-phi, axis=1, kind="stable")[:, :k]
    rows = np.arange(n)
    names = np.asarray(feature_names, dtype=object)
    shown = np.asarray(lab.all_names(list(feature_names)), dtype=object)
    out: dict[str, np.ndarray] = {}
    for r in range(k):
        fj = order[:, r]
        val = phi[rows, fj]
        none = ~(val > 0)
        value = X[rows, fj].astype(np.float64)
        text = np.array(
            ["" if z else lab.reason(f, v) for z, f, v in zip(none, names[fj], value, strict=True)],
            dtype=object,
        )
        out[f"reason_{r + 1}_feature"] = np.where(none, "", names[fj]).astype(object)
        out[f"reason_{r + 1}_name"] = np.where(none, "", shown[fj]).astype(object)
        out[f"reason_{r + 1}_shap"] = np.where(none, 0.0, val)
        out[f"reason_{r + 1}_value"] = np.where(none, np.nan, value)
        out[f"reason_{r + 1}_en"] = text
        out[f"reason_{r + 1}_zh"] = text
    return out


# ---- global views and fidelity ---------------------------------------------------


def global_importance(contrib: np.ndarray, feature_names: Sequence[str]) -> list[tuple[str, float]]:
    imp = np.abs(contrib[:, : len(feature_names)]).mean(axis=0)
    order = np.argsort(-imp, kind="stable")
    return [(feature_names[i], float(imp[i])) for i in order]


def cause_importance(
    contrib: np.ndarray, feature_names: Sequence[str], W: np.ndarray | None = None
) -> list[tuple[str, float]]:
    """Importance per cause family: mean |SHAP| of each feature, split among causes by
    ``W`` kept to the registry's links (the primary cause when ``W`` is None) and summed."""
    if W is None:
        W = attribution_matrix(feature_names, "primary")
    W = registry_weights(W, feature_names)
    imp = np.abs(contrib[:, : len(feature_names)]).mean(axis=0) @ W
    order = np.argsort(-imp, kind="stable")
    return [(CAUSE_COLUMNS[i], float(imp[i])) for i in order]


#: Column of the fidelity confusion table for closures given no reason.
NO_REASON = "no_reason"


@dataclass
class Fidelity:
    top1: float
    top3: float
    n: int
    confusion: pd.DataFrame  # true cause x top reason (or no_reason), counts
    by_cause: dict[str, dict[str, float]]


def _hits(ranked: Sequence[np.ndarray], true_cause: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hit1 = np.asarray(ranked[0], dtype=object) == true_cause
    hit3 = hit1.copy()
    for r in ranked[1:3]:
        hit3 |= np.asarray(r, dtype=object) == true_cause
    return hit1, hit3


def _rate(hit: np.ndarray, mask: np.ndarray) -> float:
    return float(hit[mask].mean()) if mask.any() else float("nan")


def fidelity(reasons: dict[str, np.ndarray] | pd.DataFrame, true_cause: np.ndarray) -> Fidelity:
    """How often the top reason (top 1) or one of the top three names the true cause."""
    true_cause = np.asarray(true_cause, dtype=object)
    first = np.asarray(reasons["reason_1_cause"], dtype=object)
    ranked = [first] + [
        np.asarray(reasons[f"reason_{r}_cause"], dtype=object)
        for r in (2, 3)
        if f"reason_{r}_cause" in reasons
    ]
    hit1, hit3 = _hits(ranked, true_cause)
    labels = list(CAUSES)
    # a closure none of whose causes raised its risk has no reason: its own column
    shown = np.where(first == "", NO_REASON, first).astype(object)
    conf = pd.crosstab(
        pd.Categorical(true_cause, categories=labels),
        pd.Categorical(shown, categories=[*labels, NO_REASON]),
        dropna=False,
    )
    conf.index.name, conf.columns.name = "true_cause", "top_reason"
    conf = conf.loc[list(CAUSES)]
    by_cause = {
        c: {
            "n": float((true_cause == c).sum()),
            "top1": _rate(hit1, true_cause == c),
            "top3": _rate(hit3, true_cause == c),
        }
        for c in CAUSES
    }
    n = len(true_cause)
    return Fidelity(
        top1=float(hit1.mean()) if n else float("nan"),
        top3=float(hit3.mean()) if n else float("nan"),
        n=int(n),
        confusion=conf,
        by_cause=by_cause,
    )


def ceiling_ranking(shares: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """Causes ranked per row by their share of the oracle's closing futures, ``(n, C)``.

    ``shares`` has one column per cause in :data:`CAUSES` order (the share of futures
    that closed by it). Ties, including rows none of whose futures closed, are broken by
    ``prior`` (e.g. each cause's mean share over all oracle rows), then by cause order.
    """
    shares = np.asarray(shares, dtype=np.float64)
    if shares.ndim != 2 or shares.shape[1] != len(CAUSES):
        raise ValueError(
            f"cause shares need {len(CAUSES)} columns ({', '.join(CAUSES)}), got {shares.shape}"
        )
    pri = np.zeros(len(CAUSES)) if prior is None else np.asarray(prior, dtype=np.float64)
    idx = np.arange(len(CAUSES))
    tie = np.lexsort((idx, -pri))  # prior order, used within equal shares
    return tie[np.argsort(-shares[:, tie], axis=1, kind="stable")]


def fidelity_ceiling(
    reasons: dict[str, np.ndarray] | pd.DataFrame,
    true_cause: np.ndarray,
    shares: np.ndarray,
    prior: np.ndarray | None = None,
) -> dict[str, Any]:
    """The best any explanation can do on closures with oracle rows, beside the reasons.

    For each closure the oracle's futures from the same account and month rank the
    causes (:func:`ceiling_ranking`); the ceiling is how often the first (top 1) or one
    of the first three (top 3) of that ranking is the recorded cause. ``reasons`` are
    those of the same rows, so the reasons' figures here (``top1``/``top3``) are on the
    same closures as the ceiling. Returns the overall figures and ``by_cause``.

    Standard errors are over the closures (binomial; a bootstrap of closures gives the
    same): ``ceiling_top1_se``, ``top1_se``, and ``gap_top1_se`` of the paired
    difference ``ceiling_top1 - top1`` on the same closures. They do not include the
    Monte Carlo noise of the shares, which pulls the ceiling down (a noisy ranking
    misses more often) and shrinks as the futures grow.

    Only the overall ceiling is a bound. Per cause the figures are the oracle's
    *agreement* with the recorded cause among closures of that cause: an explanation
    that always names one cause agrees 100% on that cause, so no per-cause figure
    bounds the reasons' per-cause figure.
    """
    true_cause = np.asarray(true_cause, dtype=object)
    order = ceiling_ranking(shares, prior)
    names = np.asarray(CAUSES, dtype=object)
    c1, c3 = _hits([names[order[:, r]] for r in range(3)], true_cause)
    ranked = [
        np.asarray(reasons[f"reason_{r}_cause"], dtype=object)
        for r in (1, 2, 3)
        if f"reason_{r}_cause" in reasons
    ]
    r1, r3 = _hits(ranked, true_cause)
    everyone = np.ones(len(true_cause), dtype=bool)
    n = len(true_cause)
    out: dict[str, Any] = {
        "n": int(n),
        "ceiling_top1": _rate(c1, everyone),
        "ceiling_top3": _rate(c3, everyone),
        "top1": _rate(r1, everyone),
        "top3": _rate(r3, everyone),
        "ceiling_top1_se": _se(c1),
        "top1_se": _se(r1),
        "gap_top1_se": _se(c1.astype(float) - r1.astype(float)),
    }
    out["by_cause"] = {
        c: {
            "n": float((true_cause == c).sum()),
            "ceiling_top1": _rate(c1, true_cause == c),
            "ceiling_top3": _rate(c3, true_cause == c),
            "top1": _rate(r1, true_cause == c),
            "top3": _rate(r3, true_cause == c),
        }
        for c in CAUSES
    }
    return out


def _se(x: np.ndarray) -> float:
    """Standard error of the mean of per-closure values (0/1 hits or their differences)."""
    x = np.asarray(x, dtype=np.float64)
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def oracle_fidelity(
    keys: pd.DataFrame,
    true_cause: np.ndarray,
    reasons: dict[str, np.ndarray] | pd.DataFrame,
    oracle: pd.DataFrame,
) -> dict[str, Any] | None:
    """:func:`fidelity_ceiling` on the closures that have an oracle row; None if none do.

    ``keys`` (borrower_id, snapshot), ``true_cause`` and ``reasons`` describe the same
    closures, row for row. ``oracle`` has the keys and the per-cause shares ``f_<cause>``
    of the full-state futures (the ceiling) and, where recorded, ``fo_<cause>`` of the
    observable ones (``ceiling_observable_top1``/``_top3``). Ties are broken by each
    cause's mean share over all oracle rows.
    """
    on = ["borrower_id", "snapshot"]
    full = [f"f_{c}" for c in CAUSES]
    missing = [c for c in (*on, *full) if c not in oracle.columns]
    if missing:
        raise ValueError(f"oracle rows lack the column(s) {', '.join(missing)}")
    frame = keys[on].reset_index(drop=True).assign(_row=np.arange(len(keys)))
    m = frame.merge(oracle, on=on, how="inner").sort_values("_row", kind="stable")
    if len(m) == 0:
        return None
    rows = m._row.to_numpy()
    sub = {k: np.asarray(v)[rows] for k, v in dict(reasons).items() if k.endswith("_cause")}
    truth = np.asarray(true_cause, dtype=object)[rows]
    prior = oracle[full].to_numpy(dtype=np.float64).mean(axis=0)
    out = fidelity_ceiling(sub, truth, m[full].to_numpy(dtype=np.float64), prior)
    if "n_futures" in m.columns:
        out["futures"] = int(m.n_futures.min())
    obs = [f"fo_{c}" for c in CAUSES]
    if all(c in m.columns for c in obs):
        prior_o = oracle[obs].to_numpy(dtype=np.float64).mean(axis=0)
        seen = fidelity_ceiling(sub, truth, m[obs].to_numpy(dtype=np.float64), prior_o)
        out["ceiling_observable_top1"] = seen["ceiling_top1"]
        out["ceiling_observable_top3"] = seen["ceiling_top3"]
    return out


def paired(ceil: dict[str, Any]) -> dict[str, Any]:
    """The summary's ``fidelity.paired``: the reasons and the ceiling on the same closures
    (those with oracle futures), with standard errors over those closures."""
    out = {
        k: ceil[k]
        for k in (
            "n",
            "top1",
            "top3",
            "ceiling_top1",
            "ceiling_top3",
            "ceiling_top1_se",
            "top1_se",
            "gap_top1_se",
        )
    }
    out["n"] = int(out["n"])
    out["share_of_ceiling_top1"] = (
        float(ceil["top1"] / ceil["ceiling_top1"]) if ceil["ceiling_top1"] > 0 else float("nan")
    )
    if "futures" in ceil:
        out["futures"] = int(ceil["futures"])
    return out


def with_ceiling(
    fid: Fidelity, ceil: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Fidelity figures beside the ceiling's: overall keys and ``by_cause``.

    Overall: ``ceiling_top1``/``_top3`` and ``ceiling_n`` (closures with oracle rows),
    the reasons on those same closures (``oracle_rows_top1``/``_top3``) and the
    observable futures' ceiling where recorded, and ``paired`` (see :func:`paired`).
    Per cause: the reasons' ``n``, ``top1``, ``top3`` on all closures, then on the
    closures of that cause with oracle futures (``oracle_n``) the oracle's agreement
    with the recorded cause (``oracle_agreement_top1``/``_top3``: not a bound, see
    :func:`fidelity_ceiling`) and the reasons' (``oracle_rows_top1``/``_top3``).
    Without ``ceil``, the reasons' figures alone.
    """
    by_cause = {c: dict(v) for c, v in fid.by_cause.items()}
    if ceil is None:
        return {}, by_cause
    overall: dict[str, Any] = {
        "ceiling_top1": ceil["ceiling_top1"],
        "ceiling_top3": ceil["ceiling_top3"],
        "ceiling_n": ceil["n"],
        "oracle_rows_top1": ceil["top1"],
        "oracle_rows_top3": ceil["top3"],
        "paired": paired(ceil),
    }
    for k in ("ceiling_observable_top1", "ceiling_observable_top3"):
        if k in ceil:
            overall[k] = ceil[k]
    for c, v in ceil["by_cause"].items():
        # per cause the oracle's agreement, not a ceiling (see fidelity_ceiling)
        by_cause[c].update(
            oracle_agreement_top1=v["ceiling_top1"],
            oracle_agreement_top3=v["ceiling_top3"],
            oracle_n=v["n"],
            oracle_rows_top1=v["top1"],
            oracle_rows_top3=v["top3"],
        )
    return overall, by_cause


def strongest_interaction(index: int, shap_values: np.ndarray, X: np.ndarray) -> int:
    """The feature whose values seem to interact most with feature ``index``: what SHAP's
    dependence plot colours by (``shap.utils.approximate_interactions``), for every
    feature at once.

    SHAP sorts the rows by the feature's value, cuts them into blocks of a tenth of the
    rows (at most 50, at least 1) and scores each other feature by the sum over blocks of
    the absolute correlation between the feature's SHAP values and that feature's values
    (or whether they are missing), the larger of the two. It does so feature by feature
    and block by block (about 0.3 s a plot at 5,000 rows and 75 features); here each block's correlations
    are taken for all features in one array operation. ``shap_values`` holds one column
    per feature of ``X`` (no base value column); at most 10,000 rows, which SHAP would
    sample at random. The result can differ from SHAP's only where two features' scores
    agree to the last few digits.
    """
    n, width = X.shape
    if n > 10_000:
        raise ValueError(f"at most 10,000 rows (got {n:,}): sample them first")
    others = [i for i in range(width) if i != index]
    order = [index, *others]  # the columns as SHAP's scatter plot stacks them
    srt = np.argsort(X[:, index])
    ref = np.asarray(shap_values[srt, index], dtype=np.float64)
    V = np.ascontiguousarray(np.asarray(X[srt][:, order], dtype=np.float64).T)
    inc = max(min(int(n / 10.0), 50), 1)
    missing = np.isnan(V)
    scores = np.maximum(
        _block_correlations(ref, V, inc, ~(np.abs(V).sum(axis=1) < 1e-8)),
        _block_correlations(ref, missing.astype(np.float64), inc, missing.sum(axis=1) > 0),
    )
    scores[0] = 0.0  # the feature itself
    return order[int(np.argsort(-np.abs(scores))[0])]


def _block_correlations(ref: np.ndarray, V: np.ndarray, inc: int, usable: np.ndarray) -> np.ndarray:
    """Per row of ``V``, the sum over blocks of ``inc`` columns (the last one shorter) of
    the absolute correlation with ``ref``, over the blocks where both vary (a block
    holding a missing value does not count). Rows not ``usable`` score 0 (SHAP skips a
    column of zeros)."""
    n = len(ref)
    total = np.zeros(len(V))
    whole, rest = divmod(n, inc)
    for start, stop, k in ((0, whole * inc, inc), (whole * inc, n, rest)):
        if stop <= start:
            continue
        R = ref[start:stop].reshape(-1, k)
        B = V[:, start:stop].reshape(len(V), -1, k)
        Rc = R - R.mean(axis=-1, keepdims=True)
        Bc = B - B.mean(axis=-1, keepdims=True)
        # the sums of squares are n times the variances np.std takes (same steps): a
        # block varies, for SHAP's std > 0, where its sum is above 0
        ss_r, ss_b = (Rc * Rc).sum(axis=-1), (Bc * Bc).sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (Bc * Rc[None]).sum(axis=-1) / np.sqrt(ss_b * ss_r[None])
        keep = (ss_b > 0) & (ss_r > 0)[None]
        total += np.where(keep, np.abs(np.clip(r, -1.0, 1.0)), 0.0).sum(axis=-1)
    return np.where(usable, total, 0.0)
