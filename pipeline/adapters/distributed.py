"""Running the stages on a Dask cluster (``engine=dask``).

The unit of work is the same as on one machine: a simulator chunk for ``generate``,
a borrower block for ``features``, a row block for SHAP. Workers read and write
Parquet through paths every worker can reach (a shared file system, or any fsspec
URL a worker can open), and the client assembles parts in a fixed order, so the
outputs are bit-identical to the local engine for the same seed.

Connect to an existing scheduler with ``engine.address=tcp://host:8786``; without an
address a local cluster of ``engine.n_workers`` processes is started on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import simulate as sim_core


@contextlib.contextmanager
def client_for(engine: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for the configured engine; a local cluster is closed on exit."""
    from distributed import Client, LocalCluster

    if engine.address:
        client = Client(str(engine.address), timeout=f"{int(engine.connect_timeout_s)}s")
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    # the workers (nanny processes) take the configuration in force when they start
    with dask.config.set({"distributed.worker.memory.target": float(engine.spill_target)}):
        cluster = LocalCluster(
            n_workers=int(engine.n_workers),
            threads_per_worker=int(engine.threads_per_worker),
            memory_limit=str(engine.memory_limit),
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            local_directory=str(engine.local_directory) or None,
        )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def spilled_bytes(client: Any) -> int:
    """Bytes of task results the cluster's workers have moved to disk so far (pickled)."""

    def on_worker(dask_worker: Any) -> int:
        total = getattr(dask_worker.data, "spilled_total", None)
        return int(total.disk) if total is not None else 0

    try:
        return int(sum(client.run(on_worker).values()))
    except Exception:  # noqa: BLE001 - a figure for the log, never a reason to fail a stage
        return 0


# --------------------------------------------------------------------------- generate


def _simulate_to_parts(spec: sim_core.WorldSpec, chunk: int, staging: str) -> dict[str, str]:
    """Worker task: simulate one chunk and write one Parquet part per table."""
    tables = sim_core.simulate_chunk(spec, chunk)
    out = {}
    for name, table in tables.items():
        path = os.path.join(staging, name, f"part-{chunk:07d}.parquet")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        out[name] = path
    return out


def iter_chunks(
    spec: sim_core.WorldSpec, client: Any, staging_root: Path, max_in_flight: int | None = None
) -> Iterator[tuple[int, dict[str, pa.Table]]]:
    """Like :func:`pipeline.core.simulate.iter_chunks`, with the chunks simulated on the cluster.

    Parts are read back and yielded in chunk order, then deleted; at most
    ``max_in_flight`` chunks are pending at once, which bounds disk and memory use.
    """
    staging = Path(staging_root) / f".staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True, exist_ok=True)
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    limit = max_in_flight or 2 * n_workers
    pending: dict[int, Any] = {}
    nxt = 0
    try:
        for c in range(spec.n_chunks):
            while len(pending) < limit and nxt < spec.n_chunks:
                pending[nxt] = client.submit(
                    _simulate_to_parts, spec, nxt, str(staging), pure=False
                )
                nxt += 1
            parts = pending.pop(c).result()
            tables = {name: pq.read_table(path) for name, path in parts.items()}
            for path in parts.values():
                os.remove(path)
            yield c, tables
    finally:
        for fut in pending.values():
            fut.cancel()
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- SHAP


def _shap_block(model_str: str, X: np.ndarray, n_threads: int) -> np.ndarray:
    import lightgbm as lgb

    from pipeline.core.explain import contributions

    booster = lgb.Booster(model_str=model_str)
    return contributions(booster, X, n_threads)[0]


def shap_values(
    client: Any, booster: Any, X: np.ndarray, block_rows: int = 50_000, n_threads: int = 1
) -> np.ndarray:
    """Exact TreeSHAP over row blocks spread on the cluster; same values as locally."""
    model_str = booster.model_to_string(num_iteration=booster.best_iteration or -1)
    model_f = client.scatter(model_str, broadcast=True)
    futures = [
        client.submit(_shap_block, model_f, X[i : i + block_rows], n_threads, pure=False)
        for i in range(0, len(X), block_rows)
    ]
    parts = client.gather(futures)
    return np.concatenate(parts) if parts else np.zeros((0, X.shape[1] + 1))
