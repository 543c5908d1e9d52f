"""Reading and writing stage outputs: atomic writes, validated reads, clear errors."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PosixPath, PurePath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.base.errors import PipelineError


class DataError(PipelineError, ValueError):
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
    partial file under the final name. During a :func:`staging` that covers ``path``,
    the file goes to its staged copy instead, published with the stage's other outputs.
    """
    final = Path(path)
    target, st = _stage_target(final)
    tmp_path = _temp_sibling(target)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
        _mark_staged(st, final, target)
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


#: the rows per row group of ``pq.write_table`` when none is given (pyarrow's default)
DEFAULT_ROW_GROUP_ROWS = 1024 * 1024
#: the most rows pyarrow puts in one row group, whatever ``row_group_size`` asks
MAX_ROW_GROUP_ROWS = 64 * 1024 * 1024


def write_parquet_stream(
    tables: Iterable[pa.Table],
    path: str | os.PathLike[str],
    schema: pa.Schema,
    row_group_size: int | None = None,
) -> int:
    """Write ``tables``, in order, as one Parquet file; returns the number of rows.

    The file is byte for byte the one :func:`write_parquet` writes from the
    concatenation of the tables: rows are cut into row groups of exactly
    ``row_group_size`` as ``pq.write_table`` cuts them, whatever sizes the tables come
    in. At most one row group waits in memory while the previous one is compressed and
    written on a second thread (Arrow releases the GIL). Atomic like :func:`write_parquet`:
    if anything fails, including the iterator, no file appears under ``path``.
    """
    # pyarrow never writes a row group of more than MAX_ROW_GROUP_ROWS rows
    size = min(row_group_size or DEFAULT_ROW_GROUP_ROWS, MAX_ROW_GROUP_ROWS)
    n_rows = 0
    with (
        atomic_path(path) as tmp,
        pq.ParquetWriter(
            tmp, schema, compression="zstd", use_dictionary=dictionary_columns(schema)
        ) as writer,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        writing: Future[None] | None = None

        def put(group: pa.Table) -> None:
            nonlocal writing
            if writing is not None:
                writing.result()
            writing = pool.submit(writer.write_table, group)

        held: list[pa.Table] = []
        n_held = 0
        for table in tables:
            if not table.schema.equals(schema, check_metadata=True):
                raise ValueError(
                    f"{path}: a part's schema differs from the file's:\n{table.schema}"
                )
            n_rows += table.num_rows
            held.append(table)
            n_held += table.num_rows
            while n_held >= size:
                joined = pa.concat_tables(held)
                put(joined.slice(0, size).combine_chunks())
                rest = joined.slice(size)
                held, n_held = ([rest] if rest.num_rows else []), rest.num_rows
        if n_held or n_rows == 0:
            put(pa.concat_tables(held).combine_chunks() if held else schema.empty_table())
        if writing is not None:
            writing.result()
    return n_rows


class ParquetSink:
    """Stream tables into several Parquet files; all are renamed into place at the end.

    Used by the generator: one row group per chunk, so the files do not depend on how
    the work was split. If anything fails, no final file is touched.
    """

    def __init__(self, paths: dict[str, Path], schemas: dict[str, pa.Schema]):
        self.paths = paths
        self.schemas = schemas
        self._tmp: dict[str, Path] = {}
        self._targets: dict[str, Path] = {}
        self._staging: _Staging | None = None
        self._writers: dict[str, pq.ParquetWriter] = {}

    def __enter__(self) -> ParquetSink:
        try:
            for name, path in self.paths.items():
                self._targets[name], self._staging = _stage_target(Path(path))
                self._tmp[name] = _temp_sibling(self._targets[name])
                self._writers[name] = pq.ParquetWriter(
                    self._tmp[name],
                    self.schemas[name],
                    compression="zstd",
                    use_dictionary=dictionary_columns(self.schemas[name]),
                )
        except BaseException:  # noqa: BLE001 - an interrupt too must remove the half-written files; re-raised
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
                    os.replace(tmp, self._targets[name])
                for directory in {p.parent for p in self._targets.values()}:
                    _fsync_dir(directory)
                for name, target in self._targets.items():
                    _mark_staged(self._staging, Path(self.paths[name]), target)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        for w in self._writers.values():
            with contextlib.suppress(Exception):
                w.close()
        for tmp in self._tmp.values():
            if tmp.exists():
                tmp.unlink()


# --------------------------------------------------------------------------- staging
#
# A stage writes its outputs into a staging folder and publishes them together when it
# succeeds. While a staging is active, every write of this module whose final path lies
# under one of the staged folders lands on a mirror path under
# ``<root>/.staging/<name>.<pid>/`` instead; deletions are recorded and applied at
# publish time. Publishing writes a journal (the deletions and renames, in order), then
# applies it; a process killed while applying it leaves the journal, and the next
# :func:`recover` on the same root finishes the job. Every step is idempotent: a rename
# whose source is gone was done, a deletion of a missing path was done.

STAGING_DIR = ".staging"
_JOURNAL_SUFFIX = ".journal.json"
#: test hooks: called with a final path once its new version is staged, and once it is
#: published (a test kills the process there)
_after_stage_write: list[Any] = []
_after_rename: list[Any] = []


class _Staging:
    """The active staging: which folders it covers, what it staged and what it deletes."""

    def __init__(self, root: Path, folders: Sequence[Path], name: str):
        self.root = root
        self.name = f"{name}.{os.getpid()}"
        self.dir = root / STAGING_DIR / self.name
        self.folders = [Path(os.path.abspath(f)) for f in folders]
        self.staged: dict[Path, Path] = {}  # final path -> mirror path, in write order
        self.deleted: list[Path] = []  # final paths (files or folders), in request order
        self.hidden: set[Path] = set()  # deleted and not written since
        self.callbacks: list[Any] = []
        self.lock = threading.Lock()

    def folder_of(self, final: Path) -> int | None:
        if final == self.dir or self.dir in final.parents:
            return None
        for i, folder in enumerate(self.folders):
            if final == folder or folder in final.parents:
                return i
        return None

    def mirror(self, final: Path) -> Path | None:
        i = self.folder_of(final)
        if i is None:
            return None
        return self.dir / str(i) / final.relative_to(self.folders[i])

    def is_hidden(self, final: Path) -> bool:
        return any(h == final or h in final.parents for h in self.hidden)


_ACTIVE: list[_Staging] = []


def _abs(path: str | os.PathLike[str]) -> Path:
    # str() of an OutputPath is its final path (its __fspath__ would resolve it)
    text = str(path) if isinstance(path, PurePath) else os.fspath(path)
    return Path(os.path.abspath(text))


def _active() -> _Staging | None:
    return _ACTIVE[-1] if _ACTIVE else None


def resolve(path: str | os.PathLike[str]) -> Path:
    """Where ``path`` is to be read now.

    During a staging: the staged version of a file this stage wrote; for a path this
    stage deleted, a path that does not exist; for a folder that exists only in the
    staging, its staged copy. Otherwise (and outside any staging) ``path`` itself.
    """
    st = _active()
    if st is None:
        return Path(str(path)) if isinstance(path, PurePath) else Path(path)
    final = _abs(path)
    with st.lock:
        if final in st.staged:
            return st.staged[final]
        mirror = st.mirror(final)
        if mirror is None:
            return final
        if st.is_hidden(final):
            return mirror
    if mirror.is_file():
        return mirror
    # a folder (or file) the stage creates goes into the staging, beside its outputs
    if not final.exists() and (mirror.exists() or mirror.parent.is_dir()):
        return mirror
    return final


class OutputPath(PosixPath):
    """A path to a stage output whose file-system calls see the active staging.

    ``str()`` and printing give the final path; ``open``, ``exists``, Parquet readers
    and anything else that goes through ``os.fspath`` get :func:`resolve`'s answer, so
    a stage reading back what it just wrote sees its new version, not the published one.
    """

    def __fspath__(self) -> str:
        return str(resolve(self))


def _stage_target(final: Path) -> tuple[Path, _Staging | None]:
    """Where a write of ``final`` goes: its mirror during a staging that covers it."""
    st = _active()
    if st is None:
        return final, None
    mirror = st.mirror(_abs(final))
    return (final, None) if mirror is None else (mirror, st)


def _mark_staged(st: _Staging | None, final: Path, mirror: Path) -> None:
    if st is None:
        return
    with st.lock:
        f = _abs(final)
        st.staged.pop(f, None)
        st.staged[f] = mirror
        st.hidden.discard(f)
    for hook in _after_stage_write:
        hook(f)


def staged_glob(folder: str | os.PathLike[str], pattern: str) -> list[Path]:
    """Final paths under ``folder`` matching ``pattern`` (a relative glob), as this
    stage sees them: published ones it has not deleted, plus those it wrote (and the
    folders holding them). Sorted."""
    base = _abs(folder)
    st = _active()
    found = {p for p in base.glob(pattern)}
    if st is None:
        return sorted(found)
    n = len(PurePath(pattern).parts)
    with st.lock:
        found = {p for p in found if not st.is_hidden(_abs(p))}
        for final in st.staged:
            if base not in final.parents:
                continue
            rel = final.relative_to(base)
            if len(rel.parts) >= n and PurePath(*rel.parts[:n]).match(pattern):
                found.add(base.joinpath(*rel.parts[:n]))
    return sorted(found)


def staged_tree(folder: str | os.PathLike[str]) -> dict[PurePath, Path]:
    """Every file under ``folder`` as this stage sees it: relative path -> where to read
    it (the published file, or the staged one that replaces it). Sorted by path."""
    base = _abs(folder)
    st = _active()
    files: dict[PurePath, Path] = {}
    if base.is_dir():
        for p in base.rglob("*"):
            if p.is_file() and (st is None or not st.is_hidden(p)):
                files[p.relative_to(base)] = p
    if st is not None:
        with st.lock:
            for final, mirror in st.staged.items():
                if base in final.parents:
                    files[final.relative_to(base)] = mirror
    return dict(sorted(files.items()))


def remove_paths(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Delete files or folders; during a staging, at publish time (and hidden until then)."""
    st = _active()
    for path in paths:
        final = _abs(path)
        if st is None or st.mirror(final) is None:
            if final.is_dir():
                shutil.rmtree(final)
            else:
                final.unlink(missing_ok=True)
            continue
        with st.lock:
            for f in [f for f in st.staged if f == final or final in f.parents]:
                st.staged.pop(f).unlink(missing_ok=True)
            st.deleted.append(final)
            st.hidden.add(final)
        mirror = st.mirror(final)
        if mirror is not None and mirror.is_dir():
            shutil.rmtree(mirror)


def after_publish(callback: Any) -> None:
    """Call ``callback()`` once the active staging has published (at once when none is
    active). For work that needs the published files, such as logging them elsewhere."""
    st = _active()
    if st is None:
        callback()
    else:
        st.callbacks.append(callback)


#: undo actions by kind, set by the invocation (the registry's, which needs a tracker):
#: ``handler(note) -> line`` undoes one effect outside the files and says what it did
_UNDO: dict[str, Any] = {}
_UNDO_DIR = "undo"


def on_dropped(kind: str, handler: Any) -> None:
    """Undo notes of ``kind`` left by a staging that is dropped go to ``handler``."""
    _UNDO[kind] = handler


def note_undo(kind: str, note: dict[str, Any]) -> None:
    """Record how to undo an effect outside the files (a registry alias moved) should
    the active staging be dropped: by an exception, or, for a killed process, by the next
    :func:`recover`. Outside a staging the effect stands and nothing is recorded."""
    st = _active()
    if st is None:
        return
    folder = st.dir / _UNDO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    n = sum(1 for _ in folder.glob("*.json"))
    path = folder / f"{n:04d}.{kind}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(note, sort_keys=True))


def _undo(staging_dir: Path) -> list[str]:
    """Apply the undo notes of a dropped staging, newest first; one line per effect.

    A note whose handler is missing or fails is reported in its line, not raised: the
    staging is being dropped because of another failure, which must not be masked.
    """
    lines = []
    for path in sorted((staging_dir / _UNDO_DIR).glob("*.json"), reverse=True):
        kind = path.name.split(".")[1]
        handler = _UNDO.get(kind)
        try:
            note = json.loads(path.read_text())
            line = handler(note) if handler else f"could not undo a {kind} change: {note}"
        except Exception as exc:  # noqa: BLE001 - reported in the line; the drop goes on
            line = f"could not undo a {kind} change ({type(exc).__name__}: {exc})"
        if line:
            lines.append(str(line))
    return lines


@contextlib.contextmanager
def staging(
    root: str | os.PathLike[str], folders: Sequence[str | os.PathLike[str]], name: str
) -> Iterator[_Staging]:
    """Stage every write under ``folders`` and publish them together if the block succeeds.

    On any exception (an interrupt included) the staging folder is removed and no
    final path is touched. Stagings do not nest: an inner one joins the outer one.
    """
    if _active() is not None:
        yield _ACTIVE[-1]
        return
    st = _Staging(_abs(root), [Path(f) for f in folders], name)
    _check_same_device(st)
    st.dir.mkdir(parents=True, exist_ok=True)
    _ACTIVE.append(st)
    try:
        yield st
    except BaseException:  # noqa: BLE001 - an interrupt too must drop the staging; re-raised
        _ACTIVE.remove(st)
        for line in _undo(st.dir):
            print(f"outputs: {line}")
        shutil.rmtree(st.dir, ignore_errors=True)
        raise
    _ACTIVE.remove(st)
    try:
        _publish(st)
    finally:
        # a journal still there means an interrupted publication: keep what it renames
        # from, so that recover() can finish it
        if not _journal_path(st).exists():
            shutil.rmtree(st.dir, ignore_errors=True)
    for callback in st.callbacks:
        callback()


def _check_same_device(st: _Staging) -> None:
    """Publishing renames files, so each staged folder must share the root's file system."""
    st.root.mkdir(parents=True, exist_ok=True)
    dev = st.root.stat().st_dev
    for folder in st.folders:
        probe = folder
        while not probe.exists():
            probe = probe.parent
        if probe.stat().st_dev != dev:
            raise DataError(
                f"{folder}: not on the same file system as the output root {st.root}; "
                "a stage publishes its outputs by renaming them, so keep the output "
                "folders under paths.root's file system"
            )


def _journal_of(st: _Staging) -> dict[str, Any]:
    """Deletions (files only; never a path that is also published), renames, and the
    folders to remove once empty. Disjoint lists, so replaying them is safe."""
    staged = _staged_files(st)
    targets = {f for _, f in staged}
    delete: list[str] = []
    rmdirs: list[str] = []
    for final in dict.fromkeys(st.deleted):
        if final.is_dir():
            for sub in sorted(final.rglob("*"), reverse=True):
                if sub.is_dir():
                    rmdirs.append(str(sub))
                elif sub not in targets:
                    delete.append(str(sub))
            rmdirs.append(str(final))
        elif final not in targets and (final.exists() or final.is_symlink()):
            delete.append(str(final))
    renames = [[str(m), str(f)] for m, f in staged]
    return {"delete": delete, "rename": renames, "rmdir": rmdirs}


def _journal_path(st: _Staging) -> Path:
    return st.root / STAGING_DIR / f"{st.name}{_JOURNAL_SUFFIX}"


def _staged_files(st: _Staging) -> list[tuple[Path, Path]]:
    """(staged file, final path) for every file in the staging folder, in a fixed order.

    The folder is the record: a file a stage created there without this module's
    writers is published too."""
    out: list[tuple[Path, Path]] = []
    for i, folder in enumerate(st.folders):
        base = st.dir / str(i)
        if not base.is_dir():
            continue
        for m in sorted(base.rglob("*")):
            if m.is_file() and not (m.name.startswith(".") and m.name.endswith(_TMP_SUFFIX)):
                out.append((m, folder / m.relative_to(base)))
    return out


def _publish(st: _Staging) -> None:
    """Write the journal, apply it, remove it. Once the journal is on disk the stage's
    outputs are committed: an exception while applying it (a signal) gets one more
    try, and whatever is left is finished by :func:`recover`."""
    journal = _journal_of(st)
    if not any(journal.values()):
        return
    path = _journal_path(st)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(journal, indent=1))
    _fsync_dir(path.parent)
    try:
        _apply(journal)
    except BaseException:  # noqa: BLE001 - an interrupt too must finish the publishing; re-raised
        _apply(journal)  # idempotent: finish now rather than at the next invocation
        path.unlink()
        raise
    path.unlink()
    _fsync_dir(path.parent)


def _apply(journal: dict[str, Any]) -> None:
    """Replay a journal: deletions, renames, then folders left empty. Idempotent."""
    for f in journal["delete"]:
        Path(f).unlink(missing_ok=True)
    touched: set[Path] = set()
    for src, dst in journal["rename"]:
        s, d = Path(src), Path(dst)
        if s.exists():  # gone: renamed before the last interruption
            d.parent.mkdir(parents=True, exist_ok=True)
            os.replace(s, d)
            for hook in _after_rename:
                hook(d)
        touched.add(d.parent)
    for f in journal["rmdir"]:
        with contextlib.suppress(OSError):  # missing, or holds a published file
            Path(f).rmdir()
    for directory in touched:
        _fsync_dir(directory)


def recover(root: str | os.PathLike[str]) -> list[str]:
    """Finish what dead processes left under ``<root>/.staging``; returns what was done.

    A journal left by a dead process is replayed (its stage had succeeded and was being
    published); the staging folders of dead processes are removed (their stages never
    finished, so their outputs are dropped and the published ones stand).
    """
    base = Path(root) / STAGING_DIR
    done: list[str] = []
    if not base.is_dir():
        return done
    for journal in sorted(base.glob(f"*{_JOURNAL_SUFFIX}")):
        name = journal.name[: -len(_JOURNAL_SUFFIX)]
        if _staging_pid_alive(name):
            continue
        _apply(json.loads(journal.read_text()))
        shutil.rmtree(base / name, ignore_errors=True)
        journal.unlink()
        done.append(f"published the outputs of stage {name.rsplit('.', 1)[0]}")
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        if not _staging_pid_alive(folder.name):
            undone = _undo(folder)
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"dropped the unfinished outputs of stage {folder.name.rsplit('.', 1)[0]}")
            done.extend(undone)
    sweep_stale_temps(base)
    return done


