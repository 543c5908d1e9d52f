"""Baselines the LightGBM model has to beat, fitted on the same split.

* :class:`Scorecard`: the classic credit scorecard, built the way scorecard tools build
  one (:func:`monotone_bins`, then :meth:`Scorecard.fit`):

  1. binning: each numeric feature is cut into about 20 equal-count fine bins (cut
     points rounded to three significant digits, or to whole numbers for a count);
     where a direction is declared (the feature registry, or ``data.monotone`` of a
     table), adjacent bins are pooled until the bad rate runs that way in every step;
     bins under ``min_bin_share`` of the rows join their closer neighbour; then the two
     adjacent bins whose bad rates differ least (two-proportion test) are merged, again
     and again, until every adjacent pair differs at ``bin_pvalue`` and there are at
     most ``max_bins``. Categories are ordered by bad rate and merged the same way, so
     one bin may hold several levels. Missing values get a bin of their own only when
     the training rows had some; a missing value where none was seen, or an unseen
     code, scores a weight of evidence of 0 (the average);
  2. selection: an information-value floor (``min_iv``); a correlation filter on the
     WoE values (of two features above ``max_corr``, the one of higher IV stays); a
     variance-inflation filter (``max_vif``); then forward stepwise selection by the
     score test (the candidate with the largest chi-square enters while its p-value is
     under ``enter_pvalue``, up to ``max_features``);
  3. signs: every coefficient on a WoE value must be negative (a higher WoE, a safer
     bin, lowers the log-odds of a bad), so points rise with WoE in every feature. A
     candidate whose entry would leave its own or another coefficient positive is
     dropped and the next one tried; :attr:`Scorecard.selection_` says which and why;
  4. points: ``pdo`` points double the good:bad odds and ``base_score`` points stand at
     ``base_odds``; a row's score is the base points plus the points of its bins.

* :func:`rules_score`: the seed's hand-written heuristics (a long idle spell after
  regular use, a thin credit file, loan money routed to investment or other lenders)
  counted as flags; no fitting at all.

Pure core: arrays and frames in, arrays and tables out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2
from sklearn.linear_model import LogisticRegression

_SMOOTH = 0.5  # added to bin counts so an all-good or all-bad bin has a finite WoE
PREBINS = 20  # equal-count fine bins a numeric feature starts from
MISSING = "missing"


def _round_sig(v: float, digits: int = 3) -> float:
    if v == 0 or not math.isfinite(v):
        return float(v)
    return float(round(v, digits - 1 - math.floor(math.log10(abs(v)))))


def fmt_amount(v: float) -> str:
    """A cut point as people write amounts: thousands separated, no exponent."""
    v = float(v)
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:,.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}" if a >= 1e-4 else f"{v:.2e}"


@dataclass
class WoeBins:
    """Weight-of-evidence bins of one feature."""

    feature: str
    categorical: bool
    edges: list[float]  # numeric: inner cut points; bin i is (edges[i-1], edges[i]]
    codes: list[float]  # categorical: the codes seen in training
    woe: list[float]  # one per bin, then the missing-value bin last
    counts: list[int]
    bads: list[int]
    iv: float
    code_bin: list[int] = field(default_factory=list)  # categorical: bin of each code
    has_missing: bool = True  # training rows had missing values: the missing bin is real
    direction: int = 0  # declared: +1 risk rises with the value, -1 falls, 0 none
    integer: bool = False  # numeric: every training value is a whole number
    levels: list[str] = field(default_factory=list)  # names of the codes 0, 1, ...

    @property
    def n_bins(self) -> int:
        """Bins of seen values (the missing bin not counted)."""
        return len(self.woe) - 1

    def bin_of_code(self, i: int) -> int:
        """The bin of ``codes[i]``."""
        return self.code_bin[i] if self.code_bin else i

    def index(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        missing = ~np.isfinite(x)
        n_bins = self.n_bins
        if self.categorical:
            lookup = {c: self.bin_of_code(i) for i, c in enumerate(self.codes)}
            # an unseen code falls into the missing bin (weight of evidence 0 when no
            # training row was missing)
            idx = np.array([lookup.get(v, n_bins) for v in np.where(missing, np.nan, x)])
            idx = idx.astype(int) if len(idx) else np.zeros(0, dtype=int)
        else:
            idx = np.searchsorted(np.asarray(self.edges), x, side="left")
        return np.where(missing, n_bins, idx)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.woe)[self.index(x)]

    def _level(self, c: float) -> str:
        if c < 0:
            return MISSING
        k = int(c)
        return self.levels[k] if c == k and k < len(self.levels) else f"code {c:g}"

    def _numeric_label(self, i: int) -> str:
        lo = self.edges[i - 1] if i > 0 else -np.inf
        hi = self.edges[i] if i < len(self.edges) else np.inf
        if self.levels:  # a coded quantity (an age band): the names of its codes
            names = [n for k, n in enumerate(self.levels) if lo < k <= hi]
            if names:
                return ", ".join(names)
        if not self.edges:
            return "all values"
        if self.integer:
            if i == 0:
                return f"<= {fmt_amount(hi)}"
            first = math.floor(lo) + 1
            if i == len(self.edges):
                return f">= {fmt_amount(first)}"
            return (
                f"= {fmt_amount(hi)}" if first == hi else f"{fmt_amount(first)} to {fmt_amount(hi)}"
            )
        if i == 0:
            return f"<= {fmt_amount(hi)}"
        if i == len(self.edges):
            return f"> {fmt_amount(lo)}"
        return f"> {fmt_amount(lo)} and <= {fmt_amount(hi)}"

    def labels(self) -> list[str]:
        """One label per bin, then the missing bin's."""
        if self.categorical:
            out = []
            for b in range(self.n_bins):
                names = [
                    self._level(c) for i, c in enumerate(self.codes) if self.bin_of_code(i) == b
                ]
                out.append(", ".join(dict.fromkeys(names)))  # "missing" once for -2 and -1
        else:
            out = [self._numeric_label(i) for i in range(self.n_bins)]
        return [*out, MISSING]


