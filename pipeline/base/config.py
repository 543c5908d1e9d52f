"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore, and checks.

The YAML files under ``conf/`` fill these schemas; a key that is not declared here
fails at composition time, and :func:`validate` rejects values that are out of range
before any stage does work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from pipeline.base.causes import CAUSES, OCCUPATIONS

REPO_ROOT = Path(__file__).resolve().parents[2]

if not OmegaConf.has_resolver("repo_root"):
    OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))


class ConfigError(ValueError):
    """A configuration value is out of its allowed range; the message names the key."""


@dataclass
class PathsConfig:
    root: str = "${repo_root:}"
    data_dir: str = "${paths.root}/data"
    raw_dir: str = "${paths.data_dir}/raw"
    truth_dir: str = "${paths.data_dir}/truth"
    processed_dir: str = "${paths.data_dir}/processed"
    models_dir: str = "${paths.root}/models"
    outputs_dir: str = "${paths.root}/outputs"


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///${paths.root}/mlflow.db"
    artifact_root: str = "${paths.root}/mlartifacts"
    experiment: str = "closure-risk"
    registered_model: str = "closure-risk-lgbm"
    ui_port: int = 5000
    timeout_s: float = 5.0  # per HTTP request to a tracking server; a dead server fails fast


@dataclass
class DataConfig:
    kind: str = "simulator"  # simulator | table
    n_borrowers: int = 20_000
    n_months: int = 36
    seed: int = 42
    block_size: int = 16_384  # borrowers per work unit (memory bound); output does not depend on it
    n_jobs: int = 1  # worker processes for generation; output does not depend on it
    # bring-your-own-table fields (kind=table)
    path: str = ""
    target: str = ""
    id: str = ""
    time: str = ""
    positive: str = ""
    valid_frac: float = 0.2  # share of the non-out-of-time rows held out for validation
    oot_frac: float = 0.2  # share held out as out-of-time (latest data.time values, else random)


@dataclass
class SimulatorConfig:
    """Every rate and coefficient of the borrower world (monthly unless noted)."""

    chunk_size: int = 4096  # borrowers per random stream; part of the world definition
    signup_spread: int = 12  # borrowers join uniformly over the first months
    occupation_shares: dict[str, float] = field(
        default_factory=lambda: {
            "salaried": 0.52,
            "ecommerce_operator": 0.10,
            "sole_proprietor": 0.10,
            "freelancer": 0.16,
            "student": 0.12,
        }
    )
    community_size: int = 32
    community_sd: float = 0.6  # homophily: shared latent effect within a community
    contacts_mean: float = 6.0
    # borrowing behaviour
    draw_prob: float = 0.45
    draws_per_month: float = 1.6
    repay_rate: float = 0.35
    early_repay_prob: float = 0.08
    daily_rate: float = 0.0004
    stop_shock_rate: float = 0.025
    stop_mean_months: float = 7.0
    line_reaction: float = 0.5  # how much a line cut or freeze discourages drawing
    # external credit, consumption, competition
    ext_open_rate: float = 0.05
    ext_close_rate: float = 0.04
    ext_use_prob: float = 0.7
    competitor_midpoint: float = 18.0
    competitor_slope: float = 4.0
    competitor_shift: float = 0.5
    # platform policy
    tightening_month: int = 27
    tightening_strength: float = 1.0
    pilot_month: int = 17  # a first, partial tightening of some segments (= tightening_month: none)
    pilot_strength: float = 0.4  # share of the full tightening applied during the pilot
    increase_prob: float = 0.06
    decrease_prob: float = 0.35
    freeze_prob: float = 0.10
    closure_base: dict[str, float] = field(
        default_factory=lambda: {
            "sudden_stop": 0.20,
            "low_yield": 0.12,
            "over_reliance": 0.20,
            "fund_misuse": 0.15,
            "thin_file": 0.10,
            "policy_tightening": 0.15,
            "low_activity_competition": 0.12,
        }
    )
    # thresholds of the platform's monitoring signals
    stop_earlier_months: int = (
        5  # draw months in the 9 before the last 3 that make a stop suspicious
    )
    lowyield_util: float = (
        0.04  # mean utilisation below which a long-tenure account earns too little
    )
    over_util: float = 0.75  # utilisation above which reliance is suspected
    misuse_share: float = 0.5  # share of drawn money routed to investment / other lenders
    thin_months: int = 12  # months without external credit activity that make a file thin
    policy_util: float = 0.8  # leverage that tightening targets
    policy_noncons: float = 0.6  # non-consumption share that tightening targets
    competition_months: int = 4  # months on competing products (of 6) that flag multi-homing
    review_grace_months: int = (
        3  # new accounts are not closed for non-overdue causes before this tenure
    )
    background_rate: float = 0.0003  # per cause, the part no observable explains
    frailty_sd: float = 0.45  # platform's unobserved judgement per borrower
    noise_sd: float = 0.3  # month-to-month randomness of reviews
    overdue_rate: float = 0.0015
    overdue_close_prob: float = 0.6
    # oracle (ground truth probabilities)
    oracle_futures: int = 64
    oracle_rows: int = 6000


