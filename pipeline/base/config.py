"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore, and checks.

The YAML files under ``conf/`` fill these schemas; a key that is not declared here
fails at composition time, and :func:`validate` rejects values that are out of range
before any stage does work.
"""

from __future__ import annotations

import math
import os
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, NoReturn, Union, get_origin, get_type_hints

import psutil
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from pipeline.base.causes import CAUSES, OCCUPATIONS
from pipeline.base.errors import PipelineError

REPO_ROOT = Path(__file__).resolve().parents[2]

if not OmegaConf.has_resolver("repo_root"):
    OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))


def dataset_name(name: Any, path: Any) -> str:
    """A table's clean name: ``data.name``, else its file's stem, in lower case with
    every run of other characters than letters and digits as one '-' ("table" when
    nothing is left)."""
    raw = str(name or "") or Path(str(path or "")).name.split(".")[0]
    return re.sub(r"[^0-9a-z]+", "-", raw.lower()).strip("-") or "table"


def run_home(kind: Any, name: Any, path: Any) -> str:
    """Where a run lives by default: the repository root for the simulator, and
    ``runs/<dataset>`` under it for a table, so that a table run never replaces the
    simulator's models, data or registry."""
    if str(kind) != "table":
        return str(REPO_ROOT)
    return str(REPO_ROOT / "runs" / dataset_name(name, path))


if not OmegaConf.has_resolver("run_home"):
    OmegaConf.register_new_resolver("run_home", run_home)


class ConfigError(PipelineError, ValueError):
    """A configuration value is out of its allowed range; the message names the key."""


def _fail(key: str, rule: str, value: Any) -> NoReturn:
    raise ConfigError(f"config key '{key}' = {value!r}: {rule}")


def _finite(key: str, value: Any) -> float:
    """``value`` as a float; NaN and infinities are refused for every numeric key."""
    v = float(value)
    if not math.isfinite(v):
        _fail(key, "must be a finite number", value)
    return v


def _in(key: str, value: Any, lo: float, hi: float, rule: str = "") -> None:
    """``lo <= value <= hi`` (the message says so unless ``rule`` is given)."""
    if not lo <= _finite(key, value) <= hi:
        _fail(key, rule or f"must lie in [{lo:g}, {hi:g}]", value)


def _at_least(key: str, value: Any, lo: float, rule: str = "") -> None:
    if not _finite(key, value) >= lo:
        _fail(key, rule or f"must be at least {lo:g}", value)


def _share(key: str, value: Any, rule: str = "must lie in [0, 1]") -> None:
    _in(key, value, 0.0, 1.0, rule)


def _open_unit(key: str, value: Any, rule: str = "must lie in (0, 1)") -> None:
    if not 0.0 < _finite(key, value) < 1.0:
        _fail(key, rule, value)


def _one_of(key: str, value: Any, known: tuple[str, ...]) -> None:
    if value not in known:
        _fail(key, f"must be one of: {', '.join(known)}", value)


def _no_repeats(key: str, values: list[Any], what: str) -> None:
    """Each item of a list key at most once (a repeated one would be silently merged)."""
    repeated = sorted({v for v in values if values.count(v) > 1}, key=values.index)
    if repeated:
        listed = ", ".join(str(v) for v in repeated)
        _fail(key, f"lists the {what} {listed} more than once (each must be unique)", values)


def _optional_id(key: str, value: Any, what: str) -> None:
    if value is not None and int(value) < 0:
        _fail(key, f"{what} must not be negative (or null for none)", value)


#: most workers, threads or processes any key may ask for; more is surely a typo
MAX_PARALLEL = 1024
#: from this many borrowers on, ``data.n_jobs=0`` generates with one process per core: at
#: the default book (20,000) the oracle's Monte Carlo futures alone take minutes, far
#: more than starting the processes (the test worlds, a few thousand, stay in one)
PARALLEL_WORLD = 10_000
#: ``data.n_borrowers`` and ``bench.n_borrowers`` beyond this are refused
MAX_BORROWERS = 50_000_000


@dataclass
class PathsConfig:
    # the repository root; a table run's own folder runs/<dataset> under it (run_home)
    root: str = "${run_home:${data.kind},${data.name},${data.path}}"
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


def check_tracking(t: TrackingConfig, key: str, cfg: Config) -> None:
    if not 0 < _finite(f"{key}.timeout_s", t.timeout_s) <= 600:
        _fail(f"{key}.timeout_s", "must lie in (0, 600] seconds", t.timeout_s)
    _in(f"{key}.ui_port", t.ui_port, 1, 65535, "must be a TCP port in [1, 65535]")
    if not str(t.experiment).strip():
        _fail(f"{key}.experiment", "must not be empty", t.experiment)
    # registered_model may be empty: then nothing is registered (the bench, sweep trials)
    if str(t.registered_model) != str(t.registered_model).strip():
        _fail(
            f"{key}.registered_model",
            "must not start or end with spaces",
            t.registered_model,
        )


@dataclass
class DataConfig:
    kind: str = "simulator"  # simulator | table
    n_borrowers: int = 20_000
    n_months: int = 36
    seed: int = 42
    block_size: int = 16_384  # borrowers per work unit (memory bound); output does not depend on it
    # worker processes for generation; output does not depend on it. 0: one per physical
    # core from PARALLEL_WORLD borrowers on, one below (where starting them costs more)
    n_jobs: int = 0
    # bring-your-own-table fields (kind=table)
    path: str = ""
    # the table's name: its run's folder runs/<name> and its registered model (default:
    # the file's stem, cleaned: german_credit.csv -> german-credit)
    name: str = ""
    target: str = ""
    id: str = ""
    time: str = ""
    positive: str = ""
    valid_frac: float = 0.2  # share of the non-out-of-time rows held out for validation
    oot_frac: float = 0.2  # share held out as out-of-time (latest data.time values, else random)
    sep: str = ""  # field separator of a text table: "" detects it (comma, semicolon, tab)
    # decimal mark of numbers written as text: "" reads it from each column's commas
    # (0,126 or 12,5 are decimal commas; 1,234,567 or 1,234.5 thousands separators)
    decimal: str = ""
    # a column that alone separates the training classes above this AUC is refused as
    # a leak of the target (1 turns the check off)
    max_single_auc: float = 0.99
    # declared monotone directions of table columns: {column: 1 (risk rises with the
    # value) or -1 (falls)}; honoured by the tree models and checked on a grid
    # (None when none is declared, so that a command line can set the whole mapping)
    monotone: Any = None


DATA_KINDS = ("simulator", "table")
_DATASET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


#: field separators a text table may use ("" detects one of them)
SEPARATORS = ("", ",", ";", "\t", "|")


