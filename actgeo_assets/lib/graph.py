"""Connected components of the cosine-threshold graph, and the exact single-linkage hierarchy.

The graph: rows ``x[i]`` of a 2-D float16/float32/float64 array (or torch tensor, or ``np.memmap``) of
unit L2 norm (within 1e-2); ``i != j`` are linked at threshold ``t`` iff the float64 dot product of the
rows *as given* is ``>= t``. Nothing here ever holds an N x N matrix or the full edge list: the join is a
tiled GEMM whose sub-tiles are reduced on the spot to a maximum spanning forest (cycle property: an edge
that is not in the maximum spanning forest of a sub-tile is in no maximum spanning forest of a superset
of edges either), and forests merge by Kruskal. Peak memory is the input + O(tile^2) + O(N).

Exactness (why a fast fp32/tf32 GEMM can still give float64-exact components)
-----------------------------------------------------------------------------
Let ``w(i, j)`` be the float64 dot product and ``s(i, j)`` the one the GEMM computes. For unit rows the
rounding error obeys ``|s - w| <= eps`` with the a-priori bound of :func:`matmul_error_bound`
(``gamma_d = d*u/(1-d*u)``, ``u = 2^-24`` for fp32 accumulation, times ``sum_k |x_ik x_jk| <= |x_i||x_j|``,
plus the rounding of the inputs to the GEMM's format when that is lossy: float64 -> fp32, fp32 -> tf32).
Every pair whose ``s`` lies within ``eps`` of a threshold in the *exact set* (``min_threshold``, every
``exact_at`` value, ``prune_at``; for :func:`cosine_components` the threshold) is recomputed in float64
and carries that exact weight; every other pair carries ``s``. Call the carried weight ``w~``. Then for
each ``t`` in the exact set and every pair, ``w~ >= t  <=>  w >= t`` (a pair not rechecked is more than
``eps`` away from ``t`` in ``s``, hence on the same side in ``w``). Any maximum spanning forest ``F`` of
the graph weighted by ``w~`` has the property that the edges of ``F`` with ``w~ >= t`` span exactly the
components of ``{pairs : w~ >= t}`` (Kruskal). Hence cutting ``F`` at an exact ``t`` gives exactly the
float64 components. For any other ``t >= min_threshold`` the cut gives the components of
``{w~ >= t}``, which differs from ``{w >= t}`` only through pairs with ``|w - t| <= eps``: that is the
bound guaranteed for non-exact thresholds (``SingleLinkageForest.error_bound``). Worst case, rows of
norm 1: fp32 on the CPU 3.8e-5 at d=640 and 1.4e-4 at d=2304 (``d * 2^-24``; the typical fp32 error is
~1e-6, so in practice cuts at non-exact thresholds are almost always exact too); tf32 on a GPU about
4.2e-3 at d=2304. So the "within 1e-5" of DESIGN.md is what the typical error gives, not a guarantee;
put every threshold you will report into ``exact_at`` to make it exact. "float64 dot" means the sum as
numpy's ``einsum`` forms it; another summation order differs by ~d * 1e-16, which only matters for
pairs that close to a threshold.

Dense sub-tiles (most pairs are candidates) are reduced by Prim (CPU) or Boruvka (GPU) directly on the
float32 similarity matrix. There a rechecked pair's key is its float64 weight rounded to float32 and, if
that rounding crossed an exact threshold, moved to the nearest float32 on the exact side; its stored
weight is the float64 one. Keys and stored weights then lie on the same side of every exact threshold,
so the argument above holds unchanged for the exact set, and other cuts move by at most one float32
ulp more.

Pruning
-------
A landmark pass (``n_landmarks`` random rows, deterministic seed) links every row to the landmarks it is
joined to at the pruning level ``p`` (exact rule above), giving *known* components that are subsets of
true ones. Rows are ordered by known component (largest first) and cut into blocks; only pairs in
different known components are computed: sub-tiles inside one known component are skipped, a block
inside one component restricts the other side to rows outside it, other such pairs are masked. Known
components grow as sub-tiles are reduced, and after the sub-tiles touching single-component blocks the
remaining rows are re-ordered by what is known by then (so rows that joined the giant stop costing
work). All edges found join the forest. Components at every ``t <= p`` stay exact (a skipped pair lies
inside a known component, connected by kept edges of weight ``>= p >= t``); the hierarchy above ``p`` is
*not* complete, so a forest pruned at ``prune_at`` refuses ``labels_at(t > prune_at)``.
:func:`cosine_components` prunes at its own threshold, so its result is identical to no pruning.
On activation-like data (75% giant at 0.7) it computes ~45-60% of the pairs, landmark pass included.

Devices
-------
``device="auto"`` runs on CUDA when torch sees one (all sub-tiles on the GPU, tf32 GEMM with the float64
recheck band, sub-tile forests reduced on the GPU by Boruvka, only forest edges come back), else on the
CPU (numpy/OpenBLAS fp32 GEMM, which measured as fast as torch here, and scipy's spanning-tree code).
``device="torch-cpu"`` runs the GPU code path on the CPU (for tests). Labels at exact thresholds are the
same on every device.
"""

from __future__ import annotations

import contextlib
import math
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from actgeo_assets.lib.layout import atomic_path

__all__ = [
    "ForestEdges",
    "SingleLinkageForest",
    "canonical_labels",
    "component_summary",
    "cosine_components",
    "matmul_error_bound",
    "merge_forests",
    "single_linkage_forest",
    "tile_forest",
]

NORM_TOLERANCE = 1e-2
"""Rows must have L2 norm within this of 1."""

DEFAULT_TILE_CPU = 2048
DEFAULT_TILE_GPU = 16384
DEFAULT_LANDMARKS = 1024
_U32 = 2.0**-24
_MAX_LISTED = 5


# ----------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------


def _rows_text(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:_MAX_LISTED])
    more = f" (and {len(rows) - _MAX_LISTED} more)" if len(rows) > _MAX_LISTED else ""
    return f"rows {shown}{more}"


def _as_matrix(x: Any, name: str = "x") -> np.ndarray:
    """Return ``x`` as a 2-D float16/32/64 numpy array without copying numpy inputs (memmaps stay lazy).

    torch tensors are moved to the CPU (bfloat16 is widened to float32, which is exact)."""
    if type(x).__module__.startswith("torch"):
        import torch

        if isinstance(x, torch.Tensor):
            t = x.detach()
            if t.dtype == torch.bfloat16:
                t = t.float()
            x = t.cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, dims], got {x.ndim}-D with shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if x.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"{name} must be float16, float32 or float64, got dtype {x.dtype}")
    return x


def _validate_rows(x: np.ndarray, name: str = "x", offset: int = 0) -> float:
    """Check finiteness and unit norm chunk by chunk; return the largest row norm (float64).

    Raises ``ValueError`` naming the first offending rows (numbered from ``offset``)."""
    n, d = x.shape
    chunk = max(1, (64 << 20) // (8 * d))
    max_norm = 0.0
    for i0 in range(0, n, chunk):
        block = np.asarray(x[i0 : i0 + chunk], dtype=np.float64)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite) + i0 + offset
            raise ValueError(f"{name} has non-finite values (NaN or inf) in {_rows_text(bad)}")
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        off = np.abs(norms - 1.0) > NORM_TOLERANCE
        if off.any():
            bad = np.flatnonzero(off) + i0
            raise ValueError(
                f"{name} rows are not unit L2 norm (tolerance {NORM_TOLERANCE}): "
                f"{_rows_text(bad + offset)} have norms "
                f"{', '.join(f'{norms[b - i0]:.4g}' for b in bad[:_MAX_LISTED])}; normalize first"
            )
        max_norm = max(max_norm, float(norms.max()))
    return max_norm


