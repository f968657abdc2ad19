"""The contract between the tile pass and a compute backend, and the choice of backend by device name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class _TileSpec:
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
        lb: np.ndarray | None, spec: _TileSpec,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]: ...  # fmt: skip


def _resolve_device(device: str, precision: str) -> tuple[TileBackend, str]:
    """The backend for ``device`` and the GEMM precision it runs (``auto``: tf32 on CUDA, fp32 elsewhere)."""
    if precision not in ("auto", "fp32", "tf32"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'tf32', got {precision!r}")
    if device == "auto":
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover
            device = "cpu"
    from actgeo_assets.lib.graph.backend_numpy import _NumpyBackend
    from actgeo_assets.lib.graph.backend_torch import _TorchBackend

    if device == "cpu":
        if precision == "tf32":
            raise ValueError("precision 'tf32' needs a CUDA device")
        return _NumpyBackend(), "fp32"
    if device == "torch-cpu":
        return _TorchBackend("cpu", "fp32"), "fp32"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} requested but torch.cuda.is_available() is False")
        prec = "tf32" if precision == "auto" else precision
        return _TorchBackend(device, prec), prec
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'torch-cpu', got {device!r}")


