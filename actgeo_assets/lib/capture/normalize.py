"""Row normalization of captured activations, and the geometry that decides whether a graph is readable.

Methods (``normalize_rows``):

- ``l2``: ``x / ||x||`` (the study).
- ``center_l2``: ``(x - mean) / ||x - mean||`` with a corpus mean (:func:`shards_mean` over all shards).
- ``rmsnorm``: the next block's own input norm with its learned weights (see
  :func:`actgeo_assets.lib.capture.residual.next_block_norm`), then L2. For RMSNorms the per-row ``1/rms`` scale
  cancels under L2, so this is the direction of ``x * (1 + w)`` (Gemma) or ``x * w`` (Llama).

Rows that are not finite, or whose vector to normalize has zero norm, are excluded (``kept[i] = False``)
and counted by reason in the report; never silently. The caller may exclude more rows by a rule of its own
(``exclude``: the run's early positions, ``early_positions="exclude"``), counted as ``early_position``. Work is done in float64 chunks so memory-mapped
float16 inputs of ~1M x 2304 never get copied whole into a wider dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

METHODS = ("l2", "center_l2", "rmsnorm")
#: a vector with a float64 norm at or below this is "zero" (cannot be given a direction)
ZERO_NORM = 1e-12
_CHUNK_ELEMS = 1 << 21  # ~16 MB of float64 per chunk


@dataclass
class NormalizeResult:
    """``unit``: float32 ``[m, d]`` unit rows (the kept rows, in order); ``kept``: bool ``[n]`` with
    ``kept.sum() == m``; ``report``: method, counts, exclusion reasons and the first excluded rows."""

    unit: np.ndarray
    kept: np.ndarray
    report: dict[str, Any]


def _chunk_rows(d: int) -> int:
    return max(1, _CHUNK_ELEMS // max(d, 1))


def normalize_rows(
    x: np.ndarray,
    method: str,
    *,
    mean: np.ndarray | None = None,
    norm_weight: dict[str, Any] | None = None,
    out: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> NormalizeResult:
    """Unit-normalize the rows of ``x`` (``[n, d]``, any float dtype, may be memory-mapped).

    ``mean`` (``[d]``) is used by ``center_l2``; when omitted it is computed from ``x``'s finite rows
    (and the report says so). ``norm_weight`` is the dict of ``next_block_norm`` (``weight``, ``eps``,
    ``kind``, optional ``bias``) and is required by ``rmsnorm``. ``out``: optional writable float32
    ``[n, d]`` buffer (e.g. ``np.lib.format.open_memmap``) to fill instead of allocating; kept rows are
    packed at its top and ``unit`` is ``out[:m]``. ``exclude``: optional bool ``[n]``, rows to leave out
    whatever their values (counted as ``early_position`` among finite, non-zero rows; the key is in the report
    only when ``exclude`` is given).

    Raises ``ValueError`` for an unknown method, a non-2-D input, a mean of the wrong shape or a missing
    ``norm_weight``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown normalization {method!r}; use one of {METHODS}")
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array [n, d], got shape {x.shape}")
    n, d = x.shape
    if exclude is not None:
        exclude = np.asarray(exclude)
        if exclude.shape != (n,) or exclude.dtype != bool:
            raise ValueError(f"exclude must be a bool array of shape ({n},), got {exclude.dtype} {exclude.shape}")
    report: dict[str, Any] = {"method": method, "n_in": n, "d": d}
    mean64: np.ndarray | None = None
    if method == "center_l2":
        if mean is None:
            mean64 = shards_mean([x]) if n else np.zeros(d)
            report["mean"] = "computed from this input"
        else:
            mean64 = np.asarray(mean, dtype=np.float64)
            report["mean"] = "given"
        if mean64.shape != (d,):
            raise ValueError(f"mean has shape {mean64.shape}, expected ({d},)")
        report["mean_norm"] = float(np.linalg.norm(mean64))
    scale = shift = None
    if method == "rmsnorm":
        if norm_weight is None:
            raise ValueError("normalization 'rmsnorm' needs norm_weight (from next_block_norm)")
        kind = norm_weight.get("kind")
        w = np.asarray(norm_weight["weight"], dtype=np.float64)
        if w.shape != (d,):
            raise ValueError(f"norm weight has shape {w.shape}, expected ({d},)")
        if kind == "gemma":
            scale = 1.0 + w
        elif kind in ("llama", "layernorm"):
            scale = w
        else:
            raise ValueError(f"unknown norm kind {kind!r}; expected 'gemma', 'llama' or 'layernorm'")
        if kind == "layernorm" and norm_weight.get("bias") is not None:
            shift = np.asarray(norm_weight["bias"], dtype=np.float64)
        report["norm_kind"] = kind
        report["norm_eps"] = float(norm_weight.get("eps", 1e-6))
        report["norm_module"] = norm_weight.get("module")

    if out is None:
        unit = np.empty((n, d), dtype=np.float32)
    else:
        if out.shape != (n, d) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 {(n, d)}, got {out.dtype} {out.shape}")
        unit = out
    kept = np.zeros(n, dtype=bool)
    non_finite: list[int] = []
    zero: list[int] = []
    early: list[int] = []
    n_non_finite = n_zero = n_early = 0
    m = 0
    step = _chunk_rows(d)
    eps = float(norm_weight.get("eps", 1e-6)) if norm_weight else 0.0
    for lo in range(0, n, step):
        chunk = np.asarray(x[lo : lo + step], dtype=np.float64)
        finite = np.isfinite(chunk).all(axis=1)
        if mean64 is not None:
            chunk = chunk - mean64  # never in place: chunk may be a view of a float64 input
        elif method == "rmsnorm":
            chunk = _apply_norm(chunk, norm_weight["kind"], scale, shift, eps)
        with np.errstate(invalid="ignore", over="ignore"):
            norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
        ok_norm = np.isfinite(norms) & (norms > ZERO_NORM)
        good = finite & ok_norm
        bad_nf = np.flatnonzero(~finite) + lo
        bad_zero = np.flatnonzero(finite & ~ok_norm) + lo
        n_non_finite += bad_nf.size
        n_zero += bad_zero.size
        non_finite.extend(bad_nf[: max(0, 10 - len(non_finite))].tolist())
        zero.extend(bad_zero[: max(0, 10 - len(zero))].tolist())
        if exclude is not None:
            dropped = good & exclude[lo : lo + chunk.shape[0]]
            bad_early = np.flatnonzero(dropped) + lo
            n_early += bad_early.size
            early.extend(bad_early[: max(0, 10 - len(early))].tolist())
            good = good & ~dropped
        k = int(good.sum())
        unit[m : m + k] = chunk[good] / norms[good, None]
        kept[lo : lo + chunk.shape[0]] = good
        m += k
    report.update(
        {
            "n_kept": m,
            "n_excluded": n - m,
            "excluded": {"non_finite": n_non_finite, "zero_norm": n_zero},
            "first_excluded_rows": {"non_finite": non_finite, "zero_norm": zero},
            "dtype": "float32",
        }
    )
    if exclude is not None:
        report["excluded"]["early_position"] = n_early
        report["first_excluded_rows"]["early_position"] = early
    return NormalizeResult(unit=unit[:m], kept=kept, report=report)


