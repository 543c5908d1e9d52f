"""The feature registry: every model feature declared once.

Each entry says which family it belongs to, which closure causes it bears on (the
first is its primary cause, used when SHAP values are summed into reason codes), its
expected monotone direction (+1: more of it means more closure risk, -1: less,
0: no constraint), whether a borrower can act on it, and short texts in Chinese and
English used by reason codes and advice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.base.causes import CAUSES

FAMILIES = ("behaviour", "fund_use", "external", "social", "macro", "profile")


@dataclass(frozen=True)
class Feature:
    name: str
    family: str
    causes: tuple[str, ...]
    monotone: int
    actionable: bool
    zh: str
    en: str
    # feasible range of the value (used by advice to keep suggested changes possible)
    bounds: tuple[float, float] = (float("-inf"), float("inf"))

    @property
    def primary_cause(self) -> str:
        return self.causes[0] if self.causes else "profile"


def _f(
    name: str, family: str, causes: str, monotone: int, actionable: bool, zh: str, en: str
) -> Feature:
    return Feature(
        name,
        family,
        tuple(c for c in causes.split() if c),
        monotone,
        actionable,
        zh,
        en,
        _BOUNDS.get(name, (0.0, float("inf"))),
    )


_SHARE = (0.0, 1.0)
#: Feasible ranges; a feature not listed here is a non-negative quantity.
_BOUNDS: dict[str, tuple[float, float]] = {
    "draw_months_3": (0.0, 3.0),
    "draw_months_6": (0.0, 6.0),
    "draw_months_12": (0.0, 12.0),
    "longest_idle_12": (0.0, 12.0),
    "competitor_months_6": (0.0, 6.0),
    "idle_multihoming_6": (0.0, 6.0),
    "competition_watch_1": (0.0, 5.0),
    "competition_watch_2": (0.0, 4.0),
    "competition_watch_3": (0.0, 3.0),
    "draw_months_9": (0.0, 9.0),
    "stop_watch_1": (0.0, 9.0),
    "stop_watch_2": (0.0, 9.0),
    "draw_trend": (-1.0, 1.0),
    "util_trend": (-2.0, 2.0),
    "spend_trend": (float("-inf"), float("inf")),
    **{
        k: _SHARE
        for k in (
            "revolving_share_6",
            "small_draw_share_12",
            "early_repay_share_12",
            "share_securities_k",
            "share_other_lender_k",
            "misuse_share_k",
            "share_business_6",
            "share_consumption_6",
            "misuse_share_3",
            "noncons_share_3",
            "tightening_noncons_3",
            "competitor_share_6",
            "ext_utilisation",
            "contacts_closed_share",
            "contacts_closed_wshare",
            "contacts_overdue_share",
            "frozen_now",
        )
    },
    "regime": (0.0, 2.0),  # 0 none, 1 pilot, 2 full tightening
    "city_tier": (1.0, 4.0),  # the simulator's four city tiers, 1 the largest cities
}


SS, LY, OR, FM, TF, PT, LC = CAUSES

FEATURES: tuple[Feature, ...] = (
    # behaviour
    _f(
        "months_since_last_draw",
        "behaviour",
        f"{SS} {LC}",
        0,
        True,
        "距上次借款月数",
        "months since the last draw",
    ),
    _f(
        "draw_months_3",
        "behaviour",
        f"{SS} {LC}",
        0,
        True,
        "近3个月有借款的月数",
        "months with a draw, last 3",
    ),
    _f(
        "draw_months_6",
        "behaviour",
        f"{LC} {SS}",
        0,
        True,
        "近6个月有借款的月数",
        "months with a draw, last 6",
    ),
    _f(
        "draw_months_12",
        "behaviour",
        f"{SS} {LY}",
        0,
        True,
        "近12个月有借款的月数",
        "months with a draw, last 12",
    ),
    _f("n_draws_3", "behaviour", f"{OR} {SS}", 0, True, "近3个月借款笔数", "draws, last 3 months"),
    _f("n_draws_6", "behaviour", f"{OR}", 0, True, "近6个月借款笔数", "draws, last 6 months"),
    _f(
        "n_draws_12",
        "behaviour",
        f"{OR} {LY}",
        0,
        True,
        "近12个月借款笔数",
        "draws, last 12 months",
    ),
    _f(
        "draw_amount_3",
        "behaviour",
        f"{OR} {LY}",
        0,
        True,
        "近3个月借款金额",
        "amount drawn, last 3 months",
    ),
    _f(
        "draw_amount_6",
        "behaviour",
        f"{LY} {OR}",
        0,
        True,
        "近6个月借款金额",
        "amount drawn, last 6 months",
    ),
    _f(
        "draw_amount_12",
        "behaviour",
        f"{LY}",
        0,
        True,
        "近12个月借款金额",
        "amount drawn, last 12 months",
    ),
    _f(
        "draw_trend",
        "behaviour",
        f"{SS}",
        0,
        True,
        "近期相对早期借款频率变化",
        "recent versus earlier draw frequency",
    ),
    _f(
        "longest_idle_12",
        "behaviour",
        f"{SS} {LC}",
        0,
        True,
        "近12个月最长未借款月数",
        "longest idle spell in 12 months",
    ),
    _f(
        "util_mean_3",
        "behaviour",
        f"{OR} {PT}",
        0,
        True,
        "近3个月平均额度使用率",
        "mean utilisation, last 3 months",
    ),
    _f(
        "util_mean_6",
        "behaviour",
        f"{LY} {OR}",
        0,
        True,
        "近6个月平均额度使用率",
        "mean utilisation, last 6 months",
    ),
    _f(
        "util_mean_12",
        "behaviour",
        f"{LY}",
        0,
        True,
        "近12个月平均额度使用率",
        "mean utilisation, last 12 months",
    ),
    _f(
        "util_max_12",
        "behaviour",
        f"{OR}",
        0,
        True,
        "近12个月最高额度使用率",
        "peak utilisation, last 12 months",
    ),
    _f("util_trend", "behaviour", f"{OR} {SS}", 0, True, "额度使用率趋势", "utilisation trend"),
    _f(
        "util_now",
        "behaviour",
        f"{OR} {PT} {LY}",
        0,
        False,
        "当前额度使用率",
        "utilisation at the end of this month",
    ),
    _f(
        "reliance_3",
        "behaviour",
        f"{OR}",
        0,
        False,
        "近3个月依赖度（有2个月以上借款时的平均使用率，他行贷款3笔以上加倍）",
        "reliance over the last 3 months: mean utilisation when 2 or more months had a draw,"
        " doubled with 3 or more loans at other lenders",
    ),
    _f(
        "stop_watch_1",
        "behaviour",
        f"{SS}",
        0,
        False,
        "近两月未借款时，此前9个月中有借款的月数",
        "months with a draw in the 9 months before the last 2, when the last 2 had none",
    ),
    _f(
        "stop_watch_2",
        "behaviour",
        f"{SS}",
        0,
        False,
        "本月未借款时，此前9个月中有借款的月数",
        "months with a draw in the 9 months before this one, when this month had none",
    ),
    _f(
        "draw_months_9",
        "behaviour",
        f"{SS} {LY}",
        0,
        False,
        "近9个月有借款的月数",
        "months with a draw, last 9",
    ),
    _f(
        "revolving_share_6",
        "behaviour",
        f"{OR}",
        0,
        True,
        "近6个月借新还旧月份占比",
        "share of months drawing while still owing",
    ),
    _f(
        "small_draw_share_12", "behaviour", f"{LY}", 0, True, "小额借款占比", "share of small draws"
    ),
    _f(
        "interest_paid_6",
        "behaviour",
        f"{LY}",
        0,
        True,
        "近6个月支付利息",
        "interest paid, last 6 months",
    ),
    _f(
        "interest_to_line_12",
        "behaviour",
        f"{LY}",
        0,
        True,
        "近12个月利息与额度之比",
        "interest paid over the line, last 12 months",
    ),
    _f(
        "early_repay_share_12",
        "behaviour",
        f"{LY}",
        0,
        True,
        "提前还款占比",
        "share of months with early repayment",
    ),
    _f("line", "behaviour", f"{LY}", 0, False, "当前额度", "current credit line"),
    _f(
        "line_to_initial",
        "behaviour",
        f"{LY} {PT}",
        0,
        False,
        "当前额度与初始额度之比",
        "current over initial line",
    ),
    _f("n_line_increases", "behaviour", f"{LY}", 0, False, "历史提额次数", "line increases so far"),
    _f(
        "n_line_decreases",
        "behaviour",
        f"{LY} {PT}",
        0,
        False,
        "历史降额次数",
        "line decreases so far",
    ),
    _f("n_freezes", "behaviour", f"{SS} {FM}", 0, False, "历史冻结次数", "freezes so far"),
    _f(
        "months_since_line_change",
        "behaviour",
        f"{LY}",
        0,
        False,
        "距上次额度调整月数（12个月内无调整记为12）",
        "months since the last line change (12: none in the last 12 months)",
    ),
    _f("tenure", "behaviour", f"{LY}", 0, False, "账龄（月）", "months on book"),
    _f("frozen_now", "behaviour", f"{SS} {FM}", 0, False, "当前是否冻结", "account frozen now"),
    _f(
        "months_since_cut_or_freeze",
        "behaviour",
        f"{SS} {PT} {LY}",
        0,
        False,
        "距上次降额或冻结月数（12个月内无记为12）",
        "months since the last line cut or freeze (12: none in the last 12 months)",
    ),
    # fund use
    _f(
        "share_securities_k",
        "fund_use",
        f"{FM}",
        1,
        True,
        "借款短期内流向证券投资的占比",
        "share of drawn money sent to securities soon after the draw",
    ),
    _f(
        "share_other_lender_k",
        "fund_use",
        f"{FM} {OR}",
        1,
        True,
        "借款短期内用于偿还他贷的占比",
        "share of drawn money used to repay other lenders soon after the draw",
    ),
    _f(
        "misuse_share_k",
        "fund_use",
        f"{FM}",
        1,
        True,
        "借款短期内流向投资或他贷的占比",
        "share of drawn money sent to investment or other lenders soon after the draw",
    ),
    _f(
        "share_business_6",
        "fund_use",
        f"{PT} {FM}",
        0,
        True,
        "借款用于经营周转的占比",
        "share of drawn money used for business turnover",
    ),
    _f(
        "share_consumption_6",
        "fund_use",
        f"{FM} {PT}",
        0,
        True,
        "借款用于日常消费的占比",
        "share of drawn money spent on consumption",
    ),
    _f(
        "misuse_share_3",
        "fund_use",
        f"{FM}",
        1,
        False,
        "近3个月借款短期内流向投资或他贷的占比",
        "share of drawn money sent to investment or other lenders soon after the draw,"
        " last 3 months",
    ),
    _f(
        "noncons_share_3",
        "fund_use",
        f"{PT} {FM}",
        0,
        False,
        "近3个月借款用于非消费用途的占比",
        "share of drawn money not spent on consumption, last 3 months",
    ),
    # external
    _f(
        "ext_active_products",
        "external",
        f"{TF} {OR}",
        0,
        True,
        "他行在用信用卡及贷款数",
        "active cards and loans at other institutions",
    ),
    _f("ext_cards", "external", f"{TF}", 0, True, "他行信用卡数", "cards at other institutions"),
    _f("ext_loans", "external", f"{OR} {TF}", 0, True, "他行贷款数", "loans at other institutions"),
    _f(
        "months_since_ext_activity",
        "external",
        f"{TF}",
        1,
        True,
        "距上次外部信贷活动月数",
        "months since any external credit activity",
    ),
    _f(
        "ext_inquiries_6",
        "external",
        f"{OR} {TF}",
        0,
        False,
        "近6个月征信查询次数",
        "bureau inquiries, last 6 months",
    ),
    _f(
        "ext_new_accounts_12",
        "external",
        f"{TF} {OR}",
        0,
        True,
        "近12个月新开外部账户数",
        "new external accounts, last 12 months",
    ),
    _f("ext_utilisation", "external", f"{OR}", 0, True, "外部授信使用率", "external utilisation"),
    _f(
        "competitor_months_6",
        "external",
        f"{LC}",
        1,
        True,
        "近6个月使用竞品的月数",
        "months using competing products, last 6",
    ),
    _f(
        "competitor_share_6",
        "external",
        f"{LC}",
        0,
        True,
        "竞品消费占比",
        "share of spending on competing products",
    ),
    _f(
        "spend_level_6",
        "external",
        f"{LC} {SS}",
        0,
        False,
        "近6个月月均消费",
        "monthly spending, last 6 months",
    ),
    _f(
        "spend_volatility_6",
        "external",
        f"{SS}",
        0,
        False,
        "消费波动（变异系数）",
        "spending volatility (coefficient of variation)",
    ),
    _f("spend_trend", "external", f"{SS} {LC}", 0, False, "消费趋势", "spending trend"),
    _f(
        "spend_weekly_cv_3",
        "external",
        f"{SS}",
        0,
        False,
        "近3个月周消费波动",
        "weekly spending volatility, last 3 months",
    ),
    _f(
        "spend_ratio_1",
        "external",
        f"{SS}",
        0,
        False,
        "本月消费与本人此前（3至11个月前）月均之比",
        "spending this month over the borrower's own monthly mean 3 to 11 months earlier",
    ),
    _f(
        "spend_ratio_3",
        "external",
        f"{SS}",
        0,
        False,
        "近3个月月均消费与本人此前月均之比",
        "monthly spending, last 3 months, over the borrower's own mean 3 to 11 months earlier",
    ),
    _f(
        "weekly_cv_1",
        "external",
        f"{SS}",
        0,
        False,
        "本月周消费波动",
        "weekly spending volatility this month",
    ),
    _f(
        "weekly_cv_ratio_3",
        "external",
        f"{SS}",
        0,
        False,
        "近3个月周消费波动与本人此前之比",
        "weekly spending volatility, last 3 months, over the borrower's own 3 to 11 months earlier",
    ),
    _f(
        "idle_multihoming_6",
        "external",
        f"{LC}",
        0,
        False,
        "近6个月至多1个月借款时使用竞品的月数",
        "months using competing products in the last 6, when at most 1 of them had a draw",
    ),
    *(
        _f(
            f"competition_watch_{j}",
            "external",
            f"{LC}",
            0,
            False,
            f"近{6 - j}个月使用竞品的月数（其中至多1个月有借款时）",
            f"months using competing products in the last {6 - j}, when at most 1 of them"
            " had a draw",
        )
        for j in (1, 2, 3)
    ),
    # social
    _f("degree", "social", "", 0, False, "社交联系人数", "number of contacts"),
    _f(
        "contacts_closed_share",
        "social",
        f"{FM} {SS}",
        0,
        False,
        "近12个月内账户被关闭的联系人占比",
        "share of contacts whose account was closed (not as overdue) in the last 12 months",
    ),
    _f(
        "contacts_closed_wshare",
        "social",
        f"{FM} {SS}",
        0,
        False,
        "按关系强度加权的近12个月内联系人关闭占比",
        "tie-weighted share of contacts closed in the last 12 months",
    ),
    _f(
        "contacts_overdue_share",
        "social",
        f"{OR}",
        0,
        False,
        "联系人中逾期的占比",
        "share of contacts who went overdue",
    ),
    # macro
    _f(
        "regime",
        "macro",
        f"{PT}",
        0,
        False,
        "监管收紧阶段（0无 1试点 2全面）",
        "regulatory tightening stage (0 none, 1 pilot, 2 full)",
    ),
    _f(
        "tightening_util_3",
        "macro",
        f"{PT}",
        0,
        False,
        "监管收紧期间近3个月平均额度使用率（未收紧为0）",
        "mean utilisation, last 3 months, while a tightening is in force (0 otherwise)",
    ),
    _f(
        "tightening_noncons_3",
        "macro",
        f"{PT}",
        0,
        False,
        "监管收紧期间近3个月借款非消费占比（未收紧为0）",
        "share of drawn money not spent on consumption, last 3 months, while a tightening is"
        " in force (0 otherwise)",
    ),
    # profile
    _f("income", "profile", "", 0, False, "月收入", "monthly income"),
    _f("occupation_code", "profile", "", 0, False, "职业", "occupation"),
    _f("city_tier", "profile", "", 0, False, "城市等级", "city tier"),
    _f("age_band_code", "profile", "", 0, False, "年龄段", "age band"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
CATEGORICAL: tuple[str, ...] = ("occupation_code",)


def registry_json() -> list[dict[str, object]]:
    # an open end of a feasible range is written as null (JSON has no infinity)
    return [
        dict(
            asdict(f),
            primary_cause=f.primary_cause,
            bounds=[b if abs(b) != float("inf") else None for b in f.bounds],
        )
        for f in FEATURES
    ]


#: The side on which a feature's value raises each of its causes, one sign per cause in
#: the order of :attr:`Feature.causes`: ``+`` when a higher value means more risk of
#: that cause (e.g. months since the last draw for a sudden stop), ``-`` when a lower
#: one does (the share of drawn money spent on consumption for fund misuse), ``0`` when
#: the mechanism declares no side (the feature may then never be cited for the cause).
#: Read from the simulator's monitoring signals (MECHANISMS.md); a reason cites a
#: feature for a cause only when the row's value lies on this side (see
#: :func:`pipeline.core.explain.reason_codes`).
_SIDES: dict[str, str] = {
    "months_since_last_draw": "++",
    "draw_months_3": "--",
    "draw_months_6": "--",
    "draw_months_12": "+0",
    "n_draws_3": "+-",
    "n_draws_6": "+",
    "n_draws_12": "+0",
    "draw_amount_3": "+-",
    "draw_amount_6": "-+",
    "draw_amount_12": "-",
    "draw_trend": "-",
    "longest_idle_12": "++",
    "util_mean_3": "++",
    "util_mean_6": "-+",
    "util_mean_12": "-",
    "util_max_12": "+",
    "util_trend": "+-",
    "util_now": "++-",
    "reliance_3": "+",
    "stop_watch_1": "+",
    "stop_watch_2": "+",
    "draw_months_9": "+0",
    "revolving_share_6": "+",
    "small_draw_share_12": "+",
    "interest_paid_6": "-",
    "interest_to_line_12": "-",
    "early_repay_share_12": "+",
    "line": "0",
    "line_to_initial": "0-",
    "n_line_increases": "0",
    "n_line_decreases": "++",
    "n_freezes": "++",
    "months_since_line_change": "+",
    "tenure": "+",
    "frozen_now": "++",
    "months_since_cut_or_freeze": "---",
    "share_securities_k": "+",
    "share_other_lender_k": "++",
    "misuse_share_k": "+",
    "share_business_6": "++",
    "share_consumption_6": "--",
    "misuse_share_3": "+",
    "noncons_share_3": "++",
    "ext_active_products": "-+",
    "ext_cards": "-",
    "ext_loans": "+-",
    "months_since_ext_activity": "+",
    "ext_inquiries_6": "+-",
    "ext_new_accounts_12": "-+",
    "ext_utilisation": "+",
    "competitor_months_6": "+",
    "competitor_share_6": "+",
    "spend_level_6": "--",
    "spend_volatility_6": "+",
    "spend_trend": "--",
    "spend_weekly_cv_3": "+",
    "spend_ratio_1": "-",
    "spend_ratio_3": "-",
    "weekly_cv_1": "+",
    "weekly_cv_ratio_3": "+",
    "idle_multihoming_6": "+",
    "competition_watch_1": "+",
    "competition_watch_2": "+",
    "competition_watch_3": "+",
    "contacts_closed_share": "++",
    "contacts_closed_wshare": "++",
    "contacts_overdue_share": "+",
    "regime": "+",
    "tightening_util_3": "+",
    "tightening_noncons_3": "+",
}


def _sides() -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for f in FEATURES:
        signs = _SIDES.get(f.name, "")
        if len(signs) != len(f.causes):
            raise ValueError(
                f"registry: feature {f.name!r} declares {len(signs)} risk side(s) for "
                f"{len(f.causes)} cause(s) {f.causes}"
            )
        side = {c: {"+": 1, "-": -1, "0": 0}[s] for c, s in zip(f.causes, signs, strict=True)}
        if f.monotone and any(v and v != f.monotone for v in side.values()):
            raise ValueError(
                f"registry: feature {f.name!r} has monotone {f.monotone} but risk sides {side}"
            )
        out[f.name] = side
    return out


#: feature -> cause -> +1 / -1 / 0, the side of the value that raises the cause's risk
RISK_SIDES: dict[str, dict[str, int]] = _sides()


def risk_side(feature: str, cause: str) -> int:
    """+1 or -1: the side of ``feature``'s value that raises ``cause``; 0: none declared."""
    return RISK_SIDES.get(feature, {}).get(cause, 0)
