"""Runner of the ``generate`` stage: simulate the world, write raw and truth tables."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
from omegaconf import OmegaConf

from pipeline.adapters import distributed
from pipeline.adapters.catalog import RAW, TRUTH, Catalog
from pipeline.adapters.tracking import Tracker
from pipeline.base.causes import ALL_CAUSES, OVERDUE
from pipeline.base.config import as_simulator, generation_jobs
from pipeline.base.io import atomic_path
from pipeline.base.progress import progress
from pipeline.core import book as book_core
from pipeline.core import simulate as sim_core
from pipeline.stages.common import Result, say, up_to_date, write_manifest


def world_spec(cfg: Any) -> sim_core.WorldSpec:
    sim = as_simulator(cfg.simulator)
    return sim_core.WorldSpec(
        n_borrowers=sim_core.world_size(int(cfg.data.n_borrowers), sim, int(cfg.data.n_months)),
        n_months=int(cfg.data.n_months),
        seed=int(cfg.data.seed),
        sim=sim,
        oracle_snapshots=tuple(int(s) for s in cfg.features.oot_snapshots),
        horizon=int(cfg.features.horizon),
    )


@dataclass(frozen=True)
class GenerateResult(Result):
    """Rows written per table and the seconds the simulation took; ``oracle_seconds``
    is the part of them the oracle's Monte Carlo futures took (summed over workers)."""

    seconds: float = 0.0
    oracle_seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


def generate(cfg: Any, tracker: Tracker) -> GenerateResult:
    if cfg.data.kind != "simulator":
        say("generate: data.kind=table, nothing to simulate")
        return GenerateResult()
    p = Catalog.of(cfg)
    spec = world_spec(cfg)
    raw_paths = {name: p.path(name) for name in RAW}
    truth_paths = {name: p.path(name) for name in TRUTH}
    # block size and worker count change how the world is produced, not the world
    data_key = {
        k: v
        for k, v in cast(dict[str, Any], OmegaConf.to_container(cfg.data)).items()
        if k not in ("block_size", "n_jobs")
    }
    key = {
        "data": data_key,
        "simulator": OmegaConf.to_container(cfg.simulator),
        "oracle": [list(spec.oracle_snapshots), spec.horizon],
        # 2: two oracles and per-cause shares in oracle.parquet; 3: a going-concern book;
        # 4: each oracle from half of its futures too
        "version": 4,
    }
    outputs = list(raw_paths.values()) + list(truth_paths.values())
    outputs += [p.path("data_card_md"), p.path("data_card")]
    world = (int(cfg.data.seed), int(cfg.data.n_borrowers), int(cfg.data.n_months))
    if not cfg.force and up_to_date(p.raw, "generate", key, outputs):
        say(f"generate: inputs and config unchanged, keeping {p.raw} (force=true to recompute)")
        tracker.log_world(p.raw / "_generate.manifest.json", *world)
        return GenerateResult(skipped=True)
    t0 = time.perf_counter()
    streamed = [k for k in (*RAW, *TRUTH) if k != "macro_months"]
    counts: dict[str, int] = dict.fromkeys(streamed, 0)
    oracle_s = chunk_s = 0.0
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(p.sink(streamed))
        if cfg.engine.kind == "dask":
            client = stack.enter_context(distributed.client_for(cfg.engine))
            chunks = distributed.iter_chunks(spec, client, p.raw)
        else:
            chunks = sim_core.iter_chunks(
                spec, n_jobs=generation_jobs(cfg.data), block_size=int(cfg.data.block_size)
            )
        for _, tables in progress(chunks, total=spec.n_chunks, desc="generate"):
            o_s, c_s = sim_core.oracle_seconds(tables["oracle"])
            oracle_s, chunk_s = oracle_s + o_s, chunk_s + c_s
            for name, table in tables.items():
                sink.write(name, table)
                counts[name] += table.num_rows
    p.write("macro_months", sim_core.macro_table(spec))
    counts["macro_months"] = spec.n_months
    seconds = time.perf_counter() - t0
    card = data_card(cfg, p)
    # the manifest goes last: a kill before this point makes the next run recompute
    write_manifest(p.raw, "generate", key, outputs)
    tracker.log_world(p.raw / "_generate.manifest.json", *world)
    metrics = {f"rows_{k}": float(v) for k, v in counts.items()}
    metrics["seconds"] = seconds
    metrics["oracle_seconds"] = oracle_s
    metrics["simulation_seconds"] = chunk_s
    metrics["borrower_months_per_s"] = counts["account_months"] / max(seconds, 1e-9)
    metrics.update({k: v for k, v in card["metrics"].items()})
    tracker.log_metrics(metrics)
    tracker.log_artifact(p.path("data_card_md"), "data_card")
    tracker.log_artifact(p.path("data_card"), "data_card")
    tracker.log_artifact(p.path("raw_plots"), "data_card/plots")
    book = int(cfg.data.n_borrowers)
    accounts = (
        f"{spec.n_borrowers:,} accounts (a book of {book:,} at month 0 and its inflow)"
        if spec.n_borrowers != book
        else f"{spec.n_borrowers:,} borrowers"
    )
    say(f"generate: {accounts} x {spec.n_months} months -> {p.raw} ({seconds:.1f}s)")
    share = oracle_s / chunk_s if chunk_s > 0 else 0.0
    say(
        f"  oracle: {counts['oracle']:,} rows x {spec.sim.oracle_futures} futures x 2 oracles "
        f"took {oracle_s:.1f}s of the {chunk_s:.1f}s of simulation (summed over workers: "
        f"{share:.0%}); the rest of the stage, at the same share of its {seconds:.1f}s wall "
        f"time, about {seconds * (1 - share):.1f}s against the oracle's {seconds * share:.1f}s"
    )
    return GenerateResult(seconds=seconds, oracle_seconds=oracle_s, counts=counts)


