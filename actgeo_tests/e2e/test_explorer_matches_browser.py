"""The explorer's view of the comparison across experiments, in headless chromium: two finished tiny runs (the
same capture at thresholds 0.6 and 0.8) laid out as one data directory's profile run (``demo``) and experiment
(``high``), compared by ``compare_experiments`` into ``comparison/``, served by the report server. A card of
``demo`` opened from the URL shows ``#card-matches`` with ``high``'s best (and most specific) match, the same
numbers as ``comparison.json``; its link lands on ``high``'s explorer at that card (a compact card there: "not
matched"), whose report cards show their own matches back in ``demo``; a most specific match other than the
best gets a second row. A comparison of other labels says it is out of date; from a file, or with no
comparison, the page shows no section, asks nothing it cannot get and logs no error. Screenshot:
test-output/explorer-matches.png."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from actgeo_assets.lib.analysis.tokens import quote_token
from actgeo_assets.lib.config.experiments import write_experiment
from actgeo_assets.lib.outputs.explorer_page import read_embedded
from actgeo_assets.lib.stages.compare import ExperimentRun, compare_experiments
from actgeo_assets.lib.store.layout import RunLayout, load_json, save_json
from actgeo_tests.support.browser import TEST_OUTPUT, chromium_context, require_chromium
from actgeo_tests.support.live_lookup import serving

CARD = 2  # the demo card opened (explorer.html#card-2)


@pytest.fixture(scope="module")
def data_dir(tiny_runs, tmp_path_factory) -> Path:
    """A data directory holding ``demo`` (threshold 0.6), the experiment ``high`` (0.8) and their comparison."""
    base, high = tiny_runs(), tiny_runs(threshold=0.8, subcard_threshold=0.9)
    data = tmp_path_factory.mktemp("matches") / "data"
    shutil.copytree(base.root, data / "demo")
    shutil.copytree(high.root, data / "high")
    write_experiment(data, "high", high.settings)
    compare_experiments([ExperimentRun("demo", base.settings, RunLayout(data, "demo")),
                         ExperimentRun("high", high.settings, RunLayout(data, "high"))],
                        data / "comparison", common_n=150, log=lambda _: None)
    return data


def _row(doc: dict[str, Any], a: str, b: str, card: int) -> dict[str, Any]:
    pair = next(p for p in doc["pairs"] if (p["a"], p["b"]) == (a, b))
    return {"method": pair["method"], **next(r for r in pair["rows"] if r["card_rank"] == card)}


def high_key(data: dict[str, Any], rank: int) -> str:
    """The explorer's key of the report's card of ``rank``."""
    return next(k for k, c in data["cards"].items() if c.get("anchor") == f"card-{rank}")


def _watch(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return errors


def _check_shown(page: Any, other: str, want: dict[str, Any]) -> None:
    """``#card-matches`` shows ``want`` (a row of comparison.json) for experiment ``other``: data attributes
    equal to the JSON's numbers, the visible overlap and Jaccard rounded from them, the top token strings."""
    kinds = [("best", "")]
    if want["specific_b_rank"] and want["specific_b_rank"] != want["b_rank"]:
        kinds.append(("specific", "specific_"))
    rows = page.locator(f'#card-matches tr.match[data-experiment="{other}"]')
    assert rows.count() == len(kinds)
    for i, (kind, pre) in enumerate(kinds):
        tr = rows.nth(i)
        assert tr.get_attribute("data-kind") == kind and tr.get_attribute("data-method") == want["method"]
        assert int(tr.get_attribute("data-rank")) == want[f"{pre}b_rank"]
        assert int(tr.get_attribute("data-size")) == want[f"{pre}b_size"]
        assert float(tr.get_attribute("data-overlap")) == want[f"{pre}overlap"]
        assert float(tr.get_attribute("data-jaccard")) == want[f"{pre}jaccard"]
        cells = [c.inner_text().strip() for c in tr.locator("td").all()]
        assert f"rank {want[f'{pre}b_rank']:,} ({want[f'{pre}b_size']:,})" in cells[1]
        assert abs(float(cells[3].rstrip("%")) - 100 * want[f"{pre}overlap"]) <= 0.5 + 1e-9
        assert abs(float(cells[4]) - want[f"{pre}jaccard"]) <= 0.0005 + 1e-12
        assert [t.inner_text() for t in tr.locator("span.tok").all()] == \
               [quote_token(t) for t, _ in want[f"{pre}b_top_tokens"]]
        if want[f"{pre}b_href"]:
            assert tr.locator("a.match-link").get_attribute("href") == "../../comparison/" + want[f"{pre}b_href"]
    method = "by shared activations" if want["method"] == "rows" else "by character spans"
    assert method in rows.first.inner_text()


