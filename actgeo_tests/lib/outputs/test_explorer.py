"""The explorer's embedded data (lib/outputs/explorer.py) against sweep.csv and an independent float64 brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.analysis.cards import build_cards, giant_subcards
from actgeo_assets.lib.analysis.percolation import fine_thresholds
from actgeo_assets.lib.analysis.tokens import next_token_column
from actgeo_assets.lib.graph import single_linkage_forest
from actgeo_assets.lib.outputs.explorer import (
    MAX_LEVEL_NODES,
    card_key,
    explorer_data,
    spectrum_ranks,
    write_explorer,
)
from actgeo_assets.lib.outputs.explorer_page import read_embedded
from actgeo_assets.lib.store.layout import RunLayout, save_csv, save_json, save_npy
from actgeo_tests.support.oracle import brute_force_labels, clustered

T_RUN = 0.7
EXACT = (0.5, 0.6, 0.7, 0.8, 0.9)
T_SUB = 0.8


def _tokens_docs(n: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A token table of ``n`` rows over 30 documents, whose words are real substrings of the documents' text;
    one document holds markup that must not break the page (``</script>``, the page's own placeholders)."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "</script>", "__SCRIPT__", "eps"]
    rows, texts = [], {}
    doc_of = np.sort(rng.integers(0, 30, n))
    for d in range(30):
        ws = [words[(d + k) % len(words)] for k in range(int((doc_of == d).sum()) + 1)]
        texts[d] = " ".join(ws)
    pos: dict[int, int] = {}
    for r, d in enumerate(doc_of.tolist()):
        k = pos.get(d, 0)
        pos[d] = k + 1
        ws = texts[d].split(" ")
        start = sum(len(w) + 1 for w in ws[:k])
        rows.append({"row": r, "doc_id": d, "position": k + 1, "token_id": k, "token": " " + ws[k],
                     "char_start": start, "char_end": start + len(ws[k]), "source": f"src{d % 3}"})
    tokens = pd.DataFrame(rows)
    tokens["next_token"] = next_token_column(tokens)
    docs = pd.DataFrame({"doc_id": list(texts), "source": [f"src{d % 3}" for d in texts], "text": list(texts.values())})
    return tokens, docs


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory):
    """A run's files written by hand: 700 clustered unit rows, the forest, labels, sweep.csv and cards.json
    (real cards of ranks 2-3 and of the giant's sub-components at 0.8); then the explorer page."""
    x = clustered(700, 12, seed=3, k=5)
    forest = single_linkage_forest(x, min_threshold=0.5, exact_at=EXACT, device="cpu")
    labels = forest.labels_at(T_RUN)
    sweep = forest.sweep(fine_thresholds(0.5, EXACT))
    tokens, docs = _tokens_docs(len(x))
    layout = RunLayout(tmp_path_factory.mktemp("explorer") / "data", "t")
    forest.save(layout.forest)
    save_npy(layout.labels, labels)
    save_csv(layout.sweep, sweep)
    rows = [(0, x)]
    cards = build_cards(labels, rows, tokens, docs, ranks=(2, 3), threshold=T_RUN)
    giant = np.flatnonzero(labels == 0)
    subs = giant_subcards(forest.labels_at(T_SUB)[giant], giant, rows, tokens, docs, higher_threshold=T_SUB,
                          ranks=(1, 3))
    save_json(layout.cards, {"cards": [c.to_dict() for c in cards], "subcard_threshold": T_SUB,
                             "subcards": [c.to_dict() for c in subs]})
    path = write_explorer(layout, tokens=tokens, docs=docs, threshold=T_RUN, description="a small run", rows=rows)
    text = path.read_text()
    return x, labels, layout, text, read_embedded(text), cards, subs


def test_slider_counts_equal_sweep_csv_and_float64_brute_force(small_run) -> None:
    x, _, layout, _, data, _, _ = small_run
    sweep = pd.read_csv(layout.sweep)
    assert len(data["slider"]) == len(sweep) == len(data["sweep"]) == 46
    for s, (_, row) in zip(data["slider"], sweep.iterrows(), strict=True):
        assert s["threshold"] == pytest.approx(row["threshold"])
        for col in ("n_components", "largest", "second_largest", "singletons", "non_singleton"):
            assert s[col] == row[col], (s["threshold"], col)
        ref = np.bincount(brute_force_labels(x, s["threshold"]))  # canonical: sizes non-increasing
        assert s["n_components"] == len(ref)
        assert s["top"] == ref[:10].tolist()
        assert s["singletons"] == int((ref == 1).sum())
        assert s["non_singleton"] == int((ref[1:] >= 2).sum())
        assert data["cards"][s["giant"]]["size"] == ref[0]  # the percolation point's card is that giant
    assert 1 < data["slider"][data["slider_start"]]["n_components"] < len(x)
    assert data["slider"][data["slider_start"]]["threshold"] == T_RUN


def test_icicle_nodes_are_brute_force_components_of_the_giant(small_run) -> None:
    x, _, _, _, data, _, _ = small_run
    ic = data["icicle"]
    giant = np.flatnonzero(brute_force_labels(x, T_RUN) == 0)
    assert ic["giant"] == giant.size and ic["levels"][0] == T_RUN
    assert ic["levels"] == pytest.approx([0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    by_id = {nd["id"]: nd for nd in ic["nodes"]}
    seen_deeper = False
    for li, t in enumerate(ic["levels"]):
        ref = brute_force_labels(x, t)
        sub = np.bincount(ref[giant])
        want = sorted((int(s) for s in sub if s >= ic["min_size"]), reverse=True)[:MAX_LEVEL_NODES]
        nodes = [nd for nd in ic["nodes"] if nd["level"] == li]
        assert sorted((nd["size"] for nd in nodes), reverse=True) == want, t
        seen_deeper |= li > 0 and len(nodes) > 1
        for nd in nodes:
            card = data["cards"][nd["key"]]
            assert card["size"] == nd["size"]
            # the card's contexts are members of one brute-force component of that size, inside the giant
            rows = [int(r) for r in _context_rows(card["html"])]
            assert rows and len({int(ref[r]) for r in rows}) == 1
            assert int((ref == ref[rows[0]]).sum()) == nd["size"] and set(rows) <= set(giant.tolist())
            if li:
                parent = by_id[nd["parent"]]
                assert parent["level"] == li - 1
                assert parent["x"] - 1e-6 <= nd["x"] and nd["x"] + nd["w"] <= parent["x"] + parent["w"] + 1e-3
                prev = brute_force_labels(x, ic["levels"][li - 1])
                assert int((prev == prev[rows[0]]).sum()) == parent["size"]  # nested in its parent
    assert seen_deeper, "the fixture should split the giant"


def _context_rows(card_html: str) -> list[int]:
    """Global rows of a card's contexts (``data-row`` of each ``li.ctx``)."""
    import re

    return [int(r) for r in re.findall(r'data-row="(\d+)"', card_html)]


def test_spectrum_points_and_cards(small_run) -> None:
    x, labels, _, _, data, cards, subs = small_run
    sizes = np.bincount(brute_force_labels(x, T_RUN))
    assert np.array_equal(sizes, np.bincount(labels))
    pts = data["spectrum"]
    assert [p[0] for p in pts] == spectrum_ranks(sizes).tolist()
    for rank, size, key in pts:
        assert size == sizes[rank - 1] and key == card_key(T_RUN, rank - 1)
        assert data["cards"][key]["size"] == size and data["cards"][key]["rank"] == rank
    # ranks 2-3 and the sub-cards at 0.8 are the full cards of cards.json
    for c in cards:
        got = data["cards"][card_key(T_RUN, c.rank - 1)]
        assert got["full"] and got["size"] == c.size
    ref_sub = brute_force_labels(x, T_SUB)
    for c in subs:
        got = data["cards"][card_key(T_SUB, int(ref_sub[c.contexts[0].row]))]
        assert got["full"] and got["size"] == c.size and got["title"].startswith(f"Sub-component {c.rank} ")
    assert not data["cards"][card_key(T_RUN, int(pts[-1][0]) - 1)]["full"]


def test_page_is_self_contained_and_escaped(small_run) -> None:
    _, _, _, text, data, _, _ = small_run
    assert text.count("</script>") == 2  # the JSON and the code; the corpus' '</script>' stays escaped
    assert "<script src" not in text and "<link" not in text and "http://" not in text.replace(
        "http://www.w3.org/2000/svg", "")
    assert len(text) < 2_000_000
    assert data["lookup_args"] == "--profile t"  # the lookup command names the run's profile (not the default)
    # the corpus' markup round-trips as escaped text, and the page's placeholders in it are never substituted
    assert any("&lt;/script&gt;" in c["html"] for c in data["cards"].values())
    assert any("__SCRIPT__" in c["html"] for c in data["cards"].values())


def test_spectrum_ranks_bounded() -> None:
    rng = np.random.default_rng(0)
    sizes = np.sort(np.concatenate([[800_000], rng.zipf(1.6, 150_000).clip(1, 50_000)]))[::-1]
    ranks = spectrum_ranks(sizes, cap=300)
    assert len(ranks) <= 300 + 1 and ranks[0] == 1 and ranks[-1] == len(sizes)
    assert set(range(1, 51)) <= set(ranks.tolist())
    small = np.array([5, 3, 3, 1, 1, 1])
    assert spectrum_ranks(small, head=1).tolist() == [1, 2, 3, 4, 6]  # first and last rank of each size


def test_mismatched_files_are_named(small_run) -> None:
    x, labels, _, _, _, _, _ = small_run
    forest = single_linkage_forest(x[:100], min_threshold=0.5, exact_at=EXACT, device="cpu")
    tokens, docs = _tokens_docs(len(x))
    with pytest.raises(ValueError, match="labels have 700 rows but the forest has 100"):
        explorer_data(forest, labels, pd.DataFrame(), tokens, docs, threshold=T_RUN, rows=[(0, x)])
    with pytest.raises(ValueError, match="outside the forest's range"):
        explorer_data(forest, labels[:100], pd.DataFrame(), tokens.iloc[:100], docs, threshold=0.3, rows=[(0, x)])
