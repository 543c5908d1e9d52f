"""``make bench``: every stage timed against a reference doing the same work, side by side.

``python -m pipeline.tools.bench [hydra overrides]`` (e.g. ``bench.n_borrowers=100000``) runs,
for each row, our stage and then its reference, each in a fresh Python process so that
the peak resident memory of one measurement never leaks into another. Times exclude
interpreter start-up and imports. One table is printed, written to
``<paths.models_dir>/bench/bench.json`` and logged to the MLflow experiment ``bench``.

Rows and references:

``generate``
    ours: the generate stage (with ``data.n_jobs=1``); reference: numpy drawing as many
    uniform doubles as our simulator consumed 64-bit random words and writing them to
    Parquet (zstd, as our tables). The count is taken during our run (:class:`RandomWords`):
    every PCG64 stream the simulator opens is recorded with its first state, and the
    words each consumed are read from how far its state moved (one uniform double is one
    word; the oracle's Monte Carlo futures are included).
``oracle``
    ours: the time the generate row spent in the oracle's Monte Carlo futures (the
    simulator's ``_oracle``, timed and its random words counted apart inside the generate
    measurement: no second run); reference: numpy drawing as many uniform doubles as the
    oracle drew, kept in memory (the oracle writes a few columns per sampled row).
``features``
    ours: the features stage (read and validate the raw tables, compute, stability
    report, write); reference: :mod:`pipeline.tools.reference_sql`, an independent DuckDB SQL
    implementation reading the same Parquet and writing Parquet. The two tables are
    then compared: same rows, same labels, every feature equal within float32 tolerance.
``train``
    ours: the train stage (read, fit, calibrate, evaluate, baselines, plots, write);
    reference: a bare ``lightgbm.train`` (with its ``Dataset``) on the same matrix, the
    same parameters and the same early stopping, the matrix loaded before the clock
    starts.
``score``
    ours: the out-of-time rows scored by the compiled model (:mod:`pipeline.core.compiled`,
    the QuickScorer kernel the stages use); reference: LightGBM's ``Booster.predict`` on the
    same rows, the same float32 matrix loaded before either clock starts. Each side is
    called :data:`SCORE_REPEATS` times and its median time read (a call takes a tenth of
    a second at 100k, within one scheduler hiccup). The model's
    compilation (its dump read into the kernel's arrays, and the kernel's first call) is
    timed apart as ``compile_s``; the check is the largest difference of the two
    probabilities (goal <= 1e-9).
``explain``
    ours: the explain stage; reference: ``shap.TreeExplainer(model).shap_values`` on
    the same rows, whose values are compared with ours (max absolute difference in
    log-odds, goal <= 1e-4).
``end_to_end``
    ours: the whole pipeline in one process (``python -m pipeline run``, tracked in the
    ``bench`` experiment, no model registration); reference: the sum of the references.

The benchmark never asserts on time; the goals below are reported, not enforced.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from pipeline.adapters.catalog import Catalog, load_model
from pipeline.adapters.tracking import Tracker, TrackingError, from_config
from pipeline.base.config import (
    REPO_ROOT,
    Config,
    ConfigError,
    physical_cores,
    register_configs,
    validate,
)
from pipeline.base.io import DataError, write_json, write_text
from pipeline.core import compiled
from pipeline.core import explain as explain_core
from pipeline.core import features as feat_core
from pipeline.core import simulate as sim_core
from pipeline.core import train as train_core
from pipeline.stages import explain as explaining
from pipeline.stages import features as featurize
from pipeline.stages import train as training
from pipeline.stages.driver import run_pipeline
from pipeline.stages.features import feature_spec
from pipeline.stages.plan import stages_for
from pipeline.tools.reference_sql import SqlFeatureParams, compare_tables, write_features_sql

ROWS = ("generate", "oracle", "features", "train", "score", "explain", "end_to_end")
#: the rows that time a stage of the pipeline, in the pipeline's order (each needs the ones before)
STAGE_ROWS = ("generate", "features", "train", "explain")
#: goals, as ratios ours / reference (end_to_end: peak memory at 1,000,000 borrowers)
GOALS: dict[str, float] = {
    "generate": 3.0,
    "oracle": 2.0,
    "features": 1.0,
    "train": 1.15,
    "score": 0.2,
    "explain": 0.5,
}
#: the largest difference between the compiled and LightGBM's probabilities the score row accepts
SCORE_TOLERANCE = 1e-9
E2E_MEMORY_GOAL_MB = 8 * 1024
E2E_GOAL_BORROWERS = 1_000_000
SHAP_TOLERANCE = 1e-4


# --------------------------------------------------------------------------- config


def compose_bench_config(overrides: list[str]) -> Any:
    """The project's config with command-line overrides (the bench's only Hydra use)."""

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*overrides, "stage=bench"])


def check_rows(rows: list[str]) -> list[str]:
    for r in rows:
        if r not in ROWS:
            raise ConfigError(
                f"config key 'bench.rows' = {rows!r}: unknown row {r!r}; known: {', '.join(ROWS)}"
            )
    chosen = [r for r in ROWS if r in rows]
    stages = [r for r in chosen if r in STAGE_ROWS]
    if "oracle" in chosen and "generate" not in chosen:
        raise ConfigError(
            f"config key 'bench.rows' = {rows!r}: the row 'oracle' needs 'generate' (it is timed inside it)"
        )
    if "score" in chosen and "train" not in chosen:
        raise ConfigError(
            f"config key 'bench.rows' = {rows!r}: the row 'score' needs 'train' (the model it scores)"
        )
    if stages and stages != list(STAGE_ROWS[: len(stages)]):
        raise ConfigError(
            f"config key 'bench.rows' = {rows!r}: a stage row needs every stage row before it "
            f"({' -> '.join(STAGE_ROWS)})"
        )
    if not chosen:
        raise ConfigError(f"config key 'bench.rows' = {rows!r}: choose at least one row")
    return chosen


def _run_config(cfg: Config, work: Path, tracking: bool) -> Any:
    """A resolved copy of ``cfg`` that writes under ``work`` and recomputes every stage."""

    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    c["data"]["n_borrowers"] = int(cfg.bench.n_borrowers)
    data = work / "data"
    c["paths"].update(
        data_dir=str(data),
        raw_dir=str(data / "raw"),
        truth_dir=str(data / "truth"),
        processed_dir=str(data / "processed"),
        models_dir=str(work / "models"),
    )
    c["force"] = True
    c["stage"] = "run"
    c["tracking"]["enabled"] = bool(tracking and cfg.tracking.enabled)
    c["tracking"]["experiment"] = "bench"
    c["tracking"]["registered_model"] = ""  # bench models stay out of the registry
    return OmegaConf.merge(OmegaConf.structured(Config), c)


def _load_run_config(path: str) -> Any:

    return OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))


# --------------------------------------------------------------------------- measuring


def peak_rss_mb() -> float:
    """Peak resident memory of this process (or of its largest child), in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes vs KiB
    return max(own, kids) / scale


