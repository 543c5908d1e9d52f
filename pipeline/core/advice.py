"""Advice: the smallest changes a borrower can make that bring the predicted risk down.

The search works on *levers*, each a thing a borrower can do, echoing the user-side
countermeasures of the mechanisms (diversify funding, keep a moderate borrowing cadence,
do not approach the risk thresholds, know your credit standing). A lever has a few
options of growing effort (cost 1, 2, 3, ...) and each option moves a group of coupled
features together, so that the changed profile stays one a borrower could have:

* ``cadence`` (keep a moderate, regular borrowing cadence): draw in ``k`` more of the
  last three months. ``draw_months_3/6/12`` and ``n_draws_3/6/12`` all grow by ``k``
  (a month in the last three lies in every window, so ``draw_months_3 <= _6 <= _12``
  stays true), amounts grow by ``k`` typical draws, ``months_since_last_draw`` becomes
  0 and ``draw_trend`` rises by ``k`` over the recent window. Or, for a heavy user, draw
  at most once a month (draw counts fall to the drawing months, amounts in proportion).
  Simplification: utilisation, the longest idle spell and interest are left as they are.
* ``utilisation`` (do not approach the risk thresholds): bring the mean utilisation of
  the last three months down to 70%, 50% or 30%; the 6- and 12-month means and the trend
  move by the same amount spread over their windows; the 12-month peak is history and
  is left as it is.
* ``fund_use`` (use the loan for consumption): bring the share sent to securities or to
  other lenders soon after the draw down to 30%, 15% or 0 (both parts in proportion);
  the share freed goes to consumption (capped so that business plus consumption <= 1).
* ``external`` (diversify funding, keep a visible credit record): use the cards or loans
  already held, or open and use one or two more (counts, new accounts and bureau
  inquiries grow; months since external activity become 0).
* ``competition`` (bring spending back from competing products): at most 3, 1 or 0 of
  the last six months on competing products, their spending share in proportion.

Every combination of options (one per lever, "no change" included) is scored with the
model in one batch; combinations that move a feature against its registry monotone
direction (more of a ``+1`` feature, less of a ``-1`` one) are dropped and every value is
kept inside the registry's feasible range. The advice is the cheapest combination
whose re-scored risk is under the threshold (ties: the lower risk); if none is, the
combination with the lowest risk is returned with ``achieved=False``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.base.registry import BY_NAME

#: Always part of the advice: the seed's "know your credit standing".
CREDIT_TIP = (
    "了解自己的信用状况：定期查询个人征信报告，关注额度与账户状态的变化。",
    "Know your credit standing: check your credit report regularly and watch for changes "
    "to your line and account status.",
)


@dataclass
class Option:
    cost: int
    values: dict[str, float]  # feature -> new value
    zh: str
    en: str
    # features that change as a consequence, not by choice (e.g. bureau inquiries when
    # applying for a card); exempt from the actionable check, not from the others
    side: tuple[str, ...] = ()


@dataclass
class Advice:
    p_before: float
    p_after: float
    threshold: float
    achieved: bool
    cost: int
    actions: list[str] = field(default_factory=list)
    changes: list[tuple[str, float, float]] = field(default_factory=list)
    zh: list[str] = field(default_factory=list)
    en: list[str] = field(default_factory=list)
    n_candidates: int = 0

    def text(self, lang: str = "en") -> str:
        lines = self.zh if lang == "zh" else self.en
        return "\n".join(f"- {s}" for s in lines)


def _get(x: dict[str, float], name: str, default: float = 0.0) -> float:
    v = x.get(name, default)
    return float(v) if np.isfinite(v) else default


def _cadence(x: dict[str, float]) -> list[Option]:
    dm3 = _get(x, "draw_months_3")
    tenure = _get(x, "tenure", 12.0)
    room = int(max(0.0, min(3.0, tenure + 1.0) - dm3))
    n12 = _get(x, "n_draws_12")
    typical = _get(x, "draw_amount_12") / n12 if n12 > 0 else 0.1 * _get(x, "line")
    recent = max(1.0, min(3.0, tenure + 1.0))
    out = []
    for k in range(1, room + 1):
        vals = {
            "months_since_last_draw": 0.0,
            "draw_months_3": dm3 + k,
            "draw_months_6": _get(x, "draw_months_6") + k,
            "draw_months_12": _get(x, "draw_months_12") + k,
            "n_draws_3": _get(x, "n_draws_3") + k,
            "n_draws_6": _get(x, "n_draws_6") + k,
            "n_draws_12": n12 + k,
            "draw_amount_3": _get(x, "draw_amount_3") + k * typical,
            "draw_amount_6": _get(x, "draw_amount_6") + k * typical,
            "draw_amount_12": _get(x, "draw_amount_12") + k * typical,
            "draw_trend": _get(x, "draw_trend") + k / recent,
            **_drawing_again(x, dm3 + k, k),
        }
        m = int(dm3 + k)
        out.append(
            Option(
                k,
                vals,
                f"保持适度、规律的借款节奏：近3个月中至少{m}个月有小额借款并按时还款，避免长期使用后突然停用。",
                f"Keep a moderate, regular borrowing cadence: draw a small amount in at least "
                f"{m} of the last 3 months and repay on time, rather than stopping suddenly "
                "after long use.",
            )
        )
    # a heavy user: at most one draw a month
    heavy = [(w, _get(x, f"n_draws_{w}"), _get(x, f"draw_months_{w}")) for w in (3, 6, 12)]
    if any(n > d for _, n, d in heavy):
        vals = {}
        for w, n, d in heavy:
            vals[f"n_draws_{w}"] = d
            vals[f"draw_amount_{w}"] = _get(x, f"draw_amount_{w}") * (d / n if n > 0 else 1.0)
        out.append(
            Option(
                2,
                vals,
                "放缓借款频率：每月最多借款一次，避免借新还旧、把借呗当作主要融资渠道。",
                "Slow the borrowing cadence: at most one draw a month, no borrowing to repay, "
                "so that the line does not become your main funding channel.",
            )
        )
    return out


# The derived traces below follow from what an option changes: each helper says how a
# feature the borrower cannot set directly moves when the option is carried out.

#: Features no borrower sets directly, moved by the options as their consequences.
DERIVED = frozenset(
    {
        "stop_watch_1",
        "stop_watch_2",
        "draw_months_9",
        "reliance_3",
        "idle_multihoming_6",
        "competition_watch_1",
        "competition_watch_2",
        "competition_watch_3",
        "util_now",
        "tightening_util_3",
        "misuse_share_3",
        "noncons_share_3",
        "tightening_noncons_3",
    }
)


def _drawing_again(x: dict[str, float], months_3: float, k: int) -> dict[str, float]:
    """Drawing again in the last months: the stop signals end, idle multi-homing ends once
    two months of six have a draw, reliance counts from two months with a draw."""
    loans = 2.0 if _get(x, "ext_loans") >= 3 else 1.0
    busy = _get(x, "draw_months_6") + k >= 2
    out = {
        "stop_watch_1": 0.0,
        "stop_watch_2": 0.0,
        "draw_months_9": min(9.0, _get(x, "draw_months_9") + k),
        "reliance_3": _get(x, "util_mean_3") * loans if months_3 >= 2 else 0.0,
    }
    if busy:
        out["idle_multihoming_6"] = 0.0
        out.update({f"competition_watch_{j}": 0.0 for j in (1, 2, 3)})
    return out


def _lower_use(x: dict[str, float], u3: float, target: float) -> dict[str, float]:
    """Utilisation brought to ``target``: the month's own, the tightening segment's and
    reliance fall with it."""
    scale = target / u3 if u3 > 0 else 1.0
    out = {
        "util_now": min(_get(x, "util_now"), target),
        "reliance_3": _get(x, "reliance_3") * scale,
    }
    if _get(x, "tightening_util_3") > 0:
        out["tightening_util_3"] = min(_get(x, "tightening_util_3"), target)
    return out


def _consumption_again(x: dict[str, float], target: float) -> dict[str, float]:
    """Drawn money spent on consumption: the 3-month misuse and non-consumption shares fall
    by what no longer goes to securities or other lenders."""
    m3 = _get(x, "misuse_share_3")
    freed = max(0.0, m3 - target)
    noncons = max(0.0, _get(x, "noncons_share_3") - freed)
    out = {"misuse_share_3": min(m3, target), "noncons_share_3": noncons}
    if _get(x, "tightening_noncons_3") > 0:
        out["tightening_noncons_3"] = noncons
    return out


def _fewer_competitor_months(x: dict[str, float], target: float) -> dict[str, float]:
    """Competing products used in at most ``target`` months: every window counts no more."""
    out = {"idle_multihoming_6": min(_get(x, "idle_multihoming_6"), target)}
    out.update(
        {
            f"competition_watch_{j}": min(_get(x, f"competition_watch_{j}"), target)
            for j in (1, 2, 3)
        }
    )
    return out


def _utilisation(x: dict[str, float]) -> list[Option]:
    u3 = _get(x, "util_mean_3")
    out = []
    cost = 0
    for target in (0.7, 0.5, 0.3):
        if target >= u3:
            continue
        cost += 1
        d = target - u3
        out.append(
            Option(
                cost,
                {
                    "util_mean_3": target,
                    "util_mean_6": max(0.0, _get(x, "util_mean_6") + d * 3 / 6),
                    "util_mean_12": max(0.0, _get(x, "util_mean_12") + d * 3 / 12),
                    "util_trend": _get(x, "util_trend") + d,
                    **_lower_use(x, u3, target),
                },
                f"不要逼近风险阈值：通过提前还款或少借，把近3个月平均额度使用率降到{target:.0%}以下。",
                f"Don't approach the risk thresholds: repay early or draw less so that mean "
                f"utilisation over the last 3 months stays under {target:.0%}.",
            )
        )
    return out


def _fund_use(x: dict[str, float]) -> list[Option]:
    mis = _get(x, "misuse_share_k")
    sec, oth = _get(x, "share_securities_k"), _get(x, "share_other_lender_k")
    part = sec + oth
    out = []
    cost = 0
    for target in (0.3, 0.15, 0.0):
        if target >= mis:
            continue
        cost += 1
        r = target / part if part > 0 else 0.0
        freed = mis - target
        cons = min(
            max(0.0, 1.0 - _get(x, "share_business_6")),
            _get(x, "share_consumption_6") + freed,
        )
        out.append(
            Option(
                cost,
                {
                    "share_securities_k": sec * r,
                    "share_other_lender_k": oth * r,
                    "misuse_share_k": target,
                    "share_consumption_6": max(cons, _get(x, "share_consumption_6")),
                    **_consumption_again(x, target),
                },
                *_fund_use_text(target),
            )
        )
    return out


def _fund_use_text(target: float) -> tuple[str, str]:
    """The fund-use advice; a zero target is said as "none", never as "no more than 0%"."""
    if target <= 0:
        return (
            "借款用于日常消费：借款后不要把借款转入证券投资或用于偿还其他贷款。",
            "Use the loan for everyday consumption: send none of the drawn money to "
            "securities or to repay other lenders soon after the draw.",
        )
    return (
        f"借款用于日常消费：借款后短期内转入证券投资或偿还其他贷款的比例不超过{target:.0%}。",
        f"Use the loan for everyday consumption: send no more than {target:.0%} of "
        "drawn money to securities or to repay other lenders soon after the draw.",
    )


def _competitor_text(target: float) -> tuple[str, str]:
    """The multi-homing advice; a zero target is said as "stop", never as "at most 0"."""
    if target <= 0:
        return (
            "减少多头使用：不再使用竞品，把日常消费集中在常用渠道。",
            "Avoid multi-homing: stop using competing products and keep everyday "
            "spending on your main channel.",
        )
    return (
        f"减少多头使用：近6个月中使用竞品的月份不超过{int(target)}个，把日常消费集中在常用渠道。",
        f"Avoid multi-homing: use competing products in at most {int(target)} of the "
        "last 6 months and keep everyday spending on your main channel.",
    )


def _external(x: dict[str, float]) -> list[Option]:
    held = _get(x, "ext_active_products")
    since = _get(x, "months_since_ext_activity")
    out = []
    cost = 0
    if held > 0 and since > 0:
        cost += 1
        out.append(
            Option(
                cost,
                {"months_since_ext_activity": 0.0},
                "让信用记录保持活跃：正常使用已持有的他行信用卡或贷款并按时还款。",
                "Keep your credit record active: use the cards or loans you already hold at "
                "other institutions and repay on time.",
            )
        )
    for k in (1, 2):
        cost += 1
        out.append(
            Option(
                cost,
                {
                    "ext_cards": _get(x, "ext_cards") + k,
                    "ext_active_products": held + k,
                    "ext_new_accounts_12": _get(x, "ext_new_accounts_12") + k,
                    "ext_inquiries_6": _get(x, "ext_inquiries_6") + k,
                    "months_since_ext_activity": 0.0,
                    "ext_utilisation": max(_get(x, "ext_utilisation"), 0.2),
                },
                f"分散融资渠道：再持有并适度使用{k}张他行信用卡或一笔小额信贷，不依赖单一渠道。",
                f"Diversify funding: hold and moderately use {k} more card(s) or credit "
                "product(s) at another institution instead of relying on one channel.",
                side=("ext_inquiries_6",),
            )
        )
    return out


def _competition(x: dict[str, float]) -> list[Option]:
    cm = _get(x, "competitor_months_6")
    share = _get(x, "competitor_share_6")
    out = []
    cost = 0
    for target in (3.0, 1.0, 0.0):
        if target >= cm:
            continue
        cost += 1
        out.append(
            Option(
                cost,
                {
                    "competitor_months_6": target,
                    "competitor_share_6": share * (target / cm if cm > 0 else 0.0),
                    **_fewer_competitor_months(x, target),
                },
                *_competitor_text(target),
            )
        )
    return out


#: name -> options for one borrower (its feature values by name)
LEVERS: dict[str, Callable[[dict[str, float]], list[Option]]] = {
    "cadence": _cadence,
    "utilisation": _utilisation,
    "fund_use": _fund_use,
    "external": _external,
    "competition": _competition,
}


def candidates(
    x: np.ndarray, feature_names: Sequence[str], levers: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ...]], list[list[Option]], list[str]]:
    """Every combination of lever options for one row ``x``.

    Returns the candidate matrix (first row: no change), the cost of each, the option
    index per lever of each (0 = no change), the options per lever and the lever names.
    Candidates that break a monotone direction are already removed; values are clipped
    to their feasible ranges.
    """
    names = list(feature_names)
    col = {n: j for j, n in enumerate(names)}
    xd = {n: float(x[j]) for j, n in enumerate(names)}
    lever_names = [n for n in (levers or LEVERS) if n in LEVERS]
    options: list[list[Option]] = []
    for ln in lever_names:
        # an option needs the features it sets; the traces that follow from it (DERIVED)
        # move with it where the model has them
        opts = [o for o in LEVERS[ln](xd) if all(f in col for f in o.values if f not in DERIVED)]
        # only features the registry marks as actionable may be set
        opts = [
            o
            for o in opts
            if all(
                BY_NAME[f].actionable
                for f in o.values
                if f in BY_NAME and f not in o.side and f not in DERIVED
            )
        ]
        options.append(opts)
    combos = list(itertools.product(*[range(len(o) + 1) for o in options]))
    base = np.asarray(x, dtype=np.float64)
    X = np.repeat(base[None, :], len(combos), axis=0)
    cost = np.zeros(len(combos), dtype=np.int64)
    idx = np.asarray(combos, dtype=np.int64).reshape(len(combos), len(options))
    for li, opts in enumerate(options):
        for oi, opt in enumerate(opts, start=1):
            rows = idx[:, li] == oi
            for f, v in opt.values.items():
                if f in col:
                    X[rows, col[f]] = v
            cost[rows] += opt.cost
    lo = np.array([BY_NAME[n].bounds[0] if n in BY_NAME else -np.inf for n in names])
    hi = np.array([BY_NAME[n].bounds[1] if n in BY_NAME else np.inf for n in names])
    X = np.clip(X, lo, hi)
    mono = np.array([BY_NAME[n].monotone if n in BY_NAME else 0 for n in names])
    delta = X - base[None, :]
    ok = ~((delta * mono[None, :]) > 1e-12).any(axis=1)
    ok[0] = True
    keep = np.flatnonzero(ok)
    return X[keep], cost[keep], [combos[i] for i in keep], options, lever_names


def advise(
    x: np.ndarray,
    feature_names: Sequence[str],
    score: Callable[[np.ndarray], np.ndarray],
    threshold: float,
    levers: Sequence[str] | None = None,
) -> Advice:
    """The cheapest lever combination that brings ``score`` under ``threshold``.

    ``score`` maps a float matrix of feature rows to probabilities (the model, with its
    calibration); every suggestion is re-scored with it.
    """
    X, cost, combos, options, lever_names = candidates(x, feature_names, levers)
    p = np.asarray(score(X.astype(np.float32)), dtype=np.float64)
    p0 = float(p[0])
    under = p < threshold
    if p0 < threshold:
        best = 0
    elif under.any():
        cand = np.flatnonzero(under)
        best = int(cand[np.lexsort((p[cand], cost[cand]))[0]])
    else:
        best = int(np.lexsort((cost, p))[0])
    combo = combos[best]
    names = list(feature_names)
    chosen = [(lever_names[li], options[li][oi - 1]) for li, oi in enumerate(combo) if oi > 0]
    changes = [
        (names[j], float(x[j]), float(X[best, j]))
        for j in range(len(names))
        if abs(float(X[best, j]) - float(x[j])) > 1e-9
    ]
    zh = [o.zh for _, o in chosen] + [CREDIT_TIP[0]]
    en = [o.en for _, o in chosen] + [CREDIT_TIP[1]]
    return Advice(
        p_before=p0,
        p_after=float(p[best]),
        threshold=float(threshold),
        achieved=bool(p[best] < threshold),
        cost=int(cost[best]),
        actions=[f"{ln}:{o.cost}" for ln, o in chosen],
        changes=changes,
        zh=zh,
        en=en,
        n_candidates=len(X),
    )
