"""Which component does a new activation fall into? A faiss inner-product index over a run's unit rows.

    index = ComponentIndex(rows, labels, threshold=0.7)   # rows: float32 [N, d] unit; labels: int64 [N]
    hit = index.assign(queries)                          # queries: [M, d] unit rows

A query joins component c iff some row of c has float64 cosine >= threshold with it (the edge rule of
lib/graph.py). faiss' float32 ``range_search`` proposes neighbours a little below the threshold (by the
float32 error bound) and every proposal is rechecked in float64, so the answer is exact. A query linked to
several components would merge them: it is assigned the lowest label (the largest component) and flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Assignment:
    """Per query: ``label`` int64 [M] (-1: no neighbour, a new singleton), ``n_neighbours`` int64 [M] (rows
    at cosine >= threshold), ``best_cosine`` float64 [M] (-inf when no neighbour), ``merges`` bool [M] (the
    query links two or more components)."""

    label: np.ndarray
    n_neighbours: np.ndarray
    best_cosine: np.ndarray
    merges: np.ndarray


class ComponentIndex:
    """Exact threshold lookup of new rows against a run's rows and canonical labels."""

    def __init__(self, rows: np.ndarray, labels: np.ndarray, threshold: float) -> None:
        import faiss

        rows = np.asarray(rows)
        labels = np.asarray(labels, dtype=np.int64)
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise ValueError(f"rows must be a non-empty 2-D array, got shape {rows.shape}")
        if labels.shape != (rows.shape[0],):
            raise ValueError(f"labels {labels.shape} do not match rows {rows.shape}")
        if not -1.0 < threshold <= 1.0:
            raise ValueError(f"threshold must lie in (-1, 1], got {threshold}")
        self.rows = rows
        self.labels = labels
        self.threshold = float(threshold)
        d = rows.shape[1]
        # float32 dot of unit rows is within d * 2^-24 (+ input rounding) of the float64 value.
        self.slack = 2.0 * d * 2.0**-24 + 1e-6
        self.index = faiss.IndexFlatIP(d)
        self.index.add(np.ascontiguousarray(rows, dtype=np.float32))

    def assign(self, queries: np.ndarray) -> Assignment:
        """Exact assignment of ``queries`` [M, d] (unit rows, same normalization as the run)."""
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.rows.shape[1]:
            raise ValueError(f"queries must be [M, {self.rows.shape[1]}], got shape {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError(f"queries have non-finite values (first bad row {int(np.flatnonzero(~np.isfinite(q).all(1))[0])})")
        norms = np.linalg.norm(q.astype(np.float64), axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > 1e-2)
        if len(bad):
            raise ValueError(f"queries must be unit rows (within 1e-2); rows {bad[:5].tolist()} have norms "
                             f"{np.round(norms[bad[:5]], 4).tolist()}")
        m = q.shape[0]
        lims, _, ids = self.index.range_search(np.ascontiguousarray(q, dtype=np.float32),
                                               self.threshold - self.slack)
        label = np.full(m, -1, dtype=np.int64)
        count = np.zeros(m, dtype=np.int64)
        best = np.full(m, -np.inf)
        merges = np.zeros(m, dtype=bool)
        q64 = q.astype(np.float64)
        for i in range(m):
            cand = ids[lims[i]:lims[i + 1]]
            if len(cand) == 0:
                continue
            exact = np.asarray(self.rows[np.sort(cand)], dtype=np.float64) @ q64[i]
            linked = np.sort(cand)[exact >= self.threshold]
            if len(linked) == 0:
                continue
            comps = np.unique(self.labels[linked])
            label[i], count[i] = comps[0], len(linked)
            best[i] = float(exact.max())
            merges[i] = len(comps) > 1
        return Assignment(label=label, n_neighbours=count, best_cosine=best, merges=merges)
