"""A valid request for the served model, built from the feature table.

``python -m pipeline.tools.serve_example [--rows N] [--port P] [--root DIR]`` (what
``make serve-example`` runs) takes the out-of-time rows of the first ``N`` borrowers that have one of
``data/processed/features.parquet``, keeps the id column and the model's features (from
``models/model.json``), and prints the JSON body that ``POST /invocations`` accepts,
then the ``curl`` line that sends it to ``make serve``. Each response row carries the
same ``borrower_id`` as the request row it scores.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from pipeline.adapters.catalog import ENTRIES, load_model
from pipeline.base.config import REPO_ROOT
from pipeline.base.io import DataError

ID = "borrower_id"


def request_body(root: Path, rows: int) -> dict[str, Any]:
    """``{"dataframe_split": {"columns": [...], "data": [...]}}`` for ``rows`` rows."""
    models = root / "models"
    features = root / "data" / "processed" / ENTRIES["features"].relpath
    _, meta = load_model(models)
    if str(meta.get("mode", "simulator")) != "simulator":
        raise DataError(
            f"{models / ENTRIES['model_meta'].relpath}: a table model; build its request from "
            "your own table's columns (the id column and the model's features)"
        )
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2, help="rows in the request (default 2)")
    ap.add_argument("--port", type=int, default=5001, help="port of `make serve`")
    ap.add_argument("--root", type=Path, default=REPO_ROOT, help="the run's output root")
    args = ap.parse_args(argv)
    if args.rows < 1:
        print("error: --rows must be at least 1", file=sys.stderr)
        return 2
    try:
        body = request_body(args.root, args.rows)
    except DataError as exc:
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
