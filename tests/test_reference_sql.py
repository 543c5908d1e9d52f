"""The DuckDB SQL feature implementation agrees with the numpy one, and the comparison bites."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from omegaconf import OmegaConf

from pipeline.base.config import SimulatorConfig
from pipeline.base.io import write_parquet
from pipeline.base.registry import FEATURE_NAMES
from pipeline.core import features as F
from pipeline.core.simulate import WorldSpec, simulate
from pipeline.stages.features import build_features, feature_tables, write_features
from pipeline.tools.reference_sql import SqlFeatureParams, compare_tables, features_sql

N = 900


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    sim = OmegaConf.structured(SimulatorConfig)
    sim.chunk_size = 300
    sim.oracle_rows = 0
    world = simulate(WorldSpec(n_borrowers=N, n_months=36, seed=5, sim=OmegaConf.to_object(sim)))
    out = tmp_path_factory.mktemp("raw")
    for name, table in world.items():
        if name in ("traits", "hazards", "oracle"):
            continue
        write_parquet(table, out / f"{name}.parquet")
    return out


def _params(spec: F.FeatureSpec) -> SqlFeatureParams:
    return SqlFeatureParams(**dataclasses.asdict(spec))


SPECS = {
    "default": F.FeatureSpec(
        snapshots=(12, 16, 20, 24, 28, 32), horizon=3, valid_snapshots=(24,), oot_snapshots=(28, 32)
    ),
    # early snapshots (windows cut at month 0), every population, other thresholds
    "variant": F.FeatureSpec(
        snapshots=(1, 2, 5, 9, 11, 27, 30),
        horizon=2,
        valid_snapshots=(11,),
        oot_snapshots=(30,),
        fund_days=3,
        small_draw_ratio=0.2,
        never_overdue_only=False,
    ),
}


@pytest.mark.parametrize("which", sorted(SPECS))
def test_sql_features_equal_numpy_features(raw_dir, which):
    spec = SPECS[which]
    # several blocks, so social features cross block boundaries
    ours = build_features(raw_dir, 36, spec, block_size=256)
    ref = features_sql(raw_dir, _params(spec))
    cmp = compare_tables(ours, ref)
    assert cmp.same_rows and cmp.same_labels, cmp
    assert cmp.n_mismatched_values == 0, cmp
    assert cmp.equal
    assert ours.num_rows > 1000
    assert set(ref.column_names) >= set(FEATURE_NAMES)
    # the comparison is not vacuous: labels of both kinds, and non-trivial features
    assert 0 < pc.sum(ours.column("label")).as_py() < ours.num_rows
    for name in (
        "longest_idle_12",
        "contacts_closed_share",
        "spend_volatility_6",
        "misuse_share_k",
    ):
        assert pc.max(ref.column(name)).as_py() > 0, name


def _set(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    i = table.column_names.index(name)
    return table.set_column(i, name, pa.array(values, type=table.schema.field(name).type))


def test_comparison_catches_values_rows_and_labels(raw_dir):
    spec = SPECS["default"]
    ref = features_sql(raw_dir, _params(spec))
    assert compare_tables(ref, ref).equal

    v = ref.column("util_mean_6").to_numpy().copy()
    v[7] += 1e-3
    off = compare_tables(_set(ref, "util_mean_6", v), ref)
    assert not off.equal and off.n_mismatched_values == 1 and off.worst_feature == "util_mean_6"

    tiny = ref.column("draw_amount_12").to_numpy().copy()
    tiny[3] = np.nextafter(tiny[3], np.float32(np.inf))  # one float32 step is within tolerance
    assert compare_tables(_set(ref, "draw_amount_12", tiny), ref).equal

    assert not compare_tables(ref.slice(1), ref).same_rows

    lab = ref.column("label").to_numpy().copy()
    lab[0] = 1 - lab[0]
    flipped = compare_tables(_set(ref, "label", lab), ref)
    assert flipped.same_rows and not flipped.same_labels and not flipped.equal


def test_feature_table_does_not_depend_on_the_block_size(raw_dir):
    """Rows come out by borrower then snapshot, so any block size gives the same table."""
    spec = SPECS[sorted(SPECS)[0]]
    tables = [build_features(raw_dir, 36, spec, block_size=b) for b in (97, 256, 100_000)]
    assert tables[0].num_rows > 1000
    for t in tables[1:]:
        assert t.equals(tables[0])
    bid = tables[0].column("borrower_id").to_numpy()
    snap = tables[0].column("snapshot").to_numpy()
    key = bid.astype(np.int64) * 100 + snap
    assert (np.diff(key) > 0).all()  # strictly by borrower, then snapshot


def test_the_stage_writes_the_table_block_by_block(raw_dir, tmp_path):
    """One part per block, each only its borrowers; the file is the whole table's file."""
    spec = SPECS["default"]
    parts = list(feature_tables(raw_dir, 36, spec, block_size=128))
    assert len(parts) == -(-N // 128)
    for i, part in enumerate(parts):
        bid = part.column("borrower_id").to_numpy()
        assert ((bid >= i * 128) & (bid < (i + 1) * 128)).all()
    whole = build_features(raw_dir, 36, spec, block_size=1000)
    assert pa.concat_tables(parts).equals(whole)
    write_parquet(whole, tmp_path / "whole.parquet")
    assert write_features(raw_dir, tmp_path / "parts.parquet", 36, spec, 128) == whole.num_rows
    assert (tmp_path / "parts.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_the_two_passes_must_agree_on_first_event_months(raw_dir, monkeypatch):
    """The contacts' features use the first pass's months; a block that disagrees stops it."""
    real = F.block_status

    def shifted(raw, lo, n):
        st = real(raw, lo, n)
        return F.BlockStatus(st.borrower_id, st.first_closed - (lo == 0), st.first_overdue)

    monkeypatch.setattr(F, "block_status", shifted)
    with pytest.raises(RuntimeError, match="first-event months"):
        list(feature_tables(raw_dir, 36, SPECS["default"], block_size=256))
