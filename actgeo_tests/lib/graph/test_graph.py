"""The graph engine against float64 brute force and DBSCAN; exactness at the threshold; pruning; forests."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

from actgeo_assets.lib.graph import (
    ForestEdges,
    SingleLinkageForest,
    canonical_labels,
    component_summary,
    cosine_components,
    merge_forests,
    single_linkage_forest,
    tile_forest,
)
from actgeo_assets.lib.graph import backend_numpy as GN
from actgeo_tests.support.oracle import brute_force_labels, clustered, unit


def dbscan(x, t: float) -> np.ndarray:
    lab = DBSCAN(eps=1 - t, min_samples=1, metric="cosine", algorithm="brute").fit_predict(
        np.asarray(x, np.float64)
    )
    return canonical_labels(lab)


def near_pairs(t: float, deltas: list[float], d: int = 64, seed: int = 1) -> np.ndarray:
    """Rows in pairs (x, y) with float64 dot x.y = t + delta exactly up to float64 rounding; pairs far apart."""
    rng = np.random.default_rng(seed)
    rows = []
    for delta in deltas:
        x = unit(rng.standard_normal((1, d)))[0]
        o = rng.standard_normal(d)
        o -= (o @ x) * x
        o /= np.linalg.norm(o)
        c = t + delta
        rows += [x, c * x + np.sqrt(1 - c * c) * o]
    return np.array(rows)


# ---------------------------------------------------------------- equality with brute force and DBSCAN


@pytest.mark.parametrize("t", [0.5, 0.7, 0.8])
def test_clustered_matches_brute_force_and_dbscan(t):
    x = clustered(1200, 48)
    ref = brute_force_labels(x, t)
    assert 1 < ref.max() + 1 < len(x)  # a non-trivial partition
    assert (dbscan(x, t) == ref).all()
    for kw in ({}, {"tile_size": 200, "prune": False}, {"tile_size": 200, "prune": True, "n_landmarks": 64}):
        assert (cosine_components(x, t, device="cpu", **kw) == ref).all(), kw
    f = single_linkage_forest(x, 0.5, exact_at=(t,), device="cpu", tile_size=256)
    assert (f.labels_at(t) == ref).all()


def test_random_matches_brute_force_and_dbscan():
    x = unit(np.random.default_rng(3).standard_normal((700, 6)))
    for t in (0.6, 0.9, 0.97):
        ref = brute_force_labels(x, t)
        assert (dbscan(x, t) == ref).all()
        assert (cosine_components(x, t, device="cpu", tile_size=128) == ref).all()
        assert (cosine_components(x, t, device="torch-cpu", tile_size=150) == ref).all()


@pytest.mark.parametrize("dense_fraction", [GN.DENSE_FRACTION, 0.0])
def test_pairs_within_1e6_of_threshold(monkeypatch, dense_fraction):
    """Both sides of t within 1e-6 (and closer); 0.0 forces the dense (Prim, float32 keys) sub-tile path."""
    monkeypatch.setattr(GN, "DENSE_FRACTION", dense_fraction)
    monkeypatch.setattr(GN, "DENSE_MIN_NODES", 0)
    t = 0.7
    deltas = [s * m for m in (1e-6, 3e-7, 1e-7, 1e-8) for s in (1, -1)] + [0.0]
    x64 = near_pairs(t, deltas)
    for x in (x64, x64.astype(np.float32)):
        s = np.asarray(x, np.float64)
        dots = np.einsum("ij,ij->i", s[0::2], s[1::2])
        assert (np.abs(dots - t) < 2e-6).all()
        assert (dots >= t).any() and (dots < t).any()
        ref = brute_force_labels(x, t)
        linked = np.array([ref[2 * k] == ref[2 * k + 1] for k in range(len(deltas))])
        assert (linked == (dots >= t)).all()
        assert (cosine_components(x, t, device="cpu") == ref).all()
        assert (cosine_components(x, t, device="torch-cpu") == ref).all()
        f = single_linkage_forest(x, 0.5, exact_at=(t,), device="cpu")
        assert (f.labels_at(t) == ref).all()
        assert (single_linkage_forest(x, t, device="torch-cpu").labels_at(t) == ref).all()


@pytest.mark.parametrize("device", ["cpu", "torch-cpu"])
def test_dense_keys_stay_on_the_exact_side(monkeypatch, device):
    """a.b = t - 1e-9 and a.c = t + 1e-9 round to the same float32; b.c = 0.9. A dense sub-tile must
    still keep a-c (the true edge at t), not a-b, in the forest."""
    monkeypatch.setattr(GN, "DENSE_FRACTION", 0.0)
    monkeypatch.setattr(GN, "DENSE_MIN_NODES", 0)
    t, delta = 0.7, 1e-9
    gram = np.array([[1, t - delta, t + delta], [t - delta, 1, 0.9], [t + delta, 0.9, 1]])
    tri = np.linalg.cholesky(gram)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((16, 16)))
    x = np.zeros((3, 16))
    x[:, :3] = tri
    x = x @ q.T
    assert brute_force_labels(x, t).tolist() == [0, 0, 0]
    f = single_linkage_forest(x, 0.5, exact_at=(t,), device=device)
    assert f.labels_at(t).tolist() == [0, 0, 0]
    assert f.labels_at(0.95).tolist() == [0, 1, 2]


def test_labels_at_equals_cosine_components_for_exact_thresholds():
    x = clustered(900, 32, seed=5)
    ts = (0.55, 0.65, 0.75, 0.85)
    f = single_linkage_forest(x, 0.5, exact_at=ts, device="cpu", tile_size=128)
    assert f.exact_at == (0.5, *ts)
    for t in ts:
        assert (f.labels_at(t) == cosine_components(x, t, device="cpu")).all()
    assert len(f.edges) <= len(x) - 1
    assert (np.diff(f.edges.weight) <= 0).all()


def test_dense_and_sparse_tile_paths_agree(monkeypatch):
    x = clustered(600, 24, seed=2)
    out = {}
    monkeypatch.setattr(GN, "DENSE_MIN_NODES", 0)
    for frac in (0.0, 1.01):
        monkeypatch.setattr(GN, "DENSE_FRACTION", frac)
        f = single_linkage_forest(x, 0.4, exact_at=(0.6, 0.8), device="cpu", tile_size=150)
        out[frac] = (f, cosine_components(x, 0.6, device="cpu", tile_size=150))
    for t in (0.4, 0.6, 0.8):
        assert (out[0.0][0].labels_at(t) == out[1.01][0].labels_at(t)).all()
        assert (out[0.0][0].labels_at(t) == brute_force_labels(x, t)).all()
    assert (out[0.0][1] == out[1.01][1]).all()


def test_torch_path_forest_matches():
    x = clustered(500, 16, seed=4)
    f = single_linkage_forest(x, 0.5, exact_at=(0.7, 0.8), device="torch-cpu", tile_size=128)
    for t in (0.5, 0.7, 0.8):
        assert (f.labels_at(t) == brute_force_labels(x, t)).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():  # pragma: no cover - runs on GPU machines only
    x = clustered(3000, 64, seed=6)
    for t in (0.6, 0.7):
        assert (cosine_components(x, t, device="cuda") == cosine_components(x, t, device="cpu")).all()
    f = single_linkage_forest(x, 0.5, exact_at=(0.7,), device="cuda")
    assert (f.labels_at(0.7) == brute_force_labels(x, 0.7)).all()


# ---------------------------------------------------------------- pruning


def test_pruning_is_identical():
    x = clustered(1500, 32, seed=7, k=3)
    for t in (0.6, 0.7):
        st_on, st_off = {}, {}
        on = cosine_components(x, t, device="cpu", tile_size=128, prune=True, n_landmarks=100, stats=st_on)
        off = cosine_components(x, t, device="cpu", tile_size=128, prune=False, stats=st_off)
        assert (on == off).all()
        assert st_on["pairs_computed"] < st_off["pairs_computed"]
    f = single_linkage_forest(
        x, 0.5, exact_at=(0.6,), prune_at=0.7, device="cpu", tile_size=128, n_landmarks=100
    )
    full = single_linkage_forest(x, 0.5, exact_at=(0.6, 0.7), device="cpu", tile_size=128)
    for t in (0.5, 0.6, 0.7):
        assert (f.labels_at(t) == full.labels_at(t)).all()
    with pytest.raises(ValueError, match="above prune_at"):
        f.labels_at(0.8)
    with pytest.raises(ValueError, match="above prune_at"):
        single_linkage_forest(x, 0.5, exact_at=(0.8,), prune_at=0.7)


def test_pruned_passes_free_their_rows_without_the_cyclic_gc():
    """With Python's cyclic GC off, the rows handed to a pruned pass are freed as soon as the caller drops
    them: the pass leaves no reference cycle holding them (a recursive closure once did, and the scale run's
    tiles then held ~125 MB of memory-mapped rows per partition until a GC happened to run: 15 GiB of RSS)."""
    import gc
    import weakref

    def freed(run) -> bool:
        x = clustered(1500, 32, seed=7, k=3)
        gone = weakref.ref(x)
        run(x)
        del x
        return gone() is None

    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        assert freed(lambda x: cosine_components(x, 0.7, device="cpu", tile_size=128, prune=True, n_landmarks=100))
        assert freed(lambda x: cosine_components(x, 0.7, device="cpu", tile_size=128, prune=True, n_landmarks=100,
                                                 rank=8))  # the low-rank prefilter's pass
        assert freed(lambda x: single_linkage_forest(x, 0.5, prune_at=0.7, device="cpu", tile_size=128,
                                                     n_landmarks=100))
    finally:
        if was:
            gc.enable()


# ---------------------------------------------------------------- canonical labels and summaries


def test_canonical_labels_property():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        raw = rng.integers(-5, int(rng.integers(1, 12)), n) * 7
        lab = canonical_labels(raw)
        assert lab.dtype == np.int64
        sizes = np.bincount(lab)
        assert (sizes > 0).all() and lab.max() + 1 == len(np.unique(raw))
        assert (np.diff(sizes) <= 0).all()
        firsts = np.array([np.flatnonzero(lab == c)[0] for c in range(len(sizes))])
        for c in range(len(sizes) - 1):
            if sizes[c] == sizes[c + 1]:
                assert firsts[c] < firsts[c + 1]
        # same partition
        assert len(set(zip(raw.tolist(), lab.tolist(), strict=True))) == len(sizes)
        assert (canonical_labels(lab) == lab).all()


def test_summary_and_sweep():
    lab = canonical_labels(np.array([0, 0, 0, 1, 1, 2, 3, 3, 4]))
    s = component_summary(lab, top=3)
    assert s == {
        "n": 9,
        "n_components": 5,
        "largest": 3,
        "largest_fraction": 3 / 9,
        "non_singleton": 2,
        "singletons": 2,
        "top_sizes": [3, 2, 2],
    }
    x = clustered(400, 16, seed=9)
    f = single_linkage_forest(x, 0.5, exact_at=(0.6, 0.7, 0.8))
    table = f.sweep([0.5, 0.6, 0.65, 0.7, 0.8])
    assert list(table.columns) == ["threshold", "n_components", "largest", "largest_fraction", "second_largest",
                                   "singletons", "non_singleton", "forest_edges", "exact"]
    assert table["exact"].tolist() == [True, True, False, True, True]  # 0.65 is not in exact_at
    for row in table.itertuples():
        ref = brute_force_labels(x, row.threshold)
        sizes = np.sort(np.bincount(ref))[::-1]
        s = component_summary(ref)
        assert (row.n_components, row.largest, row.singletons, row.non_singleton) == (
            s["n_components"], s["largest"], s["singletons"], s["non_singleton"])
        assert row.second_largest == (sizes[1] if len(sizes) > 1 else 0)
        assert row.forest_edges == 400 - row.n_components
        assert (f.component_sizes_at(row.threshold) == np.bincount(f.labels_at(row.threshold))).all()
    assert (np.diff(table["n_components"]) >= 0).all()


# ---------------------------------------------------------------- tile forests, merge, persistence


def test_tile_forest_blocks_merge_equals_whole(tmp_path):
    x = clustered(1000, 24, seed=11)
    cuts = [0, 300, 650, 1000]
    shards = [np.ascontiguousarray(x[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    ts = (0.6, 0.7, 0.8)
    parts = []
    for i, a in enumerate(shards):
        for j in range(i, len(shards)):
            kw = dict(min_threshold=0.5, exact_at=ts, device="cpu", tile_size=128)
            if i == j:
                fe = tile_forest(a, offset_a=cuts[i], **kw)
            else:
                fe = tile_forest(a, shards[j], offset_a=cuts[i], offset_b=cuts[j], **kw)
            assert (fe.src < fe.dst).all() and len(fe) <= len(a) + (0 if i == j else len(shards[j])) - 1
            path = tmp_path / f"{i}__{j}.npz"
            fe.save(path)
            parts.append(ForestEdges.load(path))
    merged = merge_forests(parts, len(x))
    whole = single_linkage_forest(x, 0.5, exact_at=ts, device="cpu")
    assert merged.min_threshold == 0.5 and merged.exact_at == (0.5, *ts)
    for t in (0.5, *ts):
        assert (merged.labels_at(t) == whole.labels_at(t)).all()
        assert (merged.labels_at(t) == brute_force_labels(x, t)).all()
    merged.save(tmp_path / "forest.npz")
    back = SingleLinkageForest.load(tmp_path / "forest.npz")
    assert back.n == 1000 and (back.edges.weight == merged.edges.weight).all()
    assert (back.labels_at(0.7) == merged.labels_at(0.7)).all()


def test_tile_forest_pruned_blocks():
    x = clustered(800, 24, seed=12, k=3)
    a, b = x[:500], x[500:]
    kw = dict(min_threshold=0.5, exact_at=(0.6,), device="cpu", tile_size=100, prune_at=0.7, n_landmarks=60)
    parts = [tile_forest(a, **kw), tile_forest(b, offset_a=500, **kw), tile_forest(a, b, offset_b=500, **kw)]
    merged = merge_forests(parts, 800)
    assert merged.exact_up_to == 0.7
    for t in (0.5, 0.6, 0.7):
        assert (merged.labels_at(t) == brute_force_labels(x, t)).all()


def _sharded_pruned_parts(shards: list[np.ndarray], p: float, stats: dict | None = None):
    """The pipeline's pruned recipe: each shard's own pruned forest (its diagonal), the other tiles started from
    the two shards' components at p."""
    offs = np.cumsum([0] + [len(s) for s in shards])
    kw = dict(device="cpu", tile_size=100, prune_at=p)
    own_local = [single_linkage_forest(s, 0.5, (0.6,), n_landmarks=40, **kw) for s in shards]
    own = [dataclasses.replace(f.edges, src=f.edges.src + o, dst=f.edges.dst + o)
           for f, o in zip(own_local, offs, strict=False)]
    local = [f.labels_at(p) for f in own_local]
    tiles = {}
    for i, a in enumerate(shards):
        for j in range(i + 1, len(shards)):
            known = np.concatenate([local[i], local[j] + len(a)])
            tiles[i, j] = tile_forest(a, shards[j], offset_a=int(offs[i]), offset_b=int(offs[j]), min_threshold=0.5,
                                      exact_at=(0.6,), known_labels=known, stats=stats, **kw)
    return own, tiles


