"""The card's readouts: readable tokens only, and the mid-depth lens only where it beats its control of
random groups of activations (each checked against plain numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actgeo_assets.lib.analysis.readout import (
    LENS_ALPHA,
    LENS_SEED,
    NEXT_TOKENS,
    Readout,
    component_lens,
    control_groups,
    lens_logits,
    lens_margins,
    plain_top_ids,
    readable_text,
    readable_token_ids,
    summarize_predictions,
    token_text,
)


class HandTokenizer:
    """A tokenizer with Hugging Face's methods over a fixed table of (piece, decoded text)."""

    def __init__(self, table: list[tuple[str, str]]) -> None:
        self.table = table

    def decode(self, ids: list[int]) -> str:
        return "".join(self.table[i][1] for i in ids)

    def batch_decode(self, seqs: list[list[int]]) -> list[str]:
        return [self.decode(s) for s in seqs]

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | list[str]:
        return self.table[ids][0] if isinstance(ids, int) else [self.table[i][0] for i in ids]


HAND = HandTokenizer([
    ("a", "a"),                 # 0 readable
    ("<0xE7>", "\ufffd"),       # 1 byte-fallback piece
    ("\u2581hon", " hon"),      # 2 readable
    ("\u7a95", "\u7a95"),       # 3 readable text, a script the corpus sample lacks
    ("<eos>", "<eos>"),         # 4 special (hidden)
    ("\uf099", "\uf099"),       # 5 private use
    ("<0x41>", "A"),            # 6 byte piece whose decode is plain ASCII: still a byte piece
    ("\u0301", "\u0301"),       # 7 a lone combining mark
    ("\n\n", "\n\n"),           # 8 readable whitespace
    ("x\ufffdy", "x\ufffdy"),   # 9 text with a replacement character
])


def test_readable_text_cases() -> None:
    for text in [" hon", "\n\n", "    ", "\u7a95", "===========", "\u00e9t\u00e9"]:
        assert readable_text(text), text
    for text in ["", "\ufffd", "ab\ufffd", "<0xE7>", "\uf099", "\x07", "\u0301", "\u200d", "\ud800"]:
        assert not readable_text(text), repr(text)
    assert not readable_text("A", piece="<0x41>") and readable_text("A", piece="A")


def test_readable_token_ids_hand_made_tokenizer() -> None:
    hidden = frozenset({4})
    everything = readable_token_ids(HAND, None, hidden, n_vocab=len(HAND.table))
    assert everything.tolist() == [0, 2, 3, 8]
    vocabulary = frozenset({0, 1, 2, 4, 5, 7, 8, 9, 99})  # the run's sample: no token 3, an id past the vocab
    assert readable_token_ids(HAND, vocabulary, hidden, n_vocab=len(HAND.table)).tolist() == [0, 2, 8]
    # a plain list tokenizer (no pieces): only the text decides
    as_list = [t for _, t in HAND.table]
    assert readable_token_ids(as_list, None, hidden, n_vocab=len(as_list)).tolist() == [0, 2, 3, 6, 8]
    with pytest.raises(ValueError, match="n_vocab"):
        readable_token_ids(HAND, None)


def test_token_text_marks_byte_pieces_and_predictions_keep_them() -> None:
    assert token_text(HAND, 1) == "<0xE7>" and token_text(HAND, 6) == "<0x41>" and token_text(HAND, 2) == " hon"
    dists = [[(1, 0.6), (2, 0.3)], [(2, 0.5), (3, 0.4)]]
    out = summarize_predictions(dists, HAND)
    # nothing is hidden: the model's own distribution, byte piece included, shown as its piece
    assert out == [(" hon", pytest.approx(0.4), 1), ("<0xE7>", pytest.approx(0.3), 1), ("\u7a95", pytest.approx(0.2), 0)]


def test_control_groups_outside_members_deterministic() -> None:
    members = np.array([0, 1, 2, 10, 11, 50, 98, 99], dtype=np.int64)
    groups = control_groups(100, members, k=20, cap=5, seed=7)
    assert groups is not None and len(groups) == 20
    outside = np.setdiff1d(np.arange(100), members)  # independent: the non-members
    for g in groups:
        assert g.size == 5 and np.all(np.diff(g) > 0) and np.isin(g, outside).all()
    again = control_groups(100, members, k=20, cap=5, seed=7)
    assert again is not None and all(np.array_equal(a, b) for a, b in zip(groups, again, strict=True))
    # uniform over the non-members: every one of them is drawn in many groups
    many = control_groups(100, members, k=2000, cap=5, seed=1)
    assert many is not None
    counts = np.bincount(np.concatenate(many), minlength=100)
    assert counts[members].sum() == 0 and counts[outside].min() > 60
    assert control_groups(10, np.arange(9), k=3) is None  # one activation left: no group
    capped = control_groups(10, np.arange(4), k=3)
    assert capped is not None and capped[0].size == 4
    with pytest.raises(ValueError, match="outside"):
        control_groups(10, np.array([3, 12]), k=2)