@pytest.mark.browser
def test_a_card_shows_its_matches_in_other_experiments(data_dir: Path) -> None:
    require_chromium()
    doc = load_json(data_dir / "comparison" / "comparison.json")
    assert doc["experiments"] == ["demo", "high"] and _row(doc, "demo", "high", CARD)["method"] == "rows"
    want = _row(doc, "demo", "high", CARD)
    TEST_OUTPUT.mkdir(exist_ok=True)
    with serving(data_dir) as base, chromium_context(viewport=(1400, 1000)) as ctx:
        page = ctx.new_page()
        errors = _watch(page)
        page.goto(f"{base}/demo/cards/explorer.html#card-{CARD}", wait_until="load")
        page.wait_for_selector("#card-matches tr.match")
        assert page.locator("#card-panel section.card").get_attribute("data-rank") == str(CARD)
        assert page.locator("#card-matches").get_attribute("data-state") == "ready"
        assert page.locator("#card-matches h3").inner_text() == "In other experiments"
        _check_shown(page, "high", want)
        page.locator("#card-matches").scroll_into_view_if_needed()
        page.screenshot(path=str(TEST_OUTPUT / "explorer-matches.png"))

        # the link, rebased from data/comparison/ to this page, lands on high's explorer at the matched card
        link = page.locator('#card-matches tr.match[data-kind="best"] a.match-link')
        assert link.get_attribute("href") == "../../comparison/" + want["b_href"]
        link.click()
        page.wait_for_url(f"{base}/high/cards/explorer.html#*")
        high = read_embedded((data_dir / "high" / "cards" / "explorer.html").read_text())
        anchor = want["b_href"].partition("#")[2]
        key = next((k for k, c in high["cards"].items() if c.get("anchor") == anchor), anchor)
        page.wait_for_function(f"document.getElementById('card-panel').dataset.key === {json.dumps(key)}")
        assert page.locator("#card-panel section.card").get_attribute("data-rank") == str(want["b_rank"])
        if not high["cards"][key]["full"]:  # a compact card: not one of the cards the comparison matched
            page.wait_for_selector("#card-matches p.meta")
            assert "not matched" in page.locator("#card-matches").inner_text()
        # a card of high's report: matched back in demo
        back = _row(doc, "high", "demo", CARD)
        page.locator(f'#card-index a.card-link[data-key="{high_key(high, CARD)}"]').click()
        page.wait_for_selector('#card-matches tr.match[data-experiment="demo"]')
        _check_shown(page, "demo", back)

        # a card that is not at the run's threshold (a sub-component's) has no section
        page.goto(f"{base}/demo/cards/explorer.html#card-{CARD}", wait_until="load")
        page.wait_for_selector("#card-matches")
        page.locator("svg#icicle rect.node").last.click()
        assert page.locator("#card-matches").count() == 0
    assert not errors, errors


@pytest.mark.browser
def test_stale_file_and_missing_comparisons(data_dir: Path, tmp_path: Path) -> None:
    require_chromium()
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    cmp_json = data / "comparison" / "comparison.json"
    doc = load_json(cmp_json)
    # a most specific match other than the best (hand-made: the tiny runs have none): a second row
    row = _row(doc, "demo", "high", CARD)
    other = _row(doc, "demo", "high", CARD + 1)
    pair = next(p for p in doc["pairs"] if (p["a"], p["b"]) == ("demo", "high"))
    special = {**row, "specific_b_rank": other["b_rank"], "specific_b_size": other["b_size"],
               "specific_overlap": 0.25, "specific_jaccard": 0.125, "specific_b_href": other["b_href"],
               "specific_b_top_tokens": [["\n\tx", 2], ["é", 1]]}
    pair["rows"] = [special if r["card_rank"] == CARD else r for r in pair["rows"]]
    save_json(cmp_json, doc)
    with chromium_context() as ctx:
        page = ctx.new_page()
        errors = _watch(page)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        with serving(data) as base:
            page.goto(f"{base}/demo/cards/explorer.html#card-{CARD}", wait_until="load")
            page.wait_for_selector("#card-matches tr.match")
            _check_shown(page, "high", {"method": pair["method"], **special})
            assert "most specific" in page.locator('#card-matches tr.match[data-kind="specific"]').inner_text()

            doc["inputs"]["experiments"]["demo"]["labels_sha256"] = "0" * 64  # the comparison of other labels
            save_json(cmp_json, doc)
            page.reload(wait_until="load")
            page.wait_for_selector('#card-matches[data-state="stale"]')
            assert "out of date" in page.locator("#card-matches p.warn").inner_text()
            assert page.locator("#card-matches tr.match").count() == 0
            shutil.rmtree(data / "comparison")  # none at all: the server says so and the page does not ask
            requests.clear()
            page.reload(wait_until="load")  # (a goto to the same URL and fragment would not reload)
            page.wait_for_function("document.getElementById('which-status').dataset.state === 'ready'")
            page.wait_for_timeout(300)
            assert page.locator("#card-panel section.card").count() == 1
            assert page.locator("#card-matches").count() == 0
            assert not [u for u in requests if "comparison" in u], requests
        shutil.copytree(data_dir / "comparison", data / "comparison")
        requests.clear()
        page.goto((data / "demo" / "cards" / "explorer.html").as_uri() + f"#card-{CARD}", wait_until="load")
        page.wait_for_timeout(300)  # from a file: the page fetches nothing and shows no section
        assert page.locator("#card-panel section.card").get_attribute("data-rank") == str(CARD)
        assert page.locator("#card-matches").count() == 0
        assert all(u.startswith("file://") for u in requests), requests
    assert not errors, errors
