"""Command-line tools around the pipeline: the serving request example and `make help`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import compose_config, load_feature_table

from pipeline.adapters.catalog import Catalog, load_model
from pipeline.base.config import REPO_ROOT
from pipeline.base.io import DataError
from pipeline.core import scoring
from pipeline.tools import serve_example


@pytest.fixture
def trained(trained_world: tuple[Path, Any, Any]) -> Path:
    """The shared trained SMALL world's root: read only."""
    return trained_world[0]


def test_serve_example_builds_a_valid_request_with_the_ids(trained: Path, capsys) -> None:
    args = ["--rows", "3", "--port", "5999", f"paths.root={trained}"]
    assert serve_example.main(args) == 0
    out = capsys.readouterr()
    body = json.loads(out.out)
    assert "127.0.0.1:5999/invocations" in out.err
    split = body["dataframe_split"]
    _, meta = load_model(trained / "models")
    assert split["columns"] == ["borrower_id", *meta["feature_names"]]
    frame = pd.DataFrame(split["data"], columns=split["columns"])
    assert len(frame) == 3
    rows = load_feature_table(trained / "data" / "processed" / "features.parquet")
    oot = rows[rows.split == "oot"].drop_duplicates("borrower_id").head(3)
    assert frame.borrower_id.tolist() == oot.borrower_id.tolist()
    assert frame[meta["feature_names"]].to_numpy() == pytest.approx(
        oot[meta["feature_names"]].to_numpy(dtype=float), rel=1e-6
    )
    # what the serving model validates, it accepts
    scoring.validate_features(frame, Path("request"), meta["feature_names"], "borrower_id")


def test_serve_example_needs_a_trained_model(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="model.txt: file not found"):
        serve_example.request_body(Catalog.of(compose_config(tmp_path)), 2)
    assert serve_example.main([f"paths.root={tmp_path}"]) == 2
    assert serve_example.main(["paths.no_such_key=1"]) == 2


def test_make_help_shows_the_ports_not_make_variables() -> None:
    out = subprocess.run(
        ["make", "-s", "help", "SERVE_PORT=5123"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "$(" not in out
    assert "127.0.0.1:5123" in out
    assert "compare" in out and "serve-example" in out


def _without_brackets(text: str) -> str:
    """A help line without its trailing bracket (make's own usage, or the record's)."""
    return re.sub(r"\s*\((?:[^()]|\([^()]*\))*\)$", "", text).strip()


def test_the_makefile_help_of_each_stage_is_its_stage_record_line() -> None:
    from pipeline.stages.plan import STAGES

    make = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    lines = dict(re.findall(r"^([a-zA-Z_-]+):.*?## (.*)$", make, flags=re.M))
    checked = 0
    for stage in STAGES:
        for target in (stage.name, *stage.aliases):
            if target in lines:
                assert _without_brackets(lines[target]) == _without_brackets(stage.doc), target
                checked += 1
    assert checked >= 8, checked  # every stage with a make target, not a lucky few
