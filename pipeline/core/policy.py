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

from dataclasses import dataclass
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
