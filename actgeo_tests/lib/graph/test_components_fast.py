"""cosine_components with the low-rank prefilter (actgeo_assets/lib/graph/lowrank.py) against the float64 brute
force: clustered data, cosines straddling t by 1e-7, data whose norm lies mostly outside the top k directions,
N not a multiple of the tile, thresholds near -1 and 1; the bound itself against float64 dots."""

from __future__ import annotations

import numpy as np
import pytest

from actgeo_assets.lib.graph import cosine_components
from actgeo_assets.lib.graph import lowrank as LR
from actgeo_tests.support.oracle import brute_force_labels, clustered, unit
from actgeo_tests.support.paths import REPO

DEMO_SHARD = REPO / "data" / "demo" / "normalized" / "shard-000.npy"


def straddling(t: float, deltas: list[float], d: int, seed: int = 3) -> np.ndarray:
    """float64 pairs (x, y) with x.y = t + delta (up to float64 rounding): pair i spans columns 2i, 2i+1 of
    a random orthonormal basis of R^d, so pairs are orthogonal to each other and all rows lie in one
    ``2 * len(deltas)``-dimensional subspace (a prefilter of that rank is tight: |x_R| ~ 0)."""
    basis = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0]
    rows = []
    for i, delta in enumerate(deltas):
        a, o = basis[:, 2 * i], basis[:, 2 * i + 1]
        c = t + delta
        rows += [a, c * a + np.sqrt(1 - c * c) * o]
    return np.array(rows)


def check(x: np.ndarray, t: float, **kw) -> dict:
    """Assert identical labels to the float64 brute force; return the run's stats."""
    ref = brute_force_labels(x, t)
    stats: dict = {}
    got = cosine_components(x, t, device="cpu", stats=stats, **kw)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ref)
    return stats


@pytest.mark.parametrize("t", [0.5, 0.7, 0.85])
def test_clustered_identical_and_pruned_by_the_bound(t):
    x = clustered(1500, 96, seed=4)
    ref = brute_force_labels(x, t)
    assert 1 < ref.max() + 1 < len(x)  # non-trivial partition
    for kw in ({"rank": 24, "tile_size": 256}, {"rank": 24, "tile_size": 256, "prune": False},
               {"rank": 8, "tile_size": 500, "n_landmarks": 64}):
        st = check(x, t, **kw)
        assert st["rank"] == kw["rank"]
        assert st["survivors"] <= st["bound_pairs"]
    # the bound must rule out pairs on this data (otherwise the prefilter would be a no-op)
    st = check(x, t, rank=24, tile_size=256, prune=False)
    assert st["bound_pairs"] == len(x) * (len(x) - 1) // 2
    assert st["survivors"] < 0.5 * st["bound_pairs"]


def test_certified_edges_in_a_low_dimensional_subspace():
    """Clustered rows inside a 12-dimensional subspace of R^64: a rank-12 prefilter is tight, so the lower
    bound proves most edges without a dot product; the labels must still be the brute force's."""
    basis = np.linalg.qr(np.random.default_rng(21).standard_normal((64, 12)))[0]
    x = unit(clustered(1200, 12, seed=6).astype(np.float64) @ basis.T)
    for t in (0.6, 0.9):
        st = check(x, t, rank=12, tile_size=256, prune=False)
        assert st["certified"] > 0.3 * st["survivors"]
        check(x, t, rank=12, tile_size=300)


def test_straddling_threshold_by_1e7_float64_rows():
    t = 0.7
    deltas = [1e-7, -1e-7, 3e-8, -3e-8, 0.0, 2e-7, -2e-7]
    noise = unit(np.random.default_rng(5).standard_normal((300, 64)))
    x = np.concatenate([straddling(t, deltas, d=64), noise])
    x64 = x @ x.T
    pair_dots = np.array([x64[2 * i, 2 * i + 1] for i in range(len(deltas))])
    nz = np.array(deltas) != 0  # delta 0: the side of t is up to float64 rounding; the oracle decides
    assert ((pair_dots >= t) == (np.array(deltas) > 0))[nz].all()  # the construction straddles t
    ref = brute_force_labels(x, t)
    assert all((ref[2 * i] == ref[2 * i + 1]) == (pair_dots[i] >= t) for i in range(len(deltas)))
    for rank in (14, 2, 40):  # 14: the pairs' subspace if P finds it, so their bound is within ~1e-3 of the dot
        check(x, t, rank=rank, tile_size=64)
    pairs = straddling(t, deltas, d=64)
    z, _ = LR.lowrank_rows(pairs, LR.principal_directions(pairs, 14), 1.0)
    zd = np.einsum("ij,ij->i", z[0::2].astype(np.float64), z[1::2].astype(np.float64))
    assert np.abs(zd - pair_dots).max() < 1e-4  # tight: a survivor level wrong by 1e-4 would cut true edges
    check(pairs, t, rank=14, tile_size=5)  # the pairs alone: P is their subspace
    check(x.astype(np.float32), t, rank=14, tile_size=64)