def _apply_norm(
    x: np.ndarray, kind: str, scale: np.ndarray | None, shift: np.ndarray | None, eps: float
) -> np.ndarray:
    """The next block's norm in float64, exactly as the model applies it (before the final L2)."""
    if kind == "layernorm":
        x = x - x.mean(axis=1, keepdims=True)
        x = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            x = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps)
    x = x * scale
    if shift is not None:
        x = x + shift
    return x


def _float64_chunks(a: np.ndarray, idx: np.ndarray | None, finite_only: bool = False) -> Iterator[np.ndarray]:
    """float64 ``[<= _chunk_rows(d), d]`` chunks of the rows ``a[idx]`` (all rows when ``idx`` is None), in
    order; ``finite_only`` drops rows with a non-finite entry."""
    n = a.shape[0] if idx is None else len(idx)
    step = _chunk_rows(a.shape[1])
    for lo in range(0, n, step):
        c = np.asarray(a[lo : lo + step] if idx is None else a[idx[lo : lo + step]], dtype=np.float64)
        yield c[np.isfinite(c).all(axis=1)] if finite_only else c


def shards_mean(arrays: Iterable[np.ndarray]) -> np.ndarray:
    """float64 ``[d]`` mean of all finite rows of all ``arrays`` (each ``[n_i, d]``), streamed in chunks.

    Raises ``ValueError`` when there is no finite row or the widths differ.
    """
    total: np.ndarray | None = None
    count = 0
    for a in arrays:
        if a.ndim != 2:
            raise ValueError(f"expected 2-D arrays, got shape {a.shape}")
        if total is None:
            total = np.zeros(a.shape[1], dtype=np.float64)
        elif a.shape[1] != total.shape[0]:
            raise ValueError(f"arrays differ in width: {a.shape[1]} vs {total.shape[0]}")
        for chunk in _float64_chunks(a, None, finite_only=True):
            total += chunk.sum(axis=0)
            count += chunk.shape[0]
    if total is None or count == 0:
        raise ValueError("cannot compute a mean: no finite rows")
    return total / count


