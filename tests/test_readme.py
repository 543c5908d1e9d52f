"""Every command the README and ``docs/*.md`` show runs, at a small size, in reading order.

The commands are read from the ``bash`` blocks of the README and then of each page under
``docs/`` (in the order the README links them), so a new example is picked up by itself: it either runs here
(through ``make``, exactly as written, plus overrides that shrink the world and keep every
output under a temporary root) or is listed in :data:`ELSEWHERE` with the test that
exercises it. An example that is neither fails. The README stays a README: at most
:data:`README_MAX_CHARS` characters, the rest lives in ``docs/``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import TINY

from pipeline.base.config import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
#: The README's size limit, in characters.
README_MAX_CHARS = 12_000
#: The README's heading of the list of ``docs/`` pages, in reading order.
FURTHER = "## Further reading"

#: Examples run by another test (servers, the suite itself), or written as a template.
ELSEWHERE = {
    "make test": "the suite itself (CI runs it through .ci/run)",
    "curl -s 127.0.0.1:5001/invocations": "tests/test_serving.py posts to a real `mlflow models serve`",
    'make run ARGS="data=table data.path=FILE': "a template; `make german` below runs it on a real table",
    'make compare RUNS="<run id>': "a template; tests/test_tracking.py compares two real runs",
    "make serve DATASET=": "a server that runs until stopped; tests/test_serving.py serves a "
    "registered champion with `mlflow models serve` and posts to it",
}
#: Extra overrides per example (on top of the small world and the temporary root).
SHRINK = {
    "make bench": ["bench.n_borrowers=2000", "bench.rows=[generate,features]"],
    "hydra/launcher=joblib": ["hydra.launcher.n_jobs=2", "model.n_estimators=40"],
}


def pages() -> list[Path]:
    """The README, then the pages of ``docs/`` in the order its "Further reading" lists them.

    A page the list does not name comes last (and fails
    :func:`test_the_readme_links_to_every_page_of_docs`).
    """
    text = README.read_text(encoding="utf-8")
    listing = text.split(f"\n{FURTHER}\n", 1)[-1]
    linked = re.findall(r"\]\(docs/([\w.-]+\.md)\)", listing)
    order = list(dict.fromkeys(DOCS / name for name in linked))
    return [README, *order, *(p for p in sorted(DOCS.glob("*.md")) if p not in order)]


def page_commands(page: Path) -> list[str]:
    """A page's shell examples, one per command, comments and continuations folded."""
    out: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            cmd = re.sub(r"\s+#.*$", "", line).strip()
            if cmd:
                out.append(cmd)
    return out


def readme_commands() -> list[str]:
    """The shell examples of the README and of ``docs/*.md``, in reading order."""
    return [cmd for page in pages() for cmd in page_commands(page)]


def explained_borrower() -> int:
    """The borrower id of the single-borrower ``make explain`` example."""
    ids = [
        int(m.group(1))
        for cmd in readme_commands()
        if cmd.startswith("make explain")
        for m in [re.search(r"explain\.borrower_id=(\d+)", cmd)]
        if m
    ]
    assert len(ids) == 1, f"expected one single-borrower explain example, found {ids}"
    return ids[0]


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


def test_the_readme_is_at_most_12000_characters() -> None:
    n = len(README.read_text(encoding="utf-8"))
    assert n <= README_MAX_CHARS, (
        f"README.md has {n:,} characters, over the limit of {README_MAX_CHARS:,}: "
        "move the detail into docs/ and link it"
    )


def test_the_readme_links_to_every_page_of_docs() -> None:
    text = README.read_text(encoding="utf-8")
    assert f"\n{FURTHER}\n" in text, f"README.md has no '{FURTHER}' section"
    listing = text.split(f"\n{FURTHER}\n", 1)[1]
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if f"(docs/{p.name})" not in listing]
    assert not missing, f"README.md's '{FURTHER}' does not link to docs/{missing}"


def test_the_docs_examples_are_collected() -> None:
    # pages with examples of their own: the README and the pages the examples moved to
    for name in ("modelling.md", "scoring-serving.md", "operations.md", "benchmark.md"):
        assert page_commands(DOCS / name), f"docs/{name} has no bash example"
    readme = page_commands(README)
    assert readme[:2] == ["make run", "make test"]
    assert readme_commands()[: len(readme)] == readme


def test_every_example_is_run_here_or_named_elsewhere() -> None:
    commands = readme_commands()
    assert len(commands) >= 10
    for cmd in commands:
        if _elsewhere(cmd) is None:
            _argv(cmd, Path("/tmp/x"))  # raises for an example this test cannot run


@pytest.mark.slow
def test_the_readme_examples_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ran: list[str] = []
    for cmd in readme_commands():
        if _elsewhere(cmd) is not None or cmd in ran:  # a command shown twice runs once
            continue
        argv = _argv(cmd, tmp_path)
        proc = subprocess.run(
            argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, f"README example failed: {cmd}\n{proc.stderr[-3000:]}"
        if cmd.startswith("make explain"):  # checked at once: a later training removes it
            _check_story(tmp_path, explained_borrower())
        ran.append(cmd)
    assert any(c.startswith("make run") for c in ran)
    assert any(c.startswith("make explain") for c in ran)
    assert any(c.startswith("make score") and "score.borrower_id=" in c for c in ran)
    assert (tmp_path / "models" / "scores_raw.parquet").exists()


def _check_story(root: Path, bid: int) -> None:
    """The one-borrower report exists and tells the borrower's out-of-time row."""
    story = json.loads((root / "models" / f"borrower_{bid}.json").read_text())
    assert story["borrower_id"] == bid
    row = pq.read_table(
        root / "data" / "processed" / "features.parquet",
        columns=["split"],
        filters=[("borrower_id", "=", bid), ("snapshot", "=", story["snapshot"])],
    )
    assert row.column("split").to_pylist() == ["oot"]


@pytest.mark.slow
def test_the_explained_borrower_has_an_out_of_time_row_on_the_default_world(
    tmp_path: Path,
) -> None:
    """The single-borrower example works on the world ``make run`` builds, not only here.

    ``make explain`` with ``explain.borrower_id`` and no snapshot explains the borrower's
    latest out-of-time row, and refuses a borrower that has none; the default world
    (what the README's ``make run`` builds) is generated and its feature table checked.
    """
    bid = explained_borrower()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for stage in ("generate", "features"):
        argv = [sys.executable, "-m", "pipeline", stage, f"paths.root={tmp_path}", "tracking=off"]
        proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pq.read_table(
        tmp_path / "data" / "processed" / "features.parquet",
        columns=["borrower_id", "split"],
        filters=[("borrower_id", "=", bid)],
    ).to_pandas()
    assert len(rows) > 0, f"borrower {bid} has no row on the default world"
    assert (rows.split == "oot").any(), (
        f"borrower {bid} has no out-of-time row on the default world (splits: "
        f'{sorted(set(rows.split))}): `make explain ARGS="explain.borrower_id={bid}"` fails'
    )
