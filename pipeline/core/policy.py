"""Policy simulation: closing above a threshold against the tiered strategy.

Works on scored out-of-time rows (borrower x snapshot, calibrated probability) joined
with what the simulated world really did over the next ``horizon`` months: interest
paid (revenue), whether the account went overdue (dpd > 0 or an overdue closure) and
its balance then (exposure), and whether the platform closed it.

Strategies, each over a range of thresholds ``t``:

* ``close``: close every account with probability ``>= t``;
* ``tiered`` (the seed's strategy): close only the top tier (``>= t``), reduce the line
  of the medium tier (``medium_ratio * t <= p < t``), raise the line of long-tenure,
  never-overdue small users of very low risk;

and two references without a threshold: ``none`` (no action) and ``platform`` (the
closures the simulated platform really made in the window).

The money rules are the simple assumptions documented in
:class:`pipeline.base.config.PolicyConfig`. A "good customer wrongly hit" (误伤优质客户) is an
account closed or cut that would not have gone overdue in the window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from pipeline.base.config import PolicyConfig

STRATEGIES = ("close", "tiered")
NONE, CLOSE, REDUCE, RAISE = 0, 1, 2, 3


_DEFAULT = PolicyConfig()  # the money assumptions' defaults live in the config schema


@dataclass(frozen=True)
class Money:
    lgd: float = _DEFAULT.lgd
    close_revenue_share: float = _DEFAULT.close_revenue_share
    reduce_factor: float = _DEFAULT.reduce_factor
    reduce_revenue_share: float = _DEFAULT.reduce_revenue_share
    raise_factor: float = _DEFAULT.raise_factor
    raise_revenue_uplift: float = _DEFAULT.raise_revenue_uplift
    medium_ratio: float = _DEFAULT.medium_ratio
    raise_max_prob: float = _DEFAULT.raise_max_prob
    raise_min_tenure: int = _DEFAULT.raise_min_tenure
    raise_line_quantile: float = _DEFAULT.raise_line_quantile
    cut_harm: float = _DEFAULT.cut_harm

    @classmethod
    def of(cls, cfg: PolicyConfig) -> Money:
        return cls(**{k: type(getattr(cls, k))(getattr(cfg, k)) for k in cls.__dataclass_fields__})


def outcomes(
    rows: pd.DataFrame,
    account_months: pd.DataFrame,
    events: pd.DataFrame,
    horizon: int,
    first_month: int = 0,
) -> pd.DataFrame:
    """Per row (``borrower_id``, ``snapshot``): revenue, overdue, exposure, platform closure.

    ``account_months`` needs borrower_id, month, balance, interest_paid, dpd;
    ``events`` needs borrower_id, month, event, cause. Only months from each row's
    snapshot on are read, so both may hold only the months from ``first_month`` on
    (at most the earliest snapshot): the result is the same, and the per-borrower
    month arrays span only those months.
    """
    snaps = rows.snapshot.to_numpy().astype(np.int64)
    if len(snaps) and int(snaps.min()) < first_month:
        raise ValueError(
            f"outcomes: a row's snapshot ({int(snaps.min())}) precedes the first month "
            f"of the account months given ({first_month})"
        )
    is_close = events.event.to_numpy() == "closure"
    # a borrower whose months before first_month were left out is still known
    ids = np.unique(
        np.concatenate(
            [account_months.borrower_id.to_numpy(), events.borrower_id.to_numpy()[is_close]]
        )
    )
    n_months = int(account_months.month.max()) + 1
    shape = (len(ids), n_months - first_month)
    ai = np.searchsorted(ids, account_months.borrower_id.to_numpy())
    am_m = account_months.month.to_numpy().astype(np.int64) - first_month
    dense = {}
    for col in ("balance", "interest_paid", "dpd"):
        a = np.zeros(shape)
        a[ai, am_m] = account_months[col].to_numpy()
        dense[col] = a
    od_close = np.zeros(shape, dtype=bool)
    closed = np.zeros(shape, dtype=bool)
    month = events.month.to_numpy()
    ev = events[is_close & (month >= first_month) & (month < n_months)]
    ei = np.searchsorted(ids, ev.borrower_id.to_numpy())
    em = ev.month.to_numpy().astype(np.int64) - first_month
    closed[ei, em] = True
    od = ev.cause.to_numpy() == "overdue"
    od_close[ei[od], em[od]] = True
    overdue_m = (dense["dpd"] > 0) | od_close

    bid = rows.borrower_id.to_numpy()
    r = np.searchsorted(ids, bid)
    r = np.clip(r, 0, len(ids) - 1)
    known = ids[r] == bid
    snap = snaps
    offs = np.arange(1, horizon + 1)
    months = snap[:, None] + offs[None, :]
    inside = months < n_months
    mm = np.minimum(months, n_months - 1) - first_month
    rr = r[:, None]
    revenue = np.where(inside, dense["interest_paid"][rr, mm], 0.0).sum(axis=1)
    od_win = np.where(inside, overdue_m[rr, mm], False)
    overdue = od_win.any(axis=1)
    first = np.argmax(od_win, axis=1)
    bal_first = dense["balance"][r, mm[np.arange(len(r)), first]]
    bal0 = dense["balance"][r, np.minimum(snap, n_months - 1) - first_month]
    # an overdue closure may come with a zero balance row: keep the larger known balance
    ead = np.where(overdue, np.maximum(bal_first, 0.0), 0.0)
    ead = np.where(overdue & (ead == 0), bal0, ead)
    platform_closed = np.where(inside, closed[rr, mm], False).any(axis=1)
    out = pd.DataFrame(
        {
            "revenue": np.where(known, revenue, 0.0),
            "overdue": overdue & known,
            "ead": np.where(known, ead, 0.0),
            "balance0": np.where(known, bal0, 0.0),
            "platform_closed": platform_closed & known,
            "months_observed": inside.sum(axis=1),
        },
        index=rows.index,
    )
    return out


def actions(
    strategy: str, t: float, prob: np.ndarray, raise_ok: np.ndarray, m: Money
) -> np.ndarray:
    a = np.full(len(prob), NONE, dtype=np.int8)
    if strategy == "close":
        a[prob >= t] = CLOSE
    elif strategy == "tiered":
        a[raise_ok & (prob < m.raise_max_prob)] = RAISE
        a[(prob >= m.medium_ratio * t) & (prob < t)] = REDUCE
        a[prob >= t] = CLOSE
    elif strategy != "none":
        raise ValueError(f"unknown strategy {strategy!r}")
    return a


def money(a: np.ndarray, frame: pd.DataFrame, m: Money) -> tuple[np.ndarray, np.ndarray]:
    """Revenue and loss per row under actions ``a``."""
    rev = frame.revenue.to_numpy()
    ead = frame.ead.to_numpy()
    od = frame.overdue.to_numpy()
    line = frame.line.to_numpy()
    revenue = np.select(
        [a == CLOSE, a == REDUCE, a == RAISE],
        [
            rev * m.close_revenue_share,
            rev * m.reduce_revenue_share,
            rev * (1 + m.raise_revenue_uplift),
        ],
        rev,
    )
    exposure = np.select(
        [a == CLOSE, a == REDUCE, a == RAISE],
        [
            np.minimum(ead, frame.balance0.to_numpy()),
            np.minimum(ead, line * m.reduce_factor),
            ead * m.raise_factor,
        ],
        ead,
    )
    return revenue, np.where(od, m.lgd * exposure, 0.0)


def _summary(
    a: np.ndarray, revenue: np.ndarray, loss: np.ndarray, od: np.ndarray
) -> dict[str, float]:
    hit = (a == CLOSE) | (a == REDUCE)
    return {
        "n": float(len(a)),
        "closures": float((a == CLOSE).sum()),
        "reductions": float((a == REDUCE).sum()),
        "raises": float((a == RAISE).sum()),
        "good_hit": float((hit & ~od).sum()),
        "good_closed": float(((a == CLOSE) & ~od).sum()),
        "good_cut": float(((a == REDUCE) & ~od).sum()),
        "overdue_caught": float((hit & od).sum()),
        "overdue": float(od.sum()),
        "revenue": float(revenue.sum()),
        "loss": float(loss.sum()),
        "net": float(revenue.sum() - loss.sum()),
    }


def frontier(frame: pd.DataFrame, thresholds: list[float], m: Money) -> pd.DataFrame:
    """Every strategy x threshold x segment (``all`` and each occupation)."""
    prob = frame.probability.to_numpy()
    cutoff = np.quantile(frame.line.to_numpy(), m.raise_line_quantile) if len(frame) else 0.0
    raise_ok = (frame.tenure.to_numpy() >= m.raise_min_tenure) & (frame.line.to_numpy() <= cutoff)
    od = frame.overdue.to_numpy()
    seg = frame.occupation.to_numpy().astype(str)
    segments = ["all", *sorted(set(seg))]
    records: list[dict[str, Any]] = []

    def add(strategy: str, t: float, a: np.ndarray, rev: np.ndarray, loss: np.ndarray) -> None:
        for s in segments:
            k = np.ones(len(a), dtype=bool) if s == "all" else seg == s
            records.append(
                {
                    "strategy": strategy,
                    "threshold": t,
                    "segment": s,
                    **_summary(a[k], rev[k], loss[k], od[k]),
                }
            )
            rec = records[-1]
            rec["harm"] = rec["good_closed"] + m.cut_harm * rec["good_cut"]

    base = actions("none", 1.0, prob, raise_ok, m)
    add("none", float("nan"), base, *money(base, frame, m))
    # what the platform really did: its closures, with the outcomes as observed
    plat = np.where(frame.platform_closed.to_numpy(), CLOSE, NONE).astype(np.int8)
    add("platform", float("nan"), plat, *money(base, frame, m))
    for strategy in STRATEGIES:
        for t in thresholds:
            a = actions(strategy, float(t), prob, raise_ok, m)
            add(strategy, float(t), a, *money(a, frame, m))
    return pd.DataFrame.from_records(records)


def matched_loss(front: pd.DataFrame, segment: str = "all") -> pd.DataFrame:
    """At each loss the closing strategy reaches, the tiered strategy's figures at that loss.

    The tiered strategy's good customers hit and revenue are interpolated linearly along
    its own frontier (sorted by loss); losses outside its range give NaN.
    """
    f = front[front.segment == segment]
    close = f[f.strategy == "close"].sort_values("threshold")
    tiered = f[f.strategy == "tiered"].sort_values("loss")
    tl = tiered.loss.to_numpy()
    rows = []
    for _, c in close.iterrows():
        inside = len(tl) > 0 and tl.min() <= c.loss <= tl.max()
        g = float(np.interp(c.loss, tl, tiered.good_hit.to_numpy())) if inside else np.nan
        r = float(np.interp(c.loss, tl, tiered.revenue.to_numpy())) if inside else np.nan
        gc = float(np.interp(c.loss, tl, tiered.good_closed.to_numpy())) if inside else np.nan
        rows.append(
            {
                "threshold_close": c.threshold,
                "loss": c.loss,
                "close_good_hit": c.good_hit,
                "tiered_good_hit": g,
                "close_good_closed": c.good_closed,
                "tiered_good_closed": gc,
                "close_revenue": c.revenue,
                "tiered_revenue": r,
                "good_hit_saved": c.good_hit - g,
                "revenue_gained": r - c.revenue,
            }
        )
    return pd.DataFrame(rows)


# ---- the tiered strategy tuned on validation rows, and the verdict -------------------


@dataclass(frozen=True)
class Grid:
    """What the tuning may choose for the tiered strategy: the share of the line a cut
    keeps (``reduce_factor``), how far under the closing threshold cuts start
    (``medium_ratio``: 1 means no cuts) and under which risk lines are raised
    (``raise_max_prob``: 0 means no raises)."""

    reduce_factor: tuple[float, ...]
    medium_ratio: tuple[float, ...]
    raise_max_prob: tuple[float, ...]

    def settings(self, m: Money) -> list[Money]:
        return [
            replace(m, reduce_factor=float(rf), medium_ratio=float(mr), raise_max_prob=float(rp))
            for rf in self.reduce_factor
            for mr in self.medium_ratio
            for rp in self.raise_max_prob
        ]


def _raise_ok(frame: pd.DataFrame, m: Money) -> np.ndarray:
    line = frame.line.to_numpy()
    cutoff = np.quantile(line, m.raise_line_quantile) if len(frame) else 0.0
    return (frame.tenure.to_numpy() >= m.raise_min_tenure) & (line <= cutoff)


def per_row(
    strategy: str, t: float, frame: pd.DataFrame, m: Money
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: revenue, loss and harm (a never-overdue account closed counts 1, cut
    ``m.cut_harm``) of ``strategy`` at threshold ``t`` with settings ``m``."""
    a = actions(strategy, float(t), frame.probability.to_numpy(), _raise_ok(frame, m), m)
    rev, loss = money(a, frame, m)
    good = ~frame.overdue.to_numpy()
    harm = ((a == CLOSE) & good) + m.cut_harm * ((a == REDUCE) & good)
    return rev, loss, harm.astype(np.float64)


