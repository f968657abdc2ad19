"""lib/analysis/compare.py against independent references: a hand-built match, pandas' crosstab, a brute-force
double loop over two hand-made tokenizations of the same texts, and a dense float64 Gram matrix with scipy's
connected components."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from actgeo_assets.lib.analysis.compare import (
    MATCH_COLUMNS,
    choose_method,
    common_documents,
    doc_hashes,
    match_cards,
    normalizations_at_common_n,
    summary_row,
    top_token_strings,
)

TEXTS = {0: "the cat sat on the mat", 1: "def f(x): return x", 2: "now is the time, now"}


def word_tokens(texts: dict[int, str]) -> pd.DataFrame:
    """One activation per word, the word's leading space included (as BPE tokenizers do)."""
    rows = []
    for doc, text in texts.items():
        start, pos = 0, 1
        for k, word in enumerate(text.split(" ")):
            s = start if k == 0 else start - 1  # ' word' covers the space before it
            e = start + len(word)
            rows.append({"doc_id": doc, "position": pos, "token_id": hash(word) % 1000,
                         "token": text[s:e], "char_start": s, "char_end": e})
            start, pos = e + 1, pos + 1
    return pd.DataFrame(rows)


def char_tokens(texts: dict[int, str]) -> pd.DataFrame:
    """One activation per character."""
    return pd.DataFrame([{"doc_id": doc, "position": i + 1, "token_id": ord(ch), "token": ch, "char_start": i,
                          "char_end": i + 1} for doc, text in texts.items() for i, ch in enumerate(text)])


def chunk_tokens(texts: dict[int, str], seed: int, gaps: bool = False, overlap: bool = False) -> pd.DataFrame:
    """Random chunks of 1-4 characters: a third tokenization whose spans straddle the others'. ``gaps``: about
    half the chunks dropped (text not captured: members touching a kept chunk only at an end have no
    counterpart there); ``overlap``: about half the chunks start a character early and about half are followed
    by a one-character piece nested in them (spans of one tokenization overlap, as byte pieces can; the ends
    are then not sorted with the starts)."""
    rng = np.random.default_rng(seed)
    rows = []
    for doc, text in texts.items():
        i, pos = 0, 1
        while i < len(text):
            j = min(len(text), i + int(rng.integers(1, 5)))
            s = i - 1 if overlap and i > 0 and rng.random() < 0.5 else i
            if not (gaps and rng.random() < 0.5):
                rows.append({"doc_id": doc, "position": pos, "token_id": 7, "token": text[s:j], "char_start": s,
                             "char_end": j})
                pos += 1
            if overlap and j - s >= 2 and rng.random() < 0.5:  # a piece nested in the chunk: ends go back
                rows.append({"doc_id": doc, "position": pos, "token_id": 8, "token": text[s], "char_start": s,
                             "char_end": s + 1})
                pos += 1
            i = j
    return pd.DataFrame(rows)


def brute_spans(tok_a: pd.DataFrame, lab_a: np.ndarray, tok_b: pd.DataFrame, lab_b: np.ndarray, card: int,
                docs: set[int]) -> dict[str, object]:
    """The span matching of one card by a Python double loop over every (A member, B activation) pair."""
    chars_by_b: Counter[int] = Counter()
    touched: dict[int, set[int]] = {}
    members = [i for i in range(len(tok_a)) if lab_a[i] == card]
    for i in members:
        a = tok_a.iloc[i]
        for j in range(len(tok_b)):
            b = tok_b.iloc[j]
            if a.doc_id != b.doc_id or a.doc_id not in docs:
                continue
            ov = min(a.char_end, b.char_end) - max(a.char_start, b.char_start)
            if ov > 0:
                chars_by_b[int(lab_b[j])] += ov
                touched.setdefault(i, set()).add(int(lab_b[j]))
    if not chars_by_b:
        return {"b": None, "shared": 0, "covered": 0}
    chars_a = sum(int(tok_a.iloc[i].char_end - tok_a.iloc[i].char_start) for i in members)

    def jaccard(k: int) -> float:
        chars_b = int(sum(tok_b.char_end[lab_b == k] - tok_b.char_start[lab_b == k]))
        return chars_by_b[k] / (chars_a + chars_b - chars_by_b[k])

    # the most characters; ties: the higher Jaccard, then the smaller label
    best = min(chars_by_b, key=lambda k: (-chars_by_b[k], -jaccard(k), k))
    inter = chars_by_b[best]
    return {"b": best, "shared": sum(best in s for s in touched.values()), "covered": len(touched),
            "jaccard": jaccard(best), "char_overlap": inter / chars_a}


def test_rows_hand_built() -> None:
    """Six activations of one document; card 0 of A = rows 0-2, card 1 = rows 3-4. B puts rows 0, 1 and 5 in
    component 1 and rows 2, 3, 4 in component 0: card 0's best is component 1 (2 of 3 members; Jaccard 2 / 4),
    card 1's is component 0 (2 of 2; Jaccard 2 / 3)."""
    tok = pd.DataFrame({"doc_id": [5] * 6, "position": range(1, 7), "token_id": range(6), "token": list("abcdef"),
                        "char_start": range(6), "char_end": range(1, 7)})
    lab_a = np.array([0, 0, 0, 1, 1, 2])
    lab_b = np.array([1, 1, 0, 0, 0, 1])
    got = match_cards(tok, lab_a, tok, lab_b, [0, 1], np.array([5]), "rows").set_index("card_rank")
    assert list(got.columns) == [c for c in MATCH_COLUMNS if c != "card_rank"]
    assert got.loc[1, ["b_rank", "shared", "covered", "not_covered"]].tolist() == [2, 2, 3, 0]
    assert got.loc[1, "overlap"] == pytest.approx(2 / 3) and got.loc[1, "jaccard"] == pytest.approx(2 / 4)
    assert got.loc[2, ["b_rank", "b_size", "shared"]].tolist() == [1, 3, 2]
    assert got.loc[2, "overlap"] == 1.0 and got.loc[2, "jaccard"] == pytest.approx(2 / 3)
    # a document left out of the comparison leaves every member uncovered
    none = match_cards(tok, lab_a, tok, lab_b, [0], np.array([9]), "rows")
    assert none.loc[0, "b_rank"] is None or pd.isna(none.loc[0, "b_rank"])
    assert none.loc[0, ["shared", "covered", "not_covered"]].tolist() == [0, 0, 3]


def test_rows_against_crosstab() -> None:
    """Random partitions of 3,000 activations, B holding a shuffled 90% of them: best match, shared and Jaccard
    from pandas.crosstab over the activations both hold."""
    rng = np.random.default_rng(3)
    n = 3000
    tok = pd.DataFrame({"doc_id": np.repeat(np.arange(30), 100), "position": np.tile(np.arange(1, 101), 30),
                        "token_id": rng.integers(0, 50, n), "token": "x", "char_start": 0, "char_end": 1})
    lab_a = rng.integers(0, 40, n)
    lab_b_all = rng.integers(0, 25, n)
    keep = np.sort(rng.permutation(n)[: int(0.9 * n)])
    order = rng.permutation(len(keep))
    tok_b = tok.iloc[keep[order]].reset_index(drop=True)
    lab_b = lab_b_all[keep[order]]
    cards = list(range(10))
    got = match_cards(tok, lab_a, tok_b, lab_b, cards, np.arange(30), "rows").set_index("card_rank")
    both = pd.DataFrame({"a": lab_a[keep], "b": lab_b_all[keep]})
    table = pd.crosstab(both["a"], both["b"])
    size_b = np.bincount(lab_b)
    for c in cards:
        row = table.loc[c]
        size_a = int((lab_a == c).sum())
        jac = row / (size_a + size_b[row.index] - row)
        tied = jac[row == row.max()]  # ties of the count: the higher Jaccard, then the smaller label
        best = int(tied[tied == tied.max()].index.min())
        assert got.loc[c + 1, "b_rank"] == best + 1
        assert got.loc[c + 1, "shared"] == row.max()
        assert got.loc[c + 1, "covered"] == row.sum()
        assert got.loc[c + 1, "jaccard"] == pytest.approx(row.max() / (size_a + size_b[best] - row.max()))
        assert got.loc[c + 1, "specific_jaccard"] == pytest.approx(jac.max())
        assert got.loc[c + 1, "specific_shared"] == row[jac == jac.max()].max()