#: PCG64's multiplier (numpy's ``PCG64`` steps its 128-bit state as ``state * MULT + inc``)
PCG64_MULT = 0x2360ED051FC65DA44385DF649FCCF645
_M128 = (1 << 128) - 1


def pcg64_steps(start: int, end: int, inc: int) -> int:
    """How many steps (64-bit words) a PCG64 stream went from state ``start`` to ``end``.

    The distance between two states of a linear congruential generator modulo 2**128,
    found bit by bit (O'Neill's ``distance`` in the PCG library): the low bits of the
    state only depend on the low bits of the step count.
    """
    mult, plus, cur, steps, bit = PCG64_MULT, inc, start, 0, 1
    while cur != end:
        if (cur & bit) != (end & bit):
            cur = (cur * mult + plus) & _M128
            steps |= bit
        bit <<= 1
        plus = ((mult + 1) * plus) & _M128
        mult = (mult * mult) & _M128
    return steps


class RandomWords:
    """Counts the 64-bit random words every PCG64 stream made while installed consumed.

    ``numpy.random.default_rng`` and ``numpy.random.PCG64`` are replaced by versions that
    record each bit generator and its first state; :meth:`words` sums how far each has
    stepped since. Whatever a generator is used for (a variate from any sampler,
    numba-free or through a subclass of ``Generator``), the count is the random input it
    took, and the streams are unchanged (the same seeds give the same numbers).
    """

    def __init__(self) -> None:
        # per stream: the bit generator, its state when last read, its increment
        self.streams: list[list[Any]] = []
        self._counted = 0  # the words counted up to those last-read states
        self._pcg64 = np.random.PCG64
        self._default_rng = np.random.default_rng

    def _record(self, bg: Any) -> Any:
        state = bg.state["state"]
        self.streams.append([bg, int(state["state"]), int(state["inc"])])
        return bg

    def install(self) -> RandomWords:
        real_pcg64 = self._pcg64

        def pcg64(*args: Any, **kwargs: Any) -> Any:
            return self._record(real_pcg64(*args, **kwargs))

        def default_rng(seed: Any = None) -> Any:
            if isinstance(seed, np.random.Generator):
                return seed
            if isinstance(seed, np.random.BitGenerator):
                return np.random.Generator(seed)
            return np.random.Generator(pcg64(seed))

        np.random.PCG64 = pcg64  # type: ignore[assignment,misc]
        np.random.default_rng = default_rng
        return self

    def uninstall(self) -> None:
        np.random.PCG64 = self._pcg64  # type: ignore[misc]
        np.random.default_rng = self._default_rng

    def words(self) -> int:
        """Words consumed so far; each stream is read from where the last call left it, so
        a call costs little for streams not used since (it is made inside timed spans)."""
        for stream in self.streams:
            bg, last, inc = stream
            now = int(bg.state["state"]["state"])
            if now != last:
                self._counted += pcg64_steps(last, now, inc)
                stream[1] = now
        return self._counted


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return out, seconds, peak_rss_mb()


