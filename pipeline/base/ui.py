"""Addresses of the MLflow UI's pages, without importing MLflow.

``make ui`` prints the runs page before the UI starts (:mod:`pipeline.tools.ui_url`), so
the address is built here, where an import costs nothing.
"""

from __future__ import annotations

import urllib.parse

#: the saved runs-table view (MLflow's shared view state, an experiment tag)
VIEW_KEY = "headline"


def ui_url(base: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment's runs, in the saved headline view."""
    query = urllib.parse.urlencode(
        {"workflowType": "machine_learning", "viewStateShareKey": VIEW_KEY}
    )
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
