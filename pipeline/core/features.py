"""Point-in-time features, labels and splits at snapshot months.

Pure core: raw tables in (as Arrow tables for one block of borrowers), a feature table
out. Each raw table is scattered into a dense ``(borrower, column, month)`` array in a
narrow dtype (a missing borrower-month is all zeros); one compiled pass over borrowers
(numba, parallel, one borrower per iteration) then computes every behavioural feature of
a borrower at every snapshot. A feature at snapshot ``s`` only reads months ``<= s``;
the label only reads closure events in ``(s, s + H]``.

Trailing-window sums add their months in one fixed order (numpy's pairwise order for a
row sum: one at a time under eight terms, else eight partial sums), so the values do not
depend on the block size or on the number of threads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum, auto, unique
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit, prange

from pipeline.base.causes import (
    AGE_BANDS,
    ALL_CAUSES,
    CHANNELS,
    EVENTS,
    OCCUPATIONS,
    OVERDUE,
)
from pipeline.base.registry import FEATURE_NAMES, FEATURES

NEVER = np.iinfo(np.int16).max  # "this never happened" for first-event months
PRIOR = -1  # "this happened before month 0", the first recorded month
SOCIAL_WINDOW = 12  # months back that a contact's closure counts in the social features
# months since a platform action are counted up to this many (also: none so far), so an
# account that was never acted on reads the same at any age, not as its tenure
EVENT_CAP = 12


@dataclass(frozen=True)
class FeatureSpec:
    snapshots: tuple[int, ...]
    horizon: int
    valid_snapshots: tuple[int, ...]
    oot_snapshots: tuple[int, ...]
    fund_days: int = 7
    small_draw_ratio: float = 0.05
    never_overdue_only: bool = True


@dataclass
class BlockStatus:
    """Per-borrower first-event months, needed to build social features across blocks."""

    borrower_id: np.ndarray
    first_closed: np.ndarray  # first non-overdue closure month (NEVER if none)
    first_overdue: np.ndarray  # first month with dpd > 0 or an overdue closure


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)


# --------------------------------------------------------------------------- dense layout


class _Rows(IntEnum):
    """Rows of a dense array, numbered 0, 1, 2, ... in the order their names are written.

    The compiled functions read a member (``out[Slot.tenure, r]``) as the constant it
    stands for: numba freezes an ``IntEnum`` member to its value when it compiles, so a
    name costs nothing against a literal row number.
    """

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> int:
        return count


@unique
class Cnt(_Rows):
    """Small-integer columns (int16) of the ``cnt`` cube, per borrower and month."""

    on_book = auto()  # 1 where account_months has a row
    n_draws = auto()
    n_early_repay = auto()
    frozen = auto()
    ext_cards = auto()
    ext_loans = auto()
    ext_new_accounts = auto()
    ext_inquiries = auto()
    months_since_ext_activity = auto()
    consumption_on = auto()  # 1 where consumption_months has a row
    line_increase = auto()
    line_decrease = auto()
    freeze = auto()


@unique
class Flt(_Rows):
    """float32 columns of the ``flt`` cube, as stored in the raw tables."""

    line = auto()
    draw_amount = auto()
    balance = auto()
    interest_paid = auto()
    ext_utilisation = auto()
    spend_daily = auto()
    spend_durables = auto()
    spend_services = auto()
    spend_weekly_cv = auto()
    competitor_baitiao = auto()
    competitor_fenfu = auto()


#: the consumption_months columns of the ``flt`` cube
_CONSUMPTION_FLT = (
    Flt.spend_daily,
    Flt.spend_durables,
    Flt.spend_services,
    Flt.spend_weekly_cv,
    Flt.competitor_baitiao,
    Flt.competitor_fenfu,
)

# float64 sums of fund flows (the ``flows`` cube): one row per channel, in CHANNELS order,
# then the fast (within fund_days of the draw) securities and other-lender parts
_N_CHANNELS = len(CHANNELS)
_FAST_SEC = _N_CHANNELS
_FAST_OTH = _N_CHANNELS + 1
_N_FLOW = _N_CHANNELS + 2
_SEC, _OTH = CHANNELS.index("securities"), CHANNELS.index("other_lender")
_BUS, _CONS = CHANNELS.index("business"), CHANNELS.index("consumption")


@unique
class Slot(_Rows):
    """The compiled pass's output rows, one per feature, in the registry's order."""

    months_since_last_draw = auto()
    draw_months_3 = auto()
    draw_months_6 = auto()
    draw_months_12 = auto()
    n_draws_3 = auto()
    n_draws_6 = auto()
    n_draws_12 = auto()
    draw_amount_3 = auto()
    draw_amount_6 = auto()
    draw_amount_12 = auto()
    draw_trend = auto()
    longest_idle_12 = auto()
    util_mean_3 = auto()
    util_mean_6 = auto()
    util_mean_12 = auto()
    util_max_12 = auto()
    util_trend = auto()
    util_now = auto()
    reliance_3 = auto()
    stop_watch_1 = auto()
    stop_watch_2 = auto()
    draw_months_9 = auto()
    revolving_share_6 = auto()
    small_draw_share_12 = auto()
    interest_paid_6 = auto()
    interest_to_line_12 = auto()
    early_repay_share_12 = auto()
    line = auto()
    line_to_initial = auto()
    n_line_increases = auto()
    n_line_decreases = auto()
    n_freezes = auto()
    months_since_line_change = auto()
    tenure = auto()
    frozen_now = auto()
    months_since_cut_or_freeze = auto()
    share_securities_k = auto()
    share_other_lender_k = auto()
    misuse_share_k = auto()
    share_business_6 = auto()
    share_consumption_6 = auto()
    misuse_share_3 = auto()
    noncons_share_3 = auto()
    ext_active_products = auto()
    ext_cards = auto()
    ext_loans = auto()
    months_since_ext_activity = auto()
    ext_inquiries_6 = auto()
    ext_new_accounts_12 = auto()
    ext_utilisation = auto()
    competitor_months_6 = auto()
    competitor_share_6 = auto()
    spend_level_6 = auto()
    spend_volatility_6 = auto()
    spend_trend = auto()
    spend_weekly_cv_3 = auto()
    spend_ratio_1 = auto()
    spend_ratio_3 = auto()
    weekly_cv_1 = auto()
    weekly_cv_ratio_3 = auto()
    idle_multihoming_6 = auto()
    competition_watch_1 = auto()
    competition_watch_2 = auto()
    competition_watch_3 = auto()


#: the registry families whose features the compiled pass computes (all of them)
KERNEL_FAMILIES = ("behaviour", "fund_use", "external")
#: features computed by the compiled pass, in the order of its output rows
KERNEL_FEATURES: tuple[str, ...] = tuple(Slot.__members__)


def _check_slots() -> None:
    """The kernel's output rows must be the registry's features of its families, in order."""
    expected = tuple(f.name for f in FEATURES if f.family in KERNEL_FAMILIES)
    if KERNEL_FEATURES != expected:
        missing = [n for n in expected if n not in KERNEL_FEATURES]
        extra = [n for n in KERNEL_FEATURES if n not in expected]
        first = next(
            (k for k, (a, b) in enumerate(zip(KERNEL_FEATURES, expected, strict=False)) if a != b),
            min(len(KERNEL_FEATURES), len(expected)),
        )
        raise ImportError(
            "pipeline/core/features.py: the kernel's output slots (Slot) differ from "
            f"pipeline/base/registry.py FEATURES of the families {KERNEL_FAMILIES}: "
            f"missing slots {missing}, slots not in the registry {extra}, first difference "
            f"at slot {first}; add, remove or reorder Slot members to follow the registry"
        )


_check_slots()


def kernel_version() -> str:
    """A digest of this module's source: the feature values change only when it does.

    The features stage puts it in its cache key, so editing the kernel (or anything
    else here) rebuilds the feature table instead of keeping the old one.
    """
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


# derived monthly series of one borrower (rows of the kernel's scratch array)
(
    D_ON,
    D_DREW,
    D_ND,
    D_DAMT,
    D_UTIL_ON,
    D_UTIL,
    D_REVOLVE,
    D_SMALL,
    D_INTEREST,
    D_EARLY,
    D_FTOTAL,
    D_FSEC,
    D_FOTH,
    D_FMISUSE,
    D_FBUS,
    D_FCONS,
    D_INQ,
    D_NEW,
    D_COMP_POS,
    D_COMP,
    D_SPEND,
    D_SPEND_CON,
    D_CON,
    D_WCV_CON,
    D_IDLE,
    D_TMP,
    D_CUM_INC,  # running totals and last-event months up to each month (-1: none yet)
    D_CUM_DEC,
    D_CUM_FRZ,
    D_LAST_DRAW,
    D_LAST_CHANGE,
    D_FNONCONS,
    D_LAST_CUTFRZ,
) = range(33)
_N_DERIVED = 33


@njit(cache=True)
def _wsum(a, lo, hi):  # pragma: no cover - compiled
    """Sum of ``a[lo..hi]`` (inclusive) in pairwise order; windows here are <= 128 long."""
    n = hi - lo + 1
    if n < 8:
        r = 0.0
        for j in range(lo, hi + 1):
            r += a[j]
        return r
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    lim = n - n % 8
    while i < lim:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def _div(a, b):  # pragma: no cover - compiled
    return a / b if b > 0 else 0.0


@njit(cache=True)
def _mean(num, den):  # pragma: no cover - compiled
    return num / max(den, 1.0) if den > 0 else 0.0


@njit(cache=True)
def _scatter_add(dst, i, k, m, vals, mask):  # pragma: no cover - compiled
    """``dst[i, k, m] += vals`` row by row in table order (where ``mask``)."""
    for r in range(i.shape[0]):
        if mask[r]:
            dst[i[r], k[r], m[r]] += vals[r]


@njit(parallel=True, cache=True)
def _kernel(
    cnt, flt, flows, signup, initial_line, snaps, pos, small_ratio, out
):  # pragma: no cover
    """Every behavioural feature of every borrower alive at a snapshot, in parallel slices."""
    n = cnt.shape[0]
    n_parts = min(n, 256)
    for p in prange(n_parts):
        _features_of(
            p * n // n_parts,
            (p + 1) * n // n_parts,
            cnt,
            flt,
            flows,
            signup,
            initial_line,
            snaps,
            pos,
            small_ratio,
            out,
        )


@njit(cache=True)
def _features_of(
    i0, i1, cnt, flt, flows, signup, initial_line, snaps, pos, small_ratio, out
):  # pragma: no cover - compiled
    """Borrowers ``i0 .. i1-1``: row ``pos[k, i]`` of ``out`` gets their features at
    snapshot ``snaps[k]`` (``pos < 0``: not in the population then)."""
    n_months = cnt.shape[2]
    n_snaps = snaps.shape[0]
    last = 0
    for k in range(n_snaps):
        last = max(last, snaps[k])
    width = min(last + 1, n_months)
    d = np.zeros((_N_DERIVED, width))
    for i in range(i0, i1):
        todo = False
        for k in range(n_snaps):
            if pos[k, i] >= 0:
                todo = True
        if not todo:
            continue
        cum_inc = 0.0
        cum_dec = 0.0
        cum_frz = 0.0
        last_draw = -1.0
        last_change = -1.0
        last_cutfrz = -1.0
        for m in range(width):
            on = np.float64(cnt[i, Cnt.on_book, m])
            nd = np.float64(cnt[i, Cnt.n_draws, m])
            drew = 1.0 if nd > 0 else 0.0
            line = np.float64(flt[i, Flt.line, m])
            damt = np.float64(flt[i, Flt.draw_amount, m])
            bal = np.float64(flt[i, Flt.balance, m])
            util = bal / line if line > 0 else 0.0
            bal_prev = np.float64(flt[i, Flt.balance, m - 1]) if m > 0 else 0.0
            d[D_ON, m] = on
            d[D_DREW, m] = drew
            d[D_ND, m] = nd
            d[D_DAMT, m] = damt
            d[D_UTIL_ON, m] = util * on
            d[D_UTIL, m] = util
            d[D_REVOLVE, m] = drew if bal_prev > 0 else 0.0
            d[D_SMALL, m] = drew if damt < small_ratio * max(line, 1.0) else 0.0
            d[D_INTEREST, m] = np.float64(flt[i, Flt.interest_paid, m])
            d[D_EARLY, m] = np.float64(cnt[i, Cnt.n_early_repay, m])
            total = flows[i, 0, m]
            for c in range(1, _N_CHANNELS):
                total += flows[i, c, m]
            d[D_FTOTAL, m] = total
            d[D_FSEC, m] = flows[i, _FAST_SEC, m]
            d[D_FOTH, m] = flows[i, _FAST_OTH, m]
            d[D_FMISUSE, m] = flows[i, _FAST_SEC, m] + flows[i, _FAST_OTH, m]
            d[D_FBUS, m] = flows[i, _BUS, m]
            d[D_FCONS, m] = flows[i, _CONS, m]
            d[D_FNONCONS, m] = total - flows[i, _CONS, m]
            d[D_INQ, m] = np.float64(cnt[i, Cnt.ext_inquiries, m])
            d[D_NEW, m] = np.float64(cnt[i, Cnt.ext_new_accounts, m])
            comp = np.float64(flt[i, Flt.competitor_baitiao, m]) + np.float64(
                flt[i, Flt.competitor_fenfu, m]
            )
            d[D_COMP, m] = comp
            d[D_COMP_POS, m] = 1.0 if comp > 0 else 0.0
            spend = (
                np.float64(flt[i, Flt.spend_daily, m]) + np.float64(flt[i, Flt.spend_durables, m])
            ) + np.float64(flt[i, Flt.spend_services, m])
            con = np.float64(cnt[i, Cnt.consumption_on, m])
            d[D_SPEND, m] = spend
            d[D_SPEND_CON, m] = spend * con
            d[D_CON, m] = con
            d[D_WCV_CON, m] = np.float64(flt[i, Flt.spend_weekly_cv, m]) * con
            d[D_IDLE, m] = (1.0 - drew) * on
            inc = np.float64(cnt[i, Cnt.line_increase, m])
            dec = np.float64(cnt[i, Cnt.line_decrease, m])
            frz = np.float64(cnt[i, Cnt.freeze, m])
            cum_inc += inc
            cum_dec += dec
            cum_frz += frz
            if drew > 0:
                last_draw = m
            if inc + dec > 0:
                last_change = m
            if dec + frz > 0:
                last_cutfrz = m
            d[D_CUM_INC, m] = cum_inc
            d[D_CUM_DEC, m] = cum_dec
            d[D_CUM_FRZ, m] = cum_frz
            d[D_LAST_DRAW, m] = last_draw
            d[D_LAST_CHANGE, m] = last_change
            d[D_LAST_CUTFRZ, m] = last_cutfrz
        for k in range(n_snaps):
            r = pos[k, i]
            if r < 0:
                continue
            s = snaps[k]
            lo3, lo6, lo12 = max(0, s - 2), max(0, s - 5), max(0, s - 11)
            tenure = s - signup[i]
            last_draw = int(d[D_LAST_DRAW, s])
            last_change = int(d[D_LAST_CHANGE, s])
            msld = s - last_draw if last_draw >= 0 else min(tenure + 1, 36)
            dm3 = _wsum(d[D_DREW], lo3, s)
            dm6 = _wsum(d[D_DREW], lo6, s)
            dm12 = _wsum(d[D_DREW], lo12, s)
            earlier_rate = _div(dm12 - dm3, float(min(max(tenure + 1 - 3, 0), 9)))
            recent_rate = dm3 / float(min(max(tenure + 1, 1), 3))
            run = 0.0
            best = 0.0
            umax = d[D_UTIL, lo12]
            for m in range(lo12, s + 1):
                run = (run + 1.0) * d[D_IDLE, m]
                best = max(best, run)
                umax = max(umax, d[D_UTIL, m])
            u3 = _wsum(d[D_UTIL_ON], lo3, s)
            u12 = _wsum(d[D_UTIL_ON], lo12, s)
            on3 = _wsum(d[D_ON], lo3, s)
            on6 = _wsum(d[D_ON], lo6, s)
            on12 = _wsum(d[D_ON], lo12, s)
            um3 = _mean(u3, on3)
            line_now = np.float64(flt[i, Flt.line, s])
            drawn6 = _wsum(d[D_FTOTAL], lo6, s)
            con3 = _wsum(d[D_CON], lo3, s)
            con6 = _wsum(d[D_CON], lo6, s)
            n_c6 = max(con6, 1.0)
            spend6 = _wsum(d[D_SPEND], lo6, s)
            mean6 = spend6 / n_c6
            for m in range(lo6, s + 1):
                dev = d[D_SPEND, m] - mean6
                d[D_TMP, m] = dev * dev * d[D_CON, m]
            var6 = _wsum(d[D_TMP], lo6, s) / n_c6
            sc3 = _wsum(d[D_SPEND_CON], lo3, s)
            sc6 = _wsum(d[D_SPEND_CON], lo6, s)
            spend3 = _mean(sc3, con3)
            spend_prev3 = _div(sc6 - sc3, con6 - con3)
            cards = np.float64(cnt[i, Cnt.ext_cards, s])
            loans = np.float64(cnt[i, Cnt.ext_loans, s])

            out[Slot.months_since_last_draw, r] = msld
            out[Slot.draw_months_3, r] = dm3
            out[Slot.draw_months_6, r] = dm6
            out[Slot.draw_months_12, r] = dm12
            out[Slot.n_draws_3, r] = _wsum(d[D_ND], lo3, s)
            out[Slot.n_draws_6, r] = _wsum(d[D_ND], lo6, s)
            out[Slot.n_draws_12, r] = _wsum(d[D_ND], lo12, s)
            out[Slot.draw_amount_3, r] = _wsum(d[D_DAMT], lo3, s)
            out[Slot.draw_amount_6, r] = _wsum(d[D_DAMT], lo6, s)
            out[Slot.draw_amount_12, r] = _wsum(d[D_DAMT], lo12, s)
            out[Slot.draw_trend, r] = recent_rate - earlier_rate
            out[Slot.longest_idle_12, r] = best
            out[Slot.util_mean_3, r] = um3
            out[Slot.util_mean_6, r] = _mean(_wsum(d[D_UTIL_ON], lo6, s), on6)
            out[Slot.util_mean_12, r] = _mean(u12, on12)
            out[Slot.util_max_12, r] = umax
            out[Slot.util_trend, r] = um3 - _div(u12 - u3, on12 - on3)
            out[Slot.revolving_share_6, r] = _div(_wsum(d[D_REVOLVE], lo6, s), on6)
            out[Slot.small_draw_share_12, r] = _div(_wsum(d[D_SMALL], lo12, s), dm12)
            out[Slot.interest_paid_6, r] = _wsum(d[D_INTEREST], lo6, s)
            out[Slot.interest_to_line_12, r] = _div(_wsum(d[D_INTEREST], lo12, s), line_now)
            out[Slot.early_repay_share_12, r] = _div(_wsum(d[D_EARLY], lo12, s), on12)
            out[Slot.line, r] = line_now
            out[Slot.line_to_initial, r] = _div(line_now, initial_line[i])
            out[Slot.n_line_increases, r] = d[D_CUM_INC, s]
            out[Slot.n_line_decreases, r] = d[D_CUM_DEC, s]
            out[Slot.n_freezes, r] = d[D_CUM_FRZ, s]
            out[Slot.months_since_line_change, r] = (
                min(s - last_change, EVENT_CAP) if last_change >= 0 else EVENT_CAP
            )
            out[Slot.tenure, r] = tenure
            out[Slot.frozen_now, r] = np.float64(cnt[i, Cnt.frozen, s])
            out[Slot.share_securities_k, r] = _div(_wsum(d[D_FSEC], lo6, s), drawn6)
            out[Slot.share_other_lender_k, r] = _div(_wsum(d[D_FOTH], lo6, s), drawn6)
            out[Slot.misuse_share_k, r] = _div(_wsum(d[D_FMISUSE], lo6, s), drawn6)
            out[Slot.share_business_6, r] = _div(_wsum(d[D_FBUS], lo6, s), drawn6)
            out[Slot.share_consumption_6, r] = _div(_wsum(d[D_FCONS], lo6, s), drawn6)
            out[Slot.ext_active_products, r] = cards + loans
            out[Slot.ext_cards, r] = cards
            out[Slot.ext_loans, r] = loans
            out[Slot.months_since_ext_activity, r] = np.float64(
                cnt[i, Cnt.months_since_ext_activity, s]
            )
            out[Slot.ext_inquiries_6, r] = _wsum(d[D_INQ], lo6, s)
            out[Slot.ext_new_accounts_12, r] = _wsum(d[D_NEW], lo12, s)
            out[Slot.ext_utilisation, r] = np.float64(flt[i, Flt.ext_utilisation, s])
            out[Slot.competitor_months_6, r] = _wsum(d[D_COMP_POS], lo6, s)
            out[Slot.competitor_share_6, r] = _div(_wsum(d[D_COMP], lo6, s), spend6)
            out[Slot.spend_level_6, r] = mean6
            out[Slot.spend_volatility_6, r] = _div(np.sqrt(var6), mean6)
            out[Slot.spend_trend, r] = _div(spend3 - spend_prev3, spend_prev3)
            out[Slot.spend_weekly_cv_3, r] = _mean(_wsum(d[D_WCV_CON], lo3, s), con3)
            # the platform's own three-month window of fund use
            drawn3 = _wsum(d[D_FTOTAL], lo3, s)
            out[Slot.misuse_share_3, r] = _div(_wsum(d[D_FMISUSE], lo3, s), drawn3)
            out[Slot.noncons_share_3, r] = _div(_wsum(d[D_FNONCONS], lo3, s), drawn3)
            out[Slot.util_now, r] = d[D_UTIL, s]
            out[Slot.reliance_3, r] = (
                um3 * (1.0 if dm3 >= 2 else 0.0) * (2.0 if loans >= 3 else 1.0)
            )
            # the nine "earlier" months of the reviews one and two months ahead, where the
            # months of their recent three already seen had no draw; three months ahead
            drew_last2 = d[D_DREW, s] + (d[D_DREW, s - 1] if s >= 1 else 0.0)
            sw1 = _wsum(d[D_DREW], max(0, s - 10), s - 2)
            sw2 = _wsum(d[D_DREW], max(0, s - 9), s - 1)
            out[Slot.stop_watch_1, r] = sw1 if drew_last2 == 0 else 0.0
            out[Slot.stop_watch_2, r] = sw2 if d[D_DREW, s] == 0 else 0.0
            out[Slot.draw_months_9, r] = _wsum(d[D_DREW], max(0, s - 8), s)
            # spending and its weekly variability against the borrower's own months
            # s-11 .. s-3 (1 where there is no such past)
            past_n = _wsum(d[D_CON], lo12, s - 3)
            past_sp = _mean(_wsum(d[D_SPEND_CON], lo12, s - 3), past_n)
            past_cv = _mean(_wsum(d[D_WCV_CON], lo12, s - 3), past_n)
            out[Slot.spend_ratio_1, r] = d[D_SPEND_CON, s] / past_sp if past_sp > 0 else 1.0
            out[Slot.spend_ratio_3, r] = spend3 / past_sp if past_sp > 0 else 1.0
            out[Slot.weekly_cv_1, r] = d[D_WCV_CON, s]
            wcv3 = _mean(_wsum(d[D_WCV_CON], lo3, s), con3)
            out[Slot.weekly_cv_ratio_3, r] = wcv3 / past_cv if past_cv > 0 else 1.0
            last_cf = int(d[D_LAST_CUTFRZ, s])
            out[Slot.months_since_cut_or_freeze, r] = (
                min(s - last_cf, EVENT_CAP) if last_cf >= 0 else EVENT_CAP
            )
            out[Slot.idle_multihoming_6, r] = _wsum(d[D_COMP_POS], lo6, s) if dm6 <= 1 else 0.0
            out[Slot.competition_watch_1, r] = _competition_watch(d, s, 1)
            out[Slot.competition_watch_2, r] = _competition_watch(d, s, 2)
            out[Slot.competition_watch_3, r] = _competition_watch(d, s, 3)


@njit(cache=True, inline="always")
def _competition_watch(d, s, j):  # pragma: no cover - compiled
    """The seen part (months s-5+j .. s) of the six-month window of the review ``j``
    months ahead: months on competing products, when at most one had a draw."""
    lo_j = max(0, s - 5 + j)
    seen = _wsum(d[D_COMP_POS], lo_j, s)
    return seen if _wsum(d[D_DREW], lo_j, s) <= 1 else 0.0


def _np(table: pa.Table, col: str) -> np.ndarray:
    return table.column(col).to_numpy()


def block_features(
    raw: dict[str, pa.Table],
    lo: int,
    n: int,
    n_months: int,
    spec: FeatureSpec,
) -> tuple[dict[str, np.ndarray], BlockStatus]:
    """Features for borrowers ``lo .. lo+n-1`` at every snapshot (social ones filled later).

    ``raw`` holds this block's rows of borrowers, account_months, fund_flows,
    bureau_months, consumption_months, platform_events, and the macro_months table.
    Returns a column dict (one row per eligible borrower x snapshot, rows ordered by
    borrower then snapshot; features as float32) and the block's first-event months.
    """
    who = _Borrowers.of(raw["borrowers"], lo, n)
    cnt, flt, flows = _month_cubes(raw, lo, n, n_months, spec)
    ends = _Outcomes.of(raw, lo, n)

    snaps = np.asarray(spec.snapshots, dtype=np.int64)
    alive = who.present[None, :] & (who.signup[None, :] <= snaps[:, None])
    alive &= ends.close_month[None, :] > snaps[:, None]
    if spec.never_overdue_only:
        alive &= ends.first_overdue[None, :] > snaps[:, None]
    # rows ordered by borrower, then snapshot: blocks cover ascending id ranges, so the
    # joined table has one order whatever the block size (and so does the model)
    by_borrower = alive.T  # (n, K)
    row_of = np.cumsum(by_borrower.ravel()) - 1
    pos = np.ascontiguousarray(
        np.where(by_borrower.ravel(), row_of, -1).reshape(by_borrower.shape).T
    ).astype(np.int64)
    n_rows = int(alive.sum())
    out = np.empty((len(KERNEL_FEATURES), n_rows), dtype=np.float32)
    _kernel(
        cnt, flt, flows, who.signup, who.initial_line, snaps, pos, float(spec.small_draw_ratio), out
    )
    del cnt, flt, flows

    local, snap_k = np.nonzero(by_borrower)  # ordered by borrower, then snapshot
    s_row = snaps[snap_k]
    cols = _labels(ends, local, s_row, lo, spec.horizon, who)
    for j, name in enumerate(KERNEL_FEATURES):
        cols[name] = out[j]
    for name in SOCIAL_FEATURES:
        cols[name] = np.zeros(n_rows, dtype=np.float32)  # filled from a SocialLookup
    cols.update(_macro_columns(raw["macro_months"], n_months, s_row))
    cols.update(_regime_segments(cols))
    cols["income"] = who.income[local].astype(np.float32)
    cols["occupation_code"] = who.occ_code[local].astype(np.float32)
    cols["city_tier"] = who.tier[local].astype(np.float32)
    cols["age_band_code"] = who.age_code[local].astype(np.float32)
    return cols, _status(lo, n, who.present, ends)


def _status(lo: int, n: int, present: np.ndarray, ends: _Outcomes) -> BlockStatus:
    return BlockStatus(
        borrower_id=np.arange(lo, lo + n)[present],
        first_closed=ends.first_closed[present],
        first_overdue=ends.first_overdue[present],
    )


# the raw columns :func:`block_status` reads: a narrow first pass over the world
STATUS_COLUMNS = {
    "borrowers": ["borrower_id", "prior_overdue", "prior_closure"],
    "account_months": ["borrower_id", "month", "dpd"],
    "platform_events": ["borrower_id", "month", "event", "cause"],
}


def block_status(raw: dict[str, pa.Table], lo: int, n: int) -> BlockStatus:
    """The first-event months of borrowers ``lo .. lo+n-1``, as :func:`block_features` gives them.

    Needs only :data:`STATUS_COLUMNS`, so every borrower's status can be known (for the
    contacts' features) before any block's features are computed.
    """
    present = np.zeros(n, dtype=bool)
    present[_np(raw["borrowers"], "borrower_id") - lo] = True
    return _status(lo, n, present, _Outcomes.of(raw, lo, n))


_CAUSE_VOCAB = (*ALL_CAUSES, "none")


@dataclass
class _Borrowers:
    """Static attributes of the block's borrowers, indexed by id - lo."""

    signup: np.ndarray
    income: np.ndarray
    initial_line: np.ndarray
    occ_code: np.ndarray
    age_code: np.ndarray
    tier: np.ndarray
    present: np.ndarray

    @classmethod
    def of(cls, b: pa.Table, lo: int, n: int) -> _Borrowers:
        bid = _np(b, "borrower_id") - lo
        signup = np.full(n, NEVER, dtype=np.int64)
        signup[bid] = _np(b, "signup_month")
        income = np.zeros(n)
        income[bid] = _np(b, "income")
        initial_line = np.ones(n)
        initial_line[bid] = _np(b, "initial_line")
        occ_code = np.zeros(n, dtype=np.int64)
        occ_code[bid] = _codes(b.column("occupation"), OCCUPATIONS)
        age_code = np.zeros(n, dtype=np.int64)
        age_code[bid] = _codes(b.column("age_band"), AGE_BANDS)
        tier = np.zeros(n)
        tier[bid] = _np(b, "city_tier")
        present = np.zeros(n, dtype=bool)
        present[bid] = True
        return cls(signup, income, initial_line, occ_code, age_code, tier, present)


