"""A stage's outputs are staged and published together: a failure or a kill at any point
leaves the published outputs of the last successful stage, and the next invocation
finishes an interrupted publication or drops an unfinished stage's files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import TINY, remove_parts

from pipeline.base import io
from pipeline.base.config import REPO_ROOT
from pipeline.base.interrupt import Interrupted
from pipeline.base.io import (
    STAGING_DIR,
    OutputPath,
    ParquetSink,
    file_digest,
    read_table,
    recover,
    resolve,
    staged_glob,
    staging,
    write_json,
    write_parquet,
    write_text,
)

SCHEMA = pa.schema([("borrower_id", pa.int64()), ("x", pa.float64())])


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (the staging area aside), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and STAGING_DIR not in p.relative_to(root).parts
    }


def _seed(root: Path) -> dict[str, bytes]:
    """Published outputs of an earlier stage: a model, two plots, a policy folder."""
    models = root / "models"
    (models / "plots").mkdir(parents=True)
    (models / "policy").mkdir()
    (models / "model.txt").write_text("old model")
    (models / "plots" / "roc.png").write_bytes(b"old roc")
    (models / "plots" / "shap_a.png").write_bytes(b"old shap")
    (models / "policy" / "front.csv").write_text("old front")
    (models / "policy" / "matched.csv").write_text("old matched")
    return _tree(root)


def _staging_left(root: Path) -> list[Path]:
    base = root / STAGING_DIR
    return sorted(base.iterdir()) if base.exists() else []


def test_writes_stay_invisible_at_their_final_paths_until_the_stage_succeeds(tmp_path):
    before = _seed(tmp_path)
    models = tmp_path / "models"
    with staging(tmp_path, [models], "train"):
        write_text("new model", models / "model.txt")
        write_json({"auc": 0.7}, models / "model.json")
        write_text("new roc", models / "plots" / "roc.png")
        assert _tree(tmp_path) == before  # nothing published yet
        # the stage itself reads its new versions
        assert resolve(models / "model.txt").read_text() == "new model"
        view = OutputPath(models)
        assert (view / "model.txt").read_text() == "new model"
        assert json.loads((view / "model.json").read_text()) == {"auc": 0.7}
        assert not (models / "model.json").exists() and (view / "model.json").exists()
        assert str(view / "model.txt") == str(models / "model.txt")  # messages name finals
        assert file_digest(models / "model.txt") == hashlib.sha256(b"new model").hexdigest()
    after = _tree(tmp_path)
    assert after["models/model.txt"] == b"new model"
    assert after["models/plots/roc.png"] == b"new roc"
    assert json.loads(after["models/model.json"]) == {"auc": 0.7}
    assert after["models/plots/shap_a.png"] == b"old shap"  # untouched: not rewritten
    assert _staging_left(tmp_path) == []
    assert resolve(models / "model.txt") == models / "model.txt"  # no staging: itself


def test_a_write_outside_the_staged_folders_goes_straight_to_its_path(tmp_path):
    with staging(tmp_path, [tmp_path / "models"], "score"):
        write_text("scores", tmp_path / "elsewhere" / "scores.csv")
        assert (tmp_path / "elsewhere" / "scores.csv").read_text() == "scores"
        assert (
            resolve(tmp_path / "elsewhere" / "scores.csv") == tmp_path / "elsewhere" / "scores.csv"
        )


def test_parquet_outputs_are_staged_and_read_back_by_the_stage(tmp_path):
    raw = tmp_path / "data" / "raw"
    table = pa.table({"borrower_id": [1, 2], "x": [0.5, 1.5]}, schema=SCHEMA)
    with staging(tmp_path, [raw], "generate"):
        with ParquetSink({"a": raw / "a.parquet"}, {"a": SCHEMA}) as sink:
            sink.write("a", table)
        write_parquet(table, raw / "b.parquet")
        assert not (raw / "a.parquet").exists() and not (raw / "b.parquet").exists()
        assert read_table(raw / "a.parquet", SCHEMA).equals(table)
        assert pq.read_table(OutputPath(raw) / "b.parquet").equals(table)
        assert (OutputPath(raw) / "b.parquet").exists()
    assert pq.read_table(raw / "a.parquet").equals(table)
    assert pq.read_table(raw / "b.parquet").equals(table)
    assert _staging_left(tmp_path) == []


def test_deletions_wait_for_publication_and_hide_the_paths_from_the_stage(tmp_path):
    before = _seed(tmp_path)
    models = tmp_path / "models"
    view = OutputPath(models)
    with staging(tmp_path, [models], "explain"):
        remove_parts(models, ("plots/shap_*.png", "policy"))
        assert _tree(tmp_path) == before  # published outputs stay until publication
        assert not (view / "plots" / "shap_a.png").exists()
        assert not (view / "policy").exists()
        assert staged_glob(models, "plots/*") == [models / "plots" / "roc.png"]
        write_text("new front", models / "policy" / "front.csv")  # rewritten after the delete
        assert (view / "policy" / "front.csv").read_text() == "new front"
        assert staged_glob(models, "policy") == [models / "policy"]
    after = _tree(tmp_path)
    assert "models/plots/shap_a.png" not in after
    assert "models/policy/matched.csv" not in after
    assert after["models/policy/front.csv"] == b"new front"
    assert after["models/plots/roc.png"] == b"old roc"
    assert _staging_left(tmp_path) == []


def test_outside_a_staging_deletions_happen_at_once(tmp_path):
    _seed(tmp_path)
    remove_parts(tmp_path / "models", ("plots/shap_*.png", "policy"))
    assert not (tmp_path / "models" / "policy").exists()
    assert sorted(p.name for p in (tmp_path / "models" / "plots").iterdir()) == ["roc.png"]


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("boom"), KeyboardInterrupt(), Interrupted(signal.SIGTERM, [])],
    ids=["error", "KeyboardInterrupt", "Interrupted"],
)
def test_a_failed_stage_leaves_every_final_file_byte_identical(tmp_path, exc):
    before = _seed(tmp_path)
    models = tmp_path / "models"
    with pytest.raises(type(exc)), staging(tmp_path, [models], "train"):
        write_text("new model", models / "model.txt")
        write_text("new", models / "brand_new.json")
        remove_parts(models, ("plots", "policy"))
        with ParquetSink({"t": models / "t.parquet"}, {"t": SCHEMA}) as sink:
            sink.write("t", pa.table({"borrower_id": [1], "x": [1.0]}, schema=SCHEMA))
        raise exc
    assert _tree(tmp_path) == before
    assert _staging_left(tmp_path) == []
    # and the next staging starts clean
    with staging(tmp_path, [models], "train"):
        assert (OutputPath(models) / "plots" / "roc.png").read_bytes() == b"old roc"


def test_after_publish_runs_once_the_outputs_are_in_place(tmp_path):
    models = tmp_path / "models"
    seen: list[str] = []
    with staging(tmp_path, [models], "train"):
        write_text("new model", models / "model.txt")
        io.after_publish(lambda: seen.append((models / "model.txt").read_text()))
        assert seen == []
    assert seen == ["new model"]


def test_a_staged_folder_on_another_file_system_is_refused(tmp_path):
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system here")
    with pytest.raises(io.DataError, match="same file system"):
        with staging(tmp_path, [other / "models"], "train"):
            pass


# --------------------------------------------------------------------------- kills

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from pipeline.adapters.catalog import Catalog
    from pipeline.base import io

    root, when = Path(sys.argv[1]), sys.argv[2]
    models = root / "models"
    die = lambda path: os.kill(os.getpid(), signal.SIGKILL)
    if when == "publish":  # just after the first file is renamed into place
        io._after_rename.append(die)
    with io.staging(root, [models], "train"):
        io.write_text("new model", models / "model.txt")
        io.write_text("new roc", models / "plots" / "roc.png")
        io.write_json({"new": True}, models / "model.json")
        Catalog(models, models, models, models).remove("shap_plot", "policy_dir")
        if when == "stage":  # in the middle of the stage, after some staged writes
            die(None)
    """
)