def _account_months(p: Catalog, columns: list[str]) -> Iterator[pa.Table]:
    """The account months' ``columns``, one checked row group at a time."""
    return p.row_groups("account_months", columns)


def _rows_per_month(p: Catalog) -> pd.Series:
    """Rows per month (months with rows, ascending), counted one row group at a time:
    the account months are the largest table (100 million rows at 3 million borrowers)."""
    counts = np.zeros(0, dtype=np.int64)
    for group in _account_months(p, ["month"]):
        part = np.bincount(group.column(0).to_numpy().astype(np.int64))
        if len(part) > len(counts):
            counts = np.pad(counts, (0, len(part) - len(counts)))
        counts[: len(part)] += part
    months = np.flatnonzero(counts)
    return pd.Series(counts[months], index=pd.Index(months, name="month"))


def data_card(cfg: Any, p: Catalog) -> dict[str, Any]:
    """Closure rates overall, per cause, per regime and per occupation, as markdown + JSON."""
    n_months = int(cfg.data.n_months)
    ev = p.read("platform_events", ["borrower_id", "month", "event", "cause"], n_months=n_months)
    ev = ev.to_pandas()
    b = p.read(
        "borrowers", ["borrower_id", "occupation", "signup_month", "prior_closure"]
    ).to_pandas()
    # the recorded borrowers: a going concern's accounts closed in its burn-in are in the
    # borrowers table (their contacts remember them) but not in the recorded months
    closed_before = b.prior_closure.to_numpy() > 0
    b_all, b = b, b[~closed_before]
    n = len(b)
    closures = ev[ev.event == "closure"].merge(b, on="borrower_id")
    t_month = int(cfg.simulator.tightening_month)
    on_book = _rows_per_month(p)
    per_month = closures.groupby("month").size().reindex(on_book.index, fill_value=0) / on_book
    pre = (
        per_month[per_month.index < t_month].mean()
        if (per_month.index < t_month).any()
        else float("nan")
    )
    post = per_month[per_month.index >= t_month].mean()
    book = _book(p, b_all, closures, int(cfg.data.n_months))
    by_cause = closures.groupby("cause").size().reindex(list(ALL_CAUSES), fill_value=0)
    by_occ = (
        closures[closures.cause != OVERDUE].groupby("occupation").borrower_id.nunique()
        / b.groupby("occupation").size()
    ).fillna(0.0)
    metrics = {
        "closure_rate_borrowers": float(closures.borrower_id.nunique() / max(n, 1)),
        "monthly_closure_rate_pre_tightening": float(pre),
        "monthly_closure_rate_post_tightening": float(post),
        "overdue_share_of_closures": float(by_cause.get(OVERDUE, 0) / max(by_cause.sum(), 1)),
    }
    for c in ALL_CAUSES:
        metrics[f"closure_share_{c}"] = float(by_cause[c] / max(by_cause.sum(), 1))
    rate = book.closure_rate_never_overdue.to_numpy()
    metrics.update(
        book_month0=float(book.book.iloc[0]),
        book_last_month=float(book.book.iloc[-1]),
        inflow_per_month=float(book.inflow.mean()),
        closed_before_month0=float(closed_before.sum()),
        annual_closure_rate_never_overdue=book_core.annual_rate(rate),
    )
    before = "-" if pre != pre else f"{pre:.2%}"
    lines = [
        "# Data card: simulated borrower world",
        "",
        f"- borrowers recorded: {n:,} ({int((b.signup_month < 0).sum()):,} on book at month 0, "
        f"{int((b.signup_month >= 0).sum()):,} joined since); months: {cfg.data.n_months}; "
        f"seed: {cfg.data.seed}",
        f"- acquisition: {cfg.simulator.acquisition}"
        + (
            f" (burn-in of {cfg.simulator.burn_in} months before month 0; "
            f"{int(closed_before.sum()):,} accounts closed in it are kept in the borrowers "
            "table only)"
            if cfg.simulator.acquisition == "continuous"
            else ""
        ),
        f"- book: {metrics['book_month0']:,.0f} accounts at month 0, "
        f"{metrics['book_last_month']:,.0f} at the last month; "
        f"{metrics['inflow_per_month']:,.0f} sign-ups a month",
        f"- annual closure rate of never-overdue accounts: "
        f"{metrics['annual_closure_rate_never_overdue']:.1%} (from the mean monthly rate)",
        f"- borrowers closed in the recorded months: {metrics['closure_rate_borrowers']:.1%}",
        f"- monthly closure rate before / after tightening (month {t_month}): {before} / {post:.2%}",
        "",
        "## Closures by cause",
        "",
        "| cause | closures | share |",
        "|---|---:|---:|",
    ]
    for c in ALL_CAUSES:
        lines.append(f"| {c} | {int(by_cause[c])} | {metrics[f'closure_share_{c}']:.1%} |")
    lines += [
        "",
        "## Non-overdue closure rate by occupation",
        "",
        "| occupation | borrowers closed |",
        "|---|---:|",
    ]
    for occ, r in by_occ.items():
        lines.append(f"| {occ} | {r:.1%} |")
    lines += _book_lines(book)
    plots = _data_card_plots(p, closures, on_book, b)
    folder = p.path("raw_plots").name
    lines += ["", "## Plots", ""] + [f"![{q.stem}]({folder}/{q.name})" for q in plots]
    p.write("data_card_md", "\n".join(lines) + "\n")
    card = {
        "metrics": metrics,
        "by_occupation": by_occ.to_dict(),
        "by_cause": by_cause.astype(int).to_dict(),
        "monthly_closure_rate": {int(k): float(v) for k, v in per_month.items()},
        "book": book.to_dict(orient="list"),
    }
    p.write("data_card", card)
    return card


