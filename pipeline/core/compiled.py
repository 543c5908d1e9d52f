"""LightGBM's predictions through a compiled QuickScorer kernel, equal to ``Booster.predict``.

``Booster.predict`` walks every tree node by node; each step is a branch that the
processor guesses wrong about half of the time. QuickScorer (Lucchese et al., "QuickScorer:
a fast algorithm to rank documents with additive ensembles of regression trees", SIGIR
2015) turns the walk around: the split nodes of all trees are sorted by feature and
threshold, and a row visits, feature by feature, only the nodes whose test it fails
(``x > threshold``: the row goes right). Each such node clears, in its tree's bit vector
of leaves, the leaves of its left subtree; once every feature is done, the leftmost leaf
still set in a tree is the leaf the row reaches. Rows go through in groups of
:data:`GROUP` in lockstep (the vectorised variant, Lucchese et al., "Exploiting CPU SIMD
extensions to speed-up document scoring with tree ensembles", SIGIR 2016): one node's
test is made for the whole group, and a feature's scan stops when no row of the group
fails the next threshold. The kernel is numba, in parallel over blocks of groups.

Equal means equal: the leaves are summed tree by tree in LightGBM's order, in double,
from the same thresholds (read back exactly from the model dump), with LightGBM's rules
for missing values (a NaN under ``missing_type=None`` compares as 0.0, under ``NaN`` it
takes the node's default side, and values within 1e-35 of zero are zero), and the
binary objective's sigmoid and the multiclass objective's softmax are LightGBM's formulas
(a multiclass model's trees take turns by class: tree ``t`` adds to class ``t % K``). :func:`predict` checks it on every
call's first rows against ``Booster.predict`` and falls back to LightGBM (with one
warning) if they differ by more than :data:`TOLERANCE`.

What the kernel does not take (and :func:`compile_booster` says why, so the caller uses
LightGBM): categorical splits, ``missing_type=Zero``, linear trees, more than 64 leaves in
a tree, one-vs-all multiclass (``multiclassova``), averaged forests (``boosting=rf``), and
objectives other than binary, multiclass and plain regression (``reg_sqrt`` included).
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

#: the largest leaf count a tree may have (one bit per leaf in a 64-bit word)
MAX_LEAVES = 64
#: the largest difference from ``Booster.predict`` the check accepts, raw or probability
TOLERANCE = 1e-9
#: the rows each call checks against ``Booster.predict`` (its first ones)
CHECK_ROWS = 256
#: LightGBM's zero threshold: a value this close to zero is zero
ZERO = 1e-35
#: rows scored in lockstep (V-QuickScorer): one node's test is made for all of them at once
GROUP = 64
#: groups per parallel task
GROUPS_PER_BLOCK = 16
DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_DEBRUIJN = 0x03F79D71B4CB0A89


def _debruijn_table() -> np.ndarray:
    """Position of a word's lowest set bit from ``(w & -w) * _DEBRUIJN >> 58``."""
    table = np.zeros(64, dtype=np.int64)
    for k in range(64):
        table[(((1 << k) * _DEBRUIJN) & 0xFFFFFFFFFFFFFFFF) >> 58] = k
    return table


_LOWEST_BIT = _debruijn_table()


@dataclass(frozen=True)
class CompiledModel:
    """A LightGBM model's split nodes sorted for QuickScorer, and its leaves."""

    n_features: int
    start: np.ndarray  # int64 (n_features + 1): the nodes of feature f are start[f]:start[f+1]
    thresholds: np.ndarray  # float64, ascending within a feature
    tree: np.ndarray  # int32: the node's tree
    mask: np.ndarray  # uint32 (every tree <= 32 leaves) or uint64: the tree's leaves without the node's left subtree
    nan_right: np.ndarray  # bool: a missing value goes right at this node
    leaves: np.ndarray  # float64 (n_trees, MAX_LEAVES), left to right
    sigmoid: float  # the binary objective's scale; 0.0 for a raw (regression) output
    n_classes: int = 1  # outputs per row: K of a multiclass (softmax) model, else 1

    @property
    def n_trees(self) -> int:
        return int(self.leaves.shape[0])


