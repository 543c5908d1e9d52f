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
  advice promised, an edited row); per action, after that action's feature changes alone;
* ``model_p_after_recomputed``: the model's probability at the next snapshot, from the
  features the feature code computes on each future's own raw traces (the advised
  borrower's recorded history, then the simulated months), averaged over the futures
  still on book and never overdue then; ``model_p_before_recomputed`` the same without
  the advice (the yardstick of this view);
* the whole bill of every arm: ``total_*`` (closure for any cause, overdue included),
  ``overdue_*`` (overdue closures), ``interest_*`` (interest the borrower pays over the
  horizon while open, which is the platform's revenue), ``loss_*`` (balance written off
  at an overdue closure: the platform's loss) and ``drawn_*`` (money drawn).

Per action, the kind of effect is read from the per-cause changes (:func:`kind`): an
action that cuts closures without raising overdue lowers the borrower's underlying risk;
one that cuts a monitoring trigger's closures while overdue rises avoids a trigger.

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

from pipeline.base.actions import FEATURE_ACTIONS, KEEP_DRAWING, MODERATE, ROUTE, actions_for
from pipeline.base.causes import CAUSES
from pipeline.base.errors import PipelineError
from pipeline.core import advice as advice_core
from pipeline.core import features as feat_core
from pipeline.core import simulate as sim
from pipeline.core.simulate import KEEP_DRAWING_MONTHS, Futures, Intervention, WorldSpec

#: Columns of the advice table this module reads (``draw_size`` where it has one).
ADVICE_COLUMNS = ("borrower_id", "snapshot", "p_before", "p_after", "actions", "changes")
#: The raw tables a future's features are computed from (its history, then its trace).
TRACE_TABLES = (
    "account_months",
    "fund_flows",
    "bureau_months",
    "consumption_months",
    "platform_events",
)
#: The figures of an arm's bill, per borrower: name -> what it is.
BILL = {
    "p": "never-overdue closure probability (the label's event)",
    "overdue": "overdue closure probability",
    "total": "closure probability, any cause",
    "interest": "interest the borrower pays over the horizon (the platform's revenue)",
    "loss": "balance written off at an overdue closure (the platform's expected loss)",
    "drawn": "money drawn over the horizon",
}
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
    kd = [s.arm for s in plan if s.action == KEEP_DRAWING]
    k = kd[0].keep_drawing_months if kd else KEEP_DRAWING_MONTHS
    size = kd[0].draw_size if kd else float("inf")
    mu = [s.arm.util_cap for s in plan if s.action == MODERATE]
    rt = [s.arm.route_share for s in plan if s.action == ROUTE]
    return Intervention(
        tuple(s.action for s in plan), k, size, mu[0] if mu else 0.5, rt[0] if rt else 0.0
    )


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
    draw_size: float = float("nan"),
) -> list[Step]:
    """The world actions of one advice (``actions``: ``action:cost`` tokens; ``changes``).

    Each action changes its own features; their changes, each in its direction, must
    name that action (:func:`pipeline.base.actions.actions_for`), else an error naming
    it. ``draw_size``: the advised draw of ``keep_drawing``, carried out as said.
    """
    xd = {n: float(v) for n, v in zip(names, x, strict=True)}
    xd[advice_core.DRAW_SIZE] = float(draw_size)
    out: dict[str, Step] = {}
    for token in actions.split():
        lever, _, cost = token.partition(":")
        if lever not in advice_core.LEVERS:
            raise ValueError(f"advice action {token!r}: unknown lever {lever!r}")
        if lever == KEEP_DRAWING and not (np.isfinite(draw_size) and draw_size > 0):
            raise ValueError("advice action 'keep_drawing' has no advised draw size")
        feats = {f for o in advice_core.LEVERS[lever](xd) for f in o.values}
        # two actions may move the same feature (more draws, or fewer): a change is this
        # action's when it moves the feature this action's way
        mine = [c for c in changes if c[0] in feats and _moves_for(c, lever)]
        acts = actions_for(mine)
        if list(acts) != [lever]:
            raise ValueError(
                f"advice action {lever!r}: its feature changes are carried out by "
                f"{', '.join(acts) or 'no action'} in the world; they must be {lever!r} alone"
            )
        if lever in out:
            out[lever].cost += int(cost)
            out[lever].changes += mine
            continue
        out[lever] = Step(lever, _arm(lever, mine, horizon, draw_size), int(cost), mine)
    return list(out.values())


