"""Runner of the ``features`` stage: validate raw tables, build the feature table."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from pipeline.adapters import distributed
from pipeline.adapters.catalog import Catalog, file_in, read_entry, world_digest
from pipeline.adapters.tracking import Tracker
from pipeline.base.config import Config, physical_cores
from pipeline.base.io import (
    DataError,
    read_table,
    write_parquet_stream,
)
from pipeline.base.progress import progress
from pipeline.base.registry import BY_NAME, FEATURE_NAMES, registry_json
from pipeline.core import features as feat_core
from pipeline.core import simulate as sim_core
from pipeline.core.metrics import decile_edges, iv_from_counts, psi_from_shares
from pipeline.stages.common import Result, inputs_digest, say, up_to_date, write_manifest


def read_raw(
    path: Path, name: str, n_months: int, filters: Any = None, columns: list[str] | None = None
) -> pa.Table:
    """A raw table checked against its catalog rules (only ``columns``, if given)."""
    return read_entry(name, path, columns, where=filters, n_months=n_months)


def _block_filter(lo: int, hi: int, col: str = "borrower_id") -> Any:
    return (pc.field(col) >= lo) & (pc.field(col) < hi)


def feature_spec(cfg: Config) -> feat_core.FeatureSpec:
    f = cfg.features
    return feat_core.FeatureSpec(
        snapshots=tuple(int(s) for s in f.snapshots),
        horizon=int(f.horizon),
        valid_snapshots=tuple(int(s) for s in f.valid_snapshots),
        oot_snapshots=tuple(int(s) for s in f.oot_snapshots),
        fund_days=int(f.fund_days),
        small_draw_ratio=float(f.small_draw_ratio),
        never_overdue_only=bool(f.never_overdue_only),
    )


RAW_BLOCK_TABLES = (
    "borrowers",
    "account_months",
    "fund_flows",
    "bureau_months",
    "consumption_months",
    "platform_events",
)


def feature_block(
    raw_dir: Path,
    lo: int,
    hi: int,
    n_months: int,
    spec: feat_core.FeatureSpec,
) -> tuple[dict[str, np.ndarray], feat_core.BlockStatus]:
    """Read, validate and featurise borrowers ``lo .. hi-1``; a self-contained task.

    Only the rows of this block are read (row groups are skipped by their statistics),
    so memory is bounded by the block, and the same function runs on a Dask worker.
    """
    block = read_block(raw_dir, lo, hi, n_months)
    return feat_core.block_features(block, lo, hi - lo, n_months, spec)


def read_block(raw_dir: Path, lo: int, hi: int, n_months: int) -> dict[str, pa.Table]:
    """The validated raw rows of borrowers ``lo .. hi-1`` (and the macro table)."""
    paths = {name: file_in(raw_dir, name) for name in (*RAW_BLOCK_TABLES, "macro_months")}
    rows = _block_filter(lo, hi)
    block = {name: read_raw(paths[name], name, n_months, rows) for name in RAW_BLOCK_TABLES}
    bid = block["borrowers"].column("borrower_id").to_numpy()
    for name in RAW_BLOCK_TABLES[1:]:
        ids = block[name].column("borrower_id").to_numpy()
        if len(ids) and not np.isin(ids, bid).all():
            raise DataError(
                f"{paths[name]}: column 'borrower_id' has ids that are not in {paths['borrowers']}"
            )
    block["macro_months"] = read_raw(paths["macro_months"], "macro_months", n_months)
    return block


def _local_blocks(
    raw_dir: Path, bounds: list[tuple[int, int]], n_months: int, spec: feat_core.FeatureSpec
) -> Generator[tuple[dict[str, np.ndarray], feat_core.BlockStatus], None, None]:
    """Blocks one after the other, the next block read while this one is computed.

    Arrow reads without the GIL, so the read of block i+1 overlaps the (numba) features
    of block i; at most two blocks of raw rows are held at once.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read_block, raw_dir, *bounds[0], n_months) if bounds else None
        for i, (lo, hi) in enumerate(bounds):
            assert pending is not None
            block = pending.result()
            if i + 1 < len(bounds):
                pending = pool.submit(read_block, raw_dir, *bounds[i + 1], n_months)
            yield feat_core.block_features(block, lo, hi - lo, n_months, spec)