def _woe_of(counts: np.ndarray, bads: np.ndarray, has_missing: bool) -> tuple[np.ndarray, float]:
    """WoE ln(share of goods / share of bads) per bin (missing bin last) and the IV."""
    goods = counts - bads
    used = len(counts) if has_missing else len(counts) - 1
    total_bad, total_good = max(bads.sum(), 1.0), max(goods.sum(), 1.0)
    dist_good = (goods + _SMOOTH) / (total_good + _SMOOTH * used)
    dist_bad = (bads + _SMOOTH) / (total_bad + _SMOOTH * used)
    woe = np.log(dist_good / dist_bad)
    woe[counts == 0] = 0.0
    iv = float(np.sum(((dist_good - dist_bad) * woe)[counts > 0]))
    return woe, iv


def woe_bins(
    x: np.ndarray, y: np.ndarray, feature: str, categorical: bool, max_bins: int
) -> WoeBins:
    """Equal-count bins (one per code for categories) and their weight of evidence.

    The quick measure the feature screening uses; the scorecard bins with
    :func:`monotone_bins`.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y).astype(int)
    ok = np.isfinite(x)
    if categorical:
        codes = [float(c) for c in np.unique(x[ok])]
        edges: list[float] = []
        lookup = {c: i for i, c in enumerate(codes)}
        idx = np.array([lookup[v] for v in x[ok]], dtype=int)
        n_bins = len(codes)
    else:
        codes = []
        qs = np.quantile(x[ok], np.linspace(0, 1, max_bins + 1)[1:-1]) if ok.any() else []
        edges = [float(e) for e in np.unique(qs)]
        idx = np.searchsorted(np.asarray(edges), x[ok], side="left")
        n_bins = len(edges) + 1
    full = np.full(len(x), n_bins)
    full[ok] = idx
    counts = np.bincount(full, minlength=n_bins + 1)
    bads = np.bincount(full, weights=y, minlength=n_bins + 1)
    has_missing = bool((~ok).any())
    woe, iv = _woe_of(counts.astype(float), bads, has_missing)
    return WoeBins(
        feature,
        categorical,
        edges,
        codes,
        [float(v) for v in woe],
        [int(v) for v in counts],
        [int(v) for v in bads],
        iv,
        has_missing=has_missing,
    )


def two_proportion_pvalue(n1: float, b1: float, n2: float, b2: float) -> float:
    """Two-sided p-value that two bins share one bad rate (pooled z, = 2x2 chi-square)."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    pooled = (b1 + b2) / (n1 + n2)
    var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if var <= 0:
        return 1.0
    z = abs(b1 / n1 - b2 / n2) / math.sqrt(var)
    return float(math.erfc(z / math.sqrt(2.0)))


