"""The report's sample section: its ids, its sentences against the sample's numbers, the sources' table in the
sample's order, escaping, and the warning when windows are not what the sentence says."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pandas as pd

from actgeo_assets.lib.analysis.sample import describe_sample
from actgeo_assets.lib.outputs.report_sample import sample_section

EVIL = "<img src=x onerror=alert(1)>"


class _Reader(HTMLParser):
    """Text by element id, the sources table's rows (cells' text) and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.rows: list[list[str]] = []
        self.tags: list[str] = []
        self._stack: list[tuple[str, str | None]] = []  # open elements: (tag, id)
        self._in_table = False

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag not in ("br", "img", "meta", "link", "hr", "input"):
            self._stack.append((tag, a.get("id")))
        if a.get("id"):
            self.text.setdefault(a["id"], "")
        if a.get("id") == "sample-sources":
            self._in_table = True
        if self._in_table and tag == "tr":
            self.rows.append([])
        if self._in_table and tag in ("td", "th") and self.rows:
            self.rows[-1].append("")

    def handle_endtag(self, tag) -> None:
        if tag == "table":
            self._in_table = False
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data) -> None:
        for _, i in self._stack:
            if i:
                self.text[i] += data
        if self._in_table and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


def _sample(source_c: str = "c plays") -> dict:
    positions = {0: range(1, 8), 1: range(1, 8), 2: range(1, 4), 3: range(1, 8), 4: range(1, 4)}
    source = {0: "b news", 1: "a code", 2: "a code", 3: "b news", 4: source_c}
    rows = [(d, p, source[d], 10 * p) for d, ps in positions.items() for p in ps]
    tokens = pd.DataFrame(rows, columns=["doc_id", "position", "source", "char_end"])
    docs = pd.DataFrame({"doc_id": list(positions), "source": [source[d] for d in positions],
                         "work": pd.Series([None, None, None, None, "Hamlet & <Lear>"], dtype=object),
                         "text": ["x" * 100] * 5})
    return describe_sample({"context_len": 8, "exclude_bos": True, "corpus": "builtin:pile-like"}, tokens, docs,
                           200, capture_stats=[{"n_docs_truncated": 3, "n_cut_by_budget": 4}])


def _read(html_text: str) -> _Reader:
    reader = _Reader()
    reader.feed(html_text)
    return reader


def test_sentences_carry_the_samples_numbers() -> None:
    sample = _sample()
    r = _read(sample_section(sample))
    text = " ".join(r.text["sample"].split())
    assert "These 27 activations come from 5 documents of the 200 of the corpus builtin:pile-like (2.5%;" in text
    assert "the 5 used lie between doc_id 0 and 4" in text
    assert "first 8 tokens, <bos> included" in r.text["sample-windows"]
    per = r.text["sample-per-document"]
    assert "3 at least, median 7, at most 7 (mean 5.4)" in per
    assert f"{27 / 5:.1f}" == "5.4"
    assert "3 documents fill a whole window (7 activations); 2 documents give fewer" in per
    assert "3 documents used went on past the window" in per and "cut 4 activations" in per
    assert "median 70.0% of its characters (from 30.0% to 70.0%)" in per
    assert "sample-window-check" not in r.text  # every window starts at position 1


def test_the_sources_table_follows_the_samples_order_and_escapes() -> None:
    sample = _sample(source_c=EVIL)
    html_text = sample_section(sample)
    assert EVIL not in html_text and "<img" not in html_text and "<Lear>" not in html_text
    r = _read(html_text)
    assert "img" not in r.tags and r.text["sample-h"] == "The sample"
    header, *body = r.rows
    assert header == ["source", "activations", "share of activations", "documents", "share of documents",
                      "works (documents, activations)"]
    assert [row[0] for row in body] == [s["source"] for s in sample["sources"]] == ["b news", "a code", EVIL]
    for row, s in zip(body, sample["sources"], strict=True):
        assert row[1:5] == [f"{s['activations']:,}", f"{s['activation_share']:.1%}", f"{s['documents']:,}",
                            f"{s['document_share']:.1%}"]
    assert body[2][5] == "Hamlet & <Lear> (1, 3)" and body[0][5] == ""
    assert re.search(r'<table id="sample-sources">', html_text) and html_text.count('data-source="') == 3


def test_no_works_column_without_works_and_a_broken_window_is_a_warning() -> None:
    sample = _sample()
    sample["sources"] = [{**s, "works": []} for s in sample["sources"]]
    sample["documents_from_window_start"] = 4
    sample["corpus_documents"] = None
    r = _read(sample_section(sample))
    assert r.rows[0][-1] == "share of documents"
    assert "1 document of 5" in r.text["sample-window-check"]
    assert "how many documents it holds is not recorded" in r.text["sample-documents"]
