"""Shared helpers of the stage runners: paths, manifests, printing."""

from __future__ import annotations

import ctypes
import gc
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.base.io import (
    DataError,
    OutputPath,
    digest_of,
    file_digest,
    remove_paths,
    resolve,
    staged_glob,
    staging,
    write_json,
)


def say(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class Paths:
    raw: Path
    truth: Path
    processed: Path
    models: Path

    @classmethod
    def of(cls, cfg: Any) -> Paths:
        """The four folders; reads through them see the running stage's staged outputs."""
        return cls(
            OutputPath(cfg.paths.raw_dir),
            OutputPath(cfg.paths.truth_dir),
            OutputPath(cfg.paths.processed_dir),
            OutputPath(cfg.paths.models_dir),
        )


#: The folders (``paths`` keys) each stage writes; a multirun job's copies of these
#: follow its own root, the others it only reads.
WRITES: dict[str, tuple[str, ...]] = {
    "generate": ("raw_dir", "truth_dir"),
    "features": ("processed_dir",),
    "train": ("models_dir",),
    "explain": ("models_dir",),
    "policy": ("models_dir",),
    "report": ("models_dir",),
}
#: What each stage's staging covers: what it writes, plus the feature table a train
#: stage builds from a user's table (read by nothing else in a multirun job).
_STAGED = {
    **WRITES,
    "train": ("models_dir", "processed_dir"),
    "score": ("models_dir",),
    "summary": ("models_dir",),
}


@contextmanager
def publishing(cfg: Any, stage: str, also: tuple[str, ...] = ()) -> Iterator[None]:
    """Run the block as ``stage``: its outputs are staged and published together when it
    succeeds; a failure or a kill leaves the published outputs as they were. ``also``
    names more folders (``paths`` keys) the block writes."""
    keys = dict.fromkeys((*_STAGED.get(stage, ()), *also))
    folders = [str(cfg.paths[key]) for key in keys]
    with staging(str(cfg.paths.root), folders, stage):
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


#: What the explain stage writes under ``models/`` (global views; borrower stories apart).
EXPLAIN_PARTS = (
    "reasons.parquet",
    "advice.parquet",
    "fidelity.json",
    "fidelity_confusion.csv",
    "shap_importance.json",
    "cause_importance.json",
    "summary_parts/explain.json",
    "plots/shap_*.png",
    "plots/dependence_*.png",
    "plots/cause_importance.png",
    "plots/fidelity_confusion.png",
)
STORY_PARTS = ("plots/waterfall_*.png", "borrower_*.json")
POLICY_PARTS = ("policy", "summary_parts/policy.json")
REPORT_PARTS = ("report.html",)
#: Everything derived from a model: a newly trained model makes all of it stale.
MODEL_DERIVED = (*EXPLAIN_PARTS, *STORY_PARTS, *POLICY_PARTS, *REPORT_PARTS)


#: The key under which a model-derived JSON output names the model it was derived from.
STAMP_KEY = "model_stamp"


def model_stamp(models_dir: Path) -> str:
    """The identity of the model under ``models_dir``: the digest of its ``model.txt``.

    Every output derived from the model (explanations, policy tables, summary parts, the
    report) carries it, so that a reader can tell an output of this model from a stale
    one left by another model or another run.
    """
    path = models_dir / "model.txt"
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
        f"{path}: {what}, but the current model is {stamp[:12]} (digest of model.txt); "
        "it belongs to another model or run: rerun the stage that writes it (or the whole "
        "`make run`)"
    )


def remove_parts(models: Path, patterns: Iterable[str]) -> None:
    """Delete the outputs matching ``patterns`` (globs relative to ``models``).

    Called by a stage just before it writes a new version of what these outputs were
    derived from, so that no later reader (the report above all) mixes outputs of two
    different models or runs. Inside a stage the deletions wait for its publication:
    until then the published outputs stay, and the stage no longer sees them.
    """
    for pattern in patterns:
        remove_paths(staged_glob(models, pattern))


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
