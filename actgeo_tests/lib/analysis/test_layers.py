"""lib/analysis/layers.py: the layer x normalization comparison against a float64 brute force, the O(N d) mean pairwise
cosine against the dense float64 mean, and the landing table on a hand-built case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.analysis.layers import (
    LANDING_COLUMNS,
    TABLE_COLUMNS,
    compare_geometry,
    giant_fraction_png,
    landing_table,
    mean_pairwise_cosine,
)
from actgeo_tests.support.oracle import brute_force_labels
from actgeo_tests.support.synthetic import layer_acts

THRESHOLDS = (0.5, 0.7, 0.9)


def _reference_unit(x: np.ndarray, method: str, weight: dict) -> np.ndarray:
    """float64 normalization written independently of lib/capture/normalize.py, rounded to float32 as stored."""
    y = np.asarray(x, dtype=np.float64)
    if method == "center_l2":
        y = y - y.mean(axis=0)
    elif method == "rmsnorm":
        y = y * (1.0 + weight["weight"].astype(np.float64))  # the per-row 1/rms cancels under L2
    return (y / np.sqrt((y * y).sum(axis=1, keepdims=True))).astype(np.float32)


def test_components_and_mean_cosine_equal_float64_brute_force() -> None:
    acts, weights = layer_acts()
    cmp = compare_geometry(acts, ["l2", "center_l2", "rmsnorm"], THRESHOLDS, norm_weights=weights,
                           reference_layer=4, device="cpu")
    t = cmp.table
    assert tuple(t.columns) == TABLE_COLUMNS and len(t) == 3 * 3 * 3 and cmp.n == 240 and cmp.n_dropped == 0
    for row in t.itertuples():
        u = _reference_unit(acts[row.layer], row.normalization, weights[row.layer])
        ref = brute_force_labels(u, row.threshold)
        sizes = np.bincount(ref)
        assert (row.n_components, row.largest, row.singletons) == (len(sizes), sizes[0], int((sizes == 1).sum()))
        assert row.non_singleton == int((sizes[1:] >= 2).sum())
        assert row.giant_fraction == pytest.approx(sizes[0] / 240, abs=0)
        u64 = u.astype(np.float64)
        gram = u64 @ u64.T
        dense_mean = (gram.sum() - np.trace(gram)) / (240 * 239)
        assert row.mean_cosine == pytest.approx(dense_mean, abs=1e-12)
    # the massive shared dimension: plain l2 links (almost) everything, centering undoes it
    at = cmp.at(0.7).set_index(["layer", "normalization"])
    for layer in (1, 4, 6):
        assert at.loc[(layer, "l2"), "mean_cosine"] > 0.7
        assert at.loc[(layer, "l2"), "giant_fraction"] > at.loc[(layer, "center_l2"), "giant_fraction"]
        assert abs(at.loc[(layer, "center_l2"), "mean_cosine"]) < 0.01


def test_mean_pairwise_cosine_of_any_rows() -> None:
    x = np.random.default_rng(3).standard_normal((57, 9)).astype(np.float32)
    x64 = x.astype(np.float64)
    gram = x64 @ x64.T
    want = (gram.sum() - np.trace(gram)) / (57 * 56)
    assert mean_pairwise_cosine(x, chunk=10) == pytest.approx(want, rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 rows"):
        mean_pairwise_cosine(x[:1])


def test_landing_table_hand_built() -> None:
    # reference layer 5: components 0 (rows 0-3), 1 (rows 4-6), 2 (rows 7-8), 3 (row 9)
    ref = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
    # layer 2: rows 0-2 and 4-5 in its giant 0 (size 6 with row 9), row 3 alone, row 6 with 7-8 in 1
    low = np.array([0, 0, 0, 2, 0, 0, 1, 1, 1, 0])
    # layer 8: everything in one component
    high = np.zeros(10, dtype=np.int64)
    t = landing_table({5: ref, 2: low, 8: high}, reference_layer=5, top_k=3)
    want = pd.DataFrame([
        # ref_layer, layer, rank, size, dest_rank, dest_size, frac, n_dest, giant
        (5, 2, 1, 4, 1, 6, 3 / 4, 2, True),
        (5, 2, 2, 3, 1, 6, 2 / 3, 2, True),
        (5, 2, 3, 2, 2, 3, 1.0, 1, False),
        (5, 8, 1, 4, 1, 10, 1.0, 1, True),
        (5, 8, 2, 3, 1, 10, 1.0, 1, True),
        (5, 8, 3, 2, 1, 10, 1.0, 1, True),
    ], columns=["ref_layer", "layer", "rank", "size", "dest_rank", "dest_size", "frac_in_dest",
                "n_dest_components", "dest_is_giant"])
    pd.testing.assert_frame_equal(t[want.columns].reset_index(drop=True), want, check_dtype=False)
    with pytest.raises(ValueError, match="reference layer 7"):
        landing_table({5: ref}, reference_layer=7)


def test_landing_in_comparison_and_figure() -> None:
    acts, weights = layer_acts()
    cmp = compare_geometry(acts, ["center_l2", "l2"], (0.6, 0.8), reference_layer=1, landing_threshold=0.8,
                           top_k=4, device="cpu")
    land = cmp.landing
    assert tuple(land.columns) == LANDING_COLUMNS
    assert set(land["layer"]) == {4, 6} and set(land["normalization"]) == {"center_l2", "l2"}
    assert (land["threshold"] == 0.8).all() and (land["ref_layer"] == 1).all()
    # every reference component's members are counted: the modal share times size is a whole count
    counts = land["frac_in_dest"] * land["size"]
    assert np.allclose(counts, np.round(counts)) and ((land["frac_in_dest"] > 0) & (land["frac_in_dest"] <= 1)).all()
    assert (land["dest_is_giant"] == (land["dest_rank"] == 1)).all()
    png = giant_fraction_png(cmp.table, "test")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000


def test_bad_input_is_named() -> None:
    acts, weights = layer_acts()
    with pytest.raises(ValueError, match="each must be one of"):
        compare_geometry(acts, ["l1"], THRESHOLDS)
    with pytest.raises(ValueError, match=r"rmsnorm needs the next block's norm weight of layers \[1, 4, 6\]"):
        compare_geometry(acts, ["rmsnorm"], THRESHOLDS)
    with pytest.raises(ValueError, match="same \\[N, d\\] rows"):
        compare_geometry({1: acts[1], 2: acts[4][:10]}, ["l2"], THRESHOLDS)
    with pytest.raises(ValueError, match="landing_threshold 0.65"):
        compare_geometry(acts, ["l2"], THRESHOLDS, landing_threshold=0.65)
    with pytest.raises(ValueError, match="reference_layer 3"):
        compare_geometry(acts, ["l2"], THRESHOLDS, reference_layer=3)
    with pytest.raises(ValueError, match="acts_by_layer is empty"):
        compare_geometry({}, ["l2"], THRESHOLDS)


def test_rows_dropped_anywhere_are_dropped_everywhere() -> None:
    acts, _ = layer_acts()
    acts = {k: v.copy() for k, v in acts.items()}
    acts[4][10] = np.nan  # layer 4 cannot normalize row 10
    cmp = compare_geometry(acts, ["l2"], (0.7,), device="cpu")
    assert cmp.n == 239 and cmp.n_dropped == 1 and (cmp.table["n"] == 239).all()
