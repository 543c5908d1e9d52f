"""Runner of the ``policy`` command: the strategy comparison on simulated outcomes.

Reads the out-of-time rows of ``data/processed/features.parquet``, scores them with
the champion (or local) model, joins the raw future (``account_months`` after each
snapshot, ``platform_events``) and writes under ``models/policy/``: ``frontier.csv``
(strategy x threshold x occupation), ``matched_loss.csv``, ``policy.json`` and
``frontier.png``. Everything is logged to the stage's nested MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from pipeline.adapters.catalog import Catalog, in_key_order
from pipeline.adapters.tracking import Tracker
from pipeline.base.config import Config
from pipeline.base.io import DataError, atomic_path
from pipeline.core import policy as core
from pipeline.stages.common import Result, model_stamp, say, stamped
from pipeline.stages.score import champion_or_local, raw_months

#: out-of-time rows read and scored at a time (their features are dropped once scored)
BLOCK_ROWS = 500_000


def scored_rows(
    cat: Catalog, model: Any, block_rows: int = BLOCK_ROWS, split: str = "oot"
) -> pd.DataFrame:
    """The rows of one split (``oot``: out-of-time) of the feature table, in the file's
    order, with what the comparison uses: keys, occupation, line, tenure and the model's
    probability.

    The rows are read and scored in blocks of borrowers of about ``block_rows`` rows,
    so that the model's features of all of them are never held at once.
    """
    keyed = cat.read("features", [], split=split)
    keys = pd.DataFrame({c: keyed.column(c).to_numpy() for c in ("borrower_id", "snapshot")})
    del keyed
    keep = ["borrower_id", "snapshot", "occupation", "probability", "line", "tenure"]
    if len(keys) == 0:
        return pd.DataFrame({c: [] for c in keep})
    need = list(dict.fromkeys(["occupation", "line", "tenure", *model.names]))
    ids = np.sort(keys.borrower_id.to_numpy())
    cuts = np.unique(ids[:: max(int(block_rows), 1)])
    bounds = [*cuts.tolist(), int(ids[-1]) + 1]
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        block = pc.field("borrower_id") >= lo
        block = block & (pc.field("borrower_id") < hi)
        rows = cat.read("features", need, split=split, where=block).to_pandas()
        rows["probability"] = model.prob(rows[model.names].to_numpy(dtype=np.float32))
        parts.append(rows[keep])
    # back in the file's order
    rows = in_key_order(pd.concat(parts), keys.borrower_id, keys.snapshot)
    return rows.reset_index(drop=True)


@dataclass(frozen=True)
class PolicyResult(Result):
    """The strategy comparison's rows (0 when skipped) and the model it scored with."""

    rows: int = 0
    source: str = ""


