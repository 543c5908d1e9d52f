"""One truth for "the current model": the hostile cases of the registry surface.

A training run that registered its model and then died before publishing, or a run with
tracking off that published a model the registry never saw, left the registry's champion
and ``models/`` describing different models; ``score`` (``model_source=auto``) then
silently scored with the champion while the summary and report described the other.
"""

from __future__ import annotations

import pytest
from helpers import TINY, compose_config

from pipeline.base.io import DataError
from pipeline.stages.driver import execute

pytestmark = pytest.mark.slow

LIGHT = [*TINY, "model.baselines=false", "explain.advice_rows=0"]


def _score(root, *extra: str) -> dict:
    out = root / f"scores{len(extra)}.parquet"
    return execute(compose_config(root, [*LIGHT, f"score.output={out}", *extra], "score"), [])


def test_score_refuses_a_champion_that_is_not_the_published_model(tmp_path):
    for stage in ("generate", "features", "train"):
        execute(compose_config(tmp_path, LIGHT, stage), [])
    # the champion is the published model: scored as before
    _score(tmp_path)
    # a second model published without the registry knowing
    execute(compose_config(tmp_path, [*LIGHT, "tracking=off", "model.num_leaves=5"], "train"), [])
    with pytest.raises(
        DataError, match=r"is not the model published in .*model\.txt.*model_source"
    ):
        _score(tmp_path, "score.overwrite=true")
    # told which one to use, each works
    _score(tmp_path, "score.model_source=local", "score.overwrite=true")
    _score(tmp_path, "score.model_source=registry", "score.overwrite=true", "score.top_k=2")