def _moves_for(change: tuple[str, float, float], action: str) -> bool:
    """Whether ``action`` carries out ``change`` (changes of features no action sets,
    the traces that follow, go with every action that names the feature)."""
    name, before, after = change
    if name not in FEATURE_ACTIONS:
        return True
    return FEATURE_ACTIONS[name].toward(float(after) - float(before)) == action


def _arm(
    action: str, changes: list[tuple[str, float, float]], horizon: int, size: float
) -> Intervention:
    """The arm of an action; ``keep_drawing`` draws the advised amount in as many months
    as the advice says."""
    if action == MODERATE:  # the utilisation the advice names, where it names one
        util = [after for f, _, after in changes if f == "util_mean_3"]
        return Intervention((action,), util_cap=float(util[0]) if util else 0.5)
    if action == ROUTE:  # the share the advice still allows away from consumption
        share = [after for f, _, after in changes if f == "misuse_share_k"]
        return Intervention((action,), route_share=float(share[0]) if share else 0.0)
    if action != KEEP_DRAWING:
        return Intervention((action,))
    if not np.isfinite(size) or size <= 0:
        raise ValueError("advice action 'keep_drawing' has no advised draw size")
    months = [after for f, _, after in changes if f == "draw_months_3"]
    k = int(round(months[0])) if months else KEEP_DRAWING_MONTHS
    return Intervention((action,), int(min(max(k, 1), horizon)), float(size))


# --------------------------------------------------------------------------- futures


def run_arms(
    spec: WorldSpec,
    ids: np.ndarray,
    snaps: np.ndarray,
    arms: Sequence[sim.Arm],
    k: int,
    raw: pd.DataFrame | None = None,
    trace_months: int = 0,
    traced: Sequence[int] = (),
    n_jobs: int = 1,
) -> list[Futures]:
    """``k`` futures of each account under every arm; the world replayed once per chunk.

    An arm is one intervention for all accounts or one per account
    (:func:`pipeline.core.simulate.futures_arms`); one :class:`Futures` per arm, rows in
    the order asked. ``raw``: the raw borrowers table; the replayed borrowers must match
    it (:data:`RAW_CHECKED`), else :class:`WorldMismatch`. ``trace_months`` and
    ``traced``: the arms whose first months are recorded as raw tables. ``n_jobs`` > 1
    spreads the chunks over processes; a chunk's accounts stay together, so the futures
    are the same whatever ``n_jobs``.
    """
    ids = np.asarray(ids, dtype=np.int64)
    snaps = np.asarray(snaps, dtype=np.int64)
    chunk = ids // spec.sim.chunk_size
    groups = [g for g in np.array_split(np.unique(chunk), max(1, int(n_jobs))) if len(g)]
    if len(groups) > 1:
        import concurrent.futures as cf

        parts = [np.flatnonzero(np.isin(chunk, g)) for g in groups]
        with cf.ProcessPoolExecutor(max_workers=len(parts)) as ex:
            jobs = [
                ex.submit(
                    run_arms,
                    spec,
                    ids[at],
                    snaps[at],
                    [_subset(a, at) for a in arms],
                    k,
                    raw,
                    trace_months,
                    traced,
                )
                for at in parts
            ]
            got = [j.result() for j in jobs]
        return [_merged([g[a] for g in got], parts, len(ids), k) for a in range(len(arms))]
    asked = np.unique(ids)

    def check(borrowers: pa.Table) -> None:
        replayed = borrowers.to_pandas()
        assert raw is not None
        _same_borrowers(replayed, raw, asked[np.isin(asked, replayed.borrower_id.to_numpy())])

    try:
        return sim.futures_arms(
            spec,
            ids,
            snaps,
            arms,
            int(k),
            check=None if raw is None else check,
            trace_months=int(trace_months),
            traced=tuple(traced),
        )
    except sim.NotOnBook as exc:
        raise WorldMismatch(
            f"world advice: {exc}; the world replayed from the config is not the one advised?"
        ) from exc


