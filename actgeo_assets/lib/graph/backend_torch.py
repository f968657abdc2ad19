"""The GPU backend (torch; ``device='torch-cpu'`` runs it on the CPU for tests): tf32/fp32 GEMM on the
device, float64 recheck of the band, sub-tile forests by dense Boruvka, only forest edges come back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from actgeo_assets.lib.graph.contract import TileSpec
from actgeo_assets.lib.graph.exactness import float32_at_least, float32_at_most, side_keys_torch
from actgeo_assets.lib.graph.schedule import DEFAULT_TILE_GPU


class TorchBackend:
    """The GPU code path (also runnable on the CPU as ``device='torch-cpu'`` for tests)."""

    def __init__(self, device: str, precision: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.precision = precision
        self.name = str(self.device)
        self._lower = None
        self._cache: dict[int, tuple[np.ndarray, Any]] = {}

    @contextlib.contextmanager
    def matmul_mode(self) -> Iterator[None]:
        torch = self.torch
        if self.device.type != "cuda":
            yield
            return
        m = torch.backends.cuda.matmul
        want_tf32 = self.precision == "tf32"
        if hasattr(m, "fp32_precision"):
            old = m.fp32_precision
            m.fp32_precision = "tf32" if want_tf32 else "ieee"
            try:
                yield
            finally:
                m.fp32_precision = old
        else:  # pragma: no cover - older torch
            old = m.allow_tf32
            m.allow_tf32 = want_tf32
            try:
                yield
            finally:
                m.allow_tf32 = old

    def _resident(self, x: np.ndarray):
        """The whole of ``x`` on the device (uploaded once, in chunks) when it fits comfortably."""
        key = id(x)
        if key in self._cache:
            return self._cache[key][1]
        if self.device.type != "cuda" or x.shape[0] < 4 * DEFAULT_TILE_GPU:
            return None
        free, _ = self.torch.cuda.mem_get_info(self.device)
        if x.nbytes > 0.4 * free:
            return None
        dev = self.torch.empty(x.shape, dtype=getattr(self.torch, np.dtype(x.dtype).name), device=self.device)
        step = max(1, (256 << 20) // max(1, x.shape[1] * x.itemsize))
        for i in range(0, x.shape[0], step):
            dev[i : i + step] = self.torch.from_numpy(np.ascontiguousarray(x[i : i + step])).to(self.device)
        self._cache[key] = (x, dev)  # keep x alive so its id stays unique
        return dev

    def block(self, x: np.ndarray, idx: np.ndarray | slice):
        torch = self.torch
        resident = self._resident(x)
        if resident is not None:
            if isinstance(idx, slice):
                ex = resident[idx]
            else:
                ex = resident.index_select(0, torch.from_numpy(np.asarray(idx)).to(self.device))
        else:
            ex = torch.from_numpy(np.ascontiguousarray(x[idx])).to(self.device, non_blocking=True)
        g = ex if ex.dtype == torch.float32 else ex.float()
        return g, ex

    def take(self, blk, pos: np.ndarray):
        g, ex = blk
        p = self.torch.from_numpy(pos).to(self.device)
        gg = g.index_select(0, p)
        return gg, (gg if ex is g else ex.index_select(0, p))

    def lower(self, n: int):
        """Cached bool mask of the lower triangle *with* the diagonal (the pairs a diagonal tile drops)."""
        if self._lower is None or self._lower.shape[0] < n:
            self._lower = self.torch.ones((n, n), dtype=self.torch.bool, device=self.device).tril()
        return self._lower[:n, :n]

    def tile_reduce(self, a, b, diag: bool, la, lb, spec: TileSpec):
        """Same contract as the numpy backend's; everything stays on the device, the sub-tile's forest
        is found by dense Boruvka with contraction on the similarity matrix (:func:`_dense_boruvka_torch`),
        and only its edges come back.

        Full-matrix passes: the GEMM; the no-edge masks (pairs inside one known component, the lower
        triangle of a diagonal tile) in one fill; the recheck band, two compares and an ``and`` per exact
        threshold, then ``nonzero`` over 8-byte words; Boruvka's first round (a row and a column max) and its
        contraction (pack + segment max, chunk by chunk; the upper triangle only on a diagonal tile). Pairs
        below ``lo32`` are not masked: Boruvka reads them as no edge."""
        torch = self.torch
        (ag, ae), (bg, be) = a, b
        na, nb = ag.shape[0], bg.shape[0]
        _check_tile(na, nb)
        with self.matmul_mode():
            s = ag @ bg.T
        ninf = float("-inf")
        lo_t = [float32_at_most(t - spec.eps) for t in spec.exact_ts]
        # 1. no-edge masks. Masked pairs get a key below lo32 that lies in no recheck band: -inf, or 0.0
        #    (what ``triu_`` writes) when every band and lo32 are above 0.
        zero_is_none = spec.lo32 > 0 and min(lo_t, default=1.0) > 0
        if la is not None:
            la_t = torch.from_numpy(la).to(self.device)
            lb_t = la_t if lb is la else torch.from_numpy(lb).to(self.device)
            same = la_t[:, None] == lb_t[None, :]
            if diag:
                same |= self.lower(na)
            s.masked_fill_(same, ninf)
            del same
        elif diag:
            if zero_is_none:
                s.triu_(1)
            else:
                s.masked_fill_(self.lower(na), ninf)
        # 2. the float64 recheck band (a superset: fp32 bounds rounded outwards); masked pairs are outside
        band = None
        for t, lo in zip(spec.exact_ts, lo_t, strict=True):
            m = s >= lo
            m &= s <= float32_at_least(t + spec.eps)
            band = m if band is None else band.logical_or_(m)
        bidx = _flat_nonzero(torch, band) if band is not None else s.new_zeros(0, dtype=torch.int64)
        del band
        br, bc = bidx // nb, bidx % nb
        bw = torch.empty(bidx.shape[0], dtype=torch.float64, device=self.device)
        step = max(1, (256 << 20) // (16 * ae.shape[1]))
        for k in range(0, bidx.shape[0], step):
            sl = slice(k, k + step)
            bw[sl] = (ae[br[sl]].double() * be[bc[sl]].double()).sum(1)
        counts = self._counts(s, bidx, bw, spec)
        # 3. band keys on the exact side of every exact threshold; -inf below keep_min
        keys = side_keys_torch(torch, bw, spec.exact_ts)
        keys.masked_fill_(bw < spec.keep_min, ninf)
        s.view(-1)[bidx] = keys
        # 4. the forest: pairs with key >= lo32 are edges (a diagonal tile: its upper triangle)
        u, v = _dense_boruvka_torch(torch, s, diag, spec.lo32)
        lin = u * nb + v
        if not diag:
            v = v + na
        w = None
        if spec.weighted:
            w = s.view(-1)[lin].double()
            if bidx.numel():
                pos = torch.searchsorted(bidx, lin).clamp_(max=bidx.numel() - 1)
                hit = bidx[pos] == lin
                w[hit] = bw[pos[hit]]
            w = w.cpu().numpy()
        return u.cpu().numpy(), v.cpu().numpy(), w, counts

    def _counts(self, s, bidx, bw, spec: TileSpec) -> np.ndarray:
        """Pairs with float64 weight >= t for each ``spec.count_ts`` (the masks of step 1 already keep
        a diagonal tile's lower triangle below every band): above the band by the fp32 value, inside it
        by the float64 one. Runs before the band keys overwrite ``s``."""
        if not spec.count_ts:
            return np.zeros(0, dtype=np.int64)
        sb = s.view(-1)[bidx]
        out = []
        for t in spec.count_ts:
            hi, lo = float32_at_least(t + spec.eps), float32_at_most(t - spec.eps)
            in_band = (sb >= lo) & (sb <= hi)
            out.append(int((s > hi).sum()) + int((bw[in_band] >= t).sum()))
        return np.asarray(out, dtype=np.int64)


# ----------------------------------------------------------------------------------------------------
# dense Boruvka with contraction on packed keys
# ----------------------------------------------------------------------------------------------------

_LOW = (1 << 32) - 1  # the low half of a packed key: _LOW - pair index
_SHIFT = 1 << 32
_NONE = -(1 << 63) + (1 << 32)  # no edge: below every edge's packed key; a column index can be subtracted
_CHUNK = 1 << 25  # entries per packing chunk of the first contraction (256 MiB of int64)


def _flat_nonzero(torch: Any, mask):
    """Sorted flat indices of the True entries of a contiguous bool tensor. ``nonzero`` costs per element:
    on a sparse mask it is cheaper to find the 8-byte words with a True in them first."""
    flat = mask.view(-1)
    n8 = flat.numel() - flat.numel() % 8
    words = flat[:n8].view(torch.int64).nonzero().squeeze(1)
    sub = flat[:n8].view(-1, 8)[words].nonzero()
    idx = words[sub[:, 0]] * 8 + sub[:, 1]
    if n8 == flat.numel():
        return idx
    return torch.cat([idx, flat[n8:].nonzero().squeeze(1) + n8])


def _check_tile(na: int, nb: int) -> None:
    if na * nb > _LOW:
        raise ValueError(f"sub-tile {na} x {nb} too large for packed pair indices (na * nb must be < 2**32)")


def _ord32(torch: Any, s, lo: float):
    """int32 keys with the order of the float32 keys ``s`` and the smallest one that is an edge (``>= lo``
    and ``> -inf``). Above a positive ``lo`` the raw bits already order every edge and everything else is
    below: a free view of ``s``. Otherwise sign-magnitude -> two's complement, with -0.0 read as 0.0."""
    lo32 = np.float32(lo)
    if lo32 > 0:
        return s.view(torch.int32), int(np.array(lo32).view(np.int32))
    k = (s + 0.0).view(torch.int32)  # a copy; -0.0 + 0.0 = 0.0
    k ^= (k >> 31) & 0x7FFFFFFF

    def one(x: float) -> int:
        b = int(np.array(np.float32(x) + np.float32(0.0)).view(np.int32))
        return b ^ 0x7FFFFFFF if b < 0 else b

    return k, max(one(lo32), one(-np.inf) + 1)


def _groups(torch: Any, key, valid, sentinel: int):
    """Sorted distinct ``key[valid]``, every entry's position there (invalid ones: one past the end) and
    whether there are invalid ones."""
    lst, inv = torch.unique(torch.where(valid, key, sentinel), return_inverse=True)
    extra = bool(lst.numel()) and int(lst[-1]) == sentinel
    return (lst[:-1] if extra else lst), inv, extra


def _segment_amax(torch: Any, src, inv, size: int):
    """``out[g] = max of the rows i of src with inv[i] == g`` (rows never hit stay ``_NONE``)."""
    out = torch.full((size, src.shape[1]), _NONE, dtype=torch.int64, device=src.device)
    return out.scatter_reduce_(0, inv[:, None].expand(-1, src.shape[1]), src, "amax")


def _segment_amax_packed(torch: Any, key, inv, size: int, symmetric: bool):
    """Round 1's contraction of the rows: pack the int32 keys [na, nb] chunk by chunk with the row part of
    the pair index (``key * 2**32 + 2**32 - 1 - u * nb``) and take the max per row group ``inv``. A
    diagonal tile's chunk of rows from ``r0`` on skips the columns ``<= r0`` (no edges there)."""
    na, nb = key.shape
    out = torch.full((size, nb), _NONE, dtype=torch.int64, device=key.device)
    row_low = _LOW - torch.arange(na, device=key.device) * nb
    step = max(1, _CHUNK // max(1, nb))
    for r0 in range(0, na, step):
        r1 = min(na, r0 + step)
        c0 = r0 + 1 if symmetric else 0
        if c0 >= nb:
            break
        packed = torch.add(row_low[r0:r1, None], key[r0:r1, c0:], alpha=_SHIFT)
        out[:, c0:].scatter_reduce_(0, inv[r0:r1, None].expand(-1, nb - c0), packed, "amax")
    return out


def _dense_boruvka_torch(torch: Any, s, symmetric: bool, lo: float):
    """Maximum spanning forest of a dense graph on the device, by Boruvka with contraction.

    ``s`` [na, nb] float32 keys; pair (u, v) is an edge iff ``s[u, v] >= lo`` (and ``> -inf``). Bipartite:
    rows are nodes 0..na-1, columns nodes na..na+nb-1. ``symmetric``: one node set (na == nb), row i and
    column i are node i, the edge {u, v} (u < v) is ``s[u, v]``; the caller puts no-edge keys on and
    below the diagonal. Strict order: key desc, then pair index ``u * nb + v`` asc (``u < v`` when
    symmetric), so the forest is unique. Returns (u, v) index tensors, sorted by pair index.

    Every entry is packed into one int64 ordered like (key desc, pair index asc): the key's order-preserving
    int32 (:func:`_ord32`) in the high half, ``2**32 - 1 - pair index`` in the low half. The best edge of
    a set of pairs is then a plain max that decodes back to its pair. Round 1 takes each row's and each
    column's max of the int32 keys (the first maximal index is the smallest pair index); every later round
    works on the matrix contracted to the current components: entry (g, h) is the max packed key over rows
    of component g and columns of component h (a segment max over rows, then over the rows of a transposed
    copy), rows and columns without an edge are dropped, and the entry of a component with itself (at most
    one per row and column) is masked. Each round every component with an outgoing edge picks its best
    one and components merge (ties are impossible, so two components picking each other picked the same
    edge). Only round 1 and its contraction read the full matrix; each round at least halves the number of
    components that still have an edge, so the contracted matrices shrink geometrically."""
    dev = s.device
    na, nb = s.shape
    _check_tile(na, nb)
    n = na if symmetric else na + nb
    key, th = _ord32(torch, s, lo)
    th64 = th * _SHIFT
    ar_a = torch.arange(na, device=dev)
    ar_b = torch.arange(nb, device=dev)
    rv, ri = key.max(1)
    cv, ci = key.max(0)
    rbest = rv.to(torch.int64) * _SHIFT + (_LOW - (ar_a * nb + ri))
    cbest = cv.to(torch.int64) * _SHIFT + (_LOW - (ci * nb + ar_b))
    del rv, ri, cv, ci
    rlist = ar_a  # the component of each row / column of the current matrix
    clist = ar_b if symmetric else ar_b + na
    comp = torch.arange(n, device=dev)  # the component of each node
    m = None  # the contracted matrix (round 1 reads ``key``)
    chosen = []
    for _ in range(2 + 2 * n.bit_length()):  # each round at least halves the components with an edge
        best = torch.full((n,), _NONE, dtype=torch.int64, device=dev)
        best.scatter_reduce_(0, rlist, rbest, "amax")
        best.scatter_reduce_(0, clist, cbest, "amax")
        act = (best >= th64).nonzero().squeeze(1)
        if not act.numel():
            break
        lin = _LOW - (best[act] & _LOW)
        chosen.append(lin)
        eu = lin // nb
        ev = lin % nb if symmetric else lin % nb + na
        cu, cv_ = comp[eu], comp[ev]
        other = torch.where(cu == act, cv_, cu)
        parent = torch.arange(n, device=dev)
        parent[act] = other
        mutual = (parent[other] == act) & (act < other)
        parent[act[mutual]] = act[mutual]
        while True:
            nxt = parent[parent]
            if torch.equal(nxt, parent):
                break
            parent = nxt
        comp = parent[comp]
        # contract to the new components, dropping rows / columns that have no edge left
        rlist, rinv, rx = _groups(torch, parent[rlist], rbest >= th64, n)
        clist, cinv, cx = _groups(torch, parent[clist], cbest >= th64, n)
        nr, nc = rlist.numel(), clist.numel()
        if not nr or not nc:
            break
        # rows first, then a transposed copy whose rows (the old columns) are contracted the same way: the
        # new matrix is [column groups, row groups], so rows and columns swap roles every round
        if m is None:
            rows = _segment_amax_packed(torch, key, rinv, nr + rx, symmetric)[:nr]
            t = torch.empty((nb, nr), dtype=torch.int64, device=dev)
            torch.sub(rows.T, ar_b[:, None], out=t)  # the full pair index; _NONE - v is still no edge
        else:
            rows = _segment_amax(torch, m, rinv, nr + rx)[:nr]
            t = torch.empty((m.shape[1], nr), dtype=torch.int64, device=dev).copy_(rows.T)
        del rows, m
        m = _segment_amax(torch, t, cinv, nc + cx)[:nc]
        del t
        rlist, clist = clist, rlist
        nr, nc = nc, nr
        # a component's entry with itself (at most one per row and per column) is no edge
        pos = torch.searchsorted(clist, rlist).clamp_(max=nc - 1)
        hit = (clist[pos] == rlist).nonzero().squeeze(1)
        m[hit, pos[hit]] = _NONE
        rbest = m.amax(1)
        cbest = m.amax(0)
    else:
        raise RuntimeError("dense Boruvka did not converge")  # pragma: no cover - a bug, not an input
    if not chosen:
        z = torch.zeros(0, dtype=torch.int64, device=dev)
        return z, z.clone()
    e = torch.unique(torch.cat(chosen))
    return e // nb, e % nb
