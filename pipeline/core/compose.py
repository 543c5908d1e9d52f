"""A sum of log-odds terms (scorecards, LightGBM boosters) written as ONE LightGBM model.

:func:`compile_terms` takes ``bias`` and terms ``[(weight, member), ...]`` and returns a
booster ``b`` with, for every row ``X`` of the feature matrix (numeric columns float,
categorical columns integer codes, NaN allowed in numeric columns)::

    b.predict(lgb_matrix(X, names, categorical), raw_score=True)
        == bias + sum(weight * raw(member, X))            (to rounding, ~1e-15)

where ``raw(Scorecard) = intercept_ + woe(X) @ coef_`` and ``raw(Booster) =
booster.predict(lgb_matrix(X, ...), raw_score=True)``. LightGBM's raw score of a random
forest (``boosting=rf``) is the *sum* of its trees (only its probability uses their
mean), so a forest whose average is meant enters with weight ``w / trees``.

How each term is written:

* a booster's trees are copied, their leaf (and internal) values times the weight; the
  split structure, categorical bit sets and the training counts and weights are kept;
* a scorecard becomes one tree per binned feature, a balanced tree of ``x <= t`` splits
  on that feature alone whose leaves hold ``weight * coef * woe`` of their bin:

  - numeric bins are ``(edges[i-1], edges[i]]``; NaN and -inf reach a leaf of the
    missing bin through a split at ``-inf`` (NaN by its default direction), +inf one
    above the largest double. When any column is LightGBM-categorical, LightGBM reads
    the matrix as float32, so an edge becomes its nearest float32: rows equal to an
    edge keep their bin, and only values within half a float32 step above an edge can
    land one bin lower;
  - categorical codes (integers) get ``(code - 0.5, code + 0.5]``; values below, above
    and between the seen codes reach leaves of the missing bin. In a column LightGBM
    reads as categorical, ``lgb_matrix`` turns negative codes into NaN, so NaN there
    goes to the bin of the scorecard's one negative code (``-1``, missing, in a table's
    encoding) or, without one, to the missing bin;
* the bias plus the scorecards' weighted intercepts is one single-leaf tree in front.

Covers. Path-dependent TreeSHAP (LightGBM's ``pred_contrib``, :mod:`pipeline.core.treeshap`)
weighs the leaves by ``leaf_count`` / ``internal_count``. A scorecard tree's
``leaf_weight`` holds the training rows of the leaf's bin (``WoeBins.counts``; a bin
reached by several leaves counts once, on the leaf NaN reaches or else the lowest one).
Its ``leaf_count`` is the same when every leaf has training rows; a leaf without any
(the +inf leaf, out-of-range codes, usually the missing bin) would make LightGBM's
TreeSHAP divide by zero, so in such a tree every count is multiplied by about
``2**31 / rows`` and each empty leaf counts 1: cover shares then differ from the
training shares by under ``empty leaves / 2**31``. Each scorecard feature's SHAP value is
``weight * coef * (woe(x) - mean woe)``, the mean weighted by those covers.

The text is built deterministically (same inputs, same bytes). Pure core: fitted models
in, a booster out.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np

from pipeline.base.errors import PipelineError
from pipeline.core.baselines import Scorecard, WoeBins

__all__ = ["ComposeError", "Member", "compile_terms", "model_text"]

Member = Scorecard | lgb.Booster
Term = tuple[float, Member]

_INT32_MAX = 2**31 - 1
_F32_EXACT = 2**24  # integers up to this size are exact in float32
_DBL_MAX = sys.float_info.max
_NAN_MISSING = 8  # decision_type bits 2-3 = 2: NaN is the missing value
_DEFAULT_LEFT = 2  # decision_type bit 1


class ComposeError(PipelineError, ValueError):
    """The terms cannot be written as one LightGBM model."""


def _num(x: float) -> str:
    """A float as the shortest text that reads back to the same double."""
    return repr(float(x) + 0.0)  # + 0.0: no "-0.0"


def _floats(values: Sequence[float]) -> str:
    return " ".join(_num(v) for v in values)


def _ints(values: Sequence[int]) -> str:
    return " ".join(str(int(v)) for v in values)


# --------------------------------------------------------------------------- entry points


def compile_terms(
    bias: float,
    terms: Sequence[Term],
    names: list[str],
    categorical: list[str],
    X_ref: np.ndarray | None = None,
) -> lgb.Booster:
    """One LightGBM booster whose raw score is ``bias + sum(weight * raw(member))``.

    ``names`` are the feature columns in matrix order, every booster member's feature
    names; ``categorical`` the columns LightGBM reads as categorical (as for
    :func:`pipeline.core.selection.lgb_matrix`, which the booster's input must go
    through). ``X_ref`` (optional, e.g. the training rows, in the raw table encoding)
    only fills the model's ``feature_infos``; without it they come from the booster
    members. Terms of weight 0 are left out. See the module docstring for the
    semantics and the covers SHAP reads.
    """
    return lgb.Booster(model_str=model_text(bias, terms, names, categorical, X_ref))


def model_text(
    bias: float,
    terms: Sequence[Term],
    names: list[str],
    categorical: list[str],
    X_ref: np.ndarray | None = None,
) -> str:
    """The LightGBM model text :func:`compile_terms` loads (deterministic)."""
    _check_names(names)
    if not np.isfinite(bias):
        raise ComposeError(f"compose: the bias must be finite, got {bias!r}")
    lgb_cat = {n for n in names if n in categorical}
    constant = float(bias)
    trees: list[list[tuple[str, str]]] = []
    infos: list[str] = []
    for k, (weight, member) in enumerate(terms):
        w = float(weight)
        if not np.isfinite(w):
            raise ComposeError(f"compose: term {k} has a non-finite weight {weight!r}")
        if isinstance(member, Scorecard):
            if w != 0.0:
                constant += w * float(member.intercept_)
                trees += _scorecard_trees(member, w, names, lgb_cat, k)
        elif isinstance(member, lgb.Booster):
            part = _BoosterText.parse(member.model_to_string(), names, k)
            infos.append(part.feature_infos)
            if w != 0.0:
                trees += [part.scaled(tree, w) for tree in part.trees]
        else:
            raise ComposeError(
                f"compose: term {k} is a {type(member).__name__}; a term is a Scorecard "
                "or a LightGBM Booster"
            )
    trees.insert(0, _constant_tree(constant))
    feature_infos = _feature_infos(names, lgb_cat, X_ref, infos)
    return _write(names, feature_infos, trees)


def _check_names(names: list[str]) -> None:
    if not names:
        raise ComposeError("compose: no feature names")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ComposeError(f"compose: feature names repeat: {dup}")
    bad = [n for n in names if not n or any(c.isspace() or c in "=:[]," for c in n)]
    if bad:
        raise ComposeError(
            f"compose: feature names {bad} cannot be written in a LightGBM model "
            "(empty, or containing whitespace, '=', ':', brackets or commas)"
        )


# --------------------------------------------------------------------------- writing


def _write(names: list[str], feature_infos: list[str], trees: list[list[tuple[str, str]]]) -> str:
    blocks = []
    for i, tree in enumerate(trees):
        body = "\n".join(f"{key}={value}" for key, value in tree)
        blocks.append(f"Tree={i}\n{body}\n\n\n")
    header = [
        "tree",
        "version=v4",
        "num_class=1",
        "num_tree_per_iteration=1",
        "label_index=0",
        f"max_feature_idx={len(names) - 1}",
        "objective=binary sigmoid:1",
        f"feature_names={' '.join(names)}",
        f"feature_infos={' '.join(feature_infos)}",
        f"tree_sizes={' '.join(str(len(b.encode())) for b in blocks)}",
    ]
    return "\n".join(header) + "\n\n" + "".join(blocks) + "end of trees\n"


def _constant_tree(value: float) -> list[tuple[str, str]]:
    """A single-leaf tree: the same value for every row (SHAP: expected value only)."""
    empty = ("split_feature", "split_gain", "threshold", "decision_type")
    out = [("num_leaves", "1"), ("num_cat", "0")]
    out += [(key, "") for key in empty]
    out += [("left_child", ""), ("right_child", ""), ("leaf_value", _num(value))]
    out += [("leaf_weight", ""), ("leaf_count", "1")]
    out += [("internal_value", ""), ("internal_weight", ""), ("internal_count", "")]
    return out + [("is_linear", "0"), ("shrinkage", "1")]


def _feature_infos(
    names: list[str], lgb_cat: set[str], X_ref: np.ndarray | None, member_infos: list[str]
) -> list[str]:
    """Per column ``[min:max]`` (numeric) or its codes (categorical); ``none`` if unknown."""
    lo = np.full(len(names), np.inf)
    hi = np.full(len(names), -np.inf)
    codes: list[set[int]] = [set() for _ in names]
    if X_ref is not None:
        X = np.asarray(X_ref, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(names):
            raise ComposeError(
                f"compose: X_ref must have shape (rows, {len(names)}), got {X.shape}"
            )
        for j, name in enumerate(names):
            x = X[:, j][np.isfinite(X[:, j])]
            if name in lgb_cat:
                codes[j].update(int(v) for v in x[x >= 0])
            elif x.size:
                lo[j], hi[j] = float(x.min()), float(x.max())
    else:
        for text in member_infos:
            for j, info in enumerate(text.split(" ")):
                if info.startswith("[") and info.endswith("]"):
                    a, _, b = info[1:-1].partition(":")
                    lo[j], hi[j] = min(lo[j], float(a)), max(hi[j], float(b))
                elif info != "none":
                    codes[j].update(int(v) for v in info.split(":") if int(v) >= 0)
    out = []
    for j, name in enumerate(names):
        if name in lgb_cat:
            out.append(":".join(str(c) for c in sorted(codes[j])) or "none")
        else:
            out.append(f"[{_num(lo[j])}:{_num(hi[j])}]" if lo[j] <= hi[j] else "none")
    return out


# --------------------------------------------------------------------------- boosters


@dataclass
class _BoosterText:
    """A booster's model text: its feature infos and tree blocks as (key, value) pairs."""

    feature_infos: str
    trees: list[list[tuple[str, str]]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, names: list[str], k: int) -> _BoosterText:
        head, _, rest = text.partition("\nTree=")
        header = dict(line.partition("=")[::2] for line in head.splitlines())
        where = f"compose: term {k} (LightGBM booster)"
        if header.get("num_class", "1") != "1" or header.get("num_tree_per_iteration") != "1":
            raise ComposeError(f"{where}: only single-output (binary) boosters can be composed")
        if header.get("feature_names", "").split(" ") != names:
            raise ComposeError(
                f"{where}: its feature names {header.get('feature_names', '').split(' ')} "
                f"differ from the model's {names}"
            )
        out = cls(feature_infos=header.get("feature_infos", ""))
        body = rest.partition("end of trees")[0] if rest else ""
        for block in ("Tree=" + body).split("Tree=")[1:]:
            lines = [ln for ln in block.splitlines()[1:] if "=" in ln]
            tree = [(key, value) for key, _, value in (ln.partition("=") for ln in lines)]
            if dict(tree).get("is_linear", "0") != "0":
                raise ComposeError(f"{where}: linear trees cannot be composed")
            out.trees.append(tree)
        return out

    @staticmethod
    def scaled(tree: list[tuple[str, str]], weight: float) -> list[tuple[str, str]]:
        """The tree with leaf and internal values times ``weight`` (all else kept)."""
        out = []
        for key, value in tree:
            if key in ("leaf_value", "internal_value") and value:
                value = _floats([weight * float(v) for v in value.split(" ")])
            out.append((key, value))
        return out


