"""The tile pass: which sub-tiles to compute, in what order, and the landmark pruning that skips pairs
inside components already known."""

from __future__ import annotations

from typing import Any

import numpy as np

from actgeo_assets.lib.graph.contract import TileSpec
from actgeo_assets.lib.graph.forest import ForestAccumulator, UnionLabels
from actgeo_assets.lib.graph.labels import canonical_labels

DEFAULT_TILE_CPU = 2048
DEFAULT_TILE_GPU = 16384
DEFAULT_LANDMARKS = 1024
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


def run_pass(
    backend: Any,
    xa: np.ndarray,
    xb: np.ndarray | None,
    spec: TileSpec,
    tile: int,
    forest: ForestAccumulator | None,
    labels: UnionLabels | None,
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
    re-ordered by the labels known by then and handled the same way (again, until none is left), so rows
    that joined a big component in the meantime stop costing pair work. Without pruning every pair is computed."""
    na = xa.shape[0]
    within = xb is None
    nb = 0 if within else xb.shape[0]
    pruning = prune_level is not None
    if pruning:
        assert labels is not None
    bar = _progress(0, progress, "graph tiles")
    counts = {"tiles": 0, "pairs": 0}
    edge_counts = np.zeros(len(spec.count_ts), dtype=np.int64)
    if spec.count_ts and pruning:
        raise ValueError("edge counts need every pair: they cannot be combined with pruning")

    def rows(ids: np.ndarray):
        if within or ids[0] < na:
            return backend.block(xa, ids)
        return backend.block(xb, ids - na)

    def ordered_blocks(sub: np.ndarray) -> list[np.ndarray]:
        if pruning:
            sub = sub[np.argsort(canonical_labels(labels.lab[sub]), kind="stable")]
        return _block_ids(sub, len(sub), tile)

    def visit(sub_a: np.ndarray, sub_b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Run the sub-tiles of these rows that touch a constant block; return the rows of the mixed blocks
        (to visit next, re-ordered by the labels known then), or None when nothing is left."""
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
        return None if rest_a is None else (rest_a, rest_b)

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
            u, v, ww, cnt = backend.tile_reduce(a, b, diag, li, lj, spec)
            np.add(edge_counts, cnt, out=edge_counts)
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

    # A loop, not a recursive closure: a nested function that calls itself is a reference cycle, which would
    # keep this pass' rows (xa, xb: a shard's memory map, or its unit rows in memory) alive until Python's cyclic
    # GC happened to run (docs/PROFILES.md has what it cost the 1,000,000 run).
    todo = (np.arange(na, dtype=np.int64), None if within else np.arange(na, na + nb, dtype=np.int64))
    while todo is not None:
        todo = visit(*todo)
    if bar is not None:
        bar.close()
    if stats is not None:
        stats["tiles_computed"] = stats.get("tiles_computed", 0) + counts["tiles"]
        stats["pairs_computed"] = stats.get("pairs_computed", 0) + counts["pairs"]
        n_all = na * (na - 1) // 2 if within else na * nb
        stats["pairs_total"] = stats.get("pairs_total", 0) + n_all
        if spec.count_ts:
            stats["edge_counts"] = {float(ct): int(c) for ct, c in zip(spec.count_ts, edge_counts, strict=True)}


def landmark_pass(
    backend: Any,
    xa: np.ndarray,
    xb: np.ndarray | None,
    spec: TileSpec,
    tile: int,
    n_landmarks: int,
    forest: ForestAccumulator | None,
    labels: UnionLabels,
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
        u, v, w, _ = backend.tile_reduce(a, lmb, False, None, None, spec)
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


def landmark_count(n: int, requested: int) -> int:
    """At most ``requested``, and at most n/8 so the landmark pass stays a small part of the work."""
    return max(1, min(int(requested), n // 8))
