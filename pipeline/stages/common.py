"""Shared helpers of the stage runners: the stage record, staging, manifests, model stamps,
printing."""

from __future__ import annotations

import ctypes
import gc
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.adapters.catalog import ENTRIES
from pipeline.adapters.tracking import Tracker
from pipeline.base.io import DataError, digest_of, file_digest, resolve, staging, write_json


def say(msg: str) -> None:
    print(msg, flush=True)


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, declared once: the driver, the command line and the
    staging of outputs read these records (``make help`` repeats ``doc``, checked by a
    test).

    ``reads`` and ``writes`` are catalog names; ``side`` names what the stage writes
    beside its outputs that nothing else in a multirun job reads (staged with them, but
    left where the sweep's root puts it). ``groups`` are the config groups whose values
    are logged as the stage's parameters. ``in_run``: a step of ``run``; ``single``: run
    on a parent run of its own when asked for by name.
    """

    name: str
    run: Callable[[Any, Tracker], Any]
    doc: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    side: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    simulator_only: bool = False
    model_derived: bool = False
    in_run: bool = True
    single: bool = False
    aliases: tuple[str, ...] = ()

    def folders(self, side: bool = True) -> tuple[str, ...]:
        """The folders (``paths`` keys) the stage writes, in catalog order."""
        names = (*self.writes, *(self.side if side else ()))
        used = {ENTRIES[n].folder for n in names}
        return tuple(f"{f}_dir" for f in ("raw", "truth", "processed", "models") if f in used)


@dataclass(frozen=True)
class Result:
    """What a stage hands back to the driver; ``summary`` is its part of the run summary."""

    summary: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    mlflow_run_id: str | None = None  # the parent run of a single-stage invocation


@contextmanager
def publishing(cfg: Any, name: str, folders: tuple[str, ...]) -> Iterator[None]:
    """Run the block as ``name`` (a stage, or the run's summary): what it writes under
    ``folders`` (``paths`` keys) is staged and published together when it succeeds; a
    failure or a kill leaves the published outputs as they were."""
    keys = dict.fromkeys(folders)
    with staging(str(cfg.paths.root), [str(cfg.paths[key]) for key in keys], name):
        yield


def _manifest_path(out_dir: Path, stage: str) -> Path:
    return out_dir / f"_{stage}.manifest.json"


def up_to_date(out_dir: Path, stage: str, key: dict[str, Any], outputs: list[Path]) -> bool:
    mp = _manifest_path(out_dir, stage)
    if not resolve(mp).exists() or not all(resolve(p).exists() for p in outputs):
        return False
    try:
        saved = json.loads(resolve(mp).read_text())
    except (OSError, ValueError):
        return False
    if saved.get("key") != digest_of(key):
        return False
    return all(saved.get("outputs", {}).get(p.name) == file_digest(p) for p in outputs)


def write_manifest(
    out_dir: Path,
    stage: str,
    key: dict[str, Any],
    outputs: list[Path],
    made_from: str | None = None,
) -> None:
    """Record the stage's key and output digests; ``made_from`` names its input's identity
    (the features stage records the world it was built from)."""
    manifest: dict[str, Any] = {
        "key": digest_of(key),
        "outputs": {p.name: file_digest(p) for p in outputs},
    }
    if made_from is not None:
        manifest["made_from"] = made_from
    write_json(manifest, _manifest_path(out_dir, stage))


def inputs_digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: file_digest(p) for p in paths if resolve(p).exists()}


#: The key under which a model-derived JSON output names the model it was derived from.
STAMP_KEY = "model_stamp"


def model_stamp(models_dir: Path) -> str:
    """The identity of the model under ``models_dir``: the digest of its ``model.txt``.

    Every output derived from the model (explanations, policy tables, summary parts, the
    report) carries it, so that a reader can tell an output of this model from a stale
    one left by another model or another run.
    """
    path = models_dir / ENTRIES["model"].relpath
    if not resolve(path).exists():
        raise DataError(f"{path}: file not found (run `make train` first)")
    return file_digest(path)


def stamped(obj: dict[str, Any], stamp: str) -> dict[str, Any]:
    """``obj`` with the model stamp added (for a JSON output about to be written)."""
    return {STAMP_KEY: stamp, **{k: v for k, v in obj.items() if k != STAMP_KEY}}


def stamp_of(path: Path) -> str | None:
    """The model stamp a JSON output carries; None when it carries none."""
    try:
        obj = json.loads(resolve(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from exc
    value = obj.get(STAMP_KEY) if isinstance(obj, dict) else None
    return str(value) if value is not None else None


def check_stamp(path: Path, stamp: str) -> None:
    """Refuse ``path`` unless it was derived from the model whose stamp is ``stamp``.

    ``path`` is a JSON output (a summary part, ``fidelity.json``, a stage manifest) that
    carries the stamp; an output without one is refused too, since nothing shows which
    model it belongs to.
    """
    found = stamp_of(path)
    if found == stamp:
        return
    what = "carries no model stamp" if found is None else f"was derived from model {found[:12]}"
    raise DataError(
        f"{path}: {what}, but the current model is {stamp[:12]} (digest of "
        f"{ENTRIES['model'].relpath}); "
        "it belongs to another model or run: rerun the stage that writes it (or the whole "
        "`make run`)"
    )


def release_memory() -> None:
    """Hand memory freed by a finished stage back to the system.

    Between the stages of one ``run`` the big tables of the last stage are garbage;
    collecting them, emptying Arrow's pool and trimming the C heap keeps the next
    stage from stacking its peak on top of the last one's.
    """
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass
