"""Score metrics from histograms, for samples too large to hold on one machine.

Each partition of a scored sample is reduced to a :class:`ScoreHistogram`: per fixed
score bin, the count of positives and of negatives, the sum of the scores and their
least value, plus three exact totals. Histograms of the partitions add up, so the
figures of the whole sample come from one small object whatever its size.

The bins are of equal width in log-odds, ``logit(p)`` clipped to ``[-LOGIT_RANGE,
LOGIT_RANGE]``; bin order is score order, so two rows in different bins are ranked as
their scores are. What that leaves open, per figure:

* **AUC**: pairs of a positive and a negative in the same bin are counted one half
  (as tied scores are). Every other pair is ordered exactly, so the exact AUC lies
  within ``auc_error_bound = 0.5 * sum_b pos_b * neg_b / (P * N)`` of the binned one,
  a bound computed from the histogram itself and reported beside the AUC.
* **KS**: the gap between the two cumulative distributions is read at bin edges only;
  the exact KS is at least the binned one and exceeds it by at most the largest share
  of either class in one bin (``ks_error_bound``).
* **Brier**: exact (it needs only the totals of ``p``, ``p * y`` and ``p ** 2``).
* **ECE, gains, lift, capture, PR-AUC**: equal-count groups end on bin edges, so a
  group's rows may differ from an exact sort by the rows of the bin at its edge; lift
  and capture at a share of rows take that share of the boundary bin's positives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.metrics import psi_from_shares

LOGIT_RANGE = 16.0  # log-odds covered by the bins: p from 1.1e-7 to 1 - 1.1e-7
N_BINS = 10_000


def bin_index(p: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """The bin of each probability: equal widths in clipped log-odds, non-decreasing in ``p``."""
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore"):
        z = np.log(p) - np.log1p(-p)
    z = np.clip(z, -LOGIT_RANGE, LOGIT_RANGE)
    idx = np.floor((z + LOGIT_RANGE) * (n_bins / (2 * LOGIT_RANGE))).astype(np.int64)
    return np.clip(idx, 0, n_bins - 1)


@dataclass
class ScoreHistogram:
    """Per-bin counts by label, score sums and least scores, with exact totals."""

    pos: np.ndarray  # positives per bin
    neg: np.ndarray  # negatives per bin
    sum_p: np.ndarray  # sum of the scores per bin
    min_p: np.ndarray  # least score per bin (+inf where empty)
    sum_p2: float  # sum of squared scores
    sum_py: float  # sum of the scores of the positives

    @property
    def n_bins(self) -> int:
        return len(self.pos)

    @property
    def n(self) -> float:
        return float(self.pos.sum() + self.neg.sum())

    def __add__(self, other: ScoreHistogram) -> ScoreHistogram:
        if other.n_bins != self.n_bins:
            raise ValueError(f"histograms of {self.n_bins} and {other.n_bins} bins do not add")
        return ScoreHistogram(
            self.pos + other.pos,
            self.neg + other.neg,
            self.sum_p + other.sum_p,
            np.minimum(self.min_p, other.min_p),
            self.sum_p2 + other.sum_p2,
            self.sum_py + other.sum_py,
        )


def histogram(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> ScoreHistogram:
    """The histogram of one sample of labels ``y`` (0/1) and probabilities ``p``."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=float)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} scores")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("scores must be finite probabilities in [0, 1]")
    b = bin_index(p, n_bins)
    min_p = np.full(n_bins, np.inf)
    np.minimum.at(min_p, b, p)
    return ScoreHistogram(
        pos=np.bincount(b[y], minlength=n_bins).astype(float),
        neg=np.bincount(b[~y], minlength=n_bins).astype(float),
        sum_p=np.bincount(b, weights=p, minlength=n_bins),
        min_p=min_p,
        sum_p2=float(np.sum(p * p)),
        sum_py=float(np.sum(p[y])),
    )


def empty(n_bins: int = N_BINS) -> ScoreHistogram:
    return histogram(np.zeros(0, dtype=int), np.zeros(0), n_bins)


def auc(h: ScoreHistogram) -> tuple[float, float]:
    """Binned AUC (ties within a bin count one half) and the bound on its error."""
    n_pos, n_neg = h.pos.sum(), h.neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan"), float("nan")
    below = np.cumsum(h.neg) - h.neg  # negatives in lower bins
    pairs = n_pos * n_neg
    value = float(np.sum(h.pos * (below + 0.5 * h.neg)) / pairs)
    bound = float(0.5 * np.sum(h.pos * h.neg) / pairs)
    return value, bound


def ks(h: ScoreHistogram) -> tuple[float, float]:
    """KS read at bin edges, and how much the exact KS may exceed it."""
    n_pos, n_neg = h.pos.sum(), h.neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan"), float("nan")
    gap = np.abs(np.cumsum(h.pos) / n_pos - np.cumsum(h.neg) / n_neg)
    bound = float(max(np.max(h.pos) / n_pos, np.max(h.neg) / n_neg))
    return float(np.max(gap)), bound


def brier(h: ScoreHistogram) -> float:
    n = h.n
    return float((h.sum_p2 - 2 * h.sum_py + h.pos.sum()) / n) if n else float("nan")


