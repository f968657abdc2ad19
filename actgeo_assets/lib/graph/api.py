"""The engine's entry points: components at one threshold, the forest of a whole array or of one tile."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from actgeo_assets.lib.graph.backend_numpy import NumpyBackend
from actgeo_assets.lib.graph.backends import resolve_backend
from actgeo_assets.lib.graph.contract import TileSpec
from actgeo_assets.lib.graph.exactness import (
    as_matrix,
    check_threshold,
    float32_at_most,
    matmul_error_bound,
    validate_rows,
)
from actgeo_assets.lib.graph.forest import ForestAccumulator, ForestEdges, UnionLabels
from actgeo_assets.lib.graph.hierarchy import SingleLinkageForest
from actgeo_assets.lib.graph.labels import canonical_labels
from actgeo_assets.lib.graph.lowrank import DEFAULT_RANK, lowrank_components_labels
from actgeo_assets.lib.graph.schedule import (
    DEFAULT_LANDMARKS,
    DEFAULT_TILE_CPU,
    DEFAULT_TILE_GPU,
    landmark_count,
    landmark_pass,
    run_pass,
)

# ----------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------


def _exact_set(min_threshold: float, exact_at: Iterable[float], prune_at: float | None) -> tuple[float, ...]:
    ts = {min_threshold}
    for t in exact_at:
        tt = check_threshold(t, "exact_at value")
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
    count_edges: bool = False,
    known_labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Validated inputs -> forest over the pass node space (A rows, then B rows)."""
    min_threshold = check_threshold(min_threshold, "min_threshold")
    if prune_at is not None:
        prune_at = check_threshold(prune_at, "prune_at")
        if prune_at < min_threshold:
            raise ValueError(f"prune_at {prune_at} is below min_threshold {min_threshold}")
    exact_ts = _exact_set(min_threshold, exact_at, prune_at)
    max_norm = validate_rows(xa, "xa" if xb is not None else "x")
    if xb is not None:
        if xb.shape[1] != xa.shape[1]:
            raise ValueError(
                f"xa and xb must have the same number of columns, got {xa.shape[1]} and {xb.shape[1]}"
            )
        max_norm = max(max_norm, validate_rows(xb, "xb"))
    backend, prec = resolve_backend(device, precision)
    dtype = np.result_type(xa.dtype, xb.dtype) if xb is not None else xa.dtype
    eps = matmul_error_bound(xa.shape[1], dtype, prec, max_norm)
    tile = _tile_size(tile_size, backend.name)
    n = xa.shape[0] + (0 if xb is None else xb.shape[0])
    acc = ForestAccumulator(n)
    labels = None
    if known_labels is not None:
        if prune_at is None:
            raise ValueError("known_labels needs prune_at: they are components known at >= prune_at")
        known_labels = np.asarray(known_labels)
        if known_labels.shape != (n,):
            raise ValueError(f"known_labels must have shape ({n},) (A rows, then B rows), got {known_labels.shape}")
        labels = UnionLabels.from_labels(known_labels)
    elif prune_at is not None:
        labels = UnionLabels(n)
        lspec = TileSpec(float32_at_most(prune_at - eps), prune_at, eps, exact_ts, True)
        landmark_pass(backend, xa, xb, lspec, tile, landmark_count(n, n_landmarks), acc, labels, stats=stats)
    if count_edges and prune_at is not None:
        raise ValueError("count_edges needs every pair: it cannot be combined with prune_at")
    spec = TileSpec(float32_at_most(min_threshold - eps), min_threshold, eps, exact_ts, True,
                     count_ts=exact_ts if count_edges else ())
    run_pass(backend, xa, xb, spec, tile, acc, labels, prune_at, progress=progress, stats=stats)
    src, dst, w = acc.compact()
    meta = {
        "min_threshold": min_threshold,
        "exact_at": exact_ts,
        "exact_up_to": prune_at,
        "error_bound": eps,
    }
    return src, dst, w, meta


def _prefilter_rank(rank: int | None, numpy_backend: bool, d: int, prune: bool) -> int:
    """k of the low-rank prefilter for :func:`cosine_components` (0 = none); ValueError for a bad ``rank``.
    ``numpy_backend``: the device is ``cpu`` (the prefilter does not run on the torch backends); by default
    only with pruning (N above four sub-tiles: below, the plain pass is as fast as choosing directions)."""
    if rank is None:
        return DEFAULT_RANK if numpy_backend and prune and d >= 4 * DEFAULT_RANK else 0
    if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or not 0 <= rank < d:
        raise ValueError(f"rank must be an integer in [0, {d}) (d = {d} columns; 0 = no prefilter), got {rank!r}")
    if rank and not numpy_backend:
        raise ValueError("rank (the low-rank prefilter) needs device='cpu'; the torch backends do not run it")
    return int(rank)


