"""The torch backend's dense Boruvka with contraction (``device='torch-cpu'`` runs the GPU code on the CPU).

Boruvka is checked against two references on random dense key matrices full of ties: a Kruskal written
here with numpy (edges sorted by key desc, then pair index asc; union-find) and a copy of the previous
full-matrix Boruvka of the backend. End to end, the torch path must equal a float64 brute force and the
CPU backend, with and without pruning. No timing here: the speed of the contraction (rounds work on the
matrix contracted to the current components instead of the full sub-tile) is measured on a GPU by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from actgeo_assets.lib.graph import backend_numpy as GN
from actgeo_assets.lib.graph import backend_torch as BT
from actgeo_assets.lib.graph import cosine_components, single_linkage_forest
from actgeo_assets.lib.graph.backend_torch import TorchBackend, _dense_boruvka_torch, _flat_nonzero, _ord32
from actgeo_assets.lib.graph.contract import TileSpec
from actgeo_tests.support.oracle import brute_force_labels, clustered, unit

# ---------------------------------------------------------------- references


def kruskal(s: np.ndarray, symmetric: bool, lo: float) -> np.ndarray:
    """Sorted pair indices ``u * nb + v`` of the maximum spanning forest under (key desc, pair index asc);
    edges: ``s[u, v] >= lo`` and ``> -inf`` (``u < v`` when symmetric)."""
    na, nb = s.shape
    u, v = np.nonzero((s >= np.float32(lo)) & (s > -np.inf))
    if symmetric:
        keep = u < v
        u, v = u[keep], v[keep]
    lin = u.astype(np.int64) * nb + v
    key = s[u, v].astype(np.float64)  # -0.0 == 0.0 here, as in any float comparison
    order = np.lexsort((lin, -key))
    n = na if symmetric else na + nb
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    out = []
    for k in order:
        a, b = int(u[k]), int(v[k]) + (0 if symmetric else na)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
            out.append(int(lin[k]))
    return np.array(sorted(out), dtype=np.int64)


def old_dense_boruvka_torch(torch: Any, s, symmetric: bool):
    """The backend's previous Boruvka (full-matrix passes every round), kept as a second reference:
    ``s`` full keys, -inf = no edge, symmetric ``s`` when ``symmetric``."""
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


def random_keys(rng: np.random.Generator, na: int, nb: int, symmetric: bool, kind: str) -> np.ndarray:
    """Small integer-valued float32 keys (ties everywhere; -0.0 next to 0.0), -inf holes; symmetric if asked."""
    hole = rng.choice([0.0, 0.3, 0.8, 0.97])
    if kind == "positive":
        s = rng.integers(1, 5, (na, nb)).astype(np.float32) / np.float32(4)  # 0.25 .. 1.0
    else:  # negative, zero and -0.0 keys too
        s = rng.integers(-3, 4, (na, nb)).astype(np.float32)
        s[rng.random((na, nb)) < 0.2] = np.float32(-0.0)
    s[rng.random((na, nb)) < hole] = -np.inf
    if symmetric:
        s = np.where(np.triu(np.ones(s.shape, dtype=bool), 1), s, s.T)
        np.fill_diagonal(s, -np.inf)
    return s.astype(np.float32)


def new_forest(s: np.ndarray, symmetric: bool, lo: float) -> np.ndarray:
    t = torch.from_numpy(s.copy())
    if symmetric:  # the new Boruvka reads the strict upper triangle; put no-edge keys on and below it
        t.masked_fill_(torch.ones(t.shape, dtype=torch.bool).tril(), float("-inf"))
    u, v = _dense_boruvka_torch(torch, t, symmetric, lo)
    return (u * s.shape[1] + v).numpy()


def old_forest(s: np.ndarray, symmetric: bool, lo: float) -> np.ndarray:
    t = torch.from_numpy(np.where(s >= np.float32(lo), s, np.float32(-np.inf)).astype(np.float32))
    u, v = old_dense_boruvka_torch(torch, t, symmetric)
    return (u * s.shape[1] + v).numpy()


# ---------------------------------------------------------------- Boruvka against the references

SHAPES = [
    (1, 1),
    (1, 7),
    (7, 1),
    (2, 2),
    (3, 5),
    (17, 4),
    (40, 60),
    (64, 64),
    (129, 31),
    (300, 300),
    (300, 9),
]
SIZES = [1, 2, 3, 5, 16, 63, 130, 300]


@pytest.fixture(params=["one chunk", "many chunks"])
def chunk(request, monkeypatch):
    """The first contraction packs the matrix in chunks of rows (a diagonal tile skips the columns left
    of each chunk): also run it with chunks of a few rows."""
    if request.param == "many chunks":
        monkeypatch.setattr(BT, "_CHUNK", 37)


@pytest.mark.parametrize("kind", ["positive", "signed"])
@pytest.mark.parametrize("shape", SHAPES)
def test_bipartite_boruvka_equals_kruskal_and_old(shape, kind, chunk):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1] + (kind == "signed"))
    for rep in range(4):
        s = random_keys(rng, *shape, symmetric=False, kind=kind)
        lo = 0.5 if kind == "positive" else float(rng.choice([-np.inf, -2.0, 0.0, 1.0]))
        ref = kruskal(s, False, lo)
        got = new_forest(s, False, lo)
        assert np.array_equal(got, ref), (shape, kind, rep, lo)
        assert np.array_equal(old_forest(s, False, lo), ref), (shape, kind, rep, lo)


@pytest.mark.parametrize("kind", ["positive", "signed"])
@pytest.mark.parametrize("n", SIZES)
def test_symmetric_boruvka_equals_kruskal_and_old(n, kind, chunk):
    rng = np.random.default_rng(n * 7 + (kind == "signed"))
    for rep in range(4):
        s = random_keys(rng, n, n, symmetric=True, kind=kind)
        assert np.array_equal(s, s.T)
        lo = 0.25 if kind == "positive" else float(rng.choice([-np.inf, -1.0, 0.0, 2.0]))
        ref = kruskal(s, True, lo)
        assert np.array_equal(new_forest(s, True, lo), ref), (n, kind, rep, lo)
        assert np.array_equal(old_forest(s, True, lo), ref), (n, kind, rep, lo)


def test_boruvka_one_key_everywhere_and_no_edges():
    """All keys equal: the forest is decided by pair index alone (a star around row 0 / node 0)."""
    for symmetric, shape in ((False, (50, 70)), (True, (60, 60))):
        s = np.full(shape, 0.75, dtype=np.float32)
        assert np.array_equal(new_forest(s, symmetric, 0.5), kruskal(s, symmetric, 0.5))
        assert np.array_equal(new_forest(s, symmetric, 0.9), np.zeros(0, dtype=np.int64))


def test_flat_nonzero_equals_nonzero():
    g = torch.Generator().manual_seed(0)
    for shape in [(1, 1), (3, 5), (8, 8), (17, 9), (300, 301)]:
        for p in (0.0, 0.001, 0.05, 0.5, 1.0):
            m = torch.rand(shape, generator=g) < p
            assert torch.equal(_flat_nonzero(torch, m), m.view(-1).nonzero().squeeze(1)), (shape, p)


def test_ord32_orders_like_float_and_merges_signed_zero():
    vals = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 0.7, 1.0], dtype=np.float32)
    k, th = _ord32(torch, torch.from_numpy(vals.copy()), -np.inf)
    k = k.numpy()
    assert (np.diff(k[4:]) > 0).all() and (np.diff(k[:4]) > 0).all() and k[3] == k[4]
    assert th == k[0] + 1  # -inf is never an edge
    kp, thp = _ord32(torch, torch.from_numpy(vals.copy()), 0.5)
    assert (kp.numpy()[6:] >= thp).all() and (kp.numpy()[:6] < thp).all()


# ---------------------------------------------------------------- end to end








@pytest.fixture
def dense_cpu(monkeypatch):
    """The CPU backend on its dense path (Prim on float32 keys), for edge-by-edge comparison."""
    monkeypatch.setattr(GN, "DENSE_FRACTION", 0.0)
    monkeypatch.setattr(GN, "DENSE_MIN_NODES", 0)


def old_boruvka_adapter(torch: Any, s, symmetric: bool, lo: float):
    """The previous Boruvka behind the new one's signature: mask below ``lo``, mirror the upper triangle."""
    t = s.masked_fill(s < lo, float("-inf"))
    if symmetric:
        t = torch.where(torch.ones(t.shape, dtype=torch.bool).triu(1), t, t.T)
        t.fill_diagonal_(float("-inf"))
    return old_dense_boruvka_torch(torch, t, symmetric)


