"""Advice: the smallest changes a borrower can make that bring the predicted risk down.

The search works on *actions*, each a thing a borrower can do, named as the simulated
world names them (:mod:`pipeline.base.actions`, the keys of
``pipeline.core.simulate.ACTIONS``), so that the advice table, the world test, the
report and serving speak of the same actions. An action has a few options of growing
effort (cost 1, 2, 3, ...) and each option moves a group of coupled features together,
so that the changed profile stays one a borrower could have:

* ``keep_drawing`` (a moderate, regular borrowing cadence): draw a small amount in ``k``
  more months. The amount is the borrower's own: at most its median monthly repayment
  over the last twelve months (what it has shown it repays in a month) and at most a
  configured share of its typical draw (its need); without a repayment history, or when
  that amount is under :data:`MIN_DRAW`, the action is not advised and the advice says
  why (:attr:`Advice.not_advised`). ``draw_months_3/6/12`` and ``n_draws_3/6/12`` grow by
  ``k``, amounts by ``k`` advised draws, ``months_since_last_draw`` becomes 0 and
  ``draw_trend`` rises by ``k`` over the recent window. Simplification: utilisation, the
  longest idle spell and interest are left as they are.
* ``moderate_use`` (do not approach the risk thresholds): bring the mean utilisation of
  the last three months down to 70%, 50% or 30% (the 6- and 12-month means and the trend
  move by the same amount spread over their windows; the 12-month peak is history), or,
  for a heavy user, draw at most once a month.
* ``route_to_consumption``: bring the share sent to securities or to other lenders soon
  after the draw down to 30%, 15% or 0; the share freed goes to consumption.
* ``keep_external_live``: use the cards or loans already held, or apply for one or two
  more (counts, new accounts and bureau inquiries grow; approval is not certain).
* ``stop_competitors``: at most 3, 1 or 0 of the next six months on competing products.

Every combination of options (one per action, "no change" included) is scored with the
model in one batch; combinations that move a feature against its registry monotone
direction (more of a ``+1`` feature, less of a ``-1`` one) are dropped and every value is
kept inside the registry's feasible range. The advice is the cheapest combination
whose re-scored risk is under the threshold (ties: the lower risk); if none is, the
combination with the lowest risk is returned with ``achieved=False``. Advice is said in
the future tense, with the borrower's own figures.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.base.actions import (
    EXTERNAL,
    KEEP_DRAWING,
    MODERATE,
    NO_COMPETITORS,
    ROUTE,
)
from pipeline.base.registry import BY_NAME

#: Said where no action within reach lowers the predicted risk (zh, en).
NO_ACTION_TEXT = (
    ["没有找到能降低预测风险的可行行动。"],
    ["No action within the borrower's reach lowers the predicted risk."],
)
#: The smallest draw worth advising (yuan): a smaller one is not advised.
MIN_DRAW = 100.0
#: Key of the advised draw size in a borrower's feature dict (not a feature).
DRAW_SIZE = "__draw_size"


def draw_size(capacity: float, typical: float, need_share: float) -> tuple[float, str]:
    """The advised size of a small draw and, when none can be advised, why.

    ``capacity``: the borrower's median monthly repayment over the last twelve months;
    ``typical``: its typical draw; the draw is at most the capacity and at most
    ``need_share`` of the typical draw. Returns ``(nan, reason)`` when no draw is advised.
    """
    if not np.isfinite(capacity) or capacity <= 0:
        return float("nan"), "no repayment in the last 12 months to size a draw from"
    if not np.isfinite(typical) or typical <= 0:
        return float("nan"), "no draw in the last 12 months to size a draw from"
    size = float(min(capacity, need_share * typical))
    if size < MIN_DRAW:
        return float("nan"), (
            f"a draw the borrower can repay within the month is under {MIN_DRAW:.0f} yuan"
        )
    return float(np.floor(size / 10.0) * 10.0), ""


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
    draw_size: float = float("nan")  # the advised draw (keep_drawing), nan when none
    not_advised: dict[str, str] = field(default_factory=dict)  # action -> why not

    def text(self, lang: str = "en") -> str:
        lines = self.zh if lang == "zh" else self.en
        return "\n".join(f"- {s}" for s in lines)


def _get(x: dict[str, float], name: str, default: float = 0.0) -> float:
    v = x.get(name, default)
    return float(v) if np.isfinite(v) else default


def _keep_drawing(x: dict[str, float]) -> list[Option]:
    dm3 = _get(x, "draw_months_3")
    tenure = _get(x, "tenure", 12.0)
    room = int(max(0.0, min(3.0, tenure + 1.0) - dm3))
    size = x.get(DRAW_SIZE, float("nan"))
    if not np.isfinite(size):  # no draw the borrower can repay within the month
        return []
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
            "n_draws_12": _get(x, "n_draws_12") + k,
            "draw_amount_3": _get(x, "draw_amount_3") + k * size,
            "draw_amount_6": _get(x, "draw_amount_6") + k * size,
            "draw_amount_12": _get(x, "draw_amount_12") + k * size,
            "draw_trend": _get(x, "draw_trend") + k / recent,
            **_drawing_again(x, dm3 + k, k),
        }
        m = int(dm3 + k)
        out.append(
            Option(
                k,
                vals,
                f"保持规律的小额借款：接下来3个月中，您将至少在{m}个月各借款约{size:,.0f}元"
                f"（不超过您近12个月每月还款额的中位数），并按期还款、支付相应利息。",
                f"You will keep a regular cadence: in at least {m} of the next 3 months you "
                f"will draw about {size:,.0f} yuan (no more than your median monthly "
                "repayment over the last 12 months) and repay it on schedule, paying its "
                "interest.",
            )
        )
    return out


def _one_draw_a_month(x: dict[str, float]) -> list[Option]:
    """A heavy user: at most one draw a month (counts fall to the drawing months)."""
    heavy = [(w, _get(x, f"n_draws_{w}"), _get(x, f"draw_months_{w}")) for w in (3, 6, 12)]
    if not any(n > d for _, n, d in heavy):
        return []
    vals = {}
    for w, n, d in heavy:
        vals[f"n_draws_{w}"] = d
        vals[f"draw_amount_{w}"] = _get(x, f"draw_amount_{w}") * (d / n if n > 0 else 1.0)
    n3 = int(heavy[0][1])
    return [
        Option(
            2,
            vals,
            f"放缓借款频率：接下来每月您将最多借款一次（近3个月共{n3}笔），不借新还旧。",
            f"You will slow your borrowing: at most one draw a month from now on ({n3} "
            "draws in the last 3 months), and no borrowing to repay other debt.",
        )
    ]


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


def _moderate_use(x: dict[str, float]) -> list[Option]:
    return _utilisation(x) + _one_draw_a_month(x)


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
                f"控制额度使用：接下来3个月，您将通过少借或提前还款，使平均额度使用率低于"
                f"{target:.0%}（目前为{u3:.0%}）。",
                f"You will keep your use moderate: over the next 3 months you will draw "
                f"less or repay early so that your mean utilisation stays under {target:.0%} "
                f"(now {u3:.0%}).",
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
                *_fund_use_text(target, mis),
            )
        )
    return out


def _fund_use_text(target: float, now: float) -> tuple[str, str]:
    """The fund-use advice; a zero target is said as "none", never as "no more than 0%"."""
    if target <= 0:
        return (
            f"借款用于日常消费：接下来您将不再把借款转入证券投资或用于偿还其他贷款（近期比例为{now:.0%}）。",
            "You will use what you draw for everyday consumption: none of it will go to "
            f"securities or to repay other lenders soon after the draw (now {now:.0%}).",
        )
    return (
        f"借款用于日常消费：接下来您将把借款后短期内转入证券投资或偿还其他贷款的比例控制在{target:.0%}以内"
        f"（近期为{now:.0%}）。",
        f"You will use what you draw mostly for consumption: no more than {target:.0%} of it "
        f"will go to securities or to repay other lenders soon after the draw (now {now:.0%}).",
    )


def _competitor_text(target: float, now: float) -> tuple[str, str]:
    """The multi-homing advice; a zero target is said as "stop", never as "at most 0"."""
    if target <= 0:
        return (
            f"减少多头使用：接下来您将不再使用竞品（近6个月有{int(now)}个月在用），把日常消费集中在常用渠道。",
            "You will stop using competing credit products (used in "
            f"{int(now)} of the last 6 months) and keep everyday spending on your main channel.",
        )
    return (
        f"减少多头使用：接下来6个月中您将最多在{int(target)}个月使用竞品（近6个月为{int(now)}个）。",
        f"You will use competing credit products in at most {int(target)} of the next 6 "
        f"months (now {int(now)} of the last 6) and keep everyday spending on your main channel.",
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
                f"让信用记录保持活跃：接下来每月您将使用已持有的{int(held)}个他行信用卡或贷款产品并按时还款"
                f"（已有{int(since)}个月没有使用）。",
                f"You will keep your credit record active: each month you will use the "
                f"{int(held)} card(s) or loan(s) you already hold at other institutions and "
                f"repay on time (none used for {int(since)} months).",
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
                f"分散融资渠道：您将向其他机构申请{k}张信用卡或小额信贷并适度使用（申请未必获批；"
                f"目前持有{int(held)}个）。",
                f"You will apply for {k} more card(s) or credit product(s) at another "
                f"institution and use it moderately if approved (approval is not certain; you "
                f"hold {int(held)} now).",
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
                *_competitor_text(target, cm),
            )
        )
    return out


#: name -> options for one borrower (its feature values by name)
#: action name (:mod:`pipeline.base.actions`) -> options for one borrower (its feature
#: values by name, and its advised draw size under :data:`DRAW_SIZE`)
LEVERS: dict[str, Callable[[dict[str, float]], list[Option]]] = {
    KEEP_DRAWING: _keep_drawing,
    MODERATE: _moderate_use,
    ROUTE: _fund_use,
    EXTERNAL: _external,
    NO_COMPETITORS: _competition,
}


def candidates(
    x: np.ndarray,
    feature_names: Sequence[str],
    levers: Sequence[str] | None = None,
    draw: float = float("nan"),
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
    xd[DRAW_SIZE] = float(draw)
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
    # only the values an action set are kept inside their feasible range: the borrower's
    # own values stay as they are (an out-of-range one is the scorer's to refuse)
    X = np.where(X != base[None, :], np.clip(X, lo, hi), X)
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
    draw: tuple[float, str] = (float("nan"), "the borrower's repayment capacity is unknown"),
) -> Advice:
    """The cheapest combination of actions that brings ``score`` under ``threshold``.

    ``score`` maps a float matrix of feature rows to probabilities (the model, with its
    calibration); every suggestion is re-scored with it. ``draw`` is the advised draw
    size and, when it is nan, why no draw is advised (:func:`draw_size`).
    """
    X, cost, combos, options, lever_names = candidates(x, feature_names, levers, draw[0])
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
    zh = [o.zh for _, o in chosen]
    en = [o.en for _, o in chosen]
    wanted = levers is None or KEEP_DRAWING in levers
    not_advised = {KEEP_DRAWING: draw[1]} if wanted and not np.isfinite(draw[0]) else {}
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
        draw_size=float(draw[0]) if any(n == KEEP_DRAWING for n, _ in chosen) else float("nan"),
        not_advised=not_advised,
    )
