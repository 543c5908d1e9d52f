"""Does the advice work? The advice carried out in the simulated world, against the model.

The advice (:mod:`pipeline.core.advice`) changes features and re-scores them with the
model: that shows what the model believes, not what the world does. Here every advised
borrower's world is continued from its full state at the advised snapshot over the
horizon, many times (Monte Carlo futures): once without the advice, once with the whole
advice carried out (all its actions together) and once with each of its actions alone
(:data:`pipeline.core.simulate.ACTIONS`, joined to the features by
:data:`pipeline.base.actions.FEATURE_ACTIONS`). All arms of a borrower share their
random numbers (common random numbers), so the difference between arms is the advice's
effect, not noise of the draws.

What is measured, per borrower and then on average:

* ``p_before``: the share of futures closing (non-overdue cause) within the horizon
  without the advice; per cause, the share closing by that cause;
* ``p_after``: the same with the whole advice carried out; per action (``by_action``),
  with that action alone;
* ``model_p_after``: the model's probability after the advised feature change (what the
  advice promised); per action, after that action's feature changes alone.

The futures come from :func:`pipeline.core.simulate.futures_arms`: each chunk of the
world is replayed once up to each asked snapshot and every arm runs from that state,
each borrower carrying out its own advice; row for row these are the continuations
that :func:`pipeline.core.simulate.futures` gives for the same accounts and actions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.base.actions import KEEP_DRAWING, actions_for
from pipeline.base.causes import CAUSES
from pipeline.base.errors import PipelineError
from pipeline.core import advice as advice_core
from pipeline.core import simulate as sim
from pipeline.core.simulate import KEEP_DRAWING_MONTHS, Futures, Intervention, WorldSpec

#: Columns of the advice table this module reads.
ADVICE_COLUMNS = ("borrower_id", "snapshot", "p_before", "p_after", "actions", "changes")
#: Columns of the raw borrowers table compared with the replayed world, and its schema.
RAW_CHECKED = ("signup_month", "income", "initial_line")
RAW_COLUMNS = ("borrower_id", *RAW_CHECKED)
RAW_SCHEMA = sim.SCHEMAS["borrowers"]
#: The arm without any action.
NO_ACTION = Intervention()


class WorldMismatch(PipelineError, ValueError):
    """The world replayed from the config is not the one the advice was given in."""


@dataclass
class Step:
    """One action of a borrower's advice: the arm that carries it out, its cost and changes."""

    action: str
    arm: Intervention
    cost: int
    changes: list[tuple[str, float, float]]


def whole(plan: Sequence[Step]) -> Intervention:
    """The arm carrying out every action of an advice together (no action for none)."""
    k = [s.arm.keep_drawing_months for s in plan if s.action == KEEP_DRAWING]
    return Intervention(tuple(s.action for s in plan), k[0] if k else KEEP_DRAWING_MONTHS)


@dataclass
class WorldAdvice:
    """Per-borrower results (one row per borrower and action) and the summary."""

    rows: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the plan


def steps(
    x: np.ndarray,
    names: Sequence[str],
    actions: str,
    changes: list[tuple[str, float, float]],
    horizon: int,
) -> list[Step]:
    """The world actions of one advice (``actions``: ``lever:cost`` tokens; ``changes``).

    Each lever changes its own features; their changes, each in its direction, name the
    action that carries the lever out (:func:`pipeline.base.actions.actions_for`). A
    lever whose changes name several actions is an error naming the lever. Two levers
    carried out by the same action make one step (their costs add up).
    """
    xd = {n: float(v) for n, v in zip(names, x, strict=True)}
    out: dict[str, Step] = {}
    for token in actions.split():
        lever, _, cost = token.partition(":")
        if lever not in advice_core.LEVERS:
            raise ValueError(f"advice action {token!r}: unknown lever {lever!r}")
        feats = {f for o in advice_core.LEVERS[lever](xd) for f in o.values}
        mine = [c for c in changes if c[0] in feats]
        acts = actions_for(mine)
        if len(acts) != 1:
            raise ValueError(
                f"advice lever {lever!r} is carried out by {len(acts)} world actions "
                f"({', '.join(acts) or 'none'}); it needs exactly one"
            )
        act = acts[0]
        if act in out:
            out[act].cost += int(cost)
            out[act].changes += mine
            continue
        out[act] = Step(act, _arm(act, mine, horizon), int(cost), mine)
    return list(out.values())


