"""Two or more MLflow runs side by side: the parameters that differ and the headline figures.

``python -m pipeline.tools.compare RUN_ID RUN_ID [...]`` prints a plain-text table: each
run's readable name, the data it saw (dataset name and digest: the same digest means the
same data), every parameter whose value is not the same in all runs, and the headline
metrics (:data:`pipeline.adapters.tracking.HEADLINES`) plus any ``--metric`` asked for.
The store is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the repository's
``mlflow.db``. Exit status 2 with a message when a run or the store cannot be read.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pipeline.adapters.tracking import HEADLINES, RunRecord, TrackingError, load_runs
from pipeline.base.config import REPO_ROOT

MISSING = "-"


def default_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


def differing_params(runs: Sequence[RunRecord]) -> list[str]:
    """Parameter keys whose value (or presence) is not the same in every run, sorted."""
    keys = sorted({k for r in runs for k in r.params})
    return [k for k in keys if len({r.params.get(k, MISSING) for r in runs}) > 1]


def _metric(value: float | None, fmt: str) -> str:
    return MISSING if value is None else fmt.format(value)


def compare_table(runs: Sequence[RunRecord], extra_metrics: Sequence[str] = ()) -> str:
    """The comparison as aligned plain text."""
    rows: list[tuple[str, ...]] = [
        ("run", *(r.name or MISSING for r in runs)),
        ("run id", *(r.run_id for r in runs)),
    ]
    names = sorted({n for r in runs for n, _ in r.datasets})
    for name in names:
        digests = [dict(r.datasets).get(name) for r in runs]
        rows.append((f"data: {name}", *(d or MISSING for d in digests)))
    differ = differing_params(runs)
    rows.append((f"-- parameters that differ ({len(differ)})",) + ("",) * len(runs))
    rows += [(k, *(r.params.get(k, MISSING) for r in runs)) for k in differ]
    rows.append(("-- headline metrics",) + ("",) * len(runs))
    for h in HEADLINES:
        rows.append((h.short, *(_metric(r.metrics.get(h.short), h.fmt) for r in runs)))
    for m in extra_metrics:
        rows.append((m, *(_metric(r.metrics.get(m), "{:.6g}") for r in runs)))
    table = [row for row in rows if not row[0].startswith("-- ")]
    widths = [max(len(row[i]) for row in table) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        if row[0].startswith("-- "):
            lines.append(row[0])
            continue
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.tools.compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: %(default)s)")
    parser.add_argument(
        "--metric", action="append", default=[], help="another metric to show (repeatable)"
    )
    args = parser.parse_args(argv)
    if len(args.run_ids) < 2:
        print("error: give at least two run ids to compare", file=sys.stderr)
        return 2
    try:
        runs = load_runs(args.tracking_uri or default_uri(), args.run_ids)
    except TrackingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(compare_table(runs, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
