"""The explorer's text box answering live in headless chromium: the report server (``support/live_lookup.py``)
serves a copy of the shared tiny run with its lookup index; typing a sentence into the explorer served over
http shows each token's verdict, component and nearest contexts, equal to the library's (``lookup_text``,
what `actgeo lookup` runs); a verdict's component opens its card. Opened from a file, or from a server without
the lookup API, the page shows the `actgeo lookup` command instead and fetches nothing. Screenshots go to
test-output/explorer-live-*.png."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from actgeo_assets.lib.outputs.explorer_page import read_embedded
from actgeo_tests.support.browser import TEST_OUTPUT, chromium_context, require_chromium
from actgeo_tests.support.live_lookup import run_with_index, serving
from actgeo_tests.support.tiny_run import FinishedRun

#: A sentence some of whose tokens join components of the tiny run (one of them a carded rank) and some of
#: which are new singletons.
SENTENCE = "The House of Commons met today."


@pytest.fixture(scope="module")
def indexed(tiny_runs: Callable[..., FinishedRun], tmp_path_factory: pytest.TempPathFactory):
    """(the shared tiny run with cards of ranks 2..6, the data directory of its copy with a lookup index)."""
    run = tiny_runs(budget=800, card_ranks=[2, 6])
    data_dir, _ = run_with_index(run, tmp_path_factory.mktemp("live-browser"))
    return run, data_dir


def _library_answers(run: FinishedRun, data_dir) -> list[dict]:
    """The library's answer to SENTENCE, as `actgeo lookup --json` prints it."""
    from actgeo_assets.lib.stages.lookup import answer_json, lookup_text
    from actgeo_assets.lib.store.layout import RunLayout

    result = lookup_text(run.settings, RunLayout(data_dir, run.settings.profile), SENTENCE, k=3, build=False)
    return [answer_json(result, a) for a in result.tokens]


@pytest.mark.browser
def test_the_text_box_answers_live_over_http(indexed) -> None:
    require_chromium()
    run, data_dir = indexed
    expected = _library_answers(run, data_dir)
    explorer = data_dir / run.settings.profile / "cards" / "explorer.html"
    cards = read_embedded(explorer.read_text())["cards"]
    TEST_OUTPUT.mkdir(exist_ok=True)
    with serving(data_dir) as base, chromium_context(viewport=(1400, 1000)) as ctx:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(f"{base}/{run.settings.profile}/cards/explorer.html", wait_until="load")
        status = page.locator("#which-status")
        page.wait_for_function("document.getElementById('which-status').dataset.state === 'ready'")
        page.locator("#which-input").fill(SENTENCE)
        page.wait_for_function("document.getElementById('which-status').dataset.state === 'answered'",
                               timeout=120_000)
        assert "answered by the report server" in status.inner_text()
        rows = page.locator("#which-results tr.which-token")
        assert rows.count() == len(expected) > 5
        verdicts = set()
        for i, want in enumerate(expected):
            row = rows.nth(i)
            assert row.get_attribute("data-position") == str(want["position"])
            assert row.get_attribute("data-verdict") == want["verdict"]
            assert row.get_attribute("data-rank") == ("" if want["rank"] is None else str(want["rank"]))
            assert row.locator("span.tok").inner_text() == want["text"]
            verdict = row.locator("td.which-verdict")
            shown = [int(e.inner_text().removeprefix("rank ")) for e in verdict.locator("a.which-card, span.which-nocard").all()]
            assert shown == [c["rank"] for c in want["components"]]  # joins one, bridges several, a singleton none
            near = row.locator("li.ctx")
            assert [int(near.nth(j).get_attribute("data-row")) for j in range(near.count())] == \
                   [c["row"] for c in want["nearest"]]
            for j, c in enumerate(want["nearest"]):
                assert near.nth(j).locator("mark.hl").inner_text() == c["token"]
                assert f"cosine {c['cosine']:.4f}" in near.nth(j).inner_text()
            verdicts.add(want["verdict"])
        assert "joins" in verdicts and "new singleton" in verdicts
        page.locator("#which-input").scroll_into_view_if_needed()
        page.evaluate("window.scrollBy(0, 260)")
        page.screenshot(path=str(TEST_OUTPUT / "explorer-live-answer.png"))

        # a verdict's component, where the page has its card, is a click away from it
        link = page.locator("#which-results td.which-verdict a.which-card").first
        key = link.get_attribute("data-key")
        assert key in cards
        link.click()
        assert page.locator("#card-panel").get_attribute("data-key") == key
        assert page.locator("#card-panel section.card").get_attribute("data-rank") == str(cards[key]["rank"])

        # a changed sentence is answered again; an emptied box hides the answer
        page.locator("#which-input").fill("zebra quartz")
        page.wait_for_function("document.querySelectorAll('#which-results tr.which-token').length === "
                               f"{len(_words('zebra quartz', run, data_dir))}"
                               " && document.getElementById('which-status').dataset.state === 'answered'",
                               timeout=60_000)
        page.locator("#which-input").fill("")
        page.wait_for_function("document.getElementById('which-results').hidden")
        assert page.locator("#lookup-command").inner_text().startswith("actgeo lookup '")
    assert not errors, errors


def _words(text: str, run: FinishedRun, data_dir) -> list[dict]:
    from actgeo_assets.lib.stages.lookup import lookup_text
    from actgeo_assets.lib.store.layout import RunLayout

    return lookup_text(run.settings, RunLayout(data_dir, run.settings.profile), text, k=0, build=False).tokens


@pytest.mark.browser
def test_without_the_server_the_page_shows_the_command(indexed) -> None:
    require_chromium()
    run, data_dir = indexed
    explorer = data_dir / run.settings.profile / "cards" / "explorer.html"
    with chromium_context() as ctx:
        page = ctx.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(explorer.as_uri(), wait_until="load")  # from a file: nothing to ask
        page.locator("#which-input").fill("it's the House")
        page.wait_for_timeout(600)
        assert page.locator("#which-status").get_attribute("data-state") == "offline"
        assert "run the command below" in page.locator("#which-status").inner_text()
        assert page.locator("#which-results").is_hidden()
        assert page.locator("#lookup-command").inner_text() == "actgeo lookup 'it'\\''s the House'"
        assert all(u.startswith("file://") for u in requests), requests
        with serving(data_dir, lookup=None) as base:  # served, but by a server without the lookup API
            page.goto(f"{base}/{run.settings.profile}/cards/explorer.html", wait_until="load")
            page.wait_for_function("document.getElementById('which-status').dataset.state === 'offline'")
            page.locator("#which-input").fill("the House")
            page.wait_for_timeout(600)
            assert page.locator("#which-status").get_attribute("data-state") == "offline"
            assert page.locator("#which-results").is_hidden()
            assert page.locator("#lookup-command").inner_text() == "actgeo lookup 'the House'"
