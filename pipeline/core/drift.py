"""Drift between the training and the out-of-time rows, named in words.

An out-of-time figure is only a figure of the model's quality when the out-of-time rows
come from the population the model was trained on. This module says where they do not:

* the score's population stability index (PSI) between training and out-of-time rows;
* the features whose PSI is 0.25 or more (the usual "major shift" band: below 0.10 is
  stable, 0.10-0.25 a moderate shift);
* ``extrapolated``: the features among the model's ten largest mean |SHAP| whose
  out-of-time values fall outside the training range for more than 5% of rows, or
  whose PSI is 0.25 or more: where trees score rows they have never seen, or a mix
  they were not fitted on;
* a regime (tightening stage) that only out-of-time rows are in: then the out-of-time
  figures measure extrapolation to a new regime;
* how many out-of-time rows belong to borrowers who also have training rows: an
  out-of-time test is not an out-of-borrower test.

Pure: tables and arrays in, a dict (with its warning sentences) out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: PSI from which a shift is major
PSI_MAJOR = 0.25
#: PSI from which a shift is moderate
PSI_MODERATE = 0.10
#: share of out-of-time values outside the training range from which a feature is
#: called extrapolated
OUTSIDE_SHARE = 0.05
#: how many of the model's largest drivers are checked
TOP_DRIVERS = 10

REGIME_WORDS = {0: "no tightening", 1: "the pilot tightening", 2: "the full tightening"}


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return x


def drift_summary(
    stability: pd.DataFrame,
    importance: Sequence[tuple[str, float]],
    score_psi: float,
    train_regimes: np.ndarray | None = None,
    oot_regimes: np.ndarray | None = None,
    train_borrowers: np.ndarray | None = None,
    oot_borrowers: np.ndarray | None = None,
) -> dict[str, Any]:
    """The summary's ``drift`` part, with a ``warnings`` list of sentences.

    ``stability`` has one row per feature: ``feature``, ``family``, ``psi_train_oot``
    and ``oot_outside_train_range`` (the features stage's ``stability.csv``);
    ``importance`` the model's features by mean |SHAP|, largest first.
    """
    stab = stability.set_index("feature") if "feature" in stability.columns else stability
    psi = {str(k): _num(v) for k, v in stab.get("psi_train_oot", pd.Series()).items()}
    outside = {str(k): _num(v) for k, v in stab.get("oot_outside_train_range", pd.Series()).items()}
    family = {str(k): str(v) for k, v in stab.get("family", pd.Series()).items()}

    major = sorted((f for f, v in psi.items() if v >= PSI_MAJOR), key=lambda f: -psi[f])
    top = [str(f) for f, _ in list(importance)[:TOP_DRIVERS]]
    extrapolated: list[str] = []
    detail: list[dict[str, Any]] = []
    warnings: list[str] = []
    for rank, name in enumerate(top, start=1):
        p, o = psi.get(name, float("nan")), outside.get(name, float("nan"))
        reasons = []
        if p >= PSI_MAJOR:
            reasons.append(
                f"its PSI between training and out-of-time rows is {p:.2f} (0.25 or more)"
            )
        if o > OUTSIDE_SHARE:
            reasons.append(
                f"{o:.1%} of its out-of-time values lie outside its training range, where "
                "the trees answer as for the nearest training value"
            )
        if not reasons:
            continue
        extrapolated.append(name)
        detail.append({"feature": name, "rank": rank, "psi": p, "outside_share": o})
        warnings.append(
            f"drift: {name} (the model's #{rank} driver by mean |SHAP|): " + "; ".join(reasons)
        )

    out: dict[str, Any] = {
        "score_psi": float(score_psi),
        "n_features_psi_over_0_25": len(major),
        "features_psi_over_0_25": [
            {"feature": f, "family": family.get(f, ""), "psi": psi[f]} for f in major
        ],
        "extrapolated": extrapolated,
        "extrapolated_detail": detail,
    }
    if math.isfinite(score_psi) and score_psi >= PSI_MAJOR:
        warnings.insert(
            0,
            f"drift: the score's PSI between training and out-of-time rows is {score_psi:.2f} "
            "(0.25 or more): the out-of-time figures mix the model's quality with a shifted "
            "population",
        )
    elif math.isfinite(score_psi) and score_psi >= PSI_MODERATE:
        warnings.insert(
            0,
            f"drift: the score's PSI between training and out-of-time rows is {score_psi:.2f} "
            "(a moderate shift, 0.10-0.25)",
        )
    rest = [f for f in major if f not in extrapolated]
    if rest:
        named = ", ".join(f"{f} ({family.get(f, '?')}, PSI {psi[f]:.2f})" for f in rest)
        warnings.append(
            f"drift: {len(rest)} more feature(s) outside the model's top {TOP_DRIVERS} drivers "
            f"have PSI 0.25 or more: {named}"
        )
    if train_regimes is not None and oot_regimes is not None and len(oot_regimes):
        seen = {int(v) for v in np.unique(train_regimes)}
        new = sorted({int(v) for v in np.unique(oot_regimes)} - seen)
        out["unseen_regimes"] = new
        if new:
            words = ", ".join(REGIME_WORDS.get(v, str(v)) for v in new)
            share = float(np.isin(oot_regimes, new).mean())
            warnings.append(
                f"extrapolation: {share:.0%} of the out-of-time rows are under {words}, which "
                "no training row was: the out-of-time figures measure how the model "
                "extrapolates to a regime it never saw, not its quality in the one it learned"
            )
    if train_borrowers is not None and oot_borrowers is not None and len(oot_borrowers):
        share = float(np.isin(oot_borrowers, np.unique(train_borrowers)).mean())
        out["oot_rows_of_training_borrowers"] = share
    out["warnings"] = warnings
    return out


def borrower_overlap_sentence(share: float) -> str:
    """What an out-of-time test is not, in words."""
    return (
        f"out-of-time is not out-of-borrower: {share:.0%} of the out-of-time rows belong to "
        "borrowers who also have training rows (later months of the same accounts)"
    )


#: a segment's AUC this far below the whole's is a weak spot (when beyond noise)
AUC_FALL = 0.05
#: the segment views checked for weak spots: summary key -> words
SEGMENT_VIEWS = {
    "oot_by_occupation": "occupation",
    "oot_by_city_tier": "city tier",
    "oot_by_tenure_band": "tenure band",
    "oot_by_regime": "regime",
}


def segment_warnings(
    whole: dict[str, Any], views: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Segments whose out-of-time AUC falls more than :data:`AUC_FALL` below the whole's.

    ``whole`` holds the out-of-time ``auc``, ``auc_se`` and ``n``; ``views`` the summary's
    segment views (:data:`SEGMENT_VIEWS` keys: value -> metrics with ``auc``, ``auc_se``
    and ``n``). A segment is flagged only when its fall is also beyond noise: more than
    1.96 standard errors of the difference, taken as ``sqrt(se_segment² + se_whole²)``
    (a segment is part of the whole, so the true error is smaller: the test errs on the
    side of flagging less).
    """
    auc, se_w = _num(whole.get("auc")), _num(whole.get("auc_se"))
    detail: list[dict[str, Any]] = []
    words: list[str] = []
    if not math.isfinite(auc):
        return detail, words
    for key, label in SEGMENT_VIEWS.items():
        view = views.get(key)
        if not isinstance(view, dict):
            continue
        for value, m in view.items():
            if not isinstance(m, dict):
                continue
            a, se, n = _num(m.get("auc")), _num(m.get("auc_se")), _num(m.get("n"))
            fall = auc - a
            se_fall = math.sqrt(se**2 + (se_w if math.isfinite(se_w) else 0.0) ** 2)
            if not (math.isfinite(fall) and math.isfinite(se_fall)):
                continue
            if fall > AUC_FALL and fall > 1.96 * se_fall:
                detail.append(
                    {"segment": label, "value": value, "auc": a, "auc_se": se, "n": n, "fall": fall}
                )
                words.append(
                    f"weak spot: {label} {value}: out-of-time AUC {a:.3f} (SE {se:.3f}, "
                    f"{int(n):,} rows) is {fall:.3f} below the whole's {auc:.3f} "
                    f"(SE {se_w:.3f}), more than {AUC_FALL} and beyond noise "
                    f"({fall / se_fall:.1f} standard errors)"
                )
    return detail, words


def calibration_warnings(cal: dict[str, Any]) -> list[str]:
    """A warning for each split where calibration made the expected calibration error
    worse than the raw score's, with the paired Brier change and its standard error."""
    out = []
    for split, name in (("valid", "validation"), ("oot", "out-of-time")):
        before, after = _num(cal.get(f"{split}_ece_before")), _num(cal.get(f"{split}_ece_after"))
        if not (math.isfinite(before) and math.isfinite(after)) or after <= before:
            continue
        text = (
            f"calibration: on the {name} rows the expected calibration error is worse after "
            f"calibration ({after:.4f}) than before ({before:.4f})"
        )
        b, b_se, n = (
            _num(cal.get(f"{split}_brier_diff")),
            _num(cal.get(f"{split}_brier_diff_se")),
            _num(cal.get(f"{split}_rows")),
        )
        if math.isfinite(b) and math.isfinite(b_se):
            text += (
                f"; the Brier score changes by {b:+.5f} (SE {b_se:.5f}) on the same {int(n):,} rows"
            )
        out.append(text)
    return out
