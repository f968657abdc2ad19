"""Cards: member selection (central, diverse), label wording, readout, contexts, shards, sub-cards."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from actgeo_assets.lib.analysis.baseline import component_token_stats, token_baseline
from actgeo_assets.lib.analysis.cards import Card, build_cards, giant_subcards
from actgeo_assets.lib.analysis.labels import provisional_label
from actgeo_assets.lib.analysis.readout import (
    Readout,
    hidden_token_ids,
    next_token_readout,
    readout_rows,
    readout_sample,
    summarize_predictions,
)
from actgeo_assets.lib.analysis.tokens import next_token_column, quote_token, select_contexts
from actgeo_assets.lib.graph import canonical_labels, component_summary
from actgeo_assets.lib.store.rows import row_getter
from actgeo_tests.support.synthetic import card_rows


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_select_contexts_central_then_diverse() -> None:
    cos = np.array([0.9, 0.8, 0.99, 0.7, 0.95])
    docs = np.array(["a", "a", "b", "b", "c"])
    # by cosine: 2(b) 4(c) 0(a) 1(a) 3(b); distinct docs first -> 2, 4, 0; then fill 1, 3
    assert select_contexts(cos, docs, 3).tolist() == [2, 4, 0]
    assert select_contexts(cos, docs, 5).tolist() == [2, 4, 0, 1, 3]
    assert select_contexts(cos, docs, 9).tolist() == [2, 4, 0, 1, 3]


def test_build_cards_selection_and_fields() -> None:
    labels, unit, tokens, docs = card_rows()
    cards = build_cards(labels, unit.__getitem__, tokens, docs, ranks=(2, 3), contexts_per_card=4,
                        threshold=0.7)
    assert [c.rank for c in cards] == [2, 3] and not cards.notes
    c2 = cards[0]
    assert (c2.label_id, c2.size, c2.n_documents, c2.threshold) == (1, 6, 3, 0.7)
    # central and diverse: best of each document (10 A, 13 B, 15 C), then the most central remaining (11)
    assert [c.row for c in c2.contexts] == [10, 13, 15, 11]
    assert [c.doc_id for c in c2.contexts] == [1, 2, 3, 1]
    cos = [c.cosine_to_mean for c in c2.contexts]
    assert cos[0] == pytest.approx(1.0, abs=1e-3) and cos[0] > cos[1] > cos[2]
    assert c2.source_mix == {"Pile-CC": 3, "Wikipedia (en)": 2, "Github": 1}
    assert c2.top_tokens == [("\n\n", 6)]
    # exact span highlighted, newlines visible, windows are the surrounding text
    ctx = c2.contexts[0]
    assert ctx.token == "\u21b5\u21b5" and ctx.left == "line one" and ctx.right.startswith("line two\u21b5")
    assert c2.provisional_label == "'\\n\\n' separators mostly in Pile-CC, only 3 documents (guess)"
    c3 = cards[1]
    assert c3.provisional_label == "' self' from one document (Github) (guess)"
    assert c3.contexts[0].token in ("(self", " self")
    d = c2.to_dict()
    assert d["top_tokens"] == [["\n\n", 6]] and isinstance(d["contexts"][0], dict)
    assert Card.from_dict(d) == c2
    assert Card.from_dict(json.loads(json.dumps(d))) == c2  # plain JSON, no numpy scalars


def test_build_cards_notes_missing_ranks_and_shards_equal_callable() -> None:
    labels, unit, tokens, docs = card_rows()
    shards = [(0, unit[:7]), (7, unit[7:15]), (15, unit[15:])]
    a = build_cards(labels, shards, tokens, docs, ranks=(2, 20), threshold=0.7)
    b = build_cards(labels, lambda i: unit[i], tokens, docs, ranks=(2, 20), threshold=0.7)
    assert [c.rank for c in a] == [2, 3, 4]
    assert a.notes == ["ranks 5..20 requested but there are only 4 components; skipped"]
    assert [c.to_dict() for c in a] == [c.to_dict() for c in b]
    # tokens given in another row order are put in global row order
    shuffled = tokens.sample(frac=1.0, random_state=0)
    c = build_cards(labels, shards, shuffled, docs, ranks=(2, 20), threshold=0.7)
    assert [x.to_dict() for x in c] == [x.to_dict() for x in a]


def test_build_cards_rejects_mismatched_tokens() -> None:
    labels, unit, tokens, docs = card_rows()
    with pytest.raises(ValueError, match="tokens table has 19 rows"):
        build_cards(labels, unit.__getitem__, tokens.iloc[:19], docs, threshold=0.7)
    with pytest.raises(ValueError, match="lacks columns"):
        build_cards(labels, unit.__getitem__, tokens.drop(columns="source"), docs, threshold=0.7)


def test_row_getter_shards() -> None:
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    get = row_getter([(6, x[6:]), (0, x[:6])])
    idx = np.array([0, 5, 6, 9])
    np.testing.assert_array_equal(get(idx), x[idx])
    with pytest.raises(IndexError, match="outside every shard"):
        get(np.array([10]))


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        ({"size": 40, "n_documents": 12, "top_tokens": [(" self", 30), ("self", 5)],
          "source_mix": {"Github": 38, "Pile-CC": 2}}, "' self' in Github code (guess)"),
        ({"size": 50, "n_documents": 9, "top_tokens": [("\n\n", 50)],
          "source_mix": {"Pile-CC": 20, "Github": 10, "Wikipedia (en)": 10, "ArXiv": 5, "FreeLaw": 5}},
         "'\\n\\n' separators across 5 sources (guess)"),
        ({"size": 30, "n_documents": 1, "top_tokens": [("Hamlet", 20)],
          "source_mix": {"Gutenberg (PG-19)": 30}}, "'Hamlet' from one document (Gutenberg (PG-19)) (guess)"),
        ({"size": 50, "n_documents": 3, "top_tokens": [("\r", 50)], "source_mix": {"Github": 50}},
         "'\\r' separators in Github code, only 3 documents (guess)"),
        ({"size": 100, "n_documents": 40, "top_tokens": [(" told", 35), (" said", 30), (" asked", 5)],
          "source_mix": {"Pile-CC": 60, "Wikipedia (en)": 40}}, "' told'/' said' mostly in Pile-CC (guess)"),
        ({"size": 100, "n_documents": 40, "top_tokens": [(" the", 23), (" a", 10)],
          "source_mix": {"Pile-CC": 50, "Github": 50}}, "mixed tokens, top ' the' 23% mostly in Pile-CC (guess)"),
        ({"size": 10, "n_documents": 4, "top_tokens": [("    ", 9)], "source_mix": {"Github": 10}},
         "'    ' whitespace in Github code (guess)"),
        ({"size": 10, "n_documents": 4, "top_tokens": [("](", 9)], "source_mix": {"Github": 7, "Pile-CC": 3}},
         "'](' punctuation mostly in Github code (guess)"),
        ({"size": 10, "n_documents": 4, "top_tokens": [("2019", 9)], "source_mix": {"A": 4, "B": 3, "C": 3}},
         "'2019' digits across 3 sources (guess)"),
    ],
)
def test_provisional_label_wording(evidence: dict, expected: str) -> None:
    assert provisional_label(evidence) == expected


def test_provisional_label_needs_evidence() -> None:
    with pytest.raises(ValueError, match="no tokens"):
        provisional_label({"size": 0, "n_documents": 0, "top_tokens": [], "source_mix": {}})


def test_quote_token_escapes() -> None:
    assert quote_token("\n\n") == "'\\n\\n'"
    assert quote_token("a\x00b") == "'a\\x00b'"
    assert quote_token("x" * 40).endswith("\u2026'") and len(quote_token("x" * 40)) == 26


def test_next_token_readout_tiny_model() -> None:
    # final norm: RMSNorm with weight (1, 1, 0) -> drops dim 2; unembedding rows are token directions
    w = torch.tensor([1.0, 1.0, 0.0])

    def final_norm(x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * w

    unembed = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 5.0], [-1.0, 0.0, 0.0]])
    vocab = ["A", "B", "C", "D"]
    # raw direction has a big dim 2 that the norm removes: 'C' must not win
    out = next_token_readout(np.array([3.0, 1.0, 10.0]), final_norm, unembed, vocab, k=4)
    assert [t for t, _ in out] == ["A", "B", "C", "D"]
    rms = np.sqrt((9 + 1 + 100) / 3)
    assert out[0][1] == pytest.approx(3 / rms, rel=1e-4) and out[1][1] == pytest.approx(1 / rms, rel=1e-4)
    assert out[2][1] == 0.0 and out[3][1] == pytest.approx(-3 / rms, rel=1e-4)
    capped = next_token_readout(np.array([3.0, 1.0, 10.0]), final_norm, unembed, None, k=1, softcap=0.1)
    assert capped[0][0] == "#0" and capped[0][1] <= 0.1
    with pytest.raises(ValueError, match="dims"):
        next_token_readout(np.ones(2), final_norm, unembed, vocab)


def test_build_cards_lens_reads_the_mean_minus_the_corpus_mean() -> None:
    labels, unit, tokens, docs = card_rows()
    raw = unit * 7.0 + np.array([0.0, 0.0, 30.0])  # a big shared offset: the raw mean reads 't2' everywhere
    unembed = torch.eye(3)

    def final_norm(x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    center = raw.mean(axis=0)
    lens = Readout(final_norm=final_norm, unembed=unembed, center=center, tokenizer=["t0", "t1", "t2"],
                   lens_controls=0)  # the plain lens (the control is tested in test_readout.py)
    cards = build_cards(labels, unit.__getitem__, tokens, docs, ranks=(2, 3), threshold=0.7, readout=lens,
                        raw_rows=raw.__getitem__)
    for card in cards:  # independent: (mean of the members' raw rows - corpus mean), unit, dotted with e_i
        d = raw[labels == card.label_id].mean(axis=0) - center
        want = sorted(((f"t{i}", d[i] / np.linalg.norm(d)) for i in range(3)), key=lambda x: -x[1])
        assert [t for t, _ in card.readout] == [t for t, _ in want]
        np.testing.assert_allclose([v for _, v in card.readout], [v for _, v in want], rtol=1e-5)
    assert cards[0].readout[0][0] == "t1" and cards[1].readout[0][0] == "t2"
    raw_mean = raw[labels == 1].mean(axis=0)
    assert int(np.argmax(raw_mean)) == 2  # what the old lens of the raw mean showed for rank 2
    no_raw = build_cards(labels, unit.__getitem__, tokens, docs, ranks=(2, 2), threshold=0.7, readout=lens)
    assert no_raw[0].readout is None and "logit lens skipped" in no_raw.notes[0]
    no_center = build_cards(labels, unit.__getitem__, tokens, docs, ranks=(2, 2), threshold=0.7,
                            readout=Readout(final_norm=final_norm, unembed=unembed), raw_rows=raw.__getitem__)
    assert no_center[0].readout is None and "no corpus mean" in no_center.notes[0]


def test_next_token_readout_never_shows_hidden_tokens() -> None:
    unembed = torch.eye(4)
    out = next_token_readout(np.array([1.0, 4.0, 3.0, 2.0]), lambda x: x, unembed, ["a", "<unused9>", "c", "d"],
                             k=4, hidden={1})
    assert [t for t, _ in out] == ["c", "d", "a"]


def test_hidden_token_ids_tiny_tokenizer() -> None:
    from actgeo_tests.support.tiny_model import build_tokenizer

    tok = build_tokenizer()
    tok.add_tokens(["<unused0>", "[multimodal]", "\n\n\n"])
    hidden = hidden_token_ids(tok)
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>", "<unused0>", "[multimodal]")}
    assert set(ids.values()) <= hidden
    assert tok.convert_tokens_to_ids("\n\n\n") not in hidden  # added plain text stays visible
    assert not [i for i in range(len(tok)) if i not in hidden and re.fullmatch(r"<\w+>", tok.decode([i]))]


def test_next_token_column_against_a_lookup() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for doc in (5, 9, 2):
        n = int(rng.integers(1, 7))
        rows += [(doc, p, f"d{doc}p{p}") for p in range(1, n + 1)]
    tokens = pd.DataFrame(rows, columns=["doc_id", "position", "token"]).sample(frac=1, random_state=1)
    tokens = tokens.drop(tokens.index[2])  # a hole: the row before it has no next token in the table
    got = next_token_column(tokens)
    have = {(d, p): t for d, p, t in zip(tokens.doc_id, tokens.position, tokens.token, strict=True)}
    want = [have.get((d, p + 1)) for d, p in zip(tokens.doc_id, tokens.position, strict=True)]
    assert got.tolist() == want and got.index.equals(tokens.index)
    assert any(w is None for w in want) and any(w is not None for w in want)


def test_cards_show_next_tokens_model_predictions_and_purity() -> None:
    labels, unit, tokens, docs = card_rows()
    tokens = tokens.copy()
    tokens["next_token"] = [f"n{r % 3}" if r % 4 else None for r in range(len(tokens))]
    calls: list[np.ndarray] = []

    def predict(rows: np.ndarray) -> list[list[tuple[int, float]]]:
        calls.append(np.asarray(rows))
        return [[(int(r) % 2, 0.6), (2, 0.3)] for r in rows]

    readout = Readout(predict=predict, tokenizer=["x", "y", "z"], members=4)
    cards = build_cards(labels, unit.__getitem__, tokens, docs, ranks=(2, 3), threshold=0.7, readout=readout)
    assert len(calls) == 1  # one batched call for all cards
    for card in cards:
        members = np.flatnonzero(labels == card.label_id)
        sample = readout_sample(members, 4)
        assert card.model_next_members == min(4, members.size) == sample.size
        assert set(sample.tolist()) <= set(calls[0].tolist())
        # independent: average of the members' distributions, top-1 counts
        mean: dict[str, float] = {}
        top1: dict[str, int] = {}
        for r in sample:
            for i, (tid, p) in enumerate([(int(r) % 2, 0.6), (2, 0.3)]):
                mean["xyz"[tid]] = mean.get("xyz"[tid], 0.0) + p / sample.size
                if i == 0:
                    top1["xyz"[tid]] = top1.get("xyz"[tid], 0) + 1
        want = sorted(mean.items(), key=lambda kv: (-kv[1], "xyz".index(kv[0])))
        assert [(t, round(p, 9), n) for t, p, n in card.model_next] == [(t, round(p, 9), top1.get(t, 0))
                                                                         for t, p in want]
        nxt = [tokens.loc[r, "next_token"] for r in members]
        known = [t for t in nxt if not pd.isna(t)]
        assert card.n_next_unknown == len(nxt) - len(known)
        assert dict(card.next_tokens) == {t: known.count(t) for t in set(known)}
        strings = tokens.loc[members, "token"].tolist()
        assert card.n_distinct_tokens == len(set(strings))
        assert card.token_purity == pytest.approx(max(strings.count(t) for t in strings) / len(strings))
    again = Card.from_dict(json.loads(json.dumps(cards[0].to_dict())))
    assert again == cards[0]


def test_readout_sample_and_rows() -> None:
    members = np.arange(100, 200, dtype=np.int64)
    s = readout_sample(members, 32)
    assert s.size == 32 and s[0] == 100 and s[-1] == 199 and np.all(np.diff(s) > 0)
    assert np.array_equal(readout_sample(members[:5], 32), members[:5])
    labels = np.array([0] * 50 + [1] * 40 + [2] * 3 + [3])
    rows = readout_rows(labels, (2, 3), cap=8)
    want = np.union1d(readout_sample(np.arange(50, 90), 8), np.arange(90, 93))
    assert np.array_equal(rows, want)
    shifted = readout_rows(labels, (2, 3), rows=np.arange(94) * 10 + 7, cap=8)
    assert np.array_equal(shifted, want * 10 + 7)


def test_summarize_predictions_means_top1_and_cutoff() -> None:
    dists = [[(5, 0.9), (6, 0.004), (7, 0.003)], [(6, 0.5), (5, 0.4)], [(5, 0.7), (8, 0.2)]]
    out = summarize_predictions(dists, lambda i: f"t{i}")
    assert [(t, round(p, 6), n) for t, p, n in out] == [("t5", round(2.0 / 3, 6), 2), ("t6", round(0.504 / 3, 6), 1),
                                                        ("t8", round(0.2 / 3, 6), 0)]  # t7 (0.1%) left out
    assert summarize_predictions([], None) == []


def test_token_baseline_against_plain_counting() -> None:
    from sklearn.metrics import adjusted_mutual_info_score, homogeneity_completeness_v_measure

    rng = np.random.default_rng(0)
    n = 400
    sizes = [150, 40, 30, 30, 20, 12, 9, 7, 5, 4, 3, 2, 2, 2] + [1] * (n - 316)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    vocab = np.array(["a", "b", "c", "d", "e", " the", "\n"])
    token_of_label = rng.integers(0, len(vocab), size=len(sizes))
    strings = vocab[token_of_label[labels]].astype(object)
    flip = rng.random(n) < 0.3  # some members carry another string
    strings[flip] = vocab[rng.integers(0, len(vocab), size=int(flip.sum()))]
    tokens = pd.DataFrame({"token": strings, "doc_id": rng.integers(0, 6, size=n),
                           "source": np.where(labels % 2 == 0, "news", "code")})
    base = token_baseline(labels, tokens)
    small = [c for c in range(len(sizes)) if c > 0 and sizes[c] > 1]
    purity, distinct, ndocs = {}, {}, {}
    for c in small:
        s = list(strings[labels == c])
        purity[c] = max(s.count(t) for t in s) / len(s)
        distinct[c] = len(set(s))
        ndocs[c] = len(set(tokens.doc_id[labels == c]))
    assert base["n_small"] == len(small)
    assert base["share_one_token"] == pytest.approx(np.mean([distinct[c] == 1 for c in small]))
    assert base["share_majority_token"] == pytest.approx(np.mean([purity[c] >= 0.5 for c in small]))
    assert base["share_one_document"] == pytest.approx(np.mean([ndocs[c] == 1 for c in small]))
    assert base["mean_token_purity"] == pytest.approx(np.mean(list(purity.values())))
    member = np.isin(labels, small)
    assert base["n_members"] == int(member.sum())
    h, c, v = homogeneity_completeness_v_measure(list(strings[member]), labels[member])
    assert (base["homogeneity"], base["completeness"], base["v_measure"]) == pytest.approx((h, c, v))
    assert base["ami"] == pytest.approx(adjusted_mutual_info_score(list(strings[member]), labels[member]))
    mixed = [c for c in small if purity[c] < 0.5]
    assert base["n_mixed"] == len(mixed)
    assert [m["rank"] for m in base["mixed"]] == [c + 1 for c in mixed[:10]]
    for m in base["mixed"]:
        assert m["token_purity"] == pytest.approx(purity[m["rank"] - 1])
        assert m["n_distinct_tokens"] == distinct[m["rank"] - 1] and m["size"] == sizes[m["rank"] - 1]
    stats = component_token_stats(labels, tokens)
    assert stats.loc[0, "size"] == 150 and list(stats.index) == list(range(len(sizes)))


def test_giant_subcards() -> None:
    labels, unit, tokens, docs = card_rows()
    giant = np.flatnonzero(labels == 0)
    sub = np.array([7, 7, 7, 3, 3, 9, 9, 9, 9, 1])  # non-canonical labels at a higher threshold
    cards = giant_subcards(sub, giant, unit.__getitem__, tokens, docs, higher_threshold=0.9, ranks=(1, 5))
    assert [(c.rank, c.size, c.label_id) for c in cards] == [(1, 4, 0), (2, 3, 1), (3, 2, 2), (4, 1, 3)]
    assert all(c.subcomponent_of == 1 and c.threshold == 0.9 for c in cards)
    assert {x.row for x in cards[0].contexts} <= {5, 6, 7, 8}
    assert "only 4 sub-components" in cards.notes[0]


def test_canonical_relabel_and_summary() -> None:
    assert canonical_labels(np.array([5, 2, 2, 9, 5, 5, 7])).tolist() == [0, 1, 1, 2, 0, 0, 3]
    s = component_summary(np.array([0, 0, 0, 1, 1, 2, 3]), top=3)
    assert s["n_components"] == 4 and s["largest"] == 3 and s["top_sizes"] == [3, 2, 1]
    assert s["non_singleton"] == 1 and s["singletons"] == 2
    assert s["n_components"] == 1 + s["non_singleton"] + s["singletons"]


def test_build_cards_scales_without_python_loop_over_rows() -> None:
    n, d = 200_000, 8
    rng = np.random.default_rng(0)
    sizes = [n - 1000] + [50] * 20
    labels = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)
    rng.shuffle(labels)
    unit = _unit(rng.standard_normal((n, d)))
    tokens = pd.DataFrame({"row": np.arange(n), "doc_id": np.arange(n) // 100, "position": np.arange(n) % 100,
                           "token_id": np.zeros(n, dtype=np.int64), "token": ["t"] * n,
                           "char_start": np.zeros(n, dtype=np.int64), "char_end": np.ones(n, dtype=np.int64),
                           "source": ["Pile-CC"] * n})
    docs = pd.DataFrame({"doc_id": np.arange(n // 100), "source": "Pile-CC", "text": "t"})
    calls: list[int] = []

    def rows(idx):  # counts fetches: a Python loop over rows would call this once per row
        calls.append(int(np.size(idx)) if not isinstance(idx, slice) else -1)
        return unit[idx]

    cards = build_cards(labels, rows, tokens, docs, ranks=(1, 20), threshold=0.5)
    assert len(cards) == 20 and cards[0].size == n - 1000 and cards[1].size == 50
    assert 0 < len(calls) <= 200, len(calls)  # chunked fetches, not one per member (the giant has 199,000)


def test_select_contexts_one_per_model_input() -> None:
    cos = np.array([0.9, 0.8, 0.99, 0.7, 0.95, 0.97])
    docs = np.array(["a", "a", "b", "b", "c", "d"])
    inputs = np.array([1, 2, 3, 4, 3, 3], dtype=np.uint64)  # rows 2, 4 and 5 are one input in three documents
    # by cosine: 2(b) 5(d) 4(c) 0(a) 1(a) 3(b); one per input: 2, 0, 1, 3; distinct documents first: 2, 0; then 1, 3
    assert select_contexts(cos, docs, 6, inputs).tolist() == [2, 0, 1, 3]
    assert select_contexts(cos, docs, 6).tolist() == [2, 5, 4, 0, 1, 3]  # without keys: the three copies
    with pytest.raises(ValueError, match="one key per member"):
        select_contexts(cos, docs, 6, inputs[:3])


def _artefact_example() -> tuple[np.ndarray, np.ndarray, pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """card_rows with model-input keys: rank 3 (rows 16-18) is ONE input repeated; in rank 2 rows 10 (doc A)
    and 13 (doc B) are one input; every other row its own. Early: positions < 4 (tokens' positions are
    row % 7)."""
    labels, unit, tokens, docs = card_rows()
    inputs = np.arange(20, dtype=np.uint64) + np.uint64(500)
    inputs[[16, 17, 18]] = np.uint64(7)
    inputs[13] = inputs[10]
    early = tokens["position"].to_numpy() < 4
    return labels, unit, tokens, docs, inputs, early


def test_cards_count_inputs_early_positions_and_recall() -> None:
    labels, unit, tokens, docs, inputs, early = _artefact_example()
    cards = build_cards(labels, unit.__getitem__, tokens, docs, ranks=(1, 3), contexts_per_card=6, threshold=0.7,
                        inputs=inputs, early=early)
    strings = tokens["token"].astype(str).tolist()
    for card in cards:
        members = np.flatnonzero(labels == card.label_id)
        assert card.n_inputs == len(set(inputs[members].tolist()))
        first_doc = {}  # each distinct input in the document of its first member (row order)
        for r in members:
            first_doc.setdefault(int(inputs[r]), int(tokens.loc[r, "doc_id"]))
        assert card.n_input_documents == len(set(first_doc.values()))
        assert card.n_early == sum(int(tokens.loc[r, "position"]) < 4 for r in members)
        top = card.top_tokens[0][0]
        assert card.recall == {"token": top, "held": sum(strings[r] == top for r in members),
                               "total": strings.count(top)}
        shown = [inputs[c.row] for c in card.contexts]
        assert len(shown) == len(set(shown)) == min(6, card.n_inputs)  # never one input twice
    giant, rank2, rank3 = cards
    assert (rank2.size, rank2.n_inputs, rank2.n_documents) == (6, 5, 3)
    assert 10 in [c.row for c in rank2.contexts] and 13 not in [c.row for c in rank2.contexts]
    assert (rank3.size, rank3.n_inputs, rank3.n_early) == (3, 1, 2) and rank3.one_input and not rank2.one_input
    assert rank3.n_documents == 1 and len(rank3.contexts) == 1
    assert rank3.provisional_label == (f"one model input repeated \u00d73 (' self' at position "
                                       f"{rank3.contexts[0].position}): an artefact, not a cluster")
    assert rank2.provisional_label == "'\\n\\n' separators mostly in Pile-CC, only 3 documents (guess)"
    assert giant.recall["total"] == strings.count(giant.recall["token"])
    # the dict round trip keeps the new fields; a card written before them reads back with None
    assert Card.from_dict(json.loads(json.dumps(rank3.to_dict()))) == rank3
    old = {k: v for k, v in rank2.to_dict().items() if k not in ("n_inputs", "n_early", "recall")}
    back = Card.from_dict(old)
    assert (back.n_inputs, back.n_early, back.recall) == (None, None, None) and not back.one_input
    # without keys nothing is counted and contexts may repeat an input
    plain = build_cards(labels, unit.__getitem__, tokens, docs, ranks=(3, 3), threshold=0.7)
    assert plain[0].n_inputs is None and plain[0].n_early is None and len(plain[0].contexts) == 3
    assert plain[0].provisional_label == "' self' from one document (Github) (guess)"
    with pytest.raises(ValueError, match="inputs must be uint64"):
        build_cards(labels, unit.__getitem__, tokens, docs, threshold=0.7, inputs=inputs.astype(np.int64))
    with pytest.raises(ValueError, match="early must be bool"):
        build_cards(labels, unit.__getitem__, tokens, docs, threshold=0.7, early=early[:5])


def test_subcards_count_inputs_against_the_whole_run() -> None:
    labels, unit, tokens, docs, inputs, early = _artefact_example()
    inputs[[5, 6, 7, 8]] = np.uint64(3)  # the giant's rows 5-8: one input
    giant = np.flatnonzero(labels == 0)
    sub = np.array([7, 7, 7, 3, 3, 9, 9, 9, 9, 1])
    cards = giant_subcards(sub, giant, unit.__getitem__, tokens, docs, higher_threshold=0.9, ranks=(1, 2),
                           inputs=inputs, early=early)
    assert (cards[0].size, cards[0].n_inputs) == (4, 1) and cards[0].one_input
    assert cards[0].n_early == sum(int(tokens.loc[r, "position"]) < 4 for r in (5, 6, 7, 8))
    top = cards[0].top_tokens[0][0]
    assert cards[0].recall["total"] == tokens["token"].astype(str).tolist().count(top)  # over the run, not the giant


@pytest.mark.parametrize(
    ("sizes", "ranks", "note"),
    [
        ([9, 5, 4, 4, 4, 4, 1], (2, 4), "ranks 3-6 all have 4 activations; cards stop at rank 4, so ranks 5-6 get none"),
        ([9, 5, 4, 4, 1], (2, 3), "ranks 3-4 all have 4 activations; cards stop at rank 3, so rank 4 gets none"),
        ([9, 5, 4, 4, 1], (2, 4), None),
        ([9, 5, 4, 4], (2, 9), None),
        ([9, 1, 1, 1], (1, 2), "ranks 2-4 all have 1 activation; cards stop at rank 2, so ranks 3-4 get none"),
    ],
)
def test_ties_at_the_last_card_rank_are_noted(sizes: list[int], ranks: tuple[int, int], note: str | None) -> None:
    labels = np.repeat(np.arange(len(sizes)), sizes)
    n = labels.size
    rng = np.random.default_rng(0)
    unit = _unit(rng.standard_normal((n, 3)))
    tokens = pd.DataFrame({"row": np.arange(n), "doc_id": np.arange(n) % 3, "position": np.arange(n) + 1,
                           "token_id": np.zeros(n, dtype=np.int64), "token": ["t"] * n,
                           "char_start": np.zeros(n, dtype=np.int64), "char_end": np.ones(n, dtype=np.int64),
                           "source": ["Pile-CC"] * n})
    docs = pd.DataFrame({"doc_id": [0, 1, 2], "source": "Pile-CC", "text": "t"})
    cards = build_cards(labels, unit.__getitem__, tokens, docs, ranks=ranks, threshold=0.5)
    ties = [x for x in cards.notes if "all have" in x]
    assert ties == ([note] if note else [])
    # independent: ranks past the last carded one whose size equals its size
    last = min(ranks[1], len(sizes))
    assert bool(ties) == any(s == sizes[last - 1] for s in sizes[last:])