def _subset(arm: sim.Arm, at: np.ndarray) -> sim.Arm:
    """An arm over the asked positions ``at`` only."""
    if isinstance(arm, Intervention):
        return arm
    each = list(arm)
    return [each[int(i)] for i in at]


def _merged(pieces: list[Futures], parts: list[np.ndarray], n: int, k: int) -> Futures:
    """One arm's futures from the pieces run apart (``parts``: their asked positions)."""
    first = pieces[0]
    fields = {}
    for name in ("borrower_id", "snapshot", *sim._PER_FUTURE):
        proto = getattr(first, name)
        arr = np.zeros((n, *proto.shape[1:]), dtype=proto.dtype)
        for f, at in zip(pieces, parts, strict=True):
            arr[at] = getattr(f, name)
        fields[name] = arr
    arm: Any = first.arm
    if not isinstance(arm, Intervention):
        each: list[Intervention] = [NO_ACTION] * n
        for f, at in zip(pieces, parts, strict=True):
            assert not isinstance(f.arm, Intervention)
            for i, iv in zip(at, f.arm, strict=True):
                each[int(i)] = iv
        arm = tuple(each)
    traces = None
    if first.traces is not None:
        traces = {}
        for name in first.traces:
            renamed = []
            for f, at in zip(pieces, parts, strict=True):
                assert f.traces is not None
                t = f.traces[name]
                local = t.column("borrower_id").to_numpy()
                new = at[local // k] * k + local % k
                col = t.schema.get_field_index("borrower_id")
                renamed.append(
                    t.set_column(col, "borrower_id", pa.array(new).cast(t.schema.field(col).type))
                )
            traces[name] = pa.concat_tables(renamed).sort_by(
                [("borrower_id", "ascending"), ("month", "ascending")]
            )
    return Futures(arm=arm, traces=traces, **fields)


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
    history: dict[str, pa.Table] | None = None,
    feature_spec: feat_core.FeatureSpec | None = None,
    next_months: int = 0,
    n_jobs: int = 1,
) -> WorldAdvice:
    """Carry out the advice of (at most ``max_borrowers``) advised borrowers in the world.

    ``advice``: the advice table (:data:`ADVICE_COLUMNS`, highest risk first);
    ``features``: the advised rows' features (``borrower_id``, ``snapshot`` and
    ``names``); ``score`` maps feature rows to the model's probability; ``raw``: the
    raw borrowers table, checked against the replayed world (see :func:`run_arms`).
    With ``history`` (the raw tables of the advised borrowers, ``borrowers`` and
    :data:`TRACE_TABLES`), ``feature_spec`` and ``next_months`` > 0, the model's view is
    also recomputed from every future's traces at ``snapshot + next_months``
    (:func:`recomputed`).
    """
    t0 = time.perf_counter()
    missing = [c for c in ADVICE_COLUMNS if c not in advice.columns]
    if missing:
        raise ValueError(f"advice table: column(s) {', '.join(missing)} missing")
    adv = advice[advice.actions.astype(str).str.len() > 0].head(int(max_borrowers))
    X = _feature_rows(adv, features, names)
    sizes = (
        adv.draw_size.to_numpy(dtype=np.float64)
        if "draw_size" in adv
        else np.full(len(adv), np.nan)
    )
    plans = [
        steps(x, names, str(a), [tuple(c) for c in json.loads(ch)], spec.horizon, float(d))
        for x, a, ch, d in zip(X, adv.actions, adv.changes, sizes, strict=True)
    ]
    ids, snaps = adv.borrower_id.to_numpy(), adv.snapshot.to_numpy()
    arms = _arms(plans)
    view = history is not None and feature_spec is not None and next_months > 0
    res = (
        run_arms(
            spec, ids, snaps, arms, int(n_futures), raw, next_months if view else 0, (0, 1), n_jobs
        )
        if len(adv)
        else []
    )
    rows = _rows(adv, X, names, plans, [_Closures.of(f) for f in res], score)
    t_view = time.perf_counter()
    if view and len(adv):
        assert history is not None and feature_spec is not None
        for arm, col in ((0, "model_p_before_recomputed"), (1, "model_p_after_recomputed")):
            p, share = recomputed(
                spec, feature_spec, history, res[arm], X, names, score, next_months
            )
            keys = zip(ids.tolist(), snaps.tolist(), strict=True)
            per = dict(zip(keys, zip(p, share, strict=True), strict=True))
            key = list(zip(rows.borrower_id, rows.snapshot, strict=True))
            rows[col] = [per[k][0] for k in key]
            rows[col.replace("model_p", "scored_share")] = [per[k][1] for k in key]
    summary = summarize(rows, len(advice), int(n_futures))
    summary["next_months"] = int(next_months) if view else 0
    summary["seconds"] = time.perf_counter() - t0
    summary["seconds_recomputed"] = time.perf_counter() - t_view
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


