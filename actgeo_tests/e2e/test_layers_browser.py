"""The report's layer comparison section in headless chromium: heading, embedded figure, the layers x
normalizations table with the comparison's numbers, the landing table with escaped token strings."""

from __future__ import annotations

import pandas as pd
import pytest

from actgeo_assets.lib.analysis.layers import compare_geometry, giant_fraction_png, section_html
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.outputs.report import write_report
from actgeo_tests.support.browser import TEST_OUTPUT, chromium_context, require_chromium
from actgeo_tests.support.synthetic import layer_acts


@pytest.mark.browser
def test_layers_section_in_chromium(tmp_path) -> None:
    require_chromium()
    settings = RunSettings()
    acts, weights = layer_acts()
    cmp = compare_geometry(acts, ["l2", "center_l2", "rmsnorm"], (0.5, 0.6, 0.7, 0.8, 0.9), norm_weights=weights,
                           reference_layer=4, top_k=3, device="cpu")
    png = giant_fraction_png(cmp.table, "three test layers")
    section = section_html(cmp, threshold=0.7, png=png, describe="three test layers",
                           landing_normalization="center_l2", top_tokens={("center_l2", 1): "<b>x"})
    sweep = pd.DataFrame({"threshold": [0.7], "n_components": [2], "largest": [3], "largest_fraction": [0.75],
                          "second_largest": [1], "singletons": [1], "non_singleton": [0], "forest_edges": [2],
                          "exact": [True]})
    summary = {"n": 4, "n_components": 2, "largest": 3, "largest_fraction": 0.75, "non_singleton": 0,
               "singletons": 1, "top_sizes": [3, 1]}
    path = write_report(tmp_path / "report.html", run_key=settings.run_key(), run_description=settings.describe(),
                        summary=summary, sweep=sweep, figures={}, cards=[], layers_section=section)
    TEST_OUTPUT.mkdir(exist_ok=True)
    with chromium_context() as ctx:
        page = ctx.new_page()
        page.goto(path.as_uri(), wait_until="load")
        assert page.locator("#layers-h").is_visible()
        assert page.eval_on_selector("#fig-layer-giant", "img => img.complete ? img.naturalWidth : 0") > 500
        rows = page.locator("table#layer-geometry tr")
        assert rows.count() == 2 + 3  # two header rows, one row per layer
        at = cmp.at(0.7).set_index(["layer", "normalization"])
        cells = rows.nth(3).locator("td").all_inner_texts()  # layer 4; l2, center_l2, rmsnorm: cos, giant, count
        assert cells[0] == "4"
        assert cells[1] == f"{at.loc[(4, 'l2'), 'mean_cosine']:.3f}"
        assert cells[5] == f"{at.loc[(4, 'center_l2'), 'giant_fraction']:.3f}"
        assert cells[9] == f"{int(at.loc[(4, 'rmsnorm'), 'n_components']):,}"
        landing = page.locator("table#layer-landing tr")
        assert landing.count() == 1 + 3  # header; the top 3 components of layer 4
        assert landing.first.locator("th").all_inner_texts() == ["rank", "size", "layer 1", "layer 6"]
        first = landing.nth(1).locator("td").all_inner_texts()
        assert first[0] == "1 '<b>x'"  # escaped, shown as text
        r = cmp.landing[(cmp.landing["normalization"] == "center_l2") & (cmp.landing["rank"] == 1)
                        & (cmp.landing["layer"] == 6)].iloc[0]
        where = "giant" if r["dest_is_giant"] else f"rank {r['dest_rank']}"
        assert first[3] == f"{where} ({r['dest_size']:,}) \u00b7 {r['frac_in_dest']:.0%} \u00b7 {r['n_dest_components']}"
        assert page.locator("table#layer-landing b").count() == 0
        page.locator("#layers-h").scroll_into_view_if_needed()
        shot = TEST_OUTPUT / "report-layers.png"
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