def _tile_size(tile_size: int | None, backend_name: str) -> int:
    """The sub-tile edge: ``tile_size``, or the backend's default when None; ValueError unless >= 1."""
    if tile_size is None:
        return DEFAULT_TILE_CPU if backend_name == "cpu" else DEFAULT_TILE_GPU
    if isinstance(tile_size, bool) or int(tile_size) != tile_size or tile_size < 1:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
    return int(tile_size)


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
    count_edges: bool = False,
    known_labels: Any = None,
) -> ForestEdges:
    """Maximum spanning forest of all edges with weight ``>= min_threshold`` between rows of block A
    (global ids ``offset_a + i``) and block B (``offset_b + j``); with ``xb=None`` the pairs ``i < j``
    within A. ``xa``/``xb``: [n, d] unit rows (memory-mapped .npy shards are read sub-tile by sub-tile).

    ``exact_at``: thresholds at which the forest's cut must be float64-exact (``min_threshold`` always
    is). ``prune_at``: prune with landmarks at this level (the forest is then exact only for cuts
    ``<= prune_at``, it also contains landmark edges within A and within B, which are true edges).
    ``stats``: optional dict filled with tile counts. ``count_edges``: also count, exactly, the graph's
    edges (pairs with float64 cosine ``>= t``) at every exact threshold, into ``stats["edge_counts"]``
    (``{t: count}``; needs every pair, so not with ``prune_at``). ``known_labels`` (with ``prune_at``;
    int [na + nb], A rows then B rows): components already joined at ``>= prune_at`` by edges the caller
    merges with this forest (e.g. each block's own pruned :func:`single_linkage_forest`); pairs inside them are
    skipped and no
    landmark pass is run, so the result is exact for cuts ``<= prune_at`` only together with those edges.
    Returns at most ``na + nb - 1`` edges, ``src < dst``.
    """
    xa = as_matrix(xa, "xa")
    xb = None if xb is None else as_matrix(xb, "xb")
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
        count_edges=count_edges,
        known_labels=known_labels,
    )
    gmap = np.arange(na, dtype=np.int64) + offset_a
    if xb is not None:
        gmap = np.concatenate([gmap, np.arange(xb.shape[0], dtype=np.int64) + offset_b])
    gs, gd = gmap[src], gmap[dst]
    return ForestEdges(np.minimum(gs, gd), np.maximum(gs, gd), w, **meta)


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
    x = as_matrix(x)
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
    rank: int | None = None,
) -> np.ndarray:
    """Canonical labels int64 [N] of the connected components of the graph linking ``i != j`` iff the
    float64 dot of rows ``x[i]``, ``x[j]`` is ``>= threshold`` (exact: see the module docstring).

    ``prune``: landmark pruning at ``threshold`` (identical result); ``None`` = on when N exceeds four
    sub-tiles. ``stats``: optional dict filled with tile counts. ``rank`` (CPU only): k of the provable
    low-rank prefilter of :mod:`actgeo_assets.lib.graph.lowrank` (identical result; a (k+1)-dimensional
    GEMM bounds every pair and only the survivors get the full dot); ``None`` = ``DEFAULT_RANK`` when the
    device is the CPU, pruning is on, ``d >= 4 * DEFAULT_RANK`` and at most ``AUTO_MAX_SURVIVORS`` of a
    row sample's pairs survive the bound (else the plain pass), ``0`` = off, else ``1 <= rank < d`` (always used)."""
    x = as_matrix(x)
    t = check_threshold(threshold)
    max_norm = validate_rows(x)
    backend, prec = resolve_backend(device, precision)
    eps = matmul_error_bound(x.shape[1], x.dtype, prec, max_norm)
    tile = _tile_size(tile_size, backend.name)
    n = x.shape[0]
    if prune is None:
        prune = n > 4 * tile
    k = _prefilter_rank(rank, isinstance(backend, NumpyBackend), x.shape[1], prune)
    if k:
        labels = lowrank_components_labels(
            x, t, eps=eps, max_norm=max_norm, rank=k, tile=tile,
            n_landmarks=landmark_count(n, n_landmarks) if prune else 0, prune=prune, progress=progress, stats=stats,
            auto=rank is None,
        )
        return canonical_labels(labels.lab)
    spec = TileSpec(float32_at_most(t - eps), t, eps, (t,), False)
    labels = UnionLabels(n)
    if prune:
        landmark_pass(backend, x, None, spec, tile, landmark_count(n, n_landmarks), None, labels, stats=stats)
    run_pass(
        backend, x, None, spec, tile, None, labels, t if prune else None, progress=progress, stats=stats
    )
    return canonical_labels(labels.lab)


