"""The shard jackknife: every replicate's quantities against scipy's components of a dense float64 Gram of the
shards it keeps, and the intervals against the jackknife formula written out here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from actgeo_assets.lib.analysis.percolation import fine_thresholds
from actgeo_assets.lib.analysis.resample import jackknife, replicate_stats, shard_groups, shard_jackknife
from actgeo_assets.lib.graph import merge_forests, tile_forest

T = 0.7
FINE = fine_thresholds(0.5, (T,))


def _data(sizes: list[int], seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    x = rng.standard_normal((8, 16))[rng.integers(0, 8, n)] + 3.5 * rng.standard_normal((n, 16)) / 4
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _tiles(x: np.ndarray, sizes: list[int]):
    bounds = np.cumsum([0, *sizes])
    shards = [x[bounds[i] : bounds[i + 1]] for i in range(len(sizes))]

    def tile_of(i: int, j: int):
        kw = {"min_threshold": 0.5, "exact_at": tuple(FINE), "device": "cpu"}
        if i == j:
            return tile_forest(shards[i], offset_a=int(bounds[i]), **kw)
        return tile_forest(shards[i], shards[j], offset_a=int(bounds[i]), offset_b=int(bounds[j]), **kw)

    return tile_of, bounds


def _brute(x: np.ndarray) -> dict:
    """The quantities from scipy's components of the dense float64 Gram (no forest code)."""
    g = x.astype(np.float64) @ x.astype(np.float64).T
    np.fill_diagonal(g, -2)

    def sizes(t: float) -> np.ndarray:
        lab = connected_components(csr_matrix(g >= t), directed=False)[1]
        return np.sort(np.bincount(lab))[::-1]

    s = sizes(T)
    second = [int(sizes(t)[1]) if len(sizes(t)) > 1 else 0 for t in FINE]
    k = int(np.argmax(second))
    return {"n": len(x), "n_components": len(s), "components_per_1000": 1000 * len(s) / len(x),
            "largest_fraction": s[0] / len(x), "second_largest": int(s[1]), "t_c": FINE[k],
            "second_largest_at_t_c": second[k]}


def _se(values: list[float], g: int, d: int) -> float:
    v = np.array(values, dtype=float)
    return math.sqrt((g - d) / (d * math.comb(g, d)) * ((v - v.mean()) ** 2).sum())


def test_delete_one_and_delete_two_replicates_and_intervals_match_brute_force() -> None:
    sizes = [70, 90, 80, 60]
    x = _data(sizes)
    tile_of, bounds = _tiles(x, sizes)
    keys = ["s0", "s1", "s2", "s3"]
    forest = merge_forests([tile_of(i, j) for i in range(4) for j in range(i, 4)], sum(sizes))
    full = replicate_stats(forest, T, FINE)
    ref_full = _brute(x)
    for k, v in ref_full.items():
        assert full[k] == pytest.approx(v), k
    bridge_rows = [5, int(bounds[2]) + 3]  # one in shard 0, one in shard 2
    doc = shard_jackknife(keys, sizes, tile_of, T, FINE, full, bridge_rows=bridge_rows)
    assert doc["possible"] and doc["groups"] == [["s0"], ["s1"], ["s2"], ["s3"]] and doc["units"] == "shard"
    assert "Delete-one-shard jackknife over 4 shards" in doc["method"] and "3.18 SE_jack" in doc["method"]

    def rows_of(kept: list[int]) -> np.ndarray:
        return np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in kept])

    for scheme, d, reps in (("delete-1", 1, doc["replicates"]), ("delete-2", 2, doc["delete_two"]["replicates"])):
        combos = list(itertools.combinations(range(4), d))
        assert [r["left_out"] for r in reps] == [[keys[i] for i in c] for c in combos], scheme
        refs = [_brute(x[rows_of([i for i in range(4) if i not in c])]) for c in combos]
        for r, ref, c in zip(reps, refs, combos, strict=True):
            for k, v in ref.items():
                assert r[k] == pytest.approx(v), (scheme, c, k)
            assert r["bridge_kept"] == (0 not in c and 2 not in c)
            # the replicate's own bridge: global rows of the shards it keeps, weights their float64 cosines
            pairs = np.array(r["bridge_rows"]).reshape(-1, 2)
            assert r["bridge_count"] == len(pairs) == len(r["bridge_weights"]) >= 1
            assert all(np.searchsorted(bounds, v, side="right") - 1 not in c for v in pairs.ravel())
            dots = np.einsum("ij,ij->i", x[pairs[:, 0]].astype(np.float64), x[pairs[:, 1]].astype(np.float64))
            np.testing.assert_allclose(dots, r["bridge_weights"], atol=1e-5)
        quantities = doc["quantities"] if d == 1 else doc["delete_two"]["quantities"]
        tq = stats.t.ppf(0.975, 3)
        for q in quantities:
            key = q["key"]
            if key == "n_components":  # the rate's interval at the full run's N
                rate = [ref["components_per_1000"] for ref in refs]
                se = _se(rate, 4, d) * sum(sizes) / 1000
            else:
                se = _se([ref[key] for ref in refs], 4, d)
            assert q["se"] == pytest.approx(se, abs=1e-12), (scheme, key)
            assert q["estimate"] == pytest.approx(ref_full[key])
            low = ref_full[key] - tq * se
            assert q["low"] == pytest.approx(max(low, 0.0) if key not in ("t_c",) else low), (scheme, key)
            assert q["high"] == pytest.approx(min(ref_full[key] + tq * se, 1.0) if key == "largest_fraction"
                                              else ref_full[key] + tq * se), (scheme, key)
            if key != "n_components":
                assert q["replicates"] == pytest.approx([ref[key] for ref in refs])


