"""Capture throughput of the study's model shape on a CUDA GPU: Gemma 2 2B's architecture, layer 12, bf16.

    python benchmarks/gpu_bench_capture.py [--tokens 200000] [--context-len 1024] [--batch-size 32]

The gated Gemma 2 2B weights cannot be fetched on a machine without the hub, and speed does not depend on
the weights' values: this builds ``Gemma2ForCausalLM`` with gemma-2-2b's config (26 blocks, d=2304,
vocab 256,000) and random bf16 weights on the GPU, and times ``capture_activations`` at layer 12
(forward stopped after block 12, no LM head) against the same batches through all 26 blocks + LM head
with ``output_hidden_states=True`` (the plain transformers way). Tokens come from the tests' byte-level
tokenizer over repeated fixture text, so contexts are full length as in pile-10k. Writes
``benchmarks/results/capture_gpu.md``. Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GEMMA2_2B = dict(
    hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, vocab_size=256_000, max_position_embeddings=8192,
    sliding_window=4096, query_pre_attn_scalar=256, final_logit_softcapping=30.0,
    attn_logit_softcapping=50.0,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=200_000)
    p.add_argument("--context-len", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--layer", type=int, default=12)
    p.add_argument("--smoke", action="store_true",
                   help="a 4-block, 256-wide model on the CPU: checks this script runs, measures nothing useful")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "capture_gpu.md"))
    args = p.parse_args(argv)

    import torch

    dev = "cpu" if args.smoke else "cuda"
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_bench_capture: no CUDA device; nothing measured, nothing written.")
        return 0
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from actgeo_assets.lib.capture.documents import Document
    from actgeo_assets.lib.capture.model import LoadedModel
    from actgeo_assets.lib.capture.residual import capture_activations
    from actgeo_assets.lib.store.layout import atomic_path
    from actgeo_tests.support.tiny_model import build_tokenizer

    tok = build_tokenizer()
    fixture = ROOT / "actgeo_tests" / "fixtures" / "mini_corpus.jsonl"
    texts = [json.loads(line)["text"] for line in fixture.read_text().splitlines()]
    long_text = " ".join(texts)
    n_docs = -(-args.tokens // (args.context_len - 1)) + 1
    docs = [Document(i, long_text[(i * 97) % 500 :] + long_text, "fixture") for i in range(n_docs)]

    shape = dict(GEMMA2_2B)
    if args.smoke:
        shape.update(hidden_size=256, intermediate_size=512, num_hidden_layers=4, head_dim=32)
        args.layer = min(args.layer, 2)
    config = Gemma2Config(**shape, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id)  # attention as load_model gets it
    torch.manual_seed(0)
    with torch.device(dev):
        model = Gemma2ForCausalLM(config).to(torch.bfloat16).eval()
    d = shape["hidden_size"]
    loaded = LoadedModel(model=model, tokenizer=tok, name="gemma-2-2b-shape(random)", device=torch.device(dev),
                         dtype=torch.bfloat16, n_layers=shape["num_hidden_layers"], hidden_size=d)
    if args.smoke:
        for fn in ("synchronize", "reset_peak_memory_stats"):
            setattr(torch.cuda, fn, lambda: None)
        torch.cuda.max_memory_allocated = lambda: 0
    name = "CPU (smoke)" if args.smoke else torch.cuda.get_device_name()
    kw = dict(layer=args.layer, context_len=args.context_len, batch_size=args.batch_size, progress=False)
    capture_activations(loaded, docs[:4], budget=4 * (args.context_len - 1), **kw)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = capture_activations(loaded, docs, budget=args.tokens, **kw)
    torch.cuda.synchronize()
    t_capture = time.perf_counter() - t0
    peak_capture = torch.cuda.max_memory_allocated() / 2**30
    assert res.acts.shape == (args.tokens, d) and np.isfinite(res.acts).all()

    # the plain way on the same tokens: all blocks + LM head, output_hidden_states
    enc = tok([d.text for d in docs], truncation=True, max_length=args.context_len, padding=True,
              return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    real = 0
    with torch.inference_mode():
        for i in range(0, ids.shape[0], args.batch_size):
            b_ids, b_mask = ids[i : i + args.batch_size].to(dev), mask[i : i + args.batch_size].to(dev)
            out = model(input_ids=b_ids, attention_mask=b_mask, output_hidden_states=True)
            h = out.hidden_states[args.layer + 1][b_mask.bool()].to(torch.float16).cpu()
            real += h.shape[0]
            del out
            if real >= args.tokens:
                break
    torch.cuda.synchronize()
    t_plain = time.perf_counter() - t0
    peak_plain = torch.cuda.max_memory_allocated() / 2**30
    r_cap, r_plain = args.tokens / t_capture, real / t_plain
    st = res.stats
    r_fwd = args.tokens / (st["forward_seconds"])
    print(f"{name}: capture {r_cap:,.0f} tok/s end to end (tokenize {st['tokenize_seconds']:.2f} s, forward + "
          f"copy {st['forward_seconds']:.2f} s = {r_fwd:,.0f} tok/s, peak {peak_capture:.1f} GiB); "
          f"output_hidden_states {r_plain:,.0f} tok/s on pre-tokenized batches (peak {peak_plain:.1f} GiB)",
          flush=True)
    lines = [
        "## Capture on a GPU (Gemma 2 2B's shape, random bf16 weights)",
        "",
        f"`python benchmarks/gpu_bench_capture.py --tokens {args.tokens} --context-len {args.context_len} "
        f"--batch-size {args.batch_size}` on {name}, torch {torch.__version__}.",
        "",
        "| method | tokens/s | GPU peak memory | 1,000,000 activations |",
        "|---|---|---|---|",
        f"| actgeo `capture_activations` end to end (tokenize, stop after block {args.layer}, float16 out, "
        f"token table) | {r_cap:,.0f} | {peak_capture:.1f} GiB | {1e6 / r_cap:.0f} s |",
        f"| the same, forward + device-to-host copy only (tokenizing took {st['tokenize_seconds']:.2f} s) "
        f"| {r_fwd:,.0f} | | {1e6 / r_fwd:.0f} s |",
        f"| `model(..., output_hidden_states=True)` (26 blocks + LM head, pre-tokenized) | {r_plain:,.0f} "
        f"| {peak_plain:.1f} GiB | {1e6 / r_plain:.0f} s |",
        "",
        f"Forward of the truncated capture vs all blocks + head: {r_fwd / r_plain:.2f}x.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".md") as tmp:
        tmp.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
