"""The borrower world: a monthly, multi-table simulation of a Jiebei-style credit line.

Pure core: config in, Arrow tables out; no files, no tracking. The world is cut into
*chunks* of ``simulator.chunk_size`` borrowers, each with its own random stream
(``SeedSequence(seed, spawn_key=(chunk,))``), so the output is bit-identical whatever
block size or number of worker processes is used to produce it.

Each month every open account goes through the same step (:func:`_step`):

1. the borrower acts, driven by latent traits (need, investing habit, debt juggling,
   external-credit engagement, multi-homing, credit risk, proneness to sudden stops)
   and by the platform's past actions (cuts and freezes discourage, increases
   encourage);
2. the platform reviews the account with a monitoring policy that only sees
   observable traces (the columns written to ``data/raw``) and turns them into one
   hazard per closure cause, scaled by an unobserved per-borrower judgement
   (``frailty``) and monthly noise, the irreducible random part;
3. closures, freezes, line cuts and tiered line increases are drawn and recorded with
   their cause.

Ground truth (latent traits, per-cause hazards, Monte Carlo oracle probabilities) goes
to separate tables that features never read.

Futures (:func:`futures`, several arms at once: :func:`futures_arms`) continue chosen
accounts from their full state at a snapshot over the label horizon, optionally with
borrower actions (:data:`ACTIONS`, one or several together: an :class:`Intervention`)
carried out; runs with and without actions share their random numbers. The oracle's
two probabilities (full state, and traits known with the platform's individual
judgement and a stop's remaining length redrawn) come from the same machinery.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, cast

import numpy as np
import pyarrow as pa

from pipeline.base.causes import AGE_BANDS, CAUSES, CHANNELS, EVENTS, OCCUPATIONS, OVERDUE
from pipeline.base.config import SimulatorConfig, first_month
from pipeline.base.errors import PipelineError

N_CAUSES = len(CAUSES)
C_SUDDEN, C_LOWYIELD, C_OVER, C_MISUSE, C_THIN, C_POLICY, C_COMP = range(N_CAUSES)
CAUSE_OVERDUE = N_CAUSES  # index used in closure arrays
WINDOW = 12  # months of history the monitoring policy looks back on
MISUSE_DAYS = 7  # the platform's own window for "money routed away soon after the draw"

# per-occupation parameters, in OCCUPATIONS order
_OCC_INCOME = np.array([8000.0, 12000.0, 10000.0, 7000.0, 2500.0])
_OCC_NEED = np.array([-0.2, 0.6, 0.4, 0.1, -0.3])
_OCC_AMOUNT = np.array([1.0, 1.6, 1.4, 0.9, 0.5])
_OCC_INVEST = np.array([0.0, -0.3, 0.0, 0.7, 0.2])
_OCC_EXT = np.array([0.4, 0.2, 0.0, -0.4, -1.8])
_OCC_RISK = np.array([-0.2, 0.2, 0.3, 0.3, 0.2])
_OCC_STOP = np.array([0.8, 1.6, 1.4, 1.2, 0.9])
_OCC_BUSINESS = np.array([0.05, 1.6, 1.2, 0.3, 0.02])
_OCC_AGE = np.array(
    [
        [0.12, 0.38, 0.30, 0.15, 0.05],
        [0.10, 0.45, 0.30, 0.12, 0.03],
        [0.05, 0.30, 0.35, 0.22, 0.08],
        [0.20, 0.45, 0.22, 0.10, 0.03],
        [1.00, 0.00, 0.00, 0.00, 0.00],
    ]
)
_TIER_PROB = np.array([0.15, 0.30, 0.30, 0.25])
_TIER_INCOME = np.array([1.5, 1.15, 0.95, 0.8])
# channel lag ranges (days after the draw): consumption, business, securities, other lender, transfer
_LAG_MAX = np.array([30, 15, 4, 6, 12])

SCHEMAS: dict[str, pa.Schema] = {
    "borrowers": pa.schema(
        [
            ("borrower_id", pa.int64()),
            ("signup_month", pa.int16()),
            ("age_band", pa.string()),
            ("city_tier", pa.int8()),
            ("occupation", pa.string()),
            ("income", pa.float32()),
            ("initial_line", pa.float32()),
            # what the platform knows of a going concern's burn-in (before month 0, the
            # first recorded month; never anything for a cohort): the account had been
            # overdue, and it was closed then (PRIOR_CLOSED for a cause other than overdue,
            # PRIOR_CLOSED_OVERDUE as overdue; NOT_CLOSED_BEFORE otherwise)
            ("prior_overdue", pa.bool_()),
            ("prior_closure", pa.int8()),
        ]
    ),
    "account_months": pa.schema(
        [
            ("borrower_id", pa.int64()),
            ("month", pa.int16()),
            ("line", pa.float32()),
            ("n_draws", pa.int16()),
            ("draw_amount", pa.float32()),
            ("repayment", pa.float32()),
            ("balance", pa.float32()),
            ("interest_paid", pa.float32()),
            ("n_early_repay", pa.int16()),
            ("dpd", pa.int16()),
            ("frozen", pa.int8()),
        ]
    ),
    "fund_flows": pa.schema(
        [
            ("borrower_id", pa.int64()),
            ("month", pa.int16()),
            ("channel", pa.string()),
            ("amount", pa.float32()),
            ("days_after_draw", pa.int16()),
        ]
    ),
    "bureau_months": pa.schema(
        [
            ("borrower_id", pa.int64()),
            ("month", pa.int16()),
            ("ext_cards", pa.int16()),
            ("ext_loans", pa.int16()),
            ("ext_new_accounts", pa.int16()),
            ("ext_inquiries", pa.int16()),
            ("ext_utilisation", pa.float32()),
            ("months_since_ext_activity", pa.int16()),
        ]
    ),
    "consumption_months": pa.schema(
        [
            ("borrower_id", pa.int64()),
            ("month", pa.int16()),
            ("spend_daily", pa.float32()),
            ("spend_durables", pa.float32()),
            ("spend_services", pa.float32()),
            ("spend_weekly_cv", pa.float32()),
            ("competitor_baitiao", pa.float32()),
            ("competitor_fenfu", pa.float32()),
        ]
    ),
    "social_edges": pa.schema(
        [("src", pa.int64()), ("dst", pa.int64()), ("tie_strength", pa.float32())]
    ),
    "macro_months": pa.schema(
        [("month", pa.int16()), ("regime", pa.int8()), ("competitor_intensity", pa.float32())]
    ),
    "platform_events": pa.schema(
        [
            ("borrower_id", pa.int64()),
            ("month", pa.int16()),
            ("event", pa.string()),
            ("cause", pa.string()),
            ("line_before", pa.float32()),
            ("line_after", pa.float32()),
        ]
    ),
}

TRUTH_SCHEMAS: dict[str, pa.Schema] = {
    "traits": pa.schema(
        [
            ("borrower_id", pa.int64()),
            ("community", pa.int64()),
            ("need", pa.float32()),
            ("amount_scale", pa.float32()),
            ("invest", pa.float32()),
            ("juggler", pa.float32()),
            ("ext_engagement", pa.float32()),
            ("multihome", pa.float32()),
            ("risk", pa.float32()),
            ("stop_prone", pa.float32()),
            ("frailty", pa.float32()),
        ]
    ),
    "hazards": pa.schema(
        [("borrower_id", pa.int64()), ("month", pa.int16())]
        + [(f"h_{c}", pa.float32()) for c in CAUSES]
    ),
    "oracle": pa.schema(
        [
            ("borrower_id", pa.int64()),
            ("snapshot", pa.int16()),
            ("p_oracle", pa.float32()),
            ("p_full", pa.float32()),
            ("p_observable", pa.float32()),
            ("n_futures", pa.int16()),
            ("p_full_h1", pa.float32()),
            ("p_full_h2", pa.float32()),
            ("p_observable_h1", pa.float32()),
            ("p_observable_h2", pa.float32()),
            ("ess_observable", pa.float32()),
        ]
        + [(f"f_{c}", pa.float32()) for c in CAUSES]
        + [(f"fo_{c}", pa.float32()) for c in CAUSES]
    ),
}

RAW_TABLES = tuple(SCHEMAS)
TRUTH_TABLES = tuple(TRUTH_SCHEMAS)


@dataclass(frozen=True)
class WorldSpec:
    """Everything the simulation needs, as plain values (built from the Hydra config)."""

    n_borrowers: int
    n_months: int
    seed: int
    sim: SimulatorConfig  # or its OmegaConf node (attribute access)
    oracle_snapshots: tuple[int, ...] = ()
    horizon: int = 3

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_borrowers / self.sim.chunk_size)

    @property
    def first_month(self) -> int:
        """The first simulated month: the burn-in's start (negative), or 0 for a cohort."""
        return first_month(self.sim)

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        lo = chunk * self.sim.chunk_size
        return lo, min(self.n_borrowers, lo + self.sim.chunk_size)


def world_size(book: int, sim: Any, n_months: int) -> int:
    """Borrowers the simulation opens an account for, given the book size ``book``.

    A cohort world is ``book`` borrowers. A going concern adds to an opening book of
    about ``book`` accounts ``inflow_rate x book`` new accounts in each month of the
    burn-in and of the recorded months: ``book x (1 + inflow_rate x (burn_in + n_months))``.
    """
    if sim.acquisition != "continuous":
        return int(book)
    return int(round(book * (1.0 + float(sim.inflow_rate) * (int(sim.burn_in) + n_months))))


def macro_table(spec: WorldSpec) -> pa.Table:
    months = np.arange(spec.n_months)
    return pa.table(
        {
            "month": months.astype(np.int16),
            "regime": regime_level(spec.sim, months).astype(np.int8),
            "competitor_intensity": _competitor_intensity(spec, months).astype(np.float32),
        },
        schema=SCHEMAS["macro_months"],
    )


def regime_level(sim: SimulatorConfig, month: np.ndarray | int) -> np.ndarray:
    """0 before any tightening, 1 during the pilot phase, 2 once tightening is in full force."""
    m = np.asarray(month)
    return (m >= sim.pilot_month).astype(np.int8) + (m >= sim.tightening_month).astype(np.int8)


def regime_strength(sim: SimulatorConfig, month: int) -> float:
    """How hard the tightening bites in ``month`` (a multiplier of the policy signal)."""
    level = int(regime_level(sim, month))
    return sim.tightening_strength * (0.0, sim.pilot_strength, 1.0)[level]


