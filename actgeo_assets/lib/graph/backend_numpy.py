"""The CPU backend: numpy/OpenBLAS fp32 GEMM, float64 recheck, Prim or scipy for each sub-tile's forest."""

from __future__ import annotations

import numpy as np

from actgeo_assets.lib.graph.contract import TileSpec
from actgeo_assets.lib.graph.exactness import float32_at_least, float32_at_most, side_keys_np
from actgeo_assets.lib.graph.forest import msf_fast, star_edges
from actgeo_assets.lib.graph.labels import cc_labels


class NumpyBackend:
    name = "cpu"

    def __init__(self) -> None:
        self._triu: np.ndarray | None = None

    def triu(self, na: int, nb: int) -> np.ndarray:
        size = max(na, nb)
        if self._triu is None or self._triu.shape[0] < size:
            self._triu = np.triu(np.ones((size, size), dtype=bool), 1)
        return self._triu[:na, :nb]

    def block(self, x: np.ndarray, idx: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """(fp32 contiguous rows for the GEMM, rows in the input dtype for the float64 recheck)."""
        ex = np.ascontiguousarray(x[idx])
        g = ex if ex.dtype == np.float32 else ex.astype(np.float32)
        return g, ex

    def take(self, blk: tuple[np.ndarray, np.ndarray], pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g, ex = blk
        gg = g[pos]
        return gg, (gg if ex is g else ex[pos])

    def tile_reduce(self, a, b, diag: bool, la, lb, spec: TileSpec):
        """One sub-tile -> its reduced edges (u, v, w) in local node ids (A rows 0..na-1, B rows na..;
        for a diagonal tile both sides are the same nodes 0..na-1). Weighted: a maximum spanning
        forest of the sub-tile's edges under the carried weights; unweighted: a spanning forest of its
        edges at ``keep_min`` (``w`` is None). Sparse tiles go through an edge list; dense ones (more
        than ``DENSE_FRACTION`` of pairs are candidates) through Prim on the similarity matrix."""
        (ag, ae), (bg, be) = a, b
        na, nb = len(ag), len(bg)
        s = ag @ bg.T
        mask = s >= np.float32(spec.lo32)
        if np.count_nonzero(mask) > DENSE_FRACTION * na * nb and na + nb > DENSE_MIN_NODES:
            del mask
            return self._dense(s, ae, be, diag, la, lb, spec)
        idx = np.flatnonzero(mask)
        del mask
        # the triangle and known-component filters act on the few candidates, not on the dense tile
        r, c = np.divmod(idx, nb)
        keep = None
        if diag:
            keep = r < c
        if la is not None:
            k2 = la[r] != lb[c]
            keep = k2 if keep is None else keep & k2
        if keep is not None:
            idx, r, c = idx[keep], r[keep], c[keep]
        w = s.reshape(-1)[idx].astype(np.float64)
        del s, idx
        band = np.zeros(len(w), dtype=bool)
        for t in spec.exact_ts:
            band |= np.abs(w - t) <= spec.eps
        bi = np.flatnonzero(band)
        if len(bi):
            w[bi] = exact_dots_np(ae, be, r[bi], c[bi])
        counts = np.array([np.count_nonzero(w >= ct) for ct in spec.count_ts], dtype=np.int64)
        keep = w >= spec.keep_min
        r, c, w = r[keep], c[keep], w[keep]
        if not len(r):
            return r, c, (w if spec.weighted else None), counts
        off = 0 if diag else na
        n_loc = na if diag else na + nb
        cc = c + off
        if spec.weighted:
            sel = msf_fast(r, cc, w, n_loc)
            return r[sel], cc[sel], w[sel], counts
        u, v = star_edges(cc_labels(n_loc, r, cc))
        return u, v, None, counts

    def _dense(self, s: np.ndarray, ae, be, diag: bool, la, lb, spec: TileSpec):
        na, nb = s.shape
        # 1. the float64 recheck band (a superset: fp32 bounds rounded outwards)
        band = np.zeros(s.shape, dtype=bool)
        for t in spec.exact_ts:
            band |= (s >= np.float32(float32_at_most(t - spec.eps))) & (s <= np.float32(float32_at_least(t + spec.eps)))
        if diag:
            band &= self.triu(na, nb)
        same = None
        if la is not None:
            same = la[:, None] == lb[None, :]
            band &= ~same
        bidx = np.flatnonzero(band)
        del band
        br, bc = np.divmod(bidx, nb)
        bw = exact_dots_np(ae, be, br, bc)
        counts = _dense_counts(s, bidx, bw, diag, spec)
        # 2. keys: s, -inf below the candidate level or inside a known component, band keys on the
        #    exact side of every exact threshold
        np.copyto(s, np.float32(-np.inf), where=s < np.float32(spec.lo32))
        if same is not None:
            np.copyto(s, np.float32(-np.inf), where=same)
            del same
        keys = side_keys_np(bw, spec.exact_ts)
        keys[bw < spec.keep_min] = -np.inf
        s.reshape(-1)[bidx] = keys
        if diag:
            low = np.tril(np.ones((na, na), dtype=bool))
            np.copyto(s, _transpose(s), where=low)
            np.fill_diagonal(s, -np.inf)
            u, v = _prim_sym(s)
            lo, hi = np.minimum(u, v), np.maximum(u, v)
            lin = lo * nb + hi
            u, v = lo, hi
        else:
            u, v = _prim_bip(s, _transpose(s))
            lin = u * nb + v
            v = v + na
        if not spec.weighted:
            return u, v, None, counts
        w = s.reshape(-1)[lin].astype(np.float64)
        pos = np.searchsorted(bidx, lin)
        pos_c = np.minimum(pos, max(len(bidx) - 1, 0))
        hit = (pos < len(bidx)) & (bidx[pos_c] == lin) if len(bidx) else np.zeros(len(lin), dtype=bool)
        w[hit] = bw[pos_c[hit]]
        return u, v, w, counts


def _dense_counts(s: np.ndarray, bidx: np.ndarray, bw: np.ndarray, diag: bool, spec: TileSpec) -> np.ndarray:
    """Pairs with float64 weight >= t for each ``spec.count_ts`` on a dense sub-tile (upper triangle when
    ``diag``): those above ``t``'s recheck band by their fp32 value, those inside it by their float64 one
    (``bidx``/``bw``: the band's flat indices and exact weights, taken before ``s`` is modified)."""
    if not spec.count_ts:
        return np.zeros(0, dtype=np.int64)
    sb = s.reshape(-1)[bidx]
    out = np.empty(len(spec.count_ts), dtype=np.int64)
    for k, t in enumerate(spec.count_ts):
        hi, lo = np.float32(float32_at_least(t + spec.eps)), np.float32(float32_at_most(t - spec.eps))
        above = _count_upper(s, hi) if diag else int(np.count_nonzero(s > hi))
        in_band = (sb >= lo) & (sb <= hi)
        out[k] = above + int(np.count_nonzero(bw[in_band] >= t))
    return out


def _count_upper(s: np.ndarray, x: np.float32, block: int = 256) -> int:
    """Entries ``s[i, j] > x`` with ``i < j`` of a square matrix, by row blocks (no triangle mask of s)."""
    n = s.shape[0]
    total = 0
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        m = s[r0:r1, r0:] > x
        m[:, : r1 - r0] &= np.triu(np.ones((r1 - r0, r1 - r0), dtype=bool), 1)
        total += int(np.count_nonzero(m))
    return total


DENSE_FRACTION = 0.05
"""Sub-tiles with more candidate pairs than this fraction are reduced by dense Prim (CPU)..."""
DENSE_MIN_NODES = 64
"""... when they have more than this many rows + columns."""


def _transpose(s: np.ndarray, block: int = 128) -> np.ndarray:
    """Contiguous transpose, blocked for cache locality (about 2x faster than ``ascontiguousarray``)."""
    out = np.empty(s.shape[::-1], dtype=s.dtype)
    for i in range(0, s.shape[0], block):
        out[:, i : i + block] = s[i : i + block].T
    return out


def _prim_bip(w: np.ndarray, wt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prim's maximum spanning forest of a bipartite graph given densely: ``w`` [na, nb] (``-inf`` = no
    edge), ``wt`` its contiguous transpose. Returns (a, b) index arrays of the forest's edges."""
    na, nb = w.shape
    ninf = -np.inf
    best_a = np.full(na, ninf, dtype=w.dtype)
    best_b = np.full(nb, ninf, dtype=w.dtype)
    par_a = np.zeros(na, dtype=np.int64)
    par_b = np.zeros(nb, dtype=np.int64)
    open_a = np.ones(na, dtype=bool)
    open_b = np.ones(nb, dtype=bool)
    ea: list[int] = []
    eb: list[int] = []
    is_a, cur = True, 0
    for _ in range(na + nb):
        if is_a:
            open_a[cur] = False
            best_a[cur] = ninf
            row = w[cur]
            upd = row > best_b
            upd &= open_b
            best_b[upd] = row[upd]
            par_b[upd] = cur
        else:
            open_b[cur] = False
            best_b[cur] = ninf
            col = wt[cur]
            upd = col > best_a
            upd &= open_a
            best_a[upd] = col[upd]
            par_a[upd] = cur
        ia = int(best_a.argmax())
        ib = int(best_b.argmax())
        va, vb = best_a[ia], best_b[ib]
        if va == ninf and vb == ninf:
            rest = np.flatnonzero(open_a)
            if len(rest):
                is_a, cur = True, int(rest[0])
                continue
            rest = np.flatnonzero(open_b)
            if not len(rest):
                break
            is_a, cur = False, int(rest[0])
            continue
        if va >= vb:
            ea.append(ia)
            eb.append(int(par_a[ia]))
            is_a, cur = True, ia
        else:
            ea.append(int(par_b[ib]))
            eb.append(ib)
            is_a, cur = False, ib
    return np.asarray(ea, dtype=np.int64), np.asarray(eb, dtype=np.int64)


def _prim_sym(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prim's maximum spanning forest of a graph given as a dense symmetric matrix (``-inf`` = none)."""
    n = w.shape[0]
    ninf = -np.inf
    best = np.full(n, ninf, dtype=w.dtype)
    par = np.zeros(n, dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    eu: list[int] = []
    ev: list[int] = []
    cur = 0
    for _ in range(n):
        open_[cur] = False
        best[cur] = ninf
        row = w[cur]
        upd = row > best
        upd &= open_
        best[upd] = row[upd]
        par[upd] = cur
        nxt = int(best.argmax())
        if best[nxt] == ninf:
            rest = np.flatnonzero(open_)
            if not len(rest):
                break
            cur = int(rest[0])
            continue
        eu.append(int(par[nxt]))
        ev.append(nxt)
        cur = nxt
    return np.asarray(eu, dtype=np.int64), np.asarray(ev, dtype=np.int64)


def exact_dots_np(ae: np.ndarray, be: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    out = np.empty(len(r), dtype=np.float64)
    step = max(1, (32 << 20) // (16 * ae.shape[1]))
    for k in range(0, len(r), step):
        ra = ae[r[k : k + step]].astype(np.float64)
        cb = be[c[k : k + step]].astype(np.float64)
        out[k : k + step] = np.einsum("ij,ij->i", ra, cb)
    return out


