"""A provable low-rank prefilter for the CPU tile pass of :func:`cosine_components`.

The bound. Let ``P`` [d, k] have orthonormal columns (top-k principal directions of a row sample) and write
every row as ``x = P p + x_R`` with ``p = P^T x`` [k] and ``x_R`` orthogonal to ``P``'s span. Then

    ``x . y = p_x . p_y + x_R . y_R <= p_x . p_y + |x_R| |y_R| = z_x . z_y``,   ``z = [p, |x_R|]`` [k + 1]

(Cauchy-Schwarz), so one (k+1)-dimensional GEMM of the ``z`` rows bounds every pair's dot from above, and a
pair whose bound is below ``t`` is not an edge. Only the pairs that survive get the full d-dimensional fp32
dot (and the float64 recheck of :mod:`actgeo_assets.lib.graph.exactness` near ``t``).

Rigor, including rounding. ``P`` (float64, orthonormal: checked to 1e-12, CGS2 gives ~1e-15) is rounded
to fp32 and ``p^ = fl32(x P)``; per coordinate ``|p^_j - p_j| <= (gamma_d + 4u) |x|`` (fp32 accumulation
of d products in any order, ``gamma_d = d u / (1 - d u)``, ``u = 2^-24``, plus rounding ``x`` and ``P`` to
fp32; ``sum_i |x_i| |P_ij| <= |x|``), so ``|p^ - p| <= dp = sqrt(k) (gamma_d + 4u) max_norm``. Then
``p_x . p_y <= p^_x . p^_y + dp (|p^_x| + |p^_y|) + dp^2`` and ``|p| >= |p^| - dp``, so
``r = sqrt(max(0, |x|^2 - max(0, |p^| - dp)^2) + 1e-12) >= |x_R|`` (``|x|^2`` and ``|p^|`` in float64, whose
~1e-13 errors the 1e-12 and a relative 1e-12 cut off ``|p^|`` cover). With ``z = [p^, r]`` (float64):
``x . y <= z_x . z_y + slack``, ``slack = 2 dp (max_norm + dp) + dp^2 + _MARGIN``; ``_MARGIN`` = 1e-9 covers
the ~1e-13 terms (``P``'s orthonormality error, float64 rounding of the reference dot itself). The ``z``
rows are rounded to fp32 and multiplied by an fp32 GEMM whose error is at most
``eps_z = matmul_error_bound(k + 1, float64, "fp32", sqrt(max_norm^2 + slack))`` (input rounding included;
``|z|^2 <= max_norm^2 + slack``). So a pair whose fp32 bound ``s_z`` is below the float32 level
``<= t - eps_z - slack`` has float64 dot ``< t``: skipping it is exact (at d = 640, k = 128 the level is
``t - 9e-4``). Every other pair (a *survivor*) is treated exactly as the plain CPU backend treats a
candidate: fp32 dot of the full rows (error ``<= eps``, any summation order), float64 recheck when within
``eps`` of ``t``. Hence the labels are identical to the float64 brute force whatever ``P`` is (a poor
``P`` only costs time); the prefilter never changes :func:`single_linkage_forest` (not used there).

Certified edges. The same identity gives a lower bound, ``x . y >= p_x . p_y - |x_R| |y_R|``, and with the
terms above ``x . y >= s_z - eps_z - slack - 2 r32_x r32_y / (1 - u)^2`` (``r32``: ``r`` rounded to fp32, the
z GEMM's last column). A survivor with ``s_z - 2 (1 + 4u) r32_x r32_y >= t + eps_z + slack`` is therefore an
edge without computing its dot (few on the demo data: the residual norms are ~0.4 at k = 128).

Which survivors are verified. A sub-tile drops survivors inside one component known *now* (the pass's
labels), joins the certified edges, sorts the rest by decreasing bound and verifies them in chunks (1024,
then doubling), skipping a pair once the edges found so far (with the known components) connect its ends:
one true edge between two known components makes all other pairs between them unnecessary. A chunk is
verified by one dense fp32 sub-GEMM of the rows and columns it touches when that is cheaper than
``_gather_cost()`` gathered row-wise dots per pair, else by gathered dots (faiss' compiled ones when
faiss is installed); a sub-tile where more than
``_DENSE_SURVIVORS`` of the pairs survive goes whole to the plain backend. Memory: ``z`` is N x (k + 1)
float32 (O(N k)), plus the sub-tile's ``tile^2`` bound matrix and at most one ``tile^2`` verification block;
no N x N matrix, no edge list.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np

from actgeo_assets.lib.graph.backend_numpy import NumpyBackend, exact_dots_np
from actgeo_assets.lib.graph.contract import TileSpec
from actgeo_assets.lib.graph.exactness import float32_at_most, matmul_error_bound
from actgeo_assets.lib.graph.forest import UnionLabels
from actgeo_assets.lib.graph.labels import cc_labels

DEFAULT_RANK = 128
"""Principal directions of the prefilter (k); the bound GEMM costs (k + 1) / d of the full one."""
_MARGIN = 1e-9
"""Additive slack for float64 rounding in ``P``, ``p`` and ``r`` (each ~1e-13 for unit rows)."""
_SAMPLE = 4096
"""Rows sampled (deterministic seed) to choose ``P``; any orthonormal ``P`` keeps the result exact."""
_DENSE_SURVIVORS = 0.25
"""A sub-tile where more than this fraction of pairs survive is computed whole by the plain backend."""
_GATHER_COST_FAISS = 3.0
"""Cost of one gathered row-wise dot (faiss, compiled) in pairs of a dense fp32 sub-GEMM: ~35-130 ns per
640-dimensional dot (rows warm or cold in cache) against ~9 ns per pair of a 144 GFLOP/s GEMM (2-core EPYC)."""
_GATHER_COST_NUMPY = 64.0
"""The same with numpy's einsum over gathered rows (~600 ns per dot): when faiss is not installed."""
AUTO_MAX_SURVIVORS = 0.2
"""With the default rank, the prefilter is used only when at most this fraction of a row sample's pairs
survive the bound (0.06 on the demo activations; ~0.9 on isotropic synthetic data, where it cannot pay)."""
_FIRST_CHUNK = 1024
"""Survivors verified in the first chunk of a sub-tile; each next chunk is twice as large."""
_TWO_UP = 2.0 * (1.0 + 4.0 * 2.0**-24)
"""2 / (1 - u)^2 rounded up: ``r_x r_y <= r32_x r32_y / (1 - u)^2`` for the fp32-rounded residual norms."""