def _unsupported(dump: dict[str, Any], booster: Any) -> str | None:
    """Why the kernel cannot reproduce this model (None: it can)."""
    objective = str(dump.get("objective", "")).split(" ")[0]
    per_iteration = int(dump.get("num_tree_per_iteration", 1))
    n_class = int(dump.get("num_class", 1))
    if objective == "multiclass" and per_iteration != n_class:
        return "a multiclass model whose trees do not take turns by class"
    if objective != "multiclass" and (per_iteration != 1 or n_class != 1):
        return "several outputs per row"
    if objective not in ("binary", "regression", "multiclass"):
        return f"objective {objective!r}"
    if "sqrt" in str(dump.get("objective", "")).split(" ")[1:]:
        return "a regression on the square root (reg_sqrt)"
    if dump.get("average_output"):
        return "an averaged forest (boosting=rf)"
    params = getattr(booster, "params", {}) or {}
    if params.get("linear_tree"):
        return "linear trees"
    for info in dump["tree_info"]:
        if int(info.get("num_leaves", 1)) > MAX_LEAVES:
            return f"a tree with more than {MAX_LEAVES} leaves"
        if int(info.get("num_cat", 0)) > 0:
            return "categorical splits"
    return None


def _nodes_of(
    tree: dict[str, Any], t: int, out: list[tuple[int, float, int, int, bool]]
) -> list[float]:
    """Append tree ``t``'s split nodes to ``out``; return its leaf values, left to right."""
    leaves: list[float] = []

    def walk(node: dict[str, Any]) -> None:
        if "split_index" not in node:
            if node.get("leaf_coeff"):
                raise ValueError("linear trees")
            leaves.append(float(node["leaf_value"]))
            return
        if node.get("decision_type") != "<=":
            raise ValueError("categorical splits")
        missing = str(node.get("missing_type", "None"))
        if missing not in ("None", "NaN"):
            raise ValueError(f"missing_type={missing}")
        first = len(leaves)
        walk(node["left_child"])
        left = sum(1 << k for k in range(first, len(leaves)))
        walk(node["right_child"])
        threshold = float(node["threshold"])
        # where a missing value goes: as 0.0 under None, the default side under NaN
        nan_right = (0.0 > threshold) if missing == "None" else not bool(node["default_left"])
        out.append((int(node["split_feature"]), threshold, t, 0xFFFFFFFFFFFFFFFF ^ left, nan_right))

    walk(tree["tree_structure"])
    return leaves


def compile_booster(
    booster: Any, num_iteration: int | None = None
) -> tuple[CompiledModel | None, str]:
    """The compiled form of ``booster`` and ``""``, or None and why it cannot be compiled.

    ``num_iteration`` follows ``Booster.predict``: None means the best iteration when the
    booster has one, else every tree.
    """
    if num_iteration is None:
        best = int(getattr(booster, "best_iteration", 0) or 0)
        num_iteration = best if best > 0 else None
    dump = booster.dump_model(num_iteration=num_iteration)
    why = _unsupported(dump, booster)
    if why is not None:
        return None, why
    nodes: list[tuple[int, float, int, int, bool]] = []
    leaves = np.zeros((len(dump["tree_info"]), MAX_LEAVES), dtype=np.float64)
    try:
        for t, tree in enumerate(dump["tree_info"]):
            values = _nodes_of(tree, t, nodes)
            leaves[t, : len(values)] = values
    except ValueError as exc:
        return None, str(exc)
    n_features = int(dump["max_feature_idx"]) + 1
    # 32-bit words where every tree fits: half the memory the row groups work in
    narrow = all(int(info.get("num_leaves", 1)) <= 32 for info in dump["tree_info"])
    nodes.sort(key=lambda n: (n[0], n[1]))
    feature = np.array([n[0] for n in nodes], dtype=np.int64)
    objective = str(dump.get("objective", ""))
    sigmoid = 0.0
    if objective.startswith("binary"):
        sigmoid = (
            float(objective.split("sigmoid:")[1].split()[0]) if "sigmoid:" in objective else 1.0
        )
    model = CompiledModel(
        n_features=n_features,
        start=np.searchsorted(feature, np.arange(n_features + 1)).astype(np.int64),
        thresholds=np.array([n[1] for n in nodes], dtype=np.float64),
        tree=np.array([n[2] for n in nodes], dtype=np.int32),
        mask=np.array(
            [n[3] & 0xFFFFFFFF if narrow else n[3] for n in nodes],
            dtype=np.uint32 if narrow else np.uint64,
        ),
        nan_right=np.array([n[4] for n in nodes], dtype=np.bool_),
        leaves=leaves,
        sigmoid=sigmoid,
        n_classes=int(dump.get("num_class", 1)) if objective.startswith("multiclass") else 1,
    )
    return model, ""


