"""A calm console: third-party messages go to the log file; the pipeline's own stay visible.

The set-up changes process-wide logging, so it is exercised in a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline.base.config import REPO_ROOT

CHILD = r"""
import logging, sys, warnings
from pathlib import Path
import numpy as np
import lightgbm as lgb
from pipeline.adapters.logfile import route_to_file

route_to_file(Path(sys.argv[1]))
rng = np.random.default_rng(0)
X = rng.integers(-3, 4, size=(400, 1)).astype(float)
y = (rng.random(400) < 0.3).astype(int)
ds = lgb.Dataset(X, y, categorical_feature=[0], params={"verbose": 1, "min_data_in_leaf": 5})
lgb.train({"objective": "binary", "verbose": 1, "num_threads": 1}, ds, num_boost_round=2)
warnings.warn_explicit("a third-party hint", UserWarning, "/opt/lib/site-packages/x.py", 7)
warnings.warn_explicit("own caution", UserWarning, sys.argv[2] + "/core/explain.py", 9)
logging.getLogger("distributed.worker").info("Start worker at tcp://127.0.0.1:1")
# a local cluster quiets the stream handlers on Dask's loggers while it starts
from distributed.utils import silence_logging_cmgr
with silence_logging_cmgr(logging.WARNING):
    logging.getLogger("distributed.scheduler").info("State start")
logging.getLogger("mlflow.models").warning("schema hint")
"""


def test_third_party_messages_go_to_the_log_file(tmp_path):
    log = tmp_path / "outputs" / "pipeline.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(log), str(REPO_ROOT / "pipeline")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    # the pipeline's own warning stays on the console, and it is the only line there
    assert r.stderr.splitlines() and all("own caution" in ln for ln in r.stderr.splitlines())
    text = log.read_text()
    for said in (
        "Met negative value",
        "a third-party hint",
        "Start worker",
        "State start",
        "schema hint",
    ):
        assert said in text, said
    assert "own caution" not in text


def test_the_summary_of_a_table_run_speaks_of_the_table(capsys):
    from pipeline.core.report import words
    from pipeline.stages.driver import _print_summary

    summary = {
        "n_rows": 1000,
        "closure_rate": 0.3,
        "valid": {"auc": 0.8},
        "oot": {"auc": 0.79, "ks": 0.5, "brier": 0.16},
        "top_features": ["amount_EUR"],
        "outputs": {"raw": "r", "features": "f", "models": "m"},
    }
    meta = {"mode": "table", "table": {"target": "creditability", "positive": "bad"}}
    _print_summary(summary, words(meta), {"amount_EUR": "amount, EUR"}.get)
    out = capsys.readouterr().out
    assert "creditability = bad rate   : 30.00%" in out
    assert "AUC valid / hold-out       : 0.8000 / 0.7900" in out
    assert "amount, EUR" in out and "amount_EUR" not in out
    assert not any(w in out for w in ("closure", "borrower", "out-of-time"))
