"""Row access: a run's rows given as one callable or as ``(offset, array)`` shards, and chunked
reductions over a subset of them.

``RowsSource`` is either a :data:`RowGetter` (global row indices ``int64 [m]``, ascending, -> ``[m, d]``
rows) or shards ``[(offset, array[n_i, d]), ...]`` whose concatenation in offset order is the full matrix
(memory-mapped ``.npy`` files, say): nothing here concatenates the shards. Reductions read
:data:`CHUNK_ROWS` rows at a time, so even the giant component's rows are never held at once, and a
read-only memory map is read with ``preadv`` instead (:class:`NpyRows`, :func:`unmapped`), so rows gathered at
random never pull the file's pages into the process' resident memory.
"""

from __future__ import annotations

import mmap
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
    indexing (the pipeline's view of a shard's kept raw rows is one); a whole read-only memory map is read
    through :func:`unmapped` (the same bytes, without mapping pages into the process). Ascending indices
    (what every reduction here passes) are read shard by shard as slices; any order is accepted.
    """
    if callable(rows):
        return rows
    shards = sorted(((int(o), unmapped(a)) for o, a in rows), key=lambda s: s[0])
    if not shards:
        raise ValueError("rows: no shards given")
    offsets = np.array([o for o, _ in shards], dtype=np.int64)
    ends = offsets + np.array([len(a) for _, a in shards], dtype=np.int64)
    if np.any(offsets[1:] < ends[:-1]):
        raise ValueError(f"rows: shards overlap (offsets {offsets.tolist()}, ends {ends.tolist()})")
    d = shards[0][1].shape[1]
    dtype = np.result_type(*[a.dtype for _, a in shards])
    fused = _fused_files([a for _, a in shards], dtype)

    def get(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        which = np.searchsorted(offsets, idx, side="right") - 1
        bad = (which < 0) | (idx >= ends[np.clip(which, 0, None)])
        if np.any(bad):
            raise IndexError(f"rows: global indices outside every shard, first: {idx[bad][:5].tolist()}")
        out = np.empty((idx.size, d), dtype=dtype)
        if fused is not None and idx.size:
            files, starts, file_row = fused
            local = idx - offsets[which]
            _read_rows(files, which, local if file_row is None else file_row[starts[which] + local], out)
            return out
        if idx.size and (idx[1:] >= idx[:-1]).all():  # ascending: each shard's rows are one slice
            bounds = [*np.searchsorted(idx, offsets).tolist(), idx.size]
            for s, (off, arr) in enumerate(shards):
                a, b = bounds[s], bounds[s + 1]
                if a < b:
                    out[a:b] = arr[idx[a:b] - off]
            return out
        for s in np.unique(which).tolist():
            sel = which == s
            off, arr = shards[s]
            out[sel] = arr[idx[sel] - off]
        return out

    return get


class SelectedRows:
    """Rows ``rows`` (int64, ascending) of ``base`` (an array or :class:`NpyRows`), indexed as an array of
    ``len(rows)`` rows: row ``i`` is ``base[rows[i]]``; a shard array for :func:`row_getter`, which reads it
    with the other shards in one pass when ``base`` is an :class:`NpyRows` (the pipeline's raw rows that
    normalization kept are one)."""

    def __init__(self, base: Any, rows: np.ndarray) -> None:
        self.base = base
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), int(base.shape[1]))
        self.dtype = base.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: Any) -> np.ndarray:
        return self.base[self.rows[idx]]


def _fused_files(arrays: list[Any], dtype: np.dtype) -> tuple[list[NpyRows], np.ndarray, np.ndarray | None] | None:
    """Where every shard is an :class:`NpyRows` (or :class:`SelectedRows` of one) of ``dtype``: the files, each
    shard's start in the concatenated shards (int64) and the file row of each concatenated row (None when every
    shard is a whole file), so :func:`_read_rows` reads all shards in one pass; else None."""
    files: list[NpyRows] = []
    maps: list[np.ndarray | None] = []
    for a in arrays:
        base, sel = (a.base, a.rows) if isinstance(a, SelectedRows) else (a, None)
        if not isinstance(base, NpyRows) or base.dtype != dtype:
            return None
        files.append(base)
        maps.append(sel)
    starts = np.cumsum([0] + [len(a) for a in arrays])[:-1].astype(np.int64)
    if all(m is None for m in maps):
        return files, starts, None
    file_row = np.concatenate([np.arange(len(a), dtype=np.int64) if m is None else m
                               for a, m in zip(arrays, maps, strict=True)])
    return files, starts, file_row


def _read_rows(files: list[NpyRows], which: np.ndarray, local: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out[k]`` with row ``local[k]`` of ``files[which[k]]`` (all of one dtype and width): the rows in
    ascending (file, row) order, one ``preadv`` per run of consecutive rows of one file."""
    order = None
    if which.size > 1 and not ((which[1:] > which[:-1]) | ((which[1:] == which[:-1]) & (local[1:] >= local[:-1]))).all():
        order = np.lexsort((local, which))
        which, local = which[order], local[order]
    got = out if order is None else np.empty_like(out)
    m = local.size
    cuts = (np.flatnonzero((which[1:] != which[:-1]) | (local[1:] - local[:-1] != 1)) + 1).tolist()
    starts = [0, *cuts]
    firsts, shard_of = local[starts].tolist(), which[starts].tolist()
    ends = [*cuts, m]
    rb = files[0]._row_bytes
    view = memoryview(got).cast("B")
    fds = {}
    for s, first, a, b in zip(shard_of, firsts, starts, ends, strict=True):
        f = files[s]
        fd = fds.get(s)
        if fd is None:
            fd = fds[s] = f._descriptor()
        _pread_run(fd, view, f.path, f.offset, rb, first, a, b)
    if order is not None:
        out[order] = got