def test_low_rank_adversarial_most_norm_outside_top_k():
    """Clusters around 40 centres spread over all 80 dimensions: the top 4 directions hold a small part of
    every row's norm, so the bound is loose and most pairs survive; the labels must not change."""
    x = clustered(900, 80, seed=8, k=40)
    p_dirs = LR.principal_directions(x, 4)
    outside = 1 - np.sum((x.astype(np.float64) @ p_dirs) ** 2, axis=1)
    assert np.mean(outside) > 0.8  # most of the norm lies outside the top k
    for t in (0.3, 0.6, 0.8):
        st = check(x, t, rank=4, tile_size=128)
        assert st["survivors"] + st["dense_tiles"] > 0
    assert check(x, 0.3, rank=4, tile_size=128, prune=False)["dense_tiles"] > 0  # bound too loose: whole tiles
    # rank 1 on isotropic rows at a low threshold: every pair survives, the whole-tile fallback runs
    y = unit(np.random.default_rng(7).standard_normal((700, 80)))
    st = check(y, 0.2, rank=1, tile_size=128, prune=False)
    assert st["dense_tiles"] > 0


def test_default_rank_switches_itself_off_where_the_bound_cannot_pay():
    """Default rank (d = 512 >= 4 * 128): isotropic rows make most sample pairs survive, so the plain pass
    runs (rank 0 in the stats); rows in a 20-dimensional subspace keep the prefilter. Labels identical."""
    rng = np.random.default_rng(17)
    iso = unit(rng.standard_normal((600, 512))).astype(np.float32)
    st = check(iso, 0.05, tile_size=128)  # N > 4 tiles: pruning on, so the default may use the prefilter
    assert st["rank"] == 0 and st["prefilter_sample_survivors"] > LR.AUTO_MAX_SURVIVORS
    low = unit(clustered(600, 20, seed=3).astype(np.float64) @ rng.standard_normal((20, 512)))
    st = check(low, 0.7, tile_size=128)
    assert st["rank"] == LR.DEFAULT_RANK and st["prefilter_sample_survivors"] <= LR.AUTO_MAX_SURVIVORS
    assert "rank" not in check(low, 0.7, tile_size=256)  # N <= 4 tiles: no pruning, plain pass by default


def test_n_not_a_multiple_of_the_tile():
    x = clustered(1037, 72, seed=9)
    for tile in (100, 333, 1036):
        check(x, 0.7, rank=16, tile_size=tile)
        check(x, 0.7, rank=16, tile_size=tile, prune=True, n_landmarks=37)


@pytest.mark.parametrize("t", [-0.999, -0.5, 0.9999, 0.9999999, 1.0])
def test_thresholds_near_minus_one_and_one(t):
    rng = np.random.default_rng(11)
    base = clustered(400, 32, seed=2).astype(np.float64)
    dup = base[rng.integers(0, len(base), 60)]
    jitter = unit(dup + 1e-4 * rng.standard_normal(dup.shape))  # cosines ~1 - 5e-9 .. 1 - 1e-7
    x = np.concatenate([base, dup, jitter, -base[:50]])
    check(x, t, rank=5, tile_size=150)
    check(x.astype(np.float32), t, rank=5, tile_size=150)


def test_bound_dominates_float64_dots_including_fp32_rounding():
    """z_x . z_y (float64) + slack >= float64 x . y for every pair, for float32 and float64 rows."""
    rng = np.random.default_rng(13)
    for dtype in (np.float32, np.float64):
        x = unit(clustered(600, 128, seed=5).astype(np.float64) + 0.05 * rng.standard_normal((600, 128)))
        x = x.astype(dtype)
        x64 = x.astype(np.float64)
        for k in (1, 16, 64, 127):
            p_dirs = LR.principal_directions(x, k)
            assert np.abs(p_dirs.T @ p_dirs - np.eye(k)).max() < 1e-12
            z, slack = LR.lowrank_rows(x, p_dirs, float(np.linalg.norm(x64, axis=1).max()))
            zz = z.astype(np.float64)
            gap = zz @ zz.T + slack - x64 @ x64.T
            assert gap.min() >= 0, (dtype, k, gap.min())
            # and it is a bound worth having: tighter with more directions
            if k == 64:
                assert np.median(gap) < 0.6


