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
import operator
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.base.config import ModelConfig
from pipeline.base.errors import PipelineError
from pipeline.base.redact import redact_text, redact_uri
from pipeline.core import calibration as cal_core
from pipeline.core import compiled
from pipeline.core import histmetrics as hm
from pipeline.core import simulate as sim_core
from pipeline.core import train as train_core
from pipeline.core.calibration import Calibrator
from pipeline.core.explain import contributions


class ClusterError(PipelineError, RuntimeError):
    """The configured Dask scheduler could not be reached (address and rule named)."""


def _connect(client_cls: Any, address: str, timeout_s: int) -> Any:
    """A client of the scheduler at ``address``, or :class:`ClusterError` saying why not."""
    shown = redact_uri(address)
    try:
        return client_cls(address, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"engine.address {shown}: no Dask scheduler answered within {timeout_s} s "
            f"(engine.connect_timeout_s); start one there or correct the address "
            f"({type(exc).__name__})"
        ) from None
    except (ValueError, TypeError) as exc:
        # Dask's text repeats the address without its scheme, where a password would not
        # be recognised as one: it is shown only for an address without credentials
        why = "" if "@" in address else f"; {redact_text(str(exc))[:200]}"
        raise ClusterError(
            f"engine.address {shown} is not a scheduler address (rule: "
            f"tcp://host:port or another scheme Dask knows{why})"
        ) from None