def _groups(counts: np.ndarray, n_groups: int) -> np.ndarray:
    """Group number of each bin: consecutive bins cut where the running count passes k/n."""
    total = counts.sum()
    if total == 0:
        return np.zeros(len(counts), dtype=np.int64)
    before = np.cumsum(counts) - counts  # rows in earlier bins
    return np.minimum((before * n_groups // total).astype(np.int64), n_groups - 1)


def ece(h: ScoreHistogram, n_bins: int = 10) -> float:
    """Expected calibration error over (nearly) equal-count groups of bins."""
    counts = h.pos + h.neg
    n = counts.sum()
    if n == 0:
        return float("nan")
    g = _groups(counts, min(n_bins, int(n)))
    m = int(g.max()) + 1
    cnt = np.bincount(g, weights=counts, minlength=m)
    obs = np.bincount(g, weights=h.pos, minlength=m)
    pred = np.bincount(g, weights=h.sum_p, minlength=m)
    ok = cnt > 0
    return float(np.sum(np.abs(obs[ok] - pred[ok])) / n)


def gains(h: ScoreHistogram, n_bins: int = 10) -> list[dict[str, float]]:
    """Decile gains table, highest scores first (the columns of the exact table)."""
    counts = (h.pos + h.neg)[::-1]
    pos, mins = h.pos[::-1], h.min_p[::-1]
    g = _groups(counts, n_bins)
    total, rows, cum = pos.sum(), [], 0.0
    for i in range(n_bins):
        sel = (g == i) & (counts > 0)
        if not sel.any():
            continue
        n_i, pos_i = float(counts[sel].sum()), float(pos[sel].sum())
        cum += pos_i
        rows.append(
            {
                "decile": i + 1,
                "n": n_i,
                "min_score": float(mins[sel].min()),
                "positives": pos_i,
                "rate": pos_i / n_i,
                "cum_capture": cum / total if total else float("nan"),
            }
        )
    return rows


def _top_share(h: ScoreHistogram, frac: float) -> float:
    """Positives among the highest-scored ``frac`` of rows (the boundary bin taken pro rata)."""
    counts, pos = (h.pos + h.neg)[::-1], h.pos[::-1]
    n_top = max(1.0, round(frac * counts.sum()))
    before = np.cumsum(counts) - counts
    take = np.clip(n_top - before, 0, counts)
    share = np.divide(take, counts, out=np.zeros_like(take), where=counts > 0)
    return float(np.sum(pos * share))


def _pr_auc(h: ScoreHistogram) -> float:
    tps, fps = np.cumsum(h.pos[::-1]), np.cumsum(h.neg[::-1])
    keep = (h.pos + h.neg)[::-1] > 0
    tps, fps = tps[keep], fps[keep]
    n_pos = h.pos.sum()
    if n_pos == 0 or len(tps) == 0:
        return float("nan")
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * tps / (tps + fps)))


def binary_metrics(h: ScoreHistogram, ece_bins: int = 10) -> dict[str, float]:
    """The keys of :func:`pipeline.core.metrics.binary_metrics`, plus the error bounds."""
    n, n_pos = h.n, float(h.pos.sum())
    out: dict[str, float] = {"n": n, "positive_rate": n_pos / n if n else float("nan")}
    out["auc"], out["auc_error_bound"] = auc(h)
    out["ks"], out["ks_error_bound"] = ks(h)
    out["pr_auc"] = _pr_auc(h) if n and n_pos < n else float("nan")
    out["brier"] = brier(h)
    out["ece"] = ece(h, ece_bins)
    base = n_pos / n if n else 0.0
    for frac in (0.05, 0.10):
        pct = int(frac * 100)
        top = _top_share(h, frac) if n else 0.0
        n_top = max(1.0, round(frac * n))
        out[f"lift_{pct}"] = (top / n_top) / base if base else float("nan")
        out[f"capture_{pct}"] = top / n_pos if n_pos else float("nan")
    return out


def score_metrics(
    raw: ScoreHistogram, calibrated: ScoreHistogram | None, n_bins: int = 10
) -> dict[str, float]:
    """Like :func:`pipeline.core.evaluation.score_metrics`: ranking figures on the raw
    score, Brier and ECE on the calibrated one (raw ones kept as ``brier_raw``, ``ece_raw``)."""
    out = binary_metrics(raw, n_bins)
    if calibrated is not None:
        out["brier_raw"], out["ece_raw"] = out["brier"], out["ece"]
        out["brier"] = brier(calibrated)
        out["ece"] = ece(calibrated, n_bins)
    return out


def psi(expected: ScoreHistogram, actual: ScoreHistogram, n_bins: int = 10) -> float:
    """Population stability of ``actual`` on groups of bins cut at ``expected``'s deciles."""
    e_counts, a_counts = expected.pos + expected.neg, actual.pos + actual.neg
    if e_counts.sum() == 0 or a_counts.sum() == 0:
        return float("nan")
    g = _groups(e_counts, n_bins)
    e = np.bincount(g, weights=e_counts, minlength=n_bins) / e_counts.sum()
    a = np.bincount(g, weights=a_counts, minlength=n_bins) / a_counts.sum()
    return psi_from_shares(e, a)
