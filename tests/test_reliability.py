"""Resumable, atomic stages: kills mid-write leave old or new files, never broken ones;
unchanged stages are skipped; ``force=true`` recomputes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import SMALL

from pipeline.adapters.tracking import from_config
from pipeline.base.config import REPO_ROOT
from pipeline.base.io import file_digest
from pipeline.stages.driver import run_pipeline

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

    cmd = [
        sys.executable, "-m", "pipeline", "generate", f"paths.root={root}",
        *SMALL, *OFF, "data.seed=2",
    ]  # fmt: skip
    rng = random.Random(7)
    for attempt in range(4):
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            if attempt % 2 == 0:
                # wait until the stage is writing, then kill it a moment later
                deadline = time.monotonic() + 120
                while proc.poll() is None and time.monotonic() < deadline:
                    if any(_is_temp(p) for p in (root / "data").rglob("*")):
                        break
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.4))
            else:
                time.sleep(rng.uniform(1.0, 10.0))
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        now = _snapshot(root / "data")
        for name, digest in now.items():
            assert digest in (old.get(name), new.get(name)), f"attempt {attempt}: {name} is broken"
        for name in now:
            if name.endswith(".parquet"):
                pq.read_table(root / "data" / name)  # complete and readable

    # a rerun completes: the stage's outputs are the new ones, no temporary files are left
    _stage(make_cfg(*OFF, "data.seed=2", root=root), "generate")
    final = _snapshot(root / "data")
    assert set(final) == set(new)
    for name, digest in final.items():
        if name.endswith(".parquet") or name.endswith(".manifest.json"):
            assert digest == new[name], name
        else:  # the data card is not a recorded output: it may still be the previous one
            assert digest in (old[name], new[name]), name
    assert not [p for p in (root / "data").rglob("*") if _is_temp(p)]


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