# --------------------------------------------------------------------------- scorecards


@dataclass(frozen=True)
class _Regions:
    """A feature's real line cut at ``thresholds``: region i is (t[i-1], t[i]]."""

    thresholds: list[float]
    bins: list[int]  # the scorecard bin of each region (one more than thresholds)
    nan_region: int  # the region NaN is sent to


def _scorecard_trees(
    card: Scorecard, weight: float, names: list[str], lgb_cat: set[str], k: int
) -> list[list[tuple[str, str]]]:
    if not card.bins_ or len(card.bins_) != len(card.coef_):
        raise ComposeError(f"compose: term {k} is a scorecard that is not fitted")
    f32 = bool(lgb_cat)  # lgb_matrix reads the whole matrix as float32 then
    out = []
    for bins, coef in zip(card.bins_, card.coef_, strict=True):
        if bins.feature not in names:
            raise ComposeError(
                f"compose: term {k}: scorecard feature {bins.feature!r} is not among {names}"
            )
        where = f"compose: term {k}, scorecard feature {bins.feature!r}"
        if bins.categorical:
            regions = _code_regions(bins, bins.feature in lgb_cat, f32, where)
        elif bins.feature in lgb_cat:
            raise ComposeError(
                f"{where}: binned as numbers but categorical for LightGBM, which reads its "
                "negative values as missing; bin it as categorical or list it as numeric"
            )
        else:
            regions = _numeric_regions(bins, f32)
        values = [weight * float(coef) * float(v) for v in bins.woe]
        out.append(_region_tree(names.index(bins.feature), regions, values, bins.counts))
    return out


