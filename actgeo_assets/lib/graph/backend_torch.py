"""The GPU backend (torch; ``device='torch-cpu'`` runs it on the CPU for tests): tf32/fp32 GEMM on the
device, float64 recheck of the band, sub-tile forests by dense Boruvka, only forest edges come back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from actgeo_assets.lib.graph.backends import _TileSpec
from actgeo_assets.lib.graph.exactness import _hi32, _lo32, _side_keys_torch
from actgeo_assets.lib.graph.schedule import DEFAULT_TILE_GPU


class _TorchBackend:
    """The GPU code path (also runnable on the CPU as ``device='torch-cpu'`` for tests)."""

    def __init__(self, device: str, precision: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.precision = precision
        self.name = str(self.device)
        self._triu = None
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

    def triu(self, na: int, nb: int):
        size = max(na, nb)
        if self._triu is None or self._triu.shape[0] < size:
            self._triu = self.torch.ones((size, size), dtype=self.torch.bool, device=self.device).triu(1)
        return self._triu[:na, :nb]

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

    def tile_reduce(self, a, b, diag: bool, la, lb, spec: _TileSpec):
        """Same contract as the numpy backend's; everything stays on the device, the sub-tile's forest
        is found by dense Boruvka on the similarity matrix, and only its edges come back."""
        torch = self.torch
        (ag, ae), (bg, be) = a, b
        na, nb = ag.shape[0], bg.shape[0]
        with self.matmul_mode():
            s = ag @ bg.T
        ninf = float("-inf")
        band = torch.zeros(s.shape, dtype=torch.bool, device=self.device)
        for t in spec.exact_ts:
            band |= (s >= _lo32(t - spec.eps)) & (s <= _hi32(t + spec.eps))
        if diag:
            band &= self.triu(na, nb)
        same = None
        if la is not None:
            la_t = torch.from_numpy(la).to(self.device)
            lb_t = la_t if lb is la else torch.from_numpy(lb).to(self.device)
            same = la_t[:, None] == lb_t[None, :]
            band &= ~same
        bidx = band.reshape(-1).nonzero().squeeze(1)
        del band
        br, bc = bidx // nb, bidx % nb
        bw = torch.empty(bidx.shape[0], dtype=torch.float64, device=self.device)
        step = max(1, (256 << 20) // (16 * ae.shape[1]))
        for k in range(0, bidx.shape[0], step):
            sl = slice(k, k + step)
            bw[sl] = (ae[br[sl]].double() * be[bc[sl]].double()).sum(1)
        s.masked_fill_(s < spec.lo32, ninf)
        if same is not None:
            s.masked_fill_(same, ninf)
            del same
        keys = _side_keys_torch(torch, bw, spec.exact_ts)
        keys.masked_fill_(bw < spec.keep_min, ninf)
        s.view(-1)[bidx] = keys
        if diag:
            s = torch.where(self.triu(na, nb), s, s.T)
            s.fill_diagonal_(ninf)
        u, v = _dense_boruvka_torch(torch, s, diag)
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
        return u.cpu().numpy(), v.cpu().numpy(), w


def _dense_boruvka_torch(torch: Any, s, symmetric: bool):
    """Boruvka maximum spanning forest of a dense graph on the device: ``s`` [na, nb] keys (``-inf`` =
    no edge), bipartite between rows and columns, or (``symmetric``) one node set with ``s``
    symmetric. Strict order: key desc, then pair index (row-major, (min, max) when symmetric) asc;
    ``max`` along a dim returns the first maximal index, which is exactly that tie-break.
    Returns (u, v) index tensors (row node, column node; ``u < v`` when symmetric)."""
    dev = s.device
    na, nb = s.shape
    n = na if symmetric else na + nb
    big = torch.iinfo(torch.int64).max
    comp = torch.arange(n, device=dev)
    chosen = []
    ar_a = torch.arange(na, device=dev)
    ar_b = torch.arange(nb, device=dev)
    while True:
        ca = comp[:na]
        cb = comp if symmetric else comp[na:]
        m = s.masked_fill(ca[:, None] == cb[None, :], float("-inf"))
        rw, rj = m.max(1)
        if symmetric:
            node_w = rw
            lo, hi = torch.minimum(ar_a, rj), torch.maximum(ar_a, rj)
            node_e = lo * nb + hi
        else:
            cw, ci = m.max(0)
            node_w = torch.cat([rw, cw])
            node_e = torch.cat([ar_a * nb + rj, ci * nb + ar_b])
        del m
        valid = node_w > float("-inf")
        if not bool(valid.any()):
            break
        best = torch.full((n,), float("-inf"), dtype=s.dtype, device=dev)
        best.scatter_reduce_(0, comp, node_w, "amax")
        cand = torch.where(valid & (node_w == best[comp]), node_e, big)
        pick = torch.full((n,), big, dtype=torch.int64, device=dev)
        pick.scatter_reduce_(0, comp, cand, "amin")
        comps = (pick < big).nonzero().squeeze(1)
        e = pick[comps]
        chosen.append(e)
        eu = e // nb
        ev = e % nb if symmetric else e % nb + na
        cu, cv = comp[eu], comp[ev]
        other = torch.where(cu == comps, cv, cu)
        parent = torch.arange(n, device=dev)
        parent[comps] = other
        mutual = (parent[other] == comps) & (comps < other)
        parent[comps[mutual]] = comps[mutual]
        while True:
            nxt = parent[parent]
            if torch.equal(nxt, parent):
                break
            parent = nxt
        comp = parent[comp]
    if not chosen:
        z = torch.zeros(0, dtype=torch.int64, device=dev)
        return z, z.clone()
    e = torch.unique(torch.cat(chosen))
    return e // nb, e % nb