FOREST_RUNS = [
    {"exact_at": (0.6, 0.8), "tile_size": 128},
    {"exact_at": (0.5,), "prune_at": 0.6, "tile_size": 96, "n_landmarks": 40},  # known labels in tiles
]


@pytest.mark.parametrize("kw", FOREST_RUNS)
def test_forest_equals_brute_force_cpu_and_old_boruvka(monkeypatch, kw, chunk):
    """Cuts at exact thresholds equal brute force and the CPU backend; the forest itself (edges and
    weights) is bit for bit the one the previous full-matrix Boruvka gives on the same GEMM. (Against the
    CPU backend the non-rechecked weights may differ in the last float32 bit: another GEMM.)"""
    x = clustered(600, 24, seed=2)
    ft = single_linkage_forest(x, 0.4, device="torch-cpu", **kw)
    fc = single_linkage_forest(x, 0.4, device="cpu", **kw)
    for t in ft.exact_at:
        assert (ft.labels_at(t) == brute_force_labels(x, t)).all(), t
        assert (ft.labels_at(t) == fc.labels_at(t)).all(), t
    assert len(ft.edges) == len(fc.edges)
    np.testing.assert_allclose(ft.edges.weight, fc.edges.weight, rtol=0, atol=2 * ft.error_bound)
    monkeypatch.setattr(BT, "_dense_boruvka_torch", old_boruvka_adapter)
    fo = single_linkage_forest(x, 0.4, device="torch-cpu", **kw)
    for name in ("src", "dst", "weight"):
        assert np.array_equal(getattr(ft.edges, name), getattr(fo.edges, name)), name


