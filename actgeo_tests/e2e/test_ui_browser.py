"""The Dagster UI as a person uses it after `make demo` and `make ui`: `dagster dev` (webserver + daemon) and
the report server on 127.0.0.1, driven by headless chromium. The runs of one `actgeo run` are stage jobs of
the Definitions grouped under one tag, with their compute logs, and re-execute; `components` materializes
from its asset page, which shows its figures inline; the cards' contexts are readable on the
`component_cards` page and the HTML report is one click away. Screenshots land in test-output/."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from playwright.sync_api import expect

from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.runner import materialize_run
from actgeo_tests.support.browser import TEST_OUTPUT, chromium_context, require_chromium
from actgeo_tests.support.dagster_ui import dagster_ui as start_ui
from actgeo_tests.support.dagster_ui import environ, free_port, instance_home, skip_community_dialog
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_values

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory):
    """`make ui` on a tiny run: the runs of one `actgeo run` (the runner, in this process) recorded in a fresh
    instance configured like the Makefile's, then `dagster dev` and the report server on free ports."""
    require_chromium()
    tmp = tmp_path_factory.mktemp("ui")
    home = instance_home(tmp / "dagster_home")
    data = tmp / "data"
    # the tiny run at 400 rows (the UI materializes it twice), with a layer sweep the tiny model can run
    # (its layers 0..2), for "Materialize all"
    config = {"data_dir": str(data), **tiny_values(model=tiny_gemma2(tmp / "model"), budget=400,
                                                   compare_layers=[0, 1, 2], compare_budget=120)}
    cfg = tmp / "actgeo.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {"DAGSTER_HOME": str(home), "ACTGEO_CONFIG": str(cfg), "ACTGEO_REPORT_URL": f"http://127.0.0.1:{free_port()}"}
    # Upstream partitions first (as `make demo` would), recorded in the same instance the UI reads.
    with environ(**env), dg.DagsterInstance.get() as instance:
        record = materialize_run(ActgeoResource(), instance, echo=lambda s: None)
    with start_ui(tmp, {**os.environ, **env, "PYTHONUNBUFFERED": "1"}, data) as ui:
        yield ui, record


INVOCATION_RUNS = """query($tag: String!) { runsOrError(filter: {tags: [{key: "actgeo/invocation", value: $tag}]}) {
    ... on Runs { results { runId jobName status tags { key value } } } } }"""


#: How far (px) the metadata table holding a row ``key`` sticks out of the element that holds it.
FITS_JS = """(key) => {
    const table = [...document.querySelectorAll('table')].filter(t => t.innerText.includes(key)).pop();
    return table.getBoundingClientRect().width - table.parentElement.clientWidth;
}"""


def _shot(page, name: str, height: int | None = None) -> Path:
    """A screenshot; ``height``: first make the viewport that tall, so that a page whose panel scrolls
    (the asset pages) shows all of its metadata."""
    TEST_OUTPUT.mkdir(exist_ok=True)
    if height:
        page.set_viewport_size({"width": page.viewport_size["width"], "height": height})
    page.wait_for_timeout(1000)  # let dialogs and images finish fading in
    path = TEST_OUTPUT / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, path
    return path


def _invocation(ui) -> str:
    """The invocation tag of the fixture's `actgeo run`."""
    data = ui.graphql("""query { runsOrError(limit: 1) { ... on Runs { results { tags { key value } } } } }""")
    tags = {t["key"]: t["value"] for t in data["runsOrError"]["results"][0]["tags"]}
    return tags["actgeo/invocation"]


