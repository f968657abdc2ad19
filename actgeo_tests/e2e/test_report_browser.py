"""Open a report built by the real card pipeline in headless chromium: figures load, tokens highlighted, each
card shows what follows its tokens (corpus and model), and the token-identity baseline is there."""

from __future__ import annotations

import io

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.analysis.baseline import token_baseline
from actgeo_assets.lib.analysis.cards import build_cards
from actgeo_assets.lib.analysis.percolation import locate_transition
from actgeo_assets.lib.analysis.readout import Readout
from actgeo_assets.lib.analysis.study import compare_with_study
from actgeo_assets.lib.analysis.tokens import next_token_column
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.graph import component_summary
from actgeo_assets.lib.outputs.figures import (
    cosine_histogram_png,
    n_scaling_png,
    percolation_png,
    size_spectrum_png,
)
from actgeo_assets.lib.outputs.report import write_report
from actgeo_tests.support.browser import TEST_OUTPUT, chromium_context, require_chromium
from actgeo_tests.support.synthetic import card_rows


@pytest.mark.browser
def test_report_in_chromium(tmp_path) -> None:
    require_chromium()
    settings = RunSettings()
    labels, unit, tokens, docs = card_rows()
    tokens = tokens.copy()
    tokens["next_token"] = next_token_column(tokens)
    vocab = [".", " House", "<unused1>", "\n"]

    def predict(rows):  # a stand-in model: ' House' after every member, '.' second
        return [[(1, 0.8), (0, 0.15)] for _ in rows]

    cards = build_cards(labels, unit.__getitem__, tokens, docs, ranks=(2, 20), threshold=settings.threshold,
                        readout=Readout(predict=predict, tokenizer=vocab, hidden=frozenset({2})))
    baseline = token_baseline(labels, tokens)
    duplicates = {"n_documents": 7, "n_exact_duplicates": 2, "n_near_duplicates": 1, "near_threshold": 0.9,
                  "dropped": True, "n_kept": 4, "by_source": {"Github": {"exact": 2, "near": 1}}}
    sweep = pd.DataFrame({"threshold": [0.5, 0.6, 0.65, 0.7, 0.8, 0.9], "n_components": [1, 2, 3, 4, 9, 17],
                          "largest": [20, 16, 12, 10, 6, 2], "largest_fraction": [1.0, 0.8, 0.6, 0.5, 0.3, 0.1],
                          "second_largest": [0, 4, 6, 5, 3, 1], "singletons": [0, 0, 1, 1, 4, 14],
                          "non_singleton": [0, 1, 1, 2, 4, 2], "forest_edges": [19, 18, 17, 16, 11, 3],
                          "exact": [True, True, False, True, True, True],
                          "graph_edges": pd.array([190, 120, None, 60, 20, 3], dtype="Int64")})
    summary = component_summary(labels)
    transition = locate_transition(sweep, settings.threshold)
    scaling = pd.DataFrame({"shards": [1, 2], "n": [10, 20], "n_components": [3, 4], "largest": [6, 10],
                            "largest_fraction": [0.6, 0.5], "non_singleton": [1, 2], "singletons": [1, 1]})
    study = compare_with_study(settings.run_key(), summary)
    figures = {"size_spectrum": size_spectrum_png(labels, settings.describe()),
               "percolation": percolation_png(sweep, settings.describe(), settings.threshold, t_c=transition.t_c),
               "n_scaling": n_scaling_png(scaling, settings.describe(), study_n=1_000_000),
               "cosine_histogram": cosine_histogram_png(np.linspace(-0.2, 0.95, 500), settings.threshold, 20,
                                                        settings.describe(), edges_at_threshold=60)}
    path = write_report(tmp_path / "report.html", run_key=settings.run_key(), run_description=settings.describe(),
                        summary=summary, sweep=sweep, figures=figures, cards=cards,
                        notes=cards.notes, precision="float32 unit rows", baseline=baseline, duplicates=duplicates,
                        transition=transition.as_dict(), scaling=scaling, study=study)

    TEST_OUTPUT.mkdir(exist_ok=True)
    shot = TEST_OUTPUT / "report.png"
    with chromium_context() as ctx:
        page = ctx.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri(), wait_until="load")
        for fid in ("fig-size-spectrum", "fig-percolation", "fig-n-scaling", "fig-cosine-histogram"):
            width = page.eval_on_selector(f"#{fid}", "img => img.complete ? img.naturalWidth : 0")
            assert width > 0, f"figure {fid} did not load"
        assert page.locator("section.card").count() == len(cards) == 3
        marks = page.locator('section.card[data-rank="2"] mark.hl')
        assert marks.count() == len(cards[0].contexts)
        assert marks.first.inner_text() == cards[0].contexts[0].token == "\u21b5\u21b5"
        assert "self" in page.locator('section.card[data-rank="3"] mark.hl').first.inner_text()
        label = page.locator('section.card[data-rank="3"] .plabel').inner_text()
        assert "from one document (Github) (guess)" in label
        assert page.locator("#notes li").first.inner_text().startswith("ranks 5..20")
        # what follows the tokens: the corpus' next tokens with counts, the model's predictions
        card2 = page.locator('section.card[data-rank="2"]')
        corpus = card2.locator("ul.next-corpus li")
        assert corpus.count() == len(cards[0].next_tokens) >= 1 and corpus.first.is_visible()
        first, count = cards[0].next_tokens[0]
        assert corpus.first.inner_text() == f"'{first.replace(chr(10), chr(92) + 'n')}' \u00d7{count}"
        model = card2.locator("ul.next-model li")
        assert model.first.is_visible() and model.first.inner_text().startswith("' House' p 0.80")
        assert f"top {cards[0].model_next_members}/{cards[0].model_next_members}" in model.first.inner_text()
        assert "unused" not in card2.inner_text() and "token purity" in card2.locator("header").inner_text()
        # the token-identity baseline and the duplicates
        assert page.locator("#baseline-h").is_visible() and page.locator("table#baseline").is_visible()
        vm = page.locator("table#baseline tr", has_text="V-measure").locator("td.num").inner_text()
        assert vm == f"{baseline['v_measure']:.4g}"
        assert page.locator("#mixed-h").is_visible()
        assert "2 exact duplicates" in page.locator("#duplicates").inner_text()
        # the study side by side, the transition in words, the listed sweep rows with exact edge counts, N
        assert page.locator("#study-verdict").is_visible()
        assert page.locator("#study-verdict").inner_text().startswith("Not comparable with the study")
        assert page.locator("table#study tr", has_text="components").first.inner_text().split("\t")[1] == "136,410"
        assert "run's threshold 0.7 sits" in page.locator("#transition").inner_text()
        assert page.locator("table#sweep tbody tr").count() == 5  # the listed (exact) thresholds
        assert not page.locator("table#sweep-fine").is_visible()  # the fine sweep behind a disclosure
        page.locator("#fine-sweep summary").click()
        assert page.locator("table#sweep-fine tbody tr").count() == 6
        assert page.locator("table#n-scaling tbody tr").count() == 2
        page.screenshot(path=str(shot), full_page=True)
        page.locator('section.card[data-rank="2"]').screenshot(path=str(TEST_OUTPUT / "report-card-2.png"))
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert shot.stat().st_size > 10_000
    img = mpimg.imread(io.BytesIO(shot.read_bytes()), format="png")
    assert img.shape[0] > 900 and img.shape[1] >= 1280 and img[..., :3].std() > 0.02