def _numeric_regions(bins: WoeBins, f32: bool) -> _Regions:
    """[-inf] and NaN, the bins, (max double, +inf]; the last two go to the missing bin."""
    edges = [float(np.float32(e)) if f32 else float(e) for e in bins.edges]
    missing = len(bins.woe) - 1
    return _Regions(
        thresholds=[-np.inf, *edges, _DBL_MAX],
        bins=[missing, *range(len(edges) + 1), missing],
        nan_region=0,
    )


def _code_regions(bins: WoeBins, lgb_categorical: bool, f32: bool, where: str) -> _Regions:
    """(code - 0.5, code + 0.5] per seen code, valued by the code's bin (several codes
    may share one); below, between and above: the missing bin."""
    missing = len(bins.woe) - 1
    limit = _F32_EXACT if f32 else 2**53
    for c in bins.codes:
        if c != round(c) or abs(c) > limit:
            raise ComposeError(f"{where}: code {c!r} is not an integer exact in the model")
    seen = [
        (c, bins.bin_of_code(i)) for i, c in enumerate(bins.codes) if c >= 0 or not lgb_categorical
    ]
    negative = [i for i, c in enumerate(bins.codes) if c < 0 and lgb_categorical]
    if len({bins.bin_of_code(i) for i in negative}) > 1:
        raise ComposeError(
            f"{where}: codes {[bins.codes[i] for i in negative]} are all read as missing "
            "by LightGBM (negative codes of a categorical column), but lie in different bins"
        )
    thresholds: list[float] = []
    labels = [missing]
    for c, i in sorted(seen):
        if not thresholds or thresholds[-1] < c - 0.5:
            thresholds.append(c - 0.5)
        else:  # the previous code's region ends where this one starts
            labels.pop()
        thresholds.append(c + 0.5)
        labels += [i, missing]
    if negative:
        # LightGBM reads any negative code of a categorical column as missing; so does
        # this tree: the code itself (raw rows) and NaN (rows through ``lgb_matrix``)
        # both reach the region below the lowest seen code, which takes the code's bin
        labels[0] = bins.bin_of_code(negative[0])
    return _Regions(thresholds, labels, nan_region=0)


