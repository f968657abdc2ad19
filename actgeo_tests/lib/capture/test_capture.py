"""capture_activations: exact values, truncated forward, bos/pad accounting, budget, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actgeo_assets.lib.capture.documents import Document
from actgeo_assets.lib.capture.model import decoder_layers
from actgeo_assets.lib.capture.residual import TOKEN_COLUMNS, capture_activations, next_block_norm

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "def add(a, b):\n    return a + b\n",
    "To be, or not to be",
    "Question: what is the answer? Answer: forty-two. é 漢",
    "GNU GENERAL PUBLIC LICENSE Version 3, 29 June 2007",
]


@pytest.fixture
def docs() -> list[Document]:
    return [Document(i, t, f"src{i % 2}") for i, t in enumerate(TEXTS)]


def _reference(loaded, text: str, layer: int, context_len: int) -> np.ndarray:
    """hidden_states[layer + 1] of a full, unpadded forward of the CausalLM."""
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"][:, :context_len]
    with torch.no_grad():
        out = loaded.model(ids, output_hidden_states=True)
    return out.hidden_states[layer + 1][0].numpy()


@pytest.mark.parametrize("layer", [0, 2])
def test_capture_equals_hidden_states_and_stops_early(tiny_loaded, docs, layer: int) -> None:
    later_calls: list[int] = []
    blocks = decoder_layers(tiny_loaded.model)
    handles = [
        b.register_forward_hook(lambda *_a, i=i: later_calls.append(i))
        for i, b in enumerate(blocks)
        if i > layer
    ]
    head_calls: list[int] = []
    handles.append(tiny_loaded.model.lm_head.register_forward_hook(lambda *_a: head_calls.append(1)))
    try:
        res = capture_activations(
            tiny_loaded, docs, layer=layer, context_len=24, budget=10_000, batch_size=2,
            progress=False, out_dtype=np.float32,
        )  # fmt: skip
    finally:
        for h in handles:
            h.remove()
    assert later_calls == [] and head_calls == []
    for doc in docs:
        ref = _reference(tiny_loaded, doc.text, layer, 24)[1:]  # <bos> excluded
        got = res.acts[res.tokens["doc_id"].to_numpy() == doc.doc_id]
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_token_table(tiny_loaded, docs) -> None:
    res = capture_activations(
        tiny_loaded, docs, layer=1, context_len=24, budget=10_000, batch_size=3, progress=False
    )
    t = res.tokens
    assert tuple(t.columns) == TOKEN_COLUMNS
    assert res.acts.dtype == np.float32 and res.acts.shape == (len(t), 64)  # the default: what the model computed
    assert t["row"].tolist() == list(range(len(t)))
    assert (t["position"] >= 1).all()
    tok = tiny_loaded.tokenizer
    for doc in docs:
        sub = t[t["doc_id"] == doc.doc_id]
        ids = tok(doc.text)["input_ids"][:24]
        assert sub["token_id"].tolist() == ids[1:]
        assert sub["position"].tolist() == list(range(1, len(ids)))
        assert (sub["source"] == doc.source).all()
        # character spans tile the document prefix
        spans = list(zip(sub["char_start"], sub["char_end"], strict=True))
        assert spans[0][0] == 0
        ascii_tokens = sub[sub["token"].map(lambda s: "\ufffd" not in s)]
        for s, e, text in zip(
            ascii_tokens["char_start"], ascii_tokens["char_end"], ascii_tokens["token"], strict=True
        ):
            assert doc.text[s:e] == text


def test_bos_and_pad_accounting(tiny_loaded, docs) -> None:
    tok = tiny_loaded.tokenizer
    full_lengths = [len(tok(d.text)["input_ids"]) for d in docs]
    lengths = [min(n, 24) for n in full_lengths]
    res = capture_activations(
        tiny_loaded, docs, layer=1, context_len=24, budget=10_000, batch_size=5, progress=False
    )
    s = res.stats
    assert s["n_bos_excluded"] == len(docs)
    assert s["n_pad"] == len(docs) * max(lengths) - sum(lengths)
    assert s["n_forward_tokens"] == sum(lengths)
    assert s["n_kept"] == sum(lengths) - len(docs) == len(res.tokens)
    assert s["n_docs"] == len(docs) and not s["budget_met"] and s["short_by"] == 10_000 - s["n_kept"]
    assert s["n_docs_truncated"] == sum(n > 24 for n in full_lengths) >= 1
    keep = capture_activations(
        tiny_loaded,
        docs,
        layer=1,
        context_len=24,
        budget=10_000,
        batch_size=5,
        progress=False,
        exclude_bos=False,
    )
    assert keep.stats["n_bos_excluded"] == 0 and len(keep.tokens) == sum(lengths)
    assert (keep.tokens.groupby("doc_id")["position"].min() == 0).all()
    assert (keep.tokens[keep.tokens["position"] == 0]["token_id"] == tok.bos_token_id).all()


def test_budget_exact_and_deterministic(tiny_loaded, docs) -> None:
    full = capture_activations(
        tiny_loaded, docs, layer=1, context_len=24, budget=10_000, batch_size=2, progress=False
    )
    for budget in (1, 7, 23, 40):
        a = capture_activations(
            tiny_loaded, docs, layer=1, context_len=24, budget=budget, batch_size=2, progress=False
        )
        b = capture_activations(
            tiny_loaded, docs, layer=1, context_len=24, budget=budget, batch_size=3, progress=False
        )
        assert len(a.tokens) == a.acts.shape[0] == budget and a.stats["budget_met"]
        assert a.tokens.equals(b.tokens)
        np.testing.assert_allclose(a.acts.astype(np.float32), b.acts.astype(np.float32), atol=2e-3)
        # the first `budget` rows of the full capture, in document and token order
        assert a.tokens.equals(full.tokens.iloc[:budget])
        np.testing.assert_allclose(
            a.acts.astype(np.float32), full.acts[:budget].astype(np.float32), atol=2e-3
        )
        assert a.stats["n_available"] - a.stats["n_cut_by_budget"] == budget


def test_layer_out_of_range(tiny_loaded, docs) -> None:
    for layer in (4, -1):
        with pytest.raises(ValueError, match=rf"layer {layer}.*n_layers=4"):
            capture_activations(tiny_loaded, docs, layer=layer, context_len=8, budget=4, batch_size=1)


def test_empty_documents_are_counted(tiny_loaded) -> None:
    docs = [Document(0, "", "x"), Document(1, "hello there", "x")]
    res = capture_activations(
        tiny_loaded, docs, layer=0, context_len=8, budget=100, batch_size=2, progress=False
    )
    assert res.stats["n_docs_empty"] == 1 and set(res.tokens["doc_id"]) == {1}


def test_next_block_norm(tiny_loaded) -> None:
    blocks = decoder_layers(tiny_loaded.model)
    n = next_block_norm(tiny_loaded, 1)
    assert n["kind"] == "gemma" and n["module"] == "layers.2.input_layernorm"
    np.testing.assert_array_equal(n["weight"], blocks[2].input_layernorm.weight.numpy())
    last = next_block_norm(tiny_loaded, 3)
    assert last["module"] == "norm"
    x = torch.randn(3, 64)
    ref = blocks[2].input_layernorm(x).numpy()
    mine = x.numpy() / np.sqrt((x.numpy() ** 2).mean(1, keepdims=True) + n["eps"]) * (1 + n["weight"])
    np.testing.assert_allclose(mine, ref, atol=1e-5)


@pytest.mark.parametrize("steps", [(8, 64), (1, 2), ()])
def test_prefix_tokenization_equals_full(tiny_loaded, monkeypatch, steps) -> None:
    """Prefix tokenization (and its fallbacks, forced by tiny prefixes) gives the full text's first tokens."""
    import actgeo_assets.lib.capture.residual as C

    monkeypatch.setattr(C, "_CHARS_PER_TOKEN_STEPS", steps)
    tok = tiny_loaded.tokenizer
    texts = [*TEXTS, "x" * 3000, "ab " * 900, "", "é漢 " * 400]
    docs = [Document(i, t, "s") for i, t in enumerate(texts)]
    for context_len in (5, 40):
        got = C._tokenize_many(tok, docs, context_len)
        for doc, (ids, offsets, truncated) in zip(docs, got, strict=True):
            full = tok(doc.text, add_special_tokens=True, return_offsets_mapping=True)
            assert ids == list(full["input_ids"][:context_len])
            assert offsets == [tuple(o) for o in full["offset_mapping"][:context_len]]
            assert truncated == (len(full["input_ids"]) > context_len)


