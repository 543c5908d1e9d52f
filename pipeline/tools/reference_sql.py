"""An independent DuckDB SQL implementation of the feature table, used as a benchmark
reference and as a cross-check of :mod:`pipeline.core.features`.

It reads the raw Parquet tables directly and never calls the numpy code. Trailing
windows are range joins: every borrower-month row is joined to the snapshots ``s`` whose
window holds it (``s - 12 < month <= s``) and the window sums are conditional
aggregates grouped by ``(borrower, snapshot)``; months without a row count as zeros.
The longest idle spell uses a bit mask of idle months (``bit_or(1 << month)``): a run of
``k`` idle months exists when ``x & x>>1 & ... & x>>(k-1)`` is not zero, so no
aggregate depends on the order of rows.

Definitions (the same as the numpy side):

* population at snapshot ``s``: signed up by ``s``, no closure by ``s``, and (when
  ``never_overdue_only``) no month with ``dpd > 0`` and no overdue closure by ``s``;
* label: the account's first closure falls in ``(s, s + horizon]`` and its cause is not
  ``overdue``; ``label_cause`` is that cause, ``none`` otherwise;
* social features: shares of a borrower's contacts (out-edges) whose first non-overdue
  closure lies in the 12 months before ``s`` (``s-12 <= month < s``), or whose first
  overdue month is strictly before ``s``;
* ``regime`` comes from ``macro_months``; the tightening segments are the
  three-month utilisation and non-consumption share where ``regime > 0``, else 0;
* the borrower's own past of spending is the months ``s - 11 .. s - 3`` with a
  consumption row (a ratio to it is 1 where there is none).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.base.causes import AGE_BANDS, OCCUPATIONS, OVERDUE
from pipeline.base.registry import FEATURE_NAMES

NEVER = 1_000_000  # month of an event that never happened
SOCIAL_WINDOW = 12  # months back that a contact's closure counts (the social features)


@dataclass(frozen=True)
class SqlFeatureParams:
    snapshots: tuple[int, ...]
    horizon: int
    valid_snapshots: tuple[int, ...]
    oot_snapshots: tuple[int, ...]
    fund_days: int = 7
    small_draw_ratio: float = 0.05
    never_overdue_only: bool = True


def _lit_list(values: Sequence[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _path(raw_dir: Path, name: str) -> str:
    return str(Path(raw_dir) / f"{name}.parquet").replace("'", "''")


def _longest_run(x: str, width: int) -> str:
    """SQL for the longest run of consecutive one bits in ``x`` (at most ``width``)."""
    terms = []
    for k in range(1, width + 1):
        conj = " & ".join([x] + [f"({x} >> {j})" for j in range(1, k)])
        terms.append(f"(({conj}) <> 0)::INTEGER")
    return " + ".join(terms)


def _ratio(a: str, b: str) -> str:
    """SQL for ``a / b``, zero where the denominator is not positive."""
    return f"CASE WHEN ({b}) > 0 THEN ({a}) / ({b}) ELSE 0.0 END"


def _own_past(x: str, what: str = "spend") -> str:
    """SQL for ``x`` over the borrower's own monthly mean of ``what`` in the months
    ``s - 11 .. s - 3`` (1 where that past is empty or zero)."""
    past = _ratio(f"{what}_past", "con_past")
    return f"CASE WHEN ({past}) > 0 THEN ({x}) / ({past}) ELSE 1.0 END"


def _feature_exprs() -> dict[str, str]:
    """Each feature as an expression over the per-(borrower, snapshot) aggregates."""
    return {
        "months_since_last_draw": "CASE WHEN last_draw IS NOT NULL THEN m - last_draw "
        "ELSE least(tenure + 1, 36) END",
        "draw_months_3": "drew_3",
        "draw_months_6": "drew_6",
        "draw_months_12": "drew_12",
        "n_draws_3": "nd_3",
        "n_draws_6": "nd_6",
        "n_draws_12": "nd_12",
        "draw_amount_3": "amt_3",
        "draw_amount_6": "amt_6",
        "draw_amount_12": "amt_12",
        "draw_trend": "drew_3 / least(tenure + 1, 3)::DOUBLE - "
        + _ratio("drew_12 - drew_3", "least(greatest(tenure - 2, 0), 9)::DOUBLE"),
        "longest_idle_12": _longest_run("idle_bits", 12),
        "util_mean_3": _ratio("util_3", "on_3"),
        "util_mean_6": _ratio("util_6", "on_6"),
        "util_mean_12": _ratio("util_12", "on_12"),
        "util_max_12": "util_max_12",
        "util_trend": _ratio("util_3", "on_3") + " - " + _ratio("util_12 - util_3", "on_12 - on_3"),
        "revolving_share_6": _ratio("revolve_6", "on_6"),
        "small_draw_share_12": _ratio("small_12", "drew_12"),
        "interest_paid_6": "interest_6",
        "interest_to_line_12": _ratio("interest_12", "line"),
        "early_repay_share_12": _ratio("early_12", "on_12"),
        "line": "line",
        "line_to_initial": _ratio("line", "initial_line"),
        "n_line_increases": "inc_cum",
        "n_line_decreases": "dec_cum",
        "n_freezes": "frz_cum",
        "months_since_line_change": "CASE WHEN last_change IS NOT NULL "
        "THEN least(m - last_change, 12) ELSE 12 END",
        "tenure": "tenure",
        "frozen_now": "frozen",
        "share_securities_k": _ratio("sec_k_6", "drawn_6"),
        "share_other_lender_k": _ratio("oth_k_6", "drawn_6"),
        "misuse_share_k": _ratio("sec_k_6 + oth_k_6", "drawn_6"),
        "share_business_6": _ratio("bus_6", "drawn_6"),
        "share_consumption_6": _ratio("cons_6", "drawn_6"),
        "ext_active_products": "ext_cards + ext_loans",
        "ext_cards": "ext_cards",
        "ext_loans": "ext_loans",
        "months_since_ext_activity": "msx",
        "ext_inquiries_6": "inq_6",
        "ext_new_accounts_12": "new_12",
        "ext_utilisation": "ext_util",
        "competitor_months_6": "comp_months_6",
        "competitor_share_6": _ratio("comp_6", "spend_6"),
        "spend_level_6": "spend_6 / greatest(con_6, 1)",
        "spend_volatility_6": _ratio(
            "sqrt(coalesce(spend_var_6, 0))", "spend_6 / greatest(con_6, 1)"
        ),
        "spend_trend": _ratio(
            _ratio("spend_3", "con_3") + " - " + _ratio("spend_6 - spend_3", "con_6 - con_3"),
            _ratio("spend_6 - spend_3", "con_6 - con_3"),
        ),
        "spend_weekly_cv_3": _ratio("wcv_3", "con_3"),
        "misuse_share_3": _ratio("misuse_3", "drawn_3"),
        "noncons_share_3": _ratio("noncons_3", "drawn_3"),
        "util_now": "util_now",
        "reliance_3": f"({_ratio('util_3', 'on_3')}) * (drew_3 >= 2)::DOUBLE"
        " * CASE WHEN ext_loans >= 3 THEN 2.0 ELSE 1.0 END",
        "stop_watch_1": "CASE WHEN drew_last_2 = 0 THEN drew_w1 ELSE 0.0 END",
        "stop_watch_2": "CASE WHEN drew_last_1 = 0 THEN drew_w2 ELSE 0.0 END",
        "draw_months_9": "drew_9",
        "spend_ratio_1": _own_past("spend_now"),
        "spend_ratio_3": _own_past(_ratio("spend_3", "con_3")),
        "weekly_cv_1": "wcv_now",
        "weekly_cv_ratio_3": _own_past(_ratio("wcv_3", "con_3"), "wcv"),
        "months_since_cut_or_freeze": "CASE WHEN last_cutfrz IS NOT NULL "
        "THEN least(m - last_cutfrz, 12) ELSE 12 END",
        "idle_multihoming_6": "CASE WHEN drew_6 <= 1 THEN comp_months_6 ELSE 0.0 END",
        "competition_watch_1": "CASE WHEN drew_5 <= 1 THEN comp_months_5 ELSE 0.0 END",
        "competition_watch_2": "CASE WHEN drew_4 <= 1 THEN comp_months_4 ELSE 0.0 END",
        "competition_watch_3": "CASE WHEN drew_3 <= 1 THEN comp_months_3 ELSE 0.0 END",
        "tightening_util_3": "CASE WHEN coalesce(regime, 0) > 0 THEN "
        + _ratio("util_3", "on_3")
        + " ELSE 0.0 END",
        "tightening_noncons_3": "CASE WHEN coalesce(regime, 0) > 0 THEN "
        + _ratio("noncons_3", "drawn_3")
        + " ELSE 0.0 END",
        "degree": "coalesce(degree, 0)",
        "contacts_closed_share": _ratio("coalesce(n_closed, 0)", "coalesce(degree, 0)"),
        "contacts_closed_wshare": _ratio("coalesce(w_closed, 0)", "coalesce(w_degree, 0)"),
        "contacts_overdue_share": _ratio("coalesce(n_overdue, 0)", "coalesce(degree, 0)"),
        "regime": "coalesce(regime, 0)",
        "income": "income",
        "occupation_code": "occupation_code",
        "city_tier": "city_tier",
        "age_band_code": "age_band_code",
    }


def _feature_columns() -> str:
    """The select list of the feature columns, in registry order."""
    feats = _feature_exprs()
    missing, extra = set(FEATURE_NAMES) - set(feats), set(feats) - set(FEATURE_NAMES)
    if missing or extra:  # pragma: no cover - guarded by the registry test
        raise KeyError(
            f"pipeline/tools/reference_sql.py: no SQL for features {sorted(missing)}, "
            f"SQL for names not in the registry {sorted(extra)}"
        )
    return ",\n  ".join(f"({feats[n]})::FLOAT AS {n}" for n in FEATURE_NAMES)


def _account_ctes(raw_dir: Path, p: SqlFeatureParams) -> str:
    """Snapshots, borrowers, account months and their trailing windows at each snapshot."""
    last = max(p.snapshots)
    snaps = ", ".join(str(int(s)) for s in p.snapshots)
    occ, age = _lit_list(OCCUPATIONS), _lit_list(AGE_BANDS)
    return f"""