def test_runner_runs_are_stage_jobs_grouped_and_reexecutable(dagster_ui) -> None:
    ui, _ = dagster_ui
    tag = _invocation(ui)
    runs = ui.graphql(INVOCATION_RUNS, {"tag": tag})["runsOrError"]["results"]
    jobs = sorted(r["jobName"] for r in runs)
    # 2 shards: 2 captures, the mean, 2 normalizations, 3 tiles, one merge (components + cards)
    assert jobs == ["capture_job"] * 2 + ["mean_job", "merge_job"] + ["normalize_job"] * 2 + ["tiles_job"] * 3
    assert {r["status"] for r in runs} == {"SUCCESS"}
    capture = next(r for r in runs if r["jobName"] == "capture_job")
    # the run's job is the Definitions' own: the UI can re-execute it (the same settings, from the run config)
    launched = ui.graphql("""mutation($id: String!) { launchPipelineReexecution(
        reexecutionParams: {parentRunId: $id, strategy: ALL_STEPS}) {
        __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
                          {"id": capture["runId"]})["launchPipelineReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    assert ui.wait_run(launched["run"]["runId"]) == "SUCCESS"

    with chromium_context(viewport=(1500, 1000), timeout_ms=60_000) as ctx:
        page = ctx.new_page()
        page.goto(ui.url(f"/runs?q%5B0%5D=tag%3Aactgeo%2Finvocation%3D{tag}"))
        skip_community_dialog(page)
        page.get_by_text("merge_job").first.wait_for()
        assert page.get_by_text("capture_job").count() >= 1
        _shot(page, "ui-runs-of-one-invocation.png")
        # a capture run: "Re-execute" is offered, and its stderr holds the asset's log lines
        page.goto(ui.url(f"/runs/{capture['runId']}"))
        button = page.get_by_role("button", name="Re-execute all").first
        button.wait_for()
        expect(button).to_be_enabled(timeout=30_000)  # retried: the page enables it once the run has loaded
        page.get_by_text("View stdout / stderr").first.click()
        page.get_by_text("capturing shard-", exact=False).first.wait_for()
        _shot(page, "ui-capture-run-stderr.png")


def test_materialize_components_from_the_asset_page(dagster_ui) -> None:
    ui, _ = dagster_ui
    before = {m["runId"] for m in ui.materializations("components")}
    with chromium_context(viewport=(1920, 1080), timeout_ms=60_000) as ctx:  # a full-HD desktop
        page = ctx.new_page()
        page.goto(ui.url("/assets/components"))
        skip_community_dialog(page)
        try:
            page.locator("button", has_text="Materialize").first.click()
        except Exception:
            _shot(page, "ui-no-materialize-button.png")
            raise
        # Wait for a new materialization of `components` to land, launched from the page.
        deadline, new = time.time() + 300, []
        while time.time() < deadline:
            new = [m for m in ui.materializations("components") if m["runId"] not in before]
            if new:
                break
            time.sleep(2)
        assert new, "no run materialized `components` after clicking Materialize"
        assert ui.wait_run(new[0]["runId"]) == "SUCCESS"
        _shot(page, "ui-after-materialize.png")
        # The asset page shows the figures inline (served by the report server), no click needed.
        page.goto(ui.url("/assets/components"))
        img = page.locator(f"img[src^='{ui.report_url}/']").first
        try:
            img.wait_for(timeout=60_000)
            page.wait_for_function("(u) => Array.from(document.images).filter(i => i.src.startsWith(u) "
                                   "&& i.complete && i.naturalWidth > 100).length >= 2", arg=ui.report_url)
        except Exception:
            _shot(page, "ui-no-figure.png")
            raise
        assert img.is_visible()
        _shot(page, "ui-components-metadata.png", height=4200)
        # every value fits the metadata table's panel: nothing cut off on the right
        overflow = page.evaluate(FITS_JS, "figure_size_spectrum")
        assert overflow <= 2, f"the metadata table is {overflow} px wider than its panel"


def test_cards_readable_on_the_asset_page_and_report_one_click_away(dagster_ui) -> None:
    ui, record = dagster_ui
    with chromium_context(viewport=(1400, 1000), timeout_ms=60_000) as ctx:
        page = ctx.new_page()
        page.goto(ui.url("/assets/component_cards"))
        skip_community_dialog(page)
        try:
            row = page.locator("tr", has_text="card_02").first
            row.wait_for()
            # the card's contexts, inline (no "[Show Markdown]"), the member token in bold
            assert row.locator("li").count() >= 1
            bold = row.locator("li strong").first
            assert bold.is_visible() and bold.inner_text().strip()
            assert page.locator("tr", has_text="card_02").locator("text=[Show Markdown]").count() == 0
            link = page.locator(f"a[href^='{ui.report_url}/'][href$='/cards/report.html']").first  # not explorer_url
            assert link.is_visible()
        except Exception:
            _shot(page, "ui-cards-failed.png")
            raise
        _shot(page, "ui-component-cards.png", height=2600)
        with ctx.expect_page() as opened:
            link.click()
        report = opened.value
        report.wait_for_load_state("load")
        assert report.url.startswith(ui.report_url) and report.url.endswith("/cards/report.html")
        report.locator("section.card").first.wait_for()
        assert report.locator("section.card mark").count() >= 1
        assert report.evaluate("Array.from(document.images).some(i => i.naturalWidth > 100)")
        _shot(report, "ui-report-from-asset-page.png")


def test_lineage_shows_the_assets_in_order(dagster_ui) -> None:
    ui, _ = dagster_ui
    with chromium_context(viewport=(1600, 1000), timeout_ms=60_000) as ctx:
        page = ctx.new_page()
        page.goto(ui.url("/asset-groups"))
        skip_community_dialog(page)
        try:
            for name in ("raw_activations", "activation_mean", "normalized", "edge_tiles", "components",
                         "component_cards"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        except Exception:
            _shot(page, "ui-lineage-failed.png")
            raise
        _shot(page, "ui-lineage.png")
    # lineage as the UI's GraphQL API reports it: each asset's upstream
    data = ui.graphql("""query { assetNodes { assetKey { path } dependencyKeys { path } } }""")
    deps = {n["assetKey"]["path"][-1]: {d["path"][-1] for d in n["dependencyKeys"]} for n in data["assetNodes"]}
    # the declared data flow (defs/pipeline.py), as the UI shows it
    from actgeo_assets.defs.pipeline import STAGES

    assert deps == {**{s.name: set(s.spec.upstream) for s in STAGES},
                    "experiment_comparison": {"components", "component_cards"}}  # no experiment here
    assert deps["component_cards"] == {"raw_activations", "activation_mean", "normalized", "components", "layers"}
    assert deps["components"] == {"normalized", "edge_tiles"}


def test_only_local_jobs_and_automation_on(dagster_ui) -> None:
    ui, _ = dagster_ui
    data = ui.graphql("""query { repositoriesOrError { ... on RepositoryConnection { nodes {
        name location { name } jobs { name } sensors { name sensorState { status } } } } } }""")
    (repo,) = data["repositoriesOrError"]["nodes"]
    assert repo["location"]["name"] == "actgeo_assets.definitions"  # the origin the runner's runs carry
    jobs = {j["name"] for j in repo["jobs"]}
    assert {"capture_job", "mean_job", "normalize_job", "tiles_job", "merge_job"} <= jobs
    assert not [j for j in jobs if j.startswith("cluster_")]
    sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
    assert sensors == {"shard_sensor": "RUNNING", "default_automation_condition_sensor": "RUNNING"}


BACKFILLS = """query { partitionBackfillsOrError(limit: 1) { ... on PartitionBackfills { results { id status } } } }"""
BACKFILL_RUNS = """query($v: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $v}]}) {
    ... on Runs { results { runId status assetSelection { path } tags { key value } } } } }"""
ROWS = """query($k: [String!]!) { assetOrError(assetKey: {path: $k}) { ... on Asset { assetMaterializations(limit: 20) {
    runId partition metadataEntries { label ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } }
    } } } }"""


def test_materialize_all_is_one_run_per_stage(dagster_ui) -> None:
    """"Materialize all" on the lineage page, as a person clicks it: one asset backfill whose stages are one run
    each (the local Definitions' single-run backfill policy), every partition materialized with its own
    metadata, every run a success."""
    ui, _ = dagster_ui
    with chromium_context(viewport=(1600, 1000), timeout_ms=60_000) as ctx:
        page = ctx.new_page()
        page.goto(ui.url("/asset-groups"))
        skip_community_dialog(page)
        page.get_by_text("component_cards", exact=True).first.wait_for()
        page.get_by_role("button", name="Materialize all").first.click()
        launch = page.get_by_role("button", name="Launch backfill")
        launch.wait_for()
        page.get_by_role("button", name="All", exact=True).first.click()  # the dialog opens on "Custom"
        _shot(page, "ui-materialize-all-dialog.png")
        launch.click()
        page.get_by_text("Launching...").first.wait_for(state="hidden")
        launched = time.time()
        deadline = time.time() + 900
        backfill = {}
        while time.time() < deadline:
            backfill = (ui.graphql(BACKFILLS)["partitionBackfillsOrError"]["results"] or [{}])[0]
            if backfill.get("status") not in (None, "REQUESTED"):
                break
            time.sleep(2)
        page.goto(ui.url(f"/runs/b/{backfill.get('id')}?tab=runs"))
        _shot(page, "ui-materialize-all-backfill.png")
    assert backfill.get("status") == "COMPLETED_SUCCESS", (backfill, ui.log.read_text()[-3000:])
    runs = ui.graphql(BACKFILL_RUNS, {"v": backfill["id"]})["runsOrError"]["results"]
    assert {r["status"] for r in runs} == {"SUCCESS"}
    stages = sorted(tuple(sorted(a["path"][-1] for a in r["assetSelection"])) for r in runs)
    # capture, layer sweep, mean, normalization, tiles, and the merge (with the comparison): one run each
    assert stages == sorted([("raw_activations",), ("layers",), ("activation_mean",), ("normalized",),
                             ("edge_tiles",), ("component_cards", "components", "experiment_comparison", "lookup")]), stages
    capture = next(r for r in runs if r["assetSelection"] == [{"path": ["raw_activations"]}])
    tags = {t["key"]: t["value"] for t in capture["tags"]}
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
        "shard-000", "shard-001")
    # each shard: its own materialization by that run, with its own metadata (rows, sha256), as the runner
    # recorded it for the same shard (the capture is deterministic)
    mats = ui.graphql(ROWS, {"k": ["raw_activations"]})["assetOrError"]["assetMaterializations"]

    def entries(m: dict) -> tuple:
        e = {x["label"]: x.get("intValue", x.get("text")) for x in m["metadataEntries"]}
        return e["rows"], e["sha256"]

    by_backfill = {m["partition"]: entries(m) for m in mats if m["runId"] == capture["runId"]}
    by_runner = {m["partition"]: entries(m) for m in mats if m["runId"] != capture["runId"]}
    assert sorted(by_backfill) == ["shard-000", "shard-001"] and by_backfill == by_runner, (by_backfill, by_runner)
    assert by_backfill["shard-000"][1] != by_backfill["shard-001"][1]
    # the daemon's terminal (`make ui`): the backfill iterated every ~2 s, yet an unchanged state is printed at
    # most once a minute (actgeo_assets/dev.py RepeatFilter), while every run it submitted is printed
    log = ui.log.read_text()
    minutes = (time.time() - launched) / 60
    still = log.count("Backfill has in progress runs. Backfill is still in progress.")
    assert 1 <= still <= 1 + minutes, (still, minutes)
    assert log.count(f"Evaluating asset backfill {backfill['id']}") <= 1 + minutes
    submitted = [line for line in log.splitlines() if "BackfillDaemon" in line and "Submitted run" in line]
    assert len(submitted) == len(runs), submitted  # (other daemons' runs, e.g. automation's, are not counted)


def test_backfill_that_fails_part_way_shows_the_shards_it_finished(dagster_ui) -> None:
    """A backfill of `normalized` (one run over both shards) whose second shard's raw file is damaged: the run
    fails naming the file, yet the asset's Partitions tab shows shard-000 materialized by that run and only
    shard-001 failed, so rematerializing the failed partitions is all that is left to do. (The damaged file is
    restored afterwards; this test runs last in the module.)"""
    ui, _ = dagster_ui
    raw = ui.home.parent / "data" / "demo" / "raw" / "shard-001.npy"
    before = raw.read_bytes()
    damaged = bytearray(before)
    for i in range(len(damaged) // 3, len(damaged) // 3 + 16):
        damaged[i] ^= 0xFF
    raw.write_bytes(bytes(damaged))
    try:
        launched = ui.graphql("""mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
            __typename ... on LaunchBackfillSuccess { backfillId } } }""",
                              {"p": {"assetSelection": [{"path": ["normalized"]}],
                                     "partitionNames": ["shard-000", "shard-001"]}})
        backfill = launched["launchPartitionBackfill"]["backfillId"]
        deadline, status = time.time() + 180, ""
        while time.time() < deadline:
            status = ui.graphql("""query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                ... on PartitionBackfill { status } } }""", {"id": backfill})["partitionBackfillOrError"]["status"]
            if status != "REQUESTED":
                break
            time.sleep(2)
        assert status == "COMPLETED_FAILED", status
        runs = ui.graphql(BACKFILL_RUNS, {"v": backfill})["runsOrError"]["results"]
        assert len(runs) == 1 and runs[0]["status"] == "FAILURE", runs
        run_id = runs[0]["runId"]
        finished = [m["partition"] for m in ui.materializations("normalized") if m["runId"] == run_id]
        assert finished == ["shard-000"], finished
        logs = ui.graphql("""query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection {
            events { __typename ... on MessageEvent { message } ... on ExecutionStepFailureEvent {
            error { message causes { message } } } } } } }""", {"id": run_id})
        events = logs["logsForRun"]["events"]
        messages = [e.get("message") or "" for e in events]
        errors = [c["message"] for e in events if e.get("error") for c in [e["error"], *e["error"]["causes"]]]
        assert any(str(raw) in m for m in errors), errors  # the failure names the damaged file
        assert any("partition shard-001 failed" in m and "(shard-000) are recorded" in m for m in messages)
        with chromium_context(viewport=(1600, 1000), timeout_ms=60_000) as ctx:
            page = ctx.new_page()
            page.goto(ui.url("/assets/normalized?view=partitions"))
            skip_community_dialog(page)
            page.get_by_text("Failed (1)").wait_for()
            page.get_by_text("Materialized (1)").wait_for()
            _shot(page, "ui_backfill_failed_part_way.png")
    finally:
        raw.write_bytes(before)