# --------------------------------------------------------------------------- the model's view


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``lo[0] .. hi[0] - 1``, then ``lo[1] .. hi[1] - 1``, and so on, end to end."""
    n = hi - lo
    return np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n - lo, n)


def _per_future(table: pa.Table, ids: np.ndarray, snaps: np.ndarray | None, k: int) -> pa.Table:
    """The asked borrowers' rows (months up to their snapshot), once per future: future j
    of asked position i is borrower i * k + j."""
    b = table.column("borrower_id").to_numpy()
    order = np.argsort(b, kind="stable")
    sb = b[order]
    ids = np.asarray(ids, dtype=np.int64)
    lo, hi = np.searchsorted(sb, ids), np.searchsorted(sb, ids + 1)
    r = order[_ranges(lo, hi)]  # each position's rows, in the table's order
    i = np.repeat(np.arange(len(ids)), hi - lo)
    if snaps is not None:
        keep = table.column("month").to_numpy()[r] <= np.asarray(snaps)[i]
        r, i = r[keep], i[keep]
    counts = np.bincount(i, minlength=len(ids))
    starts = np.cumsum(counts) - counts
    # each position's rows k times over, future j of position i named i * k + j
    first = np.repeat(starts, k)
    idx = r[_ranges(first, first + np.repeat(counts, k))]
    new = np.repeat(np.arange(len(ids) * k), np.repeat(counts, k))
    out = table.take(pa.array(idx, type=pa.int64()))
    col = table.schema.get_field_index("borrower_id")
    return out.set_column(col, "borrower_id", pa.array(new).cast(table.schema.field(col).type))


def recomputed(
    spec: WorldSpec,
    fspec: feat_core.FeatureSpec,
    history: dict[str, pa.Table],
    fut: Futures,
    X: np.ndarray,
    names: Sequence[str],
    score: Callable[[np.ndarray], np.ndarray],
    months: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The model's probability at ``snapshot + months`` from each future's own traces.

    Every future is a borrower of its own: the advised borrower's recorded history up to
    its snapshot, then the future's simulated months (:attr:`Futures.traces`); the
    feature code (:func:`pipeline.core.features.block_features`) computes its features
    at the next snapshot, and the model scores them. Futures closed or overdue by then
    have no row (the model scores never-overdue accounts on book); the social features,
    which need the whole book, are kept from the advised row. Returns per asked row the
    mean over its scored futures (nan when none is) and the share of futures scored.
    """
    if fut.traces is None:
        raise ValueError("world advice: the futures carry no traces to compute features from")
    ids, snaps = fut.borrower_id, fut.snapshot.astype(np.int64)
    n, k = fut.closed.shape
    raw: dict[str, pa.Table] = {
        "borrowers": _per_future(history["borrowers"], ids, None, k),
        "macro_months": sim.macro_table(spec),
    }
    for name in TRACE_TABLES:
        past = _per_future(history[name], ids, snaps, k)
        now = fut.traces[name].cast(past.schema) if name in fut.traces else past.slice(0, 0)
        raw[name] = pa.concat_tables([past, now])
    target = snaps + int(months)
    months_total = max(int(spec.n_months), int(target.max()) + 1)
    one = feat_core.FeatureSpec(
        snapshots=tuple(sorted(set(int(v) for v in target))),
        horizon=fspec.horizon,
        valid_snapshots=(),
        oot_snapshots=(),
        fund_days=fspec.fund_days,
        small_draw_ratio=fspec.small_draw_ratio,
        never_overdue_only=fspec.never_overdue_only,
    )
    cols, _ = feat_core.block_features(raw, 0, n * k, months_total, one)
    who = np.asarray(cols["borrower_id"], dtype=np.int64)
    pos = who // k
    keep = np.asarray(cols["snapshot"], dtype=np.int64) == target[pos]
    F = np.empty((int(keep.sum()), len(names)), dtype=np.float64)
    social = set(feat_core.SOCIAL_FEATURES)
    for j, name in enumerate(names):
        if name in cols and name not in social:
            F[:, j] = np.asarray(cols[name], dtype=np.float64)[keep]
        else:  # not computed from one borrower's traces: the advised row's value
            F[:, j] = X[pos[keep], j]
    p = np.asarray(score(F.astype(np.float32)), dtype=np.float64) if len(F) else np.zeros(0)
    got = np.bincount(pos[keep], minlength=n).astype(np.float64)
    total = np.bincount(pos[keep], weights=p, minlength=n)
    mean = np.divide(total, got, out=np.full(n, np.nan), where=got > 0)
    return mean, got / k