def chunked_mean(get: RowGetter, members: np.ndarray, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """float64 [d] mean of rows ``members`` (read in chunks; each chunk summed in float64 without a float64
    copy of it: the same sums as converting first, row after row, at a third of the memory for float32 rows)."""
    total: np.ndarray | None = None
    for s in range(0, members.size, chunk):
        block = np.asarray(get(members[s : s + chunk])).sum(axis=0, dtype=np.float64)
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
    """Rows of a 2-D C-order ``.npy`` file (or of a raw file at a byte ``offset``) read on demand with
    ``os.preadv``, without mapping the file: an array for :func:`row_getter` (``len``, ``shape``, ``dtype``,
    integer-array, slice or integer indexing -> a new ``[m, d]`` array, as a memory map gives).

    Why not ``np.load(mmap_mode="r")``: rows gathered at random over a whole run (the cards' logit-lens
    control reads 128 groups of up to 1,024 random activations per card; the cosine histogram 400,000 random
    rows) fault in, with the kernel's readahead and large page-cache folios, up to ~256 KiB of the file per row
    read, and a mapped page counts in the process' resident memory until the map goes: on the scale profile's
    shape (20 shards of 50,000 x 640 float32, 2.4 GiB) the lens control of 19 cards and the histogram's
    sample each raised the RSS by 2.3-2.7 GiB of file pages. Read with ``preadv`` the pages stay in the page
    cache (shared, reclaimable) and never count in the process (``benchmarks/merge_memory.py``). Rows are read
    in ascending order, one system call per run of consecutive rows (a chunk of a component's members is
    mostly such runs); the file stays open (one descriptor per instance) and is reopened after a fork."""

    def __init__(self, path: str | os.PathLike[str], *, offset: int | None = None,
                 shape: tuple[int, int] | None = None, dtype: Any = None) -> None:
        """``path``: a ``.npy`` file (header read here); or with ``offset``, ``shape`` and ``dtype`` a file
        holding C-order rows from byte ``offset`` on (a memory map's own, :func:`unmapped`)."""
        self.path = Path(path)
        if offset is None or shape is None or dtype is None:
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(fh)
                offset = fh.tell()
            if len(shape) != 2 or fortran or dtype.hasobject:
                raise ValueError(f"{self.path}: not a 2-D C-order numeric .npy ({shape}, {dtype}, "
                                 f"fortran_order={fortran})")
        self.offset = int(offset)
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        self._fd: int | None = None
        self._pid = 0

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and self._pid == os.getpid():
            try:
                os.close(fd)
            except OSError:  # already closed (interpreter shutdown)
                pass

    def _descriptor(self) -> int:
        """The open file (opened on first read, and again in a forked child)."""
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)), os.getpid()
        return self._fd

    def __getitem__(self, idx: Any) -> np.ndarray:
        n = self.shape[0]
        if isinstance(idx, slice):
            start, stop, step = idx.indices(n)
            if step == 1:  # one read
                got = np.empty((max(stop - start, 0), self.shape[1]), dtype=self.dtype)
                if got.shape[0]:
                    self._read(got, [start], [0], [got.shape[0]])
                return got
            idx = np.arange(start, stop, step)
        arr = np.asarray(idx)
        if arr.dtype.kind not in "iu":
            raise IndexError(f"{self.path}: rows are indexed by integers, got {arr.dtype}")
        flat = arr.reshape(-1).astype(np.int64, copy=False)
        m = flat.size
        got = np.empty((m, self.shape[1]), dtype=self.dtype)
        if m == 0:
            return got.reshape(*arr.shape, self.shape[1])
        if flat.min() < 0:
            flat = np.where(flat < 0, flat + n, flat)
            if flat.min() < 0:
                raise IndexError(f"{self.path}: row index out of range 0..{n - 1}")
        if flat.max() >= n:
            raise IndexError(f"{self.path}: row index out of range 0..{n - 1}")
        steps = flat[1:] - flat[:-1]
        order = None if (steps >= 0).all() else np.argsort(flat, kind="stable")  # ascending: no reordering
        if order is not None:
            flat = flat[order]
            steps = flat[1:] - flat[:-1]
        cuts = (np.flatnonzero(steps != 1) + 1).tolist()  # where a run of consecutive rows starts
        self._read(got, flat[[0, *cuts]].tolist(), [0, *cuts], [*cuts, m])
        if order is not None:
            out = np.empty_like(got)
            out[order] = got
            got = out
        return got[0] if arr.ndim == 0 else got.reshape(*arr.shape, self.shape[1])

    def _read(self, into: np.ndarray, firsts: list[int], starts: list[int], ends: list[int]) -> None:
        """Fill ``into[a:b]`` (C-contiguous rows) with the file's rows ``first..first + b - a - 1`` for each run
        ``(first, a, b)``: one ``preadv`` per run of consecutive rows (more where the kernel reads less)."""
        rb, base = self._row_bytes, self.offset
        view = memoryview(into).cast("B")
        fd = self._descriptor()
        for first, a, b in zip(firsts, starts, ends, strict=True):
            _pread_run(fd, view, self.path, base, rb, first, a, b)


