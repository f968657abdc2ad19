"""Which component does a new activation fall into? A faiss inner-product index over a run's unit rows.

    index = ComponentIndex(rows, labels, threshold=0.7)   # rows: float32 [N, d] unit; labels: int64 [N]
    hit = index.assign(queries)                          # queries: [M, d] unit rows

A query joins component c iff some row of c has float64 cosine >= threshold with it (the edge rule of
the engine, :mod:`actgeo_assets.lib.graph`). faiss' float32 ``range_search`` proposes neighbours a little below the threshold (by the
engine's :func:`~actgeo_assets.lib.graph.exactness.matmul_error_bound`) and every proposal is rechecked in
float64, so the answer is exact. Rows and queries pass the engine's own validation (finite, unit norm). A query linked to
several components would merge them: it is assigned the lowest label (the largest component) and flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actgeo_assets.lib.graph.exactness import as_matrix, check_threshold, matmul_error_bound, validate_rows


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
        faiss = _faiss()
        rows = as_matrix(rows, "rows")
        max_norm = validate_rows(rows, "rows")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (rows.shape[0],):
            raise ValueError(f"labels {labels.shape} do not match rows {rows.shape}")
        self.rows = rows
        self.labels = labels
        self.threshold = check_threshold(threshold)
        d = rows.shape[1]
        # faiss computes a float32 dot: proposals down to the engine's bound below the threshold
        # (queries are unit within the same tolerance, hence the max_norm margin).
        self.slack = matmul_error_bound(d, np.float64, "fp32", max_norm=max(max_norm, 1.0) * 1.02)
        # A CPU flat index in both builds: faiss' GPU indexes have no range_search.
        self.index = faiss.IndexFlatIP(d)
        self.index.add(np.ascontiguousarray(rows, dtype=np.float32))

    def assign(self, queries: np.ndarray) -> Assignment:
        """Exact assignment of ``queries`` [M, d] (unit rows, same normalization as the run)."""
        q = as_matrix(queries, "queries")
        if q.shape[1] != self.rows.shape[1]:
            raise ValueError(f"queries must be [M, {self.rows.shape[1]}], got shape {q.shape}")
        validate_rows(q, "queries")
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


def _faiss():  # -> the faiss module
    """faiss from either extra (``actgeo[cpu]``: faiss-cpu, ``actgeo[gpu]``: faiss-gpu-cu12)."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("the component lookup needs faiss: pip install 'actgeo[cpu]' (faiss-cpu) or "
                          "'actgeo[gpu]' (faiss-gpu-cu12 on a CUDA machine)") from exc
    return faiss
