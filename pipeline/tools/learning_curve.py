"""``make learning-curve``: what the model learns from more data, on one common set of rows.

``python -m pipeline.tools.learning_curve [hydra overrides]`` trains the configured
model (same features, same parameters, same early stopping) on worlds of 0.25, 0.5, 1,
2 and 4 times ``data.n_borrowers`` (same seed, the same law; the oracle is not
simulated in them) and scores every model on the same rows: the out-of-time rows with
oracle futures of a *scoring world*, a world of ``data.n_borrowers`` drawn with seed
``data.seed + 1``. Those rows are out-of-time and out-of-borrower for every model, and
the two oracles are scored on them too.

It writes ``<paths.models_dir>/learning_curve.json``: per size ``factor``,
``n_borrowers``, ``auc`` and ``auc_se`` (DeLong) on the common rows; the oracles' AUCs
there; and a fitted asymptote ``auc(n) = a - b * n^-c`` with ``a`` the AUC a model of
these features and parameters would reach with unlimited borrowers, its standard error
and a 95% interval from a bootstrap of the common rows (each resample refits the
curve). The interval covers the noise of the scoring rows only: the training worlds are
one draw each, and the curve's form is an assumption. With tracking on, the figures go
to the MLflow experiment ``learning_curve``. The report shows the model between the
asymptote and the oracles when the file exists.

The worlds are written under ``<paths.root>/learning_curve/`` (one folder per size and
one for the scoring world); a second call reuses each stage whose inputs are unchanged.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from pipeline.adapters.catalog import Catalog, load_model
from pipeline.adapters.tracking import Tracker, from_config
from pipeline.base.config import REPO_ROOT, ConfigError, register_configs
from pipeline.core import evaluation as eval_core
from pipeline.core import train as train_core
from pipeline.stages.common import say
from pipeline.stages.driver import execute

#: Sizes of the training worlds, as multiples of ``data.n_borrowers``.
FACTORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
#: Bootstrap resamples of the common rows for the asymptote's uncertainty.
BOOTSTRAP = 200
#: Exponents ``c`` of ``a - b * n^-c`` the fit chooses among.
EXPONENTS = np.round(np.arange(0.1, 2.001, 0.05), 2)


def compose_config(overrides: list[str]) -> Any:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def _world(overrides: list[str], root: Path, extra: list[str], stages: list[str]) -> Any:
    """Run ``stages`` for the base config with ``extra`` overrides under ``root``."""
    cfg = None
    for stage in stages:
        cfg = compose_config(
            [*overrides, *extra, f"paths.root={root}", "tracking=off", f"stage={stage}"]
        )
        execute(cfg, [])
    return cfg


def common_rows(cfg: Any) -> pd.DataFrame:
    """The scoring world's out-of-time rows with oracle futures: keys, label, features
    and both oracles."""
    cat = Catalog.of(cfg)
    feats = cat.read("features").to_pandas()
    feats = feats[feats.split == "oot"]
    cols = ["borrower_id", "snapshot", "p_full", "p_observable"]
    oracle = cat.read("oracle", cols).to_pandas()
    rows = feats.merge(oracle, on=["borrower_id", "snapshot"], how="inner")
    if rows.label.nunique() < 2:
        raise ConfigError(
            f"learning curve: the scoring world under {cat.models.parent} has no out-of-time rows of "
            "both labels with oracle futures; raise data.n_borrowers or simulator.oracle_rows"
        )
    return rows.sort_values(["snapshot", "borrower_id"], kind="stable").reset_index(drop=True)


def score_rows(cfg: Any, rows: pd.DataFrame) -> tuple[np.ndarray, int]:
    """The model trained under ``cfg`` on ``rows``: its probabilities and tree count."""
    booster, meta = load_model(Catalog.of(cfg).models)
    names = [str(n) for n in meta["feature_names"]]
    X = rows[names].to_numpy(dtype=np.float32)
    return train_core.predict(booster, X), int(booster.num_trees())


def fit_asymptote(n: np.ndarray, auc: np.ndarray, se: np.ndarray) -> dict[str, float]:
    """``auc(n) = a - b * n^-c`` by weighted least squares (weights ``1/se^2``): for each
    ``c`` of :data:`EXPONENTS` the best ``a, b`` are linear; the ``c`` of least residual
    wins. ``b`` is held at 0 or above (more data does not hurt on average)."""
    n, auc = np.asarray(n, dtype=float), np.asarray(auc, dtype=float)
    w = 1.0 / np.maximum(np.asarray(se, dtype=float), 1e-6) ** 2
    best: dict[str, float] | None = None
    for c in EXPONENTS:
        x = -((n / n.max()) ** -float(c))  # scaled: b is the gain from the largest size on
        A = np.stack([np.ones_like(x), x], axis=1) * np.sqrt(w)[:, None]
        coef, *_ = np.linalg.lstsq(A, auc * np.sqrt(w), rcond=None)
        a, b = float(coef[0]), float(coef[1])
        if b < 0:
            a, b = float(np.sum(w * auc) / np.sum(w)), 0.0
        if a > 1.0:  # no AUC exceeds 1: the best curve through (1, ...) instead
            a = 1.0
            b = max(0.0, float(np.sum(w * x * (auc - a)) / np.sum(w * x * x)))
        resid = float(np.sum(w * (auc - (a + b * x)) ** 2))
        if best is None or resid < best["chi2"]:
            best = {"a": a, "b": b, "c": float(c), "chi2": resid}
    assert best is not None
    return best


def curve(y: np.ndarray, scores: list[np.ndarray], n: list[int], seed: int = 0) -> dict[str, Any]:
    """AUCs of the models on the same rows, the fitted asymptote and its bootstrap."""
    auc, cov = eval_core.delong(y, scores)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    fit = fit_asymptote(np.array(n), auc, se)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() == y[i].max():
            continue
        a_i = np.array([_auc(y[i], s[i]) for s in scores])
        boot.append(fit_asymptote(np.array(n), a_i, se)["a"])
    b = np.array(boot)
    return {
        "auc": [float(v) for v in auc],
        "auc_se": [float(v) for v in se],
        "asymptote": {
            "auc": fit["a"],
            "se": float(b.std(ddof=1)) if len(b) > 1 else float("nan"),
            "ci95": [float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))]
            if len(b)
            else [float("nan")] * 2,
            "exponent": fit["c"],
            "gain_beyond_largest": fit["b"],
            "bootstrap": int(len(b)),
            "form": "auc(n) = a - b * (n / n_largest)^-c, weighted by 1/se^2",
        },
    }


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score  # sklearn: only the bootstrap needs it

    return float(roc_auc_score(y, s))


def learning_curve(overrides: list[str], factors: tuple[float, ...] = FACTORS) -> dict[str, Any]:
    """Train at each size, score on the common rows, fit; returns what the file holds."""
    base = compose_config([*overrides, "stage=train"])
    n0, seed = int(base.data.n_borrowers), int(base.data.seed)
    work = Path(str(base.paths.root)) / "learning_curve"
    t0 = time.perf_counter()
    scoring = _world(
        overrides, work / "scoring", [f"data.seed={seed + 1}"], ["generate", "features"]
    )
    rows = common_rows(scoring)
    y = rows.label.to_numpy().astype(int)
    scores: list[np.ndarray] = []
    sizes: list[dict[str, Any]] = []
    for f in factors:
        n = max(1, int(round(n0 * f)))
        say(f"learning curve: training on {n:,} borrowers ({f:g}x)")
        cfg = _world(
            overrides,
            work / f"x{f:g}",
            [f"data.n_borrowers={n}", "simulator.oracle_rows=0"],
            ["generate", "features", "train"],
        )
        p, trees = score_rows(cfg, rows)
        scores.append(p)
        sizes.append({"factor": float(f), "n_borrowers": n, "trees": trees})
    fitted = curve(y, scores, [int(s["n_borrowers"]) for s in sizes], seed)
    for s, a, e in zip(sizes, fitted["auc"], fitted["auc_se"], strict=True):
        s.update(auc=a, auc_se=e)
    oracle_auc, oracle_cov = eval_core.delong(
        y, [rows.p_full.to_numpy(), rows.p_observable.to_numpy()]
    )
    return {
        "sizes": sizes,
        "asymptote": fitted["asymptote"],
        "scoring": {
            "seed": seed + 1,
            "n_borrowers": n0,
            "n_rows": int(len(rows)),
            "n_positives": int(y.sum()),
            "snapshots": sorted(int(s) for s in rows.snapshot.unique()),
            "rows": "out-of-time rows with oracle futures of a world drawn with another seed: "
            "out-of-time and out-of-borrower for every model",
        },
        "oracles": {
            "full_auc": float(oracle_auc[0]),
            "full_auc_se": float(np.sqrt(oracle_cov[0, 0])),
            "trait_auc": float(oracle_auc[1]),
            "trait_auc_se": float(np.sqrt(oracle_cov[1, 1])),
        },
        "seconds": time.perf_counter() - t0,
    }


def log(tracker: Tracker, out: dict[str, Any], path: Path) -> None:
    """The curve's figures (one step per size) and the file, to MLflow."""
    if not tracker.enabled:
        return
    with tracker.run("learning_curve", tags={"stages": "learning_curve"}):
        for i, s in enumerate(out["sizes"]):
            tracker.log_metrics(
                {"auc": s["auc"], "auc_se": s["auc_se"], "n_borrowers": s["n_borrowers"]}, step=i
            )
        a = out["asymptote"]
        tracker.log_metrics(
            {
                "asymptote_auc": a["auc"],
                "asymptote_se": a["se"],
                "trait_oracle_auc": out["oracles"]["trait_auc"],
                "full_oracle_auc": out["oracles"]["full_auc"],
            }
        )
        tracker.log_artifact(path, "learning_curve")