def _id_range(path: Path, n_months: int) -> tuple[int, int]:
    ids = read_table(
        path, sim_core.SCHEMAS["borrowers"], columns=["borrower_id"], unique=("borrower_id",)
    )
    if ids.num_rows == 0:
        raise DataError(f"{path}: no borrowers")
    bid = ids.column("borrower_id").to_numpy()
    return int(bid.min()), int(bid.max()) + 1


def _id_bounds_from_statistics(path: Path) -> dict[str, int] | None:
    """Smallest and largest ``borrower_id`` from the row groups' statistics.

    Exact when every row group carries integer min/max statistics (writers of this
    project always do); None when any is missing, and the caller reads the column.
    The file's schema and values are still validated where the blocks read them.
    """
    try:
        meta = pq.ParquetFile(path).metadata
        col = meta.schema.to_arrow_schema().get_field_index("borrower_id")
    except Exception:  # noqa: BLE001 - unreadable here: let the full reader say why
        return None
    if col < 0 or meta.num_row_groups == 0:
        return None
    lows, highs = [], []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(col).statistics
        if stats is None or not stats.has_min_max or stats.physical_type not in ("INT32", "INT64"):
            return None
        if not stats.has_null_count or stats.null_count:  # null ids: no block reads them
            return None
        if meta.row_group(g).num_rows == 0:
            continue
        lows.append(int(stats.min))
        highs.append(int(stats.max))
    if not lows:
        return None
    return {"min": min(lows), "max": max(highs)}


def _block_bounds(lo_id: int, hi_id: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(hi_id, lo + size)) for lo in range(lo_id, hi_id, size)]


def status_block(raw_dir: Path, lo: int, hi: int, n_months: int) -> feat_core.BlockStatus:
    """First-event months of borrowers ``lo .. hi-1``, from the few columns they need; a task."""
    rows = _block_filter(lo, hi)
    block = {
        name: read_raw(file_in(raw_dir, name), name, n_months, rows, columns=cols)
        for name, cols in feat_core.STATUS_COLUMNS.items()
    }
    return feat_core.block_status(block, lo, hi - lo)


#: borrowers per task of the status pass: it reads a few narrow columns, so its blocks
#: can be this many times larger than the feature blocks
STATUS_BLOCK_FACTOR = 8


def _statuses(
    raw_dir: Path, bounds: list[tuple[int, int]], n_months: int, client: Any
) -> feat_core.BlockStatus:
    if client is not None:
        futures = [
            client.submit(status_block, raw_dir, lo, hi, n_months, pure=False) for lo, hi in bounds
        ]
        parts = [f.result() for f in futures]
        del futures
    else:
        parts = [status_block(raw_dir, lo, hi, n_months) for lo, hi in bounds]
    return feat_core.BlockStatus(
        borrower_id=np.concatenate([s.borrower_id for s in parts]),
        first_closed=np.concatenate([s.first_closed for s in parts]),
        first_overdue=np.concatenate([s.first_overdue for s in parts]),
    )