@dataclass(frozen=True)
class Choice:
    """The tiered setting chosen for one loss level of the validation rows."""

    level: float  # the closing strategy's validation loss at ``threshold_close``
    threshold_close: float
    threshold: float  # the tiered strategy's own closing threshold
    money: Money
    valid_loss: float
    valid_harm: float
    valid_revenue: float


def tune(valid: pd.DataFrame, thresholds: list[float], m: Money, grid: Grid) -> list[Choice]:
    """For each loss level the closing strategy reaches on the validation rows (one per
    threshold), the tiered setting (grid x threshold) with the least harm at no more
    loss; ties go to more revenue, then to the first in grid order. Levels that no
    setting reaches are left out."""
    cands = []
    for mm in grid.settings(m):
        for t in thresholds:
            rev, loss, harm = per_row("tiered", t, valid, mm)
            cands.append((float(loss.sum()), float(harm.sum()), float(rev.sum()), float(t), mm))
    out = []
    for tc in thresholds:
        _, loss_c, _ = per_row("close", tc, valid, m)
        level = float(loss_c.sum())
        ok = [c for c in cands if c[0] <= level * (1 + 1e-9) + 1e-9]
        if not ok:
            continue
        best = min(range(len(ok)), key=lambda i: (ok[i][1], -ok[i][2], i))
        lo, ha, re, t, mm = ok[best]
        out.append(Choice(level, float(tc), t, mm, lo, ha, re))
    return out