def lines(out: dict[str, Any]) -> list[str]:
    sc, a, o = out["scoring"], out["asymptote"], out["oracles"]
    text = [
        f"learning curve on {sc['n_rows']:,} common rows ({sc['n_positives']:,} closures; "
        f"out-of-time rows with oracle futures of a world of seed {sc['seed']})",
    ]
    text += [
        f"  {s['factor']:>5g}x {s['n_borrowers']:>9,} borrowers  AUC {s['auc']:.4f} +- "
        f"{s['auc_se']:.4f}  ({s['trees']} trees)"
        for s in out["sizes"]
    ]
    text.append(
        f"  asymptote {a['auc']:.4f} +- {a['se']:.4f} (95% {a['ci95'][0]:.4f}-{a['ci95'][1]:.4f}, "
        f"exponent {a['exponent']:g}; bootstrap of the common rows only); trait oracle "
        f"{o['trait_auc']:.4f} +- {o['trait_auc_se']:.4f}, full-state oracle "
        f"{o['full_auc']:.4f} +- {o['full_auc_se']:.4f} on the same rows"
    )
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.tools.learning_curve", description=__doc__.split("\n")[0]
    )
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (data.n_borrowers=...)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        out = learning_curve(list(args.overrides))
    except ConfigError as exc:
        print(f"learning curve: {exc}", file=sys.stderr)
        return 2
    base = compose_config([*args.overrides, "stage=train"])
    path = Catalog.of(base).write("learning_curve", out)
    log(from_config(base.tracking), out, path)
    say("\n".join([*lines(out), f"-> {path}"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