def test_values_beyond_float16_survive_capture_and_normalization(tiny_model_path, tmp_path) -> None:
    """A model whose residual stream exceeds float16's 65,504: stored in float32 (the default), every row
    is kept, equals the model's own hidden states and normalizes to the float64 unit rows; float16 storage
    (the old default) would have turned those rows into inf and dropped them."""
    from actgeo_assets.lib.capture.model import load_model
    from actgeo_assets.lib.capture.normalize import normalize_rows
    from actgeo_assets.lib.store.layout import RunLayout
    from actgeo_assets.lib.store.shards import read_raw_shard, write_raw_shard

    loaded = load_model(tiny_model_path, tmp_path / "cache", device="cpu", threads=1)  # its own copy
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.mul_(1e6)
    docs = [Document(i, t, "s") for i, t in enumerate(TEXTS)]
    res = capture_activations(loaded, docs, layer=1, context_len=24, budget=10_000, batch_size=2,
                              progress=False)
    assert res.acts.dtype == np.float32 and res.stats["out_dtype"] == "float32"
    big = np.abs(res.acts).max(axis=1) > 65_504
    assert big.sum() >= len(res.acts) // 2 and res.stats["max_abs"] > 65_504
    assert np.isfinite(res.acts).all() and res.stats["n_overflow_rows"] == 0
    for doc in docs:  # exactly the model's float32 hidden states
        ref = _reference(loaded, doc.text, 1, 24)[1:]
        got = res.acts[res.tokens["doc_id"].to_numpy() == doc.doc_id]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=0)

    layout = RunLayout(tmp_path, "demo")
    write_raw_shard(layout, "shard-000", res, docs, {"model": "tiny", "layer": 1})
    back = read_raw_shard(layout, "shard-000")
    assert back.acts.dtype == np.float32 and back.meta["dtype"] == "float32"
    np.testing.assert_array_equal(np.asarray(back.acts), res.acts)
    for method in ("l2", "center_l2"):
        out = normalize_rows(back.acts, method, mean=np.asarray(back.acts, np.float64).mean(axis=0))
        assert out.kept.all() and out.unit.shape == res.acts.shape
        x = np.asarray(res.acts, dtype=np.float64)
        if method == "center_l2":
            x = x - x.mean(axis=0)
        np.testing.assert_allclose(out.unit, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6)

    half = capture_activations(loaded, docs, layer=1, context_len=24, budget=10_000, batch_size=2,
                               progress=False, out_dtype=np.float16)
    assert half.stats["n_overflow_rows"] == int(big.sum()) and np.isinf(half.acts).any(axis=1).sum() == big.sum()
    assert normalize_rows(half.acts, "l2").kept.sum() == len(res.acts) - big.sum()  # what float16 lost
