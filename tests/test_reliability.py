"""Resumable, atomic stages: kills mid-write leave old or new files, never broken ones;
unchanged stages are skipped; ``force=true`` recomputes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import SMALL, TINY

from pipeline.adapters.tracking import from_config
from pipeline.base.config import REPO_ROOT
from pipeline.base.io import STAGING_DIR, file_digest
from pipeline.base.registry import FEATURE_NAMES
from pipeline.core import features as feat_core
from pipeline.stages import features as features_stage
from pipeline.stages.driver import execute, run_pipeline

OFF = ["tracking=off", "model.n_estimators=20", "model.num_threads=1"]


def _snapshot(root: Path) -> dict[str, str]:
    """Digest of every finished file under ``root`` (temporary files excluded)."""
    return {
        str(p.relative_to(root)): file_digest(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not _is_temp(p)
    }


def _is_temp(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".tmp")


def _mtimes(paths: list[Path]) -> list[int]:
    return [p.stat().st_mtime_ns for p in paths]


def _stage(cfg, *stages: str) -> dict:
    return run_pipeline(cfg, from_config(cfg.tracking), list(stages))


# --------------------------------------------------------------------------- kills

# Runs the CLI in a child process with one hook: at the chosen call of ``where`` (a write
# into the generator's streaming sink, or the rename of a temporary file over a final
# Parquet file), it records the temporary file and the final name in the signal file and
# sleeps, so the test can see the half-done write for itself and then kill the process.
# The signal file appears whole (written aside, then renamed with os.rename, which the
# hook leaves alone), so the test reads it as soon as it exists.
PAUSING_CLI = """
import json, os, sys, time
from pathlib import Path
from pipeline.base import io
signal_file, where, nth = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
calls = 0
def pause(tmp, final):
    part = signal_file.with_name(signal_file.name + ".part")
    part.write_text(json.dumps({"tmp": str(tmp), "final": str(final)}))
    os.rename(part, signal_file)
    time.sleep(600)
def counted(tmp, final):
    global calls
    calls += 1
    if calls == nth:
        pause(tmp, final)
if where == "write":
    real_write = io.ParquetSink.write
    def write(self, name, table):
        real_write(self, name, table)
        counted(self._tmp[name], self.paths[name])
    io.ParquetSink.write = write
else:
    real_replace = os.replace
    def replace(src, dst):
        if str(src).endswith(".tmp") and str(dst).endswith(".parquet"):
            counted(src, dst)
        real_replace(src, dst)
    os.replace = replace
