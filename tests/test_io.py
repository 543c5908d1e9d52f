"""Atomic writes: the final name only ever holds a complete file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.base.io import (
    ParquetSink,
    atomic_path,
    file_digest,
    sweep_stale_temps,
    write_json,
    write_parquet,
    write_parquet_stream,
    write_text,
)


def _temps(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    write_text("old\n", target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("crash in the middle")
    assert target.read_text() == "old\n"
    assert _temps(tmp_path) == []
    write_text("new\n", target)
    assert target.read_text() == "new\n"


def _mixed_table(n: int) -> pa.Table:
    rng = np.random.default_rng(3)
    return pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "word": pa.array(
                np.array(["train", "valid", "oot"], dtype=object)[rng.integers(0, 3, n)]
            ),
            "x": pa.array(rng.random(n).astype(np.float32)),
        }
    )


@pytest.mark.parametrize("group", [None, 100])
def test_streamed_parquet_is_the_file_of_the_whole_table(tmp_path, group):
    """Parts of any sizes give the bytes write_parquet writes from their concatenation."""
    n = 1_100_000 if group is None else 1_234  # past pyarrow's default 1,048,576 rows
    table = _mixed_table(n)
    write_parquet(table, tmp_path / "whole.parquet", row_group_size=group)
    cuts = [0, 1, 99, 100, 101, 640, 641, n] if group else [0, 7, 500_000, 1_048_577, n]
    parts = (table.slice(a, b - a) for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    assert write_parquet_stream(parts, tmp_path / "parts.parquet", table.schema, group) == n
    whole = (tmp_path / "whole.parquet").read_bytes()
    assert (tmp_path / "parts.parquet").read_bytes() == whole
    assert pq.ParquetFile(tmp_path / "parts.parquet").metadata.num_row_groups == (
        2 if group is None else 13
    )
    empty = table.schema.empty_table()
    write_parquet(empty, tmp_path / "e1.parquet")
    write_parquet_stream(iter([]), tmp_path / "e2.parquet", table.schema)
    assert (tmp_path / "e1.parquet").read_bytes() == (tmp_path / "e2.parquet").read_bytes()


def test_a_failed_stream_keeps_the_old_file(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(_mixed_table(10), target)
    before = target.read_bytes()

    def parts():
        yield _mixed_table(500)
        raise RuntimeError("block 2 failed")

    with pytest.raises(RuntimeError, match="block 2"):
        write_parquet_stream(parts(), target, _mixed_table(1).schema, row_group_size=100)
    other = pa.table({"id": pa.array([1], type=pa.int32())})
    with pytest.raises(ValueError, match="schema"):
        write_parquet_stream(iter([other]), target, _mixed_table(1).schema)
    assert target.read_bytes() == before
    assert _temps(tmp_path) == []


def test_outputs_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json({"a": 1}, tmp_path / "a.json")
        write_parquet(pa.table({"x": [1, 2]}), tmp_path / "x.parquet")
    finally:
        os.umask(old)
    for name in ("a.json", "x.parquet"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_temp_names_carry_the_writer_pid(tmp_path):
    with atomic_path(tmp_path / "f.json") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".f.json.{os.getpid()}.")
        assert tmp.name.endswith(".tmp")


def test_stale_temps_of_dead_writers_are_swept_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".features.parquet.{dead_pid}.abcd1234.tmp"
    live = tmp_path / f".features.parquet.{os.getpid()}.efgh5678.tmp"
    other = tmp_path / ".notes.tmp"  # not ours: no pid in the name
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert sweep_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    # every atomic write sweeps its folder first
    stale.write_bytes(b"partial")
    write_text("x", tmp_path / "y.txt")
    assert not stale.exists()


def test_parquet_sink_renames_all_or_nothing(tmp_path):
    schema = pa.schema([("x", pa.int64())])
    paths = {"a": tmp_path / "a.parquet", "b": tmp_path / "b.parquet"}
    write_parquet(pa.table({"x": [9]}, schema=schema), paths["a"])
    old = file_digest(paths["a"])
    with pytest.raises(ValueError), ParquetSink(paths, {"a": schema, "b": schema}) as sink:
        sink.write("a", pa.table({"x": [1, 2]}, schema=schema))
        raise ValueError("generator failed")
    assert file_digest(paths["a"]) == old and not paths["b"].exists()
    assert _temps(tmp_path) == []
    with ParquetSink(paths, {"a": schema, "b": schema}) as sink:
        sink.write("a", pa.table({"x": [1, 2]}, schema=schema))
        sink.write("b", pa.table({"x": [3]}, schema=schema))
    assert pq.read_table(paths["a"]).column("x").to_pylist() == [1, 2]
    assert pq.read_table(paths["b"]).column("x").to_pylist() == [3]
    assert _temps(tmp_path) == []


def test_duplicate_keys_are_counted_alike_by_every_path(tmp_path):
    """The packed-integer count (bincount or sort) and the grouping fallback agree."""
    import numpy as np

    from pipeline.base.io import DataError, _distinct_int_keys, read_table

    rng = np.random.default_rng(0)
    n = 3000
    bid = rng.integers(0, 400, n)
    month = rng.integers(0, 36, n)
    # group_by over a string copy of the keys is the independent count
    for big in (False, True):  # a wide id range takes the sorting path
        b = bid * (10**9 if big else 1)
        t = pa.table({"borrower_id": pa.array(b, pa.int64()), "month": pa.array(month, pa.int16())})
        s = pa.table({"a": pa.array(b.astype(str)), "b": pa.array(month.astype(str))})
        expected = s.group_by(["a", "b"]).aggregate([]).num_rows
        assert expected < n  # the draw repeats keys
        assert _distinct_int_keys(t, ["borrower_id", "month"]) == expected
        path = tmp_path / "t.parquet"
        pq.write_table(t, path)
        with pytest.raises(DataError, match=rf"{n - expected} duplicated keys"):
            read_table(path, t.schema, unique=("borrower_id", "month"))
        distinct = t.group_by(["borrower_id", "month"]).aggregate([])
        pq.write_table(distinct, path)
        assert read_table(path, t.schema, unique=("borrower_id", "month")).num_rows == expected
    with_null = pa.table({"borrower_id": pa.array([0, None], pa.int64()), "month": [0, 1]})
    assert _distinct_int_keys(with_null, ["borrower_id", "month"]) is None
    texts = pa.table({"borrower_id": ["a", "a"], "month": [0, 0]})
    assert _distinct_int_keys(texts, ["borrower_id", "month"]) is None
    huge = pa.table({"a": pa.array([0, 2**40], pa.int64()), "b": pa.array([0, 2**40], pa.int64())})
    assert _distinct_int_keys(huge, ["a", "b"]) is None  # packed range beyond int64


def test_id_bounds_come_from_row_group_statistics_or_not_at_all(tmp_path):
    from pipeline.stages.features import _id_bounds_from_statistics

    t = pa.table({"borrower_id": pa.array([5, 3, 9, 7], pa.int64()), "x": [1.0, 2.0, 3.0, 4.0]})
    with_stats = tmp_path / "a.parquet"
    pq.write_table(t, with_stats, row_group_size=2)
    assert _id_bounds_from_statistics(with_stats) == {"min": 3, "max": 9}
    without = tmp_path / "b.parquet"
    pq.write_table(t, without, write_statistics=False)
    assert _id_bounds_from_statistics(without) is None  # the caller reads the column
    text_ids = tmp_path / "c.parquet"
    pq.write_table(pa.table({"borrower_id": ["a", "b"]}), text_ids)
    assert _id_bounds_from_statistics(text_ids) is None
    with_null = tmp_path / "n.parquet"
    pq.write_table(pa.table({"borrower_id": pa.array([1, None], pa.int64())}), with_null)
    assert _id_bounds_from_statistics(with_null) is None  # the full reader refuses nulls
    broken = tmp_path / "d.parquet"
    broken.write_bytes(b"PAR1 not really")
    assert _id_bounds_from_statistics(broken) is None


def test_rows_read_by_position_one_row_group_at_a_time(tmp_path):
    from pipeline.base.io import DataError, read_table

    table = _mixed_table(1000)
    path = tmp_path / "t.parquet"
    write_parquet(table, path, row_group_size=64)
    at = np.array([0, 63, 64, 65, 500, 999])
    got = read_table(path, table.schema, rows=at)
    assert got.equals(table.take(pa.array(at)))
    assert read_table(path, table.schema, rows=np.array([], dtype=np.int64)).num_rows == 0
    only = read_table(path, table.schema, columns=["id"], rows=np.array([3, 900]))
    assert only.column("id").to_pylist() == [3, 900]
    for bad in ([5, 5], [7, 2], [1000], [-1]):
        with pytest.raises(DataError, match="row positions"):
            read_table(path, table.schema, rows=np.array(bad))


def test_row_groups_are_checked_one_by_one_and_say_which(tmp_path):
    from pipeline.base.io import DataError, iter_row_groups, read_table

    table = _mixed_table(300)
    x = table.column("x").to_numpy().copy()
    x[150] = np.nan  # in the second row group of 100 rows
    bad = table.set_column(2, "x", pa.array(x))
    path = tmp_path / "t.parquet"
    write_parquet(bad, path, row_group_size=100)
    groups = iter_row_groups(path, table.schema)
    assert next(groups).equals(bad.slice(0, 100))
    with pytest.raises(DataError, match=r"column 'x' has 1 NaN.*\(in row group 2 of 3\)"):
        next(groups)
    with pytest.raises(ValueError, match="not both"):
        read_table(path, table.schema, rows=np.array([1]), filters=pc.field("id") > 3)