@dataclass
class FeaturesConfig:
    snapshots: list[int] = field(
        default_factory=lambda: [12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32]
    )
    horizon: int = 3
    valid_snapshots: list[int] = field(default_factory=lambda: [22, 24])
    oot_snapshots: list[int] = field(default_factory=lambda: [26, 28, 30, 32])
    fund_days: int = 7
    small_draw_ratio: float = 0.05
    never_overdue_only: bool = True


@dataclass
class ScorecardConfig:
    """Points scaling of the weight-of-evidence scorecard baseline."""

    pdo: float = 20.0  # points that double the odds
    base_score: float = 600.0  # score at the base odds
    base_odds: float = 50.0  # good:bad odds that score base_score
    max_bins: int = 8  # equal-count bins per numeric feature
    min_iv: float = 0.02  # features below this information value are left out


@dataclass
class ModelConfig:
    objective: str = "binary"
    num_leaves: int = 31
    learning_rate: float = 0.05
    n_estimators: int = 600
    early_stopping_rounds: int = 50
    min_child_samples: int = 200
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    max_bin: int = 255
    num_threads: int = 0  # 0 = physical cores
    monotone: bool = True
    calibration: str = "isotonic"  # isotonic | platt | none, fitted on the validation split
    calibration_bins: int = 10  # equal-count bins of the calibration error and reliability plot
    baselines: bool = True  # also fit the scorecard and rules baselines on the same split
    scorecard: ScorecardConfig = field(default_factory=lambda: ScorecardConfig())
    cv_folds: int = 2  # table mode: stratified k-fold ...
    cv_repeats: int = 5  # ... repeated (2 x 5 = the usual 5x2 CV); 0 turns it off
    champion_alias: str = "champion"  # registry alias moved when out-of-time AUC improves


@dataclass
class ExplainConfig:
    max_rows: int = 200_000  # out-of-time rows explained (all when fewer)
    plot_sample: int = 5_000  # beeswarm points, at most 10,000
    top_k: int = 3
    borrower_id: int | None = None  # set: print one borrower's story instead of the batch
    snapshot: int | None = None  # that borrower's snapshot (default: latest out-of-time)
    n_jobs: int = 0  # 0 = physical cores
    attribution: str = "learned"  # feature -> cause split: primary | registry | learned
    learn_support: str = "all"  # learned: causes a feature may feed: registry | all
    learn_rows: int = 50_000  # learned: at most this many training-split closures
    reference: str = "base"  # base (model expected value) | snapshot (mean of its rows)
    probability: bool = False  # also give reason scores in probability points
    dependence_top: int = 4  # dependence plots for this many top features
    advice_threshold: float = 0.15  # advise rows at or above this risk, target under it
    advice_rows: int = 200  # highest-risk out-of-time borrowers advised by the batch


@dataclass
class BenchConfig:
    """``make bench``: each stage against a reference doing the same work."""

    n_borrowers: int = 100_000
    # rows to measure; a stage row needs the stage rows before it (end_to_end stands alone)
    rows: list[str] = field(
        default_factory=lambda: ["generate", "features", "train", "explain", "end_to_end"]
    )
    keep_work: bool = False  # keep the bench's data and models (under outputs_dir/bench)


@dataclass
class ScoreConfig:
    """``python -m pipeline score``: score new borrowers with the champion model."""

    input: str = ""  # raw-table folder or Parquet/CSV feature table; empty: paths.raw_dir
    output: str = ""  # .parquet or .csv; empty: models_dir/scores.parquet
    snapshot: int | None = None  # raw input: month to score at (default: the latest)
    borrower_id: int | None = None  # set: score this one borrower and print the result
    id_column: str = "borrower_id"  # feature-table input: the id column
    tier_cuts: list[float] = field(default_factory=lambda: [0.05, 0.15])  # probability cut-offs
    tier_names: list[str] = field(default_factory=lambda: ["low", "medium", "high"])
    top_k: int = 3
    advice_rows: int = 500  # advise at most this many top-tier rows (highest risk first)
    model_source: str = "auto"  # auto (registry champion, else local) | registry | local


