"""Benchmark: is the Dagster UI (and its automation) still usable at the scale profile's 20 shards (210 tile
partitions)? Measured against the demo's shape (4 shards, 10 tiles) as the reference.

    nice -n 15 .venv/bin/python benchmarks/dagster_scale.py                  # both shapes, 3 repeats, temp folder
    nice -n 15 .venv/bin/python benchmarks/dagster_scale.py --work /tmp/dsc  # keep (and reuse) the runs there
    .venv/bin/python benchmarks/dagster_scale.py --from-json /tmp/dsc/results.json  # re-render the table only

About 16 minutes on a 2-core machine (the 20-shard `actgeo run` alone is 5 minutes).

For each shape (``scale``: profile ``scale`` with ``n_shards=20``; ``demo``: profile ``demo`` with
``n_shards=4``), cheaply (tiny random Gemma 2 of actgeo_tests/support/tiny_model.py, the fixture corpus
actgeo_tests/fixtures/mini_corpus.jsonl, ``budget=2000``, ``context_len=32``):

1. a data dir and a DAGSTER_HOME (the Makefile's copy of dagster.local.yaml) under the work folder, and one
   `actgeo run` (actgeo_assets/runner.py materialize_run) recorded in it: per shard a capture and a
   normalization run, the mean, one run per tile (210 or 10) and the merge: what a user of the profile sees;
2. `dagster dev` on that instance as `make ui` starts it (webserver + daemon, automation on) on a free port,
   with the report server (actgeo_tests/support/dagster_ui.py);
3. headless Debian chromium (Playwright) times each page from ``goto`` to the data asserted visible: the asset
   graph, the edge_tiles asset page, its Partitions tab, one tile partition's materialization, the Runs page
   filtered by the invocation tag, the components asset page; ``--repeats`` times each (a fresh tab each
   time), medians; a screenshot of each page to test-output/scale-<n>shards-<phase>-<page>.png;
4. the GraphQL query of edge_tiles' partition statuses, ``--repeats`` times, median;
5. the tick durations (end - start, from the instance's tick records) of ``shard_sensor`` and
   ``default_automation_condition_sensor`` once each has ticked ``--ticks`` times;
6. all of it again in the *stale* phase: ``min_threshold`` changed in the settings file, so the shard sensor
   requests every tile again (batches of SENSOR_MAX_RUNS_PER_TICK a tick, each batch's tick timed), with the
   instance's ``max_concurrent_runs`` set to 0 so that the runs stay queued (deleted afterwards, and the two
   files restored, so a ``--work`` folder can be measured again).

Writes benchmarks/results/dagster_scale.md (through layout.atomic_path) with the CPU model and thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from actgeo_assets.defs.automation import SENSOR_MAX_RUNS_PER_TICK  # noqa: E402

FIXTURE = REPO / "actgeo_tests" / "fixtures" / "mini_corpus.jsonl"
RESULTS = REPO / "benchmarks" / "results" / "dagster_scale.md"
#: shape name -> (profile, n_shards)
SHAPES = {"scale": ("scale", 20), "demo": ("demo", 4)}
SENSORS = ("shard_sensor", "default_automation_condition_sensor")
#: How long a page may take before it counts as unusable (the issue's bar), and a tick.
PAGE_LIMIT_S, TICK_LIMIT_S = 5.0, 10.0

PARTITION_STATUSES = """query($k: [String!]!) { assetNodeOrError(assetKey: {path: $k}) { ... on AssetNode {
    partitionKeysByDimension { name partitionKeys }
    assetPartitionStatuses { __typename ... on DefaultPartitionStatuses {
        materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions } } } } }"""


def shape_config(shape: str, root: Path) -> dict[str, Any]:
    """The actgeo settings file of ``shape`` (profile + the cheap overrides), data under ``root/data``."""
    from actgeo_tests.support.tiny_model import tiny_gemma2

    profile, n_shards = SHAPES[shape]
    return {
        "profile": profile, "data_dir": str(root / "data"), "model": tiny_gemma2(root / "model"), "layer": 2,
        "corpus": str(FIXTURE), "n_shards": n_shards, "budget": 2000, "context_len": 32, "batch_size": 8,
        "threshold": 0.6, "min_threshold": 0.4, "sweep": [0.4, 0.5, 0.6, 0.7], "card_ranks": [2, 3],
        "contexts_per_card": 2, "torch_threads": 1,
        **({"prune_at": 0.7} if profile == "scale" else {}),
    }


def prepare(shape: str, root: Path, echo: Callable[[str], None]) -> tuple[dict[str, str], dict[str, Any]]:
    """The instance and data of ``shape`` under ``root`` (materialized once; reused when ``root/done.json``
    says so). Returns (environment for `dagster dev`, {"seconds", "runs", "invocation"})."""
    import yaml

    from actgeo_tests.support.dagster_ui import free_port, instance_home

    root.mkdir(parents=True, exist_ok=True)
    home = root / "dagster_home"
    cfg = root / "actgeo.yaml"
    env = {"DAGSTER_HOME": str(home), "ACTGEO_CONFIG": str(cfg),
           "ACTGEO_REPORT_URL": f"http://127.0.0.1:{free_port()}"}
    done = root / "done.json"
    if done.exists():
        return env, json.loads(done.read_text())
    instance_home(home)
    cfg.write_text(yaml.safe_dump(shape_config(shape, root)))
    # `actgeo run` in a child process (its own DAGSTER_HOME, ACTGEO_CONFIG and torch state)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "actgeo_assets.cli", "run"], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"actgeo run ({shape}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    echo(f"  {shape}: actgeo run in {seconds:.0f} s")
    info = {"seconds": seconds, **_invocation(env)}
    done.write_text(json.dumps(info))
    return env, info


def _invocation(env: dict[str, str]) -> dict[str, Any]:
    """The invocation tag of the run recorded in the instance at env's DAGSTER_HOME and its number of runs."""
    code = ("import json, dagster as dg\n"
            "with dg.DagsterInstance.get() as i:\n"
            "    runs = i.get_runs()\n"
            "    tags = {r.tags.get('actgeo/invocation') for r in runs} - {None}\n"
            "    print(json.dumps({'invocation': sorted(tags)[-1], 'runs': len(runs),\n"
            "                      'jobs': sorted({r.job_name for r in runs})}))\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ticks_since(home: Path, since: float) -> dict[str, list[dict[str, Any]]]:
    """{sensor name: [{"start", "seconds" (end - start), "runs" (run requests launched), "status"} of each
    finished tick that started after ``since`` (epoch s), oldest first]} from the instance's tick records."""
    code = ("import json, dagster as dg\n"
            "from dagster._core.scheduler.instigation import InstigatorType\n"
            "out = {}\n"
            "with dg.DagsterInstance.get() as i:\n"
            "    for s in i.all_instigator_state(instigator_type=InstigatorType.SENSOR):\n"
            "        ticks = i.get_ticks(s.instigator_origin_id, s.selector_id, limit=500)\n"
            "        out[s.instigator_name] = [[t.timestamp, t.end_timestamp, t.status.value, len(t.run_ids)]\n"
            "                                  for t in ticks]\n"
            "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DAGSTER_HOME": str(home)},
                          capture_output=True, text=True, check=True)
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: [{"start": t0, "seconds": t1 - t0, "status": status, "runs": runs}
                   for t0, t1, status, runs in sorted(ticks) if t1 is not None and status != "STARTED" and t0 >= since]
            for name, ticks in raw.items()}