def check_data(d: DataConfig, key: str, cfg: Config) -> None:
    if d.sep not in SEPARATORS:
        _fail(f"{key}.sep", "must be empty (detect) or one of , ; | and a tab", d.sep)
    if d.decimal not in ("", ".", ","):
        _fail(f"{key}.decimal", "must be empty (read from each column), '.' or ','", d.decimal)
    if d.decimal and d.decimal == d.sep:
        _fail(f"{key}.decimal", "cannot be the field separator (data.sep)", d.decimal)
    _in(f"{key}.max_single_auc", d.max_single_auc, 0.5, 1.0)
    if d.kind not in DATA_KINDS:
        _fail(f"{key}.kind", "must be 'simulator' or 'table'", d.kind)
    if d.name and not _DATASET.fullmatch(str(d.name)):
        _fail(
            f"{key}.name",
            "letters, digits, '.', '_' and '-' only, starting with a letter or digit "
            "(it names the folder runs/<name> and the registered model)",
            d.name,
        )
    if d.kind == "simulator":
        if d.n_borrowers <= 0:
            _fail(f"{key}.n_borrowers", "must be a positive integer", d.n_borrowers)
        if d.n_borrowers > MAX_BORROWERS:
            _fail(f"{key}.n_borrowers", "is absurdly large (limit 50,000,000)", d.n_borrowers)
        _in(f"{key}.n_months", d.n_months, 6, 240)
    else:
        if not d.path:
            _fail(f"{key}.path", "is required when data.kind=table", d.path)

        if not d.target:
            _fail(f"{key}.target", "is required when data.kind=table", d.target)
    if d.seed < 0:
        _fail(f"{key}.seed", "must not be negative", d.seed)
    if d.block_size <= 0:
        _fail(f"{key}.block_size", "must be positive", d.block_size)
    _in(
        f"{key}.n_jobs",
        d.n_jobs,
        0,
        MAX_PARALLEL,
        f"must lie in [0, {MAX_PARALLEL}] (0: automatic)",
    )
    for name in ("valid_frac", "oot_frac"):
        if not 0 < _finite(f"{key}.{name}", getattr(d, name)) < 0.5:
            _fail(f"{key}.{name}", "must lie in (0, 0.5)", getattr(d, name))
    if d.monotone is not None and not hasattr(d.monotone, "items"):
        _fail(f"{key}.monotone", "must be a mapping {column: 1 or -1}", d.monotone)
    for column, direction in (d.monotone or {}).items():
        if direction not in (1, -1):
            _fail(f"{key}.monotone.{column}", "must be 1 (rising) or -1 (falling)", direction)
    if d.monotone and d.kind != "table":
        _fail(
            f"{key}.monotone",
            "applies to table columns only (simulator features take their directions "
            "from the feature registry, switched by model.monotone)",
            dict(d.monotone),
        )


def _last_month(cfg: Config) -> int:
    """The last month of the simulated world (a generous bound when the data is a table)."""
    return int(cfg.data.n_months) - 1 if cfg.data.kind == "simulator" else 239


