"""The baselines and per-source sections, parsed back with html.parser: every number shown is the dict's,
every figure says which activations it covers, and data-derived strings are escaped."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.baseline import token_baseline
from actgeo_assets.lib.analysis.numbers import format_number
from actgeo_assets.lib.analysis.sources import source_breakdown
from actgeo_assets.lib.analysis.tokens import quote_token
from actgeo_assets.lib.graph import ForestEdges, SingleLinkageForest
from actgeo_assets.lib.outputs.report_baselines import baseline_section, source_section

EVIL = "<script>alert(1)</script>"


class Tables(HTMLParser):
    """Every ``<table id=...>`` as a list of rows: ``(row attributes, [(cell tag, cell attributes, text)])``;
    ``ids``: every element id in document order; ``text``: the text of each element with an id."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[dict, list[tuple[str, dict, str]]]]] = {}
        self.ids: list[str] = []
        self.text: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list | None = None
        self._open: list[tuple[str, str | None]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
            self.text[a["id"]] = ""
        self._open.append((tag, a.get("id")))
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append((a, []))
        elif tag in ("td", "th") and self._table:
            self._cell = [tag, a, ""]

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()[0] != tag:
            pass
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1][1].append((self._cell[0], self._cell[1], self._cell[2].strip()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[2] += data
        for _, i in self._open:
            if i:
                self.text[i] += data


def _run() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(5)
    n = 240
    src = np.arange(1, n)
    dst = np.array([rng.integers(0, i) for i in src])
    keep = rng.random(n - 1) < 0.88
    forest = SingleLinkageForest(n, ForestEdges(src[keep], dst[keep], rng.uniform(0.6, 1, n - 1)[keep],
                                                min_threshold=0.5))
    docs = np.repeat(np.arange(8), 30)
    vocab = np.array([" the", "a", "\n", EVIL, " of", "b", "c"], dtype=object)
    tokens = pd.DataFrame({"doc_id": docs, "position": np.tile(np.arange(1, 31), 8),
                           "token": vocab[rng.integers(0, len(vocab), n)],
                           "source": np.array(["news", EVIL, "code", "plays", "law"], dtype=object)[docs % 5]})
    return forest.labels_at(0.7), forest.labels_at(0.85), tokens


def test_baseline_section_shows_the_dicts_numbers_with_their_coverage() -> None:
    labels, _, tokens = _run()
    base = token_baseline(labels, tokens)
    base["mixed"] = [{"rank": 2, "size": 9, "token_purity": 0.3333, "n_distinct_tokens": 7, "n_documents": 3,
                      "top_tokens": [[EVIL, 3], ["a", 1]], "n_more_tokens": 5,
                      "sources": [["news", 4], ["code", 3], ["law", 1]], "n_more_sources": 2},
                     {"rank": 7, "size": 4, "token_purity": 0.25, "n_distinct_tokens": 4, "n_documents": 1,
                      "top_tokens": [["x", 1]], "n_more_tokens": 0, "sources": [["news", 4]], "n_more_sources": 0}]
    page = baseline_section(base, carded={2})
    assert EVIL not in page and "&lt;script&gt;" in page
    doc = Tables(page)
    assert [i for i in doc.ids if i in ("baselines", "baseline-headline", "baselines-whole", "baseline",
                                        "mixed-components")] == ["baselines", "baseline-headline",
                                                                  "baselines-whole", "baseline", "mixed-components"]
    rows = doc.tables["baselines-whole"][1:]  # the first row is the header
    assert len(rows) == len(base["baselines"]) == 9
    for (attrs, cells), b in zip(rows, base["baselines"], strict=True):
        assert (attrs["data-grouping"], attrs["data-coverage"]) == (b["grouping"], b["coverage"])
        text = [c[2] for c in cells]
        assert text[0] == b["reference"] and text[1] == f"{b['n_activations']:,}"
        assert text[3:6] == [f"{b['n_components']:,}", f"{b['n_groups']:,}", format_number(b["homogeneity"])]
        assert text[6:] == [format_number(b["completeness"]), format_number(b["v_measure"]), format_number(b["ami"])]
        assert all(c[1].get("class") == "num" for i, c in enumerate(cells) if i not in (0, 2))
    coverages = {b["coverage"]: b["covers"] for b in base["baselines"]}
    for key, covers in coverages.items():
        assert covers in doc.text["baseline-coverages"], key
    every = next(b for b in base["baselines"] if (b["grouping"], b["coverage"]) == ("token", "all"))
    head = doc.text["baseline-headline"]
    assert every["covers"] in head and f"V-measure {format_number(every['v_measure'])}" in head
    assert f"V-measure {format_number(base['v_measure'])}" in head and base["covers"] in head
    facts = {cells[0][2]: (cells[1][2], cells[2][2]) for _, cells in doc.tables["baseline"][1:]}
    assert facts["V-measure with token string"] == (format_number(base["v_measure"]), base["covers"])
    assert facts["... of one token string"][0] == f"{100 * base['share_one_token']:.1f}%"
    assert facts["their activations / distinct token strings"][0] == (
        f"{base['n_members']:,} / {base['n_token_strings']:,}")
    mixed = doc.tables["mixed-components"]
    assert [c[2] for c in mixed[0][1]][:2] == ["size rank", "activations"]
    assert [a["data-rank"] for a, _ in mixed[1:]] == ["2", "7"] and 'href="#card-2"' in page
    assert 'href="#card-7"' not in page
    first = [c[2] for c in mixed[1][1]]
    assert first[1:5] == ["9", "33.3%", "7", "3"]
    assert first[5] == f"{quote_token(EVIL)} 3, 'a' 1, +5 more" and first[6] == "news 4, code 3, law 1, +2 more"
    assert [c[2] for c in mixed[2][1]][5:] == ["'x' 1", "news 4"]  # nothing left out: no "+0 more"
    assert baseline_section(None) == "" and baseline_section({}) == ""


def test_skipped_ami_is_written_as_skipped() -> None:
    labels, _, tokens = _run()
    base = token_baseline(labels, tokens, max_cells=1)
    cells = Tables(baseline_section(base)).tables["baselines-whole"][1][1]
    assert cells[-1][2] == "skipped" and "above 1 cells" in cells[-1][1]["title"]


def test_source_section_shows_the_dicts_numbers() -> None:
    labels, lab_c, tokens = _run()
    out = source_breakdown(labels, tokens, 0.7, lab_c, 0.85)
    page = source_section(out)
    assert EVIL not in page
    doc = Tables(page)
    assert doc.ids[0] == "sources" and {"source-breakdown", "transition-sources", "transition-separated",
                                        "transition-left"} <= set(doc.ids)
    body = doc.tables["source-breakdown"][2:]  # two header rows
    assert [a["data-source"] for a, _ in body[:-1]] == out["order"]
    keys = ("share_of_giant", "share_of_small", "share_of_singletons", "in_giant")
    for (_, cells), r, rc in zip(body, out["at_threshold"]["sources"], out["at_transition"]["sources"], strict=False):
        text = [c[2] for c in cells]
        assert text[0] == r["source"] and text[1] == f"{r['n']:,}"
        assert text[2:] == [f"{100 * x[k]:.1f}%" for x in (r, rc) for k in keys]
        assert all(c[1].get("class") == "num" for c in cells[1:])
    total = [c[2] for c in body[-1][1]]
    t = out["at_threshold"]
    assert total[1] == f"{t['n']:,}" and total[5] == f"{100 * t['n_giant'] / t['n']:.1f}%"
    header = " ".join(c[2] for c in doc.tables["source-breakdown"][0][1])
    assert f"giant {t['n_giant']:,}" in header and f"singletons {out['at_transition']['n_singletons']:,}" in header
    tr = out["transition"]
    sep = doc.tables["transition-separated"][1:]
    assert [a["data-rank"] for a, _ in sep] == [str(s["rank"]) for s in tr["separated"]]
    for (_, cells), s in zip(sep, tr["separated"], strict=True):
        text = [c[2] for c in cells]
        assert text[:5] == [str(s["rank"]), f"{s['size']:,}", f"{s['from_giant']:,}", f"{s['n_distinct_tokens']:,}",
                            f"{s['n_documents']:,}"]
    left = doc.tables["transition-left"][1:]
    for (_, cells), r in zip(left, tr["left_giant"]["by_source"], strict=True):
        assert [c[2] for c in cells] == [r["source"], f"{r['n_left']:,}", f"{100 * r['share_of_left']:.1f}%",
                                         f"{100 * r['of_its_giant']:.1f}%"]
    lg = tr["left_giant"]
    words = doc.text["transition-sources"]
    assert f"{lg['n']:,} of the giant's {lg['n_giant_at_threshold']:,} activations" in words
    assert f"the giant at 0.85 holds {lg['n_giant_at_t_c']:,}" in words
    assert source_section(None) == ""


def test_source_section_without_transition() -> None:
    labels, _, tokens = _run()
    doc = Tables(source_section(source_breakdown(labels, tokens, 0.7)))
    assert "transition-separated" not in doc.ids and len(doc.tables["source-breakdown"][1][1]) == 4
