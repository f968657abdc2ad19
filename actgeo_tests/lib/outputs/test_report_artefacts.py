"""The report's artefact section and card spans: the numbers of the JSON they are given, in stable ids, every
data-derived string escaped."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.cards import Card
from actgeo_assets.lib.analysis.inputs import artefact_summary
from actgeo_assets.lib.analysis.tokens import Context
from actgeo_assets.lib.graph import canonical_labels
from actgeo_assets.lib.outputs.report_artefacts import artefact_section, card_artefact_html, documents_phrase

EVIL = "<img src=x onerror=alert(1)>"


class _Table(HTMLParser):
    """Rows of ``<table id=...>`` as lists of cell texts, and every element's id."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.rows, self.ids, self.tags = table_id, False, [], [], []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "table" and a.get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _doc(setting: str = "flag") -> dict:
    """An artefact JSON of a hand-built run: component 1 (rank 2) is one input repeated 4 times (token EVIL)."""
    labels = canonical_labels(np.array([0] * 6 + [1] * 4 + [2, 2, 3]))
    keys = np.array([1, 1, 2, 3, 4, 5, 9, 9, 9, 9, 6, 7, 8], dtype=np.uint64)
    tokens = pd.DataFrame({"position": [1, 2, 3, 4, 5, 6, 1, 1, 1, 1, 7, 8, 9], "token": ["a"] * 6 + [EVIL] * 4 + ["b"] * 3})
    early = tokens["position"].to_numpy() < 4
    x = np.eye(13, dtype=np.float32)  # orthogonal unit rows: without the early positions, all singletons
    return artefact_summary(labels, keys, early, None if setting == "exclude" else (lambda i: x[i]),
                            threshold=0.7, setting=setting, limit=4, tokens=tokens, device="cpu")


def test_artefact_section_shows_the_json() -> None:
    doc = _doc()
    page = artefact_section(doc)
    t = _Table("artefact-summary")
    t.feed(page)
    assert {"artefacts", "artefact-summary", "one-input-components", "early-positions"} <= set(t.ids)
    assert t.rows[0] == ["quantity", "as captured", "identical inputs counted once", "without early positions"]
    body = {r[0]: r[1:] for r in t.rows[1:]}
    keys = {"n": "nodes of the graph (activations; distinct inputs in the middle column)", "n_components": "components",
            "largest": "largest component", "singletons": "singletons",
            "non_singleton": "non-singleton components besides the largest"}
    for key, name in keys.items():
        want = [doc["summary"][key], doc["summary_distinct"][key], doc["summary_without_early"][key]]
        assert body[name] == [f"{int(v):,}" for v in want], key
    assert body["largest / all nodes"][0] == f"{100 * doc['summary']['largest_fraction']:.1f}%"
    assert body["second largest component"] == [str(doc["summary"]["top_sizes"][1]),
                                                str(doc["summary_distinct"]["top_sizes"][1]),
                                                str(doc["summary_without_early"]["top_sizes"][1])]
    # the hand-built run: 13 activations, 9 distinct inputs; rank 2 is one input x4 and becomes a singleton
    assert body[keys["n"]][:2] == ["13", "9"] and body["singletons"][:2] == ["1", "2"]
    text = re.sub(r"<[^>]+>", "", page)
    assert "6 of the 13 activations share their model input" in text
    assert "1 component is ONE model input repeated, not a cluster: rank 2 (4 copies of" in text
    assert EVIL not in page and "&lt;img src=x" in page  # the token, escaped
    assert "early_positions=flag" in text and f"{doc['n_early']} early activations kept in the graph" in text


def test_artefact_section_under_exclude_and_skipped() -> None:
    doc = _doc("exclude")
    doc["excluded_early"] = 12
    doc["n_early"] = 0
    doc["summary_without_early"] = doc["summary"]
    text = re.sub(r"<[^>]+>", "", artefact_section(doc))
    assert "early_positions=exclude" in text and "left 12 early activations out of the graph" in text
    t = _Table("artefact-summary")
    t.feed(artefact_section(doc))
    assert t.rows[0][1] == "as run (early positions excluded)"
    skipped = {**_doc(), "summary_without_early": {"skipped": "too many <rows>"}}
    page = artefact_section(skipped)
    t = _Table("artefact-summary")
    t.feed(page)
    assert all(r[3] == "\u2014" for r in t.rows[1:]) and "too many &lt;rows&gt;" in page
    none = {**_doc(), "n_one_input_components": 0, "one_input_components": []}
    assert 'class="ok" id="one-input-components"' in artefact_section(none)


def _card(**fields) -> Card:
    ctx = Context(doc_id="d", source="Github", token="    ", left="", right="x", cosine_to_mean=1.0, row=3,
                  position=1, char_start=0, char_end=4)
    base = dict(rank=13, label_id=12, size=10, provisional_label="p", n_documents=10, source_mix={"Github": 10},
                top_tokens=[("    ", 10)], contexts=[ctx], readout=None, threshold=0.7)
    return Card(**{**base, **fields})


def test_card_spans() -> None:
    one = _card(n_inputs=1, n_early=10, recall={"token": "    ", "held": 10, "total": 110})
    html = card_artefact_html(one)
    assert documents_phrase(one) == "10 copies of one model input, in 10 documents"
    assert '<span class="meta inputs one-input">10 copies of one model input, in 10 documents: an artefact' in html
    assert '<span class="meta early">early positions 10 of 10</span>' in html
    assert re.search(r'<span class="meta recall"[^>]*>holds 10 of 110 &#x27;    &#x27;</span>', html)
    many = _card(rank=3, size=27, n_documents=18, n_inputs=21, n_early=9,
                 recall={"token": EVIL, "held": 22, "total": 22})
    html = card_artefact_html(many.to_dict())  # a card's dict works too
    assert '<span class="meta inputs">21 distinct inputs of 27 activations</span>' in html
    assert "early positions 9 of 27" in html and EVIL not in html and "holds 22 of 22" in html
    assert documents_phrase(many) == "18 documents" and documents_phrase(_card(n_documents=1, size=1)) == "1 document"
    copies = _card(rank=3, size=27, n_documents=18, n_inputs=21, n_input_documents=13)
    assert documents_phrase(copies) == "18 documents (13 counting each input once)"
    assert card_artefact_html(_card()) == ""  # nothing computed, nothing shown
