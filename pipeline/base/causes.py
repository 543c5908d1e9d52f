"""The shared vocabulary: closure cause codes, as defined in the seed's mechanisms."""

from __future__ import annotations

#: Non-overdue closure causes, in a fixed order (array columns follow it).
CAUSES: tuple[str, ...] = (
    "sudden_stop",
    "low_yield",
    "over_reliance",
    "fund_misuse",
    "thin_file",
    "policy_tightening",
    "low_activity_competition",
)
#: Ordinary credit-risk closure, kept apart from the studied population.
OVERDUE = "overdue"
ALL_CAUSES: tuple[str, ...] = CAUSES + (OVERDUE,)

CAUSE_TEXT: dict[str, tuple[str, str]] = {
    "sudden_stop": ("长期使用后突然停止借款", "a long-time user suddenly stopped borrowing"),
    "low_yield": ("长期低额低频使用、收益低", "long low-value use that earns the platform little"),
    "over_reliance": ("过度依赖单一借款渠道", "the line became the main funding channel"),
    "fund_misuse": (
        "借款资金流向投资或偿还他贷",
        "loan money flowed to investment or other lenders",
    ),
    "thin_file": (
        "征信记录显示长期未使用其他信贷",
        "the credit file shows long non-use of other credit",
    ),
    "policy_tightening": (
        "监管收紧下的高杠杆或非消费用途",
        "tightened regulation hit a leveraged or non-consumption segment",
    ),
    "low_activity_competition": (
        "活跃度低且在竞品间多头使用",
        "low activity while using competing products",
    ),
    OVERDUE: ("逾期", "overdue"),
}

CHANNELS: tuple[str, ...] = ("consumption", "business", "securities", "other_lender", "transfer")
OCCUPATIONS: tuple[str, ...] = (
    "salaried",
    "ecommerce_operator",
    "sole_proprietor",
    "freelancer",
    "student",
)
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55+")
EVENTS: tuple[str, ...] = ("line_increase", "line_decrease", "freeze", "closure")