def test_sharded_pruning_from_shard_components_is_exact_for_the_whole_and_every_prefix():
    x = clustered(1200, 24, seed=21, k=4)
    shards = [x[:300], x[300:700], x[700:1000], x[1000:]]
    st: dict = {}
    own, tiles = _sharded_pruned_parts(shards, 0.7, st)
    assert st["pairs_computed"] < 0.8 * st["pairs_total"]  # it prunes
    for k in range(1, 5):
        n = sum(len(s) for s in shards[:k])
        parts = own[:k] + [tiles[i, j] for i in range(k) for j in range(i + 1, k)]
        merged = merge_forests(parts, n)
        assert merged.exact_up_to == 0.7 and merged.min_threshold == 0.5
        for t in (0.5, 0.6, 0.7):
            assert (merged.labels_at(t) == brute_force_labels(x[:n], t)).all(), (k, t)
    with pytest.raises(ValueError, match="above prune_at"):
        merged.labels_at(0.8)


def test_known_labels_validate():
    x = clustered(300, 16, seed=22)
    with pytest.raises(ValueError, match="needs prune_at"):
        tile_forest(x, min_threshold=0.5, known_labels=np.zeros(300, int))
    with pytest.raises(ValueError, match="shape"):
        tile_forest(x, min_threshold=0.5, prune_at=0.7, known_labels=np.zeros(299, int))