def _interp_matched(
    close_loss: np.ndarray, tl: np.ndarray, th: np.ndarray, tr: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tiered harm and revenue interpolated at each closing loss, along the tiered
    points sorted by loss (NaN outside their range); also which levels are inside."""
    order = np.argsort(tl, kind="stable")
    tl, th, tr = tl[order], th[order], tr[order]
    inside = (close_loss >= tl.min()) & (close_loss <= tl.max()) if len(tl) else close_loss < 0
    h = np.where(inside, np.interp(close_loss, tl, th), np.nan) if len(tl) else close_loss * np.nan
    r = np.where(inside, np.interp(close_loss, tl, tr), np.nan) if len(tl) else close_loss * np.nan
    return h, r, inside


def verdict(
    oot: pd.DataFrame,
    choices: list[Choice],
    m: Money,
    replicates: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Closing above a threshold against the tuned tiered strategy on out-of-time rows.

    At each loss the closing strategy reaches (one per chosen level), the tuned tiered
    strategy's harm and revenue at the same loss are interpolated along its own points;
    ``good_hit_saved`` is the closing strategy's harm minus the tiered one's (positive:
    the tiered strategy hits fewer never-overdue accounts, a cut counted as
    ``m.cut_harm`` of a closure), ``revenue_gain`` the tiered revenue minus the closing
    one. Both are averaged over the levels compared, with standard errors from
    ``replicates`` bootstrap resamples of the borrowers (all of a borrower's rows
    together). ``winner`` is ``tiered`` or ``close`` when the mean saving is more than
    1.96 standard errors from zero in its favour, else ``neither``; ``loss_range`` the
    losses of the levels where the winner does better (all levels compared for
    ``neither``).
    """
    bid = oot.borrower_id.to_numpy()
    ids, inv = np.unique(bid, return_inverse=True)
    cols: list[np.ndarray] = []
    for c in choices:
        cols.extend(per_row("close", c.threshold_close, oot, m))
    for c in choices:
        cols.extend(per_row("tiered", c.threshold, oot, c.money))
    k = len(choices)
    per_b = np.zeros((len(ids), len(cols)))
    for j, v in enumerate(cols):
        per_b[:, j] = np.bincount(inv, weights=v, minlength=len(ids))

    def figures(tot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        t = tot.reshape(2, k, 3)  # strategy x level x (revenue, loss, harm)
        cr, cl, ch = t[0, :, 0], t[0, :, 1], t[0, :, 2]
        h, r, inside = _interp_matched(cl, t[1, :, 1], t[1, :, 2], t[1, :, 0])
        return cl, ch - h, r - cr, inside

    loss, saved, gain, inside = figures(per_b.sum(axis=0))
    rng = np.random.default_rng(seed)
    reps_saved, reps_gain = [], []
    for _ in range(int(replicates)):
        w = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))
        _, s_r, g_r, in_r = figures(w @ per_b)
        both = inside & in_r
        reps_saved.append(np.where(both, s_r, np.nan))
        reps_gain.append(np.where(both, g_r, np.nan))
    rs, rg = np.array(reps_saved), np.array(reps_gain)
    use = inside & (np.isfinite(rs).mean(axis=0) > 0.5 if len(rs) else inside)
    out: dict[str, Any] = {
        "levels": _levels(choices, loss, saved, gain, inside, use, rs, rg),
        "rows": int(len(oot)),
        "borrowers": int(len(ids)),
        "replicates": int(replicates),
        "cut_harm": float(m.cut_harm),
    }
    if not use.any():
        out["verdict"] = {
            "winner": "undecided",
            "good_hit_saved": None,
            "revenue_gain": None,
            "loss_range": None,
        }
        out["se"] = {"good_hit_saved": None, "revenue_gain": None}
        return out
    return {**out, **_judge(loss, saved, gain, use, rs, rg)}