@dataclass
class SimulatorConfig:
    """Every rate and coefficient of the borrower world (monthly unless noted)."""

    chunk_size: int = 4096  # borrowers per random stream; part of the world definition
    # how the book is built. "continuous": a going concern. An opening book of about
    # data.n_borrowers accounts (their tenure geometric with mean 1/inflow_rate) is
    # simulated for burn_in months before month 0, unrecorded, while new accounts join
    # every month (inflow_rate x data.n_borrowers a month, from the burn-in to the last
    # month); the data holds the accounts open at month 0 and every later sign-up.
    # "cohort": every borrower signs up in the first signup_spread months (one ageing
    # cohort; kept for the regime_shift stress test).
    acquisition: str = "continuous"
    burn_in: int = 24  # months simulated before month 0 (continuous)
    inflow_rate: float = 0.025  # new accounts a month, as a share of the opening book
    signup_spread: int = 12  # cohort: borrowers join uniformly over the first months
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
    # competing products spread along a logistic curve; by default it has run its
    # course in the burn-in, so the recorded months face a settled market
    competitor_midpoint: float = -12.0
    competitor_slope: float = 4.0
    competitor_shift: float = 0.5
    # platform policy. By default the tightening (pilot, then full) happens in the
    # burn-in: every snapshot, training and out-of-time alike, is in the full regime
    # (experiment=regime_shift moves it between training and out-of-time rows)
    tightening_month: int = -9
    tightening_strength: float = 1.0
    pilot_month: int = (
        -18
    )  # a first, partial tightening of some segments (= tightening_month: none)
    pilot_strength: float = 0.4  # share of the full tightening applied during the pilot
    increase_prob: float = 0.06
    decrease_prob: float = 0.35
    freeze_prob: float = 0.10
    closure_base: dict[str, float] = field(
        default_factory=lambda: {
            "sudden_stop": 0.20,
            "low_yield": 0.12,
            "over_reliance": 0.70,
            "fund_misuse": 0.35,
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
    over_util: float = 0.65  # utilisation above which reliance is suspected
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
    # futures per oracle row: at 64 (expected hazards) the Monte Carlo bias of either
    # oracle's AUC is below 0.003 on the default world (the run estimates it: summary
    # oracle.mc_bias); counting closing futures needs about 512 for the same
    oracle_futures: int = 64
    oracle_rows: int = 6000
    # how a row's oracle probability is read from its futures: "hazard" averages each
    # future's chance of closing given its path (its futures never close); "count" counts
    # the futures that close. The same expectation; "hazard" has about an eighth of the
    # variance per future on the default world.
    oracle_estimator: str = "hazard"


#: how the oracle reads a probability from its futures (``simulator.oracle_estimator``)
ORACLE_ESTIMATORS = ("hazard", "count")

# simulator keys compared with a uniform draw each month
_SIM_PROBABILITIES = (
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
)
# thresholds compared with a share of money or of the credit line
_SIM_SHARES = ("misuse_share", "policy_util", "policy_noncons")
# rates and strengths
_SIM_NON_NEGATIVE = ("background_rate", "tightening_strength")
# spreads of effects on the log scale: beyond 10 the hazards overflow
_SIM_LOG_SPREADS = ("frailty_sd", "noise_sd", "community_sd")
# months of the monitoring window that a signal counts (it looks back 12 months: the 9
# before the last 3 for a sudden stop, the last 6 for competing products)
_SIM_WINDOW_MONTHS = {"stop_earlier_months": 9, "competition_months": 6}


def as_simulator(node: Any) -> SimulatorConfig:
    """The ``simulator`` group as the plain dataclass the simulator core reads."""
    obj = OmegaConf.to_object(node) if OmegaConf.is_config(node) else node
    if not isinstance(obj, SimulatorConfig):
        raise ConfigError(
            f"config group 'simulator' is a {type(obj).__name__}, not a SimulatorConfig"
        )
    return obj


def check_simulator(s: SimulatorConfig, key: str, cfg: Config) -> None:
    """Ranges of the world's rates and thresholds, then the month keys against the horizon."""
    if s.chunk_size <= 0:
        _fail(f"{key}.chunk_size", "must be positive", s.chunk_size)
    _at_least(f"{key}.community_size", s.community_size, 1, "must be at least 1 borrower")
    _check_simulator_rates(s, key)
    _check_simulator_months(s, key, cfg)
    if s.oracle_futures < 1:
        _fail(f"{key}.oracle_futures", "needs at least one future", s.oracle_futures)
    _in(f"{key}.oracle_futures", s.oracle_futures, 1, 10_000, "must lie in [1, 10000] futures")
    if s.oracle_rows < 0:
        _fail(f"{key}.oracle_rows", "must not be negative", s.oracle_rows)
    _one_of(f"{key}.oracle_estimator", s.oracle_estimator, ORACLE_ESTIMATORS)
    _check_closure_base(s.closure_base, f"{key}.closure_base")
    _check_occupation_shares(s.occupation_shares, f"{key}.occupation_shares")


def _check_simulator_rates(s: Any, key: str) -> None:
    for name in _SIM_PROBABILITIES:
        _share(f"{key}.{name}", s[name], "is a probability and must lie in [0, 1]")
    # loans close at twice the card rate, and that too is a probability
    rule = "loans close at twice this rate: must lie in [0, 0.5]"
    _in(f"{key}.ext_close_rate", s.ext_close_rate, 0.0, 0.5, rule)
    for name in _SIM_SHARES:
        _share(f"{key}.{name}", s[name], "is a share and must lie in [0, 1]")
    for name in _SIM_NON_NEGATIVE:
        _at_least(f"{key}.{name}", s[name], 0.0, "must not be negative")
    for name in _SIM_LOG_SPREADS:
        _at_least(f"{key}.{name}", s[name], 0.0, "must not be negative")
        _in(f"{key}.{name}", s[name], 0.0, 10.0, "is a spread on the log scale: [0, 10]")
    _in(f"{key}.daily_rate", s.daily_rate, 0.0, 1.0, "is a daily interest rate: [0, 1]")
    _in(f"{key}.contacts_mean", s.contacts_mean, 0.0, 1000.0)
    rule = "must lie in [1, 100] (a month with a draw has at least one)"
    _in(f"{key}.draws_per_month", s.draws_per_month, 1.0, 100.0, rule)
    if not 0.0 < _finite(f"{key}.lowyield_util", s.lowyield_util) <= 1.0:
        _fail(f"{key}.lowyield_util", "is a utilisation and must lie in (0, 1]", s.lowyield_util)
    if not 0.0 <= _finite(f"{key}.over_util", s.over_util) < 1.0:
        _fail(f"{key}.over_util", "is a utilisation and must lie in [0, 1)", s.over_util)
    if not _finite(f"{key}.competitor_slope", s.competitor_slope) > 0:
        _fail(f"{key}.competitor_slope", "must be positive", s.competitor_slope)
    _share(f"{key}.pilot_strength", s.pilot_strength)


#: how the book is built (simulator.acquisition)
ACQUISITIONS = ("continuous", "cohort")
#: the longest burn-in, in months
MAX_BURN_IN = 120
#: the earliest month a regime change or the competitors' midpoint may be set at
EARLIEST_MONTH = -240


def first_month(s: Any) -> int:
    """The first simulated month: the start of the burn-in (negative), or 0 for a cohort."""
    return -int(s.burn_in) if s.acquisition == "continuous" else 0


def _check_simulator_months(s: SimulatorConfig, key: str, cfg: Config) -> None:
    """Keys counted in months: inside the horizon, or inside the monitoring window."""
    last = _last_month(cfg)
    horizon = f"must lie in [1, {last + 1}] (data.n_months)"
    if s.acquisition not in ACQUISITIONS:
        _fail(f"{key}.acquisition", f"must be one of {', '.join(ACQUISITIONS)}", s.acquisition)
    _in(f"{key}.burn_in", s.burn_in, 0, MAX_BURN_IN, f"months before month 0: [0, {MAX_BURN_IN}]")
    if (
        s.acquisition == "continuous"
        and not 0 < _finite(f"{key}.inflow_rate", s.inflow_rate) <= 0.5
    ):
        rule = "is a monthly share of the opening book and must lie in (0, 0.5]"
        _fail(f"{key}.inflow_rate", rule, s.inflow_rate)
    _in(f"{key}.signup_spread", s.signup_spread, 1, last + 1, f"months of sign-ups: {horizon}")
    _in(f"{key}.stop_mean_months", s.stop_mean_months, 1, last + 1, horizon)
    # months before the first simulated one are allowed: a tightening or a market shift
    # that happened earlier is simply in force from the start
    _in(f"{key}.competitor_midpoint", s.competitor_midpoint, EARLIEST_MONTH, last + 1)
    for name, window in _SIM_WINDOW_MONTHS.items():
        rule = f"counts months of {window}: must lie in [0, {window}]"
        _in(f"{key}.{name}", getattr(s, name), 0, window, rule)
    for name in ("thin_months", "review_grace_months"):
        _in(f"{key}.{name}", getattr(s, name), 0, last + 1)
    if cfg.data.kind == "simulator" and not EARLIEST_MONTH <= s.tightening_month <= last:
        rule = f"must lie in [{EARLIEST_MONTH}, {last}] (months before 0: in force from the start)"
        _fail(f"{key}.tightening_month", rule, s.tightening_month)
    if not EARLIEST_MONTH <= s.pilot_month <= s.tightening_month:
        rule = f"must lie in [{EARLIEST_MONTH}, simulator.tightening_month]"
        _fail(f"{key}.pilot_month", rule, s.pilot_month)


def _check_closure_base(rates: Any, key: str) -> None:
    for cause, rate in rates.items():
        if cause not in CAUSES:
            _fail(f"{key}.{cause}", f"unknown cause code; known: {', '.join(CAUSES)}", rate)
        _at_least(f"{key}.{cause}", rate, 0.0, "must not be negative")


def _check_occupation_shares(shares: Any, key: str) -> None:
    for occ, share in shares.items():
        if occ not in OCCUPATIONS:
            _fail(f"{key}.{occ}", f"unknown occupation; known: {', '.join(OCCUPATIONS)}", share)
        _at_least(f"{key}.{occ}", share, 0.0, "must not be negative")
        if share > 1:
            _fail(f"{key}.{occ}", "is a share and must not exceed 1", share)
    if sum(shares.values()) <= 0:
        _fail(key, "must have a positive total", dict(shares))


@dataclass
class FeaturesConfig:
    # training 12..20, validation 24 and 26, out-of-time 30 and 32: with a 3-month
    # horizon no two splits share a label month (the config check refuses it). Monthly
    # training snapshots were measured and not made the default (docs/modelling.md,
    # "Monthly training snapshots")
    snapshots: list[int] = field(default_factory=lambda: [12, 14, 16, 18, 20, 24, 26, 30, 32])
    horizon: int = 3
    valid_snapshots: list[int] = field(default_factory=lambda: [24, 26])
    oot_snapshots: list[int] = field(default_factory=lambda: [30, 32])
    fund_days: int = 7
    small_draw_ratio: float = 0.05
    never_overdue_only: bool = True
    select: bool = False  # table mode: drop what the IV / PSI / correlation screening names


def check_features(f: FeaturesConfig, key: str, cfg: Config) -> None:
    if f.horizon < 1:
        _fail(f"{key}.horizon", "must be at least 1 month", f.horizon)
    if f.fund_days < 0:
        _fail(f"{key}.fund_days", "must not be negative", f.fund_days)
    # a fund flow leaves at most a month after its draw
    _in(f"{key}.fund_days", f.fund_days, 0, 31, "must lie in [0, 31] days")
    _share(
        f"{key}.small_draw_ratio",
        f.small_draw_ratio,
        "is a share of the line and must lie in [0, 1]",
    )
    if cfg.data.kind == "simulator":
        _check_snapshots(f, key, int(cfg.data.n_months))


def _check_snapshots(f: Any, key: str, n_months: int) -> None:
    snaps = list(f.snapshots)
    if not snaps:
        _fail(f"{key}.snapshots", "must list at least one month", snaps)
    for name in ("snapshots", "valid_snapshots", "oot_snapshots"):
        _no_repeats(f"{key}.{name}", list(f[name]), "month")
    # validation rows pick the early-stopping round and fit the calibration; an empty
    # out-of-time list is allowed (no out-of-time figures), an empty validation list not
    if not list(f.valid_snapshots):
        _fail(
            f"{key}.valid_snapshots",
            "must list at least one month (validation rows stop the boosting and fit the "
            "calibration)",
            list(f.valid_snapshots),
        )
    for snap in snaps:
        if not 1 <= snap or snap + f.horizon > n_months - 1:
            _fail(
                f"{key}.snapshots",
                f"month {snap} + horizon {f.horizon} ({key}.horizon) must end by month "
                f"{n_months - 1} (data.n_months - 1)",
                snaps,
            )
    for name in ("valid_snapshots", "oot_snapshots"):
        extra = set(f[name]) - set(snaps)
        if extra:
            _fail(
                f"{key}.{name}",
                f"months {sorted(extra)} are not in {key}.snapshots",
                list(f[name]),
            )
    if set(f.valid_snapshots) & set(f.oot_snapshots):
        _fail(f"{key}.valid_snapshots", f"overlaps {key}.oot_snapshots", list(f.valid_snapshots))
    if not set(snaps) - set(f.valid_snapshots) - set(f.oot_snapshots):
        _fail(f"{key}.snapshots", "leaves no snapshot for training", snaps)
    clash = label_window_clash(f)
    if clash is not None:
        (early, early_split), (late, late_split) = clash
        _fail(
            f"{key}.snapshots",
            f"the {early_split} snapshot {early}'s labels (months {early + 1}..{early + f.horizon},"
            f" {key}.horizon={f.horizon}) do not end before the {late_split} snapshot {late}: "
            f"splits would share label months. Each split's labels must end before the next "
            f"split's first snapshot (training < validation < out-of-time)",
            snaps,
        )


def split_snapshots(f: Any) -> dict[str, list[int]]:
    """The snapshot months of each split, ascending: train, valid and oot."""
    valid, oot = set(f.valid_snapshots), set(f.oot_snapshots)
    return {
        "train": sorted(s for s in set(f.snapshots) if s not in valid and s not in oot),
        "valid": sorted(valid),
        "oot": sorted(oot),
    }


def label_window_clash(f: Any) -> tuple[tuple[int, str], tuple[int, str]] | None:
    """The first pair of snapshots whose splits share label months, or None.

    A row at snapshot ``s`` is labelled by months ``s+1 .. s+horizon``; the training
    labels must end before the first validation snapshot, and the validation labels
    before the first out-of-time snapshot, so that no closure is a label of two splits
    and the later split's features never see an earlier split's label month as future.
    """
    splits = split_snapshots(f)
    order = [("training", splits["train"]), ("validation", splits["valid"])]
    order.append(("out-of-time", splits["oot"]))
    for (name_a, a), (name_b, b) in zip(order, order[1:], strict=False):
        if a and b and max(a) + int(f.horizon) >= min(b):
            return (max(a), name_a), (min(b), name_b)
    return None


@dataclass
class ScorecardConfig:
    """Binning, feature selection and points scaling of the weight-of-evidence scorecard
    (:mod:`pipeline.core.baselines`)."""

    pdo: float = 20.0  # points that double the odds
    base_score: float = 600.0  # score at the base odds
    base_odds: float = 50.0  # good:bad odds that score base_score
    max_bins: int = 8  # bins per feature at most, after merging
    min_bin_share: float = 0.02  # a bin holds at least this share of the training rows
    bin_pvalue: float = 0.05  # adjacent bins whose bad rates differ less surely are merged
    min_iv: float = 0.02  # features below this information value are left out
    max_corr: float = 0.8  # of two features whose WoE correlate more, the weaker goes
    max_vif: float = 5.0  # variance inflation factor a kept feature may have
    enter_pvalue: float = 0.05  # stepwise: score-test p-value a feature must beat to enter
    max_features: int = 15  # stepwise: features in the card at most


def check_scorecard(sc: ScorecardConfig, key: str, cfg: Config) -> None:
    for name in ("pdo", "base_odds"):
        if not _finite(f"{key}.{name}", getattr(sc, name)) > 0:
            _fail(f"{key}.{name}", "pdo and base_odds must be positive", getattr(sc, name))
    _finite(f"{key}.base_score", sc.base_score)  # any number of points
    if sc.max_bins < 2:
        _fail(f"{key}.max_bins", "must be at least 2", sc.max_bins)
    _at_least(f"{key}.min_iv", sc.min_iv, 0.0, "an information value is never negative")
    _in(f"{key}.min_bin_share", sc.min_bin_share, 0.0, 0.5, "must lie in [0, 0.5] (a share)")
    for name in ("bin_pvalue", "enter_pvalue"):
        value = getattr(sc, name)
        if not 0.0 < _finite(f"{key}.{name}", value) <= 1.0:
            _fail(f"{key}.{name}", "must lie in (0, 1] (a test level)", value)
    if not 0.0 < _finite(f"{key}.max_corr", sc.max_corr) <= 1.0:
        _fail(f"{key}.max_corr", "must lie in (0, 1] (an absolute correlation)", sc.max_corr)
    _at_least(f"{key}.max_vif", sc.max_vif, 1.0, "a variance inflation factor is at least 1")
    if sc.max_features < 1:
        _fail(f"{key}.max_features", "must be at least 1", sc.max_features)


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
    calibration: str = "auto"  # auto | isotonic | platt | beta | none, on the validation split
    calibration_bins: int = 10  # equal-count bins of the calibration error and reliability plot
    baselines: bool = True  # also fit the scorecard and rules baselines on the same split
    scorecard: ScorecardConfig = field(default_factory=lambda: ScorecardConfig())
    cv_folds: int = 2  # table mode: stratified k-fold ...
    cv_repeats: int = 5  # ... repeated (2 x 5 = the usual 5x2 CV); 0 turns it off
    champion_alias: str = "champion"  # registry alias moved when out-of-time AUC improves
    # one-sided level of the paired DeLong test the challenger's out-of-time AUC must pass
    # against the alias holder's on the same rows to take the alias
    promote_alpha: float = 0.05
    # table mode: time cap of each LightGBM search, a safety net (0: 1,800 s); a search
    # it cuts short changes the result, and the run says so
    tune_seconds: float = 0.0
    nested: bool = False  # table mode: also estimate the whole selection by nested 5-fold CV
    # the competing-risks model (stage survival): cumulative incidence by cause at these
    # months after the snapshot; off with survival=false
    horizons: list[int] = field(default_factory=lambda: [1, 3, 6, 12])
    survival: bool = True
    survival_keep: float = 0.25  # share of event-free months kept (weighted 1 / keep)
    # the hazard model's training rows: every n-th training snapshot, counted back from
    # the last (1: all). Each snapshot is expanded into the months ahead, so monthly
    # snapshots repeat each calendar month up to 12 times: on the default world with
    # monthly snapshots 8..20, all 13 gave 444,583 person-months and a 46.1 s fit, every
    # third 167,318 and 17.8 s, for the same cause ranking (top-1 73.6% both)
    survival_snapshot_step: int = 1
    survival_rounds: int = 300  # most boosting rounds (early stopping on validation months)
    survival_learning_rate: float = 0.05
    # rounds without a better validation loss before the hazard model stops. Its
    # validation loss falls smoothly to its best round (150,000 training months on the
    # default world): 10 to 50 rounds of patience stop at the same best round (10 and 20
    # gave the same best round and figures for 4 seeds), so each round beyond the first
    # few after it is paid for nothing
    survival_patience: int = 10
    # threads of the hazard model's fit. 0 (the default): one per physical core that is
    # idle when the fit starts (the CPUs other work keeps busy over a quarter second
    # taken as busy cores; at least one). A multiclass round grows one small tree per
    # class, so its threads meet often: on a quiet 2-core machine 2 threads halve the
    # fit (10.8 s against 21.1 s), but with one core busy they double it (48.0 s against
    # 24.7 s). The trees are the same whatever the count (deterministic=True), and the
    # saved model records this setting, not the count, so it is byte-identical too
    survival_threads: int = 0
    # rows of the cause model's reasons that get their features (TreeSHAP of a 9-class
    # model over the months ahead costs about 9 ms a row): a seeded sample of the
    # out-of-time rows; every row still gets its causes ranked by incidence
    survival_shap_rows: int = 2000


#: most equal-count bins of the calibration error. The validation rows are not known
#: before the data is read; 1000 bins already need 100,000 rows for 100 rows a bin, and
#: with fewer rows a bin the error grows with the bin count whatever the model
MAX_CALIBRATION_BINS = 1000

#: the model's output is read as a calibrated probability of closure: binary only
OBJECTIVES = ("binary",)
CALIBRATIONS = ("isotonic", "platt", "beta", "auto", "none")
# the registry's alias rule: letters, digits, '_' and '-'
_ALIAS = re.compile(r"[A-Za-z0-9_-]+")


def check_model(m: ModelConfig, key: str, cfg: Config) -> None:
    _in(f"{key}.tune_seconds", m.tune_seconds, 0, 86_400, "must lie in [0, 86400] seconds")
    if m.objective not in OBJECTIVES:
        _fail(
            f"{key}.objective",
            "must be 'binary': the model's output is read as a calibrated probability",
            m.objective,
        )
    # LightGBM's own limits: a tree has 2 to 131072 leaves, a feature 2 or more bins
    _in(f"{key}.num_leaves", m.num_leaves, 2, 131_072, "must lie in [2, 131072]")
    if not 0 < _finite(f"{key}.learning_rate", m.learning_rate) <= 1:
        _fail(f"{key}.learning_rate", "must lie in (0, 1]", m.learning_rate)
    if m.n_estimators < 1:
        _fail(f"{key}.n_estimators", "must be at least 1", m.n_estimators)
    _at_least(
        f"{key}.early_stopping_rounds",
        m.early_stopping_rounds,
        0,
        "must not be negative (0 turns early stopping off)",
    )
    _at_least(
        f"{key}.min_child_samples", m.min_child_samples, 0, "must not be negative (rows per leaf)"
    )
    for name in ("feature_fraction", "bagging_fraction"):
        if not 0 < _finite(f"{key}.{name}", getattr(m, name)) <= 1:
            _fail(f"{key}.{name}", "must lie in (0, 1]", getattr(m, name))
    _at_least(
        f"{key}.bagging_freq", m.bagging_freq, 0, "must not be negative (0 turns bagging off)"
    )
    _at_least(f"{key}.lambda_l2", m.lambda_l2, 0.0, "must not be negative")
    _at_least(f"{key}.max_bin", m.max_bin, 2, "must be at least 2 bins")
    _in(
        f"{key}.num_threads",
        m.num_threads,
        0,
        MAX_PARALLEL,
        "must lie in [0, 1024] (0: one per physical core)",
    )
    if m.calibration not in CALIBRATIONS:
        _fail(f"{key}.calibration", f"must be one of {', '.join(CALIBRATIONS)}", m.calibration)
    _in(
        f"{key}.calibration_bins",
        m.calibration_bins,
        2,
        MAX_CALIBRATION_BINS,
        f"must lie in [2, {MAX_CALIBRATION_BINS}] (equal-count bins: with more, each bin holds "
        "too few validation rows and the calibration error measures noise)",
    )
    if m.cv_repeats < 0:
        _fail(
            f"{key}.cv_repeats", "must not be negative (0 turns cross-validation off)", m.cv_repeats
        )
    if m.cv_repeats and m.cv_folds < 2:
        _fail(f"{key}.cv_folds", "needs at least 2 folds when model.cv_repeats > 0", m.cv_folds)
    check_scorecard(m.scorecard, f"{key}.scorecard", cfg)
    if not 0.0 < float(m.promote_alpha) < 1.0:
        _fail(f"{key}.promote_alpha", "must lie in (0, 1) (a test level)", m.promote_alpha)
    if not _ALIAS.fullmatch(str(m.champion_alias)):
        _fail(f"{key}.champion_alias", "letters, digits, '_' and '-' only", m.champion_alias)
    check_survival(m, key)


#: the longest horizon of the competing-risks model, in months
MAX_HORIZON = 120


def check_survival(m: ModelConfig, key: str) -> None:
    """The competing-risks model's keys: horizons, sampling, rounds."""
    hs = list(m.horizons)
    if not hs:
        _fail(f"{key}.horizons", "must list at least one month", hs)
    for h in hs:
        if isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= MAX_HORIZON:
            _fail(
                f"{key}.horizons", f"each horizon must be a whole month in [1, {MAX_HORIZON}]", hs
            )
    if len(set(hs)) != len(hs):
        _fail(f"{key}.horizons", "lists a month twice", hs)
    if not 0 < _finite(f"{key}.survival_keep", m.survival_keep) <= 1:
        _fail(
            f"{key}.survival_keep",
            "must lie in (0, 1] (share of event-free months kept)",
            m.survival_keep,
        )
    _in(
        f"{key}.survival_threads",
        m.survival_threads,
        0,
        MAX_PARALLEL,
        "must lie in [0, 1024] (0: one per idle physical core)",
    )
    if m.survival_rounds < 1:
        _fail(f"{key}.survival_rounds", "must be at least 1", m.survival_rounds)
    if m.survival_snapshot_step < 1:
        _fail(
            f"{key}.survival_snapshot_step",
            "must be at least 1 (1: every training snapshot)",
            m.survival_snapshot_step,
        )
    if m.survival_patience < 0:
        _fail(
            f"{key}.survival_patience",
            "must not be negative (0: no early stopping)",
            m.survival_patience,
        )
    if m.survival_shap_rows < 0:
        _fail(f"{key}.survival_shap_rows", "must be 0 (no features) or more", m.survival_shap_rows)
    if not 0 < _finite(f"{key}.survival_learning_rate", m.survival_learning_rate) <= 1:
        _fail(f"{key}.survival_learning_rate", "must lie in (0, 1]", m.survival_learning_rate)


@dataclass
class ExplainConfig:
    max_rows: int = 200_000  # out-of-time rows explained (all when fewer)
    plot_sample: int = 5_000  # beeswarm points, at most 10,000
    top_k: int = 3
    borrower_id: int | None = None  # set: print one borrower's story instead of the batch
    snapshot: int | None = None  # that borrower's snapshot (default: latest out-of-time)
    n_jobs: int = 0  # 0 = physical cores
    attribution: str = "learned"  # feature -> cause split: primary | registry | learned
    learn_support: str = "registry"  # learned: causes a feature may feed: registry | all
    learn_rows: int = 50_000  # learned: at most this many training-split closures
    reference: str = "base"  # base (model expected value) | snapshot (mean of its rows)
    probability: bool = False  # also give reason scores in probability points
    dependence_top: int = 4  # dependence plots for this many top features
    advice_threshold: float = 0.15  # advise rows at or above this risk, target under it
    advice_rows: int = 200  # highest-risk out-of-time borrowers advised by the batch
    world_rows: int = 200  # advised borrowers whose advice is carried out in the world (0: none)
    world_futures: int = 64  # Monte Carlo futures per borrower and arm of that test
    # an advised small draw is at most this share of the borrower's typical draw (its
    # need), besides at most its median monthly repayment (what it can repay in a month)
    advice_draw_share: float = 0.5
    # the world test recomputes the model's view at this many months after the advised
    # snapshot, from each future's traces; 0: not recomputed. One month: the platform
    # reviews its accounts monthly, the advice's first month is already in the traces,
    # and the model's 3-month window then shares two of its months with the world's
    # figure (at two months, one; and the futures closed before it drop out)
    world_next_months: int = 1
    # which model ranks a closure's causes, the reasons' headline and what the fidelity
    # check grades: the competing-risks cause model (stage survival, fitted beside this
    # classifier; the SHAP-mapped causes where it is absent) or the classifier's SHAP
    # values mapped onto causes. The SHAP-mapped reasons are written and graded either way
    cause_source: str = "cause_model"


EXPLAIN_CHOICES: dict[str, tuple[str, ...]] = {
    "attribution": ("primary", "registry", "learned"),
    "learn_support": ("registry", "all"),
    "reference": ("base", "snapshot"),
    "cause_source": ("cause_model", "shap"),
}


def check_explain(e: ExplainConfig, key: str, cfg: Config) -> None:
    _in(f"{key}.plot_sample", e.plot_sample, 1, 10_000)
    if e.top_k < 1:
        _fail(f"{key}.top_k", "must be at least 1", e.top_k)
    for name, known in EXPLAIN_CHOICES.items():
        _one_of(f"{key}.{name}", getattr(e, name), known)
    if e.learn_rows < 1:
        _fail(f"{key}.learn_rows", "must be at least 1", e.learn_rows)
    if e.max_rows < 1:
        _fail(f"{key}.max_rows", "must be at least 1", e.max_rows)
    for name in ("dependence_top", "advice_rows"):
        if getattr(e, name) < 0:
            _fail(
                f"{key}.{name}",
                "dependence_top and advice_rows must not be negative",
                getattr(e, name),
            )
    _open_unit(f"{key}.advice_threshold", e.advice_threshold)
    if e.world_rows < 0:
        _fail(f"{key}.world_rows", "must not be negative (0: no world test)", e.world_rows)
    _in(f"{key}.world_futures", e.world_futures, 1, 10_000, "must lie in [1, 10000] futures")
    _open_unit(f"{key}.advice_draw_share", e.advice_draw_share)
    if e.world_next_months < 0:
        _fail(
            f"{key}.world_next_months",
            "must not be negative (0: not recomputed)",
            e.world_next_months,
        )
    _optional_id(f"{key}.borrower_id", e.borrower_id, "a borrower id")
    _optional_id(f"{key}.snapshot", e.snapshot, "a snapshot month")
    _in(
        f"{key}.n_jobs",
        e.n_jobs,
        0,
        MAX_PARALLEL,
        "must lie in [0, 1024] (0: one per physical core)",
    )


@dataclass
class BenchConfig:
    """``make bench``: each stage against a reference doing the same work."""

    n_borrowers: int = 100_000
    # rows to measure; a stage row needs the stage rows before it, oracle needs generate,
    # score needs train (end_to_end stands alone)
    rows: list[str] = field(
        default_factory=lambda: [
            "generate",
            "oracle",
            "features",
            "train",
            "score",
            "explain",
            "end_to_end",
        ]
    )
    keep_work: bool = False  # keep the bench's data and models (under outputs_dir/bench)


#: the rows ``make bench`` knows (their order and dependencies are the bench's own rule)
BENCH_ROWS = ("generate", "oracle", "features", "train", "score", "explain", "end_to_end")


def check_bench(b: BenchConfig, key: str, cfg: Config) -> None:
    if b.n_borrowers <= 0:
        _fail(f"{key}.n_borrowers", "must be positive", b.n_borrowers)
    if b.n_borrowers > MAX_BORROWERS:
        _fail(f"{key}.n_borrowers", "is absurdly large (limit 50,000,000)", b.n_borrowers)
    rows = list(b.rows)
    unknown = [r for r in rows if r not in BENCH_ROWS]
    if unknown or not rows:
        _fail(f"{key}.rows", f"must list rows among: {', '.join(BENCH_ROWS)}", rows)


@dataclass
class ScoreConfig:
    """``python -m pipeline score``: score new borrowers with the champion model."""

    input: str = ""  # raw-table folder or Parquet/CSV feature table; empty: paths.raw_dir
    output: str = ""  # .parquet or .csv; empty: models_dir/scores.parquet
    snapshot: int | None = None  # raw input: month to score at (default: the latest)
    borrower_id: int | None = None  # set: score this one borrower and print the result
    id_column: str = "borrower_id"  # feature-table input: the id column
    tier_cuts: list[float] = field(default_factory=lambda: [0.05, 0.15])  # probability cut-offs
    # auto: a simulator model uses tier_cuts, a table model the cuts its training took from
    # quantiles (tier_quantiles) of its hold-out probabilities; cuts: tier_cuts always
    tier_rule: str = "auto"
    tier_quantiles: list[float] = field(default_factory=lambda: [0.5, 0.8])
    tier_names: list[str] = field(default_factory=lambda: ["low", "medium", "high"])
    top_k: int = 3
    advice_rows: int = 500  # advise at most this many top-tier rows (highest risk first)
    model_source: str = "auto"  # auto (registry champion, else local) | registry | local
    overwrite: bool = False  # replace an existing score.output (never the model or an input)
    strict: bool = False  # table models: refuse unseen categories / out-of-range values


MODEL_SOURCES = ("auto", "registry", "local")
TIER_RULES = ("auto", "cuts")


def tier_cuts(sc: ScoreConfig, meta: Any) -> list[float]:
    """The probability cuts of the score tiers for a model with metadata ``meta``:
    ``score.tier_cuts``, or (``score.tier_rule=auto``) the cuts a table model's
    training took from quantiles of its hold-out probabilities."""
    found = (meta or {}).get("tier_cuts") if str(sc.tier_rule) == "auto" else None
    if found and (meta or {}).get("mode") == "table" and len(found) == len(sc.tier_cuts):
        return [float(c) for c in found]
    return [float(c) for c in sc.tier_cuts]


def check_score(sc: ScoreConfig, key: str, cfg: Config) -> None:
    cuts = list(sc.tier_cuts)
    for c in cuts:
        _finite(f"{key}.tier_cuts", c)
    if any(not 0 < c < 1 for c in cuts) or cuts != sorted(set(cuts)):
        _fail(f"{key}.tier_cuts", "must be increasing probabilities in (0, 1)", cuts)
    if len(sc.tier_names) != len(cuts) + 1:
        _fail(f"{key}.tier_names", "needs one name more than score.tier_cuts", list(sc.tier_names))
    if sc.tier_rule not in TIER_RULES:
        _fail(f"{key}.tier_rule", f"must be one of {', '.join(TIER_RULES)}", sc.tier_rule)
    qs = [_finite(f"{key}.tier_quantiles", q) for q in sc.tier_quantiles]
    if any(not 0 < q < 1 for q in qs) or qs != sorted(set(qs)) or len(qs) != len(cuts):
        _fail(
            f"{key}.tier_quantiles",
            "must be increasing shares in (0, 1), as many as score.tier_cuts",
            qs,
        )
    _no_repeats(f"{key}.tier_names", [str(t) for t in sc.tier_names], "tier name")
    if sc.top_k < 1:
        _fail(f"{key}.top_k", "top_k must be >= 1 and advice_rows >= 0", sc.top_k)
    if sc.advice_rows < 0:
        _fail(f"{key}.advice_rows", "top_k must be >= 1 and advice_rows >= 0", sc.advice_rows)
    if sc.model_source not in MODEL_SOURCES:
        _fail(f"{key}.model_source", f"must be one of: {', '.join(MODEL_SOURCES)}", sc.model_source)
    _optional_id(f"{key}.snapshot", sc.snapshot, "a snapshot month")
    _optional_id(f"{key}.borrower_id", sc.borrower_id, "a borrower id")


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
    # a never-overdue account cut counts as this share of one closed (the harm compared)
    cut_harm: float = 0.5
    # the tiered settings tuned on the validation rows (each a share): the line a cut
    # keeps, where cuts start (x the closing threshold; 1: no cuts), the risk under which
    # lines are raised (0: no raises)
    tune_reduce_factor: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    tune_medium_ratio: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8, 1.0])
    tune_raise_max_prob: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.02, 0.03])
    bootstrap: int = 200  # resamples of the borrowers behind the verdict's standard errors