def _competitor_intensity(spec: WorldSpec, month: np.ndarray | int) -> np.ndarray:
    s = spec.sim
    return 1.0 / (
        1.0 + np.exp(-(np.asarray(month, dtype=float) - s.competitor_midpoint) / s.competitor_slope)
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------- state


@dataclass
class _State:
    """Struct of arrays, one entry per account (or per account x future, for the oracle)."""

    bid: np.ndarray
    occ: np.ndarray
    signup: np.ndarray
    income: np.ndarray
    need: np.ndarray
    amount_scale: np.ndarray
    invest: np.ndarray
    juggler: np.ndarray
    ext_eng: np.ndarray
    multihome: np.ndarray
    risk: np.ndarray
    stop_prone: np.ndarray
    frailty: np.ndarray
    frailty_group: np.ndarray  # the community's part of ``frailty``
    repay_rate: np.ndarray
    business: np.ndarray
    # dynamic
    open: np.ndarray
    ever_overdue: np.ndarray
    line: np.ndarray
    balance: np.ndarray
    stopped_left: np.ndarray
    frozen_left: np.ndarray
    react_left: np.ndarray
    boost: np.ndarray
    ext_cards: np.ndarray
    ext_loans: np.ndarray
    months_since_ext: np.ndarray
    months_since_draw: np.ndarray
    h_drew: np.ndarray  # (n, WINDOW) ring buffers indexed by month % WINDOW
    h_util: np.ndarray
    h_drawn: np.ndarray
    h_misuse: np.ndarray
    h_noncons: np.ndarray
    h_comp: np.ndarray
    # cumulative closure hazard with the individual part of the frailty taken out: the
    # account's survival so far, as a function of that part, is exp(-cum_h0 * exp(part))
    cum_h0: np.ndarray

    def take(self, idx: np.ndarray) -> _State:
        """The rows ``idx`` (an index array: each field is a new array, not a view)."""
        idx = np.asarray(idx)
        if idx.dtype == bool or idx.ndim != 1:
            raise ValueError("state: take needs a 1-d array of row numbers")
        return _State(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@dataclass
class _Demographics:
    """What the borrowers table shows about each borrower (codes, not labels)."""

    occ: np.ndarray
    age: np.ndarray
    tier: np.ndarray
    signup: np.ndarray
    income: np.ndarray


def _init_chunk(
    spec: WorldSpec, chunk: int, rng: np.random.Generator
) -> tuple[_State, dict[str, pa.Table]]:
    s = spec.sim
    lo, hi = spec.chunk_bounds(chunk)
    n = hi - lo
    bid = np.arange(lo, hi, dtype=np.int64)
    demo = _demographics(spec, n, rng)
    # homophily: borrowers in a community share latent effects
    n_comm = math.ceil(n / s.community_size)
    community_local = np.minimum(np.arange(n) // s.community_size, n_comm - 1)
    z = rng.normal(0.0, s.community_sd, size=(n_comm, 3))[community_local]
    community = (lo // s.community_size) + community_local  # global id, stable across chunks
    state = _initial_state(s, bid, demo, z, rng)
    tables = _static_tables(bid, demo, community, state)
    tables["social_edges"] = _social_edges(spec, rng, bid, community_local, n_comm)
    return state, tables


#: the longest tenure an opening-book account can have at the start of the burn-in
MAX_OPENING_TENURE = 240


def _signups(spec: WorldSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sign-up months: a cohort over the first months, or a going concern's book.

    A going concern: each borrower is in the opening book with probability
    ``1 / (1 + inflow_rate x (burn_in + n_months))``, its tenure at the start of the
    burn-in geometric with mean ``1 / inflow_rate`` (the tenure mix of a book whose
    monthly attrition equals that rate); the others join uniformly over the burn-in
    and the recorded months.
    """
    s = spec.sim
    if s.acquisition != "continuous":
        return rng.integers(0, max(1, s.signup_spread), size=n).astype(np.int16)
    b, r = int(s.burn_in), float(s.inflow_rate)
    opening = rng.random(n) < 1.0 / (1.0 + r * (b + spec.n_months))
    joined = rng.integers(-b, spec.n_months, size=n)
    tenure = np.minimum(rng.geometric(r, size=n) - 1, MAX_OPENING_TENURE)
    return np.where(opening, -b - tenure, joined).astype(np.int16)


#: ``prior_closure`` codes of the borrowers table
NOT_CLOSED_BEFORE, PRIOR_CLOSED, PRIOR_CLOSED_OVERDUE = 0, 1, 2


def _start_chunk(
    spec: WorldSpec, chunk: int, rng: np.random.Generator
) -> tuple[_State, dict[str, pa.Table]]:
    """A chunk's state at the start of month 0 and its static tables.

    A going concern first lives through its burn-in (months ``first_month .. -1``):
    nothing of it is recorded month by month, but the borrowers table keeps what a
    platform knows of those years: who signed up when, who had been overdue
    (``prior_overdue``) and who was closed before month 0 (``prior_closure``), so
    that the social features count contacts closed long ago as the platform would.
    """
    st, tables = _init_chunk(spec, chunk, rng)
    if spec.first_month >= 0:
        return st, tables
    prior = np.zeros(len(st.bid), dtype=np.int8)
    for t in range(spec.first_month, 0):
        out = _step(spec, st, t, rng, record=False)
        closed = out.idx[out.closed]
        overdue = out.cause[out.closed] == CAUSE_OVERDUE
        prior[closed] = np.where(overdue, PRIOR_CLOSED_OVERDUE, PRIOR_CLOSED)
    b = tables["borrowers"]
    for name, values in (("prior_overdue", st.ever_overdue), ("prior_closure", prior)):
        b = b.set_column(b.schema.get_field_index(name), name, pa.array(values.copy()))
    tables["borrowers"] = b
    return st, tables


def _demographics(spec: WorldSpec, n: int, rng: np.random.Generator) -> _Demographics:
    s = spec.sim
    shares = np.array([s.occupation_shares.get(o, 0.0) for o in OCCUPATIONS], dtype=float)
    occ = rng.choice(len(OCCUPATIONS), size=n, p=shares / shares.sum()).astype(np.int8)
    # draw age bands per borrower by inverse CDF on the occupation's distribution
    u_age = rng.random(n)
    cdf = np.cumsum(_OCC_AGE, axis=1)[occ]
    age = (u_age[:, None] > cdf).sum(axis=1).clip(0, len(AGE_BANDS) - 1)
    tier = rng.choice(4, size=n, p=_TIER_PROB).astype(np.int8)
    signup = _signups(spec, n, rng)
    income = _OCC_INCOME[occ] * _TIER_INCOME[tier] * rng.lognormal(0.0, 0.45, n)
    return _Demographics(occ=occ, age=age, tier=tier, signup=signup, income=income)


def _initial_state(
    s: Any, bid: np.ndarray, demo: _Demographics, z: np.ndarray, rng: np.random.Generator
) -> _State:
    """Latent traits (individual draws plus the community effects ``z``) and month-0 state."""
    n = len(bid)
    occ = demo.occ
    e = rng.normal(size=(n, 9))
    need = _sigmoid(0.1 + 1.1 * e[:, 0] + _OCC_NEED[occ] + 0.4 * z[:, 1])
    amount_scale = np.exp(0.45 * e[:, 1]) * _OCC_AMOUNT[occ]
    invest = _sigmoid(-3.2 + 1.3 * e[:, 2] + _OCC_INVEST[occ] + 0.8 * z[:, 2])
    juggler = _sigmoid(-2.6 + 1.2 * e[:, 3] + 0.6 * z[:, 0])
    ext_eng = _sigmoid(1.2 + 1.3 * e[:, 4] + _OCC_EXT[occ] + 0.6 * z[:, 1])
    multihome = _sigmoid(-0.9 + 1.3 * e[:, 5])
    risk = 0.8 * e[:, 6] + 0.6 * z[:, 0] + _OCC_RISK[occ]
    stop_prone = np.exp(0.8 * e[:, 7]) * _OCC_STOP[occ]
    frailty = s.frailty_sd * e[:, 8] + 0.5 * z[:, 0]
    repay_rate = np.clip(s.repay_rate * rng.lognormal(0.0, 0.3, n), 0.05, 1.0)
    business = _OCC_BUSINESS[occ] * np.exp(0.3 * rng.normal(size=n))
    line = np.clip(
        np.round(demo.income * rng.uniform(0.8, 2.5, n) / 100.0) * 100.0, 1000.0, 100_000.0
    )

    ext_cards = rng.poisson(2.2 * ext_eng).astype(np.int16)
    ext_loans = rng.poisson(0.3 + 1.5 * juggler).astype(np.int16) * (rng.random(n) < ext_eng)
    months_since_ext = np.where(
        ext_cards + ext_loans > 0, rng.integers(0, 4, n), rng.integers(3, 30, n)
    ).astype(np.int16)

    return _State(
        bid=bid,
        occ=occ,
        signup=demo.signup,
        income=demo.income,
        need=need,
        amount_scale=amount_scale,
        invest=invest,
        juggler=juggler,
        ext_eng=ext_eng,
        multihome=multihome,
        risk=risk,
        stop_prone=stop_prone,
        frailty=frailty,
        frailty_group=0.5 * z[:, 0],
        repay_rate=repay_rate,
        business=business,
        open=np.ones(n, dtype=bool),
        ever_overdue=np.zeros(n, dtype=bool),
        line=line.copy(),
        balance=np.zeros(n),
        stopped_left=np.zeros(n, dtype=np.int16),
        frozen_left=np.zeros(n, dtype=np.int16),
        react_left=np.zeros(n, dtype=np.int16),
        boost=np.ones(n),
        ext_cards=ext_cards,
        ext_loans=ext_loans.astype(np.int16),
        months_since_ext=months_since_ext,
        months_since_draw=np.full(n, 99, dtype=np.int16),
        h_drew=np.zeros((n, WINDOW), dtype=bool),
        h_util=np.zeros((n, WINDOW)),
        h_drawn=np.zeros((n, WINDOW)),
        h_misuse=np.zeros((n, WINDOW)),
        h_noncons=np.zeros((n, WINDOW)),
        h_comp=np.zeros((n, WINDOW), dtype=bool),
        cum_h0=np.zeros(n),
    )


def _static_tables(
    bid: np.ndarray, demo: _Demographics, community: np.ndarray, st: _State
) -> dict[str, pa.Table]:
    borrowers = pa.table(
        {
            "borrower_id": bid,
            "signup_month": demo.signup,
            "age_band": np.array(AGE_BANDS, dtype=object)[demo.age],
            "city_tier": (demo.tier + 1).astype(np.int8),
            "occupation": np.array(OCCUPATIONS, dtype=object)[demo.occ],
            "income": demo.income.astype(np.float32),
            "initial_line": st.line.astype(np.float32),
            "prior_overdue": np.zeros(len(bid), dtype=bool),
            "prior_closure": np.zeros(len(bid), dtype=np.int8),
        },
        schema=SCHEMAS["borrowers"],
    )
    traits = pa.table(
        {
            "borrower_id": bid,
            "community": community.astype(np.int64),
            "need": st.need,
            "amount_scale": st.amount_scale,
            "invest": st.invest,
            "juggler": st.juggler,
            "ext_engagement": st.ext_eng,
            "multihome": st.multihome,
            "risk": st.risk,
            "stop_prone": st.stop_prone,
            "frailty": st.frailty,
        },
        schema=TRUTH_SCHEMAS["traits"],
    )
    return {"borrowers": borrowers, "traits": traits}


def _social_edges(
    spec: WorldSpec, rng: np.random.Generator, bid: np.ndarray, community: np.ndarray, n_comm: int
) -> pa.Table:
    s = spec.sim
    n = len(bid)
    k = rng.poisson(s.contacts_mean, n)
    src = np.repeat(np.arange(n), k)
    m = len(src)
    same = rng.random(m) < 0.75
    # within the community: a random member of the same community; otherwise anyone in the chunk
    comm_lo = community[src] * s.community_size
    comm_n = np.minimum(s.community_size, n - comm_lo)
    dst = np.where(same, comm_lo + (rng.random(m) * comm_n).astype(np.int64), rng.integers(0, n, m))
    strength = np.where(same, rng.beta(4, 2, m), rng.beta(2, 4, m))
    keep = src != dst
    src, dst, strength = src[keep], dst[keep], strength[keep]
    # one edge per ordered pair, first occurrence wins
    key = src.astype(np.int64) * n + dst
    _, first = np.unique(key, return_index=True)
    first.sort()
    return pa.table(
        {
            "src": bid[src[first]],
            "dst": bid[dst[first]],
            "tie_strength": strength[first].astype(np.float32),
        },
        schema=SCHEMAS["social_edges"],
    )


# --------------------------------------------------------------------------- one month


@dataclass
class _MonthOut:
    """What one month produced for the accounts on book (indices into the state)."""

    idx: np.ndarray
    closed: np.ndarray  # bool over idx
    cause: np.ndarray  # int over idx, -1 when not closed, CAUSE_OVERDUE for overdue
    rows: dict[str, dict[str, np.ndarray]] | None = None  # table -> columns
    flows: dict[str, np.ndarray] | None = None
    events: dict[str, np.ndarray] | None = None
    hazards: np.ndarray | None = None
    drew: np.ndarray | None = None  # bool over idx
    draw_amount: np.ndarray | None = None
    flow_amount: np.ndarray | None = None  # (len(idx), channels)
    early: np.ndarray | None = None  # bool over idx: the balance was repaid early
    interest: np.ndarray | None = None  # interest charged over idx
    balance: np.ndarray | None = None  # balance at the month's end over idx
    # with ``survive``: the month's chance of a closure by each cause (overdue last) for
    # an account open at its start, given the month's path (the closure itself not drawn)
    p_close: np.ndarray | None = None  # (len(idx), N_CAUSES + 1)


@dataclass
class _Act:
    """The actions carried out in a future (keys of :data:`ACTIONS`), together.

    ``who`` maps each action to the state rows carrying it out (a bool mask), or to None
    when every row does; rows of one run can so carry out different actions.
    """

    who: dict[str, np.ndarray | None]
    force_draw: np.ndarray | None = None  # over state rows: draw this month ("keep_drawing")
    # over state rows: the size of a forced draw ("keep_drawing"); inf: the usual size
    draw_size: np.ndarray | None = None
    # "moderate_use": draw only up to this share of the line (one, or over state rows)
    util_cap: float | np.ndarray = 0.5
    # "route_to_consumption": at most this share of drawn money to securities and other
    # lenders (one, or over state rows); the rest of their share goes to consumption
    route_share: float | np.ndarray = 0.0


@dataclass
class _Month:
    """The month being stepped: accounts on book, market drivers and the shared uniforms."""

    t: int
    idx: np.ndarray
    slot: int
    comp_level: float
    regime: float
    u: np.ndarray  # (n, 12) uniforms, one column per decision
    act: _Act | None = None
    survive: bool = False  # closures are not drawn; their chances are returned instead
    # how the state's arrays are read and written for the month's accounts: ``idx``, or
    # every row as a slice (a view instead of a gathered copy, for futures)
    sel: Any = None
    record: bool = True  # False: what only the raw tables read is not computed
    # with ``survive``: more rows whose chances are asked, each on the path of a state row
    # but with its own frailty (state rows, frailties); their chances follow the state's
    alias: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.sel is None:
            self.sel = self.idx

    def acting(self, name: str) -> np.ndarray | None:
        """Which of the month's accounts carry out action ``name`` (None: none does)."""
        if self.act is None or name not in self.act.who:
            return None
        rows = self.act.who[name]
        return np.ones(self.n, dtype=bool) if rows is None else rows[self.sel]

    @property
    def n(self) -> int:
        return len(self.idx)


@dataclass
class _Behaviour:
    """Sections 1-3: stops, competitor use and draws."""

    stopped_left: np.ndarray
    stopped_now: np.ndarray
    comp: np.ndarray
    frozen: np.ndarray
    drew: np.ndarray
    n_draws: np.ndarray
    line: np.ndarray
    bal_prev: np.ndarray
    draw_amt: np.ndarray


@dataclass
class _Money:
    """Sections 4-6: where the drawn money went, repayment, interest and overdue."""

    flow_amt: np.ndarray  # (n, channels)
    lags: np.ndarray | None  # None when the month is not recorded
    misuse: np.ndarray
    noncons: np.ndarray
    early: np.ndarray
    repay: np.ndarray
    interest: np.ndarray
    balance: np.ndarray
    util: np.ndarray
    od: np.ndarray
    dpd: np.ndarray


@dataclass
class _Bureau:
    """Section 7: the external credit file."""

    new_acc: np.ndarray
    cards: np.ndarray
    loans: np.ndarray
    months_since_ext: np.ndarray
    inquiries: np.ndarray | None  # None when the month is not recorded
    ext_util: np.ndarray | None


@dataclass
class _Spend:
    """Section 8: consumption and competitor products."""

    spend: np.ndarray
    cshare: np.ndarray
    weekly_cv: np.ndarray
    baitiao: np.ndarray
    fenfu: np.ndarray


@dataclass
class _Review:
    """Section 9: the platform's signals, hazards and closures, and its soft actions."""

    tenure: np.ndarray
    sig: np.ndarray  # (n, causes)
    draws6: np.ndarray
    util6: np.ndarray
    haz: np.ndarray
    closed: np.ndarray
    cause: np.ndarray
    p_close: np.ndarray | None = None  # with ``survive`` (see :class:`_MonthOut`)
    frz: np.ndarray | None = None
    cut: np.ndarray | None = None
    cut_cause: np.ndarray | None = None
    inc: np.ndarray | None = None
    new_line: np.ndarray | None = None


def _step(
    spec: WorldSpec,
    st: _State,
    t: int,
    streams: np.random.Generator | _ChunkStreams,
    record: bool,
    act: _Act | None = None,
    every_row: bool = False,
    survive: bool = False,
    alias: tuple[np.ndarray, np.ndarray] | None = None,
) -> _MonthOut:
    """One month for the accounts on book (all rows with ``every_row``, for futures).

    With ``survive`` no account closes: the month's path is drawn as usual (the same
    random numbers) and ``p_close`` gives each account's chance of closing by each cause
    this month given that path, for the oracle's expected-hazard estimator.
    """
    s = spec.sim
    if every_row:
        idx = np.arange(len(st.bid))
    else:
        idx = np.flatnonzero(st.open & (st.signup <= t))
    if isinstance(streams, _ChunkStreams):  # chunks stepped together: each draws for its rows
        streams.select(idx)
    rng = cast(np.random.Generator, streams)  # the draws a month makes, whichever streams
    mo = _Month(
        t=t,
        idx=idx,
        slot=t % WINDOW,
        comp_level=float(_competitor_intensity(spec, t)),
        regime=float(regime_strength(s, t)),  # 0 before any tightening
        u=rng.random((len(idx), 12)),
        act=act,
        survive=survive,
        sel=slice(None) if every_row else idx,
        record=record,
        alias=alias,
    )
    b = _behaviour(s, st, mo, rng)
    money = _money(s, st, mo, b, rng)
    bu = _bureau(s, st, mo, rng)
    sp = _consumption(st, mo, b, rng)
    _write_back(st, mo, b, money, bu)
    rv = _review(s, st, mo, money, bu, rng)
    _platform_actions(s, st, mo, b, money, rv, rng)
    out = _MonthOut(
        idx=idx,
        closed=rv.closed,
        cause=rv.cause,
        drew=b.drew,
        draw_amount=b.draw_amt,
        flow_amount=money.flow_amt,
        early=money.early,
        interest=money.interest,
        balance=money.balance,
        p_close=rv.p_close,
    )
    if record:
        assert sp is not None
        _record(out, st, mo, b, money, bu, sp, rv)
    return out


def _behaviour(s: SimulatorConfig, st: _State, mo: _Month, rng: np.random.Generator) -> _Behaviour:
    idx, n, u = mo.sel, mo.n, mo.u
    # 1. sudden stops: a latent change in the borrower's life, not visible as such
    stopped = st.stopped_left[idx] > 0
    new_stop = (~stopped) & (u[:, 0] < s.stop_shock_rate * st.stop_prone[idx])
    dur = rng.geometric(1.0 / max(s.stop_mean_months, 1.0), n)
    stopped_left = np.where(new_stop, dur, np.maximum(st.stopped_left[idx] - 1, 0)).astype(np.int16)
    stopped_now = stopped_left > 0

    # 2. competitor use grows with the market
    multihome = st.multihome[idx]
    comp = u[:, 1] < multihome * (0.15 + 0.85 * mo.comp_level)
    quit_comp = mo.acting("stop_competitors")
    if quit_comp is not None:
        comp &= ~quit_comp

    # 3. draws
    frozen = st.frozen_left[idx] > 0
    need = st.need[idx]
    p = need * st.boost[idx] * s.draw_prob / 0.45
    p = p * np.where(stopped_now, 0.04, 1.0)
    p = p * np.where(comp, 1.0 - s.competitor_shift * mo.comp_level * multihome, 1.0)
    p = p * np.where(st.react_left[idx] > 0, 1.0 - s.line_reaction, 1.0)
    p = np.where(frozen, 0.0, np.clip(p, 0.0, 0.98))
    drew = u[:, 2] < p
    forced = np.zeros(n, dtype=bool)
    if mo.act is not None and mo.act.force_draw is not None:
        forced = mo.act.force_draw[idx] & ~frozen & ~drew  # a frozen line cannot be drawn
        drew |= forced
    n_draws = np.where(
        drew, 1 + rng.poisson(max(s.draws_per_month - 1.0, 0.0) * (0.5 + need), n), 0
    )
    # copies: the month writes these back into the state while they are still read
    line = np.array(st.line[idx])
    bal_prev = np.array(st.balance[idx])
    per_draw = st.amount_scale[idx] * line * 0.12 * rng.lognormal(0.0, 0.6, n)
    if mo.act is not None and mo.act.draw_size is not None:
        # a draw made only because the advice said so is one draw of the advised size
        size = mo.act.draw_size[idx]
        sized = forced & np.isfinite(size)
        n_draws = np.where(sized, 1, n_draws)
        per_draw = np.where(sized, size, per_draw)
    available = np.maximum(line - bal_prev, 0.0)
    moderate = mo.acting("moderate_use")
    if mo.act is not None and moderate is not None:
        cap = mo.act.util_cap
        share = cap[idx] if isinstance(cap, np.ndarray) else cap
        capped = np.maximum(share * line - bal_prev, 0.0)
        available = np.where(moderate, capped, available)
    draw_amt = np.where(drew, np.minimum(n_draws * per_draw, available), 0.0)
    draw_amt = np.round(draw_amt, 2)
    drew = drew & (draw_amt > 0)
    n_draws = np.where(drew, n_draws, 0)
    return _Behaviour(
        stopped_left=stopped_left,
        stopped_now=stopped_now,
        comp=comp,
        frozen=frozen,
        drew=drew,
        n_draws=n_draws,
        line=line,
        bal_prev=bal_prev,
        draw_amt=draw_amt,
    )


def _money(
    s: SimulatorConfig, st: _State, mo: _Month, b: _Behaviour, rng: np.random.Generator
) -> _Money:
    idx, n, u = mo.sel, mo.n, mo.u
    # 4. where the money goes
    w = np.stack(
        [
            np.ones(n),
            st.business[idx],
            2.0 * st.invest[idx],
            2.0 * st.juggler[idx],
            np.full(n, 0.08),
        ],
        axis=1,
    ) * rng.gamma(6.0, 1.0 / 6.0, (n, len(CHANNELS)))
    route = mo.acting("route_to_consumption")
    if route is not None and mo.act is not None:
        keep = mo.act.route_share
        keep_r = keep[idx] if isinstance(keep, np.ndarray) else np.full(n, keep)
        away = w[:, 2] + w[:, 3]
        total = w.sum(axis=1)
        # scale securities and other lenders down to the kept share of the money drawn
        scale = np.where(away > keep_r * total, keep_r * total / np.maximum(away, 1e-12), 1.0)
        scale = np.where(route, scale, 1.0)
        w[:, 0] += away * (1.0 - scale)
        w[:, 2] *= scale
        w[:, 3] *= scale
    w /= w.sum(axis=1, keepdims=True)
    flow_amt = b.draw_amt[:, None] * w
    r = rng.random((n, len(CHANNELS)))
    # the days to each channel; only securities' and other lenders' make the state (the
    # rest are written to the fund flows)
    lags = (r**1.5 * _LAG_MAX).astype(np.int16) if mo.record else None
    lag_sec, lag_other = (
        (lags[:, 2], lags[:, 3])
        if lags is not None
        else (r[:, 2:4] ** 1.5 * _LAG_MAX[2:4]).astype(np.int16).T
    )
    misuse = (flow_amt[:, 2] * (lag_sec <= MISUSE_DAYS)) + (
        flow_amt[:, 3] * (lag_other <= MISUSE_DAYS)
    )
    noncons = flow_amt[:, 1:].sum(axis=1)

    # 5. repayment and interest
    bal_prev = b.bal_prev
    early = (bal_prev > 0) & (
        u[:, 3] < s.early_repay_prob * (0.5 + st.juggler[idx] + st.ext_eng[idx])
    )
    on_schedule = mo.acting("repay_on_schedule")
    if on_schedule is not None:
        early &= ~on_schedule
    repay = np.where(early, bal_prev, bal_prev * st.repay_rate[idx])
    interest = (bal_prev + 0.5 * b.draw_amt) * s.daily_rate * 30.0
    balance = np.maximum(bal_prev - repay + b.draw_amt, 0.0)
    util = np.where(b.line > 0, balance / b.line, 0.0)

    # 6. overdue: ordinary credit risk
    p_od = s.overdue_rate * np.exp(st.risk[idx] + 1.5 * util + 0.8 * b.stopped_now)
    od = (balance > 0) & (u[:, 4] < p_od)
    dpd = np.where(od, rng.integers(1, 91, n), 0).astype(np.int16)
    return _Money(
        flow_amt=flow_amt,
        lags=lags,
        misuse=misuse,
        noncons=noncons,
        early=early,
        repay=repay,
        interest=interest,
        balance=balance,
        util=util,
        od=od,
        dpd=dpd,
    )


def _bureau(s: SimulatorConfig, st: _State, mo: _Month, rng: np.random.Generator) -> _Bureau:
    idx, n, u = mo.sel, mo.n, mo.u
    # 7. external credit (bureau)
    eng = st.ext_eng[idx]
    juggler = st.juggler[idx]
    new_acc = rng.binomial(1, ext_open_prob(s, eng, juggler))
    is_loan = u[:, 5] < 0.3 + 0.5 * juggler
    live = mo.acting("keep_external_live")
    keep_live: np.ndarray | bool = False if live is None else live
    if live is not None:
        # a borrower without external credit applies for a product; the bureau approves
        # it with that borrower's own chance of a new product within a year
        # (ext_approval); u[:, 6] decides, a draw no other decision of such a row reads
        approved = u[:, 6] < ext_approval(s, eng, juggler)
        none_held = st.ext_cards[idx] + st.ext_loans[idx] == 0
        new_acc = np.where(live & none_held & approved, 1, new_acc)
    cards = st.ext_cards[idx] + new_acc * (~is_loan)
    loans = st.ext_loans[idx] + new_acc * is_loan
    cards = cards - rng.binomial(cards, s.ext_close_rate)
    loans = loans - rng.binomial(loans, s.ext_close_rate * 2.0)
    ext_use = ((cards + loans) > 0) & ((u[:, 6] < s.ext_use_prob * eng) | keep_live)
    months_since_ext = np.where(
        ext_use | (new_acc > 0), 0, np.minimum(st.months_since_ext[idx] + 1, 240)
    ).astype(np.int16)
    inquiries: np.ndarray | None = None
    ext_util: np.ndarray | None = None
    if mo.record or not isinstance(rng, _CrnGenerator):
        # NumPy's own Poisson sampler uses as many draws as its parameters ask for
        inquiries = rng.poisson(0.05 + 0.4 * eng * s.ext_open_rate / 0.05 + 0.8 * juggler)
    else:  # only the raw tables read these: one uniform per value, as the sampler draws
        rng.random(n)
    if mo.record:
        ext_util = np.clip(0.15 + 0.6 * juggler + 0.1 * rng.normal(size=n), 0.0, 1.0) * (
            (cards + loans) > 0
        )
    else:
        rng.standard_normal(n)
    return _Bureau(
        new_acc=new_acc,
        cards=cards,
        loans=loans,
        months_since_ext=months_since_ext,
        inquiries=inquiries,
        ext_util=ext_util,
    )


def ext_open_prob(s: SimulatorConfig, eng: np.ndarray, juggler: np.ndarray) -> np.ndarray:
    """The bureau's monthly chance that a borrower opens a new external product."""
    return np.clip(s.ext_open_rate * (0.3 + 2.0 * eng + juggler), 0.0, 1.0)


def ext_approval(s: SimulatorConfig, eng: np.ndarray, juggler: np.ndarray) -> np.ndarray:
    """The chance that a borrower's application for an external product is approved:
    its own chance of a new product within twelve months (low for students)."""
    return 1.0 - (1.0 - ext_open_prob(s, eng, juggler)) ** 12


#: the shares of spending by kind (daily, durables, services): a Dirichlet's parameters
_SPEND_ALPHA = np.array([6.0, 2.0, 3.0])


def _consumption(st: _State, mo: _Month, b: _Behaviour, rng: np.random.Generator) -> _Spend | None:
    n, u = mo.n, mo.u
    if not mo.record:
        # only the raw tables read these: the same draws, in the same order, without
        # the arithmetic (lognormal, gamma and uniform are transforms of these draws;
        # a Dirichlet draws one standard gamma per share, row by row)
        rng.standard_normal(n)
        rng.standard_gamma(_SPEND_ALPHA, (n, len(_SPEND_ALPHA)))
        rng.standard_gamma(4.0, n)
        rng.random(n)
        rng.random(n)
        return None
    # 8. consumption and competitor products
    spend = (
        st.income[mo.sel] * 0.35 * rng.lognormal(0.0, 0.25, n) * np.where(b.stopped_now, 0.75, 1.0)
    )
    cshare = rng.dirichlet(_SPEND_ALPHA, n)
    weekly_cv = rng.gamma(4.0, 0.07, n) * np.where(b.stopped_now, 1.8, 1.0)
    baitiao = np.where(b.comp & (u[:, 7] < 0.6), spend * rng.uniform(0.1, 0.5, n), 0.0)
    fenfu = np.where(b.comp & (u[:, 8] < 0.5), spend * rng.uniform(0.05, 0.3, n), 0.0)
    return _Spend(spend=spend, cshare=cshare, weekly_cv=weekly_cv, baitiao=baitiao, fenfu=fenfu)


def _write_back(st: _State, mo: _Month, b: _Behaviour, money: _Money, bu: _Bureau) -> None:
    """The month's behaviour becomes state and history (ring buffers indexed by month)."""
    idx, slot = mo.sel, mo.slot
    st.stopped_left[idx] = b.stopped_left
    st.balance[idx] = money.balance
    st.ext_cards[idx] = bu.cards
    st.ext_loans[idx] = bu.loans
    st.months_since_ext[idx] = bu.months_since_ext
    st.months_since_draw[idx] = np.where(b.drew, 0, np.minimum(st.months_since_draw[idx] + 1, 99))
    st.h_drew[idx, slot] = b.drew
    st.h_util[idx, slot] = money.util
    st.h_drawn[idx, slot] = b.draw_amt
    st.h_misuse[idx, slot] = money.misuse
    st.h_noncons[idx, slot] = money.noncons
    st.h_comp[idx, slot] = b.comp
    st.frozen_left[idx] = np.maximum(st.frozen_left[idx] - 1, 0)
    st.react_left[idx] = np.maximum(st.react_left[idx] - 1, 0)


def _counts(flags: np.ndarray, ends: Sequence[int]) -> list[np.ndarray]:
    """Per row of a (rows, months) bool array, how many of its first ``e`` months are
    true, for each ``e`` of ``ends`` (int64): added column by column, which is much
    faster than a bool sum along the rows and, in whole numbers, exactly the same."""
    v = flags.view(np.int8)
    acc = np.zeros(len(v), dtype=np.int8)
    out, col = [], 0
    for e in ends:
        while col < e:
            acc = acc + v[:, col]
            col += 1
        out.append(acc.astype(np.int64))
    return out


def _signals(
    s: Any, st: _State, mo: _Month, bu: _Bureau, tenure: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """9a. The monitoring policy's signal per cause, from observable traces only.

    Also returns the months with a draw and the mean utilisation of the last six months,
    which the soft actions read.
    """
    idx, slot = mo.sel, mo.slot
    order = (slot - np.arange(WINDOW)) % WINDOW  # most recent first
    drew_h = st.h_drew[idx][:, order] & (tenure[:, None] >= np.arange(WINDOW))
    util_h = st.h_util[idx][:, order[:6]]  # the six months util6 and util3 read
    recent3, draws6, draws12 = _counts(drew_h, (3, 6, WINDOW))
    earlier = draws12 - recent3
    n6 = np.clip(tenure + 1, 1, 6)
    util6 = util_h[:, :6].sum(axis=1) / n6
    util3 = util_h[:, :3].sum(axis=1) / np.clip(tenure + 1, 1, 3)
    drawn3 = st.h_drawn[idx][:, order[:3]].sum(axis=1)
    misuse3 = st.h_misuse[idx][:, order[:3]].sum(axis=1)
    noncons3 = st.h_noncons[idx][:, order[:3]].sum(axis=1)
    (comp6,) = _counts(st.h_comp[idx][:, order[:6]], (6,))

    sig = np.zeros((mo.n, N_CAUSES))
    sig[:, C_SUDDEN] = ((recent3 == 0) & (earlier >= s.stop_earlier_months)) * (earlier / 9.0) * 2.0
    sig[:, C_LOWYIELD] = (
        (tenure >= 18)
        * (draws12 >= 2)
        * np.clip((s.lowyield_util - util6) / s.lowyield_util, 0.0, 1.0)
        * 1.5
    )
    sig[:, C_OVER] = (
        np.clip((util3 - s.over_util) / (1.0 - s.over_util), 0.0, 1.0)
        * (recent3 >= 2)
        * (1.0 + (bu.loans >= 3))
    )
    misuse_share = np.where(drawn3 > 0, misuse3 / np.maximum(drawn3, 1e-9), 0.0)
    sig[:, C_MISUSE] = np.clip((misuse_share - s.misuse_share) / 0.2, 0.0, 2.0)
    thin_over = (bu.months_since_ext - (s.thin_months - 3)) / 6.0
    sig[:, C_THIN] = (
        ((bu.cards + bu.loans) == 0)
        * (bu.months_since_ext >= s.thin_months)
        * np.clip(thin_over, 0.0, 2.0)
    )
    noncons_share = np.where(drawn3 > 0, noncons3 / np.maximum(drawn3, 1e-9), 0.0)
    sig[:, C_POLICY] = mo.regime * (
        np.clip((util3 - s.policy_util) / 0.2, 0.0, 1.0)
        + np.clip((noncons_share - s.policy_noncons) / 0.2, 0.0, 1.0)
    )
    sig[:, C_COMP] = (
        mo.comp_level
        * (draws6 <= 1)
        * (tenure >= 3)
        * (comp6 >= s.competition_months)
        * (comp6 / 3.0)
    )
    return sig, draws6, util6


def _review(
    s: Any, st: _State, mo: _Month, money: _Money, bu: _Bureau, rng: np.random.Generator
) -> _Review:
    """9b. Hazards per cause, scaled by the platform's judgement and noise; closures drawn."""
    idx, n, u = mo.sel, mo.n, mo.u
    tenure = mo.t - st.signup[idx]
    sig, draws6, util6 = _signals(s, st, mo, bu, tenure)
    base = np.array([s.closure_base.get(c, 0.0) for c in CAUSES])
    noise = rng.normal(size=n)
    scale = np.exp(st.frailty[idx] + s.noise_sd * noise)
    background = np.full(N_CAUSES, s.background_rate)
    background[C_POLICY] *= mo.regime > 0  # no policy closures before the regime exists
    haz = (base * sig + background) * (scale * (tenure >= s.review_grace_months))[:, None]
    total = haz.sum(axis=1)
    st.cum_h0[idx] += total * np.exp(st.frailty_group[idx] - st.frailty[idx])
    p_close = 1.0 - np.exp(-total)
    q_od = np.where(money.dpd >= 30, s.overdue_close_prob, 0.0)
    chances = None
    if mo.survive:  # the chances of what would be drawn below; nothing closes
        # an overdue closure takes precedence; otherwise a closure's cause is drawn in
        # proportion to its hazard
        n_alias = 0 if mo.alias is None else len(mo.alias[0])
        chances = np.empty((n + n_alias, N_CAUSES + 1))
        _chances(haz, total, p_close, q_od, chances[:n])
        if mo.alias is not None:  # the same path, another frailty: only the hazards differ
            src, frailty = mo.alias
            scale_a = np.exp(frailty + s.noise_sd * noise[src])
            haz_a = (base * sig[src] + background) * (
                scale_a * (tenure[src] >= s.review_grace_months)
            )[:, None]
            total_a = haz_a.sum(axis=1)
            _chances(haz_a, total_a, 1.0 - np.exp(-total_a), q_od[src], chances[n:])
        closed = np.zeros(n, dtype=bool)
        cause = np.full(n, -1, dtype=np.int64)
    else:
        closed = u[:, 9] < p_close
        # cause drawn in proportion to its hazard
        cum = np.cumsum(haz, axis=1)
        pick = (u[:, 10] * total)[:, None] > cum
        cause = np.where(closed, pick.sum(axis=1).clip(0, N_CAUSES - 1), -1)
        od_close = u[:, 11] < q_od
        cause = np.where(od_close, CAUSE_OVERDUE, cause)
        closed = closed | od_close
    return _Review(
        tenure=tenure,
        sig=sig,
        draws6=draws6,
        util6=util6,
        haz=haz,
        closed=closed,
        cause=cause,
        p_close=chances,
    )


def _chances(
    haz: np.ndarray, total: np.ndarray, p_close: np.ndarray, q_od: np.ndarray, out: np.ndarray
) -> None:
    """A month's chance of a closure by each cause (overdue last) into ``out``: an overdue
    closure takes precedence; otherwise a closure's cause is drawn in proportion to its
    hazard."""
    share = np.divide(haz, total[:, None], out=np.zeros_like(haz), where=total[:, None] > 0)
    np.multiply(((1.0 - q_od) * p_close)[:, None], share, out=out[:, :N_CAUSES])
    out[:, N_CAUSES] = q_od


def _platform_actions(
    s: Any,
    st: _State,
    mo: _Month,
    b: _Behaviour,
    money: _Money,
    rv: _Review,
    rng: np.random.Generator,
) -> None:
    """9c. Freezes, line cuts and tiered increases for accounts that stay open."""
    idx, sig, closed, line = mo.sel, rv.sig, rv.closed, b.line
    v = rng.random((mo.n, 3))
    frz = (
        (~closed)
        & (~b.frozen)
        & (v[:, 0] < s.freeze_prob * np.minimum(sig[:, C_SUDDEN] + sig[:, C_MISUSE], 1.0))
    )
    cut_sig = sig[:, [C_LOWYIELD, C_OVER, C_POLICY]]
    cut_strength = np.minimum(cut_sig.sum(axis=1), 1.0)
    cut = (~closed) & (~frz) & (v[:, 1] < s.decrease_prob * 0.3 * cut_strength)
    cut_cause = np.array([C_LOWYIELD, C_OVER, C_POLICY])[cut_sig.argmax(axis=1)]
    good = (
        (rv.tenure >= 6)
        & (rv.draws6 >= 2)
        & (rv.util6 > 0.1)
        & (rv.util6 < 0.8)
        & (sig.sum(axis=1) == 0)
    )
    good &= ~st.ever_overdue[idx] & ~money.od
    inc = (~closed) & (~frz) & (~cut) & good & (v[:, 2] < s.increase_prob)
    new_line = np.where(cut, np.maximum(np.round(line * 0.7 / 100) * 100, 500.0), line)
    new_line = np.where(inc, np.round(line * 1.3 / 100) * 100, new_line)

    st.line[idx] = new_line
    st.frozen_left[idx] = np.where(frz, 1 + (v[:, 0] < 0.5 * s.freeze_prob), st.frozen_left[idx])
    st.react_left[idx] = np.where(cut | frz, 3, st.react_left[idx])
    st.boost[idx] = np.where(inc, np.minimum(st.boost[idx] * 1.08, 1.5), st.boost[idx])
    st.ever_overdue[idx] = st.ever_overdue[idx] | money.od
    st.open[idx] = ~closed
    rv.frz, rv.cut, rv.cut_cause, rv.inc, rv.new_line = frz, cut, cut_cause, inc, new_line


def _record(
    out: _MonthOut,
    st: _State,
    mo: _Month,
    b: _Behaviour,
    money: _Money,
    bu: _Bureau,
    sp: _Spend,
    rv: _Review,
) -> None:
    """The month's rows for the raw tables, its fund flows, events and hazards."""
    assert rv.frz is not None and rv.cut is not None and rv.inc is not None
    assert rv.cut_cause is not None and rv.new_line is not None and money.lags is not None
    assert bu.inquiries is not None and bu.ext_util is not None
    bid = st.bid[mo.idx]
    month = np.full(mo.n, mo.t, dtype=np.int16)
    out.hazards = rv.haz
    out.rows = {
        "account_months": dict(
            borrower_id=bid,
            month=month,
            line=b.line,
            n_draws=b.n_draws.astype(np.int16),
            draw_amount=b.draw_amt,
            repayment=np.round(money.repay, 2),
            balance=np.round(money.balance, 2),
            interest_paid=np.round(money.interest, 2),
            n_early_repay=money.early.astype(np.int16),
            dpd=money.dpd,
            frozen=b.frozen.astype(np.int8),
        ),
        "bureau_months": dict(
            borrower_id=bid,
            month=month,
            ext_cards=bu.cards.astype(np.int16),
            ext_loans=bu.loans.astype(np.int16),
            ext_new_accounts=bu.new_acc.astype(np.int16),
            ext_inquiries=bu.inquiries.astype(np.int16),
            ext_utilisation=bu.ext_util,
            months_since_ext_activity=bu.months_since_ext,
        ),
        "consumption_months": dict(
            borrower_id=bid,
            month=month,
            spend_daily=sp.spend * sp.cshare[:, 0],
            spend_durables=sp.spend * sp.cshare[:, 1],
            spend_services=sp.spend * sp.cshare[:, 2],
            spend_weekly_cv=sp.weekly_cv,
            competitor_baitiao=sp.baitiao,
            competitor_fenfu=sp.fenfu,
        ),
    }
    fi, fc = np.nonzero(money.flow_amt > 0.005)
    out.flows = dict(
        borrower_id=bid[fi],
        month=np.full(len(fi), mo.t, dtype=np.int16),
        channel=fc.astype(np.int8),
        amount=np.round(money.flow_amt[fi, fc], 2),
        days_after_draw=money.lags[fi, fc],
    )
    closed, sig = rv.closed, rv.sig
    ev_kind = np.full(mo.n, -1)
    ev_kind[rv.inc] = 0
    ev_kind[rv.cut] = 1
    ev_kind[rv.frz] = 2
    ev_kind[closed] = 3
    frz_cause = np.where(sig[:, C_MISUSE] > sig[:, C_SUDDEN], C_MISUSE, C_SUDDEN)
    ev_cause = np.where(
        closed, rv.cause, np.where(rv.cut, rv.cut_cause, np.where(rv.frz, frz_cause, -1))
    )
    e = np.flatnonzero(ev_kind >= 0)
    out.events = dict(
        borrower_id=bid[e],
        month=np.full(len(e), mo.t, dtype=np.int16),
        event=ev_kind[e],
        cause=ev_cause[e],
        line_before=b.line[e],
        line_after=np.where(closed[e], 0.0, rv.new_line[e]),
    )


# --------------------------------------------------------------------------- a chunk


def _concat(parts: list[dict[str, np.ndarray]], schema: pa.Schema) -> pa.Table:
    if not parts:
        return schema.empty_table()
    cols = {name: np.concatenate([p[name] for p in parts]) for name in schema.names}
    arrays = [pa.array(cols[f.name]).cast(f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


_CAUSE_NAMES = np.array(list(CAUSES) + [OVERDUE, "none"], dtype=object)
_EVENT_NAMES = np.array(EVENTS, dtype=object)
_CHANNEL_NAMES = np.array(CHANNELS, dtype=object)


def simulate_chunk(spec: WorldSpec, chunk: int) -> dict[str, pa.Table]:
    """Simulate one chunk of borrowers over all months; returns raw and truth tables."""
    t_chunk = time.perf_counter()
    ss = np.random.SeedSequence(spec.seed, spawn_key=(chunk,))
    rng = np.random.default_rng(ss)
    st, static = _start_chunk(spec, chunk, rng)
    parts: dict[str, list[dict[str, np.ndarray]]] = {
        k: []
        for k in (
            "account_months",
            "bureau_months",
            "consumption_months",
            "fund_flows",
            "platform_events",
            "hazards",
            "oracle",
        )
    }
    oracle_snaps = set(spec.oracle_snapshots)
    oracle_s = 0.0
    for t in range(spec.n_months):
        out = _step(spec, st, t, rng, record=True)
        assert (
            out.rows is not None
            and out.flows is not None
            and out.events is not None
            and out.hazards is not None
        )
        for k, row in out.rows.items():
            parts[k].append(row)
        fl = dict(out.flows)
        fl["channel"] = _CHANNEL_NAMES[fl["channel"]]
        parts["fund_flows"].append(fl)
        ev = dict(out.events)
        ev["event"] = _EVENT_NAMES[ev["event"]]
        ev["cause"] = _CAUSE_NAMES[ev["cause"]]  # -1 -> "none"
        parts["platform_events"].append(ev)
        hz = {"borrower_id": st.bid[out.idx], "month": np.full(len(out.idx), t, dtype=np.int16)}
        for j, c in enumerate(CAUSES):
            hz[f"h_{c}"] = out.hazards[:, j]
        parts["hazards"].append(hz)
        if t in oracle_snaps and t + spec.horizon < spec.n_months:
            t_oracle = time.perf_counter()
            parts["oracle"].append(_oracle(spec, st, t, chunk))
            oracle_s += time.perf_counter() - t_oracle
    tables = dict(static)
    for k, chunks in parts.items():
        schema = TRUTH_SCHEMAS.get(k) or SCHEMAS[k]
        tables[k] = _concat(chunks, schema)
    # the time is carried as metadata, which the writers drop: the files stay bit-identical
    tables["oracle"] = tables["oracle"].replace_schema_metadata(
        {
            ORACLE_SECONDS: repr(oracle_s).encode(),
            CHUNK_SECONDS: repr(time.perf_counter() - t_chunk).encode(),
        }
    )
    return tables


# --------------------------------------------------------------------------- futures

#: What a borrower can do, by name: the behaviour each action carries out in the
#: simulator. This is the one list of actions that futures accept.
ACTIONS: dict[str, str] = {
    "keep_drawing": (
        "draw in at least k of the horizon's months (the first months first): in a month "
        "without a draw of its own the borrower makes one draw of the advised size (its "
        "usual size when none is given) unless the line is frozen; interest is charged on "
        "it like on any balance"
    ),
    "route_to_consumption": (
        "spend drawn money on consumption: at most the advised share (none when no share "
        "is given) goes to securities and to repaying other lenders, the rest of what would "
        "have gone there goes to consumption"
    ),
    "keep_external_live": (
        "use an external card or loan every month so the credit file shows activity; a "
        "borrower holding none applies every month until one is approved, with the "
        "bureau's own chance for that borrower (ext_approval)"
    ),
    "stop_competitors": "stop using competing credit products (no competitor use any month)",
    "repay_on_schedule": (
        "repay by the schedule (the borrower's usual monthly share of the balance) instead "
        "of repaying all of it early"
    ),
    "moderate_use": (
        "keep borrowing moderate: draw only while the balance stays under the advised share "
        "of the line (half when none is given)"
    ),
}
KEEP_DRAWING_MONTHS = 2  # default k of "keep_drawing"


@dataclass(frozen=True)
class Intervention:
    """What a borrower does in its futures: actions of :data:`ACTIONS`, carried out together.

    ``actions`` is kept sorted and without repeats (empty: no action); a single name is
    taken as that one action. ``keep_drawing_months`` is the k of ``keep_drawing``.
    """

    actions: tuple[str, ...] = ()
    keep_drawing_months: int = KEEP_DRAWING_MONTHS
    draw_size: float = math.inf  # the size of a draw made for keep_drawing (inf: usual)
    util_cap: float = 0.5  # moderate_use: draw only while the balance is under this share
    route_share: float = 0.0  # route_to_consumption: at most this share away from consumption

    def __post_init__(self) -> None:
        given: Any = self.actions
        acts = (given,) if isinstance(given, str) else tuple(given)
        unknown = [a for a in acts if a not in ACTIONS]
        if unknown:
            raise ValueError(f"futures: unknown action {unknown[0]!r}; known: {', '.join(ACTIONS)}")
        object.__setattr__(self, "actions", tuple(sorted(set(acts))))
        object.__setattr__(self, "keep_drawing_months", int(self.keep_drawing_months))
        size = float(self.draw_size)
        if not size > 0:
            raise ValueError(f"futures: draw_size must be positive (inf: usual size), got {size}")
        object.__setattr__(self, "draw_size", size)
        cap = float(self.util_cap)
        if not 0.0 < cap <= 1.0:
            raise ValueError(f"futures: util_cap must lie in (0, 1], got {cap}")
        object.__setattr__(self, "util_cap", cap)
        keep = float(self.route_share)
        if not 0.0 <= keep < 1.0:
            raise ValueError(f"futures: route_share must lie in [0, 1), got {keep}")
        object.__setattr__(self, "route_share", keep)

    @classmethod
    def of(
        cls,
        action: str | Sequence[str] | None,
        keep_drawing_months: int = KEEP_DRAWING_MONTHS,
    ) -> Intervention:
        """From an action's name, several names, or None (no action)."""
        acts = (action,) if isinstance(action, str) else tuple(action or ())
        return cls(acts, keep_drawing_months)

    @property
    def action(self) -> str | tuple[str, ...] | None:
        """None for no action, the name of a single one, the sorted names of several."""
        if not self.actions:
            return None
        return self.actions[0] if len(self.actions) == 1 else self.actions

    @property
    def label(self) -> str:
        """``none``, or the actions joined by ``+`` (``keep_drawing`` with its k)."""
        size = "" if math.isinf(self.draw_size) else f"x{self.draw_size:.0f}"
        cap = "" if self.util_cap == 0.5 else f":{self.util_cap:.0%}"
        keep = "" if self.route_share == 0.0 else f":{self.route_share:.0%}"
        tail = {"keep_drawing": f":{self.keep_drawing_months}{size}", "moderate_use": cap}
        tail["route_to_consumption"] = keep
        parts = [f"{a}{tail.get(a, '')}" for a in self.actions]
        return "+".join(parts) or "none"


#: An arm of futures: one intervention for every account, or one per account asked.
Arm = Intervention | Sequence[Intervention]


class NotOnBook(PipelineError, ValueError):
    """An account asked for futures is not on book at its snapshot."""


class _CrnGenerator(np.random.Generator):
    """A generator whose stream use does not depend on the parameters it is given.

    NumPy's Poisson and binomial samplers use a number of stream values that depends on
    their parameters, so one account whose parameters change (an action carried out, a
    trait redrawn) would shift the random numbers of every account after it. Here both
    are drawn by inversion of one uniform per value: futures that differ only by an
    action see the same random numbers, account by account (common random numbers). The
    distributions are those of NumPy's samplers.

    After :meth:`follow`, the rows asked for are copies of one set of ``m`` rows (the
    variants of :func:`_run_variants`, stacked): each draw is made for that set once and
    row ``i`` gets the draw of row ``source[i]``, so every copy sees the random numbers
    it would see alone.
    """

    source: np.ndarray | None = None
    m: int = 0

    def follow(self, source: np.ndarray, m: int) -> None:
        """Draws from now on: for ``m`` rows, row ``i`` of a draw taking row ``source[i]``."""
        self.source, self.m = np.asarray(source, dtype=np.int64), int(m)

    def _tile(self, draw: Callable[[Any], Any], size: Any) -> Any:
        """``draw(size)`` made for the ``m`` rows (the first axis of ``size``), each row
        then taken from its source row."""
        assert self.source is not None
        if size is None:
            raise ValueError("futures: a draw for stacked copies needs its size")
        shape = (int(size),) if np.ndim(size) == 0 else tuple(int(x) for x in size)
        if shape[0] != len(self.source):
            raise ValueError(f"futures: {shape[0]} rows asked, {len(self.source)} followed")
        return np.asarray(draw((self.m, *shape[1:])))[self.source]

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        if self.source is None:
            return super().random(size, dtype, out)
        return self._tile(lambda sz: super(_CrnGenerator, self).random(sz, dtype), size)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        if self.source is None:
            return super().standard_normal(size, dtype, out)
        return self._tile(lambda sz: super(_CrnGenerator, self).standard_normal(sz, dtype), size)

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        if self.source is None:
            return super().normal(loc, scale, size)
        return self._tile(lambda sz: super(_CrnGenerator, self).normal(loc, scale, sz), size)

    def lognormal(self, mean: Any = 0.0, sigma: Any = 1.0, size: Any = None) -> Any:
        if self.source is None:
            return super().lognormal(mean, sigma, size)
        return self._tile(lambda sz: super(_CrnGenerator, self).lognormal(mean, sigma, sz), size)

    def standard_gamma(
        self, shape: Any, size: Any = None, dtype: Any = np.float64, out: Any = None
    ) -> Any:
        if self.source is None:
            return super().standard_gamma(shape, size, dtype, out)
        return self._tile(
            lambda sz: super(_CrnGenerator, self).standard_gamma(shape, sz, dtype), size
        )

    def gamma(self, shape: Any, scale: Any = 1.0, size: Any = None) -> Any:
        if self.source is None:
            return super().gamma(shape, scale, size)
        return self._tile(lambda sz: super(_CrnGenerator, self).gamma(shape, scale, sz), size)

    def dirichlet(self, alpha: Any, size: Any = None) -> Any:
        if self.source is None:
            return super().dirichlet(alpha, size)
        return self._tile(lambda sz: super(_CrnGenerator, self).dirichlet(alpha, sz), size)

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None) -> Any:
        if self.source is None:
            return super().uniform(low, high, size)
        return self._tile(lambda sz: super(_CrnGenerator, self).uniform(low, high, sz), size)

    def geometric(self, p: Any, size: Any = None) -> Any:
        if self.source is None:
            return super().geometric(p, size)
        return self._tile(lambda sz: super(_CrnGenerator, self).geometric(p, sz), size)

    def integers(
        self,
        low: Any,
        high: Any = None,
        size: Any = None,
        dtype: Any = np.int64,
        endpoint: bool = False,
    ) -> Any:
        if self.source is None:
            return super().integers(low, high, size, dtype, endpoint)
        return self._tile(
            lambda sz: super(_CrnGenerator, self).integers(low, high, sz, dtype, endpoint), size
        )

    def poisson(self, lam: Any = 1.0, size: Any = None) -> Any:
        lam_a = np.asarray(lam, dtype=float)
        u = self.random(lam_a.shape if size is None else size)
        lam_a = np.broadcast_to(lam_a, u.shape)
        pmf = np.exp(-lam_a)
        cdf = pmf.copy()
        k = np.zeros(u.shape, dtype=np.int64)
        active = u > cdf
        j = 0
        while active.any() and j < 10_000:
            j += 1
            pmf = pmf * lam_a / j
            cdf = cdf + pmf
            k += active
            active &= (u > cdf) & (pmf > 0)
        return k

    def binomial(self, n: Any, p: Any, size: Any = None) -> Any:
        n_a, p_a = np.asarray(n, dtype=np.int64), np.asarray(p, dtype=float)
        u = self.random(np.broadcast_shapes(n_a.shape, p_a.shape) if size is None else size)
        n_a, p_a = np.broadcast_to(n_a, u.shape), np.broadcast_to(p_a, u.shape)
        sure = p_a >= 1.0
        q = np.where(sure, 1.0, 1.0 - p_a)
        ratio = np.where(sure, 0.0, p_a / q)
        pmf = np.where(sure, 0.0, q**n_a)
        cdf = pmf.copy()
        k = np.zeros(u.shape, dtype=np.int64)
        active = (u > cdf) & (k < n_a) & ~sure
        j = 0
        while active.any():
            pmf = pmf * (n_a - j) / (j + 1) * ratio
            j += 1
            cdf = cdf + pmf
            k += active
            active &= (u > cdf) & (k < n_a)
        return np.where(sure, n_a, k)


@dataclass
class Futures:
    """Monte Carlo continuations of accounts from a snapshot: one row per account.

    ``closed`` is a closure for a non-overdue cause within the horizon (the label's
    event); ``cause`` is the index into :data:`CAUSES` of the first closure, -1 when the
    account stayed open and ``CAUSE_OVERDUE`` for an overdue closure. Behaviour is
    counted while the account is open. ``weight`` is 1 except for observable futures,
    whose redrawn frailty is weighted by how likely it makes the account's survival so far.
    Futures run by the expected-hazard estimator (``expected`` of :func:`_run_futures`,
    the oracle's) never close: ``closed`` is then each future's probability of the event
    given its path and ``cause_p`` (n, k, causes) its probability of closing by each
    cause; ``cause`` and ``month`` stay -1 and the money columns (``draw_amount``,
    ``channel_amount``, ``early_repay``, ``interest``, ``loss``) stay zero: the oracle
    reads none of them, so they are not tallied.
    ``arm`` is the intervention every account carried out, or one per account.
    """

    borrower_id: np.ndarray  # (n,)
    snapshot: np.ndarray  # (n,)
    arm: Intervention | tuple[Intervention, ...]
    closed: np.ndarray  # (n, k) bool
    cause: np.ndarray  # (n, k) int
    month: np.ndarray  # (n, k) month of the first closure, -1 when none
    weight: np.ndarray  # (n, k)
    draw_amount: np.ndarray  # (n, k, horizon) money drawn per month
    channel_amount: np.ndarray  # (n, k, channels) drawn money by channel over the horizon
    early_repay: np.ndarray  # (n, k) months with an early repayment of the whole balance
    interest: np.ndarray  # (n, k) interest the borrower paid over the horizon while open
    loss: np.ndarray  # (n, k) balance written off at an overdue closure (0 otherwise)
    # the raw tables of the first months of every future (``trace_months`` of
    # :func:`futures_arms`), future j of asked row i as borrower_id i * k + j
    traces: dict[str, pa.Table] | None = None
    cause_p: np.ndarray | None = None  # (n, k, causes), expected-hazard futures only

    @property
    def action(self) -> str | tuple[str, ...] | None:
        """The action(s) every account carried out (see :attr:`Intervention.action`)."""
        if not isinstance(self.arm, Intervention):
            raise ValueError("futures: each account carried out its own intervention (see arm)")
        return self.arm.action

    @property
    def p(self) -> np.ndarray:
        """Closure probability per account (weighted share of futures)."""
        return _wmean(self.closed, self.weight)

    def cause_share(self) -> np.ndarray:
        """(n, causes): share of futures closing by each cause; rows sum to :attr:`p`."""
        if self.cause_p is not None:
            return np.stack(
                [_wmean(self.cause_p[:, :, j], self.weight) for j in range(N_CAUSES)], axis=1
            )
        return np.stack([_wmean(self.cause == j, self.weight) for j in range(N_CAUSES)], axis=1)

    def cause_names(self) -> np.ndarray:
        return _CAUSE_NAMES[self.cause]  # -1 -> "none"


def _wmean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (x * w).sum(axis=1) / w.sum(axis=1)


def _redraw_unobservable(spec: WorldSpec, fut: _State, rng: np.random.Generator) -> np.ndarray:
    """Redraw in each future what no observable reveals; return log importance weights.

    - The individual part of the platform's judgement (``frailty`` less its community
      part) is redrawn from its prior. Closures are the only trace it leaves, so the
      fact that the account is still open is weighed in: each draw is weighted by the
      survival it implies, exp(-cum_h0 * exp(part)).
    - The remaining length of an ongoing sudden stop is redrawn. Spells last a
      geometric number of months, which is memoryless: given that a stop is under way,
      its remaining length has the same law as a new one, and nothing observable says
      more. That a stop is under way shows (no draws, lower and more variable spending).

    Kept from the full state: the traits behind every monthly behaviour (need, amounts,
    investing, debt juggling, external-credit engagement, multi-homing, credit risk,
    proneness to stops), which the borrower's history reveals only noisily; the
    community part of the frailty, which the social graph and neighbours' closures
    reveal only in part; whether a stop is under way; and the account's dynamic state,
    which the raw tables record (whether a fresh freeze lasts one month or two is the one
    detail they show only a month later; it is kept). So this is the *trait oracle*: it
    knows more than any model of the observables can, and is not an upper bound on what
    such a model reaches.

    A truly observable bound would redraw the traits too, from their posterior given the
    account's whole recorded history (every month's draws, repayments, spending, bureau
    rows and its neighbours' closures), which needs a per-account sampler over roughly
    a dozen coupled traits and a likelihood of the full history; the simulator has no
    such likelihood in closed form, so it is not built. Importance weights on prior
    draws, as for the frailty here, collapse when the history is long (the effective
    number of futures falls towards one).
    """
    s = spec.sim
    part = s.frailty_sd * rng.normal(size=len(fut.bid))
    fut.frailty = fut.frailty_group + part
    ongoing = fut.stopped_left > 0
    dur = rng.geometric(1.0 / max(s.stop_mean_months, 1.0), len(fut.bid))
    fut.stopped_left = np.where(ongoing, dur, fut.stopped_left).astype(np.int16)
    return -fut.cum_h0 * np.exp(part)


@dataclass
class _ArmRows:
    """An arm over a set of accounts: who carries out each action, and keep_drawing's k.

    ``who`` maps an action to a bool mask over the accounts, None when all carry it out;
    ``k_draw`` is one k for all or one per account; ``given`` is the arm as asked.
    """

    who: dict[str, np.ndarray | None]
    k_draw: int | np.ndarray
    given: Intervention | tuple[Intervention, ...]
    size: float | np.ndarray = math.inf  # keep_drawing's draw size, one or per account
    cap: float | np.ndarray = 0.5  # moderate_use's utilisation cap, one or per account
    keep: float | np.ndarray = 0.0  # route_to_consumption's kept share, one or per account

    @classmethod
    def of(cls, arm: Arm, n: int) -> _ArmRows:
        if isinstance(arm, Intervention):
            return cls(
                dict.fromkeys(arm.actions),
                arm.keep_drawing_months,
                arm,
                arm.draw_size,
                arm.util_cap,
                arm.route_share,
            )
        each = tuple(arm)
        if len(each) != n or not all(isinstance(a, Intervention) for a in each):
            raise ValueError(
                f"futures: an arm given per account needs one Intervention per account "
                f"asked: got {len(each)} for {n} accounts"
            )
        names = sorted({a for iv in each for a in iv.actions})
        who: dict[str, np.ndarray | None] = {
            a: np.array([a in iv.actions for iv in each], dtype=bool) for a in names
        }
        k = np.array([iv.keep_drawing_months for iv in each], dtype=np.int64)
        size = np.array([iv.draw_size for iv in each], dtype=np.float64)
        cap = np.array([iv.util_cap for iv in each], dtype=np.float64)
        keep = np.array([iv.route_share for iv in each], dtype=np.float64)
        return cls(who, k, each, size, cap, keep)

    def interventions(self) -> list[Intervention]:
        """The distinct interventions of the arm."""
        return (
            [self.given]
            if isinstance(self.given, Intervention)
            else sorted(set(self.given), key=lambda iv: iv.label)
        )

    def at(self, asked: np.ndarray, src: np.ndarray, n_rows: int) -> _ArmRows:
        """The arm over ``n_rows`` state rows, the asked position ``asked[i]`` on row
        ``src[i]``; asks of one row must carry out the same intervention."""
        if isinstance(self.given, Intervention):
            return self
        _, first = np.unique(src, return_index=True)
        assert len(first) == n_rows
        pick = asked[first]
        given = tuple(self.given[i] for i in pick)
        for i, r in zip(asked, src, strict=True):
            if given[r] != self.given[i]:
                raise ValueError(
                    f"futures: an account asked twice at one snapshot with different "
                    f"interventions ({given[r].label} and {self.given[i].label})"
                )
        who = {a: None if m is None else m[pick] for a, m in self.who.items()}
        k = self.k_draw if isinstance(self.k_draw, int) else self.k_draw[pick]
        size = self.size if isinstance(self.size, float) else self.size[pick]
        cap = self.cap if isinstance(self.cap, float) else self.cap[pick]
        keep = self.keep if isinstance(self.keep, float) else self.keep[pick]
        return _ArmRows(who, k, given, size, cap, keep)

    def act(self, k: int, n: int) -> _Act | None:
        """The month step's action over ``k`` futures of each of ``n`` rows (None: none)."""
        if not self.who:
            return None
        who = {a: None if m is None else np.repeat(m, k) for a, m in self.who.items()}
        size = np.broadcast_to(np.asarray(self.size, dtype=np.float64), (n,))
        draw_size = None if np.isinf(size).all() else np.repeat(size, k)
        cap = self.cap if isinstance(self.cap, float) else np.repeat(self.cap, k)
        keep = self.keep if isinstance(self.keep, float) else np.repeat(self.keep, k)
        return _Act(who=who, draw_size=draw_size, util_cap=cap, route_share=keep)

    def forced_draws(self, act: _Act, draw_months: np.ndarray, k: int) -> None:
        """``keep_drawing``: draw this month while fewer than k months had a draw."""
        if "keep_drawing" not in act.who:
            return
        kd = self.k_draw if isinstance(self.k_draw, int) else np.repeat(self.k_draw, k)
        force = draw_months < kd
        rows = act.who["keep_drawing"]
        act.force_draw = force if rows is None else force & rows


_NO_ARM = _ArmRows({}, KEEP_DRAWING_MONTHS, Intervention())


#: Futures per row run together: memory and time per future grow when a month step
#: holds more rows than the caches do, so many futures run as blocks of this many.
FUTURE_BLOCK = 64


@dataclass
class _Variant:
    """One set of futures of the same rows: the arm carried out, whether the unobservable
    is redrawn, and how many first months are recorded as raw tables."""

    arm: _ArmRows = field(default_factory=lambda: _NO_ARM)
    observable: bool = False
    trace: int = 0


def _run_futures(
    spec: WorldSpec,
    st: _State,
    rows: np.ndarray,
    t: int,
    k: int,
    chunk: int,
    arm: _ArmRows = _NO_ARM,
    observable: bool = False,
    trace: int = 0,
    expected: bool = False,
) -> Futures:
    """``k`` futures of the state rows ``rows`` over (t, t + horizon] under ``arm``.

    With ``expected`` the futures never close: each month's chance of a closure given
    the future's path is accumulated instead (the expected-hazard estimator: the same
    expectation as the share of closing futures, with less variance per future; see
    :class:`Futures`).

    Every future is stepped every month (closed ones too, their outcome already fixed),
    and draws come from one stream per (seed, chunk, snapshot, block of
    :data:`FUTURE_BLOCK` futures) through :class:`_CrnGenerator`: runs under any arms, or
    with and without the redraw, use the same random numbers, row for row. Rows do not
    interact within a month, so a row's futures depend only on its own intervention,
    whatever the other rows carry out. The first block's stream is the one a single
    block always had, so up to :data:`FUTURE_BLOCK` futures are what they were.
    """
    return _run_variants(spec, st, rows, t, k, chunk, [_Variant(arm, observable, trace)], expected)[
        0
    ]


def _run_variants(
    spec: WorldSpec,
    st: _State,
    rows: np.ndarray,
    t: int,
    k: int,
    chunk: int,
    variants: Sequence[_Variant],
    expected: bool = False,
) -> list[Futures]:
    """The futures of :func:`_run_futures` for several variants of the same rows at once.

    The variants share their random numbers row for row (they would, run one by one), so
    they are stacked into one state and stepped together: each month's draws are made
    once and repeated for every variant (:meth:`_CrnGenerator.follow`). Row for
    row, each variant's futures are those :func:`_run_futures` gives for it alone.
    """
    if any(v.trace for v in variants) and k > FUTURE_BLOCK:
        # a trace names each future by its row within one block
        raise ValueError(f"raw traces are kept for at most {FUTURE_BLOCK} futures, got {k}")
    run = _expected_block if expected else _run_block
    blocks = [
        run(spec, st, rows, t, min(FUTURE_BLOCK, k - lo), chunk, variants, j)
        for j, lo in enumerate(range(0, k, FUTURE_BLOCK))
    ]
    n = len(rows)
    out = []
    for i, var in enumerate(variants):
        got = [b[i] for b in blocks]
        traces = got[0].pop("traces")
        for b in got[1:]:
            b.pop("traces")
        out.append(
            Futures(
                borrower_id=st.bid[rows],
                snapshot=np.full(n, t, dtype=np.int16),
                arm=var.arm.given,
                traces=traces,
                **{
                    name: got[0][name]
                    if len(got) == 1
                    else np.concatenate([b[name] for b in got], axis=1)
                    for name in got[0]
                },
            )
        )
    return out


def _block_state(
    spec: WorldSpec,
    st: _State,
    rows: np.ndarray,
    k: int,
    variants: Sequence[_Variant],
    key: tuple[int, ...],
) -> tuple[_State, list[np.ndarray]]:
    """The stacked state of a block's variants (``k`` futures of each row, variant by
    variant) and each variant's (n, k) importance weights (1 unless observable)."""
    n = len(rows)
    fut = st.take(np.tile(np.repeat(rows, k), len(variants)))
    weights = []
    for i, var in enumerate(variants):
        weight = np.ones((n, k))
        if var.observable:
            redraw = np.random.default_rng(
                np.random.SeedSequence(spec.seed, spawn_key=(key[0], 3, *key[1:]))
            )
            logw = _redraw_unobservable_at(spec, fut, slice(i * n * k, (i + 1) * n * k), redraw)
            weight = np.exp(logw.reshape(n, k) - logw.reshape(n, k).max(axis=1, keepdims=True))
        weights.append(weight)
    return fut, weights


def _redraw_unobservable_at(
    spec: WorldSpec, fut: _State, at: slice, rng: np.random.Generator
) -> np.ndarray:
    """:func:`_redraw_unobservable` on the rows ``at`` of ``fut`` only."""
    views = {f.name: getattr(fut, f.name)[at] for f in fields(_State)}
    part = _State(**views)
    logw = _redraw_unobservable(spec, part, rng)
    for name, view in views.items():
        new = getattr(part, name)
        if new is not view:  # a field the redraw replaced: its rows go back into fut
            getattr(fut, name)[at] = new
    return logw


def _stacked_arm(arms: Sequence[_ArmRows], n: int) -> _ArmRows:
    """One arm over the stacked rows of ``arms`` (each over ``n`` rows, in order); a row
    carries out what it does under its own arm."""
    if len(arms) == 1:
        return arms[0]
    if not any(a.who for a in arms):
        return _NO_ARM
    each: list[Intervention] = []
    for a in arms:
        each += [a.given] * n if isinstance(a.given, Intervention) else list(a.given)
    return _ArmRows.of(each, len(each))


def _block_start(
    spec: WorldSpec,
    st: _State,
    rows: np.ndarray,
    k: int,
    variants: Sequence[_Variant],
    where: tuple[int, int, int],
) -> tuple[_State, list[np.ndarray], Any, _CrnGenerator]:
    """What both kinds of block start from (``where`` is chunk, month, block): the stacked
    state of its variants and their weights, their stacked arm, and the block's
    common-random-number generator (not yet told whom it follows)."""
    chunk, t, block = where
    key = (chunk, t) if block == 0 else (chunk, t, block)
    fut, weights = _block_state(spec, st, rows, k, variants, key)
    arm = _stacked_arm([v.arm for v in variants], len(rows))
    rng = _CrnGenerator(
        np.random.PCG64(np.random.SeedSequence(spec.seed, spawn_key=(key[0], 2, *key[1:])))
    )
    return fut, weights, arm, rng


def _run_block(
    spec: WorldSpec,
    st: _State,
    rows: np.ndarray,
    t: int,
    k: int,
    chunk: int,
    variants: Sequence[_Variant],
    block: int,
) -> list[dict[str, Any]]:
    """One block of ``k`` futures per row (see :func:`_run_futures`) for every variant,
    stacked (see :func:`_run_variants`): the per-future arrays of each variant."""
    n, horizon, copies = len(rows), spec.horizon, len(variants)
    nk = n * k
    fut, weights, arm, rng = _block_start(spec, st, rows, k, variants, (chunk, t, block))
    rng.follow(np.tile(np.arange(nk), copies), nk)
    size = copies * nk
    act = arm.act(k, copies * n)
    trace = max(v.trace for v in variants)
    cause = np.full(size, -1, dtype=np.int64)
    month = np.full(size, -1, dtype=np.int64)
    draw_months = np.zeros(size, dtype=np.int64)
    drawn, channels = np.zeros((size, horizon)), np.zeros((size, len(CHANNELS)))
    early, interest, loss = np.zeros(size, dtype=np.int64), np.zeros(size), np.zeros(size)
    recorded: dict[str, list[dict[str, np.ndarray]]] = {}
    fut.bid = np.arange(size, dtype=np.int64)  # traces name each future by its row
    for j, m in enumerate(range(t + 1, t + horizon + 1)):
        if act is not None:
            arm.forced_draws(act, draw_months, k)
        out = _step(spec, fut, m, rng, record=j < trace, act=act, every_row=True)
        if j < trace:
            _keep_rows(recorded, out)
        assert out.drew is not None and out.draw_amount is not None
        assert out.flow_amount is not None and out.early is not None
        live = cause < 0  # open at the start of the month
        drawn[:, j] = np.where(live, out.draw_amount, 0.0)
        channels += np.where(live[:, None], out.flow_amount, 0.0)
        draw_months += live & out.drew
        early += live & out.early
        assert out.interest is not None and out.balance is not None
        interest += np.where(live, out.interest, 0.0)
        new = live & out.closed
        cause[new] = out.cause[new]
        month[new] = m
        # an overdue closure writes off the balance then outstanding
        gone = new & (out.cause == CAUSE_OVERDUE)
        loss[gone] = out.balance[gone]
    tables = {name: _concat(p, SCHEMAS[name]) for name, p in recorded.items()}
    res = []
    for i, var in enumerate(variants):
        at = slice(i * nk, (i + 1) * nk)
        c = cause[at].reshape(n, k)
        res.append(
            {
                "closed": (c >= 0) & (c < N_CAUSES),
                "cause": c,
                "month": month[at].reshape(n, k),
                "weight": weights[i],
                "draw_amount": drawn[at].reshape(n, k, horizon),
                "channel_amount": channels[at].reshape(n, k, len(CHANNELS)),
                "early_repay": early[at].reshape(n, k),
                "interest": interest[at].reshape(n, k),
                "loss": loss[at].reshape(n, k),
                "traces": {
                    name: _variant_rows(table, i * nk, nk, t + var.trace)
                    for name, table in tables.items()
                }
                if var.trace
                else None,
            }
        )
    return res


def _expected_block(
    spec: WorldSpec,
    st: _State,
    rows: np.ndarray,
    t: int,
    k: int,
    chunk: int,
    variants: Sequence[_Variant],
    block: int,
) -> list[dict[str, Any]]:
    """:func:`_run_block` for expected-hazard futures (the oracle's, see
    :func:`_run_futures`): nothing closes and only the closure chances are kept.

    Since nothing closes, a variant that differs from the first only by the redraw of
    the unobservable (:func:`_redraw_unobservable`) takes the first's path wherever the
    redraw changed nothing but the frailty, which only scales the month's hazards: such
    rows are not stepped again, their chances come from the first variant's path with
    their own frailty (``alias`` of :class:`_Month`). The numbers are those of each
    variant stepped alone.
    """
    if any(v.trace for v in variants):
        raise ValueError("futures: expected-hazard futures record no raw tables")
    n, horizon, copies = len(rows), spec.horizon, len(variants)
    nk = n * k
    fut, weights, arm, rng = _block_start(spec, st, rows, k, variants, (chunk, t, block))
    source = np.tile(np.arange(nk), copies)  # each state row draws as this row of one variant
    place = [np.arange(i * nk, (i + 1) * nk) for i in range(copies)]  # rows of the chances
    alias = None
    if not arm.who and copies > 1 and not variants[0].observable:
        fut, source, place, alias = _shared_paths(fut, nk, copies)
    rng.follow(source, nk)
    act = arm.act(k, copies * n)
    draw_months = np.zeros(len(source), dtype=np.int64)
    n_chances = len(source) + (0 if alias is None else len(alias[0]))
    stay = np.ones(n_chances)  # the chance each future is still open
    cause_p = np.zeros((n_chances, N_CAUSES))
    for m in range(t + 1, t + horizon + 1):
        if act is not None:
            arm.forced_draws(act, draw_months, k)
        out = _step(spec, fut, m, rng, False, act=act, every_row=True, survive=True, alias=alias)
        assert out.p_close is not None and out.drew is not None
        cause_p += stay[:, None] * out.p_close[:, :N_CAUSES]
        stay *= 1.0 - out.p_close.sum(axis=1)
        draw_months += out.drew  # keep_drawing counts the months with a draw
    none = np.full((n, k), -1, dtype=np.int64)
    return [
        {
            "cause_p": cause_p[at].reshape(n, k, N_CAUSES),
            "closed": cause_p[at].sum(axis=1).reshape(n, k),
            "cause": none.copy(),
            "month": none.copy(),
            "weight": weights[i],
            # the money is not tallied (see Futures)
            "draw_amount": np.zeros((n, k, horizon)),
            "channel_amount": np.zeros((n, k, len(CHANNELS))),
            "early_repay": np.zeros((n, k), dtype=np.int64),
            "interest": np.zeros((n, k)),
            "loss": np.zeros((n, k)),
            "traces": None,
        }
        for i, at in enumerate(place)
    ]


def _shared_paths(
    fut: _State, nk: int, copies: int
) -> tuple[_State, np.ndarray, list[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The stacked state of :func:`_expected_block` without the rows of later variants
    whose state is the first variant's but for the frailty (``nk`` rows per variant).

    Returns the state (the first variant's rows, then the others' rows of their own),
    each state row's source row among the first variant's (its draws), where each
    variant's rows lie among the month's chances (state rows, then alias rows), and the
    alias rows: the state row whose path each takes, and its own frailty.
    """
    first = slice(0, nk)
    keep, source, place = [np.arange(nk)], [np.arange(nk)], [np.arange(nk)]
    alias_src, alias_frailty = [], []
    n_state, n_alias = nk, 0
    for i in range(1, copies):
        at = slice(i * nk, (i + 1) * nk)
        same = np.ones(nk, dtype=bool)
        for f in fields(_State):
            if f.name != "frailty":
                eq = getattr(fut, f.name)[at] == getattr(fut, f.name)[first]
                same &= eq if eq.ndim == 1 else eq.all(axis=1)
        apart, shared = np.flatnonzero(~same), np.flatnonzero(same)
        pos = np.empty(nk, dtype=np.int64)
        pos[apart] = n_state + np.arange(len(apart))
        pos[shared] = -1 - (n_alias + np.arange(len(shared)))  # placed once n_state is known
        keep.append(i * nk + apart)
        source.append(apart)
        place.append(pos)
        alias_src.append(shared)
        alias_frailty.append(fut.frailty[at][shared])
        n_state += len(apart)
        n_alias += len(shared)
    place = [np.where(p < 0, n_state - 1 - p, p) for p in place]
    alias = (np.concatenate(alias_src), np.concatenate(alias_frailty))
    return fut.take(np.concatenate(keep)), np.concatenate(source), place, alias


def _variant_rows(table: pa.Table, lo: int, nk: int, last: int) -> pa.Table:
    """The recorded rows of one stacked variant (borrowers ``lo .. lo + nk - 1``, months
    up to ``last``), its futures named from 0 as it names them alone."""
    b = table.column("borrower_id").to_numpy()
    keep = (b >= lo) & (b < lo + nk) & (table.column("month").to_numpy() <= last)
    if keep.all() and lo == 0:
        return table
    out = table.filter(pa.array(keep))
    col = table.schema.get_field_index("borrower_id")
    ids = pa.array(b[keep] - lo).cast(table.schema.field(col).type)
    return out.set_column(col, "borrower_id", ids)


def _keep_rows(parts: dict[str, list[dict[str, np.ndarray]]], out: _MonthOut) -> None:
    """A recorded month's rows for the raw tables, named as :func:`simulate_chunk` names them."""
    assert out.rows is not None and out.flows is not None and out.events is not None
    for name, row in out.rows.items():
        parts.setdefault(name, []).append(row)
    fl = dict(out.flows)
    fl["channel"] = _CHANNEL_NAMES[fl["channel"]]
    parts.setdefault("fund_flows", []).append(fl)
    ev = dict(out.events)
    ev["event"] = _EVENT_NAMES[ev["event"]]
    ev["cause"] = _CAUSE_NAMES[ev["cause"]]
    parts.setdefault("platform_events", []).append(ev)


def futures(
    spec: WorldSpec,
    borrower_ids: np.ndarray | list[int],
    snapshot: int | np.ndarray | list[int],
    action: str | Sequence[str] | None = None,
    n_futures: int | None = None,
    keep_drawing_months: int = KEEP_DRAWING_MONTHS,
    observable: bool = False,
) -> Futures:
    """Continue accounts from their full state at the end of ``snapshot`` with ``action``.

    A pure function of the world's config: each account's chunk is replayed up to the
    snapshot, then ``n_futures`` futures (default ``simulator.oracle_futures``) run over
    the horizon with the action carried out every month: a key of :data:`ACTIONS`, a
    tuple of keys carried out together, or None. Futures are seeded by (seed, chunk,
    snapshot) and the set of accounts asked there, so calls with and without an action
    share their random numbers account by account; asked for a chunk's oracle accounts
    at a snapshot, no action gives the oracle's ``p_full`` exactly (any other set, an
    estimate with the same law). Rows come back in the order asked; repeats are allowed.

    Compare arms of the same accounts, not an arm with the oracle's figure for
    accounts chosen *by* that figure: the choice favours futures that happened to close.
    Several arms of the same accounts run faster from one replay: :func:`futures_arms`.
    """
    arm = Intervention.of(action, keep_drawing_months)
    return futures_arms(spec, borrower_ids, snapshot, [arm], n_futures, observable)[0]


def futures_arms(
    spec: WorldSpec,
    borrower_ids: np.ndarray | list[int],
    snapshot: int | np.ndarray | list[int],
    arms: Sequence[Arm],
    n_futures: int | None = None,
    observable: bool = False,
    check: Callable[[pa.Table], None] | None = None,
    trace_months: int = 0,
    traced: Sequence[int] = (),
) -> list[Futures]:
    """The futures of the same accounts under several arms, each chunk replayed once.

    An arm is one :class:`Intervention` for every account, or a sequence of one per
    account asked (an advice carried out whole, each borrower its own). All arms share
    their random numbers row for row, and an account's futures under an arm are those
    :func:`futures` gives for the same accounts with that account's intervention.
    ``check``, if given, is called with each replayed chunk's borrowers table before its
    months are stepped (to compare the replayed world with stored data). One
    :class:`Futures` per arm, in the order of ``arms``; rows in the order asked.
    ``trace_months``: the arms at positions ``traced`` also record the raw tables of
    their futures' first ``trace_months`` months (:attr:`Futures.traces`).
    """
    ids = np.asarray(borrower_ids, dtype=np.int64).ravel()
    snaps = np.broadcast_to(np.asarray(snapshot, dtype=np.int64), ids.shape).copy()
    k = int(n_futures or spec.sim.oracle_futures)
    plan = [_ArmRows.of(a, len(ids)) for a in arms]
    _check_futures_args(spec, ids, snaps, plan, k)
    if not 0 <= trace_months <= spec.horizon:
        raise ValueError(f"futures: trace_months must lie in 0..{spec.horizon}, got {trace_months}")
    res = [_empty_futures(spec, ids, snaps, a.given, k) for a in plan]
    traces: dict[int, dict[str, list[pa.Table]]] = {int(a): {} for a in traced if trace_months > 0}
    chunk_of = ids // spec.sim.chunk_size
    asked = np.unique(chunk_of)
    per_group = max(1, REPLAY_ROWS // spec.sim.chunk_size)
    for g in range(0, len(asked), per_group):
        _chunk_futures(
            spec,
            [int(c) for c in asked[g : g + per_group]],
            ids,
            snaps,
            chunk_of,
            plan,
            k,
            observable,
            check,
            res,
            (trace_months, traces),
        )
    for a, parts in traces.items():
        res[a].traces = {
            name: pa.concat_tables(p).sort_by(
                [("borrower_id", "ascending"), ("month", "ascending")]
            )
            for name, p in parts.items()
        }
    return res


def _empty_futures(
    spec: WorldSpec,
    ids: np.ndarray,
    snaps: np.ndarray,
    given: Intervention | tuple[Intervention, ...],
    k: int,
) -> Futures:
    n, horizon = len(ids), spec.horizon
    return Futures(
        borrower_id=ids,
        snapshot=snaps.astype(np.int16),
        arm=given,
        closed=np.zeros((n, k), dtype=bool),
        cause=np.full((n, k), -1, dtype=np.int64),
        month=np.full((n, k), -1, dtype=np.int64),
        weight=np.ones((n, k)),
        draw_amount=np.zeros((n, k, horizon)),
        channel_amount=np.zeros((n, k, len(CHANNELS))),
        early_repay=np.zeros((n, k), dtype=np.int64),
        interest=np.zeros((n, k)),
        loss=np.zeros((n, k)),
    )


_PER_FUTURE = (
    "closed",
    "cause",
    "month",
    "weight",
    "draw_amount",
    "channel_amount",
    "early_repay",
    "interest",
    "loss",
)


def _check_futures_args(
    spec: WorldSpec,
    ids: np.ndarray,
    snaps: np.ndarray,
    arms: Sequence[_ArmRows],
    k: int,
) -> None:
    if k < 1:
        raise ValueError(f"futures: n_futures must be at least 1, got {k}")
    for iv in (iv for a in arms for iv in a.interventions()):
        if not 1 <= iv.keep_drawing_months <= spec.horizon:
            raise ValueError(
                f"futures: keep_drawing_months must be in 1..{spec.horizon} (the horizon), "
                f"got {iv.keep_drawing_months}"
            )
    bad = (ids < 0) | (ids >= spec.n_borrowers)
    if bad.any():
        raise ValueError(
            f"futures: borrower_id {int(ids[bad][0])} is outside the world "
            f"(0..{spec.n_borrowers - 1})"
        )
    bad = (snaps < 0) | (snaps >= spec.n_months)
    if bad.any():
        raise ValueError(
            f"futures: snapshot {int(snaps[bad][0])} is outside the world's months "
            f"(0..{spec.n_months - 1})"
        )


#: Borrowers whose chunks are replayed together for futures (see :func:`_chunk_futures`):
#: a month is stepped once for all of them, so a step's fixed cost is paid once.
REPLAY_ROWS = 65_536


class _ChunkStreams:
    """The random streams of several chunks whose states are stacked into one.

    Each chunk keeps its own generator: a draw for the month's rows (``select``) is made
    chunk by chunk, each chunk's generator drawing for its own rows only, and the parts
    are put end to end. Every chunk so sees the draws it would see replayed alone.
    Only the samplers a month step calls are here.
    """

    def __init__(self, gens: Sequence[np.random.Generator], bounds: np.ndarray) -> None:
        self.gens = list(gens)
        self.bounds = np.asarray(bounds, dtype=np.int64)  # chunk c's rows: bounds[c]..[c+1]
        self.cuts = self.bounds.copy()

    def select(self, idx: np.ndarray) -> None:
        """The month's rows (sorted state rows): where each chunk's part of them lies."""
        self.cuts = np.searchsorted(idx, self.bounds)

    def _each(self, name: str, size: Any, *per_row: Any, **fixed: Any) -> Any:
        parts = []
        for c, gen in enumerate(self.gens):
            lo, hi = int(self.cuts[c]), int(self.cuts[c + 1])
            args = [a[lo:hi] if isinstance(a, np.ndarray) and a.ndim else a for a in per_row]
            sz = None if size is None else ((hi - lo), *(np.atleast_1d(size)[1:]))
            parts.append(getattr(gen, name)(*args, **fixed, size=sz))
        return np.concatenate(parts)

    def random(self, size: Any) -> Any:
        return self._each("random", size)

    def standard_normal(self, size: Any) -> Any:
        return self._each("standard_normal", size)

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Any = None) -> Any:
        return self._each("normal", size, loc=loc, scale=scale)

    def lognormal(self, mean: float = 0.0, sigma: float = 1.0, size: Any = None) -> Any:
        return self._each("lognormal", size, mean=mean, sigma=sigma)

    def standard_gamma(self, shape: Any, size: Any = None) -> Any:
        return self._each("standard_gamma", size, shape=shape)

    def gamma(self, shape: float, scale: float = 1.0, size: Any = None) -> Any:
        return self._each("gamma", size, shape=shape, scale=scale)

    def geometric(self, p: float, size: Any = None) -> Any:
        return self._each("geometric", size, p=p)

    def integers(self, low: int, high: int, size: Any = None) -> Any:
        return self._each("integers", size, low=low, high=high)

    def dirichlet(self, alpha: Any, size: Any = None) -> Any:
        return self._each("dirichlet", size, alpha=alpha)

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None) -> Any:
        return self._each("uniform", size, low=low, high=high)

    def poisson(self, lam: Any = 1.0, size: Any = None) -> Any:
        # the parameters are per row: each chunk's own (its sampler's draws depend on them)
        return self._each("poisson", size, lam)

    def binomial(self, n: Any, p: Any, size: Any = None) -> Any:
        return self._each("binomial", size, n, p)


def _start_chunks(
    spec: WorldSpec, chunks: Sequence[int]
) -> tuple[_State, _ChunkStreams, list[dict[str, pa.Table]]]:
    """:func:`_start_chunk` for several chunks at once, their states stacked in order
    (see :class:`_ChunkStreams`): the state, the streams and each chunk's tables."""
    gens, states, tables = [], [], []
    for c in chunks:
        gen = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(c,)))
        st_c, tab = _init_chunk(spec, c, gen)
        gens.append(gen)
        states.append(st_c)
        tables.append(tab)
    bounds = np.concatenate([[0], np.cumsum([len(x.bid) for x in states])])
    st = (
        states[0]
        if len(states) == 1
        else _State(
            **{f.name: np.concatenate([getattr(x, f.name) for x in states]) for f in fields(_State)}
        )
    )
    streams = _ChunkStreams(gens, bounds)
    if spec.first_month >= 0:
        return st, streams, tables
    prior = np.zeros(len(st.bid), dtype=np.int8)
    for t in range(spec.first_month, 0):
        out = _step(spec, st, t, streams, record=False)
        closed = out.idx[out.closed]
        overdue = out.cause[out.closed] == CAUSE_OVERDUE
        prior[closed] = np.where(overdue, PRIOR_CLOSED_OVERDUE, PRIOR_CLOSED)
    for c, tab in enumerate(tables):
        b = tab["borrowers"]
        at = slice(int(bounds[c]), int(bounds[c + 1]))
        for name, values in (("prior_overdue", st.ever_overdue[at]), ("prior_closure", prior[at])):
            b = b.set_column(b.schema.get_field_index(name), name, pa.array(values.copy()))
        tab["borrowers"] = b
    return st, streams, tables


def _chunk_futures(
    spec: WorldSpec,
    chunks: Sequence[int],
    ids: np.ndarray,
    snaps: np.ndarray,
    chunk_of: np.ndarray,
    arms: Sequence[_ArmRows],
    k: int,
    observable: bool,
    check: Callable[[pa.Table], None] | None,
    res: list[Futures],
    trace: tuple[int, dict[int, dict[str, list[pa.Table]]]] = (0, {}),
) -> None:
    """Replay ``chunks`` together (:func:`_start_chunks`) to each asked snapshot and run
    every arm's futures of the accounts asked there (``chunk_of``: each asked
    position's chunk), filling ``res``."""
    st, streams, tables = _start_chunks(spec, chunks)
    if check is not None:
        for tab in tables:
            check(tab["borrowers"])
    mine = np.flatnonzero(np.isin(chunk_of, chunks))
    wanted = set(int(x) for x in snaps[mine])
    for t in range(max(wanted) + 1):
        _step(spec, st, t, streams, record=False)
        for i, chunk in enumerate(chunks):
            where = mine[chunk_of[mine] == chunk]
            if t in set(int(x) for x in snaps[where]):
                lo = spec.chunk_bounds(chunk)[0] - int(streams.bounds[i])
                _snapshot_futures(
                    spec, st, t, chunk, lo, ids, where, snaps, arms, k, observable, res, trace
                )


def _snapshot_futures(
    spec: WorldSpec,
    st: _State,
    t: int,
    chunk: int,
    lo: int,
    ids: np.ndarray,
    where: np.ndarray,
    snaps: np.ndarray,
    arms: Sequence[_ArmRows],
    k: int,
    observable: bool,
    res: list[Futures],
    trace: tuple[int, dict[int, dict[str, list[pa.Table]]]],
) -> None:
    """The futures of one chunk's accounts asked at ``t`` (state row = id - ``lo``)."""
    at = where[snaps[where] == t]
    uniq = np.unique(ids[at])
    rows = uniq - lo
    off = ~(st.open[rows] & (st.signup[rows] <= t))
    if off.any():
        raise NotOnBook(
            f"futures: borrower {int(uniq[off][0])} is not on book at the end of month "
            f"{t} (closed by then, or not yet signed up)"
        )
    src = np.searchsorted(uniq, ids[at])
    # every arm from the same random numbers: stepped together, the draws made once
    variants = [
        _Variant(arm.at(at, src, len(rows)), observable, trace[0] if a in trace[1] else 0)
        for a, arm in enumerate(arms)
    ]
    got = _run_variants(spec, st, rows, t, k, chunk, variants)
    for a, (f, out) in enumerate(zip(got, res, strict=True)):
        for name in _PER_FUTURE:
            getattr(out, name)[at] = getattr(f, name)[src]
        if f.traces is not None:
            for name, table in f.traces.items():
                trace[1][a].setdefault(name, []).append(_renamed(table, at, src, k))


def _renamed(table: pa.Table, at: np.ndarray, src: np.ndarray, k: int) -> pa.Table:
    """A future's trace (future j of state row r named r * k + j) renamed for the asked
    positions: asked position p on state row src gives p * k + j."""
    local = table.column("borrower_id").to_numpy()
    r, j = local // k, local % k
    order = np.argsort(r, kind="stable")  # the trace's rows of each state row, in order
    lo, hi = np.searchsorted(r[order], src), np.searchsorted(r[order], src, side="right")
    take = (
        np.concatenate([order[a:b] for a, b in zip(lo, hi, strict=True)])
        if len(src)
        else np.zeros(0, dtype=np.int64)
    )
    pos = np.repeat(np.asarray(at, dtype=np.int64), hi - lo)
    piece = table.take(pa.array(np.asarray(take, dtype=np.int64)))
    ids = pa.array(pos * k + j[take], type=table.schema.field("borrower_id").type)
    return piece.set_column(0, "borrower_id", ids)


def _oracle(spec: WorldSpec, st: _State, t: int, chunk: int) -> dict[str, np.ndarray]:
    """Monte Carlo closure probabilities in (t, t+H] for a sample of eligible accounts.

    Two oracles from the same futures' random numbers (common random numbers), so they
    differ only by what is redrawn:

    - ``p_full`` (also written as ``p_oracle``): futures from the full state at the end
      of month ``t``, latent traits and the platform's per-borrower judgement included:
      the best a model that knew the latent state could do;
    - ``p_observable``, the *trait oracle*: the same futures with the individual part of
      the platform's judgement and the remaining length of an ongoing stop redrawn (see
      :func:`_redraw_unobservable`). It still knows the borrower's exact latent traits,
      the community part of the judgement and whether a stop is under way, which no
      feature reveals exactly: it is not a bound on what a model of the observables can
      reach, only a looser yardstick between the model and the full-state oracle.

    With ``simulator.oracle_estimator="hazard"`` (the default) no future closes: each
    contributes its chance of closing, by each cause, given the path it took (the
    month's closure chance times the chance it was still open), which has the same
    expectation as the share of closing futures and less variance; ``"count"`` counts
    the futures that close.

    ``f_<cause>`` / ``fo_<cause>`` give the share of full / observable futures closing
    by each cause (they sum to ``p_full`` / ``p_observable``): the most likely cause
    is the best any explanation can name. ``ess_observable`` is the effective number
    of observable futures under their importance weights. ``p_full_h1``/``_h2`` and
    ``p_observable_h1``/``_h2`` are the same probabilities from the first and the
    second half of the futures (NaN with fewer than two): an AUC from half the futures
    against one from all of them measures the Monte Carlo bias (see
    :func:`pipeline.core.evaluation.oracle_gap`).
    """
    s = spec.sim
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(chunk, 1, t)))
    eligible = np.flatnonzero(st.open & (st.signup <= t) & ~st.ever_overdue)
    n_total = max(1, len(spec.oracle_snapshots)) * spec.n_chunks
    quota = min(len(eligible), math.ceil(s.oracle_rows / n_total * 1.15))
    pick = np.sort(rng.choice(eligible, size=quota, replace=False)) if quota else eligible[:0]
    k = s.oracle_futures
    expected = s.oracle_estimator == "hazard"
    # both from the same random numbers: stepped together, the draws made once
    full, obs = _run_variants(
        spec, st, pick, t, k, chunk, [_Variant(), _Variant(observable=True)], expected
    )
    cols: dict[str, np.ndarray] = {
        "borrower_id": st.bid[pick],
        "snapshot": np.full(len(pick), t, dtype=np.int16),
        "p_oracle": full.p,
        "p_full": full.p,
        "p_observable": obs.p,
        "n_futures": np.full(len(pick), k, dtype=np.int16),
        "ess_observable": obs.weight.sum(axis=1) ** 2 / (obs.weight**2).sum(axis=1),
    }
    h = k // 2
    for name, f in (("p_full", full), ("p_observable", obs)):
        for j, cut in ((1, slice(0, h)), (2, slice(h, k))):
            cols[f"{name}_h{j}"] = (
                _wmean(f.closed[:, cut], f.weight[:, cut])
                if h
                else np.full(len(pick), np.nan, dtype=np.float64)
            )
    for prefix, f in (("f_", full), ("fo_", obs)):
        share = f.cause_share()
        for j, c in enumerate(CAUSES):
            cols[prefix + c] = share[:, j]
    return cols


#: Keys of the oracle table's schema metadata that carry the seconds the chunk's oracle
#: futures took and the seconds the whole chunk took to simulate, oracle included.
ORACLE_SECONDS = b"oracle_seconds"
CHUNK_SECONDS = b"chunk_seconds"


def oracle_seconds(table: pa.Table) -> tuple[float, float]:
    """Seconds a chunk's oracle futures took and seconds its whole simulation took, from
    its ``oracle`` table (0 when unrecorded)."""
    meta = table.schema.metadata or {}
    return float(meta.get(ORACLE_SECONDS, b"0")), float(meta.get(CHUNK_SECONDS, b"0"))


def iter_chunks(
    spec: WorldSpec, n_jobs: int = 1, block_size: int | None = None
) -> Iterator[tuple[int, dict[str, pa.Table]]]:
    """Yield ``(chunk, tables)`` in chunk order; work is spread over processes if asked.

    ``block_size`` bounds how many borrowers are in flight at once; neither it nor
    ``n_jobs`` changes any value produced.
    """
    chunks = range(spec.n_chunks)
    if n_jobs <= 1:
        for c in chunks:
            yield c, simulate_chunk(spec, c)
        return

    in_flight = max(n_jobs, (block_size or spec.sim.chunk_size * n_jobs) // spec.sim.chunk_size)
    with cf.ProcessPoolExecutor(max_workers=n_jobs) as ex:
        pending: dict[int, cf.Future[dict[str, pa.Table]]] = {}
        nxt = 0
        for c in chunks:
            while len(pending) < in_flight and nxt < spec.n_chunks:
                pending[nxt] = ex.submit(simulate_chunk, spec, nxt)
                nxt += 1
            yield c, pending.pop(c).result()


def simulate(
    spec: WorldSpec, progress: Callable[[Iterator[Any], int], Iterator[Any]] | None = None
) -> dict[str, pa.Table]:
    """Whole world in memory (small worlds and tests); large runs stream :func:`iter_chunks`."""
    it: Iterator[tuple[int, dict[str, pa.Table]]] = iter_chunks(spec)
    if progress is not None:
        it = progress(it, spec.n_chunks)
    acc: dict[str, list[pa.Table]] = {}
    for _, tables in it:
        for k, v in tables.items():
            acc.setdefault(k, []).append(v)
    out = {k: pa.concat_tables(v) for k, v in acc.items()}
    out["macro_months"] = macro_table(spec)
    return out