def merge_runs(
    n: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    direction: int,
    min_count: float,
    max_pvalue: float,
    max_bins: int,
) -> list[list[int]]:
    """Adjacent fine bins (rows ``n``, bads ``b``, in order) merged into groups.

    1. ``direction`` != 0: pool adjacent violators, so the bad rate rises strictly
       (+1) or falls strictly (-1) from group to group;
    2. a group under ``min_count`` rows joins the neighbour of closer bad rate;
    3. the adjacent pair most alike (largest two-proportion p-value) is merged while
       that p-value is above ``max_pvalue`` or there are more than ``max_bins`` groups.

    Merging two adjacent groups of a monotone run keeps it monotone, so steps 2 and 3
    never undo step 1.
    """
    groups: list[list[int]] = []
    gn: list[float] = []
    gb: list[float] = []
    for i, (ni, bi) in enumerate(zip(n, b, strict=True)):
        groups.append([i])
        gn.append(float(ni))
        gb.append(float(bi))

    def join(k: int) -> None:  # group k absorbs group k + 1
        groups[k] += groups.pop(k + 1)
        gn[k] += gn.pop(k + 1)
        gb[k] += gb.pop(k + 1)

    def rate(k: int) -> float:
        return gb[k] / gn[k] if gn[k] > 0 else math.nan

    k = 0  # an empty fine bin joins the next one (or the previous one, last)
    while k < len(groups) and len(groups) > 1:
        if gn[k] <= 0:
            join(k if k + 1 < len(groups) else k - 1)
        else:
            k += 1
    if direction:
        k = 0
        while k + 1 < len(groups):
            step = rate(k + 1) - rate(k)
            if step * direction <= 0:  # flat or against the declared direction
                join(k)
                k = max(k - 1, 0)  # the pooled group may now violate its left neighbour
            else:
                k += 1
    while len(groups) > 1:
        small = [k for k in range(len(groups)) if gn[k] < min_count]
        if not small:
            break
        k = min(small, key=lambda j: (gn[j], j))
        if k == 0:
            join(0)
        elif k == len(groups) - 1:
            join(k - 1)
        else:
            left, right = abs(rate(k) - rate(k - 1)), abs(rate(k + 1) - rate(k))
            join(k - 1 if left <= right else k)
    while len(groups) > 1:
        pvals = [
            two_proportion_pvalue(gn[k], gb[k], gn[k + 1], gb[k + 1])
            for k in range(len(groups) - 1)
        ]
        k = int(np.argmax(pvals))
        if pvals[k] <= max_pvalue and len(groups) <= max_bins:
            break
        join(k)
    return groups


