"""Reasons the row supports, in all three outputs: the batch reasons file, the `score`
output and the served model's answers (issue: no reason may break the rule)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import reason_rule_breaches

from pipeline.adapters.catalog import load_scoring_model
from pipeline.core.scoring import score_frame


@pytest.mark.slow
def test_no_reason_breaks_the_rule_in_batch_score_or_served(trained_world):
    root, cfg, _ = trained_world
    meta = json.loads((root / "models" / "model.json").read_text())
    names, reference = list(meta["feature_names"]), meta["reference"]
    assert len(reference) == len(names)
    floor = float(min(cfg.score.tier_cuts))
    model = load_scoring_model(root / "models")
    feats = pd.read_parquet(root / "data" / "processed" / "features.parquet")
    oot = feats[feats.split == "oot"]

    # 1. the explain stage's reasons file, against its own rows
    reasons = pd.read_parquet(root / "models" / "reasons.parquet")
    rows = reasons[["borrower_id", "snapshot"]].merge(oot, on=["borrower_id", "snapshot"])
    assert len(rows) == len(reasons)
    X = rows[names].to_numpy(dtype=np.float32)
    bad = reason_rule_breaches(reasons, model.booster, X, names, reference, floor)
    assert not bad, bad[:10]
    low = reasons.probability < floor
    assert low.any() and (~low).any()  # both kinds of row are checked
    assert (reasons.reason_1_cause[~low] != "").mean() > 0.5

    # 2. `score` (batch scoring of new borrowers)
    sample = oot.drop_duplicates("borrower_id").head(400).reset_index(drop=True)
    scored = score_frame(
        model,
        sample,
        "borrower_id",
        list(cfg.score.tier_cuts),
        list(cfg.score.tier_names),
        int(cfg.score.top_k),
        advice_rows=0,
    )
    Xs = sample[names].to_numpy(dtype=np.float32)
    bad = reason_rule_breaches(scored, model.booster, Xs, names, reference, floor)
    assert not bad, bad[:10]

    # 3. the served model (the pyfunc registered as champion)
    import mlflow
    import mlflow.pyfunc

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{root}/mlflow.db")
    served = mlflow.pyfunc.load_model("models:/closure-risk-lgbm-serving@champion")
    request = sample[["borrower_id", *names]].astype({n: np.float64 for n in names})
    answer = served.predict(request)
    bad = reason_rule_breaches(answer, model.booster, Xs, names, reference, floor)
    assert not bad, bad[:10]
    assert answer.probability.to_numpy() == pytest.approx(scored.probability.to_numpy())