def test_lens_margins_against_a_loop() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 30))
    logits[2, 5] = logits[4, 5] = 9.0  # a tie at the top: margin 0 for both
    want = np.empty_like(logits)
    for g in range(6):
        for t in range(30):
            want[g, t] = logits[g, t] - max(logits[h, t] for h in range(6) if h != g)
    np.testing.assert_allclose(lens_margins(logits), want)
    assert lens_margins(logits)[2, 5] == 0.0 == lens_margins(logits)[4, 5]
    with pytest.raises(ValueError, match="groups"):
        lens_margins(np.ones((1, 3)))


def test_plain_top_ids_skips_hidden() -> None:
    logits = np.array([0.5, 3.0, 2.0, 9.0, 1.0])
    assert plain_top_ids(logits, hidden={3}, k=3) == [1, 2, 4]
    assert plain_top_ids(logits, k=10) == [3, 1, 2, 4, 0]


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)


def _np_rms(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6)


def _world(seed: int = 0, n: int = 3000, d: int = 8):
    """Activations with one loud corpus-wide axis (dim 0, std 25: every random group's direction leans on
    it) and 40 members with token 3's direction planted (8 on dim 3, where a group mean varies by 0.16)
    and dim 0 raised by one standard deviation of a random group's mean there (4): as much as a random
    group often shows. Unembedding rows: token i reads dim i for i < d (token 0 with a large norm, so the
    loud axis tops plain lenses), then 4 random tokens."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, d))
    raw[:, 0] *= 25.0
    raw += 100.0  # a big shared offset: the corpus mean
    members = np.sort(rng.choice(n, 40, replace=False))
    raw[members, 3] += 8.0
    raw[members, 0] += 4.0
    unembed = np.vstack([np.eye(d), rng.normal(size=(4, d))])
    unembed[0] *= 6.0
    center = raw.mean(axis=0)
    return raw, members, torch.tensor(unembed, dtype=torch.float64), center


def test_component_lens_planted_token_passes_the_loud_axis_does_not() -> None:
    raw, members, unembed, center = _world()
    vocab = [f"t{i}" for i in range(unembed.shape[0])]
    readout = Readout(final_norm=_rms, unembed=unembed, center=center, tokenizer=vocab, n_rows=len(raw),
                      lens_controls=64)
    entries, meta = component_lens(readout, raw.__getitem__, members)
    assert entries is not None and meta is not None
    assert entries[0][0] == "t3" and "t0" not in [t for t, _ in entries]

    # independent: the same groups, plain numpy lens, margins and the permutation threshold
    groups = control_groups(len(raw), members, 64)
    assert groups is not None and meta["group_size"] == 40 and meta["k"] == 64 and meta["seed"] == LENS_SEED
    dirs = np.vstack([raw[members].mean(0) - center] + [raw[g].mean(0) - center for g in groups])
    w = unembed.numpy()
    logits = _np_rms(dirs) @ w.T
    np.testing.assert_allclose(lens_logits(dirs, _rms, unembed), logits, rtol=1e-9)
    # the loud axis is corpus-wide: token 0 tops the plain lens of the component and of many random groups
    assert np.argmax(logits[0]) == 0 and np.mean(np.argmax(logits[1:], axis=1) == 0) > 0.3
    plain, _ = component_lens(Readout(final_norm=_rms, unembed=unembed, center=center, tokenizer=vocab,
                                      lens_controls=0), raw.__getitem__, members)
    assert plain is not None and plain[0][0] == "t0"
    margin = np.array([[logits[g, t] - np.delete(logits[:, t], g).max() for t in range(w.shape[0])]
                       for g in range(65)])
    best = np.sort(margin[1:].max(axis=1))[::-1]
    allowed = math.floor(LENS_ALPHA * 65) - 1
    assert meta["threshold"] == pytest.approx(max(best[allowed], 0.0), abs=1e-5)
    assert meta["controls_above_threshold"] == int(np.sum(best > best[allowed]))
    passed = [t for t in np.argsort(-margin[0]) if margin[0, t] > best[allowed]]
    assert [t for t, _ in entries] == [f"t{t}" for t in passed[:NEXT_TOKENS]]
    np.testing.assert_allclose([v for _, v in entries], logits[0, passed[:NEXT_TOKENS]], rtol=1e-9)
    np.testing.assert_allclose(meta["margins"], margin[0, passed[:NEXT_TOKENS]], atol=1e-5)
    assert meta["p"][0] == pytest.approx((1 + np.sum(best >= margin[0, 3])) / 65, abs=1e-6)
    assert meta["passed"] == len(passed) and meta["shown"] == len(entries)
    assert meta["beat_every_control"] == int(np.sum(margin[0] > 0))
    assert meta["best_margin"] == pytest.approx(margin[0].max(), abs=1e-5)


def test_component_lens_random_component_shows_nothing() -> None:
    raw, _, unembed, center = _world(seed=1)
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(10):  # components that are random groups: the lens shows nothing beyond the control
        members = np.sort(rng.choice(len(raw), 40, replace=False))
        readout = Readout(final_norm=_rms, unembed=unembed, center=center, tokenizer=None, n_rows=len(raw),
                          lens_controls=64)
        entries, meta = component_lens(readout, raw.__getitem__, members)
        assert meta is not None and meta["shown"] == len(entries or [])
        hits += bool(entries)
    assert hits <= 2  # at most ~5% each; 2 of 10 would already be unusual


def test_component_lens_readability_and_dropped_counts() -> None:
    d = 32
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(2000, d)) + 50.0
    members = np.arange(0, 2000, 50)
    raw[members, 2] += 10.0  # planted: token 2 (' hon')
    raw[members, 1] += 6.0  # the byte piece's direction
    raw[members, 3] += 5.0  # the script the sample lacks
    raw[members, 5] += 4.0  # private use
    center = raw.mean(axis=0)
    unembed = torch.eye(10, d, dtype=torch.float64)  # token i reads dim i
    vocabulary = frozenset({0, 1, 2, 4, 5, 8})
    readout = Readout(final_norm=_rms, unembed=unembed, center=center, tokenizer=HAND, hidden=frozenset({4}),
                      vocabulary=vocabulary, n_rows=len(raw), lens_controls=64)
    entries, meta = component_lens(readout, raw.__getitem__, members)
    assert entries is not None and meta is not None
    assert [t for t, _ in entries] == [" hon"]
    # the plain lens's top (hidden 4 left out), by the plain logits of numpy
    logits = _np_rms(raw[members].mean(0) - center) @ unembed.numpy().T
    logits[4] = -np.inf
    top = [int(i) for i in np.argsort(-logits, kind="stable")[:NEXT_TOKENS]]
    assert top[:4] == [2, 1, 3, 5]  # the plant, then the byte piece, the absent script, the private-use point
    assert [t for t, _ in meta["plain_top"]] == [token_text(HAND, i) for i in top]  # bytes as '<0xE7>'
    assert (meta["dropped_unreadable"], meta["dropped_not_in_corpus"], meta["dropped_below_control"]) == (5, 1, 2)
    readable_in_sample = {0, 2, 8}
    assert meta["candidates"] == 3 and meta["vocabulary"] == len(vocabulary)
    assert meta["dropped_unreadable"] == sum(1 for i in top if i not in readable_in_sample)
    assert meta["dropped_not_in_corpus"] == sum(1 for i in top if i in {3})  # readable text, not in the sample
    assert meta["dropped_below_control"] == sum(1 for i in top if i in readable_in_sample and i != 2)


def test_component_lens_without_control_or_lens() -> None:
    raw, members, unembed, center = _world()
    vocab = [f"t{i}" for i in range(unembed.shape[0])]
    base = {"final_norm": _rms, "unembed": unembed, "center": center, "tokenizer": vocab}
    assert component_lens(Readout(final_norm=_rms, unembed=unembed), raw.__getitem__, members) == (None, None)
    entries, meta = component_lens(Readout(**base), raw.__getitem__, members)  # no n_rows: no control
    assert entries is None and meta is not None and "n_rows" in meta["skipped"]
    entries, meta = component_lens(Readout(**base, n_rows=len(raw), lens_controls=0), raw.__getitem__, members)
    logits = _np_rms(raw[members].mean(0) - center) @ unembed.numpy().T  # the plain lens, as numpy reads it
    assert entries is not None and meta is not None and meta["control"] is None
    assert [t for t, _ in entries] == [f"t{i}" for i in np.argsort(-logits)[:NEXT_TOKENS]]
    with pytest.raises(ValueError, match="too few"):
        component_lens(Readout(**base, n_rows=len(raw), lens_controls=10), raw.__getitem__, members)
    entries, meta = component_lens(Readout(**base, n_rows=41), raw.__getitem__, np.arange(40))
    assert entries is None and meta is not None and "too few" in meta["skipped"]
    entries, meta = component_lens(Readout(**base, n_rows=len(raw), vocabulary=frozenset({999})), raw.__getitem__,
                                   members)
    assert entries is None and meta is not None and "no readable token" in meta["skipped"]