def test_groups_of_shards_are_the_units_when_there_are_many() -> None:
    assert shard_groups(20, 10) == [[2 * i, 2 * i + 1] for i in range(10)]
    assert shard_groups(4) == [[0], [1], [2], [3]] and shard_groups(5, 2) == [[0, 1], [2, 3, 4]]
    sizes = [40, 50, 45, 35, 55, 30]
    x = _data(sizes, seed=8)
    tile_of, bounds = _tiles(x, sizes)
    forest = merge_forests([tile_of(i, j) for i in range(6) for j in range(i, 6)], sum(sizes))
    doc = shard_jackknife([f"s{i}" for i in range(6)], sizes, tile_of, T, FINE, replicate_stats(forest, T, FINE),
                          max_groups=3)
    assert doc["units"] == "group of shards" and doc["groups"] == [["s0", "s1"], ["s2", "s3"], ["s4", "s5"]]
    assert "over 3 groups of consecutive shards" in doc["method"]
    for g, r in enumerate(doc["replicates"]):
        kept = [i for i in range(6) if i // 2 != g]
        ref = _brute(x[np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in kept])])
        assert r["left_out"] == [f"s{2 * g}", f"s{2 * g + 1}"]
        assert (r["n"], r["n_components"], r["second_largest"], r["t_c"]) == (
            ref["n"], ref["n_components"], ref["second_largest"], ref["t_c"])


def test_one_shard_gives_no_interval() -> None:
    sizes = [80]
    x = _data(sizes)
    tile_of, _ = _tiles(x, sizes)
    forest = merge_forests([tile_of(0, 0)], 80)
    doc = shard_jackknife(["s0"], sizes, tile_of, T, FINE, replicate_stats(forest, T, FINE))
    assert not doc["possible"] and doc["replicates"] == [] and "no resampling interval is possible" in doc["method"]
    assert all(q["low"] is None and q["high"] is None and q["estimate"] is not None for q in doc["quantities"])


def test_jackknife_formula_and_its_errors() -> None:
    j = jackknife(10.0, [9.0, 11.0, 12.0], 3)
    se = math.sqrt(2 / 3 * ((9 - 32 / 3) ** 2 + (11 - 32 / 3) ** 2 + (12 - 32 / 3) ** 2))
    assert j["se"] == pytest.approx(se) and j["bias"] == pytest.approx(2 * (32 / 3 - 10))
    assert j["low"] == pytest.approx(10 - stats.t.ppf(0.975, 2) * se)
    assert jackknife(1.0, [], 1)["se"] is None
    with pytest.raises(ValueError, match="3 replicates for delete-2 over 4 units"):
        jackknife(1.0, [1, 2, 3], 4, 2)


def test_a_lower_bound_transition_has_no_interval() -> None:
    from actgeo_assets.lib.analysis.resample import _quantities

    full = {"n": 100, "n_components": 10, "components_per_1000": 100.0, "largest_fraction": 0.5, "second_largest": 3,
            "t_c": 0.7, "t_c_at_or_above": True, "second_largest_at_t_c": 9}
    reps = [{**full, "n": 50}, {**full, "n": 50, "t_c": 0.69, "t_c_at_or_above": False}]
    q = {q["key"]: q for q in _quantities(full, reps, 2, 1)}
    assert q["t_c"]["low"] is None and "lower bound" in q["t_c"]["note"]
    assert q["largest_fraction"]["se"] == 0 and q["largest_fraction"]["low"] == 0.5