def monotone_bins(
    x: np.ndarray,
    y: np.ndarray,
    feature: str,
    categorical: bool,
    *,
    direction: int = 0,
    max_bins: int = 8,
    prebins: int = PREBINS,
    min_share: float = 0.02,
    max_pvalue: float = 0.05,
    levels: Sequence[str] = (),
) -> WoeBins:
    """The scorecard's bins of one feature (step 1 of the module doc)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y).astype(int)
    ok = np.isfinite(x)
    xs, ys = x[ok], y[ok]
    min_count = min_share * len(xs)
    edges: list[float] = []
    codes: list[float] = []
    code_bin: list[int] = []
    integer = False
    if categorical:
        uniq, inv = np.unique(xs, return_inverse=True)
        n = np.bincount(inv, minlength=len(uniq)).astype(float)
        bad = np.bincount(inv, weights=ys, minlength=len(uniq))
        order = sorted(range(len(uniq)), key=lambda i: (bad[i] / n[i], uniq[i]))
        groups = merge_runs(
            n[order],
            bad[order],
            direction=0,
            min_count=min_count,
            max_pvalue=max_pvalue,
            max_bins=max_bins,
        )
        codes = [float(c) for c in uniq]
        code_bin = [0] * len(uniq)
        for g, members in enumerate(groups):
            for pos in members:
                code_bin[order[pos]] = g
        n_bins = len(groups)
        idx = np.asarray(code_bin, dtype=int)[inv] if len(inv) else np.zeros(0, dtype=int)
    else:
        integer = bool(len(xs)) and bool(np.all(xs == np.round(xs)))
        fine: list[float] = []
        if len(xs):
            qs = np.quantile(xs, np.linspace(0, 1, prebins + 1)[1:-1])
            cut = np.floor(qs) if integer else np.array([_round_sig(q) for q in qs])
            top = float(xs.max())
            fine = [float(e) for e in np.unique(cut) if e < top]
        fidx = np.searchsorted(np.asarray(fine), xs, side="left")
        n = np.bincount(fidx, minlength=len(fine) + 1).astype(float)
        bad = np.bincount(fidx, weights=ys, minlength=len(fine) + 1)
        groups = merge_runs(
            n,
            bad,
            direction=direction,
            min_count=min_count,
            max_pvalue=max_pvalue,
            max_bins=max_bins,
        )
        edges = [fine[g[-1]] for g in groups[:-1]]
        n_bins = len(edges) + 1
        idx = np.searchsorted(np.asarray(edges), xs, side="left")
    counts = np.bincount(idx, minlength=n_bins).astype(float)
    bads = np.bincount(idx, weights=ys, minlength=n_bins)
    has_missing = bool((~ok).any())
    counts = np.append(counts, float((~ok).sum()))
    bads = np.append(bads, float(y[~ok].sum()))
    woe, iv = _woe_of(counts, bads, has_missing)
    return WoeBins(
        feature,
        categorical,
        edges,
        codes,
        [float(v) for v in woe],
        [int(v) for v in counts],
        [int(v) for v in bads],
        iv,
        code_bin=code_bin,
        has_missing=has_missing,
        direction=int(direction),
        integer=integer,
        levels=list(levels),
    )


def _vif(W: np.ndarray) -> np.ndarray:
    """Variance inflation factor of each column: the diagonal of the inverse correlation."""
    if W.shape[1] < 2:
        return np.ones(W.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(W, rowvar=False), nan=0.0)
    np.fill_diagonal(corr, 1.0)
    return np.asarray(np.diag(np.linalg.pinv(corr)), dtype=float)


#: rows per block of the score test: the candidates' columns are copied a block at a time
SCORE_TEST_ROWS = 65_536


def _score_test(
    W: np.ndarray, y: np.ndarray, A: np.ndarray, p: np.ndarray, cand: list[int]
) -> np.ndarray:
    """Score chi-square of adding each candidate column of ``W`` to the fitted model.

    ``A`` is the model's design (intercept column first), ``p`` its fitted
    probabilities: U = c'(y - p), Var U = c'Vc - c'VA (A'VA)^-1 A'Vc with V = p(1 - p).
    All candidates in one pass over the rows, :data:`SCORE_TEST_ROWS` at a time (a
    column at a time read the whole matrix once per candidate), so no copy of the
    candidates' whole matrix is made.
    """
    v = p * (1.0 - p)
    resid = y - p
    info = A.T @ (A * v[:, None])
    cols = np.asarray(cand, dtype=np.intp)
    u = np.zeros(len(cols))
    cvc = np.zeros(len(cols))
    avc = np.zeros((A.shape[1], len(cols)))
    for lo in range(0, len(y), SCORE_TEST_ROWS):
        hi = lo + SCORE_TEST_ROWS
        c = np.asarray(W[lo:hi][:, cols], dtype=np.float64)
        vc = c * v[lo:hi, None]
        u += c.T @ resid[lo:hi]
        cvc += np.einsum("ij,ij->j", c, vc)
        avc += A[lo:hi].T @ vc
    var = cvc - np.einsum("ij,ij->j", avc, np.linalg.solve(info, avc))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var > 1e-12, u * u / var, 0.0)


def _sign_reason(
    W: np.ndarray, k: int, chosen: list[int], trial: np.ndarray, bins: list[WoeBins]
) -> str:
    """Why candidate ``k`` was dropped: whose coefficient its entry turned positive, and
    the chosen feature its WoE moves with most (the usual cause: shared information)."""
    own = float(trial[-1])
    if own >= 0:
        what = f"its coefficient on WoE would be {own:+.3f}"
    else:
        turned = [
            f"{bins[c].feature} ({trial[i]:+.3f})" for i, c in enumerate(chosen) if trial[i] >= 0
        ]
        what = f"its entry would turn the coefficient of {', '.join(turned)} positive"
    if not chosen:
        return f"{what}: points would fall as a bin gets safer"
    with np.errstate(invalid="ignore", divide="ignore"):
        r = [float(np.nan_to_num(np.corrcoef(W[:, k], W[:, c])[0, 1])) for c in chosen]
    near = int(np.argmax(np.abs(r)))
    return (
        f"{what} with {len(chosen)} feature(s) in the card (closest: "
        f"{bins[chosen[near]].feature}, WoE correlation {r[near]:+.2f}): points would fall "
        "as a bin gets safer"
    )


@dataclass
class Scorecard:
    """Logistic regression on selected weight-of-evidence bins, scaled to points."""

    pdo: float = 20.0
    base_score: float = 600.0
    base_odds: float = 50.0
    max_bins: int = 8
    min_iv: float = 0.02
    max_features: int = 15
    max_corr: float = 0.8
    max_vif: float = 5.0
    min_bin_share: float = 0.02
    bin_pvalue: float = 0.05
    enter_pvalue: float = 0.05
    # feature -> declared direction (+1: risk rises with the value); features not named
    # have none and are binned without a monotone constraint
    directions: Mapping[str, int] = field(default_factory=dict)
    levels: Mapping[str, Sequence[str]] = field(default_factory=dict)  # code names
    bins_: list[WoeBins] = field(default_factory=list)
    coef_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    intercept_: float = 0.0
    selection_: list[dict[str, Any]] = field(default_factory=list)

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        names: list[str],
        categorical: list[str] | tuple[str, ...] = (),
    ) -> Scorecard:
        y = np.asarray(y).astype(int)
        cand = [
            monotone_bins(
                X[:, j],
                y,
                n,
                n in categorical,
                direction=int(self.directions.get(n, 0)) if n not in categorical else 0,
                max_bins=self.max_bins,
                min_share=self.min_bin_share,
                max_pvalue=self.bin_pvalue,
                levels=self.levels.get(n, ()),
            )
            for j, n in enumerate(names)
        ]
        log = {
            b.feature: {
                "feature": b.feature,
                "iv": b.iv,
                "bins": b.n_bins + int(b.has_missing),
                "direction": b.direction,
                "kept": False,
                "stage": "",
                "reason": "",
            }
            for b in cand
        }

        def drop(b: WoeBins, stage: str, reason: str) -> None:
            log[b.feature].update(stage=stage, reason=reason)

        alive: list[int] = []
        for j, b in enumerate(cand):
            if sum(c > 0 for c in b.counts) < 2:
                drop(b, "bins", "one bin after merging: no bad rate differs significantly")
            elif b.iv < self.min_iv:
                drop(b, "iv", f"information value {b.iv:.4f} < {self.min_iv:g}")
            else:
                alive.append(j)
        if not alive:  # nothing clears the bar: keep the single strongest feature
            alive = [max(range(len(cand)), key=lambda j: (cand[j].iv, -j))]
        W = np.empty((len(y), len(alive)))
        for k, j in enumerate(alive):
            W[:, k] = cand[j].transform(X[:, j])
        # correlation filter, strongest information value first
        order = sorted(range(len(alive)), key=lambda k: (-cand[alive[k]].iv, k))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.atleast_2d(np.nan_to_num(np.corrcoef(W, rowvar=False), nan=0.0))
        keep: list[int] = []
        for k in order:
            twin = next((t for t in keep if abs(corr[k, t]) > self.max_corr), None)
            if twin is None:
                keep.append(k)
            else:
                drop(
                    cand[alive[k]],
                    "correlation",
                    f"|correlation| of WoE {abs(corr[k, twin]):.3f} > {self.max_corr:g} with "
                    f"{cand[alive[twin]].feature} (higher information value)",
                )
        # variance inflation: drop the most inflated until all are under the bar
        while len(keep) > 1:
            vif = _vif(W[:, keep])
            worst = int(np.argmax(vif))
            if vif[worst] <= self.max_vif:
                break
            k = keep.pop(worst)
            drop(cand[alive[k]], "vif", f"variance inflation {vif[worst]:.2f} > {self.max_vif:g}")
        chosen = self._stepwise(W, y, keep, [cand[alive[k]] for k in range(len(alive))], drop)
        self.bins_ = [cand[alive[k]] for k in chosen]
        self._cols = [names.index(b.feature) for b in self.bins_]
        self.coef_, self.intercept_ = self._logit(W[:, chosen], y)
        for step, b in enumerate(self.bins_, start=1):
            log[b.feature].update(kept=True, stage="kept", reason=f"entered at step {step}")
        self.selection_ = sorted(log.values(), key=lambda r: (not r["kept"], -r["iv"]))
        return self

    @staticmethod
    def _logit(W: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        lr = LogisticRegression(C=1.0, solver="lbfgs", max_iter=2000)
        lr.fit(W, y)
        return lr.coef_[0].copy(), float(lr.intercept_[0])

    def _stepwise(
        self,
        W: np.ndarray,
        y: np.ndarray,
        pool: list[int],
        bins: list[WoeBins],
        drop: Any,
    ) -> list[int]:
        """Forward selection by the score test (step 2 of the module doc). At each step
        the candidates are tried in the order of their chi-square; one whose entry would
        leave any coefficient positive, against its WoE, is dropped for good (step 3),
        and the next is tried. Returns the columns chosen, in the order they entered."""
        chosen: list[int] = []
        left = sorted(pool)
        yf = y.astype(float)
        base = float(np.clip(yf.mean(), 1e-9, 1 - 1e-9))
        coef, icpt = np.zeros(0), math.log(base / (1 - base))
        pvals: dict[int, float] = {}
        while left and len(chosen) < self.max_features:
            A = np.column_stack([np.ones(len(y)), W[:, chosen]])
            p = 1.0 / (1.0 + np.exp(-(icpt + W[:, chosen] @ coef)))
            stat = _score_test(W, yf, A, p, left)
            pvals = {k: float(chi2.sf(s, 1)) for k, s in zip(left, stat, strict=True)}
            entered, rejected = None, []
            for pos in np.argsort(-stat, kind="stable"):
                k = left[int(pos)]
                if pvals[k] > self.enter_pvalue:
                    break
                trial, t_icpt = self._logit(W[:, [*chosen, k]], y)
                if np.all(trial < 0):
                    entered, coef, icpt = k, trial, t_icpt
                    break
                rejected.append(k)
                drop(bins[k], "sign", _sign_reason(W, k, chosen, trial, bins))
            left = [k for k in left if k != entered and k not in rejected]
            if entered is None:
                break
            chosen.append(entered)
        for k in left:
            if len(chosen) >= self.max_features:
                drop(bins[k], "stepwise", f"not entered: {self.max_features} features already in")
            else:
                drop(
                    bins[k],
                    "stepwise",
                    f"score test p-value {pvals.get(k, 1.0):.3g} > {self.enter_pvalue:g}",
                )
        if not chosen:  # keep the strongest feature: alone, its sign follows its WoE
            chosen = [max(pool, key=lambda k: (bins[k].iv, -k))]
        return chosen

    def _woe(self, X: np.ndarray) -> np.ndarray:
        # filled column by column: a list of columns stacked at the end would hold the
        # matrix twice (at a million borrowers, over a gigabyte more at the peak)
        out = np.empty((len(X), len(self.bins_)))
        for k, (b, j) in enumerate(zip(self.bins_, self._cols, strict=True)):
            out[:, k] = b.transform(X[:, j])
        return out

    def log_odds(self, X: np.ndarray) -> np.ndarray:
        """The linear score: log-odds of the positive (bad) class."""
        return np.asarray(self.intercept_ + self._woe(X) @ self.coef_, dtype=float)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of the positive (bad) class."""
        return 1.0 / (1.0 + np.exp(-self.log_odds(X)))

    @property
    def factor(self) -> float:
        return self.pdo / np.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * np.log(self.base_odds)

    @property
    def base_points(self) -> float:
        """The points every row starts from: the intercept's share of the score."""
        return float(self.offset - self.factor * self.intercept_)

    def points(self, X: np.ndarray) -> np.ndarray:
        """Total score: higher means lower risk (offset + factor * ln(good:bad odds))."""
        return self.offset - self.factor * self.log_odds(X)

    @property
    def sign_dropped(self) -> list[dict[str, Any]]:
        """The features left out because their coefficient ran against their WoE."""
        return [r for r in self.selection_ if r["stage"] == "sign"]

    def table(self) -> pd.DataFrame:
        """One row per feature and bin: rows, bad rate, WoE and points.

        A row's score is :attr:`base_points` plus the points of its bins. A missing bin
        is listed only for a feature whose training rows had missing values.
        """
        rows: list[dict[str, Any]] = []
        for b, c in zip(self.bins_, self.coef_, strict=True):
            shown = b.n_bins + int(b.has_missing)
            for label, w, n, bad in list(zip(b.labels(), b.woe, b.counts, b.bads, strict=True))[
                :shown
            ]:
                rows.append(
                    {
                        "feature": b.feature,
                        "bin": label,
                        "n": n,
                        "bad_rate": bad / n if n else float("nan"),
                        "woe": w,
                        "iv": b.iv,
                        "coef": float(c),
                        "points": float(-self.factor * c * w),
                    }
                )
        return pd.DataFrame(rows)

    def card(self) -> dict[str, Any]:
        """The scaling, the base points, what was selected and what was dropped, and why."""
        return {
            "pdo": self.pdo,
            "base_score": self.base_score,
            "base_odds": self.base_odds,
            "factor": self.factor,
            "offset": self.offset,
            "base_points": self.base_points,
            "features": [b.feature for b in self.bins_],
            "n_features": len(self.bins_),
            "coef_against_woe": int(np.sum(np.asarray(self.coef_) >= 0)),
            "sign_dropped": {r["feature"]: r["reason"] for r in self.sign_dropped},
            "rules": {
                "min_iv": self.min_iv,
                "max_corr": self.max_corr,
                "max_vif": self.max_vif,
                "enter_pvalue": self.enter_pvalue,
                "max_features": self.max_features,
                "max_bins": self.max_bins,
                "min_bin_share": self.min_bin_share,
                "bin_pvalue": self.bin_pvalue,
            },
            "selection": list(self.selection_),
        }