def _staging_pid_alive(name: str) -> bool:
    pid = name.rsplit(".", 1)[-1]
    return pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid))


# --------------------------------------------------------------------------- hashing


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, as the running stage sees it (its staged version, if any)."""
    h = hashlib.sha256()
    with open(resolve(path), "rb") as fh:
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
    range), then marked in a boolean array when the packed range is small, or by
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
        seen = np.zeros(span, dtype=bool)  # one byte per possible key, not a count
        seen[packed] = True
        return int(np.count_nonzero(seen))
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
    rows: np.ndarray | None = None,
) -> pa.Table:
    """Read a Parquet file and check it against ``schema`` and the given rules.

    ``filters`` (a pyarrow expression) reads only matching rows, skipping row groups
    by their statistics; the rules then apply to those rows. ``rows`` (ascending
    positions in the file) reads only those rows, in that order, one row group at a
    time, so no more than one decoded row group is held besides the rows kept.

    Integer columns may be stored with any integer width, floats with any float width;
    values are cast to the declared types. Every failure raises :class:`DataError`
    naming the file, the column and the rule.
    """
    p = Path(path)
    wanted = list(columns) if columns is not None else schema.names
    table = _checked_columns(p, _open_checked(p, schema, wanted, filters, rows), schema, wanted)
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


def iter_row_groups(
    path: str | os.PathLike[str],
    schema: pa.Schema,
    *,
    non_negative: Iterable[str] = (),
    allowed: dict[str, Sequence[str]] | None = None,
    ranges: dict[str, tuple[float, float]] | None = None,
    columns: Sequence[str] | None = None,
) -> Iterator[pa.Table]:
    """The file's row groups one after the other, each checked as :func:`read_table`
    checks a file (rules that span rows, like unique keys, are left to the caller).

    One pass over the file holding one decoded row group at a time: for a caller that
    sorts the rows into several places, instead of one filtered read per place.
    """
    p = Path(path)
    wanted = list(columns) if columns is not None else schema.names
    with _checked_file(p, schema, wanted) as pf:
        n = pf.num_row_groups
        for g in range(n):
            try:
                group = pf.read_row_group(g, columns=wanted)
            except Exception as exc:  # noqa: BLE001 - corrupt pages raise several types; re-raised
                raise DataError(f"{p}: could not read data ({exc})") from exc
            try:
                group = _checked_columns(p, group, schema, wanted)
                _check_rules(p, group, wanted, non_negative, allowed or {}, ranges or {})
            except DataError as exc:  # its counts are this row group's
                raise DataError(f"{exc} (in row group {g + 1} of {n})") from exc
            yield group


def _open_checked(
    p: Path, schema: pa.Schema, wanted: list[str], filters: Any, rows: np.ndarray | None = None
) -> pa.Table:
    """The wanted columns of a readable Parquet file whose column kinds match ``schema``."""
    if rows is not None and filters is not None:
        raise ValueError("read_table: give row positions or a filter, not both")
    src = resolve(p)
    with _checked_file(p, schema, wanted) as pf:
        try:
            if rows is not None:
                return _read_positions(p, pf, wanted, rows)
            return (
                pf.read(columns=wanted)
                if filters is None
                else pq.read_table(src, columns=wanted, filters=filters)
            )
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt pages raise several types; re-raised
            raise DataError(f"{p}: could not read data ({exc})") from exc


def _checked_file(p: Path, schema: pa.Schema, wanted: list[str]) -> pq.ParquetFile:
    """A readable Parquet file that has the wanted columns, of the kinds ``schema`` says."""
    src = resolve(p)  # messages name the final path; the data may still be staged
    if not src.exists():
        raise DataError(f"{p}: file not found (run the stage that writes it first)")
    if src.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")
    try:
        pf = pq.ParquetFile(src)
        file_schema = pf.schema_arrow
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt files; re-raised
        raise DataError(f"{p}: not a readable Parquet file ({exc})") from exc
    for name in wanted:
        problem = None
        if name not in file_schema.names:
            problem = f"column '{name}' is missing (expected columns: {', '.join(schema.names)})"
        else:
            want, got = schema.field(name).type, file_schema.field(name).type
            if _kind(want) != _kind(got):
                problem = f"column '{name}' has type {got}, expected {_kind(want)} ({want})"
        if problem is not None:
            pf.close()
            raise DataError(f"{p}: {problem}")
    return pf


def _read_positions(p: Path, pf: pq.ParquetFile, wanted: list[str], rows: np.ndarray) -> pa.Table:
    """Rows at ascending positions ``rows``, read one row group after the other."""
    rows = np.asarray(rows, dtype=np.int64)
    n_rows = pf.metadata.num_rows
    if len(rows) and (rows[0] < 0 or rows[-1] >= n_rows or (np.diff(rows) <= 0).any()):
        raise DataError(f"{p}: row positions must be distinct, ascending and below {n_rows}")
    pieces = []
    start = 0
    for g in range(pf.num_row_groups):
        size = pf.metadata.row_group(g).num_rows
        a, b = np.searchsorted(rows, [start, start + size])
        if b > a:
            group = pf.read_row_group(g, columns=wanted)
            pieces.append(group.take(pa.array(rows[a:b] - start)))
            del group
        start += size
    if not pieces:
        return pf.schema_arrow.empty_table().select(wanted)
    return pa.concat_tables(pieces)


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