def _check_threshold(t: Any, name: str = "threshold") -> float:
    try:
        value = float(t)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (-1, 1], got {t!r}") from None
    if not math.isfinite(value) or not (-1.0 < value <= 1.0):
        raise ValueError(f"{name} must lie in (-1, 1], got {t!r}")
    return value


def matmul_error_bound(d: int, input_dtype: Any, precision: str = "fp32", max_norm: float = 1.0) -> float:
    """A-priori bound on ``|s - w|`` for one entry of the GEMM, ``w`` the exact dot of two rows.

    ``gamma_d = d*u/(1-d*u)`` with ``u = 2^-24`` bounds fp32 accumulation in any summation order
    (recursive, blocked, FMA) times ``sum_k |x_k y_k| <= |x||y| <= max_norm^2``. Rounding the inputs to
    the GEMM format (float64 -> fp32: ``u``; fp32 -> tf32: ``2^-10``, which also covers truncating
    hardware) adds ``(2*v + v^2) |x||y|``. For ``tf32`` the total is doubled as a margin for tensor-core
    accumulation details. A 1e-12 floor covers float64 rounding of the reference itself.
    """
    if precision not in ("fp32", "tf32"):
        raise ValueError(f"precision must be 'fp32' or 'tf32', got {precision!r}")
    dt = np.dtype(input_dtype)
    if precision == "tf32":
        v = 2.0**-10
    elif dt == np.float64:
        v = _U32
    else:
        v = 0.0  # float16/float32 -> fp32 is exact
    gamma = d * _U32 / (1.0 - d * _U32)
    bound = ((2 * v + v * v) + gamma * (1 + v) ** 2) * max_norm**2
    if precision == "tf32":
        bound *= 2.0
    return bound + 1e-12


# ----------------------------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------------------------


