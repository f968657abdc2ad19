"""The study-sized graph step on a CUDA GPU: 1,000,000 x 2304 unit rows, cosine >= 0.7.

    python benchmarks/gpu_bench_graph.py [--n 1000000] [--d 2304] [--precision tf32|fp32] [--check 20000]

Without a CUDA device it prints why and exits 0 without measuring anything (nothing is written).
With one it: measures the device's dense GEMM peak (torch.mm 8192^2 in the chosen precision), generates
the synthetic activation-like rows on the GPU (same recipe as bench_graph.py, ~75% giant at 0.7),
runs ``cosine_components(x, 0.7, device="cuda")`` with stats, checks the partition of the first
``--check`` rows against the CPU engine (identical labels expected), and writes
``benchmarks/results/graph_gpu.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic_on_gpu(torch, n: int, d: int, seed: int = 0):
    """[n, d] float32 unit rows generated on the GPU in chunks (same recipe as bench_graph.py)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    k, tau, alpha = 400, 0.6, 0.8
    frac = float(np.clip(np.log(d / 640) / np.log(2304 / 640), 0.0, 1.0))
    sigma_median = 0.69 - 0.07 * frac
    m = torch.randn(d, device="cuda", generator=g)
    m /= m.norm()
    centres = m + tau * torch.randn(k, d, device="cuda", generator=g) / d**0.5
    centres /= centres.norm(dim=1, keepdim=True)
    p = 1.0 / torch.arange(1, k + 1, device="cuda", dtype=torch.float64) ** alpha
    out = torch.empty(n, d, dtype=torch.float32, device="cuda")
    step = 65536
    for i in range(0, n, step):
        b = min(step, n - i)
        a = torch.multinomial(p, b, replacement=True, generator=g)
        sigma = torch.exp(np.log(sigma_median) + 0.35 * torch.randn(b, device="cuda", generator=g))
        blk = centres[a] + sigma[:, None] * torch.randn(b, d, device="cuda", generator=g) / d**0.5
        out[i : i + b] = blk / blk.norm(dim=1, keepdim=True)
    return out


def gemm_peak(torch, precision: str) -> float:
    a = torch.randn(8192, 8192, device="cuda")
    b = torch.randn(8192, 8192, device="cuda")
    m = torch.backends.cuda.matmul
    old = m.fp32_precision
    m.fp32_precision = "tf32" if precision == "tf32" else "ieee"
    try:
        torch.mm(a, b)
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(10):
            t0 = time.perf_counter()
            torch.mm(a, b)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    finally:
        m.fp32_precision = old
    return 2 * 8192**3 / best / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=2304)
    p.add_argument("--threshold", type=float, default=0.7)
    p.add_argument("--precision", choices=["tf32", "fp32"], default="tf32")
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--no-prune", action="store_true")
    p.add_argument("--check", type=int, default=20_000, help="compare the first N rows with the CPU engine")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "graph_gpu.md"))
    args = p.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("gpu_bench_graph: torch is not installed; nothing to benchmark.")
        return 0
    if not torch.cuda.is_available():
        print(
            "gpu_bench_graph: no CUDA device (torch.cuda.is_available() is False, torch "
            f"{torch.__version__}); nothing measured, nothing written. Run it on a GPU machine."
        )
        return 0

    from actgeo_assets.lib.graph import component_summary, cosine_components
    from actgeo_assets.lib.store.layout import atomic_path

    name = torch.cuda.get_device_name()
    peak = gemm_peak(torch, args.precision)
    print(f"{name}: dense {args.precision} GEMM peak {peak / 1e3:.0f} TFLOP/s", flush=True)
    t0 = time.perf_counter()
    x_dev = synthetic_on_gpu(torch, args.n, args.d)
    x = x_dev.cpu().numpy()  # the engine takes host arrays / memmaps; it uploads once and keeps x resident
    del x_dev
    torch.cuda.empty_cache()
    print(f"generated {args.n:,} x {args.d} in {time.perf_counter() - t0:.1f} s", flush=True)

    stats: dict = {}
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    labels = cosine_components(
        x,
        args.threshold,
        device="cuda",
        precision=args.precision,
        tile_size=args.tile_size,
        prune=not args.no_prune,
        progress=True,
        stats=stats,
    )
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    s = component_summary(labels)
    pairs = stats.get("pairs_computed", 0) + stats.get("landmark_pairs", 0)
    achieved = 2 * args.d * pairs / seconds / 1e9
    print(f"cosine_components: {seconds:.1f} s, {s}, stats {stats}", flush=True)

    check = ""
    if args.check:
        sub = x[: args.check]
        gpu = cosine_components(sub, args.threshold, device="cuda", precision=args.precision)
        cpu = cosine_components(sub, args.threshold, device="cpu")
        same = bool((gpu == cpu).all())
        check = f"First {args.check:,} rows: GPU and CPU labels identical: **{same}**."
        print(check, flush=True)

    lines = [
        "## Graph step on a GPU (study size)",
        "",
        f"`python benchmarks/gpu_bench_graph.py --n {args.n} --d {args.d} --precision {args.precision}` on {name}.",
        f"Dense {args.precision} GEMM peak (torch.mm 8192^2): {peak / 1e3:.0f} TFLOP/s.",
        "",
        "| N x d | threshold | seconds | pairs computed | achieved TFLOP/s | of peak | components | largest | singletons |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {args.n:,} x {args.d} | {args.threshold} | {seconds:.1f} | {pairs / (args.n * (args.n - 1) / 2):.0%} "
        f"| {achieved / 1e3:.1f} | {achieved / peak:.0%} | {s['n_components']:,} | {s['largest']:,} "
        f"({s['largest_fraction']:.1%}) | {s['singletons']:,} |",
        "",
        check,
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