def feature_tables(
    raw_dir: Path,
    n_months: int,
    spec: feat_core.FeatureSpec,
    block_size: int,
    engine: Any = None,
    stats: dict[str, Any] | None = None,
) -> Generator[pa.Table, None, None]:
    """Validate the raw tables and yield the feature table block by block, in order.

    Two passes. The first reads the few columns that give every borrower's first
    closure and first overdue month, which the contacts' features need; the second
    computes each block's features, adds its rows' contact features from a lookup
    built once, and yields the block as it will stand in the table. Blocks run here one
    after the other, or as tasks on a Dask cluster when ``engine.kind == "dask"``;
    either way they come in block order, so the table is the same, and at most a few
    blocks are in memory at once.
    """
    edges = read_raw(file_in(raw_dir, "social_edges"), "social_edges", n_months)
    lo_id, hi_id = _id_range(file_in(raw_dir, "borrowers"), n_months)
    for name in RAW_BLOCK_TABLES[1:]:
        # rows outside the borrowers' id range would never be read by any block
        path = file_in(raw_dir, name)
        mm = _id_bounds_from_statistics(path)
        if mm is None:
            ids = read_table(path, sim_core.SCHEMAS[name], columns=["borrower_id"]).column(
                "borrower_id"
            )
            mm = pc.min_max(ids).as_py() if len(ids) else None
        if mm is not None:
            if mm["min"] < lo_id or mm["max"] >= hi_id:
                raise DataError(
                    f"{path}: column 'borrower_id' has ids that are not in "
                    f"{file_in(raw_dir, 'borrowers')}"
                )
    bounds = _block_bounds(lo_id, hi_id, block_size)
    with contextlib.ExitStack() as stack:
        client = None
        if engine is not None and engine.kind == "dask":
            client = stack.enter_context(distributed.client_for(engine))
            spilled_before = distributed.spilled_bytes(client)
        status = _statuses(
            raw_dir, _block_bounds(lo_id, hi_id, block_size * STATUS_BLOCK_FACTOR), n_months, client
        )
        social = feat_core.SocialLookup.build(
            edges.column("src").to_numpy(),
            edges.column("dst").to_numpy(),
            edges.column("tie_strength").to_numpy().astype(np.float64),
            status,
            np.asarray(spec.snapshots, dtype=np.int64),
            n_ids=hi_id,
        )
        del edges
        # closed before the client (entered after it): pending blocks are cancelled
        # while the client can still reach the scheduler
        blocks = stack.enter_context(
            contextlib.closing(
                distributed.in_order(
                    client,
                    feature_block,
                    [(raw_dir, lo, hi, n_months, spec) for lo, hi in bounds],
                    # a few blocks per worker: neither the workers nor the client hold
                    # the whole table
                    max_in_flight=2 * distributed.n_workers(client) + 2,
                )
                if client is not None
                else _local_blocks(raw_dir, bounds, n_months, spec)
            )
        )
        for (lo, hi), (cols, block_status) in zip(
            bounds, progress(blocks, total=len(bounds), desc="features"), strict=True
        ):
            _same_status(status, block_status, lo, hi)
            cols.update(social.rows(cols["borrower_id"], cols["snapshot"]))
            yield feat_core.to_table(cols, spec)
            del cols
        if client is not None:
            spilled = distributed.spilled_bytes(client) - spilled_before
            if stats is not None:
                stats["dask_spilled_bytes"] = spilled
            if spilled:
                say(f"features: Dask workers moved {spilled / 2**20:,.1f} MiB of results to disk")


def _same_status(
    status: feat_core.BlockStatus, block: feat_core.BlockStatus, lo: int, hi: int
) -> None:
    """The first pass's statuses of a block are the ones its features were computed with."""
    a, b = np.searchsorted(status.borrower_id, [lo, hi])
    if not (
        np.array_equal(status.borrower_id[a:b], block.borrower_id)
        and np.array_equal(status.first_closed[a:b], block.first_closed)
        and np.array_equal(status.first_overdue[a:b], block.first_overdue)
    ):
        raise RuntimeError(
            f"features: borrowers {lo}..{hi - 1} have other first-event months in the two "
            "passes over the raw tables (were they changed while being read?)"
        )


