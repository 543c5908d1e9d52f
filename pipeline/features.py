"""Point-in-time features, labels and splits at snapshot months.

Pure core: raw tables in (as Arrow tables for one block of borrowers), a feature table
out. Every raw table is first laid out as a dense ``(borrowers, months)`` array; a
feature at snapshot ``s`` only ever reads columns ``<= s`` of those arrays, and the
label only reads closure events in ``(s, s + H]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.causes import AGE_BANDS, CAUSES, CHANNELS, OCCUPATIONS, OVERDUE
from pipeline.registry import FEATURE_NAMES

NEVER = np.iinfo(np.int16).max  # "this never happened" for first-event months


@dataclass(frozen=True)
class FeatureSpec:
    snapshots: tuple[int, ...]
    horizon: int
    valid_snapshots: tuple[int, ...]
    oot_snapshots: tuple[int, ...]
    fund_days: int = 7
    small_draw_ratio: float = 0.05
    never_overdue_only: bool = True

    def split_of(self, s: int) -> str:
        if s in self.oot_snapshots:
            return "oot"
        if s in self.valid_snapshots:
            return "valid"
        return "train"


@dataclass
class BlockStatus:
    """Per-borrower first-event months, needed to build social features across blocks."""

    borrower_id: np.ndarray
    first_closed: np.ndarray  # first non-overdue closure month (NEVER if none)
    first_overdue: np.ndarray  # first month with dpd > 0 or an overdue closure


def _dense(
    ids: np.ndarray,
    months: np.ndarray,
    values: np.ndarray,
    lo: int,
    n: int,
    n_months: int,
    fill: float = 0.0,
) -> np.ndarray:
    out = np.full((n, n_months), fill, dtype=np.float64)
    out[ids - lo, months] = values
    return out


def _window_mean(a: np.ndarray, on: np.ndarray, s: int, w: int) -> np.ndarray:
    lo = max(0, s - w + 1)
    num = (a[:, lo : s + 1] * on[:, lo : s + 1]).sum(axis=1)
    den = on[:, lo : s + 1].sum(axis=1)
    return np.where(den > 0, num / np.maximum(den, 1), 0.0)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)


def block_features(
    raw: dict[str, pa.Table],
    lo: int,
    n: int,
    n_months: int,
    spec: FeatureSpec,
    tightening_month: int,
) -> tuple[dict[str, np.ndarray], BlockStatus]:
    """Features for borrowers ``lo .. lo+n-1`` at every snapshot (social ones filled later).

    ``raw`` holds this block's rows of borrowers, account_months, fund_flows,
    bureau_months, consumption_months, platform_events, and the macro_months table.
    Returns a column dict (one row per eligible borrower x snapshot) and the block's
    first-event months.
    """
    M = n_months
    b = raw["borrowers"]
    bid = b.column("borrower_id").to_numpy()
    signup = np.full(n, NEVER, dtype=np.int64)
    signup[bid - lo] = b.column("signup_month").to_numpy()
    income = np.zeros(n)
    income[bid - lo] = b.column("income").to_numpy()
    initial_line = np.ones(n)
    initial_line[bid - lo] = b.column("initial_line").to_numpy()
    occ_code = np.zeros(n, dtype=np.int64)
    occ_code[bid - lo] = _codes(b.column("occupation"), OCCUPATIONS)
    age_code = np.zeros(n, dtype=np.int64)
    age_code[bid - lo] = _codes(b.column("age_band"), AGE_BANDS)
    tier = np.zeros(n)
    tier[bid - lo] = b.column("city_tier").to_numpy()
    present = np.zeros(n, dtype=bool)
    present[bid - lo] = True

    am = raw["account_months"]
    ai = am.column("borrower_id").to_numpy()
    amo = am.column("month").to_numpy().astype(np.int64)

    def A(col: str, fill: float = 0.0) -> np.ndarray:
        return _dense(ai, amo, am.column(col).to_numpy(), lo, n, M, fill)

    on = _dense(ai, amo, np.ones(len(ai)), lo, n, M)
    line_m = A("line")
    ndraw = A("n_draws")
    damt = A("draw_amount")
    bal = A("balance")
    interest = A("interest_paid")
    early = A("n_early_repay")
    dpd = A("dpd")
    frozen = A("frozen")
    drew = (ndraw > 0).astype(np.float64)
    util = _safe_div(bal, line_m)
    bal_prev = np.concatenate([np.zeros((n, 1)), bal[:, :-1]], axis=1)
    revolve = drew * (bal_prev > 0)
    small = drew * (damt < spec.small_draw_ratio * np.maximum(line_m, 1.0))

    fl = raw["fund_flows"]
    fi = fl.column("borrower_id").to_numpy() - lo
    fm = fl.column("month").to_numpy().astype(np.int64)
    fch = _codes(fl.column("channel"), CHANNELS)
    famt = fl.column("amount").to_numpy().astype(np.float64)
    fast = fl.column("days_after_draw").to_numpy() <= spec.fund_days
    flows = np.zeros((len(CHANNELS), n, M))
    flows_fast = np.zeros((len(CHANNELS), n, M))
    np.add.at(flows, (fch, fi, fm), famt)
    np.add.at(flows_fast, (fch, fi, fm), famt * fast)
    flow_total = flows.sum(axis=0)

    bu = raw["bureau_months"]
    bi = bu.column("borrower_id").to_numpy()
    bmo = bu.column("month").to_numpy().astype(np.int64)

    def B(col: str) -> np.ndarray:
        return _dense(bi, bmo, bu.column(col).to_numpy(), lo, n, M)

    ext_cards, ext_loans = B("ext_cards"), B("ext_loans")
    ext_new, ext_inq = B("ext_new_accounts"), B("ext_inquiries")
    ext_util, msx = B("ext_utilisation"), B("months_since_ext_activity")

    co = raw["consumption_months"]
    ci = co.column("borrower_id").to_numpy()
    cmo = co.column("month").to_numpy().astype(np.int64)

    def C(col: str) -> np.ndarray:
        return _dense(ci, cmo, co.column(col).to_numpy(), lo, n, M)

    spend = C("spend_daily") + C("spend_durables") + C("spend_services")
    weekly_cv = C("spend_weekly_cv")
    comp_amt = C("competitor_baitiao") + C("competitor_fenfu")
    con = _dense(ci, cmo, np.ones(len(ci)), lo, n, M)

    ev = raw["platform_events"]
    ei = ev.column("borrower_id").to_numpy() - lo
    emo = ev.column("month").to_numpy().astype(np.int64)
    etype = np.asarray(ev.column("event").to_pylist(), dtype=object)
    ecause = np.asarray(ev.column("cause").to_pylist(), dtype=object)
    inc = np.zeros((n, M))
    dec = np.zeros((n, M))
    frz = np.zeros((n, M))
    np.add.at(inc, (ei[etype == "line_increase"], emo[etype == "line_increase"]), 1.0)
    np.add.at(dec, (ei[etype == "line_decrease"], emo[etype == "line_decrease"]), 1.0)
    np.add.at(frz, (ei[etype == "freeze"], emo[etype == "freeze"]), 1.0)
    is_close = etype == "closure"
    close_month = np.full(n, NEVER, dtype=np.int64)
    close_cause = np.full(n, "", dtype=object)
    np.minimum.at(close_month, ei[is_close], emo[is_close])
    ci_idx = ei[is_close]
    close_cause[ci_idx] = ecause[is_close]
    overdue_close = close_cause == OVERDUE

    # first month with dpd > 0 (or an overdue closure), and first non-overdue closure
    has_dpd = dpd > 0
    first_dpd = np.where(has_dpd.any(axis=1), has_dpd.argmax(axis=1), NEVER)
    first_overdue = np.where(overdue_close, np.minimum(first_dpd, close_month), first_dpd)
    first_closed = np.where(~overdue_close, close_month, NEVER)

    macro = raw["macro_months"]
    comp_int = np.zeros(M)
    comp_int[macro.column("month").to_numpy().astype(np.int64)] = macro.column(
        "competitor_intensity"
    ).to_numpy()

    line_change = (inc + dec) > 0
    cols: dict[str, list[np.ndarray]] = {
        k: []
        for k in ("borrower_id", "snapshot", "label", "label_cause", "occupation", *FEATURE_NAMES)
    }
    for s in spec.snapshots:
        alive = present & (signup <= s) & (close_month > s)
        if spec.never_overdue_only:
            alive &= first_overdue > s
        idx = np.flatnonzero(alive)
        if len(idx) == 0:
            continue
        sl = slice(0, s + 1)

        def W(a: np.ndarray, w: int, idx: np.ndarray = idx, s: int = s) -> np.ndarray:
            return a[idx, max(0, s - w + 1) : s + 1].sum(axis=1)

        ons = on[idx]
        tenure = s - signup[idx]
        drew_i = drew[idx]
        ever = drew_i[:, sl].any(axis=1)
        # months since the last draw: position of the last 1 counted back from s
        msld = np.where(ever, np.argmax(drew_i[:, sl][:, ::-1], axis=1), np.minimum(tenure + 1, 36))
        dm3, dm12 = W(drew, 3), W(drew, 12)
        earlier_rate = _safe_div(W(drew, 12) - dm3, np.clip(tenure + 1 - 3, 0, 9).astype(float))
        recent_rate = dm3 / np.clip(tenure + 1, 1, 3)
        # longest idle spell among on-book months in the last 12
        lo12 = max(0, s - 11)
        idle = (1 - drew_i[:, lo12 : s + 1]) * ons[:, lo12 : s + 1]
        run = np.zeros(len(idx))
        best = np.zeros(len(idx))
        for j in range(idle.shape[1]):
            run = (run + 1) * idle[:, j]
            best = np.maximum(best, run)
        u = util[idx]
        um3 = _window_mean(u, ons, s, 3)
        um12 = _window_mean(u, ons, s, 12)
        earlier_util = _safe_div(
            (u[:, lo12 : s + 1] * ons[:, lo12 : s + 1]).sum(axis=1)
            - (u[:, max(0, s - 2) : s + 1] * ons[:, max(0, s - 2) : s + 1]).sum(axis=1),
            ons[:, lo12 : s + 1].sum(axis=1) - ons[:, max(0, s - 2) : s + 1].sum(axis=1),
        )
        drawn6 = W(flow_total, 6)
        line_now = line_m[idx, s]
        lc = line_change[idx][:, sl]
        ever_lc = lc.any(axis=1)
        since_lc = np.argmax(lc[:, ::-1], axis=1)
        spend6 = spend[idx][:, max(0, s - 5) : s + 1]
        con6 = con[idx][:, max(0, s - 5) : s + 1]
        n_c6 = np.maximum(con6.sum(axis=1), 1)
        mean6 = spend6.sum(axis=1) / n_c6
        var6 = ((spend6 - mean6[:, None]) ** 2 * con6).sum(axis=1) / n_c6
        spend3 = _window_mean(spend[idx], con[idx], s, 3)
        spend_prev3 = _safe_div(W(spend * con, 6) - W(spend * con, 3), W(con, 6) - W(con, 3))

        feats = {
            "months_since_last_draw": msld,
            "draw_months_3": dm3,
            "draw_months_6": W(drew, 6),
            "draw_months_12": dm12,
            "n_draws_3": W(ndraw, 3),
            "n_draws_6": W(ndraw, 6),
            "n_draws_12": W(ndraw, 12),
            "draw_amount_3": W(damt, 3),
            "draw_amount_6": W(damt, 6),
            "draw_amount_12": W(damt, 12),
            "draw_trend": recent_rate - earlier_rate,
            "longest_idle_12": best,
            "util_mean_3": um3,
            "util_mean_6": _window_mean(u, ons, s, 6),
            "util_mean_12": um12,
            "util_max_12": u[:, lo12 : s + 1].max(axis=1),
            "util_trend": um3 - earlier_util,
            "revolving_share_6": _safe_div(W(revolve, 6), W(on, 6)),
            "small_draw_share_12": _safe_div(W(small, 12), dm12),
            "interest_paid_6": W(interest, 6),
            "interest_to_line_12": _safe_div(W(interest, 12), line_now),
            "early_repay_share_12": _safe_div(W(early, 12), W(on, 12)),
            "line": line_now,
            "line_to_initial": _safe_div(line_now, initial_line[idx]),
            "n_line_increases": inc[idx][:, sl].sum(axis=1),
            "n_line_decreases": dec[idx][:, sl].sum(axis=1),
            "n_freezes": frz[idx][:, sl].sum(axis=1),
            "months_since_line_change": np.where(ever_lc, since_lc, tenure + 1),
            "tenure": tenure.astype(np.float64),
            "frozen_now": frozen[idx, s],
            "share_securities_k": _safe_div(W(flows_fast[2], 6), drawn6),
            "share_other_lender_k": _safe_div(W(flows_fast[3], 6), drawn6),
            "misuse_share_k": _safe_div(W(flows_fast[2] + flows_fast[3], 6), drawn6),
            "share_business_6": _safe_div(W(flows[1], 6), drawn6),
            "share_consumption_6": _safe_div(W(flows[0], 6), drawn6),
            "ext_active_products": ext_cards[idx, s] + ext_loans[idx, s],
            "ext_cards": ext_cards[idx, s],
            "ext_loans": ext_loans[idx, s],
            "months_since_ext_activity": msx[idx, s],
            "ext_inquiries_6": W(ext_inq, 6),
            "ext_new_accounts_12": W(ext_new, 12),
            "ext_utilisation": ext_util[idx, s],
            "competitor_months_6": W((comp_amt > 0).astype(np.float64), 6),
            "competitor_share_6": _safe_div(W(comp_amt, 6), W(spend, 6)),
            "spend_level_6": mean6,
            "spend_volatility_6": _safe_div(np.sqrt(var6), mean6),
            "spend_trend": _safe_div(spend3 - spend_prev3, spend_prev3),
            "spend_weekly_cv_3": _window_mean(weekly_cv[idx], con[idx], s, 3),
            "degree": np.zeros(len(idx)),
            "contacts_closed_share": np.zeros(len(idx)),
            "contacts_closed_wshare": np.zeros(len(idx)),
            "contacts_overdue_share": np.zeros(len(idx)),
            "regime": np.full(len(idx), float(s >= tightening_month)),
            "months_since_tightening": np.full(
                len(idx), float(max(0, s - tightening_month + 1) if s >= tightening_month else 0)
            ),
            "competitor_intensity": np.full(len(idx), comp_int[s]),
            "income": income[idx],
            "occupation_code": occ_code[idx].astype(np.float64),
            "city_tier": tier[idx],
            "age_band_code": age_code[idx].astype(np.float64),
        }
        in_window = (close_month[idx] > s) & (close_month[idx] <= s + spec.horizon)
        label = in_window & ~overdue_close[idx]
        cols["borrower_id"].append(idx + lo)
        cols["snapshot"].append(np.full(len(idx), s, dtype=np.int16))
        cols["label"].append(label.astype(np.int8))
        cols["label_cause"].append(np.where(label, close_cause[idx], "none"))
        cols["occupation"].append(np.asarray(OCCUPATIONS, dtype=object)[occ_code[idx]])
        for k, v in feats.items():
            cols[k].append(v)
    out = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    status = BlockStatus(
        borrower_id=np.arange(lo, lo + n)[present],
        first_closed=first_closed[present],
        first_overdue=first_overdue[present],
    )
    return out, status


def _codes(col: pa.ChunkedArray, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Integer codes of a string column in a fixed vocabulary (unknowns were refused on read)."""
    idx = pc.index_in(col, value_set=pa.array(list(vocabulary))).to_numpy(zero_copy_only=False)
    return np.asarray(idx, dtype=np.int64)