WITH
snaps AS (SELECT unnest([{snaps}])::INTEGER AS s),
bor AS (
  SELECT borrower_id AS b, signup_month::INTEGER AS signup, income::DOUBLE AS income,
         initial_line::DOUBLE AS initial_line, city_tier::DOUBLE AS city_tier, occupation,
         (list_position({occ}, occupation) - 1)::DOUBLE AS occupation_code,
         (list_position({age}, age_band) - 1)::DOUBLE AS age_band_code,
         prior_overdue, prior_closure
  FROM read_parquet('{_path(raw_dir, "borrowers")}')
),
acc0 AS (
  SELECT borrower_id AS b, month::INTEGER AS m, line::DOUBLE AS line,
         n_draws::DOUBLE AS n_draws, draw_amount::DOUBLE AS draw_amount,
         balance::DOUBLE AS balance, interest_paid::DOUBLE AS interest_paid,
         n_early_repay::DOUBLE AS n_early_repay, frozen::DOUBLE AS frozen, dpd
  FROM read_parquet('{_path(raw_dir, "account_months")}')
),
acc AS (
  SELECT a.*,
         (a.n_draws > 0)::DOUBLE AS drew,
         CASE WHEN a.line > 0 THEN a.balance / a.line ELSE 0.0 END AS util,
         (a.n_draws > 0 AND coalesce(p.balance, 0) > 0)::DOUBLE AS revolve,
         (a.n_draws > 0 AND a.draw_amount < {float(p.small_draw_ratio)!r} * greatest(a.line, 1.0))::DOUBLE
             AS small,
         (a.n_draws <= 0)::BIGINT AS idle
  FROM acc0 a LEFT JOIN acc0 p ON p.b = a.b AND p.m = a.m - 1
  WHERE a.m <= {last}
),
-- trailing windows: every month row joins the snapshots whose last 12 months hold it
acc_w AS (
  SELECT a.b, s.s,
    sum(CASE WHEN m > s - 3 THEN drew END) AS drew_3, sum(CASE WHEN m > s - 6 THEN drew END) AS drew_6,
    sum(drew) AS drew_12,
    sum(CASE WHEN m > s - 3 THEN n_draws END) AS nd_3, sum(CASE WHEN m > s - 6 THEN n_draws END) AS nd_6,
    sum(n_draws) AS nd_12,
    sum(CASE WHEN m > s - 3 THEN draw_amount END) AS amt_3,
    sum(CASE WHEN m > s - 6 THEN draw_amount END) AS amt_6, sum(draw_amount) AS amt_12,
    sum(CASE WHEN m > s - 3 THEN util END) AS util_3, sum(CASE WHEN m > s - 6 THEN util END) AS util_6,
    sum(util) AS util_12, max(util) AS util_max_12,
    count(CASE WHEN m > s - 3 THEN 1 END) AS on_3, count(CASE WHEN m > s - 6 THEN 1 END) AS on_6,
    count(*) AS on_12,
    sum(CASE WHEN m > s - 6 THEN revolve END) AS revolve_6, sum(small) AS small_12,
    sum(CASE WHEN m > s - 6 THEN interest_paid END) AS interest_6, sum(interest_paid) AS interest_12,
    sum(n_early_repay) AS early_12,
    sum(CASE WHEN m > s - 11 AND m <= s - 2 THEN drew END) AS drew_w1,
    sum(CASE WHEN m > s - 10 AND m <= s - 1 THEN drew END) AS drew_w2,
    sum(CASE WHEN m > s - 9 THEN drew END) AS drew_9,
    sum(CASE WHEN m > s - 5 THEN drew END) AS drew_5,
    sum(CASE WHEN m > s - 4 THEN drew END) AS drew_4,
    sum(CASE WHEN m > s - 2 THEN drew END) AS drew_last_2,
    sum(CASE WHEN m = s THEN drew END) AS drew_last_1,
    max(CASE WHEN m = s THEN util END) AS util_now,
    bit_or(idle << m) AS idle_bits,
    max(CASE WHEN m = s THEN line END) AS line, max(CASE WHEN m = s THEN frozen END) AS frozen
  FROM acc a JOIN snaps s ON a.m <= s.s AND a.m > s.s - 12
  GROUP BY a.b, s.s
),
last_draw AS (
  SELECT a.b, s.s, max(a.m) AS last_draw
  FROM acc a JOIN snaps s ON a.m <= s.s WHERE a.n_draws > 0 GROUP BY a.b, s.s
),
"""


def _activity_ctes(raw_dir: Path, p: SqlFeatureParams) -> str:
    """Platform events, fund flows, bureau and consumption months, windowed by snapshot."""
    last = max(p.snapshots)
    k = int(p.fund_days)
    return f"""\
