""""Materialize all" in the UI against `make demo --force`, side by side on the same data and instance.

Starts what `make ui` starts (actgeo_tests/support/dagster_ui.py: the webserver, the daemon, the report server)
on a copy of the demo's Dagster instance (its shard partitions registered), launches the asset backfill that the
UI's "Materialize all" launches (every asset of the pipeline's lineage, all partitions, through the webserver's
GraphQL API), and times it from the launch to the end of its last run. In the same script, alternating with it,
the command line does the same work: `actgeo run --profile demo --force` (what `make demo --force` runs) for the
pipeline's assets, plus `actgeo layers` when the selection holds the layer sweep, as the lineage page's
"Materialize all" does. Writes benchmarks/results/ui_materialize_all.md.

    .venv/bin/python benchmarks/ui_materialize_all.py --reps 2      # needs a finished `make demo` (data/demo)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actgeo_tests.support.dagster_ui import dagster_ui, free_port  # noqa: E402

#: The assets `make demo` materializes (and the faiss index that `actgeo lookup` builds on demand).
PIPELINE = ["raw_activations", "activation_mean", "normalized", "edge_tiles", "components", "component_cards",
            "lookup"]
#: What "Materialize all" on the lineage page selects: every asset of the Definitions.
EVERYTHING = [*PIPELINE, "layers"]

LAUNCH = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack }
  ... on InvalidSubsetError { message } ... on UnauthorizedError { message } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill {
  status timestamp endTimestamp } } }"""
RUNS = """query($v: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $v}]}) {
  ... on Runs { results { runId status startTime endTime creationTime jobName
                          assetSelection { path } tags { key value } } } } }"""


def lscpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"


