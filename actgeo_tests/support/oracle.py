"""The tests' independent reference (float64 dense brute force, shared by every test that checks a partition)
and the clustered test data the engine tests share.

Nothing here uses the engine (`actgeo_assets.lib.graph`): the similarity matrix is formed in float64, the
components come from scipy, and the canonical order (largest first, ties by smallest member) is
re-derived here, so an engine bug cannot hide in its own reference.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components


def canonical_order(raw: np.ndarray) -> np.ndarray:
    """Relabel a partition: 0 = the largest component, ties broken by the component's smallest row."""
    raw = np.asarray(raw).reshape(-1)
    sizes = np.bincount(raw)
    first = np.full(len(sizes), len(raw))
    np.minimum.at(first, raw, np.arange(len(raw)))
    present = np.flatnonzero(sizes)
    order = sorted(present.tolist(), key=lambda c: (-sizes[c], first[c]))
    new = np.full(len(sizes), -1, dtype=np.int64)
    new[order] = np.arange(len(order))
    return new[raw]


def brute_force_labels(x: np.ndarray, t: float) -> np.ndarray:
    """Canonical int64 labels [N] of the graph linking ``i != j`` iff the float64 dot of rows >= ``t``.

    ``x``: [N, d] rows as given (not re-normalized). Dense: for N up to ~20,000."""
    x64 = np.asarray(x, dtype=np.float64)
    adj = (x64 @ x64.T) >= t
    np.fill_diagonal(adj, False)
    return canonical_order(connected_components(csr_matrix(adj), directed=False)[1])


def query_links(rows: np.ndarray, labels: np.ndarray, q: np.ndarray, t: float) -> tuple[np.ndarray, int, np.ndarray]:
    """float64 brute force for one query ``q`` [d] against stored ``rows`` [N, d] with ``labels`` [N]: the
    sorted components it links to (cosine >= ``t``), how many rows it links to, and its float64 cosines [N]."""
    sims = np.asarray(rows, dtype=np.float64) @ np.asarray(q, dtype=np.float64)
    linked = np.flatnonzero(sims >= t)
    return np.unique(labels[linked]), len(linked), sims


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (same dtype)."""
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n: int, d: int, seed: int = 0, k: int = 6) -> np.ndarray:
    """float32 [n, d] unit vectors around k random centres with varying spread: one or two big components
    and a tail, like activations at a cosine threshold of 0.6-0.8."""
    rng = np.random.default_rng(seed)
    c = unit(rng.standard_normal((k, d)))
    a = rng.choice(k, n, p=np.linspace(3, 1, k) / np.linspace(3, 1, k).sum())
    spread = rng.uniform(0.3, 1.3, k)[a] * rng.lognormal(0, 0.3, n)
    return unit(c[a] + spread[:, None] * rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
