"""The page ``make ui`` should be opened on: the runs of the store's latest experiment.

``python -m pipeline.tools.ui_url --root DIR [--port P]`` reads ``DIR/mlflow.db`` (read
only, with SQLite itself: no MLflow import, so the UI starts without delay) and prints
one line with the address of the runs page of the experiment whose run started last, in
the project's headline view. The UI's root page is MLflow's GenAI welcome page, which
lists no runs. Without a store, or with no run in it yet, the line says so and names the
experiments page instead. Exit status 0 either way: the UI still starts.
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from pipeline.base.ui import ui_url


def runs_page(root: Path, port: int) -> str:
    """The line ``make ui`` prints about where the runs are."""
    base = f"http://127.0.0.1:{port}"
    db = root / "mlflow.db"
    if not db.is_file():
        return (
            f"no MLflow store at {db} yet (make run writes one); the experiments will be at "
            f"{base}/#/experiments"
        )
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute(
                "SELECT r.experiment_id FROM runs r JOIN experiments e "
                "ON e.experiment_id = r.experiment_id "
                "WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active' "
                "ORDER BY r.start_time DESC, r.run_uuid LIMIT 1"
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"{db}: cannot be read as an MLflow store ({exc}); open {base}/#/experiments"
    if row is None:
        return f"no runs in {db} yet; the experiments are at {base}/#/experiments"
    return f"open the runs page: {ui_url(base, str(row[0]))}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="the folder holding mlflow.db")
    ap.add_argument("--port", type=int, default=5000)
    args = ap.parse_args(argv)
    print(runs_page(args.root, args.port))


if __name__ == "__main__":
    main()