def _book(
    p: Catalog, borrowers: pd.DataFrame, closures: pd.DataFrame, n_months: int
) -> pd.DataFrame:
    """The book by month (:func:`pipeline.core.book.book_over_time`), the account months
    read one row group at a time."""
    ids = borrowers.borrower_id.to_numpy()
    signup = np.zeros(int(ids.max()) + 1 if len(ids) else 0, dtype=np.int64)
    signup[ids] = borrowers.signup_month.to_numpy()
    counter = book_core.TenureCounter(signup, n_months)
    for group in _account_months(p, ["borrower_id", "month"]):
        counter.add(group.column(0).to_numpy(), group.column(1).to_numpy())
    return book_core.book_over_time(
        counter.counts,
        borrowers[borrowers.prior_closure == 0].signup_month.to_numpy(),
        closures.month.to_numpy(),
        (closures.cause == OVERDUE).to_numpy(),
    )


def _book_lines(book: pd.DataFrame) -> list[str]:
    """The book over time as a markdown table (every third month, and the last)."""
    bands = [c for c in book.columns if c.startswith("tenure ")]
    head = ["month", "book", "sign-ups", "closures", "never-overdue closure rate", *bands]
    lines = ["## The book over time", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---:|" * len(head))
    show = sorted(set(range(0, len(book), 3)) | {len(book) - 1})
    for i in show:
        r = book.iloc[i]
        cells = [
            f"{int(r.month)}",
            f"{int(r.book):,}",
            f"{int(r.inflow):,}",
            f"{int(r.closures):,}",
            f"{r.closure_rate_never_overdue:.2%}",
            *(f"{r[c]:.0%}" for c in bands),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _data_card_plots(p: Catalog, closures: Any, on_book: Any, borrowers: Any) -> list[Any]:
    """Monthly closure rate by cause, and the distributions of key variables."""
    import matplotlib  # matplotlib: loaded only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: loaded only when a plot is drawn

    out = p.path("raw_plots")
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(8, 4))
    by = (
        closures.groupby(["month", "cause"])
        .size()
        .unstack(fill_value=0)
        .reindex(on_book.index, fill_value=0)
    )
    rates = by.div(on_book, axis=0)
    bottom = np.zeros(len(rates))
    for cause in [c for c in ALL_CAUSES if c in rates.columns]:
        ax.bar(rates.index, rates[cause], bottom=bottom, label=cause, width=0.9)
        bottom += rates[cause].to_numpy()
    ax.set_xlabel("month")
    ax.set_ylabel("closures / accounts on book")
    ax.set_title("Monthly closure rate by cause")
    if len(by.columns):  # a world without a closure has no cause to name
        ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, out / "closure_rate_by_cause.png", atomic_path))

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    titles = ["monthly income", "credit line", "utilisation", "amount drawn (months with a draw)"]
    for ax, title, (counts, edges), log in zip(
        axes, titles, _distributions(p), (True, True, False, True), strict=True
    ):
        ax.hist(edges[:-1], bins=edges, weights=counts, color="#4c72b0")
        ax.set_title(title + (" (log10)" if log else ""), fontsize=9)
    fig.tight_layout()
    paths.append(_save(fig, out / "distributions.png", atomic_path))
    plt.close("all")
    return paths


