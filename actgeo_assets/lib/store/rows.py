"""Row access: a run's rows given as one callable or as ``(offset, array)`` shards, and chunked
reductions over a subset of them.

``RowsSource`` is either a :data:`RowGetter` (global row indices ``int64 [m]``, ascending, -> ``[m, d]``
rows) or shards ``[(offset, array[n_i, d]), ...]`` whose concatenation in offset order is the full matrix
(memory-mapped ``.npy`` files, say): nothing here concatenates the shards. Reductions read
:data:`CHUNK_ROWS` rows at a time, so even the giant component's rows are never held at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: Maps global row indices (int64 [m], ascending) to rows ([m, d]).
RowGetter = Callable[[np.ndarray], np.ndarray]
#: Either a :data:`RowGetter` or shards ``[(offset, array[n_i, d]), ...]``.
RowsSource = RowGetter | Sequence[tuple[int, np.ndarray]]

#: Rows per chunk when reducing over a component's members.
CHUNK_ROWS = 65_536


def row_getter(rows: RowsSource) -> RowGetter:
    """Normalize ``rows`` to a callable ``idx int64 [m] -> float [m, d]``.

    With shards ``[(offset, array), ...]`` global row ``g`` is ``array[g - offset]`` of the shard whose
    ``offset <= g < offset + len(array)``. Shards must not overlap. Indices out of range raise IndexError.
    An ``array`` may be a memory map or any object with ``len``, ``shape``, ``dtype`` and integer-array
    indexing (the pipeline's view of a shard's kept raw rows is one).
    """
    if callable(rows):
        return rows
    shards = sorted(((int(o), a) for o, a in rows), key=lambda s: s[0])
    if not shards:
        raise ValueError("rows: no shards given")
    offsets = np.array([o for o, _ in shards], dtype=np.int64)
    ends = offsets + np.array([len(a) for _, a in shards], dtype=np.int64)
    if np.any(offsets[1:] < ends[:-1]):
        raise ValueError(f"rows: shards overlap (offsets {offsets.tolist()}, ends {ends.tolist()})")

    def get(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        which = np.searchsorted(offsets, idx, side="right") - 1
        bad = (which < 0) | (idx >= ends[np.clip(which, 0, None)])
        if np.any(bad):
            raise IndexError(f"rows: global indices outside every shard, first: {idx[bad][:5].tolist()}")
        d = shards[0][1].shape[1]
        out = np.empty((idx.size, d), dtype=np.result_type(*[a.dtype for _, a in shards]))
        for s in np.unique(which):
            sel = which == s
            off, arr = shards[s]
            out[sel] = arr[idx[sel] - off]
        return out

    return get


def chunked_mean(get: RowGetter, members: np.ndarray, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """float64 [d] mean of rows ``members`` (read in chunks)."""
    total: np.ndarray | None = None
    for s in range(0, members.size, chunk):
        block = np.asarray(get(members[s : s + chunk]), dtype=np.float64).sum(axis=0)
        total = block if total is None else total + block
    assert total is not None
    return total / members.size


def cosines_to_direction(get: RowGetter, members: np.ndarray, direction: np.ndarray,
                         chunk: int = CHUNK_ROWS) -> np.ndarray:
    """float64 [m] cosine of each member row to ``direction`` (rows need not be unit)."""
    norm = float(np.linalg.norm(direction))
    unit = direction / norm if norm > 0 else direction
    out = np.empty(members.size, dtype=np.float64)
    for s in range(0, members.size, chunk):
        block = np.asarray(get(members[s : s + chunk]), dtype=np.float64)
        rn = np.linalg.norm(block, axis=1)
        rn[rn == 0] = 1.0
        out[s : s + chunk] = (block @ unit) / rn
    return out