_POLICY_SHARES = (
    "lgd",
    "close_revenue_share",
    "reduce_factor",
    "reduce_revenue_share",
    "medium_ratio",
    "raise_line_quantile",
    "raise_max_prob",
    "cut_harm",
)


def check_policy(po: PolicyConfig, key: str, cfg: Config) -> None:
    thresholds = list(po.thresholds)
    for t in thresholds:
        _finite(f"{key}.thresholds", t)
    if not thresholds or any(not 0 < t < 1 for t in thresholds):
        _fail(f"{key}.thresholds", "must list probabilities in (0, 1)", thresholds)
    if po.horizon < 1:
        _fail(f"{key}.horizon", "must be at least 1 month", po.horizon)
    last, oot = _last_month(cfg), list(cfg.features.oot_snapshots)
    end = max(oot, default=0)
    if end + po.horizon > last:
        _fail(
            f"{key}.horizon",
            f"the last out-of-time month {end} (features.oot_snapshots) + horizon must end "
            f"by month {last} (data.n_months - 1)",
            po.horizon,
        )
    for name in _POLICY_SHARES:
        _share(f"{key}.{name}", getattr(po, name))
    if not _finite(f"{key}.raise_factor", po.raise_factor) >= 1.0:
        _fail(f"{key}.raise_factor", "must be >= 1 (with a non-negative uplift)", po.raise_factor)
    _at_least(f"{key}.raise_revenue_uplift", po.raise_revenue_uplift, 0.0, "must not be negative")
    for name in ("tune_reduce_factor", "tune_medium_ratio", "tune_raise_max_prob"):
        values = list(getattr(po, name))
        if not values:
            _fail(f"{key}.{name}", "must list at least one value to tune over", values)
        for v in values:
            _share(f"{key}.{name}", v)
    if po.bootstrap < 2 or po.bootstrap > 10_000:
        _fail(f"{key}.bootstrap", "must lie in [2, 10000] resamples", po.bootstrap)
    _in(
        f"{key}.raise_min_tenure",
        po.raise_min_tenure,
        0,
        last + 1,
        "months on book: must lie in [0, data.n_months]",
    )


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