def _shot(page: Any, name: str) -> None:
    from actgeo_tests.support.browser import TEST_OUTPUT

    TEST_OUTPUT.mkdir(exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=str(TEST_OUTPUT / name), full_page=True)


def page_checks(n_shards: int, invocation: str) -> dict[str, tuple[str, Callable[[Any], None]]]:
    """{page name: (path, wait(page): returns once the page's data is visible)}."""
    n_tiles = n_shards * (n_shards + 1) // 2
    last = f"shard-{n_shards - 1:03d}"
    tile = f"shard-{n_shards // 3:03d}__shard-{n_shards - 2:03d}"

    def graph(page: Any) -> None:  # the group's lineage: every node drawn
        for name in ("raw_activations", "activation_mean", "normalized", "edge_tiles", "components",
                     "component_cards"):
            page.get_by_text(name, exact=True).first.wait_for()

    def asset(page: Any) -> None:  # the overview: the latest materialization (the last tile) and its metadata
        page.get_by_text(f"{last}__{last}", exact=True).first.wait_for()
        page.get_by_text("forest_edges", exact=True).first.wait_for()

    def partitions(page: Any) -> None:  # the status counts and the (virtualized) list of partition keys
        page.get_by_text(f"{n_tiles} Partitions Selected", exact=True).first.wait_for()
        page.get_by_text("shard-000__shard-000", exact=True).first.wait_for()

    def one_tile(page: Any) -> None:  # that partition's latest materialization with its metadata
        page.get_by_text("View all historical events (1)", exact=False).first.wait_for()
        page.get_by_text("pairs_compared", exact=True).first.wait_for()

    def runs(page: Any) -> None:
        page.get_by_text("merge_job", exact=True).first.wait_for()
        page.get_by_text("tiles_job", exact=True).first.wait_for()

    def components(page: Any) -> None:  # the summary metadata of the merge
        page.get_by_text("n_components", exact=True).first.wait_for()
        page.get_by_text("largest_fraction", exact=True).first.wait_for()

    return {
        "asset_graph": ("/locations/actgeo_assets.definitions/asset-groups/actgeo", graph),
        "edge_tiles_asset": ("/assets/edge_tiles", asset),
        "edge_tiles_partitions": ("/assets/edge_tiles?view=partitions", partitions),
        "one_tile_partition": (f"/assets/edge_tiles?view=partitions&partition={tile}", one_tile),
        "runs_of_invocation": (f"/runs?q%5B0%5D=tag%3Aactgeo%2Finvocation%3D{invocation}", runs),
        "components_asset": ("/assets/components", components),
    }