def build_features(
    raw_dir: Path,
    n_months: int,
    spec: feat_core.FeatureSpec,
    block_size: int,
    engine: Any = None,
    stats: dict[str, Any] | None = None,
) -> pa.Table:
    """The whole feature table in memory (scoring and tests); the stage streams it to disk."""
    with contextlib.closing(
        feature_tables(raw_dir, n_months, spec, block_size, engine, stats)
    ) as tables:
        parts = list(tables)
    if not parts:
        return feat_core.FEATURE_TABLE_SCHEMA.empty_table()
    return pa.concat_tables(parts).combine_chunks()


def write_features(
    raw_dir: Path,
    out: Path,
    n_months: int,
    spec: feat_core.FeatureSpec,
    block_size: int,
    engine: Any = None,
    stats: dict[str, Any] | None = None,
) -> int:
    """Build the feature table into ``out`` block by block; the number of rows.

    The file is byte for byte the one :func:`build_features` then ``write_parquet``
    would give, without the whole table ever being in memory.
    """
    # closed on any failure, so that a cluster and its running tasks do not outlive it
    with contextlib.closing(
        feature_tables(raw_dir, n_months, spec, block_size, engine, stats)
    ) as tables:
        return write_parquet_stream(tables, out, feat_core.FEATURE_TABLE_SCHEMA)


def _split_masks(table: pa.Table) -> dict[str, np.ndarray]:
    split = table.column("split")
    names = pc.unique(split).to_pylist()
    return {
        str(n): pc.equal(split, n).to_numpy(zero_copy_only=False) for n in sorted(names, key=str)
    }


def _stability_row(x: np.ndarray, label: np.ndarray, train: np.ndarray, oot: np.ndarray) -> tuple:
    """Missing rate, IV on train, PSI train -> oot and the share of out-of-time values
    outside the training range [min, max] of one feature, sharing the deciles.

    Same figures as a plain information value on equal-count bins (the tests'
    reference) and :func:`pipeline.core.metrics.psi` (both cut at the deciles of the
    finite training values); the deciles and the training bins are computed once
    instead of twice.
    """
    missing = float(np.mean(~np.isfinite(x))) if len(x) else float("nan")
    xt = np.asarray(x[train], dtype=float)
    yt = label[train].astype(int)
    ok = np.isfinite(xt)
    if not ok.all():
        xt, yt = xt[ok], yt[ok]
    xo = np.asarray(x[oot], dtype=float)
    xo = xo[np.isfinite(xo)]
    if len(xt) == 0:
        return missing, float("nan"), float("nan"), float("nan")
    edges = decile_edges(xt)
    k = len(edges) + 1
    bt = np.searchsorted(edges, xt, side="right")
    counts = np.bincount(bt, minlength=k).astype(float)
    iv = float("nan")
    if 0 < yt.sum() < len(yt):
        pos = np.bincount(bt, weights=yt, minlength=k)
        iv = iv_from_counts(pos, counts - pos)
    value = outside = float("nan")
    if len(xo):
        ac = np.bincount(np.searchsorted(edges, xo, side="right"), minlength=k) / len(xo)
        value = psi_from_shares(counts / len(xt), ac)
        outside = float(np.mean((xo < xt.min()) | (xo > xt.max())))
    return missing, iv, value, outside