def social_features(
    rows_bid: np.ndarray,
    rows_snap: np.ndarray,
    edges_src: np.ndarray,
    edges_dst: np.ndarray,
    edges_w: np.ndarray,
    status: BlockStatus,
) -> dict[str, np.ndarray]:
    """Contacts' outcomes strictly before each snapshot (closed, overdue) and degree."""
    n_ids = (
        int(
            max(
                status.borrower_id.max(initial=-1),
                edges_src.max(initial=-1),
                edges_dst.max(initial=-1),
                rows_bid.max(initial=-1),
            )
        )
        + 1
    )
    first_closed = np.full(n_ids, NEVER, dtype=np.int64)
    first_overdue = np.full(n_ids, NEVER, dtype=np.int64)
    first_closed[status.borrower_id] = status.first_closed
    first_overdue[status.borrower_id] = status.first_overdue
    degree = np.bincount(edges_src, minlength=n_ids).astype(np.float64)
    wdeg = np.bincount(edges_src, weights=edges_w, minlength=n_ids)
    out = {
        "degree": degree[rows_bid],
        "contacts_closed_share": np.zeros(len(rows_bid)),
        "contacts_closed_wshare": np.zeros(len(rows_bid)),
        "contacts_overdue_share": np.zeros(len(rows_bid)),
    }
    for s in np.unique(rows_snap):
        m = rows_snap == s
        closed = (first_closed[edges_dst] < s).astype(np.float64)
        overdue = (first_overdue[edges_dst] < s).astype(np.float64)
        c = np.bincount(edges_src, weights=closed, minlength=n_ids)
        cw = np.bincount(edges_src, weights=closed * edges_w, minlength=n_ids)
        o = np.bincount(edges_src, weights=overdue, minlength=n_ids)
        b = rows_bid[m]
        out["contacts_closed_share"][m] = _safe_div(c[b], degree[b])
        out["contacts_closed_wshare"][m] = _safe_div(cw[b], wdeg[b])
        out["contacts_overdue_share"][m] = _safe_div(o[b], degree[b])
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
LABEL_CAUSES = (*CAUSES, "none")