ENGINE_KINDS = ("local", "dask")
# a byte count as Dask reads it: '4GiB', '500 MB', '2e9', or 'auto'
_MEMORY = re.compile(r"auto|\d+(\.\d+)?(e\d+)?\s*([kmgtp]i?b?|b)?", re.IGNORECASE)


def check_engine(en: EngineConfig, key: str, cfg: Config) -> None:
    if en.kind not in ENGINE_KINDS:
        _fail(f"{key}.kind", "must be 'local' or 'dask'", en.kind)
    for name in ("n_workers", "threads_per_worker"):
        if getattr(en, name) < 1:
            _fail(
                f"{key}.{name}",
                "workers and threads per worker must be at least 1",
                getattr(en, name),
            )
        _in(f"{key}.{name}", getattr(en, name), 1, MAX_PARALLEL)
    if not _MEMORY.fullmatch(str(en.memory_limit).strip()):
        _fail(
            f"{key}.memory_limit",
            "must be a size such as 4GiB or 500MB, or 'auto'",
            en.memory_limit,
        )
    if not 0.0 < _finite(f"{key}.spill_target", en.spill_target) <= 1.0:
        _fail(f"{key}.spill_target", "must lie in (0, 1]", en.spill_target)
    _in(f"{key}.connect_timeout_s", en.connect_timeout_s, 1, 3600, "must lie in [1, 3600] seconds")