@dataclass
class _Closures:
    """Per account: the bill (:data:`BILL`, each (n,)) and the share closing by each cause."""

    bill: dict[str, np.ndarray]
    share: np.ndarray

    @classmethod
    def of(cls, f: Futures) -> _Closures:
        cause = f.cause
        bill = {
            "p": f.p,
            "overdue": sim._wmean(cause == sim.CAUSE_OVERDUE, f.weight),
            "total": sim._wmean(cause >= 0, f.weight),
            "interest": sim._wmean(f.interest, f.weight),
            "loss": sim._wmean(f.loss, f.weight),
            "drawn": sim._wmean(f.draw_amount.sum(axis=2), f.weight),
        }
        return cls(bill, f.cause_share())

    @property
    def p(self) -> np.ndarray:
        return self.bill["p"]

    def after(self, i: int) -> dict[str, float]:
        return {**self.figures("after", i), **self.shares("after", i)}

    def figures(self, prefix: str, i: int) -> dict[str, float]:
        """Row ``i``'s bill: ``p_<prefix>`` and ``<figure>_<prefix>``."""
        return {
            ("p_" + prefix if name == "p" else f"{name}_{prefix}"): float(v[i])
            for name, v in self.bill.items()
        }

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
            **res[0].figures("before", i),
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