@dataclass
class PolicyConfig:
    """``python -m pipeline policy``: closing above a threshold against the tiered strategy.

    Simple money assumptions (per account, over ``horizon`` months after the snapshot):
    revenue is the interest the account really paid; an account that goes overdue
    (dpd > 0 or an overdue closure) loses ``lgd`` x its exposure, the balance at its
    first overdue month. Closing keeps ``close_revenue_share`` of the revenue and caps
    the exposure at the balance of the snapshot month (no new draws); reducing the line
    by ``reduce_factor`` keeps ``reduce_revenue_share`` of the revenue and caps the
    exposure at the reduced line; raising the line by ``raise_factor`` adds
    ``raise_revenue_uplift`` to the revenue and scales the exposure by the factor.
    """

    thresholds: list[float] = field(
        default_factory=lambda: [0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6]
    )
    horizon: int = 3  # months after the snapshot for revenue and losses
    lgd: float = 0.6
    close_revenue_share: float = 0.0
    reduce_factor: float = 0.5
    reduce_revenue_share: float = 0.75
    raise_factor: float = 1.2
    raise_revenue_uplift: float = 0.1
    medium_ratio: float = 0.4  # tiered: medium tier from medium_ratio x threshold up to it
    raise_max_prob: float = 0.02  # tiered: raise only below this risk ...
    raise_min_tenure: int = 12  # ... for accounts this long on book (all never overdue) ...
    raise_line_quantile: float = 0.5  # ... with a line at or below this quantile (small users)


@dataclass
class EngineConfig:
    kind: str = "local"  # local | dask
    address: str = ""  # an existing Dask scheduler (tcp://host:8786); empty starts a local cluster
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "4GiB"  # per worker; beyond it Dask spills to disk
    # share of memory_limit that a local cluster's workers may fill with finished results
    # before they move them to disk (Dask's distributed.worker.memory.target)
    spill_target: float = 0.6
    local_directory: str = ""  # worker scratch space; empty uses the system temp folder
    connect_timeout_s: int = 10


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    force: bool = False
    experiment_name: str | None = None
    stage: str = MISSING


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)


def _fail(key: str, rule: str, value: Any) -> None:
    raise ConfigError(f"config key '{key}' = {value!r}: {rule}")


