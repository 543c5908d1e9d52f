"""Runner of the ``report`` stage: the self-contained HTML model report.

Reads what the other stages wrote (see :mod:`pipeline.core.report`), writes
``models/report.html`` atomically and logs it to the stage's nested MLflow run under
``report/``. In ``run`` it comes last, after the run summary is written, so the page
shows the figures of the run it belongs to.
"""

from __future__ import annotations

from typing import Any

from pipeline.adapters.tracking import Tracker
from pipeline.base.io import write_text
from pipeline.core import report as core
from pipeline.stages.common import Paths, say


def report(cfg: Any, tracker: Tracker) -> dict[str, Any]:
    p = Paths.of(cfg)
    inputs = core.collect(p.models, p.raw, p.processed)
    page = core.render(inputs)
    path = p.models / "report.html"
    write_text(page, path)
    tracker.log_artifact(path, "report")
    n_plots = page.count('class="plot"')
    tracker.log_metrics({"report.bytes": float(len(page.encode("utf-8"))), "report.plots": n_plots})
    say(f"report                     : {path} ({n_plots} plots, opens offline)")
    return {"path": str(path), "plots": n_plots}