def _run_child(root: Path, when: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), when],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def test_a_kill_in_the_middle_of_a_stage_leaves_the_published_outputs(tmp_path):
    before = _seed(tmp_path)
    _run_child(tmp_path, "stage")
    assert _tree(tmp_path) == before
    assert _staging_left(tmp_path)  # the dead stage's staged files
    done = recover(tmp_path)
    assert len(done) == 1 and "dropped the unfinished outputs of stage train" in done[0]
    assert _staging_left(tmp_path) == []
    assert _tree(tmp_path) == before
    assert recover(tmp_path) == []  # nothing left to do


def test_a_kill_while_publishing_is_finished_by_recover(tmp_path):
    before = _seed(tmp_path)
    _run_child(tmp_path, "publish")
    journals = list((tmp_path / STAGING_DIR).glob("*.journal.json"))
    assert len(journals) == 1
    mixed = _tree(tmp_path)
    # killed after the deletions and exactly one rename: a mix on disk until recovery
    assert {k for k in before if k not in mixed} == {
        "models/plots/shap_a.png",
        "models/policy/front.csv",
        "models/policy/matched.csv",
    }
    renamed = [k for k in mixed if mixed[k] != before.get(k)]
    assert len(renamed) == 1
    done = recover(tmp_path)
    assert len(done) == 1 and "published the outputs of stage train" in done[0]
    after = _tree(tmp_path)
    assert after["models/model.txt"] == b"new model"
    assert after["models/plots/roc.png"] == b"new roc"
    assert json.loads(after["models/model.json"]) == {"new": True}
    assert "models/plots/shap_a.png" not in after
    assert not any(k.startswith("models/policy") for k in after)
    assert _staging_left(tmp_path) == []


