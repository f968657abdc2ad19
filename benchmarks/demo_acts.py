"""Concatenate a run's normalized shards into one .npy for `bench_graph.py --acts` (the benchmark's case (a):
activations the project captured from the demo model).

    python benchmarks/demo_acts.py data/demo data/demo/bench_acts.npy
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from actgeo_assets.lib.store.layout import save_npy


def main(run_dir: str, out: str) -> int:
    shards = sorted(p for p in (Path(run_dir) / "normalized").glob("shard-*.npy") if not p.name.endswith(".kept.npy"))
    if not shards:
        print(f"no normalized shards under {run_dir}/normalized: run `make demo` first", file=sys.stderr)
        return 2
    x = np.concatenate([np.load(p) for p in shards]).astype(np.float32)
    save_npy(out, x)
    print(f"{out}: {x.shape[0]:,} x {x.shape[1]} unit rows from {len(shards)} shards")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