def score_bands(
    card: Scorecard,
    X: Mapping[str, np.ndarray],
    y: Mapping[str, np.ndarray],
    n_bands: int = 10,
    fit_split: str = "train",
) -> pd.DataFrame:
    """The total score in bands: cut at whole-point quantiles of ``fit_split``'s scores,
    with the rows, bad rate and its standard error of every split in each band."""
    train = card.points(X[fit_split])
    qs = np.quantile(train, np.linspace(0, 1, n_bands + 1)[1:-1]) if len(train) else []
    cuts = [float(c) for c in np.unique(np.round(qs))]
    bounds = [-np.inf, *cuts, np.inf]
    rows: list[dict[str, Any]] = []
    scored = {s: (card.points(X[s]), np.asarray(y[s], dtype=float)) for s in X}
    for i in range(len(bounds) - 1):
        lo, hi = bounds[i], bounds[i + 1]
        if i == 0:
            label = f"< {fmt_amount(hi)}"
        elif i == len(bounds) - 2:
            label = f">= {fmt_amount(lo)}"
        else:
            label = f"{fmt_amount(lo)} to < {fmt_amount(hi)}"
        row: dict[str, Any] = {"band": label, "score_from": lo, "score_to": hi}
        for s, (pts, ys) in scored.items():
            inside = (pts >= lo) & (pts < hi)
            n = int(inside.sum())
            rate = float(ys[inside].mean()) if n else float("nan")
            row[f"n_{s}"] = n
            row[f"bad_rate_{s}"] = rate
            row[f"se_{s}"] = math.sqrt(rate * (1 - rate) / n) if n else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# the seed's heuristics, thresholds in the units of the feature table
