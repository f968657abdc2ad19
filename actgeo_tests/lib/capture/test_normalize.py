"""normalize_rows against float64 references; exclusions; shards_mean; geometry diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

from actgeo_assets.lib.capture.normalize import geometry_diagnostics, normalize_rows, shards_mean


@pytest.fixture
def x() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.normal(size=(300, 16)) * 3 + 1).astype(np.float16)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_l2(x) -> None:
    res = normalize_rows(x, "l2")
    assert res.unit.dtype == np.float32 and res.kept.all()
    np.testing.assert_allclose(res.unit, _unit(x.astype(np.float64)), atol=1e-6)


def test_center_l2_with_given_and_computed_mean(x) -> None:
    mean = x.astype(np.float64).mean(0)
    ref = _unit(x.astype(np.float64) - mean)
    given = normalize_rows(x, "center_l2", mean=mean)
    np.testing.assert_allclose(given.unit, ref, atol=1e-6)
    x64 = x.astype(np.float64)
    normalize_rows(x64, "center_l2", mean=mean)
    np.testing.assert_array_equal(x64, x.astype(np.float64))  # input untouched
    computed = normalize_rows(x, "center_l2")
    assert computed.report["mean"] == "computed from this input"
    np.testing.assert_allclose(computed.unit, ref, atol=1e-6)


def test_rmsnorm_gemma_and_llama_by_hand(x) -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=16).astype(np.float32)
    eps = 1e-6
    x64 = x.astype(np.float64)
    rms = np.sqrt((x64**2).mean(1, keepdims=True) + eps)
    gemma = normalize_rows(x, "rmsnorm", norm_weight={"weight": w, "eps": eps, "kind": "gemma"})
    np.testing.assert_allclose(gemma.unit, _unit(x64 / rms * (1.0 + w.astype(np.float64))), atol=1e-6)
    llama = normalize_rows(x, "rmsnorm", norm_weight={"weight": w, "eps": eps, "kind": "llama"})
    np.testing.assert_allclose(llama.unit, _unit(x64 / rms * w.astype(np.float64)), atol=1e-6)
    with pytest.raises(ValueError, match="needs norm_weight"):
        normalize_rows(x, "rmsnorm")


def test_bad_rows_excluded_and_counted(x) -> None:
    y = x.astype(np.float32).copy()
    y[3] = 0.0
    y[10, 2] = np.nan
    y[11, 0] = np.inf
    res = normalize_rows(y, "l2")
    assert res.report["excluded"] == {"non_finite": 2, "zero_norm": 1}
    assert res.report["first_excluded_rows"] == {"non_finite": [10, 11], "zero_norm": [3]}
    assert res.kept.sum() == len(res.unit) == 297 and not res.kept[[3, 10, 11]].any()
    np.testing.assert_allclose(res.unit, _unit(y[res.kept].astype(np.float64)), atol=1e-6)
    # a row equal to the mean has no direction after centering
    z = np.array([[1.0, 2.0], [3.0, 4.0], [2.0, 3.0]])
    c = normalize_rows(z, "center_l2", mean=np.array([2.0, 3.0]))
    assert c.report["excluded"]["zero_norm"] == 1 and c.kept.tolist() == [True, True, False]


def test_chunking_matches(monkeypatch, x) -> None:
    import actgeo_assets.lib.capture.normalize as nm

    whole = normalize_rows(x, "l2").unit
    monkeypatch.setattr(nm, "_CHUNK_ELEMS", 16 * 7)  # 7 rows per chunk
    np.testing.assert_array_equal(normalize_rows(x, "l2").unit, whole)
    buf = np.full(x.shape, np.nan, dtype=np.float32)  # e.g. a memmap opened by the caller
    res = normalize_rows(x, "l2", out=buf)
    assert np.shares_memory(res.unit, buf)
    np.testing.assert_array_equal(buf, whole)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize_rows(np.ones((2, 2)), "zscore")
    with pytest.raises(ValueError, match="2-D"):
        normalize_rows(np.ones(3), "l2")
    with pytest.raises(ValueError, match="mean has shape"):
        normalize_rows(np.ones((2, 2)), "center_l2", mean=np.ones(3))


def test_shards_mean_streams_finite_rows() -> None:
    a = np.array([[1.0, 2.0], [np.nan, 0.0]], dtype=np.float16)
    b = np.array([[3.0, 4.0], [5.0, 6.0]], dtype=np.float32)
    np.testing.assert_allclose(shards_mean([a, b]), [3.0, 4.0])
    with pytest.raises(ValueError, match="no finite rows"):
        shards_mean([np.full((2, 2), np.nan)])


def test_diagnostics_flag_massive_dimension() -> None:
    """Activation-like data: one huge shared dim makes plain L2 near-complete; centering removes it."""
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(2000, 64))
    raw[:, 7] += 40.0
    raw = raw.astype(np.float16)
    l2 = normalize_rows(raw, "l2")
    g = geometry_diagnostics(l2.unit, threshold=0.7, raw=raw, n_pairs=20_000)
    assert g["near_complete"] and "near-complete" in g["warning"]
    assert g["top_dims"][0]["dim"] == 7 and g["top_dims"][0]["share_mean_sq"] > 0.99
    assert g["pairwise"]["median"] > 0.9 and g["edge_density"] > 0.99
    assert g["mean_direction"]["mean_pairwise_cosine_exact"] == pytest.approx(g["pairwise"]["mean"], abs=0.01)
    assert set(g["raw_norm"]) == {"p1", "p50", "p99", "max"}
    centered = normalize_rows(raw, "center_l2")
    gc = geometry_diagnostics(centered.unit, threshold=0.7, n_pairs=20_000)
    assert not gc["near_complete"] and "warning" not in gc
    assert abs(gc["pairwise"]["median"]) < 0.05 and gc["edge_density"] < 0.01
    # deterministic under a seed
    assert geometry_diagnostics(l2.unit, threshold=0.7, n_pairs=1000) == geometry_diagnostics(
        l2.unit, threshold=0.7, n_pairs=1000
    )


def test_diagnostics_stream_rows_and_match_whole_array_float64() -> None:
    """The diagnostics read the rows in chunks: their traced peak stays below half of one float64 copy of the
    rows (a 50,000 x 2,304 shard would otherwise hold several 0.9 GB copies), and every statistic equals the
    whole-array float64 computation (non-finite raw rows dropped)."""
    import tracemalloc

    rng = np.random.default_rng(5)
    raw = rng.normal(size=(250_000, 128)).astype(np.float32)  # over max_rows: the sampled path too
    raw[:, 3] += 6.0
    raw[17] = np.nan
    unit = normalize_rows(raw, "l2").unit
    tracemalloc.start()
    g = geometry_diagnostics(unit, threshold=0.7, raw=raw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.5 * unit.shape[0] * unit.shape[1] * 8
    seeded = np.random.default_rng(0)  # the diagnostics' seeded samples of the unit rows, then of the raw rows
    unit_sample = np.sort(seeded.choice(len(unit), 200_000, replace=False))
    r = raw[np.sort(seeded.choice(len(raw), 200_000, replace=False))]
    r = r[np.isfinite(r).all(axis=1)].astype(np.float64)
    norms = np.linalg.norm(r, axis=1)
    assert g["raw_norm"]["p50"] == pytest.approx(np.percentile(norms, 50), rel=1e-12)
    assert g["raw_norm"]["max"] == pytest.approx(norms.max(), rel=1e-12)
    mean_abs = np.abs(r).mean(axis=0)
    assert [t["dim"] for t in g["top_dims"]] == np.argsort(-mean_abs, kind="stable")[:5].tolist()
    assert g["top_dims"][0]["dim"] == 3
    assert g["top_dims"][0]["mean_abs"] == pytest.approx(mean_abs[3], rel=1e-12)
    u = unit.astype(np.float64)  # the mean direction is over every row, its cosines over the sample
    direction = u.sum(axis=0) / np.linalg.norm(u.sum(axis=0))
    assert g["mean_direction"]["cosine_to_mean"]["mean"] == pytest.approx((u[unit_sample] @ direction).mean(),
                                                                          rel=1e-9)


def test_rows_excluded_by_the_caller_are_counted(x) -> None:
    y = x.astype(np.float32).copy()
    y[3] = 0.0
    exclude = np.zeros(len(y), dtype=bool)
    exclude[[0, 3, 7, 299]] = True  # row 3 is zero anyway: counted there, not twice
    res = normalize_rows(y, "l2", exclude=exclude)
    assert res.report["excluded"] == {"non_finite": 0, "zero_norm": 1, "early_position": 3}
    assert res.report["first_excluded_rows"]["early_position"] == [0, 7, 299]
    assert res.kept.tolist() == [i not in (0, 3, 7, 299) for i in range(len(y))]
    np.testing.assert_allclose(res.unit, _unit(y[res.kept].astype(np.float64)), atol=1e-6)
    assert "early_position" not in normalize_rows(y, "l2").report["excluded"]
    with pytest.raises(ValueError, match="exclude must be a bool array"):
        normalize_rows(y, "l2", exclude=exclude[:5])
