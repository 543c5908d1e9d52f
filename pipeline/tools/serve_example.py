"""A valid request for the served model, built from the feature table.

``python -m pipeline.tools.serve_example [--rows N] [--port P] [overrides...]`` (what
``make serve-example`` runs; Hydra overrides such as ``paths.root=DIR`` choose the run's
folders as for any stage) takes the out-of-time rows of the first ``N`` borrowers that have one of
``data/processed/features.parquet``, keeps the id column and the model's features (from
``models/model.json``), and prints the JSON body that ``POST /invocations`` accepts,
then the ``curl`` line that sends it to ``make serve``. Each response row carries the
same ``borrower_id`` as the request row it scores. For a table model (``make
serve-example DATASET=german``) it sends the first hold-out rows of the table, as the
table's file spells them, with the table's id column.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pyarrow.parquet as pq
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException

from pipeline.adapters.catalog import Catalog, load_model
from pipeline.base.config import REPO_ROOT, Config, ConfigError, register_configs, validate
from pipeline.base.io import DataError
from pipeline.core.table import ROW_ID, read_any

ID = "borrower_id"
register_configs()


def table_request(cat: Catalog, meta: dict[str, Any], rows: int) -> dict[str, Any]:
    """A table model's request: its first ``rows`` hold-out rows as the table spells them
    (the id column and the columns the model reads, text as in the file), which the
    served model encodes as training did."""
    t = meta.get("table") or {}
    src = Path(str(t.get("path") or ""))
    enc = meta.get("encoding") or {}
    wanted = [str(c["name"]) for c in enc.get("columns", [])]
    id_col = str(t.get("id") or ROW_ID)
    coded = cat.path("table_features")
    if not coded.exists():
        raise DataError(f"{coded}: file not found (run `make german` or the table's run first)")
    keys = pq.read_table(coded, columns=[id_col, "split"]).to_pandas()
    held = keys[keys.split == "oot"][id_col].head(rows).tolist()
    sep = str((meta.get("config") or {}).get("data", {}).get("sep") or "")
    raw = read_any(src, sep=sep, text_columns=wanted)
    if id_col == ROW_ID:  # no id column: a row's id is its number in the file
        frame = raw.iloc[[int(i) for i in held]][wanted]
        frame.insert(0, ROW_ID, [int(i) for i in held])
    else:
        frame = raw[raw[id_col].isin(held)][[id_col, *wanted]]
    if frame.empty:
        raise DataError(f"{coded}: no hold-out rows to build a request from")
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


def request_body(cat: Catalog, rows: int) -> dict[str, Any]:
    """``{"dataframe_split": {"columns": [...], "data": [...]}}`` for ``rows`` borrowers."""
    models = cat.models
    features = cat.path("features")
    _, meta = load_model(models)
    if str(meta.get("mode", "simulator")) == "table":
        return table_request(cat, meta, rows)
    if not features.exists():
        raise DataError(f"{features}: file not found (run `make features` first)")
    names = [str(n) for n in meta["feature_names"]]
    # one row per borrower (the feature table holds a row per borrower and snapshot);
    # read batch by batch so a large table is never loaded whole
    parts: list[pd.DataFrame] = []
    seen: set[int] = set()
    for batch in pq.ParquetFile(features).iter_batches(columns=[ID, "split", *names]):
        chunk = batch.to_pandas()
        chunk = chunk[(chunk.split == "oot") & ~chunk[ID].isin(seen)].drop_duplicates(ID)
        parts.append(chunk.head(rows - len(seen)))
        seen.update(int(i) for i in parts[-1][ID])
        if len(seen) >= rows:
            break
    frame = pd.concat(parts).drop(columns=["split"]) if parts else pd.DataFrame()
    if frame.empty:
        raise DataError(f"{features}: no out-of-time rows to build a request from")
    data = [
        [int(r[0]), *(None if math.isnan(v) else float(v) for v in r[1:])]
        for r in frame.itertuples(index=False)
    ]
    return {"dataframe_split": {"columns": [ID, *names], "data": data}}


def _config(overrides: list[str]) -> Config:
    """The project's composed config with ``overrides``, checked."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        try:
            # a DictConfig shaped by the Config schema
            cfg = cast(Config, compose("config", overrides=[*overrides, "stage=score"]))
        except HydraException as exc:
            raise ConfigError(str(exc)) from exc
    validate(cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2, help="rows in the request (default 2)")
    ap.add_argument("--port", type=int, default=5001, help="port of `make serve`")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. paths.root=DIR")
    args = ap.parse_args(argv)
    if args.rows < 1:
        print("error: --rows must be at least 1", file=sys.stderr)
        return 2
    try:
        body = request_body(Catalog.of(_config(args.overrides)), args.rows)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(body)
    print(text)
    print(
        f"\n# send it to `make serve`:\ncurl -s 127.0.0.1:{args.port}/invocations "
        f"-H 'Content-Type: application/json' -d '{text}'",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