@pytest.mark.parametrize("prune", [False, True])
def test_components_equal_brute_force_and_cpu(prune):
    x = clustered(900, 32, seed=7, k=4)
    for t in (0.5, 0.6, 0.7, 0.8):
        ref = brute_force_labels(x, t)
        kw = {"tile_size": 128, "prune": prune, "n_landmarks": 60}
        got = cosine_components(x, t, device="torch-cpu", **kw)
        assert (got == ref).all(), t
        assert (got == cosine_components(x, t, device="cpu", **kw)).all(), t


def test_negative_and_zero_thresholds(monkeypatch):
    """Thresholds at or below 0: keys of either sign (the int32 order is not the raw bits there), masked
    pairs at -inf (not 0.0). The forest spans weights from -0.5 to 1 and must be the old Boruvka's."""
    x = unit(np.random.default_rng(11).standard_normal((260, 5))).astype(np.float32)
    for t in (-0.3, 0.0, 0.05):
        ref = brute_force_labels(x, t)
        for prune in (False, True):
            got = cosine_components(x, t, device="torch-cpu", tile_size=64, prune=prune, n_landmarks=20)
            assert (got == ref).all(), (t, prune)
    kw = {"exact_at": (-0.2, 0.0, 0.3, 0.9), "device": "torch-cpu", "tile_size": 64}
    f = single_linkage_forest(x, -0.5, **kw)
    assert f.labels_at(0.9).max() > 10  # a non-trivial partition at the top
    for t in f.exact_at:
        assert (f.labels_at(t) == brute_force_labels(x, t)).all(), t
    monkeypatch.setattr(BT, "_dense_boruvka_torch", old_boruvka_adapter)
    fo = single_linkage_forest(x, -0.5, **kw)
    for name in ("src", "dst", "weight"):
        assert np.array_equal(getattr(f.edges, name), getattr(fo.edges, name)), name


@pytest.mark.parametrize("diag", [False, True])
@pytest.mark.parametrize("known", [False, True])
def test_tile_reduce_equals_numpy_dense(dense_cpu, diag, known):
    """One sub-tile through both backends (with known labels masking pairs): the same forest."""
    x = clustered(300, 16, seed=3)
    a, b = x[:160], (x[:160] if diag else x[160:])
    rng = np.random.default_rng(0)
    la = lb = None
    if known:
        la = rng.integers(0, 5, len(a)).astype(np.int64)
        lb = la if diag else rng.integers(3, 9, len(b)).astype(np.int64)
    eps = 16 * 2.0**-24 * 1.01
    spec = TileSpec(float(np.float32(0.5 - eps)) - 1e-7, 0.5, eps, (0.5, 0.7), True)
    tb = TorchBackend("cpu", "fp32")
    nbk = GN.NumpyBackend()
    ta, tb_ = tb.block(a, slice(None)), tb.block(b, slice(None))
    ut, vt, wt, _ = tb.tile_reduce(ta, ta if diag else tb_, diag, la, lb, spec)
    na_, nb_ = nbk.block(a, slice(None)), nbk.block(b, slice(None))
    un, vn, wn, _ = nbk.tile_reduce(na_, na_ if diag else nb_, diag, la, lb, spec)
    ot, on = np.lexsort((vt, ut)), np.lexsort((vn, un))
    assert len(ut) > 10
    assert np.array_equal(ut[ot], un[on]) and np.array_equal(vt[ot], vn[on])
    np.testing.assert_allclose(wt[ot], wn[on], rtol=0, atol=2 * eps)  # another GEMM: last bits may differ
    if known:
        assert (la[ut] != (lb[vt] if diag else lb[vt - len(a)])).all()
    if diag:
        assert (ut < vt).all()