def _levels(
    choices: list[Choice],
    loss: np.ndarray,
    saved: np.ndarray,
    gain: np.ndarray,
    inside: np.ndarray,
    use: np.ndarray,
    rs: np.ndarray,
    rg: np.ndarray,
) -> list[dict[str, Any]]:
    """One record per chosen level: its setting and its matched figures with their SEs."""
    return [
        {
            "threshold_close": c.threshold_close,
            "tiered_threshold": c.threshold,
            "reduce_factor": c.money.reduce_factor,
            "medium_ratio": c.money.medium_ratio,
            "raise_max_prob": c.money.raise_max_prob,
            "valid_level": c.level,
            "oot_loss": float(loss[i]),
            "good_hit_saved": float(saved[i]) if inside[i] else None,
            "good_hit_saved_se": float(np.nanstd(rs[:, i], ddof=1))
            if use[i] and len(rs) > 1
            else None,
            "revenue_gain": float(gain[i]) if inside[i] else None,
            "revenue_gain_se": float(np.nanstd(rg[:, i], ddof=1))
            if use[i] and len(rs) > 1
            else None,
        }
        for i, c in enumerate(choices)
    ]


def _judge(
    loss: np.ndarray,
    saved: np.ndarray,
    gain: np.ndarray,
    use: np.ndarray,
    rs: np.ndarray,
    rg: np.ndarray,
) -> dict[str, Any]:
    """The verdict over the levels ``use``: means, their bootstrap SEs, the winner."""
    out: dict[str, Any] = {}
    mean_saved = float(saved[use].mean())
    mean_gain = float(gain[use].mean())
    se_saved = float(np.nanmean(rs[:, use], axis=1).std(ddof=1)) if len(rs) > 1 else float("nan")
    se_gain = float(np.nanmean(rg[:, use], axis=1).std(ddof=1)) if len(rg) > 1 else float("nan")
    if np.isfinite(se_saved) and mean_saved > 1.96 * se_saved:
        winner, better = "tiered", use & (saved > 0)
    elif np.isfinite(se_saved) and mean_saved < -1.96 * se_saved:
        winner, better = "close", use & (saved < 0)
    else:
        winner, better = "neither", use
    span = loss[better] if better.any() else loss[use]
    out["verdict"] = {
        "winner": winner,
        "good_hit_saved": mean_saved,
        "revenue_gain": mean_gain,
        "loss_range": [float(span.min()), float(span.max())],
    }
    out["se"] = {"good_hit_saved": se_saved, "revenue_gain": se_gain}
    out["levels_compared"] = int(use.sum())
    out["compared_loss_range"] = [float(loss[use].min()), float(loss[use].max())]
    return out