@contextlib.contextmanager
def client_for(engine: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for the configured engine; a local cluster is closed on exit."""
    from distributed import Client, LocalCluster  # Dask: only with engine=dask

    if engine.address:
        client = _connect(Client, str(engine.address), int(engine.connect_timeout_s))
        try:
            yield client
        finally:
            client.close()
        return
    import dask  # Dask: only with engine=dask

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
    """Bytes of task results the cluster's workers have moved to disk so far (pickled),
    counting results already taken back and deleted; a difference of two calls is what
    the work between them spilled."""

    def on_worker(dask_worker: Any) -> int:
        metrics = getattr(dask_worker.data, "cumulative_metrics", None)
        if metrics is not None:
            return int(metrics.get(("disk-write", "bytes"), 0))
        total = getattr(dask_worker.data, "spilled_total", None)  # older Dask: on disk now
        return int(total.disk) if total is not None else 0

    try:
        return int(sum(client.run(on_worker).values()))
    except Exception as exc:  # noqa: BLE001 - a figure for the log, never a reason to fail a stage
        warnings.warn(
            f"could not read the workers' spilled bytes ({exc!r}); counted as 0", stacklevel=2
        )
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
    calls = [(spec, c, str(staging)) for c in range(spec.n_chunks)]
    try:
        with contextlib.closing(in_order(client, _simulate_to_parts, calls, max_in_flight)) as done:
            for c, parts in enumerate(done):
                tables = {name: pq.read_table(path) for name, path in parts.items()}
                for path in parts.values():
                    os.remove(path)
                yield c, tables
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def in_order(
    client: Any, fn: Any, calls: list[tuple[Any, ...]], max_in_flight: int | None = None
) -> Generator[Any, None, None]:
    """``fn(*call)`` for each call, run on the cluster and yielded in the calls' order.

    At most ``max_in_flight`` (default: two per worker) are submitted and not yet taken,
    which bounds what the workers hold; each result leaves the cluster when it is taken.
    Closing the generator cancels the calls still pending.
    """
    limit = max_in_flight or 2 * n_workers(client)
    pending: dict[int, Any] = {}
    nxt = 0
    try:
        for i in range(len(calls)):
            while len(pending) < limit and nxt < len(calls):
                pending[nxt] = client.submit(fn, *calls[nxt], pure=False)
                nxt += 1
            yield pending.pop(i).result()
    finally:
        for fut in pending.values():
            fut.cancel()


# --------------------------------------------------------------------------- SHAP


def _shap_block(model_str: str, X: np.ndarray, n_threads: int) -> np.ndarray:

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


# --------------------------------------------------------------------------- training

#: LightGBM parameter names the scikit-learn estimators spell their own way
_SKLEARN_NAMES = {
    "min_data_in_leaf": "min_child_samples",
    "feature_fraction": "colsample_bytree",
    "bagging_fraction": "subsample",
    "bagging_freq": "subsample_freq",
    "lambda_l2": "reg_lambda",
    "seed": "random_state",
}
CURVE_BINS = 2_000  # score bins behind the validation AUC of each boosting round


def split_frame(path: Path, names: list[str], split: str, min_partitions: int = 1) -> Any:
    """One split of the feature table as a lazy Dask DataFrame (features and ``label``).

    The Parquet filter keeps the other splits' rows out of the workers' memory; small
    tables are cut into ``min_partitions`` pieces so that every worker gets rows.
    """
    import dask.dataframe as dd  # optional dependency, only for engine=dask

    df = dd.read_parquet(str(path), columns=[*names, "label"], filters=[("split", "==", split)])
    if df.npartitions < min_partitions:
        df = df.repartition(npartitions=min_partitions)
    return df


def _pieces(path: Path) -> list[tuple[str, int]]:
    """``(file, row group)`` of every row group of a Parquet file or folder of files."""
    import pyarrow.dataset as ds  # pyarrow's dataset reader: only here

    files = ds.dataset(str(path), format="parquet").files
    return [(f, g) for f in files for g in range(pq.ParquetFile(f).num_row_groups)]


def _read_piece(
    file: str, row_group: int, k: int, n_slices: int, names: list[str], split: str
) -> tuple[Any, Any]:
    """Worker task: slice ``k`` of ``n_slices`` of one row group's rows of ``split``, as
    features (float32 DataFrame) and label (int32 Series)."""
    import pandas as pd
    import pyarrow.compute as pc

    table = pq.ParquetFile(file).read_row_group(row_group, columns=[*names, "label", "split"])
    table = table.filter(pc.equal(table["split"], split))
    lo, hi = table.num_rows * k // n_slices, table.num_rows * (k + 1) // n_slices
    table = table.slice(lo, hi - lo)
    X = pd.DataFrame({n: table[n].to_numpy().astype(np.float32, copy=False) for n in names})
    y = pd.Series(table["label"].to_numpy().astype(np.int32), name="label")
    return X, y


def training_parts(
    path: Path, names: list[str], split: str, min_partitions: int
) -> tuple[Any, Any]:
    """One split as features (float32) and ``label`` (int32): two Dask collections over
    the same tasks, one per row group (cut in slices when there are fewer row groups
    than ``min_partitions``), each reading its rows once with pyarrow.

    LightGBM's Dask estimator pairs the partitions of the features with those of the
    label one by one, so both must be cut alike. Two column selections of one lazy
    ``dask.dataframe.read_parquet`` are not: Dask fuses small row groups into a
    partition by the bytes of the columns read, and cut the features and the label of
    a 3,000,000-borrower table into 11 and 5 partitions. Here a task returns both, and
    each collection takes its half without a copy, so a worker holds the rows once.
    """
    import dask.dataframe as dd  # optional dependency, only for engine=dask
    import pandas as pd
    from dask import delayed  # optional dependency, only for engine=dask

    pieces = _pieces(path)
    n_slices = max(1, -(-int(min_partitions) // max(len(pieces), 1)))
    tasks = [
        delayed(_read_piece, pure=True)(f, g, k, n_slices, names, split)
        for f, g in pieces
        for k in range(n_slices)
    ]
    meta_X = pd.DataFrame({n: np.zeros(0, np.float32) for n in names})
    meta_y = pd.Series(np.zeros(0, np.int32), name="label")
    X = dd.from_delayed([delayed(operator.getitem)(t, 0) for t in tasks], meta=meta_X)
    y = dd.from_delayed([delayed(operator.getitem)(t, 1) for t in tasks], meta=meta_y)
    return X, y


def n_workers(client: Any) -> int:
    """The workers the cluster has now (at least 1)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


def _tree_sum(client: Any, parts: list[Any], add: Any = operator.add) -> Any:
    """Add the results of delayed tasks pairwise on the cluster; only the sum comes back."""
    from dask import delayed  # optional dependency, only for engine=dask

    while len(parts) > 1:
        parts = [
            delayed(add)(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return client.compute(parts[0]).result()


def _curve_part(model_str: str, frame: Any, names: list[str], n_bins: int) -> np.ndarray:
    """Worker task: counts of negatives and positives per score bin after each round."""

    booster = lgb.Booster(model_str=model_str)
    X = frame[names].to_numpy(dtype=np.float32)
    y = frame["label"].to_numpy().astype(np.int64)
    n_iter = booster.current_iteration()
    out = np.zeros((n_iter, 2, n_bins))
    raw = np.zeros(len(X))
    for t in range(n_iter):
        raw += booster.predict(X, start_iteration=t, num_iteration=1, raw_score=True)
        b = hm.bin_index(1.0 / (1.0 + np.exp(-raw)), n_bins)
        out[t] = np.bincount(y * n_bins + b, minlength=2 * n_bins).reshape(2, n_bins)
    return out


def best_iteration(curve: np.ndarray, patience: int) -> tuple[int, list[float]]:
    """The round LightGBM's early stopping on validation AUC keeps, and the AUC per round.

    Same rule as ``lightgbm.early_stopping``: the best round so far is kept; training
    would stop once ``patience`` rounds have passed without a higher AUC.
    """
    aucs: list[float] = []
    best, best_auc = 0, -np.inf
    for t in range(curve.shape[0]):
        neg, pos = curve[t]
        zero = np.zeros_like(pos)
        aucs.append(hm.auc(hm.ScoreHistogram(pos, neg, zero, zero, 0.0, 0.0))[0])
        if aucs[-1] > best_auc:
            best, best_auc = t, aucs[-1]
        elif t - best >= patience:
            break
    return best + 1, aucs


@dataclass
class ClusterFit:
    """A model trained on the cluster, with what the client needs of the validation split."""

    booster: Any
    best_iteration: int
    rounds: int  # rounds grown; the model keeps the first best_iteration
    seconds: float
    valid_auc: list[float]  # binned validation AUC per round, up to where early stopping ends
    valid_raw: np.ndarray  # uncalibrated probabilities of the validation rows
    valid_y: np.ndarray
    example: Any  # a few validation rows, the model's input example


def _predict_part(model_str: str, n_iter: int, frame: Any, names: list[str]) -> np.ndarray:
    """Worker task: probabilities and labels of one partition, stacked as two rows."""

    booster = lgb.Booster(model_str=model_str)
    p = compiled.predict(booster, frame[names].to_numpy(dtype=np.float32), num_iteration=n_iter)
    return np.vstack([np.asarray(p, dtype=float), frame["label"].to_numpy(dtype=float)])


def fit_on_cluster(
    client: Any,
    path: Path,
    names: list[str],
    params: dict[str, Any],
    n_estimators: int,
    patience: int,
) -> ClusterFit:
    """LightGBM's Dask estimator on the training split, stopped early on the validation split.

    ``lightgbm.dask`` evaluates a validation set on each worker's own share of it, so
    its early-stopping callback would stop the workers at different rounds. Instead
    all ``n_estimators`` rounds are grown, then each validation partition is scored
    after every round on the cluster (histograms of :data:`CURVE_BINS` bins per
    label, summed there) and the early-stopping rule is applied to that curve.
    """
    from dask import delayed  # optional dependency, only for engine=dask

    kwargs = {_SKLEARN_NAMES.get(k, k): v for k, v in params.items() if k != "num_threads"}
    n_parts = 2 * n_workers(client)
    t0 = time.perf_counter()
    X, y = training_parts(path, names, "train", n_parts)
    model = lgb.DaskLGBMClassifier(client=client, n_estimators=int(n_estimators), **kwargs)
    with warnings.catch_warnings():
        # the estimator's own n_jobs default: threads come from each worker's thread count
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
        model.fit(X, y)
    booster = model.booster_
    model_str = client.scatter(booster.model_to_string(), broadcast=True)
    valid = split_frame(path, names, "valid", n_parts)
    curve = _tree_sum(
        client,
        [delayed(_curve_part)(model_str, part, names, CURVE_BINS) for part in valid.to_delayed()],
    )
    best, aucs = best_iteration(curve, int(patience))
    seconds = time.perf_counter() - t0
    scored = client.gather(
        client.compute(
            [delayed(_predict_part)(model_str, best, part, names) for part in valid.to_delayed()]
        )
    )
    both = np.concatenate(scored, axis=1)
    return ClusterFit(
        booster=booster,
        best_iteration=best,
        rounds=booster.current_iteration(),
        seconds=seconds,
        valid_auc=aucs,
        valid_raw=both[0],
        valid_y=both[1].astype(int),
        example=valid[names].head(5),
    )


def _hist_part(
    model_str: str, n_iter: int, calibrator: Calibrator, frame: Any, names: list[str]
) -> dict[str, tuple[hm.ScoreHistogram, hm.ScoreHistogram]]:
    """Worker task: per split, histograms of the raw and the calibrated probabilities."""

    booster = lgb.Booster(model_str=model_str)
    raw = compiled.predict(booster, frame[names].to_numpy(dtype=np.float32), num_iteration=n_iter)
    cal = calibrator.apply(raw)
    y = frame["label"].to_numpy().astype(int)
    split = frame["split"].astype(str).to_numpy()
    out = {}
    for s in ("train", "valid", "oot"):
        m = split == s
        out[s] = (hm.histogram(y[m], raw[m]), hm.histogram(y[m], cal[m]))
    return out


def _add_hists(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {s: (a[s][0] + b[s][0], a[s][1] + b[s][1]) for s in a}


def score_histograms(
    client: Any, path: Path, names: list[str], booster: Any, n_iter: int, calibrator: Calibrator
) -> dict[str, tuple[hm.ScoreHistogram, hm.ScoreHistogram]]:
    """Every row of the feature table scored on the cluster; per split, the histograms of
    the raw and the calibrated probability by label (summed there: no score comes back)."""
    import dask.dataframe as dd  # optional dependency, only for engine=dask
    from dask import delayed  # Dask: only with engine=dask

    frame = dd.read_parquet(str(path), columns=[*names, "label", "split"])
    model_str = client.scatter(booster.model_to_string(), broadcast=True)
    parts = [
        delayed(_hist_part)(model_str, n_iter, calibrator, part, names)
        for part in frame.to_delayed()
    ]
    result: dict[str, tuple[hm.ScoreHistogram, hm.ScoreHistogram]] = _tree_sum(
        client, parts, _add_hists
    )
    return result


@dataclass
class ClusterTraining:
    """What the train stage publishes for a model trained and evaluated on the cluster."""

    fit: ClusterFit
    params: dict[str, Any]
    calibrator: Calibrator
    metrics: dict[str, dict[str, float]]  # per split, from histograms
    gains: list[dict[str, float]]  # deciles of the evaluation split
    part: dict[str, Any]  # the train part of the run summary


def split_rows(path: Path, split: str) -> int:
    """Rows of one split, counted on the cluster."""
    import dask.dataframe as dd  # optional dependency, only for engine=dask

    return int(len(dd.read_parquet(str(path), columns=["label"], filters=[("split", "==", split)])))


def train_on_cluster(
    client: Any,
    path: Path,
    names: list[str],
    model_cfg: ModelConfig,
    seed: int,
    monotone: list[int] | None,
) -> ClusterTraining:
    """Train, calibrate on the collected validation scores, evaluate every split from histograms."""
    m = model_cfg
    n_train = split_rows(path, "train")
    params = train_core.lgb_params(m, seed, 1, monotone, n_train=n_train)
    params.pop("num_threads")  # each worker trains with its own threads
    fit = fit_on_cluster(
        client, path, names, params, int(m.n_estimators), int(m.early_stopping_rounds)
    )
    calibrator = cal_core.fit(str(m.calibration), fit.valid_raw, fit.valid_y)
    hists = score_histograms(client, path, names, fit.booster, fit.best_iteration, calibrator)
    n_bins = int(m.calibration_bins)
    metrics = {s: hm.score_metrics(r, c, n_bins) for s, (r, c) in hists.items() if r.n}
    split = "oot" if "oot" in metrics else "valid"
    part: dict[str, Any] = {
        "mode": "simulator",
        "model": {
            "engine": "dask",
            "best_iteration": fit.best_iteration,
            "train_seconds": fit.seconds,
            "rounds_grown": fit.rounds,
            "workers": n_workers(client),
        },
        "calibration": {
            "method": calibrator.method,
            "valid_ece_before": metrics["valid"]["ece_raw"],
            "valid_ece_after": metrics["valid"]["ece"],
        },
        "evaluation": {"method": "histograms", "score_bins": hm.N_BINS, "curve_bins": CURVE_BINS},
        "valid": metrics["valid"],
    }
    if split == "oot":
        part["calibration"].update(
            oot_ece_before=metrics["oot"]["ece_raw"], oot_ece_after=metrics["oot"]["ece"]
        )
        part["score_psi"] = hm.psi(hists["train"][0], hists["oot"][0])
        part["oot"] = metrics["oot"]
    return ClusterTraining(fit, params, calibrator, metrics, hm.gains(hists[split][0]), part)