@njit(parallel=True, cache=True)
def _quickscorer(  # pragma: no cover - compiled
    X: np.ndarray,
    start: np.ndarray,
    thresholds: np.ndarray,
    tree: np.ndarray,
    mask: np.ndarray,
    nan_right: np.ndarray,
    leaves: np.ndarray,
    lowest: np.ndarray,
    sigmoid: float,
    group: int,
    ones: Any,
    n_classes: int,
    softmax: bool,
) -> np.ndarray:
    n = X.shape[0]
    n_trees = leaves.shape[0]
    n_features = start.shape[0] - 1
    out = np.empty((n, n_classes), dtype=np.float64)
    n_groups = (n + group - 1) // group
    n_blocks = (n_groups + GROUPS_PER_BLOCK - 1) // GROUPS_PER_BLOCK
    for b in prange(n_blocks):
        bits = np.empty((n_trees, group), dtype=mask.dtype)  # [tree, row of the group]
        xs = np.empty(group, dtype=np.float64)
        acc = np.empty(n_classes, dtype=np.float64)  # a multiclass row's raw outputs
        for g in range(b * GROUPS_PER_BLOCK, min(n_groups, (b + 1) * GROUPS_PER_BLOCK)):
            lo = g * group
            m = min(group, n - lo)
            bits[:, :] = ones
            for f in range(n_features):
                missing = False
                for r in range(group):
                    x = float(X[lo + r, f]) if r < m else -np.inf  # padding fails no node
                    if x != x:
                        missing = True
                    elif abs(x) <= 1e-35:
                        x = 0.0
                    xs[r] = x
                if missing:  # a row without a value: every node of the feature, its own rule
                    for k in range(start[f], start[f + 1]):
                        th = thresholds[k]
                        for r in range(group):
                            x = xs[r]
                            right = nan_right[k] if x != x else x > th
                            if right:
                                bits[tree[k], r] &= mask[k]
                    continue
                # the group's rows in lockstep, until no row fails the next (larger) threshold
                for k in range(start[f], start[f + 1]):
                    th = thresholds[k]
                    t = tree[k]
                    mk = mask[k]
                    any_right = False
                    for r in range(group):
                        right = xs[r] > th
                        bits[t, r] &= mk if right else ones
                        any_right |= right
                    if not any_right:
                        break
            for r in range(m):
                if n_classes == 1:
                    s = 0.0
                    for t in range(n_trees):
                        w = np.uint64(bits[t, r])
                        low = w & (~w + np.uint64(1))
                        s += leaves[t, lowest[(low * DEBRUIJN) >> np.uint64(58)]]
                    if sigmoid > 0.0:
                        s = 1.0 / (1.0 + math.exp(-sigmoid * s))
                    out[lo + r, 0] = s
                    continue
                for c in range(n_classes):
                    acc[c] = 0.0
                for t in range(n_trees):  # each class's trees summed in their order
                    w = np.uint64(bits[t, r])
                    low = w & (~w + np.uint64(1))
                    acc[t % n_classes] += leaves[t, lowest[(low * DEBRUIJN) >> np.uint64(58)]]
                if softmax:  # LightGBM's: shifted by the largest, then normalised
                    wmax = acc[0]
                    for c in range(1, n_classes):
                        wmax = max(acc[c], wmax)
                    wsum = 0.0
                    for c in range(n_classes):
                        acc[c] = math.exp(acc[c] - wmax)
                        wsum += acc[c]
                    for c in range(n_classes):
                        acc[c] /= wsum
                for c in range(n_classes):
                    out[lo + r, c] = acc[c]
    return out