@pytest.mark.parametrize("other", ["chars", "chunks", "gaps", "overlap"])
def test_spans_against_brute_force(other: str) -> None:
    """Words of the texts against their characters (or random chunks, with gaps, or overlapping): every card's best
    component, members matched, covered, Jaccard and characters covered equal a Python double loop's; document
    2's text differs in B and is excluded."""
    tok_a = word_tokens(TEXTS)
    texts_b = {**TEXTS, 2: TEXTS[2].upper()}
    tok_b = (char_tokens(texts_b) if other == "chars" else
             chunk_tokens(texts_b, seed=1, gaps=other == "gaps", overlap=other == "overlap"))
    rng = np.random.default_rng(0)
    lab_a = rng.integers(0, 4, len(tok_a))
    lab_b = rng.integers(0, 6, len(tok_b))
    docs_a, docs_b = (pd.DataFrame({"doc_id": list(t), "text": list(t.values())}) for t in (TEXTS, texts_b))
    docs, counts = common_documents(doc_hashes(docs_a), doc_hashes(docs_b))
    assert docs.tolist() == [0, 1] and counts["text_differs"] == 1
    method, why = choose_method(tok_a, tok_b, docs)
    assert method == "spans" and "different tokenizations" in why
    cards = [c for c in range(4) if (lab_a == c).any()]
    got = match_cards(tok_a, lab_a, tok_b, lab_b, cards, docs, "spans").set_index("card_rank")
    for c in cards:
        want = brute_spans(tok_a, lab_a, tok_b, lab_b, c, set(docs.tolist()))
        if want["b"] is None:
            assert pd.isna(got.loc[c + 1, "b_rank"]) and got.loc[c + 1, "covered"] == 0
            continue
        assert got.loc[c + 1, "b_rank"] == want["b"] + 1
        assert got.loc[c + 1, "shared"] == want["shared"]
        assert got.loc[c + 1, "covered"] == want["covered"]
        assert got.loc[c + 1, "not_covered"] == (lab_a == c).sum() - want["covered"]
        assert got.loc[c + 1, "jaccard"] == pytest.approx(want["jaccard"])
        assert got.loc[c + 1, "char_overlap"] == pytest.approx(want["char_overlap"])


def test_spans_nested_in_a_long_token() -> None:
    """B holds a long token [0, 10) with a piece [0, 1) nested in it (ends out of order once sorted by start):
    A's member [5, 7) lies inside the long token only, and is matched to it."""
    tok_b = pd.DataFrame({"doc_id": [0, 0, 0], "position": [1, 2, 3], "token_id": [1, 2, 3],
                          "token": ["aaaaaaaaaa", "a", "bb"], "char_start": [0, 0, 10], "char_end": [10, 1, 12]})
    tok_a = pd.DataFrame({"doc_id": [0], "position": [1], "token_id": [9], "token": ["aa"], "char_start": [5],
                          "char_end": [7]})
    got = match_cards(tok_a, np.array([0]), tok_b, np.array([1, 0, 2]), [0], np.array([0]), "spans")
    assert got.loc[0, ["b_rank", "shared", "covered"]].tolist() == [2, 1, 1]
    assert got.loc[0, "char_overlap"] == 1.0 and got.loc[0, "jaccard"] == pytest.approx(2 / 10)


def test_spans_of_the_same_words_match_exactly() -> None:
    """A tokenization matched by spans with itself: each card's best component is itself, overlap 1."""
    tok = word_tokens(TEXTS)
    lab = np.arange(len(tok)) % 3
    got = match_cards(tok, lab, tok, lab, [0, 1, 2], np.arange(3), "spans")
    assert (got["b_rank"] == got["card_rank"]).all() and (got["overlap"] == 1.0).all()
    assert np.allclose(got["jaccard"], 1.0) and (got["not_covered"] == 0).all()
    assert choose_method(tok, tok, np.arange(3))[0] == "rows"


def test_match_cards_rejects_bad_input() -> None:
    tok = word_tokens(TEXTS)
    lab = np.zeros(len(tok), dtype=int)
    with pytest.raises(ValueError, match="method"):
        match_cards(tok, lab, tok, lab, [0], np.arange(3), "words")
    with pytest.raises(ValueError, match="not components of A"):
        match_cards(tok, lab, tok, lab, [4], np.arange(3), "rows")
    with pytest.raises(ValueError, match="lacks columns"):
        match_cards(tok.drop(columns="char_end"), lab, tok, lab, [0], np.arange(3), "rows")


