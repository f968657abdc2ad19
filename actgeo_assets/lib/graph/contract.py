"""The contract between the tile pass and a compute backend: what a pass asks of every sub-tile
(:class:`TileSpec`) and what a backend provides (:class:`TileBackend`). Backends implement it; the
factory that picks one by device name is :mod:`.backends` (imported by :mod:`.api` only), so no backend
imports the factory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class TileSpec:
    """What one tile pass asks of every sub-tile (the exactness rule of the package docstring)."""

    lo32: float  # float32 threshold, <= keep_min - eps: candidates are s >= lo32
    keep_min: float  # keep pairs whose carried weight is >= keep_min
    eps: float
    exact_ts: tuple[float, ...]
    weighted: bool  # True: sub-tile MSF; False: connectivity only (star pseudo-edges)
    count_ts: tuple[float, ...] = ()  # count pairs with float64 weight >= each (a subset of exact_ts)


class TileBackend(Protocol):
    """A compute backend: uploads row blocks and reduces one sub-tile to its forest edges.

    ``block(x, idx)`` returns the backend's pair (GEMM operand, exact operand) for rows ``x[idx]``;
    ``take(blk, pos)`` selects rows of such a pair; ``tile_reduce(a, b, diag, la, lb, spec)`` computes the
    sub-tile ``a @ b.T``, rechecks the band around ``spec.exact_ts`` in float64, masks pairs inside one
    known component (``la``/``lb``: int64 known labels or None) and returns host arrays ``(u, v, w)``:
    int64 local row / column indices (``u < v`` when ``diag``) of the sub-tile's maximum spanning forest
    (``spec.weighted``) or of star edges spanning its components, float64 weights (or None), and int64
    ``counts`` [len(spec.count_ts)]: the sub-tile's pairs whose float64 weight is ``>= t`` for each
    ``t`` of ``spec.count_ts`` (exact: each is an exact threshold; only without known labels).
    """

    name: str

    def block(self, x: np.ndarray, idx: np.ndarray | slice) -> tuple[Any, Any]: ...

    def take(self, blk: tuple[Any, Any], pos: np.ndarray) -> tuple[Any, Any]: ...

    def tile_reduce(
        self, a: tuple[Any, Any], b: tuple[Any, Any], diag: bool, la: np.ndarray | None,
        lb: np.ndarray | None, spec: TileSpec,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]: ...  # fmt: skip