def test_corrupt_forest_files_name_the_file(tmp_path):
    bad = tmp_path / "tile.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="tile.npz"):
        ForestEdges.load(bad)
    with pytest.raises(ValueError, match="tile.npz"):
        SingleLinkageForest.load(bad)
    np.savez(tmp_path / "partial.npz", src=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="partial.npz"):
        ForestEdges.load(tmp_path / "partial.npz")
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temp files


# ---------------------------------------------------------------- input types


def test_float16_torch_and_memmap_inputs(tmp_path):
    x32 = clustered(600, 32, seed=13)
    x16 = x32.astype(np.float16)
    ref16 = brute_force_labels(x16, 0.7)
    assert (cosine_components(x16, 0.7) == ref16).all()
    assert (cosine_components(torch.from_numpy(x16), 0.7) == ref16).all()
    assert (cosine_components(torch.from_numpy(x32), 0.7) == brute_force_labels(x32, 0.7)).all()
    f = single_linkage_forest(torch.from_numpy(x16), 0.5, exact_at=(0.7,))
    assert (f.labels_at(0.7) == ref16).all()
    np.save(tmp_path / "x.npy", x32)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert (cosine_components(mm, 0.7, tile_size=128) == brute_force_labels(x32, 0.7)).all()
    x64 = x32.astype(np.float64)
    assert (cosine_components(x64, 0.7) == brute_force_labels(x64, 0.7)).all()


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise_with_messages():
    good = unit(np.random.default_rng(0).standard_normal((10, 4)))
    with pytest.raises(ValueError, match="2-D"):
        cosine_components(good[0])
    with pytest.raises(ValueError, match="empty"):
        cosine_components(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        cosine_components(good.astype(np.int64))
    nan = good.copy()
    nan[[3, 7], 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*rows 3, 7"):
        cosine_components(nan)
    off = good.copy()
    off[5] *= 1.5
    with pytest.raises(ValueError, match=r"not unit L2 norm.*rows 5"):
        cosine_components(off)
    for bad_t in (-1.0, 1.5, float("nan"), "x", True):
        with pytest.raises(ValueError, match="threshold"):
            cosine_components(good, bad_t)
    for bad_tile in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="tile_size must be a positive integer"):
            cosine_components(good, tile_size=bad_tile)
        with pytest.raises(ValueError, match="tile_size must be a positive integer"):
            single_linkage_forest(good, 0.5, tile_size=bad_tile)
    assert (cosine_components(good, 1.0) == np.arange(10)).all()
    with pytest.raises(ValueError, match="min_threshold 0.7 is above the exact_at value 0.6"):
        single_linkage_forest(good, 0.7, exact_at=(0.6,))
    f = single_linkage_forest(good, 0.5)
    with pytest.raises(ValueError, match="below the forest's min_threshold"):
        f.labels_at(0.4)
    with pytest.raises(ValueError, match="overlap"):
        tile_forest(good, good, offset_a=0, offset_b=5, min_threshold=0.5)
    with pytest.raises(ValueError, match="columns"):
        tile_forest(good, good[:, :3], offset_b=10, min_threshold=0.5)
    with pytest.raises(ValueError, match="device"):
        cosine_components(good, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            cosine_components(good, device="cuda")
    with pytest.raises(ValueError, match="outside"):
        merge_forests([ForestEdges([0], [12], [0.9])], 10)


# ---------------------------------------------------------------- memory


def test_memory_stays_far_below_n_squared():
    """N = 16,000: an N x N float32 matrix is 1 GB; the engine must finish with a traced peak far below."""
    n = 16_000
    x = unit(np.random.default_rng(0).standard_normal((n, 8))).astype(np.float32)
    limit = n * n * 4 // 8  # 128 MB
    tracemalloc.start()
    try:
        lab = cosine_components(x, 0.98, device="cpu", tile_size=1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak {peak / 1e6:.0f} MB"
    assert lab.shape == (n,) and lab.max() + 1 < n


# ---------------------------------------------------------------- exact edge counts


def _brute_edge_count(xa: np.ndarray, xb: np.ndarray | None, t: float) -> int:
    a = xa.astype(np.float64)
    if xb is None:
        s = a @ a.T
        return int(np.count_nonzero(np.triu(s >= t, 1)))
    return int(np.count_nonzero(a @ xb.astype(np.float64).T >= t))


@pytest.mark.parametrize("device", ["cpu", "torch-cpu"])
@pytest.mark.parametrize("dense_fraction", [0.0, 1.01])  # every sub-tile dense / every sub-tile sparse
def test_edge_counts_are_exact(monkeypatch, device: str, dense_fraction: float) -> None:
    monkeypatch.setattr(GN, "DENSE_FRACTION", dense_fraction)
    monkeypatch.setattr(GN, "DENSE_MIN_NODES", 0)
    x = clustered(700, 24, seed=12)
    # planted pairs within 1e-7 of 0.7 on both sides: fp32 alone would misplace some of them
    rng = np.random.default_rng(1)
    base = unit(rng.standard_normal((60, 24)))
    planted = []
    for i, row in enumerate(base):
        o = rng.standard_normal(24)
        o -= o @ row * row
        o /= np.linalg.norm(o)
        c = 0.7 + (1e-7 if i % 2 else -1e-7)
        planted.append(c * row + np.sqrt(1 - c * c) * o)
    x = np.vstack([x, base, np.asarray(planted)]).astype(np.float32)
    ts = (0.5, 0.6, 0.7, 0.8)
    xa, xb = x[:500], x[500:]
    for a, b in ((x, None), (xa, xb)):
        stats: dict = {}
        tile_forest(a, b, offset_b=0 if b is None else len(a), min_threshold=0.5, exact_at=ts, device=device,
                    tile_size=128, count_edges=True, stats=stats)
        assert stats["edge_counts"] == {t: _brute_edge_count(a, b, t) for t in ts}


def test_edge_counts_refuse_pruning() -> None:
    with pytest.raises(ValueError, match="count_edges needs every pair"):
        tile_forest(clustered(50, 8), min_threshold=0.5, prune_at=0.7, count_edges=True)
