"""Exact path-dependent TreeSHAP for LightGBM single-output models, in numba.

The values equal LightGBM's ``booster.predict(X, pred_contrib=True)`` (the same
path-dependent, cover-weighted algorithm of Lundberg et al., with ``internal_count`` /
``leaf_count`` as cover), but are computed with per-leaf lookup tables in the spirit of
Fast TreeSHAP v2 (Yang 2021, arXiv:2109.09847), so a row costs O(L*D) per tree instead
of O(L*D^2).

Algorithm
---------
For a leaf ``l`` with value ``v`` let ``P`` be the d distinct features on its root path.
For feature ``j`` in ``P``: ``z_j`` is the product of cover ratios (child / parent) over
the path's splits on ``j``, and ``o_j`` is 1 when the row satisfies every split on ``j``
along the path, else 0.  The leaf's value function is ``F(T) = v * prod_{j in T} o_j *
prod_{j in P\\T} z_j`` and its Shapley values, with ``S = {j : o_j = 1}`` and
``A(S) = sum_{T subset S} |T|!(d-|T|-1)!/d! * v * prod_{j in P\\T} z_j``, are

* ``phi_i = -A(S)``                           for ``i`` not in ``S``,
* ``phi_i = (1/z_i - 1) * A(S \\ {i})``        for ``i`` in ``S``.

``A`` depends only on the leaf and on ``S``, so it is tabulated once per leaf (2**d
doubles, computed exactly with Gauss-Legendre quadrature of the Beta-integral form).  A
row then needs, per tree, one threshold test per internal node (propagating the bit
mask ``S`` top-down: a feature's bit position is its order of first appearance on the
path, so positions are shared by all leaves below a node) and ``d`` table look-ups per
leaf.  Leaves whose table would be too large (``d`` above ``max_table_depth`` or the
memory budget) or that have a zero cover ratio are evaluated directly per row with an
exact O(d^2) routine (the same quantities from the Beta-integral form with
``d/2``-point Gauss-Legendre quadrature; no table, vectorised over rows).

Rows are processed in chunks in parallel (numba ``prange``); kernels are compiled with
``cache=True`` so the JIT cost (a few seconds) is paid once per machine, not per
process.

The expected value (last output column) is ``sum_l v_l * cover_l / cover_root``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import psutil
from numba import njit, prange

__all__ = ["TreeShap", "supports", "unsupported_reason"]

# LightGBM's kZeroThreshold is the float literal 1e-35f, used as a double.
_KZERO = float(np.float32(1e-35))
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}
_MAX_PATH_FEATURES = 62  # masks are int64 bit sets
_QMAX = (_MAX_PATH_FEATURES + 1) // 2 + 1

_KIND_TABLE = 0
_KIND_DIRECT = 1


def _gauss_legendre_table(qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``q`` holds the q-point Gauss-Legendre nodes/weights on [0, 1]."""
    t = np.zeros((qmax + 1, qmax + 1))
    w = np.zeros((qmax + 1, qmax + 1))
    for q in range(1, qmax + 1):
        x, wx = np.polynomial.legendre.leggauss(q)
        t[q, :q] = 0.5 * (x + 1.0)
        w[q, :q] = 0.5 * wx
    return t, w


_GL_T, _GL_W = _gauss_legendre_table(_QMAX)


# --------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _build_tables(tab_leaves, leaf_d, leaf_tab_off, leaf_po, path_z, leaf_value, table, gl_t, gl_w):
    """Fill ``table[off : off + 2**d]`` with A(S) for every tabulated leaf."""
    for ii in prange(tab_leaves.size):
        leaf = tab_leaves[ii]
        d = leaf_d[leaf]
        off = leaf_tab_off[leaf]
        po = leaf_po[leaf]
        v = leaf_value[leaf]
        n = 1 << d
        full = n - 1
        nq = (d + 1) // 2  # exact for the degree d-1 integrand
        # zin[S] = prod_{j in S} z_j
        zin = np.empty(n)
        zin[0] = 1.0
        for j in range(d):
            zj = path_z[po + j]
            b = 1 << j
            for s in range(b, 2 * b):
                zin[s] = zin[s - b] * zj
        acc = np.zeros(n)
        prod = np.empty(n)
        popc = np.zeros(n, np.int64)
        for j in range(d):
            b = 1 << j
            for s in range(b, 2 * b):
                popc[s] = popc[s - b] + 1
        for q in range(nq):
            t = gl_t[nq, q]
            w = gl_w[nq, q]
            omt = 1.0 - t
            # powers (1 - t)^k, k = 0..d
            pw = np.empty(d + 1)
            pw[0] = 1.0
            for k in range(1, d + 1):
                pw[k] = pw[k - 1] * omt
            prod[0] = 1.0
            for j in range(d):
                zj = path_z[po + j]
                fj = t + omt * zj
                b = 1 << j
                for s in range(b, 2 * b):
                    prod[s] = prod[s - b] * fj
            for s in range(full):
                m = d - popc[s]  # >= 1 because s != full
                acc[s] += w * pw[m - 1] * prod[s]
        for s in range(full):
            table[off + s] = v * zin[full ^ s] * acc[s]
        table[off + full] = 0.0  # never read