#: the score row's calls per side: one call is a tenth of a second at 100k, where one
#: scheduler hiccup on a shared machine moves the ratio by half; the median of five is
#: read, the same count on both sides
SCORE_REPEATS = 5


def _timed_median(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, list[float]]:
    """``fn`` called ``repeats`` times: its last output, the median wall time, every time."""
    times: list[float] = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times)), times


def _off() -> Any:

    return Tracker(uri="", artifact_root="", experiment="bench", enabled=False)


def _wrap_timer(module: Any, name: str, acc: dict[str, float], key: str) -> None:
    """Replace ``module.name`` by a wrapper adding its run time to ``acc[key]``."""
    fn = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[key] = acc.get(key, 0.0) + time.perf_counter() - t0

    setattr(module, name, timed)


# --------------------------------------------------------------------------- the jobs
# Each runs in its own process: imports first, then the clock, then any checks.


def _generate_ours(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:

    # the runners package exports the stage function under the module's own name
    gen_runner = importlib.import_module("pipeline.stages.generate")

    parts: dict[str, float] = {}
    _wrap_timer(sim_core, "simulate_chunk", parts, "simulate_s")
    _wrap_timer(gen_runner, "data_card", parts, "data_card_s")
    # one process, as the reference: and the random words are counted in this one
    cfg.data.n_jobs = 1
    counter = RandomWords().install()
    oracle = {"oracle_s": 0.0, "oracle_random_numbers": 0}
    inner = sim_core._oracle

    def counted_oracle(*args: Any, **kwargs: Any) -> Any:
        t0, n0 = time.perf_counter(), counter.words()
        try:
            return inner(*args, **kwargs)
        finally:
            oracle["oracle_s"] += time.perf_counter() - t0
            oracle["oracle_random_numbers"] += counter.words() - n0

    sim_core._oracle = counted_oracle
    res, seconds, rss = _timed(lambda: gen_runner.generate(cfg, _off()))
    counts = res.counts
    return {
        "seconds": seconds,
        "peak_rss_mb": rss,
        "random_numbers": counter.words(),
        "borrower_months": int(counts.get("account_months", 0)),
        **oracle,
        **parts,
    }


def _generate_reference(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:

    count = int(task["random_numbers"])
    out = Path(task["work"]) / "reference" / "random.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("u", pa.float64())])

    def work() -> None:
        rng = np.random.default_rng(int(cfg.data.seed))
        with pq.ParquetWriter(out, schema, compression="zstd") as w:
            left = count
            while left > 0:
                k = min(left, 1 << 21)
                w.write_table(pa.table({"u": rng.random(k)}, schema=schema))
                left -= k

    _, seconds, rss = _timed(work)
    return {"seconds": seconds, "peak_rss_mb": rss, "random_numbers": count}


def _oracle_reference(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:

    count = int(task["random_numbers"])

    def work() -> float:
        rng = np.random.default_rng(int(cfg.data.seed))
        total, left = 0.0, count
        while left > 0:  # in blocks, as the oracle draws them: no array of them all
            k = min(left, 1 << 21)
            total += float(rng.random(k)[0])
            left -= k
        return total

    _, seconds, rss = _timed(work)
    return {"seconds": seconds, "peak_rss_mb": rss, "random_numbers": count}


def sql_params(cfg: Config) -> Any:
    """The SQL reference's parameters: the same values as the feature stage's spec."""

    return SqlFeatureParams(**asdict(feature_spec(cfg)))


def _features_ours(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:

    parts: dict[str, float] = {}
    _wrap_timer(featurize, "read_raw", parts, "read_validate_s")
    _wrap_timer(feat_core, "block_features", parts, "block_features_s")
    _wrap_timer(featurize, "_statuses", parts, "status_pass_s")
    _wrap_timer(feat_core.SocialLookup, "build", parts, "social_lookup_s")
    _wrap_timer(feat_core, "to_table", parts, "to_table_s")
    _wrap_timer(featurize, "stability_report", parts, "stability_report_s")
    res, seconds, rss = _timed(lambda: featurize.features(cfg, _off()))
    return {"seconds": seconds, "peak_rss_mb": rss, "rows": int(res.rows), **parts}


def _features_reference(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:

    out = Path(task["work"]) / "reference" / "features_sql.parquet"
    params = sql_params(cfg)
    raw = Path(cfg.paths.raw_dir)
    _, seconds, rss = _timed(lambda: write_features_sql(raw, out, params))
    ours = Catalog.of(cfg).read("features")
    cmp = compare_tables(ours, pq.read_table(out))
    return {"seconds": seconds, "peak_rss_mb": rss, "comparison": cmp.as_dict()}


def _train_ours(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:

    parts: dict[str, float] = {}
    _wrap_timer(train_core, "fit", parts, "fit_s")
    _, seconds, rss = _timed(lambda: training.train(cfg, _off()))
    meta = json.loads(Catalog.of(cfg).path("model_meta").read_text())
    return {
        "seconds": seconds,
        "peak_rss_mb": rss,
        "best_iteration": int(meta.get("best_iteration", 0)),
        **parts,
    }


def _train_reference(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:

    cat = Catalog.of(cfg)
    meta = json.loads(cat.path("model_meta").read_text())
    names = list(meta["feature_names"])
    params = dict(meta["params"])
    t = cat.read("features", ["split", "label", *names]).to_pandas()
    mats = {}
    for s in ("train", "valid"):
        g = t[t.split == s]
        mats[s] = (g[names].to_numpy(dtype=np.float32), g.label.to_numpy().astype(int))
    del t
    rounds, patience = int(cfg.model.n_estimators), int(cfg.model.early_stopping_rounds)

    def work() -> Any:
        dtrain = lgb.Dataset(mats["train"][0], label=mats["train"][1], feature_name=names)
        dvalid = lgb.Dataset(mats["valid"][0], label=mats["valid"][1], reference=dtrain)
        return lgb.train(
            params,
            dtrain,
            num_boost_round=rounds,
            valid_sets=[dvalid],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(patience, verbose=False)],
        )

    booster, seconds, rss = _timed(work)
    best = int(booster.best_iteration or booster.current_iteration())
    ours_text = cat.path("model").read_text()
    same = booster.model_to_string(num_iteration=best) == ours_text
    return {"seconds": seconds, "peak_rss_mb": rss, "best_iteration": best, "same_model": same}


def _score_matrix(cfg: Config) -> tuple[Any, np.ndarray]:
    """The trained booster and its out-of-time rows, as the scoring stage feeds them (float32)."""
    cat = Catalog.of(cfg)
    booster, meta = load_model(Path(cfg.paths.models_dir))
    names = list(meta["feature_names"])
    X = cat.read("features", names, split="oot").to_pandas()[names].to_numpy(dtype=np.float32)
    return booster, np.ascontiguousarray(X)


def _score_ours(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:

    booster, X = _score_matrix(cfg)
    t0 = time.perf_counter()
    model, why = compiled.compile_booster(booster)
    if model is None:
        raise RuntimeError(f"bench: the model cannot be compiled ({why})")
    compiled.predict_compiled(model, X[:8])  # the kernel's first call: loaded or compiled
    compile_s = time.perf_counter() - t0
    p, seconds, times = _timed_median(lambda: compiled.predict_compiled(model, X), SCORE_REPEATS)
    np.save(Path(task["work"]) / "jobs" / "score.ours.npy", p)
    return {
        "seconds": seconds,
        "times_s": [round(t, 4) for t in times],
        "peak_rss_mb": peak_rss_mb(),
        "rows": int(len(X)),
        "trees": model.n_trees,
        "compile_s": round(compile_s, 3),
        "rows_per_s": round(len(X) / max(seconds, 1e-9)),
    }


def _score_reference(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:

    booster, X = _score_matrix(cfg)
    p, seconds, times = _timed_median(lambda: np.asarray(booster.predict(X)), SCORE_REPEATS)
    ours = np.load(Path(task["work"]) / "jobs" / "score.ours.npy")
    gap = float(np.max(np.abs(ours - p))) if len(p) else 0.0
    return {
        "seconds": seconds,
        "times_s": [round(t, 4) for t in times],
        "peak_rss_mb": peak_rss_mb(),
        "rows_per_s": round(len(X) / max(seconds, 1e-9)),
        "max_abs_diff": gap,
        "within_tolerance": bool(len(ours) == len(p) and gap <= SCORE_TOLERANCE),
    }


def _explain_ours(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:

    calls: list[tuple[np.ndarray, np.ndarray]] = []
    parts: dict[str, float] = {}
    contributions = explain_core.contributions

    def stash(booster: Any, X: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = contributions(booster, X, *args, **kwargs)
        parts["shap_s"] = parts.get("shap_s", 0.0) + time.perf_counter() - t0
        calls.append((np.asarray(X), np.asarray(out[0])))
        return out

    explain_core.contributions = stash
    res, seconds, rss = _timed(lambda: explaining.explain(cfg, _off()))
    if not calls:
        raise RuntimeError("the explain stage computed no SHAP values")
    X, contrib = max(calls, key=lambda c: len(c[0]))  # the batch of out-of-time rows
    ref = Path(task["work"]) / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    np.save(ref / "explain_X.npy", X)
    np.save(ref / "explain_contrib.npy", contrib)
    return {
        "seconds": seconds,
        "peak_rss_mb": rss,
        "rows": int(len(X)),
        "method": str(res.method),
        **parts,
    }


def _explain_reference(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:
    import shap  # shap: slow to import, needed only here

    ref = Path(task["work"]) / "reference"
    X = np.load(ref / "explain_X.npy")
    booster = lgb.Booster(model_file=str(Catalog.of(cfg).path("model")))

    def work() -> Any:
        return shap.TreeExplainer(booster).shap_values(X)

    values, seconds, rss = _timed(work)
    if isinstance(values, list):  # older SHAP: one array per class
        values = values[-1]
    values = np.asarray(values, dtype=np.float64)
    ours = np.load(ref / "explain_contrib.npy")[:, : values.shape[1]]
    diff = float(np.max(np.abs(ours - values))) if values.size else 0.0
    return {
        "seconds": seconds,
        "peak_rss_mb": rss,
        "rows": int(len(X)),
        "max_abs_diff": diff,
        "within_tolerance": bool(diff <= SHAP_TOLERANCE),
    }


def _end_to_end_ours(cfg: Config, task: dict[str, Any]) -> dict[str, Any]:

    tracker = from_config(cfg.tracking)
    # the four stages the references stand for (policy and report are not benchmarked)
    stages = [s for s in stages_for("run", cfg) if s.name not in ("policy", "report")]
    _, seconds, rss = _timed(
        lambda: run_pipeline(cfg, tracker, stages, [f"data.n_borrowers={cfg.data.n_borrowers}"])
    )
    return {"seconds": seconds, "peak_rss_mb": rss, "stages": stages}


JOBS: dict[tuple[str, str], Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    ("generate", "ours"): _generate_ours,
    ("generate", "reference"): _generate_reference,
    ("oracle", "reference"): _oracle_reference,
    ("features", "ours"): _features_ours,
    ("features", "reference"): _features_reference,
    ("train", "ours"): _train_ours,
    ("train", "reference"): _train_reference,
    ("score", "ours"): _score_ours,
    ("score", "reference"): _score_reference,
    ("explain", "ours"): _explain_ours,
    ("explain", "reference"): _explain_reference,
    ("end_to_end", "ours"): _end_to_end_ours,
}


def _child(task_path: Path) -> None:
    task = json.loads(task_path.read_text())
    cfg = _load_run_config(task["config"])
    result = JOBS[(task["row"], task["side"])](cfg, task)
    Path(task["out"]).write_text(json.dumps(result, default=str))


def run_job(row: str, side: str, config_path: Path, work: Path, **extra: Any) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return what it reported."""
    jobs = work / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    out = jobs / f"{row}.{side}.json"
    task = {
        "row": row,
        "side": side,
        "config": str(config_path),
        "work": str(work),
        "out": str(out),
        **extra,
    }
    task_path = jobs / f"{row}.{side}.task.json"
    task_path.write_text(json.dumps(task))
    print(f"bench: {row} / {side} ...", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.tools.bench", "--child", str(task_path)],
        cwd=str(REPO_ROOT),
    )
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"bench: {row} / {side} failed (exit status {proc.returncode})")
    result: dict[str, Any] = json.loads(out.read_text())
    print(
        f"bench: {row} / {side}: {result['seconds']:.2f}s, peak {result['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    return result


# --------------------------------------------------------------------------- the table


def _check_text(name: str, ours: dict[str, Any], ref: dict[str, Any] | None) -> str:
    if ref is None:
        return ""
    if name == "generate":
        return f"{ours['random_numbers']:,} random words"
    if name == "oracle":
        return f"{ours['random_numbers']:,} random words drawn by the oracle's futures"
    if name == "features":
        c = ref["comparison"]
        if c["equal"]:
            return f"equal to SQL ({c['rows_ours']:,} rows)"
        return (
            f"DIFFERS from SQL: rows {c['same_rows']}, labels {c['same_labels']}, "
            f"{c['n_mismatched_values']} values off"
        )
    if name == "train":
        return f"{ours['best_iteration']} trees, same model: {ref['same_model']}"
    if name == "score":
        ok = "ok" if ref["within_tolerance"] else "TOO FAR"
        return (
            f"{ours['rows']:,} rows, {ours['trees']} trees, max |p diff| "
            f"{ref['max_abs_diff']:.1e} ({ok}), compile {ours['compile_s']:.2f}s"
        )
    if name == "explain":
        ok = "ok" if ref["within_tolerance"] else "TOO FAR"
        return f"max |SHAP diff| {ref['max_abs_diff']:.1e} ({ok})"
    return ""


def build_rows(
    n_borrowers: int, results: dict[str, dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in ROWS:
        if name not in results:
            continue
        ours = results[name]["ours"]
        ref = results[name].get("reference")
        row: dict[str, Any] = {
            "name": name,
            "ours_s": round(float(ours["seconds"]), 3),
            "reference_s": None,
            "ratio": None,
            "peak_rss_mb": round(float(ours["peak_rss_mb"]), 1),
            "reference_peak_rss_mb": None,
        }
        if name == "end_to_end":
            refs = [results[s]["reference"] for s in STAGE_ROWS if s in results]
            if len(refs) == len(STAGE_ROWS):
                ref = {
                    "seconds": sum(float(r["seconds"]) for r in refs),
                    "peak_rss_mb": max(float(r["peak_rss_mb"]) for r in refs),
                }
            row["goal"] = f"peak_rss_mb <= {E2E_MEMORY_GOAL_MB} at {E2E_GOAL_BORROWERS:,}"
            row["meets_goal"] = (
                bool(row["peak_rss_mb"] <= E2E_MEMORY_GOAL_MB)
                if n_borrowers >= E2E_GOAL_BORROWERS
                else None
            )
        if ref is not None:
            row["reference_s"] = round(float(ref["seconds"]), 3)
            row["ratio"] = round(float(ours["seconds"]) / max(float(ref["seconds"]), 1e-9), 3)
            row["reference_peak_rss_mb"] = round(float(ref["peak_rss_mb"]), 1)
        if name in GOALS:
            row["goal"] = f"ratio <= {GOALS[name]}"
            row["meets_goal"] = None if row["ratio"] is None else bool(row["ratio"] <= GOALS[name])
        row["check"] = _check_text(name, ours, ref if name != "end_to_end" else None)
        row["ours"] = {k: v for k, v in ours.items() if k not in ("seconds", "peak_rss_mb")}
        if ref is not None and name != "end_to_end":
            row["reference"] = {k: v for k, v in ref.items() if k not in ("seconds", "peak_rss_mb")}
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], n_borrowers: int) -> str:
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = f"{'name':<11} {'ours_s':>9} {'reference_s':>11} {'ratio':>7} {'peak_rss_mb':>11} {'ref_peak_mb':>11}  {'goal':<24} {'met':<5} check"
    lines = [f"=== bench: {n_borrowers:,} borrowers ===", head, "-" * len(head)]
    for r in rows:
        met = {True: "yes", False: "NO", None: "-"}[r.get("meets_goal")]
        lines.append(
            f"{r['name']:<11} {num(r['ours_s'], '9.2f')} {num(r['reference_s'], '11.2f')} "
            f"{num(r['ratio'], '7.2f')} {num(r['peak_rss_mb'], '11.0f')} "
            f"{num(r['reference_peak_rss_mb'], '11.0f')}  {r.get('goal', ''):<24} {met:<5} "
            f"{r.get('check', '')}"
        )
    return "\n".join(lines)


def run_bench(cfg: Config) -> dict[str, Any]:
    """Measure the configured rows; returns (and writes) the report."""

    validate(cfg)
    rows = check_rows(list(cfg.bench.rows))
    n = int(cfg.bench.n_borrowers)
    work = Path(cfg.paths.outputs_dir) / "bench" / f"n{n}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    stage_cfg = work / "stages.yaml"
    e2e_cfg = work / "end_to_end.yaml"
    OmegaConf.save(_run_config(cfg, work / "stages", tracking=False), stage_cfg)
    OmegaConf.save(_run_config(cfg, work / "end_to_end", tracking=True), e2e_cfg)

    t0 = time.perf_counter()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        for row in rows:
            if row == "oracle":  # measured inside the generate row: only its reference runs
                gen = results["generate"]["ours"]
                ours = {
                    "seconds": gen["oracle_s"],
                    "peak_rss_mb": gen["peak_rss_mb"],
                    "random_numbers": gen["oracle_random_numbers"],
                    "share_of_generate": round(gen["oracle_s"] / max(gen["seconds"], 1e-9), 3),
                }
                extra = {"random_numbers": ours["random_numbers"]}
                ref = run_job(row, "reference", stage_cfg, work / "stages", **extra)
                results[row] = {"ours": ours, "reference": ref}
                continue
            if row == "end_to_end":
                results[row] = {"ours": run_job(row, "ours", e2e_cfg, work / "end_to_end")}
                continue
            ours = run_job(row, "ours", stage_cfg, work / "stages")
            extra = {"random_numbers": ours["random_numbers"]} if row == "generate" else {}
            ref = run_job(row, "reference", stage_cfg, work / "stages", **extra)
            results[row] = {"ours": ours, "reference": ref}
    finally:
        if not cfg.bench.keep_work:
            shutil.rmtree(work, ignore_errors=True)

    table_rows = build_rows(n, results)
    report: dict[str, Any] = {
        "n_borrowers": n,
        "rows": table_rows,
        "machine": {
            "cpu_count": os.cpu_count(),
            "physical_cores": physical_cores(),
            "platform": sys.platform,
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "work_dir": str(work) if cfg.bench.keep_work else None,
    }
    out = Path(cfg.paths.models_dir) / "bench" / "bench.json"
    write_json(report, out)
    table = format_table(table_rows, n)
    print("\n" + table + f"\n-> {out}", flush=True)

    tracker = Tracker(
        uri=str(cfg.tracking.uri),
        artifact_root=str(cfg.tracking.artifact_root),
        experiment="bench",
        enabled=bool(cfg.tracking.enabled),
    )
    with tracker.run(f"bench:{n}", tags={"n_borrowers": str(n)}):
        tracker.log_params({"n_borrowers": n, "rows": ",".join(rows), **report["machine"]})
        metrics: dict[str, float] = {}
        for r in table_rows:
            for key in ("ours_s", "reference_s", "ratio", "peak_rss_mb", "reference_peak_rss_mb"):
                if r.get(key) is not None:
                    metrics[f"{r['name']}.{key}"] = float(r[key])
        tracker.log_metrics(metrics)
        tracker.log_artifact(out, "bench")
        table_path = out.with_name("bench.txt")

        write_text(table + "\n", table_path)
        tracker.log_artifact(table_path, "bench")
    return report


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--child"]:
        _child(Path(args[1]))
        return

    try:
        run_bench(compose_bench_config(args))
    except (ConfigError, DataError, TrackingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
