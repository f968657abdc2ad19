"""Component labels: canonical order (0 = largest) and the summary every report prints."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

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
    return summary_from_sizes(sizes, int(lab.size), top)


def summary_from_sizes(sizes: np.ndarray, n: int, top: int = 20) -> dict[str, Any]:
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


def cc_labels(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    g = sp.csr_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def members_by_label(labels: np.ndarray, wanted: np.ndarray) -> dict[int, np.ndarray]:
    """``{label: ascending member rows}`` for each label in ``wanted``, from one stable argsort."""
    sel = np.flatnonzero(np.isin(labels, wanted))
    order = sel[np.argsort(labels[sel], kind="stable")]
    lab_sorted = labels[order]
    bounds = np.searchsorted(lab_sorted, wanted, side="left"), np.searchsorted(lab_sorted, wanted, side="right")
    return {int(w): order[a:b] for w, a, b in zip(wanted, *bounds, strict=True)}