def _covers(regions: _Regions, counts: list[int]) -> tuple[list[int], list[int]]:
    """Training rows per leaf (each bin's rows on one leaf) and the covers SHAP reads."""
    rows = [0] * len(regions.bins)
    placed: set[int] = set()
    order = [regions.nan_region, *range(len(regions.bins))]
    for r in order:
        b = regions.bins[r]
        if b not in placed:
            rows[r] = int(counts[b])
            placed.add(b)
    if min(rows) > 0:
        return rows, rows
    total = sum(rows)
    scale = max(1, (_INT32_MAX - len(rows)) // max(total, 1))
    return rows, [r * scale if r > 0 else 1 for r in rows]


@dataclass
class _Nodes:
    """Internal nodes of one tree in pre-order: threshold region, children, leaf span."""

    split: list[int] = field(default_factory=list)  # threshold index
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    span: list[tuple[int, int]] = field(default_factory=list)  # leaves lo..hi below

    def grow(self, lo: int, hi: int) -> int:
        """A balanced subtree over leaves ``lo..hi``: its node index, or ~leaf."""
        if lo == hi:
            return ~lo
        k = len(self.split)
        mid = (lo + hi) // 2
        self.split.append(mid)
        self.left.append(0)
        self.right.append(0)
        self.span.append((lo, hi))
        self.left[k] = self.grow(lo, mid)
        self.right[k] = self.grow(mid + 1, hi)
        return k


def _region_tree(
    feature: int, regions: _Regions, bin_values: list[float], counts: list[int]
) -> list[tuple[str, str]]:
    """The tree of one scorecard feature: a leaf per region, valued by its bin."""
    values = [bin_values[b] for b in regions.bins]
    rows, cover = _covers(regions, counts)
    nodes = _Nodes()
    nodes.grow(0, len(values) - 1)
    n_cover = np.cumsum([0, *cover])
    n_rows = np.cumsum([0.0, *rows])
    vc = np.cumsum([0.0, *(v * c for v, c in zip(values, cover, strict=True))])
    vr = np.cumsum([0.0, *(v * r for v, r in zip(values, rows, strict=True))])
    vvr = np.cumsum([0.0, *(v * v * r for v, r in zip(values, rows, strict=True))])

    def sse(lo: int, hi: int) -> float:  # squared deviations from the mean, training rows
        n = n_rows[hi + 1] - n_rows[lo]
        s = vr[hi + 1] - vr[lo]
        return float(vvr[hi + 1] - vvr[lo] - (s * s / n if n > 0 else 0.0))

    gain, internal = [], []
    decision = []
    for mid, (lo, hi) in zip(nodes.split, nodes.span, strict=True):
        gain.append(max(0.0, sse(lo, hi) - sse(lo, mid) - sse(mid + 1, hi)))
        internal.append(float((vc[hi + 1] - vc[lo]) / (n_cover[hi + 1] - n_cover[lo])))
        nan_left = lo <= regions.nan_region <= mid
        decision.append(_NAN_MISSING | (_DEFAULT_LEFT if nan_left else 0))
    spans = nodes.span
    return [
        ("num_leaves", str(len(values))),
        ("num_cat", "0"),
        ("split_feature", _ints([feature] * len(nodes.split))),
        ("split_gain", _floats(gain)),
        ("threshold", _floats([regions.thresholds[m] for m in nodes.split])),
        ("decision_type", _ints(decision)),
        ("left_child", _ints(nodes.left)),
        ("right_child", _ints(nodes.right)),
        ("leaf_value", _floats(values)),
        ("leaf_weight", _floats(rows)),
        ("leaf_count", _ints(cover)),
        ("internal_value", _floats(internal)),
        ("internal_weight", _floats([n_rows[hi + 1] - n_rows[lo] for lo, hi in spans])),
        ("internal_count", _ints([int(n_cover[hi + 1] - n_cover[lo]) for lo, hi in spans])),
        ("is_linear", "0"),
        ("shrinkage", "1"),
    ]
