"""Row access: a run's rows given as one callable or as ``(offset, array)`` shards, and chunked
reductions over a subset of them.

``RowsSource`` is either a :data:`RowGetter` (global row indices ``int64 [m]``, ascending, -> ``[m, d]``
rows) or shards ``[(offset, array[n_i, d]), ...]`` whose concatenation in offset order is the full matrix
(memory-mapped ``.npy`` files, say): nothing here concatenates the shards. Reductions read
:data:`CHUNK_ROWS` rows at a time, so even the giant component's rows are never held at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


class NpyRows:
    """Rows of a 2-D C-order ``.npy`` file read on demand with ``os.preadv``, without mapping the file: an
    array for :func:`row_getter` (``len``, ``shape``, ``dtype``, integer-array, slice or integer indexing ->
    a new ``[m, d]`` array, as a memory map gives).

    Why not ``np.load(mmap_mode="r")``: rows gathered at random over a whole run (the cards' logit-lens
    control reads 128 groups of up to 1,024 random activations per card) fault in, with the kernel's
    readahead, nearly every page of every shard, and a mapped page counts in the process' resident memory
    until the map goes: measured on the scale profile's shape (20 shards of 50,000 x 640 float32, 2.4 GiB),
    the first card's control groups raised the RSS by 2.27 GiB of file pages. Read with ``preadv`` the pages
    stay in the page cache (shared, reclaimable) and never count in the process (+0.0 GiB; the 19 cards' reads
    took 8 s instead of 1.5 s there, one system call per run of consecutive rows)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            self.offset = fh.tell()
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise ValueError(f"{self.path}: not a 2-D C-order numeric .npy ({shape}, {dtype}, "
                             f"fortran_order={fortran})")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        self._row_bytes = int(shape[1]) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Any) -> np.ndarray:
        n = self.shape[0]
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(n))
        arr = np.asarray(idx)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise IndexError(f"{self.path}: rows are indexed by integers, got {arr.dtype}")
        flat = arr.astype(np.int64).reshape(-1)
        flat = np.where(flat < 0, flat + n, flat)
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            raise IndexError(f"{self.path}: row index out of range 0..{n - 1}")
        order = np.argsort(flat, kind="stable")
        rows = flat[order]
        got = np.empty((rows.size, self.shape[1]), dtype=self.dtype)
        if rows.size:
            cuts = np.flatnonzero(np.diff(rows) != 1) + 1
            starts, ends = np.r_[0, cuts].tolist(), np.r_[cuts, rows.size].tolist()
            self._read(got, rows[starts].tolist(), starts, ends)
        out = np.empty_like(got)
        out[order] = got
        return out[0] if arr.ndim == 0 else out.reshape(*arr.shape, self.shape[1])

    def _read(self, into: np.ndarray, firsts: list[int], starts: list[int], ends: list[int]) -> None:
        """Fill ``into[a:b]`` (C-contiguous rows) with the file's rows ``first..first + b - a - 1`` for each run
        ``(first, a, b)``: one ``preadv`` per run of consecutive rows (more where the kernel reads less)."""
        rb, base = self._row_bytes, self.offset
        view = memoryview(into).cast("B")
        with open(self.path, "rb", buffering=0) as fh:
            fd = fh.fileno()
            for first, a, b in zip(firsts, starts, ends, strict=True):
                pos, end = a * rb, b * rb
                at = base + first * rb - pos
                while pos < end:
                    done = os.preadv(fd, [view[pos:end]], at + pos)
                    if done <= 0:
                        raise OSError(f"{self.path}: the file ends before row {first + (pos - a * rb) // rb}")
                    pos += done