def _month_cubes(
    raw: dict[str, pa.Table], lo: int, n: int, M: int, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Borrower x column x month arrays of counts, amounts and fund flows by channel."""
    cnt = np.zeros((n, len(Cnt), M), dtype=np.int16)
    flt = np.zeros((n, len(Flt), M), dtype=np.float32)
    flows = np.zeros((n, _N_FLOW, M), dtype=np.float64)

    am = raw["account_months"]
    ai = _np(am, "borrower_id") - lo
    amo = _np(am, "month").astype(np.int64)
    cnt[ai, Cnt.on_book, amo] = 1
    for col in ("n_draws", "n_early_repay", "frozen"):
        cnt[ai, Cnt[col], amo] = _np(am, col)
    for col in ("line", "draw_amount", "balance", "interest_paid"):
        flt[ai, Flt[col], amo] = _np(am, col)

    bu = raw["bureau_months"]
    bi = _np(bu, "borrower_id") - lo
    bmo = _np(bu, "month").astype(np.int64)
    for col in (
        "ext_cards",
        "ext_loans",
        "ext_new_accounts",
        "ext_inquiries",
        "months_since_ext_activity",
    ):
        cnt[bi, Cnt[col], bmo] = _np(bu, col)
    flt[bi, Flt.ext_utilisation, bmo] = _np(bu, "ext_utilisation")

    co = raw["consumption_months"]
    ci = _np(co, "borrower_id") - lo
    cmo = _np(co, "month").astype(np.int64)
    cnt[ci, Cnt.consumption_on, cmo] = 1
    for row in _CONSUMPTION_FLT:
        flt[ci, row, cmo] = _np(co, row.name)

    fl = raw["fund_flows"]
    fi = _np(fl, "borrower_id") - lo
    fm = _np(fl, "month").astype(np.int64)
    fch = _codes(fl.column("channel"), CHANNELS)
    famt = _np(fl, "amount").astype(np.float64)
    fast = _np(fl, "days_after_draw") <= spec.fund_days
    everything = np.ones(len(fi), dtype=np.bool_)
    _scatter_add(flows, fi, fch, fm, famt, everything)
    _scatter_add(flows, fi, np.full(len(fi), _FAST_SEC), fm, famt, fast & (fch == _SEC))
    _scatter_add(flows, fi, np.full(len(fi), _FAST_OTH), fm, famt, fast & (fch == _OTH))

    ev = raw["platform_events"]
    ei = _np(ev, "borrower_id") - lo
    emo = _np(ev, "month").astype(np.int64)
    etype = _codes(ev.column("event"), EVENTS)
    for name in ("line_increase", "line_decrease", "freeze"):
        hit = etype == EVENTS.index(name)
        np.add.at(cnt, (ei[hit], Cnt[name], emo[hit]), 1)
    return cnt, flt, flows


@dataclass
class _Outcomes:
    """Per borrower: the (first) closure's month and cause, first overdue, first closed."""

    close_month: np.ndarray
    close_cause: np.ndarray
    overdue_close: np.ndarray
    first_overdue: np.ndarray
    first_closed: np.ndarray

    @classmethod
    def of(cls, raw: dict[str, pa.Table], lo: int, n: int) -> _Outcomes:
        ev = raw["platform_events"]
        ei = _np(ev, "borrower_id") - lo
        emo = _np(ev, "month").astype(np.int64)
        etype = _codes(ev.column("event"), EVENTS)
        is_close = np.flatnonzero(etype == EVENTS.index("closure"))
        order = is_close[np.lexsort((emo[is_close], ei[is_close]))]
        first_row = order[np.r_[True, ei[order][1:] != ei[order][:-1]]] if len(order) else order
        close_month = np.full(n, NEVER, dtype=np.int64)
        close_cause = np.full(n, _CAUSE_VOCAB.index("none"), dtype=np.int64)
        close_month[ei[first_row]] = emo[first_row]
        close_cause[ei[first_row]] = _codes(ev.column("cause"), _CAUSE_VOCAB)[first_row]
        overdue_close = close_cause == _CAUSE_VOCAB.index(OVERDUE)
        # first month with dpd > 0 (or an overdue closure), and first non-overdue closure
        am = raw["account_months"]
        dpd_rows = _np(am, "dpd") > 0
        first_dpd = np.full(n, NEVER, dtype=np.int64)
        np.minimum.at(
            first_dpd,
            (_np(am, "borrower_id") - lo)[dpd_rows],
            _np(am, "month").astype(np.int64)[dpd_rows],
        )
        # overdue before month 0 (a going concern's burn-in): before every snapshot
        b = raw["borrowers"]
        prior = np.zeros(n, dtype=bool)
        prior[_np(b, "borrower_id") - lo] = _np(b, "prior_overdue")
        first_dpd = np.where(prior, PRIOR, first_dpd)
        first_overdue = np.where(overdue_close, np.minimum(first_dpd, close_month), first_dpd)
        first_closed = np.where(~overdue_close, close_month, NEVER)
        # closed before month 0 (a going concern's burn-in): closed at every snapshot
        closure = np.zeros(n, dtype=np.int64)
        closure[_np(b, "borrower_id") - lo] = _np(b, "prior_closure")
        close_month = np.where(closure > 0, PRIOR, close_month)
        overdue_close = np.where(closure > 0, closure == 2, overdue_close)
        first_closed = np.where(closure == 1, PRIOR, first_closed)
        first_overdue = np.where(closure == 2, PRIOR, first_overdue)
        return cls(close_month, close_cause, overdue_close, first_overdue, first_closed)


def _labels(
    ends: _Outcomes, local: np.ndarray, s_row: np.ndarray, lo: int, horizon: int, who: _Borrowers
) -> dict[str, np.ndarray]:
    """Keys, the label (a non-overdue closure within the horizon) and its true cause."""
    close = ends.close_month[local]
    label = (close > s_row) & (close <= s_row + horizon) & ~ends.overdue_close[local]
    return {
        "borrower_id": (local + lo).astype(np.int64),
        "snapshot": s_row.astype(np.int16),
        "label": label.astype(np.int8),
        "label_cause": np.asarray(_CAUSE_VOCAB, dtype=object)[
            np.where(label, ends.close_cause[local], _CAUSE_VOCAB.index("none"))
        ],
        "occupation": np.asarray(OCCUPATIONS, dtype=object)[who.occ_code[local]],
    }


def _macro_columns(macro: pa.Table, M: int, s_row: np.ndarray) -> dict[str, np.ndarray]:
    """The regime as the macro table states it (0 none, 1 pilot, 2 full).

    The months since the tightening began and the competitors' intensity are not
    features: both are the calendar itself (the same value for every borrower of a
    snapshot, and values the training snapshots never reach). The borrower's own traces
    of what they act on are features instead (the tightening segments below, competitor
    use and the idle multi-homing count)."""
    regime_by_month = np.zeros(M, dtype=np.int64)
    regime_by_month[_np(macro, "month").astype(np.int64)] = _np(macro, "regime")
    return {"regime": regime_by_month[s_row].astype(np.float32)}


def _regime_segments(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The segments a tightening targets, seen only while a tightening is in force:
    leverage (utilisation of the last three months) and drawn money used for anything
    but consumption (same window)."""
    active = (cols["regime"] > 0).astype(np.float32)
    return {
        "tightening_util_3": active * cols["util_mean_3"],
        "tightening_noncons_3": active * cols["noncons_share_3"],
    }


def _codes(col: pa.ChunkedArray, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Integer codes of a string column in a fixed vocabulary (unknowns were refused on read)."""
    idx = pc.index_in(col, value_set=pa.array(list(vocabulary))).to_numpy(zero_copy_only=False)
    return np.asarray(idx, dtype=np.int64)


SOCIAL_FEATURES = (
    "degree",
    "contacts_closed_share",
    "contacts_closed_wshare",
    "contacts_overdue_share",
)


@dataclass
class SocialLookup:
    """Every borrower's contact features at each snapshot, looked up row by row.

    Built once from the contact graph and every borrower's first-event months; rows
    of any block then take their values by (borrower, snapshot), so the feature table
    can be written block by block. Values are kept as float32, the feature table's type.
    """

    snapshots: np.ndarray  # ascending
    degree: np.ndarray  # (n_ids,)
    shares: dict[str, np.ndarray]  # name -> (len(snapshots), n_ids)

    @classmethod
    def build(
        cls,
        edges_src: np.ndarray,
        edges_dst: np.ndarray,
        edges_w: np.ndarray,
        status: BlockStatus,
        snapshots: np.ndarray,
        n_ids: int = 0,
    ) -> SocialLookup:
        """Contacts closed in the :data:`SOCIAL_WINDOW` months before each snapshot, or
        overdue at any time before it, and degree."""
        n_ids = max(
            n_ids,
            int(
                max(
                    status.borrower_id.max(initial=-1),
                    edges_src.max(initial=-1),
                    edges_dst.max(initial=-1),
                )
            )
            + 1,
        )
        snaps = np.unique(np.asarray(snapshots, dtype=np.int64))
        first_closed = np.full(n_ids, NEVER, dtype=np.int64)
        first_overdue = np.full(n_ids, NEVER, dtype=np.int64)
        first_closed[status.borrower_id] = status.first_closed
        first_overdue[status.borrower_id] = status.first_overdue
        degree = np.bincount(edges_src, minlength=n_ids).astype(np.float64)
        wdeg = np.bincount(edges_src, weights=edges_w, minlength=n_ids)
        shares = {
            name: np.empty((len(snaps), n_ids), dtype=np.float32) for name in SOCIAL_FEATURES[1:]
        }
        closed_of, overdue_of = first_closed[edges_dst], first_overdue[edges_dst]
        for k, s in enumerate(snaps):
            # closed in the trailing window: a share of contacts ever closed would grow
            # with the calendar in a going concern whose contact graph does not renew
            closed = ((closed_of < s) & (closed_of >= s - SOCIAL_WINDOW)).astype(np.float64)
            overdue = (overdue_of < s).astype(np.float64)
            c = np.bincount(edges_src, weights=closed, minlength=n_ids)
            cw = np.bincount(edges_src, weights=closed * edges_w, minlength=n_ids)
            o = np.bincount(edges_src, weights=overdue, minlength=n_ids)
            shares["contacts_closed_share"][k] = _safe_div(c, degree)
            shares["contacts_closed_wshare"][k] = _safe_div(cw, wdeg)
            shares["contacts_overdue_share"][k] = _safe_div(o, degree)
        return cls(snaps, degree.astype(np.float32), shares)

    def rows(self, rows_bid: np.ndarray, rows_snap: np.ndarray) -> dict[str, np.ndarray]:
        """The four social features of rows (borrower, snapshot), float32."""
        bid = np.asarray(rows_bid, dtype=np.int64)
        k = np.searchsorted(self.snapshots, np.asarray(rows_snap, dtype=np.int64))
        known = k < len(self.snapshots)
        known[known] = self.snapshots[k[known]] == np.asarray(rows_snap)[known]
        if not known.all() or (len(bid) and (bid.min() < 0 or bid.max() >= len(self.degree))):
            raise ValueError("rows outside the borrowers and snapshots the lookup was built for")
        out = {"degree": self.degree[bid]}
        for name, table in self.shares.items():
            out[name] = table[k, bid]
        return out


def to_table(cols: dict[str, np.ndarray], spec: FeatureSpec) -> pa.Table:
    """Assemble the final feature table with its split column, features as float32."""
    snap = cols["snapshot"].astype(np.int16)
    split = np.full(len(snap), "train", dtype=object)
    split[np.isin(snap, spec.valid_snapshots)] = "valid"
    split[np.isin(snap, spec.oot_snapshots)] = "oot"
    data = {
        "borrower_id": pa.array(cols["borrower_id"].astype(np.int64)),
        "snapshot": pa.array(snap),
        "split": pa.array(split, type=pa.string()),
        "label": pa.array(cols["label"].astype(np.int8)),
        "label_cause": pa.array(cols["label_cause"], type=pa.string()),
        "occupation": pa.array(cols["occupation"], type=pa.string()),
    }
    for name in FEATURE_NAMES:
        data[name] = pa.array(np.asarray(cols[name], dtype=np.float32))
    return pa.table(data)


FEATURE_TABLE_SCHEMA = pa.schema(
    [
        ("borrower_id", pa.int64()),
        ("snapshot", pa.int16()),
        ("split", pa.string()),
        ("label", pa.int8()),
        ("label_cause", pa.string()),
        ("occupation", pa.string()),
    ]
    + [(name, pa.float32()) for name in FEATURE_NAMES]
)