def run_cli(env: dict[str, str], layers: bool) -> float:
    """`actgeo run --profile demo --force` (and `actgeo layers --force`): seconds."""
    t0 = time.perf_counter()
    commands = [["run", "--profile", "demo", "--force"]] + ([["layers", "--profile", "demo", "--force"]] if layers else [])
    for args in commands:
        done = subprocess.run([str(REPO / ".venv/bin/actgeo"), *args], cwd=REPO, env=env, capture_output=True,
                              text=True)
        if done.returncode:
            raise SystemExit(f"actgeo {' '.join(args)} exited {done.returncode}:\n{done.stdout[-2000:]}"
                             f"{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def materialize_all(ui: Any, assets: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Launch the backfill; wait for it; the launch-to-last-run-end time and its runs."""
    params = {"assetSelection": [{"path": [a]} for a in assets], "allPartitions": True, "tags": []}
    t0 = time.time()
    res = ui.graphql(LAUNCH, {"p": params})["launchPartitionBackfill"]
    assert res["__typename"] == "LaunchBackfillSuccess", res
    bid = res["backfillId"]
    status = ""
    while time.time() - t0 < timeout:
        status = ui.graphql(BACKFILL, {"id": bid})["partitionBackfillOrError"]["status"]
        if status not in ("REQUESTED", "CANCELING"):
            break
        time.sleep(1)
    t_done = time.time()
    runs = ui.graphql(RUNS, {"v": bid})["runsOrError"]["results"]
    assert status == "COMPLETED_SUCCESS" and all(r["status"] == "SUCCESS" for r in runs), (status, runs)
    last_end = max(r["endTime"] for r in runs)
    return {"backfill": bid, "seconds": last_end - t0, "seconds_to_completed": t_done - t0, "runs": runs,
            "t0": t0}


def run_table(runs: list[dict], t0: float) -> list[str]:
    rows = []
    for r in sorted(runs, key=lambda r: r["creationTime"]):
        assets = ",".join(a["path"][-1] for a in r["assetSelection"] or [])
        tags = {t["key"]: t["value"] for t in r["tags"]}
        part = tags.get("dagster/partition", "")
        if "dagster/asset_partition_range_start" in tags:
            part = f"{tags['dagster/asset_partition_range_start']} .. {tags['dagster/asset_partition_range_end']}"
        rows.append(f"| {assets} | {part} | {r['creationTime'] - t0:6.1f} | {r['startTime'] - t0:6.1f} | "
                    f"{r['endTime'] - t0:6.1f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--selections", default="pipeline,everything",
                    help="pipeline (what make demo builds), everything (the lineage page's Materialize all)")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/ui_materialize_all.md"))
    args = ap.parse_args(argv)
    home_src = Path(os.environ.get("DAGSTER_HOME", REPO / ".dagster_home"))
    if not (REPO / "data/demo/components/summary.json").exists() or not (home_src / "history" / "runs.db").exists():
        raise SystemExit("needs a finished `make demo` (data/demo and .dagster_home)")
    selections = {"pipeline": PIPELINE, "everything": EVERYTHING}
    chosen = [x.strip() for x in args.selections.split(",") if x.strip()]
    times: dict[str, dict[str, list[float]]] = {c: {"cli": [], "ui": [], "done": []} for c in chosen}
    last: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="actgeo-ui-bench-") as tmp_s:
        tmp = Path(tmp_s)
        home = tmp / "home"
        shutil.copytree(home_src, home, ignore=shutil.ignore_patterns("logs"))
        shutil.copy(REPO / "dagster.local.yaml", home / "dagster.yaml")
        env = {**os.environ, "DAGSTER_HOME": str(home), "ACTGEO_REPORT_URL": f"http://127.0.0.1:{free_port()}"}
        env.pop("ACTGEO_CONFIG", None)
        with dagster_ui(tmp, env, REPO / "data") as ui:
            time.sleep(5)  # let the daemon's first iterations pass
            for rep in range(args.reps):
                for name in chosen:
                    t = times[name]
                    t["cli"].append(run_cli(env, layers="layers" in selections[name]))
                    last[name] = materialize_all(ui, selections[name])
                    t["ui"].append(last[name]["seconds"])
                    t["done"].append(last[name]["seconds_to_completed"])
                    print(f"rep {rep} {name}: command line {t['cli'][-1]:.1f} s, Materialize all {t['ui'][-1]:.1f} s "
                          f"to the last run's end ({t['done'][-1]:.1f} s until the backfill reads completed), "
                          f"{len(last[name]['runs'])} runs", flush=True)
    lines = [
        '## "Materialize all" in the UI against the command line',
        "",
        f"Measured by `python benchmarks/ui_materialize_all.py --reps {args.reps}` on {lscpu()} "
        f"(Python {platform.python_version()}), alternating, on the same data and a copy of the same instance; "
        "medians. The UI side is what `make ui` starts (`python -m actgeo_assets.dev`: `dagster dev`, backfill "
        "loop every 2 s); the backfill is the one \"Materialize all\" launches (all partitions), timed from its "
        "launch to the end of its last run. The command line does the same work: `pipeline` = the assets "
        "`make demo` builds (+ `lookup`, 1 s) against `actgeo run --profile demo --force`; `everything` "
        "= the lineage page's selection (+ `layers`) against that plus `actgeo layers`.",
        "",
        "| selection | command line, median s (runs) | \"Materialize all\", median s (runs) | ratio |",
        "|---|---|---|---|",
    ]
    for name in chosen:
        t = times[name]
        cli_m, ui_m = statistics.median(t["cli"]), statistics.median(t["ui"])
        lines.append(f"| {name} | {cli_m:.1f} ({', '.join(f'{x:.1f}' for x in t['cli'])}) | {ui_m:.1f} "
                     f"({', '.join(f'{x:.1f}' for x in t['ui'])}) | {ui_m / cli_m:.2f}x |")
    for name in chosen:
        lines += [
            "",
            f"Runs of the last `{name}` backfill (seconds after the launch; the backfill reads COMPLETED_SUCCESS "
            f"{statistics.median(times[name]['done']) - statistics.median(times[name]['ui']):.1f} s after its "
            "last run ends):",
            "",
            "| assets | partition(s) | created | started | ended |",
            "|---|---|---|---|---|",
            *run_table(last[name]["runs"], last[name]["t0"]),
        ]
    lines.append("")
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
