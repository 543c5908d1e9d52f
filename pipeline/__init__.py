"""closure-risk: simulate, model and explain never-overdue account closures.

The package reaches no network at run time. MLflow 3 sends usage telemetry from every
process that tracks a run (it turns it off by itself only in CI and under pytest), so it
is turned off here, for the pipeline and for every process it starts, unless the user
set ``MLFLOW_DISABLE_TELEMETRY`` themselves.
"""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