def stability_report(
    source: pa.Table | Path,
    threads: int = 0,
    masks: dict[str, np.ndarray] | None = None,
    label: np.ndarray | None = None,
) -> pd.DataFrame:
    """Missing rate, information value (train) and PSI (train -> out-of-time) per feature.

    ``source`` is the feature table, or its Parquet file: the report works one column
    at a time (read from the file, if given one), so no second copy of the whole
    feature table is made, and from a file the table is never whole in memory (it
    matters at millions of rows). ``masks`` and ``label``, if the caller has them, save
    reading the split and the label again. Columns are spread over ``threads`` threads
    (default: the physical cores; Arrow's reads and NumPy's sorting and binning release
    the GIL).
    """

    def column(name: str) -> np.ndarray:
        if isinstance(source, pa.Table):
            return source.column(name).to_numpy()
        return pq.read_table(source, columns=[name]).column(name).to_numpy()

    if masks is None:
        masks = _split_masks(
            source if isinstance(source, pa.Table) else pq.read_table(source, columns=["split"])
        )
    if label is None:
        label = column("label")
    n = len(label)
    empty = np.zeros(n, dtype=bool)
    train, oot = masks.get("train", empty), masks.get("oot", empty)

    def one(name: str) -> dict[str, Any]:
        miss, iv, value, outside = _stability_row(column(name), label, train, oot)
        f = BY_NAME[name]
        return {
            "feature": name,
            "family": f.family,
            "causes": " ".join(f.causes),
            "missing_rate": miss,
            "iv_train": iv,
            "psi_train_oot": value,
            # share of out-of-time values outside the training range: the trees score
            # them as the nearest training value (extrapolation)
            "oot_outside_train_range": outside,
        }

    with ThreadPoolExecutor(max_workers=threads or physical_cores()) as pool:
        rows = list(pool.map(one, FEATURE_NAMES))
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class FeaturesResult(Result):
    """Rows written, the seconds it took, and the engine's figures (Dask: spilled bytes)."""

    rows: int = 0
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


def features(cfg: Config, tracker: Tracker) -> FeaturesResult:
    if cfg.data.kind != "simulator":
        say("features: data.kind=table, the table is used as it is")
        return FeaturesResult()
    p = Catalog.of(cfg)
    spec = feature_spec(cfg)
    out = p.path("features")
    reg_path = p.path("feature_registry")
    stab_path = p.path("stability")
    raw_files = sorted(p.raw.glob("*.parquet"))
    key = {
        "features": OmegaConf.to_container(cfg.features),
        "tightening": int(cfg.simulator.tightening_month),
        "n_months": int(cfg.data.n_months),
        "inputs": inputs_digest(raw_files),
        "feature_names": list(FEATURE_NAMES),
        "kernel": feat_core.kernel_version(),
        "version": 2,  # 2: contacts closed in the last 12 months; burn-in closures known
    }
    outputs = [out, reg_path, stab_path]
    if not cfg.force and up_to_date(p.processed, "features", key, outputs):
        say(f"features: inputs and config unchanged, keeping {out} (force=true to recompute)")
        tracker.log_feature_table(out, p.processed / "_features.manifest.json")
        return FeaturesResult(skipped=True)
    t0 = time.perf_counter()
    stats: dict[str, Any] = {}
    n_rows = write_features(
        p.raw,
        out,
        int(cfg.data.n_months),
        spec,
        int(cfg.data.block_size),
        engine=cfg.engine,
        stats=stats,
    )
    seconds = time.perf_counter() - t0
    # the report reads the file just written, one column at a time
    keys = p.read("features", ["split", "label"])
    masks = _split_masks(keys)
    label = keys.column("label").to_numpy()
    del keys
    stab = stability_report(out, masks=masks, label=label)
    p.write("feature_registry", registry_json())
    p.write("stability", stab)
    write_manifest(p.processed, "features", key, outputs, made_from=world_digest(p.raw))
    metrics = {"rows": float(n_rows), "seconds": seconds, "n_features": float(len(FEATURE_NAMES))}
    metrics.update({k: float(v) for k, v in stats.items()})
    for name, mask in masks.items():
        metrics[f"rows_{name}"] = float(mask.sum())
        metrics[f"label_rate_{name}"] = float(label[mask].mean())
    tracker.log_metrics(metrics)
    tracker.log_feature_table(
        out,
        p.processed / "_features.manifest.json",
        {name: int(mask.sum()) for name, mask in masks.items()},
    )
    for path in outputs[1:]:
        tracker.log_artifact(path, "features")
    say(f"features: {n_rows:,} rows x {len(FEATURE_NAMES)} features -> {out} ({seconds:.1f}s)")
    return FeaturesResult(rows=n_rows, seconds=seconds, stats=stats)
