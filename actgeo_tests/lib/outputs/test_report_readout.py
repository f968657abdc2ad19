"""A card's lens block: the tokens that beat the control, a line naming the control and what was dropped,
"nothing beyond the control" when none did, nothing without a lens; every data string escaped."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from actgeo_assets.lib.analysis.cards import Card
from actgeo_assets.lib.outputs.report_readout import lens_html, lens_id

EVIL = "<img src=x onerror=alert(1)>"


def _card(readout: list[tuple[str, float]] | None, lens: dict[str, Any] | None = None, rank: int = 3,
          sub: int | None = None) -> Card:
    card = Card(rank=rank, label_id=rank - 1, size=12, provisional_label="x", n_documents=4, source_mix={"a": 12},
                top_tokens=[(" and", 12)], contexts=[], readout=readout, threshold=0.7, subcomponent_of=sub)
    if lens is not None:
        card.extra["lens"] = lens
    return card


def _meta(**kw: Any) -> dict[str, Any]:
    meta = {"control": "128 random groups of 12 activations outside the component", "k": 128, "group_size": 12,
            "seed": 23, "alpha": 0.05, "threshold": 29.39, "controls_above_threshold": 5, "candidates": 6793,
            "passed": 2, "shown": 2, "margins": [59.8, 47.4], "p": [0.0078, 0.0155], "best_margin": 59.8,
            "plain_top": [["\u7a95", 66.3], ["<0xE7>", 65.8], [" others", 101.8], ["x", 1.0], ["y", 1.0],
                          ["z", 1.0], ["w", 1.0], ["v", 1.0]],
            "dropped_unreadable": 5, "dropped_not_in_corpus": 4, "dropped_below_control": 1}
    meta.update(kw)
    return meta


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


def test_no_lens_no_block() -> None:
    assert lens_html(_card(None)) == ""
    assert lens_html(_card(None, _meta(skipped="no control"))) == ""


def test_lens_chips_line_and_counts() -> None:
    card = _card([(" other", 95.12), (EVIL, 101.8)], _meta())
    html = lens_html(card)
    tags = _parse(html)
    assert ("div", {"class": "lens", "id": "lens-3"}) in tags.tags
    assert ("ul", {"class": "chips readout"}) in tags.tags
    assert EVIL not in html and "&lt;img src=x" in html  # escaped token
    text = "".join(tags.text)
    chips = re.findall(r'<li><span class="tok">(.*?)</span> (.*?)</li>', html)
    assert [c[1] for c in chips] == ["95.1 +59.8", "101.8 +47.4"]  # the logit, then the margin of the meta
    assert "exceeds that of each of 128 random groups of 12 activations outside the component by more than 29.4" in text
    assert "only 5 of the groups reach on their own best token (5% family-wise)" in text
    # of the plain top 8: 5 unreadable of which 4 absent from the sample, 1 below the control
    assert ("Dropped from the plain lens's 8 strongest tokens: 1 unreadable (byte pieces, control or special "
            "tokens), 4 absent from the run's sampled activations and 1 below the control.") in text
    assert "activations" in text and " rows" not in text and "tokens seen" not in text


def test_nothing_beyond_the_control() -> None:
    html = lens_html(_card([], _meta(passed=0, shown=0, margins=[], p=[], best_margin=21.1, dropped_below_control=3,
                                     dropped_unreadable=5, dropped_not_in_corpus=5), rank=2, sub=1))
    tags = _parse(html)
    assert ("div", {"class": "lens", "id": "lens-2-sub"}) in tags.tags
    assert not any(t == "ul" for t, _ in tags.tags)
    text = "".join(tags.text)
    assert "nothing beyond the control. No token's logit exceeds that of each of 128" in text
    assert "(the component's largest margin: 21.1)" in text
    assert "strongest tokens: 5 absent from the run's sampled activations and 3 below the control." in text
    assert "unreadable (" not in text  # all 5 unreadable ones are the absent ones


def test_lens_without_control_is_marked() -> None:
    html = lens_html(_card([(" self", 12.5)]))  # a card from before the control: no meta
    assert 'class="meta warn"' in html and "not compared with any control" in html and "12.50" in html
    plain = lens_html(_card([(" self", 12.5)], {"control": None, "plain_top": [[" self", 12.5]],
                                                 "dropped_unreadable": 0, "dropped_not_in_corpus": 0}))
    assert "not compared with any control" in plain and "Dropped" not in plain


def test_lens_id_unique_for_cards_and_subcards() -> None:
    assert lens_id(_card([], rank=4)) == "lens-4" and lens_id(_card([], rank=4, sub=1)) == "lens-4-sub"