def predict_compiled(model: CompiledModel, X: np.ndarray, raw_score: bool = False) -> np.ndarray:
    """The model's output for the rows of ``X`` (float32 or float64, one column per feature):
    one value per row, or ``(n, K)`` for a multiclass model, as ``Booster.predict``."""
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.ndim != 2 or X.shape[1] != model.n_features:
        raise ValueError(
            f"the model takes {model.n_features} features per row, got an array of shape {X.shape}"
        )
    out = _quickscorer(
        np.ascontiguousarray(X),
        model.start,
        model.thresholds,
        model.tree,
        model.mask,
        model.nan_right,
        model.leaves,
        _LOWEST_BIT,
        0.0 if raw_score else model.sigmoid,
        GROUP,
        model.mask.dtype.type(np.iinfo(model.mask.dtype).max),  # every leaf still possible
        model.n_classes,
        model.n_classes > 1 and not raw_score,
    )
    return out[:, 0] if model.n_classes == 1 else out


# one compiled form per booster and iteration count, dropped with the booster
_CACHE: weakref.WeakKeyDictionary[Any, dict[int | None, tuple[CompiledModel | None, str]]] = (
    weakref.WeakKeyDictionary()
)
_WARNED: set[str] = set()


def _compiled(booster: Any, num_iteration: int | None) -> tuple[CompiledModel | None, str]:
    per = _CACHE.setdefault(booster, {})
    if num_iteration not in per:
        per[num_iteration] = compile_booster(booster, num_iteration)
    return per[num_iteration]


def _fall_back(booster: Any, num_iteration: int | None, why: str) -> None:
    _CACHE.setdefault(booster, {})[num_iteration] = (None, why)
    if why not in _WARNED:
        _WARNED.add(why)
        warnings.warn(
            f"compiled prediction not used ({why}): LightGBM's predictor scores instead",
            stacklevel=3,
        )


def predict(
    booster: Any,
    X: np.ndarray,
    num_iteration: int | None = None,
    raw_score: bool = False,
    compiled: bool = True,
) -> np.ndarray:
    """``booster.predict(X, num_iteration=, raw_score=)``, through the compiled kernel when it can.

    The first :data:`CHECK_ROWS` rows are also scored by LightGBM; a difference above
    :data:`TOLERANCE` drops the compiled form of this booster for good, with a warning, and
    LightGBM scores. ``compiled=False`` always uses LightGBM.
    """
    model, why = _compiled(booster, num_iteration) if compiled else (None, "")
    if model is None:
        return np.asarray(booster.predict(X, num_iteration=num_iteration, raw_score=raw_score))
    out = predict_compiled(model, X, raw_score=raw_score)
    head = np.asarray(X)[:CHECK_ROWS]
    if len(head):
        ref = np.asarray(booster.predict(head, num_iteration=num_iteration, raw_score=raw_score))
        gap = float(np.max(np.abs(ref - out[: len(head)])))
        if not gap <= TOLERANCE:
            _fall_back(booster, num_iteration, f"it differs from LightGBM by {gap:.3g}")
            return np.asarray(booster.predict(X, num_iteration=num_iteration, raw_score=raw_score))
    return out