def _arm(action: str, changes: list[tuple[str, float, float]], horizon: int) -> Intervention:
    """The arm of an action; ``keep_drawing`` draws in as many months as the advice says."""
    if action != KEEP_DRAWING:
        return Intervention((action,))
    months = [after for f, _, after in changes if f == "draw_months_3"]
    k = int(round(months[0])) if months else KEEP_DRAWING_MONTHS
    return Intervention((action,), int(min(max(k, 1), horizon)))


# --------------------------------------------------------------------------- futures


def run_arms(
    spec: WorldSpec,
    ids: np.ndarray,
    snaps: np.ndarray,
    arms: Sequence[sim.Arm],
    k: int,
    raw: pd.DataFrame | None = None,
) -> list[Futures]:
    """``k`` futures of each account under every arm; the world replayed once per chunk.

    An arm is one intervention for all accounts or one per account
    (:func:`pipeline.core.simulate.futures_arms`); one :class:`Futures` per arm, rows in
    the order asked. ``raw``: the raw borrowers table; the replayed borrowers must match
    it (:data:`RAW_CHECKED`), else :class:`WorldMismatch`.
    """
    ids = np.asarray(ids, dtype=np.int64)
    asked = np.unique(ids)

    def check(borrowers: pa.Table) -> None:
        replayed = borrowers.to_pandas()
        assert raw is not None
        _same_borrowers(replayed, raw, asked[np.isin(asked, replayed.borrower_id.to_numpy())])

    try:
        return sim.futures_arms(
            spec, ids, snaps, arms, int(k), check=None if raw is None else check
        )
    except sim.NotOnBook as exc:
        raise WorldMismatch(
            f"world advice: {exc}; the world replayed from the config is not the one advised?"
        ) from exc


