"""Bad-input corpus: every reader gets each kind of broken input and answers with a
clear message (file, column, rule) while the output folder stays untouched."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers import SMALL, compose_config, load_feature_table

from pipeline.adapters.tracking import from_config
from pipeline.base.config import REPO_ROOT, ConfigError, validate
from pipeline.base.io import DataError, file_digest
from pipeline.stages.driver import run_pipeline
from pipeline.stages.features import build_features, feature_spec, read_raw

OFF = ["tracking=off", "model.n_estimators=20", "model.num_threads=1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Raw tables and a feature table from one tiny, valid run."""
    root = tmp_path_factory.mktemp("base")
    cfg = compose_config(root, [*SMALL, *OFF])
    run_pipeline(cfg, from_config(cfg.tracking), ["generate", "features"])
    return root


def _digests(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): file_digest(p) for p in sorted(d.rglob("*")) if p.is_file()}


def _copy(base: Path, dest: Path) -> Path:
    shutil.copytree(base / "data", dest / "data")
    return dest


def _edit(path: Path, fn: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(fn(pq.read_table(path)), path)


def _set(table: pa.Table, column: str, values: pa.Array | list) -> pa.Table:
    i = table.schema.get_field_index(column)
    arr = values if isinstance(values, pa.Array) else pa.array(values)
    return table.set_column(i, column, arr)


def _first_value(table: pa.Table, column: str, value, type_=None) -> pa.Table:
    col = table.column(column).to_pylist()
    col[0] = value
    return _set(table, column, pa.array(col, type=type_ or table.schema.field(column).type))


# each case: (table, how to break it, words the message must contain besides the file)
RAW_CASES: dict[str, tuple[str, Callable[[Path], None], tuple[str, ...]]] = {
    "missing file": ("borrowers", lambda p: p.unlink(), ("file not found",)),
    "empty file": ("account_months", lambda p: p.write_bytes(b""), ("file is empty",)),
    "truncated parquet": (
        "fund_flows",
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        ("not a readable Parquet file",),
    ),
    "wrong column type": (
        "account_months",
        lambda p: _edit(p, lambda t: _set(t, "balance", pc.cast(t.column("balance"), pa.string()))),
        ("'balance'", "type string", "expected float"),
    ),
    "missing column": (
        "fund_flows",
        lambda p: _edit(p, lambda t: t.drop_columns(["amount"])),
        ("'amount'", "missing"),
    ),
    "NaN": (
        "account_months",
        lambda p: _edit(p, lambda t: _first_value(t, "balance", float("nan"))),
        ("'balance'", "NaN or infinite", "none are allowed"),
    ),
    "infinity": (
        "bureau_months",
        lambda p: _edit(p, lambda t: _first_value(t, "ext_utilisation", float("inf"))),
        ("'ext_utilisation'", "NaN or infinite"),
    ),
    "null": (
        "borrowers",
        lambda p: _edit(p, lambda t: _first_value(t, "occupation", None)),
        ("'occupation'", "missing values"),
    ),
    "negative amount": (
        "fund_flows",
        lambda p: _edit(p, lambda t: _first_value(t, "amount", -100.0)),
        ("'amount'", "negative", ">= 0"),
    ),
    "duplicated key": (
        "borrowers",
        lambda p: _edit(p, lambda t: pa.concat_tables([t, t.slice(0, 3)])),
        ("borrower_id", "duplicated keys"),
    ),
    "duplicated compound key": (
        "account_months",
        lambda p: _edit(p, lambda t: pa.concat_tables([t, t.slice(10, 1)])),
        ("borrower_id, month", "duplicated keys"),
    ),
    "unknown category": (
        "borrowers",
        lambda p: _edit(p, lambda t: _first_value(t, "occupation", "astronaut")),
        ("'occupation'", "unknown categories", "astronaut"),
    ),
    "month out of range": (
        "account_months",
        lambda p: _edit(p, lambda t: _first_value(t, "month", 999)),
        ("'month'", "outside the allowed range"),
    ),
    "unknown borrower": (
        "platform_events",
        lambda p: _edit(p, lambda t: _first_value(t, "borrower_id", 10**9)),
        ("'borrower_id'", "not in"),
    ),
    "no borrowers": (
        "borrowers",
        lambda p: _edit(p, lambda t: t.slice(0, 0)),
        ("no borrowers",),
    ),
}


@pytest.mark.parametrize("case", list(RAW_CASES))
def test_raw_reader_names_file_column_and_rule(case, base, tmp_path):
    name, breaker, words = RAW_CASES[case]
    root = _copy(base, tmp_path)
    raw = root / "data" / "raw"
    path = raw / f"{name}.parquet"
    breaker(path)
    cfg = compose_config(root, [*SMALL, *OFF])
    with pytest.raises(DataError) as err:
        build_features(raw, int(cfg.data.n_months), feature_spec(cfg), 4096)
    msg = str(err.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    if case not in ("unknown borrower", "no borrowers"):  # whole-set rules
        with pytest.raises(DataError, match=str(path)):
            read_raw(path, name, int(cfg.data.n_months))


@pytest.mark.parametrize("case", ["truncated parquet", "negative amount", "wrong column type"])
def test_failed_features_stage_leaves_previous_output_byte_identical(case, base, tmp_path):
    name, breaker, _ = RAW_CASES[case]
    root = _copy(base, tmp_path)
    breaker(root / "data" / "raw" / f"{name}.parquet")
    processed = root / "data" / "processed"
    before = _digests(processed)
    assert "features.parquet" in before
    cfg = compose_config(root, [*SMALL, *OFF, "force=true"])
    with pytest.raises(DataError, match=f"{name}.parquet"):
        run_pipeline(cfg, from_config(cfg.tracking), ["features"])
    assert _digests(processed) == before


# --------------------------------------------------------------------------- feature table


def _feat_edit(fn: Callable[[pa.Table], pa.Table]) -> Callable[[Path], None]:
    return lambda p: _edit(p, fn)


FEATURE_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "missing file": (lambda p: p.unlink(), ("file not found",)),
    "empty file": (lambda p: p.write_bytes(b""), ("file is empty",)),
    "truncated parquet": (
        lambda p: p.write_bytes(p.read_bytes()[:4096]),
        ("not a readable Parquet file",),
    ),
    "wrong column type": (
        _feat_edit(lambda t: _set(t, "label", pc.cast(t.column("label"), pa.string()))),
        ("'label'", "type string", "expected int"),
    ),
    "missing column": (_feat_edit(lambda t: t.drop_columns(["split"])), ("'split'", "missing")),
    "NaN feature": (
        _feat_edit(lambda t: _first_value(t, "tenure", float("nan"))),
        ("'tenure'", "NaN or infinite"),
    ),
    "infinite feature": (
        _feat_edit(lambda t: _first_value(t, "tenure", float("-inf"))),
        ("'tenure'", "NaN or infinite"),
    ),
    "label out of range": (
        _feat_edit(lambda t: _first_value(t, "label", 2)),
        ("'label'", "outside the allowed range"),
    ),
    "unknown split": (
        _feat_edit(lambda t: _first_value(t, "split", "holdout")),
        ("'split'", "unknown categories", "holdout"),
    ),
    "duplicated key": (
        _feat_edit(lambda t: pa.concat_tables([t, t.slice(0, 2)])),
        ("borrower_id, snapshot", "duplicated keys"),
    ),
}


@pytest.mark.parametrize("case", list(FEATURE_CASES))
def test_feature_table_reader_names_file_column_and_rule(case, base, tmp_path):
    breaker, words = FEATURE_CASES[case]
    path = tmp_path / "features.parquet"
    shutil.copy(base / "data" / "processed" / "features.parquet", path)
    breaker(path)
    with pytest.raises(DataError) as err:
        load_feature_table(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg


def test_failed_train_stage_leaves_models_untouched(base, tmp_path):
    root = _copy(base, tmp_path)
    models = root / "models"
    models.mkdir()
    (models / "model.txt").write_text("tree\nprevious model\n")
    before = _digests(models)
    feat = root / "data" / "processed" / "features.parquet"
    FEATURE_CASES["NaN feature"][0](feat)
    cfg = compose_config(root, [*SMALL, *OFF])
    with pytest.raises(DataError, match="tenure"):
        run_pipeline(cfg, from_config(cfg.tracking), ["train"])
    after = _digests(models)
    after.pop("resolved_config.yaml", None)  # the driver records the config it ran with
    assert after == before


def test_feature_table_of_one_class_is_rejected(base, tmp_path):
    root = _copy(base, tmp_path)
    feat = root / "data" / "processed" / "features.parquet"
    _edit(feat, lambda t: _set(t, "label", pa.array(np.zeros(t.num_rows, np.int8))))
    cfg = compose_config(root, [*SMALL, *OFF])
    with pytest.raises(DataError, match=r"features\.parquet.*'label'"):
        run_pipeline(cfg, from_config(cfg.tracking), ["train"])


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.n_borrowers=-5", "data.n_borrowers"),
        ("data.n_borrowers=0", "data.n_borrowers"),
        ("data.n_borrowers=100000000000", "data.n_borrowers"),
        ("data.n_months=2", "data.n_months"),
        ("simulator.draw_prob=1.5", "simulator.draw_prob"),
        ("model.learning_rate=0", "model.learning_rate"),
        ("features.horizon=0", "features.horizon"),
        ("tracking.timeout_s=0", "tracking.timeout_s"),
    ],
)
def test_bad_config_values_name_the_key_and_write_nothing(override, key, tmp_path):
    cfg = compose_config(tmp_path, [*SMALL, *OFF, override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)
    with pytest.raises(ConfigError):
        run_pipeline(cfg, from_config(cfg.tracking), ["generate"])
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_reports_bad_config_and_bad_data_without_traceback(base, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args, f"paths.root={root}", "tracking=off"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    root = tmp_path / "fresh"
    r = cli("generate", "data.n_borrowers=-5")
    assert r.returncode == 2
    assert "data.n_borrowers" in r.stderr and "positive" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (root / "data").exists() and not (root / "models").exists()

    r = cli("generate", "data.n_borrowers=many")
    assert r.returncode != 0 and "data.n_borrowers" in r.stderr
    assert not (root / "data").exists()

    root = _copy(base, tmp_path / "copy")
    processed = root / "data" / "processed"
    before = _digests(processed)
    RAW_CASES["unknown category"][1](root / "data" / "raw" / "borrowers.parquet")
    r = cli("features", *SMALL)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "borrowers.parquet" in r.stderr and "occupation" in r.stderr
    assert "Traceback" not in r.stderr
    assert _digests(processed) == before