def _pread_run(fd: int, view: memoryview, path: Any, offset: int, rb: int, first: int, a: int, b: int) -> None:
    """Read the file's rows ``first..first + b - a - 1`` (``rb`` bytes each, the data at byte ``offset``) into
    ``view[a * rb : b * rb]`` with ``preadv``, going on after a short read; OSError when the file ends first."""
    pos, end = a * rb, b * rb
    at = offset + first * rb - pos
    done = os.preadv(fd, [view[pos:end]], at + pos)
    while done < end - pos:  # a short read: go on from where it stopped
        if done <= 0:
            raise OSError(f"{path}: the file ends before row {first + (pos - a * rb) // rb}")
        pos += done
        done = os.preadv(fd, [view[pos:end]], at + pos)


def unmapped(arr: Any) -> Any:
    """``arr`` read without its memory map where it is a whole read-only ``.npy``/raw file map (as
    ``np.load(path, mmap_mode="r")`` returns): an :class:`NpyRows` of the same file, offset, shape and dtype
    (same rows, same bytes); anything else (an in-memory array, a view, a writable or copy-on-write map, a
    wrapper) is returned as it is, and so is everything where the OS has no ``preadv``."""
    if (hasattr(os, "preadv") and isinstance(arr, np.memmap) and isinstance(arr.base, mmap.mmap) and arr.mode == "r" and arr.ndim == 2
            and arr.flags.c_contiguous and getattr(arr, "filename", None) and not arr.dtype.hasobject):
        return NpyRows(arr.filename, offset=int(arr.offset), shape=arr.shape, dtype=arr.dtype)
    return arr