def measure_pages(ui: Any, label: str, n_shards: int, invocation: str, repeats: int,
                  echo: Callable[[str], None]) -> dict[str, list[float]]:
    """{page: [seconds from goto to its data visible, per repeat]}; one warm-up visit (not timed) first."""
    from actgeo_tests.support.browser import chromium_context
    from actgeo_tests.support.dagster_ui import skip_community_dialog

    checks = page_checks(n_shards, invocation)
    times: dict[str, list[float]] = {name: [] for name in checks}
    with chromium_context(viewport=(1500, 1000), timeout_ms=120_000) as ctx:
        warm = ctx.new_page()  # the JS bundle into the browser cache, the first-visit dialog away
        warm.goto(ui.url("/assets"))
        skip_community_dialog(warm)
        warm.close()
        for rep in range(repeats):
            for name, (path, wait) in checks.items():
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(ui.url(path))
                try:
                    wait(page)
                except Exception:
                    _shot(page, f"scale-{label}-{name}-FAILED.png")
                    raise
                times[name].append(time.perf_counter() - t0)
                if rep == 0:
                    _shot(page, f"scale-{label}-{name}.png")
                page.close()
            echo(f"  {label} pages, round {rep + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()))
    return times


def measure_graphql(ui: Any, n_tiles: int, repeats: int) -> list[float]:
    """Seconds of the GraphQL query of edge_tiles' partition statuses (checked: every tile materialized)."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = ui.graphql(PARTITION_STATUSES, {"k": ["edge_tiles"]})["assetNodeOrError"]
        out.append(time.perf_counter() - t0)
        status = data["assetPartitionStatuses"]
        seen = set(status["materializedPartitions"]) | set(status["materializingPartitions"])
        if len(seen) != n_tiles or len(data["partitionKeysByDimension"][0]["partitionKeys"]) != n_tiles:
            raise SystemExit(f"edge_tiles: {len(seen)} materialized partitions, expected {n_tiles}")
    return out


def wait_ticks(home: Path, since: float, done: Callable[[dict[str, list[dict[str, Any]]]], bool], seconds: float,
               echo: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:
    """The ticks since ``since`` once ``done(ticks)`` (or ``seconds`` passed)."""
    deadline = time.time() + seconds
    while True:
        ticks = ticks_since(home, since)
        if done(ticks) or time.time() > deadline:
            echo("  ticks: " + ", ".join(f"{s} {len(ticks.get(s, []))}" for s in SENSORS))
            return {s: ticks.get(s, []) for s in SENSORS}
        time.sleep(5)


def _set_line(path: Path, old: str, new: str) -> str:
    """Replace the one line ``old`` of ``path`` by ``new``; returns the previous text."""
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"{path}: expected one line {old!r}")
    path.write_text(text.replace(old, new))
    return text


def _delete_queued(home: Path) -> int:
    """Delete the queued (never launched) runs of the instance at ``home``; returns how many."""
    code = ("import dagster as dg\n"
            "with dg.DagsterInstance.get() as i:\n"
            "    runs = i.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))\n"
            "    for r in runs: i.delete_run(r.run_id)\n"
            "    print(len(runs))\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DAGSTER_HOME": str(home)},
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1])


def run_shape(shape: str, root: Path, repeats: int, n_ticks: int, echo: Callable[[str], None]) -> dict[str, Any]:
    """Both phases of ``shape``: ``idle`` (everything current, the UI as `make ui` starts it) and ``stale``
    (``min_threshold`` changed in the settings file, so the shard sensor requests every tile again; the
    instance's ``max_concurrent_runs`` set to 0 so that those runs stay queued instead of computing)."""
    from actgeo_tests.support.dagster_ui import dagster_ui

    profile, n_shards = SHAPES[shape]
    n_tiles = n_shards * (n_shards + 1) // 2
    env, info = prepare(shape, root, echo)
    expected_runs = 2 * n_shards + 1 + n_tiles + 1
    if info["runs"] < expected_runs:
        raise SystemExit(f"{shape}: {info['runs']} runs in the instance, expected at least {expected_runs}")
    home, cfg = Path(env["DAGSTER_HOME"]), Path(env["ACTGEO_CONFIG"])
    ui_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    out: dict[str, Any] = {"shape": shape, "profile": profile, "n_shards": n_shards, "n_tiles": n_tiles, "run": info}
    t_up = time.time()
    with dagster_ui(root, ui_env, root / "data") as ui:
        out["ui_start_s"] = time.time() - t_up
        pages = measure_pages(ui, f"{n_shards}shards-idle", n_shards, info["invocation"], repeats, echo)
        gql = measure_graphql(ui, n_tiles, repeats)
        echo(f"  {shape} partition statuses query: {', '.join(f'{s:.2f}s' for s in gql)}")
        ticks = wait_ticks(home, t_up, lambda t: all(len(t.get(s, [])) >= n_ticks for s in SENSORS),
                           30.0 * n_ticks + 120, echo)
    out["idle"] = {"pages": pages, "graphql": gql, "ticks": ticks}
    yaml_text = _set_line(home / "dagster.yaml", "max_concurrent_runs: 2", "max_concurrent_runs: 0")
    cfg_text = _set_line(cfg, "min_threshold: 0.4", "min_threshold: 0.35")
    try:
        t_up = time.time()
        with dagster_ui(root, ui_env, root / "data") as ui:
            # the shard sensor requests the tiles in batches of SENSOR_MAX_RUNS_PER_TICK, one batch a tick
            requested = wait_ticks(home, t_up, lambda t: sum(k["runs"] for k in t.get("shard_sensor", [])) >= n_tiles,
                                   (n_tiles / SENSOR_MAX_RUNS_PER_TICK + 2) * 30 + 120, echo)
            pages = measure_pages(ui, f"{n_shards}shards-stale", n_shards, info["invocation"], repeats, echo)
            gql = measure_graphql(ui, n_tiles, repeats)
            ticks = wait_ticks(home, time.time(), lambda t: all(len(t.get(s, [])) >= n_ticks for s in SENSORS),
                               30.0 * n_ticks + 120, echo)
        batches = [k for k in requested["shard_sensor"] if k["runs"]]
        out["stale"] = {"pages": pages, "graphql": gql, "ticks": ticks, "request_ticks": batches,
                        "all_queued_s": batches[-1]["start"] + batches[-1]["seconds"] - batches[0]["start"]}
        if sum(k["runs"] for k in batches) != n_tiles:
            raise SystemExit(f"{shape}: the shard sensor requested {sum(k['runs'] for k in batches)} runs, "
                             f"expected {n_tiles} tiles")
    finally:
        (home / "dagster.yaml").write_text(yaml_text)
        cfg.write_text(cfg_text)
        deleted = _delete_queued(home)
        echo(f"  {shape}: deleted {deleted} queued runs")
    if deleted != n_tiles:  # one queued run per tile: none requested twice
        raise SystemExit(f"{shape}: {deleted} queued runs, expected one per tile ({n_tiles})")
    return out


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return fields.get("Model name", "unknown").strip()


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f}" if xs else "n/a"


def _max(xs: list[float]) -> str:
    return f"{max(xs):.2f}" if xs else "n/a"


def render(results: list[dict[str, Any]], repeats: int, load: str) -> str:
    """The markdown section of the results (one column per shape and phase)."""
    import dagster

    cols = [(r, ph) for r in results for ph in ("idle", "stale")]
    head = " | ".join(f"{r['n_shards']} shards, {r['n_tiles']} tiles, {ph}" for r, ph in cols)
    lines = [
        "## Dagster UI and automation at scale (`benchmarks/dagster_scale.py`)",
        "",
        f"CPU: {_cpu()}, {os.cpu_count()} threads; Dagster {dagster.__version__}; load average at the start "
        f"{load} (a shared machine, busy with other work: expect +-30%). Each shape: one `actgeo run` of the "
        f"tiny random Gemma 2 on the fixture corpus (budget 2,000, 32-token contexts) recorded in a fresh "
        f"instance configured like `make ui`'s, then `dagster dev` (webserver + daemon, both sensors running) on "
        f"it. *idle*: everything current. *stale*: `min_threshold` changed in the settings file, so "
        f"`shard_sensor` requests every tile again, {SENSOR_MAX_RUNS_PER_TICK} runs a tick (the instance's "
        f"`max_concurrent_runs` set to 0 for this phase, so those runs stay queued instead of computing; the "
        f"pages are timed once all are queued). Page times: from `goto` to the page's data visible "
        f"in headless chromium (a fresh tab, the JS bundle cached), {repeats} visits each; tick times: end - start "
        f"of the instance's tick records. Seconds, median / max.",
        "",
        f"| | {head} |",
        "|---|" + "---|" * len(cols),
        "| runs in the instance (`actgeo run`: runs, wall) | " + " | ".join(
            f"{r['run']['runs']}, {r['run']['seconds']:.0f} s" if ph == "idle" else "+ queued tile runs"
            for r, ph in cols) + " |",
    ]
    for name in results[0]["idle"]["pages"]:
        lines.append(f"| page: {name} | " + " | ".join(
            f"{_med(r[ph]['pages'][name])} / {_max(r[ph]['pages'][name])}" for r, ph in cols) + " |")
    lines.append("| GraphQL: edge_tiles partition statuses | " + " | ".join(
        f"{_med(r[ph]['graphql'])} / {_max(r[ph]['graphql'])}" for r, ph in cols) + " |")
    for s in SENSORS:
        lines.append(f"| tick: {s}, first (idle: after the start; stale: once all are queued) | " + " | ".join(
            f"{r[ph]['ticks'][s][0]['seconds']:.2f}" if r[ph]["ticks"][s] else "n/a" for r, ph in cols) + " |")
        lines.append(f"| tick: {s}, later | " + " | ".join(
            f"{_med([t['seconds'] for t in r[ph]['ticks'][s][1:]])} / {_max([t['seconds'] for t in r[ph]['ticks'][s][1:]])}"
            f" ({len(r[ph]['ticks'][s]) - 1})" for r, ph in cols) + " |")
    lines.append("| tick: shard_sensor requesting tiles (ticks, runs; all queued after) | " + " | ".join(
        (f"{_med([k['seconds'] for k in r['stale']['request_ticks']])} / "
         f"{_max([k['seconds'] for k in r['stale']['request_ticks']])} ({len(r['stale']['request_ticks'])} ticks, "
         f"{sum(k['runs'] for k in r['stale']['request_ticks'])} runs; {r['stale']['all_queued_s']:.0f} s)")
        if ph == "stale" else "" for r, ph in cols) + " |")
    slow = [f"{r['n_shards']} shards {ph} {name} {statistics.median(v):.1f} s" for r, ph in cols
            for name, v in r[ph]["pages"].items() if v and statistics.median(v) > PAGE_LIMIT_S]
    slow += [f"{r['n_shards']} shards {ph} tick {s} {t['seconds']:.1f} s" for r, ph in cols
             for s, ticks in r[ph]["ticks"].items() for t in ticks if t["seconds"] > TICK_LIMIT_S]
    slow += [f"{r['n_shards']} shards stale: a tick requesting {t['runs']} runs {t['seconds']:.1f} s" for r in results
             for t in r["stale"]["request_ticks"] if t["seconds"] > TICK_LIMIT_S]
    lines += ["", f"Over the bar (a page over {PAGE_LIMIT_S:.0f} s, a tick over {TICK_LIMIT_S:.0f} s): "
              + ("; ".join(slow) if slow else "none") + ".",
              "Screenshots: test-output/scale-<shards>shards-<phase>-<page>.png.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=None, help="folder of the runs (default: a temp folder, removed)")
    ap.add_argument("--shapes", default="scale,demo", help="comma-separated: scale (20 shards), demo (4 shards)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ticks", type=int, default=4, help="finished ticks of each sensor to wait for")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--from-json", type=Path, default=None, help="only re-render a --work folder's results.json")
    args = ap.parse_args(argv)
    from actgeo_assets.lib.store.layout import atomic_path

    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        with atomic_path(args.out) as path:
            path.write_text(render(saved["results"], saved["repeats"], saved["load"]))
        return 0
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if unknown := [s for s in shapes if s not in SHAPES]:
        ap.error(f"unknown shape(s) {unknown}; expected some of {', '.join(SHAPES)}")
    from actgeo_tests.support.browser import chromium_missing

    if why := chromium_missing():
        raise SystemExit(why)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())

    def echo(s: str) -> None:
        print(s, flush=True)

    with tempfile.TemporaryDirectory(prefix="actgeo-dagster-scale-") as tmp:
        work = args.work or Path(tmp)
        results = [run_shape(s, work / s, args.repeats, args.ticks, echo) for s in shapes]
    text = render(results, args.repeats, load)
    with atomic_path(args.out) as path:
        path.write_text(text)
    if args.work:
        with atomic_path(args.work / "results.json") as path:
            path.write_text(json.dumps({"results": results, "repeats": args.repeats, "load": load}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