RULES: dict[str, str] = {
    "long_idle": "months_since_last_draw >= 3 and draw_months_12 >= 4 (active, then a long idle spell)",
    "thin_file": "ext_active_products == 0 and months_since_ext_activity >= 12",
    "fund_misuse": "misuse_share_k >= 0.5 (drawn money sent to investment or other lenders)",
}
RULE_FEATURES = (
    "months_since_last_draw",
    "draw_months_12",
    "ext_active_products",
    "months_since_ext_activity",
    "misuse_share_k",
)


def rule_flags(frame: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per rule in :data:`RULES`."""
    return pd.DataFrame(
        {
            "long_idle": (frame.months_since_last_draw >= 3) & (frame.draw_months_12 >= 4),
            "thin_file": (frame.ext_active_products == 0) & (frame.months_since_ext_activity >= 12),
            "fund_misuse": frame.misuse_share_k >= 0.5,
        },
        index=frame.index,
    )


@dataclass
class RulesBaseline:
    """The flags of :data:`RULES`; each combination of flags scores its closure rate in training.

    With no flag at all the score is the rate of the unflagged rows, so the ranking is
    exactly "which rules fired", and the scores are probabilities that can be compared
    with the models' on Brier and calibration error.
    """

    rates_: dict[int, float] = field(default_factory=dict)
    base_rate_: float = 0.0

    @staticmethod
    def _combo(frame: pd.DataFrame) -> np.ndarray:
        f = rule_flags(frame).to_numpy(dtype=int)
        return f @ (1 << np.arange(f.shape[1]))

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> RulesBaseline:
        combo = self._combo(frame)
        y = np.asarray(y, dtype=float)
        self.base_rate_ = float(y.mean()) if len(y) else 0.0
        self.rates_ = {int(c): float(y[combo == c].mean()) for c in np.unique(combo)}
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        combo = self._combo(frame)
        return np.array([self.rates_.get(int(c), self.base_rate_) for c in combo], dtype=float)

    def table(self) -> pd.DataFrame:
        names = list(RULES)
        rows = []
        for c, rate in sorted(self.rates_.items()):
            fired = [n for k, n in enumerate(names) if c >> k & 1]
            rows.append({"rules_fired": " + ".join(fired) or "(none)", "train_rate": rate})
        return pd.DataFrame(rows)
