"""Entry file of the serving pyfunc, logged as code rather than as a pickled object.

MLflow runs this file when the model is loaded; the model's state comes only from its
artifacts (LightGBM text, calibration JSON, serving JSON) in ``load_context``.
"""

from mlflow.models import set_model

from pipeline.adapters.serving import ClosureRiskModel

set_model(ClosureRiskModel())