def _same_borrowers(replayed: pd.DataFrame, raw: pd.DataFrame, ids: np.ndarray) -> None:
    """The asked borrowers as replayed must be those of the raw borrowers table."""
    missing = [c for c in ("borrower_id", *RAW_CHECKED) if c not in raw.columns]
    if missing:
        raise ValueError(f"borrowers table: column(s) {', '.join(missing)} missing")
    a = replayed.set_index("borrower_id").reindex(ids)
    b = raw.drop_duplicates("borrower_id").set_index("borrower_id").reindex(ids)
    for c in RAW_CHECKED:
        x, y = a[c].to_numpy(dtype=np.float64), b[c].to_numpy(dtype=np.float64)
        bad = ~np.isclose(x, y, rtol=1e-6, atol=0.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise WorldMismatch(
                f"borrowers table: borrower {int(ids[i])} has {c} = {y[i]:g} but the world "
                f"replayed from the config gives {x[i]:g} (data.* or simulator.* differ from "
                "the run that generated the data)"
            )


# --------------------------------------------------------------------------- the test


def evaluate(
    spec: WorldSpec,
    advice: pd.DataFrame,
    features: pd.DataFrame,
    names: Sequence[str],
    score: Callable[[np.ndarray], np.ndarray],
    n_futures: int,
    max_borrowers: int,
    raw: pd.DataFrame | None = None,
) -> WorldAdvice:
    """Carry out the advice of (at most ``max_borrowers``) advised borrowers in the world.

    ``advice``: the advice table (:data:`ADVICE_COLUMNS`, highest risk first);
    ``features``: the advised rows' features (``borrower_id``, ``snapshot`` and
    ``names``); ``score`` maps feature rows to the model's probability; ``raw``: the
    raw borrowers table, checked against the replayed world (see :func:`run_arms`).
    """
    t0 = time.perf_counter()
    missing = [c for c in ADVICE_COLUMNS if c not in advice.columns]
    if missing:
        raise ValueError(f"advice table: column(s) {', '.join(missing)} missing")
    adv = advice[advice.actions.astype(str).str.len() > 0].head(int(max_borrowers))
    X = _feature_rows(adv, features, names)
    plans = [
        steps(x, names, str(a), [tuple(c) for c in json.loads(ch)], spec.horizon)
        for x, a, ch in zip(X, adv.actions, adv.changes, strict=True)
    ]
    ids, snaps = adv.borrower_id.to_numpy(), adv.snapshot.to_numpy()
    arms = _arms(plans)
    res = run_arms(spec, ids, snaps, arms, int(n_futures), raw) if len(adv) else []
    rows = _rows(adv, X, names, plans, [_Closures.of(f) for f in res], score)
    summary = summarize(rows, len(advice), int(n_futures))
    summary["seconds"] = time.perf_counter() - t0
    return WorldAdvice(rows=rows, summary=summary)


def _feature_rows(adv: pd.DataFrame, features: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """The advised rows' features, in the advice's order."""
    key = ["borrower_id", "snapshot"]
    got = adv[key].merge(features[[*key, *names]], on=key, how="left", validate="one_to_one")
    lost = got[list(names)].isna().all(axis=1)
    if lost.any():
        r = got[lost].iloc[0]
        raise ValueError(
            f"features: no row for advised borrower {int(r.borrower_id)} at snapshot "
            f"{int(r.snapshot)}"
        )
    return got[list(names)].to_numpy(dtype=np.float64)


def _arms(plans: Sequence[Sequence[Step]]) -> list[sim.Arm]:
    """The arms, each borrower its own: no action, the whole advice, then its j-th action
    alone for j = 0, 1, ... (no action where the advice has fewer)."""
    longest = max((len(p) for p in plans), default=0)
    per_step = [[p[j].arm if j < len(p) else NO_ACTION for p in plans] for j in range(longest)]
    return [NO_ACTION, [whole(p) for p in plans], *per_step]


@dataclass
class _Closures:
    """Per account: the share of futures closing, and closing by each cause (n, causes)."""

    p: np.ndarray
    share: np.ndarray

    @classmethod
    def of(cls, f: Futures) -> _Closures:
        return cls(f.p, f.cause_share())

    def after(self, i: int) -> dict[str, float]:
        return {"p_after": float(self.p[i]), **self.shares("after", i)}

    def shares(self, prefix: str, i: int) -> dict[str, float]:
        """Row ``i``'s share of futures closing by each cause, as ``<prefix>_<cause>``."""
        return {f"{prefix}_{c}": float(self.share[i, j]) for j, c in enumerate(CAUSES)}


def _rows(
    adv: pd.DataFrame,
    X: np.ndarray,
    names: Sequence[str],
    plans: list[list[Step]],
    res: list[_Closures],
    score: Callable[[np.ndarray], np.ndarray],
) -> pd.DataFrame:
    """One row per borrower and action of its advice, and one (``action="advice"``) for
    the whole advice carried out; ``res`` holds the arms of :func:`_arms`."""
    col = {n: j for j, n in enumerate(names)}
    recs: list[dict[str, Any]] = []
    changed: list[np.ndarray] = []
    for i, (plan, rec) in enumerate(zip(plans, adv.itertuples(index=False), strict=True)):
        base = {
            "borrower_id": int(rec.borrower_id),
            "snapshot": int(rec.snapshot),
            "n_actions": len(plan),
            "p_before": float(res[0].p[i]),
            "model_p_before": float(rec.p_before),
            **res[0].shares("before", i),
        }
        for j, s in enumerate(plan):
            x = X[i].copy()
            for f, _, after in s.changes:
                x[col[f]] = after
            changed.append(x)
            recs.append(
                {**base, **res[2 + j].after(i), "action": s.action, "arm": s.arm.label}
                | {"cost": s.cost}
            )
        recs.append(
            {**base, **res[1].after(i), "action": "advice", "arm": whole(plan).label}
            | {"cost": sum(s.cost for s in plan), "model_p_after": float(rec.p_after)}
        )
    table = pd.DataFrame(recs)
    if len(changed):
        p = np.asarray(score(np.asarray(changed, dtype=np.float32)), dtype=np.float64)
        per_action = table.action != "advice"
        table.loc[per_action, "model_p_after"] = p
    return table


def summarize(rows: pd.DataFrame, n_advised: int, n_futures: int) -> dict[str, Any]:
    """``advice.world``: whole-advice figures, per action and per cause."""
    carried = rows[rows.action == "advice"] if len(rows) else rows
    out: dict[str, Any] = {
        "n": int(len(carried)),
        "n_advised": int(n_advised),
        "n_tested": int(len(rows[["borrower_id", "snapshot"]].drop_duplicates()))
        if len(rows)
        else 0,
        "n_futures": int(n_futures),
    }
    if "n_actions" in carried:  # advices of several actions, carried out together
        out["n_several"] = int((carried.n_actions > 1).sum())
    if len(carried):
        out.update(_figures(carried))
        out["by_cause"] = {
            c: {
                "before": float(carried[f"before_{c}"].mean()),
                "after": float(carried[f"after_{c}"].mean()),
            }
            for c in CAUSES
        }
    out["by_action"] = {}
    for act, g in rows[rows.action != "advice"].groupby("action", sort=True):
        fig = _figures(g)
        fig["cost"] = float(g.cost.mean())
        if f"after_{CAUSES[0]}" in g:  # the change of each cause's share of closures
            fig["by_cause"] = {
                c: float((g[f"after_{c}"] - g[f"before_{c}"]).mean()) for c in CAUSES
            }
        fig["true_cut_per_cost"] = -fig["true_change"] / max(fig["cost"], 1e-9)
        out["by_action"][str(act)] = fig
    out["ranking"] = sorted(
        out["by_action"], key=lambda a: (-out["by_action"][a]["true_cut_per_cost"], a)
    )
    for key in ("sign_differs", "sign_unclear"):
        out[key] = [a for a in out["ranking"] if out["by_action"][a][key]]
    return out


def _figures(g: pd.DataFrame) -> dict[str, Any]:
    """Mean true and predicted probabilities of a group of rows, and their changes."""
    p0, p1 = float(g.p_before.mean()), float(g.p_after.mean())
    m0, m1 = float(g.model_p_before.mean()), float(g.model_p_after.mean())
    true, model = p1 - p0, m1 - m0
    se = float((g.p_after - g.p_before).std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else np.nan
    # opposite signs count when the world's change is clear of its Monte Carlo noise
    clear = bool(np.isfinite(se) and abs(true) > 2 * se)
    return {
        "n": int(len(g)),
        "p_before": p0,
        "p_after": p1,
        "model_p_before": m0,
        "model_p_after": m1,
        "true_change": true,
        "model_change": model,
        "true_cut": -true / p0 if p0 > 0 else float("nan"),
        "model_gap": float((g.model_p_after - g.p_after).abs().mean()),
        "true_change_se": se,
        "sign_differs": bool(true * model < 0 and clear),
        "sign_unclear": bool(true * model < 0 and not clear),
    }


def headline(w: dict[str, Any]) -> str:
    """One line on the world test: the true cut in closure risk against the model's."""
    if not w.get("n"):
        return "world advice: no advised borrower had an action to carry out"
    differs = ", ".join(w["sign_differs"]) or "none"
    if w.get("sign_unclear"):
        differs += f"; within noise: {', '.join(w['sign_unclear'])}"
    return (
        f"world advice: {w['n']} of {w['n_tested']} advised borrowers carried out their whole "
        f"advice ({w.get('n_several', 0)} of several actions together; {w['n_futures']} "
        f"futures each): true closure risk {w['p_before']:.1%} -> "
        f"{w['p_after']:.1%} (cut {w['true_cut']:.0%}), model after {w['model_p_after']:.1%} "
        f"(mean |model - world| {w['model_gap']:.3f}); best per cost: "
        f"{', '.join(w['ranking'][:3])}; true effect against the model's sign: {differs} "
        f"({w['seconds']:.1f}s)"
    )


def metrics(w: dict[str, Any]) -> dict[str, float]:
    """Flat numeric figures of ``advice.world`` for the tracker."""
    keys = (
        "n",
        "n_tested",
        "n_several",
        "p_before",
        "p_after",
        "model_p_after",
        "true_cut",
        "model_gap",
    )
    out = {f"advice_world_{k}": float(w[k]) for k in keys if k in w}
    for act, fig in w.get("by_action", {}).items():
        out[f"advice_world_{act}_true_change"] = float(fig["true_change"])
        out[f"advice_world_{act}_model_change"] = float(fig["model_change"])
    return out


def borrower_world(
    spec: WorldSpec,
    borrower_id: int,
    snapshot: int,
    x: np.ndarray,
    names: Sequence[str],
    actions: Sequence[str],
    changes: list[tuple[str, float, float]],
    score: Callable[[np.ndarray], np.ndarray],
    n_futures: int,
    raw: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """One borrower's world before and after its advice: whole, and action by action.

    ``actions`` are the advice's ``lever:cost`` tokens and ``changes`` its feature
    changes; with no action, only the world as it goes is told (``whole`` is None). When
    the world replayed from the config is not the raw data's (``raw``, see
    :func:`run_arms`), the story says so (``skipped``) instead.
    """
    plan = steps(np.asarray(x, dtype=np.float64), names, " ".join(actions), changes, spec.horizon)
    arms = list(dict.fromkeys([NO_ACTION, whole(plan), *[s.arm for s in plan]]))
    ids, snaps = np.array([borrower_id]), np.array([snapshot])
    try:
        got = run_arms(spec, ids, snaps, arms, int(n_futures), raw)
    except WorldMismatch as exc:
        return {"borrower_id": int(borrower_id), "snapshot": int(snapshot), "skipped": str(exc)}
    res = {arm: _Closures.of(f) for arm, f in zip(arms, got, strict=True)}
    col = {n: j for j, n in enumerate(names)}

    def told(arm: Intervention, cost: int, moved: list[tuple[str, float, float]]) -> dict[str, Any]:
        xa = np.array(x, dtype=np.float64)
        for f, _, after in moved:
            xa[col[f]] = after
        model_after = float(np.asarray(score(xa[None, :].astype(np.float32)))[0])
        return {"arm": arm.label, "cost": cost, **res[arm].after(0), "model_p_after": model_after}

    rows = [{"action": s.action, **told(s.arm, s.cost, s.changes)} for s in plan]
    all_changes = [c for s in plan for c in s.changes]
    return {
        "borrower_id": int(borrower_id),
        "snapshot": int(snapshot),
        "n_futures": int(n_futures),
        "p_before": float(res[NO_ACTION].p[0]),
        **res[NO_ACTION].shares("before", 0),
        "actions": rows,
        "whole": told(whole(plan), sum(s.cost for s in plan), all_changes) if plan else None,
    }


def story_lines(w: dict[str, Any]) -> list[str]:
    """The borrower's world before and after the advice, as printed lines."""

    def causes(d: dict[str, Any], prefix: str) -> str:
        top = sorted(((d[f"{prefix}_{c}"], c) for c in CAUSES), reverse=True)
        return ", ".join(f"{c} {v:.0%}" for v, c in top if v > 0) or "none"

    if "skipped" in w:
        return [f"in the world / 模拟世界: not told ({w['skipped']})"]
    lines = [
        f"in the world / 模拟世界 ({w['n_futures']} futures from the borrower's state at "
        f"snapshot {w['snapshot']}):",
        f"  without the advice: closes within the horizon in {w['p_before']:.1%} of futures "
        f"(causes: {causes(w, 'before')})",
    ]
    for a in w["actions"]:
        lines.append(
            f"  with {a['arm']}: {a['p_after']:.1%} (causes: {causes(a, 'after')}); "
            f"the model expects {a['model_p_after']:.1%}"
        )
    if len(w["actions"]) > 1 and w.get("whole"):
        a = w["whole"]
        lines.append(
            f"  with the whole advice ({a['arm']}, carried out together): {a['p_after']:.1%} "
            f"(causes: {causes(a, 'after')}); the model expects {a['model_p_after']:.1%}"
        )
    return lines