def test_recover_leaves_the_staging_of_a_live_process_alone(tmp_path):
    live = tmp_path / STAGING_DIR / f"train.{os.getppid()}"
    (live / "3").mkdir(parents=True)
    (live / "3" / "model.txt").write_text("in progress")
    assert recover(tmp_path) == []
    assert (live / "3" / "model.txt").read_text() == "in progress"


# --------------------------------------------------------------------------- a whole run

#: outputs that differ between two identical runs by design: the page names its run and
#: timings; SHAP draws its beeswarm and dependence plots with random jitter
NOT_COMPARED = ("models/report.html", "models/plots/shap_beeswarm.png", "models/plots/dependence_")
#: figures and names in JSON outputs that belong to the run, not to the data or model;
#: ``fit_threads`` is the cores the cause model found idle (its file is the same whatever
#: the count: tests/test_survival.py)
_RUN_KEYS = (
    "seconds",
    "per_s",
    "run_id",
    "model_uri",
    "ui_url",
    "share_of_explain",
    "fit_threads",
)

_KILL_IN_STAGE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from helpers import compose_config
    from pipeline.base import io
    from pipeline.stages.driver import execute

    stage, last_file = sys.argv[3], sys.argv[4]

    def die(path):
        if path.name == last_file:  # e.g. the ROC of a model that is never published
            os.kill(os.getpid(), signal.SIGKILL)

    io._after_stage_write.append(die)
    execute(compose_config(Path(sys.argv[1]), sys.argv[5:], stage=stage), [])
    """
)


def _outputs(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): file_digest(p)
        for folder in ("data", "models")
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


def _without_run(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _without_run(v) for k, v in obj.items() if not any(w in k for w in _RUN_KEYS)}
    if isinstance(obj, list):
        return [_without_run(v) for v in obj]
    return obj


def _comparable(root: Path, rel: str) -> object:
    """A file's digest; for JSON and YAML, its content less the run's own figures, with
    the output root named ``<root>``."""
    path = root / rel
    if path.suffix not in (".json", ".yaml"):
        return file_digest(path)
    text = path.read_text().replace(str(root), "<root>")
    return _without_run(json.loads(text)) if path.suffix == ".json" else text


def _check_train_artifacts(root: Path) -> None:
    """What the train stage logged to MLflow is what it published on disk."""
    models = root / "models"
    logged = sorted((root / "mlartifacts").rglob("model.txt"))
    assert logged, "no model.txt among the MLflow artifacts"
    # the classifier, and the cause model the survival stage logs with the serving model
    published = {
        (models / "model.txt").read_bytes(),
        (models / "survival" / "model.txt").read_bytes(),
    }
    for path in logged:
        assert path.read_bytes() in published, path
    assert sum(p.read_bytes() == (models / "model.txt").read_bytes() for p in logged) >= 2
    meta = sorted(p for p in (root / "mlartifacts").rglob("*") if p.parent.name == "model_meta")
    assert meta
    for path in meta:
        assert path.read_bytes() == (models / path.name).read_bytes(), path


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The whole pipeline, run twice with the same config and seed in two roots."""
    from helpers import compose_config

    from pipeline.stages.driver import execute

    roots = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    for root in roots:
        execute(compose_config(root, TINY), [])
    return roots