def verdict_sentence(v: dict[str, Any]) -> str:
    """The verdict in one sentence, with its uncertainty and the rows it rests on."""
    d, se = v["verdict"], v["se"]
    if d["winner"] == "undecided":
        return (
            f"policy verdict: undecided: on {v['rows']:,} out-of-time rows the tuned tiered "
            "strategy reaches none of the closing strategy's losses, so they cannot be "
            "compared at the same loss"
        )
    lo, hi = d["loss_range"]
    base = (
        f"the tuned tiered strategy hits {d['good_hit_saved']:,.1f} "
        f"(SE {se['good_hit_saved']:,.1f}) fewer never-overdue accounts than closing above a "
        f"threshold (a cut counted as {v['cut_harm']:g} of a closure) and earns "
        f"{d['revenue_gain']:,.0f} (SE {se['revenue_gain']:,.0f}) more revenue, on average "
        f"over {v['levels_compared']} matched loss levels"
    )
    where = (
        f"at losses {lo:,.0f} to {hi:,.0f}"
        if d["winner"] != "neither"
        else f"over losses {lo:,.0f} to {hi:,.0f}"
    )
    head = {
        "tiered": f"policy verdict: the tiered strategy wins {where}: ",
        "close": f"policy verdict: closing above a threshold wins {where}: ",
        "neither": f"policy verdict: neither strategy wins beyond noise {where}: ",
    }[d["winner"]]
    return (
        head + base + f" (out-of-time rows {v['rows']:,}, {v['borrowers']:,} borrowers, SE from "
        f"{v['replicates']} bootstrap resamples of borrowers; settings tuned on validation rows)"
    )


def tuned_frontier(frame: pd.DataFrame, choices: list[Choice], m: Money) -> pd.DataFrame:
    """The tuned tiered strategy's points on ``frame`` (strategy ``tiered_tuned``, one per
    chosen level, ``threshold`` the closing threshold whose validation loss it matches),
    per segment as :func:`frontier`, beside the fixed settings' points."""
    od = frame.overdue.to_numpy()
    seg = frame.occupation.to_numpy().astype(str)
    records: list[dict[str, Any]] = []
    for c in choices:
        a = actions(
            "tiered", c.threshold, frame.probability.to_numpy(), _raise_ok(frame, c.money), c.money
        )
        rev, loss = money(a, frame, c.money)
        for s in ["all", *sorted(set(seg))]:
            k = np.ones(len(a), dtype=bool) if s == "all" else seg == s
            rec = {
                "strategy": "tiered_tuned",
                "threshold": c.threshold_close,
                "segment": s,
                **_summary(a[k], rev[k], loss[k], od[k]),
            }
            rec["harm"] = rec["good_closed"] + m.cut_harm * rec["good_cut"]
            records.append(rec)
    return pd.DataFrame.from_records(records)
