"""The exact single-linkage hierarchy: a merged maximum spanning forest, cut at any threshold."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.graph.exactness import check_threshold
from actgeo_assets.lib.graph.forest import ForestAccumulator, ForestEdges, load_npz, nan_none
from actgeo_assets.lib.graph.labels import canonical_labels, cc_labels, summary_from_sizes
from actgeo_assets.lib.store.layout import atomic_path

#: Columns of :meth:`SingleLinkageForest.sweep`.
SWEEP_COLUMNS = ("threshold", "n_components", "largest", "largest_fraction", "second_largest", "singletons",
                 "non_singleton", "forest_edges", "exact")


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
        t = check_threshold(t)
        if self.min_threshold is not None and t < self.min_threshold:
            raise ValueError(f"threshold {t} is below the forest's min_threshold {self.min_threshold}")
        if self.exact_up_to is not None and t > self.exact_up_to:
            raise ValueError(
                f"threshold {t} is above prune_at {self.exact_up_to}: a forest pruned there is incomplete above it"
            )
        return int(np.searchsorted(self._neg, -t, side="right"))

    def labels_at(self, t: float) -> np.ndarray:
        """Canonical labels int64 [n] of the components at threshold ``t``."""
        k = self._cut(t)
        return canonical_labels(cc_labels(self.n, self.edges.src[:k], self.edges.dst[:k]))

    def component_sizes_at(self, t: float) -> np.ndarray:
        """Component sizes int64 [C] at ``t``, non-increasing (index = canonical label)."""
        k = self._cut(t)
        lab = cc_labels(self.n, self.edges.src[:k], self.edges.dst[:k])
        return np.sort(np.bincount(lab).astype(np.int64))[::-1].copy()

    def sweep(self, thresholds: Iterable[float]) -> pd.DataFrame:
        """One row per threshold: threshold, n_components, largest, largest_fraction, second_largest,
        singletons, non_singleton (components of size >= 2 other than the largest), forest_edges (edges
        of the spanning forest with weight >= t: N - n_components, not the graph's edge count), and exact
        (True where ``t`` is one of the forest's exact thresholds, else the cut is within
        ``error_bound`` of the float64 one)."""
        exact = {float(v) for v in (self.edges.exact_at or ())}
        rows = []
        for t in thresholds:
            sizes = self.component_sizes_at(t)
            s = summary_from_sizes(sizes, self.n)
            rows.append(
                {
                    "threshold": float(t),
                    "n_components": s["n_components"],
                    "largest": s["largest"],
                    "largest_fraction": s["largest_fraction"],
                    "second_largest": int(sizes[1]) if len(sizes) > 1 else 0,
                    "singletons": s["singletons"],
                    "non_singleton": s["non_singleton"],
                    "forest_edges": self._cut(t),
                    "exact": float(t) in exact,
                }
            )
        return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomically write as .npz (the edges, their metadata and ``n``)."""
        e = self.edges
        with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, n=np.array(self.n), src=e.src, dst=e.dst, weight=e.weight, **e._meta_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SingleLinkageForest:
        """Read a file written by :meth:`save`; ``ValueError`` naming the file if it is corrupt."""
        data = load_npz(
            path, ("n", "src", "dst", "weight", "min_threshold", "exact_at", "exact_up_to", "error_bound")
        )
        try:
            edges = ForestEdges(
                data["src"],
                data["dst"],
                data["weight"],
                min_threshold=nan_none(data["min_threshold"]),
                exact_at=tuple(float(t) for t in data["exact_at"]),
                exact_up_to=nan_none(data["exact_up_to"]),
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
    acc = ForestAccumulator(n)
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


