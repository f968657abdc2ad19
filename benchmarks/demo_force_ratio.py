"""`make demo --force` at two commits, side by side: the wall time of `actgeo run --profile demo --force` in a
worktree of each, alternating (A B B A ...) on its own copy of the same finished demo data directory, so drift
on a shared machine falls on both. Also checks that both wrote byte-identical labels.npy and the same component
summary (summary.json's ``summary``: its other fields, such as the resampling intervals, may grow between
commits).
Writes benchmarks/results/demo_force.md.

    .venv/bin/python benchmarks/demo_force_ratio.py --base REV [--reps 2]   # needs a finished `make demo`
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _summary_sha(path: Path) -> str:
    """sha256 of summary.json's ``summary`` (the component summary), keys sorted."""
    summary = json.loads(path.read_text())["summary"]
    return hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, {os.cpu_count()} logical CPUs"


def _run(tree: Path, data: Path, home: Path) -> float:
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(tree)}
    env.pop("ACTGEO_CONFIG", None)
    env.pop("ACTGEO_DATABASE_URL", None)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "actgeo_assets.cli", "run", "--profile", "demo", "--force",
                    "--data-dir", str(data)], cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (e.g. main before a change)")
    parser.add_argument("--head", default="HEAD", help="the commit measured against it (default HEAD)")
    parser.add_argument("--reps", type=int, default=2, help="runs of each (default 2, in A B B A order)")
    parser.add_argument("--data", default=str(REPO / "data"), help="a data_dir holding a finished demo run")
    args = parser.parse_args()
    demo = Path(args.data)
    if not (demo / "demo" / "components" / "summary.json").exists():
        raise SystemExit(f"no finished demo run in {demo}: run `make demo` first")
    work = Path(tempfile.mkdtemp(prefix="demo-force-"))
    trees, times, outputs = {}, {"base": [], "head": []}, {}
    try:
        for name, rev in (("base", args.base), ("head", args.head)):
            trees[name] = work / f"tree-{name}"
            subprocess.run(["git", "worktree", "add", "--detach", str(trees[name]), rev], cwd=REPO, check=True,
                           capture_output=True)
            shutil.copytree(demo, work / f"data-{name}")
            (work / f"home-{name}").mkdir()
            shutil.copy(REPO / "dagster.local.yaml", work / f"home-{name}" / "dagster.yaml")
        order = [n for r in range(args.reps) for n in (("base", "head") if r % 2 == 0 else ("head", "base"))]
        for name in order:
            seconds = _run(trees[name], work / f"data-{name}", work / f"home-{name}")
            times[name].append(seconds)
            print(f"{name}: {seconds:.1f} s", flush=True)
        for name in times:
            comps = work / f"data-{name}" / "demo" / "components"
            outputs[name] = (_sha(comps / "labels.npy"), _summary_sha(comps / "summary.json"))
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    base, head = statistics.median(times["base"]), statistics.median(times["head"])
    same = outputs["base"] == outputs["head"]
    rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=REPO, capture_output=True,
                         text=True).stdout.strip()
    text = (f"## `make demo --force`: {rev} (base) against this commit\n\n"
            f"`benchmarks/demo_force_ratio.py --base {rev} --reps {args.reps}`: `actgeo run --profile demo --force` "
            f"in a worktree of each commit, alternating, each on its own copy of the same demo data. Machine: "
            f"{_cpu()}.\n\n"
            "| commit | runs (s) | median (s) |\n|---|---|---|\n"
            f"| base {rev} | {', '.join(f'{t:.1f}' for t in times['base'])} | {base:.1f} |\n"
            f"| this commit | {', '.join(f'{t:.1f}' for t in times['head'])} | {head:.1f} |\n\n"
            f"Ratio this / base: **{head / base:.2f}**. labels.npy byte-identical and the same component summary: "
            f"**{'yes' if same else 'NO'}** (sha256 {outputs['head'][0][:12]}, {outputs['head'][1][:12]}).\n")
    out = REPO / "benchmarks" / "results" / "demo_force.md"
    out.write_text(text)
    print(text)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
