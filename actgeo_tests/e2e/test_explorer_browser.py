"""The explorer of the shared tiny run (``support/tiny_run.py``: every stage of the pipeline), opened from
disk in headless chromium: a spectrum click opens the right card, the slider at a sweep threshold shows
sweep.csv's counts, an icicle node and a percolation point open theirs, and the typed sentence's lookup
command is shown. Screenshots go to test-output/explorer-*.png."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import pytest

from actgeo_assets.lib.outputs.explorer_page import read_embedded
from actgeo_tests.support.browser import TEST_OUTPUT, chromium_context, require_chromium
from actgeo_tests.support.tiny_run import FinishedRun


@pytest.fixture(scope="module")
def run(tiny_runs: Callable[..., FinishedRun]):
    """(layout, components record) of a tiny run of 800 rows: the cards stage writes the explorer. More
    components than carded ranks (2..6), so the spectrum's last rank has a compact card built for the page."""
    built = tiny_runs(budget=800, card_ranks=[2, 6])
    return built.layout, built.record


def test_the_cards_stage_writes_the_explorer_and_the_report_links_it(run) -> None:
    layout, record = run
    assert layout.explorer.is_file() and layout.explorer.parent == layout.report.parent
    report = layout.report.read_text()
    assert '<p id="explorer-link"><a href="explorer.html">' in report
    data = read_embedded(layout.explorer.read_text())
    assert data["n"] == record["n"] and [p[1] for p in data["spectrum"][:5]] == record["summary"]["top_sizes"][:5]
    sweep = pd.read_csv(layout.sweep)  # the slider's numbers (from the forest) are the sweep's
    assert [s["n_components"] for s in data["slider"]] == sweep["n_components"].tolist()
    assert [s["largest"] for s in data["slider"]] == sweep["largest"].tolist()
    assert [s["singletons"] for s in data["slider"]] == sweep["singletons"].tolist()
    cards = json.loads(layout.cards.read_text())["cards"]
    assert {c["rank"] for c in cards} <= {p[0] for p in data["spectrum"]}


def test_the_report_server_serves_the_explorer(run) -> None:
    import functools
    import http.server
    import threading
    import urllib.request

    from actgeo_assets.report_server import ReportHandler

    layout, _ = run
    handler = functools.partial(ReportHandler, directory=str(layout.root.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{layout.root.name}/cards/explorer.html"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and resp.read() == layout.explorer.read_bytes()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
def test_explorer_in_chromium(run) -> None:
    require_chromium()
    layout, record = run
    data = read_embedded(layout.explorer.read_text())
    sweep = pd.read_csv(layout.sweep)
    top = record["summary"]["top_sizes"]
    TEST_OUTPUT.mkdir(exist_ok=True)
    with chromium_context(viewport=(1400, 1000)) as ctx:
        page = ctx.new_page()
        errors: list[str] = []
        requests: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(layout.explorer.as_uri(), wait_until="load")

        # a spectrum point -> that rank's card (rank 2 has a full card of the report)
        page.locator('svg#spectrum circle.pt[data-rank="2"]').click()
        card = page.locator("#card-panel section.card")
        assert card.get_attribute("data-rank") == "2" and card.get_attribute("data-size") == str(top[1])
        assert page.locator("#card-title").inner_text().startswith(f"Rank 2 of {record['summary']['n_components']:,}")
        assert card.locator("mark.hl").count() >= 1
        page.screenshot(path=str(TEST_OUTPUT / "explorer-spectrum.png"))
        last = data["spectrum"][-1]  # the last rank: a compact card built for the page
        page.locator(f'svg#spectrum circle.pt[data-rank="{last[0]}"]').click()
        assert card.get_attribute("data-rank") == str(last[0]) and card.get_attribute("data-size") == str(last[1])
        assert "(compact card)" in page.locator("#card-title").inner_text()

        # the slider, moved with the keyboard to a listed sweep threshold: sweep.csv's counts at it
        slider = page.locator("#threshold-slider")
        start = data["slider_start"]
        target = next(i for i, s in enumerate(data["slider"]) if abs(s["threshold"] - 0.8) < 1e-9)
        slider.focus()
        for _ in range(target - start):
            page.keyboard.press("ArrowRight")
        row = sweep[(sweep["threshold"] - 0.8).abs() < 1e-9].iloc[0]
        assert page.locator("#slider-threshold").inner_text() == "0.80"
        assert page.locator("#s-n-components").inner_text() == f"{int(row['n_components']):,}"
        assert page.locator("#s-largest").inner_text().startswith(f"{int(row['largest']):,} (")
        assert page.locator("#s-second").inner_text() == f"{int(row['second_largest']):,}"
        assert page.locator("#s-singletons").inner_text() == f"{int(row['singletons']):,}"
        assert page.locator("#s-non-singleton").inner_text() == f"{int(row['non_singleton']):,}"
        assert page.locator("#s-top10 li").first.inner_text() == f"{int(row['largest']):,}"
        page.screenshot(path=str(TEST_OUTPUT / "explorer-slider.png"))

        # a percolation point -> the largest component's card at that threshold
        page.locator('svg#percolation circle.perc-pt[data-threshold="0.70"]').first.click()
        row = sweep[(sweep["threshold"] - 0.7).abs() < 1e-9].iloc[0]
        assert card.get_attribute("data-size") == str(int(row["largest"]))
        title = page.locator("#card-title").inner_text()  # above the run's 0.6 it lies inside its giant
        assert title.startswith("Sub-component 1 of the run's largest component (cosine \u2265 0.6) at cosine \u2265 0.7")
        assert f"rank 1 of {int(row['n_components']):,} components at cosine \u2265 0.7" in title
        assert page.locator("#slider-threshold").inner_text() == "0.70"  # the slider follows

        # an icicle node below the top row -> its card
        node = next(nd for nd in data["icicle"]["nodes"] if nd["level"] == 2)
        page.locator(f'svg#icicle rect.node[data-id="{node["id"]}"]').click()
        assert page.locator("#card-panel").get_attribute("data-key") == node["key"]
        assert card.get_attribute("data-size") == str(node["size"])
        assert page.locator("#card-title").inner_text().startswith(f"Sub-component {node['sub_rank']} ")
        page.locator("#icicle-h").scroll_into_view_if_needed()
        page.screenshot(path=str(TEST_OUTPUT / "explorer-icicle.png"))

        # the lookup command, quoted for a POSIX shell
        page.locator("#which-input").fill("it's the House")
        assert page.locator("#lookup-command").inner_text() == "actgeo lookup 'it'\\''s the House'"
        page.screenshot(path=str(TEST_OUTPUT / "explorer-full.png"), full_page=True)
    assert not errors, errors
    assert all(u.startswith("file://") for u in requests), requests  # nothing fetched: self-contained