#: The summary's bill keys: (before column, after column) per figure.
_BILL_KEYS = {
    "total": ("total_before", "total_after"),
    "overdue": ("overdue_before", "overdue_after"),
    "interest": ("interest_before", "interest_after"),
    "loss": ("loss_before", "loss_after"),
    "drawn": ("drawn_before", "drawn_after"),
}


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
        for col in ("model_p_before_recomputed", "model_p_after_recomputed"):
            if col in carried:
                v = carried[col].to_numpy(dtype=np.float64)
                ok = np.isfinite(v)
                out[col] = float(v[ok].mean()) if ok.any() else float("nan")
                out[col + "_n"] = int(ok.sum())
                out[col + "_se"] = _se(v[ok])
                share = col.replace("model_p", "scored_share")
                out[share] = float(carried[share].mean())
        if "model_p_after_recomputed" in out:
            ok = np.isfinite(carried.model_p_after_recomputed.to_numpy(dtype=np.float64))
            # the world on the same rows as the recomputed view, and the gap paired per
            # borrower (model view minus world, both from the same futures)
            out["p_after_on_recomputed_rows"] = float(carried.p_after[ok].mean())
            gap = (
                carried.model_p_after_recomputed.to_numpy(dtype=np.float64)[ok]
                - carried.p_after.to_numpy(dtype=np.float64)[ok]
            )
            out["model_p_after_recomputed_gap"] = float(gap.mean()) if ok.any() else float("nan")
            out["model_p_after_recomputed_gap_se"] = _se(gap)
    out["by_action"] = {}
    for act, g in rows[rows.action != "advice"].groupby("action", sort=True):
        fig = _figures(g)
        fig["cost"] = float(g.cost.mean())
        if f"after_{CAUSES[0]}" in g:  # the change of each cause's share of closures
            fig["by_cause"] = {
                c: float((g[f"after_{c}"] - g[f"before_{c}"]).mean()) for c in CAUSES
            }
        fig["true_cut_per_cost"] = -fig["true_change"] / max(fig["cost"], 1e-9)
        fig["kind"] = kind(fig)
        out["by_action"][str(act)] = fig
    out["ranking"] = sorted(
        out["by_action"], key=lambda a: (-out["by_action"][a]["true_cut_per_cost"], a)
    )
    for key in ("sign_differs", "sign_unclear"):
        out[key] = [a for a in out["ranking"] if out["by_action"][a][key]]
    return out


def _se(v: np.ndarray) -> float:
    return float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def kind(fig: dict[str, Any]) -> str:
    """What an action does, from its bill: ``lowers risk`` when closures for any cause
    fall clear of noise and overdue closures do not rise clear of noise; ``avoids a
    trigger`` when never-overdue (monitoring) closures fall while overdue closures
    rise clear of noise, or total closures do not fall; ``no clear effect`` otherwise."""
    od_up = fig.get("overdue_change", 0.0) > 2 * fig.get("overdue_change_se", np.inf)
    total_down = fig.get("total_change", 0.0) < -2 * fig.get("total_change_se", np.inf)
    p_down = fig["true_change"] < -2 * fig["true_change_se"]
    if total_down and not od_up:
        return "lowers risk"
    if p_down:
        return "avoids a trigger"
    return "no clear effect"