def _pct(values: np.ndarray, qs: Iterable[int]) -> dict[str, float]:
    if values.size == 0:
        return {f"p{q}": float("nan") for q in qs}
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(values, list(qs)), strict=True)}


def geometry_diagnostics(
    unit: np.ndarray,
    *,
    threshold: float,
    raw: np.ndarray | None = None,
    n_pairs: int = 100_000,
    seed: int = 0,
    top_k: int = 5,
    max_rows: int = 200_000,
) -> dict[str, Any]:
    """How similar the unit rows are overall, and why; decides whether a cosine graph is informative.

    ``unit``: ``[m, d]`` unit rows; ``raw``: the raw rows they came from (optional, for norms and
    massive dimensions). Statistics on more than ``max_rows`` rows use a seeded row sample.

    Returns a JSON-able dict:

    - ``raw_norm``: p1, p50, p99, max of raw row norms (finite rows); absent without ``raw``.
    - ``top_dims``: the ``top_k`` dims by mean ``|x|`` (of ``raw`` if given, else ``unit``) with
      ``mean_abs``, ``share_abs`` (of the sum of mean ``|x|`` over dims) and ``share_mean_sq`` (share of the
      squared norm of the mean vector: how much of the mean direction the dim carries).
    - ``mean_direction``: ``resultant_length`` ``||mean(unit)||``, the exact mean pairwise cosine
      ``(||sum||^2 - m) / (m (m - 1))``, and percentiles of each row's cosine to the mean direction.
    - ``pairwise``: percentiles p5, p25, p50, p75, p95, ``median``, ``mean`` of ``n_pairs`` sampled pairs
      ``i != j`` (float64 dot products), and ``n_pairs``.
    - ``edge_density``: sampled fraction of pairs with cosine ``>= threshold``; ``predicted_edges`` that
      fraction times ``m (m - 1) / 2``.
    - ``near_complete``: median sampled pairwise cosine ``>= threshold`` (the graph is then one blob);
      ``warning``: a sentence when near-complete.
    """
    m, d = unit.shape
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"n_rows": m, "d": d, "threshold": threshold, "seed": seed}
    sample = np.sort(rng.choice(m, size=max_rows, replace=False)) if m > max_rows else None

    if raw is not None:
        raw_idx = np.sort(rng.choice(raw.shape[0], max_rows, replace=False)) if raw.shape[0] > max_rows else None
        basis_chunks = _float64_chunks(raw, raw_idx, finite_only=True)
    else:
        basis_chunks = _float64_chunks(unit, sample)
    count, abs_sum, vec_sum, norm_parts = 0, np.zeros(d), np.zeros(d), []
    for c in basis_chunks:  # streamed: 16 MB of float64 at a time, never the [rows, d] float64 copy
        count += c.shape[0]
        abs_sum += np.abs(c).sum(axis=0)
        vec_sum += c.sum(axis=0)
        if raw is not None:
            norm_parts.append(np.linalg.norm(c, axis=1))
    if raw is not None:
        norms = np.concatenate(norm_parts) if norm_parts else np.zeros(0)
        out["raw_norm"] = {
            **_pct(norms, (1, 50, 99)),
            "max": float(norms.max()) if norms.size else float("nan"),
        }
    if count:
        mean_abs = abs_sum / count
        mean_vec = vec_sum / count
        order = np.argsort(-mean_abs, kind="stable")[:top_k]
        msq = float((mean_vec**2).sum()) or 1.0
        out["top_dims"] = [
            {
                "dim": int(j),
                "mean_abs": float(mean_abs[j]),
                "share_abs": float(mean_abs[j] / mean_abs.sum()) if mean_abs.sum() else 0.0,
                "share_mean_sq": float(mean_vec[j] ** 2 / msq),
            }
            for j in order
        ]
        out["top_dims_basis"] = "raw" if raw is not None else "unit"

    if m >= 1:
        total = np.zeros(d, dtype=np.float64)
        for chunk in _float64_chunks(unit, None):
            total += chunk.sum(axis=0)
        length = float(np.linalg.norm(total))
        out_md: dict[str, Any] = {"resultant_length": length / m}
        if m >= 2:
            out_md["mean_pairwise_cosine_exact"] = (length**2 - m) / (m * (m - 1))
        if length > 0:
            direction = total / length
            cos = np.concatenate([c @ direction for c in _float64_chunks(unit, sample)])
            out_md["cosine_to_mean"] = {**_pct(cos, (5, 50, 95)), "mean": float(cos.mean())}
        out["mean_direction"] = out_md

    if m >= 2 and n_pairs > 0:
        i = rng.integers(0, m, size=n_pairs)
        j = rng.integers(0, m - 1, size=n_pairs)
        j = j + (j >= i)  # uniform over j != i
        order = np.argsort(i, kind="stable")  # sorted row access is friendlier to memory maps
        i, j = i[order], j[order]
        cos = np.empty(n_pairs, dtype=np.float64)
        step = _chunk_rows(d)  # two [step, d] float64 gathers at a time
        for lo in range(0, n_pairs, step):
            a = np.asarray(unit[i[lo : lo + step]], dtype=np.float64)
            b = np.asarray(unit[j[lo : lo + step]], dtype=np.float64)
            cos[lo : lo + step] = np.einsum("ij,ij->i", a, b)
        out["pairwise"] = {
            **_pct(cos, (5, 25, 50, 75, 95)),
            "median": float(np.median(cos)),
            "mean": float(cos.mean()),
            "n_pairs": int(n_pairs),
        }
        density = float((cos >= threshold).mean())
        out["edge_density"] = density
        out["predicted_edges"] = int(round(density * m * (m - 1) / 2))
        near = bool(np.median(cos) >= threshold)
    else:
        out["pairwise"] = None
        out["edge_density"] = None
        out["predicted_edges"] = 0
        near = False
    out["near_complete"] = near
    if near:
        md = out.get("mean_direction", {}).get("mean_pairwise_cosine_exact")
        out["warning"] = (
            f"near-complete graph: the median pairwise cosine ({out['pairwise']['median']:.3f}) is at or "
            f"above the threshold {threshold}"
            + (f"; mean pairwise cosine {md:.3f}" if md is not None else "")
            + ". A few massive dimensions make every pair similar; use center_l2 or rmsnorm, or a higher "
            "threshold (see the sweep)."
        )
    return out