@pytest.mark.slow
def test_a_whole_run_publishes_every_output_the_same_way_twice(two_runs):
    from pipeline.stages.common import check_stamp, model_stamp

    a, b = two_runs
    first, second = _outputs(a), _outputs(b)
    assert first.keys() == second.keys()
    compared = [k for k in first if not k.startswith(NOT_COMPARED)]
    assert len(compared) > 30
    assert [k for k in compared if _comparable(a, k) != _comparable(b, k)] == []
    assert "models/report.html" in first and "models/plots/roc.png" in first
    stamp = model_stamp(a / "models")  # every model-derived part is of this model
    for part in ("explain", "policy"):
        check_stamp(a / "models" / "summary_parts" / f"{part}.json", stamp)
    assert _staging_left(a) == [] and _staging_left(b) == []
    _check_train_artifacts(a)
    _check_train_artifacts(b)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "last_file"),
    [("train", "roc.png"), ("explain", "shap_importance.json")],
    ids=["train", "explain"],
)
def test_a_stage_killed_midway_changes_nothing_published(two_runs, capsys, stage, last_file):
    from helpers import compose_config

    from pipeline.stages.driver import execute

    root = two_runs[0]
    before = _outputs(root)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # a changed model config, so that train has something new to write
    overrides = [*TINY, "model.n_estimators=31"]
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _KILL_IN_STAGE,
            str(root),
            str(Path(__file__).parent),
            stage,
            last_file,
            *overrides,
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert _outputs(root) == before
    assert _staging_left(root)
    capsys.readouterr()
    execute(compose_config(root, TINY, stage="generate"), [])  # unchanged: nothing rewritten
    assert f"dropped the unfinished outputs of stage {stage}" in capsys.readouterr().out
    assert _staging_left(root) == []
    # the generate invocation writes its own config and summary, nothing else
    after = _outputs(root)
    assert {k for k in before if after[k] != before[k]} <= {
        "models/resolved_config.yaml",
        "models/summary.json",
    }


def test_a_dropped_staging_undoes_its_noted_effects(tmp_path):
    from pipeline.base import io as io_mod

    seen: list[dict] = []
    io_mod.on_dropped("probe", lambda note: seen.append(note) or f"undid {note['n']}")
    # in-process: an exception drops the staging and applies its notes, newest first
    with pytest.raises(RuntimeError), io_mod.staging(tmp_path, [tmp_path / "models"], "t"):
        io_mod.note_undo("probe", {"n": 1})
        io_mod.note_undo("probe", {"n": 2})
        raise RuntimeError("boom")
    assert [n["n"] for n in seen] == [2, 1]
    # a staging that published applies none
    seen.clear()
    with io_mod.staging(tmp_path, [tmp_path / "models"], "t"):
        io_mod.note_undo("probe", {"n": 3})
    assert seen == []
    # a killed process's staging: the next recover applies its notes and says so
    dead = tmp_path / io_mod.STAGING_DIR / "train.99999999" / "undo"
    dead.mkdir(parents=True)
    (dead / "0000.probe.json").write_text('{"n": 4}')
    lines = io_mod.recover(tmp_path)
    assert seen == [{"n": 4}] and "undid 4" in lines
    assert not dead.parent.exists()