def canonical_labels(raw_labels: Any) -> np.ndarray:
    """Relabel a partition canonically: 0 = largest component, sizes non-increasing, ties broken by the
    smallest member row index, labels dense 0..C-1. Input: any 1-D integer array [N]; output int64 [N]."""
    raw = np.asarray(raw_labels)
    if raw.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {raw.shape}")
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, inverse, counts = np.unique(raw, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new_id = np.empty(len(order), dtype=np.int64)
    new_id[order] = np.arange(len(order), dtype=np.int64)
    return new_id[inverse.reshape(-1)]


def component_summary(labels: Any, top: int = 20) -> dict[str, Any]:
    """The study's table for a partition given as labels [N]: ``n_components``, ``largest``,
    ``largest_fraction``, ``non_singleton`` (components of size >= 2 other than the largest),
    ``singletons``, ``top_sizes`` (the ``top`` largest sizes, list of int), ``n``."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {lab.shape}")
    sizes = np.sort(np.unique(lab, return_counts=True)[1])[::-1]
    return _summary_from_sizes(sizes, int(lab.size), top)


def _summary_from_sizes(sizes: np.ndarray, n: int, top: int = 20) -> dict[str, Any]:
    largest = int(sizes[0])
    return {
        "n": n,
        "n_components": int(len(sizes)),
        "largest": largest,
        "largest_fraction": largest / n,
        "non_singleton": int(np.count_nonzero(sizes[1:] >= 2)),
        "singletons": int(np.count_nonzero(sizes == 1)),
        "top_sizes": [int(s) for s in sizes[:top]],
    }


def _cc_labels(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    g = sp.csr_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    return connected_components(g, directed=False)[1]


# ----------------------------------------------------------------------------------------------------
# forests
# ----------------------------------------------------------------------------------------------------


@dataclass
class ForestEdges:
    """A maximum spanning forest of some edge set: aligned arrays ``src`` int64 [E], ``dst`` int64 [E]
    (global row indices, ``src < dst``), ``weight`` float64 [E] (the carried weight ``w~``, see module
    docstring), ``E <= n - 1``. Metadata says what the forest is exact for:

    - ``min_threshold``: the forest covers all edges with weight ``>= min_threshold`` (None: unknown).
    - ``exact_at``: thresholds whose recheck band was computed in float64 (cuts there are exact).
    - ``exact_up_to``: pruning level; cuts above it are incomplete (None: no pruning).
    - ``error_bound``: ``eps`` of the GEMM that produced non-rechecked weights (0 if all exact).
    """

    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    min_threshold: float | None = None
    exact_at: tuple[float, ...] = ()
    exact_up_to: float | None = None
    error_bound: float = 0.0

    def __post_init__(self) -> None:
        self.src = np.asarray(self.src, dtype=np.int64).reshape(-1)
        self.dst = np.asarray(self.dst, dtype=np.int64).reshape(-1)
        self.weight = np.asarray(self.weight, dtype=np.float64).reshape(-1)
        if not (len(self.src) == len(self.dst) == len(self.weight)):
            raise ValueError(
                f"ForestEdges arrays must be aligned, got {len(self.src)}, {len(self.dst)}, {len(self.weight)}"
            )
        self.exact_at = tuple(sorted({float(t) for t in self.exact_at}))

    def __len__(self) -> int:
        return len(self.src)

    @classmethod
    def empty(cls, **meta: Any) -> ForestEdges:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z.copy(), np.zeros(0), **meta)

    def _meta_arrays(self) -> dict[str, np.ndarray]:
        return {
            "min_threshold": np.array(np.nan if self.min_threshold is None else self.min_threshold),
            "exact_at": np.array(self.exact_at, dtype=np.float64),
            "exact_up_to": np.array(np.nan if self.exact_up_to is None else self.exact_up_to),
            "error_bound": np.array(self.error_bound, dtype=np.float64),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomically write as .npz (temp file in the same folder, then ``os.replace``)."""
        with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, src=self.src, dst=self.dst, weight=self.weight, **self._meta_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ForestEdges:
        """Read a file written by :meth:`save`; ``ValueError`` naming the file if it is corrupt."""
        data = _load_npz(
            path, ("src", "dst", "weight", "min_threshold", "exact_at", "exact_up_to", "error_bound")
        )
        try:
            return cls(
                data["src"],
                data["dst"],
                data["weight"],
                min_threshold=_nan_none(data["min_threshold"]),
                exact_at=tuple(float(t) for t in data["exact_at"]),
                exact_up_to=_nan_none(data["exact_up_to"]),
                error_bound=float(data["error_bound"]),
            )
        except ValueError as exc:
            raise ValueError(f"corrupt forest file {path}: {exc}") from exc


def _nan_none(a: np.ndarray) -> float | None:
    v = float(a)
    return None if math.isnan(v) else v


def _load_npz(path: str | os.PathLike[str], keys: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ValueError(f"missing arrays {missing}")
            return {k: z[k] for k in keys}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ValueError(f"corrupt or unreadable forest file {path}: {exc}") from exc


def _msf_select(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n_nodes: int) -> np.ndarray:
    """Indices of a maximum spanning forest of the given edges (unique pairs, no self-loops).

    Weights are replaced by their descending rank (exact, positive, ties broken by position) so that
    scipy's minimum spanning tree sees neither zero weights nor rounding; the result is the unique MSF
    under the order (weight desc, position asc)."""
    m = len(src)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-weight, kind="stable")
    rank = np.empty(m, dtype=np.float64)
    rank[order] = np.arange(1, m + 1, dtype=np.float64)
    tree = minimum_spanning_tree(sp.csr_matrix((rank, (src, dst)), shape=(n_nodes, n_nodes))).tocoo()
    return order[tree.data.astype(np.int64) - 1]


def _msf_fast(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n_nodes: int) -> np.ndarray:
    """Indices of a maximum spanning forest, fast on dense edge sets.

    With many more edges than nodes, the forest of the ``2 n_nodes`` heaviest edges (``argpartition``,
    O(m)) already joins most nodes; a remaining edge inside one of its trees closes a cycle of edges at
    least as heavy (cycle property), so only the remaining edges *between* its trees are kept, and the
    reduction repeats on (that forest + those edges). Each round removes at least ``n_nodes + 1`` edges."""
    m = len(src)
    if m <= 4 * n_nodes + 4096:
        return _msf_select(src, dst, weight, n_nodes)
    k = 2 * n_nodes
    top = np.argpartition(-weight, k)[:k]
    top_sel = top[_msf_select(src[top], dst[top], weight[top], n_nodes)]
    lab = _cc_labels(n_nodes, src[top_sel], dst[top_sel])
    rest = lab[src] != lab[dst]
    rest[top] = False
    comb = np.concatenate([top_sel, np.flatnonzero(rest)])
    return comb[_msf_fast(src[comb], dst[comb], weight[comb], n_nodes)]


def _dedup(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n: int):
    lo = np.minimum(src, dst)
    hi = np.maximum(src, dst)
    keep = lo != hi
    lo, hi, weight = lo[keep], hi[keep], weight[keep]
    _, first = np.unique(lo * np.int64(n) + hi, return_index=True)
    return lo[first], hi[first], weight[first]


class _ForestAccumulator:
    """Union of forests over ``n`` nodes, compacted by Kruskal whenever it exceeds ``4n`` edges (O(n))."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.pending = 0
        self.limit = max(4 * n, 1 << 16)

    def add(self, src: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> None:
        if len(src):
            self.parts.append((src, dst, weight))
            self.pending += len(src)
            if self.pending > self.limit:
                self.compact()

    def compact(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.parts:
            z = np.zeros(0, dtype=np.int64)
            return z, z.copy(), np.zeros(0)
        src = np.concatenate([p[0] for p in self.parts])
        dst = np.concatenate([p[1] for p in self.parts])
        w = np.concatenate([p[2] for p in self.parts])
        src, dst, w = _dedup(src, dst, w, self.n)
        sel = _msf_fast(src, dst, w, self.n)
        out = (src[sel], dst[sel], w[sel])
        self.parts = [out]
        self.pending = len(sel)
        return out


class _Labels:
    """Incremental union-find as a label array: ``lab[i]`` is the id of a member (the root) of i's
    component. ``merge`` costs O(edges log edges + n) (one gather over ``lab``)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.lab = np.arange(n, dtype=np.int64)
        self._map = np.arange(n, dtype=np.int64)

    def merge(self, u: np.ndarray, v: np.ndarray) -> None:
        cu, cv = self.lab[u], self.lab[v]
        k = cu != cv
        if not k.any():
            return
        cu, cv = cu[k], cv[k]
        comps, inv = np.unique(np.concatenate([cu, cv]), return_inverse=True)
        cl = _cc_labels(len(comps), inv[: len(cu)], inv[len(cu) :])
        root = np.full(int(cl.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(root, cl, comps)
        self._map[comps] = root[cl]
        self.lab = self._map[self.lab]
        self._map[comps] = comps


def _star_edges(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-edges (node, first node of its component) for nodes that are not their component's first."""
    nodes = np.arange(len(lab), dtype=np.int64)
    order = np.argsort(lab, kind="stable")
    first = np.ones(len(lab), dtype=bool)
    first[1:] = lab[order][1:] != lab[order][:-1]
    rep = np.empty(int(lab.max()) + 1, dtype=np.int64)
    rep[lab[order][first]] = order[first]
    v = rep[lab]
    keep = v != nodes
    return nodes[keep], v[keep]


# ----------------------------------------------------------------------------------------------------
# backends: one sub-tile -> its reduced edges
# ----------------------------------------------------------------------------------------------------


@dataclass
class _TileSpec:
    lo32: float  # float32 threshold, <= keep_min - eps: candidates are s >= lo32
    keep_min: float  # keep pairs whose carried weight is >= keep_min
    eps: float
    exact_ts: tuple[float, ...]
    weighted: bool  # True: sub-tile MSF; False: connectivity only (star pseudo-edges)


def _lo32(value: float) -> float:
    f = np.float32(value)
    if float(f) > value:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


class _NumpyBackend:
    name = "cpu"

    def __init__(self) -> None:
        self._triu: np.ndarray | None = None

    def triu(self, na: int, nb: int) -> np.ndarray:
        size = max(na, nb)
        if self._triu is None or self._triu.shape[0] < size:
            self._triu = np.triu(np.ones((size, size), dtype=bool), 1)
        return self._triu[:na, :nb]

    def block(self, x: np.ndarray, idx: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """(fp32 contiguous rows for the GEMM, rows in the input dtype for the float64 recheck)."""
        ex = np.ascontiguousarray(x[idx])
        g = ex if ex.dtype == np.float32 else ex.astype(np.float32)
        return g, ex

    def take(self, blk: tuple[np.ndarray, np.ndarray], pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g, ex = blk
        gg = g[pos]
        return gg, (gg if ex is g else ex[pos])

    def tile_reduce(self, a, b, diag: bool, la, lb, spec: _TileSpec):
        """One sub-tile -> its reduced edges (u, v, w) in local node ids (A rows 0..na-1, B rows na..;
        for a diagonal tile both sides are the same nodes 0..na-1). Weighted: a maximum spanning
        forest of the sub-tile's edges under the carried weights; unweighted: a spanning forest of its
        edges at ``keep_min`` (``w`` is None). Sparse tiles go through an edge list; dense ones (more
        than ``DENSE_FRACTION`` of pairs are candidates) through Prim on the similarity matrix."""
        (ag, ae), (bg, be) = a, b
        na, nb = len(ag), len(bg)
        s = ag @ bg.T
        mask = s >= np.float32(spec.lo32)
        if np.count_nonzero(mask) > DENSE_FRACTION * na * nb and na + nb > DENSE_MIN_NODES:
            del mask
            return self._dense(s, ae, be, diag, la, lb, spec)
        idx = np.flatnonzero(mask)
        del mask
        # the triangle and known-component filters act on the few candidates, not on the dense tile
        r, c = np.divmod(idx, nb)
        keep = None
        if diag:
            keep = r < c
        if la is not None:
            k2 = la[r] != lb[c]
            keep = k2 if keep is None else keep & k2
        if keep is not None:
            idx, r, c = idx[keep], r[keep], c[keep]
        w = s.reshape(-1)[idx].astype(np.float64)
        del s, idx
        band = np.zeros(len(w), dtype=bool)
        for t in spec.exact_ts:
            band |= np.abs(w - t) <= spec.eps
        bi = np.flatnonzero(band)
        if len(bi):
            w[bi] = _exact_dots_np(ae, be, r[bi], c[bi])
        keep = w >= spec.keep_min
        r, c, w = r[keep], c[keep], w[keep]
        if not len(r):
            return r, c, (w if spec.weighted else None)
        off = 0 if diag else na
        n_loc = na if diag else na + nb
        cc = c + off
        if spec.weighted:
            sel = _msf_fast(r, cc, w, n_loc)
            return r[sel], cc[sel], w[sel]
        u, v = _star_edges(_cc_labels(n_loc, r, cc))
        return u, v, None

    def _dense(self, s: np.ndarray, ae, be, diag: bool, la, lb, spec: _TileSpec):
        na, nb = s.shape
        # 1. the float64 recheck band (a superset: fp32 bounds rounded outwards)
        band = np.zeros(s.shape, dtype=bool)
        for t in spec.exact_ts:
            band |= (s >= np.float32(_lo32(t - spec.eps))) & (s <= np.float32(_hi32(t + spec.eps)))
        if diag:
            band &= self.triu(na, nb)
        same = None
        if la is not None:
            same = la[:, None] == lb[None, :]
            band &= ~same
        bidx = np.flatnonzero(band)
        del band
        br, bc = np.divmod(bidx, nb)
        bw = _exact_dots_np(ae, be, br, bc)
        # 2. keys: s, -inf below the candidate level or inside a known component, band keys on the
        #    exact side of every exact threshold
        np.copyto(s, np.float32(-np.inf), where=s < np.float32(spec.lo32))
        if same is not None:
            np.copyto(s, np.float32(-np.inf), where=same)
            del same
        keys = _side_keys_np(bw, spec.exact_ts)
        keys[bw < spec.keep_min] = -np.inf
        s.reshape(-1)[bidx] = keys
        if diag:
            low = np.tril(np.ones((na, na), dtype=bool))
            np.copyto(s, _transpose(s), where=low)
            np.fill_diagonal(s, -np.inf)
            u, v = _prim_sym(s)
            lo, hi = np.minimum(u, v), np.maximum(u, v)
            lin = lo * nb + hi
            u, v = lo, hi
        else:
            u, v = _prim_bip(s, _transpose(s))
            lin = u * nb + v
            v = v + na
        if not spec.weighted:
            return u, v, None
        w = s.reshape(-1)[lin].astype(np.float64)
        pos = np.searchsorted(bidx, lin)
        pos_c = np.minimum(pos, max(len(bidx) - 1, 0))
        hit = (pos < len(bidx)) & (bidx[pos_c] == lin) if len(bidx) else np.zeros(len(lin), dtype=bool)
        w[hit] = bw[pos_c[hit]]
        return u, v, w

    def to_host(self, *arrays):
        return arrays


DENSE_FRACTION = 0.05
"""Sub-tiles with more candidate pairs than this fraction are reduced by dense Prim (CPU)..."""
DENSE_MIN_NODES = 64
"""... when they have more than this many rows + columns."""


def _transpose(s: np.ndarray, block: int = 128) -> np.ndarray:
    """Contiguous transpose, blocked for cache locality (about 2x faster than ``ascontiguousarray``)."""
    out = np.empty(s.shape[::-1], dtype=s.dtype)
    for i in range(0, s.shape[0], block):
        out[:, i : i + block] = s[i : i + block].T
    return out


def _hi32(value: float) -> float:
    f = np.float32(value)
    if float(f) < value:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def _side_keys_np(w: np.ndarray, exact_ts: Sequence[float]) -> np.ndarray:
    """float32 keys for exact float64 weights that stay on the same side of every exact threshold."""
    key = w.astype(np.float32)
    for t in exact_ts:
        k64 = key.astype(np.float64)
        up = np.float32(_hi32(t))  # smallest float32 >= t
        lo = np.float32(_lo32(t))
        dn = lo if float(lo) < t else np.nextafter(lo, np.float32(-np.inf))  # largest float32 < t
        key[(w >= t) & (k64 < t)] = up
        key[(w < t) & (k64 >= t)] = dn
    return key


def _prim_bip(w: np.ndarray, wt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prim's maximum spanning forest of a bipartite graph given densely: ``w`` [na, nb] (``-inf`` = no
    edge), ``wt`` its contiguous transpose. Returns (a, b) index arrays of the forest's edges."""
    na, nb = w.shape
    ninf = -np.inf
    best_a = np.full(na, ninf, dtype=w.dtype)
    best_b = np.full(nb, ninf, dtype=w.dtype)
    par_a = np.zeros(na, dtype=np.int64)
    par_b = np.zeros(nb, dtype=np.int64)
    open_a = np.ones(na, dtype=bool)
    open_b = np.ones(nb, dtype=bool)
    ea: list[int] = []
    eb: list[int] = []
    is_a, cur = True, 0
    for _ in range(na + nb):
        if is_a:
            open_a[cur] = False
            best_a[cur] = ninf
            row = w[cur]
            upd = row > best_b
            upd &= open_b
            best_b[upd] = row[upd]
            par_b[upd] = cur
        else:
            open_b[cur] = False
            best_b[cur] = ninf
            col = wt[cur]
            upd = col > best_a
            upd &= open_a
            best_a[upd] = col[upd]
            par_a[upd] = cur
        ia = int(best_a.argmax())
        ib = int(best_b.argmax())
        va, vb = best_a[ia], best_b[ib]
        if va == ninf and vb == ninf:
            rest = np.flatnonzero(open_a)
            if len(rest):
                is_a, cur = True, int(rest[0])
                continue
            rest = np.flatnonzero(open_b)
            if not len(rest):
                break
            is_a, cur = False, int(rest[0])
            continue
        if va >= vb:
            ea.append(ia)
            eb.append(int(par_a[ia]))
            is_a, cur = True, ia
        else:
            ea.append(int(par_b[ib]))
            eb.append(ib)
            is_a, cur = False, ib
    return np.asarray(ea, dtype=np.int64), np.asarray(eb, dtype=np.int64)


def _prim_sym(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prim's maximum spanning forest of a graph given as a dense symmetric matrix (``-inf`` = none)."""
    n = w.shape[0]
    ninf = -np.inf
    best = np.full(n, ninf, dtype=w.dtype)
    par = np.zeros(n, dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    eu: list[int] = []
    ev: list[int] = []
    cur = 0
    for _ in range(n):
        open_[cur] = False
        best[cur] = ninf
        row = w[cur]
        upd = row > best
        upd &= open_
        best[upd] = row[upd]
        par[upd] = cur
        nxt = int(best.argmax())
        if best[nxt] == ninf:
            rest = np.flatnonzero(open_)
            if not len(rest):
                break
            cur = int(rest[0])
            continue
        eu.append(int(par[nxt]))
        ev.append(nxt)
        cur = nxt
    return np.asarray(eu, dtype=np.int64), np.asarray(ev, dtype=np.int64)


def _exact_dots_np(ae: np.ndarray, be: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    out = np.empty(len(r), dtype=np.float64)
    step = max(1, (32 << 20) // (16 * ae.shape[1]))
    for k in range(0, len(r), step):
        ra = ae[r[k : k + step]].astype(np.float64)
        cb = be[c[k : k + step]].astype(np.float64)
        out[k : k + step] = np.einsum("ij,ij->i", ra, cb)
    return out


class _TorchBackend:
    """The GPU code path (also runnable on the CPU as ``device='torch-cpu'`` for tests)."""

    def __init__(self, device: str, precision: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.precision = precision
        self.name = str(self.device)
        self._triu = None
        self._cache: dict[int, tuple[np.ndarray, Any]] = {}

    @contextlib.contextmanager
    def matmul_mode(self) -> Iterator[None]:
        torch = self.torch
        if self.device.type != "cuda":
            yield
            return
        m = torch.backends.cuda.matmul
        want_tf32 = self.precision == "tf32"
        if hasattr(m, "fp32_precision"):
            old = m.fp32_precision
            m.fp32_precision = "tf32" if want_tf32 else "ieee"
            try:
                yield
            finally:
                m.fp32_precision = old
        else:  # pragma: no cover - older torch
            old = m.allow_tf32
            m.allow_tf32 = want_tf32
            try:
                yield
            finally:
                m.allow_tf32 = old

    def triu(self, na: int, nb: int):
        size = max(na, nb)
        if self._triu is None or self._triu.shape[0] < size:
            self._triu = self.torch.ones((size, size), dtype=self.torch.bool, device=self.device).triu(1)
        return self._triu[:na, :nb]

    def _resident(self, x: np.ndarray):
        """The whole of ``x`` on the device (uploaded once, in chunks) when it fits comfortably."""
        key = id(x)
        if key in self._cache:
            return self._cache[key][1]
        if self.device.type != "cuda" or x.shape[0] < 4 * DEFAULT_TILE_GPU:
            return None
        free, _ = self.torch.cuda.mem_get_info(self.device)
        if x.nbytes > 0.4 * free:
            return None
        dev = self.torch.empty(x.shape, dtype=getattr(self.torch, np.dtype(x.dtype).name), device=self.device)
        step = max(1, (256 << 20) // max(1, x.shape[1] * x.itemsize))
        for i in range(0, x.shape[0], step):
            dev[i : i + step] = self.torch.from_numpy(np.ascontiguousarray(x[i : i + step])).to(self.device)
        self._cache[key] = (x, dev)  # keep x alive so its id stays unique
        return dev

    def block(self, x: np.ndarray, idx: np.ndarray | slice):
        torch = self.torch
        resident = self._resident(x)
        if resident is not None:
            if isinstance(idx, slice):
                ex = resident[idx]
            else:
                ex = resident.index_select(0, torch.from_numpy(np.asarray(idx)).to(self.device))
        else:
            ex = torch.from_numpy(np.ascontiguousarray(x[idx])).to(self.device, non_blocking=True)
        g = ex if ex.dtype == torch.float32 else ex.float()
        return g, ex

    def take(self, blk, pos: np.ndarray):
        g, ex = blk
        p = self.torch.from_numpy(pos).to(self.device)
        gg = g.index_select(0, p)
        return gg, (gg if ex is g else ex.index_select(0, p))

    def tile_reduce(self, a, b, diag: bool, la, lb, spec: _TileSpec):
        """Same contract as the numpy backend's; everything stays on the device, the sub-tile's forest
        is found by dense Boruvka on the similarity matrix, and only its edges come back."""
        torch = self.torch
        (ag, ae), (bg, be) = a, b
        na, nb = ag.shape[0], bg.shape[0]
        with self.matmul_mode():
            s = ag @ bg.T
        ninf = float("-inf")
        band = torch.zeros(s.shape, dtype=torch.bool, device=self.device)
        for t in spec.exact_ts:
            band |= (s >= _lo32(t - spec.eps)) & (s <= _hi32(t + spec.eps))
        if diag:
            band &= self.triu(na, nb)
        same = None
        if la is not None:
            la_t = torch.from_numpy(la).to(self.device)
            lb_t = la_t if lb is la else torch.from_numpy(lb).to(self.device)
            same = la_t[:, None] == lb_t[None, :]
            band &= ~same
        bidx = band.reshape(-1).nonzero().squeeze(1)
        del band
        br, bc = bidx // nb, bidx % nb
        bw = torch.empty(bidx.shape[0], dtype=torch.float64, device=self.device)
        step = max(1, (256 << 20) // (16 * ae.shape[1]))
        for k in range(0, bidx.shape[0], step):
            sl = slice(k, k + step)
            bw[sl] = (ae[br[sl]].double() * be[bc[sl]].double()).sum(1)
        s.masked_fill_(s < spec.lo32, ninf)
        if same is not None:
            s.masked_fill_(same, ninf)
            del same
        keys = _side_keys_torch(torch, bw, spec.exact_ts)
        keys.masked_fill_(bw < spec.keep_min, ninf)
        s.view(-1)[bidx] = keys
        if diag:
            s = torch.where(self.triu(na, nb), s, s.T)
            s.fill_diagonal_(ninf)
        u, v = _dense_boruvka_torch(torch, s, diag)
        lin = u * nb + v
        if not diag:
            v = v + na
        w = None
        if spec.weighted:
            w = s.view(-1)[lin].double()
            if bidx.numel():
                pos = torch.searchsorted(bidx, lin).clamp_(max=bidx.numel() - 1)
                hit = bidx[pos] == lin
                w[hit] = bw[pos[hit]]
            w = w.cpu().numpy()
        return u.cpu().numpy(), v.cpu().numpy(), w

    def to_host(self, *arrays):
        return tuple(a.cpu().numpy() if hasattr(a, "cpu") else a for a in arrays)


def _side_keys_torch(torch: Any, w, exact_ts: Sequence[float]):
    key = w.float()
    for t in exact_ts:
        k64 = key.double()
        up = _hi32(t)
        lo = np.float32(_lo32(t))
        dn = float(lo if float(lo) < t else np.nextafter(lo, np.float32(-np.inf)))
        key[(w >= t) & (k64 < t)] = up
        key[(w < t) & (k64 >= t)] = dn
    return key


def _dense_boruvka_torch(torch: Any, s, symmetric: bool):
    """Boruvka maximum spanning forest of a dense graph on the device: ``s`` [na, nb] keys (``-inf`` =
    no edge), bipartite between rows and columns, or (``symmetric``) one node set with ``s``
    symmetric. Strict order: key desc, then pair index (row-major, (min, max) when symmetric) asc;
    ``max`` along a dim returns the first maximal index, which is exactly that tie-break.
    Returns (u, v) index tensors (row node, column node; ``u < v`` when symmetric)."""
    dev = s.device
    na, nb = s.shape
    n = na if symmetric else na + nb
    big = torch.iinfo(torch.int64).max
    comp = torch.arange(n, device=dev)
    chosen = []
    ar_a = torch.arange(na, device=dev)
    ar_b = torch.arange(nb, device=dev)
    while True:
        ca = comp[:na]
        cb = comp if symmetric else comp[na:]
        m = s.masked_fill(ca[:, None] == cb[None, :], float("-inf"))
        rw, rj = m.max(1)
        if symmetric:
            node_w = rw
            lo, hi = torch.minimum(ar_a, rj), torch.maximum(ar_a, rj)
            node_e = lo * nb + hi
        else:
            cw, ci = m.max(0)
            node_w = torch.cat([rw, cw])
            node_e = torch.cat([ar_a * nb + rj, ci * nb + ar_b])
        del m
        valid = node_w > float("-inf")
        if not bool(valid.any()):
            break
        best = torch.full((n,), float("-inf"), dtype=s.dtype, device=dev)
        best.scatter_reduce_(0, comp, node_w, "amax")
        cand = torch.where(valid & (node_w == best[comp]), node_e, big)
        pick = torch.full((n,), big, dtype=torch.int64, device=dev)
        pick.scatter_reduce_(0, comp, cand, "amin")
        comps = (pick < big).nonzero().squeeze(1)
        e = pick[comps]
        chosen.append(e)
        eu = e // nb
        ev = e % nb if symmetric else e % nb + na
        cu, cv = comp[eu], comp[ev]
        other = torch.where(cu == comps, cv, cu)
        parent = torch.arange(n, device=dev)
        parent[comps] = other
        mutual = (parent[other] == comps) & (comps < other)
        parent[comps[mutual]] = comps[mutual]
        while True:
            nxt = parent[parent]
            if torch.equal(nxt, parent):
                break
            parent = nxt
        comp = parent[comp]
    if not chosen:
        z = torch.zeros(0, dtype=torch.int64, device=dev)
        return z, z.clone()
    e = torch.unique(torch.cat(chosen))
    return e // nb, e % nb


def _resolve_device(device: str, precision: str) -> tuple[Any, str]:
    if precision not in ("auto", "fp32", "tf32"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'tf32', got {precision!r}")
    if device == "auto":
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover
            device = "cpu"
    if device == "cpu":
        if precision == "tf32":
            raise ValueError("precision 'tf32' needs a CUDA device")
        return _NumpyBackend(), "fp32"
    if device == "torch-cpu":
        return _TorchBackend("cpu", "fp32"), "fp32"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} requested but torch.cuda.is_available() is False")
        prec = "tf32" if precision == "auto" else precision
        return _TorchBackend(device, prec), prec
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'torch-cpu', got {device!r}")


# ----------------------------------------------------------------------------------------------------
# the tile pass
# ----------------------------------------------------------------------------------------------------


def _block_ids(order: np.ndarray, n: int, tile: int) -> list[np.ndarray]:
    return [np.sort(order[i : i + tile]) for i in range(0, n, tile)]


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total or None, desc=desc, unit="tile")


def _const(lab: np.ndarray) -> int:
    return int(lab[0]) if len(lab) and (lab == lab[0]).all() else -1


def _run_pass(
    backend: Any,
    xa: np.ndarray,
    xb: np.ndarray | None,
    spec: _TileSpec,
    tile: int,
    forest: _ForestAccumulator | None,
    labels: _Labels | None,
    prune_level: float | None = None,
    progress: bool = False,
    stats: dict[str, Any] | None = None,
) -> None:
    """Visit every sub-tile of A x B (or the upper triangle of A x A) and feed its reduced edges to
    ``forest`` (weighted spec) and/or ``labels``.

    Node space of the pass: A rows 0..na-1, B rows na..na+nb-1. Pruning (``prune_level`` set, needs
    ``labels``): ``labels`` holds components known at ``>= prune_level`` and is updated after every
    sub-tile with its edges ``>= prune_level``. Rows are ordered by known component (largest first) and
    cut into blocks; a block whose rows all lie in one known component is *constant*. Only pairs in
    different known components are computed: a sub-tile of two blocks in the same component is skipped,
    a constant side restricts the other side to rows outside its component, otherwise such pairs are
    masked. The sub-tiles touching a constant block go first; the rows of the mixed blocks are then
    re-ordered by the labels known by then and handled the same way (recursively), so rows that joined
    a big component in the meantime stop costing pair work. Without pruning every pair is computed."""
    na = xa.shape[0]
    within = xb is None
    nb = 0 if within else xb.shape[0]
    pruning = prune_level is not None
    if pruning:
        assert labels is not None
    bar = _progress(0, progress, "graph tiles")
    counts = {"tiles": 0, "pairs": 0}

    def rows(ids: np.ndarray):
        if within or ids[0] < na:
            return backend.block(xa, ids)
        return backend.block(xb, ids - na)

    def ordered_blocks(sub: np.ndarray) -> list[np.ndarray]:
        if pruning:
            sub = sub[np.argsort(canonical_labels(labels.lab[sub]), kind="stable")]
        return _block_ids(sub, len(sub), tile)

    def visit(sub_a: np.ndarray, sub_b: np.ndarray | None) -> None:
        ids_a = ordered_blocks(sub_a)
        ids_b = ids_a if within else ordered_blocks(sub_b)
        pairs = [
            (i, j) for i in range(len(ids_a)) for j in (range(i, len(ids_b)) if within else range(len(ids_b)))
        ]
        if bar is not None:
            bar.total = (bar.total or 0) + len(pairs)
            bar.refresh()
        rest_a = rest_b = None
        if pruning:
            ca = [_const(labels.lab[g]) for g in ids_a]
            cb = ca if within else [_const(labels.lab[g]) for g in ids_b]
            mixed_a = [i for i, c in enumerate(ca) if c < 0]
            mixed_b = [j for j, c in enumerate(cb) if c < 0]
            if len(mixed_a) < len(ca) or len(mixed_b) < len(cb):
                pairs = [(i, j) for (i, j) in pairs if ca[i] >= 0 or cb[j] >= 0]
                if mixed_a and (within or mixed_b):
                    rest_a = np.concatenate([ids_a[i] for i in mixed_a])
                    rest_b = None if within else np.concatenate([ids_b[j] for j in mixed_b])
        run_tiles(ids_a, ids_b, pairs)
        if rest_a is not None:
            visit(rest_a, rest_b)

    def run_tiles(ids_a: list[np.ndarray], ids_b: list[np.ndarray], pairs: list[tuple[int, int]]) -> None:
        cur_i = -1
        a_full = None
        for i, j in pairs:
            if bar is not None:
                bar.update(1)  # visited (computed or skipped)
            diag = within and i == j
            gi, gj = ids_a[i], ids_b[j]
            pos_i = pos_j = None
            li = lj = None
            if pruning:
                li, lj = labels.lab[gi], labels.lab[gj]
                ci, cj = _const(li), _const(lj)
                if diag:
                    if ci >= 0:
                        continue
                    lj = li
                elif ci >= 0 and ci == cj:
                    continue
                elif ci >= 0:
                    pos_j = np.flatnonzero(lj != ci)
                elif cj >= 0:
                    pos_i = np.flatnonzero(li != cj)
                if not diag and (ci >= 0 or cj >= 0):
                    if pos_i is not None:
                        gi = gi[pos_i]
                    if pos_j is not None:
                        gj = gj[pos_j]
                    li = lj = None  # the restriction already excludes every same-component pair
                    if not len(gi) or not len(gj):
                        continue
            if i != cur_i:
                a_full = rows(ids_a[i])
                cur_i = i
            a = a_full if pos_i is None else backend.take(a_full, pos_i)
            if diag:
                b = a
            else:
                b = rows(ids_b[j])
                if pos_j is not None:
                    b = backend.take(b, pos_j)
            counts["tiles"] += 1
            counts["pairs"] += len(gi) * (len(gi) - 1) // 2 if diag else len(gi) * len(gj)
            u, v, ww = backend.tile_reduce(a, b, diag, li, lj, spec)
            if not len(u):
                continue
            both = gi if diag else np.concatenate([gi, gj])
            src, dst = both[u], both[v]
            if spec.weighted:
                forest.add(src, dst, ww)
                if labels is not None:
                    hi = ww >= (prune_level if pruning else spec.keep_min)
                    labels.merge(src[hi], dst[hi])
            elif labels is not None:
                labels.merge(src, dst)

    visit(np.arange(na, dtype=np.int64), None if within else np.arange(na, na + nb, dtype=np.int64))
    if bar is not None:
        bar.close()
    if stats is not None:
        stats["tiles_computed"] = stats.get("tiles_computed", 0) + counts["tiles"]
        stats["pairs_computed"] = stats.get("pairs_computed", 0) + counts["pairs"]
        n_all = na * (na - 1) // 2 if within else na * nb
        stats["pairs_total"] = stats.get("pairs_total", 0) + n_all


def _landmark_pass(
    backend: Any,
    xa: np.ndarray,
    xb: np.ndarray | None,
    spec: _TileSpec,
    tile: int,
    n_landmarks: int,
    forest: _ForestAccumulator | None,
    labels: _Labels,
    seed: int = 0,
    stats: dict[str, Any] | None = None,
) -> None:
    """Join every row to the random landmarks it is linked to at ``spec.keep_min`` (the pruning level):
    the edges go into ``labels`` (and ``forest``). Components found this way are subsets of true ones."""
    na = xa.shape[0]
    n = na + (0 if xb is None else xb.shape[0])
    rng = np.random.default_rng(seed)
    lm = np.sort(rng.choice(n, size=min(n_landmarks, n), replace=False)).astype(np.int64)

    def rows(ids: np.ndarray) -> np.ndarray:
        if xb is None:
            return np.asarray(xa[ids])
        ia, ib = ids[ids < na], ids[ids >= na] - na
        parts = [np.asarray(xa[ia])] if len(ia) else []
        if len(ib):
            parts.append(np.asarray(xb[ib]))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    lm_rows = rows(lm)
    lmb = backend.block(lm_rows, slice(0, len(lm)))
    for i0 in range(0, n, tile):
        ids = np.arange(i0, min(i0 + tile, n), dtype=np.int64)
        a = backend.block(rows(ids), slice(0, len(ids)))
        u, v, w = backend.tile_reduce(a, lmb, False, None, None, spec)
        both = np.concatenate([ids, lm])
        src, dst = both[u], both[v]
        keep = src != dst
        src, dst = src[keep], dst[keep]
        if forest is not None:
            forest.add(src, dst, w[keep])
        labels.merge(src, dst)
    if stats is not None:
        stats["landmarks"] = len(lm)
        stats["landmark_pairs"] = n * len(lm)


# ----------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------


def _exact_set(min_threshold: float, exact_at: Iterable[float], prune_at: float | None) -> tuple[float, ...]:
    ts = {min_threshold}
    for t in exact_at:
        tt = _check_threshold(t, "exact_at value")
        if tt < min_threshold:
            raise ValueError(f"min_threshold {min_threshold} is above the exact_at value {tt}")
        if prune_at is not None and tt > prune_at:
            raise ValueError(
                f"exact_at value {tt} is above prune_at {prune_at}: pruned cuts above it are incomplete"
            )
        ts.add(tt)
    if prune_at is not None:
        ts.add(prune_at)
    return tuple(sorted(ts))


def _forest_pass(
    xa: np.ndarray,
    xb: np.ndarray | None,
    *,
    min_threshold: float,
    exact_at: Iterable[float],
    device: str,
    precision: str,
    tile_size: int | None,
    prune_at: float | None,
    n_landmarks: int,
    progress: bool,
    stats: dict[str, Any] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Validated inputs -> forest over the pass node space (A rows, then B rows)."""
    min_threshold = _check_threshold(min_threshold, "min_threshold")
    if prune_at is not None:
        prune_at = _check_threshold(prune_at, "prune_at")
        if prune_at < min_threshold:
            raise ValueError(f"prune_at {prune_at} is below min_threshold {min_threshold}")
    exact_ts = _exact_set(min_threshold, exact_at, prune_at)
    max_norm = _validate_rows(xa, "xa" if xb is not None else "x")
    if xb is not None:
        if xb.shape[1] != xa.shape[1]:
            raise ValueError(
                f"xa and xb must have the same number of columns, got {xa.shape[1]} and {xb.shape[1]}"
            )
        max_norm = max(max_norm, _validate_rows(xb, "xb"))
    backend, prec = _resolve_device(device, precision)
    dtype = np.result_type(xa.dtype, xb.dtype) if xb is not None else xa.dtype
    eps = matmul_error_bound(xa.shape[1], dtype, prec, max_norm)
    tile = int(tile_size or (DEFAULT_TILE_CPU if backend.name == "cpu" else DEFAULT_TILE_GPU))
    if tile < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    n = xa.shape[0] + (0 if xb is None else xb.shape[0])
    acc = _ForestAccumulator(n)
    labels = None
    if prune_at is not None:
        labels = _Labels(n)
        lspec = _TileSpec(_lo32(prune_at - eps), prune_at, eps, exact_ts, True)
        _landmark_pass(backend, xa, xb, lspec, tile, _n_landmarks(n, n_landmarks), acc, labels, stats=stats)
    spec = _TileSpec(_lo32(min_threshold - eps), min_threshold, eps, exact_ts, True)
    _run_pass(backend, xa, xb, spec, tile, acc, labels, prune_at, progress=progress, stats=stats)
    src, dst, w = acc.compact()
    meta = {
        "min_threshold": min_threshold,
        "exact_at": exact_ts,
        "exact_up_to": prune_at,
        "error_bound": eps,
    }
    return src, dst, w, meta


def tile_forest(
    xa: Any,
    xb: Any = None,
    *,
    offset_a: int = 0,
    offset_b: int = 0,
    min_threshold: float,
    exact_at: Iterable[float] = (),
    device: str = "auto",
    precision: str = "auto",
    tile_size: int | None = None,
    prune_at: float | None = None,
    n_landmarks: int = DEFAULT_LANDMARKS,
    progress: bool = False,
    stats: dict[str, Any] | None = None,
) -> ForestEdges:
    """Maximum spanning forest of all edges with weight ``>= min_threshold`` between rows of block A
    (global ids ``offset_a + i``) and block B (``offset_b + j``); with ``xb=None`` the pairs ``i < j``
    within A. ``xa``/``xb``: [n, d] unit rows (memory-mapped .npy shards are read sub-tile by sub-tile).

    ``exact_at``: thresholds at which the forest's cut must be float64-exact (``min_threshold`` always
    is). ``prune_at``: prune with landmarks at this level (the forest is then exact only for cuts
    ``<= prune_at``, it also contains landmark edges within A and within B, which are true edges).
    ``stats``: optional dict filled with tile counts. Returns at most ``na + nb - 1`` edges, ``src < dst``.
    """
    xa = _as_matrix(xa, "xa")
    xb = None if xb is None else _as_matrix(xb, "xb")
    na = xa.shape[0]
    if xb is not None:
        nb = xb.shape[0]
        if offset_a < offset_b + nb and offset_b < offset_a + na:
            raise ValueError(
                f"blocks overlap: A covers global rows [{offset_a}, {offset_a + na}), B [{offset_b}, {offset_b + nb}); "
                "use xb=None for the pairs within one block"
            )
    src, dst, w, meta = _forest_pass(
        xa,
        xb,
        min_threshold=min_threshold,
        exact_at=exact_at,
        device=device,
        precision=precision,
        tile_size=tile_size,
        prune_at=prune_at,
        n_landmarks=n_landmarks,
        progress=progress,
        stats=stats,
    )
    gmap = np.arange(na, dtype=np.int64) + offset_a
    if xb is not None:
        gmap = np.concatenate([gmap, np.arange(xb.shape[0], dtype=np.int64) + offset_b])
    gs, gd = gmap[src], gmap[dst]
    return ForestEdges(np.minimum(gs, gd), np.maximum(gs, gd), w, **meta)


class SingleLinkageForest:
    """The exact single-linkage hierarchy of ``n`` rows as a maximum spanning forest.

    ``edges``: :class:`ForestEdges` sorted by weight descending (ties by src, dst). Cutting it at ``t``
    (keeping edges with weight ``>= t``) gives the components at ``t``: exactly for ``t`` in
    ``exact_at``; for other ``t`` in ``[min_threshold, exact_up_to]`` they differ from the float64 rule
    only through pairs with ``|w - t| <= error_bound``."""

    def __init__(self, n: int, edges: ForestEdges) -> None:
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        e = edges
        if len(e):
            if e.src.min() < 0 or max(e.src.max(), e.dst.max()) >= n:
                raise ValueError(f"forest edges reference rows outside [0, {n})")
            if len(e) > n - 1:
                raise ValueError(f"a forest on {n} rows has at most {n - 1} edges, got {len(e)}")
        order = np.lexsort((e.dst, e.src, -e.weight))
        self.n = int(n)
        self.edges = ForestEdges(
            e.src[order],
            e.dst[order],
            e.weight[order],
            min_threshold=e.min_threshold,
            exact_at=e.exact_at,
            exact_up_to=e.exact_up_to,
            error_bound=e.error_bound,
        )
        self._neg = -self.edges.weight

    @property
    def min_threshold(self) -> float | None:
        return self.edges.min_threshold

    @property
    def exact_at(self) -> tuple[float, ...]:
        return self.edges.exact_at

    @property
    def exact_up_to(self) -> float | None:
        return self.edges.exact_up_to

    @property
    def error_bound(self) -> float:
        return self.edges.error_bound

    def _cut(self, t: Any) -> int:
        t = _check_threshold(t)
        if self.min_threshold is not None and t < self.min_threshold:
            raise ValueError(f"threshold {t} is below the forest's min_threshold {self.min_threshold}")
        if self.exact_up_to is not None and t > self.exact_up_to:
            raise ValueError(
                f"threshold {t} is above prune_at {self.exact_up_to}: a forest pruned there is incomplete above it"
            )
        return int(np.searchsorted(self._neg, -t, side="right"))

    def n_edges_at(self, t: float) -> int:
        """Number of forest edges with weight ``>= t``."""
        return self._cut(t)

    def labels_at(self, t: float) -> np.ndarray:
        """Canonical labels int64 [n] of the components at threshold ``t``."""
        k = self._cut(t)
        return canonical_labels(_cc_labels(self.n, self.edges.src[:k], self.edges.dst[:k]))

    def component_sizes_at(self, t: float) -> np.ndarray:
        """Component sizes int64 [C] at ``t``, non-increasing (index = canonical label)."""
        k = self._cut(t)
        lab = _cc_labels(self.n, self.edges.src[:k], self.edges.dst[:k])
        return np.sort(np.bincount(lab).astype(np.int64))[::-1].copy()

    def sweep(self, thresholds: Iterable[float]) -> pd.DataFrame:
        """One row per threshold: threshold, n_components, largest, largest_fraction, singletons,
        non_singleton (components of size >= 2 other than the largest), n_edges (forest edges >= t)."""
        rows = []
        for t in thresholds:
            sizes = self.component_sizes_at(t)
            s = _summary_from_sizes(sizes, self.n)
            rows.append(
                {
                    "threshold": float(t),
                    "n_components": s["n_components"],
                    "largest": s["largest"],
                    "largest_fraction": s["largest_fraction"],
                    "singletons": s["singletons"],
                    "non_singleton": s["non_singleton"],
                    "n_edges": self._cut(t),
                }
            )
        cols = [
            "threshold",
            "n_components",
            "largest",
            "largest_fraction",
            "singletons",
            "non_singleton",
            "n_edges",
        ]
        return pd.DataFrame(rows, columns=cols)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomically write as .npz (the edges, their metadata and ``n``)."""
        e = self.edges
        with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, n=np.array(self.n), src=e.src, dst=e.dst, weight=e.weight, **e._meta_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SingleLinkageForest:
        """Read a file written by :meth:`save`; ``ValueError`` naming the file if it is corrupt."""
        data = _load_npz(
            path, ("n", "src", "dst", "weight", "min_threshold", "exact_at", "exact_up_to", "error_bound")
        )
        try:
            edges = ForestEdges(
                data["src"],
                data["dst"],
                data["weight"],
                min_threshold=_nan_none(data["min_threshold"]),
                exact_at=tuple(float(t) for t in data["exact_at"]),
                exact_up_to=_nan_none(data["exact_up_to"]),
                error_bound=float(data["error_bound"]),
            )
            return cls(int(data["n"]), edges)
        except ValueError as exc:
            raise ValueError(f"corrupt forest file {path}: {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"SingleLinkageForest(n={self.n}, edges={len(self.edges)}, min_threshold={self.min_threshold}, "
            f"exact_at={self.exact_at}, exact_up_to={self.exact_up_to}, error_bound={self.error_bound:.3g})"
        )


def merge_forests(parts: Iterable[ForestEdges], n: int) -> SingleLinkageForest:
    """Kruskal over the union of tile forests (global ids in [0, n)) = the exact single-linkage forest.

    Memory stays O(n): parts are folded in and compacted whenever the union exceeds 4n edges.
    Metadata: ``min_threshold`` = the largest of the parts' (the union is complete only above it),
    ``exact_at`` = thresholds exact in every part, ``exact_up_to`` = the smallest pruning level,
    ``error_bound`` = the largest."""
    acc = _ForestAccumulator(n)
    mins: list[float] = []
    exact: set[float] | None = None
    ups: list[float] = []
    bound = 0.0
    count = 0
    for p in parts:
        count += 1
        if len(p) and (p.src.min() < 0 or max(p.src.max(), p.dst.max()) >= n):
            raise ValueError(f"forest part {count - 1} references rows outside [0, {n})")
        if p.min_threshold is not None:
            mins.append(p.min_threshold)
        exact = set(p.exact_at) if exact is None else exact & set(p.exact_at)
        if p.exact_up_to is not None:
            ups.append(p.exact_up_to)
        bound = max(bound, p.error_bound)
        acc.add(p.src, p.dst, p.weight)
    src, dst, w = acc.compact()
    min_t = max(mins) if mins else None
    ex = tuple(t for t in sorted(exact or ()) if min_t is None or t >= min_t)
    edges = ForestEdges(
        src,
        dst,
        w,
        min_threshold=min_t,
        exact_at=ex,
        exact_up_to=min(ups) if ups else None,
        error_bound=bound,
    )
    return SingleLinkageForest(n, edges)


def single_linkage_forest(
    x: Any,
    min_threshold: float = 0.5,
    exact_at: Iterable[float] = (),
    *,
    device: str = "auto",
    precision: str = "auto",
    tile_size: int | None = None,
    prune_at: float | None = None,
    n_landmarks: int = DEFAULT_LANDMARKS,
    progress: bool = False,
    stats: dict[str, Any] | None = None,
) -> SingleLinkageForest:
    """The single-linkage hierarchy of the rows of ``x`` [N, d] for all thresholds ``>= min_threshold``.

    ``labels_at(t)`` equals :func:`cosine_components` ``(x, t)`` for ``t`` in ``exact_at`` (and at
    ``min_threshold``); see the module docstring for other ``t``. With ``prune_at`` the hierarchy is
    exact only up to ``prune_at`` (``labels_at`` refuses higher ``t``); default: no pruning."""
    x = _as_matrix(x)
    src, dst, w, meta = _forest_pass(
        x,
        None,
        min_threshold=min_threshold,
        exact_at=exact_at,
        device=device,
        precision=precision,
        tile_size=tile_size,
        prune_at=prune_at,
        n_landmarks=n_landmarks,
        progress=progress,
        stats=stats,
    )
    return SingleLinkageForest(x.shape[0], ForestEdges(src, dst, w, **meta))


def cosine_components(
    x: Any,
    threshold: float = 0.7,
    *,
    device: str = "auto",
    precision: str = "auto",
    tile_size: int | None = None,
    prune: bool | None = None,
    n_landmarks: int = DEFAULT_LANDMARKS,
    progress: bool = False,
    stats: dict[str, Any] | None = None,
) -> np.ndarray:
    """Canonical labels int64 [N] of the connected components of the graph linking ``i != j`` iff the
    float64 dot of rows ``x[i]``, ``x[j]`` is ``>= threshold`` (exact: see the module docstring).

    ``prune``: landmark pruning at ``threshold`` (identical result); ``None`` = on when N exceeds four
    sub-tiles. ``stats``: optional dict filled with tile counts."""
    x = _as_matrix(x)
    t = _check_threshold(threshold)
    max_norm = _validate_rows(x)
    backend, prec = _resolve_device(device, precision)
    eps = matmul_error_bound(x.shape[1], x.dtype, prec, max_norm)
    tile = int(tile_size or (DEFAULT_TILE_CPU if backend.name == "cpu" else DEFAULT_TILE_GPU))
    if tile < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    n = x.shape[0]
    if prune is None:
        prune = n > 4 * tile
    spec = _TileSpec(_lo32(t - eps), t, eps, (t,), False)
    labels = _Labels(n)
    if prune:
        _landmark_pass(backend, x, None, spec, tile, _n_landmarks(n, n_landmarks), None, labels, stats=stats)
    _run_pass(
        backend, x, None, spec, tile, None, labels, t if prune else None, progress=progress, stats=stats
    )
    return canonical_labels(labels.lab)


def _n_landmarks(n: int, requested: int) -> int:
    """At most ``requested``, and at most n/8 so the landmark pass stays a small part of the work."""
    return max(1, min(int(requested), n // 8))
