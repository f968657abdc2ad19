"""Graph step benchmark: actgeo vs faiss range_search + scipy, vs sklearn DBSCAN, side by side.

    python benchmarks/bench_graph.py [--quick] [--acts PATH.npy] [--repeats 3] [--out benchmarks/results/graph.md]

All methods run in this one process on the same data, each ``--repeats`` times (median reported; the
repeats are interleaved across methods), and their partitions are asserted identical. Peak memory is measured separately: each method runs once in a
child process that reports its ru_maxrss increase over the data alone. The machine's fp32 GEMM peak
(torch.mm of 4096 x 4096, repeated) is measured in the same run, and actgeo's achieved GFLOP/s on the
work it actually did (2*(k+1) flop per pair of the rank-k bound GEMM, 2*d per pair given the full dot,
landmark pass included) is reported as a fraction of it, with its phases (``stats["seconds"]``). The
actgeo row without the prefilter (``rank=0``, the previous method) runs too, for comparison.

Synthetic "activation-like" data: unit vectors around Zipf-sized clusters whose centres share a mean
direction, with log-normal per-point noise, tuned so that ~75% of the points form one giant component
at t=0.7 with a tail of small components and singletons (like the study's regime).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THRESHOLD = 0.7


def synthetic_activations(n: int, d: int, seed: int = 0) -> np.ndarray:
    """[n, d] float32 unit rows, ~75% giant component at cosine >= 0.7 (d = 640 or 2304)."""
    rng = np.random.default_rng(seed)
    k, tau, alpha = 400, 0.6, 0.8
    # noise level tuned per d for a ~75% giant at 0.7 (interpolated in log d between 640 and 2304)
    frac = np.clip(np.log(d / 640) / np.log(2304 / 640), 0.0, 1.0)
    sigma_median = 0.69 - 0.07 * frac
    m = rng.standard_normal(d)
    m /= np.linalg.norm(m)
    centres = m + tau * rng.standard_normal((k, d)) / np.sqrt(d)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    p = 1.0 / np.arange(1, k + 1) ** alpha
    assign = rng.choice(k, n, p=p / p.sum())
    sigma = rng.lognormal(np.log(sigma_median), 0.35, n)
    x = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, 8192):
        sl = slice(i, i + 8192)
        block = centres[assign[sl]] + sigma[sl, None] * rng.standard_normal((len(assign[sl]), d)) / np.sqrt(d)
        x[sl] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


# ------------------------------------------------------------------------------------------ methods


def run_actgeo(x: np.ndarray, t: float, stats: dict[str, Any] | None = None) -> np.ndarray:
    from actgeo_assets.lib.graph import cosine_components

    return cosine_components(x, t, device="cpu", stats=stats)


def run_actgeo_plain(x: np.ndarray, t: float) -> np.ndarray:
    from actgeo_assets.lib.graph import cosine_components

    return cosine_components(x, t, device="cpu", rank=0)


def run_actgeo_forest(x: np.ndarray, t: float) -> np.ndarray:
    from actgeo_assets.lib.graph import single_linkage_forest

    return single_linkage_forest(x, 0.5, exact_at=(t,), device="cpu").labels_at(t)


def run_faiss(x: np.ndarray, t: float) -> np.ndarray:
    import faiss
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    from actgeo_assets.lib.graph import canonical_labels

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(np.ascontiguousarray(x, dtype=np.float32))
    # faiss keeps similarity > radius; nudge the radius one float32 step down for >=
    radius = float(np.nextafter(np.float32(t), np.float32(-1)))
    lims, _, ids = index.range_search(np.ascontiguousarray(x, dtype=np.float32), radius)
    rows = np.repeat(np.arange(len(x)), np.diff(lims).astype(np.int64))
    g = sp.csr_matrix((np.ones(len(ids), dtype=np.int8), (rows, ids)), shape=(len(x), len(x)))
    return canonical_labels(connected_components(g, directed=False)[1])


def run_dbscan(x: np.ndarray, t: float) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    from actgeo_assets.lib.graph import canonical_labels

    lab = DBSCAN(eps=1 - t, min_samples=1, metric="cosine", algorithm="brute", n_jobs=-1).fit_predict(x)
    return canonical_labels(lab)


METHODS = {
    "actgeo cosine_components": run_actgeo,
    "actgeo cosine_components, no prefilter (rank=0)": run_actgeo_plain,
    "actgeo single_linkage_forest(min 0.5, exact 0.7)": run_actgeo_forest,
    "faiss IndexFlatIP.range_search + scipy CC": run_faiss,
    "sklearn DBSCAN(min_samples=1, cosine, brute)": run_dbscan,
}


def gemm_peak(reps: int = 5) -> float:
    """fp32 GFLOP/s of torch.mm on 4096 x 4096 (best of ``reps`` after a warm-up)."""
    import torch

    a = torch.randn(4096, 4096)
    b = torch.randn(4096, 4096)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * 4096**3 / best / 1e9


def child_memory(method: str, data_path: str) -> dict[str, Any]:
    """Run ``method`` once in a child process on the .npy at ``data_path``; its peak RSS increase (MB)
    over the loaded data and imports."""
    cmd = [sys.executable, __file__, "--_child", method, "--_source", data_path]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(args: argparse.Namespace) -> None:
    import faiss  # noqa: F401  (imports first, so the baseline includes them)
    import sklearn.cluster  # noqa: F401
    import torch  # noqa: F401

    import actgeo_assets.lib.graph  # noqa: F401

    x = np.load(args._source)
    gc.collect()
    before = _rss_kb("VmRSS")
    reset = _reset_peak()
    base = before if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    METHODS[args._child](x, THRESHOLD)
    dt = time.perf_counter() - t0
    peak = _rss_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": (peak - base) / 1024, "data_mb": x.nbytes / 2**20, "seconds": dt}))


def _rss_kb(field: str) -> int:
    """VmRSS / VmHWM of this process in kB (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so it measures from now on (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _blas_threads() -> str:
    """numpy's BLAS thread count (threadpoolctl) and torch's intra-op threads."""
    import torch

    try:
        from threadpoolctl import threadpool_info

        pools = [i for i in threadpool_info() if i["user_api"] == "blas"]
        blas = ", ".join(sorted({f"{i['internal_api']} {i['num_threads']}" for i in pools}))
    except ImportError:
        blas = "n/a"
    return f"{blas}; torch {torch.get_num_threads()}"


def load_source(source: str, n: int, d: int) -> np.ndarray:
    if source == "synthetic":
        return synthetic_activations(n, d)
    return np.ascontiguousarray(np.load(source, mmap_mode="r"), dtype=np.float32)


# ------------------------------------------------------------------------------------------ main


def bench_case(
    name: str,
    source: str,
    n: int,
    d: int,
    repeats: int,
    methods: list[str],
    skipped: dict[str, str],
    memory: bool,
) -> dict[str, Any]:
    from actgeo_assets.lib.graph import component_summary

    x = load_source(source, n, d)
    n, d = x.shape
    data_path = ""
    if memory:
        tmpdir = tempfile.mkdtemp(prefix="bench_graph_")
        data_path = os.path.join(tmpdir, "x.npy")
        np.save(data_path, x)
    print(f"\n== {name}: {n:,} x {d}", flush=True)
    results: dict[str, Any] = {"name": name, "n": n, "d": d, "methods": {}, "skipped": skipped}
    labels_ref = None
    # repeats interleaved across methods (round r runs every method once), so load from other jobs on this
    # shared machine falls on all methods alike rather than on whichever ran during a busy minute
    runs: dict[str, list[float]] = {m: [] for m in methods}
    last: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    for _ in range(repeats):
        for m in methods:
            gc.collect()
            st: dict[str, Any] = {}
            t0 = time.perf_counter()
            out = run_actgeo(x, THRESHOLD, st) if m == "actgeo cosine_components" else METHODS[m](x, THRESHOLD)
            runs[m].append(time.perf_counter() - t0)
            last[m] = (out, st)
    for m in methods:
        times = runs[m]
        labels, stats = last[m]
        if labels_ref is None:
            labels_ref = labels
            results["summary"] = component_summary(labels, top=5)
        same = bool((labels == labels_ref).all())
        entry: dict[str, Any] = {"median_s": median(times), "times": times, "identical": same}
        if m == "actgeo cosine_components":
            total = n * (n - 1) / 2
            k = stats.get("rank", 0)
            bound = stats.get("bound_pairs", 0)
            visited = stats.get("verified_pairs", 0) if k else stats.get("pairs_computed", 0)
            full = stats.get("landmark_pairs", 0) + visited
            entry["pairs_fraction"] = (stats.get("pairs_computed", 0) + stats.get("landmark_pairs", 0)) / total
            entry["full_fraction"] = full / total
            entry["rank"] = k
            entry["survivors_fraction"] = stats.get("survivors", 0) / total
            entry["certified"] = stats.get("certified", 0)
            entry["seconds"] = stats.get("seconds", {})
            entry["sample_survivors"] = stats.get("prefilter_sample_survivors")
            entry["gflops"] = (2 * (k + 1) * bound + 2 * d * full) / median(times) / 1e9
        if memory:
            entry["memory"] = child_memory(m, data_path)
        results["methods"][m] = entry
        print(
            f"   {m}: median {median(times):.2f} s {[round(t, 2) for t in times]} identical={same}",
            flush=True,
        )
        assert same, f"{m} gave a different partition on {name}"
    if data_path:
        shutil.rmtree(os.path.dirname(data_path), ignore_errors=True)
    return results


def write_markdown(path: Path, cases: list[dict[str, Any]], peak: float, args: argparse.Namespace) -> None:
    lines = [
        "## Graph step (connected components at cosine >= 0.7)",
        "",
        f"Measured by `python benchmarks/bench_graph.py{' --quick' if args.quick else ''}"
        f"{' --acts ' + args.acts if args.acts else ''}` on {_cpu_model()} ({platform.machine()}, "
        f"{os.cpu_count()} logical cores; BLAS threads {_blas_threads()}) "
        f"(load average at start {os.getloadavg()[0]:.1f}; other jobs share this machine, so times are noisy). "
        f"fp32 GEMM peak (torch.mm 4096x4096, best of 5, measured before and after every case; the best "
        f"seen): **{peak:.0f} GFLOP/s**. "
        f"Median of {args.repeats} runs in one process (round r runs every method once, so load from other "
        "jobs falls on all alike); every method's partition is asserted identical to actgeo's. "
        "Peak memory: a child process loads the data and imports everything, resets its peak-RSS "
        "mark, runs the method once and reports the peak RSS above the RSS it started from (the method's "
        "own working memory; the data itself is not counted).",
        "",
        "| data | N x d | giant / components / singletons | method | median s | vs actgeo | identical | peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for c in cases:
        s = c["summary"]
        base = c["methods"]["actgeo cosine_components"]["median_s"]
        first = True
        shape = f"{c['n']:,} x {c['d']}"
        giant = f"{s['largest_fraction']:.1%} / {s['n_components']:,} / {s['singletons']:,}"
        for m, e in c["methods"].items():
            mem = e.get("memory", {})
            mem_txt = f"{mem['peak_mb']:.0f}" if "peak_mb" in mem else ("n/m" if not mem else "error")
            lines.append(
                f"| {c['name'] if first else ''} | {shape if first else ''} "
                f"| {giant if first else ''} | {m} | {e['median_s']:.2f} | {e['median_s'] / base:.2f}x "
                f"| {'yes' if e['identical'] else 'NO'} | {mem_txt} |"
            )
            first = False
        a = c["methods"]["actgeo cosine_components"]
        sec = a.get("seconds", {})
        phases = ", ".join(f"{k} {v:.2f} s" for k, v in sec.items())
        work = (
            f"bounded {a['pairs_fraction']:.0%} of the pairs with a rank-{a['rank']} GEMM (landmark pass "
            f"included), {a['survivors_fraction']:.2%} of the pairs survived the bound "
            f"({a['certified']:,} of them proved edges by the lower bound), {a['full_fraction']:.1%} of the "
            f"pairs got the full d-dimensional dot (landmark pass and verification sub-GEMMs included); "
            f"phases: {phases}; "
            if a.get("rank")
            else (
                f"ran without the prefilter ({a['sample_survivors']:.0%} of a 2,048-row sample's pairs survived "
                "the rank-128 bound, above the 20% where it pays), "
                if a.get("sample_survivors") is not None
                else ""
            )
            + f"computed {a['pairs_fraction']:.0%} of the pairs (landmark pass included) "
        )
        plain = c["methods"].get("actgeo cosine_components, no prefilter (rank=0)")
        notes.append(
            f"- {c['name']} {c['n']:,} x {c['d']}: actgeo {work}"
            f"at {a['gflops']:.0f} GFLOP/s = {a['gflops'] / c['gemm_peak']:.0%} of the "
            f"GEMM peak measured around this case ({c['gemm_peak']:.0f} GFLOP/s)."
            + (f" Prefilter speed-up over rank=0: {plain['median_s'] / a['median_s']:.1f}x." if plain else "")
            + (
                " Speed-up over the fastest peer: "
                f"{min(e['median_s'] for m, e in c['methods'].items() if not m.startswith('actgeo')) / a['median_s']:.1f}x."
                if any(not m.startswith("actgeo") for m in c["methods"])
                else ""
            )
        )
        for m, why in c["skipped"].items():
            notes.append(f"- {c['name']} {c['n']:,} x {c['d']}: {m} skipped ({why}).")
    lines += ["", *notes, ""]
    lines += [
        "actgeo cosine_components (CPU, d >= 512): a provable low-rank prefilter "
        "(actgeo_assets/lib/graph/lowrank.py). Rows are split on the top k = 128 principal directions P of a "
        "row sample: x.y <= xP.yP + |x_R||y_R| (Cauchy-Schwarz), so one (k+1)-dimensional fp32 GEMM of "
        "z = [xP, |x_R|] bounds every pair, with the fp32 rounding of the projection and of that GEMM "
        "bounded a priori and subtracted; pairs whose bound is below t are skipped, the survivors get the full "
        "fp32 dot (a sub-GEMM of the rows and columns they touch, or, where they are sparse, faiss' compiled gathered dot) and the float64 recheck "
        "within the fp32 error bound of t (exact partition), in decreasing order of their bound, skipping "
        "pairs whose ends are already connected; survivors whose lower bound xP.yP - |x_R||y_R| clears t are "
        "edges without a dot. Around it: the landmark pass (full fp32 GEMM) and the pruned tile pass with "
        "dynamic re-ordering (pairs already known to share a component are skipped). 'no prefilter (rank=0)': "
        "the same tile pass with the full fp32 GEMM on every pair it visits. faiss computes the full N x N "
        "(both triangles) in fp32 and materializes every edge; DBSCAN computes cosine distances chunk by chunk "
        "and keeps every neighbourhood.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small N, no memory runs (under a minute)")
    p.add_argument(
        "--acts", default=None, help="also run on this .npy of unit rows (e.g. the demo activations)"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "graph.md"))
    p.add_argument("--no-memory", action="store_true", help="skip the child-process memory runs")
    p.add_argument("--dbscan-max-n", type=int, default=20_000, help="skip DBSCAN above this N (time)")
    p.add_argument("--forest-max-n", type=int, default=20_000, help="skip the forest row above this N (time)")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    p.add_argument("--_source", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        _child(args)
        return 0
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    peak = gemm_peak()
    print(f"fp32 GEMM peak (torch.mm 4096^2): {peak:.0f} GFLOP/s", flush=True)
    sizes = (
        [(4000, 640), (4000, 2304)]
        if args.quick
        else [(20_000, 640), (20_000, 2304), (50_000, 640), (50_000, 2304)]
    )
    specs = [("synthetic", "synthetic", n, d) for n, d in sizes]
    if args.acts:
        shape = np.load(args.acts, mmap_mode="r").shape
        specs.append((f"demo activations ({Path(args.acts).name})", args.acts, shape[0], shape[1]))
    cases = []
    for name, source, n, d in specs:
        methods = list(METHODS)
        skipped: dict[str, str] = {}
        if n > args.dbscan_max_n:
            methods.remove("sklearn DBSCAN(min_samples=1, cosine, brute)")
            skipped["sklearn DBSCAN"] = f"N > {args.dbscan_max_n:,}: minutes per run on this 2-core machine"
        if n > args.forest_max_n:
            methods.remove("actgeo single_linkage_forest(min 0.5, exact 0.7)")
            skipped["actgeo single_linkage_forest"] = f"N > {args.forest_max_n:,}, to keep the run short"
        memory = not args.no_memory and not args.quick and n <= 20_000
        if not memory and not args.no_memory:
            why = "--quick" if args.quick else "N > 20,000 (time)"
            skipped["peak memory"] = f"child-process memory runs skipped: {why}"
        before = gemm_peak()
        case = bench_case(name, source, n, d, args.repeats, methods, skipped, memory)
        case["gemm_peak"] = max(before, gemm_peak())
        print(f"   GEMM peak around this case: {case['gemm_peak']:.0f} GFLOP/s", flush=True)
        cases.append(case)
        peak = max(peak, case["gemm_peak"])
        write_markdown(Path(args.out), cases, peak, args)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