def principal_directions(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """float64 [d, k] orthonormal columns spanning (approximately) the top-k principal directions of the
    rows of ``x`` [N, d] (uncentered: the directions that hold the most squared norm), ``k <= d``.

    Subspace iteration (three products with the second moment ``S^T S`` of a deterministic sample ``S`` of
    ``_SAMPLE`` rows, applied as ``S^T (S q)``), orthonormalized by classical Gram-Schmidt applied twice in
    float64 with matrix products only (no LAPACK call: those stalled for seconds on this shared 2-core
    machine). Orthonormality to ~1e-15 is all exactness needs (module docstring, checked here); the quality
    of the span only decides the speed."""
    n, d = x.shape
    k = int(min(k, d))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, _SAMPLE), replace=False))
    s = np.asarray(x[idx], dtype=np.float32)
    q = _orthonormal(rng.standard_normal((d, k)), rng)
    for _ in range(3):  # q <- orth(S^T S q), never forming the d x d second moment
        q = _orthonormal((s.T @ (s @ q.astype(np.float32))).astype(np.float64), rng)
    off = float(np.abs(q.T @ q - np.eye(k)).max())
    if not off <= 1e-12:  # the bound's _MARGIN assumes ~1e-15; CGS2 gives that, this makes it certain
        raise RuntimeError(f"principal directions are not orthonormal (max |P^T P - I| = {off:.3g})")
    return q


