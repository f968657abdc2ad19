"""lib/outputs/report_compare.py: the overlaid figures draw exactly the data given, one line (or bar) per
experiment, and the page has every section, escapes data and says when there are too few experiments."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from actgeo_assets.lib.outputs.figures import PNG_SIGNATURE
from actgeo_assets.lib.outputs.report_compare import (
    best_matches,
    n_scaling_overlay_figure,
    normalizations_figure,
    percolation_overlay_figure,
    percolation_overlay_png,
    render_comparison,
    write_comparison,
)

SECTIONS = ("summaries", "percolation", "n-scaling", "normalizations", "matches", "skipped")


def sweeps() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    out = {}
    for name in ("demo", "smollm2", "layer-3"):
        t = np.round(np.arange(0.5, 0.96, 0.01), 2)
        out[name] = pd.DataFrame({"threshold": t[::-1], "largest_fraction": np.sort(rng.random(len(t))),
                                  "second_largest": rng.integers(0, 500, len(t))})  # unsorted on purpose
    return out


def lines_by_label(ax) -> dict[str, np.ndarray]:  # noqa: ANN001 - a matplotlib Axes
    return {line.get_label(): np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()}


def test_percolation_overlay_one_line_per_experiment() -> None:
    data = sweeps()
    fig = percolation_overlay_figure(data)
    top, bottom = fig.axes[:2]
    for ax, column in ((top, "largest_fraction"), (bottom, "second_largest")):
        lines = lines_by_label(ax)
        assert sorted(lines) == sorted(data)
        for name, sweep in data.items():
            want = sweep.sort_values("threshold")[column].to_numpy(dtype=float)
            assert np.array_equal(lines[name], want)
    assert "activations" in bottom.get_ylabel() and "activations" in top.get_ylabel()
    assert sorted(t.get_text() for t in fig.legends[0].get_texts()) == sorted(data)
    assert percolation_overlay_png(data).startswith(PNG_SIGNATURE)


def test_n_scaling_overlay_draws_rates() -> None:
    data = {"a": pd.DataFrame({"n": [500, 1000, 2000], "largest_fraction": [0.5, 0.6, 0.7],
                               "n_components": [100, 150, 200]}),
            "b": pd.DataFrame({"n": [1000, 300], "largest_fraction": [0.2, 0.1], "n_components": [400, 200]})}
    fig = n_scaling_overlay_figure(data)
    top, bottom = fig.axes[:2]
    assert np.array_equal(lines_by_label(top)["b"], [0.1, 0.2])
    assert np.allclose(lines_by_label(bottom)["a"], [200.0, 150.0, 100.0])  # components per 1,000 activations
    assert np.allclose(lines_by_label(bottom)["b"], [1000 * 200 / 300, 400.0])
    assert top.get_xscale() == "log" and "activations" in bottom.get_xlabel()


def test_normalizations_figure_bar_heights() -> None:
    table = pd.DataFrame({"group": ["g1", "g1", "g2", "g2"], "normalization": ["l2", "center_l2"] * 2,
                          "label": ["plain L2 (the study's recipe)", "centered, then L2"] * 2,
                          "giant_fraction": [1.0, 0.6, 0.98, 0.09], "n_components": [1, 1693, 52, 2550],
                          "n": [5000] * 4})
    fig = normalizations_figure(table)
    top, bottom = fig.axes[:2]
    heights = sorted(round(p.get_height(), 6) for p in top.patches)
    assert heights == sorted(table["giant_fraction"].round(6))
    assert sorted(p.get_height() for p in bottom.patches) == sorted(table["n_components"].astype(float))
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["g1", "g2"]
    assert "plain L2 (the study's recipe)" in [t.get_text() for t in fig.legends[0].get_texts()]


def _pair(a: str, b: str) -> dict:
    row = {"card_rank": 2, "card_size": 30, "card_label": "' hon' <in> debates", "a_top_tokens": [[" hon", 30]],
           "b_rank": 79, "b_size": 30, "b_top_tokens": [["<b>", 30]], "b_label": None, "shared": 30, "overlap": 1.0,
           "jaccard": 1.0, "char_overlap": 1.0, "covered": 30, "not_covered": 0, "specific_b_rank": 79,
           "specific_b_size": 30, "specific_overlap": 1.0, "specific_jaccard": 1.0, "specific_b_top_tokens": [],
           "a_href": "../x/cards/explorer.html#card-2", "b_href": None, "method": "spans"}
    return {"a": a, "b": b, "method": "spans", "reason": "different tokenizations", "rows": [row],
            "documents": {"same_text": 3, "documents_a": 3, "documents_b": 4, "text_differs": 1}}


def test_page_sections_and_escaping(tmp_path) -> None:
    summary = {"experiment": "<script>x</script>", "model": "m&m", "layer": 9, "normalization": "center_l2",
               "threshold": 0.7, "n": 30000, "n_components": 5815, "n_components_low": 4846.9,
               "n_components_high": 6783.1, "components_per_1000": 193.8, "giant_fraction": 0.755,
               "giant_fraction_low": 0.73, "giant_fraction_high": 0.78, "second_largest": 30, "singletons": 5035,
               "t_c": 0.8, "t_c_low": 0.74, "t_c_high": 0.86}
    groups = [{"group": "g <1>", "source": "demo", "rows": [
        {"normalization": "l2", "label": "plain L2 (the study's recipe)", "threshold": 0.7, "n": 5000,
         "n_components": 1, "giant_fraction": 1.0, "singletons": 0, "mean_cosine": 0.959}],
        "left_out": {"rmsnorm": "no next_norm"}}]
    page = render_comparison(experiments=["<script>x</script>", "b"], summaries=[summary, {**summary, "experiment": "b"}],
                             figures={"percolation": None}, normalization_groups=groups, common_n=5000,
                             pairs=[_pair("<script>x</script>", "b")], skipped={"c": "no summary <here>"}, notes={})
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "no summary &lt;here&gt;" in page and "&#x27;&lt;b&gt;&#x27;" in page
    assert "4,847 (" not in page and "5,815 (4,847\u20136,783)" in page  # counts as whole numbers
    assert "75.5% (73.0%\u201378.0%)" in page
    assert 'data-method="spans"' in page and 'href="../x/cards/explorer.html#card-2"' in page
    assert re.search(r'id="matches-script-x-script-b"', page)
    assert "plain L2 (the study&#x27;s recipe)" in page and 'id="too-few"' not in page
    one = render_comparison(experiments=["a", "b"], summaries=[{**summary, "experiment": "a"}], figures={},
                            normalization_groups=[], common_n=0, pairs=[], skipped={"b": "stale"}, notes={})
    assert 'id="too-few"' in one and all(f'<section id="{sid}">' in one for sid in SECTIONS)
    path = write_comparison(tmp_path / "c" / "report.html", experiments=["a"], summaries=[], figures={},
                            normalization_groups=[], common_n=0, pairs=[], skipped={}, notes={})
    assert path.read_text().startswith("<!DOCTYPE html>")


def test_best_matches_over_every_pair() -> None:
    """The five rows of highest Jaccard across pairs, a row without a match never among them."""
    rng = np.random.default_rng(1)
    pairs = []
    for a, b in (("x", "y"), ("y", "x"), ("x", "z")):
        p = _pair(a, b)
        p["rows"] = [{**p["rows"][0], "card_rank": k + 2, "jaccard": float(j), "overlap": float(j)}
                     for k, j in enumerate(rng.random(4))]
        pairs.append(p)
    pairs[0]["rows"].append({**pairs[0]["rows"][0], "card_rank": 9, "jaccard": 2.0, "b_rank": None})
    got = best_matches(pairs)
    every = sorted((r["jaccard"] for p in pairs for r in p["rows"] if r["b_rank"]), reverse=True)
    assert [r["jaccard"] for r in got] == every[:5]
    assert all({"a", "b", "method"} <= set(r) for r in got)
    page = render_comparison(experiments=["x", "y", "z"], summaries=[], figures={}, normalization_groups=[],
                             common_n=0, pairs=pairs, skipped={}, notes={})
    assert page.count('<tr data-a="') == 5 and 'id="best-matches"' in page
