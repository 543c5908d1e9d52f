"""Faults end in one clear line, never a traceback: the hostile cases of the fault surface.

Each case once printed a Python traceback: ``paths.root`` naming an existing file, a Dask
address that is malformed or does not answer within ``engine.connect_timeout_s``, and a
folder that refuses writes in the middle of a run.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.base.config import REPO_ROOT

# runs the command line with the driver replaced by one that hits a read-only file
_READ_ONLY_CLI = """
import sys
import pipeline.__main__ as cli
from pipeline.stages import driver
def refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied", "/data/models/model.txt")
driver.execute = refuse  # the command line imports it from the driver once the line is checked
sys.argv = ["pipeline", *sys.argv[1:]]
cli.main()
"""


def _run(args: list[str], code: str | None = None) -> subprocess.CompletedProcess[str]:
    head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "pipeline"]
    return subprocess.run(
        [*head, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def _one_clear_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out and "HYDRA_FULL_ERROR" not in out, out[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("below", ["", "/sub"])
def test_a_root_that_is_a_file_is_refused(tmp_path, below):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    proc = _run(["generate", f"paths.root={afile}{below}", "tracking=off"])
    _one_clear_line(proc, "paths.root", str(afile), "file")


@pytest.mark.parametrize("value", ["''", '""', " "])
def test_an_empty_root_is_refused_before_anything_is_written(value):
    """``paths.root=''`` once wrote data/ and models/ under the filesystem's root."""
    proc = _run(["generate", f"paths.root={value}", "tracking=off"])
    _one_clear_line(proc, "paths.root", "empty")


def test_a_write_refused_mid_run_names_the_file(tmp_path):
    proc = _run(["generate", f"paths.root={tmp_path}", "tracking=off"], _READ_ONLY_CLI)
    _one_clear_line(proc, "/data/models/model.txt", "Permission denied")
    # the traceback is kept, in the invocation's log file
    logs = list((tmp_path / "outputs").rglob("pipeline.log"))
    assert len(logs) == 1 and "PermissionError" in logs[0].read_text()


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("tcp://127.0.0.1:1", ("no Dask scheduler answered within 2 s", "connect_timeout_s")),
        ("garbage://nowhere", ("is not a scheduler address",)),
        ("tcp://user:sekrit@127.0.0.1:1", ("user:***@",)),
    ],
)
def test_a_dask_address_that_fails_is_one_clear_line(tmp_path, address, words):
    args = ["generate", "engine=dask", f"engine.address={address}"]
    args += ["engine.connect_timeout_s=2", f"paths.root={tmp_path}", "tracking=off"]
    args += ["data.n_borrowers=300"]
    line = _one_clear_line(_run(args), "engine.address", *words)
    assert "sekrit" not in line


def test_a_model_file_cut_short_or_damaged_is_refused_before_lightgbm_reads_it(tmp_path):
    """LightGBM aborts the whole process (C++ terminate, exit 134) on a model text cut
    inside its trees; the file is checked first and refused with its name and why."""
    import lightgbm as lgb
    import numpy as np

    from pipeline.adapters import catalog
    from pipeline.base.io import DataError

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4))
    y = (X[:, 0] + rng.normal(size=500) > 0).astype(int)
    text = lgb.train(
        {"objective": "binary", "verbose": -1}, lgb.Dataset(X, label=y), num_boost_round=20
    ).model_to_string()
    path = tmp_path / "model.txt"
    path.write_text(text)
    assert catalog.load_booster(path).num_trees() == 20  # a whole file loads
    for damaged, why in [
        (text[:3000], "cut short"),
        (text[: text.index("end of trees")], "cut short"),
        (text.replace("leaf_value=", "leaf_value=9", 1), "damaged"),
        (text.replace("tree_sizes=", "tree_sizes=7 ", 1), "the header lists 21 trees"),
    ]:
        path.write_text(damaged)
        with pytest.raises(
            DataError, match=rf"model\.txt: not a readable LightGBM model \(.*{why}"
        ):
            catalog.load_booster(path)


def test_a_world_without_a_closure_draws_its_plots_without_a_warning(tmp_path):
    """One borrower: nothing closes, and the closure plot has no cause to put in a legend
    (matplotlib's warning once reached the console)."""
    proc = _run(["generate", f"paths.root={tmp_path}", "data.n_borrowers=1", "tracking=off"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    assert (tmp_path / "data" / "raw" / "plots" / "closure_rate_by_cause.png").is_file()


# runs the command line in-process, then names the heavy packages it imported
_IMPORTS_OF_A_REFUSAL = """
import sys
import pipeline.__main__ as cli
sys.argv = ["pipeline", *sys.argv[1:]]
try:
    cli.main()
finally:
    heavy = ("lightgbm", "mlflow", "shap", "sklearn", "pandas", "pipeline.stages")
    print("imported:", sorted(m for m in heavy if m in sys.modules))
"""


@pytest.mark.parametrize(
    "args",
    [["generate", "data.seed=1.5"], ["train", "model.nmu_leaves=3"], ["run", "data=nosuch"]],
)
def test_a_refused_command_line_imports_no_stage(args):
    """A refusal is answered before the stages and their libraries are imported."""
    proc = _run(args, _IMPORTS_OF_A_REFUSAL)
    _one_clear_line(proc)
    assert "imported: []" in proc.stdout, proc.stdout