#: what an invocation does when another one holds its output root
LOCK_MODES = ("wait", "fail")


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
    # a second invocation on the same output root: wait for the first, or fail at once
    lock: str = "wait"
    stage: str = MISSING


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)


#: every enumerated string key and the values it accepts (a list key: each of its items)
CHOICES: dict[str, tuple[str, ...]] = {
    "data.kind": DATA_KINDS,
    "data.sep": SEPARATORS,
    "model.objective": OBJECTIVES,
    "model.calibration": CALIBRATIONS,
    **{f"explain.{name}": known for name, known in EXPLAIN_CHOICES.items()},
    "engine.kind": ENGINE_KINDS,
    "bench.rows": BENCH_ROWS,
    "score.model_source": MODEL_SOURCES,
    "lock": LOCK_MODES,
}

#: each config group and its check, in the order they run (data first: others read it)
GROUP_CHECKS: tuple[tuple[str, Callable[[Any, str, Any], None]], ...] = (
    ("tracking", check_tracking),
    ("data", check_data),
    ("simulator", check_simulator),
    ("features", check_features),
    ("model", check_model),
    ("explain", check_explain),
    ("engine", check_engine),
    ("bench", check_bench),
    ("score", check_score),
    ("policy", check_policy),
)


def unknown_override(override: str) -> str:
    """Why a command-line override names no key of the schema ("" when it does, or when it
    is not a plain ``key=value``: group choices, ``+`` additions, Hydra's own keys).

    Checked before Hydra composes the config, whose own message repeats the value (a
    password in a URI included) and lists no known keys. The value is never echoed.
    """
    key, sep, value = override.partition("=")
    if key == "stage":
        return "config key 'stage': is chosen by the command (python -m pipeline <command>)"
    if key in _HYDRA_COUNTS:
        return _not_a_count(key, value, _HYDRA_COUNTS[key])
    if not sep or key[:1] in "+~" or key.startswith("hydra."):
        return ""
    if "." not in key:
        return _unknown_choice(key, value)
    schema: Any = Config()
    where: list[str] = []
    for part in key.split("."):
        if not is_dataclass(schema):
            return ""  # a free-form mapping: its group's check reads the keys
        known = [f.name for f in fields(schema)]
        if part not in known:
            group = f"group '{'.'.join(where)}'" if where else "the top level"
            return f"config key '{key}': is not a known key of {group}; known: {', '.join(known)}"
        where.append(part)
        parent, schema = schema, getattr(schema, part)
    return _mistyped(key, value, get_type_hints(type(parent)).get(where[-1]))