sys.argv = ["pipeline", *sys.argv[4:]]
from pipeline.__main__ import main
main()
"""


def _published_name(root: Path, path: Path) -> str:
    """``path`` relative to ``root/data``; a staged copy names the file it will replace.

    The generate stage stages ``raw`` (folder 0) and ``truth`` (folder 1) under
    ``root/.staging/generate.<pid>/<folder>/``.
    """
    if STAGING_DIR in path.parts:
        parts = path.relative_to(root / STAGING_DIR).parts
        return str(Path(("raw", "truth")[int(parts[1])], *parts[2:]))
    return str(path.relative_to(root / "data"))


def _pause_and_kill(root: Path, args: list[str], where: str, nth: int, old: dict) -> Path:
    """Run ``args`` until the hook pauses it mid-write, check the moment, SIGKILL it.

    Returns the temporary file the killed process was writing.
    """
    signal_file = root.parent / f"paused-{where}-{nth}.json"
    signal_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", PAUSING_CLI, str(signal_file), where, str(nth), *args]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not signal_file.exists() and proc.poll() is None:
            assert time.monotonic() < deadline, f"{where} #{nth}: the hook never paused"
            time.sleep(0.01)
        assert proc.poll() is None, (
            f"{where} #{nth}: exited without pausing: {proc.stderr.read().decode()[-2000:]}"
        )
        paused = json.loads(signal_file.read_text())
        tmp, final = Path(paused["tmp"]), Path(paused["final"])
        # the moment of the kill: the temporary file exists, the final name is untouched
        assert _is_temp(tmp) and tmp.exists(), paused
        rel = _published_name(root, final)
        published = root / "data" / rel
        assert file_digest(published) == old[rel], f"{rel} was replaced before the kill"
        if where == "write":  # still streaming: the temporary file has no footer yet
            with pytest.raises(pa.ArrowInvalid):
                pq.read_table(tmp)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert tmp.exists()  # killed before it could rename or clean up
    return tmp


@pytest.mark.slow
def test_killed_generate_leaves_old_or_new_files_and_rerun_completes(make_cfg, tmp_path):
    root, ref = tmp_path / "work", tmp_path / "ref"
    # the old outputs (seed 1) and, elsewhere, the complete new ones (seed 2)
    _stage(make_cfg(*OFF, "data.seed=1", root=root), "generate")
    _stage(make_cfg(*OFF, "data.seed=2", root=ref), "generate")
    old, new = _snapshot(root / "data"), _snapshot(ref / "data")
    assert (
        set(old) == set(new)
        and old["raw/account_months.parquet"] != new["raw/account_months.parquet"]
    )

    args = ["generate", f"paths.root={root}", *SMALL, *OFF, "data.seed=2"]
    # killed while streaming a table (second chunk), before the first rename, and between
    # renames (the first three tables already renamed into the stage's staging folder):
    # the published files are all the old ones, never a mix, since the stage publishes
    # its outputs together only once all of them are written
    left = []
    for where, nth in (("write", 15), ("rename", 1), ("rename", 4)):
        left.append(_pause_and_kill(root, args, where, nth, old))
        now = _snapshot(root / "data")
        assert set(now) == set(old)
        for name, digest in now.items():
            assert digest in (old[name], new[name]), f"{where} #{nth}: {name} is broken"
            if name.endswith(".parquet"):
                pq.read_table(root / "data" / name)  # complete and readable
        renamed = [n for n in now if now[n] == new[n] != old[n]]
        kept = [n for n in now if now[n] == old[n] != new[n]]
        assert renamed == [], f"{where} #{nth}: published before the stage ended: {renamed}"
        assert kept

    # a rerun completes: the stage's outputs are the new ones, the killed runs' temporary
    # files are swept, and none is left
    # (through the entry point, which settles what killed runs left under the root lock)
    execute(make_cfg(*OFF, "data.seed=2", "stage=generate", root=root), [])
    assert not any(t.exists() for t in left)
    final = _snapshot(root / "data")
    assert set(final) == set(new)
    for name, digest in final.items():
        if name.endswith(".parquet") or name.endswith(".manifest.json"):
            assert digest == new[name], name
        else:  # the data card is not a recorded output: it may still be the previous one
            assert digest in (old[name], new[name]), name
    assert not [p for p in (root / "data").rglob("*") if _is_temp(p)]
    assert not list((root / STAGING_DIR).glob("*"))  # the dead runs' staging is gone


# --------------------------------------------------------------------------- skips


def test_unchanged_stages_are_skipped_and_force_recomputes(make_cfg, tmp_path, capsys):
    cfg = make_cfg(*OFF)
    _stage(cfg, "generate", "features")
    raw = sorted((tmp_path / "data" / "raw").glob("*.parquet"))
    feats = [tmp_path / "data" / "processed" / n for n in ("features.parquet", "stability.csv")]
    before = _snapshot(tmp_path / "data")
    t_raw, t_feat = _mtimes(raw), _mtimes(feats)
    capsys.readouterr()

    _stage(cfg, "generate", "features")
    out = capsys.readouterr().out
    assert "generate: inputs and config unchanged" in out
    assert "features: inputs and config unchanged" in out
    assert "force=true" in out
    assert _mtimes(raw) == t_raw and _mtimes(feats) == t_feat

    forced = make_cfg(*OFF, "force=true")
    _stage(forced, "generate", "features")
    out = capsys.readouterr().out
    assert "inputs and config unchanged" not in out
    assert _mtimes(raw) != t_raw and _mtimes(feats) != t_feat  # rewritten...
    assert _snapshot(tmp_path / "data") == before  # ...to the same bytes


def test_changed_config_or_inputs_or_damaged_outputs_recompute(make_cfg, tmp_path, capsys):
    _stage(make_cfg(*OFF), "generate", "features")
    feat = tmp_path / "data" / "processed" / "features.parquet"
    capsys.readouterr()

    # a features-only config change: generate skipped, features recomputed
    _stage(make_cfg(*OFF, "features.fund_days=5"), "generate", "features")
    out = capsys.readouterr().out
    assert "generate: inputs and config unchanged" in out
    assert "features: inputs and config unchanged" not in out

    # a different raw input (new seed) makes features recompute as well
    digest = file_digest(feat)
    _stage(make_cfg(*OFF, "features.fund_days=5", "data.seed=9"), "generate", "features")
    out = capsys.readouterr().out
    assert "inputs and config unchanged" not in out and file_digest(feat) != digest

    # an output damaged behind the stage's back is detected by its recorded digest
    digest = file_digest(feat)
    feat.write_bytes(feat.read_bytes()[:100])
    manifest = tmp_path / "data" / "processed" / "_features.manifest.json"
    assert json.loads(manifest.read_text())["outputs"]["features.parquet"] != file_digest(feat)
    _stage(make_cfg(*OFF, "features.fund_days=5", "data.seed=9"), "features")
    assert "inputs and config unchanged" not in capsys.readouterr().out
    pq.read_table(feat)
    assert file_digest(feat) == digest  # rebuilt, bit for bit

    # an unreadable manifest means "not up to date", not a crash
    manifest.write_text("{not json")
    _stage(make_cfg(*OFF, "features.fund_days=5", "data.seed=9"), "features")
    assert "inputs and config unchanged" not in capsys.readouterr().out
    json.loads(manifest.read_text())


def test_a_changed_feature_list_or_kernel_code_recomputes_features(
    make_cfg, tmp_path, capsys, monkeypatch
):
    cfg = make_cfg(*OFF, *TINY)
    _stage(cfg, "generate", "features")
    kept = "features: inputs and config unchanged"
    _stage(cfg, "features")
    assert kept in capsys.readouterr().out

    # the registry lost a feature: the old table (with it) is not kept
    monkeypatch.setattr(features_stage, "FEATURE_NAMES", FEATURE_NAMES[:-1])
    _stage(cfg, "features")
    assert kept not in capsys.readouterr().out
    _stage(cfg, "features")
    assert kept in capsys.readouterr().out

    # back to the full list: rebuilt again, not kept from the shorter one
    monkeypatch.setattr(features_stage, "FEATURE_NAMES", FEATURE_NAMES)
    _stage(cfg, "features")
    assert kept not in capsys.readouterr().out

    # the same features, computed by edited code
    monkeypatch.setattr(feat_core, "kernel_version", lambda: "edited")
    _stage(cfg, "features")
    assert kept not in capsys.readouterr().out