def _reference(x: np.ndarray, threshold: float) -> dict[str, float]:
    """Components of the unit rows ``x`` from the dense float64 Gram matrix and scipy."""
    gram = x @ x.T
    adj = gram >= threshold
    np.fill_diagonal(adj, False)
    k, labels = connected_components(csr_matrix(adj), directed=False)
    sizes = np.bincount(labels)
    n = len(x)
    return {"n_components": k, "giant_fraction": sizes.max() / n, "singletons": int((sizes == 1).sum()),
            "mean_cosine": (gram.sum() - np.trace(gram)) / (n * (n - 1))}


def test_normalizations_against_dense_gram() -> None:
    """Each normalization's components, giant fraction, singletons and mean cosine equal those of the dense float64
    Gram matrix of the rows normalized by hand (plain L2; minus the rows' mean, then L2; RMSNorm with a llama-style
    weight, then L2)."""
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(6, 16)) * 3 + 5.0  # a shared offset: plain L2 sees one direction
    acts = (centers[rng.integers(0, 6, 300)] + rng.normal(size=(300, 16))).astype(np.float32)
    weight = {"weight": rng.uniform(0.5, 2.0, 16).astype(np.float32), "eps": 1e-6, "kind": "llama", "bias": None}
    table, left_out, dropped = normalizations_at_common_n(acts, [0.7, 0.9], weight, device="cpu")
    assert left_out == {} and dropped == 0
    x = acts.astype(np.float64)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    ways = {"l2": unit(x), "center_l2": unit(x - x.mean(axis=0)),
            "rmsnorm": unit(x / np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-6) * weight["weight"])}
    assert table.loc[table["normalization"] == "l2", "label"].iloc[0] == "plain L2 (the study's recipe)"
    for rec in table.to_dict("records"):
        want = _reference(ways[rec["normalization"]], rec["threshold"])
        assert rec["n"] == 300
        assert rec["n_components"] == want["n_components"], rec
        assert rec["giant_fraction"] == pytest.approx(want["giant_fraction"])
        assert rec["singletons"] == want["singletons"]
        assert rec["mean_cosine"] == pytest.approx(want["mean_cosine"], abs=1e-6)
    by = table.set_index(["normalization", "threshold"])
    assert by.loc[("l2", 0.7), "n_components"] < by.loc[("center_l2", 0.7), "n_components"]  # the offset's effect
    _, left_out, _ = normalizations_at_common_n(acts, [0.7], None, device="cpu")
    assert "next_norm" in left_out["rmsnorm"]


def test_summary_row_reads_the_intervals() -> None:
    summary = {"n": 2000, "n_components": 400, "largest": 1200, "largest_fraction": 0.6, "singletons": 300,
               "non_singleton": 99, "top_sizes": [1200, 40, 9]}
    unc = {"method": "jackknife", "quantities": [
        {"key": "components_per_1000", "low": 180.0, "high": 220.0}, {"key": "n_components", "low": 360, "high": 440},
        {"key": "largest_fraction", "low": 0.55, "high": 0.65}, {"key": "t_c", "low": None, "high": None}]}
    row = summary_row("e", {"model": "m", "layer": 3, "normalization": "l2", "threshold": 0.7}, summary, unc,
                      {"t_c": 0.8, "at_or_above": True})
    assert row["components_per_1000"] == 200.0 and row["second_largest"] == 40
    assert (row["giant_fraction_low"], row["giant_fraction_high"]) == (0.55, 0.65)
    assert row["n_components_high"] == 440 and row["second_largest_low"] is None and row["t_c_low"] is None
    assert row["t_c"] == 0.8 and row["t_c_at_or_above"] is True


def test_top_token_strings_against_counter() -> None:
    rng = np.random.default_rng(2)
    tokens = pd.DataFrame({"token": rng.choice(list("abcde"), 500)})
    labels = rng.integers(0, 8, 500)
    got = top_token_strings(tokens, labels, [0, 3, 7], k=2)
    for lab in (0, 3, 7):
        counts = Counter(tokens["token"][labels == lab])
        want = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
        assert got[lab] == want