#: Hydra's own settings that must be a whole number of at least the given value (the
#: Optuna sweeper fails with a traceback after running no trial)
_HYDRA_COUNTS: dict[str, int] = {"hydra.sweeper.n_trials": 1, "hydra.sweeper.n_jobs": 1}


def _not_a_count(key: str, value: str, least: int) -> str:
    """Why ``value`` is not a whole number of at least ``least`` ("" when it is)."""
    if "${" in value:
        return ""
    try:
        number = int(value.strip().strip("'\""))
    except ValueError:
        return f"config key '{key}': the value given is not a whole number"
    if number < least:
        return f"config key '{key}': must be at least {least} (got {number})"
    return ""


#: the words OmegaConf reads as a boolean
_BOOLEAN_WORDS: dict[str, bool] = {w: True for w in ("true", "yes", "on", "y", "1")} | {
    w: False for w in ("false", "no", "off", "n", "0")
}
#: what a command-line value must parse as, for the scalar types of the schema
_SCALARS: dict[Any, tuple[str, Any]] = {
    int: ("a whole number", int),
    float: ("a number", float),
    bool: ("true or false", lambda v: _BOOLEAN_WORDS[v.lower()]),
}


def _mistyped(key: str, value: str, hint: Any) -> str:
    """Why ``value`` cannot be the scalar type ``hint`` ("" when it can, or when the value
    is a sweep, an interpolation or null where null is allowed). The value is not echoed."""
    optional = type(None) in getattr(hint, "__args__", ())
    base = next((a for a in getattr(hint, "__args__", ()) if a is not type(None)), hint)
    scalar = get_origin(hint) in (None, Union, types.UnionType)  # not list[int], dict[...]
    if get_origin(hint) is list and base in _SCALARS:
        return _mistyped_items(key, value, base)
    if scalar and (base in _SCALARS or base is str) and value.strip()[:1] in ("[", "{"):
        # Hydra would refuse it with exit 1 and the config's class in its message
        what = _SCALARS[base][0] if base in _SCALARS else "a text"
        return f"config key '{key}': a list or a mapping was given where {what} belongs"
    if base not in _SCALARS or any(c in value for c in "$()[]{}"):
        return ""
    what, parse = _SCALARS[base]
    for item in value.split(","):  # a multirun sweeps comma-separated values
        item = item.strip().strip("'\"")
        if optional and item.lower() in ("null", "none"):
            continue
        try:
            number = parse(item)
        except (ValueError, KeyError):
            return f"config key '{key}': the value given is not {what}"
        if base is int and not isinstance(number, bool) and abs(number) > 2**63 - 1:
            return f"config key '{key}': the value given is too large for a whole number"
    return ""


