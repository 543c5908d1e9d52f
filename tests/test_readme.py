"""Every command the README shows runs, at a small size, in the order a reader meets them.

The commands are read from the README's ``bash`` blocks, so a new example is picked up
by itself: it either runs here (through ``make``, exactly as written, plus overrides
that shrink the world and keep every output under a temporary root) or is listed in
:data:`ELSEWHERE` with the test that exercises it. An example that is neither fails.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY

from pipeline.base.config import REPO_ROOT

README = REPO_ROOT / "README.md"

#: Examples run by another test (servers, the suite itself), or written as a template.
ELSEWHERE = {
    "make test": "the suite itself (CI runs it through .ci/run)",
    "curl -s 127.0.0.1:5001/invocations": "tests/test_serving.py posts to a real `mlflow models serve`",
    'make run ARGS="data=table data.path=FILE': "a template; `make german` below runs it on a real table",
    'make compare RUNS="<run id>': "a template; tests/test_tracking.py compares two real runs",
}
#: Extra overrides per example (on top of the small world and the temporary root).
SHRINK = {
    "make bench": ["bench.n_borrowers=2000", "bench.rows=[generate,features]"],
    "hydra/launcher=joblib": ["hydra.launcher.n_jobs=2", "model.n_estimators=40"],
}


def readme_commands() -> list[str]:
    """The README's shell examples, one per command, comments and continuations folded."""
    out: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            cmd = re.sub(r"\s+#.*$", "", line).strip()
            if cmd:
                out.append(cmd)
    return out


def _elsewhere(cmd: str) -> str | None:
    return next((why for start, why in ELSEWHERE.items() if cmd.startswith(start)), None)


def _argv(cmd: str, root: Path) -> list[str]:
    """The example as an argv, with the small world, the root and a local store added."""
    extra = [
        *TINY,
        "explain.world_rows=20",
        "explain.world_futures=8",
        f"paths.root={root}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        f"tracking.artifact_root={root / 'mlartifacts'}",
    ]
    extra += [o for key, more in SHRINK.items() if key in cmd for o in more]
    words = shlex.split(cmd)
    if words[0] == "make":
        if words[1] == "german":  # a table model: its own root, the simulator world stays
            extra = [e.replace(str(root), str(root / "table")) for e in extra]
        args = [w for w in words[1:] if not w.startswith("ARGS=")]
        given = next((w[len("ARGS=") :] for w in words if w.startswith("ARGS=")), "")
        # paths in the examples are relative to the repository: point them at the root
        given = re.sub(r"=(data|models)/", rf"={root}/\1/", given)
        if words[1] == "bench":  # the bench takes its own size, not the world's
            extra = [e for e in extra if not e.startswith(("data.", "simulator.", "model."))]
        joined = " ".join([given, *extra]).strip()
        # STAMP= skips the virtual-environment check: the tests run inside it already
        return ["make", "--no-print-directory", *args, f"ARGS={joined}", "STAMP="]
    if words[0].endswith("python") and words[1:3] == ["-m", "pipeline"]:
        return [sys.executable, *words[1:], *extra]
    raise AssertionError(f"README example not understood: {cmd}")


def test_every_example_is_run_here_or_named_elsewhere() -> None:
    commands = readme_commands()
    assert len(commands) >= 10
    for cmd in commands:
        if _elsewhere(cmd) is None:
            _argv(cmd, Path("/tmp/x"))  # raises for an example this test cannot run


@pytest.mark.slow
def test_the_readme_examples_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ran = []
    for cmd in readme_commands():
        if _elsewhere(cmd) is not None:
            continue
        argv = _argv(cmd, tmp_path)
        proc = subprocess.run(
            argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, f"README example failed: {cmd}\n{proc.stderr[-3000:]}"
        ran.append(cmd)
    assert any(c.startswith("make run") for c in ran)
    assert any("score.borrower_id=123" in c for c in ran)
    assert (tmp_path / "models" / "scores_raw.parquet").exists()
    assert (tmp_path / "models" / "borrower_123.json").exists()
