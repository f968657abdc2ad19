"""Spanning-forest edges of tiles, their files, and Kruskal merging into one forest."""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import minimum_spanning_tree

from actgeo_assets.lib.graph.labels import cc_labels
from actgeo_assets.lib.store.layout import atomic_path

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
        data = load_npz(
            path, ("src", "dst", "weight", "min_threshold", "exact_at", "exact_up_to", "error_bound")
        )
        try:
            return cls(
                data["src"],
                data["dst"],
                data["weight"],
                min_threshold=nan_none(data["min_threshold"]),
                exact_at=tuple(float(t) for t in data["exact_at"]),
                exact_up_to=nan_none(data["exact_up_to"]),
                error_bound=float(data["error_bound"]),
            )
        except ValueError as exc:
            raise ValueError(f"corrupt forest file {path}: {exc}") from exc


def nan_none(a: np.ndarray) -> float | None:
    v = float(a)
    return None if math.isnan(v) else v


def load_npz(path: str | os.PathLike[str], keys: Sequence[str]) -> dict[str, np.ndarray]:
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


def msf_fast(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n_nodes: int) -> np.ndarray:
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
    lab = cc_labels(n_nodes, src[top_sel], dst[top_sel])
    rest = lab[src] != lab[dst]
    rest[top] = False
    comb = np.concatenate([top_sel, np.flatnonzero(rest)])
    return comb[msf_fast(src[comb], dst[comb], weight[comb], n_nodes)]


def _dedup(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n: int):
    lo = np.minimum(src, dst)
    hi = np.maximum(src, dst)
    keep = lo != hi
    lo, hi, weight = lo[keep], hi[keep], weight[keep]
    _, first = np.unique(lo * np.int64(n) + hi, return_index=True)
    return lo[first], hi[first], weight[first]


class ForestAccumulator:
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
        sel = msf_fast(src, dst, w, self.n)
        out = (src[sel], dst[sel], w[sel])
        self.parts = [out]
        self.pending = len(sel)
        return out


class UnionLabels:
    """Incremental union-find as a label array: ``lab[i]`` is the id of a member (the root) of i's
    component. ``merge`` costs O(edges log edges + n) (one gather over ``lab``)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.lab = np.arange(n, dtype=np.int64)
        self._map = np.arange(n, dtype=np.int64)

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> UnionLabels:
        """Start from known components: ``labels`` int [n], equal values = one component (any ids)."""
        lab = np.asarray(labels, dtype=np.int64)
        out = cls(len(lab))
        if len(lab):
            _, inv = np.unique(lab, return_inverse=True)
            root = np.full(int(inv.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(root, inv, np.arange(len(lab), dtype=np.int64))
            out.lab = root[inv]
        return out

    def merge(self, u: np.ndarray, v: np.ndarray) -> None:
        cu, cv = self.lab[u], self.lab[v]
        k = cu != cv
        if not k.any():
            return
        cu, cv = cu[k], cv[k]
        comps, inv = np.unique(np.concatenate([cu, cv]), return_inverse=True)
        cl = cc_labels(len(comps), inv[: len(cu)], inv[len(cu) :])
        root = np.full(int(cl.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(root, cl, comps)
        self._map[comps] = root[cl]
        self.lab = self._map[self.lab]
        self._map[comps] = comps


def star_edges(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