events AS (SELECT borrower_id AS b, month::INTEGER AS m, event, cause
           FROM read_parquet('{_path(raw_dir, "platform_events")}')),
ev_cum AS (
  SELECT e.b, s.s,
         count(CASE WHEN event = 'line_increase' THEN 1 END) AS inc_cum,
         count(CASE WHEN event = 'line_decrease' THEN 1 END) AS dec_cum,
         count(CASE WHEN event = 'freeze' THEN 1 END) AS frz_cum,
         max(CASE WHEN event IN ('line_increase', 'line_decrease') THEN e.m END) AS last_change,
         max(CASE WHEN event IN ('line_decrease', 'freeze') THEN e.m END) AS last_cutfrz
  FROM events e JOIN snaps s ON e.m <= s.s GROUP BY e.b, s.s
),
flow AS (
  SELECT borrower_id AS b, month::INTEGER AS m,
         sum(amount::DOUBLE) AS drawn,
         sum(CASE WHEN channel = 'consumption' THEN amount::DOUBLE END) AS f_cons,
         sum(CASE WHEN channel = 'business' THEN amount::DOUBLE END) AS f_bus,
         sum(CASE WHEN channel = 'securities' AND days_after_draw <= {k} THEN amount::DOUBLE END) AS f_sec_k,
         sum(CASE WHEN channel = 'other_lender' AND days_after_draw <= {k} THEN amount::DOUBLE END) AS f_oth_k
  FROM read_parquet('{_path(raw_dir, "fund_flows")}')
  WHERE month <= {last}
  GROUP BY borrower_id, month
),
flow_w AS (
  SELECT f.b, s.s, sum(drawn) AS drawn_6, sum(f_cons) AS cons_6, sum(f_bus) AS bus_6,
         sum(f_sec_k) AS sec_k_6, sum(f_oth_k) AS oth_k_6,
         sum(CASE WHEN m > s - 3 THEN drawn END) AS drawn_3,
         sum(CASE WHEN m > s - 3 THEN coalesce(f_sec_k, 0) + coalesce(f_oth_k, 0) END) AS misuse_3,
         sum(CASE WHEN m > s - 3 THEN drawn - coalesce(f_cons, 0) END) AS noncons_3
  FROM flow f JOIN snaps s ON f.m <= s.s AND f.m > s.s - 6 GROUP BY f.b, s.s
),
bur_w AS (
  SELECT u.borrower_id AS b, s.s,
         sum(CASE WHEN month > s - 6 THEN ext_inquiries::DOUBLE END) AS inq_6,
         sum(ext_new_accounts::DOUBLE) AS new_12,
         max(CASE WHEN month = s THEN ext_cards::DOUBLE END) AS ext_cards,
         max(CASE WHEN month = s THEN ext_loans::DOUBLE END) AS ext_loans,
         max(CASE WHEN month = s THEN ext_utilisation::DOUBLE END) AS ext_util,
         max(CASE WHEN month = s THEN months_since_ext_activity::DOUBLE END) AS msx
  FROM read_parquet('{_path(raw_dir, "bureau_months")}') u
  JOIN snaps s ON u.month <= s.s AND u.month > s.s - 12
  GROUP BY u.borrower_id, s.s
),
cons AS (
  SELECT borrower_id AS b, month::INTEGER AS m,
         spend_daily::DOUBLE + spend_durables::DOUBLE + spend_services::DOUBLE AS spend,
         spend_weekly_cv::DOUBLE AS wcv,
         competitor_baitiao::DOUBLE + competitor_fenfu::DOUBLE AS comp
  FROM read_parquet('{_path(raw_dir, "consumption_months")}')
  WHERE month <= {last}
),
cons_w AS (
  SELECT c.b, s.s,
         sum(CASE WHEN m > s - 3 THEN spend END) AS spend_3, sum(spend) AS spend_6,
         count(CASE WHEN m > s - 3 THEN 1 END) AS con_3, count(*) AS con_6,
         sum(CASE WHEN m > s - 3 THEN wcv END) AS wcv_3,
         sum(comp) AS comp_6, count(CASE WHEN comp > 0 THEN 1 END) AS comp_months_6,
         count(CASE WHEN comp > 0 AND m > s - 5 THEN 1 END) AS comp_months_5,
         count(CASE WHEN comp > 0 AND m > s - 4 THEN 1 END) AS comp_months_4,
         count(CASE WHEN comp > 0 AND m > s - 3 THEN 1 END) AS comp_months_3,
         var_pop(spend) AS spend_var_6
  FROM cons c JOIN snaps s ON c.m <= s.s AND c.m > s.s - 6 GROUP BY c.b, s.s
),
-- the borrower's own past (months s-11 .. s-3) and this month, for the ratios
cons_p AS (
  SELECT c.b, s.s,
         count(CASE WHEN m <= s - 3 THEN 1 END) AS con_past,
         sum(CASE WHEN m <= s - 3 THEN spend END) AS spend_past,
         sum(CASE WHEN m <= s - 3 THEN wcv END) AS wcv_past,
         max(CASE WHEN m = s THEN spend END) AS spend_now,
         max(CASE WHEN m = s THEN wcv END) AS wcv_now
  FROM cons c JOIN snaps s ON c.m <= s.s AND c.m > s.s - 12 GROUP BY c.b, s.s
),
"""


def _status_ctes(raw_dir: Path, p: SqlFeatureParams) -> str:
    """First closure and overdue month per borrower, the population at each snapshot, the
    contacts' status before it and the macro months."""
    overdue_rule = f"AND coalesce(st.first_overdue, {NEVER}) > s.s"
    if not p.never_overdue_only:
        overdue_rule = ""
    return f"""\
closure AS (
  SELECT b, min(m) AS close_month, arg_min(cause, m) AS close_cause
  FROM events WHERE event = 'closure' GROUP BY b
),
first_dpd AS (SELECT b, min(m) AS first_dpd FROM acc0 WHERE dpd > 0 GROUP BY b),
status0 AS (
  SELECT bor.b, c.close_month, c.close_cause,
         CASE WHEN c.close_cause <> '{OVERDUE}' THEN c.close_month END AS first_closed,
         least(CASE WHEN bor.prior_overdue THEN -1 ELSE d.first_dpd END,
               CASE WHEN c.close_cause = '{OVERDUE}' THEN c.close_month END) AS first_overdue,
         bor.prior_closure
  FROM bor LEFT JOIN closure c USING (b) LEFT JOIN first_dpd d USING (b)
),
status AS (  -- closed before month 0 (a going concern's burn-in): month -1
  SELECT b,
         CASE WHEN prior_closure > 0 THEN -1 ELSE close_month END AS close_month,
         close_cause,
         CASE WHEN prior_closure = 1 THEN -1 ELSE first_closed END AS first_closed,
         CASE WHEN prior_closure = 2 THEN -1 ELSE first_overdue END AS first_overdue
  FROM status0
),
population AS (
  SELECT bor.*, s.s AS m, (s.s - bor.signup)::DOUBLE AS tenure,
         st.close_month, st.close_cause
  FROM bor CROSS JOIN snaps s JOIN status st ON st.b = bor.b
  WHERE bor.signup <= s.s AND coalesce(st.close_month, {NEVER}) > s.s {overdue_rule}
),
edge_status AS (
  SELECT e.src, e.tie_strength::DOUBLE AS w,
         coalesce(st.first_closed, {NEVER}) AS dst_closed,
         coalesce(st.first_overdue, {NEVER}) AS dst_overdue
  FROM read_parquet('{_path(raw_dir, "social_edges")}') e
  LEFT JOIN status st ON st.b = e.dst
),
social AS (
  SELECT es.src AS b, s.s, count(*)::DOUBLE AS degree, sum(es.w) AS w_degree,
         count(CASE WHEN es.dst_closed < s.s AND es.dst_closed >= s.s - {SOCIAL_WINDOW}
                    THEN 1 END)::DOUBLE AS n_closed,
         coalesce(sum(CASE WHEN es.dst_closed < s.s AND es.dst_closed >= s.s - {SOCIAL_WINDOW}
                      THEN es.w END), 0) AS w_closed,
         count(CASE WHEN es.dst_overdue < s.s THEN 1 END)::DOUBLE AS n_overdue
  FROM edge_status es CROSS JOIN snaps s
  GROUP BY es.src, s.s
),
macro AS (
  SELECT month::INTEGER AS m, regime::DOUBLE AS regime,
         competitor_intensity::DOUBLE AS competitor_intensity,
         min(CASE WHEN regime > 0 THEN month END) OVER ()::INTEGER AS first_regime_month
  FROM read_parquet('{_path(raw_dir, "macro_months")}')
),
"""