def policy(
    cfg: Config, tracker: Tracker, source: str | None = None, in_run: bool = False
) -> PolicyResult:
    """``source`` overrides ``score.model_source`` (``run`` uses its own, local model).

    ``in_run``: part of ``run``, where a world without out-of-time rows (no
    ``features.oot_snapshots``) skips the comparison instead of failing the run.
    """
    p = Catalog.of(cfg)
    po = cfg.policy
    m = core.Money.of(po)
    model = champion_or_local(cfg, tracker, source)
    if model.mode != "simulator":
        raise DataError(f"{model.source}: the policy simulation needs a simulator-mode model")
    feat_path = p.path("features")
    rows = scored_rows(p, model)
    if len(rows) == 0:
        if in_run:
            say(f"policy: {feat_path} has no out-of-time rows; the comparison is skipped")
            return PolicyResult(skipped=True, source=model.source)
        raise DataError(f"{feat_path}: column 'split' has no 'oot' rows to simulate on")
    n_months = raw_months(p.raw)
    valid = scored_rows(p, model, split="valid")
    # the future of the rows only: the months from the earliest snapshot on
    first = int(min(rows.snapshot.min(), valid.snapshot.min() if len(valid) else 10**9))
    later = pc.field("month") >= first
    am = p.read(
        "account_months",
        ["borrower_id", "month", "balance", "interest_paid", "dpd"],
        where=later,
        n_months=n_months,
    ).to_pandas(split_blocks=True, self_destruct=True)
    ev = p.read(
        "platform_events",
        ["borrower_id", "month", "event", "cause"],
        where=later,
        n_months=n_months,
    ).to_pandas(split_blocks=True, self_destruct=True)
    keep = ["borrower_id", "snapshot", "occupation", "probability", "line", "tenure"]
    out = core.outcomes(rows, am, ev, int(po.horizon), first_month=first)
    frame = pd.concat([rows[keep], out], axis=1)
    thresholds = sorted(float(t) for t in po.thresholds)
    front = core.frontier(frame, thresholds, m)
    matched = core.matched_loss(front)
    # the tiered settings tuned on the validation rows, judged on the out-of-time ones
    choices = _tuned(po, m, valid[keep], am, ev, first, thresholds)
    del am, ev
    judged = core.verdict(frame, choices, m, int(po.bootstrap), int(cfg.data.seed))
    front = pd.concat([front, core.tuned_frontier(frame, choices, m)], ignore_index=True)
    sentence = core.verdict_sentence(judged)

    out_dir = p.path("policy_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    front_path = p.write("policy_frontier", front)
    matched_path = p.write("policy_matched", matched)
    plot = _plot(front, p.path("policy_plot"))
    allf = front[front.segment == "all"]
    refs = {s: allf[allf.strategy == s].iloc[0].to_dict() for s in ("none", "platform")}
    summary = {
        "rows": int(len(frame)),
        "source": model.source,
        "horizon": int(po.horizon),
        "assumptions": {k: getattr(m, k) for k in m.__dataclass_fields__},
        "none": {k: refs["none"][k] for k in ("revenue", "loss", "overdue")},
        "platform": {k: refs["platform"][k] for k in ("closures", "good_hit", "revenue", "loss")},
        "matched_loss": matched.replace({np.nan: None}).to_dict(orient="records"),
        "verdict": judged["verdict"],
        "verdict_se": judged["se"],
        "verdict_sentence": sentence,
        "tuned": {
            k: judged.get(k)
            for k in ("levels", "rows", "borrowers", "replicates", "cut_harm", "levels_compared")
        },
        "valid_rows": int(len(valid)),
    }
    json_path = p.write("policy_summary", stamped(summary, model_stamp(p.models)))

    metrics: dict[str, float] = {"rows": float(len(frame))}
    for _, r in allf.iterrows():
        key = r.strategy if not np.isfinite(r.threshold) else f"{r.strategy}.t{r.threshold:g}"
        for k in ("closures", "reductions", "raises", "good_hit", "good_closed", "revenue", "loss"):
            metrics[f"{key}.{k}"] = float(r[k])
    for _, r in matched.iterrows():
        for k in ("good_hit_saved", "revenue_gained"):
            metrics[f"matched.t{r.threshold_close:g}.{k}"] = float(r[k])
    tracker.log_metrics(metrics)
    tracker.set_tags({"model_source": model.source})
    for a in (front_path, matched_path, json_path, plot):
        tracker.log_artifact(a, "policy")
    _report(matched, refs, len(frame), out_dir)
    say(sentence)
    part = {k: summary[k] for k in ("rows", "source", "horizon", "verdict", "verdict_se")}
    return PolicyResult(
        summary={"policy": {**part, "verdict_sentence": sentence}},
        rows=int(len(frame)),
        source=model.source,
    )


def _tuned(
    po: Any,
    m: core.Money,
    valid: pd.DataFrame,
    am: pd.DataFrame,
    ev: pd.DataFrame,
    first: int,
    thresholds: list[float],
) -> list[core.Choice]:
    """The tiered settings chosen on the validation rows, one per closing loss level
    (none when there are no validation rows: the verdict is then undecided)."""
    if len(valid) == 0:
        say("policy: no validation rows to tune the tiered strategy on; no verdict")
        return []
    grid = core.Grid(
        tuple(float(v) for v in po.tune_reduce_factor),
        tuple(float(v) for v in po.tune_medium_ratio),
        tuple(float(v) for v in po.tune_raise_max_prob),
    )
    out = core.outcomes(valid, am, ev, int(po.horizon), first_month=first)
    return core.tune(pd.concat([valid, out], axis=1), thresholds, m, grid)


def _report(matched: pd.DataFrame, refs: dict[str, Any], n: int, out_dir: Path) -> None:
    def num(v: float, width: int) -> str:
        return f"{v:{width},.0f}" if np.isfinite(v) else f"{'-':>{width}}"

    lines = [
        f"policy: {n:,} out-of-time rows; no action: revenue {refs['none']['revenue']:,.0f}, "
        f"loss {refs['none']['loss']:,.0f}; platform closed {refs['platform']['closures']:,.0f} "
        f"({refs['platform']['good_hit']:,.0f} never went overdue)",
        "  closing every account above a threshold, against the tiered strategy at the same",
        "  loss ('good hit': never-overdue accounts closed or cut; 'good closed': of those,",
        "  closed; '-': the tiered strategy cannot reach that loss)",
        f"  {'close above the threshold':^42} | {'tiered strategy, same loss':^40}",
        f"  {'threshold':>9} {'loss':>11} {'good hit':>9} {'revenue':>11} | "
        f"{'good hit':>9} {'good closed':>12} {'revenue':>17}",
    ]
    for _, r in matched.iterrows():
        lines.append(
            f"  {r.threshold_close:9.3f} {num(r.loss, 11)} {num(r.close_good_hit, 9)} "
            f"{num(r.close_revenue, 11)} | {num(r.tiered_good_hit, 9)} "
            f"{num(r.tiered_good_closed, 12)} {num(r.tiered_revenue, 17)}"
        )
    lines.append(f"  -> {out_dir}")
    say("\n".join(lines))


def _plot(front: pd.DataFrame, path: Path) -> Path:
    import matplotlib  # matplotlib: loaded only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: loaded only when a plot is drawn

    f = front[front.segment == "all"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for s, style in (("close", "o-"), ("tiered", "s-"), ("tiered_tuned", "d--")):
        g = f[f.strategy == s].sort_values("loss" if s == "tiered_tuned" else "threshold")
        if len(g) == 0:
            continue
        ax1.plot(g.good_hit, g.loss, style, label=s)
        ax2.plot(g.loss, g.revenue, style, label=s)
    for s, mk in (("none", "k*"), ("platform", "rx")):
        g = f[f.strategy == s]
        ax1.plot(g.good_hit, g.loss, mk, markersize=10, label=s)
        ax2.plot(g.loss, g.revenue, mk, markersize=10, label=s)
    ax1.set_xlabel("good customers wrongly hit (closed or cut, never overdue)")
    ax1.set_ylabel("losses (LGD x exposure)")
    ax2.set_xlabel("losses (LGD x exposure)")
    ax2.set_ylabel("interest revenue")
    ax1.set_title("losses vs good customers hit")
    ax2.set_title("revenue vs losses")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