def _orthonormal(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float64 [d, m] orthonormal columns (CGS2) spanning ``a``'s columns in order; a column that is
    (numerically) in the span of the ones before is replaced by a random direction."""
    d, m = a.shape
    q = np.zeros((d, m), dtype=np.float64)
    for j in range(m):
        v = a[:, j].astype(np.float64, copy=True)
        for _attempt in range(3):
            n0 = float(np.linalg.norm(v))
            for _ in range(2):
                v -= q[:, :j] @ (q[:, :j].T @ v)
            nv = float(np.linalg.norm(v))
            if nv > 1e-8 * max(n0, 1e-300):
                break
            v = rng.standard_normal(d)
        q[:, j] = v / nv
    return q


def lowrank_rows(x: np.ndarray, p_dirs: np.ndarray, max_norm: float, chunk: int = 8192) -> tuple[np.ndarray, float]:
    """(``z`` float32 [N, k + 1], ``slack``): ``z = [p^, r]`` with ``p^`` the fp32 product of the rows
    ``x`` [N, d] (any float dtype, norms ``<= max_norm``; memmaps read chunk by chunk) and ``P``
    (``p_dirs`` float64 [d, k] orthonormal, rounded to fp32), and ``r`` an upper bound of the residual
    norm ``|x - P P^T x|``, such that ``x . y <= z_x . z_y + slack`` for every pair (exactly, before the
    z GEMM's own rounding). See the module docstring for the derivation of ``slack``."""
    n, d = x.shape
    k = p_dirs.shape[1]
    dp = _projection_error(d, k, max_norm)
    p32 = p_dirs.astype(np.float32)
    z = np.empty((n, k + 1), dtype=np.float32)
    for i0 in range(0, n, chunk):
        xx = np.asarray(x[i0 : i0 + chunk])
        pp = xx.astype(np.float32, copy=False) @ p32
        x64 = xx.astype(np.float64)
        nx2 = np.einsum("ij,ij->i", x64, x64)
        np_lo = np.maximum(np.sqrt(np.einsum("ij,ij->i", pp, pp, dtype=np.float64)) * (1 - 1e-12) - dp, 0.0)
        z[i0 : i0 + chunk, :k] = pp
        z[i0 : i0 + chunk, k] = np.sqrt(np.maximum(nx2 - np_lo * np_lo, 0.0) + 1e-12)
    return z, lowrank_slack(d, k, max_norm)


def lowrank_slack(d: int, k: int, max_norm: float) -> float:
    """``slack`` of :func:`lowrank_rows` (``x . y <= z_x . z_y + slack``): ``2 dp (max_norm + dp) + dp^2 +
    _MARGIN`` with ``dp`` the projection's error bound; it depends on ``d``, ``k`` and ``max_norm`` only."""
    dp = _projection_error(d, k, max_norm)
    return 2 * dp * (max_norm + dp) + dp * dp + _MARGIN


def _projection_error(d: int, k: int, max_norm: float) -> float:
    """Upper bound of ``|p^ - P^T x|_2`` for the fp32 projection: per coordinate ``(gamma_d + 4u) |x|``
    (fp32 accumulation of d products; rounding ``x`` and ``P`` to fp32, ``u = 2^-24``), times sqrt(k)."""
    u = 2.0**-24
    gamma = d * u / (1 - d * u)
    return float(np.sqrt(k)) * (gamma + 4 * u) * max_norm * (1 + 1e-6)


class _LowRankBackend:
    """The CPU backend with the low-rank prefilter (module docstring), for unweighted specs (components).

    Blocks are (z rows float32 [n, k+1], fp32 rows [n, d], exact rows [n, d], global row ids int64 [n]).
    ``labels`` is the pass's :class:`UnionLabels`: a sub-tile reads the components known *now* for its rows,
    drops survivors inside one of them, and verifies the others in decreasing order of their bound, chunk
    by chunk, skipping pairs whose ends the chunks before have already connected (the first true edge
    between two known components makes every other pair between them unnecessary)."""

    name = "cpu"

    def __init__(
        self, x: np.ndarray, z: np.ndarray, bound_lo: float, labels: UnionLabels, cert_lo: float = np.inf
    ) -> None:
        self.x = x
        self.z = z
        self.bound_lo = np.float32(bound_lo)  # float32 <= t - eps_z - slack: survivors are s_z >= bound_lo
        self.cert_lo = float(cert_lo)  # t + eps_z + slack: s_z - 2 (1 + 4u) r_x r_y >= cert_lo is an edge
        self.labels = labels
        self.inner = NumpyBackend()
        self.counts = {"bound_pairs": 0, "survivors": 0, "certified": 0, "verified_pairs": 0, "dense_tiles": 0}
        self.seconds = {"bound": 0.0, "verify": 0.0}

    def block(self, x: np.ndarray, idx: np.ndarray | slice):
        if x is not self.x:
            raise ValueError("the low-rank backend only reads rows of the array it was built for")
        ids = np.arange(x.shape[0], dtype=np.int64)[idx] if isinstance(idx, slice) else np.asarray(idx, np.int64)
        g, ex = self.inner.block(x, idx)
        return self.z[ids], g, ex, ids

    def take(self, blk, pos: np.ndarray):
        z, g, ex, ids = blk
        gg = g[pos]
        return z[pos], gg, (gg if ex is g else ex[pos]), ids[pos]

    def tile_reduce(self, a, b, diag: bool, la, lb, spec: TileSpec):
        """One sub-tile -> edges (local ids as in :meth:`NumpyBackend.tile_reduce`, ``w`` None) spanning
        its components at ``spec.keep_min`` together with the known ones; exact by the module docstring."""
        if spec.weighted or spec.count_ts:
            raise ValueError("the low-rank prefilter serves components only (no forest weights, no edge counts)")
        (za, ga, ea, ia), (zb, gb, eb, ib) = a, b
        na, nb = len(za), len(zb)
        t0 = time.perf_counter()
        la = self.labels.lab[ia]
        lb = la if diag else self.labels.lab[ib]
        s = za @ zb.T
        mask = s >= self.bound_lo
        if np.count_nonzero(mask) > _DENSE_SURVIVORS * na * nb:
            self.seconds["bound"] += time.perf_counter() - t0
            return self._dense(a, b, diag, la, lb, spec)
        idx = np.flatnonzero(mask)
        del mask
        r, c = np.divmod(idx, nb)
        keep = la[r] != lb[c]
        if diag:
            keep &= r < c
        r, c, sv = r[keep], c[keep], s.reshape(-1)[idx[keep]]
        del s, idx
        cnt = self.counts
        cnt["bound_pairs"] += na * (na - 1) // 2 if diag else na * nb
        cnt["survivors"] += len(r)
        t1 = time.perf_counter()
        self.seconds["bound"] += t1 - t0
        empty = np.zeros(0, dtype=np.int64)
        if not len(r):
            return empty, empty, None, empty
        off = 0 if diag else na
        known = la if diag else np.concatenate([la, lb])
        comp = np.unique(known, return_inverse=True)[1].astype(np.int64)  # local nodes, known components
        order = np.argsort(-sv)  # any order is exact; this one verifies the likeliest edges first
        r, cc = r[order], c[order] + off
        hu: list[np.ndarray] = []
        hv: list[np.ndarray] = []
        # certified edges (lower bound >= t): no dot needed; they connect first
        low = sv[order].astype(np.float64) - _TWO_UP * (za[r, -1].astype(np.float64) * zb[c[order], -1])
        cert = low >= self.cert_lo
        if cert.any():
            hu.append(r[cert])
            hv.append(cc[cert])
            cnt["certified"] += int(np.count_nonzero(cert))
            comp = _join(comp, hu[-1], hv[-1])
            r, cc = r[~cert], cc[~cert]
        pos, chunk = 0, _FIRST_CHUNK
        while pos < len(r):
            rr, cx = r[pos : pos + chunk], cc[pos : pos + chunk]
            pos += chunk
            chunk *= 2
            need = comp[rr] != comp[cx]
            rr, cx = rr[need], cx[need]
            if not len(rr):
                continue
            w, n_pairs = _verify_fp32(ga, gb, rr, cx - off)
            cnt["verified_pairs"] += n_pairs
            bi = np.flatnonzero(np.abs(w - spec.keep_min) <= spec.eps)
            if len(bi):
                w[bi] = exact_dots_np(ea, eb, rr[bi], cx[bi] - off)
            hit = w >= spec.keep_min
            if hit.any():
                hu.append(rr[hit])
                hv.append(cx[hit])
                comp = _join(comp, hu[-1], hv[-1])
        self.seconds["verify"] += time.perf_counter() - t1
        if not hu:
            return empty, empty, None, empty
        return np.concatenate(hu), np.concatenate(hv), None, empty


    def _dense(self, a, b, diag: bool, la: np.ndarray, lb: np.ndarray, spec: TileSpec):
        """A sub-tile where most pairs survive: the plain backend's full fp32 GEMM (exact as ever)."""
        t1 = time.perf_counter()
        (za, ga, ea, _), (zb, gb, eb, _) = a, b
        na, nb = len(za), len(zb)
        pairs = na * (na - 1) // 2 if diag else na * nb
        self.counts["bound_pairs"] += pairs
        self.counts["dense_tiles"] += 1
        self.counts["verified_pairs"] += pairs
        out = self.inner.tile_reduce((ga, ea), (gb, eb), diag, la, lb, spec)
        self.seconds["verify"] += time.perf_counter() - t1
        return out


def _join(comp: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Component labels int64 [n] of the local nodes after adding edges ``u``-``v`` to the partition ``comp``
    (int64 [n], values in [0, n)): a graph of the n nodes, one extra node per label (node i -> label node
    ``n + comp[i]`` keeps the partition) and the new edges; labels are any ids of the joined components."""
    n = len(comp)
    return cc_labels(n + int(comp.max()) + 1, np.concatenate([np.arange(n, dtype=np.int64), u]),
                      np.concatenate([comp + n, v]))[:n].astype(np.int64)


def _dense_ids(r: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values of ``r`` (int64, all in [0, n)), position of each ``r[i]`` among them),
    without sorting: O(len(r) + n)."""
    seen = np.zeros(n, dtype=bool)
    seen[r] = True
    u = np.flatnonzero(seen)
    pos = np.empty(n, dtype=np.int64)
    pos[u] = np.arange(len(u), dtype=np.int64)
    return u, pos[r]


def _verify_fp32(ga: np.ndarray, gb: np.ndarray, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, int]:
    """(float64 [m] fp32 dots ``ga[r[i]] . gb[c[i]]``, pairs computed): one dense sub-GEMM of the rows and
    columns involved when that costs less than ``_gather_cost()`` gathered dots per pair, else gathered
    row-wise dots. Either way each dot is an fp32 sum of d products (error <= eps, like the tile GEMM)."""
    ur, ir = _dense_ids(r, len(ga))
    uc, ic = _dense_ids(c, len(gb))
    if len(ur) * len(uc) <= _gather_cost() * len(r):
        return (ga[ur] @ gb[uc].T)[ir, ic].astype(np.float64), len(ur) * len(uc)
    return gathered_dots(ga, gb, r, c).astype(np.float64), len(r)


@functools.cache
def _faiss():  # -> the faiss module, or None
    """faiss (either extra, ``actgeo[cpu]`` or ``actgeo[gpu]``) when installed: its compiled gathered dot
    (looked up once per process)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss if hasattr(faiss, "pairwise_indexed_inner_product") else None


def _gather_cost() -> float:
    """Cost of one gathered row-wise dot in pairs of a dense fp32 sub-GEMM: ``_GATHER_COST_FAISS`` with
    faiss' compiled gathered dot, ``_GATHER_COST_NUMPY`` with numpy's einsum over gathered rows."""
    return _GATHER_COST_FAISS if _faiss() is not None else _GATHER_COST_NUMPY


def gathered_dots(ga: np.ndarray, gb: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 [m]: the fp32 dots ``ga[r[i]] . gb[c[i]]`` of rows ``ga`` [na, k], ``gb`` [nb, k] (rounded to
    float32; int ``r``, ``c`` [m] in range), each an fp32 sum of k products in some order, so its error is
    at most ``gamma_k sum_i |a_i b_i|``, as for one GEMM entry. faiss' compiled
    ``pairwise_indexed_inner_product`` (one OpenMP thread: workers left spinning after a threaded call
    slow the next BLAS call down on a 2-core machine) when faiss is installed, else numpy's einsum over
    gathered rows in chunks of 16 MB; no m x k array either way."""
    m = len(r)
    out = np.empty(m, dtype=np.float32)
    if not m:
        return out
    ga = np.ascontiguousarray(ga, dtype=np.float32)
    gb = np.ascontiguousarray(gb, dtype=np.float32)
    faiss = _faiss()
    if faiss is None:
        step = max(1, (16 << 20) // (8 * ga.shape[1]))
        for k in range(0, m, step):
            out[k : k + step] = np.einsum("ij,ij->i", ga[r[k : k + step]], gb[c[k : k + step]])
        return out
    ri = np.ascontiguousarray(r, dtype=np.int64)  # bound to names: the arrays must outlive the raw pointers
    ci = np.ascontiguousarray(c, dtype=np.int64)
    if len(ri) and (ri.min() < 0 or ri.max() >= len(ga) or ci.min() < 0 or ci.max() >= len(gb)):
        raise IndexError("gathered_dots: a row index is out of range")  # faiss would read out of bounds
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        faiss.pairwise_indexed_inner_product(ga.shape[1], m, faiss.swig_ptr(ga), faiss.swig_ptr(ri),
                                             faiss.swig_ptr(gb), faiss.swig_ptr(ci), faiss.swig_ptr(out))
    finally:
        faiss.omp_set_num_threads(threads)
    return out


def _eps_z(k: int, max_norm: float, slack: float) -> float:
    """The fp32 error bound of one entry of the z GEMM (``|z|^2 <= max_norm^2 + slack``, input rounding in)."""
    return matmul_error_bound(k + 1, np.float64, "fp32", float(np.sqrt(max_norm**2 + slack)))


def bound_threshold(t: float, k: int, max_norm: float, slack: float) -> float:
    """The float32 survivor level ``<= t - eps_z - slack`` for rank-``k`` rows ``z`` from
    :func:`lowrank_rows` of rows of norm ``<= max_norm``: a pair with ``s_z`` below it is not an edge."""
    return float32_at_most(t - _eps_z(k, max_norm, slack) - slack)


def certify_threshold(t: float, k: int, max_norm: float, slack: float) -> float:
    """The level ``t + eps_z + slack`` of the lower bound: ``s_z - 2 (1 + 4u) r_x r_y >= `` it proves an edge
    (``x . y >= p . p - |x_R| |y_R|``; module docstring)."""
    return t + _eps_z(k, max_norm, slack) + slack


def sample_survivor_fraction(
    x: np.ndarray, p_dirs: np.ndarray, max_norm: float, bound_lo: float, n_sample: int = 2048
) -> float:
    """Fraction of the pairs of a deterministic sample of ``n_sample`` rows of ``x`` whose fp32 bound is
    ``>= bound_lo`` (what the prefilter with ``p_dirs`` would keep before any pruning)."""
    n = len(x)
    idx = np.sort(np.random.default_rng(1).choice(n, size=min(n, n_sample), replace=False))
    zs = lowrank_rows(np.asarray(x[idx]), p_dirs, max_norm)[0]
    m = len(idx)
    if m < 2:
        return 0.0
    lo = np.float32(bound_lo)
    above = 0
    for i0 in range(0, m, 256):  # 256-row blocks: 256 x m floats at a time, never m x m
        blk = zs[i0 : i0 + 256] @ zs.T
        above += int(np.count_nonzero(blk >= lo))
    above -= int(np.count_nonzero(np.einsum("ij,ij->i", zs, zs) >= lo))  # the diagonal (approximately)
    return above / (m * (m - 1))


def lowrank_components_labels(
    x: np.ndarray, t: float, *, eps: float, max_norm: float, rank: int, tile: int, n_landmarks: int,
    prune: bool = True, progress: bool = False, stats: dict[str, Any] | None = None, auto: bool = False,
) -> UnionLabels:
    """The components of ``x`` [N, d] (validated rows, norm <= ``max_norm``) at ``t`` as a :class:`UnionLabels`:
    the landmark pass of :mod:`actgeo_assets.lib.graph.schedule` (plain fp32 GEMM: its pairs are mostly
    survivors, so the prefilter would not pay) and its pruned tile pass run through the prefilter.
    ``eps``: the fp32 GEMM bound of the full rows; ``rank``: k, ``1 <= k < d``; ``prune=False`` computes
    (the bound of) every pair. ``auto``: when more than ``AUTO_MAX_SURVIVORS`` of a row sample's pairs survive
    the bound (data that is not close to low rank), run the plain pass instead (``stats["rank"]`` = 0).
    ``stats`` also gets the prefilter's counts, its sample survivor fraction and seconds per phase."""
    from actgeo_assets.lib.graph.schedule import landmark_pass, run_pass

    t0 = time.perf_counter()
    p_dirs = principal_directions(x, rank)
    k = p_dirs.shape[1]
    slack = lowrank_slack(x.shape[1], k, max_norm)
    bound_lo = bound_threshold(t, k, max_norm, slack)
    frac = sample_survivor_fraction(x, p_dirs, max_norm, bound_lo)
    labels = UnionLabels(x.shape[0])
    off = auto and frac > AUTO_MAX_SURVIVORS
    if off:
        backend: Any = NumpyBackend()
    else:
        z = lowrank_rows(x, p_dirs, max_norm)[0]
        backend = _LowRankBackend(x, z, bound_lo, labels, certify_threshold(t, k, max_norm, slack))
    t1 = time.perf_counter()
    spec = TileSpec(float32_at_most(t - eps), t, eps, (t,), False)
    if prune and n_landmarks:
        inner = backend if off else backend.inner
        landmark_pass(inner, x, None, spec, tile, n_landmarks, None, labels, stats=stats)
    t2 = time.perf_counter()
    run_pass(backend, x, None, spec, tile, None, labels, t if prune else None, progress=progress, stats=stats)
    t3 = time.perf_counter()
    if stats is not None:
        stats["rank"] = 0 if off else k
        stats["prefilter_sample_survivors"] = frac
        stats["seconds"] = {"directions": t1 - t0, "landmarks": t2 - t1, "pass": t3 - t2}
        if not off:
            stats.update(backend.counts)
            stats["seconds"].update({f"tiles_{key}": v for key, v in backend.seconds.items()})
    return labels
