"""A tiny random Gemma 2 causal LM with a real (trained-here) tokenizer, for fast tests. No download.

``tiny_gemma2(tmp_path)`` saves a 4-layer, 64-wide random ``Gemma2ForCausalLM`` and a byte-level BPE
tokenizer (``<pad>``=0, ``<eos>``=1, ``<bos>``=2, ``<unk>``=3; adds ``<bos>``; exact character offsets)
into ``tmp_path / "tiny-gemma2"`` and returns that folder's path, loadable with
``actgeo_assets.lib.capture.model.load_model(path, cache_dir)``. Building takes well under a second.
"""

from __future__ import annotations

import os
from pathlib import Path

TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "GNU GENERAL PUBLIC LICENSE Version 3, 29 June 2007. Everyone is permitted to copy.",
    "Question: what is the answer? Answer: forty-two.",
    "The Court held that the statute, 42 U.S.C. 1983, applies.",
    "To be, or not to be, that is the question.",
    "$\\int_0^1 x^2 dx = 1/3$ and $e^{i\\pi} + 1 = 0$.",
]
VOCAB_SIZE = 384
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]


def build_tokenizer():  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer (never produces ``<unk>``) that prepends ``<bos>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT * 4, trainer=trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
    )


def tiny_gemma2(
    tmp_path: str | os.PathLike[str], *, n_layers: int = 4, hidden: int = 64, seed: int = 0
) -> str:
    """Save a random ``n_layers`` x ``hidden`` Gemma2ForCausalLM + tokenizer; return the folder path."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    out = Path(tmp_path) / "tiny-gemma2"
    if (out / "config.json").exists():
        return str(out)
    tokenizer = build_tokenizer()
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=512,
        sliding_window=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(config)
    with torch.no_grad():  # non-trivial norm weights, so gemma's (1 + w) matters in tests
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)