@njit(parallel=True, cache=True)
def _shap_kernel(
    X,
    out,
    tree_int_start,
    tree_n_int,
    tree_leaf_start,
    tree_n_leaf,
    node_feat,
    node_thr,
    node_dleft,
    node_mtype,
    node_bit,
    node_left,
    node_right,
    leaf_d,
    leaf_kind,
    leaf_tab_off,
    leaf_po,
    leaf_value,
    path_feat,
    path_z,
    path_invz,
    table,
    gl_t,
    gl_w,
    max_nodes,
    max_d,
    chunk,
):
    """Rows are processed in chunks (one chunk per task); within a chunk, trees are the
    outer loop and rows the inner one, with feature-major buffers so the inner loops
    have no loop-carried dependencies (and the tree's tables stay in cache)."""
    n, p = X.shape
    n_trees = tree_int_start.size
    n_chunks = (n + chunk - 1) // chunk
    kz = _KZERO
    for c in prange(n_chunks):
        r0 = c * chunk
        nr = min(n, r0 + chunk) - r0
        xt = np.empty((p, chunk))
        for r in range(nr):
            for f in range(p):
                xt[f, r] = X[r0 + r, f]
        acc = np.zeros((p, chunk))
        masks = np.empty((max_nodes, chunk), np.int64)
        smask = np.empty(chunk, np.int64)
        base = np.empty(((max_d + 1) // 2, chunk))
        zc = np.empty(chunk)
        tmp = np.empty(chunk)
        tmp2 = np.empty(chunk)
        for r in range(nr):
            masks[0, r] = -1
        for t in range(n_trees):
            ns = tree_int_start[t]
            ni = tree_n_int[t]
            ls = tree_leaf_start[t]
            nl = tree_n_leaf[t]
            # ---- top-down bit masks: bit k is cleared when the row fails a split on
            # the k-th distinct feature of the path (numbered by first appearance) ----
            for k in range(ni):
                g = ns + k
                f = node_feat[g]
                thr = node_thr[g]
                mt = node_mtype[g]
                dl = node_dleft[g] != 0
                nb = ~node_bit[g]
                lc = node_left[g]
                rc = node_right[g]
                for r in range(nr):
                    x = xt[f, r]
                    isn = np.isnan(x)
                    if isn or abs(x) <= kz:
                        x = 0.0
                    dflt = (isn and mt != 0) or (mt == 1 and x == 0.0)
                    go_left = dl if dflt else (x <= thr)
                    m = masks[k, r]
                    mc = m & nb
                    masks[lc, r] = m if go_left else mc
                    masks[rc, r] = mc if go_left else m
            # ---- leaves ----
            for j in range(nl):
                lg = ls + j
                d = leaf_d[lg]
                full = (np.int64(1) << d) - 1
                po = leaf_po[lg]
                for r in range(nr):
                    smask[r] = masks[ni + j, r] & full
                if leaf_kind[lg] == 0:
                    off = leaf_tab_off[lg]
                    for k in range(d):
                        f = path_feat[po + k]
                        b = np.int64(1) << k
                        nb = ~b
                        iz = path_invz[po + k]
                        for r in range(nr):
                            s = smask[r]
                            coef = iz - 1.0 if (s & b) != 0 else -1.0
                            acc[f, r] += coef * table[off + (s & nb)]
                else:
                    # exact direct evaluation, O(d^2) per row, vectorised over rows:
                    #   i not in S: phi_i = -v zc(S) sum_q w_q (1-t_q)^(m-1) G_S(q)
                    #   i in S:     phi_i = v (1-z_i) zc(S) sum_q w_q (1-t_q)^m G_S(q)/g_i(q)
                    # with m = |P \ S|, zc(S) = prod_{j not in S} z_j,
                    # g_j(t) = t + (1-t) z_j and G_S(q) = prod_{j in S} g_j(t_q).
                    v = leaf_value[lg]
                    nq = (d + 1) // 2
                    for r in range(nr):
                        zc[r] = v
                    for q in range(nq):
                        wq = gl_w[nq, q]
                        for r in range(nr):
                            base[q, r] = wq
                    for k in range(d):
                        zk = path_z[po + k]
                        b = np.int64(1) << k
                        for r in range(nr):
                            if (smask[r] & b) == 0:
                                zc[r] *= zk
                        for q in range(nq):
                            tq = gl_t[nq, q]
                            gk = tq + (1.0 - tq) * zk
                            omt = 1.0 - tq
                            for r in range(nr):
                                base[q, r] *= gk if (smask[r] & b) != 0 else omt
                    for r in range(nr):
                        tmp[r] = 0.0
                    for q in range(nq):
                        iomt = 1.0 / (1.0 - gl_t[nq, q])
                        for r in range(nr):
                            tmp[r] += base[q, r] * iomt
                    for r in range(nr):
                        tmp[r] *= -zc[r]  # phi for features not in S
                    for k in range(d):
                        f = path_feat[po + k]
                        zk = path_z[po + k]
                        b = np.int64(1) << k
                        for r in range(nr):
                            tmp2[r] = 0.0
                        for q in range(nq):
                            tq = gl_t[nq, q]
                            ig = 1.0 / (tq + (1.0 - tq) * zk)
                            for r in range(nr):
                                tmp2[r] += base[q, r] * ig
                        omz = 1.0 - zk
                        for r in range(nr):
                            if (smask[r] & b) != 0:
                                acc[f, r] += omz * zc[r] * tmp2[r]
                            else:
                                acc[f, r] += tmp[r]
        for r in range(nr):
            for f in range(p):
                out[r0 + r, f] += acc[f, r]


# --------------------------------------------------------------------------------------
# model parsing
# --------------------------------------------------------------------------------------


def _as_booster(model: Any) -> Any:
    """Accept a ``lightgbm.Booster`` or a fitted sklearn wrapper (``LGBMClassifier``...)."""
    return getattr(model, "booster_", model)


def _dump(booster: Any, num_iteration: int | None) -> dict:
    if num_iteration is None:
        # booster.predict's default: best_iteration when early stopping set it, else all
        num_iteration = booster.best_iteration if booster.best_iteration > 0 else -1
    return booster.dump_model(num_iteration=num_iteration)


def _is_linear(booster: Any) -> bool:
    params = getattr(booster, "params", None) or {}
    return str(params.get("linear_tree", "")).lower() in ("true", "1")


def _tree_unsupported(node: dict) -> str | None:
    stack: list[tuple[dict, frozenset]] = [(node, frozenset())]
    while stack:
        nd, feats = stack.pop()
        if "split_index" in nd:
            if nd.get("decision_type", "<=") != "<=":
                return "categorical split"
            if nd.get("missing_type", "None") not in _MISSING:
                return f"unknown missing_type {nd.get('missing_type')!r}"
            feats = feats | {nd["split_feature"]}
            if len(feats) > _MAX_PATH_FEATURES:
                return f"a tree path uses more than {_MAX_PATH_FEATURES} distinct features"
            stack.append((nd["left_child"], feats))
            stack.append((nd["right_child"], feats))
        elif "leaf_coeff" in nd or "leaf_features" in nd:
            return "linear tree"
    return None


def unsupported_reason(booster: Any, dump: dict | None = None) -> str | None:
    """Why :class:`TreeShap` cannot explain ``booster`` (None when it can)."""
    booster = _as_booster(booster)
    if dump is None:
        dump = _dump(booster, None)
    if dump.get("num_tree_per_iteration", 1) != 1 or dump.get("num_class", 1) != 1:
        return "multi-output model"
    if dump.get("average_output", False):
        return "average_output (random forest) model"
    if _is_linear(booster):
        return "linear trees"
    for ti in dump["tree_info"]:
        if ti.get("num_cat", 0) > 0:
            return "categorical split"
        why = _tree_unsupported(ti["tree_structure"])
        if why:
            return why
    return None


def supports(booster: Any) -> bool:
    """True when :class:`TreeShap` can explain ``booster`` exactly.

    False for categorical splits, linear trees, multiclass / multi-output models and
    ``average_output`` (rf) models; callers then fall back to ``pred_contrib``.
    """
    try:
        return unsupported_reason(booster) is None
    except (AttributeError, KeyError, TypeError, ValueError):  # not a LightGBM model's dump
        return False  # pred_contrib then explains it, or says why it cannot


def _max_threads() -> int:
    return int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]


def _default_threads() -> int:
    try:
        n = psutil.cpu_count(logical=False) or 0
    except (OSError, RuntimeError, NotImplementedError):  # no count on this platform
        n = 0
    try:
        avail = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        avail = os.cpu_count() or 1
    n = min(n, avail) if n else avail
    return max(1, min(n, _max_threads()))


# ---- parsing: LightGBM's JSON dump into flat per-tree arrays -------------------------

# a leaf: its path length d, value, path features (first-appearance order) and their z
_Leaf = tuple[int, float, list[int], list[float]]


@dataclass
class _FlatForest:
    """Every tree's internal nodes, leaves and leaf paths, concatenated tree after tree.

    ``t_*`` are per tree (where its nodes and leaves start, how many), ``n_*`` per
    internal node, ``l_*`` per leaf and ``p_*`` per (leaf, path feature). ``bias`` sums
    each leaf value times its cover share, in the order the trees are walked.
    """

    t_int_start: list[int] = field(default_factory=list)
    t_n_int: list[int] = field(default_factory=list)
    t_leaf_start: list[int] = field(default_factory=list)
    t_n_leaf: list[int] = field(default_factory=list)
    n_feat: list[int] = field(default_factory=list)
    n_thr: list[float] = field(default_factory=list)
    n_dl: list[int] = field(default_factory=list)
    n_mt: list[int] = field(default_factory=list)
    n_bit: list[int] = field(default_factory=list)
    n_left: list[int] = field(default_factory=list)
    n_right: list[int] = field(default_factory=list)
    l_d: list[int] = field(default_factory=list)
    l_po: list[int] = field(default_factory=list)
    l_val: list[float] = field(default_factory=list)
    p_feat: list[int] = field(default_factory=list)
    p_z: list[float] = field(default_factory=list)
    bias: float = 0.0
    max_nodes: int = 1


class _TreeNodes:
    """One tree's internal nodes, indexed by LightGBM's ``split_index``; children at
    ``ni + leaf_index`` are leaves."""

    def __init__(self, ni: int) -> None:
        self.feat = [0] * ni
        self.thr = [0.0] * ni
        self.dl = [0] * ni
        self.mt = [0] * ni
        self.bit = [0] * ni
        self.left = [0] * ni
        self.right = [0] * ni


def _flatten_tree(flat: _FlatForest, root: dict, n_leaves: int) -> None:
    """Walk one tree (with at least one split) depth first and append it to ``flat``."""
    ni = n_leaves - 1
    nodes = _TreeNodes(ni)
    leaves: list[_Leaf | None] = [None] * n_leaves
    root_count = float(root["internal_count"])
    # stack of (node, path features in first-appearance order, their z, cover)
    stack: list[tuple[dict, list[int], list[float], float]] = [(root, [], [], root_count)]
    while stack:
        nd, pf, pz, cover = stack.pop()
        if "split_index" in nd:
            stack += _split_children(nodes, nd, pf, pz, cover, ni)
        else:
            leaves[int(nd["leaf_index"])] = (len(pf), float(nd["leaf_value"]), pf, pz)
            flat.bias += float(nd["leaf_value"]) * (cover / root_count)
    _append_tree(flat, nodes, leaves, ni, n_leaves)


def _split_children(
    nodes: _TreeNodes, nd: dict, pf: list[int], pz: list[float], cover: float, ni: int
) -> list[tuple[dict, list[int], list[float], float]]:
    """Record split ``nd`` in ``nodes``; its children, as stack entries (left first)."""
    k = int(nd["split_index"])
    f = int(nd["split_feature"])
    nodes.feat[k] = f
    nodes.thr[k] = float(nd["threshold"])
    nodes.dl[k] = 1 if nd["default_left"] else 0
    nodes.mt[k] = _MISSING[nd["missing_type"]]
    if f in pf:
        pos = pf.index(f)
        pf2 = pf
    else:
        pos = len(pf)
        pf2 = pf + [f]
        pz = pz + [1.0]
    if pos >= _MAX_PATH_FEATURES:
        raise ValueError(f"a tree path uses more than {_MAX_PATH_FEATURES} distinct features")
    nodes.bit[k] = 1 << pos
    children = []
    for side, arr in (("left_child", nodes.left), ("right_child", nodes.right)):
        ch = nd[side]
        if "split_index" in ch:
            arr[k] = int(ch["split_index"])
            ccount = float(ch["internal_count"])
        else:
            arr[k] = ni + int(ch["leaf_index"])
            ccount = float(ch["leaf_count"])
        cz = list(pz)
        cz[pos] *= ccount / cover if cover > 0 else 0.0
        children.append((ch, pf2, cz, ccount))
    return children


def _append_tree(
    flat: _FlatForest, nodes: _TreeNodes, leaves: list[_Leaf | None], ni: int, n_leaves: int
) -> None:
    flat.t_int_start.append(len(flat.n_feat))
    flat.t_n_int.append(ni)
    flat.t_leaf_start.append(len(flat.l_d))
    flat.t_n_leaf.append(n_leaves)
    flat.max_nodes = max(flat.max_nodes, ni + n_leaves)
    flat.n_feat += nodes.feat
    flat.n_thr += nodes.thr
    flat.n_dl += nodes.dl
    flat.n_mt += nodes.mt
    flat.n_bit += nodes.bit
    flat.n_left += nodes.left
    flat.n_right += nodes.right
    for lf in leaves:
        assert lf is not None
        d, v, pf, pz = lf
        flat.l_d.append(d)
        flat.l_po.append(len(flat.p_feat))
        flat.l_val.append(v)
        flat.p_feat += pf
        flat.p_z += pz


class TreeShap:
    """Exact path-dependent TreeSHAP for a LightGBM single-output booster.

    ``shap_values(X)`` returns an ``(n, p + 1)`` float64 array laid out like
    ``booster.predict(X, pred_contrib=True)`` (last column = expected value), in raw
    (log-odds for binary) units.

    Parameters
    ----------
    booster : lightgbm.Booster
    num_iteration : trees to use; default as ``booster.predict`` (best_iteration if set).
    n_threads : default number of threads for :meth:`shap_values` (default: physical
        cores available to the process).
    max_table_depth : leaves with more distinct path features than this are evaluated
        directly (O(d^2) per row) instead of via a 2**d table.
    max_table_bytes : memory budget for all tables; ``max_table_depth`` is lowered until
        the tables fit.
    """

    def __init__(
        self,
        booster: Any,
        num_iteration: int | None = None,
        n_threads: int | None = None,
        max_table_depth: int = 12,
        max_table_bytes: int = 256 * 2**20,
    ) -> None:
        booster = _as_booster(booster)
        dump = _dump(booster, num_iteration)
        why = unsupported_reason(booster, dump)
        if why is not None:
            raise ValueError(f"TreeShap does not support this model: {why}")
        self.n_features = int(dump["max_feature_idx"]) + 1
        self.n_threads = n_threads
        self.chunk = 512
        self._parse(dump["tree_info"])
        self._plan_tables(max_table_depth, max_table_bytes)

    # ---- parsing ----------------------------------------------------------------------
    def _parse(self, tree_info: list[dict]) -> None:
        flat = _FlatForest()
        for ti in tree_info:
            root = ti["tree_structure"]
            if "split_index" not in root:  # single-leaf tree: only the bias
                flat.bias += float(root["leaf_value"])
                continue
            _flatten_tree(flat, root, int(ti["num_leaves"]))
        self._store(flat)
        self.n_trees = len(tree_info)

    def _store(self, flat: _FlatForest) -> None:
        """The flattened forest as the typed arrays the kernels read."""
        i32, i64, f64 = np.int32, np.int64, np.float64
        self._tree_int_start = np.asarray(flat.t_int_start, i64)
        self._tree_n_int = np.asarray(flat.t_n_int, i64)
        self._tree_leaf_start = np.asarray(flat.t_leaf_start, i64)
        self._tree_n_leaf = np.asarray(flat.t_n_leaf, i64)
        self._node_feat = np.asarray(flat.n_feat, i32)
        self._node_thr = np.asarray(flat.n_thr, f64)
        self._node_dleft = np.asarray(flat.n_dl, np.uint8)
        self._node_mtype = np.asarray(flat.n_mt, np.uint8)
        self._node_bit = np.asarray(flat.n_bit, i64)
        self._node_left = np.asarray(flat.n_left, i32)
        self._node_right = np.asarray(flat.n_right, i32)
        self._leaf_d = np.asarray(flat.l_d, i64)
        self._leaf_po = np.asarray(flat.l_po, i64)
        self._leaf_value = np.asarray(flat.l_val, f64)
        self._path_feat = np.asarray(flat.p_feat, i32)
        self._path_z = np.asarray(flat.p_z, f64)
        with np.errstate(divide="ignore"):
            self._path_invz = np.where(self._path_z > 0, 1.0 / self._path_z, 0.0)
        self._max_nodes = int(flat.max_nodes)
        self._max_d = int(self._leaf_d.max()) if self._leaf_d.size else 0
        self.expected_value = float(flat.bias)

    def _plan_tables(self, max_table_depth: int, max_table_bytes: int) -> None:
        d = self._leaf_d
        n_leaf = d.size
        # a zero cover ratio cannot go through the 1/z table formula
        zero_z = np.zeros(n_leaf, bool)
        if self._path_z.size:
            bad = np.flatnonzero(self._path_z <= 0.0)
            if bad.size:
                owner = np.searchsorted(self._leaf_po, bad, side="right") - 1
                zero_z[owner] = True
        depth = min(int(max_table_depth), 30)
        while depth >= 0:
            cand = (d <= depth) & ~zero_z
            nbytes = int(np.sum(np.left_shift(np.int64(1), d[cand]))) * 8
            if nbytes <= max_table_bytes:
                break
            depth -= 1
        cand = (d <= depth) & ~zero_z if depth >= 0 else np.zeros(n_leaf, bool)
        self.table_depth = depth
        kind = np.full(n_leaf, _KIND_DIRECT, np.uint8)
        kind[cand] = _KIND_TABLE
        sizes = np.where(cand, np.left_shift(np.int64(1), d), 0)
        off = np.zeros(n_leaf, np.int64)
        if n_leaf:
            off[1:] = np.cumsum(sizes)[:-1]
        self._leaf_kind = kind
        self._leaf_tab_off = off
        self._table = np.zeros(int(sizes.sum()), np.float64)
        self.n_direct_leaves = int((kind == _KIND_DIRECT).sum())
        self.table_bytes = self._table.nbytes
        tab_leaves = np.flatnonzero(cand).astype(np.int64)
        if tab_leaves.size:
            # deal leaves out by size so prange's static blocks get similar work
            order = tab_leaves[np.argsort(-d[tab_leaves], kind="stable")]
            nt = max(1, numba.get_num_threads())
            tab_leaves = np.concatenate([order[i::nt] for i in range(nt)])
            _build_tables(
                tab_leaves,
                self._leaf_d,
                self._leaf_tab_off,
                self._leaf_po,
                self._path_z,
                self._leaf_value,
                self._table,
                _GL_T,
                _GL_W,
            )

    # ---- evaluation -------------------------------------------------------------------
    def shap_values(self, X: Any, n_threads: int | None = None) -> np.ndarray:
        """SHAP values in raw-score units, shape ``(n, p + 1)``; last column = bias."""
        Xa = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
        if Xa.ndim == 1:
            Xa = Xa.reshape(1, -1)
        if Xa.ndim != 2 or Xa.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}); got {np.asarray(X).shape}")
        n = Xa.shape[0]
        out = np.zeros((n, self.n_features + 1), np.float64)
        out[:, -1] = self.expected_value
        if n == 0 or self._tree_int_start.size == 0:
            return out
        nt = n_threads or self.n_threads or _default_threads()
        nt = max(1, min(int(nt), _max_threads()))
        # per-thread scratch is ~8 * chunk * (2p + nodes) bytes: keep it to a few MiB
        cap = max(8, (1 << 20) // (self.n_features + self._max_nodes))
        chunk = max(1, min(self.chunk, cap, -(-n // nt)))
        prev = numba.get_num_threads()
        numba.set_num_threads(nt)
        try:
            _shap_kernel(
                Xa,
                out,
                self._tree_int_start,
                self._tree_n_int,
                self._tree_leaf_start,
                self._tree_n_leaf,
                self._node_feat,
                self._node_thr,
                self._node_dleft,
                self._node_mtype,
                self._node_bit,
                self._node_left,
                self._node_right,
                self._leaf_d,
                self._leaf_kind,
                self._leaf_tab_off,
                self._leaf_po,
                self._leaf_value,
                self._path_feat,
                self._path_z,
                self._path_invz,
                self._table,
                _GL_T,
                _GL_W,
                self._max_nodes,
                max(self._max_d, 1),
                chunk,
            )
        finally:
            numba.set_num_threads(prev)
        return out

    __call__ = shap_values