#: bins of each distribution drawn in the data card
CARD_BINS = 40


def _distributions(p: Catalog) -> list[tuple[np.ndarray, np.ndarray]]:
    """Histograms (counts, edges) of log10 income, log10 credit line, utilisation and
    log10 amount drawn, as ``np.histogram(values, bins=CARD_BINS)`` gives them.

    The account months are read one row group at a time, twice (the range, then the
    counts), so the client never holds those columns whole (300 million values at 3
    million borrowers).
    """

    def month_values() -> Iterator[list[np.ndarray]]:
        for am in _account_months(p, ["line", "balance", "draw_amount"]):
            # the ratio in the columns' own type (float32), as pandas divided them
            line32 = am.column("line").to_numpy()
            balance32 = am.column("balance").to_numpy()
            on = line32 > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                util = np.clip(balance32[on] / line32[on], 0, 1).astype(float)
            util = util[~np.isnan(util)]
            line = line32.astype(float)
            draw = am.column("draw_amount").to_numpy().astype(float)
            draw = draw[draw > 0]
            yield [np.log10(line[line > 0]), util, np.log10(draw)]

    income = np.asarray(borrowers_income(p), dtype=float)
    income = np.log10(income[income > 0])
    lo = [float(np.min(income, initial=np.inf))] + [np.inf] * 3
    hi = [float(np.max(income, initial=-np.inf))] + [-np.inf] * 3
    for values in month_values():
        for k, v in enumerate(values, start=1):
            if len(v):
                lo[k], hi[k] = min(lo[k], float(v.min())), max(hi[k], float(v.max()))
    edges = [
        np.histogram_bin_edges(np.array([a, b]) if a <= b else np.array([]), bins=CARD_BINS)
        for a, b in zip(lo, hi, strict=True)
    ]
    counts = [np.histogram(income, bins=edges[0])[0]] + [
        np.zeros(CARD_BINS, dtype=np.int64) for _ in range(3)
    ]
    for values in month_values():
        for k, v in enumerate(values, start=1):
            counts[k] += np.histogram(v, bins=edges[k])[0]
    return list(zip(counts, edges, strict=True))


def borrowers_income(p: Catalog) -> Any:
    return p.read("borrowers", ["income"]).column("income").to_numpy()


def _save(fig: Any, path: Any, atomic_path: Any) -> Any:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path