def _final_select(p: SqlFeatureParams) -> str:
    """Every aggregate joined to the population, the label and split, and the features."""
    valid = ", ".join(str(int(s)) for s in p.valid_snapshots) or "NULL"
    oot = ", ".join(str(int(s)) for s in p.oot_snapshots) or "NULL"
    feature_cols = _feature_columns()
    agg_cols = (
        "drew_3 drew_6 drew_12 nd_3 nd_6 nd_12 amt_3 amt_6 amt_12 util_3 util_6 util_12 "
        "util_max_12 on_3 on_6 on_12 revolve_6 small_12 interest_6 interest_12 early_12 "
        "idle_bits line frozen inc_cum dec_cum frz_cum drawn_6 cons_6 bus_6 sec_k_6 oth_k_6 "
        "ext_cards ext_loans ext_util msx inq_6 new_12 spend_3 spend_6 con_3 con_6 wcv_3 "
        "comp_6 comp_months_6 spend_var_6 drew_w1 drew_w2 drew_9 drew_last_2 drew_last_1 drew_5 drew_4 "
        "comp_months_5 comp_months_4 comp_months_3 "
        "util_now drawn_3 misuse_3 noncons_3 con_past spend_past wcv_past spend_now wcv_now"
    ).split()
    filled = ",\n         ".join(f"coalesce({c}, 0) AS {c}" for c in agg_cols)
    return f"""\
joined AS (
  SELECT pop.*, ld.last_draw, ev.last_change, ev.last_cutfrz, so.degree, so.w_degree, so.n_closed,
         so.w_closed, so.n_overdue, mc.regime, mc.competitor_intensity,
         mc.first_regime_month,
         {filled},
         (pop.close_month > pop.m AND pop.close_month <= pop.m + {int(p.horizon)}
          AND pop.close_cause <> '{OVERDUE}') AS is_label
  FROM population pop
  LEFT JOIN acc_w aw ON aw.b = pop.b AND aw.s = pop.m
  LEFT JOIN last_draw ld ON ld.b = pop.b AND ld.s = pop.m
  LEFT JOIN ev_cum ev ON ev.b = pop.b AND ev.s = pop.m
  LEFT JOIN flow_w fw ON fw.b = pop.b AND fw.s = pop.m
  LEFT JOIN bur_w bw ON bw.b = pop.b AND bw.s = pop.m
  LEFT JOIN cons_w cw ON cw.b = pop.b AND cw.s = pop.m
  LEFT JOIN cons_p cp ON cp.b = pop.b AND cp.s = pop.m
  LEFT JOIN social so ON so.b = pop.b AND so.s = pop.m
  LEFT JOIN macro mc ON mc.m = pop.m
)
SELECT
  b::BIGINT AS borrower_id,
  m::SMALLINT AS snapshot,
  CASE WHEN m IN ({oot}) THEN 'oot' WHEN m IN ({valid}) THEN 'valid' ELSE 'train' END AS split,
  coalesce(is_label, false)::TINYINT AS label,
  CASE WHEN coalesce(is_label, false) THEN close_cause ELSE 'none' END AS label_cause,
  occupation,
  {feature_cols}
FROM joined
ORDER BY snapshot, borrower_id
"""