def _mistyped_items(key: str, value: str, item: Any) -> str:
    """Why the list ``[a,b,...]`` has an item that is not of the scalar type ``item`` (""
    when none, or when it is not a plain list: a sweep, an interpolation, nesting)."""
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")) or any(c in text[1:-1] for c in "$()[]{}"):
        return ""
    what, parse = _SCALARS[item]
    for part in filter(None, (x.strip().strip("'\"") for x in text[1:-1].split(","))):
        try:
            parse(part)
        except (ValueError, KeyError):
            return f"config key '{key}': an item of the list given is not {what}"
    return ""


def _unknown_choice(group: str, value: str) -> str:
    """Why ``group=value`` names no option of a config group folder ("" when it does)."""
    folder = REPO_ROOT / "conf" / group
    if not folder.is_dir() or any(c in value for c in "$(),[]"):
        return ""
    options = sorted(p.stem for p in folder.glob("*.yaml"))
    if value in options or value.lower() in ("null", "none"):
        return ""
    return f"config group '{group}' has no option '{value}'; known: {', '.join(options)}"


def _check_known_keys(node: Any, schema: Any, key: str) -> None:
    """Refuse keys that the dataclass ``schema`` does not declare, at every depth.

    Hydra refuses a misspelt key, but ``+group.key=value`` adds one to the struct
    config, and nothing would read it. Only fields holding a dataclass are walked:
    the free-form mappings (``simulator.closure_base``, ``simulator.occupation_shares``,
    ``data.monotone``) have their keys checked by their group's check.
    """
    if not hasattr(node, "keys"):
        return
    known = [f.name for f in fields(schema)]
    for name in node.keys():
        name = str(name)
        where = f"{key}.{name}" if key else name
        if name not in known:
            group = f"group '{key}'" if key else "the top level"
            # the value is left out: an unknown key may well hold a password or a token
            raise ConfigError(
                f"config key '{where}': is not a known key of {group} (added with '+'? "
                f"nothing would read it); known: {', '.join(known)}"
            )
        sub = getattr(schema, name, None)
        if is_dataclass(sub):
            _check_known_keys(node[name], sub, where)


def validate(cfg: Config) -> None:
    """Reject unknown keys and out-of-range values before any work, naming the key."""
    _check_known_keys(cfg, Config(), "")
    for group, check in GROUP_CHECKS:
        check(getattr(cfg, group), group, cfg)
    _one_of("lock", cfg.lock, LOCK_MODES)


def generation_jobs(d: Any) -> int:
    """The worker processes generation uses: ``data.n_jobs``, or the automatic choice."""
    if int(d.n_jobs):
        return int(d.n_jobs)
    return physical_cores() if int(d.n_borrowers) >= PARALLEL_WORLD else 1


def idle_cores(sample_s: float = 0.25) -> int:
    """The physical cores not busy now: :func:`physical_cores` less the CPUs that other
    work kept busy over a short sample (this process waits through it), rounded, at least
    one. A speed choice only, for work whose result does not depend on its thread count
    (a load average would count this run's own last minute)."""
    try:
        busy = psutil.cpu_percent(interval=sample_s) / 100.0 * (psutil.cpu_count() or 1)
    except (psutil.Error, OSError):  # pragma: no cover - no CPU counters here
        busy = 0.0
    return max(1, physical_cores() - int(busy + 0.5))


def physical_cores() -> int:
    try:
        n = psutil.cpu_count(logical=False)
    except (psutil.Error, OSError):  # pragma: no cover - no physical count: use the logical one
        n = None

    n = n or os.cpu_count() or 1
    try:  # a process limited to fewer CPUs (taskset, a container's cpuset) gets that many
        n = min(n, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        pass
    return max(1, n)