def test_level_and_validation():
    lo = LR.bound_threshold(0.7, 128, 1.0, LR.lowrank_rows(np.eye(1, 640, dtype=np.float32), np.eye(640, 128), 1.0)[1])
    assert 0.7 - 1e-3 < lo < 0.7 - 8e-4  # the module docstring's "t - 9e-4" at d = 640, k = 128
    x = clustered(300, 40)
    for bad in (-1, 40, 41, 2.5, True, "8"):
        with pytest.raises(ValueError, match="rank must be an integer"):
            cosine_components(x, 0.7, device="cpu", rank=bad)
    with pytest.raises(ValueError, match="needs device='cpu'"):
        cosine_components(x, 0.7, device="torch-cpu", rank=8)
    # rank=0 and the torch backend keep the plain path (no prefilter stats) with the same labels
    ref = brute_force_labels(x, 0.7)
    for kw in ({"device": "cpu", "rank": 0}, {"device": "torch-cpu"}):
        st: dict = {}
        np.testing.assert_array_equal(cosine_components(x, 0.7, stats=st, **kw), ref)
        assert "survivors" not in st


def test_default_rank_on_demo_activations():
    """The default path (d = 640 >= 4 * DEFAULT_RANK: prefilter on, rank 128) on 3,000 real activations
    from the demo run, memory-mapped as the pipeline reads them."""
    if not DEMO_SHARD.exists():
        pytest.skip(f"{DEMO_SHARD} absent: run `make demo` first (the synthetic tests above cover the logic)")
    x = np.load(DEMO_SHARD, mmap_mode="r")[:3000]
    st = check(x, 0.7, tile_size=512)
    assert st["rank"] == LR.DEFAULT_RANK
    assert st["survivors"] < 0.2 * st["bound_pairs"]


def test_memory_is_rows_plus_tiles_never_n_squared():
    """Peak traced memory of the prefilter path stays O(N d + tile^2): far below one N x N float32 matrix."""
    import tracemalloc

    x = clustered(6000, 48, seed=12)
    ref = cosine_components(x, 0.7, device="cpu", rank=0, tile_size=256)
    tracemalloc.start()
    try:
        got = cosine_components(x, 0.7, device="cpu", rank=8, tile_size=256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, ref)
    assert peak < 0.1 * 6000 * 6000 * 4, peak  # N x N float32 would be 144 MB


def test_gathered_dots_faiss_and_numpy_within_the_fp32_bound(monkeypatch):
    """The verification's gathered dots (faiss' compiled ones, and numpy's when faiss is absent) against
    float64: every dot within the fp32 GEMM bound gamma_d |a||b|; the same labels through either path."""
    from actgeo_assets.lib.graph.exactness import matmul_error_bound

    rng = np.random.default_rng(31)
    a = unit(rng.standard_normal((300, 640))).astype(np.float32)
    b = unit(rng.standard_normal((200, 640))).astype(np.float32)
    r, c = rng.integers(0, 300, 5000), rng.integers(0, 200, 5000)
    ref = np.einsum("ij,ij->i", a[r].astype(np.float64), b[c].astype(np.float64))
    eps = matmul_error_bound(640, np.float32, "fp32", 1.0 + 1e-6)
    assert LR._faiss() is not None  # `make` installs the cpu extra: the compiled path is the one tested here
    fast = LR.gathered_dots(a, b, r, c)
    assert fast.dtype == np.float32 and np.abs(fast - ref).max() <= eps
    with pytest.raises(IndexError, match="out of range"):
        LR.gathered_dots(a, b, r, np.where(c == 0, 200, c))  # one column index past the end
    assert len(LR.gathered_dots(a, b, r[:0], c[:0])) == 0
    x = clustered(1200, 640, seed=14)
    calls = []
    real = LR.gathered_dots
    monkeypatch.setattr(LR, "gathered_dots", lambda *args: calls.append(len(args[2])) or real(*args))
    stats_fast = check(x, 0.7, rank=64, tile_size=256)
    assert sum(calls) > 0  # the labels above went through gathered verification
    monkeypatch.setattr(LR, "_faiss", lambda: None)
    slow = LR.gathered_dots(a, b, r, c)
    assert np.abs(slow - ref).max() <= eps
    assert LR._gather_cost() == LR._GATHER_COST_NUMPY
    stats_slow = check(x, 0.7, rank=64, tile_size=256)
    assert stats_fast["survivors"] == stats_slow["survivors"]
