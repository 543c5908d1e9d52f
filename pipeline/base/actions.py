"""What carrying out a feature change means in the world: feature -> simulator action.

The advice (``pipeline.core.advice``) moves actionable registry features; the simulator
(``pipeline.core.simulate.ACTIONS``) knows a handful of borrower behaviours it can carry
out over a future. This table joins the two, once: for every actionable feature of the
registry, the behaviour that makes it rise and the one that makes it fall (``None``
where no behaviour of the world moves it that way). A lever option of the advice is
carried out in the world by the actions of the features it changes, each in the
direction it changes them.

The names are the keys of ``pipeline.core.simulate.ACTIONS`` (a lower layer cannot
import them; a test checks that every name here is one of them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.base.errors import PipelineError
from pipeline.base.registry import BY_NAME

KEEP_DRAWING = "keep_drawing"
ROUTE = "route_to_consumption"
EXTERNAL = "keep_external_live"
NO_COMPETITORS = "stop_competitors"
ON_SCHEDULE = "repay_on_schedule"
MODERATE = "moderate_use"


@dataclass(frozen=True)
class Behaviour:
    """The simulator action that raises a feature (``up``) and the one that lowers it."""

    up: str | None
    down: str | None

    def toward(self, delta: float) -> str | None:
        return self.up if delta > 0 else self.down if delta < 0 else None


_DRAWING = Behaviour(up=KEEP_DRAWING, down=MODERATE)
_USE = Behaviour(up=KEEP_DRAWING, down=MODERATE)
_MISUSE = Behaviour(up=None, down=ROUTE)
_FILE = Behaviour(up=EXTERNAL, down=None)
_COMPETITION = Behaviour(up=None, down=NO_COMPETITORS)

#: Every actionable registry feature -> the behaviours that move it.
FEATURE_ACTIONS: dict[str, Behaviour] = {
    # cadence: drawing in more months raises the counts and amounts, ends idle spells;
    # fewer and smaller draws are moderate use
    "months_since_last_draw": Behaviour(up=None, down=KEEP_DRAWING),
    "draw_months_3": _DRAWING,
    "draw_months_6": _DRAWING,
    "draw_months_12": _DRAWING,
    "n_draws_3": _DRAWING,
    "n_draws_6": _DRAWING,
    "n_draws_12": _DRAWING,
    "draw_amount_3": _DRAWING,
    "draw_amount_6": _DRAWING,
    "draw_amount_12": _DRAWING,
    "draw_trend": _DRAWING,
    "longest_idle_12": Behaviour(up=None, down=KEEP_DRAWING),
    # utilisation: a balance kept under half the line is moderate use
    "util_mean_3": _USE,
    "util_mean_6": _USE,
    "util_mean_12": _USE,
    "util_max_12": _USE,
    "util_trend": _USE,
    "revolving_share_6": Behaviour(up=KEEP_DRAWING, down=MODERATE),
    "small_draw_share_12": Behaviour(up=MODERATE, down=KEEP_DRAWING),
    # interest is earned by a balance repaid by the schedule rather than all at once
    "interest_paid_6": Behaviour(up=ON_SCHEDULE, down=MODERATE),
    "interest_to_line_12": Behaviour(up=ON_SCHEDULE, down=MODERATE),
    "early_repay_share_12": Behaviour(up=None, down=ON_SCHEDULE),
    # where the drawn money goes
    "share_securities_k": _MISUSE,
    "share_other_lender_k": _MISUSE,
    "misuse_share_k": _MISUSE,
    "share_business_6": Behaviour(up=None, down=ROUTE),
    "share_consumption_6": Behaviour(up=ROUTE, down=None),
    # the external credit file
    "ext_active_products": _FILE,
    "ext_cards": _FILE,
    "ext_loans": _FILE,
    "months_since_ext_activity": Behaviour(up=None, down=EXTERNAL),
    "ext_new_accounts_12": _FILE,
    "ext_utilisation": _FILE,
    # competing products
    "competitor_months_6": _COMPETITION,
    "competitor_share_6": _COMPETITION,
}

#: Every action name used above.
ACTION_NAMES: tuple[str, ...] = (
    KEEP_DRAWING,
    ROUTE,
    EXTERNAL,
    NO_COMPETITORS,
    ON_SCHEDULE,
    MODERATE,
)


class UnmappedChange(PipelineError, ValueError):
    """A feature change that no behaviour of the world carries out."""


def actions_for(changes: Iterable[tuple[str, float, float]]) -> tuple[str, ...]:
    """The actions that carry out ``(feature, before, after)`` changes, sorted, unique.

    Features outside the registry's actionable set (the side effects of an option, such
    as bureau inquiries when a card is applied for) follow from the others and need no
    action of their own. An actionable feature moved in a direction no behaviour has is
    an error naming the feature.
    """
    out: set[str] = set()
    for name, before, after in changes:
        feat = BY_NAME.get(name)
        if feat is None or not feat.actionable:
            continue
        if name not in FEATURE_ACTIONS:
            raise UnmappedChange(f"feature {name!r} is actionable but maps to no action")
        act = FEATURE_ACTIONS[name].toward(float(after) - float(before))
        if act is None:
            if after == before:
                continue
            way = "rise" if after > before else "fall"
            raise UnmappedChange(f"feature {name!r}: no action of the world makes it {way}")
        out.add(act)
    return tuple(sorted(out))
