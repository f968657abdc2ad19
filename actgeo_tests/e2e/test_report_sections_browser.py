"""The report of the shared tiny run (every stage of the pipeline), read in headless chromium as a reader reads
it: the sample, the artefact controls, the whole-partition baselines, the per-source breakdown and the
resampling intervals show numbers that an independent computation over the run's own files (members.parquet,
labels.npy, summary.json; pandas, numpy and scikit-learn here) gives, and every card of the report opens in
the explorer from its link. Screenshot: test-output/report-sections.png."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_mutual_info_score, v_measure_score

from actgeo_assets.lib.store.layout import load_json
from actgeo_tests.support.browser import TEST_OUTPUT, chromium_context, require_chromium
from actgeo_tests.support.tiny_run import FinishedRun


@pytest.fixture(scope="module")
def run(tiny_runs: Callable[..., FinishedRun]) -> FinishedRun:
    return tiny_runs()


def _number(text: str) -> float:
    """A number as the report writes it: '1,234', '75.5%' (as a fraction), '0.4297'."""
    text = text.strip().replace(",", "")
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


@pytest.mark.browser
def test_the_new_sections_read_in_chromium_agree_with_the_run_files(run: FinishedRun) -> None:
    require_chromium()
    members = pd.read_parquet(run.layout.members)
    labels = np.load(run.layout.labels)
    assert members["component"].tolist() == labels.tolist()
    n = len(members)
    giant = members["component"].to_numpy() == 0
    sizes = np.bincount(labels)
    TEST_OUTPUT.mkdir(exist_ok=True)
    with chromium_context() as ctx:
        page = ctx.new_page()
        page.goto(run.layout.report.as_uri(), wait_until="load")

        # the sample: documents used and each source's activations
        assert f"come from {members['doc_id'].nunique():,} documents" in page.locator("#sample-documents").inner_text()
        for source, count in members["source"].value_counts().items():
            row = page.locator(f'#sample-sources tr[data-source="{source}"] td')
            assert _number(row.nth(0).inner_text()) == count, source

        # artefact controls: distinct inputs, and the summary counted by distinct input (a recount here)
        text = page.locator("#artefacts").inner_text()
        n_inputs = members["input_key"].nunique()
        assert f"{n_inputs:,} distinct inputs" in text
        distinct = members.drop_duplicates("input_key").groupby("component").size()
        cells = page.locator('#artefact-summary tr[data-key="n_components"] td')
        assert _number(cells.nth(1).inner_text()) == len(distinct)
        cells = page.locator('#artefact-summary tr[data-key="largest"] td')
        assert [_number(cells.nth(i).inner_text()) for i in range(2)] == [sizes[0], distinct.max()]
        early = int(members["early"].sum())
        assert f"{early:,} early activations" in text

        # baselines over the whole partition: scikit-learn on the members table, every activation
        row = page.locator('#baselines-whole tr[data-grouping="token"][data-coverage="all"] td')
        cells = [row.nth(i).inner_text() for i in range(row.count())]
        assert _number(cells[1]) == n  # activations covered, written beside the figure
        v = v_measure_score(members["token"], members["component"])
        ami = adjusted_mutual_info_score(members["token"], members["component"])
        assert abs(_number(cells[-2]) - v) < 5e-4 and abs(_number(cells[-1]) - ami) < 5e-4
        row = page.locator('#baselines-whole tr[data-grouping="position"][data-coverage="all"] td')
        v_pos = v_measure_score(members["position"], members["component"])
        assert abs(_number(row.nth(row.count() - 2).inner_text()) - v_pos) < 5e-4

        # per source: its share of the giant (a crosstab here)
        share = members[giant]["source"].value_counts(normalize=True)
        for source, value in share.items():
            row = page.locator(f'#source-breakdown tr[data-source="{source}"] td')
            assert abs(_number(row.nth(1).inner_text()) - value) < 5e-4, source

        # uncertainty: the method in words and one row per quantity, the estimate the summary's
        record = load_json(run.layout.summary)
        assert "jackknife" in page.locator("#uncertainty-method").inner_text()
        cells = page.locator('#intervals tr[data-key="largest_fraction"] td')
        assert abs(_number(cells.nth(0).inner_text()) - record["summary"]["largest_fraction"]) < 5e-4
        page.locator("#uncertainty").screenshot(path=str(TEST_OUTPUT / "report-sections.png"))

        # every card: its header says its distinct inputs; its link opens the same card in the explorer
        cards = load_json(run.layout.cards)["cards"]
        assert page.locator("section.card").count() >= len(cards) > 0
        for card in cards:
            section = page.locator(f"#card-{card['rank']}")
            members_of = members[members["component"] == card["label_id"]]
            inputs_text = section.locator(".inputs").inner_text()
            assert (f"{members_of['input_key'].nunique():,} distinct input" in inputs_text
                    or "copies of one model input" in inputs_text)
            href = section.locator("a.in-explorer").get_attribute("href")
            assert href == f"explorer.html#card-{card['rank']}"
        explorer = ctx.new_page()
        last = cards[-1]
        explorer.goto(run.layout.explorer.as_uri() + f"#card-{last['rank']}", wait_until="load")
        assert explorer.locator("#card-body section.card").get_attribute("data-rank") == str(last["rank"])
        links = explorer.locator("#card-index a.card-link")
        assert links.count() == len(cards) + len(load_json(run.layout.cards)["subcards"])
        links.first.click()
        assert explorer.locator("#card-body section.card").get_attribute("data-rank") == str(cards[0]["rank"])
