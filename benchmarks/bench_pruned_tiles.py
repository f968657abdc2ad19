"""Pruned vs unpruned tiles of a real sharded run, side by side (issue: the study's scale on one CPU).

    python benchmarks/bench_pruned_tiles.py --run /path/to/data/scale [--pairs 0:0,0:19,7:12] \
        [--out benchmarks/results/pruning.md]

``--run`` is a finished ``normalized`` stage of a run made with ``prune_at`` (the ``scale`` profile writes it:
``normalized/{shard}.npy``). For each listed shard pair (indices into the run's sorted shards) the same tile is
computed twice in this process: every pair (what a run without ``prune_at`` does) and pruned. A diagonal tile
(i:i) pruned is the shard's own forest, pruned with its landmark pass (what ``normalized`` writes with
``prune_at``); an off-diagonal one starts from the two shards' components at ``prune_at``. Components are
asserted identical at every exact threshold from ``min_threshold`` to ``prune_at``. The run's ratio is the
pair-weighted mix: one diagonal per shard, the rest off-diagonal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actgeo_assets.lib.graph import (  # noqa: E402
    ForestEdges,
    SingleLinkageForest,
    merge_forests,
    single_linkage_forest,
    tile_forest,
)
from actgeo_assets.lib.store.layout import atomic_path  # noqa: E402


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="the run folder ({data_dir}/{profile}) of a prune_at run")
    ap.add_argument("--pairs", default="0:0,0:19,7:12,19:19", help="shard index pairs i:j (i <= j)")
    ap.add_argument("--min-threshold", type=float, default=0.5)
    ap.add_argument("--prune-at", type=float, default=0.7)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pruning.md"))
    args = ap.parse_args(argv)
    run = Path(args.run)
    shards = sorted(p.stem for p in (run / "normalized").glob("shard-*.npy") if not p.stem.endswith(".kept"))
    if not shards:
        raise SystemExit(f"no normalized shards under {run / 'normalized'}: run the scale profile first")
    p, lo = args.prune_at, args.min_threshold
    exact = tuple(sorted({lo, 0.6, p}))
    x = {s: np.load(run / "normalized" / f"{s}.npy", mmap_mode="r") for s in shards}
    own: dict[str, SingleLinkageForest] = {}
    own_seconds: dict[str, float] = {}

    def shard_forest(s: str) -> SingleLinkageForest:
        if s not in own:  # timed here (the run wrote one too: the same computation)
            t0 = time.perf_counter()
            own[s] = single_linkage_forest(x[s], lo, exact, device="cpu", prune_at=p)
            own_seconds[s] = time.perf_counter() - t0
        return own[s]

    rows = []
    for spec in args.pairs.split(","):
        i, j = (int(v) for v in spec.split(":"))
        a, b = shards[i], shards[j]
        xa, xb = x[a], (None if a == b else x[b])
        na = xa.shape[0]
        n = na + (0 if xb is None else xb.shape[0])
        t0 = time.perf_counter()
        full = tile_forest(xa, xb, offset_b=na, min_threshold=lo, exact_at=exact, device="cpu")
        t_full = time.perf_counter() - t0
        fa = shard_forest(a)
        la = fa.labels_at(p)
        st: dict = {}
        if xb is None:  # the pruned diagonal is the shard's own forest
            t_pruned, merged, reference = own_seconds[a], fa, SingleLinkageForest(n, full)
            st.update(pairs_total=na * (na - 1) // 2, pairs_computed=None)
        else:
            fb = shard_forest(b)
            known = np.concatenate([la, fb.labels_at(p) + na])
            t0 = time.perf_counter()
            pruned = tile_forest(xa, xb, offset_b=na, min_threshold=lo, exact_at=exact, device="cpu", prune_at=p,
                                 known_labels=known, stats=st)
            t_pruned = time.perf_counter() - t0
            # an off-diagonal tile holds the pairs *between* its shards only: both sides get the shards' forests
            e = fb.edges
            own_parts = [fa.edges, ForestEdges(e.src + na, e.dst + na, e.weight, min_threshold=e.min_threshold,
                                               exact_at=e.exact_at, exact_up_to=e.exact_up_to)]
            merged = merge_forests([pruned, *own_parts], n)
            reference = merge_forests([full, *own_parts], n)
        same = all((merged.labels_at(t) == reference.labels_at(t)).all() for t in exact)
        if not same:
            raise SystemExit(f"tile {a}__{b}: pruned components differ from the full tile's")
        rows.append({"pair": f"{a}__{b}", "rows": n, "pairs_total": st["pairs_total"], "diagonal": xb is None,
                     "computed": (st["pairs_computed"] / st["pairs_total"]) if st["pairs_computed"] is not None
                     else None, "full_s": t_full, "pruned_s": t_pruned,
                     "giant_a": float(np.bincount(la).max() / na), "identical": same})
        print(json.dumps(rows[-1]), flush=True)
    n_shards = len(shards)
    n_tiles = n_shards * (n_shards + 1) // 2
    diag = [r for r in rows if r["diagonal"]]
    off = [r for r in rows if not r["diagonal"]]

    def run_minutes(key: str) -> float:  # one diagonal per shard, the other tiles off-diagonal (medians)
        d = median(r[key] for r in diag) if diag else 0.0
        o = median(r[key] for r in off) if off else d
        return (n_shards * d + (n_tiles - n_shards) * o) / 60

    load = os.getloadavg()[0]
    lines = [
        "## Pruned tiles at the study's scale (`prune_at`, the `scale` profile)",
        "",
        f"`python benchmarks/bench_pruned_tiles.py --run {run}` ({time.strftime('%Y-%m-%d %H:%M')}) on {_cpu()}, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the end (shared machine: ratios are the point). Each "
        f"listed tile of the run's {n_shards} shards is computed twice in this process: every pair (`tile_forest`, "
        f"what a run without `prune_at` does) and pruned at {p:g} (a diagonal tile: the shard's own forest with its "
        "landmark pass, as `normalized` writes it; another tile: started from its two shards' components). Their "
        f"components are asserted identical at {', '.join(f'{t:g}' for t in exact)}.",
        "",
        "| tile | rows | pairs | computed when pruned | shard giant at 0.7 | every pair s | pruned s | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        computed = "landmarks + own" if r["computed"] is None else f"{r['computed']:.0%}"
        lines.append(f"| {r['pair']} | {r['rows']:,} | {r['pairs_total']:,} | {computed} | "
                     f"{r['giant_a']:.0%} | {r['full_s']:.1f} | {r['pruned_s']:.1f} | "
                     f"{r['full_s'] / r['pruned_s']:.1f}x |")
    full_min, pruned_min = run_minutes("full_s"), run_minutes("pruned_s")
    lines += [
        "",
        f"The run's {n_tiles} tiles ({n_shards} diagonal), from these medians: every pair about {full_min:.0f} min, "
        f"pruned about {pruned_min:.0f} min: **{full_min / pruned_min:.1f}x**.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