def _figures(g: pd.DataFrame) -> dict[str, Any]:
    """Mean true and predicted probabilities of a group of rows, their changes, the bill."""
    p0, p1 = float(g.p_before.mean()), float(g.p_after.mean())
    m0, m1 = float(g.model_p_before.mean()), float(g.model_p_after.mean())
    true, model = p1 - p0, m1 - m0
    se = _se((g.p_after - g.p_before).to_numpy(dtype=np.float64))
    # opposite signs count when the world's change is clear of its Monte Carlo noise
    clear = bool(np.isfinite(se) and abs(true) > 2 * se)
    out = {
        "n": int(len(g)),
        "p_before": p0,
        "p_after": p1,
        "p_before_se": _se(g.p_before.to_numpy(dtype=np.float64)),
        "p_after_se": _se(g.p_after.to_numpy(dtype=np.float64)),
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
    for name, (b, a) in _BILL_KEYS.items():
        if b not in g or a not in g:
            continue
        vb, va = g[b].to_numpy(dtype=np.float64), g[a].to_numpy(dtype=np.float64)
        out[b], out[a] = float(vb.mean()), float(va.mean())
        out[f"{name}_change"] = float((va - vb).mean())
        out[f"{name}_change_se"] = _se(va - vb)
    if "interest_after" in out:
        out["interest_paid"] = out["interest_after"]  # what the borrower pays under the arm
        out["revenue_before"], out["revenue_after"] = out["interest_before"], out["interest_after"]
    return out


def headline(w: dict[str, Any]) -> str:
    """One line on the world test: the true cut in closure risk against the model's."""
    if not w.get("n"):
        return "world advice: no advised borrower had an action to carry out"
    differs = ", ".join(w["sign_differs"]) or "none"
    if w.get("sign_unclear"):
        differs += f"; within noise: {', '.join(w['sign_unclear'])}"
    recomputed, nan = "", float("nan")
    if "model_p_after_recomputed" in w:
        recomputed = (
            f", recomputed from the futures' traces {w['model_p_after_recomputed']:.1%} "
            f"(+/- {w['model_p_after_recomputed_se']:.1%}, "
            f"{w['model_p_after_recomputed_n']} borrowers, {w.get('next_months', 0)} "
            f"month(s) on; against the world {w.get('model_p_after_recomputed_gap', nan):+.1%} "
            f"+/- {w.get('model_p_after_recomputed_gap_se', nan):.1%}; without the advice "
            f"{w['model_p_before_recomputed']:.1%})"
        )
    return (
        f"world advice: {w['n']} of {w['n_tested']} advised borrowers carried out their whole "
        f"advice ({w.get('n_several', 0)} of several actions together; {w['n_futures']} "
        f"futures each): closures for any cause {w['total_before']:.1%} -> "
        f"{w['total_after']:.1%} (+/- {w['total_change_se']:.1%}), of which overdue "
        f"{w['overdue_before']:.2%} -> {w['overdue_after']:.2%} (+/- "
        f"{w['overdue_change_se']:.2%}); never-overdue closures {w['p_before']:.1%} -> "
        f"{w['p_after']:.1%} (+/- {w['true_change_se']:.1%}); interest paid "
        f"{w['interest_before']:,.0f} -> {w['interest_after']:,.0f} yuan per borrower; "
        f"model after (edited row) {w['model_p_after']:.1%}{recomputed}; best per cost: "
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
        "total_before",
        "total_after",
        "overdue_before",
        "overdue_after",
        "interest_paid",
        "model_p_after_recomputed",
        "model_p_after_recomputed_gap",
        "model_p_after_recomputed_gap_se",
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
    draw_size: float = float("nan"),
) -> dict[str, Any]:
    """One borrower's world before and after its advice: whole, and action by action.

    ``actions`` are the advice's ``lever:cost`` tokens and ``changes`` its feature
    changes; with no action, only the world as it goes is told (``whole`` is None). When
    the world replayed from the config is not the raw data's (``raw``, see
    :func:`run_arms`), the story says so (``skipped``) instead.
    """
    plan = steps(
        np.asarray(x, dtype=np.float64),
        names,
        " ".join(actions),
        changes,
        spec.horizon,
        draw_size,
    )
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
        **res[NO_ACTION].figures("before", 0),
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
        f"(causes: {causes(w, 'before')}), overdue in {w['overdue_before']:.1%}; interest paid "
        f"{w['interest_before']:,.0f} yuan",
    ]
    for a in w["actions"]:
        lines.append(
            f"  with {a['arm']}: {a['p_after']:.1%} (causes: {causes(a, 'after')}), overdue "
            f"{a['overdue_after']:.1%}, interest {a['interest_after']:,.0f} yuan; the model "
            f"expects {a['model_p_after']:.1%}"
        )
    if len(w["actions"]) > 1 and w.get("whole"):
        a = w["whole"]
        lines.append(
            f"  with the whole advice ({a['arm']}, carried out together): {a['p_after']:.1%} "
            f"(causes: {causes(a, 'after')}), overdue {a['overdue_after']:.1%}, interest "
            f"{a['interest_after']:,.0f} yuan; the model expects {a['model_p_after']:.1%}"
        )
    return lines