def feature_sql(raw_dir: Path, p: SqlFeatureParams) -> str:
    """The whole feature query (one SELECT producing the final table)."""
    return (
        _account_ctes(raw_dir, p)
        + _activity_ctes(raw_dir, p)
        + _status_ctes(raw_dir, p)
        + _final_select(p)
    )


def _connect(threads: int | None, memory_limit: str | None, temp_dir: str | None) -> Any:
    import duckdb  # duckdb: only the SQL reference needs it

    con = duckdb.connect(database=":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if temp_dir:
        con.execute(f"SET temp_directory = '{temp_dir}'")
    con.execute("SET preserve_insertion_order = false")
    return con


def write_features_sql(
    raw_dir: Path,
    out_path: Path,
    params: SqlFeatureParams,
    threads: int | None = None,
    memory_limit: str | None = None,
) -> None:
    """Compute the feature table in DuckDB and write it to ``out_path`` (Parquet, zstd)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    con = _connect(threads, memory_limit, str(out_path.parent / ".duckdb_tmp"))
    try:
        sql = feature_sql(Path(raw_dir), params)
        target = str(tmp).replace("'", "''")
        con.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.close()
    os.replace(tmp, out_path)


def features_sql(raw_dir: Path, params: SqlFeatureParams, threads: int | None = None) -> pa.Table:
    """The feature table as an Arrow table (small worlds and tests)."""
    con = _connect(threads, None, None)
    try:
        return con.sql(feature_sql(Path(raw_dir), params)).to_arrow_table()
    finally:
        con.close()


@dataclass
class Comparison:
    """How a feature table compares with the SQL one."""

    equal: bool
    rows_ours: int
    rows_reference: int
    same_rows: bool
    same_labels: bool
    n_mismatched_values: int
    max_abs_diff: float
    worst_feature: str | None
    rtol: float
    atol: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _sorted(t: pa.Table) -> pa.Table:
    return t.sort_by([("snapshot", "ascending"), ("borrower_id", "ascending")])


def compare_tables(
    ours: pa.Table, reference: pa.Table, rtol: float = 1e-5, atol: float = 1e-6
) -> Comparison:
    """Same (borrower, snapshot) rows, identical labels, splits and occupations, and every
    feature equal within float32 tolerance (``|a - b| <= atol + rtol * |b|``)."""
    a, b = _sorted(ours), _sorted(reference)
    same_rows = a.num_rows == b.num_rows and all(
        np.array_equal(a.column(c).to_numpy(), b.column(c).to_numpy())
        for c in ("borrower_id", "snapshot")
    )
    same_labels = same_rows and all(
        a.column(c).to_pylist() == b.column(c).to_pylist()
        for c in ("label", "label_cause", "split", "occupation")
    )
    n_bad, worst_diff, worst = 0, 0.0, None
    if same_rows:
        for name in FEATURE_NAMES:
            x = a.column(name).to_numpy().astype(np.float64)
            y = b.column(name).to_numpy().astype(np.float64)
            bad = ~np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
            n_bad += int(bad.sum())
            d = np.abs(x - y)
            d = d[np.isfinite(d)]
            if len(d) and float(d.max()) > worst_diff:
                worst_diff, worst = float(d.max()), name
    return Comparison(
        equal=bool(same_rows and same_labels and n_bad == 0),
        rows_ours=a.num_rows,
        rows_reference=b.num_rows,
        same_rows=bool(same_rows),
        same_labels=bool(same_labels),
        n_mismatched_values=n_bad,
        max_abs_diff=worst_diff,
        worst_feature=worst,
        rtol=rtol,
        atol=atol,
    )