def validate(cfg: Any) -> None:
    """Reject out-of-range values before any work, naming the key."""
    d, s, f, m = cfg.data, cfg.simulator, cfg.features, cfg.model
    if not 0 < cfg.tracking.timeout_s <= 600:
        _fail("tracking.timeout_s", "must lie in (0, 600] seconds", cfg.tracking.timeout_s)
    if d.kind not in ("simulator", "table"):
        _fail("data.kind", "must be 'simulator' or 'table'", d.kind)
    if d.kind == "simulator":
        if d.n_borrowers <= 0:
            _fail("data.n_borrowers", "must be a positive integer", d.n_borrowers)
        if d.n_borrowers > 50_000_000:
            _fail("data.n_borrowers", "is absurdly large (limit 50,000,000)", d.n_borrowers)
        if not 6 <= d.n_months <= 240:
            _fail("data.n_months", "must lie in [6, 240]", d.n_months)
    else:
        if not d.path:
            _fail("data.path", "is required when data.kind=table", d.path)
        if not d.target:
            _fail("data.target", "is required when data.kind=table", d.target)
    if d.block_size <= 0:
        _fail("data.block_size", "must be positive", d.block_size)
    if d.n_jobs <= 0:
        _fail("data.n_jobs", "must be positive", d.n_jobs)
    if s.chunk_size <= 0:
        _fail("simulator.chunk_size", "must be positive", s.chunk_size)
    for key in (
        "draw_prob",
        "repay_rate",
        "early_repay_prob",
        "stop_shock_rate",
        "ext_open_rate",
        "ext_close_rate",
        "ext_use_prob",
        "increase_prob",
        "decrease_prob",
        "freeze_prob",
        "overdue_rate",
        "overdue_close_prob",
        "line_reaction",
        "competitor_shift",
    ):
        v = getattr(s, key)
        if not 0.0 <= v <= 1.0:
            _fail(f"simulator.{key}", "is a probability and must lie in [0, 1]", v)
    for key in (
        "draws_per_month",
        "daily_rate",
        "stop_mean_months",
        "background_rate",
        "frailty_sd",
        "noise_sd",
        "community_sd",
        "contacts_mean",
        "competitor_slope",
        "tightening_strength",
        "review_grace_months",
        "stop_earlier_months",
        "thin_months",
        "competition_months",
        "lowyield_util",
        "misuse_share",
    ):
        v = getattr(s, key)
        if v < 0:
            _fail(f"simulator.{key}", "must not be negative", v)
    if s.competitor_slope == 0:
        _fail("simulator.competitor_slope", "must be positive", s.competitor_slope)
    for cause, rate in s.closure_base.items():
        if cause not in CAUSES:
            _fail(
                f"simulator.closure_base.{cause}",
                f"unknown cause code; known: {', '.join(CAUSES)}",
                rate,
            )
        if rate < 0:
            _fail(f"simulator.closure_base.{cause}", "must not be negative", rate)
    for occ, share in s.occupation_shares.items():
        if occ not in OCCUPATIONS:
            _fail(
                f"simulator.occupation_shares.{occ}",
                f"unknown occupation; known: {', '.join(OCCUPATIONS)}",
                share,
            )
        if share < 0:
            _fail(f"simulator.occupation_shares.{occ}", "must not be negative", share)
    if sum(s.occupation_shares.values()) <= 0:
        _fail(
            "simulator.occupation_shares", "must have a positive total", dict(s.occupation_shares)
        )
    if d.kind == "simulator" and not 0 <= s.tightening_month < d.n_months:
        _fail(
            "simulator.tightening_month",
            f"must lie inside the horizon [0, {d.n_months - 1}]",
            s.tightening_month,
        )
    if not 0 <= s.pilot_month <= s.tightening_month:
        _fail("simulator.pilot_month", "must lie in [0, simulator.tightening_month]", s.pilot_month)
    if not 0.0 <= s.pilot_strength <= 1.0:
        _fail("simulator.pilot_strength", "must lie in [0, 1]", s.pilot_strength)
    if s.oracle_futures < 1 or s.oracle_rows < 0:
        _fail(
            "simulator.oracle_futures",
            "needs at least one future and non-negative rows",
            s.oracle_futures,
        )
    if f.horizon < 1:
        _fail("features.horizon", "must be at least 1 month", f.horizon)
    if d.kind == "simulator":
        snaps = list(f.snapshots)
        if not snaps:
            _fail("features.snapshots", "must list at least one month", snaps)
        for snap in snaps:
            if not 1 <= snap or snap + f.horizon > d.n_months - 1:
                _fail(
                    "features.snapshots",
                    f"month {snap} + horizon {f.horizon} must end by month {d.n_months - 1}",
                    snaps,
                )
        for key in ("valid_snapshots", "oot_snapshots"):
            extra = set(getattr(f, key)) - set(snaps)
            if extra:
                _fail(
                    f"features.{key}",
                    f"months {sorted(extra)} are not in features.snapshots",
                    list(getattr(f, key)),
                )
        if set(f.valid_snapshots) & set(f.oot_snapshots):
            _fail(
                "features.valid_snapshots",
                "overlaps features.oot_snapshots",
                list(f.valid_snapshots),
            )
        if not set(snaps) - set(f.valid_snapshots) - set(f.oot_snapshots):
            _fail("features.snapshots", "leaves no snapshot for training", snaps)
    if f.fund_days < 0:
        _fail("features.fund_days", "must not be negative", f.fund_days)
    if m.num_leaves < 2:
        _fail("model.num_leaves", "must be at least 2", m.num_leaves)
    if not 0 < m.learning_rate <= 1:
        _fail("model.learning_rate", "must lie in (0, 1]", m.learning_rate)
    if m.n_estimators < 1:
        _fail("model.n_estimators", "must be at least 1", m.n_estimators)
    for key in ("feature_fraction", "bagging_fraction"):
        v = getattr(m, key)
        if not 0 < v <= 1:
            _fail(f"model.{key}", "must lie in (0, 1]", v)
    if m.calibration not in ("isotonic", "platt", "none"):
        _fail("model.calibration", "must be 'isotonic', 'platt' or 'none'", m.calibration)
    if m.calibration_bins < 2:
        _fail("model.calibration_bins", "must be at least 2", m.calibration_bins)
    if m.cv_repeats < 0 or (m.cv_repeats and m.cv_folds < 2):
        _fail("model.cv_folds", "needs at least 2 folds when model.cv_repeats > 0", m.cv_folds)
    if m.scorecard.pdo <= 0 or m.scorecard.base_odds <= 0:
        _fail("model.scorecard.pdo", "pdo and base_odds must be positive", m.scorecard.pdo)
    if m.scorecard.max_bins < 2:
        _fail("model.scorecard.max_bins", "must be at least 2", m.scorecard.max_bins)
    for key in ("valid_frac", "oot_frac"):
        v = getattr(d, key)
        if not 0 < v < 0.5:
            _fail(f"data.{key}", "must lie in (0, 0.5)", v)
    if not 1 <= cfg.explain.plot_sample <= 10_000:
        _fail("explain.plot_sample", "must lie in [1, 10000]", cfg.explain.plot_sample)
    if cfg.explain.top_k < 1:
        _fail("explain.top_k", "must be at least 1", cfg.explain.top_k)
    e = cfg.explain
    for key, known in (
        ("attribution", ("primary", "registry", "learned")),
        ("learn_support", ("registry", "all")),
        ("reference", ("base", "snapshot")),
    ):
        if getattr(e, key) not in known:
            _fail(f"explain.{key}", f"must be one of: {', '.join(known)}", getattr(e, key))
    if e.learn_rows < 1:
        _fail("explain.learn_rows", "must be at least 1", e.learn_rows)
    if e.max_rows < 1:
        _fail("explain.max_rows", "must be at least 1", e.max_rows)
    if e.dependence_top < 0 or e.advice_rows < 0:
        _fail(
            "explain.advice_rows",
            "dependence_top and advice_rows must not be negative",
            e.advice_rows,
        )
    if not 0.0 < e.advice_threshold < 1.0:
        _fail("explain.advice_threshold", "must lie in (0, 1)", e.advice_threshold)
    if cfg.engine.kind not in ("local", "dask"):
        _fail("engine.kind", "must be 'local' or 'dask'", cfg.engine.kind)
    if cfg.engine.n_workers < 1 or cfg.engine.threads_per_worker < 1:
        _fail(
            "engine.n_workers",
            "workers and threads per worker must be at least 1",
            cfg.engine.n_workers,
        )
    if not 0.0 < float(cfg.engine.spill_target) <= 1.0:
        _fail("engine.spill_target", "must lie in (0, 1]", cfg.engine.spill_target)
    if cfg.bench.n_borrowers <= 0:
        _fail("bench.n_borrowers", "must be positive", cfg.bench.n_borrowers)
    sc, po = cfg.score, cfg.policy
    cuts = list(sc.tier_cuts)
    if any(not 0 < c < 1 for c in cuts) or cuts != sorted(set(cuts)):
        _fail("score.tier_cuts", "must be increasing probabilities in (0, 1)", cuts)
    if len(sc.tier_names) != len(cuts) + 1:
        _fail("score.tier_names", "needs one name more than score.tier_cuts", list(sc.tier_names))
    if sc.top_k < 1 or sc.advice_rows < 0:
        _fail("score.top_k", "top_k must be >= 1 and advice_rows >= 0", sc.top_k)
    if sc.model_source not in ("auto", "registry", "local"):
        _fail("score.model_source", "must be one of: auto, registry, local", sc.model_source)
    if not po.thresholds or any(not 0 < t < 1 for t in po.thresholds):
        _fail("policy.thresholds", "must list probabilities in (0, 1)", list(po.thresholds))
    if po.horizon < 1:
        _fail("policy.horizon", "must be at least 1 month", po.horizon)
    for key in (
        "lgd",
        "close_revenue_share",
        "reduce_factor",
        "reduce_revenue_share",
        "medium_ratio",
        "raise_line_quantile",
    ):
        if not 0.0 <= getattr(po, key) <= 1.0:
            _fail(f"policy.{key}", "must lie in [0, 1]", getattr(po, key))
    if po.raise_factor < 1.0 or po.raise_revenue_uplift < 0:
        _fail("policy.raise_factor", "must be >= 1 (with a non-negative uplift)", po.raise_factor)


def physical_cores() -> int:
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover - psutil is a dependency, this is belt and braces
        n = None
    import os

    return max(1, n or os.cpu_count() or 1)
