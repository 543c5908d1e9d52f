"""Reading and writing stage outputs: atomic writes, validated reads, clear errors."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class DataError(ValueError):
    """An input table breaks a rule; the message names the file, column and rule."""


# --------------------------------------------------------------------------- atomic writes


_TMP_SUFFIX = ".tmp"


def _temp_sibling(final: Path) -> Path:
    """Create an empty hidden temporary file next to ``final``.

    The name carries the writer's process id (``.<name>.<pid>.<random>.tmp``) so that a
    later writer can recognise and remove what a killed process left behind.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(final.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.name}.{os.getpid()}.", suffix=_TMP_SUFFIX, dir=final.parent
    )
    os.close(fd)
    # mkstemp creates 0600 files; outputs get the permissions an ordinary write would
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (whoever owns it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_temps(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files in ``directory`` whose writing process no longer exists.

    A writer killed between creating its temporary file and renaming it leaves the file
    behind; the final names are never affected. Temporary files of live processes are
    kept, so concurrent writers are safe. Returns the removed paths.
    """
    removed: list[Path] = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for tmp in d.glob(f".*{_TMP_SUFFIX}"):
        parts = tmp.name.split(".")
        # ['', <name parts...>, <pid>, <random>, 'tmp']
        if len(parts) < 5 or not parts[-3].isdigit():
            continue
        if pid_alive(int(parts[-3])):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it over ``path`` only on success.

    A crash or kill at any moment leaves either the old file or the new one, never a
    partial file under the final name.
    """
    final = Path(path)
    tmp_path = _temp_sibling(final)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary encoding: all but floats.

    Float columns of measurements rarely repeat enough for a dictionary to pay; trying
    one and falling back costs time (a third of the write of the feature table) and
    the file comes out no smaller.
    """
    return [f.name for f in schema if not pa.types.is_floating(f.type)]


def write_parquet(
    table: pa.Table, path: str | os.PathLike[str], row_group_size: int | None = None
) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            row_group_size=row_group_size,
            compression="zstd",
            use_dictionary=dictionary_columns(table.schema),
        )


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(
            json.dumps(obj, indent=2, sort_keys=True, default=_json_default, ensure_ascii=False)
        )


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class ParquetSink:
    """Stream tables into several Parquet files; all are renamed into place at the end.

    Used by the generator: one row group per chunk, so the files do not depend on how
    the work was split. If anything fails, no final file is touched.
    """

    def __init__(self, paths: dict[str, Path], schemas: dict[str, pa.Schema]):
        self.paths = paths
        self.schemas = schemas
        self._tmp: dict[str, Path] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}

    def __enter__(self) -> ParquetSink:
        try:
            for name, path in self.paths.items():
                self._tmp[name] = _temp_sibling(path)
                self._writers[name] = pq.ParquetWriter(
                    self._tmp[name],
                    self.schemas[name],
                    compression="zstd",
                    use_dictionary=dictionary_columns(self.schemas[name]),
                )
        except BaseException:
            self._cleanup()
            raise
        return self

    def write(self, name: str, table: pa.Table) -> None:
        self._writers[name].write_table(table, row_group_size=max(1, table.num_rows))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            for w in self._writers.values():
                w.close()
            if exc_type is None:
                for tmp in self._tmp.values():
                    with open(tmp, "rb+") as fh:
                        os.fsync(fh.fileno())
                for name, tmp in self._tmp.items():
                    os.replace(tmp, self.paths[name])
                for directory in {p.parent for p in self.paths.values()}:
                    _fsync_dir(directory)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        for w in self._writers.values():
            with contextlib.suppress(Exception):
                w.close()
        for tmp in self._tmp.values():
            if tmp.exists():
                tmp.unlink()


# --------------------------------------------------------------------------- hashing


def file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest_of(obj: Any) -> str:
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, default=_json_default).encode()
    ).hexdigest()


# --------------------------------------------------------------------------- validated reads


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    return str(t)


def _distinct_int_keys(table: pa.Table, keys: Sequence[str]) -> int | None:
    """Number of distinct keys when the key columns are integers without nulls.

    The columns are packed into one int64 per row (mixed radix over each column's
    range), then counted with a bincount when the packed range is small, or by
    sorting otherwise: one vectorised pass instead of a hash aggregation. Returns None
    when the shortcut does not apply (other types, nulls, a range beyond int64); the
    caller then groups.
    """
    cols = [table.column(k) for k in keys]
    if not all(pa.types.is_integer(c.type) and c.null_count == 0 for c in cols):
        return None
    packed = np.zeros(table.num_rows, dtype=np.int64)
    span = 1
    for c in cols:
        a = c.to_numpy()
        lo, hi = int(a.min()), int(a.max())
        width = hi - lo + 1
        if span * width >= 2**62 or lo < -(2**62) or hi >= 2**62:
            return None
        packed = packed * width + (a.astype(np.int64) - lo)
        span *= width
    if span <= 8 * table.num_rows + 1024:
        return int(np.count_nonzero(np.bincount(packed, minlength=span)))
    packed.sort()
    return int(1 + np.count_nonzero(packed[1:] != packed[:-1]))


def read_table(
    path: str | os.PathLike[str],
    schema: pa.Schema,
    *,
    non_negative: Iterable[str] = (),
    allowed: dict[str, Sequence[str]] | None = None,
    ranges: dict[str, tuple[float, float]] | None = None,
    unique: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    filters: Any = None,
) -> pa.Table:
    """Read a Parquet file and check it against ``schema`` and the given rules.

    ``filters`` (a pyarrow expression) reads only matching rows, skipping row groups
    by their statistics; the rules then apply to those rows.

    Integer columns may be stored with any integer width, floats with any float width;
    values are cast to the declared types. Every failure raises :class:`DataError`
    naming the file, the column and the rule.
    """
    p = Path(path)
    wanted = list(columns) if columns is not None else schema.names
    table = _checked_columns(p, _open_checked(p, schema, wanted, filters), schema, wanted)
    _check_rules(p, table, wanted, non_negative, allowed or {}, ranges or {})
    if unique and table.num_rows:
        n_distinct = _distinct_int_keys(table, unique)
        if n_distinct is None:
            keys = table.select(list(unique))
            n_distinct = keys.group_by(list(unique)).aggregate([]).num_rows
        if n_distinct != table.num_rows:
            raise DataError(
                f"{p}: columns ({', '.join(unique)}) have {table.num_rows - n_distinct} duplicated keys; each key must appear once"
            )
    return table


def _open_checked(p: Path, schema: pa.Schema, wanted: list[str], filters: Any) -> pa.Table:
    """The wanted columns of a readable Parquet file whose column kinds match ``schema``."""
    if not p.exists():
        raise DataError(f"{p}: file not found (run the stage that writes it first)")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")
    try:
        pf = pq.ParquetFile(p)
        file_schema = pf.schema_arrow
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{p}: not a readable Parquet file ({exc})") from exc
    for name in wanted:
        if name not in file_schema.names:
            raise DataError(
                f"{p}: column '{name}' is missing (expected columns: {', '.join(schema.names)})"
            )
        want, got = schema.field(name).type, file_schema.field(name).type
        if _kind(want) != _kind(got):
            raise DataError(f"{p}: column '{name}' has type {got}, expected {_kind(want)} ({want})")
    try:
        return (
            pf.read(columns=wanted)
            if filters is None
            else pq.read_table(p, columns=wanted, filters=filters)
        )
    except Exception as exc:  # as above: corrupt pages surface as several error types
        raise DataError(f"{p}: could not read data ({exc})") from exc


def _checked_columns(p: Path, table: pa.Table, schema: pa.Schema, wanted: list[str]) -> pa.Table:
    """Each column without nulls or non-finite floats, cast to its declared type."""
    arrays = []
    for name in wanted:
        col = table.column(name)
        want = schema.field(name).type
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if col.null_count:
            raise DataError(
                f"{p}: column '{name}' has {col.null_count} missing values; none are allowed"
            )
        if _kind(want) == "float":
            arr = col.to_numpy()
            bad = ~np.isfinite(arr)
            if bad.any():
                raise DataError(
                    f"{p}: column '{name}' has {int(bad.sum())} NaN or infinite values; none are allowed"
                )
        try:
            col = col.cast(want)
        except pa.ArrowInvalid as exc:
            raise DataError(f"{p}: column '{name}' does not fit {want} ({exc})") from exc
        arrays.append(col)
    return pa.Table.from_arrays(arrays, names=wanted)


def _check_rules(
    p: Path,
    table: pa.Table,
    wanted: list[str],
    non_negative: Iterable[str],
    allowed: dict[str, Sequence[str]],
    ranges: dict[str, tuple[float, float]],
) -> None:
    """Amounts non-negative, categories known, values inside their ranges."""
    if not table.num_rows:
        return
    for name in non_negative:
        if name in wanted:
            mn = pc.min(table.column(name)).as_py()
            if mn is not None and mn < 0:
                n_bad = pc.sum(pc.less(table.column(name), 0)).as_py()
                raise DataError(
                    f"{p}: column '{name}' has {n_bad} negative values (minimum {mn}); amounts must be >= 0"
                )
    for name, values in allowed.items():
        if name in wanted:
            seen = set(pc.unique(table.column(name)).to_pylist())
            unknown = sorted(seen - set(values))
            if unknown:
                raise DataError(
                    f"{p}: column '{name}' has unknown categories {unknown[:5]}; allowed: {', '.join(values)}"
                )
    for name, (lo, hi) in ranges.items():
        if name in wanted:
            mm = pc.min_max(table.column(name)).as_py()
            if mm["min"] < lo or mm["max"] > hi:
                raise DataError(
                    f"{p}: column '{name}' has values in [{mm['min']}, {mm['max']}], outside the allowed range [{lo}, {hi}]"
                )
