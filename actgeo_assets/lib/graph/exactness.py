"""Input validation and the float32/tf32 error bound that makes the fast GEMM float64-exact.

The argument is in the package docstring (:mod:`actgeo_assets.lib.graph`): pairs within ``eps`` of an exact
threshold are recomputed in float64, and float32 keys are moved to the float64 side of every exact threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

NORM_TOLERANCE = 1e-2
"""Rows must have L2 norm within this of 1."""

_U32 = 2.0**-24
_MAX_LISTED = 5

# ----------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------


def _rows_text(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:_MAX_LISTED])
    more = f" (and {len(rows) - _MAX_LISTED} more)" if len(rows) > _MAX_LISTED else ""
    return f"rows {shown}{more}"


def as_matrix(x: Any, name: str = "x") -> np.ndarray:
    """Return ``x`` as a 2-D float16/32/64 numpy array without copying numpy inputs (memmaps stay lazy).

    torch tensors are moved to the CPU (bfloat16 is widened to float32, which is exact)."""
    if type(x).__module__.startswith("torch"):
        import torch

        if isinstance(x, torch.Tensor):
            t = x.detach()
            if t.dtype == torch.bfloat16:
                t = t.float()
            x = t.cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, dims], got {x.ndim}-D with shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if x.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"{name} must be float16, float32 or float64, got dtype {x.dtype}")
    return x


def validate_rows(x: np.ndarray, name: str = "x", offset: int = 0) -> float:
    """Check finiteness and unit norm chunk by chunk; return the largest row norm (float64).

    Raises ``ValueError`` naming the first offending rows (numbered from ``offset``)."""
    n, d = x.shape
    chunk = max(1, (64 << 20) // (8 * d))
    max_norm = 0.0
    for i0 in range(0, n, chunk):
        block = np.asarray(x[i0 : i0 + chunk], dtype=np.float64)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite) + i0 + offset
            raise ValueError(f"{name} has non-finite values (NaN or inf) in {_rows_text(bad)}")
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        off = np.abs(norms - 1.0) > NORM_TOLERANCE
        if off.any():
            bad = np.flatnonzero(off) + i0
            raise ValueError(
                f"{name} rows are not unit L2 norm (tolerance {NORM_TOLERANCE}): "
                f"{_rows_text(bad + offset)} have norms "
                f"{', '.join(f'{norms[b - i0]:.4g}' for b in bad[:_MAX_LISTED])}; normalize first"
            )
        max_norm = max(max_norm, float(norms.max()))
    return max_norm


def check_threshold(t: Any, name: str = "threshold") -> float:
    """``t`` as a float in (-1, 1]; ValueError naming ``name`` otherwise (a bool is not a threshold)."""
    if isinstance(t, bool | np.bool_):
        raise ValueError(f"{name} must be a number in (-1, 1], got {t!r}")
    try:
        value = float(t)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (-1, 1], got {t!r}") from None
    if not math.isfinite(value) or not (-1.0 < value <= 1.0):
        raise ValueError(f"{name} must lie in (-1, 1], got {t!r}")
    return value


def matmul_error_bound(d: int, input_dtype: Any, precision: str = "fp32", max_norm: float = 1.0) -> float:
    """A-priori bound on ``|s - w|`` for one entry of the GEMM, ``w`` the exact dot of two rows.

    ``gamma_d = d*u/(1-d*u)`` with ``u = 2^-24`` bounds fp32 accumulation in any summation order
    (recursive, blocked, FMA) times ``sum_k |x_k y_k| <= |x||y| <= max_norm^2``. Rounding the inputs to
    the GEMM format (float64 -> fp32: ``u``; fp32 -> tf32: ``2^-10``, which also covers truncating
    hardware) adds ``(2*v + v^2) |x||y|``. For ``tf32`` the total is doubled as a margin for tensor-core
    accumulation details. A 1e-12 floor covers float64 rounding of the reference itself.
    """
    if precision not in ("fp32", "tf32"):
        raise ValueError(f"precision must be 'fp32' or 'tf32', got {precision!r}")
    dt = np.dtype(input_dtype)
    if precision == "tf32":
        v = 2.0**-10
    elif dt == np.float64:
        v = _U32
    else:
        v = 0.0  # float16/float32 -> fp32 is exact
    gamma = d * _U32 / (1.0 - d * _U32)
    bound = ((2 * v + v * v) + gamma * (1 + v) ** 2) * max_norm**2
    if precision == "tf32":
        bound *= 2.0
    return bound + 1e-12


def float32_at_most(value: float) -> float:
    f = np.float32(value)
    if float(f) > value:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


def float32_at_least(value: float) -> float:
    f = np.float32(value)
    if float(f) < value:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def side_keys_np(w: np.ndarray, exact_ts: Sequence[float]) -> np.ndarray:
    """float32 keys for exact float64 weights that stay on the same side of every exact threshold."""
    key = w.astype(np.float32)
    for t in exact_ts:
        k64 = key.astype(np.float64)
        up = np.float32(float32_at_least(t))  # smallest float32 >= t
        lo = np.float32(float32_at_most(t))
        dn = lo if float(lo) < t else np.nextafter(lo, np.float32(-np.inf))  # largest float32 < t
        key[(w >= t) & (k64 < t)] = up
        key[(w < t) & (k64 >= t)] = dn
    return key


def side_keys_torch(torch: Any, w, exact_ts: Sequence[float]):
    key = w.float()
    for t in exact_ts:
        k64 = key.double()
        up = float32_at_least(t)
        lo = np.float32(float32_at_most(t))
        dn = float(lo if float(lo) < t else np.nextafter(lo, np.float32(-np.inf)))
        key[(w >= t) & (k64 < t)] = up
        key[(w < t) & (k64 >= t)] = dn
    return key


